"""Salesforce-specific behaviour against the emulator: auth, SOQL safety, Contacts, duplicate
rules, the external-id and lookup paths, Bulk API 2.0, read cursors, describe and health."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from leadrelay.connectors.base import UpsertInput, WriteOutcome, normalize_email
from leadrelay.connectors.errors import AuthError, RateLimited, Rejected
from leadrelay.connectors.salesforce import SalesforceConnector, bulk
from leadrelay.connectors.salesforce import connector as connector_module
from leadrelay.connectors.salesforce.auth import Token, jwt_assertion
from leadrelay.connectors.salesforce.bulk import parse_bulk_error
from leadrelay.connectors.salesforce.connector import (
    CONTACT_FIELDS,
    decode_cursor,
    parse_stamp,
)
from leadrelay.connectors.salesforce.results import EXISTING_CONTACT
from leadrelay.connectors.salesforce.soql import in_batches, quote
from leadrelay.connectors.shipped import shipped_mapping_fields
from tests.connectors.contract import unique_email
from tests.connectors.salesforce.conftest import admin, sandbox_settings, stats

Make = Callable[..., SalesforceConnector]


def lead(email: str, **extra: Any) -> dict[str, Any]:
    return {"Email": email, "LastName": "Silva", "Company": "Acme", **extra}


def _rsa_pem() -> tuple[str, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["password", "client_credentials", "jwt"])
def test_each_auth_flow_logs_in(make_connector: Make, auth: str) -> None:
    extra: dict[str, Any] = {"auth": auth}
    if auth == "jwt":
        extra["private_key"] = _rsa_pem()[0]
        extra["consumer_secret"] = None
        extra["password"] = None
    health = make_connector(**extra).health()
    assert (health.ok, health.credentials_valid, health.budget_max) == (True, True, 15000)


def test_jwt_assertion_is_signed_rs256_with_the_documented_claims(env: dict[str, str]) -> None:
    pem, public = _rsa_pem()
    settings = sandbox_settings(env, auth="jwt", private_key=pem)
    header, claims, signature = jwt_assertion(settings, now=lambda: 1_700_000_000).split(".")
    assert json.loads(_unb64(header)) == {"alg": "RS256", "typ": "JWT"}
    assert json.loads(_unb64(claims)) == {
        "iss": env["SALESFORCE_CONSUMER_KEY"],
        "sub": env["SALESFORCE_USERNAME"],
        "aud": env["SALESFORCE_INSTANCE_URL"],
        "exp": 1_700_000_180,
    }
    public.verify(
        _unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ({"password": "wrong-password-123"}, "authentication failure"),
        ({"consumer_key": "not-the-key"}, "client identifier invalid"),
        ({"consumer_secret": "wrong-secret-456"}, "invalid client credentials"),
    ],
)
def test_refused_credentials_raise_auth_error_without_secrets(
    make_connector: Make, override: dict[str, str], said: str
) -> None:
    connector = make_connector(**override)
    with pytest.raises(AuthError) as caught:
        connector.lookup(emails=["a@example.com"])
    text = str(caught.value) + repr(caught.value)
    assert said in text
    for secret in ("wrong-password-123", "wrong-secret-456", "sandbox-password"):
        assert secret not in text
    assert connector.health().credentials_valid is False


def test_expired_session_is_refreshed_once(make_connector: Make, env: dict[str, str]) -> None:
    connector = make_connector()
    connector.health()
    assert admin(env, "salesforce/expire-sessions")["expired"] >= 1
    assert connector.lookup(emails=["nobody@example.com"]) == {}
    assert connector.token_requests == 2


def test_a_second_invalid_session_in_one_call_is_an_auth_error(
    make_connector: Make, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = make_connector()
    connector.health()
    fetched: list[Token] = []

    def refused_token(*args: Any) -> Token:
        fetched.append(Token("00D000000000000!revoked", env["SALESFORCE_INSTANCE_URL"]))
        return fetched[-1]

    monkeypatch.setattr(connector_module, "fetch_token", refused_token)
    admin(env, "salesforce/expire-sessions")
    with pytest.raises(AuthError, match="credentials refused"):
        connector.lookup(emails=["nobody@example.com"])
    assert len(fetched) == 1


def test_used_up_org_budget_fails_fast(make_connector: Make, env: dict[str, str]) -> None:
    connector = make_connector()
    connector.health()
    admin(env, "salesforce/limits", {"daily_api_requests": 1})
    try:
        before = connector.api_calls
        with pytest.raises(RateLimited, match="TotalRequests"):
            connector.lookup(emails=["nobody@example.com"])
        assert connector.api_calls - before == 1
    finally:
        admin(env, "salesforce/limits", {"daily_api_requests": 15000})


# -- SOQL literals through the sandbox --------------------------------------------------------

NASTY_EMAILS = [
    "o'brien@example.com",
    "it's'%@example.com",
    "percent%sign@example.com",
    "under_score@example.com",
    "ünïcødé.ñame@example.com",
    "x'or'1'='1@example.com",
]


def test_nasty_emails_round_trip_exactly(make_connector: Make) -> None:
    connector = make_connector()
    decoys = ["percentXsign@example.com", "underXscore@example.com", "o'brienx@example.com"]
    results = connector.upsert([UpsertInput(e, lead(e)) for e in NASTY_EMAILS + decoys])
    assert all(r.outcome is WriteOutcome.CREATED for r in results), results
    found = connector.lookup(emails=NASTY_EMAILS)
    assert sorted(found) == sorted(normalize_email(e) for e in NASTY_EMAILS)
    assert {normalize_email(r["Email"]) for r in found.values()} == set(found)


@pytest.mark.parametrize(
    "name",
    ["O'Brien", 'Say "hi"', "back\\slash", "100% _real_", "two\nlines", "tab\there", "Zoë 名前"],
)
def test_nasty_names_round_trip_through_soql(make_connector: Make, name: str) -> None:
    connector = make_connector()
    email = unique_email()
    [result] = connector.upsert([UpsertInput(email, lead(email, LastName=name))])
    rows = connector.query(
        f"SELECT Id, LastName FROM Lead WHERE LastName = {quote(name)}", describe="test"
    )
    assert [(r["Id"], r["LastName"]) for r in rows] == [(result.external_id, name)]


def test_lookup_splits_long_email_lists_into_url_sized_batches(make_connector: Make) -> None:
    connector = make_connector()
    emails = [f"{'x' * 60}.{n}@example.com" for n in range(400)]
    created = connector.upsert([UpsertInput(e, lead(e)) for e in emails])
    assert all(r.ok for r in created)
    batches = len(in_batches("SELECT … WHERE Email IN ({values})", emails))
    assert batches > 1
    before = connector.api_calls
    found = connector.lookup(emails=emails)
    assert len(found) == len(emails)
    lead_queries = len(
        in_batches(
            f"SELECT {', '.join(connector.lead_fields())} FROM Lead WHERE Email IN ({{values}})",
            emails,
        )
    )
    contact_queries = len(
        in_batches(
            f"SELECT {', '.join(CONTACT_FIELDS)} FROM Contact WHERE Email IN ({{values}})", emails
        )
    )
    # The Lead and Contact queries travel together, five to a Composite call.
    assert connector.api_calls - before == math.ceil((lead_queries + contact_queries) / 5)


# -- Contacts, duplicate rules ------------------------------------------------------------------


def _contact(connector: SalesforceConnector, email: str) -> str:
    answer = connector.restful(
        "sobjects/Contact/",
        method="POST",
        json={"LastName": "Customer", "Email": email},
        describe="create a Contact",
        idempotent=False,
    )
    return str(answer["id"])


def test_lookup_finds_an_existing_contact(make_connector: Make) -> None:
    connector = make_connector()
    email = unique_email("customer")
    contact_id = _contact(connector, email)
    found = connector.lookup(emails=[email.upper()])
    record = found[normalize_email(email)]
    assert (record["attributes"]["type"], record["Id"]) == ("Contact", contact_id)
    assert connector.lookup(ids=[contact_id])[contact_id]["Email"] == email


@pytest.mark.parametrize("external_id", [None, "LeadRelay_Key__c"])
def test_an_existing_contact_is_not_recreated_as_a_lead(
    make_connector: Make, external_id: str | None
) -> None:
    connector = make_connector(external_id_field=external_id)
    email = unique_email("customer")
    contact_id = _contact(connector, email)
    [result] = connector.upsert([UpsertInput("k1", lead(email))])
    assert result.outcome is WriteOutcome.FAILED and result.error is not None
    assert (result.error.code, result.external_id) == (EXISTING_CONTACT, contact_id)
    rows = connector.query("SELECT Id FROM Lead", describe="all leads")
    assert rows == []


@pytest.mark.parametrize(("allow", "outcome"), [(False, "failed"), (True, "created")])
def test_duplicate_rule_rejects_unless_allow_save(
    make_connector: Make, allow: bool, outcome: str
) -> None:
    connector = make_connector(external_id_field="LeadRelay_Key__c", allow_duplicate_save=allow)
    email = unique_email("dupe")
    connector.upsert([UpsertInput("key-1", lead(email))])
    [second] = connector.upsert([UpsertInput("key-2", lead(email))])
    assert second.outcome.value == outcome
    if not allow:
        assert second.error is not None and second.error.code == "DUPLICATES_DETECTED"
        assert "duplicate record" in second.error.message
        assert "Standard_Lead_Duplicate_Rule" in second.error.message


# -- the two upsert paths -------------------------------------------------------------------------


def test_external_id_path_costs_one_write_and_one_contact_lookup_per_batch(
    make_connector: Make,
) -> None:
    connector = make_connector(external_id_field="LeadRelay_Key__c")
    connector.health()
    inputs = [UpsertInput(f"key-{n}", lead(unique_email(f"x{n}"))) for n in range(250)]
    before = connector.api_calls
    first = connector.upsert(inputs)
    assert connector.api_calls - before == 2 + 1  # two collection upserts, one Contact lookup
    assert {r.outcome for r in first} == {WriteOutcome.CREATED}
    second = connector.upsert(inputs)
    assert {r.outcome for r in second} == {WriteOutcome.UPDATED}
    assert [r.external_id for r in second] == [r.external_id for r in first]
    keys = connector.lookup(ids=[first[0].external_id or ""])
    assert next(iter(keys.values()))["LeadRelay_Key__c"] == "key-0"


def test_lookup_path_creates_new_and_updates_existing(make_connector: Make) -> None:
    connector = make_connector()
    old, new = unique_email("old"), unique_email("new")
    [created] = connector.upsert([UpsertInput("old", lead(old))])
    connector.health()
    before = connector.api_calls
    results = connector.upsert(
        [UpsertInput("old", lead(old, Title="CEO")), UpsertInput("new", lead(new))]
    )
    # Lead and Contact lookups in one Composite call, one update, one create.
    assert connector.api_calls - before == 3
    assert [(r.outcome, r.external_id == created.external_id) for r in results] == [
        (WriteOutcome.UPDATED, True),
        (WriteOutcome.CREATED, False),
    ]


def test_the_same_email_twice_in_one_call_creates_one_lead(make_connector: Make) -> None:
    connector = make_connector()
    email = unique_email()
    results = connector.upsert(
        [UpsertInput("a", lead(email)), UpsertInput("b", lead(email.upper(), Title="CTO"))]
    )
    assert [r.outcome for r in results] == [WriteOutcome.CREATED, WriteOutcome.UPDATED]
    assert results[0].external_id == results[1].external_id


def test_required_field_missing_names_the_field(make_connector: Make) -> None:
    connector = make_connector()
    email = unique_email()
    [result] = connector.upsert([UpsertInput("r", {"Email": email, "LastName": "X"})])
    assert result.error is not None
    assert (result.error.code, result.error.field, result.error.record) == (
        "REQUIRED_FIELD_MISSING",
        "Company",
        "r",
    )
    assert "Required fields are missing" in result.error.message


# -- Bulk API 2.0 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("external_id", [None, "LeadRelay_Key__c"], ids=["lookup", "extid"])
def test_bulk_path_above_the_threshold(
    make_connector: Make, env: dict[str, str], external_id: str | None
) -> None:
    connector = make_connector(bulk_threshold=5, external_id_field=external_id)
    existing = unique_email("existing")
    [old] = connector.upsert([UpsertInput("existing", lead(existing))])
    emails = [unique_email(f"bulk{n}") for n in range(6)]
    inputs = [
        UpsertInput("existing", lead(existing, Title="VP")),
        *(UpsertInput(e, lead(e, Title='Bulk, "quoted"\nline')) for e in emails),
        UpsertInput("bad", {"Email": unique_email("bad"), "LastName": "NoCompany"}),
    ]
    results = connector.upsert(inputs)
    assert [r.ref for r in results] == [i.ref for i in inputs]
    assert results[0].outcome is WriteOutcome.UPDATED
    assert results[0].external_id == old.external_id
    assert [r.outcome for r in results[1:7]] == [WriteOutcome.CREATED] * 6
    assert results[7].error is not None and results[7].error.field == "Company"
    found = connector.lookup(emails=emails)
    assert {r["Title"] for r in found.values()} == {'Bulk, "quoted"\nline'}
    routes = stats(env)["by_route"]
    assert any("/jobs/ingest" in route for route in routes)


@pytest.mark.parametrize("external_id", [None, "LeadRelay_Key__c"], ids=["lookup", "extid"])
def test_a_bulk_write_of_none_clears_the_field(
    make_connector: Make, external_id: str | None
) -> None:
    connector = make_connector(bulk_threshold=2, external_id_field=external_id)
    emails = [unique_email(f"clear{n}") for n in range(3)]
    assert all(
        r.ok for r in connector.upsert([UpsertInput(e, lead(e, Title="VP")) for e in emails])
    )
    results = connector.upsert([UpsertInput(e, {**lead(e), "Title": None}) for e in emails])
    assert [r.outcome for r in results] == [WriteOutcome.UPDATED] * 3
    assert {row.get("Title") for row in connector.lookup(emails=emails).values()} == {None}


def test_a_lead_a_bulk_job_created_is_updated_by_the_next_upsert_not_created_again(
    make_connector: Make,
) -> None:
    connector = make_connector(bulk_threshold=2)
    emails = [unique_email(f"memo{n}") for n in range(3)]
    assert connector.lookup(emails=emails) == {}  # the engine looks its page up first
    created = connector.upsert([UpsertInput(e, lead(e)) for e in emails])
    [again] = connector.upsert([UpsertInput("again", lead(emails[0], Title="CTO"))])
    assert (again.outcome, again.external_id) == (WriteOutcome.UPDATED, created[0].external_id)


@pytest.mark.parametrize("external_id", [None, "LeadRelay_Key__c"], ids=["lookup", "extid"])
def test_the_rows_an_aborted_bulk_job_left_are_written_the_rest_way(
    make_connector: Make,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    external_id: str | None,
) -> None:
    # Someone aborts the job in Salesforce before it runs: it processes no row.
    send = bulk._Job.send

    def aborted_first(job: Any, method: str, path: str, **kwargs: Any) -> Any:
        if method == "PATCH" and kwargs.get("json") == {"state": "UploadComplete"}:
            send(job, method, path, describe="abort", idempotent=True, json={"state": "Aborted"})
        return send(job, method, path, **kwargs)

    monkeypatch.setattr(bulk._Job, "send", aborted_first)
    connector = make_connector(bulk_threshold=2, external_id_field=external_id)
    emails = [unique_email(f"aborted{n}") for n in range(3)]
    results = connector.upsert([UpsertInput(e, lead(e)) for e in emails])
    assert [(r.ref, r.outcome) for r in results] == [(e, WriteOutcome.CREATED) for e in emails]
    found = connector.lookup(emails=emails)
    assert {row["Id"] for row in found.values()} == {r.external_id for r in results}
    routes = stats(env)["by_route"]
    assert any("composite" in route for route in routes)


def test_a_column_that_fails_a_bulk_job_is_refused_as_the_rest_path_refuses_it(
    make_connector: Make,
) -> None:
    # A column Salesforce does not know fails the whole job (InvalidBatch) and processes no
    # row; its rows then meet the REST path's answer, in Salesforce's own words, not a refusal
    # for the job's state.
    connector = make_connector(bulk_threshold=2)
    emails = [unique_email(f"failedjob{n}") for n in range(3)]
    with pytest.raises(Rejected) as refused:
        connector.upsert([UpsertInput(e, lead(e, Nope__c="x")) for e in emails])
    assert refused.value.code == "INVALID_FIELD"
    assert "No such column 'Nope__c'" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (
            "REQUIRED_FIELD_MISSING:Required fields are missing: [Company]:Company --",
            ("REQUIRED_FIELD_MISSING", "Required fields are missing: [Company]", "Company"),
        ),
        (
            "DUPLICATES_DETECTED:Use one of these records?: --",
            ("DUPLICATES_DETECTED", "Use one of these records?", None),
        ),
        ("something odd", (None, "something odd", None)),
    ],
)
def test_bulk_errors_are_parsed(text: str, parsed: tuple[Any, ...]) -> None:
    assert parse_bulk_error(text) == parsed


# -- read_changes ---------------------------------------------------------------------------


def test_read_changes_follows_query_more(make_connector: Make) -> None:
    connector = make_connector(bulk_threshold=100)
    emails = [f"page{n}@example.com" for n in range(2001)]
    results = connector.upsert([UpsertInput(e, lead(e)) for e in emails])
    assert all(r.ok for r in results)
    pages = list(connector.read_changes(None))
    assert [len(p.records) for p in pages] == [2000, 1]
    assert len({r["Id"] for p in pages for r in p.records}) == 2001
    # A page's cursor is the (SystemModstamp, Id) of its last record.
    last = pages[0].records[-1]
    assert pages[0].cursor is not None
    assert decode_cursor(pages[0].cursor) == (parse_stamp(last["SystemModstamp"]), last["Id"])
    ordered = [(r["SystemModstamp"], r["Id"]) for p in pages for r in p.records]
    assert ordered == sorted(ordered)


def test_read_fields_default_to_the_mapping_fields_the_org_has(
    make_connector: Make, env: dict[str, str]
) -> None:
    admin(env, "schema", {"system": "salesforce", "remove_field": "Lead_Score__c"})
    connector = make_connector()
    fields = connector.lead_fields()
    assert {"Id", "Email", "SystemModstamp", "LeadRelay_Key__c", "UTM_Source__c"} <= set(fields)
    assert "Lead_Score__c" in shipped_mapping_fields("salesforce")
    assert "Lead_Score__c" not in fields
    only = make_connector(read_fields=["Company"]).lead_fields()
    assert set(only) == {
        "Company",
        "Id",
        "Email",
        "SystemModstamp",
        "IsConverted",
        "ConvertedContactId",
    }


# -- describe, health, users ----------------------------------------------------------------------


def test_describe_lists_active_picklist_values_only(
    make_connector: Make, env: dict[str, str]
) -> None:
    admin(
        env,
        "schema",
        {"system": "salesforce", "remove_option": {"field": "LeadSource", "value": "Other"}},
    )
    schema = make_connector().describe()
    source = schema.field("LeadSource").picklist_values or ()
    assert "Web" in source and "Other" not in source
    assert set(schema.required) == {"LastName", "Company"}
    assert schema.field("IsConverted").read_only and schema.field("LeadRelay_Key__c").unique


def test_health_reports_the_org_budget(make_connector: Make) -> None:
    connector = make_connector()
    # describe Lead, then Opportunity and Contact in one Composite call, then the Lead and
    # Contact queries in one Composite call
    connector.lookup(emails=["a@example.com"])
    health = connector.health()  # limits/ counts itself
    assert (health.budget_max, health.budget_used) == (15000, 4)
    assert health.details["sforce_limit_info"] == "api-usage=4/15000"
    assert connector.api_usage == (4, 15000)


def test_users_and_lead_statuses(make_connector: Make) -> None:
    connector = make_connector()
    users = connector.users()
    assert users and all(u["Email"] and u["Id"].startswith("005") for u in users)
    assert "eli.former@leadrelay.sandbox" not in {u["Email"] for u in users}
    converted = {s["ApiName"] for s in connector.lead_statuses() if s["IsConverted"]}
    assert converted == {"Closed - Converted"}


def test_update_and_delete_report_per_record(make_connector: Make) -> None:
    connector = make_connector()
    [a] = connector.upsert([UpsertInput("a", lead(unique_email()))])
    assert a.external_id
    updated = connector.update({a.external_id: {"Status": "Not a status"}})
    assert updated[0].error is not None and updated[0].error.field == "Status"
    first = connector.delete([a.external_id, "00Q000000000000AAA"])
    assert [r.ok for r in first] == [True, False]
    again = connector.delete([a.external_id])
    assert again[0].ok


def test_upsert_reuses_a_fresh_lookup_of_the_same_emails(make_connector: Make) -> None:
    connector = make_connector()
    existing = "known@example.com"
    assert connector.upsert([UpsertInput(existing, lead(existing))])[0].ok
    emails = [existing, "new1@example.com", "new2@example.com"]
    connector.lookup(emails=emails)
    before = connector.api_calls
    results = connector.upsert([UpsertInput(e, lead(e)) for e in emails])
    assert [r.outcome for r in results] == [
        WriteOutcome.UPDATED,
        WriteOutcome.CREATED,
        WriteOutcome.CREATED,
    ]
    assert connector.api_calls - before == 2  # one update, one create: no second lookup


def test_a_stale_lookup_is_asked_again(make_connector: Make) -> None:
    connector = make_connector()
    connector.lookup_memo_s = 0.0
    connector.lookup(emails=["stale@example.com"])
    before = connector.api_calls
    assert connector.upsert([UpsertInput("s", lead("stale@example.com"))])[0].ok
    assert connector.api_calls - before > 1
