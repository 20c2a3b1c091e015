"""Fuzzing every capture endpoint: arbitrary bodies, headers and query strings never cause a
5xx, and the inbox grows only by the leads a 202 reports as accepted.

The strategies mix garbage with well-formed, correctly signed requests, so both the refusal
paths and the storing path are explored.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadrelay.capture.formsconfig import starter_mapping
from leadrelay.capture.verify import hubspot_v3_signature
from leadrelay.capture.worker import drain_inbox
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import InboxStatus, StateStore
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
    google_body,
    hex_sig,
    hubspot_headers,
    linkedin_body,
    meta_body,
)
from tests.capture.sandbox_project import Project, admin

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Header values a client can send at all (printable ASCII; no line breaks).
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
short_text = st.text(max_size=30)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | short_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(short_text, json_values, max_size=6)
raw_bodies = st.binary(max_size=300)
name_chars = string.ascii_letters + string.digits + "-_."


def total(store: StateStore) -> int:
    return sum(store.inbox_counts().values())


def accepted(response: httpx.Response) -> int:
    """How many leads the answer says were newly stored."""
    if response.status_code != 202:
        return 0
    body = response.json()
    if isinstance(body.get("leads"), list):
        return sum(1 for lead in body["leads"] if lead.get("status") == "accepted")
    return 1 if body.get("status") == "accepted" else 0


def check(store: StateStore, before: int, response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    grown = total(store) - before
    assert grown >= 0
    assert grown <= accepted(response)
    if grown:
        assert response.status_code == 202
    if response.status_code >= 400:
        assert grown == 0


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def extra_headers(draw: st.DrawFn) -> dict[str, str]:
    names = st.sampled_from(
        ["Content-Type", "Origin", "Idempotency-Key", "X-Forwarded-Host", "Referer", "X-Other"]
    )
    return draw(st.dictionaries(names, header_text, max_size=3))


# -- web forms -------------------------------------------------------------------------------


@st.composite
def valid_webform_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A submission each form should accept (or answer as a duplicate, or drop as spam)."""
    form = draw(st.sampled_from(["web-server", "web-signed", "web-browser"]))
    fields = draw(st.dictionaries(st.sampled_from(["first_name", "company", "notes"]), short_text))
    fields["work_email" if form == "web-signed" else "email"] = draw(
        st.emails().filter(lambda email: len(email) < 60)
    )
    if form == "web-browser":
        data = urlencode(fields).encode()
        return form, data, {"Content-Type": "application/x-www-form-urlencoded", "Origin": ORIGIN}
    body = json_bytes(fields)
    headers = {"Content-Type": "application/json"}
    if form == "web-server":
        headers["X-Leadrelay-Secret"] = WEB_SECRET
    else:
        headers["X-Leadrelay-Signature"] = "sha256=" + hex_sig(WEB_HMAC, body)
    return form, body, headers


@st.composite
def webform_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    if draw(st.integers(0, 2)) == 0:
        return draw(valid_webform_requests())
    form = draw(
        st.sampled_from(["web-server", "web-signed", "web-browser", "meta-ads"])
        | st.text(alphabet=name_chars, min_size=1, max_size=12)
    )
    fields = draw(json_objects)
    if draw(st.booleans()):
        fields["email"] = draw(st.sampled_from(["ana@acme.io", "", "x@test.example.org"]))
    if draw(st.integers(0, 4)) == 0:
        fields["website"] = "http://spam.example"
    encoding = draw(st.sampled_from(["json", "form", "raw"]))
    headers: dict[str, str] = {}
    if encoding == "json":
        body = json_bytes(fields)
        headers["Content-Type"] = "application/json"
    elif encoding == "form":
        body = urlencode({str(k): str(v) for k, v in fields.items()}).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        body = draw(raw_bodies)
    headers.update(draw(extra_headers()))
    secret = draw(st.sampled_from([None, WEB_SECRET, "wrong"]))
    if secret is not None:
        headers["X-Leadrelay-Secret"] = secret
    signature = draw(st.sampled_from([None, "good", "bad"]))
    if signature is not None:
        digest = hex_sig(WEB_HMAC, body) if signature == "good" else "00" * 32
        headers["X-Leadrelay-Signature"] = f"sha256={digest}"
    if draw(st.booleans()):
        headers["Origin"] = draw(st.sampled_from([ORIGIN, "https://evil.example", "null"]))
    return form, body, headers


@FUZZ
@given(request=webform_requests())
def test_fuzz_webform(
    client: TestClient, store: StateStore, request: tuple[str, bytes, dict[str, str]]
) -> None:
    form, body, headers = request
    before = total(store)
    check(store, before, client.post(f"/forms/{form}", content=body, headers=headers))


@FUZZ
@given(form=st.sampled_from(["web-browser", "web-server", "nope"]), headers=extra_headers())
def test_fuzz_webform_preflight(
    client: TestClient, store: StateStore, form: str, headers: dict[str, str]
) -> None:
    before = total(store)
    check(store, before, client.options(f"/forms/{form}", headers=headers))


# -- Meta ------------------------------------------------------------------------------------


def any_body(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Well-formed notifications, other JSON objects, or arbitrary bytes."""
    return valid | json_objects.map(json_bytes) | raw_bodies


def signature_header(draw: st.DrawFn, secret: str, body: bytes, prefix: str) -> str | None:
    kind = draw(st.sampled_from(["good", "bad", "missing", "random"]))
    if kind == "good":
        return prefix + hex_sig(secret, body)
    if kind == "bad":
        return prefix + hex_sig("wrong", body)
    if kind == "random":
        return draw(header_text)
    return None


@st.composite
def meta_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    valid = st.builds(
        meta_body,
        st.text(alphabet=string.digits, min_size=1, max_size=6),
        st.sampled_from(["555", "999", ""]),
    )
    body = draw(any_body(valid))
    headers = draw(extra_headers())
    signature = signature_header(draw, META_APP_SECRET, body, "sha256=")
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return body, headers


@FUZZ
@given(request=meta_requests())
def test_fuzz_meta_notification(
    client: TestClient, store: StateStore, request: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = request
    before = total(store)
    check(store, before, client.post("/hooks/meta", content=body, headers=headers))


query_keys = st.sampled_from(
    ["hub.mode", "hub.verify_token", "hub.challenge", "challengeCode", "form", "x"]
)
query_values = st.sampled_from(["subscribe", META_VERIFY, "linkedin-ads", ""]) | header_text


@FUZZ
@given(
    path=st.sampled_from(["/hooks/meta", "/hooks/linkedin", "/healthz", "/metrics"]),
    params=st.dictionaries(query_keys, query_values, max_size=4),
)
def test_fuzz_handshakes_and_reads(
    client: TestClient, store: StateStore, path: str, params: dict[str, str]
) -> None:
    before = total(store)
    check(store, before, client.get(path, params=params))


# -- LinkedIn --------------------------------------------------------------------------------


@st.composite
def linkedin_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    valid = st.builds(
        linkedin_body,
        st.text(alphabet=name_chars, max_size=10).map(lambda x: f"urn:li:leadGenFormResponse:{x}"),
        st.sampled_from(["7001", "9"]),
    )
    body = draw(any_body(valid))
    headers = draw(extra_headers())
    signature = signature_header(
        draw, LINKEDIN_SECRET, body, draw(st.sampled_from(["", "hmacsha256="]))
    )
    if signature is not None:
        headers["X-LI-Signature"] = signature
    return body, headers


@FUZZ
@given(request=linkedin_requests())
def test_fuzz_linkedin_notification(
    client: TestClient, store: StateStore, request: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = request
    before = total(store)
    check(store, before, client.post("/hooks/linkedin", content=body, headers=headers))


# -- Google Ads ------------------------------------------------------------------------------


@st.composite
def google_requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(raw_bodies)
    body = google_body()
    body["lead_id"] = draw(st.text(max_size=8) | st.integers() | st.none())
    body["google_key"] = draw(st.sampled_from([GOOGLE_KEY, "wrong", None]) | json_values)
    body["form_id"] = draw(st.sampled_from([40000000000, "40000000000", 1]) | json_values)
    body["is_test"] = draw(json_values)
    if draw(st.booleans()):
        body["user_column_data"] = draw(json_values)
    body.update(draw(json_objects))
    return json_bytes(body)


@FUZZ
@given(body=google_requests(), headers=extra_headers())
def test_fuzz_google_ads(
    client: TestClient, store: StateStore, body: bytes, headers: dict[str, str]
) -> None:
    before = total(store)
    check(store, before, client.post("/hooks/google-ads", content=body, headers=headers))


# -- HubSpot ---------------------------------------------------------------------------------


events = st.fixed_dictionaries(
    {
        "eventId": st.integers(0, 10**6) | short_text | st.none(),
        "subscriptionType": st.sampled_from(["contact.creation", "deal.creation"]) | short_text,
        "portalId": st.integers(),
        "objectId": st.integers(),
    }
)


contact_events = st.fixed_dictionaries(
    {
        "eventId": st.integers(0, 10**6),
        "subscriptionType": st.just("contact.creation"),
        "objectId": st.integers(1, 10**6),
    }
)
hubspot_bodies = (
    st.lists(contact_events, min_size=1, max_size=3).map(json_bytes)
    | st.lists(events, max_size=3).map(json_bytes)
    | json_values.map(json_bytes)
    | raw_bodies
)


@FUZZ
@given(
    body=hubspot_bodies,
    signed=st.booleans(),
    age_s=st.sampled_from([0, 200, 400, -400]),
    headers=extra_headers(),
)
def test_fuzz_hubspot(
    client: TestClient,
    store: StateStore,
    clock: Clock,
    body: bytes,
    signed: bool,
    age_s: int,
    headers: dict[str, str],
) -> None:
    headers.pop("X-Forwarded-Host", None)
    if signed:
        headers.update(hubspot_headers(body, clock() - timedelta(seconds=age_s)))
    before = total(store)
    check(store, before, client.post("/hooks/hubspot", content=body, headers=headers))


# -- any path, any method --------------------------------------------------------------------

PATHS = [
    "/forms/web-server",
    "/hooks/meta",
    "/hooks/linkedin",
    "/hooks/google-ads",
    "/hooks/hubspot",
    "/healthz",
    "/metrics",
    "/",
]


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
    path=st.sampled_from(PATHS),
    body=raw_bodies,
)
def test_fuzz_methods(
    client: TestClient, store: StateStore, method: str, path: str, body: bytes
) -> None:
    before = total(store)
    check(store, before, client.request(method, path, content=body))


@pytest.mark.parametrize("path", ["/forms/web-server", "/hooks/meta", "/hooks/google-ads"])
def test_fuzz_oracle_sees_a_stored_lead(client: TestClient, store: StateStore, path: str) -> None:
    """The oracle is not vacuous: a good request of each kind grows the inbox by one."""
    if path == "/forms/web-server":
        body, headers = json_bytes({"email": "ana@acme.io"}), {"X-Leadrelay-Secret": WEB_SECRET}
    elif path == "/hooks/meta":
        body = meta_body("31337")
        headers = {"X-Hub-Signature-256": "sha256=" + hex_sig(META_APP_SECRET, body)}
    else:
        body, headers = json_bytes(google_body()), {}
    headers["Content-Type"] = "application/json"
    response = client.post(path, content=body, headers=headers)
    check(store, 0, response)
    assert accepted(response) == total(store) == 1


# -- arbitrary Unicode through every endpoint, then delivery to the sandbox ------------------

FUZZ_FORMS = """
[forms.fuzz-linkedin]
source = "linkedin_lead_gen"
destination = "salesforce"
mapping = "mappings/forms/fuzz-linkedin.toml"
client_secret = "${LINKEDIN_CLIENT_SECRET}"
access_token = "${LINKEDIN_ACCESS_TOKEN}"
api_url = "${LINKEDIN_API_URL}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"

[forms.fuzz-hubspot]
source = "hubspot_form"
destination = "hubspot"
mapping = "mappings/forms/fuzz-hubspot.toml"
client_secret = "fuzz-hubspot-signing-secret"
"""
FUZZ_HUBSPOT_SECRET = "fuzz-hubspot-signing-secret"

DRAIN = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: What breaks naive code: NUL, lone surrogates of both halves, a surrogate pair (valid), a
#: byte-order mark, bidi override, a non-character, DEL, NEL and a line separator.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
edge_chars = st.sampled_from(
    [
        *["\x00", "\ud800", "\udfff", "\ud83d\ude00", "\ufeff", "\u202e", "\uffff", "\x7f"],
        *["\x85", "\u2028", "é", "Ω", "\t", "'", '"', "\\", "<", "&", "%"],
    ]
)
# Every code point, surrogates (category Cs) included.
any_chars = st.characters(exclude_categories=())
unicode_text = st.lists(st.text(any_chars, max_size=6) | edge_chars, max_size=4).map("".join)
# Text that can be stored and sent, however odd: what a CRM must take or refuse cleanly.
valid_text = unicode_text.map(lambda text: _BAD_TEXT.sub("", text))


def texts(draw: st.DrawFn) -> st.SearchStrategy[str]:
    """Half of the requests carry only valid text, so that many reach the CRMs."""
    return unicode_text if draw(st.booleans()) else valid_text


def ids(draw: st.DrawFn) -> st.SearchStrategy[str]:
    """A platform id: mostly well-formed and unique, else any text."""
    return st.uuids().map(str) | texts(draw)


@st.composite
def fuzzed_emails(draw: st.DrawFn, text: st.SearchStrategy[str]) -> str:
    email = draw(st.emails().filter(lambda e: len(e) < 50))
    kind = draw(st.sampled_from(["plain", "plain", "weird_local", "weird", "text"]))
    if kind == "weird_local":
        return draw(text) + email
    if kind == "weird":
        local, _, domain = email.partition("@")
        return f"{local}{draw(text)}@{domain}"
    if kind == "text":
        return draw(text)
    return email


def _form_value(text: str) -> str:
    # Lone surrogates become the bytes a careless client would send (not valid UTF-8).
    return quote(text, safe="", encoding="utf-8", errors="surrogatepass")


@st.composite
def unicode_webform(draw: st.DrawFn, env: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    text = texts(draw)
    fields = {
        "email": draw(fuzzed_emails(text)),
        "first_name": draw(text),
        "company": draw(text),
        draw(text): draw(text),
    }
    headers = {"X-Leadrelay-Secret": env["FORM_DEMO_WEBFORM_SECRET"]}
    if draw(st.booleans()):
        body = json.dumps(fields).encode()  # lone surrogates travel as "\ud800" escapes
        headers["Content-Type"] = "application/json"
    else:
        body = "&".join(f"{_form_value(k)}={_form_value(v)}" for k, v in fields.items()).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return "/forms/demo-webform", body, headers


def _meta_notification(leadgen_id: str, form_id: str) -> bytes:
    value = {"leadgen_id": leadgen_id, "form_id": form_id, "page_id": "100000000000001"}
    change = {"field": "leadgen", "value": value}
    return json_bytes({"object": "page", "entry": [{"id": "1", "time": 1, "changes": [change]}]})


@st.composite
def unicode_meta(draw: st.DrawFn, env: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    body = _meta_notification(draw(ids(draw)), draw(st.just("4242") | texts(draw)))
    signature = "sha256=" + hex_sig(env["META_APP_SECRET"], body)
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
    return "/hooks/meta", body, headers


@st.composite
def unicode_linkedin(draw: st.DrawFn, env: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    body = linkedin_body(
        "urn:li:leadGenFormResponse:" + draw(ids(draw)), draw(st.just("7001") | texts(draw))
    )
    headers = {
        "Content-Type": "application/json",
        "X-LI-Signature": hex_sig(env["LINKEDIN_CLIENT_SECRET"], body),
    }
    return "/hooks/linkedin", body, headers


@st.composite
def unicode_google(draw: st.DrawFn, env: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    text = texts(draw)
    columns = [
        {"column_id": "EMAIL", "string_value": draw(fuzzed_emails(text))},
        {"column_id": "FULL_NAME", "string_value": draw(text)},
        {"column_id": "COMPANY_NAME", "string_value": draw(text)},
        {"column_name": draw(text), "string_value": draw(text)},
    ]
    body = {
        "lead_id": draw(ids(draw)),
        "api_version": "1.0",
        "form_id": 50001,
        "campaign_id": 50002,
        "google_key": env["GOOGLE_ADS_KEY"],
        "is_test": False,
        "gcl_id": draw(text),
        "user_column_data": columns,
    }
    return "/hooks/google-ads", json_bytes(body), {"Content-Type": "application/json"}


@st.composite
def unicode_hubspot(draw: st.DrawFn, env: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    event = {
        "eventId": draw(st.integers(1, 10**9)),
        "subscriptionType": "contact.propertyChange",
        "portalId": int(env["HUBSPOT_PORTAL_ID"]),
        "objectId": draw(st.integers(1, 10**6)),
        "propertyName": draw(st.just("email") | texts(draw)),
        "propertyValue": draw(fuzzed_emails(texts(draw))),
    }
    body = json_bytes([event])
    stamp = str(int(time.time() * 1000))
    uri = "http://testserver/hooks/hubspot"
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_v3_signature(
            FUZZ_HUBSPOT_SECRET, "POST", uri, body, stamp
        ),
    }
    return "/hooks/hubspot", body, headers


def unicode_requests(env: dict[str, str]) -> st.SearchStrategy[tuple[str, bytes, dict[str, str]]]:
    return st.one_of(
        unicode_webform(env),
        unicode_meta(env),
        unicode_linkedin(env),
        unicode_google(env),
        unicode_hubspot(env),
    )


@pytest.fixture
def fuzz_project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Project]:
    """The sandbox project plus a LinkedIn form (to Salesforce) and a HubSpot form."""
    admin(sandbox, "reset", {})
    admin(sandbox, "faults", {})
    write_sandbox_project(tmp_path, sandbox.env())
    toml = tmp_path / "leadrelay.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + FUZZ_FORMS, encoding="utf-8")
    forms = tmp_path / "mappings" / "forms"
    (forms / "fuzz-linkedin.toml").write_text(starter_mapping("linkedin_lead_gen"), "utf-8")
    # A HubSpot contact event names one property and its value.
    (forms / "fuzz-hubspot.toml").write_text('[fields]\nemail = "email"\n', "utf-8")
    opened = Project(tmp_path, sandbox)
    yield opened
    opened.close()


def test_fuzz_unicode_is_refused_or_delivered(fuzz_project: Project) -> None:
    """Arbitrary Unicode (NULs and lone surrogates included) in every field and id of every
    endpoint, correctly signed: never a 5xx, and after a delivery pass every accepted lead is
    delivered or dead-lettered, none left pending or claimed."""
    project = fuzz_project
    with project.client() as client:

        @DRAIN
        @given(batch=st.lists(unicode_requests(project.env), min_size=1, max_size=10))
        def run(batch: list[tuple[str, bytes, dict[str, str]]]) -> None:
            for path, body, headers in batch:
                before = total(project.store)
                check(project.store, before, client.post(path, content=body, headers=headers))
            drain_inbox(project.config, project.store, connectors=project.pool)
            counts = project.store.inbox_counts()
            assert counts.get(InboxStatus.PENDING, 0) == 0, [
                (item.form, item.last_error) for item in _pending(project.store)
            ]

        run()
    counts = project.store.inbox_counts()
    assert counts.get(InboxStatus.DELIVERED, 0) > 0  # the fuzz reached the CRMs
    failed = counts.get(InboxStatus.FAILED, 0)
    assert len(project.store.list_dead_letters()) >= failed


def _pending(store: StateStore) -> list[Any]:
    return store.claim_inbox(limit=20, claim_ttl_s=0)
