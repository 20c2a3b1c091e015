"""The handoff report behind ``leadrelay report`` (DESIGN §12).

:func:`build_report` turns the current leads, the ledger counts of the state store and the SLA
clocks into a :class:`Report` with these sections:

``funnel``
    How many leads reached MQL, SAL, SQL, opportunity and won (a lead at a later stage counts as
    having reached the earlier ones; a disqualified lead reached MQL, a lost one opportunity), the
    conversion rate of each step against its goal (``[report.goals]``), and MQL → SQL against
    the SOP's goal of 30 %. ``period`` names
    the days reported (``report --since/--until``), ``by_week`` the trend week by week (weeks
    start on Monday, by arrival) and ``breakdowns`` the leads by channel, source (a capture form
    or a system), campaign and form.
``time_to_first_action``
    Hours from arrival to sales' first action: median and 90th percentile.
``sla``
    Compliance per clock (on time / decided: a pending or at-risk clock is not decided yet and
    does not count), how many clocks are decided and pending, breaches, and a histogram of
    minutes to first action.
``rejections``
    Rejection reasons, in total and by source, form and campaign.
``outcomes``
    After SQL: opportunities reached, open, won and lost; the win rate (won ÷ (won + lost))
    against its goal; pipeline (open opportunities' amounts) and won revenue per currency, never
    summed across currencies, in total and by source, channel, campaign, form and first touch;
    win/loss reasons by source; the score calibration (conversion to opportunity and win rate
    per score band, with a sentence for each band that does no better than the one below); and
    the days from arrival to the opportunity and to its close (median, p90), each saying what
    it is measured from and to.
``ledger``
    Per day, form, source and destination: received, written, verified, failed and missing
    (received − written).
``diagnosis``
    The six layers of a handoff — capture, qualification, routing, action, status, outcome —
    each scored 0–1 with its evidence, and the weakest layer named. The outcome layer scores
    the weakest of MQL → SQL, SQL → opportunity and the win rate against their goals.

Test leads (``is_test``) never count. :meth:`Report.to_dict` holds exactly the keys
``funnel``, ``outcomes``, ``ledger``, ``sla``, ``rejections`` and ``diagnosis`` plus the
metadata keys ``generated_at``, ``lead_count`` and ``time_to_first_action``.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from rich.console import RenderableType
from rich.table import Table

from leadrelay.config import Config
from leadrelay.handoff.report_settings import ReportConfig, ReportGoals
from leadrelay.handoff.sla import (
    ClockKind,
    SlaConfig,
    SlaState,
    SlaStatus,
    evaluate,
    load_sla_config,
)
from leadrelay.model import LOST_REASONS, WON_REASONS, Lead, OutcomeReason, Stage
from leadrelay.sync.state import LedgerCount, LedgerState, StateStore, ledger_table

__all__ = [
    "BAND_COLUMNS",
    "FUNNEL_STAGES",
    "LAYERS",
    "OUTCOME_COLUMNS",
    "OUTCOME_DIMENSIONS",
    "SLA_BUCKETS",
    "Period",
    "Report",
    "arrival_times",
    "band_cells",
    "build_report",
    "calibration_note",
    "funnel_position",
    "money_text",
    "opportunity_times",
    "outcome_cells",
    "render_tables",
    "report_command_data",
]

#: The funnel steps, in order.
FUNNEL_STAGES: tuple[Stage, ...] = (Stage.MQL, Stage.SAL, Stage.SQL, Stage.OPPORTUNITY, Stage.WON)

#: The goal (a ``[report.goals]`` key) of the step into each funnel stage after MQL.
_STEP_GOALS: dict[Stage, str] = {
    Stage.SAL: "mql_to_sal",
    Stage.SQL: "sal_to_sql",
    Stage.OPPORTUNITY: "sql_to_opportunity",
    Stage.WON: "opportunity_to_won",
}

#: The groups pipeline and won revenue are shown by, in order.
OUTCOME_DIMENSIONS: tuple[str, ...] = ("source", "channel", "campaign", "form", "first_touch")

#: The layers of the handoff diagnosis, upstream first (a tie names the upstream layer).
LAYERS: tuple[str, ...] = ("capture", "qualification", "routing", "action", "status", "outcome")

#: Histogram buckets of minutes to first action: (label, lower bound, upper bound exclusive).
SLA_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0-15", 0, 15),
    ("15-30", 15, 30),
    ("30-60", 30, 60),
    ("60-120", 60, 120),
    ("120-240", 120, 240),
    ("240-480", 240, 480),
    ("480-1440", 480, 1440),
    ("1440+", 1440, math.inf),
)

_UNKNOWN = "(none)"

# The last funnel step each terminal or side stage implies.
_POSITION: dict[Stage, int] = {
    Stage.LEAD: -1,
    Stage.RECYCLED: -1,
    Stage.MQL: 0,
    Stage.DISQUALIFIED: 0,
    Stage.SAL: 1,
    Stage.SQL: 2,
    Stage.OPPORTUNITY: 3,
    Stage.LOST: 3,
    Stage.WON: 4,
}


def funnel_position(lead: Lead) -> int:
    """Index in :data:`FUNNEL_STAGES` of the last step a lead reached; -1 before MQL.

    Disqualified and recycled leads reached MQL when sales gave them a verdict (a rejection
    reason), and SAL when sales had accepted them first (``accepted_at``). A lost lead reached
    opportunity.
    """
    position = _POSITION[lead.stage]
    if lead.stage in (Stage.DISQUALIFIED, Stage.RECYCLED, Stage.LEAD):
        if lead.rejection_reason is not None or lead.stage is Stage.DISQUALIFIED:
            position = max(position, 0)
        if lead.accepted_at is not None and lead.stage is not Stage.LEAD:
            position = max(position, 1)
    return position


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _percentile(values: Sequence[float], share: float) -> float | None:
    """Linear-interpolated percentile of sorted values (``share`` in 0–1)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = share * (len(ordered) - 1)
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# sections


def _against(actual: float | None, goal: float) -> dict[str, Any]:
    return {
        "actual": actual,
        "goal": goal,
        "meets_goal": None if actual is None else actual >= goal,
    }


def _funnel(leads: Sequence[Lead], goals: ReportGoals) -> dict[str, Any]:
    positions = [funnel_position(lead) for lead in leads]
    counts = [sum(1 for p in positions if p >= index) for index in range(len(FUNNEL_STAGES))]
    stages = []
    for index, stage in enumerate(FUNNEL_STAGES):
        previous = counts[index - 1] if index else None
        rate = _rate(counts[index], previous) if previous is not None else None
        goal = getattr(goals, _STEP_GOALS[stage]) if stage in _STEP_GOALS else None
        stages.append(
            {
                "stage": stage.value,
                "count": counts[index],
                "rate_from_previous": rate,
                "rate_from_mql": _rate(counts[index], counts[0]),
                "goal": goal,
                "meets_goal": None if goal is None or rate is None else rate >= goal,
            }
        )
    return {
        "stages": stages,
        "mql_to_sql": _against(_rate(counts[2], counts[0]), goals.mql_to_sql),
        "leads": len(leads),
    }


def _first_action_minutes(leads: Sequence[Lead]) -> list[float]:
    minutes = []
    for lead in leads:
        if lead.first_action_at is not None:
            delta = _aware(lead.first_action_at) - _aware(lead.created_at)
            minutes.append(max(delta.total_seconds(), 0.0) / 60.0)
    return minutes


def _time_to_first_action(leads: Sequence[Lead]) -> dict[str, Any]:
    hours = [m / 60.0 for m in _first_action_minutes(leads)]
    worked = [lead for lead in leads if funnel_position(lead) >= 0]
    return {
        "with_action": len(hours),
        "mql_without_action": sum(1 for lead in worked if lead.first_action_at is None),
        "median_hours": _percentile(hours, 0.5),
        "p90_hours": _percentile(hours, 0.9),
    }


def _sla(leads: Sequence[Lead], statuses: Sequence[SlaStatus]) -> dict[str, Any]:
    test_keys = {lead.key for lead in leads if lead.is_test}
    live = [status for status in statuses if status.lead_key not in test_keys]
    by_kind: dict[str, Any] = {}
    for kind in ClockKind:
        states = Counter(status.state for status in live if status.kind is kind)
        on_time, breached = states[SlaState.ON_TIME], states[SlaState.BREACHED]
        by_kind[kind.value] = {
            "clocks": sum(states.values()),
            "on_time": on_time,
            "breached": breached,
            "pending": states[SlaState.PENDING],
            "at_risk": states[SlaState.AT_RISK],
            "compliance": _rate(on_time, on_time + breached),
        }
    on_time = sum(1 for status in live if status.state is SlaState.ON_TIME)
    breached_all = [status for status in live if status.state is SlaState.BREACHED]
    undecided = sum(1 for s in live if s.state in (SlaState.PENDING, SlaState.AT_RISK))
    histogram = []
    minutes = _first_action_minutes(leads)
    for label, low, high in SLA_BUCKETS:
        histogram.append(
            {
                "bucket": label,
                "min_minutes": low,
                "max_minutes": None if math.isinf(high) else high,
                "count": sum(1 for m in minutes if low <= m < high),
            }
        )
    breaches = sorted(breached_all, key=lambda s: (-s.minutes_late, s.lead_key, s.kind.value))
    return {
        "by_kind": by_kind,
        "compliance": _rate(on_time, on_time + len(breached_all)),
        "decided": on_time + len(breached_all),
        "pending": undecided,
        "breaches": [status.to_dict() for status in breaches],
        "open_breaches": sum(1 for status in breaches if status.open_breach),
        "histogram": histogram,
    }


def _lead_source(lead: Lead) -> str:
    if lead.utm_source:
        return lead.utm_source
    return lead.channel.value if lead.channel is not None else _UNKNOWN


def _lead_campaign(lead: Lead) -> str:
    return lead.utm_campaign or lead.campaign_id or _UNKNOWN


def _rejections(leads: Sequence[Lead]) -> dict[str, Any]:
    rejected = [(lead, lead.rejection_reason) for lead in leads if lead.rejection_reason]
    by_reason = Counter(reason.value for _, reason in rejected)

    def breakdown(attribute: str) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for lead, reason in rejected:
            if attribute == "source":
                group = _lead_source(lead)
            elif attribute == "form":
                group = lead.form_id or _UNKNOWN
            else:
                group = _lead_campaign(lead)
            table[group][reason.value] += 1
        return {group: dict(sorted(table[group].items())) for group in sorted(table)}

    return {
        "total": len(rejected),
        "by_reason": dict(by_reason.most_common()),
        "by_source": breakdown("source"),
        "by_form": breakdown("form"),
        "by_campaign": breakdown("campaign"),
    }


# ---------------------------------------------------------------------------------------------
# after SQL: opportunities, revenue, reasons, score calibration, time to opportunity and close

_NO_CURRENCY = "(no currency)"

#: What the outcome times are measured from and to (printed with them).
TIME_FROM = (
    "arrival: when leadrelay first received the lead (its ledger row), where it is scored; "
    "a lead that qualified later still counts from its arrival"
)
_TIME_TO_OPPORTUNITY = (
    "when the CRM first held the lead's opportunity, as leadrelay's sync saw it (the field "
    "clock of opportunity_id, else of the stage while it read opportunity)"
)
_TIME_TO_CLOSE = "the close date the CRM holds for a won or lost opportunity (closed_at)"


def _money(leads: Iterable[Lead]) -> dict[str, float]:
    """Amounts summed per currency (never across currencies); no currency is its own line."""
    totals: dict[str, float] = defaultdict(float)
    for lead in leads:
        if lead.amount is not None:
            totals[lead.currency or _NO_CURRENCY] += lead.amount
    return {currency: round(totals[currency], 2) for currency in sorted(totals)}


def _outcome_counts(leads: Sequence[Lead]) -> dict[str, Any]:
    """Opportunities reached, open, won, lost, the win rate, pipeline and won revenue."""
    opened = [lead for lead in leads if funnel_position(lead) >= 3]
    still_open = [lead for lead in opened if lead.stage is Stage.OPPORTUNITY]
    won = [lead for lead in opened if lead.stage is Stage.WON]
    lost = [lead for lead in opened if lead.stage is Stage.LOST]
    return {
        "opportunities": len(opened),
        "open": len(still_open),
        "won": len(won),
        "lost": len(lost),
        "win_rate": _rate(len(won), len(won) + len(lost)),
        "pipeline": _money(still_open),
        "won_revenue": _money(won),
    }


def _first_touch(lead: Lead) -> str:
    """The first touch as ``channel / utm_source`` (either alone when the other is missing)."""
    touch = lead.first_touch
    if touch is None:
        return _UNKNOWN
    parts = [touch.channel.value if touch.channel is not None else None, touch.utm_source]
    return " / ".join(part for part in parts if part) or _UNKNOWN


_DIMENSION_KEYS: dict[str, Any] = {
    "source": _lead_source,
    "channel": lambda lead: lead.channel.value if lead.channel is not None else _UNKNOWN,
    "campaign": _lead_campaign,
    "form": lambda lead: lead.form_id or _UNKNOWN,
    "first_touch": _first_touch,
}


def _outcome_reasons(leads: Sequence[Lead]) -> dict[str, Any]:
    """Won and lost reasons, in total and by source; closed deals without one; and reasons that
    do not fit the outcome (a win "for" a competitor)."""
    totals: dict[str, Counter[str]] = {"won": Counter(), "lost": Counter()}
    by_source: dict[str, dict[str, Counter[str]]] = defaultdict(
        lambda: {"won": Counter(), "lost": Counter()}
    )
    without = {"won": 0, "lost": 0}
    unfit = []
    fitting = {"won": WON_REASONS, "lost": LOST_REASONS}
    for lead in leads:
        if lead.stage not in (Stage.WON, Stage.LOST):
            continue
        outcome = lead.stage.value
        reason: OutcomeReason | None = lead.outcome_reason
        if reason is None:
            without[outcome] += 1
            continue
        totals[outcome][reason.value] += 1
        by_source[_lead_source(lead)][outcome][reason.value] += 1
        if reason not in fitting[outcome]:
            unfit.append({"lead_key": lead.key, "stage": outcome, "reason": reason.value})
    return {
        "won": dict(totals["won"].most_common()),
        "lost": dict(totals["lost"].most_common()),
        "by_source": {
            source: {outcome: dict(sorted(found.items())) for outcome, found in counts.items()}
            for source, counts in sorted(by_source.items())
        },
        "without_reason": without,
        "unfit": unfit,
    }


def _band_label(low: float | None, high: float | None) -> str:
    if low is None:
        return f"below {high:g}"
    if high is None:
        return f"{low:g}+"
    if float(low).is_integer() and float(high).is_integer():
        return f"{low:g}–{high - 1:g}"
    return f"{low:g} to under {high:g}"


def _calibration(
    leads: Sequence[Lead], settings: ReportConfig, mql_threshold: float | None
) -> dict[str, Any]:
    """Conversion to opportunity and win rate per score band, and a plain sentence for each
    band that does no better than the band below it."""
    edges: list[float | None] = [None, *settings.score_bands, None]
    scored = [lead for lead in leads if lead.score is not None]
    bands = []
    for low, high in pairwise(edges):
        members = [
            lead
            for lead in scored
            if lead.score is not None
            and (low is None or lead.score >= low)
            and (high is None or lead.score < high)
        ]
        counts = _outcome_counts(members)
        bands.append(
            {
                "band": _band_label(low, high),
                "min_score": low,
                "max_score": high,
                "leads": len(members),
                "opportunities": counts["opportunities"],
                "conversion": _rate(counts["opportunities"], len(members)),
                "won": counts["won"],
                "lost": counts["lost"],
                "win_rate": counts["win_rate"],
            }
        )
    smallest = settings.calibration_min_leads
    findings: list[str] = []
    any_opportunity = any(band["opportunities"] for band in bands)
    for lower, higher in pairwise(bands):
        if not any_opportunity or min(lower["leads"], higher["leads"]) < smallest:
            continue
        check = "the weights"
        if mql_threshold is not None and lower["max_score"] <= mql_threshold <= higher["min_score"]:
            check = f"the MQL threshold ({mql_threshold:g}) and the weights"
        if higher["conversion"] <= lower["conversion"]:
            findings.append(
                f"leads scored {higher['band']} convert no better than {lower['band']} "
                f"({_pct(higher['conversion'])} vs {_pct(lower['conversion'])} to opportunity): "
                f"check {check}"
            )
        closed = (lower["won"] + lower["lost"], higher["won"] + higher["lost"])
        if min(closed) >= smallest and higher["win_rate"] <= lower["win_rate"]:
            findings.append(
                f"leads scored {higher['band']} win no more often than {lower['band']} "
                f"({_pct(higher['win_rate'])} vs {_pct(lower['win_rate'])}): check {check}"
            )
    return {
        "bands": bands,
        "unscored": len(leads) - len(scored),
        "min_leads": smallest,
        "mql_threshold": mql_threshold,
        "compared": any_opportunity,
        "small_bands": [band["band"] for band in bands if band["leads"] < smallest],
        "findings": findings,
    }


def _spread(days: list[float], to: str, without: int, excluded: int) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "to": to,
        "leads": len(days),
        "median_days": rounded(_percentile(days, 0.5)),
        "p90_days": rounded(_percentile(days, 0.9)),
        "without_time": without,
        "before_arrival": excluded,
    }


def _outcome_times(leads: Sequence[Lead], opened_at: Mapping[str, datetime]) -> dict[str, Any]:
    """Days from arrival to the opportunity and to its close: median and p90.

    A lead without the moment (no field clock, no close date) is counted apart, and so is one
    whose moment lies before its arrival (the CRM's date was entered by hand). A close date is a
    day: one on the day of arrival counts as 0 days.
    """
    to_opportunity: list[float] = []
    without_opportunity = early_opportunity = 0
    to_close: list[float] = []
    without_close = early_close = 0
    for lead in leads:
        if funnel_position(lead) < 3:
            continue
        arrived = _aware(lead.created_at)
        opened = opened_at.get(lead.key)
        if opened is None:
            without_opportunity += 1
        elif _aware(opened) < arrived:
            early_opportunity += 1
        else:
            to_opportunity.append((_aware(opened) - arrived).total_seconds() / 86400)
        if lead.stage not in (Stage.WON, Stage.LOST):
            continue
        if lead.closed_at is None:
            without_close += 1
            continue
        closed = _aware(lead.closed_at)
        if closed.date() < arrived.date():
            early_close += 1
        else:
            to_close.append(max((closed - arrived).total_seconds(), 0.0) / 86400)
    return {
        "from": TIME_FROM,
        "to_opportunity": _spread(
            to_opportunity, _TIME_TO_OPPORTUNITY, without_opportunity, early_opportunity
        ),
        "to_close": _spread(to_close, _TIME_TO_CLOSE, without_close, early_close),
    }


def _outcomes(
    leads: Sequence[Lead],
    settings: ReportConfig,
    opened_at: Mapping[str, datetime],
    mql_threshold: float | None,
) -> dict[str, Any]:
    counts = _outcome_counts(leads)
    by: dict[str, list[dict[str, Any]]] = {}
    for name in OUTCOME_DIMENSIONS:
        groups: dict[str, list[Lead]] = defaultdict(list)
        for lead in leads:
            if funnel_position(lead) >= 3:
                groups[str(_DIMENSION_KEYS[name](lead))].append(lead)
        rows = [{"name": group} | _outcome_counts(members) for group, members in groups.items()]
        by[name] = sorted(rows, key=lambda row: (-row["opportunities"], row["name"]))
    opened = [lead for lead in leads if funnel_position(lead) >= 3]
    return counts | {
        "win_rate": _against(counts["win_rate"], settings.goals.win_rate),
        "without_amount": {
            "open": sum(1 for x in opened if x.stage is Stage.OPPORTUNITY and x.amount is None),
            "won": sum(1 for x in opened if x.stage is Stage.WON and x.amount is None),
        },
        "by": by,
        "reasons": _outcome_reasons(leads),
        "calibration": _calibration(leads, settings, mql_threshold),
        "times": _outcome_times(leads, opened_at),
    }


@dataclass(frozen=True)
class Period:
    """The days a report covers, both ends included; None: open on that side."""

    since: date | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ValueError(f"--since {self.since} is after --until {self.until}")

    def holds(self, moment: datetime | date) -> bool:
        """True when ``moment`` (its UTC day) is inside the period."""
        day = _aware(moment).date() if isinstance(moment, datetime) else moment
        return (self.since is None or day >= self.since) and (
            self.until is None or day <= self.until
        )

    def to_dict(self) -> dict[str, str | None]:
        """``{"since", "until"}`` as ISO dates (None when open)."""
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _week(moment: datetime) -> date:
    """The Monday of the ISO week of ``moment`` (UTC)."""
    return _monday(_aware(moment).date())


def _counts(leads: Sequence[Lead]) -> dict[str, Any]:
    """Leads, MQLs, SQLs, rejected and MQL → SQL of a group of leads."""
    positions = [funnel_position(lead) for lead in leads]
    mql = sum(1 for p in positions if p >= 0)
    sql = sum(1 for p in positions if p >= 2)
    return {
        "leads": len(leads),
        "mql": mql,
        "sql": sql,
        "rejected": sum(1 for lead in leads if lead.rejection_reason is not None),
        "mql_to_sql": _rate(sql, mql),
    }


def _by_week(
    leads: Sequence[Lead], statuses: Sequence[SlaStatus], period: Period, now: datetime
) -> list[dict[str, Any]]:
    """One row a week from the period's first week (or the first lead's) to its last (or now's):
    a week without leads is a row of zeros, so a gap shows as a gap."""
    if not leads and period.since is None:
        return []
    starts = [_week(lead.created_at) for lead in leads]
    first = _monday(period.since) if period.since else min(starts)
    last = _monday(period.until or _aware(now).date())
    if starts:
        last = max(last, max(starts))
    week_of = {lead.key: _week(lead.created_at) for lead in leads}
    grouped: dict[date, list[Lead]] = defaultdict(list)
    for lead, start in zip(leads, starts, strict=True):
        grouped[start].append(lead)
    clocks: dict[date, Counter[SlaState]] = defaultdict(Counter)
    for status in statuses:
        if status.lead_key in week_of:
            clocks[week_of[status.lead_key]][status.state] += 1
    rows = []
    week = first
    while week <= last:
        states = clocks[week]
        on_time, breached = states[SlaState.ON_TIME], states[SlaState.BREACHED]
        rows.append(
            {"week": week.isoformat()}
            | _counts(grouped[week])
            | {
                "sla_on_time": on_time,
                "sla_breached": breached,
                "sla_pending": states[SlaState.PENDING] + states[SlaState.AT_RISK],
                "sla_compliance": _rate(on_time, on_time + breached),
            }
        )
        week += timedelta(days=7)
    return rows


def _lead_origin(lead: Lead) -> str:
    """``form`` for a lead a capture form brought, ``system`` for one first seen in a CRM."""
    return "form" if lead.form_id else "system"


def _breakdowns(leads: Sequence[Lead]) -> dict[str, list[dict[str, Any]]]:
    """Leads by channel, source (form / system), campaign and form, largest group first."""
    keys: dict[str, Any] = {
        "channel": lambda lead: lead.channel.value if lead.channel is not None else _UNKNOWN,
        "source": _lead_origin,
        "campaign": _lead_campaign,
        "form": lambda lead: lead.form_id or _UNKNOWN,
    }
    found: dict[str, list[dict[str, Any]]] = {}
    for name, key in keys.items():
        groups: dict[str, list[Lead]] = defaultdict(list)
        for lead in leads:
            groups[str(key(lead))].append(lead)
        rows = [{"name": group} | _counts(members) for group, members in groups.items()]
        found[name] = sorted(rows, key=lambda row: (-row["leads"], row["name"]))
    return found


def _ledger(counts: Iterable[LedgerCount]) -> dict[str, Any]:
    rows: dict[tuple[str, str, str, str], Counter[str]] = defaultdict(Counter)
    for count in counts:
        day = count.day.isoformat() if isinstance(count.day, date) else _UNKNOWN
        key = (day, count.form or _UNKNOWN, count.source or _UNKNOWN, count.destination)
        rows[key]["received"] += count.count
        if count.state in (LedgerState.WRITTEN, LedgerState.VERIFIED):
            rows[key]["written"] += count.count
        if count.state is LedgerState.VERIFIED:
            rows[key]["verified"] += count.count
        if count.state is LedgerState.FAILED:
            rows[key]["failed"] += count.count

    def numbers(counter: Counter[str]) -> dict[str, int]:
        received, written = counter["received"], counter["written"]
        return {
            "received": received,
            "written": written,
            "verified": counter["verified"],
            "failed": counter["failed"],
            "missing": received - written,
        }

    by_form: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    out_rows = []
    for (day, form, source, destination), counter in sorted(rows.items()):
        out_rows.append(
            {"day": day, "form": form, "source": source, "destination": destination}
            | numbers(counter)
        )
        by_form[form].update(counter)
        totals.update(counter)
    return {
        "rows": out_rows,
        "by_form": {form: numbers(by_form[form]) for form in sorted(by_form)},
        "totals": numbers(totals),
    }


def _field_problems(problems: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Open field problems ``(connection, field)`` counted per ``connection.field``."""
    counts: Counter[str] = Counter(f"{connection}.{name}" for connection, name in problems)
    return {"open": sum(counts.values()), "by_field": dict(sorted(counts.items()))}


def _layer(score: float | None, evidence: list[str]) -> dict[str, Any]:
    return {"score": None if score is None else round(score, 4), "evidence": evidence}


def _outcome_layer(funnel: dict[str, Any], outcomes: dict[str, Any]) -> dict[str, Any]:
    """MQL → SQL, SQL → opportunity and the win rate against their goals; the score is the
    weakest of them (each capped at 1). Until a CRM reads back an opportunity, only MQL → SQL
    is measured, and the evidence says why."""
    checks = [("MQL → SQL", funnel["mql_to_sql"])]
    if outcomes["opportunities"]:
        step = next(s for s in funnel["stages"] if s["stage"] == Stage.OPPORTUNITY.value)
        checks.append(("SQL → opportunity", _against(step["rate_from_previous"], step["goal"])))
        checks.append(("win rate", outcomes["win_rate"]))
    evidence = []
    ratios = []
    for name, check in checks:
        if check["actual"] is None:
            continue
        ratios.append(min(check["actual"] / check["goal"], 1.0))
        evidence.append(f"{name} {_pct(check['actual'])} against a goal of {_pct(check['goal'])}")
    if outcomes["opportunities"]:
        evidence.append(
            f"{outcomes['won']} won, {outcomes['lost']} lost, {outcomes['open']} open opportunities"
        )
    else:
        evidence.append(
            "no opportunity read back from the CRMs yet: SQL → opportunity and the win rate "
            "appear once the mapping reads the Opportunity / Deal"
        )
    without = outcomes["reasons"]["without_reason"]
    if without["won"] or without["lost"]:
        evidence.append(
            f"{without['won'] + without['lost']} closed deal(s) without a win/loss reason"
        )
    evidence.extend(outcomes["calibration"]["findings"])
    return _layer(min(ratios) if ratios else None, evidence)


def _diagnosis(
    leads: Sequence[Lead],
    funnel: dict[str, Any],
    sla: dict[str, Any],
    ledger: dict[str, Any],
    outcomes: dict[str, Any],
) -> dict[str, Any]:
    layers: dict[str, dict[str, Any]] = {}
    total = len(leads)

    received = ledger["totals"]["received"]
    written = ledger["totals"]["written"]
    evidence = [f"{written} of {received} received leads written to their destination"]
    leaking = [
        f"form {form}: {numbers['missing']} of {numbers['received']} missing"
        for form, numbers in ledger["by_form"].items()
        if numbers["missing"]
    ]
    problems = ledger.get("field_problems") or {}
    refused = [
        f"{count} lead(s) written without {where} (the CRM refused the value; "
        "see `leadrelay runs show`)"
        for where, count in sorted(problems.get("by_field", {}).items(), key=lambda i: -i[1])
    ]
    layers["capture"] = _layer(_rate(written, received), evidence + leaking + refused)

    scored = [lead for lead in leads if lead.score is not None]
    reasoned = [lead for lead in scored if lead.qualification_reason]
    layers["qualification"] = _layer(
        _rate(len(reasoned), total),
        [
            f"{len(reasoned)} of {total} leads have a score and a qualification reason",
            f"{total - len(scored)} without a score, "
            f"{len(scored) - len(reasoned)} scored without a reason",
        ],
    )

    owned = [lead for lead in leads if lead.owner is not None]
    unassigned = sla["by_kind"][ClockKind.UNASSIGNED.value]
    layers["routing"] = _layer(
        _rate(len(owned), total),
        [
            f"{len(owned)} of {total} leads have an owner",
            f"{unassigned['breached']} breached the unassigned clock",
        ],
    )

    decided = {"on_time": 0, "breached": 0}
    action_evidence = []
    for kind in (ClockKind.HOT, ClockKind.MQL):
        numbers = sla["by_kind"][kind.value]
        decided["on_time"] += numbers["on_time"]
        decided["breached"] += numbers["breached"]
        action_evidence.append(
            f"{kind.value} SLA: {numbers['on_time']} on time, {numbers['breached']} breached "
            f"({_pct(numbers['compliance'])} compliance)"
        )
    layers["action"] = _layer(
        _rate(decided["on_time"], decided["on_time"] + decided["breached"]), action_evidence
    )

    # Sales worked a lead once it acted, accepted, rejected or moved it past MQL.
    worked = [
        lead
        for lead in leads
        if funnel_position(lead) >= 0
        and (
            lead.first_action_at is not None
            or lead.accepted_at is not None
            or lead.rejection_reason is not None
            or lead.stage is not Stage.MQL
        )
    ]
    with_status = [
        lead for lead in worked if funnel_position(lead) >= 1 or lead.rejection_reason is not None
    ]
    rejected_without_reason = sum(
        1 for lead in worked if lead.stage is Stage.DISQUALIFIED and lead.rejection_reason is None
    )
    layers["status"] = _layer(
        _rate(len(with_status), len(worked)),
        [
            f"{len(with_status)} of {len(worked)} worked MQLs have a sales status written back",
            f"{len(worked) - len(with_status)} still at MQL after sales acted, "
            f"{rejected_without_reason} rejected without a reason",
        ],
    )

    layers["outcome"] = _outcome_layer(funnel, outcomes)

    # Only a layer that leaks is the weakest: with every layer whole there is none.
    leaking_layers = [
        name for name in LAYERS if layers[name]["score"] is not None and layers[name]["score"] < 1
    ]
    weakest = min(leaking_layers, key=lambda name: layers[name]["score"], default=None)
    return {
        "layers": [{"layer": name} | layers[name] for name in LAYERS],
        "weakest": weakest,
        "weakest_evidence": layers[weakest]["evidence"] if weakest else [],
    }


# ---------------------------------------------------------------------------------------------
# the report


@dataclass(frozen=True)
class Report:
    """A built handoff report; :meth:`to_dict` is what ``leadrelay report --json`` prints."""

    generated_at: datetime
    lead_count: int
    funnel: dict[str, Any]
    time_to_first_action: dict[str, Any]
    sla: dict[str, Any]
    rejections: dict[str, Any]
    ledger: dict[str, Any]
    diagnosis: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the six sections plus metadata keys."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "lead_count": self.lead_count,
            "funnel": self.funnel,
            "time_to_first_action": self.time_to_first_action,
            "sla": self.sla,
            "rejections": self.rejections,
            "outcomes": self.outcomes,
            "ledger": self.ledger,
            "diagnosis": self.diagnosis,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def build_report(
    leads: Iterable[Lead],
    ledger_counts: Iterable[LedgerCount],
    sla_statuses: Iterable[SlaStatus],
    now: datetime,
    field_problems: Iterable[tuple[str, str]] = (),
    period: Period | None = None,
    *,
    settings: ReportConfig | None = None,
    opened_at: Mapping[str, datetime] | None = None,
    mql_threshold: float | None = None,
) -> Report:
    """Build the report from the current leads, the ledger counts and the SLA clocks.

    ``ledger_counts`` come from ``StateStore.ledger_counts(by_day=True)`` (test rows already left
    out); ``sla_statuses`` from :func:`leadrelay.handoff.sla.evaluate` at ``now``. With a
    ``period``, only the leads that arrived (``created_at``) and the ledger days inside it count.
    ``settings`` are the goals and score bands of ``[report]`` (defaults without);
    ``opened_at`` says when each lead's opportunity was first seen (:func:`opportunity_times`);
    ``mql_threshold`` (``[scoring]``) lets the calibration name the threshold.
    """
    settings = settings or ReportConfig()
    period = period or Period()
    live = [lead for lead in leads if not lead.is_test and period.holds(lead.created_at)]
    keys = {lead.key for lead in live}
    statuses = [status for status in sla_statuses if status.lead_key in keys]
    counts = [c for c in ledger_counts if c.day is None or period.holds(c.day)]
    funnel = _funnel(live, settings.goals)
    funnel["period"] = period.to_dict()
    funnel["by_week"] = _by_week(live, statuses, period, now)
    funnel["breakdowns"] = _breakdowns(live)
    sla = _sla(live, statuses)
    ledger = _ledger(counts)
    ledger["field_problems"] = _field_problems(field_problems)
    outcomes = _outcomes(live, settings, opened_at or {}, mql_threshold)
    return Report(
        generated_at=_aware(now),
        lead_count=len(live),
        funnel=funnel,
        time_to_first_action=_time_to_first_action(live),
        sla=sla,
        rejections=_rejections(live),
        ledger=ledger,
        diagnosis=_diagnosis(live, funnel, sla, ledger, outcomes),
        outcomes=outcomes,
    )


#: Lead keys per ledger query (well under every database's bound-parameter limit).
_ARRIVAL_BATCH = 500


def arrival_times(store: StateStore, keys: Iterable[str]) -> dict[str, datetime]:
    """When leadrelay first received each lead (its earliest ledger row), by lead key."""
    wanted = list(dict.fromkeys(keys))
    found: dict[str, datetime] = {}
    table = ledger_table
    for start in range(0, len(wanted), _ARRIVAL_BATCH):
        batch = wanted[start : start + _ARRIVAL_BATCH]
        with store.transaction() as conn:
            rows = conn.execute(
                sa.select(table.c.lead_key, sa.func.min(table.c.received_at))
                .where(table.c.lead_key.in_(batch))
                .group_by(table.c.lead_key)
            ).all()
        found.update({str(key): _aware(at) for key, at in rows if at is not None})
    return found


def opportunity_times(store: StateStore, keys: Iterable[str]) -> dict[str, datetime]:
    """When each lead's opportunity was first seen, by lead key, from the store's field clock.

    The clock of ``opportunity_id`` keeps when its current value was set where it came from
    (the CRM record's modification time the sync first saw it with); without one, the clock of
    ``stage`` while its value is ``opportunity``. A lead whose flows carry neither field has no
    entry: the report counts it as without a time rather than guess one.
    """
    found: dict[str, datetime] = {}
    for key, fields in store.get_field_clocks(keys).items():
        opened = fields.get("opportunity_id")
        stage = fields.get("stage")
        if opened is not None and opened[0] not in (None, ""):
            found[key] = _aware(opened[1])
        elif stage is not None and stage[0] == Stage.OPPORTUNITY.value:
            found[key] = _aware(stage[1])
    return found


def _with_arrival(lead: Lead, received: datetime | None) -> Lead:
    if received is None or received >= _aware(lead.created_at):
        return lead
    return lead.model_copy(update={"created_at": received})


def report_command_data(
    config: Config,
    store: StateStore,
    leads: Iterable[Lead],
    *,
    now: datetime | None = None,
    sla_config: SlaConfig | None = None,
    period: Period | None = None,
) -> Report:
    """Everything ``leadrelay report`` needs from a config, its state store and the leads.

    The SLA settings come from ``[sla]`` (ConfigError names a bad key), the goals and score
    bands from ``[report]``; the ledger from the store, counted by day without test rows, and
    when each opportunity was first seen from its field clock; ``now`` defaults to the store's
    clock.

    A lead read back from a CRM does not carry its arrival (the CRM's record is created when
    leadrelay writes it), so its ``created_at`` becomes the moment leadrelay first received it
    (:func:`arrival_times`) when that is earlier: the SLA clocks and the time to first action
    run from there to the ``first_action_at`` / ``accepted_at`` the CRM's mapping reads.
    """
    settings = sla_config or load_sla_config(config)
    moment = now or store.now()
    live = [lead for lead in leads if not lead.is_test]
    arrivals = arrival_times(store, (lead.key for lead in live))
    current = [_with_arrival(lead, arrivals.get(lead.key)) for lead in live]
    statuses = evaluate(current, moment, settings)
    counts = store.ledger_counts(by_day=True)
    problems = [(p.connection, p.field) for p in store.field_problems()]
    return build_report(
        current,
        counts,
        statuses,
        moment,
        problems,
        period,
        settings=config.report,
        opened_at=opportunity_times(store, (lead.key for lead in current)),
        mql_threshold=config.scoring.mql_threshold,
    )


# ---------------------------------------------------------------------------------------------
# terminal tables


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} h"


def money_text(amounts: Mapping[str, float]) -> str:
    """Amounts per currency as ``EUR 12,000.00 · USD 500.00`` (never one sum); ``-`` for none."""
    return " · ".join(f"{currency} {amount:,.2f}" for currency, amount in amounts.items()) or "-"


def _days(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} d"


#: The columns of :func:`outcome_cells`, after the group's name.
OUTCOME_COLUMNS = ("opportunities", "open", "won", "lost", "win rate", "pipeline", "won revenue")


def outcome_cells(row: Mapping[str, Any]) -> list[str]:
    """One group of ``outcomes["by"]`` as text cells: its name, then :data:`OUTCOME_COLUMNS`."""
    return [
        row["name"],
        str(row["opportunities"]),
        str(row["open"]),
        str(row["won"]),
        str(row["lost"]),
        _pct(row["win_rate"]),
        money_text(row["pipeline"]),
        money_text(row["won_revenue"]),
    ]


#: The columns of :func:`band_cells`, after the band.
BAND_COLUMNS = ("leads", "opportunities", "conversion", "won", "lost", "win rate")


def band_cells(band: Mapping[str, Any]) -> list[str]:
    """One score band of the calibration as text cells: its label, then :data:`BAND_COLUMNS`."""
    return [
        band["band"],
        str(band["leads"]),
        str(band["opportunities"]),
        _pct(band["conversion"]),
        str(band["won"]),
        str(band["lost"]),
        _pct(band["win_rate"]),
    ]


def _outcome_tables(outcomes: Mapping[str, Any]) -> list[RenderableType]:
    """Win rate and revenue by source, win/loss reasons, score calibration (after SQL)."""
    if not outcomes:
        return []
    revenue = Table(title="Opportunities and revenue by source")
    for column in ("source", *OUTCOME_COLUMNS):
        money = column in ("source", "pipeline", "won revenue")
        revenue.add_column(column, justify="left" if money else "right")
    for row in outcomes["by"]["source"]:
        revenue.add_row(*outcome_cells(row))
    win = outcomes["win_rate"]
    times = outcomes["times"]
    revenue.caption = (
        f"win rate {_pct(win['actual'])} ({outcomes['won']} won, {outcomes['lost']} lost) vs "
        f"goal {_pct(win['goal'])}; pipeline {money_text(outcomes['pipeline'])}; won "
        f"{money_text(outcomes['won_revenue'])}. From arrival to opportunity: median "
        f"{_days(times['to_opportunity']['median_days'])}, p90 "
        f"{_days(times['to_opportunity']['p90_days'])}; to close: median "
        f"{_days(times['to_close']['median_days'])}, p90 {_days(times['to_close']['p90_days'])}"
    )

    reasons = Table(title="Win / loss reasons")
    reasons.add_column("outcome")
    reasons.add_column("reason")
    reasons.add_column("deals", justify="right")
    reasons.add_column("by source")
    found = outcomes["reasons"]
    for outcome in ("won", "lost"):
        for reason, count in found[outcome].items():
            sources = ", ".join(
                f"{source} {counts[outcome][reason]}"
                for source, counts in found["by_source"].items()
                if reason in counts[outcome]
            )
            reasons.add_row(outcome, reason, str(count), sources)
    without = found["without_reason"]
    reasons.caption = f"without a reason: {without['won']} won, {without['lost']} lost"

    calibration = Table(title="Score calibration")
    for column in ("score", *BAND_COLUMNS):
        calibration.add_column(column, justify="left" if column == "score" else "right")
    data = outcomes["calibration"]
    for band in data["bands"]:
        calibration.add_row(*band_cells(band))
    calibration.caption = "; ".join(data["findings"]) or calibration_note(data)
    return [revenue, reasons, calibration]


def calibration_note(data: Mapping[str, Any]) -> str:
    """What the calibration says when no band does worse than the one below it."""
    if not data["compared"]:
        return "no opportunity read back yet: bands are compared once leads convert"
    if data["small_bands"]:
        return (
            f"bands with fewer than {data['min_leads']} scored leads are not compared: "
            + ", ".join(data["small_bands"])
        )
    return "each higher band converts better than the one below it"


def render_tables(report: Report) -> list[RenderableType]:
    """The report as rich tables, in reading order (funnel first, diagnosis last)."""
    funnel = Table(title="Funnel")
    for column in ("stage", "leads", "from previous", "goal", "from MQL"):
        funnel.add_column(column, justify="left" if column == "stage" else "right")
    marks = {True: " ✓", False: " ✗", None: ""}
    for step in report.funnel["stages"]:
        funnel.add_row(
            step["stage"].upper() if len(step["stage"]) == 3 else step["stage"],
            str(step["count"]),
            _pct(step["rate_from_previous"]) if step["rate_from_previous"] is not None else "",
            "" if step.get("goal") is None else _pct(step["goal"]) + marks[step["meets_goal"]],
            _pct(step["rate_from_mql"]),
        )
    goal = report.funnel["mql_to_sql"]
    verdict = {True: "meets the goal", False: "below the goal", None: "no MQLs yet"}
    funnel.caption = (
        f"MQL → SQL {_pct(goal['actual'])} vs goal {_pct(goal['goal'])}: "
        f"{verdict[goal['meets_goal']]}"
    )

    sla = Table(title="SLA")
    for column in ("clock", "clocks", "on time", "breached", "at risk", "pending", "compliance"):
        sla.add_column(column, justify="left" if column == "clock" else "right")
    for kind, numbers in report.sla["by_kind"].items():
        sla.add_row(
            kind,
            str(numbers["clocks"]),
            str(numbers["on_time"]),
            str(numbers["breached"]),
            str(numbers["at_risk"]),
            str(numbers["pending"]),
            _pct(numbers["compliance"]),
        )
    action = report.time_to_first_action
    sla.caption = (
        f"time to first action: median {_hours(action['median_hours'])}, "
        f"p90 {_hours(action['p90_hours'])}; {report.sla['open_breaches']} open breaches"
    )

    histogram = Table(title="Minutes to first action")
    histogram.add_column("minutes")
    histogram.add_column("leads", justify="right")
    for bucket in report.sla["histogram"]:
        histogram.add_row(bucket["bucket"], str(bucket["count"]))

    rejections = Table(title="Rejection reasons")
    rejections.add_column("reason")
    rejections.add_column("leads", justify="right")
    rejections.add_column("by source")
    for reason, count in report.rejections["by_reason"].items():
        sources = ", ".join(
            f"{source} {reasons[reason]}"
            for source, reasons in report.rejections["by_source"].items()
            if reason in reasons
        )
        rejections.add_row(reason, str(count), sources)

    ledger = Table(title="Ledger")
    columns = ("day", "form", "source", "destination", "received", "written", "verified")
    for column in (*columns, "missing"):
        right = column in ("received", "written", "verified", "missing")
        ledger.add_column(column, justify="right" if right else "left")
    for row in report.ledger["rows"]:
        ledger.add_row(
            row["day"],
            row["form"],
            row["source"],
            row["destination"],
            str(row["received"]),
            str(row["written"]),
            str(row["verified"]),
            str(row["missing"]),
        )

    diagnosis = Table(title="Handoff diagnosis")
    diagnosis.add_column("layer")
    diagnosis.add_column("score", justify="right")
    diagnosis.add_column("evidence")
    weakest = report.diagnosis["weakest"]
    for layer in report.diagnosis["layers"]:
        name = layer["layer"]
        diagnosis.add_row(
            f"[bold red]{name} ← weakest[/]" if name == weakest else name,
            "n/a" if layer["score"] is None else f"{layer['score']:.2f}",
            "; ".join(layer["evidence"]),
        )
    return [
        funnel,
        *_outcome_tables(report.outcomes),
        sla,
        histogram,
        rejections,
        ledger,
        diagnosis,
    ]
