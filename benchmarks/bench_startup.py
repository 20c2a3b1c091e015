"""Start-up time of the ``leadrelay`` command line (target: ``--version`` and ``--help`` < 0.3 s).

    python -m benchmarks.bench_startup [--runs N] [--no-sync]

Each command runs in a fresh interpreter, as a user's shell runs it: ``python -c pass`` (the
interpreter alone), ``leadrelay --version``, ``leadrelay --help`` and ``leadrelay sync --help``
(which imports the sync command's module, and nothing heavy). Then ``leadrelay sync --json``
with nothing to do, as cron runs it every few minutes: the sandbox's project (HubSpot with five
leads, two-way to Salesforce and Zoho, its three forms), synced once before the timed runs, so
each timed run reads both flows and writes nothing; the sandbox runs in a process of its own.
Prints the median and the best wall time of each, the part above the bare interpreter, and the
median CPU time of the command's process (user + system, which other processes on a busy
machine disturb less than the wall time). Nothing is asserted.

The commands run with Python's bytecode cache on, as an installed package does, even where the
environment sets ``PYTHONDONTWRITEBYTECODE`` (the first run writes it).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "leadrelay --version": [sys.executable, "-m", "leadrelay", "--version"],
    "leadrelay --help": [sys.executable, "-m", "leadrelay", "--help"],
    "leadrelay sync --help": [sys.executable, "-m", "leadrelay", "sync", "--help"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: The commands' environment: the bytecode cache on, as an installed package has it.
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def timings(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each of ``runs`` runs of ``argv``, from spawn to exit."""
    walls, cpus = [], []
    for _ in range(runs):
        started, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(
            argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
        )
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu)
    return walls, cpus


def idle_sync(runs: int) -> tuple[list[float], list[float]]:
    """Timings of ``leadrelay sync --json`` with nothing to do, on a sandbox of its own."""
    from benchmarks.bench_sync import sandbox_process
    from leadrelay.sandbox.project import seed_leads, write_sandbox_project

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with sandbox_process(folder) as env:
            write_sandbox_project(folder, env)
            seed_leads(env, 5)
            argv = [sys.executable, "-m", "leadrelay", "sync", "--json", "-c"]
            argv.append(str(folder / "leadrelay.toml"))
            timings(argv, 1)  # the first sync: creates the five leads in each CRM
            return timings(argv, runs)


def _line(label: str, walls: list[float], cpus: list[float], baseline: float) -> None:
    median = statistics.median(walls)
    print(
        f"{label:<28} {median:>7.3f}s {min(walls):>7.3f}s {median - baseline:>11.3f}s "
        f"{statistics.median(cpus):>7.3f}s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="Runs of each command.")
    parser.add_argument(
        "--no-sync", action="store_true", help="Leave out the idle sync (it starts a sandbox)."
    )
    args = parser.parse_args()
    timings(COMMANDS["leadrelay --version"], 1)  # warm the file cache and .pyc files
    baseline = 0.0
    print(f"{'command':<28} {'median':>8} {'best':>8} {'over python':>12} {'cpu':>8}")
    for label, argv in COMMANDS.items():
        walls, cpus = timings(argv, args.runs)
        if label == "python -c pass":
            baseline = statistics.median(walls)
        _line(label, walls, cpus, baseline)
    if not args.no_sync:
        _line("leadrelay sync (idle)", *idle_sync(args.runs), baseline)


if __name__ == "__main__":
    main()
