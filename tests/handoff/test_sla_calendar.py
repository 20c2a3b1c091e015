"""A run's SLA calendar gives the due times the general business-time walk gives."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.handoff.sla import (
    BusinessHours,
    ClockKind,
    SlaCalendar,
    SlaConfig,
    add_business_time,
    apply_due,
    due_at,
)
from leadrelay.model import Lead, Owner, Stage, Tier

_hours = st.one_of(
    st.none(),
    st.builds(
        lambda zone, days, start, length, holidays: BusinessHours(
            timezone=zone,
            days=days,
            start=time(start),
            end=time(min(start + length, 23), 59 if start + length > 23 else 0),
            holidays=frozenset(holidays),
        ),
        st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
        st.lists(
            st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            min_size=1,
            max_size=7,
            unique=True,
        ),
        st.integers(min_value=0, max_value=20),
        st.integers(min_value=1, max_value=12),
        st.lists(st.dates(min_value=date(2024, 3, 1), max_value=date(2024, 4, 30)), max_size=8),
    ),
)
_starts = st.datetimes(
    min_value=datetime(2024, 3, 1), max_value=datetime(2024, 4, 15), timezones=st.just(UTC)
)
_durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=80))


@settings(max_examples=200, deadline=None)
@given(hours=_hours, starts=st.lists(_starts, min_size=1, max_size=6), duration=_durations)
def test_the_calendar_adds_business_time_as_the_general_walk(
    hours: BusinessHours | None, starts: list[datetime], duration: timedelta
) -> None:
    calendar = SlaCalendar(SlaConfig(business_hours=hours))
    # one calendar for several starts: what it keeps from one is right for the next
    for start in starts:
        assert calendar.add(start, duration) == add_business_time(start, duration, hours)


@settings(max_examples=100, deadline=None)
@given(
    hours=_hours,
    created=_starts,
    tier=st.sampled_from([None, *Tier]),
    stage=st.sampled_from(list(Stage)),
    owned=st.booleans(),
)
def test_a_due_time_from_the_calendar_is_the_general_one(
    hours: BusinessHours | None, created: datetime, tier: Tier | None, stage: Stage, owned: bool
) -> None:
    config = SlaConfig(hot_hours=2, mql_hours=30, unassigned_hours=9, business_hours=hours)
    fields = {
        "created_at": created,
        "tier": tier,
        "stage": stage,
        "owner": Owner(id="7") if owned else None,
        "assigned_at": created + timedelta(hours=3) if owned else None,
    }
    general = apply_due(Lead(**fields), config).sla_due_at
    calendar = SlaCalendar(config)
    assert apply_due(Lead(**fields), config, calendar=calendar).sla_due_at == general
    for kind in ClockKind:
        assert calendar.due_at(Lead(**fields), kind) == due_at(Lead(**fields), kind, config)
