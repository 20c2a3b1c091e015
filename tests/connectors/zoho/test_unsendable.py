"""The values of a Zoho record that cannot go in a JSON body: the fast checks agree with
what serializing each value says."""

from __future__ import annotations

from datetime import date
from enum import IntEnum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.connectors.zoho.connector import json_problem, unsendable


class Size(IntEnum):
    SMALL = 1


SCALARS = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, min_codepoint=0xD800, max_codepoint=0xDFFF)),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.dates(),
    st.sets(st.integers(), max_size=2),
    st.just(Size.SMALL),
    # Drawn rarely by the strategies above, so given outright.
    st.sampled_from([float("nan"), float("inf"), -float("inf"), "\ud800", "Zo\udc00ë", 0.0]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=1000, derandomize=True)
@given(VALUES)
def test_a_value_is_refused_exactly_when_serializing_refuses_it(value: Any) -> None:
    refused = unsendable("rec-1", {"Score": value})
    reason = json_problem(value)
    assert (refused.message if refused else None) == (
        f"record rec-1, field Score: {reason}" if reason else None
    )


@settings(max_examples=300, derandomize=True)
@given(st.dictionaries(st.sampled_from(["First_Name", "Email", "Score", "Tags"]), VALUES))
def test_unsendable_names_the_first_value_serializing_refuses(fields: dict[str, Any]) -> None:
    refused = unsendable("rec-1", fields)
    first = next(
        ((name, reason) for name, value in fields.items() if (reason := json_problem(value))),
        None,
    )
    if first is None:
        assert refused is None
        return
    name, reason = first
    assert refused is not None
    assert (refused.record, refused.field) == ("rec-1", name)
    assert refused.message == f"record rec-1, field {name}: {reason}"


def test_each_kind_of_refusal_has_its_reason() -> None:
    assert json_problem("\ud800") == (
        "text that is not valid Unicode (a lone surrogate) cannot be sent to Zoho"
    )
    assert json_problem(float("nan")) == "NaN and infinity are not JSON numbers"
    assert json_problem(date(2026, 1, 1)) == "a date is not a JSON value"
    assert json_problem("Zoë") is None
