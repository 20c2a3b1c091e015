from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leadrelay.handoff.report_html import render_html
from leadrelay.model import RejectionReason, Stage
from tests.handoff.test_report import make, report_of, synthetic_leads


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


def test_sections_have_stable_ids() -> None:
    dom = parse(rendered())
    ids = {attrs.get("id") for tag, attrs in dom.elements if tag == "section"}
    assert ids == {"funnel", "sla", "rejections", "ledger", "diagnosis"}


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


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("LEADRELAY_REQUIRE_CHROMIUM"):
            pytest.fail("LEADRELAY_REQUIRE_CHROMIUM is set but chromium is not on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    return path


def test_chromium_renders_the_page(tmp_path: Path) -> None:
    binary = chromium()
    page = tmp_path / "report.html"
    page.write_text(rendered(), encoding="utf-8")
    profile = tmp_path / "profile"
    result = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse(result.stdout)
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
