"""A large flow split into part jobs, against the sandbox and a real PostgreSQL.

In one process, the reader's side (:class:`~leadrelay.sync.parts.FlowSplitter`) on pages read
from the sandbox's HubSpot; then three ``leadrelay worker`` processes sharing one flow's parts,
one of them SIGKILLed in the middle of a part.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadrelay.config import load_config
from leadrelay.connectors.base import Page
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine
from leadrelay.sync.jobs import FLOW_TASK, conninfo, ensure_queue_schema
from leadrelay.sync.parts import FlowSplitter, PartsFailed, run_part
from leadrelay.sync.rules import Side
from leadrelay.sync.state import PartStatus, RunStatus, StateStore, open_state
from tests.postgres import fresh_schema, point_state_at
from tests.sync.test_scenarios import (  # noqa: F401  (sandbox: the module's emulators)
    Project,
    admin,
    emails_in,
    hubspot_contacts,
    sandbox,
)

FLOW = "hubspot-salesforce"
#: HubSpot search pages of this many contacts in the worker processes, so a flow has many.
PAGE_SIZE = 10
DEADLINE_S = 90.0


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Project]:  # noqa: F811
    admin(sandbox, "reset", {})
    with fresh_schema() as url:
        opened = Project(tmp_path, sandbox)
        toml = opened.folder / "leadrelay.toml"
        point_state_at(toml, url)
        text = toml.read_text(encoding="utf-8")
        text = text.replace(f'url = "{url}"', f'url = "{url}"\nlease_s = 3')
        text = text.replace('schedule = "*/5 * * * *"\n', "")
        text += "\n[worker]\ndelivery_every_s = 60\nsplit_pages = 2\n"
        toml.write_text(text, encoding="utf-8")
        opened.config = load_config(toml)
        try:
            yield opened
        finally:
            opened.pool.close()


def _split_source_pass(
    project: Project, store: StateStore, pages: list[Page], *, first: int | None = None
) -> FlowSplitter:
    """The reader's forward pass over ``pages``, split after one page; the reader writes the
    parts itself (no worker takes the deferred jobs), part ``first`` before the others."""
    flow = project.config.flow(FLOW)
    run_id = store.start_run([FLOW])
    with ConnectorPool(project.config, store=store) as pool:
        context = SyncContext(project.config, store, pool, run_id=run_id)
        engine = SyncEngine.for_flow(context, flow)
        splitter = FlowSplitter(
            project.config,
            store,
            run_id,
            flow,
            defer=lambda *job: None,
            split_pages=1,
            lease_s=30,
        )
        try:
            for page in pages:
                splitter.take(engine, Side.SOURCE, page)
            if first is not None:
                assert run_part(context, flow, run_id, "source", part=first, lease_s=30)
            splitter.end_pass(engine, Side.SOURCE)
        finally:
            splitter.close()
    return splitter


def _hubspot_page(project: Project) -> list[dict[str, Any]]:
    [page] = list(project.connector("hubspot").read_changes(None))
    return sorted(page.records, key=lambda r: int(r["hs_object_id"]))


def test_a_record_in_two_pages_is_written_once_with_its_newer_version(project: Project) -> None:
    hubspot_contacts(project, 3)
    first, second, third = _hubspot_page(project)
    newer = {**first, "firstname": "Newer"}
    with open_state(project.config) as store:
        # the later page first: the earlier one must not write its older copy after it
        _split_source_pass(
            project, store, [Page([first, second], "c1"), Page([newer, third], "c2")], first=2
        )
    crm = emails_in(project, "salesforce", ["lead0@acme0.io"])
    assert crm["lead0@acme0.io"]["FirstName"] == "Newer"
    assert sorted(_salesforce_emails(project)).count("lead0@acme0.io") == 1


def test_a_split_pass_counts_what_its_parts_wrote(project: Project) -> None:
    hubspot_contacts(project, 4)
    records = _hubspot_page(project)
    pages = [Page(records[n : n + 1], f"c{n}") for n in range(4)]
    with open_state(project.config) as store:
        splitter = _split_source_pass(project, store, pages)
    assert (splitter.parts[Side.SOURCE], splitter.totals.read, splitter.totals.created) == (4, 4, 4)


def test_a_pass_within_split_pages_is_written_without_parts(project: Project) -> None:
    hubspot_contacts(project, 2)
    with open_state(project.config) as store:
        splitter = _split_source_pass(project, store, [Page(_hubspot_page(project), "c1")])
        parts = store.list_parts(1)
    assert (splitter.parts, parts) == ({}, [])
    assert len(emails_in(project, "salesforce", ["lead0@acme0.io", "lead1@acme1.io"])) == 2


def test_a_failed_part_fails_the_pass_and_holds_the_cursor(project: Project) -> None:
    hubspot_contacts(project, 2)
    first, second = _hubspot_page(project)
    flow = project.config.flow(FLOW)
    with open_state(project.config) as store, ConnectorPool(project.config, store=store) as pool:
        run_id = store.start_run([FLOW])
        engine = SyncEngine.for_flow(SyncContext(project.config, store, pool, run_id=run_id), flow)
        splitter = FlowSplitter(
            project.config,
            store,
            run_id,
            flow,
            defer=lambda *job: None,
            split_pages=1,
            lease_s=30,
        )
        splitter.take(engine, Side.SOURCE, Page([first], "c1"))
        splitter.take(engine, Side.SOURCE, Page([second], "c2"))
        store.claim_part(run_id, "source", holder="w", lease_s=30, claims=lambda p: ([], []))
        store.fail_part(run_id, "source", 1, holder="w", error="refused")
        with pytest.raises(PartsFailed, match="refused"):
            splitter.end_pass(engine, Side.SOURCE)
        splitter.close()
        assert store.get_cursor(FLOW, "hubspot") is None


# -- several workers ----------------------------------------------------------------------------

_WORKER = (
    "import sys\n"
    "from leadrelay.connectors.hubspot.connector import HubSpotConnector\n"
    f"HubSpotConnector.page_size = {PAGE_SIZE}\n"
    "from leadrelay.cli import main\n"
    "sys.argv = ['leadrelay', 'worker', '--name', sys.argv[1], '--config', 'leadrelay.toml']\n"
    "main()\n"
)


def _worker(project: Project, name: str) -> subprocess.Popen[str]:
    # a file, not a pipe: a pipe nobody reads would stop the worker once full
    with (project.folder / f"{name}.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", _WORKER, name],
            cwd=project.folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )


def _queue_flow(project: Project) -> None:
    from procrastinate import App, SyncPsycopgConnector

    ensure_queue_schema(project.config)
    # one connection, opened at once: a pool still opening more when closed would leak them
    url = conninfo(project.config.state.url)
    app = App(connector=SyncPsycopgConnector(conninfo=url, min_size=1, max_size=1))
    with app.open():
        app.configure_task(FLOW_TASK).defer(flow=FLOW)


def _part_holder(store: StateStore, pids: set[int], reader: int | None) -> int | None:
    """The pid of a worker in the middle of a part, other than the reader's."""
    runs = store.list_runs(limit=1)
    if not runs:
        return None
    for part in store.list_parts(runs[0].id):
        if part.status is PartStatus.RUNNING and part.holder is not None:
            pid = int(part.holder.split(":")[1])
            if pid in pids and pid != reader:
                return pid
    return None


def _salesforce_emails(project: Project) -> list[str]:
    """The e-mail of every record in the sandbox's Salesforce, duplicates included."""
    reader = project.connector("salesforce")
    return [str(r["Email"]) for page in reader.read_changes(None) for r in page.records]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_workers_share_a_split_flow_exactly_once_when_one_is_killed(
    project: Project,
) -> None:
    contacts = 12 * PAGE_SIZE
    emails = [f"lead{n}@acme{n}.io" for n in range(contacts)]
    hubspot_contacts(project, contacts)
    # Salesforce answers slowly, so a part is in the middle of its writes long enough to kill.
    admin(project.sandbox, "faults", {"latency_ms": 150, "systems": ["salesforce"]})
    with open_state(project.config) as store:
        workers = {w.pid: w for w in (_worker(project, f"w{n}") for n in range(3))}
        victim: int | None = None
        try:
            _queue_flow(project)
            started = time.monotonic()
            while victim is None:
                assert time.monotonic() - started < DEADLINE_S, "no part ran"
                assert all(w.poll() is None for w in workers.values())
                lock = store.lock_info(f"sync:{FLOW}")
                reader = lock.holder.pid if lock is not None else None
                victim = _part_holder(store, set(workers), reader)
                time.sleep(0.05)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            while not (runs := store.list_runs(limit=5)) or runs[0].status is RunStatus.RUNNING:
                assert time.monotonic() - started < DEADLINE_S, "the run did not end"
                time.sleep(0.5)
        finally:
            admin(project.sandbox, "faults", {})
            for pid, worker in workers.items():
                if pid != victim:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers.values():
                worker.wait(60)
        run = store.list_runs(limit=1)[0]
        parts = store.list_parts(run.id, "source")
        keys = store.find_keys_by_emails(emails)
        linked = store.external_ids_for_many("salesforce", list(keys.values()))
        cursor = store.get_cursor(FLOW, "hubspot")
    assert run.status is RunStatus.OK, run.stats
    assert len(parts) >= 12 and all(p.status is PartStatus.DONE for p in parts)
    assert any(p.attempts > 1 for p in parts)  # the killed worker's part, taken again
    # every contact in Salesforce once, under one lead key each
    assert sorted(_salesforce_emails(project)) == sorted(emails)
    assert len(set(linked.values())) == contacts
    assert sum(flow["created"] for flow in run.stats["flows"]) == contacts
    assert cursor is not None
