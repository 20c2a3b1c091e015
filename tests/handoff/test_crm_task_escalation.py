"""Escalation by a CRM task: a breached clock of a lead in HubSpot becomes one task on its
contact, through the HubSpot connector against the sandbox's tasks API."""

from __future__ import annotations

import gc
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadrelay.config import Config, HubSpotConnection
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.errors import Rejected
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.handoff.escalation import EscalationError
from leadrelay.handoff.qualify import Qualifier, task_creator
from leadrelay.handoff.routing import OwnerInfo
from leadrelay.mappings.engine import load_mapping
from leadrelay.model import Lead, Tier
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.hubspot.tasks import TASK_PROPERTIES
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import StateStore

NOW = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
FAST_RETRY = RetryPolicy(max_attempts=3, max_total_s=5.0, base_s=0.005, cap_s=0.05)
OWNER = OwnerInfo(id="61000002", email="bea.novak@example.com", name="Bea Novak")


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[HubSpotEmulator]) as running:
        yield running
    gc.collect()


@pytest.fixture
def emulator(server: SandboxServer) -> HubSpotEmulator:
    server.sandbox.reset()
    found = server.sandbox.emulators["hubspot"]
    assert isinstance(found, HubSpotEmulator)
    return found


@pytest.fixture
def hubspot(server: SandboxServer, emulator: HubSpotEmulator) -> Iterator[HubSpotConnector]:
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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: NOW) as opened:
        yield opened


def contact_tasks(server: SandboxServer, contact_id: str) -> list[dict[str, Any]]:
    """The tasks associated with one contact, read through the emulator's tasks list API."""
    env = server.env()
    tls = ssl.create_default_context(cafile=env["LEADRELAY_CA_BUNDLE"])
    with httpx.Client(verify=tls, trust_env=False, timeout=10) as client:
        response = client.get(
            f"{env['HUBSPOT_BASE_URL']}/crm/v3/objects/tasks",
            params={
                "limit": "100",
                "associations": "contacts",
                "properties": ",".join(TASK_PROPERTIES),
            },
            headers={"Authorization": f"Bearer {env['HUBSPOT_ACCESS_TOKEN']}"},
        )
    assert response.status_code == 200, response.text
    return [
        task
        for task in response.json()["results"]
        if {"id": contact_id, "type": "task_to_contact"}
        in task.get("associations", {}).get("contacts", {}).get("results", [])
    ]


def hot_lead() -> Lead:
    return Lead(
        email="dir@bigco.io",
        job_title="Director of Operations",
        employees=120,
        landing_page="https://www.example.org/pricing",
        intent_signals=["demo_request"],
        created_at=NOW - timedelta(minutes=5),
    )


def test_a_breached_hot_clock_creates_one_task_on_the_contact(
    server: SandboxServer, hubspot: HubSpotConnector, store: StateStore
) -> None:
    fields = {"email": "dir@bigco.io", "lastname": "Dir", "hubspot_owner_id": OWNER.id}
    [written] = hubspot.upsert([UpsertInput("dir", fields)])
    assert written.external_id is not None
    contact_id = written.external_id
    step = Qualifier(
        Config(),
        store,
        hubspot,
        owners=[OWNER],
        destination_mapping=load_mapping("hubspot"),
    )
    lead = hot_lead()
    step.qualify_page([(lead, None, True)], now=NOW)
    assert lead.tier is Tier.HOT
    store.link(lead.key, "hubspot", contact_id)

    later = NOW + timedelta(hours=2)
    first = step.escalate_due(later)
    second = step.escalate_due(later + timedelta(minutes=30))

    assert first is not None and [(d.kind.value, d.channel) for d in first.sent] == [
        ("hot", "crm_task:hubspot")
    ]
    assert second is not None and second.sent == [] and len(second.already_sent) == 1
    [task] = contact_tasks(server, contact_id)
    props = task["properties"]
    assert props["hs_task_subject"].startswith("SLA breach (hot): ")
    assert "dir@bigco.io" in props["hs_task_body"]
    assert props["hs_task_status"] == "NOT_STARTED"
    assert props["hubspot_owner_id"] == OWNER.id
    assert props["hs_timestamp"] == "2024-06-03T12:00:00.000Z"


def test_a_task_on_a_missing_contact_is_an_escalation_error(hubspot: HubSpotConnector) -> None:
    creator = task_creator(hubspot)
    assert creator is not None
    with pytest.raises(EscalationError, match="record 999999"):
        creator.create_task("999999", "subject", "body", NOW)


def test_the_tasks_api_refuses_an_association_to_no_contact(hubspot: HubSpotConnector) -> None:
    with pytest.raises(Rejected, match="no such contact"):
        hubspot.create_task("424242", "subject", "body", NOW)
