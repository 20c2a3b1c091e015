"""A converted Zoho Lead's Contact through ``leadrelay sync hubspot-zoho`` on the sandbox: sales
edits the Contact the conversion made (email, phone, title, name) and the change reaches the
HubSpot contact under the Lead's link; a deleted Lead stays deleted (tombstoned, never
re-created); an idle run costs one Zoho call."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.sync import test_scenarios, test_zoho_outcome
from tests.sync.test_scenarios import Project, emails_in, hubspot_contacts
from tests.sync.test_zoho_outcome import synced
from tests.zoho_sandbox import converted_ids, deal

sandbox = test_scenarios.sandbox
project = test_scenarios.project

zoho_user = test_zoho_outcome.zoho_user

EMAIL = "lead0@acme0.io"


@pytest.fixture
def contact_id(
    project: Project, zoho_user: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> str:
    """One marketing lead synced to Zoho, then converted there with a Deal; its Contact's id."""
    hubspot_contacts(project, 1)
    synced(project, capsys)
    lead_id = str(emails_in(project, "zoho", [EMAIL])[EMAIL]["id"])
    found: str = converted_ids(zoho_user, lead_id, deal("Qualification"))["Contacts"]["id"]
    synced(project, capsys)
    return found


def hubspot_contact(project: Project, hub_id: str) -> dict[str, Any]:
    return project.connector("hubspot").lookup(ids=[hub_id])[hub_id]


def test_a_contact_edited_after_the_conversion_reaches_marketing(
    project: Project,
    zoho_user: httpx.Client,
    contact_id: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub_id = str(emails_in(project, "hubspot", [EMAIL])[EMAIL]["hs_object_id"])
    edit = {"Phone": "+351 21 999 9999", "Title": "Head of Data", "First_Name": "Ana"}
    assert zoho_user.put(f"/Contacts/{contact_id}", json={"data": [edit]}).is_success
    flow = synced(project, capsys)
    assert flow["written_back"] >= 1, flow
    contact = hubspot_contact(project, hub_id)
    assert (contact["jobtitle"], contact["firstname"]) == ("Head of Data", "Ana")
    assert contact["phone"] is not None and contact["phone"].endswith("219999999")


def test_a_contacts_new_email_reaches_marketing_under_the_leads_link(
    project: Project,
    zoho_user: httpx.Client,
    contact_id: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub_id = str(emails_in(project, "hubspot", [EMAIL])[EMAIL]["hs_object_id"])
    moved = "ana.new@acme0.io"
    assert zoho_user.put(f"/Contacts/{contact_id}", json={"data": [{"Email": moved}]})
    synced(project, capsys)
    assert hubspot_contact(project, hub_id)["email"] == moved
    assert emails_in(project, "hubspot", [EMAIL]) == {}  # the same contact, not a second one


def test_a_lead_deleted_in_zoho_is_tombstoned_and_not_re_created(
    project: Project, zoho_user: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 1)
    synced(project, capsys)
    lead_id = str(emails_in(project, "zoho", [EMAIL])[EMAIL]["id"])
    assert zoho_user.delete(f"/Leads/{lead_id}").is_success
    synced(project, capsys)
    hub_id = str(emails_in(project, "hubspot", [EMAIL])[EMAIL]["hs_object_id"])
    project.connector("hubspot").update({hub_id: {"jobtitle": "Still here"}})
    synced(project, capsys)
    assert emails_in(project, "zoho", [EMAIL]) == {}
    with project.store() as store:
        assert [t["external_id"] for t in store.tombstones(connection="zoho")] == [lead_id]


def test_an_idle_run_after_a_conversion_costs_one_zoho_call(
    project: Project, zoho_user: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    # As tests/sync/test_scenarios' idle test: no look-back (cron runs minutes apart, these
    # runs seconds), so a run after the last write finds nothing.
    toml = project.folder / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8")
    for name in ("hubspot", "zoho"):
        text = text.replace(
            f"[connections.{name}]\n", f"[connections.{name}]\nread_lookback_s = 0\n"
        )
    toml.write_text(text, encoding="utf-8")
    hubspot_contacts(project, 1)
    synced(project, capsys)
    lead_id = str(emails_in(project, "zoho", [EMAIL])[EMAIL]["id"])
    converted_ids(zoho_user, lead_id, deal("Qualification"))
    # Runs read back leadrelay's own writes (and, on a loaded machine, what landed in the
    # second a read resumes at: Zoho's times are whole seconds) until one reads nothing: that
    # idle run is what is measured.
    for _ in range(8):
        time.sleep(1.1)
        flow = synced(project, capsys)
        if flow["read"] == 0:
            break
    assert flow["read"] == 0, flow
    assert flow["api_calls"]["zoho"] == 1, flow
