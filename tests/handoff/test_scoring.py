from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from leadrelay.handoff.scoring import (
    DEFAULT_RULES,
    REASON_MAX_CHARS,
    ScoringConfig,
    apply_score,
    score,
)
from leadrelay.handoff.signals import Category, Signal
from leadrelay.model import Lead, Stage, Tier
from leadrelay.project import write_starter_project

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def config(**overrides: Any) -> ScoringConfig:
    """SOP defaults without decay and velocity, so rule points read as written."""
    data: dict[str, Any] = {
        "decay": {"half_life_days": 0},
        "velocity": {"bonus": 0},
        "lists": {"target_industries": ["Software"], "competitors": ["rival.io"]},
    }
    data.update(overrides)
    return ScoringConfig.model_validate(data)


def sig(name: str, ago: timedelta = timedelta(0), count: int = 1) -> Signal:
    return Signal(name, Category.INTENT, NOW - ago, "test", count)


# --- config --------------------------------------------------------------------------------


def test_defaults_are_the_sop() -> None:
    cfg = ScoringConfig()
    assert (cfg.weights.fit, cfg.weights.intent, cfg.weights.engagement) == (40, 40, 20)
    assert cfg.mql_threshold == 60
    assert cfg.required_signal is None
    assert cfg.rules == list(DEFAULT_RULES)


def test_project_starter_section_validates(tmp_path: Path) -> None:
    write_starter_project(tmp_path)
    section = tomllib.loads((tmp_path / "leadrelay.toml").read_text("utf-8"))["scoring"]
    cfg = ScoringConfig.model_validate(section)
    assert cfg.mql_threshold == 60
    assert cfg.weights.model_dump() == {"fit": 40, "intent": 40, "engagement": 20}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"mql_treshold": 60}, "mql_treshold"),
        ({"weights": {"fit": 40, "intent": 40, "engagment": 20}}, "engagment"),
        ({"decay": {"halflife": 3}}, "halflife"),
        (
            {"rules": [{"name": "x", "category": "fit", "points": 1, "when": {"sig": "a"}}]},
            "sig",
        ),
    ],
)
def test_unknown_key_is_named(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as info:
        ScoringConfig.model_validate(data)
    assert any(e["type"] == "extra_forbidden" and e["loc"][-1] == key for e in info.value.errors())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"weights": {"fit": 50}}, "must add up to 100, not 110"),
        ({"mql_threshold": 120}, "less than or equal to 100"),
        (
            {"rules": [{"name": "x", "category": "fit", "points": 1, "when": {}}]},
            "exactly one of signal, field",
        ),
        (
            {
                "rules": [
                    {
                        "name": "x",
                        "category": "fit",
                        "points": 1,
                        "when": {"field": "nope", "in": []},
                    }
                ]
            },
            "'nope' is not a Lead field",
        ),
        (
            {
                "rules": [
                    {"name": "x", "category": "fit", "points": 1, "when": {"field": "industry"}}
                ]
            },
            "needs exactly one of matches, between, in, in_list",
        ),
        (
            {
                "rules": [
                    {
                        "name": "x",
                        "category": "fit",
                        "points": 1,
                        "when": {"field": "industry", "in_list": "partners"},
                    }
                ]
            },
            "list 'partners' is not in",
        ),
        (
            {
                "rules": [
                    {
                        "name": "x",
                        "category": "fit",
                        "points": 1,
                        "when": {"field": "job_title", "matches": "("},
                    }
                ]
            },
            "not a regular expression",
        ),
        (
            {
                "rules": [
                    {
                        "name": "x",
                        "category": "fit",
                        "points": 1,
                        "when": {"field": "employees", "between": [500, 50]},
                    }
                ]
            },
            "low is above high",
        ),
    ],
)
def test_bad_config_is_explained(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ScoringConfig.model_validate(data)


def test_partial_lists_keep_default_names() -> None:
    cfg = ScoringConfig.model_validate({"lists": {"competitors": ["rival.io"]}})
    assert cfg.lists == {"target_industries": [], "competitors": ["rival.io"]}


# --- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead", "signals", "reason", "category", "points"),
    [
        (Lead(job_title="VP of Sales"), [], "Director+ title +15", "fit", 15),
        (Lead(job_title="Head of Growth"), [], "Director+ title +15", "fit", 15),
        (Lead(industry="software"), [], "target industry +10", "fit", 10),
        (Lead(employees=50), [], "company size 50–500 +10", "fit", 10),
        (Lead(employees=500), [], "company size 50–500 +10", "fit", 10),
        (Lead(), [sig("pricing_page")], "pricing page just now +20", "intent", 20),
        (Lead(), [sig("demo_request")], "demo request just now +30", "intent", 30),
        (Lead(), [sig("case_study")], "case study just now +15", "intent", 15),
        (Lead(), [sig("webinar")], "webinar just now +15", "engagement", 15),
        (Lead(), [sig("blog_post")], "blog post just now +3", "engagement", 3),
        (Lead(), [sig("email_open", count=4)], "email open ×4 just now +4", "engagement", 4),
    ],
)
def test_positive_rule(
    lead: Lead, signals: list[Signal], reason: str, category: str, points: float
) -> None:
    result = score(lead, signals, NOW, config())
    assert result.reasons == [reason]
    assert getattr(result.breakdown, category) == points
    assert result.total == points


@pytest.mark.parametrize(
    ("lead", "signals", "reason"),
    [
        (Lead(email="jane@gmail.com"), [], "free-mail address -10"),
        (Lead(job_title="Student"), [], "student / job-seeker title -20"),
        (Lead(company_domain="rival.io"), [], "competitor domain -40"),
        (Lead(email="jo@acme.io"), [sig("job_seeker")], "careers page just now -10"),
        (Lead(email_opt_in=False), [], "unsubscribed -20"),
        (Lead(), [sig("unsubscribed")], "unsubscribed -20"),
    ],
)
def test_negative_rule(lead: Lead, signals: list[Signal], reason: str) -> None:
    base = Lead(job_title="VP Sales", employees=100, industry="Software")
    merged = base.model_copy(update=lead.model_dump(exclude_unset=True))
    result = score(merged, [*signals, sig("webinar"), sig("case_study")], NOW, config())
    without = score(base, [sig("webinar"), sig("case_study")], NOW, config())
    assert reason in result.reasons
    assert result.total < without.total


def test_outside_range_does_not_fire() -> None:
    result = score(Lead(employees=501, job_title="Engineer"), [], NOW, config())
    assert result.reasons == []
    assert result.total == 0


def test_positive_points_capped_then_negatives_subtracted() -> None:
    cfg = config(
        rules=[
            {
                "name": "a",
                "category": "fit",
                "points": 30,
                "when": {"field": "employees", "between": [1, 9]},
            },
            {
                "name": "b",
                "category": "fit",
                "points": 30,
                "when": {"field": "industry", "in": ["retail"]},
            },
            {"name": "c", "category": "fit", "points": -15, "when": {"free_mail": True}},
        ]
    )
    lead = Lead(employees=5, industry="retail", email="a@gmail.com")
    assert score(lead, [], NOW, cfg).breakdown.fit == 25  # min(60, 40) - 15


def test_category_floored_at_zero() -> None:
    result = score(Lead(company_domain="rival.io", job_title="VP"), [], NOW, config())
    assert result.breakdown.fit == 0
    assert result.total == 0


def test_max_times_limits_occurrences() -> None:
    cfg = config(
        rules=[
            {
                "name": "pricing",
                "category": "intent",
                "points": 10,
                "max_times": 2,
                "when": {"signal": "pricing_page"},
            }
        ]
    )
    signals = [sig("pricing_page", timedelta(hours=h)) for h in (1, 2, 3)]
    assert score(Lead(), signals, NOW, cfg).total == 20


def test_future_signals_are_ignored() -> None:
    assert score(Lead(), [sig("pricing_page", -timedelta(days=1))], NOW, config()).total == 0


# --- decay and velocity ----------------------------------------------------------------------


def test_decay_halves_at_half_life() -> None:
    cfg = config(decay={"half_life_days": 30})
    result = score(Lead(), [sig("pricing_page", timedelta(days=30))], NOW, cfg)
    assert result.breakdown.intent == 10
    assert result.reasons == ["pricing page 30 d ago +20 (decayed 10)"]


def test_decay_reason_names_age() -> None:
    cfg = config(decay={"half_life_days": 30})
    result = score(Lead(), [sig("pricing_page", timedelta(days=2))], NOW, cfg)
    assert result.reasons == ["pricing page 2 d ago +20 (decayed 19.1)"]


def test_decay_does_not_touch_fit_rules() -> None:
    cfg = config(decay={"half_life_days": 1})
    assert score(Lead(job_title="CEO"), [], NOW, cfg).breakdown.fit == 15


@pytest.mark.parametrize(("ago_days", "bonus"), [(1, 5), (6.9, 5), (8, 0)])
def test_velocity_bonus_within_window(ago_days: float, bonus: float) -> None:
    cfg = config(velocity={"window_days": 7, "min_points": 30, "bonus": 5})
    signals = [sig("demo_request", timedelta(days=ago_days))]
    result = score(Lead(), signals, NOW, cfg)
    assert result.breakdown.intent == 30 + bonus
    assert any(r.startswith("velocity") for r in result.reasons) == bool(bonus)


def test_velocity_needs_min_points() -> None:
    cfg = config(velocity={"window_days": 7, "min_points": 30, "bonus": 5})
    assert score(Lead(), [sig("pricing_page")], NOW, cfg).breakdown.intent == 20


# --- MQL and tiers -----------------------------------------------------------------------------

FIT_40 = Lead(job_title="Director", employees=100, industry="Software", email="d@acme.io")


def test_threshold_is_inclusive() -> None:
    signals = [sig("pricing_page")]
    assert score(FIT_40, signals, NOW, config()).total == 55  # fit 35 + intent 20
    assert score(FIT_40, signals, NOW, config(mql_threshold=55)).is_mql is True
    assert score(FIT_40, signals, NOW, config(mql_threshold=55.5)).is_mql is False


def test_default_threshold_is_60() -> None:
    assert score(FIT_40, [sig("pricing_page")], NOW, config()).is_mql is False
    assert score(FIT_40, [sig("pricing_page"), sig("docs")], NOW, config()).is_mql is True


def test_required_signal() -> None:
    cfg = config(required_signal="demo_request")
    signals = [sig("pricing_page"), sig("case_study")]
    result = score(FIT_40, signals, NOW, cfg)
    assert result.total >= 60
    assert result.is_mql is False
    assert "but no demo_request signal" in result.qualification_reason
    assert score(FIT_40, [*signals, sig("demo_request")], NOW, cfg).is_mql is True


@pytest.mark.parametrize(
    ("lead", "signals", "tier"),
    [
        (FIT_40, [sig("demo_request", timedelta(hours=23))], Tier.HOT),
        (FIT_40, [sig("pricing_page", timedelta(hours=2)), sig("case_study")], Tier.HOT),
        (FIT_40, [sig("demo_request", timedelta(hours=25))], Tier.WARM),  # MQL, request too old
        (FIT_40, [sig("case_study", timedelta(hours=1)), sig("webinar")], Tier.WARM),  # MQL
        (Lead(), [sig("demo_request"), sig("webinar")], Tier.WARM),  # 45 = 60 - 15
        (Lead(), [sig("demo_request")], Tier.COLD),  # not MQL: hot needs MQL
        (Lead(), [], Tier.COLD),
    ],
)
def test_tiers(lead: Lead, signals: list[Signal], tier: Tier) -> None:
    assert score(lead, signals, NOW, config()).tier is tier


def test_hot_without_mql_when_configured() -> None:
    result = score(Lead(), [sig("demo_request")], NOW, config(hot_requires_mql=False))
    assert result.tier is Tier.HOT


def test_qualification_reason_fits_a_crm_text_field() -> None:
    signals = [sig(n) for n in ("demo_request", "pricing_page", "case_study", "webinar")]
    signals += [sig("blog_post", timedelta(hours=h)) for h in range(1, 30)]
    result = score(FIT_40, signals, NOW, config())
    assert len(result.qualification_reason) <= REASON_MAX_CHARS
    assert result.qualification_reason.startswith("MQL (hot): score ")
    assert "Director+ title +15" in result.qualification_reason


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        score(Lead(), [], datetime(2024, 5, 1), config())


# --- apply_score ---------------------------------------------------------------------------


def test_apply_score_writes_lead() -> None:
    lead = FIT_40.model_copy(update={"intent_signals": ["webinar"]})
    engagement = Signal("email_open", Category.ENGAGEMENT, NOW, "test", 3)
    result = score(lead, [sig("demo_request"), engagement, sig("pricing_page")], NOW, config())
    apply_score(lead, result)
    assert lead.score == result.total
    assert lead.score_breakdown == result.breakdown
    assert lead.qualification_reason == result.qualification_reason
    assert lead.intent_signals == ["webinar", "demo_request", "pricing_page"]
    assert lead.tier is Tier.HOT
    assert lead.stage is Stage.MQL


@pytest.mark.parametrize(
    "stage",
    [
        Stage.SAL,
        Stage.SQL,
        Stage.OPPORTUNITY,
        Stage.WON,
        Stage.LOST,
        Stage.RECYCLED,
        Stage.DISQUALIFIED,
    ],
)
def test_apply_score_keeps_later_stages(stage: Stage) -> None:
    lead = FIT_40.model_copy(update={"stage": stage})
    apply_score(lead, score(lead, [sig("demo_request")], NOW, config()))
    assert lead.stage is stage


def test_apply_score_never_moves_back() -> None:
    lead = Lead(stage=Stage.MQL)
    result = score(lead, [], NOW, config())
    apply_score(lead, result)
    assert result.is_mql is False
    assert lead.stage is Stage.MQL


# --- properties ----------------------------------------------------------------------------

_names = st.sampled_from(
    [
        "pricing_page",
        "demo_request",
        "case_study",
        "webinar",
        "blog_post",
        "email_open",
        "job_seeker",
        "unsubscribed",
        "docs",
        "form_submission",
    ]
)
_signals = st.lists(
    st.builds(
        lambda name, hours, count: Signal(
            name, Category.INTENT, NOW - timedelta(hours=hours), "prop", count
        ),
        _names,
        st.floats(min_value=-48, max_value=24 * 400),
        st.integers(min_value=1, max_value=500),
    ),
    max_size=20,
)
_leads = st.builds(
    Lead,
    job_title=st.sampled_from([None, "VP Sales", "Student", "CTO", "Engineer"]),
    employees=st.one_of(st.none(), st.integers(min_value=0, max_value=100_000)),
    industry=st.sampled_from([None, "Software", "Retail"]),
    email=st.sampled_from([None, "a@gmail.com", "b@acme.io", "c@rival.io"]),
    email_opt_in=st.sampled_from([None, True, False]),
)
_weights = st.integers(min_value=0, max_value=100).flatmap(
    lambda fit: st.integers(min_value=0, max_value=100 - fit).map(
        lambda intent: {"fit": fit, "intent": intent, "engagement": 100 - fit - intent}
    )
)


@settings(max_examples=150, deadline=None)
@given(lead=_leads, signals=_signals, weights=_weights, half_life=st.sampled_from([0, 1, 30]))
def test_score_stays_in_bounds(
    lead: Lead, signals: list[Signal], weights: dict[str, int], half_life: int
) -> None:
    cfg = ScoringConfig.model_validate(
        {
            "weights": weights,
            "decay": {"half_life_days": half_life},
            "lists": {"target_industries": ["software"], "competitors": ["rival.io"]},
        }
    )
    result = score(lead, signals, NOW, cfg)
    assert 0 <= result.total <= 100
    for category in ("fit", "intent", "engagement"):
        assert 0 <= getattr(result.breakdown, category) <= weights[category]
    assert result.is_mql == (result.total >= 60)
    assert len(result.qualification_reason) <= REASON_MAX_CHARS
