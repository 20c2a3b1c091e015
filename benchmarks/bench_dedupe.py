"""Dedupe throughput on a realistic synthetic lead list (target: 1,000,000 leads < 60 s, one core).

    python -m benchmarks.bench_dedupe [10k|100k|1m ...] [--csv] [--seed N]

The list is mostly distinct people (about 2 % duplicates of the kinds dedupe looks for) at
companies of skewed sizes, with a share of free-mail addresses and phones in mixed formats.
Timed: building the records from row dicts and clustering them; with ``--csv`` also writing the
list to a temporary CSV and running ``dedupe_csv`` on it end to end. Prints leads/s and peak
memory (resident set size of the process, which includes the generated input).
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from leadrelay.sync.dedupe import DedupeRecord, dedupe_csv, find_clusters

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
COLUMNS = ["email", "phone", "country", "first_name", "last_name", "company"]
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ra",
    "so",
    "tu",
    "vi",
    "an",
    "el",
    "or",
    "us",
    "ber",
    "dan",
    "fel",
    "gor",
    "hal",
    "jen",
    "kir",
    "lam",
    "mor",
    "nik",
]
_FREE = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "gmx.de", "icloud.com"]


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts))


def synthetic_rows(count: int, seed: int = 7, dup_rate: float = 0.02) -> Iterator[dict[str, str]]:
    """``count`` lead rows; about ``dup_rate`` of them repeat an earlier person, altered."""
    rng = random.Random(seed)
    firsts = sorted({_word(rng, 2).capitalize() for _ in range(400)})
    lasts = sorted({_word(rng, 3).capitalize() for _ in range(8000)})
    companies = max(10, count // 25)
    domains = [f"{_word(rng, 2)}{n}.{rng.choice(['com', 'io', 'de'])}" for n in range(companies)]
    recent: list[dict[str, str]] = []
    for n in range(count):
        if recent and rng.random() < dup_rate:
            row = dict(rng.choice(recent))
            kind = rng.randrange(4)
            if kind == 0:
                row["email"] = " " + row["email"].upper()
            elif kind == 1 and row["phone"]:
                row["email"] = ""
                row["phone"] = row["phone"].replace(" ", "-")
            elif kind == 2:
                last = row["last_name"]
                i = rng.randrange(1, len(last) - 1)
                row["last_name"] = last[:i] + last[i + 1 :]
                local, _, domain = row["email"].partition("@")
                row["email"] = f"x{local}@{domain}"
            else:
                row["first_name"] = row["first_name"].lower()
            yield row
            continue
        first, last = rng.choice(firsts), rng.choice(lasts)
        # skewed company sizes: the biggest holds about 3 % of the list, then a long tail
        domain = domains[int(companies * rng.random() ** 3)]
        if rng.random() < 0.3:
            domain = rng.choice(_FREE)
        phone = ""
        if rng.random() < 0.7:
            phone = f"+1 {rng.randint(201, 989)} {rng.randint(200, 999)} {rng.randint(0, 9999):04d}"
        row = {
            "email": f"{first.lower()}.{last.lower()}{n}@{domain}",
            "phone": phone,
            "country": "US",
            "first_name": first,
            "last_name": last,
            "company": domain.split(".")[0],
        }
        if len(recent) < 5000:
            recent.append(row)
        elif rng.random() < 0.01:
            recent[rng.randrange(len(recent))] = row
        yield row


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024


def bench_records(count: int, seed: int) -> None:
    """Time record building plus clustering on in-memory rows."""
    rows = list(synthetic_rows(count, seed))
    before = _peak_rss_mib()
    start = time.perf_counter()
    clusters = find_clusters(DedupeRecord.from_mapping(i, row) for i, row in enumerate(rows, 1))
    elapsed = time.perf_counter() - start
    duplicates = sum(len(c.rows) - 1 for c in clusters)
    print(
        f"records {count:>9,}: {elapsed:6.1f} s  {count / elapsed:>9,.0f} leads/s  "
        f"{len(clusters):,} clusters ({duplicates:,} duplicate rows)  "
        f"peak RSS {_peak_rss_mib():,.0f} MiB (input alone {before:,.0f} MiB)"
    )


def bench_csv(count: int, seed: int) -> None:
    """Time ``dedupe_csv`` end to end on a CSV written to a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "leads.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(synthetic_rows(count, seed))
        size = path.stat().st_size / 1024 / 1024
        start = time.perf_counter()
        report = dedupe_csv(path)
        elapsed = time.perf_counter() - start
        print(
            f"csv     {count:>9,}: {elapsed:6.1f} s  {count / elapsed:>9,.0f} leads/s  "
            f"{len(report.clusters):,} clusters  {size:,.0f} MiB file  "
            f"peak RSS {_peak_rss_mib():,.0f} MiB"
        )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark for the sizes given (default: 10k and 100k)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", default=["10k", "100k"], help="10k, 100k or 1m")
    parser.add_argument("--csv", action="store_true", help="also time dedupe_csv on a file")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    unknown = [size for size in args.sizes if size not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    for size in args.sizes:
        bench_records(SIZES[size], args.seed)
        if args.csv:
            bench_csv(SIZES[size], args.seed)


if __name__ == "__main__":
    main()
