"""Helpers for tests that act on the Zoho emulator as a user of the org (or its admin) would."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator


@pytest.fixture(scope="module", name="server")
def zoho_server() -> Iterator[SandboxServer]:
    """Fixture ``server``: a Zoho-only sandbox for the test module that imports it."""
    with SandboxServer(emulator_types=[ZohoEmulator]) as running:
        yield running


@pytest.fixture(name="emulator")
def zoho_emulator(server: SandboxServer) -> ZohoEmulator:
    """Fixture ``emulator``: the sandbox's Zoho emulator."""
    found = server.sandbox.emulators["zoho"]
    assert isinstance(found, ZohoEmulator)
    return found


@pytest.fixture(name="api")
def zoho_user(server: SandboxServer) -> Iterator[httpx.Client]:
    """Fixture ``api``: a fresh sandbox (no records, no faults), then the API as a user."""
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()
    with zoho_api(server) as client:
        yield client


def refresh(http: httpx.Client, env: dict[str, str], **override: str) -> httpx.Response:
    """The accounts server's answer to a refresh-token grant of the sandbox's client
    (``override`` changes its parameters)."""
    params = {
        "grant_type": "refresh_token",
        "client_id": env["ZOHO_CLIENT_ID"],
        "client_secret": env["ZOHO_CLIENT_SECRET"],
        "refresh_token": env["ZOHO_REFRESH_TOKEN"],
        **override,
    }
    return http.post(f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token", params=params)


@contextmanager
def zoho_api(server: SandboxServer) -> Iterator[httpx.Client]:
    """An httpx client on the sandbox's Zoho API (``.../crm/v7``) with a fresh access token."""
    env = server.env()
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(verify=context, timeout=30) as http:
        token = refresh(http, env).json()["access_token"]
    with httpx.Client(
        base_url=f"{env['ZOHO_API_DOMAIN']}/crm/v7",
        headers={"Authorization": f"Zoho-oauthtoken {token}"},
        verify=context,
        timeout=30,
    ) as client:
        yield client


def convert(api: httpx.Client, lead_id: str, deal: dict[str, Any] | None = None) -> httpx.Response:
    """Convert Lead ``lead_id`` (with a Deal of ``deal``'s fields when given), as sales would."""
    item: dict[str, Any] = {
        "overwrite": True,
        "notify_lead_owner": False,
        "notify_new_entity_owner": False,
    }
    if deal is not None:
        item["Deals"] = deal
    return api.post(f"/Leads/{lead_id}/actions/convert", json={"data": [item]})


def converted_ids(
    api: httpx.Client, lead_id: str, deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Convert a Lead and return the ``details`` of Zoho's answer (``Contacts`` / ``Deals`` /
    ``Accounts`` lookups); fails the test when the conversion is refused."""
    response = convert(api, lead_id, deal)
    assert response.status_code == 200, response.text
    details: dict[str, Any] = response.json()["data"][0]["details"]
    return details


def deal(stage: str, **extra: Any) -> dict[str, Any]:
    """The ``Deals`` part of a conversion: a deal at ``stage`` closing on 2026-12-01."""
    return {"Deal_Name": "Acme renewal", "Closing_Date": "2026-12-01", "Stage": stage, **extra}
