"""Fixtures of the HubSpot connector tests: one sandbox per module, reset before each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from leadrelay.config import HubSpotConnection
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.hubspot import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    HubSpotEmulator,
)
from leadrelay.sandbox.server import SandboxServer

#: Small waits so retried faults keep the suite fast.
FAST_RETRY = RetryPolicy(max_attempts=6, max_total_s=10.0, base_s=0.01, cap_s=0.05)

MakeConnector = Callable[..., HubSpotConnector]


def private_app_settings(env: dict[str, str], **overrides: Any) -> HubSpotConnection:
    """Settings for the sandbox's private-app token."""
    values: dict[str, Any] = {
        "kind": "hubspot",
        "access_token": env["HUBSPOT_ACCESS_TOKEN"],
        "base_url": env["HUBSPOT_BASE_URL"],
        "ca_bundle": env["LEADRELAY_CA_BUNDLE"],
    }
    return HubSpotConnection.model_validate(values | overrides)


def oauth_settings(env: dict[str, str], **overrides: Any) -> HubSpotConnection:
    """Settings for the sandbox's OAuth app and its one refresh token."""
    values: dict[str, Any] = {
        "kind": "hubspot",
        "auth": "oauth",
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "refresh_token": SANDBOX_REFRESH_TOKEN,
        "base_url": env["HUBSPOT_BASE_URL"],
        "ca_bundle": env["LEADRELAY_CA_BUNDLE"],
    }
    return HubSpotConnection.model_validate(values | overrides)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    """A HubSpot-only sandbox for the module."""
    with SandboxServer(emulator_types=[HubSpotEmulator]) as running:
        yield running


@pytest.fixture
def emulator(server: SandboxServer) -> HubSpotEmulator:
    """The in-process HubSpot emulator, reset, without faults."""
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()
    found = server.sandbox.emulators["hubspot"]
    assert isinstance(found, HubSpotEmulator)
    return found


@pytest.fixture
def make_connector(server: SandboxServer, emulator: HubSpotEmulator) -> Iterator[MakeConnector]:
    """Builds connectors (private app by default) and closes them after the test."""
    made: list[HubSpotConnector] = []

    def make(settings: HubSpotConnection | None = None, **kwargs: Any) -> HubSpotConnector:
        kwargs.setdefault("retry", FAST_RETRY)
        connector = HubSpotConnector(settings or private_app_settings(server.env()), "hs", **kwargs)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()
