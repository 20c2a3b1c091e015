"""Helpers for tests that act on the Zoho emulator as a user of the org (or its admin) would."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from leadrelay.sandbox.server import SandboxServer


@contextmanager
def zoho_api(server: SandboxServer) -> Iterator[httpx.Client]:
    """An httpx client on the sandbox's Zoho API (``.../crm/v7``) with a fresh access token."""
    env = server.env()
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(verify=context, timeout=30) as http:
        token = http.post(
            f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token",
            params={
                "grant_type": "refresh_token",
                "client_id": env["ZOHO_CLIENT_ID"],
                "client_secret": env["ZOHO_CLIENT_SECRET"],
                "refresh_token": env["ZOHO_REFRESH_TOKEN"],
            },
        ).json()["access_token"]
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
