"""The HubSpot emulator's tasks API, driven through hubspot-api-client and httpx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.objects.tasks import (
    AssociationSpec,
    PublicAssociationsForObject,
    PublicObjectId,
    SimplePublicObjectInputForCreate,
)
from hubspot.discovery.discovery_base import DiscoveryBase

from leadrelay.sandbox.hubspot import SANDBOX_ACCESS_TOKEN, HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer
from tests.hubspot_sandbox import hubspot_http

TASKS = "/crm/v3/objects/tasks"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[HubSpotEmulator]) as running:
        yield running


@pytest.fixture
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    server.sandbox.reset()
    with hubspot_http(server) as client:
        yield client


@pytest.fixture
def hs(server: SandboxServer) -> Iterator[HubSpot]:
    """The official client; its pooled connections are closed after the test."""
    made: list[Any] = []

    def factory(package: Any, api_name: str, config: dict[str, Any]) -> Any:
        api = DiscoveryBase._default_api_factory(package, api_name, config)
        api.api_client.set_default_header("Connection", "close")
        made.append(api.api_client)
        return api

    yield HubSpot(
        access_token=SANDBOX_ACCESS_TOKEN,
        host=server.env()["HUBSPOT_BASE_URL"],
        ssl_ca_cert=str(server.ca_bundle),
        api_factory=factory,
    )
    for api_client in made:
        api_client.rest_client.pool_manager.clear()
        api_client.close()


def contact(http: httpx.Client) -> str:
    response = http.post("/crm/v3/objects/contacts", json={"properties": {"email": "a@b.io"}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def task_body(contact_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "properties": {"hs_timestamp": "1717408800000", "hs_task_subject": "Call", **properties},
        "associations": [
            {
                "to": {"id": contact_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
            }
        ],
    }


def test_the_official_client_creates_and_reads_a_task_on_a_contact(
    http: httpx.Client, hs: HubSpot
) -> None:
    contact_id = contact(http)
    created = hs.crm.objects.tasks.basic_api.create(
        SimplePublicObjectInputForCreate(
            properties={
                "hs_timestamp": "2024-06-03T12:00:00Z",
                "hs_task_subject": "SLA breach",
                "hs_task_body": "Call back",
                "hs_task_status": "NOT_STARTED",
                "hubspot_owner_id": "61000001",
            },
            associations=[
                PublicAssociationsForObject(
                    to=PublicObjectId(id=contact_id),
                    types=[
                        AssociationSpec(
                            association_category="HUBSPOT_DEFINED", association_type_id=204
                        )
                    ],
                )
            ],
        )
    )
    read = hs.crm.objects.tasks.basic_api.get_by_id(
        created.id, properties=["hs_task_subject", "hs_timestamp"], associations=["contacts"]
    )
    assert read.properties["hs_task_subject"] == "SLA breach"
    assert read.properties["hs_timestamp"] == "2024-06-03T12:00:00.000Z"
    assert [a.id for a in read.associations["contacts"].results] == [contact_id]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hs_timestamp": None}, "hs_timestamp is required"),
        ({"hs_timestamp": "tomorrow"}, "is not a date-time"),
        ({"hs_task_status": "DONE"}, "not a valid option for hs_task_status"),
        ({"hubspot_owner_id": "1"}, "not a valid owner id"),
        ({"hs_nope": "x"}, 'Property "hs_nope" does not exist'),
    ],
)
def test_bad_task_properties_are_refused(
    http: httpx.Client, change: dict[str, Any], message: str
) -> None:
    body = task_body(contact(http))
    body["properties"].update(change)
    response = http.post(TASKS, json=body)
    assert response.status_code == 400
    assert message in response.json()["message"]


@pytest.mark.parametrize(
    ("association", "message"),
    [
        ({"to": {"id": "999"}, "types": None}, "needs to.id and a list of types"),
        (
            {"to": {"id": "1"}, "types": [{"associationCategory": "USER_DEFINED"}]},
            "is not HUBSPOT_DEFINED 204",
        ),
        (
            {
                "to": {"id": "999"},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
            },
            "contact 999 does not exist",
        ),
    ],
)
def test_bad_associations_are_refused(
    http: httpx.Client, association: dict[str, Any], message: str
) -> None:
    body = task_body(contact(http))
    body["associations"] = [association]
    response = http.post(TASKS, json=body)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert http.get(TASKS).json()["results"] == []


def test_tasks_are_listed_in_pages(http: httpx.Client) -> None:
    contact_id = contact(http)
    ids = [http.post(TASKS, json=task_body(contact_id)).json()["id"] for _ in range(3)]
    first = http.get(TASKS, params={"limit": "2"}).json()
    second = http.get(TASKS, params={"limit": "2", "after": first["paging"]["next"]["after"]})
    assert [t["id"] for t in first["results"]] + [t["id"] for t in second.json()["results"]] == ids
    assert "paging" not in second.json()
