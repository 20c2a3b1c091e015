"""The qualify step inside a sync, on the sandbox project against an in-process sandbox."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadrelay.config import Config, load_config
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.handoff.scoring import Scorer
from leadrelay.handoff.signals import signals_from_lead
from leadrelay.model import Lead
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.salesforce.store import SANDBOX_USERS
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, FlowStats, SyncContext, SyncEngine
from leadrelay.sync.state import StateStore
from tests.hubspot_sandbox import add_page_properties, hubspot_api

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_s=5.0, base_s=0.005, cap_s=0.05)
SALES_REPS = {u[0] for u in SANDBOX_USERS if u[5] and not u[0].startswith("integration@")}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running
    gc.collect()


@pytest.fixture
def project(server: SandboxServer, tmp_path: Path) -> Config:
    server.sandbox.reset()
    write_sandbox_project(tmp_path, server.env())
    # The qualification reason needs a CRM field; this project puts it in the Lead description.
    (tmp_path / "mappings" / "salesforce.toml").write_text(
        '[fields]\nqualification_reason = "Description"\n', encoding="utf-8"
    )
    return load_config(tmp_path / "leadrelay.toml")


def add_contact(server: SandboxServer, n: int, **properties: str) -> str:
    body = {
        "properties": {
            "email": f"buyer{n}@company{n}.io",
            "firstname": f"Pat{n}",
            "lastname": "Buyer",
            "company": f"Company {n}",
            "lifecyclestage": "lead",
            **properties,
        }
    }
    return str(hubspot_api(server, "POST", "/crm/v3/objects/contacts", body)["id"])


def sync(config: Config, flow: str = "hubspot-salesforce") -> tuple[FlowStats, StateStore]:
    store = StateStore(config.state.url)
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        engine = SyncEngine.for_flow(SyncContext(config, store, pool), config.flow(flow))
        stats = engine.run()
    return stats, store


def crm_leads(config: Config, connection: str = "salesforce") -> dict[str, dict[str, Any]]:
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        connector = pool.get(connection)
        records = [raw for page in connector.read_changes(None) for raw in page.records]
    return {str(r.get("Email")).lower(): r for r in records}


def salesforce_users(config: Config) -> dict[str, str]:
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        users = pool.get("salesforce").users()  # type: ignore[attr-defined]
    return {str(u["Id"]): str(u["Email"]) for u in users}


def test_a_pricing_page_director_reaches_salesforce_scored_and_owned(
    server: SandboxServer, project: Config
) -> None:
    add_page_properties(server)
    add_contact(
        server,
        1,
        jobtitle="Director of Finance",
        numemployees="100-500",
        hs_analytics_first_url="https://www.example.org/pricing",
        hs_analytics_last_url="https://www.example.org/request-demo",
    )
    stats, store = sync(project)
    store.close()
    assert (stats.created, stats.dead_lettered) == (1, 0)
    record = crm_leads(project)["buyer1@company1.io"]
    users = salesforce_users(project)
    assert record["Lead_Score__c"] >= 60
    assert record["Status"] == "Open - Not Contacted"  # Salesforce's value for mql
    assert users[record["OwnerId"]] in SALES_REPS
    with ConnectorPool(project, retry=FAST_RETRY) as pool:
        [row] = pool.get("salesforce").query(  # type: ignore[attr-defined]
            f"SELECT Description FROM Lead WHERE Id = '{record['Id']}'", describe="test"
        )
    reason = str(row["Description"])
    assert reason.startswith("MQL (hot): score")
    assert "pricing page" in reason and "demo request" in reason and "Director+" in reason


@pytest.mark.parametrize(
    ("flow", "connection", "score_field", "page_field"),
    [
        ("hubspot-salesforce", "salesforce", "Lead_Score__c", "Landing_Page__c"),
        ("hubspot-zoho", "zoho", "Lead_Score", "Landing_Page"),
    ],
)
def test_the_captured_landing_page_scores_the_same_downstream(
    server: SandboxServer,
    project: Config,
    flow: str,
    connection: str,
    score_field: str,
    page_field: str,
) -> None:
    # As the capture worker leaves a web-form lead in HubSpot: its landing page and its score.
    page = "https://www.example.org/pricing"
    captured = Lead(
        email="buyer5@company5.io",
        job_title="Director of Finance",
        employees=100,
        landing_page=page,
    )
    scorer = Scorer(project.scoring)
    at_capture = scorer.score(captured, signals_from_lead(captured), captured.created_at).total
    captured.landing_page = None
    without_page = scorer.score(captured, signals_from_lead(captured), captured.created_at).total
    assert at_capture > without_page
    add_contact(
        server,
        5,
        jobtitle="Director of Finance",
        numemployees="100-500",
        leadrelay_landing_page=page,
        leadrelay_score=str(at_capture),
    )
    stats, store = sync(project, flow)
    store.close()
    assert (stats.created, stats.dead_lettered) == (1, 0)
    record = crm_leads(project, connection)["buyer5@company5.io"]
    assert record[page_field] == page
    assert float(record[score_field]) == at_capture


def test_leads_are_spread_over_the_sales_reps_by_weight(
    server: SandboxServer, project: Config
) -> None:
    for n in range(8):
        add_contact(server, n, jobtitle="Analyst")
    stats, store = sync(project)
    store.close()
    assert stats.created == 8
    users = salesforce_users(project)
    owners = sorted(users[r["OwnerId"]] for r in crm_leads(project).values())
    # Ana weighs 2 (one cycle: Ana, Ben, Chen, Dana, Ana …); the API user takes none.
    assert owners.count("ana.silva@leadrelay.sandbox") == 3
    assert set(owners) == SALES_REPS


def test_an_mql_reaches_zoho_as_pre_qualified_with_a_zoho_owner(
    server: SandboxServer, project: Config
) -> None:
    add_contact(server, 3, jobtitle="VP Sales", lifecyclestage="marketingqualifiedlead")
    stats, store = sync(project, "hubspot-zoho")
    store.close()
    assert stats.created == 1
    record = crm_leads(project, "zoho")["buyer3@company3.io"]
    assert record["Lead_Status"] == "Pre-Qualified"
    assert record["Owner"]["email"].endswith("@sandbox.example")
    assert record["Owner"]["email"] != "ada.okafor@sandbox.example"


def test_a_hubspot_owner_id_is_never_written_to_salesforce(
    server: SandboxServer, project: Config
) -> None:
    add_contact(server, 4, hubspot_owner_id="61000001")
    sync(project)[1].close()
    record = crm_leads(project)["buyer4@company4.io"]
    assert record["OwnerId"] in salesforce_users(project)


def test_a_rejection_without_a_reason_is_reported_and_one_with_a_reason_recycled(
    server: SandboxServer, project: Config
) -> None:
    add_contact(server, 5)
    add_contact(server, 6)
    sync(project)[1].close()
    leads = crm_leads(project)
    with ConnectorPool(project, retry=FAST_RETRY) as pool:
        pool.get("salesforce").update(
            {
                leads["buyer5@company5.io"]["Id"]: {
                    "Status": "Closed - Not Converted",
                    "Rejection_Reason__c": "Bad Timing",
                },
                leads["buyer6@company6.io"]["Id"]: {"Status": "Closed - Not Converted"},
            }
        )
    store = StateStore(project.state.url)
    run_id = store.start_run(["hubspot-salesforce"])
    with ConnectorPool(project, retry=FAST_RETRY) as pool:
        context = SyncContext(project, store, pool, run_id=run_id)
        SyncEngine.for_flow(context, project.flow("hubspot-salesforce")).run()
    events = {e["event"]: e for e in store.get_run(run_id).log}
    store.close()
    assert events["recycle"]["play"] == "nurture"
    assert events["recycle"]["rejection_reason"] == "timing"
    assert "without a reason" in events["rejected_without_reason"]["reason"]
    contacts = hubspot_api(
        server, "GET", "/crm/v3/objects/contacts?properties=email,hs_lead_status&limit=100"
    )["results"]
    status = {c["properties"]["email"]: c["properties"].get("hs_lead_status") for c in contacts}
    assert status["buyer5@company5.io"] == "BAD_TIMING"  # recycled: back to marketing
