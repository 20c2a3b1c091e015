"""The state store under concurrent writers: latency of one small write transaction.

Run: ``python -m benchmarks.bench_store [--threads 16] [--writes 200]``.

Threads of one process (as the capture service's request threads are) each commit small write
transactions (``set_cursor``) into one SQLite store. Printed: transactions per second and the
p50 / p99 / max latency of one transaction, waiting for the writer included. Nothing is
asserted. The tail is what the capture endpoints' time to the 2xx feels.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from leadrelay.sync.state import StateStore


def run(threads: int, writes: int) -> dict[str, float]:
    """Latency figures of ``threads`` x ``writes`` concurrent write transactions."""
    latencies: list[float] = []
    guard = threading.Lock()
    with (
        tempfile.TemporaryDirectory() as folder,
        StateStore(f"sqlite:///{Path(folder) / 'bench.db'}") as store,
    ):

        def work(worker: int) -> None:
            mine = []
            for n in range(writes):
                started = time.perf_counter()
                store.set_cursor("__bench__", f"w{worker}-{n}", "value")
                mine.append(time.perf_counter() - started)
            with guard:
                latencies.extend(mine)

        pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
        began = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    figures = run(args.threads, args.writes)
    print(
        f"  {args.threads} threads x {args.writes} write transactions: "
        f"{figures['per_s']:.0f}/s, p50 {figures['p50_ms']:.2f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
