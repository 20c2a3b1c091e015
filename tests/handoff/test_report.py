from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from leadrelay.config import Config
from leadrelay.handoff.report import (
    LAYERS,
    Report,
    build_report,
    funnel_position,
    render_tables,
    report_command_data,
)
from leadrelay.handoff.sla import evaluate
from leadrelay.model import Lead, Owner, RejectionReason, Stage, Tier
from leadrelay.sync.state import LedgerCount, LedgerState, StateStore

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=4)
REP = Owner(id="u1", email="rep@example.com")


def make(key: str, stage: Stage, **fields: Any) -> Lead:
    values: dict[str, Any] = {
        "key": key,
        "stage": stage,
        "created_at": T0,
        "email": f"{key}@acme.io",
        "owner": REP,
        "assigned_at": T0 + timedelta(minutes=5),
        "score": 70,
        "qualification_reason": "fit and demo request",
        "utm_source": "google",
        "utm_campaign": "spring",
        "form_id": "pricing",
    }
    values.update(fields)
    return Lead.model_validate(values)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def synthetic_leads() -> list[Lead]:
    """Twelve live leads and a test lead, each hand-placed in the funnel."""
    worked = {"first_action_at": minutes(20), "accepted_at": minutes(60)}
    return [
        make("won", Stage.WON, tier=Tier.HOT, **worked),
        make("opp", Stage.OPPORTUNITY, first_action_at=minutes(45), accepted_at=minutes(90)),
        make("lost", Stage.LOST, **worked),
        make("sql", Stage.SQL, first_action_at=minutes(100), accepted_at=minutes(120)),
        make(
            "sal1", Stage.SAL, tier=Tier.HOT, first_action_at=minutes(200), accepted_at=minutes(300)
        ),
        make("sal2", Stage.SAL, **worked),
        make("mql_idle", Stage.MQL),
        make("mql_touched", Stage.MQL, first_action_at=minutes(600)),
        make(
            "dq1",
            Stage.DISQUALIFIED,
            rejection_reason=RejectionReason.BAD_FIT,
            first_action_at=minutes(30),
            utm_source="linkedin",
            form_id="demo",
        ),
        make(
            "recycled",
            Stage.RECYCLED,
            rejection_reason=RejectionReason.TIMING,
            first_action_at=minutes(2000),
            utm_source="linkedin",
            utm_campaign="fall",
            form_id="demo",
        ),
        make(
            "dq2",
            Stage.DISQUALIFIED,
            rejection_reason=RejectionReason.BAD_FIT,
            first_action_at=minutes(40),
        ),
        make(
            "cold",
            Stage.LEAD,
            owner=None,
            assigned_at=None,
            score=None,
            qualification_reason=None,
        ),
        make("testwon", Stage.WON, is_test=True, rejection_reason=RejectionReason.OTHER),
    ]


def ledger_counts() -> list[LedgerCount]:
    day1, day2 = date(2024, 5, 6), date(2024, 5, 7)
    return [
        LedgerCount("pricing", "webform", "hs", LedgerState.VERIFIED, 5, day1),
        LedgerCount("pricing", "webform", "hs", LedgerState.WRITTEN, 2, day1),
        LedgerCount("pricing", "webform", "hs", LedgerState.FAILED, 2, day1),
        LedgerCount("pricing", "webform", "hs", LedgerState.RECEIVED, 1, day1),
        LedgerCount("demo", "meta_lead_ads", "hs", LedgerState.VERIFIED, 4, day2),
    ]


def report_of(leads: list[Lead] | None = None, counts: list[LedgerCount] | None = None) -> Report:
    chosen = synthetic_leads() if leads is None else leads
    return build_report(
        chosen,
        ledger_counts() if counts is None else counts,
        evaluate(chosen, NOW),
        NOW,
    )


@pytest.mark.parametrize(
    ("stage", "fields", "position"),
    [
        (Stage.LEAD, {}, -1),
        (Stage.MQL, {}, 0),
        (Stage.DISQUALIFIED, {}, 0),
        (Stage.DISQUALIFIED, {"accepted_at": T0}, 1),
        (Stage.RECYCLED, {}, -1),
        (Stage.RECYCLED, {"rejection_reason": RejectionReason.TIMING}, 0),
        (Stage.LOST, {}, 3),
        (Stage.WON, {}, 4),
    ],
)
def test_funnel_position(stage: Stage, fields: dict[str, Any], position: int) -> None:
    assert funnel_position(make("x", stage, **fields)) == position


def test_funnel_counts_a_later_stage_as_reaching_the_earlier_ones() -> None:
    stages = report_of().funnel["stages"]
    assert [(s["stage"], s["count"]) for s in stages] == [
        ("mql", 11),
        ("sal", 6),
        ("sql", 4),
        ("opportunity", 3),
        ("won", 1),
    ]
    assert stages[0]["rate_from_previous"] is None
    assert stages[1]["rate_from_previous"] == pytest.approx(6 / 11)
    assert stages[4]["rate_from_previous"] == pytest.approx(1 / 3)
    assert stages[4]["rate_from_mql"] == pytest.approx(1 / 11)


@pytest.mark.parametrize(
    ("drop", "actual", "meets"),
    [
        (set(), 4 / 11, True),
        ({"won", "opp"}, 2 / 9, False),
    ],
)
def test_mql_to_sql_against_the_goal(drop: set[str], actual: float, meets: bool) -> None:
    leads = [lead for lead in synthetic_leads() if lead.key not in drop]
    goal = report_of(leads).funnel["mql_to_sql"]
    assert goal["actual"] == pytest.approx(actual)
    assert goal["goal"] == 0.30
    assert goal["meets_goal"] is meets


def test_empty_funnel_has_no_rates() -> None:
    goal = report_of([], []).funnel["mql_to_sql"]
    assert goal == {"actual": None, "goal": 0.30, "meets_goal": None}


def test_test_leads_never_count() -> None:
    report = report_of()
    assert report.lead_count == 12
    assert report.funnel["stages"][-1]["count"] == 1
    assert "other" not in report.rejections["by_reason"]
    assert all(b["lead_key"] != "testwon" for b in report.sla["breaches"])


def test_rejections_by_reason_source_form_campaign() -> None:
    rejections = report_of().rejections
    assert rejections["total"] == 3
    assert rejections["by_reason"] == {"bad_fit": 2, "timing": 1}
    assert rejections["by_source"] == {
        "google": {"bad_fit": 1},
        "linkedin": {"bad_fit": 1, "timing": 1},
    }
    assert rejections["by_form"] == {"demo": {"bad_fit": 1, "timing": 1}, "pricing": {"bad_fit": 1}}
    assert rejections["by_campaign"] == {"fall": {"timing": 1}, "spring": {"bad_fit": 2}}


def test_ledger_received_written_verified_missing() -> None:
    ledger = report_of().ledger
    assert ledger["rows"] == [
        {
            "day": "2024-05-06",
            "form": "pricing",
            "source": "webform",
            "destination": "hs",
            "received": 10,
            "written": 7,
            "verified": 5,
            "failed": 2,
            "missing": 3,
        },
        {
            "day": "2024-05-07",
            "form": "demo",
            "source": "meta_lead_ads",
            "destination": "hs",
            "received": 4,
            "written": 4,
            "verified": 4,
            "failed": 0,
            "missing": 0,
        },
    ]
    assert ledger["totals"]["missing"] == 3
    assert ledger["by_form"]["pricing"]["received"] == 10


def test_time_to_first_action() -> None:
    action = report_of().time_to_first_action
    # minutes to first action of the ten acted leads, sorted:
    # 20 20 20 30 40 45 100 200 600 2000
    assert action["with_action"] == 10
    assert action["median_hours"] == pytest.approx(42.5 / 60)
    assert action["p90_hours"] == pytest.approx((600 + 0.1 * 1400) / 60)
    assert action["mql_without_action"] == 1


def test_sla_compliance_and_histogram() -> None:
    sla = report_of().sla
    # hot: "won" acted at 20 min (on time), "sal1" at 200 min (breached by 140)
    assert sla["by_kind"]["hot"] == {
        "clocks": 2,
        "on_time": 1,
        "breached": 1,
        "pending": 0,
        "at_risk": 0,
        "compliance": 0.5,
    }
    # mql: eleven MQLs; "mql_idle" and "mql_touched" have no verdict after four days,
    # "recycled" was rejected at 2000 min > 5 + 1440
    assert sla["by_kind"]["mql"]["breached"] == 3
    assert sla["by_kind"]["mql"]["on_time"] == 8
    assert sla["by_kind"]["unassigned"]["breached"] == 1
    assert sla["open_breaches"] == 3
    # most overdue first: "cold" has had no owner for 84 h against 12 h
    assert (sla["breaches"][0]["lead_key"], sla["breaches"][0]["kind"]) == ("cold", "unassigned")
    counts = {bucket["bucket"]: bucket["count"] for bucket in sla["histogram"]}
    assert counts == {
        "0-15": 0,
        "15-30": 3,
        "30-60": 3,
        "60-120": 1,
        "120-240": 1,
        "240-480": 0,
        "480-1440": 1,
        "1440+": 1,
    }


def test_diagnosis_scores_each_layer_and_names_the_weakest() -> None:
    diagnosis = report_of().diagnosis
    scores = {layer["layer"]: layer["score"] for layer in diagnosis["layers"]}
    assert list(scores) == list(LAYERS)
    assert scores["capture"] == pytest.approx(11 / 14, abs=1e-4)
    assert scores["qualification"] == pytest.approx(11 / 12, abs=1e-4)
    assert scores["routing"] == pytest.approx(11 / 12, abs=1e-4)
    # decided hot + mql clocks: 9 on time of 13
    assert scores["action"] == pytest.approx(9 / 13, abs=1e-4)
    # worked: everything from MQL on except mql_idle (10); mql_touched has no status yet
    assert scores["status"] == pytest.approx(9 / 10, abs=1e-4)
    assert scores["outcome"] == 1.0
    assert diagnosis["weakest"] == "action"
    assert any("hot SLA: 1 on time, 1 breached" in e for e in diagnosis["weakest_evidence"])


def test_diagnosis_points_at_routing_when_owners_are_missing() -> None:
    leads = [
        lead.model_copy(update={"owner": None, "assigned_at": None}) for lead in synthetic_leads()
    ]
    diagnosis = report_of(leads).diagnosis
    assert diagnosis["weakest"] == "routing"
    assert diagnosis["weakest_evidence"][0] == "0 of 12 leads have an owner"


def test_diagnosis_points_at_capture_when_the_ledger_leaks() -> None:
    counts = [LedgerCount("pricing", "webform", "hs", LedgerState.RECEIVED, 30, date(2024, 5, 6))]
    counts += ledger_counts()
    diagnosis = report_of(counts=counts).diagnosis
    assert diagnosis["weakest"] == "capture"
    assert "form pricing: 33 of 40 missing" in diagnosis["weakest_evidence"]


def test_diagnosis_names_no_weakest_layer_when_every_layer_is_whole() -> None:
    # Only the capture layer is measured (no leads read from a CRM), and nothing leaked.
    counts = [LedgerCount("pricing", "webform", "hs", LedgerState.WRITTEN, 3, date(2024, 5, 6))]
    diagnosis = report_of([], counts=counts).diagnosis
    scores = {layer["layer"]: layer["score"] for layer in diagnosis["layers"]}
    assert scores["capture"] == 1.0
    assert (diagnosis["weakest"], diagnosis["weakest_evidence"]) == (None, [])


def test_json_has_the_contract_keys() -> None:
    data = json.loads(report_of().to_json())
    sections = {"funnel", "ledger", "sla", "rejections", "outcomes", "diagnosis"}
    assert sections <= set(data)
    assert set(data) - sections == {
        "generated_at",
        "lead_count",
        "time_to_first_action",
    }


def test_tables_render_on_a_terminal() -> None:
    console = Console(width=160, record=True, color_system=None)
    for table in render_tables(report_of()):
        console.print(table)
    text = console.export_text()
    assert "MQL → SQL 36.4 % vs goal 30.0 %: meets the goal" in text
    assert "action ← weakest" in text
    assert "pricing" in text


def test_report_command_data_reads_the_store(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: NOW) as store:
        store.mark_received("ld_a", "hs", form="pricing", source="webform")
        store.mark_received("ld_t", "hs", form="pricing", source="webform", is_test=True)
        config = Config.model_validate({"sla": {"hot_hours": 2}})
        report = report_command_data(config, store, synthetic_leads())
    assert report.ledger["totals"]["received"] == 1
    assert report.ledger["totals"]["missing"] == 1
    assert report.sla["by_kind"]["hot"]["breached"] == 1  # sal1 at 200 min > 2 h


def test_the_capture_layer_names_fields_the_crm_refused() -> None:
    chosen = synthetic_leads()
    report = build_report(
        chosen,
        ledger_counts(),
        evaluate(chosen, NOW),
        NOW,
        [("zoho", "industry"), ("zoho", "industry"), ("salesforce", "utm_term")],
    )
    assert report.ledger["field_problems"] == {
        "open": 3,
        "by_field": {"salesforce.utm_term": 1, "zoho.industry": 2},
    }
    [capture] = [layer for layer in report.diagnosis["layers"] if layer["layer"] == "capture"]
    evidence = capture["evidence"]
    assert any(line.startswith("2 lead(s) written without zoho.industry") for line in evidence)
