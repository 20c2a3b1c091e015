"""The outcome and calibration sections of the HTML report, parsed and in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leadrelay.handoff.report_html import render_html
from leadrelay.handoff.report_settings import ReportConfig
from leadrelay.model import Lead, Stage
from tests.handoff.test_report import make
from tests.handoff.test_report_html import SECTIONS, Dom, layout, parse, run_chromium
from tests.handoff.test_report_outcomes import banded, outcome_leads, report_with


def outcome_page() -> str:
    leads: list[Lead] = [*banded({85: (4, 1), 75: (4, 2)}), *outcome_leads()]
    return render_html(report_with(leads, ReportConfig(calibration_min_leads=2)))


def assert_outcome_dom(dom: Dom) -> None:
    (win,) = dom.find("p", id="win-rate")
    assert (win["data-actual"], win["data-goal"], win["data-meets-goal"]) == ("0.5", "0.25", "true")
    assert (win["data-won"], win["data-lost"]) == ("2", "2")
    (money,) = dom.find("p", id="money")
    assert json.loads(str(money["data-won-revenue"])) == {"EUR": 1000.0, "USD": 500.0}
    assert json.loads(str(money["data-pipeline"])) == {"EUR": 2000.0}
    sources = {
        str(row["data-name"]): (row["data-opportunities"], row["data-won"], row["data-lost"])
        for row in dom.find("tr", data_outcome_by="source")
    }
    assert sources == {"google": ("7", "1", "1"), "linkedin": ("2", "1", "1")}
    touches = {str(row["data-name"]) for row in dom.find("tr", data_outcome_by="first_touch")}
    assert touches == {"paid_search / google", "(none)"}
    reasons = {
        (str(row["data-outcome"]), str(row["data-reason"])): row["data-count"]
        for row in dom.find("tr")
        if "data-outcome" in row
    }
    assert reasons == {
        ("won", "product_fit"): "1",
        ("won", "competitor"): "1",
        ("lost", "no_budget"): "1",
    }
    steps = {
        str(row["data-step"]): (row["data-meets-goal"], row.get("class"))
        for row in dom.find("tr")
        if "data-step" in row
    }
    assert steps == {  # 10 of 17 MQLs accepted, 2 won of 9 opportunities
        "sal": ("false", "missed"),
        "sql": ("true", "met"),
        "opportunity": ("true", "met"),
        "won": ("false", "missed"),
    }
    bands = [str(row["data-band"]) for row in dom.find("tr") if "data-band" in row]
    assert bands == ["80+", "70–79", "60–69", "below 60"]  # highest first
    assert len([row for tag, row in dom.elements if tag == "p" and "data-finding" in row]) == 2
    (card,) = dom.find("div", data_kpi="win-rate")
    assert card["class"] == "kpi good"


def test_the_outcome_sections_carry_the_numbers() -> None:
    dom = parse(outcome_page())
    assert_outcome_dom(dom)
    text = "".join(dom.text)
    assert "leads scored 80+ convert no better than 70–79" in text
    assert "Amounts are summed per currency, never across currencies." in text
    assert "Measured from arrival" in text


def test_without_findings_the_calibration_says_why() -> None:
    dom = parse(render_html(report_with([make("sql", Stage.SQL), make("mql", Stage.MQL)])))
    (note,) = dom.find("p", id="calibration-note")
    assert "no opportunity read back yet" in "".join(dom.text)
    assert dom.find("p", id="win-rate")[0]["data-actual"] == ""
    assert note is not None


def test_chromium_renders_the_outcome_sections(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(outcome_page(), encoding="utf-8")
    assert_outcome_dom(parse(run_chromium(tmp_path, page, "--dump-dom")))


@pytest.mark.parametrize("width", [1280, 390])
def test_the_outcome_page_fits_the_screen(tmp_path: Path, width: int) -> None:
    facts = layout(tmp_path, outcome_page(), width)
    assert facts["page_width"] <= width
    assert [section["id"] for section in facts["sections"]] == SECTIONS
    for section in facts["sections"]:
        assert section["height"] > 0 and section["right"] <= width, section
