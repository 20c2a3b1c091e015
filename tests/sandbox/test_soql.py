"""The SOQL subset of the Salesforce emulator: tokenizer, parser, binding and evaluation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from leadrelay.sandbox.salesforce import soql
from leadrelay.sandbox.salesforce.schema import SObjectDef, default_schema, make_id

SCHEMA = default_schema()
OWNER = make_id("005", 1)
USERS = {OWNER: {"Id": OWNER, "Email": "owner@example.com", "IsActive": True}}


def _resolve(sobject: str, record_id: Any) -> dict[str, Any] | None:
    return USERS.get(record_id) if sobject == "User" else None


def _leads() -> list[dict[str, Any]]:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        ("ana@example.com", "Silva", "Web", 10, True, "it's"),
        ("BEN@example.com", "Okafor", "Other", None, False, 'say "hi"'),
        ("chen@example.org", "Wei", None, 250, False, "50% off"),
        ("dana_k@example.com", "Kowalski", "Web", 40, False, "back\\slash"),
        (None, "Nomail", "Phone Inquiry", 5, False, "line\nbreak"),
    ]
    return [
        {
            "Id": make_id("00Q", n + 1),
            "Email": email,
            "LastName": last,
            "LeadSource": source,
            "NumberOfEmployees": employees,
            "IsConverted": converted,
            "Title": title,
            "OwnerId": OWNER,
            "SystemModstamp": base + timedelta(hours=n),
            "CreatedDate": base + timedelta(hours=n),
            "ConvertedDate": date(2024, 1, 1 + n),
            "IsDeleted": False,
        }
        for n, (email, last, source, employees, converted, title) in enumerate(rows)
    ]


def _run(text: str) -> list[str]:
    bound = soql.compile_query(text, SCHEMA, _resolve)
    rows = bound.order([r for r in _leads() if bound.matches(r)])
    return [str(r["LastName"]) for r in rows]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT Id FROM Lead", ["Silva", "Okafor", "Wei", "Kowalski", "Nomail"]),
        ("select id from lead where email = 'ANA@EXAMPLE.COM'", ["Silva"]),
        (
            "SELECT Id FROM Lead WHERE Email != 'ana@example.com'",
            ["Okafor", "Wei", "Kowalski", "Nomail"],
        ),
        ("SELECT Id FROM Lead WHERE Email <> null", ["Silva", "Okafor", "Wei", "Kowalski"]),
        ("SELECT Id FROM Lead WHERE Email = null", ["Nomail"]),
        ("SELECT Id FROM Lead WHERE NumberOfEmployees > 10", ["Wei", "Kowalski"]),
        ("SELECT Id FROM Lead WHERE NumberOfEmployees >= 10", ["Silva", "Wei", "Kowalski"]),
        ("SELECT Id FROM Lead WHERE NumberOfEmployees < 10", ["Nomail"]),
        ("SELECT Id FROM Lead WHERE NumberOfEmployees <= 10.5", ["Silva", "Nomail"]),
        (
            "SELECT Id FROM Lead WHERE LeadSource IN ('web', 'Other')",
            ["Silva", "Okafor", "Kowalski"],
        ),
        ("SELECT Id FROM Lead WHERE LeadSource NOT IN ('Web')", ["Okafor", "Wei", "Nomail"]),
        ("SELECT Id FROM Lead WHERE Email LIKE '%example.com'", ["Silva", "Okafor", "Kowalski"]),
        ("SELECT Id FROM Lead WHERE Email LIKE '___@%'", ["Silva", "Okafor"]),
        ("SELECT Id FROM Lead WHERE Email LIKE 'dana\\_%'", ["Kowalski"]),
        ("SELECT Id FROM Lead WHERE Title LIKE '50\\% off'", ["Wei"]),
        ("SELECT Id FROM Lead WHERE Title = 'it\\'s'", ["Silva"]),
        ("SELECT Id FROM Lead WHERE Title = 'say \\\"hi\\\"'", ["Okafor"]),
        ("SELECT Id FROM Lead WHERE Title = 'back\\\\slash'", ["Kowalski"]),
        ("SELECT Id FROM Lead WHERE Title = 'line\\nbreak'", ["Nomail"]),
        ("SELECT Id FROM Lead WHERE Title = '\\u0069t\\'s'", ["Silva"]),
        ("SELECT Id FROM Lead WHERE IsConverted = true", ["Silva"]),
        ("SELECT Id FROM Lead WHERE NOT IsConverted = false", ["Silva"]),
        (
            "SELECT Id FROM Lead WHERE LeadSource = 'Web' "
            "AND (NumberOfEmployees > 20 OR Email LIKE 'ana%')",
            ["Silva", "Kowalski"],
        ),
        (
            "SELECT Id FROM Lead WHERE (LeadSource = 'Other' OR LeadSource = null) "
            "AND NumberOfEmployees = null",
            ["Okafor"],
        ),
        (
            "SELECT Id FROM Lead WHERE SystemModstamp > 2024-01-01T01:00:00Z",
            ["Wei", "Kowalski", "Nomail"],
        ),
        (
            "SELECT Id FROM Lead WHERE SystemModstamp >= 2024-01-01T03:00:00+02:00",
            ["Okafor", "Wei", "Kowalski", "Nomail"],
        ),
        ("SELECT Id FROM Lead WHERE CreatedDate < 2024-01-01T00:30:00.000Z", ["Silva"]),
        ("SELECT Id FROM Lead WHERE ConvertedDate >= 2024-01-04", ["Kowalski", "Nomail"]),
        ("SELECT Id FROM Lead WHERE Owner.Email = 'owner@example.com' LIMIT 1", ["Silva"]),
        ("SELECT Id FROM Lead ORDER BY LastName", ["Kowalski", "Nomail", "Okafor", "Silva", "Wei"]),
        (
            "SELECT Id FROM Lead ORDER BY Email DESC",
            ["Kowalski", "Wei", "Okafor", "Silva", "Nomail"],
        ),
        (
            "SELECT Id FROM Lead ORDER BY Email DESC NULLS FIRST",
            ["Nomail", "Kowalski", "Wei", "Okafor", "Silva"],
        ),
        (
            "SELECT Id FROM Lead ORDER BY NumberOfEmployees ASC NULLS LAST",
            ["Nomail", "Silva", "Kowalski", "Wei", "Okafor"],
        ),
        (
            "SELECT Id FROM Lead ORDER BY LeadSource, LastName DESC",
            ["Wei", "Okafor", "Nomail", "Silva", "Kowalski"],
        ),
        ("SELECT Id FROM Lead ORDER BY SystemModstamp DESC LIMIT 2 OFFSET 1", ["Kowalski", "Wei"]),
    ],
)
def test_valid_queries_select_the_right_rows(text: str, expected: list[str]) -> None:
    assert _run(text) == expected


@pytest.mark.parametrize(
    ("text", "code", "detail"),
    [
        ("", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT FROM Lead", "MALFORMED_QUERY", "unexpected token: 'FROM'"),
        ("SELECT Id Lead", "MALFORMED_QUERY", "unexpected token: 'Lead'"),
        ("SELECT * FROM Lead", "MALFORMED_QUERY", "unexpected token: '*'"),
        ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT Id FROM Lead WHERE Email = ", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        (
            "SELECT Id FROM Lead WHERE Email = 'x' AND Title = 'y' OR LastName = 'z'",
            "MALFORMED_QUERY",
            "unexpected token: 'OR'",
        ),
        ('SELECT Id FROM Lead WHERE Email = "x"', "MALFORMED_QUERY", "unexpected token: '\"x\"'"),
        ("SELECT Id FROM Lead WHERE Email = 'open", "MALFORMED_QUERY", "unexpected token"),
        (
            "SELECT Id FROM Lead WHERE Email = 'a\\qb'",
            "MALFORMED_QUERY",
            "Illegal character sequence '\\q'",
        ),
        (
            "SELECT Id FROM Lead WHERE Email = 'a\\%b'",
            "MALFORMED_QUERY",
            "Illegal character sequence '\\%'",
        ),
        (
            "SELECT Id FROM Lead WHERE Email = 'a\\u12'",
            "MALFORMED_QUERY",
            "Illegal character sequence '\\u'",
        ),
        ("SELECT Id FROM Lead WHERE Email IN ()", "MALFORMED_QUERY", "unexpected token: ')'"),
        ("SELECT Id FROM Lead ORDER BY", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT Id FROM Lead LIMIT ten", "MALFORMED_QUERY", "unexpected token: 'ten'"),
        ("SELECT Id FROM Lead LIMIT 5 extra", "MALFORMED_QUERY", "unexpected token: 'extra'"),
        ("SELECT Id, Id FROM Lead", "MALFORMED_QUERY", "duplicate field selected: Id"),
        (
            "SELECT Id FROM Lead OFFSET 2001",
            "NUMBER_OUTSIDE_VALID_RANGE",
            "Maximum SOQL offset allowed is 2000",
        ),
        ("SELECT Foo FROM Lead", "INVALID_FIELD", "No such column 'Foo' on entity 'Lead'"),
        ("SELECT Id FROM Lead WHERE Foo__c = 'x'", "INVALID_FIELD", "No such column 'Foo__c'"),
        ("SELECT Boss.Email FROM Lead", "INVALID_FIELD", "Didn't understand relationship 'Boss'"),
        ("SELECT Id FROM Widget", "INVALID_TYPE", "sObject type 'Widget' is not supported"),
        (
            "SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
            "INVALID_FIELD",
            "must be of type dateTime and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Lead WHERE CreatedDate > 2024-01-01",
            "INVALID_FIELD",
            "must be of type dateTime",
        ),
        (
            "SELECT Id FROM Lead WHERE NumberOfEmployees = '5'",
            "INVALID_FIELD",
            "must be of type double",
        ),
        (
            "SELECT Id FROM Lead WHERE Email = 5",
            "INVALID_FIELD",
            "must be of type string and should be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Lead WHERE Id = 'nope'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid ID field: nope",
        ),
        (
            "SELECT Id FROM Lead WHERE NumberOfEmployees LIKE '5%'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "LIKE",
        ),
        ("SELECT Id FROM Lead WHERE Description = 'x'", "INVALID_FIELD", "can not be filtered"),
    ],
)
def test_malformed_queries_raise_salesforce_errors(text: str, code: str, detail: str) -> None:
    with pytest.raises(soql.SoqlError) as exc:
        soql.compile_query(text, SCHEMA, _resolve)
    assert exc.value.error_code == code
    assert detail in exc.value.message


def test_error_message_points_at_row_and_column() -> None:
    with pytest.raises(soql.SoqlError) as exc:
        soql.parse("SELECT Id\nFROM Lead\nWHERE Email = = 'x'")
    assert exc.value.message == (
        "\nWHERE Email = = 'x'\n              ^\nERROR at Row:3:Column:15\nunexpected token: '='"
    )


def test_id_literals_match_15_and_18_character_forms() -> None:
    target = make_id("00Q", 3)
    assert _run(f"SELECT Id FROM Lead WHERE Id = '{target[:15]}'") == ["Wei"]
    assert _run(f"SELECT Id FROM Lead WHERE Id IN ('{target}')") == ["Wei"]


def test_ids_compare_case_sensitively_for_keyset_paging() -> None:
    ids = sorted(make_id("00Q", n) for n in range(1, 200))
    bound = soql.compile_query(
        f"SELECT Id FROM Lead WHERE Id > '{ids[99]}' ORDER BY Id", SCHEMA, _resolve
    )
    rows = bound.order([{"Id": i} for i in reversed(ids) if bound.matches({"Id": i})])
    assert [r["Id"] for r in rows] == ids[100:]


def test_today_literal_is_a_day_range() -> None:
    now = datetime.now(UTC)
    records = [
        {"Id": make_id("00Q", 1), "CreatedDate": now},
        {"Id": make_id("00Q", 2), "CreatedDate": now - timedelta(days=3)},
    ]
    bound = soql.compile_query("SELECT Id FROM Lead WHERE CreatedDate = TODAY", SCHEMA, _resolve)
    assert [r["Id"] for r in records if bound.matches(r)] == [make_id("00Q", 1)]
    last = soql.compile_query(
        "SELECT Id FROM Lead WHERE CreatedDate = LAST_N_DAYS:7", SCHEMA, _resolve
    )
    assert len([r for r in records if last.matches(r)]) == 2


def test_projection_nests_relationship_fields() -> None:
    bound = soql.compile_query("SELECT Email, Owner.Email FROM Lead", SCHEMA, _resolve)
    row = bound.project(_leads()[0], "59.0")
    assert row == {
        "attributes": {
            "type": "Lead",
            "url": f"/services/data/v59.0/sobjects/Lead/{make_id('00Q', 1)}",
        },
        "Email": "ana@example.com",
        "Owner": {
            "attributes": {"type": "User", "url": f"/services/data/v59.0/sobjects/User/{OWNER}"},
            "Email": "owner@example.com",
        },
    }


def test_equality_hints_name_indexed_lookups() -> None:
    bound = soql.compile_query(
        "SELECT Id FROM Lead WHERE Email IN ('a@x.com', 'b@x.com') AND NumberOfEmployees > 5",
        SCHEMA,
        _resolve,
    )
    assert bound.hints == [("Email", frozenset({"a@x.com", "b@x.com"}))]


def test_or_queries_give_no_hints() -> None:
    bound = soql.compile_query(
        "SELECT Id FROM Lead WHERE Email = 'a' OR Title = 'b'", SCHEMA, _resolve
    )
    assert bound.hints == []


def test_removed_field_is_unknown_to_queries() -> None:
    schema: dict[str, SObjectDef] = default_schema()
    schema["Lead"].remove_field("UTM_Source__c")
    with pytest.raises(soql.SoqlError) as exc:
        soql.compile_query("SELECT UTM_Source__c FROM Lead", schema, _resolve)
    assert exc.value.error_code == "INVALID_FIELD"
