"""Reliability of sync on the sandbox: faults, SIGKILL at random moments, a destination down.

Every test ends by counting the destination's records per email: each lead exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadrelay.config import Config, load_config
from leadrelay.connectors.base import Connector, UpsertInput
from leadrelay.connectors.errors import ConnectorError
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, FlowStats, SyncContext, SyncEngine
from leadrelay.sync.state import StateStore

pytestmark = pytest.mark.slow

FLOW = "hubspot-salesforce"
#: Short waits so a faulty run finishes in seconds (rate-limit answers carry Retry-After).
FAST_RETRY = RetryPolicy(max_attempts=12, max_total_s=30.0, base_s=0.02, cap_s=0.5)

#: Runs ``leadrelay sync`` in a child process (the command function, as the CLI registers it).
SYNC_SCRIPT = (
    "import sys, typer\n"
    "from leadrelay.sync.commands import sync_command\n"
    "app = typer.Typer()\n"
    "app.command()(sync_command)\n"
    "app(args=sys.argv[1:])\n"
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


def admin(sandbox: SandboxServer, path: str, body: dict[str, Any]) -> None:
    context = ssl.create_default_context(cafile=str(sandbox.ca_bundle))
    with httpx.Client(verify=context) as client:
        client.post(f"{sandbox.url}/__sandbox__/{path}", json=body).raise_for_status()


def faults_seen(sandbox: SandboxServer) -> int:
    context = ssl.create_default_context(cafile=str(sandbox.ca_bundle))
    with httpx.Client(verify=context) as client:
        stats = client.get(f"{sandbox.url}/__sandbox__/stats").json()
    return sum(int(n) for status, n in stats["status"].items() if status >= "429")


def make_project(sandbox: SandboxServer, folder: Path) -> Config:
    admin(sandbox, "faults", {})
    admin(sandbox, "reset", {})
    write_sandbox_project(folder, sandbox.env())
    return load_config(folder / "leadrelay.toml")


def seed(connector: Connector[Any], count: int) -> list[str]:
    emails = [f"r{n}@co{n % 97}.io" for n in range(count)]
    for start in range(0, count, connector.batch_size):
        chunk = emails[start : start + connector.batch_size]
        results = connector.upsert(
            [
                UpsertInput(
                    ref=email,
                    fields={
                        "email": email,
                        "lastname": f"R{start}",
                        "company": "Co",
                        "lifecyclestage": "marketingqualifiedlead",
                    },
                )
                for email in chunk
            ]
        )
        assert all(result.ok for result in results)
    return emails


def sync_once(config: Config, **options: Any) -> FlowStats:
    with StateStore(config.state.url) as store, ConnectorPool(config, **options) as pool:
        engine = SyncEngine.for_flow(SyncContext(config, store, pool), config.flow(FLOW))
        return engine.run()


def destination_emails(config: Config) -> Counter[str]:
    with ConnectorPool(config) as pool:
        salesforce = pool.get("salesforce")
        return Counter(
            str(record["Email"]).lower()
            for page in salesforce.read_changes(None)
            for record in page.records
        )


def test_a_faulty_2000_lead_sync_delivers_every_lead_exactly_once(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    config = make_project(sandbox, tmp_path)
    with ConnectorPool(config) as pool:
        emails = seed(pool.get("hubspot"), 2000)
    admin(sandbox, "faults", {"error_rate": 0.2, "rate_limit_per_10s": 100, "reset_rate": 0.05})
    stats = sync_once(config, retry=FAST_RETRY)
    admin(sandbox, "faults", {})
    assert faults_seen(sandbox) > 0
    assert (stats.error, stats.dead_lettered) == (None, 0)
    assert destination_emails(config) == Counter(emails)


def test_with_the_destination_down_leads_stay_pending_and_the_next_run_delivers(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    config = make_project(sandbox, tmp_path)
    with ConnectorPool(config) as pool:
        emails = seed(pool.get("hubspot"), 150)
    admin(sandbox, "faults", {"error_rate": 1.0, "systems": ["salesforce"]})
    down = RetryPolicy(max_attempts=2, max_total_s=1.0, base_s=0.01, cap_s=0.05)
    with pytest.raises(ConnectorError):
        sync_once(config, retry=down)
    with StateStore(config.state.url) as store:
        assert store.get_cursor(FLOW, "hubspot") is None
    admin(sandbox, "faults", {})
    stats = sync_once(config)
    assert stats.created == 150
    assert destination_emails(config) == Counter(emails)


def test_sync_killed_at_random_moments_then_rerun_delivers_every_lead_once(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    rng = random.Random(20240601)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for trial in range(20):
        folder = tmp_path / f"trial{trial}"
        config = make_project(sandbox, folder)
        with ConnectorPool(config) as pool:
            emails = seed(pool.get("hubspot"), 300)
        # Small write batches and some latency stretch the run over the kill window.
        toml = folder / "leadrelay.toml"
        text = toml.read_text(encoding="utf-8")
        toml.write_text(
            text.replace(
                'destination = "salesforce"\n', 'destination = "salesforce"\nbatch_size = 10\n'
            ),
            encoding="utf-8",
        )
        config = load_config(toml)
        admin(sandbox, "faults", {"latency_ms": 15})
        child = subprocess.Popen(
            [sys.executable, "-c", SYNC_SCRIPT, FLOW, "--config", str(config.path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.8, 3.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        admin(sandbox, "faults", {})
        stats = sync_once(config)
        assert stats.error is None, f"trial {trial}"
        assert destination_emails(config) == Counter(emails), f"trial {trial}"
