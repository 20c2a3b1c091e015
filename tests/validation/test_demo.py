"""The end-to-end demo on the sandbox: its summary numbers (its time is not asserted)."""

from __future__ import annotations

import pytest
from rich.console import Console

from leadrelay.demo import DEMO_PEOPLE, EndToEndResult, render_end_to_end, run_end_to_end
from leadrelay.model import Tier
from leadrelay.sandbox.salesforce.store import SANDBOX_USERS
from leadrelay.sandbox.zoho.schema import API_USER, SEEDED_USERS

#: The users routing may pick in each CRM (the API users own no leads).
SALES_REPS = {
    "salesforce": {f"{u[1]} {u[2]}" for u in SANDBOX_USERS if u[5] and u[3] != "lrint"},
    "zoho": {f"{u.first_name} {u.last_name}" for u in SEEDED_USERS if u != API_USER},
}


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
    assert result.systems["hubspot"].written_back >= 5  # 3 verdicts, then 2 deals
    assert stages["demo-webform"] == "sal"
    assert stages["demo-google"] == "disqualified"


def test_the_converted_leads_carry_their_deals_to_hubspot(result: EndToEndResult) -> None:
    deals = {line["form"]: line for line in result.outcomes}
    won, lost = deals["demo-webform"], deals["demo-google"]
    assert (won["stage"], won["opportunity_stage"], won["amount"]) == ("won", "Closed Won", 48000)
    assert won["outcome_reason"] == "price"
    assert (lost["stage"], lost["opportunity_stage"], lost["outcome_reason"]) == (
        "lost",
        "Closed Lost",
        "competitor",
    )
    assert won["opportunity_id"] and lost["opportunity_id"]
    assert (won["hubspot_stage"], lost["hubspot_stage"]) == ("won", "lost")


def test_rejection_reason_comes_back(result: EndToEndResult) -> None:
    reasons = {lead["form"]: lead.get("rejection_reason") for lead in result.leads}
    assert reasons["demo-meta"] == "no_need"


def test_validation_run_passes(result: EndToEndResult) -> None:
    assert result.validation is not None
    assert result.validation.ok
    assert result.ok


@pytest.mark.parametrize("system", ["hubspot", "salesforce", "zoho"])
def test_every_demo_lead_has_a_score_and_tier_in_each_system(
    result: EndToEndResult, system: str
) -> None:
    lines = [line for line in result.handoff if line.system == system]
    assert sorted(line.email for line in lines) == sorted(p[1] for p in DEMO_PEOPLE)
    for line in lines:
        assert line.score is not None and 0 <= line.score <= 100
        assert line.tier in {tier.value for tier in Tier}


@pytest.mark.parametrize("system", ["salesforce", "zoho"])
def test_every_demo_lead_has_a_sales_rep_as_owner_in_the_crm(
    result: EndToEndResult, system: str
) -> None:
    owners = [line.owner for line in result.handoff if line.system == system]
    assert len(owners) == len(DEMO_PEOPLE)
    assert set(owners) <= SALES_REPS[system]


def test_report_counts_the_demo_leads_and_their_rejections(result: EndToEndResult) -> None:
    report = result.report
    assert report is not None
    assert report.lead_count == len(DEMO_PEOPLE)  # the validation's test lead is left out
    # The Google Ads lead junked in Zoho was later converted and lost in Salesforce: the later
    # verdict wins, so it is a lost deal, no longer a rejection.
    assert report.rejections["by_reason"] == {"no_need": 1}


def test_scores_owners_and_report_are_printed(result: EndToEndResult) -> None:
    console = Console(record=True, width=200)

    render_end_to_end(result, console)

    text = console.export_text()
    assert "Score, tier and owner of each demo lead in each system" in text
    for line in result.handoff:
        if line.owner is not None:
            assert line.owner in text
    for title in ("Funnel", "SLA", "Rejection reasons", "Ledger", "Handoff diagnosis"):
        assert title in text
    assert "Sales' outcomes in Salesforce" in text and "Closed Lost" in text


def test_summary_table_is_printed(result: EndToEndResult) -> None:
    console = Console(record=True, width=140)

    render_end_to_end(result, console)

    text = console.export_text()
    assert "written back" in text
    assert "validate demo-google: passed" in text
