from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import date, timedelta
from html import escape, unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from leadrelay.handoff.report import Period, build_report
from leadrelay.handoff.report_html import render_html
from leadrelay.handoff.sla import evaluate
from leadrelay.model import Channel, Lead, RejectionReason, Stage
from tests.handoff.test_report import NOW, T0, ledger_counts, make, report_of, synthetic_leads


class Dom(HTMLParser):
    """Every element as (tag, attributes), plus the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            found
            for name, found in self.elements
            if name == tag and all(found.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def data(self, tag: str, key: str) -> dict[str, int]:
        """``data-KEY`` → ``data-count`` of every ``tag`` that has both."""
        return {
            str(found[f"data-{key}"]): int(str(found["data-count"]))
            for name, found in self.elements
            if name == tag and f"data-{key}" in found and "data-count" in found
        }


def parse(html: str) -> Dom:
    dom = Dom()
    dom.feed(html)
    dom.close()
    return dom


def rendered() -> str:
    leads = [
        *synthetic_leads(),
        make(
            "hostile",
            Stage.DISQUALIFIED,
            rejection_reason=RejectionReason.OTHER,
            form_id='<script>alert("x")</script>',
            utm_campaign="https://evil.example/track",
        ),
    ]
    return render_html(report_of(leads))


def test_page_is_self_contained() -> None:
    html = rendered()
    dom = parse(html)
    assert dom.find("script") == []
    assert dom.find("link") == []
    loading = {"href", "src", "srcset", "action", "poster", "xlink:href", "data", "background"}
    for _, attrs in dom.elements:
        for name, value in attrs.items():
            assert name not in loading, (name, value)
    assert "url(" not in html
    assert "@import" not in html
    # text from leads is escaped: a URL or markup in a campaign or form name stays text
    assert '<script>alert("x")</script>' not in html
    assert "https://evil.example/track" in "".join(dom.text)


SECTIONS = [
    "summary",
    "trends",
    "funnel",
    "rejections",
    "outcomes",
    "calibration",
    "breakdowns",
    "sla",
    "ledger",
    "diagnosis",
]


def test_sections_have_stable_ids_in_reading_order() -> None:
    dom = parse(rendered())
    assert [attrs.get("id") for tag, attrs in dom.elements if tag == "section"] == SECTIONS


def assert_report_dom(dom: Dom) -> None:
    assert dom.data("rect", "stage") == {"mql": 12, "sal": 6, "sql": 4, "opportunity": 3, "won": 1}
    (goal,) = dom.find("p", id="mql-to-sql")
    assert goal["data-goal"] == "0.3"
    assert goal["data-meets-goal"] == "true"
    assert dom.data("rect", "bucket") == {
        "0-15": 0,
        "15-30": 3,
        "30-60": 3,
        "60-120": 1,
        "120-240": 1,
        "240-480": 0,
        "480-1440": 1,
        "1440+": 1,
    }
    assert dom.data("rect", "reason") == {"bad_fit": 2, "timing": 1, "other": 1}
    (weakest,) = dom.find("p", id="weakest")
    assert weakest["data-layer"] == "action"
    (pricing_day,) = dom.find("tr", data_form="pricing", data_day="2024-05-06")
    assert (pricing_day["data-received"], pricing_day["data-missing"]) == ("10", "3")
    layers = [attrs["data-layer"] for attrs in dom.find("tr") if "data-layer" in attrs]
    assert layers == ["capture", "qualification", "routing", "action", "status", "outcome"]


def test_dom_carries_the_report_numbers() -> None:
    assert_report_dom(parse(rendered()))


def test_empty_report_renders() -> None:
    dom = parse(render_html(report_of([], [])))
    assert dom.data("rect", "stage") == dict.fromkeys(
        ["mql", "sal", "sql", "opportunity", "won"], 0
    )
    assert dom.data("rect", "reason") == {}
    assert dom.find("p", id="rejections-chart-empty")
    (weakest,) = dom.find("p", id="weakest")
    assert weakest["data-layer"] == ""


@pytest.mark.parametrize(
    "empty", ["trends-empty", "breakdowns-empty", "sla-histogram-empty", "rejections-chart-empty"]
)
def test_an_empty_chart_is_a_one_line_note_not_a_blank_area(empty: str) -> None:
    dom = parse(render_html(report_of([], [])))
    assert dom.find("p", id=empty)
    charts = {attrs.get("id") for tag, attrs in dom.elements if tag == "svg"}
    assert charts == {"funnel-chart"}  # five labelled zero bars, not an empty plot
    assert not [attrs for tag, attrs in dom.elements if tag == "div" and attrs.get("data-week")]


def test_sla_compliance_counts_decided_clocks_and_shows_pending_apart() -> None:
    fresh = [
        make(f"fresh{n}", Stage.MQL, created_at=NOW - timedelta(minutes=2), assigned_at=NOW)
        for n in range(3)
    ]
    report = report_of([*synthetic_leads(), *fresh])
    dom = parse(render_html(report))
    (headline,) = dom.find("p", id="sla-compliance")
    sla = report.sla
    assert headline["data-decided"] == str(sla["decided"])
    assert headline["data-pending"] == str(sla["pending"])
    assert sla["pending"] >= 3  # the fresh leads' clocks still run
    on_time = sum(kind["on_time"] for kind in sla["by_kind"].values())
    assert float(str(headline["data-compliance"])) == pytest.approx(on_time / sla["decided"], 1e-3)
    text = "".join(dom.text)
    assert f"{sla['pending']} clocks are still pending and not counted" in text
    assert "Compliance = on time ÷ decided" in text


def test_no_clock_decided_says_so_instead_of_a_percentage() -> None:
    lead = make("fresh", Stage.MQL, assigned_at=None, owner=None, created_at=NOW)
    dom = parse(render_html(report_of([lead], [])))
    (card,) = dom.find("div", data_kpi="sla")
    (headline,) = dom.find("p", id="sla-compliance")
    assert headline["data-decided"] == "0" and headline["data-compliance"] == ""
    assert "No clock is decided yet" in "".join(dom.text)
    assert card["class"] == "kpi"  # neither good nor bad


def _spread_leads() -> list[Lead]:
    """Leads over three weeks of May 2024 from two channels, two forms and a CRM."""
    monday = date(2024, 5, 6)
    leads = []
    for index, (week, channel, form) in enumerate(
        [
            (0, Channel.PAID_SEARCH, "pricing"),
            (0, Channel.PAID_SEARCH, "pricing"),
            (0, Channel.EMAIL, "demo"),
            (2, Channel.EMAIL, None),
            (2, Channel.PAID_SEARCH, "demo"),
        ]
    ):
        day = monday + timedelta(days=7 * week + index % 3)
        leads.append(
            make(
                f"spread{index}",
                Stage.SQL if index % 2 else Stage.MQL,
                created_at=T0.replace(year=day.year, month=day.month, day=day.day),
                channel=channel,
                form_id=form,
            )
        )
    return leads


def _spread_report(period: Period | None = None) -> Any:
    leads = _spread_leads()
    end = T0 + timedelta(days=20)
    return build_report(leads, ledger_counts(), evaluate(leads, end), end, period=period)


def test_weeks_are_rows_from_the_first_to_the_last_with_a_quiet_week_as_zero() -> None:
    dom = parse(render_html(_spread_report()))
    weeks = {
        str(attrs["data-week"]): int(str(attrs["data-leads"]))
        for attrs in dom.find("tr")
        if attrs.get("data-week")
    }
    assert weeks == {"2024-05-06": 3, "2024-05-13": 0, "2024-05-20": 2}
    columns = [attrs["data-week"] for attrs in dom.find("div") if attrs.get("data-week")]
    assert columns == ["2024-05-06", "2024-05-13", "2024-05-20"]  # oldest first, left to right


@pytest.mark.parametrize(
    ("breakdown", "expected"),
    [
        ("channel", {"paid_search": 3, "email": 2}),
        ("source", {"form": 4, "system": 1}),
        ("form", {"pricing": 2, "demo": 2, "(none)": 1}),
        ("campaign", {"spring": 5}),
    ],
)
def test_breakdowns_count_the_leads_of_each_group(breakdown: str, expected: dict[str, int]) -> None:
    dom = parse(render_html(_spread_report()))
    rows = {
        str(attrs["data-name"]): int(str(attrs["data-leads"]))
        for attrs in dom.find("tr", data_breakdown=breakdown)
    }
    assert rows == expected


def test_a_period_keeps_only_the_leads_and_ledger_days_inside_it() -> None:
    report = _spread_report(Period(date(2024, 5, 13), date(2024, 5, 26)))
    dom = parse(render_html(report))
    (header,) = dom.find("header")
    assert (header["data-since"], header["data-until"]) == ("2024-05-13", "2024-05-26")
    assert "13 May 2024 – 26 May 2024" in "".join(dom.text)
    assert report.lead_count == 2
    assert [w["week"] for w in report.funnel["by_week"]] == ["2024-05-13", "2024-05-20"]
    assert report.ledger["totals"]["received"] == 0  # the ledger's days are 6 and 7 May


def test_a_period_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        Period(date(2024, 5, 20), date(2024, 5, 1))


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("LEADRELAY_REQUIRE_CHROMIUM"):
            pytest.fail("LEADRELAY_REQUIRE_CHROMIUM is set but chromium is not on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    return path


def run_chromium(tmp_path: Path, page: Path, *arguments: str) -> str:
    """Headless Chromium on ``page`` with ``arguments``; its standard output."""
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            *arguments,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


#: A page that shows the report in a frame exactly WIDTH pixels wide (Chromium's own window is
#: never narrower than 500) and writes the frame's layout into its own DOM, which --dump-dom
#: prints. The report itself has no script; the probe lives only in this wrapper.
LAYOUT_PROBE = """<!DOCTYPE html><html><body style="margin:0">
<script>
function probe(frame) {
  const doc = frame.contentDocument, view = frame.contentWindow;
  const box = (element) => element.getBoundingClientRect();
  const facts = {
    viewport: view.innerWidth,
    page_width: doc.documentElement.scrollWidth,
    sections: [...doc.querySelectorAll("section")].map((s) => ({
      id: s.id, left: box(s).left, right: box(s).right, height: box(s).height,
    })),
    charts: [...doc.querySelectorAll("svg, .trend")].map((c) => ({
      id: c.id || c.className, width: box(c).width, height: box(c).height,
    })),
    smallest_text: Math.min(...[...doc.querySelectorAll("svg text")].map(
      (t) => box(t).height || 99)),
  };
  const out = document.createElement("pre");
  out.id = "layout-facts";
  out.textContent = JSON.stringify(facts);
  document.body.append(out);
}
</script>
<iframe style="width:WIDTHpx;height:1600px;border:0" onload="probe(this)" srcdoc="PAGE"></iframe>
</body></html>"""


def layout(tmp_path: Path, html: str, width: int) -> dict[str, Any]:
    page = tmp_path / f"probe-{width}.html"
    wrapper = LAYOUT_PROBE.replace("WIDTH", str(width))
    page.write_text(wrapper.replace("PAGE", escape(html, quote=True)), encoding="utf-8")
    dumped = run_chromium(tmp_path, page, "--window-size=1400,1800", "--dump-dom")
    start = dumped.index('<pre id="layout-facts">') + len('<pre id="layout-facts">')
    facts: dict[str, Any] = json.loads(unescape(dumped[start : dumped.index("</pre>", start)]))
    return facts


def full_report_html() -> str:
    return render_html(report_of([*synthetic_leads(), *_spread_leads()]))


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("kind", ["full", "empty"])
def test_the_page_fits_the_screen_with_every_section(tmp_path: Path, width: int, kind: str) -> None:
    html = full_report_html() if kind == "full" else render_html(report_of([], []))
    facts = layout(tmp_path, html, width)
    assert facts["viewport"] == width
    assert facts["page_width"] <= width  # nothing makes the page scroll sideways
    assert [section["id"] for section in facts["sections"]] == SECTIONS
    for section in facts["sections"]:
        assert section["height"] > 0, section
        assert section["left"] >= 0 and section["right"] <= width, section
    for chart in facts["charts"]:
        assert chart["width"] <= width, chart
    if kind == "empty":  # an empty chart is a line of text, the funnel its five zero rows
        assert [chart["id"] for chart in facts["charts"]] == ["funnel-chart"]
        assert facts["charts"][0]["height"] < 200
    if width == 390:  # chart labels stay readable on a phone
        assert facts["smallest_text"] >= 8


@pytest.mark.parametrize("width", [1280, 390])
def test_screenshots_are_taken_at_desktop_and_phone_widths(tmp_path: Path, width: int) -> None:
    page = tmp_path / "report.html"
    page.write_text(full_report_html(), encoding="utf-8")
    shot = tmp_path / f"report-{width}.png"
    run_chromium(tmp_path, page, f"--window-size={width},1600", f"--screenshot={shot}")
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(header[16:20], "big") == width  # the PNG's width


def test_chromium_renders_the_page(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(rendered(), encoding="utf-8")
    dom = parse(run_chromium(tmp_path, page, "--dump-dom"))
    assert_report_dom(dom)
    svgs = {attrs.get("id") for tag, attrs in dom.elements if tag == "svg"}
    assert {"funnel-chart", "sla-histogram", "rejections-chart"} <= svgs


@pytest.mark.parametrize(
    ("required", "outcome"),
    [("", pytest.skip.Exception), ("1", pytest.fail.Exception)],
)
def test_missing_chromium_skips_only_when_not_required(
    monkeypatch: pytest.MonkeyPatch, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("LEADRELAY_REQUIRE_CHROMIUM", required)
    with pytest.raises(outcome):
        chromium()
