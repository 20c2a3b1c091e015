"""``python -m benchmarks [NAME …]``: run every benchmark (or the named ones) with its defaults.

Each ``benchmarks/bench_*.py`` module has a ``main()`` that prints its own figures: leads per
second, API calls per lead and peak memory. Nothing here asserts a time.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(names: list[str]) -> int:
    modules = sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )
    chosen = [m for m in modules if not names or m in names or m.removeprefix("bench_") in names]
    unknown = [n for n in names if n not in modules and f"bench_{n}" not in modules]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(modules)}")
        return 2
    for name in chosen:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        saved, sys.argv = sys.argv, [name]
        try:
            module.main()
        finally:
            sys.argv = saved
        print(f"== {name} done in {time.perf_counter() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
