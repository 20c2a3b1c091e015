"""One projection of a record's values serves its fingerprint, its baseline and its field
clocks: each equals what it was computed as from the values themselves."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.sync import engine as engine_module
from leadrelay.sync.engine import fingerprint
from leadrelay.sync.plan import canonical_value, draft_value

NAMES = ["email", "phone", "score", "stage", "custom.tier", "custom.segment", "updated_at"]


class Tier(StrEnum):
    HOT = "hot"


SCALARS = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.integers(-3, 3),
    st.floats(allow_nan=False, width=16),
    st.booleans(),
    st.sampled_from(
        [Tier.HOT, date(2026, 1, 2), datetime(2026, 1, 2, 3, 4, tzinfo=UTC), {"id": "1"}]
    ),
)


@st.composite
def drafts(draw: st.DrawFn) -> dict[str, Any]:
    values: dict[str, Any] = draw(
        st.dictionaries(st.sampled_from([n for n in NAMES if "." not in n]), SCALARS)
    )
    custom = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["tier", "x"]), SCALARS)))
    if custom is not None:
        values["custom"] = custom
    return values


def _parts(fields: list[str]) -> list[tuple[str, str, str]]:
    return [(name, *name.partition(".")[::2]) for name in fields]  # type: ignore[misc]


def _baseline_values(values: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """What a baseline kept of a side's values before the projection (the reference)."""
    kept: dict[str, Any] = {}
    for name in fields:
        head, _, sub = name.partition(".")
        value = values.get(head)
        if sub:
            value = value.get(sub) if isinstance(value, dict) else None
            if value is not None:
                kept.setdefault(head, {})[sub] = canonical_value(value)
        elif value is not None:
            kept[name] = canonical_value(value)
    return kept


@settings(max_examples=300, deadline=None)
@given(drafts(), st.lists(st.sampled_from(NAMES), unique=True))
def test_the_projection_gives_the_fingerprint_baseline_and_values_of_the_draft(
    values: dict[str, Any], fields: list[str]
) -> None:
    kept = engine_module._project(values, _parts(fields))
    assert engine_module._digest(kept) == fingerprint(values, fields)
    assert engine_module._nest(kept, _parts(fields)) == _baseline_values(values, fields)
    for name in fields:
        assert kept.get(name) == canonical_value(draft_value(values, name))
