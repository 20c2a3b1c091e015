"""The sales outcome loop through ``leadrelay sync`` on the sandbox: a Lead converted in
Salesforce and won or lost there (with its reason) reaches leadrelay and the HubSpot contact, a
converted Lead is never written again, and a later change of its Opportunity or of its Contact
is read by the next sync."""

from __future__ import annotations

import time

import pytest

from leadrelay.mappings.engine import load_mapping
from tests.connectors.salesforce.conftest import patch_record
from tests.sync.test_scenarios import Project, admin, hubspot_contacts, project, sandbox

__all__ = ["project", "sandbox"]  # the fixtures, imported for this module's tests

FLOW = "hubspot-salesforce"
EMAIL = "lead0@acme0.io"
OPEN = {
    "Name": "Acme 0 - pilot",
    "StageName": "Prospecting",
    "Amount": 12000,
    "CloseDate": "2027-01-29",
}


def convert(project: Project, opportunity: dict[str, object] | None) -> dict[str, str]:
    lead = project.connector("salesforce").lookup(emails=[EMAIL])[EMAIL]
    body: dict[str, object] = {"lead_id": str(lead["Id"])}
    if opportunity is not None:
        body["opportunity"] = opportunity
    ids: dict[str, str] = admin(project.sandbox, "salesforce/convert", body)
    return {**ids, "lead_id": str(lead["Id"])}


def hubspot_outcome(project: Project, hub_id: str) -> dict[str, object]:
    contact = project.connector("hubspot").lookup(ids=[hub_id])[hub_id]
    return load_mapping("hubspot").to_lead(contact).values


def salesforce_side(project: Project) -> dict[str, object]:
    """The canonical values leadrelay last agreed for the Salesforce side of the lead (the
    fields the flow carries)."""
    with project.store() as store:
        key = store.find_key_by_email(EMAIL)
        assert key is not None
        return dict(store.get_baselines(FLOW, [key])[key]["destination"])


def salesforce_lead(project: Project) -> dict[str, object]:
    """The canonical Lead leadrelay builds from the Salesforce Lead (its mapping's read)."""
    raw = project.connector("salesforce").lookup(emails=[EMAIL])[EMAIL]
    return load_mapping("salesforce").to_lead(raw).values


#: Outcome fields the HubSpot mapping writes back (the outcome properties, when it maps them).
WRITTEN_BACK = [
    name
    for name in ("outcome_reason", "opportunity_stage", "amount")
    if load_mapping("hubspot").fields.get(name) is not None
]


@pytest.mark.parametrize(
    ("opportunity", "stage", "lifecycle", "reason"),
    [
        ({**OPEN, "StageName": "Closed Won"}, "won", "customer", None),
        (
            {**OPEN, "StageName": "Closed Won", "Win_Reason__c": "Relationship"},
            "won",
            "customer",
            "relationship",
        ),
        (
            {**OPEN, "StageName": "Closed Lost", "Loss_Reason__c": "Competitor"},
            "lost",
            "opportunity",
            "competitor",
        ),
        (OPEN, "opportunity", "opportunity", None),
    ],
)
def test_a_converted_lead_carries_its_outcome_back_to_marketing(
    project: Project,
    opportunity: dict[str, object],
    stage: str,
    lifecycle: str,
    reason: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [hub_id] = hubspot_contacts(project, 1)
    project.sync(FLOW, capsys=capsys)
    ids = convert(project, opportunity)
    code, result = project.sync(FLOW, capsys=capsys)
    flow = result["flows"][0]
    assert (code, flow["written_back"], flow["dead_lettered"]) == (0, 1, 0)
    assert salesforce_side(project)["stage"] == stage
    lead = salesforce_lead(project)
    assert (lead["stage"], lead.get("outcome_reason")) == (stage, reason)
    assert (lead["opportunity_id"], lead["amount"]) == (ids["opportunity_id"], 12000.0)
    assert lead["opportunity_stage"] == opportunity["StageName"]
    contact = project.connector("hubspot").lookup(ids=[hub_id])[hub_id]
    assert contact["lifecyclestage"] == lifecycle
    marketing = hubspot_outcome(project, hub_id)
    assert marketing["stage"] == stage
    for name in WRITTEN_BACK:
        assert marketing.get(name) == lead.get(name), name


def test_a_converted_lead_is_not_written_and_its_later_outcome_is_read(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    [hub_id] = hubspot_contacts(project, 1)
    project.sync(FLOW, capsys=capsys)
    ids = convert(project, OPEN)
    project.sync(FLOW, capsys=capsys)
    # marketing changes the contact: nothing may be written to the converted Lead
    [changed] = project.connector("hubspot").update({hub_id: {"jobtitle": "VP Sales"}})
    assert changed.ok
    code, result = project.sync(FLOW, capsys=capsys)
    flow = result["flows"][0]
    assert (code, flow["dead_lettered"]) == (0, 0)
    lead = project.connector("salesforce").lookup(ids=[ids["lead_id"]])[ids["lead_id"]]
    assert lead.get("Title") is None
    # sales closes the deal weeks later: the Opportunity changes, not the Lead
    patch_record(
        project.connector("salesforce"),
        "Opportunity",
        ids["opportunity_id"],
        {"StageName": "Closed Lost", "Loss_Reason__c": "Competitor"},
    )
    code, result = project.sync(FLOW, capsys=capsys)
    assert (code, result["flows"][0]["written_back"]) == (0, 1)
    marketing = hubspot_outcome(project, hub_id)
    assert (marketing["stage"], marketing["job_title"]) == ("lost", "VP Sales")
    assert salesforce_lead(project)["outcome_reason"] == "competitor"


def quiet_lookback(project: Project) -> None:
    """No look-back on the Salesforce and HubSpot reads: cron's runs are minutes apart, these
    seconds (as in the idle-sync scenario of tests/sync)."""
    toml = project.folder / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8")
    for name in ("hubspot", "salesforce"):
        text = text.replace(
            f"[connections.{name}]\n", f"[connections.{name}]\nread_lookback_s = 0\n"
        )
    toml.write_text(text, encoding="utf-8")


def test_a_contact_edited_after_conversion_reaches_marketing_under_the_same_lead(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    [hub_id] = hubspot_contacts(project, 1)
    project.sync(FLOW, capsys=capsys)
    ids = convert(project, OPEN)
    project.sync(FLOW, capsys=capsys)
    with project.store() as store:
        key = store.find_key_by_email(EMAIL)
    # the person's details change after the conversion: sales edits the Contact
    patch_record(
        project.connector("salesforce"),
        "Contact",
        ids["contact_id"],
        {"Title": "Chief Revenue Officer", "Phone": "+14155550123"},
    )
    code, result = project.sync(FLOW, capsys=capsys)
    flow = result["flows"][0]
    assert (code, flow["created"], flow["dead_lettered"]) == (0, 0, 0)
    marketing = hubspot_outcome(project, hub_id)
    assert (marketing["job_title"], marketing["phone"]) == ("Chief Revenue Officer", "+14155550123")
    assert marketing["stage"] == "opportunity"
    with project.store() as store:
        assert store.find_key_by_email(EMAIL) == key  # the same lead, not a new one
    lead = project.connector("salesforce").lookup(ids=[ids["lead_id"]])[ids["lead_id"]]
    assert lead["IsConverted"] is True  # read under the Lead's id, never written


def test_an_idle_sync_after_a_contact_edit_costs_one_salesforce_call(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet_lookback(project)
    hubspot_contacts(project, 1)
    project.sync(FLOW, capsys=capsys)
    ids = convert(project, OPEN)
    project.sync(FLOW, capsys=capsys)
    patch_record(
        project.connector("salesforce"), "Contact", ids["contact_id"], {"Title": "Head of Sales"}
    )
    project.sync(FLOW, capsys=capsys)
    # The next runs read back what the last ones wrote (and, on a loaded machine, what landed
    # in the second a read resumes at: SOQL datetimes are whole seconds) until one reads
    # nothing: that idle run is what is measured.
    for _ in range(8):
        time.sleep(1.1)
        code, idle = project.sync(FLOW, capsys=capsys)
        flow = idle["flows"][0]
        if flow["read"] == 0:
            break

    assert (code, flow["read"], flow["written_back"], flow["updated"]) == (0, 0, 0, 0)
    assert flow["api_calls"]["salesforce"] == 1  # the Leads, Opportunities and Contacts together


def test_a_contacts_new_email_reaches_the_same_marketing_contact(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    [hub_id] = hubspot_contacts(project, 1)
    project.sync(FLOW, capsys=capsys)
    ids = convert(project, OPEN)
    project.sync(FLOW, capsys=capsys)
    patch_record(
        project.connector("salesforce"), "Contact", ids["contact_id"], {"Email": "ann.lee@acme0.io"}
    )
    code, result = project.sync(FLOW, capsys=capsys)
    assert (code, result["flows"][0]["created"]) == (0, 0)
    assert hubspot_outcome(project, hub_id)["email"] == "ann.lee@acme0.io"
    found = project.connector("hubspot").lookup(emails=["ann.lee@acme0.io", EMAIL])
    assert list(found) == ["ann.lee@acme0.io"]  # the contact moved, no second one was made
