"""Normalization + tagging + dedupe throughput, streamed from a CSV lead list.

    python -m benchmarks.bench_core [10k|100k|1m|N ...] [--jobs N] [--memory]
    python -m benchmarks.bench_core --steps

Each lead row (from :func:`benchmarks.bench_dedupe.synthetic_rows`, plus a landing page with
UTMs or click ids and a referrer) is first written to a temporary CSV (not timed). The timed
run is the product's :func:`leadrelay.sync.dedupe.dedupe_csv` over that file with a record
maker that streams each lead through the whole pipeline: the canonical Lead
(:func:`leadrelay.model.lead_from_row`: email, phone, names, company domain normalized), tagged
with its attribution, into the dedupe clustering; no list of leads is held. Each size runs with
1 job (one process; leads/s per stage and in all) and then with ``--jobs`` worker processes
(default as ``leadrelay dedupe``: the CPUs usable, at most 8), whose CPU includes the workers'
(``getrusage(RUSAGE_CHILDREN)``). With ``--memory`` each run is repeated under tracemalloc
(which slows Python several-fold, so its time is not printed) for the peak of this process's
Python allocations. tracemalloc cannot see the workers: a thread samples their peak resident
set size (``VmHWM`` of ``/proc/PID/status``, found with psutil) every 0.2 s in the
``--memory`` run, and the largest is printed. ``ru_maxrss`` of ``RUSAGE_CHILDREN`` is not
used: a spawned worker's includes the parent's resident pages between its fork and its exec.

``--steps`` prints instead the CPU of one call of each step on 5,000 of the same rows (thread
CPU clock, the least of 9 repeats, so that other processes on the machine move it little):
the row's Lead, ``tag_url``, ``apply_touch`` on a Lead just built, the ``DedupeRecord`` of a
Lead and its identity, and the capture delivery worker's Lead of a ``bench_capture``
submission (its form mapping, attribution and Lead, and the Lead alone).
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import threading
import time
import timeit
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]
from pydantic import ValidationError

from benchmarks.bench_dedupe import COLUMNS, SIZES, synthetic_rows
from leadrelay.model import lead_from_row
from leadrelay.sync.dedupe import (
    PARALLEL_MIN_BYTES,
    DedupeRecord,
    _identity,
    dedupe_csv,
    default_jobs,
)
from leadrelay.sync.tagging import apply_touch, tag_url

if TYPE_CHECKING:
    from leadrelay.sync.state import InboxItem

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
    """The record maker of the stream: normalize → tag → dedupe record, timing each stage.

    Picklable, so that worker processes run it too (their copies keep their own timings).
    """

    def __init__(self) -> None:
        self.normalize = self.tag = self.record = 0.0

    def __call__(self, n: int, row: dict[str, str]) -> DedupeRecord | None:
        clock = time.perf_counter
        page, referrer = row.pop("landing_page", ""), row.pop("referrer", "")
        t0 = clock()
        try:
            lead = lead_from_row({k: v for k, v in row.items() if v})
        except ValidationError:
            return None
        t1 = clock()
        apply_touch(lead, tag_url(page, referrer or None))
        t2 = clock()
        record = DedupeRecord.from_lead(lead, row=n)
        self.normalize += t1 - t0
        self.tag += t2 - t1
        self.record += clock() - t2
        return record


class _WorkerPeak:
    """Samples the peak resident set size of this process's worker children while it runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.peak_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            for child in me.children():
                try:
                    with open(f"/proc/{child.pid}/status", encoding="ascii") as status:
                        hwm = next(
                            (int(line.split()[1]) for line in status if line.startswith("VmHWM:")),
                            0,
                        )
                except (OSError, ValueError):
                    continue
                self.peak_kib[child.pid] = max(self.peak_kib.get(child.pid, 0), hwm)

    def __enter__(self) -> _WorkerPeak:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def largest_mib(self) -> float:
        """The largest peak of one child (the resource tracker's included: it is tiny)."""
        return max(self.peak_kib.values(), default=0) / 1024


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(count: int, path: Path, *, jobs: int = 1, memory: bool = False) -> None:
    """Stream the ``count`` leads of ``path`` through normalize, tag and dedupe with ``jobs``
    processes; print the figures."""
    pipeline = _Pipeline()
    if memory:
        tracemalloc.start()
    children = _children_cpu()
    start, cpu = time.perf_counter(), time.process_time()
    with _WorkerPeak(memory and jobs > 1) as workers_peak:
        report = dedupe_csv(path, encoding="utf-8", jobs=jobs, make_record=pipeline)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    children = _children_cpu() - children
    rejected = report.records_rejected + len(report.rows_skipped)
    clusters = len(report.clusters)
    label = f"{count:>9,} leads, {jobs} job{'s' if jobs > 1 else ' '}"
    parallel = jobs > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES
    if jobs > 1 and not parallel:
        label += " (file under PARALLEL_MIN_BYTES: read in one process)"
    if memory:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        workers = ""
        if parallel:
            workers = f" | largest worker's peak RSS {workers_peak.largest_mib():,.1f} MiB (VmHWM)"
        print(
            f"{label} | peak Python memory {peak / 2**20:,.1f} MiB (tracemalloc run, this "
            f"process){workers} | clusters {clusters:,}",
            flush=True,
        )
        return
    all_cpu = cpu + children
    figures = f"all {count / total:>8,.0f}/s ({total:.1f} s; {count / all_cpu:,.0f} per CPU second"
    if parallel:
        figures += f", CPU {cpu:.1f} s here + {children:.1f} s in workers)"
        stages = ""
    else:
        kept = count - rejected
        dedupe = total - pipeline.normalize - pipeline.tag
        figures += ")"
        stages = (
            f"normalize {count / pipeline.normalize:>9,.0f}/s | "
            f"tag {kept / pipeline.tag:>9,.0f}/s | read + dedupe {kept / dedupe:>9,.0f}/s | "
        )
    print(
        f"{label} | {stages}{figures} | rejected {rejected:,} | clusters {clusters:,}",
        flush=True,
    )


def _cpu_us(step: Callable[[], object], calls: int) -> float:
    """CPU µs per call of ``step`` (which makes ``calls`` calls): the least of 9 repeats."""
    return min(timeit.Timer(step, timer=time.thread_time).repeat(number=1, repeat=9)) / calls * 1e6


def _capture_submissions(count: int) -> list[tuple[InboxItem, dict[str, Any]]]:
    """``count`` submissions shaped as ``bench_capture`` sends them, as inbox items."""
    from leadrelay.sync.state import InboxItem, InboxStatus

    received = datetime.now(UTC)
    submissions = []
    for n in range(count):
        fields = {
            "email": f"bench{n}@load{n % 50}.io",
            "first_name": "Bench",
            "last_name": f"L{n}",
            "company": f"Load {n % 50}",
            "page_url": f"https://www.example.org/demo?utm_source=bench&utm_campaign=c{n % 7}",
        }
        item = InboxItem(
            key=f"ld_{n:026x}",
            form="demo-webform",
            source="webform",
            payload={"fields": fields},
            dedupe_key=str(n),
            is_test=False,
            received_at=received,
            status=InboxStatus.PENDING,
            attempts=0,
            last_error=None,
            delivered_at=None,
            claim_token=None,
            claimed_at=None,
        )
        submissions.append((item, fields))
    return submissions


def steps(count: int = 5000) -> None:
    """Print the CPU of one call of each step of the stream and of capture's Lead."""
    # imported here, not at the top: the stream's worker processes import this module
    from leadrelay.capture.worker import _build_lead, _lead_extras, attribution_of
    from leadrelay.config import WebformConfig
    from leadrelay.mappings.engine import DEFAULTS_DIR, load_form_mapping

    rng = random.Random(11)
    visits = [
        (rng.choice(_PAGES).format(n=n), rng.choice(_REFERRERS) or None) for n in range(count)
    ]
    rows = [{k: v for k, v in row.items() if v} for row in synthetic_rows(count)]
    attributions = [tag_url(page, referrer) for page, referrer in visits]
    leads = [lead_from_row(row) for row in rows]
    records = [DedupeRecord.from_lead(lead, row=n) for n, lead in enumerate(leads)]

    def build() -> None:
        for row in rows:
            lead_from_row(row)

    def build_and_touch() -> None:
        for row, attribution in zip(rows, attributions, strict=True):
            apply_touch(lead_from_row(row), attribution)

    def tag() -> None:
        for page, referrer in visits:
            tag_url(page, referrer)

    def record() -> None:
        for n, lead in enumerate(leads):
            DedupeRecord.from_lead(lead, row=n)

    def identity() -> None:
        for one in records:
            _identity(one)

    mapping = load_form_mapping(DEFAULTS_DIR / "webform.toml", source="webform")
    form = WebformConfig.model_validate(
        {
            "source": "webform",
            "destination": "hubspot",
            "mapping": DEFAULTS_DIR / "webform.toml",
            "secret": "bench",
        }
    )
    submissions = _capture_submissions(count)
    drafts = [mapping.to_lead(fields) for _, fields in submissions]
    extras = [
        _lead_extras(item, form, fields, attribution_of(fields, form))
        for item, fields in submissions
    ]

    def capture_all() -> None:
        for item, fields in submissions:
            draft = mapping.to_lead(fields)
            _build_lead(draft, _lead_extras(item, form, fields, attribution_of(fields, form)))

    def capture_lead() -> None:
        for draft, extra in zip(drafts, extras, strict=True):
            _build_lead(draft, extra)

    alone = _cpu_us(build, count)
    figures = [
        ("a row's Lead (lead_from_row)", alone),
        ("tag_url", _cpu_us(tag, count)),
        ("apply_touch on a new Lead", _cpu_us(build_and_touch, count) - alone),
        ("DedupeRecord.from_lead", _cpu_us(record, count)),
        ("identity of a Lead's record", _cpu_us(identity, count)),
        ("capture: form mapping + attribution + Lead", _cpu_us(capture_all, count)),
        ("capture: the Lead of a draft and extras", _cpu_us(capture_lead, count)),
    ]
    for name, micros in figures:
        print(f"  {name:<44} {micros:7.2f} µs CPU per call", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the sizes named on the command line (default 10k and 100k)."""
    parser = argparse.ArgumentParser(prog="bench_core")
    parser.add_argument(
        "sizes", nargs="*", default=["10k", "100k"], help=f"{', '.join(SIZES)} or a number"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help="worker processes for the second run of each size (default: the CPUs usable)",
    )
    parser.add_argument("--memory", action="store_true", help="also a tracemalloc run per size")
    parser.add_argument(
        "--steps", action="store_true", help="CPU per call of each step instead of a stream"
    )
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.steps:
        steps()
        return
    for name in args.sizes:
        count = SIZES[name] if name in SIZES else int(name) if name.isdigit() else 0
        if count <= 0:
            parser.error(f"size {name!r}: choose from {', '.join(SIZES)} or give a number")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "leads.csv"
            _write_csv(path, count)
            for jobs in dict.fromkeys((1, max(1, args.jobs))):
                run(count, path, jobs=jobs)
            if args.memory:
                for jobs in dict.fromkeys((1, max(1, args.jobs))):
                    run(count, path, jobs=jobs, memory=True)


if __name__ == "__main__":
    main()
