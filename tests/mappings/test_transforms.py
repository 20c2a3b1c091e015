"""Each registered transform, inbound and outbound, and its failures."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from leadrelay.mappings import engine as engine_module
from leadrelay.mappings import transforms as transforms_module
from leadrelay.mappings.transforms import (
    REGISTRY,
    TransformArgsError,
    TransformContext,
    bind,
    split_full_name,
)
from leadrelay.model import Channel


def ctx(field: str = "x", **others: Any) -> TransformContext:
    return TransformContext(field, "X", lambda name: others.get(name))


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Ana Silva", "Ana", "Silva"),
        ("  Ana   Silva ", "Ana", "Silva"),
        ("Silva, Ana", "Ana", "Silva"),
        ("Madonna", None, "Madonna"),
        ("Ana Maria Costa", "Ana Maria", "Costa"),
        ("Ludwig van Beethoven", "Ludwig", "van Beethoven"),
        ("Ana Maria da Silva", "Ana Maria", "da Silva"),
    ],
)
def test_split_full_name(full: str, first: str | None, last: str | None) -> None:
    assert split_full_name(full) == (first, last)


@pytest.mark.parametrize(("part", "expected"), [("first", "Ana"), ("last", "Silva")])
def test_split_full_name_inbound_part(part: str, expected: str) -> None:
    assert bind("split_full_name", {"part": part}).inbound("Ana Silva", ctx()) == expected


def test_split_full_name_outbound_joins_first_and_last() -> None:
    bound = bind("split_full_name", {"part": "first"})
    assert bound.outbound("Ana", ctx(first_name="Ana", last_name="Silva")) == "Ana Silva"


def test_join_outbound_and_inbound() -> None:
    bound = bind("join", {"fields": ["first_name", "last_name"], "separator": " "})
    assert bound.outbound("Ana", ctx("first_name", first_name="Ana", last_name="da Silva")) == (
        "Ana da Silva"
    )
    assert bound.inbound("Ana da Silva", ctx("first_name")) == "Ana"
    assert bound.inbound("Ana da Silva", ctx("last_name")) == "da Silva"


def test_join_inbound_rejects_a_field_outside_its_list() -> None:
    bound = bind("join", {"fields": ["first_name", "last_name"]})
    with pytest.raises(ValueError, match="does not include 'company'"):
        bound.inbound("Ana Silva", ctx("company"))


@pytest.mark.parametrize(
    ("name", "args", "system", "lead"),
    [
        ("lower", {}, "ANA@X.IO", "ana@x.io"),
        ("upper", {}, "gb", "GB"),
        ("strip", {}, "  Acme ", "Acme"),
        ("int", {}, "1,200", 1200),
        ("int", {}, 42, 42),
        ("float", {}, "5000000.50", 5000000.5),
        ("bool", {}, "on", True),
        ("bool", {}, "No", False),
        ("bool", {}, 1, True),
        ("bool", {"invert": True}, False, True),
        ("bool", {"true_value": "Ja", "false_value": "Nein"}, "Nein", False),
        ("employee_range", {}, "25-50", 25),
        ("employee_range", {}, "1000+", 1000),
        ("hubspot_source", {}, "PAID_SEARCH", Channel.PAID_SEARCH),
        ("hubspot_source", {}, "Organic social", Channel.ORGANIC_SOCIAL),
        ("zoho_lookup_id", {}, {"id": "7", "name": "Bo", "email": "bo@x.io"},
         {"id": "7", "name": "Bo", "email": "bo@x.io"}),
        ("multi_select", {}, "demo;pricing", ["demo", "pricing"]),
        ("default", {"value": "n/a"}, "", "n/a"),
    ],
)  # fmt: skip
def test_inbound(name: str, args: dict[str, Any], system: Any, lead: Any) -> None:
    assert bind(name, args).inbound(system, ctx()) == lead


@pytest.mark.parametrize(
    ("name", "args", "lead", "system"),
    [
        ("lower", {}, "Ana", "ana"),
        ("int", {}, 12.0, 12),
        ("float", {}, 3, 3.0),
        ("bool", {}, True, True),
        ("bool", {"true_value": "true", "false_value": "false"}, False, "false"),
        ("bool", {"invert": True}, True, False),
        ("employee_range", {}, 0, "1-5"),
        ("employee_range", {}, 5, "5-25"),
        ("employee_range", {}, 30, "25-50"),
        ("employee_range", {}, 5000, "1000+"),
        ("hubspot_source", {}, Channel.EMAIL, "EMAIL_MARKETING"),
        ("hubspot_source", {}, "display", "OTHER_CAMPAIGNS"),
        ("zoho_lookup_id", {}, "42", {"id": "42"}),
        ("multi_select", {}, ["demo", "pricing"], "demo;pricing"),
        ("multi_select", {"separator": ","}, ["a", "b"], "a,b"),
        ("truncate", {"max_length": 5}, "Acme Inc", "Acme "),
        ("truncate", {"max_length": 10}, "short", "short"),
        (
            "truncate",
            {"max_length": 25, "url": True},
            "https://x.io/pricing?a=1#top",
            "https://x.io/pricing?a=1",
        ),
        (
            "truncate",
            {"max_length": 20, "url": True},
            "https://x.io/pricing?a=1#top",
            "https://x.io/pricing",
        ),
        ("truncate", {"max_length": 12, "url": True}, "https://x.io/pricing?a=1", "https://x.io"),
        ("default", {"value": 0}, None, 0),
    ],
)
def test_outbound(name: str, args: dict[str, Any], lead: Any, system: Any) -> None:
    assert bind(name, args).outbound(lead, ctx()) == system


@pytest.mark.parametrize(
    ("name", "args", "value", "reason"),
    [
        ("int", {}, "twelve", "not a number"),
        ("int", {}, "12.5", "not a whole number"),
        ("float", {}, "1.2.3", "not a number"),
        ("float", {}, "nan", "not a number"),
        ("bool", {}, "maybe", "not a yes/no value"),
        ("employee_range", {}, "lots", "not an employee range"),
        ("zoho_lookup_id", {}, {"name": "Bo"}, "not a Zoho lookup"),
        ("datetime", {"format": "iso"}, "yesterday", "not an ISO 8601 date"),
        ("datetime", {"format": "epoch_ms"}, "soon", "not epoch milliseconds"),
        ("date", {"format": "strftime:%d/%m/%Y"}, "2024-01-31", "does not match"),
        ("e164", {}, "12", "not a possible number|cannot be parsed"),
        ("lower", {}, ["a"], "expected text"),
    ],
)
def test_inbound_bad_value_names_the_reason(
    name: str, args: dict[str, Any], value: Any, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        bind(name, args).inbound(value, ctx())


@pytest.mark.parametrize(
    ("name", "args", "value", "reason"),
    [
        ("hubspot_source", {}, "tv", "not a channel"),
        ("employee_range", {}, -3, "negative"),
        ("multi_select", {}, ["a;b"], "contains the separator"),
        ("multi_select", {}, 7, "expected a list"),
        ("datetime", {"format": "iso"}, 7, "expected a date"),
    ],
)
def test_outbound_bad_value_names_the_reason(
    name: str, args: dict[str, Any], value: Any, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        bind(name, args).outbound(value, ctx())


MOMENT = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fmt", "system"),
    [
        ("iso", "2024-01-01T10:00:00+00:00"),
        ("epoch_ms", 1704103200000),
        ("salesforce", "2024-01-01T10:00:00.000+0000"),
        ("zoho", "2024-01-01T10:00:00+00:00"),
        ("strftime:%d/%m/%Y %H:%M", "01/01/2024 10:00"),
    ],
)
def test_datetime_both_ways(fmt: str, system: Any) -> None:
    bound = bind("datetime", {"format": fmt})
    assert bound.outbound(MOMENT, ctx()) == system
    assert bound.inbound(system, ctx()) == MOMENT


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("2024-01-01T15:30:00+05:30", MOMENT),
        ("2024-01-01T10:00:00.000+0000", MOMENT),
        ("2024-01-01T10:00:00Z", MOMENT),
        ("1704103200000", MOMENT),
    ],
)
def test_datetime_reads_each_system_form(system: str, expected: datetime) -> None:
    fmt = "epoch_ms" if system.isdigit() else "iso"
    assert bind("datetime", {"format": fmt}).inbound(system, ctx()) == expected


def test_datetime_keeps_the_offset_it_reads() -> None:
    read = bind("datetime", {"format": "zoho"}).inbound("2024-01-01T15:30:00+05:30", ctx())
    assert read.utcoffset() == timedelta(hours=5, minutes=30)
    assert read.tzinfo == timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("fmt", "system"),
    [("iso", "2024-01-01"), ("epoch_ms", 1704067200000), ("strftime:%d/%m/%Y", "01/01/2024")],
)
def test_date_both_ways(fmt: str, system: Any) -> None:
    bound = bind("date", {"format": fmt})
    assert bound.outbound(MOMENT, ctx()) == system
    assert bound.inbound(system, ctx()) == datetime(2024, 1, 1, tzinfo=UTC)


def test_e164_uses_the_records_country() -> None:
    bound = bind("e164")
    assert bound.inbound("020 7946 0958", ctx(country="GB")) == "+442079460958"


def test_e164_falls_back_to_its_country_arg() -> None:
    assert bind("e164", {"country": "US"}).inbound("(415) 555-2671", ctx()) == "+14155552671"


def test_blank_values_skip_transforms_except_default() -> None:
    assert bind("int").inbound("", ctx()) is None
    assert bind("default", {"value": "x"}).inbound(None, ctx()) == "x"


def test_unknown_transform_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        bind("titlecase")


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("split_full_name", {}, "part"),
        ("split_full_name", {"part": "middle"}, "part"),
        ("date", {"format": "excel"}, "format must be"),
        ("join", {"fields": []}, "fields"),
        ("lower", {"mode": "x"}, "mode"),
        ("employee_range", {"ranges": ["50-100", "1-5"]}, "ascending"),
        ("truncate", {}, "max_length"),
        ("truncate", {"max_length": 0}, "max_length"),
    ],
)
def test_bad_args_are_named(name: str, args: dict[str, Any], reason: str) -> None:
    with pytest.raises(TransformArgsError, match=reason):
        bind(name, args)


def test_registry_has_the_documented_transforms() -> None:
    assert {
        "split_full_name", "join", "default", "lower", "upper", "strip", "e164", "date",
        "datetime", "bool", "int", "float", "employee_range", "hubspot_source",
        "zoho_lookup_id", "multi_select", "truncate",
    } <= set(REGISTRY)  # fmt: skip


def test_system_values_of_employee_range_and_hubspot_source() -> None:
    assert bind("employee_range").system_values() == frozenset(
        {"1-5", "5-25", "25-50", "50-100", "100-500", "500-1000", "1000+"}
    )
    known = bind("hubspot_source").system_values()
    assert known is not None and "PAID_SOCIAL" in known


def _reads_canonical(function: Any, seen: set[str] | None = None) -> bool:
    """Whether ``function``'s source, or a function of the transforms module it hands ``ctx``
    to, asks the context for a canonical field."""
    seen = set() if seen is None else seen
    source = inspect.getsource(function)
    if "ctx.canonical(" in source:
        return True
    for name in re.findall(r"\b(_?\w+)\([^()]*\bctx\b", source):
        helper = getattr(transforms_module, name, None)
        if callable(helper) and name not in seen:
            seen.add(name)
            if _reads_canonical(helper, seen):
                return True
    return False


def test_the_echo_check_knows_every_inbound_read_of_another_field() -> None:
    # The write-back pass's echo check (sync/engine.py, _reads_as) trusts this list to know
    # which built-in reads look at another canonical field.
    reading = {name for name, t in REGISTRY.items() if _reads_canonical(t.inbound)}
    assert reading == set(engine_module._INBOUND_READS)
