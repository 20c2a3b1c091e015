"""`[scoring] authority` on the sandbox: a contact marketing marked MQL in HubSpot reaches
Salesforce and Zoho with a qualification that does not contradict the stage it holds."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from leadrelay.config import load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine
from leadrelay.sync.state import StateStore

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_s=5.0, base_s=0.005, cap_s=0.05)

#: Marked MQL by marketing; an analyst at an unknown company scores low by leadrelay's rules.
CONTACT = {
    "email": "kim@smallco.io",
    "lastname": "Lee",
    "company": "SmallCo",
    "jobtitle": "Analyst",
    "lifecyclestage": "marketingqualifiedlead",
    "hs_lead_status": "NEW",
}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running
    gc.collect()


def synced(server: SandboxServer, folder: Any, authority: str) -> dict[str, dict[str, Any]]:
    """Sync :data:`CONTACT` by both flows under ``authority``; the CRM records by system."""
    server.sandbox.reset()
    write_sandbox_project(folder, server.env())
    path = folder / "leadrelay.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("[scoring]\n", f'[scoring]\nauthority = "{authority}"\n', 1), encoding="utf-8"
    )
    config = load_config(path)
    assert config.scoring.authority == authority
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        pool.get("hubspot").upsert([UpsertInput(ref="1", fields=dict(CONTACT))])
        with StateStore(config.state.url) as store:
            context = SyncContext(config, store, pool)
            for flow in config.flows:
                stats = SyncEngine.for_flow(context, flow).run()
                assert (stats.error, stats.dead_lettered, stats.created) == (None, 0, 1), stats
        return {
            name: next(raw for page in pool.get(name).read_changes(None) for raw in page.records)
            for name in ("salesforce", "zoho")
        }


@pytest.mark.parametrize(
    ("crm", "field"), [("salesforce", "Qualification_Reason__c"), ("zoho", "Qualification_Reason")]
)
def test_source_authority_writes_hubspots_verdict_and_leadrelays_second_opinion(
    server: SandboxServer, tmp_path: Any, crm: str, field: str
) -> None:
    record = synced(server, tmp_path, "source")[crm]
    reason = str(record[field])
    assert reason.startswith("MQL (warm) by hubspot's verdict")
    assert "leadrelay's second opinion" in reason
    assert "not MQL" not in reason


def test_the_mql_stage_marketing_set_is_the_one_zoho_holds(
    server: SandboxServer, tmp_path: Any
) -> None:
    assert synced(server, tmp_path, "source")["zoho"]["Lead_Status"] == "Pre-Qualified"


def test_leadrelay_authority_keeps_the_stage_and_says_so(
    server: SandboxServer, tmp_path: Any
) -> None:
    records = synced(server, tmp_path, "leadrelay")
    assert records["zoho"]["Lead_Status"] == "Pre-Qualified"
    for crm, field in (("salesforce", "Qualification_Reason__c"), ("zoho", "Qualification_Reason")):
        reason = str(records[crm][field])
        assert reason.startswith("MQL as held"), reason
        assert "not MQL" not in reason
