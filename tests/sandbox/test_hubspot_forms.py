"""HubSpot's forms submission API in the HubSpot emulator, driven with plain httpx."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.hubspot import (
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_FORM_GUID,
    SANDBOX_PORTAL_ID,
)
from leadrelay.sandbox.hubspot.forms import UNAUTHENTICATED_LIMIT, original_source
from leadrelay.sandbox.server import SandboxServer
from tests.hubspot_sandbox import hubspot_server, reset_hubspot  # noqa: F401 (fixtures)

SECURE = "/submissions/v3/integration/secure/submit"
OPEN = "/submissions/v3/integration/submit"
CONTACTS = "/crm/v3/objects/contacts"
AUTH = {"Authorization": f"Bearer {SANDBOX_ACCESS_TOKEN}"}


@pytest.fixture
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    base = server.env()["HUBSPOT_BASE_URL"]
    with httpx.Client(base_url=base, verify=context, timeout=10) as client:
        yield client


def body(**fields: str) -> dict[str, Any]:
    return {
        "fields": [{"objectTypeId": "0-1", "name": k, "value": v} for k, v in fields.items()],
        "submittedAt": int(time.time() * 1000),
        "context": {"pageUri": "https://www.example.com/contact", "pageName": "Contact"},
    }


def submit(
    http: httpx.Client, payload: Any, *, secure: bool = True, portal: str = SANDBOX_PORTAL_ID
) -> httpx.Response:
    path = f"{SECURE if secure else OPEN}/{portal}/{SANDBOX_FORM_GUID}"
    return http.post(path, json=payload, headers=AUTH if secure else {})


def contact(http: httpx.Client, email: str, *properties: str) -> dict[str, Any]:
    params = {"idProperty": "email", "properties": ",".join(["email", *properties])}
    response = http.get(f"{CONTACTS}/{email}", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_env_names_the_portal_and_the_form(server: SandboxServer) -> None:
    env = server.env()
    assert (env["HUBSPOT_PORTAL_ID"], env["HUBSPOT_FORM_GUID"]) == (
        SANDBOX_PORTAL_ID,
        SANDBOX_FORM_GUID,
    )


@pytest.mark.parametrize("secure", [True, False])
def test_submission_answers_the_inline_message(http: httpx.Client, secure: bool) -> None:
    response = submit(http, body(email="ana@example.com", firstname="Ana"), secure=secure)

    assert response.status_code == 200, response.text
    assert response.json() == {"inlineMessage": "Thanks for submitting the form."}


def test_submission_creates_the_contact_with_a_lower_cased_email(http: httpx.Client) -> None:
    submit(http, body(email="Ana.Silva@Example.COM", firstname="Ana", utm_source="news"))

    found = contact(http, "ana.silva@example.com", "firstname", "utm_source", "lifecyclestage")
    assert found["properties"]["email"] == "ana.silva@example.com"
    assert (found["properties"]["firstname"], found["properties"]["utm_source"]) == ("Ana", "news")
    assert found["properties"]["lifecyclestage"] == "lead"


def test_second_submission_updates_the_same_contact(http: httpx.Client) -> None:
    submit(http, body(email="ana@example.com", firstname="Ana", company="Old Co"))
    first = contact(http, "ana@example.com")["id"]

    submit(http, body(email="ana@example.com", company="New Co"))

    found = contact(http, "ana@example.com", "firstname", "company")
    assert found["id"] == first
    assert (found["properties"]["firstname"], found["properties"]["company"]) == ("Ana", "New Co")


def test_form_lifecycle_stage_never_moves_a_contact_back(http: httpx.Client) -> None:
    submit(http, body(email="ana@example.com"))
    update = {"properties": {"lifecyclestage": "customer"}}
    patched = http.patch(
        f"{CONTACTS}/ana@example.com", params={"idProperty": "email"}, json=update, headers=AUTH
    )
    assert patched.status_code == 200, patched.text

    submit(http, body(email="ana@example.com", firstname="Ana"))

    assert contact(http, "ana@example.com", "lifecyclestage")["properties"]["lifecyclestage"] == (
        "customer"
    )


def test_submitted_contact_shows_in_search_after_the_lag(
    http: httpx.Client, server: SandboxServer
) -> None:
    server.sandbox.set_faults(Faults(search_lag_s=0.3))
    submit(http, body(email="ana@example.com"))
    query = {
        "filterGroups": [
            {"filters": [{"propertyName": "email", "operator": "EQ", "value": "ana@example.com"}]}
        ]
    }

    before = http.post(f"{CONTACTS}/search", json=query, headers=AUTH).json()["total"]
    time.sleep(0.4)
    after = http.post(f"{CONTACTS}/search", json=query, headers=AUTH).json()["total"]

    assert (before, after) == (0, 1)


@pytest.mark.parametrize(
    ("page_uri", "source"),
    [
        ("https://www.example.com/contact", "DIRECT_TRAFFIC"),
        ("https://www.example.com/?utm_source=linkedin&utm_medium=social", "SOCIAL_MEDIA"),
        ("https://www.example.com/?utm_source=facebook&utm_medium=paid", "PAID_SOCIAL"),
        ("https://www.example.com/?gclid=abc", "PAID_SEARCH"),
        ("https://www.example.com/?utm_medium=email", "EMAIL_MARKETING"),
        ("https://www.example.com/?utm_source=partner", "OTHER_CAMPAIGNS"),
        (None, "OFFLINE"),
    ],
)
def test_original_source_comes_from_the_page_uri(page_uri: str | None, source: str) -> None:
    assert original_source(page_uri) == source


def test_new_contact_gets_its_original_source(http: httpx.Client) -> None:
    payload = body(email="ana@example.com")
    payload["context"]["pageUri"] = "https://www.example.com/?gclid=abc"

    submit(http, payload)

    found = contact(http, "ana@example.com", "hs_analytics_source")
    assert found["properties"]["hs_analytics_source"] == "PAID_SEARCH"


@pytest.mark.parametrize(
    ("portal", "guid"),
    [("99999", SANDBOX_FORM_GUID), (SANDBOX_PORTAL_ID, "00000000-0000-0000-0000-000000000000")],
)
@pytest.mark.parametrize("secure", [True, False])
def test_unknown_portal_or_form_is_404(
    http: httpx.Client, portal: str, guid: str, secure: bool
) -> None:
    path = f"{SECURE if secure else OPEN}/{portal}/{guid}"
    response = http.post(path, json=body(email="ana@example.com"), headers=AUTH)

    assert response.status_code == 404
    assert response.json()["status"] == "error"
    assert response.json()["correlationId"]


def test_secure_submit_needs_a_valid_token(http: httpx.Client) -> None:
    path = f"{SECURE}/{SANDBOX_PORTAL_ID}/{SANDBOX_FORM_GUID}"
    response = http.post(
        path, json=body(email="ana@example.com"), headers={"Authorization": "Bearer pat-wrong"}
    )

    assert response.status_code == 401
    assert response.json()["category"] == "INVALID_AUTHENTICATION"


@pytest.mark.parametrize("secure", [True, False])
def test_invalid_email_is_refused(http: httpx.Client, secure: bool) -> None:
    response = submit(http, body(email="not-an-email", firstname="Ana"), secure=secure)

    assert response.status_code == 400
    answer = response.json()
    assert (answer["status"], answer["message"]) == ("error", "The request is not valid")
    assert answer["correlationId"]
    assert answer["errors"] == [
        {"message": "Error in 'fields.email'. Invalid email address", "errorType": "INVALID_EMAIL"}
    ]


def test_field_not_on_the_form_is_refused_unauthenticated(http: httpx.Client) -> None:
    # leadrelay_score is a contact property, but not a field of the seeded form.
    response = submit(http, body(email="ana@example.com", leadrelay_score="50"), secure=False)

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "message": "Error in 'fields.leadrelay_score'. Field 'leadrelay_score' was not in "
            "the form definition",
            "errorType": "FIELD_NOT_IN_FORM_DEFINITION",
        }
    ]


def test_secure_submit_takes_any_contact_property(http: httpx.Client) -> None:
    response = submit(http, body(email="ana@example.com", leadrelay_score="50"))

    assert response.status_code == 200, response.text
    assert contact(http, "ana@example.com", "leadrelay_score")["properties"]["leadrelay_score"] == (
        "50"
    )


@pytest.mark.parametrize("secure", [True, False])
@pytest.mark.parametrize(
    ("object_type", "name", "label"),
    [("0-1", "favourite_colour", "favourite_colour"), ("0-2", "name", "0-2/name")],
)
def test_unknown_field_is_refused(
    http: httpx.Client, secure: bool, object_type: str, name: str, label: str
) -> None:
    payload = body(email="ana@example.com")
    payload["fields"].append({"objectTypeId": object_type, "name": name, "value": "x"})

    response = submit(http, payload, secure=secure)

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "message": f"Error in 'fields.{label}'. Field '{label}' was not in the form definition",
            "errorType": "FIELD_NOT_IN_FORM_DEFINITION",
        }
    ]


def test_missing_email_is_a_required_field_error(http: httpx.Client) -> None:
    response = submit(http, body(firstname="Ana"))

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "message": "Error in 'fields.email'. Required field 'email' is missing",
            "errorType": "REQUIRED_FIELD",
        }
    ]


def test_refused_submission_stores_nothing(http: httpx.Client) -> None:
    submit(http, body(email="not-an-email"))

    listed = http.get(CONTACTS, headers=AUTH).json()["results"]
    assert listed == []


@pytest.mark.parametrize("payload", [None, [], {"fields": "email"}, {"fields": [{"value": "x"}]}])
def test_malformed_body_is_a_400_in_the_forms_dialect(http: httpx.Client, payload: Any) -> None:
    response = submit(http, payload)

    assert response.status_code == 400
    assert response.json()["message"] == "The request is not valid"


def test_unparsable_json_is_a_400(http: httpx.Client) -> None:
    path = f"{SECURE}/{SANDBOX_PORTAL_ID}/{SANDBOX_FORM_GUID}"
    response = http.post(
        path, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["status"] == "error"


def test_unauthenticated_submissions_are_limited_to_50_per_10_seconds(http: httpx.Client) -> None:
    codes = [
        submit(http, body(email=f"lead{i}@example.com"), secure=False).status_code
        for i in range(UNAUTHENTICATED_LIMIT + 1)
    ]

    assert codes == [200] * UNAUTHENTICATED_LIMIT + [429]


def test_rate_limited_answer_is_plain_text(http: httpx.Client) -> None:
    for i in range(UNAUTHENTICATED_LIMIT):
        submit(http, body(email=f"lead{i}@example.com"), secure=False)

    response = submit(http, body(email="one-more@example.com"), secure=False)

    assert (response.status_code, response.text) == (429, "error code: 1015")
    assert response.headers["content-type"].startswith("text/plain")


def test_secure_submissions_do_not_use_the_unauthenticated_budget(http: httpx.Client) -> None:
    for i in range(UNAUTHENTICATED_LIMIT):
        submit(http, body(email=f"lead{i}@example.com"), secure=False)

    assert submit(http, body(email="secure@example.com")).status_code == 200


def test_stats_count_submissions_by_route_template(
    http: httpx.Client, server: SandboxServer
) -> None:
    submit(http, body(email="ana@example.com"), secure=False)

    by_route = server.sandbox.stats.to_json()["by_route"]
    assert by_route["POST /hubspot/submissions/v3/integration/submit/{portalId}/{formGuid}"] == 1


@pytest.mark.parametrize("bad", ["Ana\ud800", "Ana\x00"], ids=["lone surrogate", "NUL"])
def test_unstorable_text_is_refused_and_nothing_is_stored(http: httpx.Client, bad: str) -> None:
    path = f"{SECURE}/{SANDBOX_PORTAL_ID}/{SANDBOX_FORM_GUID}"
    raw = json.dumps(body(email="ana@example.com", firstname=bad))  # escaped: \ud800, \u0000
    response = http.post(path, content=raw, headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["errorType"] == "INVALID_METADATA"
    assert http.get(CONTACTS, headers=AUTH).json()["results"] == []
