"""SOQL literal escaping and IN-list batching (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadrelay.connectors.salesforce.soql import (
    MAX_QUERY_URL_CHARS,
    datetime_literal,
    in_batches,
    quote,
    quote_like,
)
from leadrelay.sandbox.salesforce import soql as emulator_soql


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain@example.com", "'plain@example.com'"),
        ("o'brien@example.com", "'o\\'brien@example.com'"),
        ('say "hi"', "'say \\\"hi\\\"'"),
        ("back\\slash", "'back\\\\slash'"),
        ("100%_off", "'100%_off'"),
        ("two\nlines\r\n", "'two\\nlines\\r\\n'"),
        ("tab\tbell\bform\f", "'tab\\tbell\\bform\\f'"),
        ("nul\x00esc\x1b", "'nul\\u0000esc\\u001b'"),
        ("del\x7f", "'del\\u007f'"),
        ("Zoë 名前 😀", "'Zoë 名前 😀'"),
        ("\\'", "'\\\\\\''"),
    ],
)
def test_quote_escapes_every_special_character(value: str, literal: str) -> None:
    assert quote(value) == literal


@pytest.mark.parametrize(
    ("value", "literal"),
    [("100%_off", "'100\\%\\_off'"), ("o'b%", "'o\\'b\\%'")],
)
def test_quote_like_escapes_wildcards_too(value: str, literal: str) -> None:
    assert quote_like(value) == literal


def test_quote_refuses_non_strings() -> None:
    with pytest.raises(TypeError, match="str"):
        quote(42)  # type: ignore[arg-type]


@given(st.text(max_size=60))
def test_quoted_literals_parse_back_to_the_value(value: str) -> None:
    # The emulator's SOQL parser follows the documented escapes: it must read the literal back
    # as exactly the value, whatever the value holds, in = and in IN lists.
    other = value + "'"
    query = emulator_soql.parse(
        f"SELECT Id FROM Lead WHERE LastName IN ({quote(value)}, {quote(other)})"
    )
    assert isinstance(query.where, emulator_soql.Comparison)
    assert isinstance(query.where.value, tuple)
    assert [v.value for v in query.where.value] == [value, other]


@pytest.mark.parametrize(
    ("when", "literal"),
    [
        (datetime(2024, 5, 1, 9, 30, 15, 999_000, tzinfo=UTC), "2024-05-01T09:30:15Z"),
        (datetime(2024, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2))), "2024-05-01T09:30:00Z"),
        (datetime(2024, 5, 1, 9, 30), "2024-05-01T09:30:00Z"),
    ],
)
def test_datetime_literal_is_utc_whole_seconds(when: datetime, literal: str) -> None:
    assert datetime_literal(when) == literal


TEMPLATE = "SELECT Id, Email FROM Lead WHERE Email IN ({values})"


def test_in_batches_keeps_each_query_url_under_the_limit() -> None:
    emails = [f"{'a' * 50}'{n}%@example.com" for n in range(1000)]
    batches = in_batches(TEMPLATE, emails)
    assert len(batches) > 1
    assert [e for _, batch in batches for e in batch] == emails
    for query, batch in batches:
        assert len(urlencode({"q": query})) <= MAX_QUERY_URL_CHARS
        assert query == TEMPLATE.format(values=",".join(quote(e) for e in batch))


def test_in_batches_fills_batches_nearly_to_the_limit() -> None:
    emails = [f"user{n:05d}@example.com" for n in range(3000)]
    first, _ = in_batches(TEMPLATE, emails)[0]
    assert len(urlencode({"q": first})) > MAX_QUERY_URL_CHARS - 40


@pytest.mark.parametrize(("limit", "expected"), [(100_000, 1), (2_000, 3)])
def test_in_batches_respects_the_soql_length_too(limit: int, expected: int) -> None:
    emails = [f"u{n:03d}@example.com" for n in range(300)]
    batches = in_batches(TEMPLATE, emails, max_url_chars=10**9, max_soql_chars=limit)
    assert all(len(query) <= limit for query, _ in batches)
    assert len(batches) == expected


def test_in_batches_caps_values_and_drops_duplicates() -> None:
    batches = in_batches(TEMPLATE, ["a", "b", "a", "c", "d"], max_values=2)
    assert [batch for _, batch in batches] == [["a", "b"], ["c", "d"]]


def test_a_value_too_long_for_any_query_is_an_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        in_batches(TEMPLATE, ["x" * 20_000])
