from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from leadrelay.config import ConfigError, load_config
from leadrelay.handoff.sla import (
    BusinessHours,
    ClockKind,
    SlaConfig,
    SlaError,
    SlaState,
    add_business_time,
    apply_due,
    clocks_for,
    due_at,
    evaluate,
    load_sla_config,
    parse_sla_table,
)
from leadrelay.model import Lead, Owner, RejectionReason, Stage, Tier

BERLIN = ZoneInfo("Europe/Berlin")
NINE_TO_SIX = BusinessHours(timezone="Europe/Berlin", start=time(9), end=time(18))
T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)  # a Monday


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("start", "hours", "holidays", "expected"),
    [
        # Friday 17:30 + 1 h -> Monday 09:30; DST starts on Sunday 2024-03-31 in between
        (berlin(2024, 3, 29, 17, 30), 1, (), berlin(2024, 4, 1, 9, 30)),
        # the same weekend with Easter Monday a holiday
        (berlin(2024, 3, 29, 17, 30), 1, (date(2024, 4, 1),), berlin(2024, 4, 2, 9, 30)),
        # DST ends on Sunday 2024-10-27
        (berlin(2024, 10, 25, 17, 30), 1, (), berlin(2024, 10, 28, 9, 30)),
        # inside business hours
        (berlin(2024, 5, 7, 10, 0), 1, (), berlin(2024, 5, 7, 11, 0)),
        # before opening
        (berlin(2024, 5, 7, 7, 0), 1, (), berlin(2024, 5, 7, 10, 0)),
        # after closing
        (berlin(2024, 5, 7, 19, 0), 1, (), berlin(2024, 5, 8, 10, 0)),
        # Saturday
        (berlin(2024, 5, 11, 12, 0), 1, (), berlin(2024, 5, 13, 10, 0)),
        # 24 business hours over three days ending exactly at closing time
        (berlin(2024, 5, 6, 12, 0), 24, (), berlin(2024, 5, 8, 18, 0)),
        # 12 hours from Friday afternoon over a weekend and a holiday Monday
        (berlin(2024, 5, 10, 15, 0), 12, (date(2024, 5, 13),), berlin(2024, 5, 14, 18, 0)),
    ],
)
def test_business_time(
    start: datetime, hours: int, holidays: tuple[date, ...], expected: datetime
) -> None:
    business = NINE_TO_SIX.model_copy(update={"holidays": frozenset(holidays)})
    result = add_business_time(start, timedelta(hours=hours), business)
    assert result == expected
    assert result.tzinfo is UTC


def test_business_time_keeps_wall_clock_across_dst() -> None:
    result = add_business_time(berlin(2024, 3, 29, 17, 30), timedelta(hours=1), NINE_TO_SIX)
    assert result == datetime(2024, 4, 1, 7, 30, tzinfo=UTC)  # 09:30 CEST


def test_without_business_hours_time_is_plain() -> None:
    start = datetime(2024, 5, 11, 23, 0, tzinfo=UTC)
    assert add_business_time(start, timedelta(hours=1), None) == start + timedelta(hours=1)


def test_naive_start_is_refused() -> None:
    with pytest.raises(SlaError, match="naive"):
        add_business_time(datetime(2024, 5, 6, 9), timedelta(hours=1), NINE_TO_SIX)


def test_starter_sla_table_keys_work() -> None:
    config = parse_sla_table({"hot_hours": 1, "mql_hours": 24, "unassigned_hours": 12})
    assert (config.hot_hours, config.mql_hours, config.unassigned_hours) == (1, 24, 12)
    assert config.business_hours is None


def test_sla_table_from_config_file(tmp_path: Path) -> None:
    (tmp_path / "leadrelay.toml").write_text(
        "[sla]\nhot_hours = 2\n[sla.business_hours]\ntimezone = 'Europe/Berlin'\n"
        "days = ['Mon', 'tue']\nstart = '08:00'\nend = '16:30'\nholidays = ['2024-12-25']\n",
        encoding="utf-8",
    )
    config = load_sla_config(load_config(tmp_path / "leadrelay.toml"))
    assert config.hot_hours == 2
    assert config.business_hours is not None
    assert config.business_hours.weekdays == frozenset({0, 1})
    assert config.business_hours.end == time(16, 30)
    assert config.business_hours.holidays == frozenset({date(2024, 12, 25)})


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ({"hot_hours": 0}, "sla.hot_hours"),
        ({"business_hours": {"timezone": "Mars/Olympus"}}, "sla.business_hours.timezone"),
        ({"business_hours": {"days": ["someday"]}}, "sla.business_hours.days"),
        ({"business_hours": {"start": "18:00", "end": "09:00"}}, "sla.business_hours"),
        ({"hot_hour": 1}, "sla.hot_hour"),
        ({"escalation": {"email": {"host": "h", "from_addr": "a@b.io", "to": []}}}, "to"),
    ],
)
def test_bad_sla_table_names_the_key(table: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sla_table(table, file="leadrelay.toml")
    assert where in str(caught.value)


def lead(**fields: object) -> Lead:
    values: dict[str, object] = {"created_at": T0, "email": "jane@acme.io"}
    values.update(fields)
    return Lead.model_validate(values)


OWNER = Owner(id="u1", email="rep@example.com")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, [ClockKind.UNASSIGNED]),
        ({"tier": Tier.HOT}, [ClockKind.HOT, ClockKind.UNASSIGNED]),
        ({"stage": Stage.MQL}, [ClockKind.MQL, ClockKind.UNASSIGNED]),
        ({"stage": Stage.WON, "tier": Tier.HOT}, list(ClockKind)),
        (
            {"stage": Stage.RECYCLED, "rejection_reason": RejectionReason.TIMING},
            [ClockKind.MQL, ClockKind.UNASSIGNED],
        ),
    ],
)
def test_clocks_for(fields: dict[str, object], expected: list[ClockKind]) -> None:
    assert clocks_for(lead(**fields)) == expected


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


NOW = minutes(24 * 60 * 3)


@pytest.mark.parametrize(
    ("fields", "kind", "now", "state", "late", "met"),
    [
        ({"tier": Tier.HOT, "first_action_at": minutes(30)}, ClockKind.HOT, NOW, "on_time", 0, 1),
        ({"tier": Tier.HOT, "first_action_at": minutes(90)}, ClockKind.HOT, NOW, "breached", 30, 1),
        ({"tier": Tier.HOT}, ClockKind.HOT, minutes(75), "breached", 15, 0),
        ({"tier": Tier.HOT}, ClockKind.HOT, minutes(50), "at_risk", 0, 0),
        ({"tier": Tier.HOT}, ClockKind.HOT, minutes(10), "pending", 0, 0),
        # the MQL clock starts at assignment
        (
            {"stage": Stage.SAL, "assigned_at": minutes(60), "accepted_at": minutes(24 * 60 + 30)},
            ClockKind.MQL,
            NOW,
            "on_time",
            0,
            1,
        ),
        (
            {"stage": Stage.MQL, "assigned_at": minutes(0)},
            ClockKind.MQL,
            NOW,
            "breached",
            2 * 24 * 60,
            0,
        ),
        # a rejection is met when sales acted
        (
            {
                "stage": Stage.DISQUALIFIED,
                "rejection_reason": RejectionReason.BAD_FIT,
                "first_action_at": minutes(25 * 60),
            },
            ClockKind.MQL,
            NOW,
            "breached",
            60,
            1,
        ),
        # a verdict without a time read back is not turned into a breach
        ({"stage": Stage.SQL}, ClockKind.MQL, NOW, "on_time", 0, 1),
        ({"owner": OWNER, "assigned_at": minutes(5)}, ClockKind.UNASSIGNED, NOW, "on_time", 0, 1),
        ({"owner": OWNER}, ClockKind.UNASSIGNED, NOW, "on_time", 0, 1),
        ({}, ClockKind.UNASSIGNED, minutes(13 * 60), "breached", 60, 0),
    ],
)
def test_evaluate_states(
    fields: dict[str, object],
    kind: ClockKind,
    now: datetime,
    state: str,
    late: float,
    met: int,
) -> None:
    statuses = {s.kind: s for s in evaluate([lead(**fields)], now)}
    status = statuses[kind]
    assert status.state is SlaState(state)
    assert status.minutes_late == pytest.approx(late)
    assert status.met is bool(met)
    assert status.open_breach is (state == "breached" and not met)


def test_evaluate_leaves_out_test_leads() -> None:
    assert evaluate([lead(is_test=True, tier=Tier.HOT)], NOW) == []


def test_evaluate_with_business_hours() -> None:
    config = SlaConfig(business_hours=NINE_TO_SIX)
    friday = lead(tier=Tier.HOT, created_at=berlin(2024, 5, 10, 17, 30))
    (hot, _) = evaluate([friday], berlin(2024, 5, 13, 9, 15), config)
    assert hot.due_at == berlin(2024, 5, 13, 9, 30)
    assert hot.state is SlaState.AT_RISK


def test_due_at_uses_config_hours() -> None:
    config = SlaConfig(unassigned_hours=2)
    assert due_at(lead(), ClockKind.UNASSIGNED, config) == T0 + timedelta(hours=2)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tier": Tier.HOT, "stage": Stage.MQL}, T0 + timedelta(hours=1)),
        ({"stage": Stage.MQL, "assigned_at": minutes(60)}, T0 + timedelta(hours=25)),
        ({}, T0 + timedelta(hours=12)),
        ({"owner": OWNER}, None),
    ],
)
def test_apply_due(fields: dict[str, object], expected: datetime | None) -> None:
    assert apply_due(lead(**fields)).sla_due_at == expected
