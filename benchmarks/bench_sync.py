"""Sync hubspot -> salesforce on the sandbox: API calls against the batch floor, speed, memory.

Run: ``python -m benchmarks.bench_sync [--sizes 1000,10000,100000] [--naive-max 1000]
[--profile]``.

For each N, N contacts are seeded in the sandbox's HubSpot, then one ``leadrelay sync`` of the
``hubspot-salesforce`` flow runs. Printed per system: API calls made (from the sandbox's own
counters) next to the batch floor ``ceil(N / batch)``, leads per second, the sync process's
CPU µs per lead (engine + connectors; the sandbox runs in another process). Beside it, in the
same sandbox process, a *reference* client makes only the unavoidable calls for the same N
(the HubSpot read pages and Salesforce composite creates of 200, with a fixed field map and no
state): ``x ref`` is the sync's wall time over the reference's, the figure to compare.

Time and memory are measured in separate runs: tracemalloc slows Python several-fold, so the
peak of Python allocations (which should stay flat as N grows: streaming page by page) comes
from a run of its own. ``--profile`` prints where the sync process spends its CPU (cProfile on
a CPU clock: leadrelay's functions by cumulative CPU, then all by own CPU). The naive
per-record find-or-create (one lookup and one upsert per lead) runs up to ``--naive-max``
leads. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
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


def _reference_sync(config: Config) -> int:
    """Only the unavoidable calls: read HubSpot's pages, create in Salesforce 200 at a time."""
    read = 0
    with ConnectorPool(config) as pool:
        hubspot, salesforce = pool.get("hubspot"), pool.get("salesforce")
        batch: list[UpsertInput] = []
        for page in hubspot.read_changes(None):
            for raw in page.records:
                read += 1
                email = str(raw.get("email") or "")
                batch.append(
                    UpsertInput(
                        ref=email,
                        fields={"Email": email, "LastName": raw.get("lastname"), "Company": "Co"},
                    )
                )
                if len(batch) == 200:
                    salesforce.upsert(batch)
                    batch = []
        if batch:
            salesforce.upsert(batch)
    return read


_RUNS = {"sync": _engine_sync, "naive": _naive_sync, "ref": _reference_sync}


def _run(label: str, count: int, *, memory: bool = False, profile: bool = False) -> dict[str, Any]:
    """One seeded sandbox, one run of ``label``: wall, CPU, calls (and peak, or a profile)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with sandbox_process(folder) as env:
            write_sandbox_project(folder, env)
            config = load_config(folder / "leadrelay.toml")
            _seed(config, count)
            before = _requests(env)
            # CPU time, not wall: waiting for the sandbox (or for a core) is not the sync's cost
            profiler = cProfile.Profile(time.process_time) if profile else None
            if memory:
                tracemalloc.start()
            if profiler is not None:
                profiler.enable()
            cpu, wall = time.process_time(), time.perf_counter()
            read = _RUNS[label](config)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if profiler is not None:
                profiler.disable()
            peak = 0
            if memory:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            after = _requests(env)
    calls = {system: after.get(system, 0) - before.get(system, 0) for system in after}
    result: dict[str, Any] = {"read": read, "wall": wall, "cpu": cpu, "calls": calls, "peak": peak}
    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("cumulative").print_stats(r"leadrelay", int(os.environ.get("BENCH_PROFILE_ROWS", "25")))
        stats.sort_stats("tottime").print_stats(25)
        result["profile"] = text.getvalue()
    return result


def measure(label: str, count: int, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time ``label`` on N leads in one run and its memory peak in another; print a line."""
    timed = _run(label, count)
    peak = _run(label, count, memory=True)["peak"]
    calls = timed["calls"]
    floors = {"hubspot": math.ceil(count / 200), "salesforce": math.ceil(count / 200)}
    shown = ", ".join(
        f"{system} {calls.get(system, 0)} (floor {floors[system]}, "
        f"x{calls.get(system, 0) / floors[system]:.2f})"
        for system in ("hubspot", "salesforce")
    )
    ratio = f"  x ref {timed['wall'] / reference['wall']:.2f}" if reference else ""
    print(
        f"{label:<6} N={count:>7}  read={timed['read']:>7}  {count / timed['wall']:8.0f} leads/s  "
        f"{timed['cpu'] / count * 1e6:8.0f} CPU µs/lead  peak {peak / 2**20:7.1f} MiB{ratio}  "
        f"calls: {shown}",
        flush=True,
    )
    return timed


def main() -> None:
    """Measure the reference client, the engine and (small N) the naive loop at each size."""
    parser = argparse.ArgumentParser(prog="bench_sync")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--naive-max", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile the sync at each size")
    args = parser.parse_args(sys.argv[1:])
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print("floor: ceil(N / 200) per system (HubSpot search page, Salesforce collection)")
    for count in (int(n) for n in args.sizes.split(",")):
        reference = measure("ref", count)
        measure("sync", count, reference)
        if count <= args.naive_max:
            measure("naive", count, reference)
        if args.profile:
            print(_run("sync", count, profile=True)["profile"], flush=True)


if __name__ == "__main__":
    main()
