"""Start-up time of the ``leadrelay`` command line (target: ``--version`` and ``--help`` < 0.3 s).

    python -m benchmarks.bench_startup [--runs N]

Each command runs in a fresh interpreter, as a user's shell runs it: ``python -c pass`` (the
interpreter alone), ``leadrelay --version``, ``leadrelay --help`` and ``leadrelay sync --help``
(which imports the sync command's module, and nothing heavy). Prints the median and the best
wall time of each and the part above the bare interpreter. Nothing is asserted.
"""

from __future__ import annotations

import argparse
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


def wall_times(argv: list[str], runs: int) -> list[float]:
    """Seconds each of ``runs`` runs of ``argv`` took, from spawn to exit."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="Runs of each command.")
    args = parser.parse_args()
    wall_times(COMMANDS["leadrelay --version"], 1)  # warm the file cache and .pyc files
    baseline = 0.0
    print(f"{'command':<24} {'median':>8} {'best':>8} {'over python':>12}")
    for label, argv in COMMANDS.items():
        times = wall_times(argv, args.runs)
        median = statistics.median(times)
        if label == "python -c pass":
            baseline = median
        print(f"{label:<24} {median:>7.3f}s {min(times):>7.3f}s {median - baseline:>11.3f}s")


if __name__ == "__main__":
    main()
