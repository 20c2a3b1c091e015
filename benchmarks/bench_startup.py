"""Start-up time of the ``leadrelay`` command line (target: ``--version`` and ``--help`` < 0.3 s).

    python -m benchmarks.bench_startup [--runs N]

Each command runs in a fresh interpreter, as a user's shell runs it: ``python -c pass`` (the
interpreter alone), ``leadrelay --version``, ``leadrelay --help`` and ``leadrelay sync --help``
(which imports the sync command's module, and nothing heavy). Prints the median and the best
wall time of each, the part above the bare interpreter, and the median CPU time (user + system,
which other processes on a busy machine disturb less than the wall time). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "leadrelay --version": [sys.executable, "-m", "leadrelay", "--version"],
    "leadrelay --help": [sys.executable, "-m", "leadrelay", "--help"],
    "leadrelay sync --help": [sys.executable, "-m", "leadrelay", "sync", "--help"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timings(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each of ``runs`` runs of ``argv``, from spawn to exit."""
    walls, cpus = [], []
    for _ in range(runs):
        started, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="Runs of each command.")
    args = parser.parse_args()
    timings(COMMANDS["leadrelay --version"], 1)  # warm the file cache and .pyc files
    baseline = 0.0
    print(f"{'command':<24} {'median':>8} {'best':>8} {'over python':>12} {'cpu':>8}")
    for label, argv in COMMANDS.items():
        walls, cpus = timings(argv, args.runs)
        median = statistics.median(walls)
        if label == "python -c pass":
            baseline = median
        print(
            f"{label:<24} {median:>7.3f}s {min(walls):>7.3f}s {median - baseline:>11.3f}s "
            f"{statistics.median(cpus):>7.3f}s"
        )


if __name__ == "__main__":
    main()
