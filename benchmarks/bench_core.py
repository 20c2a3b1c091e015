"""Normalization + tagging + dedupe throughput, streamed from a CSV lead list.

    python -m benchmarks.bench_core [10k|100k|1m|N ...] [--memory]

Each lead row (from :func:`benchmarks.bench_dedupe.synthetic_rows`, plus a landing page with
UTMs or click ids and a referrer) is first written to a temporary CSV (not timed). The timed
run reads it back row by row with :func:`leadrelay.sync.csvfile.read_lead_rows` and streams
each lead through the whole pipeline: the canonical Lead (:func:`leadrelay.model.lead_from_row`:
email, phone, names, company domain normalized), tagged with its attribution, into the dedupe
clustering; no list of leads is held. Prints leads/s per stage and in all. With
``--memory`` each size runs a second time under tracemalloc (which slows Python several-fold,
so its time is not printed) for the peak of Python allocations.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from benchmarks.bench_dedupe import COLUMNS, SIZES, synthetic_rows
from leadrelay.model import lead_from_row
from leadrelay.sync.csvfile import SkippedRow, read_lead_rows
from leadrelay.sync.dedupe import DedupeRecord, find_clusters
from leadrelay.sync.tagging import apply_touch, tag_url

_PAGES = [
    "https://www.example-saas.com/pricing?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=Cj0{n}",
    "https://www.example-saas.com/demo?utm_source=linkedin&utm_medium=paid_social&utm_campaign=abm",
    "https://www.example-saas.com/blog/post-{n}",
    "https://www.example-saas.com/webinar?utm_source=newsletter&utm_medium=email&utm_campaign=nov",
    "https://www.example-saas.com/?fbclid=IwAR{n}",
]
_REFERRERS = [
    "",
    "https://www.google.com/",
    "https://l.facebook.com/",
    "https://news.ycombinator.com/",
]


def _write_csv(path: Path, count: int) -> None:
    rng = random.Random(11)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, "landing_page", "referrer"])
        writer.writeheader()
        for n, row in enumerate(synthetic_rows(count)):
            page = rng.choice(_PAGES).format(n=n)
            writer.writerow({**row, "landing_page": page, "referrer": rng.choice(_REFERRERS)})


class _Pipeline:
    """Streams CSV rows through normalize → tag → dedupe records, timing each stage."""

    def __init__(self) -> None:
        self.normalize = self.tag = self.record = 0.0
        self.rejected = 0

    def records(self, path: Path) -> Iterator[DedupeRecord]:
        clock = time.perf_counter
        for item in read_lead_rows(path, encoding="utf-8"):
            if isinstance(item, SkippedRow):
                self.rejected += 1
                continue
            n, row = item
            page, referrer = row.pop("landing_page", ""), row.pop("referrer", "")
            t0 = clock()
            try:
                lead = lead_from_row({k: v for k, v in row.items() if v})
            except ValidationError:
                self.rejected += 1
                continue
            t1 = clock()
            apply_touch(lead, tag_url(page, referrer or None))
            t2 = clock()
            record = DedupeRecord.from_lead(lead, row=n)
            self.normalize += t1 - t0
            self.tag += t2 - t1
            self.record += clock() - t2
            yield record


def run(count: int, *, memory: bool = False) -> None:
    """Stream ``count`` leads from a CSV through normalize, tag and dedupe; print the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "leads.csv"
        _write_csv(path, count)
        pipeline = _Pipeline()
        if memory:
            tracemalloc.start()
        start, cpu = time.perf_counter(), time.process_time()
        clusters = find_clusters(pipeline.records(path))
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        if memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"{count:>9,} leads | peak Python memory {peak / 2**20:,.1f} MiB "
                f"(tracemalloc run) | clusters {len(clusters):,}",
                flush=True,
            )
            return
    kept = count - pipeline.rejected
    dedupe = total - pipeline.normalize - pipeline.tag
    print(
        f"{count:>9,} leads | normalize {count / pipeline.normalize:>9,.0f}/s | "
        f"tag {kept / pipeline.tag:>9,.0f}/s | read + dedupe {kept / dedupe:>9,.0f}/s | "
        f"all {count / total:>8,.0f}/s ({total:.1f} s; {count / cpu:,.0f} per CPU second) | "
        f"rejected {pipeline.rejected:,} | "
        f"clusters {len(clusters):,}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the sizes named on the command line (default 10k and 100k)."""
    parser = argparse.ArgumentParser(prog="bench_core")
    parser.add_argument(
        "sizes", nargs="*", default=["10k", "100k"], help=f"{', '.join(SIZES)} or a number"
    )
    parser.add_argument("--memory", action="store_true", help="also a tracemalloc run per size")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    for name in args.sizes:
        count = SIZES[name] if name in SIZES else int(name) if name.isdigit() else 0
        if count <= 0:
            parser.error(f"size {name!r}: choose from {', '.join(SIZES)} or give a number")
        run(count)
        if args.memory:
            run(count, memory=True)


if __name__ == "__main__":
    main()
