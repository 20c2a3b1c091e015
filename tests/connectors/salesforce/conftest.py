"""Shared fixtures of the Salesforce connector tests: one sandbox per module, fast retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from leadrelay.config import SalesforceConnection
from leadrelay.connectors.credentials import process_cache
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.sandbox.salesforce import SalesforceEmulator
from leadrelay.sandbox.server import SandboxServer

#: Retries fast enough for tests, patient enough for 30 % injected errors.
FAST_RETRY = RetryPolicy(max_attempts=8, max_total_s=20.0, base_s=0.005, cap_s=0.05)


def _short_sleep(seconds: float) -> None:
    time.sleep(min(seconds, 0.01))


def sandbox_settings(env: dict[str, str], **overrides: Any) -> SalesforceConnection:
    """Password-flow settings for the sandbox of ``env`` (its token endpoint is the instance)."""
    values: dict[str, Any] = {
        "kind": "salesforce",
        "auth": "password",
        "login_url": env["SALESFORCE_INSTANCE_URL"],
        "username": env["SALESFORCE_USERNAME"],
        "password": env["SALESFORCE_PASSWORD"],
        "consumer_key": env["SALESFORCE_CONSUMER_KEY"],
        "consumer_secret": env["SALESFORCE_CONSUMER_SECRET"],
        "ca_bundle": env["LEADRELAY_CA_BUNDLE"],
    }
    values.update(overrides)
    return SalesforceConnection.model_validate(values)


def admin(env: dict[str, str], path: str, body: Any = None) -> Any:
    """POST to the sandbox admin API (``/__sandbox__/<path>``)."""
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(
            f"{env['LEADRELAY_SANDBOX_URL']}/__sandbox__/{path}",
            json=body if body is not None else {},
            verify=env["LEADRELAY_CA_BUNDLE"],
            timeout=10,
        )
        response.raise_for_status()
        return response.json()


def stats(env: dict[str, str]) -> dict[str, Any]:
    """The sandbox's request counters."""
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(
            f"{env['LEADRELAY_SANDBOX_URL']}/__sandbox__/stats",
            verify=env["LEADRELAY_CA_BUNDLE"],
            timeout=10,
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture(autouse=True)
def _fresh_credentials() -> Iterator[None]:
    """Each test starts with no cached session or describe (as a new process would)."""
    process_cache().clear()
    yield
    process_cache().clear()


@pytest.fixture(scope="module")
def sf_server() -> Iterator[SandboxServer]:
    """A Salesforce-only sandbox for the module."""
    with SandboxServer(emulator_types=[SalesforceEmulator]) as server:
        yield server


@pytest.fixture
def env(sf_server: SandboxServer) -> Iterator[dict[str, str]]:
    """The sandbox environment, with data and faults reset before and after the test."""
    values = sf_server.env()
    admin(values, "faults", {})
    admin(values, "reset")
    yield values
    admin(values, "faults", {})


@pytest.fixture
def make_connector(env: dict[str, str]) -> Iterator[Any]:
    """A factory of connectors to the sandbox (closed after the test)."""
    made: list[SalesforceConnector] = []

    def make(**overrides: Any) -> SalesforceConnector:
        options = {
            k: overrides.pop(k)
            for k in ("retry", "read_fields", "overlap", "check_contacts", "bulk_poll_s")
            if k in overrides
        }
        options.setdefault("retry", FAST_RETRY)
        connector = SalesforceConnector(
            sandbox_settings(env, **overrides), "sf", sleep=_short_sleep, **options
        )
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


def patch_record(
    connector: SalesforceConnector, sobject: str, record_id: str, fields: dict[str, Any]
) -> None:
    """Sales edits a record of ``sobject`` (REST update, as the UI saves it)."""
    connector.restful(
        f"sobjects/{sobject}/{record_id}",
        method="PATCH",
        json=fields,
        describe=f"update a {sobject}",
        idempotent=True,
    )
