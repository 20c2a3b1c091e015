"""The Salesforce emulator, driven by simple-salesforce 1.12.10 over HTTPS on loopback.

How a client reaches the sandbox:

- simple-salesforce builds every URL as ``https://{host}:{port}/services/...`` from
  ``instance_url`` (it keeps host and port, never the scheme), so
  ``Salesforce(instance_url=SALESFORCE_INSTANCE_URL, session_id=TOKEN, session=S)`` with a
  ``requests.Session`` whose ``verify`` is the sandbox CA file works unmodified.
- Its own login cannot target the sandbox: it posts to ``https://{domain}.salesforce.com/
  services/oauth2/token``, and ``domain="127.0.0.1:PORT"`` yields the unusable host
  ``127.0.0.1:PORT.salesforce.com``. So a client POSTs the form to
  ``{SALESFORCE_INSTANCE_URL}/services/oauth2/token`` itself and passes the ``access_token`` as
  ``session_id``. (A session that rewrites ``https://login.salesforce.com`` to the sandbox URL
  also lets simple-salesforce log in, and re-login on INVALID_SESSION_ID, by itself — see
  ``test_simple_salesforce_relogs_in_after_sessions_expire``.)
- requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` override ``Session.verify``; set
  ``session.trust_env = False`` (or pass ``verify=`` per request) so the sandbox CA is used.
- The JWT bearer grant checks ``iss``/``sub``/``exp`` but not the RS256 signature.
"""

from __future__ import annotations

import base64
import csv
import gc
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.salesforce import (
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_SECURITY_TOKEN,
    SANDBOX_USERNAME,
    SalesforceEmulator,
)
from leadrelay.sandbox.server import SandboxServer

# simple-salesforce builds sf.Lead / sf.bulk2.Lead dynamically (__getattr__ typed as a union).
Client = Any
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[SalesforceEmulator]) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: SandboxServer) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.verify = str(server.ca_bundle)
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override Session.verify unless
        # trust_env is off; the sandbox CA must win.
        session.trust_env = False
        yield session
    # A requests.Response still referenced (e.g. from a caught exception's traceback) keeps its
    # socket open after Session.close(); collect them so the server's TLS shutdown completes.
    gc.collect()


@pytest.fixture(autouse=True)
def _clean(server: SandboxServer) -> None:
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()


@pytest.fixture
def emulator(server: SandboxServer) -> SalesforceEmulator:
    emulator = server.sandbox.emulators["salesforce"]
    assert isinstance(emulator, SalesforceEmulator)
    return emulator


def _password_form(**overrides: str) -> dict[str, str]:
    form = {
        "grant_type": "password",
        "client_id": SANDBOX_CONSUMER_KEY,
        "client_secret": SANDBOX_CONSUMER_SECRET,
        "username": SANDBOX_USERNAME,
        "password": SANDBOX_PASSWORD,
    }
    form.update(overrides)
    return form


@pytest.fixture
def token(server: SandboxServer, http: requests.Session) -> str:
    response = http.post(f"{server.url}/services/oauth2/token", data=_password_form())
    assert response.status_code == 200
    return str(response.json()["access_token"])


@pytest.fixture
def sf(server: SandboxServer, http: requests.Session, token: str) -> Client:
    return Salesforce(instance_url=server.url, session_id=token, session=http)


def _lead(n: int = 1, **extra: Any) -> dict[str, Any]:
    return {"LastName": f"Silva{n}", "Company": "Acme", "Email": f"ana{n}@example.com", **extra}


def _collection(sf: Client, records: list[dict[str, Any]], **body: Any) -> Any:
    payload = {"allOrNone": False, **body, "records": records}
    return sf.restful("composite/sobjects", method="POST", json=payload)


def _seed_leads(emulator: SalesforceEmulator, count: int) -> None:
    with emulator.lock:
        spec = emulator.store.schema["Lead"]
        for n in range(count):
            emulator.store.create(spec, _lead(n), emulator.store.integration_user_id)


def _error(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    content = exc.value.content
    assert isinstance(content, list)
    return dict(content[0])


# --- OAuth ------------------------------------------------------------------------------


def test_password_grant_answers_the_token_shape(
    server: SandboxServer, http: requests.Session
) -> None:
    body = http.post(f"{server.url}/services/oauth2/token", data=_password_form()).json()
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == server.url
    assert {"access_token", "id", "issued_at", "signature"} <= body.keys()


def test_password_with_security_token_is_accepted(
    server: SandboxServer, http: requests.Session
) -> None:
    form = _password_form(password=SANDBOX_PASSWORD + SANDBOX_SECURITY_TOKEN)
    assert http.post(f"{server.url}/services/oauth2/token", data=form).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"password": "wrong"}, ("invalid_grant", "authentication failure")),
        ({"username": "nobody@example.com"}, ("invalid_grant", "authentication failure")),
        ({"client_id": "unknown"}, ("invalid_client_id", "client identifier invalid")),
        ({"client_secret": "wrong"}, ("invalid_client", "invalid client credentials")),
        (
            {"grant_type": "implicit"},
            ("unsupported_grant_type", "grant type not supported"),
        ),
    ],
)
def test_token_errors(
    server: SandboxServer, http: requests.Session, overrides: dict[str, str], error: tuple[str, str]
) -> None:
    response = http.post(f"{server.url}/services/oauth2/token", data=_password_form(**overrides))
    assert response.status_code == 400
    assert response.json() == {"error": error[0], "error_description": error[1]}


@pytest.mark.parametrize("in_header", [True, False])
def test_client_credentials_grant(
    server: SandboxServer, http: requests.Session, in_header: bool
) -> None:
    form = {"grant_type": "client_credentials"}
    headers = {}
    if in_header:
        pair = f"{SANDBOX_CONSUMER_KEY}:{SANDBOX_CONSUMER_SECRET}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        form.update(client_id=SANDBOX_CONSUMER_KEY, client_secret=SANDBOX_CONSUMER_SECRET)
    response = http.post(f"{server.url}/services/oauth2/token", data=form, headers=headers)
    assert response.status_code == 200
    assert response.json()["token_format"] == "opaque"


def _jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"iss": SANDBOX_CONSUMER_KEY, "sub": SANDBOX_USERNAME}, 200),
        ({"iss": "someone-else", "sub": SANDBOX_USERNAME}, 400),
        ({"iss": SANDBOX_CONSUMER_KEY, "sub": "nobody@example.com"}, 400),
    ],
)
def test_jwt_bearer_grant_checks_issuer_and_subject(
    server: SandboxServer, http: requests.Session, claims: dict[str, Any], status: int
) -> None:
    assertion = _jwt({**claims, "aud": "https://login.salesforce.com", "exp": time.time() + 60})
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    assert http.post(f"{server.url}/services/oauth2/token", data=form).status_code == status


def test_issued_token_works_with_simple_salesforce(sf: Client) -> None:
    assert sf.query("SELECT Id FROM User")["totalSize"] >= 5


def test_wrong_token_raises_expired_session(server: SandboxServer, http: requests.Session) -> None:
    sf = Salesforce(instance_url=server.url, session_id="not-a-token", session=http)
    with pytest.raises(SalesforceExpiredSession) as exc:
        sf.query("SELECT Id FROM Lead")
    assert _error(exc) == {
        "message": "Session expired or invalid",
        "errorCode": "INVALID_SESSION_ID",
    }


def test_expire_sessions_admin_route_invalidates_tokens(
    server: SandboxServer, http: requests.Session, sf: Client
) -> None:
    assert http.post(f"{server.url}/__sandbox__/salesforce/expire-sessions").status_code == 200
    with pytest.raises(SalesforceExpiredSession):
        sf.Lead.describe()


class _LoginToSandbox(requests.Session):
    """Sends simple-salesforce's login.salesforce.com token request to the sandbox."""

    def __init__(self, base_url: str, ca: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.verify = ca
        self.trust_env = False

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        text = url.decode() if isinstance(url, bytes) else url
        text = text.replace("https://login.salesforce.com", self.base_url)
        return super().request(method, text, *args, **kwargs)


def test_simple_salesforce_relogs_in_after_sessions_expire(
    server: SandboxServer, emulator: SalesforceEmulator
) -> None:
    with _LoginToSandbox(server.url, str(server.ca_bundle)) as session:
        sf = Salesforce(
            username=SANDBOX_USERNAME,
            password=SANDBOX_PASSWORD,
            consumer_key=SANDBOX_CONSUMER_KEY,
            consumer_secret=SANDBOX_CONSUMER_SECRET,
            session=session,
        )
        first = sf.session_id
        emulator.expire_sessions()
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 0
        assert sf.session_id != first


# --- sObjects ---------------------------------------------------------------------------


def test_create_returns_save_result_with_a_lead_id(sf: Client) -> None:
    result = sf.Lead.create(_lead())
    assert result["success"] is True and result["errors"] == []
    assert re.fullmatch(r"00Q[0-9A-Za-z]{15}", result["id"])


def test_get_returns_defaults_owner_and_timestamps(
    sf: Client, emulator: SalesforceEmulator
) -> None:
    lead = sf.Lead.get(sf.Lead.create(_lead())["id"])
    assert lead["attributes"]["type"] == "Lead"
    assert lead["Status"] == "Open - Not Contacted"
    assert lead["OwnerId"] == emulator.store.integration_user_id
    assert lead["IsConverted"] is False and lead["Name"] == "Silva1"
    assert STAMP.match(lead["CreatedDate"]) and STAMP.match(lead["SystemModstamp"])


def test_get_with_fields_returns_only_those(sf: Client) -> None:
    lead_id = sf.Lead.create(_lead())["id"]
    lead = sf.Lead.get(lead_id, params={"fields": "Email,LastName"})
    assert list(lead) == ["attributes", "Email", "LastName"]


def test_get_accepts_a_15_character_id(sf: Client) -> None:
    lead_id = sf.Lead.create(_lead())["id"]
    assert sf.Lead.get(lead_id[:15])["Id"] == lead_id


def test_update_answers_204_and_advances_modstamp(sf: Client) -> None:
    lead_id = sf.Lead.create(_lead())["id"]
    before = sf.Lead.get(lead_id)
    assert sf.Lead.update(lead_id, {"Status": "Working - Contacted"}) == 204
    after = sf.Lead.get(lead_id)
    assert after["Status"] == "Working - Contacted"
    assert after["SystemModstamp"] > before["SystemModstamp"]
    assert after["LastModifiedDate"] > before["LastModifiedDate"]


def test_delete_answers_204_and_hides_the_record(sf: Client) -> None:
    lead_id = sf.Lead.create(_lead())["id"]
    assert sf.Lead.delete(lead_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Lead.get(lead_id)
    assert sf.query("SELECT Id FROM Lead")["totalSize"] == 0
    deleted = sf.query("SELECT Id, IsDeleted FROM Lead", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in deleted] == [(lead_id, True)]


def test_upsert_creates_then_updates(sf: Client) -> None:
    assert sf.Lead.upsert("LeadRelay_Key__c/k-1", _lead()) == 201
    assert sf.Lead.upsert("LeadRelay_Key__c/k-1", {"Title": "CTO"}) == 200
    records = sf.query("SELECT Title, LeadRelay_Key__c FROM Lead")["records"]
    assert [(r["Title"], r["LeadRelay_Key__c"]) for r in records] == [("CTO", "k-1")]


def test_upsert_update_body_says_created_false(sf: Client) -> None:
    sf.Lead.upsert("LeadRelay_Key__c/k-1", _lead())
    response = sf.Lead.upsert("LeadRelay_Key__c/k-1", {"Title": "CTO"}, raw_response=True)
    assert response.json()["created"] is False


def test_upsert_update_before_v46_answers_204(
    server: SandboxServer, http: requests.Session, token: str
) -> None:
    old: Client = Salesforce(
        instance_url=server.url, session_id=token, session=http, version="45.0"
    )
    old.Lead.upsert("LeadRelay_Key__c/k-1", _lead())
    assert old.Lead.upsert("LeadRelay_Key__c/k-1", {"Title": "CTO"}) == 204


def test_upsert_with_an_email_key_url_encoded(sf: Client) -> None:
    assert sf.Lead.upsert("Email/a+b@example.com", {"LastName": "X", "Company": "Y"}) == 201
    assert sf.query("SELECT Email FROM Lead")["records"][0]["Email"] == "a+b@example.com"


def test_upsert_with_several_matches_answers_300(sf: Client) -> None:
    headers = {"Sforce-Duplicate-Rule-Header": "allowSave=true"}
    ids = [sf.Lead.create(_lead(), headers=headers)["id"] for _ in range(2)]
    with pytest.raises(SalesforceMoreThanOneRecord) as exc:
        sf.Lead.upsert("Email/ana1@example.com", {"Title": "CTO"})
    content: Any = exc.value.content
    assert content == [f"/services/data/v59.0/sobjects/Lead/{i}" for i in ids]


@pytest.mark.parametrize("field", ["LeadRelay_Key__c", "Id"])
def test_upsert_refuses_the_key_in_the_body(sf: Client, field: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.upsert("LeadRelay_Key__c/k-1", {**_lead(), field: "00Q000000000001AAA"})
    assert _error(exc)["errorCode"] == "INVALID_FIELD"


def test_describe_lead_required_fields_and_picklists(sf: Client) -> None:
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    required = {
        n
        for n, f in fields.items()
        if f["createable"] and not f["nillable"] and not f["defaultedOnCreate"]
    }
    assert required == {"LastName", "Company"}
    status = fields["Status"]["picklistValues"]
    assert [p["value"] for p in status if p["defaultValue"]] == ["Open - Not Contacted"]
    assert {p["value"] for p in fields["LeadSource"]["picklistValues"]} == {
        "Web",
        "Phone Inquiry",
        "Partner Referral",
        "Purchased List",
        "Other",
    }
    assert fields["LeadRelay_Key__c"]["externalId"] and fields["LeadRelay_Key__c"]["unique"]
    # A Lead can be owned by a queue (Group) as well as by a User.
    assert fields["OwnerId"]["referenceTo"] == ["Group", "User"]


@pytest.mark.parametrize(
    ("field", "type_"),
    [
        ("Id", "id"),
        ("Email", "email"),
        ("Phone", "phone"),
        ("Status", "picklist"),
        ("CreatedDate", "datetime"),
        ("IsConverted", "boolean"),
        ("OwnerId", "reference"),
        ("NumberOfEmployees", "int"),
        ("Description", "textarea"),
        ("Website", "url"),
        ("UTM_Source__c", "string"),
        ("Rejection_Reason__c", "picklist"),
        ("Landing_Page__c", "url"),
        ("Assigned_At__c", "datetime"),
    ],
)
def test_describe_field_types(sf: Client, field: str, type_: str) -> None:
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert fields[field]["type"] == type_


def test_leadrelay_routing_fields_round_trip(sf: Client) -> None:
    written = {
        "Landing_Page__c": "https://acme.example/pricing?utm_source=ads",
        "Assigned_At__c": "2024-05-01T09:30:00.000+0000",
    }
    lead_id = sf.Lead.create(_lead(**written))["id"]
    record = sf.Lead.get(lead_id)
    assert {name: record[name] for name in written} == written


def test_landing_page_longer_than_255_is_refused(sf: Client) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(_lead(Landing_Page__c="https://acme.example/" + "p" * 240))
    assert _error(exc)["errorCode"] == "STRING_TOO_LONG"


def test_global_describe_lists_the_objects(sf: Client) -> None:
    names = {s["name"] for s in sf.describe()["sobjects"]}
    assert names == {
        "Lead", "Contact", "Account", "Opportunity", "User", "Group", "Task", "LeadStatus",
        "OpportunityStage",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("record", "code", "message"),
    [
        ({"Foo": 1}, "INVALID_FIELD", "No such column 'Foo' on sobject of type Lead"),
        ({"LastName": "X"}, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Company]"),
        (
            {"Status": "Maybe"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "Lead Status: bad value for restricted picklist field: Maybe",
        ),
        ({"NumberOfEmployees": "abc"}, "JSON_PARSER_ERROR", None),
        (
            {"Email": "not-an-email"},
            "INVALID_EMAIL_ADDRESS",
            "Email: invalid email address: not-an-email",
        ),
        ({"CreatedDate": "2024-01-01T00:00:00Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE", None),
        ({"PostalCode": "1" * 21}, "STRING_TOO_LONG", None),
        ({"OwnerId": "001000000000001AAA"}, "FIELD_INTEGRITY_EXCEPTION", None),
    ],
)
def test_create_validation_errors(
    sf: Client, record: dict[str, Any], code: str, message: str | None
) -> None:
    body = {"LastName": "Silva", "Company": "Acme", **record}
    if code == "REQUIRED_FIELD_MISSING":
        body = record
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(body)
    error = _error(exc)
    assert error["errorCode"] == code
    if message is not None:
        assert error["message"] == message


def test_required_field_error_names_the_fields(sf: Client) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create({"FirstName": "Ana"})
    assert _error(exc)["fields"] == ["LastName", "Company"]


def test_inactive_owner_is_refused(sf: Client) -> None:
    inactive = sf.query("SELECT Id FROM User WHERE IsActive = false")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(_lead(OwnerId=inactive))
    assert _error(exc)["errorCode"] == "INACTIVE_OWNER_OR_USER"


def test_unrestricted_lead_source_accepts_other_values(sf: Client) -> None:
    lead_id = sf.Lead.create(_lead(LeadSource="Trade Show"))["id"]
    assert sf.Lead.get(lead_id)["LeadSource"] == "Trade Show"


# --- duplicate rule -------------------------------------------------------------------------


def test_duplicate_email_is_detected_case_insensitively(sf: Client) -> None:
    first = sf.Lead.create(_lead())["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(_lead(Email="ANA1@Example.com"))
    error = _error(exc)
    assert error["errorCode"] == "DUPLICATES_DETECTED"
    result = error["duplicateResut"]
    assert result["allowSave"] is True
    assert result["duplicateRule"] == "Standard_Lead_Duplicate_Rule"
    assert result["matchResults"][0]["matchRecords"][0]["record"]["Id"] == first


def test_allow_save_header_bypasses_the_duplicate_rule(sf: Client) -> None:
    sf.Lead.create(_lead())
    headers = {"Sforce-Duplicate-Rule-Header": "allowSave=true"}
    assert sf.Lead.create(_lead(), headers=headers)["success"] is True


def test_update_keeping_the_email_does_not_trigger_the_rule(sf: Client) -> None:
    sf.Lead.create(_lead())
    second = sf.Lead.create(_lead(), headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"})
    assert sf.Lead.update(second["id"], {"Title": "CTO", "Email": "ana1@example.com"}) == 204


def test_duplicate_rule_applies_to_collection_create(sf: Client) -> None:
    sf.Lead.create(_lead())
    results = _collection(sf, [{"attributes": {"type": "Lead"}, **_lead()}])
    assert results[0]["success"] is False
    assert results[0]["errors"][0]["statusCode"] == "DUPLICATES_DETECTED"


# --- SOQL -------------------------------------------------------------------------------------


def test_query_filters_orders_and_limits(sf: Client) -> None:
    records = [
        {"attributes": {"type": "Lead"}, **_lead(n, NumberOfEmployees=n * 10)} for n in range(6)
    ]
    _collection(sf, records)
    soql = (
        "SELECT Email, NumberOfEmployees FROM Lead WHERE (NumberOfEmployees >= 10 AND "
        "Email LIKE 'ana%') OR Email IN ('ana0@example.com') ORDER BY NumberOfEmployees DESC "
        "LIMIT 3"
    )
    result = sf.query(soql)
    assert [r["NumberOfEmployees"] for r in result["records"]] == [50, 40, 30]
    assert result["records"][0]["attributes"]["type"] == "Lead"
    assert result["totalSize"] == 3 and result["done"] is True


def test_query_all_follows_next_records_url_past_5000(
    sf: Client, emulator: SalesforceEmulator
) -> None:
    _seed_leads(emulator, 5001)
    first = sf.query("SELECT Id FROM Lead ORDER BY Id")
    assert len(first["records"]) == 2000 and first["done"] is False
    assert re.fullmatch(
        r"/services/data/v59\.0/query/01g[0-9A-Za-z]{15}-2000", first["nextRecordsUrl"]
    )
    everything = sf.query_all("SELECT Id FROM Lead ORDER BY Id")
    ids = [r["Id"] for r in everything["records"]]
    assert len(ids) == 5001 and ids == sorted(ids)


def test_query_count(sf: Client, emulator: SalesforceEmulator) -> None:
    _seed_leads(emulator, 7)
    result = sf.query("SELECT COUNT() FROM Lead WHERE Email LIKE 'ana_@example.com'")
    assert (result["totalSize"], result["records"]) == (7, [])


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY"),
        ("SELECT Id FROM Lead WHERE Email = 'a\\qb'", "MALFORMED_QUERY"),
        ("SELECT Foo FROM Lead", "INVALID_FIELD"),
        ("SELECT Id FROM Widget", "INVALID_TYPE"),
        ("SELECT Id FROM Lead WHERE CreatedDate > '2024-01-01'", "INVALID_FIELD"),
    ],
)
def test_query_errors_are_malformed_requests(sf: Client, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(soql)
    assert _error(exc)["errorCode"] == code


def test_modstamps_are_strictly_increasing_for_incremental_reads(sf: Client) -> None:
    _collection(sf, [{"attributes": {"type": "Lead"}, **_lead(n)} for n in range(50)])
    stamps = [r["SystemModstamp"] for r in sf.query("SELECT SystemModstamp FROM Lead")["records"]]
    assert len(set(stamps)) == 50 and stamps == sorted(stamps)
    later = sf.query(
        f"SELECT Id FROM Lead WHERE SystemModstamp > {stamps[24].replace('+0000', 'Z')}"
    )
    assert later["totalSize"] == 25


def test_query_relationship_field(sf: Client, emulator: SalesforceEmulator) -> None:
    sf.Lead.create(_lead())
    record = sf.query("SELECT Owner.Username FROM Lead")["records"][0]
    assert record["Owner"]["Username"] == SANDBOX_USERNAME


def test_lead_statuses_are_queryable(sf: Client) -> None:
    soql = (
        "SELECT Id, MasterLabel, ApiName, IsConverted, IsDefault, SortOrder FROM LeadStatus "
        "ORDER BY SortOrder"
    )
    records = sf.query(soql)["records"]
    assert [r["ApiName"] for r in records if r["IsConverted"]] == ["Closed - Converted"]
    assert [r["MasterLabel"] for r in records if r["IsDefault"]] == ["Open - Not Contacted"]
    assert len(records) == 4


def test_active_sales_users_are_seeded(sf: Client) -> None:
    users = sf.query(
        "SELECT Id, Username, Email, FirstName, LastName, IsActive FROM User "
        "WHERE IsActive = true AND UserRoleId != null"
    )["records"]
    assert len(users) >= 4 and all(u["Id"].startswith("005") for u in users)


def test_unknown_query_locator(server: SandboxServer, http: requests.Session, token: str) -> None:
    response = http.get(
        f"{server.url}/services/data/v59.0/query/01g5g0000000000AAA-2000",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


# --- composite collections --------------------------------------------------------------------


def test_collection_create_reports_each_record_in_order(sf: Client) -> None:
    records = [
        {"attributes": {"type": "Lead"}, **_lead(1)},
        {"attributes": {"type": "Lead"}, "LastName": "NoCompany"},
        {"attributes": {"type": "Contact"}, "LastName": "Okafor"},
    ]
    results = _collection(sf, records)
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["errors"] == [
        {
            "statusCode": "REQUIRED_FIELD_MISSING",
            "message": "Required fields are missing: [Company]",
            "fields": ["Company"],
        }
    ]
    assert results[2]["id"].startswith("003")


def test_collection_all_or_none_rolls_back(sf: Client) -> None:
    records = [
        {"attributes": {"type": "Lead"}, **_lead(1)},
        {"attributes": {"type": "Lead"}, "LastName": "NoCompany"},
    ]
    results = _collection(sf, records, allOrNone=True)
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 0


def test_collection_over_200_records_is_refused(sf: Client) -> None:
    records = [{"attributes": {"type": "Lead"}, **_lead(n)} for n in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        _collection(sf, records)
    assert _error(exc)["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_collection_update(sf: Client) -> None:
    ids = [
        r["id"]
        for r in _collection(sf, [{"attributes": {"type": "Lead"}, **_lead(n)} for n in range(3)])
    ]
    updates = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Lead"}, "Id": i, "Title": "VP"} for i in ids],
    }
    results = sf.restful("composite/sobjects", method="PATCH", json=updates)
    assert [r["id"] for r in results] == ids
    assert sf.query("SELECT COUNT() FROM Lead WHERE Title = 'vp'")["totalSize"] == 3


def test_collection_upsert_reports_created(sf: Client) -> None:
    sf.Lead.upsert("LeadRelay_Key__c/k-0", _lead(0))
    records = [
        {"attributes": {"type": "Lead"}, "LeadRelay_Key__c": f"k-{n}", **_lead(n)} for n in range(2)
    ]
    body = {"allOrNone": False, "records": records}
    results = sf.restful("composite/sobjects/Lead/LeadRelay_Key__c", method="PATCH", json=body)
    assert [(r["success"], r["created"]) for r in results] == [(True, False), (True, True)]


def test_collection_delete(sf: Client) -> None:
    ids = [
        r["id"]
        for r in _collection(sf, [{"attributes": {"type": "Lead"}, **_lead(n)} for n in range(2)])
    ]
    results = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids)})
    assert [r["success"] for r in results] == [True, True]
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 0


# --- limits and faults ------------------------------------------------------------------------


def test_every_response_carries_limit_info(sf: Client) -> None:
    sf.query("SELECT Id FROM Lead")
    sf.query("SELECT Id FROM Lead")
    usage = sf.api_usage["api-usage"]
    assert (usage.used, usage.total) == (2, 15000)


def test_limits_resource(sf: Client) -> None:
    daily = sf.limits()["DailyApiRequests"]
    assert daily == {"Max": 15000, "Remaining": 14999}


def test_daily_limit_exceeded_is_403(
    server: SandboxServer, http: requests.Session, sf: Client, emulator: SalesforceEmulator
) -> None:
    http.post(f"{server.url}/__sandbox__/salesforce/limits", json={"daily_api_requests": 2})
    try:
        sf.query("SELECT Id FROM Lead")
        sf.query("SELECT Id FROM Lead")
        with pytest.raises(SalesforceRefusedRequest) as exc:
            sf.query("SELECT Id FROM Lead")
        assert _error(exc) == {
            "message": "TotalRequests Limit exceeded.",
            "errorCode": "REQUEST_LIMIT_EXCEEDED",
        }
    finally:
        emulator.daily_api_limit = 15000


def test_injected_rate_limit_answers_403_request_limit_exceeded(
    server: SandboxServer, sf: Client
) -> None:
    server.sandbox.set_faults(Faults(rate_limit_per_10s=1))
    sf.query("SELECT Id FROM Lead")
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.query("SELECT Id FROM Lead")
    assert _error(exc) == {
        "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
        "errorCode": "REQUEST_LIMIT_EXCEEDED",
    }


def test_injected_fault_answers_an_error_array(server: SandboxServer, sf: Client) -> None:
    server.sandbox.set_faults(Faults(error_rate=1.0, error_status=503))
    with pytest.raises(SalesforceGeneralError) as exc:
        sf.query("SELECT Id FROM Lead")
    assert exc.value.status == 503
    assert _error(exc)["errorCode"] == "SERVER_UNAVAILABLE"


# --- Bulk API 2.0 -------------------------------------------------------------------------------


def test_bulk2_insert_and_successful_results(sf: Client) -> None:
    records = [_lead(n) for n in range(3)]
    result = sf.bulk2.Lead.insert(records=records, wait=0)[0]
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (3, 0)
    rows = list(csv.DictReader(io.StringIO(sf.bulk2.Lead.get_successful_records(result["job_id"]))))
    assert [(r["sf__Created"], r["Email"]) for r in rows] == [
        ("true", f"ana{n}@example.com") for n in range(3)
    ]
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 3


def test_bulk2_upsert_reports_failed_rows(sf: Client) -> None:
    records = [
        {"LeadRelay_Key__c": "k-1", **_lead(1)},
        {"LeadRelay_Key__c": "k-2", "LastName": "NoCompany", "Company": "", "Email": ""},
    ]
    result = sf.bulk2.Lead.upsert(records=records, external_id_field="LeadRelay_Key__c", wait=0)[0]
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (2, 1)
    failed = list(csv.DictReader(io.StringIO(sf.bulk2.Lead.get_failed_records(result["job_id"]))))
    assert failed[0]["LeadRelay_Key__c"] == "k-2"
    assert failed[0]["sf__Error"].startswith("REQUIRED_FIELD_MISSING:")


def test_bulk2_query_pages_with_locator(sf: Client, emulator: SalesforceEmulator) -> None:
    _seed_leads(emulator, 5)
    pages = list(
        sf.bulk2.Lead.query("SELECT Email FROM Lead ORDER BY Email", max_records=2, wait=0)
    )
    assert len(pages) == 3
    emails = [row["Email"] for page in pages for row in csv.DictReader(io.StringIO(page))]
    assert emails == [f"ana{n}@example.com" for n in range(5)]


def test_bulk2_job_state_goes_open_then_complete(
    server: SandboxServer, http: requests.Session, token: str
) -> None:
    base = f"{server.url}/services/data/v59.0/jobs/ingest"
    headers = {"Authorization": f"Bearer {token}"}
    job = http.post(
        base,
        json={"object": "Lead", "operation": "insert", "contentType": "CSV", "lineEnding": "LF"},
        headers=headers,
    ).json()
    assert job["state"] == "Open"
    upload = http.put(
        f"{base}/{job['id']}/batches",
        data=b"LastName,Company\nSilva,Acme\n",
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert upload.status_code == 201
    http.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"}, headers=headers)
    info = http.get(f"{base}/{job['id']}", headers=headers).json()
    assert (info["state"], info["numberRecordsProcessed"]) == ("JobComplete", 1)


# --- schema drift --------------------------------------------------------------------------------


def test_removed_field_disappears_everywhere(
    server: SandboxServer, http: requests.Session, sf: Client
) -> None:
    response = http.post(
        f"{server.url}/__sandbox__/schema",
        json={"system": "salesforce", "remove_field": "UTM_Term__c"},
    )
    assert response.status_code == 200
    assert "UTM_Term__c" not in {f["name"] for f in sf.Lead.describe()["fields"]}
    with pytest.raises(SalesforceMalformedRequest) as query_error:
        sf.query("SELECT UTM_Term__c FROM Lead")
    assert _error(query_error)["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as write_error:
        sf.Lead.create(_lead(UTM_Term__c="x"))
    assert _error(write_error)["message"] == "No such column 'UTM_Term__c' on sobject of type Lead"


def test_removed_status_option_is_refused(
    server: SandboxServer, http: requests.Session, sf: Client
) -> None:
    change = {
        "system": "salesforce",
        "remove_option": {"field": "Status", "value": "Working - Contacted"},
    }
    assert http.post(f"{server.url}/__sandbox__/schema", json=change).status_code == 200
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(_lead(Status="Working - Contacted"))
    assert _error(exc)["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert sf.query("SELECT COUNT() FROM LeadStatus")["totalSize"] == 3


def test_removed_lead_source_option_is_still_accepted(
    server: SandboxServer, http: requests.Session, sf: Client
) -> None:
    change = {"system": "salesforce", "remove_option": {"field": "LeadSource", "value": "Web"}}
    http.post(f"{server.url}/__sandbox__/schema", json=change)
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert "Web" not in {p["value"] for p in fields["LeadSource"]["picklistValues"]}
    assert sf.Lead.create(_lead(LeadSource="Web"))["success"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"remove_field": "Nope__c"},
        {"remove_field": "LastName"},
        {"remove_option": {"field": "Status", "value": "Nope"}},
    ],
)
def test_impossible_schema_changes_are_refused(
    server: SandboxServer, http: requests.Session, change: dict[str, Any]
) -> None:
    response = http.post(
        f"{server.url}/__sandbox__/schema", json={"system": "salesforce", **change}
    )
    assert response.status_code == 400


# --- protocol edges -------------------------------------------------------------------------------


def test_unknown_route_is_a_salesforce_404(
    server: SandboxServer, http: requests.Session, token: str
) -> None:
    response = http.get(
        f"{server.url}/services/data/v59.0/nothing/here",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 404
    assert response.json() == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]


def test_malformed_json_is_a_parser_error(
    server: SandboxServer, http: requests.Session, token: str
) -> None:
    response = http.post(
        f"{server.url}/services/data/v59.0/sobjects/Lead/",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_stats_show_the_versioned_route(
    server: SandboxServer, http: requests.Session, sf: Client
) -> None:
    _collection(sf, [{"attributes": {"type": "Lead"}, **_lead()}])
    stats = http.get(f"{server.url}/__sandbox__/stats").json()
    assert stats["by_route"]["POST /services/data/v59.0/composite/sobjects"] == 1


def test_query_all_finds_deleted_records_by_email(sf: Client) -> None:
    lead_id = sf.Lead.create(_lead())["id"]
    sf.Lead.delete(lead_id)
    soql = "SELECT Id FROM Lead WHERE Email = 'ana1@example.com'"
    assert sf.query(soql)["totalSize"] == 0
    assert sf.query(soql, include_deleted=True)["records"][0]["Id"] == lead_id


def test_updated_and_deleted_resources(sf: Client) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    kept = sf.Lead.create(_lead(1))["id"]
    gone = sf.Lead.create(_lead(2))["id"]
    sf.Lead.delete(gone)
    end = datetime.now(UTC) + timedelta(minutes=1)
    assert sf.Lead.updated(start, end)["ids"] == [kept]
    assert [r["id"] for r in sf.Lead.deleted(start, end)["deletedRecords"]] == [gone]


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("POST", "sobjects/Lead/", [1, 2], "JSON_PARSER_ERROR"),
        ("POST", "sobjects/Lead/", {"LastName": {"x": 1}, "Company": "A"}, "JSON_PARSER_ERROR"),
        ("POST", "composite/sobjects", {"records": "nope"}, "JSON_PARSER_ERROR"),
        ("POST", "composite/sobjects", {"records": [{"LastName": "X"}]}, "JSON_PARSER_ERROR"),
        (
            "POST",
            "composite/sobjects",
            {"records": [{"attributes": {"type": "Nope"}}]},
            "INVALID_TYPE",
        ),
        ("PATCH", "sobjects/Lead/00Q5g0000000001EAA", {"Title": "x"}, "NOT_FOUND"),
        ("GET", "sobjects/Nope/describe", None, "NOT_FOUND"),
        ("GET", "query", None, "MALFORMED_QUERY"),
        ("PATCH", "sobjects/Lead/Title/x", {"Company": "A"}, "NOT_FOUND"),
        ("POST", "jobs/ingest", {"object": "Lead", "operation": "merge"}, "INVALIDJOB"),
        ("POST", "jobs/query", {"operation": "query", "query": "SELECT FROM"}, "MALFORMED_QUERY"),
        ("PUT", "sobjects/Lead/00Q5g0000000001EAA", {}, "METHOD_NOT_ALLOWED"),
    ],
)
def test_bad_input_gets_a_salesforce_error_array(
    server: SandboxServer,
    http: requests.Session,
    token: str,
    method: str,
    path: str,
    body: Any,
    code: str,
) -> None:
    response = http.request(
        method,
        f"{server.url}/services/data/v59.0/{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert 400 <= response.status_code < 500
    assert response.json()[0]["errorCode"] == code
