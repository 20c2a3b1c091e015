"""Unit tests of the Zoho client against respx: paging, 204/304, per-record codes, escaping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from leadrelay.config import ZohoConnection
from leadrelay.connectors.base import Deletion, Page, UpsertInput, WriteOutcome
from leadrelay.connectors.credentials import process_cache
from leadrelay.connectors.errors import ConnectorError, RateLimited, Rejected
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.connectors.zoho.connector import ReadCursor, coql_credits, keyset_condition
from leadrelay.connectors.zoho.criteria import (
    coql_in,
    coql_literal,
    coql_select,
    criteria_value,
    equals_any,
)
from leadrelay.sandbox.zoho.emulator import (
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
)

ACCOUNTS = "https://accounts.zoho.eu"
API = "https://www.zohoapis.eu/crm/v7"
TOKEN = "1000.0123456789abcdef0123456789abcdef.fedcba9876543210fedcba9876543210"
FAST = RetryPolicy(max_attempts=4, base_s=0.0, cap_s=0.0, max_total_s=5.0)
CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    process_cache().clear()
    yield
    process_cache().clear()


@pytest.fixture
def zoho() -> Iterator[ZohoConnector]:
    settings = ZohoConnection.model_validate(
        {
            "kind": "zoho",
            "client_id": "1000.CLIENT",
            "client_secret": "respx-client-secret-000000",
            "refresh_token": "1000.respx.refresh000000",
            "accounts_url": ACCOUNTS,
        }
    )
    with respx.mock:
        respx.post(f"{ACCOUNTS}/oauth/v2/token").respond(
            200,
            json={
                "access_token": TOKEN,
                "api_domain": "https://www.zohoapis.eu",
                "expires_in": 3600,
            },
        )
        # The reads here are the per-module calls (a stream's pages beyond the composite
        # call's first one, and the reads of an org that refuses the composite call); the
        # composite call and the Contacts are tested on their own below.
        connector = ZohoConnector(
            settings,
            "zoho",
            retry=FAST,
            sleep=lambda s: None,
            read_fields=["Company"],
            composite_reads=False,
            follow_contacts=False,
        )
        with connector:
            yield connector


def query(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}


def lead(n: int, start: datetime = datetime(2024, 1, 1, tzinfo=UTC)) -> dict[str, Any]:
    moment = (start + timedelta(seconds=n)).isoformat(timespec="seconds")
    return {"id": str(1000 + n), "Email": f"l{n}@example.com", "Modified_Time": moment}


# -- read_changes --------------------------------------------------------------------------


SERVER_DATE = "Wed, 01 May 2024 12:00:10 GMT"
#: The server's time of the first query (its Date header) minus the 2 s look-back.
AFTER_READ = "2024-05-01T12:00:08+00:00"


def select_query(request: httpx.Request) -> str:
    return str(json.loads(request.content)["select_query"])


def keyset_pages(total: int) -> Any:
    """A COQL endpoint over ``total`` leads one second apart, answering keyset queries."""
    rows = [lead(n) for n in range(total)]

    def answer(request: httpx.Request) -> httpx.Response:
        text = select_query(request)
        found = re.search(r"\(id > (\d+)\)", text)
        after = int(found.group(1)) if found else 0
        page = [row for row in rows if int(row["id"]) > after][:200]
        more = int(page[-1]["id"]) < int(rows[-1]["id"]) if page else False
        if not page:
            return httpx.Response(204, headers={"Date": SERVER_DATE})
        body = {"data": page, "info": {"count": len(page), "more_records": more}}
        return httpx.Response(200, json=body, headers={"Date": SERVER_DATE})

    return answer


def test_a_read_pages_by_keyset_resuming_after_each_pages_last_record(
    zoho: ZohoConnector,
) -> None:
    route = respx.post(f"{API}/coql").mock(side_effect=keyset_pages(450))
    respx.get(f"{API}/Leads/deleted").respond(204)
    pages = list(zoho.read_changes(None))
    queries = [select_query(call.request) for call in route.calls]
    assert queries[0] == (
        "select Email, Last_Name, Modified_Time, Company from Leads where id is not null "
        "order by Modified_Time asc, id asc limit 200 offset 0"
    )
    second = lead(199)["Modified_Time"]
    assert (
        f"where (Modified_Time > '{second}') or ((Modified_Time = '{second}') and " in (queries[1])
    )
    assert [len(page.records) for page in pages] == [200, 200, 50]
    assert pages[0].cursor == ReadCursor(datetime.fromisoformat(second), 1199, None).encode()
    assert pages[-1].cursor == f"{AFTER_READ}||{AFTER_READ}"


def test_an_idle_read_within_the_interval_is_one_query_and_keeps_the_deletion_mark(
    zoho: ZohoConnector,
) -> None:
    coql = respx.post(f"{API}/coql").respond(204, headers={"Date": SERVER_DATE})
    deleted = respx.get(f"{API}/Leads/deleted").respond(304)
    marked = datetime(2024, 5, 1, 11, 30, tzinfo=UTC)  # half an hour before the read
    pages = list(zoho.read_changes(ReadCursor(marked, None, marked).encode()))
    assert pages == [Page([], f"{AFTER_READ}||{marked.isoformat()}", ())]
    assert (coql.call_count, deleted.call_count) == (1, 0)


def test_a_read_that_finds_changes_reads_the_deletions_within_the_interval(
    zoho: ZohoConnector,
) -> None:
    respx.post(f"{API}/coql").mock(side_effect=keyset_pages(3))
    deleted = respx.get(f"{API}/Leads/deleted").respond(304)
    marked = datetime(2024, 5, 1, 11, 30, tzinfo=UTC)
    pages = list(zoho.read_changes(ReadCursor(marked, None, marked).encode()))
    assert deleted.call_count == 1
    assert pages[-1].cursor == f"{AFTER_READ}||{AFTER_READ}"


@pytest.mark.parametrize("every", [0.0, 60.0])
def test_an_idle_read_once_the_interval_passed_reads_the_deletions(
    zoho: ZohoConnector, every: float
) -> None:
    zoho.deletions_every_s = every
    respx.post(f"{API}/coql").respond(204, headers={"Date": SERVER_DATE})
    deleted = respx.get(f"{API}/Leads/deleted").respond(304)
    marked = datetime(2024, 5, 1, 11, 30, tzinfo=UTC)
    list(zoho.read_changes(ReadCursor(marked, None, marked).encode()))
    assert deleted.call_count == 1


def test_an_idle_read_an_hour_after_the_last_deletion_read_reads_them_and_moves_the_cursor(
    zoho: ZohoConnector,
) -> None:
    coql = respx.post(f"{API}/coql").respond(204, headers={"Date": SERVER_DATE})
    deleted = respx.get(f"{API}/Leads/deleted").respond(304)
    cursor = ReadCursor(datetime(2024, 4, 1, tzinfo=UTC), None, datetime(2024, 4, 1, tzinfo=UTC))
    pages = list(zoho.read_changes(cursor.encode()))
    assert pages == [Page([], f"{AFTER_READ}||{AFTER_READ}", ())]
    assert (coql.call_count, deleted.call_count) == (1, 1)
    assert "where Modified_Time >= '2024-04-01T00:00:00+00:00' order by" in select_query(
        coql.calls.last.request
    )
    headers = deleted.calls.last.request.headers
    assert headers["If-Modified-Since"] == "2024-04-01T00:00:00+00:00"


def test_deletions_of_every_page_come_on_the_last_page(zoho: ZohoConnector) -> None:
    respx.post(f"{API}/coql").mock(side_effect=keyset_pages(250))

    def deleted(request: httpx.Request) -> httpx.Response:
        page = int(query(request)["page"])
        assert query(request)["type"] == "all"
        entry = {"id": f"90{page}", "deleted_time": "2024-05-01T11:00:00+05:30", "type": "recycle"}
        return httpx.Response(200, json={"data": [entry], "info": {"more_records": page < 2}})

    respx.get(f"{API}/Leads/deleted").mock(side_effect=deleted)
    pages = list(zoho.read_changes(None))
    assert [page.deleted for page in pages[:-1]] == [()]
    at = datetime(2024, 5, 1, 5, 30, tzinfo=UTC)
    assert pages[-1].deleted == (Deletion("901", None, at), Deletion("902", None, at))


def test_deletions_before_the_cursor_are_not_reported_again(zoho: ZohoConnector) -> None:
    respx.post(f"{API}/coql").respond(204, headers={"Date": SERVER_DATE})
    old = {"id": "901", "deleted_time": "2024-04-30T00:00:00+00:00"}
    respx.get(f"{API}/Leads/deleted").respond(
        200, json={"data": [old], "info": {"more_records": False}}
    )
    since = datetime(2024, 5, 1, tzinfo=UTC)
    [page] = zoho.read_changes(ReadCursor(since, None, since).encode())
    assert page.deleted == ()


@pytest.mark.parametrize(
    ("cursor", "condition"),
    [
        (None, "id is not null"),
        (
            ReadCursor(datetime(2024, 5, 1, tzinfo=UTC)),
            "Modified_Time >= '2024-05-01T00:00:00+00:00'",
        ),
        (
            ReadCursor(datetime(2024, 5, 1, tzinfo=UTC), 42),
            "(Modified_Time > '2024-05-01T00:00:00+00:00') or "
            "((Modified_Time = '2024-05-01T00:00:00+00:00') and (id > 42))",
        ),
    ],
)
def test_keyset_conditions(cursor: ReadCursor | None, condition: str) -> None:
    assert keyset_condition(cursor) == condition


@pytest.mark.parametrize(
    "cursor",
    [
        ReadCursor(),
        ReadCursor(datetime(2024, 5, 1, 17, 30, tzinfo=UTC), 99, None),
        ReadCursor(datetime(2024, 5, 1, tzinfo=UTC), None, datetime(2024, 5, 2, tzinfo=UTC)),
        ReadCursor(None, None, None, datetime(2024, 5, 3, tzinfo=UTC), 7),
        ReadCursor(
            datetime(2024, 5, 1, tzinfo=UTC), 4, None, datetime(2024, 5, 3, tzinfo=UTC), None
        ),
        ReadCursor(None, None, None, None, None, datetime(2024, 5, 4, tzinfo=UTC), 8),
        ReadCursor(
            datetime(2024, 5, 1, tzinfo=UTC),
            None,
            datetime(2024, 5, 1, tzinfo=UTC),
            datetime(2024, 5, 2, tzinfo=UTC),
            3,
            datetime(2024, 5, 4, tzinfo=UTC),
            None,
        ),
    ],
)
def test_cursor_round_trips(cursor: ReadCursor) -> None:
    decoded = ReadCursor.decode(cursor.encode())
    if cursor.contacts_modified is None and cursor.contacts_after_id is None:
        # Without Contacts parts the Contacts are read from the Leads' position.
        cursor = replace(cursor, contacts_modified=cursor.modified)
    assert decoded == cursor


def test_a_wave_1_cursor_resumes_from_its_second() -> None:
    moment = datetime(2024, 5, 1, 17, 30, tzinfo=UTC)
    assert ReadCursor.decode("2024-05-01T17:30:00+00:00|99") == ReadCursor(
        moment, None, moment, contacts_modified=moment
    )


def test_a_cursor_from_before_contacts_were_followed_reads_them_from_the_leads_position() -> None:
    moment = datetime(2024, 5, 1, tzinfo=UTC)
    cursor = ReadCursor.decode(ReadCursor(moment, None, moment, moment, 5).encode())
    assert (cursor.contacts_modified, cursor.contacts_after_id) == (moment, None)


def test_a_cursor_from_before_deals_were_read_reads_every_deal() -> None:
    moment = datetime(2024, 5, 1, tzinfo=UTC)
    cursor = ReadCursor.decode(ReadCursor(moment, None, moment).encode())
    assert (cursor.deals_modified, cursor.deals_after_id) == (None, None)


@pytest.mark.parametrize(
    "text",
    ["yesterday", "2024-05-01T00:00:00+00:00|x|", "a|b|c|d", "|1|no", "||||x", "|||then|"],
)
def test_a_garbled_cursor_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="not a Zoho read cursor"):
        ReadCursor.decode(text)


def test_more_than_50_read_fields_are_refused() -> None:
    settings = ZohoConnection.model_validate(
        {
            "kind": "zoho",
            "client_id": "c",
            "client_secret": "s-000000",
            "refresh_token": "r-000000",
        }
    )
    with pytest.raises(ValueError, match="at most 50"):
        ZohoConnector(settings, "z", read_fields=[f"F{n}" for n in range(51)])


# -- lookup and escaping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain@example.com", "plain@example.com"),
        ("a(b)@example.com", "a\\(b\\)@example.com"),
        ("x,y@example.com", "x\\,y@example.com"),
        ("back\\slash@example.com", "back\\\\slash@example.com"),
        ("o'brien@example.com", "o'brien@example.com"),
    ],
)
def test_criteria_values_escape_parentheses_commas_and_backslashes(
    value: str, escaped: str
) -> None:
    assert criteria_value(value) == escaped


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("o'brien@example.com", "'o\\'brien@example.com'"),
        ("back\\slash", "'back\\\\slash'"),
        ("a(b),c", "'a(b),c'"),
    ],
)
def test_coql_literals_escape_quotes_and_backslashes(value: str, literal: str) -> None:
    assert coql_literal(value) == literal


def test_criteria_allow_at_most_ten_values() -> None:
    assert equals_any("Email", ["a", "b"]) == "(Email:equals:a)or(Email:equals:b)"
    with pytest.raises(ValueError, match="at most 10"):
        equals_any("Email", [str(n) for n in range(11)])


def test_coql_in_splits_lists_longer_than_50() -> None:
    values = [f"v{n}" for n in range(60)]
    condition = coql_in("Email", values)
    assert condition.startswith("(Email in ('v0', ") and ") or (Email in ('v50'," in condition
    with pytest.raises(ValueError, match="at most 100"):
        coql_in("Email", [str(n) for n in range(101)])


def test_coql_select_refuses_names_that_are_not_api_names() -> None:
    with pytest.raises(ValueError, match="not a Zoho API name"):
        coql_select(["Email from Leads; --"], "Leads", "id = '1'")


def test_a_single_email_is_looked_up_by_escaped_search_criteria(zoho: ZohoConnector) -> None:
    email = "O'Brien(x),y\\z@example.com"
    row = {"id": "5", "Email": email.lower()}
    route = respx.get(f"{API}/Leads/search").respond(200, json={"data": [row], "info": {}})
    found = zoho.lookup(emails=[email])
    assert found == {email.lower(): row}
    criteria = query(route.calls.last.request)["criteria"]
    assert criteria == "(Email:equals:o'brien\\(x\\)\\,y\\\\z@example.com)"


def test_several_emails_are_one_coql_query_with_escaped_literals(zoho: ZohoConnector) -> None:
    emails = ["o'neil@example.com", "a(b)@example.com", "c\\d@example.com"]
    route = respx.post(f"{API}/coql").respond(
        200,
        json={
            "data": [
                {"id": "12", "Email": "O'Neil@example.com"},
                {"id": "11", "Email": "o'neil@example.com"},
            ],
            "info": {"more_records": False},
        },
    )
    found = zoho.lookup(emails=emails)
    assert route.call_count == 1
    sent = json.loads(route.calls.last.request.content)["select_query"]
    assert sent == (
        "select Email, Last_Name, Modified_Time, Company from Leads where Email in "
        "('o\\'neil@example.com', 'a(b)@example.com', 'c\\\\d@example.com') "
        "order by id asc limit 200 offset 0"
    )
    # Two Leads share the email: the oldest one (the one upsert updates) is returned.
    assert list(found) == ["o'neil@example.com"] and found["o'neil@example.com"]["id"] == "11"


def test_no_match_is_an_empty_result(zoho: ZohoConnector) -> None:
    respx.post(f"{API}/coql").respond(204)
    respx.get(f"{API}/Leads/search").respond(204)
    assert zoho.lookup(emails=["a@example.com", "b@example.com"]) == {}
    assert zoho.lookup(emails=["a@example.com"]) == {}


def test_lookup_makes_one_call_per_100_emails_and_counts_coql_credits(
    zoho: ZohoConnector,
) -> None:
    route = respx.post(f"{API}/coql").respond(204)
    zoho.lookup(emails=[f"p{n}@example.com" for n in range(150)])
    assert route.call_count == 2
    assert zoho.credits_used == 2
    assert [coql_credits(n) for n in (200, 201, 1000, 2000)] == [1, 2, 2, 3]


def test_lookup_by_ids_is_one_get_per_100_ids(zoho: ZohoConnector) -> None:
    route = respx.get(f"{API}/Leads").respond(
        200, json={"data": [{"id": "1", "Email": "x@example.com"}]}
    )
    found = zoho.lookup(ids=["1", "2"])
    assert list(found) == ["1"]
    assert query(route.calls.last.request)["ids"] == "1,2"


def test_an_unknown_coql_column_is_dropped_and_asked_again(zoho: ZohoConnector) -> None:
    unknown = httpx.Response(
        400,
        json={
            "code": "INVALID_QUERY",
            "details": {"column_name": "Company", "line": 1},
            "message": "invalid column given",
            "status": "error",
        },
    )
    route = respx.post(f"{API}/coql").mock(side_effect=[unknown, httpx.Response(204)])
    assert zoho.lookup(emails=["a@example.com", "b@example.com"]) == {}
    again = json.loads(route.calls.last.request.content)["select_query"]
    assert again.startswith("select Email, Last_Name, Modified_Time from Leads")


# -- writes --------------------------------------------------------------------------------


def success(action: str, record_id: str) -> dict[str, Any]:
    return {
        "code": "SUCCESS",
        "action": action,
        "duplicate_field": "Email" if action == "update" else None,
        "details": {"id": record_id, "Modified_Time": "2024-01-01T00:00:00+00:00"},
        "message": "record added",
        "status": "success",
    }


def failure(code: str, field: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "code": code,
        "details": {"api_name": field, "json_path": f"$.data[0].{field}", **details},
        "message": message,
        "status": "error",
    }


def test_per_record_codes_map_to_results_in_input_order(zoho: ZohoConnector) -> None:
    body = {
        "data": [
            success("insert", "1"),
            success("update", "2"),
            failure(
                "DUPLICATE_DATA", "LeadRelay_Key", "duplicate data", duplicate_record={"id": "9"}
            ),
            failure("INVALID_DATA", "Email", "invalid data", expected_data_type="email"),
            failure("MANDATORY_NOT_FOUND", "Last_Name", "required field not found"),
        ]
    }
    route = respx.post(f"{API}/Leads/upsert").respond(207, json=body)
    inputs = [UpsertInput(f"r{n}", {"Email": f"r{n}@example.com"}) for n in range(5)]
    results = zoho.upsert(inputs)
    assert [(r.ref, r.outcome, r.external_id) for r in results] == [
        ("r0", WriteOutcome.CREATED, "1"),
        ("r1", WriteOutcome.UPDATED, "2"),
        ("r2", WriteOutcome.FAILED, "9"),
        ("r3", WriteOutcome.FAILED, None),
        ("r4", WriteOutcome.FAILED, None),
    ]
    errors = [r.error for r in results[2:]]
    assert [(e.field, e.code, e.record) for e in errors if e] == [
        ("LeadRelay_Key", "DUPLICATE_DATA", "r2"),
        ("Email", "INVALID_DATA", "r3"),
        ("Last_Name", "MANDATORY_NOT_FOUND", "r4"),
    ]
    assert errors[0] is not None and errors[0].message == "duplicate data (duplicate_record: 9)"
    assert errors[1] is not None and "expected_data_type: email" in errors[1].message
    sent = json.loads(route.calls.last.request.content)
    assert sent["duplicate_check_fields"] == ["Email"] and sent["trigger"] == []


def test_a_400_with_every_record_refused_fails_each_record(zoho: ZohoConnector) -> None:
    body = {"data": [failure("INVALID_DATA", "Email", "invalid data")] * 2}
    respx.post(f"{API}/Leads/upsert").respond(400, json=body)
    results = zoho.upsert([UpsertInput(f"r{n}", {"Email": f"r{n}@x.io"}) for n in range(2)])
    assert [r.outcome for r in results] == [WriteOutcome.FAILED] * 2
    assert all(isinstance(r.error, Rejected) and r.error.status == 400 for r in results)


def test_a_whole_call_400_raises(zoho: ZohoConnector) -> None:
    body = {"code": "INVALID_DATA", "details": {"api_name": "data"}, "message": "invalid data"}
    respx.post(f"{API}/Leads/upsert").respond(400, json=body)
    with pytest.raises(Rejected, match="invalid data"):
        zoho.upsert([UpsertInput("r", {"Email": "r@x.io"})])


def test_upsert_sends_100_records_per_call(zoho: ZohoConnector) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        data = json.loads(request.content)["data"]
        return httpx.Response(200, json={"data": [success("insert", "1") for _ in data]})

    route = respx.post(f"{API}/Leads/upsert").mock(side_effect=answer)
    results = zoho.upsert([UpsertInput(str(n), {"Email": f"{n}@x.io"}) for n in range(250)])
    sizes = [len(json.loads(call.request.content)["data"]) for call in route.calls]
    assert sizes == [100, 100, 50] and len(results) == 250


def test_an_input_without_email_fails_alone(zoho: ZohoConnector) -> None:
    route = respx.post(f"{API}/Leads/upsert").respond(200, json={"data": [success("insert", "1")]})
    results = zoho.upsert(
        [UpsertInput("none", {"Last_Name": "X"}), UpsertInput("ok", {"Email": "ok@x.io"})]
    )
    assert [r.outcome for r in results] == [WriteOutcome.FAILED, WriteOutcome.CREATED]
    assert results[0].error is not None and results[0].error.field == "Email"
    assert len(json.loads(route.calls.last.request.content)["data"]) == 1


def test_an_ambiguous_upsert_failure_is_retried(zoho: ZohoConnector) -> None:
    route = respx.post(f"{API}/Leads/upsert").mock(
        side_effect=[
            httpx.ReadTimeout("timed out"),
            httpx.Response(200, json={"data": [success("update", "1")]}),
        ]
    )
    results = zoho.upsert([UpsertInput("r", {"Email": "r@x.io"})])
    assert route.call_count == 2 and results[0].outcome is WriteOutcome.UPDATED


def test_too_many_requests_is_retried_then_raised(zoho: ZohoConnector) -> None:
    busy = httpx.Response(
        429, json={"code": "TOO_MANY_REQUESTS", "details": {}, "message": "API limit"}
    )
    route = respx.get(f"{API}/settings/fields").mock(return_value=busy)
    with pytest.raises(RateLimited):
        zoho.describe()
    assert route.call_count == FAST.max_attempts


def test_update_and_delete_map_results_by_id(zoho: ZohoConnector) -> None:
    put = respx.put(f"{API}/Leads").respond(
        207, json={"data": [success("", "1"), failure("INVALID_DATA", "id", "the id given")]}
    )
    updated = zoho.update({"1": {"Last_Name": "A"}, "2": {"Last_Name": "B"}})
    assert [(r.ref, r.outcome) for r in updated] == [
        ("1", WriteOutcome.UPDATED),
        ("2", WriteOutcome.FAILED),
    ]
    assert json.loads(put.calls.last.request.content)["data"][1] == {"Last_Name": "B", "id": "2"}
    gone = {"code": "INVALID_DATA", "details": {"id": "4"}, "message": "the id given"}
    delete = respx.delete(f"{API}/Leads").respond(207, json={"data": [success("", "3"), gone]})
    deleted = zoho.delete(["3", "4"])
    assert [(r.ref, r.ok) for r in deleted] == [("3", True), ("4", True)]
    assert deleted[1].outcome is WriteOutcome.UNCHANGED
    assert query(delete.calls.last.request)["ids"] == "3,4"


# -- describe ------------------------------------------------------------------------------


def test_describe_reads_picklists_and_system_mandatory(zoho: ZohoConnector) -> None:
    fields = [
        {
            "api_name": "Last_Name",
            "field_label": "Last Name",
            "data_type": "text",
            "system_mandatory": True,
        },
        {
            "api_name": "Lead_Status",
            "field_label": "Lead Status",
            "data_type": "picklist",
            "system_mandatory": False,
            "pick_list_values": [
                {"display_value": "Contacted (shown)", "actual_value": "Contacted"},
                {"display_value": "-None-", "actual_value": "-None-"},
            ],
        },
        {"api_name": "Tags", "data_type": "multiselectpicklist", "pick_list_values": []},
        {"api_name": "Created_Time", "data_type": "datetime", "read_only": True},
        {"api_name": "LeadRelay_Key", "data_type": "text", "unique": {"casesensitive": False}},
    ]
    respx.get(f"{API}/settings/fields").respond(200, json={"fields": fields})
    schema = zoho.describe()
    assert schema.required == ("Last_Name",)
    assert schema.field("Lead_Status").picklist_values == ("Contacted", "-None-")
    assert schema.field("Tags").multi_select
    assert schema.field("Created_Time").read_only and schema.field("LeadRelay_Key").unique


# -- handoff -------------------------------------------------------------------------------


def created_task(task_id: str) -> dict[str, Any]:
    return {"code": "SUCCESS", "details": {"id": task_id}, "message": "record added"}


def test_create_task_sends_zohos_task_shape(zoho: ZohoConnector) -> None:
    respx.get(f"{API}/Leads/42").respond(200, json={"data": [{"id": "42", "Owner": {"id": "7"}}]})
    route = respx.post(f"{API}/Tasks").respond(201, json={"data": [created_task("99")]})
    due = datetime(2024, 6, 3, 22, 0, tzinfo=timezone(timedelta(hours=-4)))
    assert zoho.create_task("42", "Call", "Body", due) == "99"
    assert json.loads(route.calls.last.request.content)["data"] == [
        {
            "Subject": "Call",
            "Description": "Body",
            "Due_Date": "2024-06-04",
            "Status": "Not Started",
            "Priority": "High",
            "What_Id": {"id": "42"},
            "$se_module": "Leads",
            "Owner": {"id": "7"},
        }
    ]


def test_create_task_is_not_retried_after_an_unclear_failure(zoho: ZohoConnector) -> None:
    respx.get(f"{API}/Leads/42").respond(200, json={"data": [{"id": "42", "Owner": {"id": "7"}}]})
    route = respx.post(f"{API}/Tasks").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ConnectorError):
        zoho.create_task("42", "Call", "Body", datetime(2024, 6, 3, tzinfo=UTC))
    assert route.call_count == 1


def test_a_refused_task_raises_rejected_naming_the_field(zoho: ZohoConnector) -> None:
    respx.get(f"{API}/Leads/42").respond(200, json={"data": [{"id": "42"}]})
    refusal = {
        "code": "INVALID_DATA",
        "details": {"api_name": "Priority", "json_path": "$.data[0].Priority"},
        "message": "invalid data",
        "status": "error",
    }
    respx.post(f"{API}/Tasks").respond(400, json={"data": [refusal]})
    with pytest.raises(Rejected) as caught:
        zoho.create_task("42", "Call", "Body", datetime(2024, 6, 3, tzinfo=UTC))
    assert (caught.value.record, caught.value.field) == ("42", "Priority")


# -- cassettes -----------------------------------------------------------------------------

_TOKEN_HEADER = re.compile(r"(?:Zoho-oauthtoken|Bearer) +(?!\*\*\*|<|REDACTED|PLACEHOLDER)\S{8,}")


def test_no_cassette_holds_a_zoho_credential() -> None:
    leaks = []
    for path in sorted(CASSETTES.rglob("*.y*ml")) if CASSETTES.is_dir() else []:
        text = path.read_text(encoding="utf-8", errors="replace")
        for secret in (SANDBOX_CLIENT_SECRET, SANDBOX_REFRESH_TOKEN):
            if secret in text:
                leaks.append(f"{path.name}: a Zoho credential")
        if _TOKEN_HEADER.search(text) or re.search(r"1000\.[0-9a-f]{16,}\.[0-9a-f]{16,}", text):
            leaks.append(f"{path.name}: an access token")
    assert leaks == []


MAY = datetime(2024, 5, 1, tzinfo=UTC)
JUNE = datetime(2024, 6, 1, tzinfo=UTC)
JULY = datetime(2024, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("earlier", "later", "covers"),
    [
        (ReadCursor(MAY, None, MAY), ReadCursor(JUNE, None, JUNE), True),
        (ReadCursor(MAY, None, MAY), ReadCursor(MAY, None, MAY), True),
        (ReadCursor(None, None, None), ReadCursor(JUNE, None, JUNE), True),  # read everything
        (ReadCursor(JUNE, None, MAY), ReadCursor(MAY, None, JUNE), False),  # later is behind
        (ReadCursor(MAY, None, JUNE), ReadCursor(JUNE, None, MAY), False),  # deletions behind
        (ReadCursor(MAY, 42, MAY), ReadCursor(JUNE, None, JUNE), False),  # a read under way
        (
            ReadCursor(MAY, None, MAY, deals_modified=JUNE),
            ReadCursor(JUNE, None, JUNE, deals_modified=MAY),
            False,
        ),
    ],
)
def test_an_empty_read_answers_a_read_from_a_cursor_at_or_after_its_own(
    zoho: ZohoConnector, earlier: ReadCursor, later: ReadCursor, covers: bool
) -> None:
    end = ReadCursor(JULY, None, JULY).encode()
    answer = zoho.answer_read(earlier.encode(), end, later.encode(), age_s=0)
    assert answer == (end if covers else None)


# -- the composite read ------------------------------------------------------------------


@pytest.fixture
def composite_zoho(zoho: ZohoConnector) -> ZohoConnector:
    """The connector as it reads by default: a composite call first, Contacts followed."""
    zoho.composite_reads = True
    zoho.follow_contacts = True
    zoho.contact_fields = {"Email": "Email", "Last_Name": "Last_Name"}
    return zoho


def sub(status: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = {"headers": {}, "status_code": status, "body": body or {}}
    return {
        "code": "SUCCESS",
        "details": {"response": response},
        "message": "composite sub request executed successfully",
        "status": "success",
    }


def test_a_composite_read_sends_a_keyset_query_per_module_and_the_deleted_list(
    composite_zoho: ZohoConnector,
) -> None:
    route = respx.post(f"{API}/__composite_requests").respond(
        200,
        json={"__composite_requests": [sub(204), sub(204), sub(304)]},
        headers={"Date": SERVER_DATE},
    )
    marked = datetime(2024, 5, 1, 11, 30, tzinfo=UTC)
    pages = list(composite_zoho.read_changes(ReadCursor(marked, None, marked).encode()))
    assert route.call_count == 1
    subs = json.loads(route.calls.last.request.content)["__composite_requests"]
    assert [(s["sub_request_id"], s["method"], s["uri"]) for s in subs] == [
        ("leads", "POST", "/crm/v7/coql"),
        ("contacts", "POST", "/crm/v7/coql"),
        ("deleted", "GET", "/crm/v7/Leads/deleted"),
    ]
    assert subs[0]["body"]["select_query"].endswith(
        "where Modified_Time >= '2024-05-01T11:30:00+00:00' "
        "order by Modified_Time asc, id asc limit 25 offset 0"
    )
    assert (
        " from Contacts where Modified_Time >= '2024-05-01T11:30:00+00:00'"
        in (subs[1]["body"]["select_query"])
    )
    assert subs[2]["params"] == {"type": "all", "page": "1", "per_page": "25"}
    assert subs[2]["headers"] == {"If-Modified-Since": "2024-05-01T11:30:00+00:00"}
    # Every watermark moves, the deletions' too: the composite call read them.
    after = datetime.fromisoformat(AFTER_READ)
    expected = ReadCursor(after, None, after, contacts_modified=after)
    assert pages == [Page([], expected.encode(), ())]


def test_a_full_first_page_goes_on_with_coql_pages_of_200(
    composite_zoho: ZohoConnector,
) -> None:
    first = [lead(n) for n in range(25)]
    respx.post(f"{API}/__composite_requests").respond(
        200,
        json={
            "__composite_requests": [
                sub(200, {"data": first, "info": {"count": 25, "more_records": True}}),
                sub(204),
                sub(204),
            ]
        },
        headers={"Date": SERVER_DATE},
    )
    coql = respx.post(f"{API}/coql").mock(side_effect=keyset_pages(30))
    records = [r for page in composite_zoho.read_changes(None) for r in page.records]
    assert [r["id"] for r in records] == [str(1000 + n) for n in range(30)]
    assert coql.call_count == 1
    assert "(id > 1024)" in select_query(coql.calls.last.request)
    assert "limit 200" in select_query(coql.calls.last.request)


def test_a_sub_request_that_fails_is_read_directly(composite_zoho: ZohoConnector) -> None:
    refused = {"code": "LIMIT_EXCEEDED", "details": {"by": "limit", "limit": 25}}
    respx.post(f"{API}/__composite_requests").respond(
        200,
        json={"__composite_requests": [sub(400, refused), sub(204), sub(204)]},
        headers={"Date": SERVER_DATE},
    )
    coql = respx.post(f"{API}/coql").mock(side_effect=keyset_pages(3))
    records = [r for page in composite_zoho.read_changes(None) for r in page.records]
    assert (len(records), coql.call_count) == (3, 1)


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "NOT_SUPPORTED"), (401, "OAUTH_SCOPE_MISMATCH"), (403, "NO_PERMISSION")],
)
def test_an_org_that_refuses_the_composite_call_is_read_a_call_per_module(
    composite_zoho: ZohoConnector, status: int, code: str
) -> None:
    body = {"code": code, "details": {}, "message": "refused", "status": "error"}
    composite = respx.post(f"{API}/__composite_requests").respond(status, json=body)
    coql = respx.post(f"{API}/coql").respond(204, headers={"Date": SERVER_DATE})
    deleted = respx.get(f"{API}/Leads/deleted").respond(204)
    list(composite_zoho.read_changes(None))
    list(composite_zoho.read_changes(None))
    # Asked once (twice for a 401: the token is refreshed and the call sent again), then not.
    assert composite.call_count == (2 if status == 401 else 1)
    assert composite_zoho.composite_reads is False
    assert (coql.call_count, deleted.call_count) == (4, 2)


def test_a_refused_composite_call_is_not_asked_again_by_another_process_of_the_grant(
    composite_zoho: ZohoConnector,
) -> None:
    body = {"code": "NOT_SUPPORTED", "details": {}, "message": "refused", "status": "error"}
    composite = respx.post(f"{API}/__composite_requests").respond(400, json=body)
    respx.post(f"{API}/coql").respond(204, headers={"Date": SERVER_DATE})
    respx.get(f"{API}/Leads/deleted").respond(204)
    list(composite_zoho.read_changes(None))
    # A later run: a new connector sharing the credential cache (the state store's, in a
    # project), which still reads by default with the composite call.
    with ZohoConnector(composite_zoho.settings, "zoho", retry=FAST, sleep=lambda s: None) as later:
        list(later.read_changes(None))
    assert composite.call_count == 1
