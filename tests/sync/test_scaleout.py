"""Three ``leadrelay worker`` processes on one PostgreSQL job queue, one of them SIGKILLed.

Every captured lead reaches HubSpot exactly once, and every scheduled flow runs exactly once
per fire time across the workers (a run cut off by the kill is recorded as aborted and its job
is run again by another worker within a lease).
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
from leadrelay.sync.jobs import FLOW_TASK, WorkerProcess, conninfo
from leadrelay.sync.state import InboxStatus, RunStatus, StateStore, open_state
from tests.postgres import fresh_schema
from tests.sync.test_scenarios import Project, admin, emails_in

LEADS = 240
FLOWS = ("hubspot-salesforce", "hubspot-zoho")
DEADLINE_S = 50.0
ZONE = "Asia/Kolkata"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Project]:
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


def _capture(store: StateStore, count: int) -> list[str]:
    """Store ``count`` web-form leads in the inbox, as the capture service does."""
    emails = []
    with store.transaction() as conn:
        for n in range(count):
            email = f"scale{n}@acme{n}.io"
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
                dedupe_key=f"scale-{n}",
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


def _unfinished_flow_jobs(url: str) -> int:
    import psycopg

    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs"
            " WHERE status IN ('todo', 'doing') AND task_name = %s",
            (FLOW_TASK,),
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


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_three_workers_deliver_and_schedule_exactly_once_when_one_is_killed(
    project: Project,
) -> None:
    url = project.config.state.url
    with open_state(project.config) as store:
        emails = _capture(store, LEADS)
        workers = [_worker(project, f"w{n}") for n in range(3)]
        try:
            started = time.monotonic()
            while store.inbox_counts()[InboxStatus.DELIVERED] == 0:
                assert time.monotonic() - started < DEADLINE_S, "no lead delivered"
                assert all(w.poll() is None for w in workers), workers[0].stderr
                time.sleep(0.2)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            while not _settled(store):
                assert time.monotonic() - started < DEADLINE_S, (
                    store.inbox_counts(),
                    [(r.id, r.flow, r.status, r.started_at) for r in store.list_runs()],
                )
                time.sleep(0.5)
        finally:
            for worker in workers[1:]:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                _out, err = worker.communicate(timeout=30)
                assert "Traceback" not in err, err

        assert store.inbox_counts()[InboxStatus.DELIVERED] == LEADS
        keys = store.find_keys_by_emails(emails)
        assert len(set(keys.values())) == LEADS
        hub_ids = store.external_ids_for_many("hubspot", list(keys.values()))
        assert len(set(hub_ids.values())) == LEADS
        assert set(emails_in(project, "hubspot", emails)) == set(emails)

        times = _scheduled_times(url)
        runs = store.list_runs(limit=100)
        for flow in FLOWS:
            done = [r for r in runs if flow in r.flows and r.status is not RunStatus.ABORTED]
            assert len(times[flow]) == 1, (flow, times)
            assert len(done) == len(times[flow]), (flow, [r.status for r in done])
        assert not [r for r in runs if r.status is RunStatus.RUNNING]
        assert _unfinished_flow_jobs(url) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_serve_worker_child_delivers_and_stops_with_its_parent(project: Project) -> None:
    with open_state(project.config) as store:
        _capture(store, 5)
        child = WorkerProcess(project.config.path, "worker0")
        child.start()
        try:
            started = time.monotonic()
            while store.inbox_counts()[InboxStatus.DELIVERED] < 5:
                assert child.alive
                assert time.monotonic() - started < DEADLINE_S, store.inbox_counts()
                time.sleep(0.2)
        finally:
            child.stop(timeout=30)
        assert not child.alive
