"""Standard pick lists on the sandbox: an industry flows HubSpot -> Salesforce and HubSpot ->
Zoho as each system's own value, a value no map covers never holds a lead back, and the report
counts the stage a lead holds in HubSpot."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from leadrelay.config import load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.handoff.commands import build_project_report, report_command
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine
from leadrelay.sync.state import StateStore

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_s=5.0, base_s=0.005, cap_s=0.05)

CONTACTS: dict[str, dict[str, str]] = {
    # HubSpot's company industry value, and marked MQL by marketing's own scoring
    "ana@softco.io": {"industry": "COMPUTER_SOFTWARE", "lifecyclestage": "marketingqualifiedlead"},
    # the free-text contact property holding Salesforce's spelling
    "bo@bankco.io": {"industry": "Banking"},
    # a value no map covers
    "cy@widgetco.io": {"industry": "Widgets and Gizmos"},
}

app = typer.Typer(add_completion=False)
app.command("report")(report_command)
app.command("noop")(lambda: None)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running
    gc.collect()


@pytest.fixture(scope="module")
def synced(server: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The sandbox project after two syncs of :data:`CONTACTS` by both flows: (project file,
    the Salesforce, Zoho and HubSpot records by e-mail, the first and the second run's stats)."""
    server.sandbox.reset()
    folder = tmp_path_factory.mktemp("project")
    write_sandbox_project(folder, server.env())
    path = folder / "leadrelay.toml"
    config = load_config(path)
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        pool.get("hubspot").upsert(
            [
                UpsertInput(
                    ref=str(n),
                    fields={"email": email, "lastname": "Lee", "company": "Co", **fields},
                )
                for n, (email, fields) in enumerate(CONTACTS.items())
            ]
        )
        with StateStore(config.state.url) as store:
            context = SyncContext(config, store, pool)
            outcomes = [SyncEngine.for_flow(context, flow).run() for flow in config.flows]
            again = [SyncEngine.for_flow(context, flow).run() for flow in config.flows]
        records = {
            name: {
                str(raw.get("Email")).lower(): raw
                for page in pool.get(name).read_changes(None)
                for raw in page.records
            }
            for name in ("salesforce", "zoho")
        }
        records["hubspot"] = {
            str(raw.get("email")): raw
            for page in pool.get("hubspot").read_changes(None)
            for raw in page.records
        }
    yield path, records, outcomes, again


@pytest.mark.parametrize(
    ("crm", "email", "value"),
    [
        ("salesforce", "ana@softco.io", "Technology"),
        ("salesforce", "bo@bankco.io", "Banking"),
        ("zoho", "ana@softco.io", "ASP (Application Service Provider)"),
    ],
)
def test_an_industry_arrives_as_the_crms_own_value(
    synced: Any, crm: str, email: str, value: str
) -> None:
    _path, records, _outcomes, _again = synced
    assert records[crm][email]["Industry"] == value


@pytest.mark.parametrize(
    ("crm", "email"),
    [("salesforce", "cy@widgetco.io"), ("zoho", "cy@widgetco.io"), ("zoho", "bo@bankco.io")],
)
def test_a_lead_whose_industry_the_crm_cannot_hold_is_written_without_it(
    synced: Any, crm: str, email: str
) -> None:
    _path, records, _outcomes, _again = synced
    assert email in records[crm]
    assert records[crm][email].get("Industry") in (None, "", "-None-")


def test_no_lead_is_held_back_by_its_industry(synced: Any) -> None:
    _path, _records, outcomes, _again = synced
    for outcome in outcomes:
        assert (outcome.error, outcome.dead_lettered) == (None, 0), outcome
        assert outcome.created == len(CONTACTS), outcome


def test_the_report_counts_the_mql_marketing_marked_in_hubspot(synced: Any) -> None:
    path, _records, _outcomes, _again = synced
    result = CliRunner().invoke(app, ["report", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["lead_count"] == len(CONTACTS)
    [mql] = [step for step in data["funnel"]["stages"] if step["stage"] == "mql"]
    assert mql["count"] == 1


def test_a_crm_without_an_mql_status_counts_the_hubspot_mql(synced: Any) -> None:
    # Salesforce's Lead Status has no MQL value (mql is written "Open - Not Contacted" and
    # reads back as lead): the stage HubSpot holds is the one counted.
    path, _records, _outcomes, _again = synced
    config = load_config(path)
    only = config.model_copy(
        update={"flows": [flow for flow in config.flows if flow.destination == "salesforce"]}
    )
    with ConnectorPool(only, retry=FAST_RETRY) as pool, StateStore(only.state.url) as store:
        report = build_project_report(only, store, pool)
    [mql] = [step for step in report.funnel["stages"] if step["stage"] == "mql"]
    assert (report.lead_count, mql["count"]) == (len(CONTACTS), 1)


def test_a_second_run_changes_nothing_and_hubspot_keeps_its_own_values(synced: Any) -> None:
    _path, records, _outcomes, again = synced
    for outcome in again:
        assert (outcome.created, outcome.updated, outcome.written_back) == (0, 0, 0), outcome
    assert {email: records["hubspot"][email]["industry"] for email in CONTACTS} == {
        email: fields["industry"] for email, fields in CONTACTS.items()
    }
