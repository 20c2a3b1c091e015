"""Sync hubspot -> salesforce on the sandbox: API calls against the batch floor, speed, memory.

Run: ``python -m benchmarks.bench_sync [--sizes 1000,10000,100000] [--naive-max 1000]``.

For each N, N contacts are seeded in the sandbox's HubSpot, then one ``leadrelay sync`` of the
``hubspot-salesforce`` flow runs. Printed per system: API calls made (from the sandbox's own
counters) next to the batch floor ``ceil(N / batch)``, leads per second, the sync process's
CPU µs per lead (engine + connectors; the sandbox runs in another process) and the peak of
Python allocations during the sync (tracemalloc), which should stay flat as N grows
(streaming page by page). The same is measured for a naive per-record find-or-create (one
lookup and one upsert per lead) up to ``--naive-max`` leads. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import ssl
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from leadrelay.config import Config, load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine, record_id
from leadrelay.sync.state import StateStore

FLOW = "hubspot-salesforce"
SERVER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from leadrelay.sandbox.server import SandboxServer\n"
    "server = SandboxServer(port=0, ca_dir=Path(sys.argv[1]))\n"
    "sys.stdout.write(server.env_lines())\n"
    "sys.stdout.write('READY\\n')\n"
    "sys.stdout.flush()\n"
    "server.serve_forever()\n"
)


@contextmanager
def sandbox_process(folder: Path) -> Iterator[dict[str, str]]:
    """A sandbox in a child process (so its CPU is not the sync's); yields its env lines."""
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(folder / ".sandbox")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    env: dict[str, str] = {}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "READY":
                break
            key, _, value = line.strip().partition("=")
            env[key] = value
        yield env
    finally:
        child.terminate()
        child.wait(timeout=10)


def _client(env: dict[str, str]) -> httpx.Client:
    context = ssl.create_default_context(cafile=env["LEADRELAY_CA_BUNDLE"])
    return httpx.Client(base_url=env["LEADRELAY_SANDBOX_URL"], verify=context, timeout=60)


def _requests(env: dict[str, str]) -> dict[str, int]:
    with _client(env) as client:
        data: dict[str, Any] = client.get("/__sandbox__/stats").json()
    return {k: int(v) for k, v in data["requests"].items()}


def _seed(config: Config, count: int) -> None:
    with ConnectorPool(config) as pool:
        hubspot = pool.get("hubspot")
        for start in range(0, count, hubspot.batch_size):
            hubspot.upsert(
                [
                    UpsertInput(
                        ref=str(n),
                        fields={
                            "email": f"b{n}@co{n % 997}.io",
                            "firstname": "Bea",
                            "lastname": f"B{n}",
                            "company": f"Co {n % 997}",
                            "lifecyclestage": "marketingqualifiedlead",
                            "utm_source": "google",
                            "utm_medium": "cpc",
                        },
                    )
                    for n in range(start, min(count, start + hubspot.batch_size))
                ]
            )


def _engine_sync(config: Config) -> int:
    with StateStore(config.state.url) as store, ConnectorPool(config) as pool:
        engine = SyncEngine.for_flow(SyncContext(config, store, pool), config.flow(FLOW))
        return engine.run().read


def _naive_sync(config: Config) -> int:
    """Per record: find the Salesforce lead by email, then create or update it."""
    read = 0
    with ConnectorPool(config) as pool:
        hubspot, salesforce = pool.get("hubspot"), pool.get("salesforce")
        for page in hubspot.read_changes(None):
            for raw in page.records:
                read += 1
                email = str(raw.get("email") or "")
                found = salesforce.lookup(emails=[email]).get(email)
                fields = {"Email": email, "LastName": raw.get("lastname"), "Company": "Co"}
                existing = record_id(salesforce, found) if found else None
                salesforce.upsert([UpsertInput(ref=email, fields=fields, external_id=existing)])
    return read


def measure(label: str, count: int, naive: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with sandbox_process(folder) as env:
            write_sandbox_project(folder, env)
            config = load_config(folder / "leadrelay.toml")
            _seed(config, count)
            before = _requests(env)
            tracemalloc.start()
            cpu, wall = time.process_time(), time.perf_counter()
            read = (_naive_sync if naive else _engine_sync)(config)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            after = _requests(env)
    calls = {system: after.get(system, 0) - before.get(system, 0) for system in after}
    floors = {"hubspot": math.ceil(count / 200), "salesforce": math.ceil(count / 200)}
    shown = ", ".join(
        f"{system} {calls[system]} (floor {floors[system]}, x{calls[system] / floors[system]:.2f})"
        for system in ("hubspot", "salesforce")
    )
    print(
        f"{label:<6} N={count:>7}  read={read:>7}  {count / wall:8.0f} leads/s  "
        f"{cpu / count * 1e6:8.0f} CPU µs/lead  peak {peak / 2**20:7.1f} MiB  calls: {shown}",
        flush=True,
    )


def main() -> None:
    """Measure the engine at each size, and the naive loop up to ``--naive-max``."""
    parser = argparse.ArgumentParser(prog="bench_sync")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--naive-max", type=int, default=1000)
    args = parser.parse_args(sys.argv[1:])
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print("floor: ceil(N / 200) per system (HubSpot search page, Salesforce collection)")
    for count in (int(n) for n in args.sizes.split(",")):
        measure("sync", count, naive=False)
        if count <= args.naive_max:
            measure("naive", count, naive=True)


if __name__ == "__main__":
    main()
