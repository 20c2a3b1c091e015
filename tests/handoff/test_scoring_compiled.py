"""The scorer's compiled rules give what walking every rule for every lead gives.

:class:`~leadrelay.handoff.scoring.Scorer` compiles its rules once (a callable per lead
rule, signal rules filed by signal name). :func:`walked_score` below is the general reading
of the module's scoring rules, every rule tested per lead in order; the two must agree on
every lead, signal list and rule set.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.handoff.scoring import (
    Condition,
    Rule,
    Scorer,
    ScoreResult,
    ScoringConfig,
    _number,
    _signed,
)
from leadrelay.handoff.signals import Category, Signal
from leadrelay.model import FREE_MAIL_DOMAINS, Lead, ScoreBreakdown, Stage, Tier

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
CATEGORIES = (Category.FIT, Category.INTENT, Category.ENGAGEMENT)


def _text(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def _holds(condition: Condition, lead: Lead, config: ScoringConfig, signals: list[Signal]) -> bool:
    if condition.free_mail:
        return lead.email is not None and lead.email.rpartition("@")[2] in FREE_MAIL_DOMAINS
    if condition.opted_out:
        return lead.email_opt_in is False or any(s.name == "unsubscribed" for s in signals)
    assert condition.field is not None
    if condition.field.startswith("custom."):
        value = lead.custom.get(condition.field.removeprefix("custom."))
    else:
        value = getattr(lead, condition.field)
    if value is None:
        return False
    if condition.matches is not None:
        return re.search(condition.matches, _text(value)) is not None
    if condition.between is not None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        return condition.between[0] <= number <= condition.between[1]
    allowed = condition.in_ if condition.in_ is not None else config.lists[condition.in_list or ""]
    return _text(value).casefold() in {item.casefold() for item in allowed}


def walked_score(scorer: Scorer, lead: Lead, signals: list[Signal], now: datetime) -> ScoreResult:
    """The score by testing every rule of the config, in order, for this lead."""
    config = scorer.config
    positive = dict.fromkeys(CATEGORIES, 0.0)
    negative = dict.fromkeys(CATEGORIES, 0.0)
    reasons: list[str] = []
    recent_points = 0.0
    for rule in config.rules:
        if rule.when.signal is not None:
            fired = scorer._signal_rule(rule, signals, now)
            if fired is None:
                continue
            points, recent, reason = fired
            recent_points += max(recent, 0.0)
        else:
            if not _holds(rule.when, lead, config, signals):
                continue
            points, reason = rule.points, f"{rule.name} {_signed(rule.points)}"
        if points >= 0:
            positive[rule.category] += points
        else:
            negative[rule.category] += points
        reasons.append(reason)
    velocity = config.velocity
    if velocity.bonus > 0 and recent_points >= velocity.min_points:
        positive[velocity.category] += velocity.bonus
        reasons.append(
            f"velocity {_number(recent_points)} points in {_number(velocity.window_days)} d "
            f"{_signed(velocity.bonus)}"
        )
    values = {
        c: round(max(min(positive[c], config.weights.of(c)) + negative[c], 0.0), 2)
        for c in CATEGORIES
    }
    breakdown = ScoreBreakdown(
        fit=values[Category.FIT],
        intent=values[Category.INTENT],
        engagement=values[Category.ENGAGEMENT],
    )
    total = round(sum(values.values()), 2)
    has_required = config.required_signal is None or any(
        s.name == config.required_signal and s.at <= now for s in signals
    )
    is_mql = total >= config.mql_threshold and has_required
    hot_since = now - timedelta(hours=config.hot_window_hours)
    hot = any(s.name in config.hot_signals and hot_since <= s.at <= now for s in signals)
    if hot and (is_mql or not config.hot_requires_mql):
        tier = Tier.HOT
    elif is_mql or total >= config.mql_threshold - config.warm_margin:
        tier = Tier.WARM
    else:
        tier = Tier.COLD
    return ScoreResult(
        total=total,
        breakdown=breakdown,
        reasons=reasons,
        is_mql=is_mql,
        tier=tier,
        qualification_reason=scorer._qualification_reason(
            total, breakdown, reasons, is_mql, has_required, tier, lead.stage
        ),
        signals=list(dict.fromkeys(s.name for s in signals if s.category is Category.INTENT)),
    )


_SIGNAL_NAMES = ["pricing_page", "demo_request", "webinar", "email_open", "unsubscribed", "docs"]

_conditions = st.one_of(
    st.builds(lambda name: {"signal": name}, st.sampled_from(_SIGNAL_NAMES)),
    st.builds(
        lambda field, pattern: {"field": field, "matches": pattern},
        st.sampled_from(["job_title", "email", "industry", "stage", "custom.plan"]),
        st.sampled_from([r"(?i)\bvp\b", r"^S", "io$", "mql", "a"]),
    ),
    st.builds(
        lambda field, low, span: {"field": field, "between": (low, low + span)},
        st.sampled_from(["employees", "annual_revenue", "score", "job_title", "custom.seats"]),
        st.sampled_from([-5, 0, 5, 12, 50, 1200]),
        st.sampled_from([0, 7, 450, 5000]),
    ),
    st.builds(
        lambda field, values: {"field": field, "in": values},
        st.sampled_from(["industry", "country", "job_title", "custom.plan"]),
        st.lists(st.sampled_from(["Software", "SOFTWARE", "US", "de", "cto", "Pro"]), max_size=3),
    ),
    st.builds(
        lambda field, name: {"field": field, "in_list": name},
        st.sampled_from(["industry", "company_domain"]),
        st.sampled_from(["target_industries", "competitors"]),
    ),
    st.just({"free_mail": True}),
    st.just({"opted_out": True}),
)
_rules = st.lists(
    st.builds(
        lambda when, category, points, max_times, name: Rule(
            name=name,
            category=category,
            points=points,
            when=Condition.model_validate(when),
            max_times=max_times,
        ),
        _conditions,
        st.sampled_from(CATEGORIES),
        st.sampled_from([-40, -10, -0.5, 0, 1, 3, 7.5, 15, 30, 45]),
        st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
        st.sampled_from(["a", "b", "rule c"]),
    ),
    max_size=12,
)
_signals = st.lists(
    st.builds(
        lambda name, category, hours, count: Signal(
            name, category, NOW - timedelta(hours=hours), "prop", count
        ),
        st.sampled_from(_SIGNAL_NAMES),
        st.sampled_from(CATEGORIES),
        st.floats(min_value=-48, max_value=24 * 100),
        st.integers(min_value=1, max_value=30),
    ),
    max_size=12,
)
_leads = st.builds(
    Lead,
    job_title=st.sampled_from([None, "VP Sales", "Student", "CTO", "Engineer", "1200"]),
    employees=st.sampled_from([None, 0, 5, 12, 50, 500, 1200, 4000]),
    annual_revenue=st.sampled_from([None, 0.0, 12.0, 57.5, 1e7]),
    industry=st.sampled_from([None, "Software", "Retail"]),
    country=st.sampled_from([None, "US", "DE"]),
    email=st.sampled_from([None, "a@gmail.com", "b@acme.io", "c@rival.io"]),
    email_opt_in=st.sampled_from([None, True, False]),
    stage=st.sampled_from(list(Stage)),
    custom=st.fixed_dictionaries(
        {},
        optional={
            "plan": st.sampled_from(["Pro", "free", ""]),
            "seats": st.sampled_from([5, "12", "many", None]),
        },
    ),
)
_configs = st.builds(
    lambda rules, half_life, bonus, required, threshold: ScoringConfig.model_validate(
        {
            "rules": rules,
            "decay": {"half_life_days": half_life},
            "velocity": {"bonus": bonus, "min_points": 10, "window_days": 3},
            "required_signal": required,
            "mql_threshold": threshold,
            "lists": {"target_industries": ["software"], "competitors": ["rival.io"]},
        }
    ),
    _rules,
    st.sampled_from([0, 1, 30]),
    st.sampled_from([0, 5]),
    st.sampled_from([None, "demo_request"]),
    st.sampled_from([0, 20, 60]),
)


@settings(max_examples=300, deadline=None)
@given(config=_configs, lead=_leads, signals=_signals)
def test_compiled_rules_score_as_walking_every_rule(
    config: ScoringConfig, lead: Lead, signals: list[Signal]
) -> None:
    scorer = Scorer(config)
    assert scorer.score(lead, signals, NOW) == walked_score(scorer, lead, signals, NOW)
