"""The HubSpot emulator's companies API, through hubspot-api-client (httpx for bad bodies)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.companies import (
    BatchReadInputSimplePublicObjectId,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.companies.exceptions import ApiException
from hubspot.discovery.discovery_base import DiscoveryBase

from leadrelay.sandbox.hubspot import SANDBOX_ACCESS_TOKEN
from leadrelay.sandbox.server import SandboxServer
from tests.hubspot_sandbox import hubspot_http, hubspot_server, reset_hubspot  # noqa: F401 (fixtures)

COMPANIES = "/crm/v3/objects/companies"
OWNER = "61000002"


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


def create(hs: HubSpot, **properties: str) -> str:
    created = hs.crm.companies.basic_api.create(
        SimplePublicObjectInputForCreate(properties=properties)
    )
    return str(created.id)


def problems(exc: ApiException) -> list[dict[str, Any]]:
    """The entries of HubSpot's ``Property values were not valid: [...]`` message."""
    body = json.loads(exc.body)
    assert body["category"] == "VALIDATION_ERROR"
    prefix = "Property values were not valid: "
    assert body["message"].startswith(prefix)
    entries: list[dict[str, Any]] = json.loads(body["message"][len(prefix) :])
    return entries


def test_the_official_client_creates_and_reads_a_company(hs: HubSpot) -> None:
    created = hs.crm.companies.basic_api.create(
        SimplePublicObjectInputForCreate(
            properties={"name": "Acme", "domain": "acme.io", "hubspot_owner_id": OWNER}
        )
    )
    assert created.properties["hs_object_id"] == created.id
    read = hs.crm.companies.basic_api.get_by_id(
        created.id, properties=["domain", "website", "hubspot_owner_id"]
    )
    assert read.properties == {"domain": "acme.io", "website": None, "hubspot_owner_id": OWNER}
    assert read.created_at == created.created_at


def test_a_read_without_properties_returns_the_default_set(hs: HubSpot) -> None:
    company_id = create(hs, name="Acme", website="https://acme.io", hubspot_owner_id=OWNER)
    read = hs.crm.companies.basic_api.get_by_id(company_id)
    assert set(read.properties) == {
        "createdate",
        "domain",
        "hs_lastmodifieddate",
        "hs_object_id",
        "name",
    }


def test_companies_are_listed_in_pages_of_at_most_100(hs: HubSpot) -> None:
    ids = [create(hs, name=f"Company {n}") for n in range(5)]
    first = hs.crm.companies.basic_api.get_page(limit=3, properties=["name"])
    second = hs.crm.companies.basic_api.get_page(
        limit=3, after=first.paging.next.after, properties=["name"]
    )
    assert [c.id for c in first.results] + [c.id for c in second.results] == ids
    assert second.paging is None
    assert first.results[0].properties == {"name": "Company 0"}
    with pytest.raises(ApiException) as refused:
        hs.crm.companies.basic_api.get_page(limit=101)
    assert refused.value.status == 400


def test_an_update_sets_and_clears_values(hs: HubSpot) -> None:
    company_id = create(hs, name="Acme", domain="acme.io")
    updated = hs.crm.companies.basic_api.update(
        company_id, SimplePublicObjectInput(properties={"domain": "", "hubspot_owner_id": OWNER})
    )
    assert "domain" not in updated.properties
    assert updated.properties["hubspot_owner_id"] == OWNER
    assert updated.properties["hs_lastmodifieddate"] >= updated.properties["createdate"]


def test_an_archived_company_is_gone_from_reads_and_lists(hs: HubSpot) -> None:
    company_id = create(hs, name="Gone")
    hs.crm.companies.basic_api.archive(company_id)
    with pytest.raises(ApiException) as missing:
        hs.crm.companies.basic_api.get_by_id(company_id)
    assert missing.value.status == 404
    assert hs.crm.companies.basic_api.get_page().results == []
    assert [c.id for c in hs.crm.companies.basic_api.get_page(archived=True).results] == [
        company_id
    ]


def test_batch_read_reports_the_missing_ids_as_207(hs: HubSpot) -> None:
    company_id = create(hs, name="Acme", domain="acme.io")
    answer = hs.crm.companies.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=company_id), SimplePublicObjectId(id="42")],
            properties=["domain"],
            properties_with_history=[],
        )
    )
    assert [(c.id, c.properties) for c in answer.results] == [(company_id, {"domain": "acme.io"})]
    assert answer.num_errors == 1
    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context == {"ids": ["42"]}


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"favourite_colour": "blue"}, [("favourite_colour", "PROPERTY_DOESNT_EXIST")]),
        ({"hubspot_owner_id": "8100001"}, [("hubspot_owner_id", "INVALID_OWNER_ID")]),
        ({"hs_object_id": "7"}, [("hs_object_id", "READ_ONLY_VALUE")]),
        (
            {"nope": "x", "hubspot_owner_id": "1"},
            [("nope", "PROPERTY_DOESNT_EXIST"), ("hubspot_owner_id", "INVALID_OWNER_ID")],
        ),
    ],
    ids=["unknown property", "user id instead of owner id", "read only", "both"],
)
def test_bad_properties_are_refused_naming_each(
    hs: HubSpot, properties: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(ApiException) as refused:
        create(hs, name="Acme", **properties)
    assert refused.value.status == 400
    assert [(p["name"], p["error"]) for p in problems(refused.value)] == expected
    assert hs.crm.companies.basic_api.get_page().results == []


def test_an_update_to_an_owner_that_is_no_owner_is_refused(hs: HubSpot) -> None:
    company_id = create(hs, name="Acme", hubspot_owner_id=OWNER)
    with pytest.raises(ApiException) as refused:
        hs.crm.companies.basic_api.update(
            company_id, SimplePublicObjectInput(properties={"hubspot_owner_id": "99"})
        )
    assert [p["message"] for p in problems(refused.value)] == ["99 is not a valid owner id"]
    read = hs.crm.companies.basic_api.get_by_id(company_id, properties=["hubspot_owner_id"])
    assert read.properties["hubspot_owner_id"] == OWNER


def test_company_properties_are_listed(hs: HubSpot) -> None:
    listed = {p.name: p for p in hs.crm.properties.core_api.get_all("companies").results}
    for name in ("name", "domain", "website", "hubspot_owner_id", "createdate", "hs_object_id"):
        assert name in listed
    assert listed["createdate"].modification_metadata.read_only_value is True
    assert listed["hubspot_owner_id"].type == "enumeration"
    assert "email" not in listed
    one = hs.crm.properties.core_api.get_by_name("companies", "domain")
    assert one.label == "Company Domain Name"


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", COMPANIES, []),
        ("POST", COMPANIES, {"properties": "x"}),
        ("POST", f"{COMPANIES}/batch/read", {"inputs": [None]}),
        ("POST", f"{COMPANIES}/batch/read", {"inputs": [{"id": "1"}] * 101}),
        ("GET", f"{COMPANIES}?after=abc", None),
        ("GET", f"{COMPANIES}/1?idProperty=domain", None),
        ("PATCH", f"{COMPANIES}/x", {"properties": {}}),
    ],
)
def test_bad_requests_get_hubspot_errors_not_500(
    http: httpx.Client, method: str, path: str, payload: Any
) -> None:
    response = http.request(method, path, json=payload)
    assert 400 <= response.status_code < 500
    assert response.json()["status"] == "error"
