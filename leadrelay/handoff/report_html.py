"""The handoff report as one self-contained HTML page (``leadrelay report --html FILE``).

Inline CSS and inline SVG charts drawn here: funnel bars, the histogram of minutes to first
action, rejection-reason bars. No scripts, no external URLs, so the file can be mailed or
archived and opens offline.

Stable hooks for tests and scrapers:

* ``<section id="funnel|sla|rejections|ledger|diagnosis">``;
* funnel bars ``<rect class="bar" data-stage="mql" data-count="42">``, and
  ``<p id="mql-to-sql" data-actual="0.25" data-goal="0.3" data-meets-goal="false">``;
* SLA histogram bars ``<rect class="bar" data-bucket="0-15" data-count="3">``, and rows
  ``<tr data-kind="hot" data-compliance="0.8">``;
* rejection bars ``<rect class="bar" data-reason="bad_fit" data-count="2">``;
* ledger rows ``<tr data-form=… data-day=… data-received=… data-missing=…>``;
* diagnosis rows ``<tr data-layer="capture" data-score="0.95">`` and
  ``<p id="weakest" data-layer="routing">``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from importlib.resources import files
from string import Template
from typing import Any

from leadrelay.handoff.report import Report

__all__ = ["render_html"]

_BAR_HEIGHT = 26
_CHART_WIDTH = 720
_LABEL_WIDTH = 170


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


def _horizontal_bars(chart_id: str, title: str, bars: Sequence[_Bar]) -> str:
    if not bars:
        return f'<p class="empty" id="{chart_id}-empty">No data.</p>'
    top = max(bar.count for bar in bars) or 1
    span = _CHART_WIDTH - _LABEL_WIDTH - 120
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
    slot = (_CHART_WIDTH - 40) // max(len(bars), 1)
    plot = 200
    base = plot + 24  # room above the tallest bar for its count
    height = base + 40
    parts = [
        f'<svg id="{chart_id}" role="img" aria-label="{_attr(title)}" '
        f'viewBox="0 0 {_CHART_WIDTH} {height}" width="{_CHART_WIDTH}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="20" y1="{base}" x2="{_CHART_WIDTH - 20}" y2="{base}" stroke="#9aa5b1"/>',
    ]
    for index, bar in enumerate(bars):
        x = 20 + index * slot + 6
        bar_height = round(plot * bar.count / top)
        y = base - bar_height
        css = "bar late" if bar.late else "bar"
        parts.append(
            f'<rect class="{css}" x="{x}" y="{y}" width="{slot - 12}" height="{bar_height}" '
            f'data-{bar.attribute}="{_attr(bar.value)}" data-count="{bar.count}">'
            f"<title>{escape(bar.label)} min: {bar.count}</title></rect>"
            f'<text x="{x + (slot - 12) // 2}" y="{y - 4}" text-anchor="middle">{bar.count}</text>'
            f'<text x="{x + (slot - 12) // 2}" y="{base + 18}" text-anchor="middle">'
            f"{escape(bar.label)}</text>"
        )
    parts.append(
        f'<text x="{_CHART_WIDTH // 2}" y="{base + 36}" text-anchor="middle">'
        "minutes from arrival to first action</text></svg>"
    )
    return "".join(parts)


def _table(
    headers: Sequence[str], rows: Sequence[tuple[dict[str, Any], Sequence[str]]], numeric: set[int]
) -> str:
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
            f'<td class="num">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f"<tr{attrs}>{tds}</tr>")
    if not body:
        body.append(f'<tr><td class="empty" colspan="{len(headers)}">No data.</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _funnel(report: Report) -> str:
    bars = [
        _Bar(
            step["stage"].upper() if len(step["stage"]) == 3 else step["stage"].capitalize(),
            step["count"],
            "stage",
            step["stage"],
            ""
            if step["rate_from_previous"] is None
            else f"  ({_pct(step['rate_from_previous'])} of previous)",
        )
        for step in report.funnel["stages"]
    ]
    goal = report.funnel["mql_to_sql"]
    meets = goal["meets_goal"]
    css = "goal-met" if meets else "goal-missed"
    verdict = {True: "meets the goal", False: "below the goal", None: "no MQLs yet"}[meets]
    return (
        '<section id="funnel"><h2>Funnel</h2>'
        + _horizontal_bars("funnel-chart", "Leads reaching each funnel stage", bars)
        + f'<p id="mql-to-sql" data-actual="{_data_number(goal["actual"])}" '
        f'data-goal="{_data_number(goal["goal"])}" '
        f'data-meets-goal="{"" if meets is None else str(meets).lower()}">'
        f"MQL → SQL <strong>{_pct(goal['actual'])}</strong> against the SOP goal of "
        f'{_pct(goal["goal"])}: <span class="{css}">{verdict}</span></p></section>'
    )


def _sla(report: Report) -> str:
    rows = [
        (
            {"data-kind": kind, "data-compliance": _data_number(n["compliance"])},
            [
                kind,
                str(n["clocks"]),
                str(n["on_time"]),
                str(n["breached"]),
                str(n["at_risk"]),
                str(n["pending"]),
                _pct(n["compliance"]),
            ],
        )
        for kind, n in report.sla["by_kind"].items()
    ]
    table = _table(
        ["clock", "clocks", "on time", "breached", "at risk", "pending", "compliance"],
        rows,
        {1, 2, 3, 4, 5, 6},
    )
    bars = [
        _Bar(b["bucket"], b["count"], "bucket", b["bucket"], late=b["min_minutes"] >= 60)
        for b in report.sla["histogram"]
    ]
    action = report.time_to_first_action

    def hours(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} h"

    return (
        '<section id="sla"><h2>SLA</h2>'
        f'<p class="caption">Overall compliance {_pct(report.sla["compliance"])}; '
        f"{report.sla['open_breaches']} open breaches. Time to first action: median "
        f"{hours(action['median_hours'])}, p90 {hours(action['p90_hours'])}.</p>"
        + table
        + _vertical_bars("sla-histogram", "Minutes to first action", bars)
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
        groups.append(f"<h3>By {title}</h3>" + _table([title, "reason", "leads"], rows, {2}))
    return (
        '<section id="rejections"><h2>Rejection reasons</h2>'
        f'<p class="caption">{data["total"]} rejected leads.</p>'
        + _horizontal_bars("rejections-chart", "Rejection reasons", bars)
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
        + _table(["layer", "score", "evidence"], rows, {1})
        + "</section>"
    )


def render_html(report: Report, *, title: str = "leadrelay handoff report") -> str:
    """The report as one self-contained HTML page."""
    template = Template(
        files("leadrelay.handoff").joinpath("templates/report.html").read_text(encoding="utf-8")
    )
    body = "\n".join(
        [_funnel(report), _sla(report), _rejections(report), _ledger(report), _diagnosis(report)]
    )
    return template.substitute(
        title=escape(title),
        generated_at=escape(report.generated_at.strftime("%Y-%m-%d %H:%M UTC")),
        lead_count=report.lead_count,
        body=body,
    )
