"""Helpers for tests that act on the HubSpot emulator as a user of the portal would."""

from __future__ import annotations

from typing import Any

import requests

from leadrelay.sandbox.server import SandboxServer


def hubspot_api(
    server: SandboxServer, method: str, path: str, body: Any = None, *, expect: int | None = None
) -> Any:
    """Call the sandbox's HubSpot API with its private-app token.

    A non-2xx answer fails the test, and so does any other status than ``expect`` when given.
    """
    env = server.env()
    with requests.Session() as session:
        session.trust_env = False
        response = session.request(
            method,
            f"{env['HUBSPOT_BASE_URL']}{path}",
            json=body,
            headers={"Authorization": f"Bearer {env['HUBSPOT_ACCESS_TOKEN']}"},
            verify=env["LEADRELAY_CA_BUNDLE"],
            timeout=10,
        )
    assert response.status_code < 300, response.text
    if expect is not None:
        assert response.status_code == expect, response.text
    return response.json() if response.content else None


def add_page_properties(server: SandboxServer) -> None:
    """HubSpot's "First / Last page seen" properties, which the emulator does not seed."""
    for name, label in (("first", "First"), ("last", "Last")):
        hubspot_api(
            server,
            "POST",
            "/crm/v3/properties/contacts",
            {
                "name": f"hs_analytics_{name}_url",
                "label": f"{label} page seen",
                "type": "string",
                "fieldType": "text",
                "groupName": "analyticsinformation",
            },
            expect=201,
        )
