"""The HubSpot emulator as clients no one on this project wrote see it.

Driven through hubspot-api-client with ``client_side_validation=True`` (its generated models,
built from HubSpot's OpenAPI descriptions, then refuse any answer missing a required field or
carrying a value outside an enum), and with plain HTTP where the client has no method: the
legacy properties API, top-level search ``filters``, text HubSpot refuses, unknown routes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.associations import BatchInputPublicObjectId
from hubspot.crm.associations.v4 import (
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.contacts import (
    BatchReadInputSimplePublicObjectId,
    PublicMergeInput,
    SimplePublicObjectId,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.objects import PublicObjectSearchRequest
from hubspot.crm.objects.exceptions import ApiException as ObjectsApiException

from leadrelay.sandbox.server import SandboxServer
from tests.hubspot_sandbox import (  # noqa: F401 (fixtures)
    hubspot_server,
    plain_http,
    reset_hubspot,
    validating_client,
)

CONTACTS = "/crm/v3/objects/contacts"
ERROR_KEYS = {"status", "message", "correlationId", "category"}


def create(hs: HubSpot, **props: str) -> str:
    created = hs.crm.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties=props))
    return str(created.id)


def company(http: httpx.Client, name: str) -> str:
    response = http.post("/crm/v3/objects/companies", json={"properties": {"name": name}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def assert_hubspot_error(response: httpx.Response, status: int, category: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body.keys() >= ERROR_KEYS
    assert body["status"] == "error"
    assert body["category"] == category
    return body


# -- legacy properties and schemas ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/properties/v1/contacts/properties",
        "/properties/v2/contact/properties",
        "/properties/v2/contacts/properties",
    ],
)
def test_legacy_properties_answer_a_bare_array_in_the_v1_shape(
    http: httpx.Client, path: str
) -> None:
    response = http.get(path)
    assert response.status_code == 200, response.text
    properties = response.json()
    assert isinstance(properties, list)
    email = next(p for p in properties if p["name"] == "email")
    assert email["type"] == "string"
    assert email["readOnlyValue"] is False
    assert isinstance(email["createdAt"], int)
    stage = next(p for p in properties if p["name"] == "lifecyclestage")
    assert "lead" in {o["value"] for o in stage["options"]}


def test_schemas_of_a_portal_without_custom_objects_are_empty(hs: HubSpot) -> None:
    assert hs.crm.schemas.core_api.get_all().results == []


def test_schemas_answer_on_the_short_path_too(http: httpx.Client) -> None:
    assert http.get("/crm/v3/schemas").json() == {"results": []}


# -- object types by name and id -------------------------------------------------------------


@pytest.mark.parametrize("object_type", ["contacts", "contact", "0-1"])
def test_contacts_are_read_by_every_name_of_their_object_type(
    hs: HubSpot, object_type: str
) -> None:
    contact_id = create(hs, email="ada@example.com")
    found = hs.crm.objects.basic_api.get_by_id(object_type, contact_id, properties=["email"])
    assert found.properties["email"] == "ada@example.com"


@pytest.mark.parametrize("object_type", ["contacts", "contact", "0-1"])
def test_contacts_are_searched_by_every_name_of_their_object_type(
    hs: HubSpot, object_type: str
) -> None:
    create(hs, email="ada@example.com")
    create(hs, email="bob@example.com")
    request = PublicObjectSearchRequest(
        filter_groups=[
            {"filters": [{"propertyName": "email", "operator": "EQ", "value": "bob@example.com"}]}
        ],
        properties=["email"],
        limit=10,
    )
    found = hs.crm.objects.search_api.do_search(object_type, request)
    assert [r.properties["email"] for r in found.results] == ["bob@example.com"]


def test_an_object_type_hubspot_cannot_resolve_is_a_400(hs: HubSpot) -> None:
    with pytest.raises(ObjectsApiException) as raised:
        hs.crm.objects.basic_api.get_page("unicorns")
    body = json.loads(raised.value.body)
    assert raised.value.status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"] == "Unable to infer object type from: unicorns"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"{CONTACTS}/1001/nothing-here", 404),
        ("GET", "/crm/v3/no-such-api", 404),
        ("PUT", f"{CONTACTS}/1001", 405),
    ],
)
def test_an_unknown_route_answers_in_hubspots_error_dialect(
    http: httpx.Client, method: str, path: str, status: int
) -> None:
    response = http.request(method, path)
    assert_hubspot_error(
        response, status, "OBJECT_NOT_FOUND" if status == 404 else "VALIDATION_ERROR"
    )


def test_stats_count_an_unserved_path_by_that_path(
    http: httpx.Client, server: SandboxServer
) -> None:
    http.get("/crm/v3/no-such-api")
    by_route = server.sandbox.stats.to_json()["by_route"]
    assert by_route == {"GET /hubspot/crm/v3/no-such-api": 1}


# -- associations ----------------------------------------------------------------------------


def test_v4_batch_read_answers_the_associated_companies(hs: HubSpot, http: httpx.Client) -> None:
    contact_id = create(hs, email="ada@example.com")
    company_id = company(http, "Acme")
    hs.crm.associations.v4.basic_api.create_default("contacts", contact_id, "companies", company_id)
    request = BatchInputPublicFetchAssociationsBatchRequest(
        inputs=[PublicFetchAssociationsBatchRequest(id=contact_id)]
    )
    answer = hs.crm.associations.v4.batch_api.get_page("contacts", "companies", request)
    assert [(r._from.id, [t.to_object_id for t in r.to]) for r in answer.results] == [
        (contact_id, [company_id])
    ]
    assert answer.results[0].to[0].association_types[0].type_id == 279


def test_v4_batch_read_answers_no_associations_as_a_207_error(
    hs: HubSpot, http: httpx.Client
) -> None:
    contact_id = create(hs, email="ada@example.com")
    response = http.post(
        "/crm/v4/associations/contact/company/batch/read", json={"inputs": [{"id": contact_id}]}
    )
    assert response.status_code == 207
    error = response.json()["errors"][0]
    assert error["subCategory"] == "crm.associations.NO_ASSOCIATIONS_FOUND"
    assert error["message"] == f"No company is associated with contact {contact_id}."


def test_v3_batch_read_answers_a_tasks_contacts(hs: HubSpot, http: httpx.Client) -> None:
    contact_id = create(hs, email="ada@example.com")
    task = http.post(
        "/crm/v3/objects/tasks",
        json={
            "properties": {"hs_timestamp": "2026-01-01T00:00:00Z", "hs_task_subject": "Call"},
            "associations": [
                {
                    "to": {"id": contact_id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
                }
            ],
        },
    ).json()
    answer = hs.crm.associations.batch_api.read(
        "contacts", "tasks", BatchInputPublicObjectId(inputs=[{"id": contact_id}])
    )
    assert [(r._from.id, [t.id for t in r.to]) for r in answer.results] == [
        (contact_id, [task["id"]])
    ]


def test_v3_contact_association_endpoints_link_list_and_unlink(
    hs: HubSpot, http: httpx.Client
) -> None:
    contact_id = create(hs, email="ada@example.com")
    company_id = company(http, "Acme")
    path = f"{CONTACTS}/{contact_id}/associations/companies"
    linked = http.put(f"{path}/{company_id}/contact_to_company")
    assert linked.status_code == 200, linked.text
    assert http.get(path).json() == {"results": [{"id": company_id, "type": "contact_to_company"}]}
    assert http.delete(f"{path}/{company_id}/contact_to_company").status_code == 204
    assert http.get(path).json() == {"results": []}


# -- search ----------------------------------------------------------------------------------


def test_top_level_filters_are_applied_together(hs: HubSpot, http: httpx.Client) -> None:
    create(hs, email="ada@example.com", firstname="Ada")
    create(hs, email="bob@example.com", firstname="Ada")
    body = {
        "filters": [
            {"propertyName": "firstname", "operator": "EQ", "value": "Ada"},
            {"propertyName": "email", "operator": "EQ", "value": "bob@example.com"},
        ],
        "properties": ["email"],
    }
    found = http.post(f"{CONTACTS}/search", json=body).json()
    assert [r["properties"]["email"] for r in found["results"]] == ["bob@example.com"]


def test_an_unknown_search_key_is_ignored_as_hubspot_ignores_it(
    hs: HubSpot, http: httpx.Client
) -> None:
    # HubSpot/hubspot-api-ruby#169: a body with "filter_groups" (snake case) is answered
    # unfiltered by HubSpot.
    create(hs, email="ada@example.com")
    create(hs, email="bob@example.com")
    body = {
        "filter_groups": [
            {"filters": [{"propertyName": "email", "operator": "EQ", "value": "x@example.com"}]}
        ]
    }
    assert http.post(f"{CONTACTS}/search", json=body).json()["total"] == 2


# -- text HubSpot refuses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        # a surrogate as UTF-8 bytes (not valid UTF-8; Python's JSON reader would let it through)
        (CONTACTS, b'{"properties": {"email": "a@example.com", "firstname": "\xed\xa0\x80"}}'),
        (CONTACTS, '{"properties": {"email": "a@example.com", "firstname": "A\\ud800"}}'),
        (CONTACTS, '{"properties": {"email": "a@example.com", "firstname": "A\\u0000B"}}'),
        (CONTACTS, '{"properties": {"email": "a@example.com", "\\udc00": "x"}}'),
        (
            f"{CONTACTS}/batch/upsert",
            '{"inputs": [{"id": "a@example.com", "idProperty": "email",'
            ' "properties": {"lastname": "\\udc00"}}]}',
        ),
    ],
)
def test_text_that_is_not_storable_is_refused_and_not_stored(
    http: httpx.Client, path: str, raw: str | bytes
) -> None:
    response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert_hubspot_error(response, 400, "VALIDATION_ERROR")
    listed = http.get(CONTACTS)
    assert listed.status_code == 200
    assert listed.json()["results"] == []


def test_a_search_for_unstorable_text_is_refused_not_a_500(http: httpx.Client) -> None:
    raw = '{"query": "\\ud800"}'
    response = http.post(
        f"{CONTACTS}/search", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_hubspot_error(response, 400, "VALIDATION_ERROR")


# -- merges and archived contacts --------------------------------------------------------------


def merge(hs: HubSpot, primary: str, other: str) -> Any:
    return hs.crm.contacts.basic_api.merge(
        PublicMergeInput(primary_object_id=primary, object_id_to_merge=other)
    )


def test_a_merge_makes_a_new_record_that_lists_both_merged_ids(hs: HubSpot) -> None:
    primary = create(hs, email="ada@example.com", firstname="Ada")
    other = create(hs, email="ada.l@example.com", firstname="Augusta", city="London")
    merged = merge(hs, primary, other)
    assert merged.id not in {primary, other}
    read = hs.crm.contacts.basic_api.get_by_id(
        merged.id, properties=["email", "firstname", "city", "hs_merged_object_ids"]
    )
    assert read.properties == {
        "email": "ada@example.com",
        "firstname": "Ada",
        "city": "London",
        "hs_merged_object_ids": f"{primary};{other}",
    }


@pytest.mark.parametrize("which", ["primary", "other"])
def test_a_merged_away_id_answers_the_merged_record(hs: HubSpot, which: str) -> None:
    ids = {
        "primary": create(hs, email="ada@example.com"),
        "other": create(hs, email="ada.l@example.com"),
    }
    merged = merge(hs, ids["primary"], ids["other"])
    assert hs.crm.contacts.basic_api.get_by_id(ids[which]).id == merged.id


def test_the_merged_away_email_finds_the_merged_record(hs: HubSpot) -> None:
    primary = create(hs, email="ada@example.com")
    other = create(hs, email="ada.l@example.com")
    merged = merge(hs, primary, other)
    read = hs.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id="ada.l@example.com")],
            id_property="email",
            properties=["email"],
            properties_with_history=[],
        )
    )
    assert [r.id for r in read.results] == [merged.id]


def test_merged_away_records_are_not_listed_as_archived(hs: HubSpot) -> None:
    merge(hs, create(hs, email="ada@example.com"), create(hs, email="ada.l@example.com"))
    assert hs.crm.contacts.basic_api.get_page(archived=True).results == []


def test_an_archived_contact_is_listed_with_its_archive_time(hs: HubSpot) -> None:
    contact_id = create(hs, email="ada@example.com")
    hs.crm.contacts.basic_api.archive(contact_id)
    page = hs.crm.contacts.basic_api.get_page(archived=True)
    assert [(r.id, r.archived) for r in page.results] == [(contact_id, True)]
    assert page.results[0].archived_at is not None


def test_merging_a_contact_with_itself_is_refused(hs: HubSpot, http: httpx.Client) -> None:
    contact_id = create(hs, email="ada@example.com")
    response = http.post(
        f"{CONTACTS}/merge", json={"primaryObjectId": contact_id, "objectIdToMerge": contact_id}
    )
    assert_hubspot_error(response, 400, "VALIDATION_ERROR")


# -- read options ----------------------------------------------------------------------------


def test_a_read_with_associations_lists_the_associated_companies(
    hs: HubSpot, http: httpx.Client
) -> None:
    contact_id = create(hs, email="ada@example.com")
    company_id = company(http, "Acme")
    hs.crm.associations.v4.basic_api.create_default("contacts", contact_id, "companies", company_id)
    read = hs.crm.contacts.basic_api.get_by_id(contact_id, associations=["companies", "tasks"])
    assert read.associations.keys() == {"companies"}  # nothing associated: left out
    assert [a.id for a in read.associations["companies"].results] == [company_id]


def test_a_read_with_history_lists_the_values_newest_first(hs: HubSpot) -> None:
    contact_id = create(hs, email="ada@example.com", firstname="Ada")
    hs.crm.contacts.basic_api.update(contact_id, {"properties": {"firstname": "Augusta"}})
    read = hs.crm.contacts.basic_api.get_by_id(contact_id, properties_with_history=["firstname"])
    assert [v.value for v in read.properties_with_history["firstname"]] == ["Augusta", "Ada"]
