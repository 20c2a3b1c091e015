"""Sales' first action and acceptance times read back from the CRM close the SLA clocks.

Salesforce and Zoho hold them in Flow/workflow-stamped custom date-times, HubSpot in its own
read-only "First outreach date"; the report and the escalation step read them back.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from leadrelay.config import Config, HubSpotConnection, load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.handoff.commands import report_command
from leadrelay.handoff.qualify import CLOCK_SPACE, Qualifier
from leadrelay.handoff.routing import OwnerInfo
from leadrelay.mappings.engine import build_lead, load_mapping
from leadrelay.model import Lead, Tier
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.hubspot.schema import iso_ms
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.salesforce.schema import format_datetime
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, FlowStats, SyncContext, SyncEngine
from leadrelay.sync.state import StateStore
from tests.hubspot_sandbox import add_page_properties, hubspot_api

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_s=5.0, base_s=0.005, cap_s=0.05)
NOW = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
OWNER = OwnerInfo(id="61000002", email="bea.novak@example.com", name="Bea Novak")
FIRST_ACTION = timedelta(minutes=20)
ACCEPTED = timedelta(minutes=45)

app = typer.Typer(add_completion=False)
app.command("report")(report_command)
app.command("noop")(lambda: None)  # two commands: "report" stays a sub-command


# --- the mappings ---------------------------------------------------------------------------

STAMPS: dict[str, dict[str, Any]] = {
    "salesforce": {
        "First_Action_At__c": "2024-06-03T10:20:00.000+0000",
        "Accepted_At__c": "2024-06-03T10:45:00.000+0000",
    },
    "zoho": {
        "First_Action_At": "2024-06-03T12:20:00+02:00",
        "Accepted_At": "2024-06-03T12:45:00+02:00",
    },
    "hubspot": {"hs_first_outreach_date": "2024-06-03T10:20:00.000Z"},
}
READ_BACK: dict[str, dict[str, datetime | None]] = {
    "salesforce": {"first_action_at": NOW + FIRST_ACTION, "accepted_at": NOW + ACCEPTED},
    "zoho": {"first_action_at": NOW + FIRST_ACTION, "accepted_at": NOW + ACCEPTED},
    # HubSpot has no property for the moment sales accepted a lead.
    "hubspot": {"first_action_at": NOW + FIRST_ACTION, "accepted_at": None},
}


@pytest.mark.parametrize("kind", sorted(STAMPS))
def test_the_crm_stamps_read_as_the_lead_sla_times(kind: str) -> None:
    mapping = load_mapping(kind)
    record = {"Email": "ana@acme.io", "email": "ana@acme.io", **STAMPS[kind]}
    lead, problems = build_lead(mapping.to_lead(record))
    assert problems == [] and lead is not None
    assert {name: getattr(lead, name) for name in READ_BACK[kind]} == READ_BACK[kind]


@pytest.mark.parametrize("kind", sorted(STAMPS))
def test_the_sla_times_are_never_written_to_the_crm(kind: str) -> None:
    mapping = load_mapping(kind)
    lead = Lead(email="ana@acme.io", first_action_at=NOW, accepted_at=NOW)
    written = mapping.to_system(lead)
    assert not set(STAMPS[kind]) & set(written)


# --- the sandbox ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running
    gc.collect()


def add_hot_contact(server: SandboxServer) -> None:
    """A director who saw the pricing page and asked for a demo: a hot MQL."""
    add_page_properties(server)
    properties = {
        "email": "cfo@bigco.io",
        "firstname": "Kim",
        "lastname": "Lee",
        "company": "BigCo",
        "jobtitle": "Director of Finance",
        "numemployees": "100-500",
        "lifecyclestage": "lead",
        "hs_analytics_first_url": "https://www.example.org/pricing",
        "hs_analytics_last_url": "https://www.example.org/request-demo",
    }
    hubspot_api(server, "POST", "/crm/v3/objects/contacts", {"properties": properties})


def sync(config: Config) -> FlowStats:
    with StateStore(config.state.url) as store, ConnectorPool(config, retry=FAST_RETRY) as pool:
        engine = SyncEngine.for_flow(
            SyncContext(config, store, pool), config.flow("hubspot-salesforce")
        )
        return engine.run()


@pytest.fixture
def project(server: SandboxServer, tmp_path: Path) -> Config:
    """A hot lead synced to Salesforce, then stamped there by the org's Flows and worked."""
    server.sandbox.reset()
    write_sandbox_project(tmp_path, server.env())
    config = load_config(tmp_path / "leadrelay.toml")
    add_hot_contact(server)
    assert sync(config).created == 1
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        salesforce = pool.get("salesforce")
        [record] = [raw for page in salesforce.read_changes(None) for raw in page.records]
        assert record["Lead_Tier__c"] == "Hot"
        with StateStore(config.state.url) as store:
            [row] = store.ledger_rows(str(record["LeadRelay_Key__c"]))
        arrived = row.received_at
        # What the org's record-triggered Flows stamp when the rep logs a call and works the lead.
        salesforce.update(
            {
                str(record["Id"]): {
                    "First_Action_At__c": format_datetime(arrived + FIRST_ACTION),
                    "Accepted_At__c": format_datetime(arrived + ACCEPTED),
                    "Status": "Working - Contacted",
                }
            }
        )
    return config


def test_the_next_sync_reads_the_stamps_back_without_a_failure(project: Config) -> None:
    stats = sync(project)
    assert (stats.dead_lettered, stats.created) == (0, 0)


def test_the_report_shows_the_hot_and_mql_clocks_met_and_the_time_to_first_action(
    project: Config,
) -> None:
    sync(project)
    config_file = project.path
    result = CliRunner().invoke(app, ["report", "--config", str(config_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_kind = data["sla"]["by_kind"]
    assert {kind: (by_kind[kind]["on_time"], by_kind[kind]["breached"]) for kind in by_kind} == {
        "hot": (1, 0),
        "mql": (1, 0),
        "unassigned": (1, 0),
    }
    assert data["sla"]["compliance"] == 1.0
    action = data["time_to_first_action"]
    assert action["with_action"] == 1
    assert action["median_hours"] == pytest.approx(FIRST_ACTION / timedelta(hours=1))
    buckets = {b["bucket"]: b["count"] for b in data["sla"]["histogram"]}
    assert buckets["15-30"] == 1 and sum(buckets.values()) == 1


# --- escalation -------------------------------------------------------------------------------


@pytest.fixture
def hubspot(server: SandboxServer) -> Iterator[HubSpotConnector]:
    server.sandbox.reset()
    env = server.env()
    settings = HubSpotConnection.model_validate(
        {
            "kind": "hubspot",
            "access_token": env["HUBSPOT_ACCESS_TOKEN"],
            "base_url": env["HUBSPOT_BASE_URL"],
            "ca_bundle": env["LEADRELAY_CA_BUNDLE"],
        }
    )
    with HubSpotConnector(settings, "hubspot", retry=FAST_RETRY) as connector:
        yield connector


def test_escalation_closes_a_stored_clock_the_crm_shows_acted_on(
    server: SandboxServer, hubspot: HubSpotConnector, tmp_path: Path
) -> None:
    fields = {"email": "dir@bigco.io", "lastname": "Dir", "hubspot_owner_id": OWNER.id}
    [written] = hubspot.upsert([UpsertInput("dir", fields)])
    assert written.external_id is not None
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: NOW) as store:
        step = Qualifier(
            Config(), store, hubspot, owners=[OWNER], destination_mapping=load_mapping("hubspot")
        )
        lead = Lead(
            email="dir@bigco.io",
            job_title="Director of Operations",
            employees=120,
            landing_page="https://www.example.org/pricing",
            intent_signals=["demo_request"],
            created_at=NOW - timedelta(minutes=5),
        )
        step.qualify_page([(lead, None, True)], now=NOW)
        assert lead.tier is Tier.HOT
        store.link(lead.key, "hubspot", written.external_id)
        clock = f"hubspot|{lead.key}"
        assert store.get_cursor(CLOCK_SPACE, clock) is not None
        # HubSpot sets the first outreach date when the rep logs the call; the rep works the lead.
        emulator = server.sandbox.emulators["hubspot"]
        assert isinstance(emulator, HubSpotEmulator)
        contact = emulator.store.find(written.external_id)
        stamp = iso_ms(int((NOW + FIRST_ACTION).timestamp() * 1000))
        emulator.store.apply(
            contact, {"hs_first_outreach_date": stamp, "hs_lead_status": "IN_PROGRESS"}
        )

        outcome = step.escalate_due(NOW + timedelta(hours=2))

        assert outcome is not None and outcome.sent == []
        assert store.get_cursor(CLOCK_SPACE, clock) is None
