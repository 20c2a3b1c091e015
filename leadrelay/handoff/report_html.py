"""The handoff report as one self-contained HTML page (``leadrelay report --html FILE``).

A dashboard to open every Monday: the period and headline figures first, then the weekly
trend, the funnel against its goals, rejections, what happened after SQL (win rate, pipeline
and won revenue per currency by source, channel, campaign, form and first touch, win/loss
reasons, time to opportunity and to close), the score calibration, breakdowns by channel,
source, campaign and form, the SLA, the ledger and the diagnosis. Inline CSS, inline SVG and
CSS bar charts drawn here; a chart with nothing to show is a one-line note, not a blank area.
SLA compliance counts decided clocks only (on time or breached) and says so; pending clocks
are shown as pending. No scripts, no external URLs, so the file can be mailed or archived and
opens offline. Tables scroll inside their box on a phone; the page itself never scrolls
sideways.

Stable hooks for tests and scrapers:

* ``<section id="summary|trends|funnel|rejections|outcomes|calibration|breakdowns|sla|ledger|
  diagnosis">``;
* ``<header data-since=… data-until=…>`` (empty when open);
* headline cards ``<div class="kpi" data-kpi="leads|mql|mql-to-sql|win-rate|won-revenue|sla|
  pending|breaches|ttfa">``;
* weekly rows ``<tr data-week="2024-05-06" data-leads=… data-mql=… data-sql=…>`` and
  columns ``<div class="col" data-week=… data-leads=…>`` of the trend chart;
* breakdown rows ``<tr data-breakdown="channel|source|campaign|form" data-name=…
  data-leads=…>``;
* ``<p id="sla-compliance" data-compliance=… data-decided=… data-pending=…>``;
* funnel bars ``<rect class="bar" data-stage="mql" data-count="42">``, and
  ``<p id="mql-to-sql" data-actual="0.25" data-goal="0.3" data-meets-goal="false">``;
* funnel steps against their goals ``<tr data-step="sal|sql|opportunity|won" data-rate=…
  data-goal=… data-meets-goal="true|false|">``;
* ``<p id="win-rate" data-actual=… data-goal=… data-meets-goal=… data-won=… data-lost=…>`` and
  ``<p id="money" data-pipeline='{"EUR": 1200.0}' data-won-revenue=…>`` (JSON per currency);
* outcome rows ``<tr data-outcome-by="source|channel|campaign|form|first_touch" data-name=…
  data-opportunities=… data-won=… data-lost=…>``, reason rows ``<tr data-outcome="won|lost"
  data-reason=… data-count=…>``, times ``<li data-time="to_opportunity|to_close"
  data-median-days=… data-p90-days=… data-leads=…>``;
* calibration rows ``<tr data-band="80+" data-leads=… data-conversion=… data-win-rate=…>``,
  each finding ``<p class="finding" data-finding>``, else ``<p id="calibration-note">``;
* SLA histogram bars ``<rect class="bar" data-bucket="0-15" data-count="3">``, and rows
  ``<tr data-kind="hot" data-compliance="0.8">``;
* rejection bars ``<rect class="bar" data-reason="bad_fit" data-count="2">``;
* ledger rows ``<tr data-form=… data-day=… data-received=… data-missing=…>``;
* diagnosis rows ``<tr data-layer="capture" data-score="0.95">`` and
  ``<p id="weakest" data-layer="routing">``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

from leadrelay.handoff.report import (
    BAND_COLUMNS,
    OUTCOME_COLUMNS,
    Report,
    band_cells,
    calibration_note,
    money_text,
    outcome_cells,
)

__all__ = ["render_html"]

_BAR_HEIGHT = 24
#: SVG charts are drawn this wide and scale down with the page (readable on a phone too)
_CHART_WIDTH = 360
_LABEL_WIDTH = 118
#: the histogram's width (eight buckets)
_HISTOGRAM_WIDTH = 420
#: at most this many weeks in the trend (the latest); the table says how many were left out
_MAX_WEEKS = 26


@dataclass(frozen=True)
class _Bar:
    label: str
    count: int
    attribute: str
    value: str
    note: str = ""
    late: bool = False


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _data_number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _horizontal_bars(
    chart_id: str, title: str, bars: Sequence[_Bar], empty: str = "Nothing in the period."
) -> str:
    if not bars:
        return f'<p class="empty" id="{chart_id}-empty">{escape(empty)}</p>'
    top = max(bar.count for bar in bars) or 1
    span = _CHART_WIDTH - _LABEL_WIDTH - 82
    height = len(bars) * (_BAR_HEIGHT + 8) + 8
    parts = [
        f'<svg id="{chart_id}" role="img" aria-label="{_attr(title)}" '
        f'viewBox="0 0 {_CHART_WIDTH} {height}" width="{_CHART_WIDTH}" height="{height}">',
        f"<title>{escape(title)}</title>",
    ]
    for index, bar in enumerate(bars):
        y = 8 + index * (_BAR_HEIGHT + 8)
        width = max(round(span * bar.count / top), 1 if bar.count else 0)
        css = "bar late" if bar.late else "bar"
        parts.append(
            f'<text x="{_LABEL_WIDTH - 8}" y="{y + _BAR_HEIGHT - 8}" '
            f'text-anchor="end">{escape(bar.label)}</text>'
            f'<rect class="{css}" x="{_LABEL_WIDTH}" y="{y}" width="{width}" '
            f'height="{_BAR_HEIGHT}" data-{bar.attribute}="{_attr(bar.value)}" '
            f'data-count="{bar.count}"><title>{escape(bar.label)}: {bar.count}</title></rect>'
            f'<text x="{_LABEL_WIDTH + width + 6}" y="{y + _BAR_HEIGHT - 8}">'
            f"{bar.count}{escape(bar.note)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _vertical_bars(chart_id: str, title: str, bars: Sequence[_Bar]) -> str:
    top = max((bar.count for bar in bars), default=0) or 1
    slot = (_HISTOGRAM_WIDTH - 40) // max(len(bars), 1)
    plot = 140
    base = plot + 24  # room above the tallest bar for its count
    height = base + 40
    parts = [
        f'<svg id="{chart_id}" role="img" aria-label="{_attr(title)}" '
        f'viewBox="0 0 {_HISTOGRAM_WIDTH} {height}" width="{_HISTOGRAM_WIDTH}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="20" y1="{base}" x2="{_HISTOGRAM_WIDTH - 20}" y2="{base}" stroke="#9aa5b1"/>',
    ]
    for index, bar in enumerate(bars):
        x = 20 + index * slot + 4
        bar_height = round(plot * bar.count / top)
        y = base - bar_height
        css = "bar late" if bar.late else "bar"
        middle = x + (slot - 8) // 2
        parts.append(
            f'<rect class="{css}" x="{x}" y="{y}" width="{slot - 8}" height="{bar_height}" '
            f'data-{bar.attribute}="{_attr(bar.value)}" data-count="{bar.count}">'
            f"<title>{escape(bar.label)}: {bar.count}</title></rect>"
            f'<text x="{middle}" y="{y - 4}" text-anchor="middle">{bar.count}</text>'
            f'<text class="small" x="{middle}" y="{base + 16}" text-anchor="middle">'
            f"{escape(bar.label)}</text>"
        )
    parts.append(
        f'<text x="{_HISTOGRAM_WIDTH // 2}" y="{base + 36}" text-anchor="middle">'
        "minutes from arrival to first action</text></svg>"
    )
    return "".join(parts)


def _table(
    headers: Sequence[str],
    rows: Sequence[tuple[dict[str, Any], Sequence[str]]],
    numeric: set[int],
    wrap: frozenset[int] = frozenset(),
) -> str:
    """A table in a box that scrolls sideways on a narrow screen; cells stay on one line
    except the ``wrap`` columns (prose)."""
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for attributes, cells in rows:
        attrs = "".join(
            f' {name}="{_attr(value)}"' for name, value in attributes.items() if value is not None
        )
        tds = "".join(
            f'<td class="num">{escape(c)}</td>'
            if i in numeric
            else f'<td class="wrap">{escape(c)}</td>'
            if i in wrap
            else f"<td>{escape(c)}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f"<tr{attrs}>{tds}</tr>")
    if not body:
        body.append(f'<tr><td class="empty" colspan="{len(headers)}">No data.</td></tr>')
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _funnel(report: Report) -> str:
    bars = [
        _Bar(
            step["stage"].upper() if len(step["stage"]) == 3 else step["stage"].capitalize(),
            step["count"],
            "stage",
            step["stage"],
            "" if step["rate_from_previous"] is None else f" · {_pct(step['rate_from_previous'])}",
        )
        for step in report.funnel["stages"]
    ]
    goal = report.funnel["mql_to_sql"]
    meets = goal["meets_goal"]
    css = {True: "goal-met", False: "goal-missed", None: "caption"}[meets]
    verdict = {True: "meets the goal", False: "below the goal", None: "no MQLs yet"}[meets]
    return (
        '<section id="funnel"><h2>Funnel</h2>'
        + _horizontal_bars("funnel-chart", "Leads reaching each funnel stage", bars)
        + f'<p id="mql-to-sql" data-actual="{_data_number(goal["actual"])}" '
        f'data-goal="{_data_number(goal["goal"])}" '
        f'data-meets-goal="{"" if meets is None else str(meets).lower()}">'
        f"MQL → SQL <strong>{_pct(goal['actual'])}</strong> against the SOP goal of "
        f'{_pct(goal["goal"])}: <span class="{css}">{verdict}</span></p>'
        + _steps(report)
        + '<p class="caption">A lead at a later stage counts as having reached the earlier ones; '
        "the percentage is the share of the previous stage; goals come from "
        "<code>[report.goals]</code>.</p></section>"
    )


_STEP_NAMES = {
    "sal": "MQL → SAL",
    "sql": "SAL → SQL",
    "opportunity": "SQL → opportunity",
    "won": "opportunity → won",
}


def _goal_text(meets: bool | None) -> str:
    return {True: "meets the goal", False: "below the goal", None: "no data yet"}[meets]


def _steps(report: Report) -> str:
    """Each step's rate against its goal (``[report.goals]``)."""
    rows = [
        (
            {
                "data-step": step["stage"],
                "data-rate": _data_number(step["rate_from_previous"]),
                "data-goal": _data_number(step.get("goal")),
                "data-meets-goal": ""
                if step.get("meets_goal") is None
                else str(step["meets_goal"]).lower(),
                "class": {True: "met", False: "missed", None: None}[step.get("meets_goal")],
            },
            [
                _STEP_NAMES[step["stage"]],
                _pct(step["rate_from_previous"]),
                _pct(step.get("goal")),
                _goal_text(step.get("meets_goal")),
            ],
        )
        for step in report.funnel["stages"]
        if step["stage"] in _STEP_NAMES
    ]
    return _table(["step", "rate", "goal", ""], rows, {1, 2})


_OUTCOME_BY = (
    ("source", "Source"),
    ("channel", "Channel"),
    ("campaign", "Campaign"),
    ("form", "Form"),
    ("first_touch", "First touch"),
)


def _outcomes(report: Report) -> str:
    data = report.outcomes
    win = data["win_rate"]
    meets = win["meets_goal"]
    css = {True: "goal-met", False: "goal-missed", None: "caption"}[meets]
    headline = (
        f'<p id="win-rate" data-actual="{_data_number(win["actual"])}" '
        f'data-goal="{_data_number(win["goal"])}" '
        f'data-meets-goal="{"" if meets is None else str(meets).lower()}" '
        f'data-won="{data["won"]}" data-lost="{data["lost"]}">'
        f"Win rate <strong>{_pct(win['actual'])}</strong> ({data['won']} won, {data['lost']} "
        f"lost; won ÷ (won + lost)) against a goal of {_pct(win['goal'])}: "
        f'<span class="{css}">{_goal_text(meets)}</span>. {data["open"]} opportunities are '
        "open.</p>"
    )
    without = data["without_amount"]
    money = (
        f'<p id="money" data-pipeline="{_attr(json.dumps(data["pipeline"]))}" '
        f'data-won-revenue="{_attr(json.dumps(data["won_revenue"]))}">'
        f"Pipeline (open opportunities): <strong>{escape(money_text(data['pipeline']))}</strong>; "
        f"won revenue: <strong>{escape(money_text(data['won_revenue']))}</strong>.</p>"
        '<p class="caption">Amounts are summed per currency, never across currencies. '
        f"{without['open']} open and {without['won']} won opportunities have no amount.</p>"
    )
    groups = []
    for key, title in _OUTCOME_BY:
        rows = [
            (
                {
                    "data-outcome-by": key,
                    "data-name": row["name"],
                    "data-opportunities": row["opportunities"],
                    "data-won": row["won"],
                    "data-lost": row["lost"],
                },
                outcome_cells(row),
            )
            for row in data["by"][key]
        ]
        groups.append(
            f"<details{' open' if key == 'source' else ''}><summary>By {title.lower()} "
            f"({len(rows)})</summary>"
            + _table(
                [title.lower(), *OUTCOME_COLUMNS],
                rows,
                {1, 2, 3, 4, 5},
            )
            + "</details>"
        )
    reasons = data["reasons"]
    reason_rows = [
        (
            {"data-outcome": outcome, "data-reason": reason, "data-count": count},
            [
                outcome,
                reason.replace("_", " "),
                str(count),
                ", ".join(
                    f"{source} {found[outcome][reason]}"
                    for source, found in reasons["by_source"].items()
                    if reason in found[outcome]
                ),
            ],
        )
        for outcome in ("won", "lost")
        for reason, count in reasons[outcome].items()
    ]
    missing = reasons["without_reason"]
    unfit = reasons["unfit"]
    reason_note = (
        f'<p class="caption">{missing["won"]} won and {missing["lost"]} lost without a reason'
        + (
            f"; {len(unfit)} with a reason that does not fit the outcome (e.g. a win for "
            f"{escape(unfit[0]['reason'].replace('_', ' '))})"
            if unfit
            else ""
        )
        + ".</p>"
    )
    times = data["times"]
    spans = []
    for key, label in (("to_opportunity", "to opportunity"), ("to_close", "to close")):
        found = times[key]
        spans.append(
            f'<li data-time="{key}" data-median-days="{_data_number(found["median_days"])}" '
            f'data-p90-days="{_data_number(found["p90_days"])}" data-leads="{found["leads"]}">'
            f"Arrival {label}: median <strong>{_days(found['median_days'])}</strong>, p90 "
            f"{_days(found['p90_days'])} ({found['leads']} leads; {found['without_time']} without "
            f"a time, {found['before_arrival']} dated before arrival). To: {escape(found['to'])}."
            "</li>"
        )
    return (
        '<section id="outcomes"><h2>After SQL: opportunities, wins and revenue</h2>'
        + headline
        + money
        + "".join(groups)
        + "<h3>Win and loss reasons</h3>"
        + _table(["outcome", "reason", "deals", "by source"], reason_rows, {2}, frozenset({3}))
        + reason_note
        + f'<h3>Time to opportunity and to close</h3><ul id="outcome-times">{"".join(spans)}</ul>'
        + f'<p class="caption">Measured from {escape(times["from"])}.</p>'
        + "</section>"
    )


def _days(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} days"


def _calibration(report: Report) -> str:
    data = report.outcomes["calibration"]
    rows = [
        (
            {
                "data-band": band["band"],
                "data-leads": band["leads"],
                "data-conversion": _data_number(band["conversion"]),
                "data-win-rate": _data_number(band["win_rate"]),
            },
            band_cells(band),
        )
        for band in reversed(data["bands"])
    ]
    if data["findings"]:
        verdict = "".join(
            f'<p class="finding goal-missed" data-finding="">{escape(finding)}.</p>'
            for finding in data["findings"]
        )
    else:
        verdict = f'<p class="caption" id="calibration-note">{escape(calibration_note(data))}.</p>'
    threshold = data["mql_threshold"]
    return (
        '<section id="calibration"><h2>Score calibration</h2>'
        '<p class="caption">Does a higher score predict a better outcome? Conversion = leads '
        "that reached opportunity ÷ scored leads in the band; win rate = won ÷ (won + lost)"
        + ("" if threshold is None else f"; the MQL threshold is {threshold:g}")
        + f". {data['unscored']} leads have no score.</p>"
        + verdict
        + _table(
            ["score", *BAND_COLUMNS],
            rows,
            {1, 2, 3, 4, 5, 6},
        )
        + "</section>"
    )


def _span(minutes: float) -> str:
    if minutes >= 1440 and minutes % 1440 == 0:
        return f"{minutes / 1440:g}d"
    if minutes >= 60:
        return f"{minutes / 60:g}h"
    return f"{minutes:g}m"


def _duration(low: float, high: float | None) -> str:
    """A histogram bucket as people say it: ``15-30m``, ``1-2h``, ``1d+``."""
    if high is None:
        return f"{_span(low)}+"
    low_text, high_text = _span(low), _span(high)
    if low == 0:
        return f"<{high_text}"
    if low_text[-1] == high_text[-1]:
        return f"{low_text[:-1]}-{high_text}"
    return f"{low_text}-{high_text}"


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} h"


def _sla(report: Report) -> str:
    rows = [
        (
            {"data-kind": kind, "data-compliance": _data_number(n["compliance"])},
            [
                kind,
                str(n["on_time"] + n["breached"]),
                str(n["on_time"]),
                str(n["breached"]),
                str(n["pending"] + n["at_risk"]),
                str(n["at_risk"]),
                _pct(n["compliance"]),
            ],
        )
        for kind, n in report.sla["by_kind"].items()
    ]
    table = _table(
        ["clock", "decided", "on time", "breached", "pending", "of them at risk", "compliance¹"],
        rows,
        {1, 2, 3, 4, 5, 6},
    )
    bars = [
        _Bar(
            _duration(b["min_minutes"], b["max_minutes"]),
            b["count"],
            "bucket",
            b["bucket"],
            late=b["min_minutes"] >= 60,
        )
        for b in report.sla["histogram"]
    ]
    if any(bar.count for bar in bars):
        histogram = "<h3>Minutes from arrival to first action</h3>" + _vertical_bars(
            "sla-histogram", "Minutes to first action", bars
        )
    else:
        histogram = (
            '<p class="empty" id="sla-histogram-empty">No first action recorded yet: the '
            "histogram of minutes to first action appears once sales acts on a lead.</p>"
        )
    action = report.time_to_first_action
    sla = report.sla
    decided, pending = sla.get("decided", 0), sla.get("pending", 0)
    if decided:
        headline = (
            f"<strong>{_pct(sla['compliance'])}</strong> of {decided} decided clocks met their "
            f"SLA; {pending} {'clock is' if pending == 1 else 'clocks are'} still pending and "
            "not counted."
        )
    else:
        headline = (
            f"No clock is decided yet ({pending} pending): compliance is shown once a clock is "
            "met or breached."
        )
    return (
        '<section id="sla"><h2>SLA</h2>'
        f'<p id="sla-compliance" data-compliance="{_data_number(sla["compliance"])}" '
        f'data-decided="{decided}" data-pending="{pending}">{headline}</p>'
        f'<p class="caption">{sla["open_breaches"]} open breaches. Time to first action: median '
        f"{_hours(action['median_hours'])}, p90 {_hours(action['p90_hours'])} "
        f"({action['with_action']} leads with a first action).</p>"
        + table
        + '<p class="caption">¹ Compliance = on time ÷ decided (on time + breached). A pending '
        "clock has not run out yet; an at-risk one is close to its deadline.</p>"
        + histogram
        + "</section>"
    )


def _rejections(report: Report) -> str:
    data = report.rejections
    bars = [
        _Bar(reason.replace("_", " "), count, "reason", reason)
        for reason, count in data["by_reason"].items()
    ]
    groups = []
    for title, key in (("source", "by_source"), ("form", "by_form"), ("campaign", "by_campaign")):
        rows = [
            (
                {"data-group": key, "data-name": name, "data-reason": reason},
                [name, reason, str(count)],
            )
            for name, reasons in data[key].items()
            for reason, count in reasons.items()
        ]
        if rows:
            groups.append(
                f"<details><summary>By {title} ({len(data[key])})</summary>"
                + _table([title, "reason", "leads"], rows, {2})
                + "</details>"
            )
    return (
        '<section id="rejections"><h2>Rejection reasons</h2>'
        f'<p class="caption">{data["total"]} rejected leads.</p>'
        + _horizontal_bars(
            "rejections-chart",
            "Rejection reasons",
            bars,
            "No lead was rejected with a reason in the period.",
        )
        + "".join(groups)
        + "</section>"
    )


def _ledger(report: Report) -> str:
    numbers = ("received", "written", "verified", "failed", "missing")
    rows = [
        (
            {"data-day": row["day"], "data-form": row["form"]}
            | {"data-destination": row["destination"]}
            | {f"data-{name}": row[name] for name in numbers},
            [row["day"], row["form"], row["source"], row["destination"]]
            + [str(row[name]) for name in numbers],
        )
        for row in report.ledger["rows"]
    ]
    totals = report.ledger["totals"]
    return (
        '<section id="ledger"><h2>Ledger</h2>'
        f'<p class="caption">{totals["received"]} received, {totals["written"]} written, '
        f"{totals['verified']} verified, {totals['missing']} missing.</p>"
        + _table(["day", "form", "source", "destination", *numbers], rows, {4, 5, 6, 7, 8})
        + "</section>"
    )


def _diagnosis(report: Report) -> str:
    weakest = report.diagnosis["weakest"]
    rows = [
        (
            {
                "data-layer": layer["layer"],
                "data-score": _data_number(layer["score"]),
                "class": "weakest" if layer["layer"] == weakest else None,
            },
            [
                layer["layer"],
                "n/a" if layer["score"] is None else f"{layer['score']:.2f}",
                "; ".join(layer["evidence"]),
            ],
        )
        for layer in report.diagnosis["layers"]
    ]
    if weakest:
        evidence = "; ".join(report.diagnosis["weakest_evidence"])
        headline = (
            f'<p id="weakest" data-layer="{_attr(weakest)}">Weakest layer: '
            f"<strong>{escape(weakest)}</strong> — {escape(evidence)}</p>"
        )
    else:
        headline = '<p id="weakest" data-layer="">Not enough data to name a weakest layer.</p>'
    return (
        '<section id="diagnosis"><h2>Handoff diagnosis</h2>'
        + headline
        + _table(["layer", "score", "evidence"], rows, {1}, wrap=frozenset({2}))
        + "</section>"
    )


def _day(value: str | None) -> str:
    return "" if not value else date.fromisoformat(value).strftime("%-d %b %Y")


def _period_text(report: Report) -> str:
    period = report.funnel.get("period") or {}
    since, until = _day(period.get("since")), _day(period.get("until"))
    if since and until:
        return f"{since} – {until}"
    if since:
        return f"since {since}"
    if until:
        return f"until {until}"
    return "all time"


def _kpi(key: str, label: str, value: str, note: str = "", css: str = "") -> str:
    return (
        f'<div class="{" ".join(("kpi", css)).strip()}" data-kpi="{key}">'
        f'<span class="label">{escape(label)}</span>'
        f'<span class="value">{escape(value)}</span>'
        f'<span class="note">{escape(note)}</span></div>'
    )


def _summary(report: Report) -> str:
    stages = {step["stage"]: step["count"] for step in report.funnel["stages"]}
    goal = report.funnel["mql_to_sql"]
    sla = report.sla
    action = report.time_to_first_action
    meets = goal["meets_goal"]
    outcomes = report.outcomes
    win = outcomes["win_rate"]
    cards = [
        _kpi("leads", "Leads", f"{report.lead_count:,}", "arrived in the period"),
        _kpi("mql", "MQLs", f"{stages.get('mql', 0):,}", f"{stages.get('sql', 0):,} reached SQL"),
        _kpi(
            "mql-to-sql",
            "MQL → SQL",
            _pct(goal["actual"]),
            f"goal {_pct(goal['goal'])}",
            "" if meets is None else ("good" if meets else "bad"),
        ),
        _kpi(
            "win-rate",
            "Win rate",
            _pct(win["actual"]),
            f"goal {_pct(win['goal'])}; {outcomes['won']:,} won, {outcomes['lost']:,} lost",
            "" if win["meets_goal"] is None else ("good" if win["meets_goal"] else "bad"),
        ),
        _kpi(
            "won-revenue",
            "Won revenue",
            money_text(outcomes["won_revenue"]),
            f"pipeline {money_text(outcomes['pipeline'])}",
            "money",
        ),
        _kpi(
            "sla",
            "SLA compliance",
            _pct(sla["compliance"]) if sla.get("decided") else "not yet",
            f"of {sla.get('decided', 0):,} decided clocks",
        ),
        _kpi(
            "pending",
            "Pending clocks",
            f"{sla.get('pending', 0):,}",
            "still running, not in compliance",
        ),
        _kpi(
            "breaches",
            "Open breaches",
            f"{sla['open_breaches']:,}",
            "past due and not met yet",
            "bad" if sla["open_breaches"] else "good",
        ),
        _kpi(
            "ttfa",
            "Time to first action",
            _hours(action["median_hours"]),
            f"median; p90 {_hours(action['p90_hours'])}",
        ),
    ]
    return f'<section id="summary"><div class="kpis">{"".join(cards)}</div></section>'


def _trends(report: Report) -> str:
    weeks = report.funnel.get("by_week") or []
    left_out = max(len(weeks) - _MAX_WEEKS, 0)
    shown = weeks[left_out:]
    if not any(week["leads"] for week in shown):
        return (
            '<section id="trends"><h2>Week by week</h2>'
            '<p class="empty" id="trends-empty">No leads arrived in the period, so there is no '
            "trend to draw.</p></section>"
        )
    top = max(week["leads"] for week in shown) or 1
    columns = []
    for week in shown:
        start = date.fromisoformat(week["week"])
        label = start.strftime("%-d %b")
        heights = {name: round(100 * week[name] / top) for name in ("leads", "mql", "sql")}
        columns.append(
            f'<div class="col" data-week="{week["week"]}" data-leads="{week["leads"]}" '
            f'title="week of {label}: {week["leads"]} leads, {week["mql"]} MQLs, '
            f'{week["sql"]} SQLs"><span class="n">{week["leads"]}</span>'
            f'<div class="stack"><i class="leads" style="height:{heights["leads"]}%"></i>'
            f'<i class="mql" style="height:{heights["mql"]}%"></i>'
            f'<i class="sql" style="height:{heights["sql"]}%"></i></div>'
            f'<span class="wk">{escape(label)}</span></div>'
        )
    legend = (
        '<p class="legend"><i class="leads"></i> leads <i class="mql"></i> MQLs '
        '<i class="sql"></i> SQLs &middot; weeks start on Monday, by arrival</p>'
    )
    rows = [
        (
            {
                "data-week": week["week"],
                "data-leads": week["leads"],
                "data-mql": week["mql"],
                "data-sql": week["sql"],
            },
            [
                week["week"],
                str(week["leads"]),
                str(week["mql"]),
                str(week["sql"]),
                _pct(week["mql_to_sql"]),
                str(week["rejected"]),
                str(week["sla_on_time"] + week["sla_breached"]),
                _pct(week["sla_compliance"]),
                str(week["sla_pending"]),
            ],
        )
        for week in reversed(shown)
    ]
    note = (
        f'<p class="caption">{left_out} earlier weeks are left out; use '
        "<code>report --since</code> to choose the period.</p>"
        if left_out
        else ""
    )
    return (
        '<section id="trends"><h2>Week by week</h2>'
        + legend
        + f'<div class="{"trend many" if len(shown) > 8 else "trend"}" role="img" '
        'aria-label="Leads, MQLs and SQLs by week">'
        f"{''.join(columns)}</div>"
        + _table(
            [
                "week of",
                "leads",
                "MQLs",
                "SQLs",
                "MQL → SQL",
                "rejected",
                "SLA decided",
                "compliance",
                "pending",
            ],
            rows,
            {1, 2, 3, 4, 5, 6, 7, 8},
        )
        + note
        + "</section>"
    )


_BREAKDOWNS = (
    ("channel", "Channel"),
    ("source", "Source (form / system)"),
    ("campaign", "Campaign"),
    ("form", "Form"),
)


def _breakdowns(report: Report) -> str:
    found = report.funnel.get("breakdowns") or {}
    if not any(found.get(key) for key, _ in _BREAKDOWNS):
        return (
            '<section id="breakdowns"><h2>Where the leads came from</h2>'
            '<p class="empty" id="breakdowns-empty">No leads in the period.</p></section>'
        )
    cards = []
    for key, title in _BREAKDOWNS:
        rows = found.get(key) or []
        top = max((row["leads"] for row in rows), default=0) or 1
        body = "".join(
            f'<tr data-breakdown="{key}" data-name="{_attr(row["name"])}" '
            f'data-leads="{row["leads"]}"><td class="name">{escape(row["name"])}'
            f'<span class="meter" style="width:{round(100 * row["leads"] / top)}%"></span></td>'
            f'<td class="num">{row["leads"]}</td><td class="num">{row["mql"]}</td>'
            f'<td class="num opt">{row["sql"]}</td>'
            f'<td class="num">{_pct(row["mql_to_sql"])}</td>'
            f'<td class="num opt">{row["rejected"]}</td></tr>'
            for row in rows
        )
        cards.append(
            f'<div class="card"><h3>{escape(title)}</h3><div class="scroll"><table>'
            '<thead><tr><th></th><th class="num">leads</th><th class="num">MQLs</th>'
            '<th class="num opt">SQLs</th><th class="num">MQL → SQL</th>'
            '<th class="num opt">rejected</th></tr></thead>'
            f"<tbody>{body}</tbody></table></div></div>"
        )
    return (
        '<section id="breakdowns"><h2>Where the leads came from</h2>'
        f'<div class="grid">{"".join(cards)}</div></section>'
    )


def render_html(report: Report, *, title: str = "leadrelay handoff report") -> str:
    """The report as one self-contained HTML page."""
    template = Template(
        files("leadrelay.handoff").joinpath("templates/report.html").read_text(encoding="utf-8")
    )
    body = "\n".join(
        [
            _summary(report),
            _trends(report),
            '<div class="grid wide">' + _funnel(report) + _rejections(report) + "</div>",
            _outcomes(report),
            _calibration(report),
            _breakdowns(report),
            _sla(report),
            _ledger(report),
            _diagnosis(report),
        ]
    )
    period = report.funnel.get("period") or {}
    return template.substitute(
        title=escape(title),
        period=escape(_period_text(report)),
        since=_attr(period.get("since") or ""),
        until=_attr(period.get("until") or ""),
        generated_at=escape(report.generated_at.strftime("%Y-%m-%d %H:%M UTC")),
        lead_count=report.lead_count,
        body=body,
    )
