"""The report after SQL: goals per step, win rate, revenue per currency, reasons, calibration,
time to opportunity and to close (synthetic Leads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from rich.console import Console

from leadrelay.config import ConfigError, load_config
from leadrelay.handoff.commands import rejected_without_reason
from leadrelay.handoff.report import (
    Report,
    build_report,
    opportunity_times,
    render_tables,
)
from leadrelay.handoff.report_settings import ReportConfig
from leadrelay.handoff.sla import evaluate
from leadrelay.model import Channel, Lead, OutcomeReason, Stage, Touch
from leadrelay.sync.state import StateStore
from tests.handoff.test_report import NOW, T0, make

SETTINGS = ReportConfig(calibration_min_leads=2)


def deal(
    key: str,
    stage: Stage,
    money: tuple[float, str] | None,
    reason: OutcomeReason | None,
    closed_day: int,
    **fields: Any,
) -> Lead:
    """A closed deal: its amount and currency, reason and close date (days after T0)."""
    amount, currency = money or (None, None)
    closed = {"closed_at": T0 + timedelta(days=closed_day), "outcome_reason": reason}
    return make(key, stage, amount=amount, currency=currency, **closed, **fields)


def outcome_leads() -> list[Lead]:
    """Two wins, two losses and two open opportunities in two currencies, plus an SQL and two
    MQLs, from two sources."""
    touch = Touch(channel=Channel.PAID_SEARCH, utm_source="google")
    return [
        deal(
            "won_eur",
            Stage.WON,
            (1000, "EUR"),
            OutcomeReason.PRODUCT_FIT,
            10,
            score=85,
            channel=Channel.PAID_SEARCH,
            first_touch=touch,
        ),
        # a loss reason on a win: flagged
        deal(
            "won_usd",
            Stage.WON,
            (500, "usd"),
            OutcomeReason.COMPETITOR,
            20,
            score=75,
            utm_source="linkedin",
            channel=Channel.PAID_SOCIAL,
        ),
        deal("lost1", Stage.LOST, (800, "EUR"), OutcomeReason.NO_BUDGET, 30, score=82),
        make("lost2", Stage.LOST, score=72, utm_source="linkedin", campaign_id=None),
        make("open_eur", Stage.OPPORTUNITY, amount=2000, currency="EUR", score=88),
        make("open_none", Stage.OPPORTUNITY, score=65),
        make("sql", Stage.SQL, score=71),
        make("mql1", Stage.MQL, score=61),
        make("mql2", Stage.MQL, score=55),
    ]


def report_with(
    leads: list[Lead],
    settings: ReportConfig = SETTINGS,
    opened_at: dict[str, datetime] | None = None,
    mql_threshold: float | None = None,
) -> Report:
    return build_report(
        leads,
        [],
        evaluate(leads, NOW),
        NOW,
        settings=settings,
        opened_at=opened_at,
        mql_threshold=mql_threshold,
    )


def test_each_step_carries_its_goal_from_the_settings() -> None:
    goals = {"mql_to_sal": 0.9, "sal_to_sql": 0.5, "sql_to_opportunity": 0.8}
    settings = ReportConfig.model_validate({"goals": goals})
    steps = {s["stage"]: s for s in report_with(outcome_leads(), settings).funnel["stages"]}
    assert steps["mql"]["goal"] is None and steps["mql"]["meets_goal"] is None
    assert (steps["sal"]["goal"], steps["sal"]["meets_goal"]) == (0.9, False)  # 7 of 9
    assert steps["opportunity"]["rate_from_previous"] == pytest.approx(6 / 7)
    assert (steps["opportunity"]["goal"], steps["opportunity"]["meets_goal"]) == (0.8, True)
    assert steps["won"]["goal"] == 0.25  # the default opportunity_to_won


def test_win_rate_counts_closed_deals_only() -> None:
    outcomes = report_with(outcome_leads()).outcomes
    assert (outcomes["opportunities"], outcomes["open"]) == (6, 2)
    assert (outcomes["won"], outcomes["lost"]) == (2, 2)
    assert outcomes["win_rate"] == {"actual": 0.5, "goal": 0.25, "meets_goal": True}


def test_money_is_summed_per_currency_never_across() -> None:
    outcomes = report_with(outcome_leads()).outcomes
    assert outcomes["won_revenue"] == {"EUR": 1000.0, "USD": 500.0}
    assert outcomes["pipeline"] == {"EUR": 2000.0}
    assert outcomes["without_amount"] == {"open": 1, "won": 0}


def test_an_amount_without_a_currency_is_its_own_line() -> None:
    lead = make("bare", Stage.WON, amount=300)
    assert report_with([lead]).outcomes["won_revenue"] == {"(no currency)": 300.0}


@pytest.mark.parametrize(
    ("dimension", "name", "expected"),
    [
        ("source", "google", {"opportunities": 4, "won": 1, "lost": 1, "open": 2}),
        ("source", "linkedin", {"opportunities": 2, "won": 1, "lost": 1, "open": 0}),
        ("channel", "paid_social", {"opportunities": 1, "won": 1, "lost": 0, "open": 0}),
        ("campaign", "spring", {"opportunities": 6, "won": 2, "lost": 2, "open": 2}),
        ("form", "pricing", {"opportunities": 6, "won": 2, "lost": 2, "open": 2}),
        ("first_touch", "paid_search / google", {"opportunities": 1, "won": 1, "lost": 0}),
        ("first_touch", "(none)", {"opportunities": 5, "won": 1, "lost": 2}),
    ],
)
def test_outcomes_by_group(dimension: str, name: str, expected: dict[str, int]) -> None:
    rows = {row["name"]: row for row in report_with(outcome_leads()).outcomes["by"][dimension]}
    assert {key: rows[name][key] for key in expected} == expected


def test_revenue_by_source_keeps_currencies_apart() -> None:
    rows = {row["name"]: row for row in report_with(outcome_leads()).outcomes["by"]["source"]}
    assert rows["google"]["won_revenue"] == {"EUR": 1000.0}
    assert rows["google"]["pipeline"] == {"EUR": 2000.0}
    assert rows["linkedin"]["won_revenue"] == {"USD": 500.0}
    assert rows["linkedin"]["win_rate"] == 0.5


def test_win_and_loss_reasons_by_source() -> None:
    reasons = report_with(outcome_leads()).outcomes["reasons"]
    assert reasons["won"] == {"product_fit": 1, "competitor": 1}
    assert reasons["lost"] == {"no_budget": 1}
    assert reasons["by_source"]["linkedin"] == {"won": {"competitor": 1}, "lost": {}}
    assert reasons["by_source"]["google"] == {"won": {"product_fit": 1}, "lost": {"no_budget": 1}}
    assert reasons["without_reason"] == {"won": 0, "lost": 1}
    assert reasons["unfit"] == [{"lead_key": "won_usd", "stage": "won", "reason": "competitor"}]


def test_a_lost_lead_with_a_loss_reason_is_not_rejected_without_a_reason() -> None:
    leads = [
        make("lost_reason", Stage.LOST, outcome_reason=OutcomeReason.TIMING),
        make("lost_bare", Stage.LOST),
        make("dq_bare", Stage.DISQUALIFIED, outcome_reason=OutcomeReason.TIMING),
    ]
    assert [item["lead_key"] for item in rejected_without_reason(leads)] == [
        "lost_bare",
        "dq_bare",
    ]


def banded(conversions: dict[int, tuple[int, int]]) -> list[Lead]:
    """Per score: (leads, of them opportunities)."""
    leads = []
    for score, (count, converted) in conversions.items():
        for n in range(count):
            stage = Stage.OPPORTUNITY if n < converted else Stage.MQL
            leads.append(make(f"s{score}_{n}", stage, score=score))
    return leads


def calibration(leads: list[Lead], **settings: Any) -> dict[str, Any]:
    config = ReportConfig.model_validate({"calibration_min_leads": 2, **settings})
    found: dict[str, Any] = report_with(leads, config, mql_threshold=60).outcomes["calibration"]
    return found


def test_bands_count_conversion_and_win_rate() -> None:
    bands = {band["band"]: band for band in calibration(outcome_leads())["bands"]}
    assert list(bands) == ["below 60", "60–69", "70–79", "80+"]
    assert (bands["80+"]["leads"], bands["80+"]["opportunities"]) == (3, 3)
    assert bands["80+"]["win_rate"] == 0.5
    assert bands["70–79"]["conversion"] == pytest.approx(2 / 3)
    assert bands["below 60"]["conversion"] == 0.0


def test_a_higher_band_that_converts_no_better_gets_a_plain_sentence() -> None:
    found = calibration(banded({85: (4, 1), 75: (4, 2), 65: (4, 1)}))
    assert found["findings"] == [
        "leads scored 80+ convert no better than 70–79 (25.0 % vs 50.0 % to opportunity): "
        "check the weights"
    ]


def test_the_sentence_names_the_threshold_when_the_band_below_it_does_as_well() -> None:
    (finding,) = calibration(banded({65: (4, 1), 55: (4, 1)}))["findings"]
    assert finding.startswith("leads scored 60–69 convert no better than below 60")
    assert finding.endswith("check the MQL threshold (60) and the weights")


def test_bands_that_rise_have_no_finding() -> None:
    assert calibration(banded({85: (4, 3), 75: (4, 2), 65: (4, 1), 50: (4, 0)}))["findings"] == []


def test_small_bands_are_not_compared() -> None:
    found = calibration(banded({85: (1, 0), 75: (4, 2)}), calibration_min_leads=3)
    assert found["findings"] == []
    assert found["small_bands"] == ["below 60", "60–69", "80+"]


def test_without_any_opportunity_no_band_is_judged() -> None:
    found = calibration(banded({85: (4, 0), 75: (4, 0)}))
    assert (found["compared"], found["findings"]) == (False, [])


def test_a_win_rate_that_does_not_rise_with_the_score_is_named() -> None:
    leads = [
        *[make(f"hi{n}", Stage.WON if n < 1 else Stage.LOST, score=90) for n in range(4)],
        *[make(f"lo{n}", Stage.WON if n < 3 else Stage.LOST, score=72) for n in range(4)],
    ]
    findings = calibration(leads)["findings"]
    assert findings == [
        "leads scored 80+ convert no better than 70–79 (100.0 % vs 100.0 % to opportunity): "
        "check the weights",
        "leads scored 80+ win no more often than 70–79 (25.0 % vs 75.0 %): check the weights",
    ]


@pytest.mark.parametrize(
    ("bands", "labels"),
    [
        ([50], ["below 50", "50+"]),
        ([40, 62.5], ["below 40", "40 to under 62.5", "62.5+"]),
    ],
)
def test_bands_are_configurable(bands: list[float], labels: list[str]) -> None:
    found = calibration(outcome_leads(), score_bands=bands)
    assert [band["band"] for band in found["bands"]] == labels
    assert sum(band["leads"] for band in found["bands"]) == 9


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[report]\nscore_bands = [80, 70]\n", "report.score_bands: must rise strictly"),
        ("[report]\nscore_bands = []\n", "report.score_bands: needs at least one lower bound"),
        ("[report]\nscore_bands = [0, 70]\n", "report.score_bands: must lie in (0, 100]"),
        ("[report.goals]\nwin_rate = 1.5\n", "report.goals.win_rate: input should be less"),
        ("[report.goals]\nsql_to_opp = 0.5\n", "report.goals.sql_to_opp: unknown key"),
    ],
)
def test_a_bad_report_section_names_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "leadrelay.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_the_settings_default_to_the_sop_goal() -> None:
    settings = ReportConfig()
    assert settings.goals.mql_to_sql == 0.3
    assert settings.score_bands == (60, 70, 80)
    with pytest.raises(ValidationError):
        ReportConfig.model_validate({"calibration_min_leads": 0})


def test_days_to_opportunity_and_to_close() -> None:
    leads = outcome_leads()
    opened = {
        "won_eur": T0 + timedelta(days=2),
        "won_usd": T0 + timedelta(days=4),
        "lost1": T0 + timedelta(days=6),
        "open_eur": T0 - timedelta(days=1),  # before arrival: left out, counted
    }
    times = report_with(leads, opened_at=opened).outcomes["times"]
    to_opportunity = times["to_opportunity"]
    assert (to_opportunity["leads"], to_opportunity["median_days"]) == (3, 4.0)
    assert to_opportunity["p90_days"] == pytest.approx(5.6)
    assert (to_opportunity["without_time"], to_opportunity["before_arrival"]) == (2, 1)
    to_close = times["to_close"]
    assert (to_close["leads"], to_close["median_days"], to_close["without_time"]) == (3, 20.0, 1)
    assert times["from"].startswith("arrival")


@pytest.mark.parametrize(
    ("closed_at", "days", "before"),
    [
        (datetime(2024, 5, 6, 0, 0, tzinfo=UTC), [0.0], 0),  # a close date on the arrival day
        (datetime(2024, 5, 5, 0, 0, tzinfo=UTC), [], 1),  # a day before arrival
    ],
)
def test_a_close_date_is_a_day(closed_at: datetime, days: list[float], before: int) -> None:
    lead = make("won", Stage.WON, closed_at=closed_at)
    to_close = report_with([lead]).outcomes["times"]["to_close"]
    assert to_close["median_days"] == (days[0] if days else None)
    assert to_close["before_arrival"] == before


def test_opportunity_times_come_from_the_field_clock(tmp_path: Path) -> None:
    first, second = T0 + timedelta(days=3), T0 + timedelta(days=5)
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: NOW) as store:
        store.put_field_clocks(
            [
                ("ld_opp", "opportunity_id", "006A", first),
                ("ld_opp", "stage", "won", second),
                ("ld_stage", "stage", "opportunity", second),
                ("ld_won", "stage", "won", second),  # when it was won, not opened
            ]
        )
        found = opportunity_times(store, ["ld_opp", "ld_stage", "ld_won", "ld_none"])
    assert found == {"ld_opp": first, "ld_stage": second}


def test_the_outcome_layer_waits_for_opportunities_and_says_why() -> None:
    leads = [make("sql", Stage.SQL), make("mql", Stage.MQL)]
    layer = report_with(leads).diagnosis["layers"][-1]
    assert layer["layer"] == "outcome"
    assert layer["score"] == 1.0  # MQL → SQL 50 % against 30 %: the only measured step
    assert any(line.startswith("no opportunity read back") for line in layer["evidence"])


def test_the_outcome_layer_scores_its_weakest_step() -> None:
    leads = [
        *[make(f"lost{n}", Stage.LOST, outcome_reason=OutcomeReason.PRICE) for n in range(3)],
        make("won", Stage.WON, outcome_reason=OutcomeReason.PRICE),
    ]
    diagnosis = report_with(leads).diagnosis
    layer = diagnosis["layers"][-1]
    assert layer["score"] == pytest.approx(1.0)  # win rate 25 % meets its 25 % goal
    settings = ReportConfig.model_validate({"goals": {"win_rate": 0.5}})
    layer = report_with(leads, settings).diagnosis["layers"][-1]
    assert layer["score"] == pytest.approx(0.5)
    assert "win rate 25.0 % against a goal of 50.0 %" in layer["evidence"]


def test_tables_show_revenue_reasons_and_calibration() -> None:
    console = Console(width=200, record=True, color_system=None)
    for table in render_tables(report_with(banded({85: (4, 1), 75: (4, 2)}) + outcome_leads())):
        console.print(table)
    text = " ".join(console.export_text().split())  # captions wrap
    assert "Opportunities and revenue by source" in text
    assert "won EUR 1,000.00 · USD 500.00" in text
    assert "│ lost │ no_budget │ 1 │ google 1 │" in text
    assert "leads scored 80+ convert no better than 70–79" in text
