"""Normalization + tagging + dedupe throughput on a synthetic lead list.

    python -m benchmarks.bench_core [10k|100k|1m ...]

Each lead row (from :func:`benchmarks.bench_dedupe.synthetic_rows`, plus a landing page with
UTMs or click ids and a referrer) is turned into the canonical Lead (email, phone, names,
company domain normalized), tagged with its attribution, and the whole list is deduplicated.
Prints leads/s per stage and in all, and the peak resident memory of the process.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from collections.abc import Iterator

from pydantic import ValidationError

from benchmarks.bench_dedupe import SIZES, synthetic_rows
from leadrelay.model import Lead
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


def _rows(count: int) -> Iterator[tuple[dict[str, str], str, str]]:
    rng = random.Random(11)
    for n, row in enumerate(synthetic_rows(count)):
        yield row, rng.choice(_PAGES).format(n=n), rng.choice(_REFERRERS)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(count: int) -> None:
    """Build, tag and dedupe ``count`` leads; print the figures."""
    rows = list(_rows(count))
    t0 = time.perf_counter()
    leads: list[Lead] = []
    rejected = 0
    for values, _, _ in rows:
        try:
            leads.append(Lead.model_validate({k: v for k, v in values.items() if v}))
        except ValidationError:
            rejected += 1
    t1 = time.perf_counter()
    for lead, (_, page, referrer) in zip(leads, rows, strict=False):
        apply_touch(lead, tag_url(page, referrer or None))
    t2 = time.perf_counter()
    clusters = find_clusters(DedupeRecord.from_lead(lead, row=i) for i, lead in enumerate(leads))
    t3 = time.perf_counter()
    total = t3 - t0
    print(
        f"{count:>9,} leads | normalize {count / (t1 - t0):>9,.0f}/s | "
        f"tag {len(leads) / (t2 - t1):>9,.0f}/s | dedupe {len(leads) / (t3 - t2):>9,.0f}/s | "
        f"all {count / total:>8,.0f}/s ({total:.1f} s) | rejected {rejected:,} | "
        f"clusters {len(clusters):,} | peak RSS {_peak_mib():,.0f} MiB",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the sizes named on the command line (default 10k and 100k)."""
    names = (argv if argv is not None else sys.argv[1:]) or ["10k", "100k"]
    for name in names:
        if name not in SIZES:
            raise SystemExit(f"unknown size {name!r}; choose from {', '.join(SIZES)}")
        run(SIZES[name])


if __name__ == "__main__":
    main()
