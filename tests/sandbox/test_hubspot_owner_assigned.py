"""HubSpot's "Owner assigned date" and leadrelay's landing-page property in the HubSpot emulator.

``hubspot_owner_assigneddate`` is HubSpot-set and read only: every write path that sets or
changes ``hubspot_owner_id`` stamps it with the write's time; clearing the owner clears it.
Driven through hubspot-api-client (httpx for the forms submission API).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException
from hubspot.discovery.discovery_base import DiscoveryBase

from leadrelay.sandbox.hubspot import (
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_FORM_GUID,
    SANDBOX_PORTAL_ID,
    HubSpotEmulator,
)
from leadrelay.sandbox.hubspot.schema import iso_ms
from leadrelay.sandbox.server import SandboxServer
from tests.hubspot_sandbox import hubspot_http

ASSIGNED = "hubspot_owner_assigneddate"
OWNER = "hubspot_owner_id"
ALEX, BEA = "61000001", "61000002"
#: 2024-06-03T07:33:20Z and later moments of the emulator's clock, in seconds
T0, T1, T2 = 1_717_400_000.0, 1_717_400_060.5, 1_717_403_600.25


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[HubSpotEmulator]) as running:
        yield running


@pytest.fixture
def emulator(server: SandboxServer) -> HubSpotEmulator:
    server.sandbox.reset()
    found = server.sandbox.emulators["hubspot"]
    assert isinstance(found, HubSpotEmulator)
    return found


@pytest.fixture
def http(server: SandboxServer) -> Iterator[httpx.Client]:
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


def at(emulator: HubSpotEmulator, seconds: float) -> str:
    """Set the emulator's clock; the moment as HubSpot writes datetimes."""
    emulator.store.clock = lambda: seconds
    return iso_ms(int(seconds * 1000))


def read(hs: HubSpot, email: str, *names: str) -> dict[str, Any]:
    found = hs.crm.contacts.basic_api.get_by_id(
        email, id_property="email", properties=[OWNER, ASSIGNED, "lastmodifieddate", *names]
    )
    properties: dict[str, Any] = found.properties
    return properties


# -- the write paths that set an owner: (hs, http, email, properties) ----------------------

Write = Callable[[HubSpot, httpx.Client, str, dict[str, str]], None]


def by_create(hs: HubSpot, http: httpx.Client, email: str, properties: dict[str, str]) -> None:
    hs.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"email": email, **properties})
    )


def by_update(hs: HubSpot, http: httpx.Client, email: str, properties: dict[str, str]) -> None:
    hs.crm.contacts.basic_api.update(
        email, SimplePublicObjectInput(properties=properties), id_property="email"
    )


def by_batch_create(
    hs: HubSpot, http: httpx.Client, email: str, properties: dict[str, str]
) -> None:
    hs.crm.contacts.batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[{"properties": {"email": email, **properties}}]
        )
    )


def by_batch_update(
    hs: HubSpot, http: httpx.Client, email: str, properties: dict[str, str]
) -> None:
    hs.crm.contacts.batch_api.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": email, "idProperty": "email", "properties": properties}]
        )
    )


def by_batch_upsert(
    hs: HubSpot, http: httpx.Client, email: str, properties: dict[str, str]
) -> None:
    hs.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[{"id": email, "idProperty": "email", "properties": properties}]
        )
    )


def by_form(hs: HubSpot, http: httpx.Client, email: str, properties: dict[str, str]) -> None:
    fields = {"email": email, **properties}
    response = http.post(
        f"/submissions/v3/integration/secure/submit/{SANDBOX_PORTAL_ID}/{SANDBOX_FORM_GUID}",
        json={
            "fields": [{"objectTypeId": "0-1", "name": k, "value": v} for k, v in fields.items()]
        },
    )
    assert response.status_code == 200, response.text


CREATING = [by_create, by_batch_create, by_batch_upsert, by_form]
UPDATING = [by_update, by_batch_update, by_batch_upsert, by_form]


@pytest.mark.parametrize("write", CREATING, ids=lambda w: w.__name__)
def test_a_contact_created_with_an_owner_is_stamped_at_its_creation(
    emulator: HubSpotEmulator, hs: HubSpot, http: httpx.Client, write: Write
) -> None:
    moment = at(emulator, T1)
    write(hs, http, "new@example.com", {OWNER: ALEX})
    assert read(hs, "new@example.com")[ASSIGNED] == moment


@pytest.mark.parametrize("write", UPDATING, ids=lambda w: w.__name__)
def test_setting_then_changing_the_owner_stamps_each_write(
    emulator: HubSpotEmulator, hs: HubSpot, http: httpx.Client, write: Write
) -> None:
    at(emulator, T0)
    by_create(hs, http, "lead@example.com", {"firstname": "Ada"})
    assert read(hs, "lead@example.com")[ASSIGNED] is None
    first = at(emulator, T1)
    write(hs, http, "lead@example.com", {OWNER: ALEX})
    assert read(hs, "lead@example.com")[ASSIGNED] == first
    second = at(emulator, T2)
    write(hs, http, "lead@example.com", {OWNER: BEA})
    values = read(hs, "lead@example.com")
    assert (values[OWNER], values[ASSIGNED], values["lastmodifieddate"]) == (BEA, second, second)


@pytest.mark.parametrize(
    "change",
    [{OWNER: ALEX}, {"city": "Lisbon"}, {OWNER: ALEX, "city": "Porto"}],
    ids=["same owner", "other property", "same owner and other property"],
)
def test_a_write_that_keeps_the_owner_keeps_the_date(
    emulator: HubSpotEmulator, hs: HubSpot, http: httpx.Client, change: dict[str, str]
) -> None:
    assigned = at(emulator, T0)
    by_create(hs, http, "kept@example.com", {OWNER: ALEX})
    at(emulator, T2)
    by_update(hs, http, "kept@example.com", change)
    assert read(hs, "kept@example.com")[ASSIGNED] == assigned


def test_clearing_the_owner_clears_the_date(
    emulator: HubSpotEmulator, hs: HubSpot, http: httpx.Client
) -> None:
    at(emulator, T0)
    by_create(hs, http, "cleared@example.com", {OWNER: ALEX})
    at(emulator, T1)
    by_update(hs, http, "cleared@example.com", {OWNER: ""})
    values = read(hs, "cleared@example.com")
    assert (values[OWNER], values[ASSIGNED]) == (None, None)


@pytest.mark.parametrize("write", [by_create, by_update, by_batch_upsert], ids=lambda w: w.__name__)
def test_a_client_cannot_write_the_owner_assigned_date(
    emulator: HubSpotEmulator, hs: HubSpot, http: httpx.Client, write: Write
) -> None:
    at(emulator, T0)
    by_create(hs, http, "ro@example.com", {"firstname": "Ro"})
    with pytest.raises(ApiException) as refused:
        write(hs, http, "ro@example.com", {OWNER: ALEX, ASSIGNED: "2024-01-01T00:00:00Z"})
    assert refused.value.status == 400
    message = json.loads(refused.value.body)["message"]
    assert "READ_ONLY_VALUE" in message and ASSIGNED in message
    assert read(hs, "ro@example.com")[OWNER] is None


def test_the_owner_assigned_date_is_a_read_only_hubspot_datetime(hs: HubSpot) -> None:
    prop = hs.crm.properties.core_api.get_by_name("contacts", ASSIGNED)
    assert (prop.type, prop.label, prop.hubspot_defined) == (
        "datetime",
        "Owner assigned date",
        True,
    )
    assert prop.modification_metadata.read_only_value is True


def test_search_finds_contacts_by_owner_assigned_date(
    emulator: HubSpotEmulator, hs: HubSpot, http: httpx.Client
) -> None:
    at(emulator, T0)
    by_create(hs, http, "early@example.com", {OWNER: ALEX})
    at(emulator, T2)
    by_create(hs, http, "late@example.com", {OWNER: BEA})
    by_create(hs, http, "none@example.com", {"firstname": "No"})
    since = str(int(T1 * 1000))
    filters = [{"propertyName": ASSIGNED, "operator": "GTE", "value": since}]
    response = http.post(
        "/crm/v3/objects/contacts/search", json={"filterGroups": [{"filters": filters}]}
    )
    assert response.status_code == 200, response.text
    assert [r["properties"]["email"] for r in response.json()["results"]] == ["late@example.com"]


def test_the_landing_page_property_is_seeded_and_writable(
    emulator: HubSpotEmulator, hs: HubSpot, http: httpx.Client
) -> None:
    prop = hs.crm.properties.core_api.get_by_name("contacts", "leadrelay_landing_page")
    assert (prop.type, prop.field_type, prop.group_name) == ("string", "text", "leadrelay")
    assert prop.hubspot_defined is not True
    url = "https://www.example.com/pricing?plan=team"
    by_create(hs, http, "page@example.com", {"leadrelay_landing_page": url})
    assert read(hs, "page@example.com", "leadrelay_landing_page")["leadrelay_landing_page"] == url
