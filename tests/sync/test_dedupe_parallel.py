"""``dedupe_csv`` with worker processes gives the report of one process (``--jobs``)."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadrelay.sync import dedupe
from leadrelay.sync.dedupe import DedupeRecord, dedupe_csv, worker_pool

HEADER = ["email", "phone", "country", "first_name", "last_name", "company_domain", "notes"]

_EMAILS = ["ann@acme.io", " ANN@Acme.io", "a.nn+x@gmail.com", "ann@gmail.com", "bo@beta.io", ""]
_PHONES = ["+1 415 555 0101", "(415) 555-0101", "+44 20 7946 0958", "020 7946 0958", "12", ""]
_COUNTRIES = ["US", "GB", ""]
_FIRST = ["Ann", "Anna", "Bob", "Robert", "J.", "", "Daniel", "Daniela"]
_LAST = ["Lee", "Lee ", "Smith", "Smyth", "", "Müller"]
_DOMAINS = ["acme.io", "beta.io", "gmail.com", ""]
#: Cells that need quoting: commas, quotes, line breaks of each kind.
_NOTES = ["", "plain", "a, b", 'say "hi"', "two\nlines", "cr\r\nlf", 'x,"\ny', "\n"]

_good_row = st.tuples(
    st.sampled_from(_EMAILS),
    st.sampled_from(_PHONES),
    st.sampled_from(_COUNTRIES),
    st.sampled_from(_FIRST),
    st.sampled_from(_LAST),
    st.sampled_from(_DOMAINS),
    st.sampled_from(_NOTES),
).map(list)
#: Lines the reader skips or counts as blank: too few or too many cells, a stray quote, a
#: character after a closing quote, an empty line.
_bad_line = st.sampled_from(
    [
        "only@one.cell\n",
        "a@b.io,1,US,A,B,acme.io,n,extra,cells\n",
        '"ann@acme.io,Lee\n',
        '"ann@acme.io"x,1,US,A,B,c.io,n\n',
        "\n",
        ",,,,,,\n",
    ]
)
_line = st.one_of(_good_row, _good_row, _good_row, _bad_line)


def _csv_text(lines: list[list[str] | str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for line in lines:
        if isinstance(line, str):
            out.write(line)
        else:
            writer.writerow(line)
    return out.getvalue()


def reject_odd_rows(row: int, values: dict[str, str]) -> DedupeRecord | None:
    """A record maker (module level: workers import it) that leaves out odd rows."""
    return None if row % 2 else DedupeRecord.from_mapping(row, values)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with worker_pool(2) as executor:
        yield executor


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parallel")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_line, max_size=30), chunk_rows=st.integers(1, 4))
def test_workers_give_the_report_of_one_process(
    pool: ProcessPoolExecutor, csv_dir: Path, lines: list[list[str] | str], chunk_rows: int
) -> None:
    path = csv_dir / "leads.csv"
    path.write_text(_csv_text(lines), encoding="utf-8", newline="")
    alone = dedupe_csv(path)
    assert dedupe_csv(path, jobs=2, pool=pool, chunk_rows=chunk_rows) == alone


def test_workers_count_the_rows_the_record_maker_rejects(
    pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    path = tmp_path / "leads.csv"
    rows = [["ann@acme.io", "", "", "Ann", "Lee", "", ""]] * 7
    path.write_text(_csv_text(list(rows)), encoding="utf-8")
    alone = dedupe_csv(path, make_record=reject_odd_rows)
    parallel = dedupe_csv(path, jobs=2, pool=pool, make_record=reject_odd_rows, chunk_rows=2)
    assert parallel == alone
    assert parallel.records_rejected == 4
    assert [c.rows for c in parallel.clusters] == [[2, 4, 6]]


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email\nann@acme.io\n", encoding="utf-8")
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        dedupe_csv(path, jobs=0)


def test_default_jobs_is_the_usable_cpus_within_the_bound() -> None:
    assert dedupe.default_jobs() == min(len(os.sched_getaffinity(0)), dedupe.MAX_JOBS)


def _many_rows(path: Path, count: int) -> None:
    lines = ["email,first_name,last_name,company_domain"]
    lines += [
        f"p{n % (count // 2)}@c{n % 97}.io,Ann{n % 13},Lee{n},c{n % 97}.io" for n in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_cli_jobs_2_prints_what_jobs_1_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadrelay.cli import main

    path = tmp_path / "leads.csv"
    _many_rows(path, 3000)
    monkeypatch.setattr(dedupe, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(dedupe, "CHUNK_ROWS", 500)
    before = set(multiprocessing.active_children())  # the module's pool, if started
    outputs = []
    for jobs in ("1", "2"):
        main(["dedupe", str(path), "--json", "--jobs", jobs])
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[1] == outputs[0]
    assert outputs[0]["rows_read"] == 3000 and outputs[0]["clusters"]
    assert set(multiprocessing.active_children()) == before


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    return [
        child
        for child in parent.children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline())
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_workers_end_when_the_command_is_stopped(tmp_path: Path, signum: int) -> None:
    path = tmp_path / "leads.csv"
    _many_rows(path, 300_000)
    command = [sys.executable, "-m", "leadrelay", "dedupe", str(path), "--jobs", "2"]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        parent = psutil.Process(process.pid)
        workers: list[psutil.Process] = []
        try:
            deadline = time.monotonic() + 60
            while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                workers = _workers(parent)
            assert len(workers) == 2, "the workers did not start"
            process.send_signal(signum)
            _, err = process.communicate(timeout=60)
            _, alive = psutil.wait_procs(workers, timeout=30)
            assert alive == []
            assert process.returncode != 0
            assert b"Traceback" not in err
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for worker in workers:
                if worker.is_running():
                    worker.kill()
