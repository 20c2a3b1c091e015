"""Helpers for tests that act on the HubSpot emulator as a user of the portal would."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import requests
from hubspot import HubSpot
from hubspot.discovery.discovery_base import DiscoveryBase

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.hubspot import SANDBOX_ACCESS_TOKEN, HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer


@pytest.fixture(scope="module", name="server")
def hubspot_server() -> Iterator[SandboxServer]:
    """Fixture ``server``: a HubSpot-only sandbox for the test module that imports it."""
    with SandboxServer(emulator_types=[HubSpotEmulator]) as running:
        yield running


@pytest.fixture(autouse=True, name="clean")
def reset_hubspot(server: SandboxServer) -> None:
    """Fixture ``clean`` (automatic where imported): no records and no faults before a test."""
    server.sandbox.reset()
    server.sandbox.set_faults(Faults())


@contextmanager
def hubspot_http(server: SandboxServer) -> Iterator[httpx.Client]:
    """An httpx client on the sandbox's HubSpot API, with its private-app token."""
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    headers = {"Authorization": f"Bearer {SANDBOX_ACCESS_TOKEN}"}
    with httpx.Client(
        base_url=server.env()["HUBSPOT_BASE_URL"], verify=context, headers=headers
    ) as client:
        yield client


class OfficialClients:
    """hubspot-api-client instances pointed at the sandbox, closed together by :meth:`close`.

    hubspot-api-client builds a new ApiClient (own urllib3 pool) on every API access and keeps
    its last response (and so its socket) referenced; a kept-alive TLS connection would then
    stall the server's shutdown. ``Connection: close`` makes the server end each connection.
    """

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.made: list[Any] = []

    def _factory(self, package: Any, api_name: str, config: dict[str, Any]) -> Any:
        api = DiscoveryBase._default_api_factory(package, api_name, config)
        api.api_client.set_default_header("Connection", "close")
        self.made.append(api.api_client)
        return api

    def connect(self, token: str, **config: Any) -> HubSpot:
        """A client for ``token``; ``config`` sets Configuration attributes (e.g.
        ``client_side_validation=True`` makes the SDK's models check every answer)."""
        return HubSpot(
            access_token=token,
            host=self.server.env()["HUBSPOT_BASE_URL"],
            ssl_ca_cert=str(self.server.ca_bundle),
            api_factory=self._factory,
            **config,
        )

    def close(self) -> None:
        """Close every client's connection pool."""
        for api_client in self.made:
            api_client.rest_client.pool_manager.clear()
            api_client.close()


@pytest.fixture(name="hs")
def validating_client(server: SandboxServer) -> Iterator[HubSpot]:
    """Fixture ``hs``: the official client, checking every answer against its models."""
    clients = OfficialClients(server)
    yield clients.connect(SANDBOX_ACCESS_TOKEN, client_side_validation=True)
    clients.close()


@pytest.fixture(name="http")
def plain_http(server: SandboxServer) -> Iterator[httpx.Client]:
    """Fixture ``http``: plain HTTP on the sandbox's HubSpot API (:func:`hubspot_http`)."""
    with hubspot_http(server) as client:
        yield client


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


def restore_job_title(sandbox: SandboxServer) -> None:
    """Create the contact property ``jobtitle`` again, as an admin would after deleting it."""
    hubspot_api(
        sandbox,
        "POST",
        "/crm/v3/properties/contacts",
        {
            "name": "jobtitle",
            "label": "Job Title",
            "type": "string",
            "fieldType": "text",
            "groupName": "contactinformation",
        },
        expect=201,
    )
