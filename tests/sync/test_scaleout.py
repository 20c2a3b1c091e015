"""Three ``leadrelay worker`` processes on one PostgreSQL job queue, one of them SIGKILLed.

The worker killed is the one running a scheduled flow. Every captured lead reaches HubSpot
exactly once, and every scheduled flow runs exactly once for its fire time across the workers:
the run cut off by the kill is recorded as aborted and its job is run again by another worker
once the dead one missed its heartbeats for a lease (3 s here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from leadrelay.config import load_config
from leadrelay.model import new_lead_key
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.jobs import (
    DELIVER_TASK,
    FLOW_TASK,
    DeliveryNudge,
    WorkerProcess,
    conninfo,
    ensure_queue_schema,
)
from leadrelay.sync.state import InboxStatus, RunStatus, StateStore, open_state
from tests.postgres import fresh_schema
from tests.sync.test_scenarios import (  # noqa: F401  (sandbox: the module's emulators)
    Project,
    admin,
    emails_in,
    hubspot_contacts,
    sandbox,
)

LEADS = 240
CONTACTS = 60
FLOWS = ("hubspot-salesforce", "hubspot-zoho")
DEADLINE_S = 50.0
ZONE = "Asia/Kolkata"


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Project]:  # noqa: F811
    admin(sandbox, "reset", {})
    with fresh_schema() as url:
        opened = Project(tmp_path, sandbox)
        toml = opened.folder / "leadrelay.toml"
        text = toml.read_text(encoding="utf-8")
        text = text.replace('url = "sqlite:///leadrelay.db"', f'url = "{url}"\nlease_s = 3')
        # Due in the current minute of a zone half an hour off UTC, and not again for an hour:
        # each flow has one fire time in the test, found only when the zone is honoured.
        minute = datetime.now(ZoneInfo(ZONE)).minute
        text = text.replace('schedule = "*/5 * * * *"', f'schedule = "{minute} * * * *"')
        text += f'\n[schedule]\ntimezone = "{ZONE}"\n\n[worker]\ndelivery_every_s = 1\n'
        toml.write_text(text, encoding="utf-8")
        opened.config = load_config(toml)
        try:
            yield opened
        finally:
            opened.pool.close()


def capture_leads(store: StateStore, count: int, run: str = "scale") -> list[str]:
    """Store ``count`` web-form leads in the inbox, as the capture service does; their
    e-mails."""
    emails = []
    with store.transaction() as conn:
        for n in range(count):
            email = f"{run}{n}@acme{n}.io"
            put = store.put_inbox(
                key=new_lead_key(),
                form="demo-webform",
                source="webform",
                payload={
                    "fields": {
                        "email": email,
                        "first_name": f"Ann{n}",
                        "last_name": f"Lee{n}",
                        "company": f"Acme {n}",
                    }
                },
                dedupe_key=f"{run}-{n}",
                conn=conn,
            )
            store.mark_received(
                put.key, "hubspot", form="demo-webform", source="webform", conn=conn
            )
            emails.append(email)
    return emails


def _worker(project: Project, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "leadrelay", "worker", "--name", name, "--config", "leadrelay.toml"],
        cwd=project.folder,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _scheduled_times(url: str) -> dict[str, set[int]]:
    """The fire times the workers deferred each flow's job for."""
    import psycopg

    times: dict[str, set[int]] = {flow: set() for flow in FLOWS}
    with psycopg.connect(conninfo(url)) as conn:
        rows = conn.execute(
            "SELECT periodic_id, defer_timestamp FROM procrastinate_periodic_defers"
            " WHERE task_name = %s",
            (FLOW_TASK,),
        ).fetchall()
    for flow, at in rows:
        times[flow].add(int(at))
    return times


def _jobs(url: str, task: str, *statuses: str) -> int:
    """How many of ``task``'s jobs are in one of ``statuses`` in the queue."""
    import psycopg

    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs"
            " WHERE task_name = %s AND status::text = ANY(%s)",
            (task, list(statuses)),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _settled(store: StateStore) -> bool:
    counts = store.inbox_counts()
    if counts[InboxStatus.PENDING]:
        return False
    runs = store.list_runs(limit=50)
    ended = {flow for run in runs if run.status is not RunStatus.RUNNING for flow in run.flows}
    return ended >= set(FLOWS) and not any(r.status is RunStatus.RUNNING for r in runs)


def _flow_holder(store: StateStore, pids: set[int]) -> int | None:
    """The pid of the worker in the middle of a flow's recorded run (holding its sync lock),
    if one of ``pids``."""
    for run in store.list_runs(limit=10):
        if run.status is not RunStatus.RUNNING:
            continue
        info = store.lock_info(f"sync:{run.flows[0]}")
        if info is not None and info.holder.pid in pids:
            return info.holder.pid
    return None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_three_workers_deliver_and_schedule_exactly_once_when_one_is_killed(
    project: Project,
) -> None:
    url = project.config.state.url
    marketing = [f"lead{n}@acme{n}.io" for n in range(CONTACTS)]
    hubspot_contacts(project, CONTACTS)
    with open_state(project.config) as store:
        captured = capture_leads(store, LEADS)
        workers = {w.pid: w for w in (_worker(project, f"w{n}") for n in range(3))}
        try:
            started = time.monotonic()
            # SIGKILL the worker that is running a scheduled flow, in the middle of its run.
            while (victim := _flow_holder(store, set(workers))) is None:
                assert time.monotonic() - started < DEADLINE_S, "no flow ran"
                assert all(w.poll() is None for w in workers.values())
                time.sleep(0.05)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            while not _settled(store):
                assert time.monotonic() - started < DEADLINE_S, (
                    store.inbox_counts(),
                    [(r.id, r.flow, r.status) for r in store.list_runs()],
                )
                time.sleep(0.5)
        finally:
            for pid, worker in workers.items():
                if pid != victim:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers.values():
                _out, err = worker.communicate(timeout=30)
                assert "Traceback" not in err, err

        # Every captured lead in HubSpot once, under one lead key.
        assert store.inbox_counts()[InboxStatus.DELIVERED] == LEADS
        keys = store.find_keys_by_emails(captured)
        assert len(set(keys.values())) == LEADS
        hub_ids = store.external_ids_for_many("hubspot", list(keys.values()))
        assert len(set(hub_ids.values())) == LEADS
        assert set(emails_in(project, "hubspot", captured)) == set(captured)
        # Each flow ran once for its one fire time: the killed run is aborted, its job was
        # run again by another worker, and every marketing contact reached each CRM once.
        times = _scheduled_times(url)
        runs = store.list_runs(limit=100)
        for flow in FLOWS:
            assert len(times[flow]) == 1, (flow, times)
            done = [r for r in runs if flow in r.flows and r.status is not RunStatus.ABORTED]
            assert [r.status for r in done] == [RunStatus.OK], flow
        assert [r.status for r in runs].count(RunStatus.ABORTED) == 1
        assert _jobs(url, FLOW_TASK, "todo", "doing") == 0
        marketing_keys = store.find_keys_by_emails(marketing)
        for crm in ("salesforce", "zoho"):
            assert set(emails_in(project, crm, marketing)) == set(marketing), crm
            linked = store.external_ids_for_many(crm, list(marketing_keys.values()))
            assert len(set(linked.values())) == CONTACTS, crm


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_serve_worker_child_delivers_and_stops_with_its_parent(project: Project) -> None:
    with open_state(project.config) as store:
        capture_leads(store, 5)
        child = WorkerProcess(project.config.path, "worker0")
        child.start()
        try:
            started = time.monotonic()
            while store.inbox_counts()[InboxStatus.DELIVERED] < 5:
                assert child.alive and time.monotonic() - started < DEADLINE_S
                time.sleep(0.2)
        finally:
            child.stop(timeout=30)
        assert not child.alive


def test_stored_leads_queue_one_delivery_at_a_time(project: Project) -> None:
    ensure_queue_schema(project.config)
    with DeliveryNudge(project.config, min_gap_s=0.01) as nudge:
        nudge()
        deadline = time.monotonic() + DEADLINE_S
        while nudge.queued == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        nudge()
        nudge()
    assert nudge.queued == 1  # the queueing lock keeps one waiting delivery job
    assert _jobs(project.config.state.url, DELIVER_TASK, "todo") == 1
