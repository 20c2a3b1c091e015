"""The HubSpot emulator, driven through hubspot-api-client (and httpx where it cannot reach)."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException
from hubspot.crm.properties import (
    BatchInputPropertyCreate,
    BatchReadInputPropertyName,
    PropertyCreate,
)
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.hubspot import (
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    HubSpotEmulator,
)
from leadrelay.sandbox.hubspot import emulator as emulator_module
from leadrelay.sandbox.server import SandboxServer
from tests.hubspot_sandbox import OfficialClients, hubspot_http, hubspot_server, reset_hubspot  # noqa: F401 (fixtures)

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
CONTACTS = "/crm/v3/objects/contacts"


@pytest.fixture
def emulator(server: SandboxServer) -> HubSpotEmulator:
    found = server.sandbox.emulators["hubspot"]
    assert isinstance(found, HubSpotEmulator)
    return found


Connect = Callable[[str], HubSpot]


@pytest.fixture
def connect(server: SandboxServer) -> Iterator[Connect]:
    """Official clients for a token; their pooled connections are closed after the test."""
    clients = OfficialClients(server)
    yield clients.connect
    clients.close()


@pytest.fixture
def hs(connect: Connect) -> HubSpot:
    return connect(SANDBOX_ACCESS_TOKEN)


@pytest.fixture
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    with hubspot_http(server) as client:
        yield client


def body_of(exc: Exception) -> dict[str, Any]:
    assert isinstance(exc, ApiException | PropertiesApiException)
    parsed: dict[str, Any] = json.loads(exc.body)
    return parsed


def create(hs: HubSpot, **props: str) -> str:
    created = hs.crm.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties=props))
    return str(created.id)


def update(hs: HubSpot, contact_id: str, **props: str) -> Any:
    return hs.crm.contacts.basic_api.update(contact_id, SimplePublicObjectInput(properties=props))


def search(hs: HubSpot, **request: Any) -> Any:
    return hs.crm.contacts.search_api.do_search(PublicObjectSearchRequest(**request))


# ------------------------------------------------------------------ env, auth, errors


def test_env_names_base_url_and_sandbox_token(server: SandboxServer) -> None:
    env = server.env()
    assert env["HUBSPOT_BASE_URL"] == f"{server.url}/hubspot"
    assert env["HUBSPOT_ACCESS_TOKEN"].startswith("pat-sandbox-")


def test_wrong_token_gets_401_invalid_authentication(connect: Connect) -> None:
    wrong = connect("pat-na1-wrong")
    with pytest.raises(ApiException) as caught:
        wrong.crm.contacts.basic_api.get_page()
    assert caught.value.status == 401
    body = body_of(caught.value)
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.")
    assert body["status"] == "error"


def test_malformed_json_is_a_validation_error(http: httpx.Client) -> None:
    response = http.post(
        CONTACTS, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_unknown_route_answers_hubspot_404(http: httpx.Client) -> None:
    response = http.get("/crm/v3/nothing/here")
    assert response.status_code == 404
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == "OBJECT_NOT_FOUND"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["correlationId"])


@pytest.mark.parametrize(
    "path",
    [
        CONTACTS,
        f"{CONTACTS}/search",
        *(f"{CONTACTS}/batch/{op}" for op in ("read", "create", "update", "upsert", "archive")),
        "/crm/v3/properties/contacts",
        *(f"/crm/v3/properties/contacts/batch/{op}" for op in ("read", "create", "archive")),
    ],
)
@pytest.mark.parametrize(
    "payload",
    [
        [],
        "text",
        {"inputs": "x"},
        {"inputs": [1, None]},
        {"inputs": [{"id": ["x"], "properties": 3, "idProperty": 5}]},
        {
            "properties": [1],
            "name": "x",
            "label": 1,
            "type": "string",
            "fieldType": "text",
            "groupName": "g",
            "options": [{"label": "a", "value": "b", "displayOrder": "z"}],
        },
        {"filterGroups": [{"filters": [None]}], "sorts": [3], "limit": "x", "after": {}},
        {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "createdate", "operator": "GT", "value": "yesterday"}
                    ]
                }
            ]
        },
    ],
)
def test_bad_bodies_get_validation_errors_not_500(
    http: httpx.Client, path: str, payload: Any
) -> None:
    response = http.post(path, json=payload)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.json()["status"] == "error"


def test_api_responses_carry_rate_limit_headers(http: httpx.Client) -> None:
    first = http.get(CONTACTS)
    second = http.get(CONTACTS)
    assert first.headers["X-HubSpot-RateLimit-Max"] == "190"
    assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert first.headers["X-HubSpot-RateLimit-Daily"] == "650000"
    assert int(second.headers["X-HubSpot-RateLimit-Remaining"]) == (
        int(first.headers["X-HubSpot-RateLimit-Remaining"]) - 1
    )
    assert int(second.headers["X-HubSpot-RateLimit-Daily-Remaining"]) == (
        int(first.headers["X-HubSpot-RateLimit-Daily-Remaining"]) - 1
    )
    assert "X-HubSpot-RateLimit-Secondly-Remaining" in first.headers


def test_burst_budget_answers_ten_secondly_429(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator_module, "TEN_SECOND_LIMIT", 2)
    codes = [http.get(CONTACTS).status_code for _ in range(3)]
    response = http.get(CONTACTS)
    assert codes == [200, 200, 429]
    body = response.json()
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert response.headers["X-HubSpot-RateLimit-Remaining"] == "0"


def test_injected_rate_limit_answers_ten_secondly_body(server: SandboxServer, hs: HubSpot) -> None:
    server.sandbox.set_faults(Faults(rate_limit_per_10s=1))
    hs.crm.contacts.basic_api.get_page()
    with pytest.raises(ApiException) as caught:
        hs.crm.contacts.basic_api.get_page()
    assert caught.value.status == 429
    assert body_of(caught.value)["policyName"] == "TEN_SECONDLY_ROLLING"


def test_injected_fault_answers_hubspot_error_shape(server: SandboxServer, hs: HubSpot) -> None:
    server.sandbox.set_faults(Faults(error_rate=1.0, error_status=503))
    with pytest.raises(ApiException) as caught:
        hs.crm.contacts.basic_api.get_page()
    assert caught.value.status == 503
    body = body_of(caught.value)
    assert body["status"] == "error"
    assert {"message", "correlationId", "category"} <= body.keys()


# ------------------------------------------------------------------ contacts


def test_create_returns_201_shape(hs: HubSpot, http: httpx.Client) -> None:
    response = http.post(CONTACTS, json={"properties": {"email": "Ana@Example.com", "zip": 1234}})
    assert response.status_code == 201
    created = response.json()
    assert created["id"].isdigit()
    assert created["archived"] is False
    assert ISO_MS.match(created["createdAt"]) and ISO_MS.match(created["updatedAt"])
    props = created["properties"]
    assert props["email"] == "ana@example.com"
    assert props["zip"] == "1234"
    assert props["hs_object_id"] == created["id"]
    assert ISO_MS.match(props["createdate"]) and ISO_MS.match(props["lastmodifieddate"])


def test_ids_are_increasing_numeric_strings(hs: HubSpot) -> None:
    ids = [create(hs, firstname=f"n{i}") for i in range(3)]
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)
    assert len(set(ids)) == 3


def test_create_needs_email_or_a_name(hs: HubSpot) -> None:
    with pytest.raises(ApiException) as caught:
        create(hs, company="Acme")
    assert caught.value.status == 400
    assert body_of(caught.value)["category"] == "VALIDATION_ERROR"


def test_duplicate_email_is_409_with_existing_id(hs: HubSpot) -> None:
    first = create(hs, email="dup@example.com")
    with pytest.raises(ApiException) as caught:
        create(hs, email="DUP@example.com")
    assert caught.value.status == 409
    body = body_of(caught.value)
    assert body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {first}"


@pytest.mark.parametrize("id_property", [None, "email"])
def test_get_by_id_or_email(hs: HubSpot, id_property: str | None) -> None:
    contact_id = create(hs, email="get@example.com", firstname="Get")
    key = contact_id if id_property is None else "GET@example.com"
    found = hs.crm.contacts.basic_api.get_by_id(key, id_property=id_property)
    assert found.id == contact_id
    assert found.properties["firstname"] == "Get"


def test_get_default_properties(hs: HubSpot) -> None:
    contact_id = create(hs, email="d@example.com", company="Acme")
    found = hs.crm.contacts.basic_api.get_by_id(contact_id)
    assert set(found.properties) == {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert found.properties["firstname"] is None


@pytest.mark.parametrize("query", ["properties=company&properties=city", "properties=company,city"])
def test_properties_param_chooses_returned(hs: HubSpot, http: httpx.Client, query: str) -> None:
    contact_id = create(hs, email="p@example.com", company="Acme")
    response = http.get(f"{CONTACTS}/{contact_id}?{query}")
    assert response.json()["properties"] == {"company": "Acme", "city": None}


def test_get_unknown_id_is_404(hs: HubSpot) -> None:
    with pytest.raises(ApiException) as caught:
        hs.crm.contacts.basic_api.get_by_id("999999")
    assert caught.value.status == 404
    assert body_of(caught.value)["category"] == "OBJECT_NOT_FOUND"


def test_list_pages_with_after(hs: HubSpot) -> None:
    ids = [create(hs, firstname=f"p{i}") for i in range(5)]
    first = hs.crm.contacts.basic_api.get_page(limit=2)
    second = hs.crm.contacts.basic_api.get_page(limit=2, after=first.paging.next.after)
    last = hs.crm.contacts.basic_api.get_page(limit=2, after=second.paging.next.after)
    seen = [c.id for page in (first, second, last) for c in page.results]
    assert seen == ids
    assert last.paging is None


def test_list_limit_over_100_is_refused(hs: HubSpot) -> None:
    with pytest.raises(ApiException) as caught:
        hs.crm.contacts.basic_api.get_page(limit=101)
    assert caught.value.status == 400


def test_update_unknown_property_names_it(hs: HubSpot) -> None:
    contact_id = create(hs, email="u@example.com")
    with pytest.raises(ApiException) as caught:
        update(hs, contact_id, favourite_colour="blue")
    assert caught.value.status == 400
    body = body_of(caught.value)
    assert body["category"] == "VALIDATION_ERROR"
    assert 'Property \\"favourite_colour\\" does not exist' in body["message"]


@pytest.mark.parametrize("prop", ["hs_object_id", "lastmodifieddate", "hs_analytics_source_data_1"])
def test_update_read_only_property_is_refused(hs: HubSpot, prop: str) -> None:
    contact_id = create(hs, email="ro@example.com")
    with pytest.raises(ApiException) as caught:
        update(hs, contact_id, **{prop: "1"})
    assert caught.value.status == 400
    assert "READ_ONLY_VALUE" in body_of(caught.value)["message"]


def test_update_empty_string_clears(hs: HubSpot) -> None:
    contact_id = create(hs, email="c@example.com", company="Acme")
    updated = update(hs, contact_id, company="")
    assert "company" not in updated.properties
    found = hs.crm.contacts.basic_api.get_by_id(contact_id, properties=["company"])
    assert found.properties["company"] is None


def test_update_by_email_id_property(hs: HubSpot) -> None:
    contact_id = create(hs, email="by@example.com")
    hs.crm.contacts.basic_api.update(
        "by@example.com", SimplePublicObjectInput(properties={"city": "Oslo"}), id_property="email"
    )
    found = hs.crm.contacts.basic_api.get_by_id(contact_id, properties=["city"])
    assert found.properties["city"] == "Oslo"


def test_update_advances_lastmodifieddate(hs: HubSpot) -> None:
    contact_id = create(hs, email="t@example.com")
    before = hs.crm.contacts.basic_api.get_by_id(contact_id)
    after = update(hs, contact_id, city="Rome")
    assert after.properties["lastmodifieddate"] > before.properties["lastmodifieddate"]
    assert after.updated_at > before.updated_at


def test_identical_write_does_not_touch_lastmodifieddate(hs: HubSpot) -> None:
    contact_id = create(hs, email="same@example.com", city="Rome")
    before = hs.crm.contacts.basic_api.get_by_id(contact_id)
    after = update(hs, contact_id, city="Rome")
    assert after.properties["lastmodifieddate"] == before.properties["lastmodifieddate"]


def test_archive_then_get_is_404_and_email_is_free(hs: HubSpot) -> None:
    contact_id = create(hs, email="gone@example.com")
    hs.crm.contacts.basic_api.archive(contact_id)
    with pytest.raises(ApiException):
        hs.crm.contacts.basic_api.get_by_id(contact_id)
    archived = hs.crm.contacts.basic_api.get_by_id(contact_id, archived=True)
    assert archived.archived is True
    assert create(hs, email="gone@example.com") != contact_id


@pytest.mark.parametrize(
    ("prop", "value"),
    [("lifecyclestage", "hot"), ("hs_lead_status", "new"), ("numemployees", "7")],
)
def test_enumeration_refuses_unknown_option(hs: HubSpot, prop: str, value: str) -> None:
    contact_id = create(hs, email="e@example.com")
    with pytest.raises(ApiException) as caught:
        update(hs, contact_id, **{prop: value})
    assert caught.value.status == 400
    message = body_of(caught.value)["message"]
    assert f"{value} was not one of the allowed options: [" in message
    assert "INVALID_OPTION" in message


@pytest.mark.parametrize(
    ("prop", "value"), [("email", "not-an-email"), ("hubspot_owner_id", "123")]
)
def test_invalid_values_are_refused(hs: HubSpot, prop: str, value: str) -> None:
    contact_id = create(hs, firstname="X")
    with pytest.raises(ApiException) as caught:
        update(hs, contact_id, **{prop: value})
    assert caught.value.status == 400


def test_lifecycle_backward_write_is_ignored(hs: HubSpot) -> None:
    contact_id = create(hs, email="l@example.com", lifecyclestage="opportunity")
    answer = update(hs, contact_id, lifecyclestage="lead")
    assert answer.properties["lifecyclestage"] == "opportunity"


def test_lifecycle_forward_write_applies(hs: HubSpot) -> None:
    contact_id = create(hs, email="l@example.com", lifecyclestage="lead")
    assert update(hs, contact_id, lifecyclestage="customer").properties["lifecyclestage"] == (
        "customer"
    )


def test_lifecycle_clear_then_earlier_stage(hs: HubSpot) -> None:
    contact_id = create(hs, email="l@example.com", lifecyclestage="customer")
    update(hs, contact_id, lifecyclestage="")
    answer = update(hs, contact_id, lifecyclestage="subscriber")
    assert answer.properties["lifecyclestage"] == "subscriber"


# ------------------------------------------------------------------ batch


def test_batch_read_reports_missing_ids_as_207(hs: HubSpot) -> None:
    contact_id = create(hs, email="r@example.com", city="Oslo")
    answer = hs.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": contact_id}, {"id": "424242"}], properties=["city"]
        )
    )
    assert [r.properties for r in answer.results] == [{"city": "Oslo"}]
    assert answer.num_errors == 1
    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context == {"ids": ["424242"]}


def test_batch_read_by_email(hs: HubSpot) -> None:
    contact_id = create(hs, email="br@example.com")
    answer = hs.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": "BR@example.com"}], id_property="email", properties=["email"]
        )
    )
    assert [r.id for r in answer.results] == [contact_id]
    assert answer.status == "COMPLETE"


def test_batch_create_with_trace_ids_gives_partial_207(hs: HubSpot) -> None:
    answer = hs.crm.contacts.batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                {"properties": {"email": "ok@example.com"}, "objectWriteTraceId": "t1"},
                {
                    "properties": {"email": "ok2@example.com", "bogus": "x"},
                    "objectWriteTraceId": "t2",
                },
            ]
        )
    )
    assert [r.properties["email"] for r in answer.results] == ["ok@example.com"]
    assert answer.results[0].object_write_trace_id == "t1"
    assert answer.errors[0].context == {"objectWriteTraceId": ["t2"]}
    assert answer.errors[0].category == "VALIDATION_ERROR"


def test_batch_create_without_trace_ids_fails_whole_batch(hs: HubSpot) -> None:
    with pytest.raises(ApiException) as caught:
        hs.crm.contacts.batch_api.create(
            BatchInputSimplePublicObjectBatchInputForCreate(
                inputs=[
                    {"properties": {"email": "ok@example.com"}},
                    {"properties": {"email": "ok2@example.com", "bogus": "x"}},
                ]
            )
        )
    assert caught.value.status == 400
    assert hs.crm.contacts.basic_api.get_page().results == []


def test_batch_create_existing_email_is_conflict(hs: HubSpot) -> None:
    existing = create(hs, email="old@example.com")
    with pytest.raises(ApiException) as caught:
        hs.crm.contacts.batch_api.create(
            BatchInputSimplePublicObjectBatchInputForCreate(
                inputs=[{"properties": {"email": "old@example.com"}}]
            )
        )
    assert caught.value.status == 409
    assert body_of(caught.value)["message"] == f"Contact already exists. Existing ID: {existing}"


def test_batch_update_reports_missing_ids(hs: HubSpot) -> None:
    contact_id = create(hs, email="bu@example.com")
    answer = hs.crm.contacts.batch_api.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[
                {"id": contact_id, "properties": {"city": "Lima"}},
                {"id": "777777", "properties": {"city": "Lima"}},
            ]
        )
    )
    assert answer.results[0].properties["city"] == "Lima"
    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context == {"ids": ["777777"]}


def test_batch_update_all_found_is_200(http: httpx.Client, hs: HubSpot) -> None:
    contact_id = create(hs, email="bu@example.com")
    response = http.post(
        f"{CONTACTS}/batch/update", json={"inputs": [{"id": contact_id, "properties": {}}]}
    )
    assert response.status_code == 200
    assert {"status", "results", "startedAt", "completedAt"} <= response.json().keys()


def test_batch_upsert_matches_email_case_insensitively(hs: HubSpot) -> None:
    existing = create(hs, email="known@example.com")
    answer = hs.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                {"id": "Known@Example.COM", "idProperty": "email", "properties": {"city": "X"}},
                {"id": "fresh@example.com", "idProperty": "email", "properties": {"city": "Y"}},
            ]
        )
    )
    by_email = {r.properties["email"]: r for r in answer.results}
    assert by_email["known@example.com"].new is False
    assert by_email["known@example.com"].id == existing
    assert by_email["fresh@example.com"].new is True


def test_batch_upsert_bad_row_with_trace_ids_is_207(http: httpx.Client) -> None:
    response = http.post(
        f"{CONTACTS}/batch/upsert",
        json={
            "inputs": [
                {
                    "id": "a@example.com",
                    "idProperty": "email",
                    "properties": {},
                    "objectWriteTraceId": "a",
                },
                {
                    "id": "b@example.com",
                    "idProperty": "email",
                    "properties": {"lifecyclestage": "nope"},
                    "objectWriteTraceId": "b",
                },
            ]
        },
    )
    assert response.status_code == 207
    body = response.json()
    assert body["numErrors"] == 1
    assert body["errors"][0]["context"] == {"objectWriteTraceId": ["b"]}
    assert [r["new"] for r in body["results"]] == [True]


def test_batch_upsert_duplicate_ids_are_refused(http: httpx.Client) -> None:
    inputs = [
        {"id": "a@example.com", "idProperty": "email", "properties": {}},
        {"id": "A@example.com", "idProperty": "email", "properties": {}},
    ]
    response = http.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert response.status_code == 400


@pytest.mark.parametrize("operation", ["read", "create", "update", "upsert", "archive"])
def test_batch_over_100_inputs_is_refused(http: httpx.Client, operation: str) -> None:
    inputs = [
        {"id": f"{i}@example.com", "idProperty": "email", "properties": {"email": f"{i}@e.com"}}
        for i in range(101)
    ]
    response = http.post(f"{CONTACTS}/batch/{operation}", json={"inputs": inputs})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert "may not exceed 100" in body["message"]


def test_batch_archive_is_204(hs: HubSpot) -> None:
    contact_id = create(hs, email="ba@example.com")
    hs.crm.contacts.batch_api.archive(BatchInputSimplePublicObjectId(inputs=[{"id": contact_id}]))
    assert hs.crm.contacts.basic_api.get_page().results == []


# ------------------------------------------------------------------ search


@pytest.fixture
def people(hs: HubSpot) -> dict[str, str]:
    rows = {
        "ana": {
            "email": "ana@acme.com",
            "firstname": "Ana",
            "numemployees": "1-5",
            "lifecyclestage": "lead",
            "company": "Acme Corp",
        },
        "bo": {
            "email": "bo@globex.com",
            "firstname": "Bo",
            "lifecyclestage": "customer",
            "company": "Globex",
        },
        "cy": {"email": "cy@acme.com", "firstname": "Cy", "lifecyclestage": "lead"},
    }
    return {name: create(hs, **props) for name, props in rows.items()}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"propertyName": "email", "operator": "EQ", "value": "ANA@acme.com"}, {"ana"}),
        ({"propertyName": "lifecyclestage", "operator": "NEQ", "value": "lead"}, {"bo"}),
        ({"propertyName": "hs_object_id", "operator": "LT", "value": "1002"}, {"ana"}),
        ({"propertyName": "hs_object_id", "operator": "LTE", "value": "1002"}, {"ana", "bo"}),
        ({"propertyName": "hs_object_id", "operator": "GT", "value": "1002"}, {"cy"}),
        ({"propertyName": "hs_object_id", "operator": "GTE", "value": "1002"}, {"bo", "cy"}),
        (
            {
                "propertyName": "hs_object_id",
                "operator": "BETWEEN",
                "value": "1002",
                "highValue": "1003",
            },
            {"bo", "cy"},
        ),
        ({"propertyName": "firstname", "operator": "IN", "values": ["ana", "bo"]}, {"ana", "bo"}),
        ({"propertyName": "firstname", "operator": "NOT_IN", "values": ["ana"]}, {"bo", "cy"}),
        ({"propertyName": "company", "operator": "HAS_PROPERTY"}, {"ana", "bo"}),
        ({"propertyName": "company", "operator": "NOT_HAS_PROPERTY"}, {"cy"}),
        ({"propertyName": "company", "operator": "CONTAINS_TOKEN", "value": "acme"}, {"ana"}),
        (
            {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@acme.com"},
            {"ana", "cy"},
        ),
        (
            {"propertyName": "company", "operator": "NOT_CONTAINS_TOKEN", "value": "acme"},
            {"bo", "cy"},
        ),
    ],
)
def test_search_operators(
    hs: HubSpot, people: dict[str, str], flt: dict[str, Any], expected: set[str]
) -> None:
    # ids start at 1001 in a fresh sandbox: ana=1001, bo=1002, cy=1003
    assert people == {"ana": "1001", "bo": "1002", "cy": "1003"}
    answer = search(hs, filter_groups=[{"filters": [flt]}])
    names = {name for name, cid in people.items() if cid in {r.id for r in answer.results}}
    assert names == expected
    assert answer.total == len(expected)


def test_search_groups_or_and_filters_and(hs: HubSpot, people: dict[str, str]) -> None:
    answer = search(
        hs,
        filter_groups=[
            {
                "filters": [
                    {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"},
                    {"propertyName": "company", "operator": "HAS_PROPERTY"},
                ]
            },
            {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Bo"}]},
        ],
    )
    assert {r.id for r in answer.results} == {people["ana"], people["bo"]}


@pytest.mark.parametrize(
    "sorts",
    [["-firstname"], [{"propertyName": "firstname", "direction": "DESCENDING"}]],
)
def test_search_sorts(hs: HubSpot, people: dict[str, str], sorts: list[Any]) -> None:
    answer = search(hs, sorts=sorts)
    assert [r.id for r in answer.results] == [people["cy"], people["bo"], people["ana"]]


@pytest.mark.parametrize("as_epoch_ms", [True, False])
def test_search_filters_dates_as_epoch_ms_or_iso(
    hs: HubSpot, people: dict[str, str], as_epoch_ms: bool
) -> None:
    stamp = hs.crm.contacts.basic_api.get_by_id(people["bo"]).properties["lastmodifieddate"]
    value = stamp
    if as_epoch_ms:
        from datetime import datetime

        value = str(int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000))
    answer = search(
        hs,
        filter_groups=[
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": value}]}
        ],
    )
    ids = {r.id for r in answer.results}
    assert people["bo"] in ids and people["cy"] in ids


def test_search_query_matches_text(hs: HubSpot, people: dict[str, str]) -> None:
    answer = search(hs, query="globex")
    assert [r.id for r in answer.results] == [people["bo"]]


def test_search_returns_default_or_chosen_properties(hs: HubSpot, people: dict[str, str]) -> None:
    default = search(hs, limit=1).results[0].properties
    chosen = search(hs, limit=1, properties=["company"]).results[0].properties
    assert "email" in default and "company" not in default
    assert chosen == {"company": "Acme Corp"}


def test_search_pages_with_after(hs: HubSpot, people: dict[str, str]) -> None:
    first = search(hs, limit=2)
    second = search(hs, limit=2, after=first.paging.next.after)
    assert first.total == 3
    assert [r.id for r in first.results + second.results] == list(people.values())
    assert second.paging is None


@pytest.mark.parametrize(
    "request_body",
    [
        {"limit": 201},
        {"limit": 100, "after": "9950"},
        {
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}]
            * 6
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 11}
            ]
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 9}
            ]
            * 3
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "LIKE", "value": "a"}]}
            ]
        },
        {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "HAS_PROPERTY"}]}]},
    ],
    ids=["limit", "past-10000", "groups", "filters", "total-filters", "operator", "property"],
)
def test_search_refuses_out_of_limits(http: httpx.Client, request_body: dict[str, Any]) -> None:
    response = http.post(f"{CONTACTS}/search", json=request_body)
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_search_has_own_rate_limit_and_no_rate_headers(http: httpx.Client) -> None:
    responses = [http.post(f"{CONTACTS}/search", json={}) for _ in range(6)]
    assert [r.status_code for r in responses[:5]] == [200] * 5
    assert responses[5].status_code == 429
    assert responses[5].json()["message"] == "You have reached your secondly limit."
    assert responses[5].json()["category"] == "RATE_LIMITS"
    assert not [h for h in responses[0].headers if h.lower().startswith("x-hubspot-ratelimit")]


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_search_lag_hides_new_and_shows_old_versions(
    server: SandboxServer, emulator: HubSpotEmulator, hs: HubSpot
) -> None:
    clock = _Clock(1_700_000_000.0)
    emulator.store.clock = clock
    contact_id = create(hs, email="lag@example.com", city="Old")
    server.sandbox.set_faults(Faults(search_lag_s=5))
    by_city = {"filters": [{"propertyName": "city", "operator": "HAS_PROPERTY"}]}
    assert search(hs, filter_groups=[by_city]).total == 0
    clock.now += 6
    update(hs, contact_id, city="New")
    visible = search(hs, filter_groups=[by_city], properties=["city"]).results
    assert [r.properties["city"] for r in visible] == ["Old"]
    clock.now += 6
    visible = search(hs, filter_groups=[by_city], properties=["city"]).results
    assert [r.properties["city"] for r in visible] == ["New"]


# ------------------------------------------------------------------ properties


def test_properties_list_defaults_and_utm(hs: HubSpot) -> None:
    names = {p.name: p for p in hs.crm.properties.core_api.get_all("contacts").results}
    for required in (
        "lifecyclestage",
        "hs_lead_status",
        "hs_analytics_source",
        "utm_source",
        "utm_content",
        "hubspot_owner_id",
        "numemployees",
    ):
        assert required in names
    stages = [o.value for o in names["lifecyclestage"].options]
    assert stages == [
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
        "other",
    ]
    assert names["utm_source"].hubspot_defined is not True
    assert "PAID_SOCIAL" in [o.value for o in names["hs_analytics_source"].options]


def test_property_get_one(hs: HubSpot) -> None:
    prop = hs.crm.properties.core_api.get_by_name("contacts", "hs_lead_status")
    assert prop.type == "enumeration"
    assert [o.value for o in prop.options][:2] == ["NEW", "OPEN"]


def test_property_create_and_write(hs: HubSpot) -> None:
    created = hs.crm.properties.core_api.create(
        "contacts",
        PropertyCreate(
            name="score", label="Score", type="number", field_type="number", group_name="leadrelay"
        ),
    )
    assert created.name == "score"
    contact_id = create(hs, email="s@example.com", score="12")
    assert hs.crm.contacts.basic_api.get_by_id(contact_id, properties=["score"]).properties == {
        "score": "12"
    }


def test_property_create_duplicate_is_409(hs: HubSpot) -> None:
    with pytest.raises(PropertiesApiException) as caught:
        hs.crm.properties.core_api.create(
            "contacts",
            PropertyCreate(
                name="utm_source",
                label="x",
                type="string",
                field_type="text",
                group_name="leadrelay",
            ),
        )
    assert caught.value.status == 409


def test_property_create_needs_required_fields(http: httpx.Client) -> None:
    response = http.post("/crm/v3/properties/contacts", json={"name": "x", "label": "X"})
    assert response.status_code == 400
    assert "type" in response.json()["message"]


def test_property_batch_read_and_create(hs: HubSpot) -> None:
    hs.crm.properties.batch_api.create(
        "contacts",
        BatchInputPropertyCreate(
            inputs=[
                {
                    "name": "gclid",
                    "label": "GCLID",
                    "type": "string",
                    "fieldType": "text",
                    "groupName": "leadrelay",
                }
            ]
        ),
    )
    answer = hs.crm.properties.batch_api.read(
        "contacts",
        BatchReadInputPropertyName(inputs=[{"name": "gclid"}, {"name": "email"}], archived=False),
    )
    assert sorted(p.name for p in answer.results) == ["email", "gclid"]


def test_property_archive_makes_writes_fail(hs: HubSpot) -> None:
    hs.crm.properties.core_api.archive("contacts", "utm_term")
    with pytest.raises(ApiException) as caught:
        create(hs, email="a@example.com", utm_term="x")
    assert 'Property \\"utm_term\\" does not exist' in body_of(caught.value)["message"]


# ------------------------------------------------------------------ schema drift


def test_remove_field_makes_writes_fail(server: SandboxServer, hs: HubSpot) -> None:
    contact_id = create(hs, email="r@example.com", jobtitle="CTO")
    server.sandbox.emulators["hubspot"].change_schema({"remove_field": "jobtitle"})
    with pytest.raises(ApiException) as caught:
        update(hs, contact_id, jobtitle="CEO")
    assert 'Property \\"jobtitle\\" does not exist' in body_of(caught.value)["message"]
    read = hs.crm.contacts.basic_api.get_by_id(contact_id, properties=["jobtitle", "email"])
    assert read.properties == {"email": "r@example.com"}


def test_remove_option_makes_writes_fail(server: SandboxServer, hs: HubSpot) -> None:
    server.sandbox.emulators["hubspot"].change_schema(
        {"remove_option": {"field": "hs_lead_status", "value": "BAD_TIMING"}}
    )
    with pytest.raises(ApiException) as caught:
        create(hs, email="o@example.com", hs_lead_status="BAD_TIMING")
    assert "BAD_TIMING was not one of the allowed options" in body_of(caught.value)["message"]


@pytest.mark.parametrize(
    "change",
    [{"remove_field": "nope"}, {"remove_option": {"field": "email", "value": "x"}}],
)
def test_unknown_schema_change_is_refused(
    http: httpx.Client, server: SandboxServer, change: dict[str, Any]
) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(base_url=server.url, verify=context) as admin:
        response = admin.post("/__sandbox__/schema", json={"system": "hubspot", **change})
    assert response.status_code == 400


# ------------------------------------------------------------------ owners


def test_owners_list_and_get(hs: HubSpot) -> None:
    owners = hs.crm.owners.owners_api.get_page().results
    assert len(owners) >= 4
    first = hs.crm.owners.owners_api.get_by_id(int(owners[0].id))
    assert first.email == owners[0].email
    assert first.user_id and first.teams


def test_owners_filter_by_email(hs: HubSpot) -> None:
    owners = hs.crm.owners.owners_api.get_page().results
    found = hs.crm.owners.owners_api.get_page(email=owners[1].email).results
    assert [o.id for o in found] == [owners[1].id]


def test_owners_page_with_after(hs: HubSpot) -> None:
    first = hs.crm.owners.owners_api.get_page(limit=2)
    second = hs.crm.owners.owners_api.get_page(limit=2, after=first.paging.next.after)
    assert {o.id for o in first.results}.isdisjoint({o.id for o in second.results})


def test_owner_ids_are_hubspot_owner_id_options(hs: HubSpot) -> None:
    owner = hs.crm.owners.owners_api.get_page().results[0]
    contact_id = create(hs, email="own@example.com", hubspot_owner_id=owner.id)
    found = hs.crm.contacts.basic_api.get_by_id(contact_id, properties=["hubspot_owner_id"])
    assert found.properties["hubspot_owner_id"] == owner.id


# ------------------------------------------------------------------ OAuth


def test_oauth_refresh_issues_working_token(connect: Connect, hs: HubSpot) -> None:
    issued = hs.oauth.tokens_api.create(
        grant_type="refresh_token",
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        refresh_token=SANDBOX_REFRESH_TOKEN,
    )
    assert issued.expires_in > 0
    oauth = connect(issued.access_token)
    assert oauth.crm.contacts.basic_api.get_page().results == []
    info = hs.oauth.access_tokens_api.get(issued.access_token)
    assert info.token == issued.access_token and info.expires_in > 0


def test_oauth_token_calls_omit_daily_headers(server: SandboxServer, hs: HubSpot) -> None:
    issued = hs.oauth.tokens_api.create(
        grant_type="refresh_token",
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        refresh_token=SANDBOX_REFRESH_TOKEN,
    )
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(verify=context) as client:
        response = client.get(
            server.env()["HUBSPOT_BASE_URL"] + CONTACTS,
            headers={"Authorization": f"Bearer {issued.access_token}"},
        )
    assert response.status_code == 200
    assert "X-HubSpot-RateLimit-Max" in response.headers
    assert "X-HubSpot-RateLimit-Daily" not in response.headers


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("refresh_token", "BAD_REFRESH_TOKEN"),
        ("client_id", "BAD_CLIENT_ID"),
        ("client_secret", "BAD_CLIENT_SECRET"),
    ],
)
def test_oauth_bad_credentials_are_400(http: httpx.Client, field: str, status: str) -> None:
    form = {
        "grant_type": "refresh_token",
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "refresh_token": SANDBOX_REFRESH_TOKEN,
        field: "wrong",
    }
    response = http.post("/oauth/v1/token", data=form)
    assert response.status_code == 400
    assert response.json()["status"] == status
