"""Sync HubSpot -> Salesforce and HubSpot -> Zoho on the sandbox: API calls against the batch
floor, speed, CPU, memory, and the wall time beside a reference client's.

Run: ``python -m benchmarks.bench_sync [--sizes 1000,10000] [--dest salesforce,zoho]
[--naive-max 1000] [--profile] [--memory] [--bulk-threshold N]``.

For each destination and N, N contacts are seeded in the sandbox's HubSpot, then one sync of
the flow ``hubspot-<dest>`` runs (forward pass and the two-way write-back pass, which re-reads
the N records just written: ``read`` counts both). Printed per run: leads per second, the sync
process's CPU µs per lead (engine + connectors, every thread; the sandbox runs in another
process), the peak of Python allocations, API calls per system next to the batch floor
``ceil(N / batch)``, and ``x ref``: the sync's wall time over that of a *reference* client,
timed in the same way against a fresh sandbox, that makes only the unavoidable calls for the
same N (HubSpot's read pages, the destination's batched creates, with a fixed field map and
no state).

Time and memory are measured in separate runs: tracemalloc slows Python several-fold, so the
peak of Python allocations (which should stay flat as N grows: streaming page by page) comes
from a run of its own, and the timed run has no tracing. ``--profile`` prints where the sync
process spends its CPU (cProfile on a CPU clock: leadrelay's functions by cumulative CPU
(``BENCH_PROFILE_ROWS`` rows, default 25), then all by own CPU; ``BENCH_PROFILE_DUMP=FILE``
also writes the stats to FILE for ``pstats``). ``--memory`` makes only the
tracemalloc runs, of the sync and of the reference client (no timed run). The naive per-record
find-or-create (one lookup and one upsert per lead) runs up to ``--naive-max`` leads.
``--bulk-threshold N`` sets the Salesforce connection's ``bulk_threshold`` (default 10,000):
a read that says more than N remain sends its writes as Bulk API 2.0 jobs; a threshold above
the size writes every page through composite calls. The line then counts the Bulk ingest jobs.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import math
import os
import pstats
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from leadrelay.config import Config, load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine, record_id
from leadrelay.sync.state import StateStore

#: Destination connection → its field map for the reference and naive clients (the fields the
#: destination requires, as the sandbox project's mapping writes them).
DESTINATIONS: dict[str, dict[str, str]] = {
    "salesforce": {"email": "Email", "lastname": "LastName", "company": "Company"},
    "zoho": {"email": "Email", "lastname": "Last_Name", "company": "Company"},
}
#: The sandbox child: READY once it accepts connections (its socket is bound, and so its URLs
#: known, before it listens), then it serves until it is terminated.
SERVER = (
    "import signal, sys\n"
    "from pathlib import Path\n"
    "from leadrelay.sandbox.server import SandboxServer\n"
    "server = SandboxServer(port=0, ca_dir=Path(sys.argv[1]))\n"
    "server.start()\n"
    "sys.stdout.write(server.env_lines())\n"
    "sys.stdout.write('READY\\n')\n"
    "sys.stdout.flush()\n"
    "signal.pause()\n"
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


#: The sandbox's route that creates a Bulk API 2.0 ingest job (one per job).
BULK_JOBS = "POST /services/data/v59.0/jobs/ingest"


def _requests(env: dict[str, str]) -> dict[str, int]:
    """Requests per system, and Bulk ingest jobs created (``bulk jobs``)."""
    with _client(env) as client:
        data: dict[str, Any] = client.get("/__sandbox__/stats").json()
    counts = {k: int(v) for k, v in data["requests"].items()}
    counts["bulk jobs"] = int(data.get("by_route", {}).get(BULK_JOBS, 0))
    return counts


def _with_bulk_threshold(folder: Path, threshold: int | None) -> None:
    """Set the Salesforce connection's ``bulk_threshold`` in the project (None: its default)."""
    if threshold is None:
        return
    toml = folder / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8")
    section = "[connections.salesforce]\n"
    toml.write_text(
        text.replace(section, f"{section}bulk_threshold = {threshold}\n"), encoding="utf-8"
    )


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


def _engine_sync(config: Config, dest: str) -> int:
    with StateStore(config.state.url) as store, ConnectorPool(config) as pool:
        flow = config.flow(f"hubspot-{dest}")
        engine = SyncEngine.for_flow(SyncContext(config, store, pool), flow)
        return engine.run().read


def _fields(raw: dict[str, Any], dest: str) -> dict[str, Any]:
    names = DESTINATIONS[dest]
    return {
        names["email"]: str(raw.get("email") or ""),
        names["lastname"]: raw.get("lastname"),
        names["company"]: "Co",
    }


def _naive_sync(config: Config, dest: str) -> int:
    """Per record: find the destination's lead by email, then create or update it."""
    read = 0
    with ConnectorPool(config) as pool:
        hubspot, target = pool.get("hubspot"), pool.get(dest)
        for page in hubspot.read_changes(None):
            for raw in page.records:
                read += 1
                email = str(raw.get("email") or "")
                found = target.lookup(emails=[email]).get(email)
                existing = record_id(target, found) if found else None
                target.upsert(
                    [UpsertInput(ref=email, fields=_fields(raw, dest), external_id=existing)]
                )
    return read


def _reference_sync(config: Config, dest: str) -> int:
    """Only the unavoidable calls: read HubSpot's pages, create in the destination a full
    batch at a time."""
    read = 0
    with ConnectorPool(config) as pool:
        hubspot, target = pool.get("hubspot"), pool.get(dest)
        batch: list[UpsertInput] = []
        for page in hubspot.read_changes(None):
            for raw in page.records:
                read += 1
                batch.append(
                    UpsertInput(ref=str(raw.get("email") or ""), fields=_fields(raw, dest))
                )
                if len(batch) == target.batch_size:
                    target.upsert(batch)
                    batch = []
        if batch:
            target.upsert(batch)
    return read


_RUNS = {"sync": _engine_sync, "naive": _naive_sync, "ref": _reference_sync}


def _stage_targets() -> list[tuple[Any, str, str]]:
    """(owner, attribute, stage) of the sync's steps whose CPU ``--stages`` reports."""
    from leadrelay import journal
    from leadrelay.handoff import qualify
    from leadrelay.mappings import engine as mappings
    from leadrelay.sync import engine
    from leadrelay.sync.state import StateStore as Store

    targets: list[tuple[Any, str, str]] = [
        (qualify.Qualifier, "qualify_page", "qualify (score, route, SLA clock, its journal)"),
        (qualify.Qualifier, "recycle_page", "qualify (score, route, SLA clock, its journal)"),
        (engine, "plan_record", "plan (field rules, to_system, expected read-back)"),
        (mappings.Mapping, "to_lead", "map system records (to_lead)"),
        (engine.SyncEngine, "_commit", "commit a page (state store)"),
        (engine.SyncEngine, "_lookup_targets", "look up the targets (connector + store)"),
        (engine.SyncEngine, "_claim_identities", "claim identities (state store)"),
        (engine.SyncEngine, "_settle", "settle (baselines, field clocks, fingerprints)"),
        (engine.SyncEngine, "_vet", "vet against describe()"),
        (engine, "build_lead", "build Leads (pydantic)"),
        (engine, "fingerprint", "fingerprints"),
        (engine, "_project", "fingerprints"),
        (engine, "_digest", "fingerprints"),
        (engine, "_reads_as", "echo check without mapping (write-back pass)"),
        (engine, "_tag", "tag"),
        (journal.Journal, "writes", "journal of writes"),
        (engine.LeadWriter, "write", "write calls (connector)"),
        (engine, "_read_in_line", "reads in line (write-back pass; connector)"),
        (engine.SyncEngine, "for_flow", "set-up (mappings, connectors, auth, describe)"),
    ]
    for name in (
        "get_fingerprints",
        "keys_for_many",
        "find_keys_by_emails",
        "external_ids_for_many",
        "tombstoned_keys",
        "get_baselines",
        "get_field_clocks",
        "field_problems",
    ):
        targets.append((Store, name, "state store reads"))
    return targets


def _drained(items: list[Any]) -> Iterator[Any]:
    yield from items


@contextmanager
def _stage_clocks() -> Iterator[dict[str, float]]:
    """Main-thread CPU seconds per step of the sync, each counted once (in the outermost
    step). For the count, a step that returns a generator runs it to its end at once."""
    spent: dict[str, float] = {}
    busy = threading.local()
    main_thread = threading.main_thread()
    with ExitStack() as stack:
        for owner, name, stage in _stage_targets():
            original = getattr(owner, name)

            def clocked(*args: Any, _f: Any = original, _stage: str = stage, **kw: Any) -> Any:
                if getattr(busy, "on", False) or threading.current_thread() is not main_thread:
                    return _f(*args, **kw)
                busy.on = True
                start = time.thread_time()
                try:
                    result = _f(*args, **kw)
                    if inspect.isgenerator(result):
                        # a generator's work is done when it is consumed: consume it here
                        result = _drained(list(result))
                    return result
                finally:
                    spent[_stage] = spent.get(_stage, 0.0) + time.thread_time() - start
                    busy.on = False

            stack.enter_context(mock.patch.object(owner, name, clocked))
        yield spent


def _run(
    label: str,
    count: int,
    dest: str = "salesforce",
    *,
    memory: bool = False,
    profile: bool = False,
    stages: bool = False,
    bulk_threshold: int | None = None,
) -> dict[str, Any]:
    """One seeded sandbox, one run of ``label``: wall, CPU, calls (and peak, a profile, or the
    CPU per step with ``stages``)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with sandbox_process(folder) as env:
            write_sandbox_project(folder, env)
            _with_bulk_threshold(folder, bulk_threshold)
            config = load_config(folder / "leadrelay.toml")
            _seed(config, count)
            before = _requests(env)
            # CPU time, not wall: waiting for the sandbox (or for a core) is not the sync's cost
            profiler = cProfile.Profile(time.process_time) if profile else None
            if memory:
                tracemalloc.start()
            if profiler is not None:
                profiler.enable()
            with _stage_clocks() if stages else nullcontext({}) as spent:
                cpu, wall = time.process_time(), time.perf_counter()
                main = time.thread_time()
                read = _RUNS[label](config, dest)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                main = time.thread_time() - main
            if profiler is not None:
                profiler.disable()
            peak = 0
            if memory:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            after = _requests(env)
    calls = {system: after.get(system, 0) - before.get(system, 0) for system in after}
    result: dict[str, Any] = {"read": read, "wall": wall, "cpu": cpu, "calls": calls, "peak": peak}
    if stages:
        result["stages"] = {**spent, "rest of the sync's main thread": main - sum(spent.values())}
        result["main"] = main
    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        dump = os.environ.get("BENCH_PROFILE_DUMP")
        if dump:
            stats.dump_stats(dump)
        stats.sort_stats("cumulative").print_stats(
            r"leadrelay", int(os.environ.get("BENCH_PROFILE_ROWS", "25"))
        )
        stats.sort_stats("tottime").print_stats(25)
        result["profile"] = text.getvalue()
    return result


def _floors(count: int, dest: str) -> dict[str, int]:
    """The fewest calls that move N leads: HubSpot's read pages (a first read lists the
    contacts, 100 a page) and the destination's batches."""
    batch = {"salesforce": 200, "zoho": 100}[dest]
    return {"hubspot": math.ceil(count / 100), dest: math.ceil(count / batch)}


def measure(
    label: str,
    count: int,
    dest: str,
    reference: dict[str, Any] | None = None,
    *,
    bulk_threshold: int | None = None,
) -> dict[str, Any]:
    """Time ``label`` on N leads in one run and its memory peak in another; print a line."""
    timed = _run(label, count, dest, bulk_threshold=bulk_threshold)
    peak = _run(label, count, dest, memory=True, bulk_threshold=bulk_threshold)["peak"]
    calls = timed["calls"]
    floors = _floors(count, dest)
    shown = ", ".join(
        f"{system} {calls.get(system, 0)} (floor {floor}, x{calls.get(system, 0) / floor:.2f})"
        for system, floor in floors.items()
    )
    ratio = f"  x ref {timed['wall'] / reference['wall']:.2f}" if reference else ""
    jobs = calls.get("bulk jobs", 0)
    shown += f", bulk jobs {jobs}" if jobs else ""
    per_lead = sum(calls.get(system, 0) for system in floors) / count
    print(
        f"{label:<6} -> {dest:<10} N={count:>6}  read={timed['read']:>6}  "
        f"{count / timed['wall']:6.0f} leads/s  {timed['cpu'] / count * 1e6:6.0f} CPU µs/lead  "
        f"peak {peak / 2**20:6.1f} MiB{ratio}  {per_lead:.4f} calls/lead: {shown}",
        flush=True,
    )
    return timed


def measure_peak(label: str, count: int, dest: str) -> None:
    """Print the peak of Python allocations of ``label`` on N leads (a tracemalloc run)."""
    result = _run(label, count, dest, memory=True)
    print(
        f"{label:<6} -> {dest:<10} N={count:>6}  read={result['read']:>6}  "
        f"peak {result['peak'] / 2**20:6.1f} MiB",
        flush=True,
    )


def _print_stages(result: dict[str, Any], count: int, dest: str) -> None:
    """The CPU per lead of each step (thread CPU clocks; the read-ahead thread's reads are the
    difference between the process and the main thread)."""
    cpu, main = result["cpu"], result["main"]
    print(
        f"stages -> {dest}, N={count}: process {cpu / count * 1e6:.0f} CPU µs/lead, "
        f"main thread {main / count * 1e6:.0f}, other threads (read-ahead) "
        f"{(cpu - main) / count * 1e6:.0f}",
        flush=True,
    )
    for stage, seconds in sorted(result["stages"].items(), key=lambda item: -item[1]):
        print(f"  {seconds / count * 1e6:7.0f} µs/lead  {stage}", flush=True)


def main() -> None:
    """Measure the reference client, the engine and (small N) the naive loop at each size, for
    each destination."""
    parser = argparse.ArgumentParser(prog="bench_sync")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--dest", default="salesforce,zoho", help="salesforce, zoho or both")
    parser.add_argument("--naive-max", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile the sync at each size")
    parser.add_argument(
        "--stages", action="store_true", help="CPU µs per lead of each step of the sync"
    )
    parser.add_argument(
        "--memory", action="store_true", help="only the peak memory of the sync and reference"
    )
    parser.add_argument(
        "--bulk-threshold",
        type=int,
        default=None,
        help="the Salesforce connection's bulk_threshold (default: the connection's, 10000)",
    )
    args = parser.parse_args(sys.argv[1:])
    os.environ.setdefault("PYTHONHASHSEED", "0")
    dests = [name.strip() for name in args.dest.split(",") if name.strip()]
    unknown = [name for name in dests if name not in DESTINATIONS]
    if unknown:
        parser.error(f"unknown destination {', '.join(unknown)}: choose from salesforce, zoho")
    print("floor: ceil(N / batch) per system (HubSpot list page 100, Salesforce 200, Zoho 100)")
    for count in (int(n) for n in args.sizes.split(",")):
        for dest in dests:
            if args.memory:
                measure_peak("ref", count, dest)
                measure_peak("sync", count, dest)
                continue
            bulk = args.bulk_threshold
            reference = measure("ref", count, dest, bulk_threshold=bulk)
            measure("sync", count, dest, reference, bulk_threshold=bulk)
            if count <= args.naive_max:
                measure("naive", count, dest, reference, bulk_threshold=bulk)
            if args.profile:
                print(_run("sync", count, dest, profile=True)["profile"], flush=True)
            if args.stages:
                _print_stages(_run("sync", count, dest, stages=True), count, dest)


if __name__ == "__main__":
    main()
