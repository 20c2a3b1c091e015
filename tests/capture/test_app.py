"""Tests for the capture endpoints (leadrelay.capture.app) through the ASGI test client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from leadrelay.capture.verify import linkedin_challenge_response
from leadrelay.sync.state import InboxItem, LedgerState, StateStore
from tests.capture.conftest import (
    GOOGLE_KEY,
    LINKEDIN_SECRET,
    META_APP_SECRET,
    META_VERIFY,
    ORIGIN,
    WEB_HMAC,
    WEB_SECRET,
    Clock,
    TestClient,
    dumps,
    google_body,
    hex_sig,
    hubspot_events,
    hubspot_headers,
    linkedin_body,
    meta_body,
)
from tests.postgres import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

LEAD = {"email": "ana@acme.io", "first_name": "Ana", "utm_source": "google"}


def pending(store: StateStore) -> int:
    return sum(store.inbox_counts().values())


def item(store: StateStore, key: str) -> InboxItem:
    found = store.get_inbox(key)
    assert found is not None
    return found


def post_server_form(client: TestClient, fields: dict[str, Any], **headers: str) -> Any:
    return client.post(
        "/forms/web-server",
        json=fields,
        headers={"X-Leadrelay-Secret": WEB_SECRET, **headers},
    )


# -- text that cannot be stored ----------------------------------------------------------------


def _signed_request(
    path: str, body: bytes, clock: Clock, content_type: str = "application/json"
) -> tuple[bytes, dict[str, str]]:
    """``body`` with what ``path`` needs to be authenticated."""
    headers = {"Content-Type": content_type}
    if path == "/forms/web-server":
        headers["X-Leadrelay-Secret"] = WEB_SECRET
    elif path == "/hooks/meta":
        headers["X-Hub-Signature-256"] = "sha256=" + hex_sig(META_APP_SECRET, body)
    elif path == "/hooks/linkedin":
        headers["X-LI-Signature"] = hex_sig(LINKEDIN_SECRET, body)
    elif path == "/hooks/hubspot":
        headers.update(hubspot_headers(body, clock()))
    return body, headers


def _with(body: bytes, path: tuple[str | int, ...], value: Any) -> bytes:
    data = json.loads(body)
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return dumps(data)


BAD_TEXT_CASES = [
    ("/forms/web-server", dumps({**LEAD, "first_name": "An\ud800a"}), "first_name"),
    ("/forms/web-server", dumps({**LEAD, "email": "ana\x00@acme.io"}), "email"),
    ("/forms/web-server", dumps({**LEAD, "x\ud800": "1"}), "x\\ud800"),
    (
        "/hooks/meta",
        _with(meta_body(), ("entry", 0, "changes", 0, "value", "leadgen_id"), "98\ud8007"),
        "entry[0].changes[0].value.leadgen_id",
    ),
    (
        "/hooks/linkedin",
        _with(linkedin_body(), ("leadGenFormResponse",), "urn:li:leadGenFormResponse:a\x00"),
        "leadGenFormResponse",
    ),
    ("/hooks/google-ads", dumps(google_body(lead_id="Te\udfffSter")), "lead_id"),
    (
        "/hooks/google-ads",
        _with(dumps(google_body()), ("user_column_data", 1, "string_value"), "a\x00@b.io"),
        "user_column_data[1].string_value",
    ),
    (
        "/hooks/hubspot",
        _with(hubspot_events(), (0, "propertyValue"), "\ud800"),
        "[0].propertyValue",
    ),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_TEXT_CASES)
def test_a_nul_or_lone_surrogate_is_refused_naming_the_field(
    client: TestClient, store: StateStore, clock: Clock, path: str, body: bytes, field: str
) -> None:
    assert b"\\u" in body  # sent as JSON escapes
    content, headers = _signed_request(path, body, clock)
    response = client.post(path, content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert (response.json()["reason"], response.json()["field"]) == ("bad_text", field)
    assert pending(store) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"email=ana%40acme.io&company=Ac%00me", "company"), (b"email=ana%00%40acme.io", "email")],
)
def test_a_nul_in_a_form_encoded_field_is_refused(
    client: TestClient, store: StateStore, clock: Clock, body: bytes, field: str
) -> None:
    content, headers = _signed_request(
        "/forms/web-server", body, clock, "application/x-www-form-urlencoded"
    )
    response = client.post("/forms/web-server", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert pending(store) == 0


# -- web forms -------------------------------------------------------------------------------


def test_webform_accepted_is_stored_before_the_answer(
    client: TestClient, store: StateStore
) -> None:
    response = post_server_form(client, LEAD, **{"User-Agent": "pytest-agent"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    stored = item(store, body["key"])
    assert (stored.form, stored.source) == ("web-server", "webform")
    assert stored.payload["fields"] == LEAD
    assert stored.payload["headers"]["user_agent"] == "pytest-agent"
    assert not stored.is_test


def test_webform_records_received_in_the_ledger(client: TestClient, store: StateStore) -> None:
    key = post_server_form(client, LEAD).json()["key"]
    (row,) = store.ledger_rows(key)
    assert (row.destination, row.state, row.form, row.source) == (
        "hs",
        LedgerState.RECEIVED,
        "web-server",
        "webform",
    )


def test_webform_form_encoded_keeps_repeated_fields(client: TestClient, store: StateStore) -> None:
    response = client.post(
        "/forms/web-server",
        content=b"email=ana%40acme.io&interest=crm&interest=ads&page_url=https%3A%2F%2Fa.io%2F%3Futm_source%3Dx",
        headers={
            "X-Leadrelay-Secret": WEB_SECRET,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 202
    payload = item(store, response.json()["key"]).payload
    assert payload["fields"]["interest"] == ["crm", "ads"]
    assert payload["page_url"] == "https://a.io/?utm_source=x"


def test_webform_idempotency_key_replay_is_stored_once(
    client: TestClient, store: StateStore
) -> None:
    first = post_server_form(client, LEAD, **{"Idempotency-Key": "sub-1"})
    second = post_server_form(client, {**LEAD, "first_name": "Ann"}, **{"Idempotency-Key": "sub-1"})
    assert second.status_code == 202
    assert second.json() == {"key": first.json()["key"], "status": "duplicate"}
    assert pending(store) == 1


def test_webform_double_submit_within_the_window_is_stored_once(
    client: TestClient, store: StateStore, clock: Clock
) -> None:
    clock.now = clock.now.replace(second=5)
    first = post_server_form(client, LEAD).json()["key"]
    clock.advance(30)
    assert post_server_form(client, LEAD).json() == {"key": first, "status": "duplicate"}
    clock.advance(60)
    assert post_server_form(client, LEAD).json()["status"] == "accepted"
    assert pending(store) == 2


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "missing_secret"), ({"X-Leadrelay-Secret": "wrong"}, "bad_secret")],
)
def test_webform_bad_or_missing_secret_is_401(
    client: TestClient, store: StateStore, headers: dict[str, str], reason: str
) -> None:
    response = client.post("/forms/web-server", json=LEAD, headers=headers)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert WEB_SECRET not in response.text
    assert pending(store) == 0


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        ({"work_email": "ana@acme.io"}, True),
        ({"mobile": "+351 912 345 678"}, True),
        ({"email": "ana@acme.io"}, True),
        ({"first_name": "Ana", "work_email": "  "}, False),
    ],
)
def test_webform_contact_field_names_come_from_the_mapping(
    client: TestClient, store: StateStore, fields: dict[str, str], accepted: bool
) -> None:
    body = dumps(fields)
    response = client.post(
        "/forms/web-signed",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Leadrelay-Signature": "sha256=" + hex_sig(WEB_HMAC, body),
        },
    )
    if accepted:
        assert response.status_code == 202
    else:
        assert response.status_code == 422
        assert response.json()["field"] == "email"
        assert pending(store) == 0


def test_webform_bad_hmac_is_401(client: TestClient, store: StateStore) -> None:
    body = dumps(LEAD)
    response = client.post(
        "/forms/web-signed",
        content=body + b" ",
        headers={
            "Content-Type": "application/json",
            "X-Leadrelay-Signature": "sha256=" + hex_sig(WEB_HMAC, body),
        },
    )
    assert response.status_code == 401
    assert pending(store) == 0


def test_webform_missing_email_is_422_naming_it(client: TestClient, store: StateStore) -> None:
    response = post_server_form(client, {"first_name": "Ana"})
    assert response.status_code == 422
    assert response.json()["field"] == "email"
    assert "email" in response.json()["detail"]
    assert pending(store) == 0


def test_webform_nested_value_is_422_naming_the_field(client: TestClient) -> None:
    response = post_server_form(client, {**LEAD, "company": {"name": "Acme"}})
    assert response.status_code == 422
    assert response.json()["field"] == "company"


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"email": ', "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b'{"email": NaN}', "application/json", 400),
        (b"[" * 3000 + b"]" * 3000, "application/json", 400),
        (b"email=\xff", "application/x-www-form-urlencoded", 400),
        (b"email=a@b.c", "text/plain", 415),
    ],
)
def test_webform_malformed_bodies(
    client: TestClient, store: StateStore, content: bytes, content_type: str, status: int
) -> None:
    response = client.post(
        "/forms/web-server",
        content=content,
        headers={"X-Leadrelay-Secret": WEB_SECRET, "Content-Type": content_type},
    )
    assert response.status_code == status
    assert pending(store) == 0


def test_webform_honeypot_answers_like_a_lead_but_stores_nothing(
    client: TestClient, store: StateStore
) -> None:
    response = post_server_form(client, {**LEAD, "website": "http://spam.example"})
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert pending(store) == 0
    metrics = client.get("/metrics").text
    assert (
        'leadrelay_capture_rejected_total{form="web-server",reason="honeypot",source="webform"} 1.0'
        in metrics
    )


def test_webform_empty_honeypot_is_dropped_from_the_fields(
    client: TestClient, store: StateStore
) -> None:
    key = post_server_form(client, {**LEAD, "website": ""}).json()["key"]
    assert "website" not in item(store, key).payload["fields"]


def test_webform_test_email_domain_marks_is_test(client: TestClient, store: StateStore) -> None:
    key = post_server_form(client, {"email": "run-1@test.example.org"}).json()["key"]
    assert item(store, key).is_test


def test_cors_preflight_from_an_allowed_origin(client: TestClient) -> None:
    response = client.options(
        "/forms/web-browser",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_preflight_from_another_origin_is_refused(client: TestClient) -> None:
    response = client.options(
        "/forms/web-browser",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_browser_post_from_an_allowed_origin(client: TestClient, store: StateStore) -> None:
    response = client.post(
        "/forms/web-browser",
        data={"email": "ana@acme.io"},
        headers={"Origin": ORIGIN, "Referer": f"{ORIGIN}/pricing?utm_source=li"},
    )
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == ORIGIN
    payload = item(store, response.json()["key"]).payload
    assert payload["page_url"] == f"{ORIGIN}/pricing?utm_source=li"
    assert payload["headers"]["origin"] == ORIGIN


def test_refusal_to_an_allowed_origin_is_readable_by_its_page(
    client: TestClient, store: StateStore
) -> None:
    response = client.post("/forms/web-browser", data={"name": "Ana"}, headers={"Origin": ORIGIN})
    assert response.status_code == 422
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert pending(store) == 0


def test_browser_post_from_another_origin_is_403(client: TestClient, store: StateStore) -> None:
    response = client.post(
        "/forms/web-browser",
        data={"email": "ana@acme.io"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert pending(store) == 0


def test_origin_only_form_without_origin_is_401(client: TestClient, store: StateStore) -> None:
    response = client.post("/forms/web-browser", data={"email": "ana@acme.io"})
    assert response.status_code == 401
    assert pending(store) == 0


def test_body_over_the_declared_limit_is_413(client: TestClient, store: StateStore) -> None:
    response = client.post(
        "/forms/web-browser",
        data={"email": "ana@acme.io", "notes": "x" * 2000},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 413
    assert pending(store) == 0


def test_streamed_body_over_the_limit_is_413(client: TestClient, store: StateStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"email=ana%40acme.io&notes="
        for _ in range(10):
            yield b"x" * 200

    response = client.post(
        "/forms/web-browser",
        content=chunks(),
        headers={"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert pending(store) == 0


@pytest.mark.parametrize("path", ["/forms/nope", "/forms/meta-ads"])
def test_unknown_web_form_is_404(client: TestClient, path: str) -> None:
    response = client.post(path, json=LEAD, headers={"X-Leadrelay-Secret": WEB_SECRET})
    assert response.status_code == 404
    assert response.json()["reason"] == "unknown_form"


# -- Meta ------------------------------------------------------------------------------------


def test_meta_handshake_echoes_the_challenge(client: TestClient) -> None:
    response = client.get(
        "/hooks/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": META_VERIFY, "hub.challenge": "1158"},
    )
    assert response.status_code == 200
    assert response.text == "1158"
    assert response.headers["content-type"].startswith("text/plain")


def test_meta_handshake_with_a_wrong_token_is_403(client: TestClient) -> None:
    response = client.get(
        "/hooks/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1158"},
    )
    assert response.status_code == 403


def post_meta(client: TestClient, body: bytes, secret: str = META_APP_SECRET) -> Any:
    return client.post(
        "/hooks/meta",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + hex_sig(secret, body),
        },
    )


def test_meta_notification_is_stored_with_its_ids(client: TestClient, store: StateStore) -> None:
    response = post_meta(client, meta_body("987"))
    assert response.status_code == 202
    (lead,) = response.json()["leads"]
    assert lead["status"] == "accepted"
    stored = item(store, lead["key"])
    assert stored.dedupe_key == "meta:987"
    assert (stored.form, stored.source) == ("meta-ads", "meta_lead_ads")
    assert stored.payload["leadgen_id"] == "987"
    assert stored.payload["ad_id"] == "777"


def test_meta_replay_is_stored_once(client: TestClient, store: StateStore) -> None:
    first = post_meta(client, meta_body("987")).json()["leads"][0]["key"]
    again = post_meta(client, meta_body("987")).json()
    assert again["status"] == "duplicate"
    assert again["leads"][0]["key"] == first
    assert pending(store) == 1


@pytest.mark.parametrize("header", [None, "sha256=00", "sha256=" + "0" * 64])
def test_meta_bad_signature_is_401(
    client: TestClient, store: StateStore, header: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    response = client.post("/hooks/meta", content=meta_body(), headers=headers)
    assert response.status_code == 401
    assert pending(store) == 0


def test_meta_signature_with_another_secret_is_401(client: TestClient, store: StateStore) -> None:
    assert post_meta(client, meta_body(), secret="other").status_code == 401
    assert pending(store) == 0


def test_meta_unknown_form_is_404(client: TestClient, store: StateStore) -> None:
    response = post_meta(client, meta_body(form_id="999"))
    assert response.status_code == 404
    assert pending(store) == 0


def test_meta_missing_leadgen_id_is_422_naming_it(client: TestClient, store: StateStore) -> None:
    data = json.loads(meta_body())
    del data["entry"][0]["changes"][0]["value"]["leadgen_id"]
    response = post_meta(client, dumps(data))
    assert response.status_code == 422
    assert response.json()["field"] == "entry[0].changes[0].value.leadgen_id"
    assert pending(store) == 0


def test_meta_signed_but_malformed_json_is_400(client: TestClient) -> None:
    assert post_meta(client, b'{"entry": [').status_code == 400


# -- LinkedIn --------------------------------------------------------------------------------


CHALLENGE = "f47ac10b-58cc-4372-a567-0e02b2c3d479"


def test_linkedin_challenge(client: TestClient) -> None:
    response = client.get("/hooks/linkedin", params={"challengeCode": CHALLENGE})
    assert response.status_code == 200
    assert response.json() == {
        "challengeCode": CHALLENGE,
        "challengeResponse": linkedin_challenge_response(LINKEDIN_SECRET, CHALLENGE),
    }


@pytest.mark.parametrize(
    "code",
    [None, "c0ffee", CHALLENGE + "\n", "{" + CHALLENGE + "}", CHALLENGE.replace("-", "")],
)
def test_linkedin_challenge_answers_only_a_uuid(client: TestClient, code: str | None) -> None:
    params = {} if code is None else {"challengeCode": code}
    response = client.get("/hooks/linkedin", params=params)
    assert response.status_code == 400
    assert response.json()["field"] == "challengeCode"
    assert "challengeResponse" not in response.text


def test_a_notification_cannot_be_signed_through_the_challenge(
    client: TestClient, store: StateStore
) -> None:
    body = linkedin_body()
    answer = client.get("/hooks/linkedin", params={"challengeCode": body.decode()})
    forged = answer.json().get("challengeResponse") or "00" * 32
    response = post_linkedin(client, body, signature=forged)
    assert (answer.status_code, response.status_code) == (400, 401)
    assert pending(store) == 0


def post_linkedin(client: TestClient, body: bytes, signature: str | None = None) -> Any:
    return client.post(
        "/hooks/linkedin",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-LI-Signature": signature or hex_sig(LINKEDIN_SECRET, body),
        },
    )


def test_linkedin_notification_is_stored(client: TestClient, store: StateStore) -> None:
    response = post_linkedin(client, linkedin_body())
    assert response.status_code == 202
    stored = item(store, response.json()["key"])
    assert stored.dedupe_key == "linkedin:urn:li:leadGenFormResponse:abc-1"
    assert stored.payload["form_id"] == "7001"


def test_linkedin_replay_is_stored_once(client: TestClient, store: StateStore) -> None:
    first = post_linkedin(client, linkedin_body()).json()["key"]
    assert post_linkedin(client, linkedin_body()).json() == {"key": first, "status": "duplicate"}
    assert pending(store) == 1


def test_linkedin_bad_signature_is_401(client: TestClient, store: StateStore) -> None:
    response = post_linkedin(client, linkedin_body(), signature="ab" * 32)
    assert response.status_code == 401
    assert pending(store) == 0


def test_linkedin_deleted_lead_is_ignored(client: TestClient, store: StateStore) -> None:
    data = json.loads(linkedin_body())
    data["leadAction"] = "DELETED"
    response = post_linkedin(client, dumps(data))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert pending(store) == 0


def test_linkedin_missing_response_urn_is_422(client: TestClient, store: StateStore) -> None:
    data = json.loads(linkedin_body())
    del data["leadGenFormResponse"]
    response = post_linkedin(client, dumps(data))
    assert response.status_code == 422
    assert response.json()["field"] == "leadGenFormResponse"


def test_linkedin_unknown_form_is_404(client: TestClient, store: StateStore) -> None:
    assert post_linkedin(client, linkedin_body(form_id="9")).status_code == 404
    assert pending(store) == 0


# -- Google Ads ------------------------------------------------------------------------------


def test_google_lead_is_stored_with_is_test_and_without_the_key(
    client: TestClient, store: StateStore
) -> None:
    response = client.post("/hooks/google-ads", json=google_body())
    assert response.status_code == 202
    stored = item(store, response.json()["key"])
    assert stored.is_test
    assert stored.dedupe_key == "google:TeSter-123"
    assert "google_key" not in stored.payload
    assert GOOGLE_KEY not in json.dumps(stored.payload)


def test_google_form_id_may_be_a_string(client: TestClient) -> None:
    response = client.post("/hooks/google-ads", json=google_body(form_id="40000000000"))
    assert response.status_code == 202


def test_google_replay_is_stored_once(client: TestClient, store: StateStore) -> None:
    first = client.post("/hooks/google-ads", json=google_body()).json()["key"]
    again = client.post("/hooks/google-ads", json=google_body()).json()
    assert again == {"key": first, "status": "duplicate"}
    assert pending(store) == 1


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"google_key": "wrong"}, 401, None),
        ({"google_key": None}, 401, None),
        ({"form_id": 1}, 404, None),
        ({"lead_id": None}, 422, "lead_id"),
        ({"user_column_data": "x"}, 422, "user_column_data"),
        ({"user_column_data": [1]}, 422, "user_column_data[0]"),
    ],
)
def test_google_refusals_store_nothing(
    client: TestClient,
    store: StateStore,
    changes: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    response = client.post("/hooks/google-ads", json=google_body(**changes))
    assert response.status_code == status
    if field is not None:
        assert response.json()["field"] == field
    assert pending(store) == 0


# -- HubSpot ---------------------------------------------------------------------------------


def test_hubspot_events_are_stored(client: TestClient, store: StateStore, clock: Clock) -> None:
    body = hubspot_events(100)
    response = client.post("/hooks/hubspot", content=body, headers=hubspot_headers(body, clock()))
    assert response.status_code == 202
    (lead,) = response.json()["leads"]
    stored = item(store, lead["key"])
    assert (stored.source, stored.dedupe_key) == ("hubspot_form", "hubspot:100")
    assert stored.payload["objectId"] == 123


def test_hubspot_replay_is_stored_once(client: TestClient, store: StateStore, clock: Clock) -> None:
    body = hubspot_events(100)
    for _ in range(2):
        client.post("/hooks/hubspot", content=body, headers=hubspot_headers(body, clock()))
    assert pending(store) == 1


@pytest.mark.parametrize(("age_s", "status"), [(299, 202), (301, 401)])
def test_hubspot_timestamp_window(
    client: TestClient, store: StateStore, clock: Clock, age_s: int, status: int
) -> None:
    body = hubspot_events()
    headers = hubspot_headers(body, clock())
    clock.advance(age_s)
    assert client.post("/hooks/hubspot", content=body, headers=headers).status_code == status


def test_hubspot_bad_signature_is_401(client: TestClient, store: StateStore, clock: Clock) -> None:
    body = hubspot_events()
    headers = hubspot_headers(body, clock())
    response = client.post("/hooks/hubspot", content=body + b" ", headers=headers)
    assert response.status_code == 401
    assert pending(store) == 0


def test_hubspot_uri_respects_forwarded_headers(
    client: TestClient, store: StateStore, clock: Clock
) -> None:
    body = hubspot_events()
    headers = hubspot_headers(body, clock(), uri="https://leads.example.com/hooks/hubspot")
    headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "leads.example.com"})
    assert client.post("/hooks/hubspot", content=body, headers=headers).status_code == 202


def test_hubspot_non_contact_events_are_ignored(
    client: TestClient, store: StateStore, clock: Clock
) -> None:
    body = hubspot_events(kind="deal.creation")
    response = client.post("/hooks/hubspot", content=body, headers=hubspot_headers(body, clock()))
    assert response.status_code == 200
    assert pending(store) == 0


# -- health, metrics, store outage -------------------------------------------------------------


def test_healthz_reports_the_inbox(client: TestClient) -> None:
    post_server_form(client, LEAD)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "inbox": {"pending": 1, "delivered": 0, "failed": 0},
    }


def _broken(*args: object, **kwargs: object) -> None:
    raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))


def test_healthz_is_503_when_the_store_fails(
    client: TestClient, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "inbox_counts", _broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "error"


def test_store_outage_is_503_not_an_acknowledgement(
    client: TestClient, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "put_inbox", _broken)
    response = post_server_form(client, LEAD)
    assert response.status_code == 503
    assert response.headers["retry-after"]


def test_metrics_count_by_form_and_source(client: TestClient, store: StateStore) -> None:
    post_server_form(client, LEAD)
    post_server_form(client, LEAD)
    client.post("/forms/web-server", json=LEAD, headers={"X-Leadrelay-Secret": "wrong"})
    post_meta(client, meta_body("1"))
    client.post("/forms/unknown-form", json=LEAD)
    text = client.get("/metrics").text
    for line in (
        'leadrelay_capture_received_total{form="web-server",source="webform"} 3.0',
        'leadrelay_capture_stored_total{form="web-server",source="webform"} 1.0',
        'leadrelay_capture_duplicates_total{form="web-server",source="webform"} 1.0',
        'leadrelay_capture_rejected_total{form="web-server",reason="bad_secret",'
        'source="webform"} 1.0',
        'leadrelay_capture_stored_total{form="meta-ads",source="meta_lead_ads"} 1.0',
        'leadrelay_capture_rejected_total{form="unknown",reason="unknown_form",'
        'source="webform"} 1.0',
        'leadrelay_inbox_items{form="web-server",source="webform",status="pending"} 1.0',
        'leadrelay_inbox_items{form="meta-ads",source="meta_lead_ads",status="pending"} 1.0',
    ):
        assert line in text


def test_delivery_counters_come_from_the_store(client: TestClient, store: StateStore) -> None:
    # Delivery runs in another process under `serve`: /metrics counts what the store says.
    first = post_server_form(client, LEAD).json()["key"]
    second = post_server_form(client, {**LEAD, "email": "other@example.com"}).json()["key"]
    third = post_server_form(client, {**LEAD, "email": "third@example.com"}).json()["key"]
    claimed = {item.key: item for item in store.claim_inbox(limit=10)}
    store.mark_inbox_delivered([first, second], claim_token=claimed[first].claim_token)
    store.mark_inbox_failed(third, "rejected", retry=False, claim_token=claimed[third].claim_token)
    text = client.get("/metrics").text
    assert 'leadrelay_capture_delivered_total{form="web-server",source="webform"} 2.0' in text
    assert 'leadrelay_capture_failed_total{form="web-server",source="webform"} 1.0' in text
    assert (
        'leadrelay_inbox_items{form="web-server",source="webform",status="delivered"} 2.0' in text
    )


def test_two_apps_keep_separate_registries(config: Any, store: StateStore) -> None:
    from leadrelay.capture.app import create_app

    first, second = create_app(config, store), create_app(config, store)
    first.state.metrics.stored("a", "webform")
    assert (
        second.state.metrics.value("leadrelay_capture_stored_total", form="a", source="webform")
        == 0
    )
