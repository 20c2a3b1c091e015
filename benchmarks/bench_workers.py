"""Workers on the PostgreSQL job queue: leads/s delivered, flow runs/min, and leads/s of one
large flow split over the workers, by worker count.

Run: ``python -m benchmarks.bench_workers [--leads 100] [--flows 4] [--workers 1,2,4]
[--split-contacts 1000] [--postgres URL]`` (the URL defaults to ``LEADRELAY_TEST_POSTGRES_URL``;
each measurement gets a schema of its own, dropped afterwards).

For each worker count, that many ``leadrelay worker`` processes start on PostgreSQL against the
sandbox (in a process of its own). Then ``--leads`` web-form leads are put in the inbox at
once and the time until the last is delivered to HubSpot gives leads/s; then one job per flow
is queued for ``--flows`` flows (hubspot → salesforce, a few contacts each) and the time until
every run ended gives flow runs per minute. The same is measured for one process on SQLite
(what ``leadrelay serve`` does on one machine: its delivery loop, and its scheduler running the
due flows one after the other).

The split figure: ``--split-contacts`` HubSpot contacts (the sandbox emptied first), read in
pages of :data:`SPLIT_PAGE` (the workers' HubSpot page size is set that small so that the flow
has many pages), one job of one hubspot → salesforce flow with ``split_pages = 1``; the time
from queueing it until its run ended gives leads/s. On SQLite the same flow runs unsplit in one
process. Nothing is asserted. The defaults take about three minutes.

Where the PostgreSQL path loses to SQLite (profiled on a loaded 2-core machine): every statement
is a round trip and every commit a flush, so what SQLite does in microseconds per row costs
milliseconds — in a flow run mostly the run events, appended one statement each (over a
quarter of a run's time on PostgreSQL); the shared rate budget adds two short statements per
API call.
Workers also used to find a queued delivery up to 5 s late (procrastinate's polling interval);
they now look every second.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.bench_sync import sandbox_process
from leadrelay.capture.worker import drain_inbox
from leadrelay.config import Config, load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sync.engine import ConnectorPool
from leadrelay.sync.jobs import FLOW_TASK, make_app
from leadrelay.sync.runner import run_flows
from leadrelay.sync.state import InboxStatus, RunStatus, StateStore, open_state
from tests.postgres import ENV as POSTGRES_ENV
from tests.postgres import fresh_schema
from tests.sync.test_scaleout import capture_leads

CONTACTS = 20
#: HubSpot's page size in the split-flow measurement (its API allows up to 200).
SPLIT_PAGE = 50
#: A ``leadrelay worker`` whose HubSpot pages hold ``sys.argv[1]`` contacts.
_SMALL_PAGE_WORKER = (
    "import sys\n"
    "from leadrelay.connectors.hubspot.connector import HubSpotConnector\n"
    "HubSpotConnector.page_size = int(sys.argv[1])\n"
    "from leadrelay.cli import main\n"
    "sys.argv = ['leadrelay', 'worker', '--config', 'leadrelay.toml']\n"
    "main()\n"
)


def _project(folder: Path, env: dict[str, str], state_url: str, flows: int) -> Config:
    write_sandbox_project(folder, env)
    toml = folder / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace('url = "sqlite:///leadrelay.db"', f'url = "{state_url}"')
    text = text.replace('schedule = "*/5 * * * *"\n', "")
    text += "".join(
        f'\n[[flows]]\nname = "bench-{n}"\nsource = "hubspot"\ndestination = "salesforce"\n'
        for n in range(flows)
    )
    text += "\n[worker]\ndelivery_every_s = 1\n"
    toml.write_text(text, encoding="utf-8")
    return load_config(toml)


def _seed(config: Config) -> None:
    with ConnectorPool(config) as pool:
        pool.get("hubspot").upsert(
            [
                UpsertInput(
                    ref=str(n),
                    fields={"email": f"c{n}@seed{n}.io", "lastname": f"C{n}", "company": "S"},
                )
                for n in range(CONTACTS)
            ]
        )


def _wait(done: Callable[[], bool], timeout: float = 600) -> float:
    started = time.perf_counter()
    while not done():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("the workers did not finish")
        time.sleep(0.05)
    return time.perf_counter() - started


def _ended_runs(store: StateStore) -> int:
    return sum(1 for run in store.list_runs(limit=10_000) if run.status is not RunStatus.RUNNING)


def _workers(
    folder: Path, count: int, *, page_size: int | None = None
) -> list[subprocess.Popen[str]]:
    """``count`` workers, once each says it is ready. Their logs go to files: a pipe nobody
    reads would stop a worker once it filled. ``page_size``: their HubSpot page size."""
    logs = [folder / f"worker-{n}.log" for n in range(count)]
    command = [sys.executable, "-m", "leadrelay", "worker", "--config", "leadrelay.toml"]
    if page_size is not None:
        command = [sys.executable, "-c", _SMALL_PAGE_WORKER, str(page_size)]
    started = []
    for log in logs:
        with log.open("w") as stderr:
            started.append(
                subprocess.Popen(
                    command,
                    cwd=folder,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    text=True,
                )
            )
    _wait(lambda: all("worker ready" in log.read_text() for log in logs), timeout=120)
    return started


def measure_postgres(env: dict[str, str], url: str, workers: int, leads: int, flows: int) -> str:
    os.environ[POSTGRES_ENV] = url
    with tempfile.TemporaryDirectory() as tmp, fresh_schema() as state_url:
        config = _project(Path(tmp), env, state_url, flows)
        _seed(config)
        with open_state(config) as store:
            running = _workers(Path(tmp), workers)
            try:
                capture_leads(store, leads, f"pg{workers}-")
                delivered = _wait(lambda: store.inbox_counts()[InboxStatus.DELIVERED] == leads)
                app = make_app(config)
                with app.open():
                    for n in range(flows):
                        app.configure_task(FLOW_TASK).defer(flow=f"bench-{n}")
                ran = _wait(lambda: _ended_runs(store) == flows)
            finally:
                for worker in running:
                    worker.terminate()
                for worker in running:
                    worker.wait(timeout=90)
    return _line(f"PostgreSQL, {workers} worker(s)", leads, delivered, flows, ran)


def measure_sqlite(env: dict[str, str], leads: int, flows: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        config = _project(Path(tmp), env, "sqlite:///state.db", flows)
        _seed(config)
        with open_state(config) as store:
            capture_leads(store, leads, "sqlite-")
            started = time.perf_counter()
            drain_inbox(config, store)
            delivered = time.perf_counter() - started
            started = time.perf_counter()
            for n in range(flows):
                run_flows(config, store, [config.flow(f"bench-{n}")], drain_inbox=False)
            ran = time.perf_counter() - started
    return _line("SQLite, one process", leads, delivered, flows, ran)


def _split_project(folder: Path, env: dict[str, str], state_url: str, contacts: int) -> Config:
    """A project with one hubspot → salesforce flow split past one page, and the sandbox
    emptied and seeded with ``contacts`` HubSpot contacts."""
    write_sandbox_project(folder, env)
    toml = folder / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace('url = "sqlite:///leadrelay.db"', f'url = "{state_url}"')
    text = text.replace('schedule = "*/5 * * * *"\n', "")
    text += '\n[[flows]]\nname = "bench-split"\nsource = "hubspot"\ndestination = "salesforce"\n'
    text += "\n[worker]\ndelivery_every_s = 60\nsplit_pages = 1\n"
    toml.write_text(text, encoding="utf-8")
    config = load_config(toml)
    context = ssl.create_default_context(cafile=env["LEADRELAY_CA_BUNDLE"])
    with httpx.Client(base_url=env["LEADRELAY_SANDBOX_URL"], verify=context) as client:
        client.post("/__sandbox__/reset", json={}).raise_for_status()
    with ConnectorPool(config) as pool:
        results = pool.get("hubspot").upsert(
            [
                UpsertInput(
                    ref=str(n),
                    fields={"email": f"s{n}@split{n}.io", "lastname": f"S{n}", "company": "S"},
                )
                for n in range(contacts)
            ]
        )
    assert all(result.ok for result in results)
    return config


def measure_split_postgres(env: dict[str, str], url: str, workers: int, contacts: int) -> str:
    os.environ[POSTGRES_ENV] = url
    with tempfile.TemporaryDirectory() as tmp, fresh_schema() as state_url:
        config = _split_project(Path(tmp), env, state_url, contacts)
        with open_state(config) as store:
            running = _workers(Path(tmp), workers, page_size=SPLIT_PAGE)
            try:
                app = make_app(config)
                with app.open():
                    app.configure_task(FLOW_TASK).defer(flow="bench-split")
                ran = _wait(lambda: _ended_runs(store) == 1)
                run = store.list_runs(limit=1)[0]
                parts = len(store.list_parts(run.id))
            finally:
                for worker in running:
                    worker.terminate()
                for worker in running:
                    worker.wait(timeout=90)
    label = f"PostgreSQL, {workers} worker(s)"
    return f"{label:<28} {contacts / ran:8.1f} leads/s ({run.status}, {parts} parts)"


def measure_split_sqlite(env: dict[str, str], contacts: int) -> str:
    from leadrelay.connectors.hubspot.connector import HubSpotConnector

    with tempfile.TemporaryDirectory() as tmp:
        config = _split_project(Path(tmp), env, "sqlite:///state.db", contacts)
        page_size = HubSpotConnector.page_size
        HubSpotConnector.page_size = SPLIT_PAGE
        try:
            with open_state(config) as store:
                started = time.perf_counter()
                outcome = run_flows(config, store, [config.flow("bench-split")], drain_inbox=False)
                ran = time.perf_counter() - started
        finally:
            HubSpotConnector.page_size = page_size
    status = "ok" if outcome.ok else "failed"
    return f"{'SQLite, one process':<28} {contacts / ran:8.1f} leads/s ({status}, not split)"


def _line(label: str, leads: int, delivered: float, flows: int, ran: float) -> str:
    return (
        f"{label:<28} {leads / delivered:8.1f} leads/s delivered   "
        f"{flows / ran * 60:8.1f} flow runs/min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=100)
    parser.add_argument("--flows", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--split-contacts", type=int, default=1000)
    parser.add_argument("--postgres", default=os.environ.get("LEADRELAY_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    with tempfile.TemporaryDirectory() as tmp, sandbox_process(Path(tmp)) as env:
        print(measure_sqlite(env, args.leads, args.flows), flush=True)
        if not args.postgres:
            print("no PostgreSQL: pass --postgres URL or set LEADRELAY_TEST_POSTGRES_URL")
            return
        for count in counts:
            print(measure_postgres(env, args.postgres, count, args.leads, args.flows), flush=True)
        print(
            f"one flow of {args.split_contacts} contacts in pages of {SPLIT_PAGE}, "
            "split over the workers:",
            flush=True,
        )
        print(measure_split_sqlite(env, args.split_contacts), flush=True)
        for count in counts:
            line = measure_split_postgres(env, args.postgres, count, args.split_contacts)
            print(line, flush=True)


if __name__ == "__main__":
    main()
