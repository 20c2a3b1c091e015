"""The end-to-end demo on the sandbox: its summary numbers (its time is not asserted)."""

from __future__ import annotations

import pytest
from rich.console import Console

from leadrelay.demo import EndToEndResult, render_end_to_end, run_end_to_end


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> EndToEndResult:
    return run_end_to_end(tmp_path_factory.mktemp("demo"))


def test_every_captured_lead_is_delivered(result: EndToEndResult) -> None:
    assert (result.captured, result.delivered) == (3, 3)


@pytest.mark.parametrize("system", ["hubspot", "salesforce", "zoho"])
def test_each_system_ends_with_the_three_leads(result: EndToEndResult, system: str) -> None:
    line = result.systems[system]
    assert (line.leads, line.created) == (3, 3)
    assert line.api_calls > 0


def test_sales_verdicts_are_written_back_to_hubspot(result: EndToEndResult) -> None:
    stages = {lead["form"]: lead.get("stage") for lead in result.leads}
    assert result.systems["hubspot"].written_back >= 3
    assert stages["demo-webform"] == "sal"
    assert stages["demo-google"] == "disqualified"


def test_rejection_reason_comes_back(result: EndToEndResult) -> None:
    reasons = {lead["form"]: lead.get("rejection_reason") for lead in result.leads}
    assert reasons["demo-meta"] == "no_need"


def test_validation_run_passes(result: EndToEndResult) -> None:
    assert result.validation is not None
    assert result.validation.ok
    assert result.ok


def test_summary_table_is_printed(result: EndToEndResult) -> None:
    console = Console(record=True, width=140)

    render_end_to_end(result, console)

    text = console.export_text()
    assert "written back" in text
    assert "validate demo-google: passed" in text
