"""The sales outcome loop with Zoho on the sandbox: a Lead converted with a Deal in Zoho is
read as opportunity / won / lost with its Deal, reaches HubSpot, and is never written again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from leadrelay.mappings.engine import build_lead, load_mapping
from leadrelay.model import Lead, OutcomeReason, Stage
from leadrelay.sandbox.zoho import ZohoEmulator
from tests.sync import test_scenarios
from tests.sync.test_scenarios import Project, emails_in, hubspot_contacts
from tests.zoho_sandbox import converted_ids, deal, zoho_api

sandbox = test_scenarios.sandbox
project = test_scenarios.project

FLOW = "hubspot-zoho"
WON, LOST = "lead0@acme0.io", "lead1@acme1.io"


@pytest.fixture
def zoho_user(project: Project) -> Iterator[httpx.Client]:
    """Sales at work in Zoho (the API as a user)."""
    with zoho_api(project.sandbox) as client:
        yield client


def synced(project: Project, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, report = project.sync(FLOW, capsys=capsys)
    assert code == 0, report
    [flow] = report["flows"]
    assert flow["dead_lettered"] == 0, flow
    found: dict[str, Any] = flow
    return found


def zoho_ids(project: Project, *emails: str) -> list[str]:
    found = emails_in(project, "zoho", list(emails))
    return [str(found[email]["id"]) for email in emails]


def synced_stage(project: Project, lead_id: str) -> str:
    """The stage leadrelay last synced for the lead linked to Zoho record ``lead_id``."""
    with project.store() as store:
        key = store.key_for("zoho", lead_id)
        assert key is not None, "the converted Lead kept its link"
        values = store.get_baselines(FLOW, [key])[key]["destination"]
    return str(values["stage"])


def canonical(project: Project, lead_id: str) -> Lead:
    """The canonical Lead of Zoho record ``lead_id`` as the engine builds it from a read."""
    raw = project.connector("zoho").lookup(ids=[lead_id])[lead_id]
    mapping = load_mapping("zoho", project_dir=project.folder)
    lead, problems = build_lead(mapping.to_lead(raw, connection="zoho", external_id=lead_id))
    assert lead is not None, problems
    return lead


def emulator(project: Project) -> ZohoEmulator:
    found = project.sandbox.sandbox.emulators["zoho"]
    assert isinstance(found, ZohoEmulator)
    return found


@pytest.fixture
def converted(
    project: Project, zoho_user: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> list[str]:
    """Two marketing leads synced to Zoho, then one converted won and one lost for price."""
    hubspot_contacts(project, 2)
    synced(project, capsys)
    won, lost = zoho_ids(project, WON, LOST)
    converted_ids(zoho_user, won, deal("Closed Won", Amount=5000, Currency="EUR"))
    converted_ids(zoho_user, lost, deal("Closed Lost", Amount=800, Reason_For_Loss__s="Price"))
    return [won, lost]


def test_a_won_deal_makes_the_lead_won_with_its_deal(
    project: Project, converted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    synced(project, capsys)
    assert synced_stage(project, converted[0]) == "won"
    lead = canonical(project, converted[0])
    deal_id = emulator(project).store.converted[converted[0]].values["Converted_Deal"]["id"]
    assert (lead.stage, lead.opportunity_id, lead.opportunity_stage) == (
        Stage.WON,
        deal_id,
        "Closed Won",
    )
    assert (lead.amount, lead.currency, lead.outcome_reason) == (5000.0, "EUR", None)
    assert lead.closed_at is not None and lead.closed_at.date().isoformat() == "2026-12-01"
    assert emails_in(project, "hubspot", [WON])[WON]["lifecyclestage"] == "customer"


def test_a_lost_deal_makes_the_lead_lost_with_its_reason(
    project: Project, converted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    synced(project, capsys)
    assert synced_stage(project, converted[1]) == "lost"
    lead = canonical(project, converted[1])
    assert (lead.stage, lead.outcome_reason, lead.amount) == (
        Stage.LOST,
        OutcomeReason.PRICE,
        800.0,
    )
    contact = emails_in(project, "hubspot", [LOST])[LOST]
    assert (contact["lifecyclestage"], contact["hs_lead_status"]) == ("opportunity", "UNQUALIFIED")


def test_a_converted_lead_is_not_written_when_marketing_changes_it(
    project: Project, converted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    synced(project, capsys)
    leads = emulator(project).store.converted
    before = {lead_id: leads[lead_id].modified for lead_id in converted}
    contact = emails_in(project, "hubspot", [WON])[WON]
    project.connector("hubspot").update({str(contact["hs_object_id"]): {"jobtitle": "CTO"}})
    synced(project, capsys)
    assert {lead_id: leads[lead_id].modified for lead_id in converted} == before
    assert leads[converted[0]].values.get("Designation") != "CTO"
    # a fixed point: nothing changed anywhere, nothing is written
    flow = synced(project, capsys)
    assert (flow["created"], flow["updated"], flow["written_back"]) == (0, 0, 0), flow


def test_a_later_change_of_the_deal_reaches_marketing(
    project: Project, zoho_user: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 1)
    synced(project, capsys)
    [lead_id] = zoho_ids(project, WON)
    deal_id = converted_ids(zoho_user, lead_id, deal("Negotiation/Review"))["Deals"]["id"]
    synced(project, capsys)
    assert synced_stage(project, lead_id) == "opportunity"
    assert emails_in(project, "hubspot", [WON])[WON]["lifecyclestage"] == "opportunity"
    response = zoho_user.put(f"/Deals/{deal_id}", json={"data": [{"Stage": "Closed Won"}]})
    assert response.is_success
    synced(project, capsys)
    assert synced_stage(project, lead_id) == "won"
    assert emails_in(project, "hubspot", [WON])[WON]["lifecyclestage"] == "customer"
