"""Score, qualification reason (with the breakdown) and tier reach the CRM's mapped fields."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadrelay.config import Config, load_config
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine
from leadrelay.sync.state import StateStore
from tests.hubspot_sandbox import add_page_properties, hubspot_api

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_s=5.0, base_s=0.005, cap_s=0.05)

#: flow, CRM connection, and the CRM's score / reason / tier fields of the default mappings.
CASES = [
    (
        "hubspot-salesforce",
        "salesforce",
        ("Lead_Score__c", "Qualification_Reason__c", "Lead_Tier__c"),
    ),
    ("hubspot-zoho", "zoho", ("Lead_Score", "Qualification_Reason", "Lead_Tier")),
]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running
    gc.collect()


@pytest.fixture
def project(server: SandboxServer, tmp_path: Path) -> Config:
    server.sandbox.reset()
    write_sandbox_project(tmp_path, server.env())
    return load_config(tmp_path / "leadrelay.toml")


def add_contact(server: SandboxServer, email: str, **properties: str) -> None:
    body = {"email": email, "lastname": "Buyer", "company": "Acme", **properties}
    hubspot_api(server, "POST", "/crm/v3/objects/contacts", {"properties": body}, expect=201)


def sync_and_read(config: Config, flow: str, connection: str) -> dict[str, dict[str, Any]]:
    store = StateStore(config.state.url)
    try:
        with ConnectorPool(config, retry=FAST_RETRY) as pool:
            stats = SyncEngine.for_flow(SyncContext(config, store, pool), config.flow(flow)).run()
            assert stats.dead_lettered == 0
            connector = pool.get(connection)
            records = [raw for page in connector.read_changes(None) for raw in page.records]
    finally:
        store.close()
    return {str(r.get("Email")).lower(): r for r in records}


@pytest.mark.parametrize(("flow", "connection", "names"), CASES, ids=[c[1] for c in CASES])
def test_a_hot_mql_carries_score_reason_with_breakdown_and_tier(
    server: SandboxServer, project: Config, flow: str, connection: str, names: tuple[str, ...]
) -> None:
    add_page_properties(server)
    add_contact(
        server,
        "director@acme-hot.io",
        jobtitle="Director of Finance",
        numemployees="100-500",
        hs_analytics_first_url="https://www.example.org/pricing",
        hs_analytics_last_url="https://www.example.org/request-demo",
    )
    score_field, reason_field, tier_field = names
    record = sync_and_read(project, flow, connection)["director@acme-hot.io"]
    reason = str(record[reason_field])
    assert record[tier_field] == "Hot"
    assert record[score_field] >= 60
    # The reason names the score the record holds and its fit / intent / engagement breakdown.
    assert reason.startswith(f"MQL (hot): score {record[score_field]:g} >= 60 (fit 25, intent ")
    assert "pricing page" in reason and "demo request" in reason and "Director+" in reason


def test_a_cold_lead_is_written_cold_with_its_reason(
    server: SandboxServer, project: Config
) -> None:
    add_contact(server, "student@uni-cold.io", jobtitle="Student")
    record = sync_and_read(project, "hubspot-salesforce", "salesforce")["student@uni-cold.io"]
    assert record["Lead_Tier__c"] == "Cold"
    assert record["Lead_Score__c"] == 0
    assert str(record["Qualification_Reason__c"]).startswith("not MQL (cold): score 0 < 60")
    assert "student / job-seeker title -20" in record["Qualification_Reason__c"]
