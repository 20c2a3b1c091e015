"""A backfill's writes to Salesforce as Bulk API 2.0 jobs (issue #15), on the sandbox.

The Salesforce connection's ``bulk_threshold`` is set low (50) and HubSpot's read pages small
(20), so a few hundred leads make a read that says more than the threshold remains: the engine
holds its pages' writes (:mod:`leadrelay.sync.held`) until they fill a Bulk ingest job, then
commits the pages in order.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadrelay.config import load_config
from leadrelay.connectors.base import Page, UpsertInput
from leadrelay.connectors.hubspot.connector import HubSpotConnector
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine
from leadrelay.sync.rules import Side
from leadrelay.sync.state import StateStore
from tests.sync.test_scenarios import (  # noqa: F401  (sandbox: the module's emulators)
    Project,
    admin,
    hubspot_contacts,
    sandbox,
)

FLOW = "hubspot-salesforce"
THRESHOLD = 50
PAGE_SIZE = 20
JOBS = "POST /services/data/v59.0/jobs/ingest"
COMPOSITE = "POST /services/data/v59.0/composite/sobjects"


@pytest.fixture
def project(
    sandbox: SandboxServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Project]:
    admin(sandbox, "reset", {})
    monkeypatch.setattr(HubSpotConnector, "page_size", PAGE_SIZE)
    opened = Project(tmp_path, sandbox)
    toml = opened.folder / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8").replace(
        "[connections.salesforce]\n",
        f"[connections.salesforce]\nbulk_threshold = {THRESHOLD}\n",
    )
    toml.write_text(text, encoding="utf-8")
    opened.config = load_config(toml)
    opened.pool.close()
    opened.pool = ConnectorPool(opened.config)
    try:
        yield opened
    finally:
        opened.pool.close()


def calls(project: Project) -> dict[str, int]:
    """The sandbox's request counts by route."""
    stats: dict[str, Any] = admin_get(project, "stats")
    return {route: int(n) for route, n in stats["by_route"].items()}


def admin_get(project: Project, path: str) -> Any:
    context = ssl.create_default_context(cafile=str(project.sandbox.ca_bundle))
    with httpx.Client(verify=context) as client:
        response = client.get(f"{project.sandbox.url}/__sandbox__/{path}")
        response.raise_for_status()
        return response.json()


def salesforce_leads(project: Project) -> list[dict[str, Any]]:
    """Every Lead in the sandbox's Salesforce org (one SOQL query, all pages)."""
    connector: Any = project.connector("salesforce")
    rows: list[dict[str, Any]] = connector.client().query_all(
        "SELECT Id, Email, FirstName, LastName, Company, Title FROM Lead"
    )["records"]
    return rows


def test_a_backfill_above_the_threshold_is_written_in_bulk_jobs_each_lead_once(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 300)
    before = calls(project)
    code, report = project.sync(FLOW, capsys=capsys)
    after = calls(project)
    flow = report["flows"][0]
    assert (code, flow["created"], flow["dead_lettered"]) == (0, 300, 0)
    # 15 pages of 20: held three at a time (60 creates > 50), one job each
    assert after.get(JOBS, 0) - before.get(JOBS, 0) == 5
    assert after.get(COMPOSITE, 0) - before.get(COMPOSITE, 0) == 0
    leads = {row["Email"]: row for row in salesforce_leads(project)}
    assert len(leads) == 300
    assert {(row["FirstName"], row["LastName"], row["Company"]) for row in leads.values()} == {
        (f"Ann{n}", f"Lee{n}", f"Acme {n}") for n in range(300)
    }


def test_a_second_run_after_a_bulk_backfill_writes_nothing(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 120)
    project.sync(FLOW, capsys=capsys)
    before = calls(project)
    code, report = project.sync(FLOW, "--full", capsys=capsys)
    after = calls(project)
    flow = report["flows"][0]
    assert (code, flow["created"], flow["updated"], flow["dead_lettered"]) == (0, 0, 0, 0)
    assert after.get(JOBS, 0) == before.get(JOBS, 0)
    assert len(salesforce_leads(project)) == 120


def test_a_row_the_bulk_job_refuses_is_dead_lettered_with_salesforces_message(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 80)
    # Salesforce's Lead.Email holds 80 characters; the address itself is valid
    long_email = f"{'a' * 40}@{'b' * 45}.io"
    assert (
        project.connector("hubspot")
        .upsert([UpsertInput(ref="long", fields={"email": long_email, "lastname": "Long"})])[0]
        .ok
    )
    code, report = project.sync(FLOW, capsys=capsys)
    flow = report["flows"][0]
    assert (code, flow["created"], flow["dead_lettered"]) == (1, 80, 1)
    with project.store() as store:
        [letter] = store.list_dead_letters()
    assert (letter.connection, letter.field) == ("salesforce", "Email")
    assert "data value too large" in letter.reason
    assert len(salesforce_leads(project)) == 80


def test_an_optional_field_a_bulk_job_refuses_is_left_out_and_the_lead_written(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 80)
    # Salesforce's Lead.Title holds 128 characters; HubSpot's job title takes more
    assert (
        project.connector("hubspot")
        .upsert(
            [
                UpsertInput(
                    ref="title",
                    fields={"email": "title@acme.io", "lastname": "Title", "jobtitle": "x" * 200},
                )
            ]
        )[0]
        .ok
    )
    code, report = project.sync(FLOW, capsys=capsys)
    flow = report["flows"][0]
    assert (code, flow["created"], flow["dead_lettered"], flow["field_problems"]) == (0, 81, 0, 1)
    with project.store() as store:
        [problem] = store.field_problems()
    assert (problem.system_field, problem.stage) == ("Title", "system")
    lead = {row["Email"]: row for row in salesforce_leads(project)}["title@acme.io"]
    assert (lead["LastName"], lead["Title"]) == ("Title", None)


class Injected(RuntimeError):
    """The crash a test puts between a Bulk job and the commits of its pages."""


def test_a_crash_between_the_job_and_the_commits_is_read_again_without_duplicates(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hubspot_contacts(project, 150)
    jobs_before = calls(project).get(JOBS, 0)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Injected("killed after the job, before the first commit")

    with monkeypatch.context() as patched:
        patched.setattr(SyncEngine, "_commit", crash)
        with (
            pytest.raises(Injected),
            StateStore(project.config.state.url) as store,
            ConnectorPool(project.config) as pool,
        ):
            engine = SyncEngine.for_flow(
                SyncContext(project.config, store, pool), project.config.flow(FLOW)
            )
            engine.run()
    assert calls(project).get(JOBS, 0) - jobs_before == 1  # the first job ran, then the crash
    assert len(salesforce_leads(project)) == 60
    with project.store() as store:
        assert store.get_cursor(FLOW, "hubspot") is None

    code, report = project.sync(FLOW, capsys=capsys)
    flow = report["flows"][0]
    assert (code, flow["created"], flow["dead_lettered"]) == (0, 90, 0)
    emails = [row["Email"] for row in salesforce_leads(project)]
    assert sorted(emails) == sorted({f"lead{n}@acme{n}.io" for n in range(150)})


def test_a_lead_in_two_held_pages_is_written_once_with_its_later_version(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    hubspot_contacts(project, 120)
    hubspot: Any = project.connector("hubspot")
    [page, *_] = list(hubspot.read_changes(None))
    records = sorted(page.records, key=lambda r: int(r["hs_object_id"]))
    first, rest = records[0], records[1:]
    newer = {**first, "firstname": "Newer"}
    pages = [
        Page(rest[:10], "c1", remaining=120),
        Page([first, *rest[10:15]], "c2", remaining=110),
        Page([newer, *rest[15:19]], "c3", remaining=104),
    ]
    with StateStore(project.config.state.url) as store, ConnectorPool(project.config) as pool:
        monkeypatch.setattr(pool.get("hubspot"), "read_changes", lambda cursor: iter(pages))
        engine = SyncEngine.for_flow(
            SyncContext(project.config, store, pool), project.config.flow(FLOW)
        )
        engine._pass(Side.SOURCE, full=True)
        assert store.get_cursor(FLOW, "hubspot") == "c3"
    # the third page waited for the first two: it updated what they created
    assert (engine.stats.created, engine.stats.updated) == (20, 1)
    leads = [row for row in salesforce_leads(project) if row["Email"] == "lead0@acme0.io"]
    assert [row["FirstName"] for row in leads] == ["Newer"]
    assert len(salesforce_leads(project)) == 20


def test_a_small_run_writes_page_by_page_without_a_bulk_job(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 40)
    before = calls(project)
    code, report = project.sync(FLOW, capsys=capsys)
    after = calls(project)
    assert (code, report["flows"][0]["created"]) == (0, 40)
    assert after.get(JOBS, 0) == before.get(JOBS, 0)
    # two pages of 20, one composite create each
    assert after.get(COMPOSITE, 0) - before.get(COMPOSITE, 0) == 2
    assert len(salesforce_leads(project)) == 40


def test_a_dry_run_of_a_backfill_plans_every_lead_and_sends_no_job(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 120)
    before = calls(project)
    code, report = project.sync(FLOW, "--dry-run", capsys=capsys)
    after = calls(project)
    assert (code, report["flows"][0]["created"]) == (0, 120)
    assert after.get(JOBS, 0) == before.get(JOBS, 0)
    assert salesforce_leads(project) == []
