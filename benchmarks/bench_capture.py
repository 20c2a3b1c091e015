"""Capture under load: time to the 2xx, and time from submission to the record in the CRM.

Run: ``python -m benchmarks.bench_capture [--rate 200] [--seconds 30]``.

``leadrelay serve`` (its own process: uvicorn + the delivery worker) runs on loopback on a
project written by ``write_sandbox_project`` for a sandbox running in this process. Load
processes (``--processes``, default 2) post ``demo-webform`` submissions (JSON, with the form's
secret) on a fixed schedule for a bounded time over keep-alive connections (plain HTTP/1.1 on
asyncio streams, a new connection whenever none is idle), and this process watches the
sandbox HubSpot's contact store every 50 ms to see when each record appears. A latency runs
from the submission's scheduled time, so a server that falls behind is not hidden by the load
waiting for it. ``--http-workers N`` runs ``serve --http-workers N``. Printed: the
rate reached, p50 / p99 time to the 202, and p50 / p95 / max time from submission to the record
being readable in the CRM (targets: p99 <= 20 ms, p95 <= 2 s), and the CPU each side used (on
a small machine the load generator and the server compete for cores). ``--state
postgresql://…`` keeps the project's state (inbox, ledger) on that PostgreSQL server, in a schema
made for the run and dropped after it, instead of the project's SQLite file. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil  # type: ignore[import-untyped]
import sqlalchemy as sa

from leadrelay.config import read_env_file
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer

SERVE = (
    "import sys\n"
    "from leadrelay.config import load_config\n"
    "from leadrelay.capture.app import serve\n"
    "more = {'http_workers': int(sys.argv[3])} if sys.argv[3] != '1' else {}\n"
    "serve(load_config(sys.argv[1]), port=int(sys.argv[2]), log_level='warning', **more)\n"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu(process: psutil.Process) -> float:
    """CPU seconds used by a process and its children (the delivery worker)."""
    total = float(sum(process.cpu_times()[:2]))
    for child in process.children(recursive=True):
        total += float(sum(child.cpu_times()[:2]))
    return total


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _wait_healthy(url: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError("leadrelay serve exited early")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("leadrelay serve did not become healthy")


@contextmanager
def _state_schema(server_url: str | None) -> Iterator[str | None]:
    """A state URL in a new schema of the PostgreSQL server ``server_url`` (dropped after), or
    None to keep the project's SQLite state."""
    if server_url is None:
        yield None
        return
    server = sa.make_url(server_url).set(drivername="postgresql+psycopg")
    schema = f"bench_capture_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        scoped = server.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _point_state_at(config_path: Path, url: str) -> None:
    """Rewrite the project's ``[state] url`` (the sandbox project writes a SQLite one)."""
    text = config_path.read_text(encoding="utf-8")
    line = 'url = "sqlite:///leadrelay.db"'
    if line not in text:
        raise RuntimeError("the sandbox project's [state] url is not where it was expected")
    config_path.write_text(text.replace(line, f"url = {json.dumps(url)}", 1), encoding="utf-8")


def _email(n: int) -> str:
    return f"bench{n}@load{n % 50}.io"


def _warm_up() -> float:
    """Run in each load process before the schedule starts (spawning takes seconds)."""
    return time.time()


def _load_process(
    url: str, secret: str, rate: float, seconds: float, part: int, parts: int, start_at: float
) -> tuple[list[float], Counter[str], dict[str, float], float]:
    """One load process: submissions ``part``, ``part + parts`` … of the whole schedule, which
    starts at ``start_at`` (``time.time()``, the same in every load process); also returns
    the CPU seconds the process used."""
    sent: dict[str, float] = {}
    reasons: Counter[str] = Counter()
    cpu = time.process_time()
    latencies, _ = asyncio.run(
        _load(url, secret, rate, seconds, sent, part, parts, start_at, reasons)
    )
    return latencies, reasons, sent, time.process_time() - cpu


#: Idle connections older than this are closed instead of reused: uvicorn closes a keep-alive
#: connection idle for 5 s (its default), and a request sent on one it is closing fails.
_IDLE_REUSE_S = 4.0


class _Connections:
    """Keep-alive HTTP/1.1 connections to the server, a new one opened whenever none is idle
    (so a slow answer never holds back the next scheduled submission)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def take(
        self, *, fresh: bool = False
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        """A connection, and whether it was idle (the server may have closed it meanwhile);
        with ``fresh``, a new one."""
        now = time.monotonic()
        while self.idle and not fresh:
            reader, writer, since = self.idle.pop()
            if now - since < _IDLE_REUSE_S:
                return (reader, writer), True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened.append(writer)
        return (reader, writer), False

    def give_back(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        """``connection`` is idle again."""
        self.idle.append((*connection, time.monotonic()))

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """Send one request; the response's status code once its body was read."""
    writer.write(raw)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _load(
    url: str,
    secret: str,
    rate: float,
    seconds: float,
    sent: dict[str, float],
    part: int = 0,
    parts: int = 1,
    start_at: float | None = None,
    reasons: Counter[str] | None = None,
) -> tuple[list[float], int]:
    """Post this part of a ``rate``/s schedule for ``seconds``; ack latencies (s) and the
    count of non-2xx or unanswered submissions (counted by reason in ``reasons``).

    A latency runs from the submission's *scheduled* time, not from when it was sent: a
    server (or a load process) that falls behind delays the submissions after it, and that
    delay is counted (no coordinated omission). Requests are written as bytes on asyncio
    streams: a full HTTP client would spend more CPU per request than the server, on the
    cores the server needs."""
    latencies: list[float] = []
    failures = 0
    reasons = reasons if reasons is not None else Counter()
    parsed = urlsplit(url)
    connections = _Connections(parsed.hostname or "127.0.0.1", parsed.port or 80)
    head = (
        "POST /forms/demo-webform HTTP/1.1\r\n"
        f"Host: {parsed.netloc}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Leadrelay-Secret: {secret}\r\n"
    )

    async def one(n: int, due: float) -> None:
        nonlocal failures
        email = _email(n)
        body = json.dumps(
            {
                "email": email,
                "first_name": "Bench",
                "last_name": f"L{n}",
                "company": f"Load {n % 50}",
                "page_url": f"https://www.example.org/demo?utm_source=bench&utm_campaign=c{n % 7}",
            }
        ).encode()
        raw = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        sent[email] = time.monotonic() - (time.perf_counter() - due)
        for attempt in range(2):
            try:
                connection, reused = await connections.take(fresh=attempt > 0)
            except OSError as exc:
                failures += 1
                reasons[type(exc).__name__] += 1
                return
            try:
                status = await asyncio.wait_for(_exchange(*connection, raw), 30)
            except (
                OSError,
                ValueError,
                IndexError,
                asyncio.IncompleteReadError,
                TimeoutError,
            ) as exc:
                connection[1].close()
                if reused:
                    continue  # closed by the server while idle: again, on a new connection
                failures += 1
                reasons[type(exc).__name__] += 1
                return
            connections.give_back(connection)
            latencies.append(time.perf_counter() - due)
            if status // 100 != 2:
                failures += 1
                reasons[f"HTTP {status}"] += 1
            return
        failures += 1
        reasons["closed twice"] += 1

    tasks: list[asyncio.Task[None]] = []
    # The shared wall-clock start, as this process's perf_counter.
    start = time.perf_counter() + max(0.0, (start_at or time.time()) - time.time())
    total = int(rate * seconds)
    try:
        for n in range(part, total, parts):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
    finally:
        connections.close()
    return latencies, failures


def _poll(
    sandbox: SandboxServer, expected: list[str], seen: dict[str, float], stop: threading.Event
) -> None:
    """Watch the sandbox HubSpot's contact store (in this process, so no API budget is spent)
    until every expected email is there (or ``stop``)."""
    emulator: Any = sandbox.sandbox.emulators["hubspot"]
    waiting = list(expected)
    while waiting and not stop.is_set():
        with emulator.lock:
            found = [email for email in waiting if email in emulator.store.by_email]
        now = time.monotonic()
        for email in found:
            seen[email] = now
        if found:
            waiting = [email for email in waiting if email not in seen]
        time.sleep(0.05)


def run(
    rate: float,
    seconds: float,
    settle_s: float,
    processes: int,
    http_workers: int,
    state_server: str | None = None,
) -> None:
    """One load run; prints its figures."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp,
        _state_schema(state_server) as state_url,
    ):
        folder = Path(tmp)
        with SandboxServer(ca_dir=folder / ".sandbox") as sandbox:
            write_sandbox_project(folder, sandbox.env())
            config_path = folder / "leadrelay.toml"
            if state_url is not None:
                _point_state_at(config_path, state_url)
            secret = read_env_file(folder / ".env")["FORM_DEMO_WEBFORM_SECRET"]
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            child = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(config_path), str(port), str(http_workers)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                _wait_healthy(url, child)
                sent: dict[str, float] = {}
                seen: dict[str, float] = {}
                stop = threading.Event()
                expected = [_email(n) for n in range(int(rate * seconds))]
                poller = threading.Thread(
                    target=_poll, args=(sandbox, expected, seen, stop), daemon=True
                )
                poller.start()
                server_process = psutil.Process(child.pid)
                latencies, reasons, load_cpu = [], Counter[str](), 0.0
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(processes, mp_context=context) as pool:
                    # Start the load processes (and their imports) before the clock does.
                    for warm in [pool.submit(_warm_up) for _ in range(processes)]:
                        warm.result()
                    start_at = time.time() + 1.0
                    time.sleep(max(0.0, start_at - time.time() - 0.2))
                    server_cpu = _cpu(server_process)
                    own_cpu = time.process_time()
                    started = time.perf_counter() + max(0.0, start_at - time.time())
                    futures = [
                        pool.submit(
                            _load_process, url, secret, rate, seconds, part, processes, start_at
                        )
                        for part in range(processes)
                    ]
                    for future in futures:
                        part_latencies, part_reasons, part_sent, part_cpu = future.result()
                        latencies += part_latencies
                        reasons += part_reasons
                        sent.update(part_sent)
                        load_cpu += part_cpu
                elapsed = time.perf_counter() - started
                server_cpu = _cpu(server_process) - server_cpu
                own_cpu = time.process_time() - own_cpu
                poller.join(timeout=settle_s)
                if poller.is_alive():
                    stop.set()
                    poller.join(timeout=30)
                    print(f"  (gave up waiting for records after {settle_s:.0f} s)")
            finally:
                child.terminate()
                child.wait(timeout=30)
        delays = [seen[email] - sent[email] for email in seen if email in sent]
        ms = [value * 1000 for value in latencies]
        print(
            f"  submissions: {len(latencies)} in {elapsed:.1f} s ({len(latencies) / elapsed:.0f}/s)"
        )
        why = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        print(f"  non-2xx or no answer: {reasons.total()}" + (f" ({why})" if why else ""))
        print(
            f"  CPU during the load: serve (capture + delivery) {server_cpu / elapsed:.0%} of a "
            f"core ({server_cpu / max(1, len(latencies)) * 1000:.2f} ms per submission), "
            f"load processes {load_cpu / elapsed:.0%}, sandbox {own_cpu / elapsed:.0%}, "
            f"on {os.cpu_count()} core(s)"
        )
        print(
            f"  time to 2xx: p50 {_percentile(ms, 50):.1f} ms, p99 {_percentile(ms, 99):.1f} ms,"
            f" mean {statistics.fmean(ms):.1f} ms (target p99 <= 20 ms)"
        )
        print(
            f"  submission -> record in HubSpot: {len(delays)}/{len(sent)} seen, "
            f"p50 {_percentile(delays, 50):.2f} s, p95 {_percentile(delays, 95):.2f} s, "
            f"max {max(delays, default=float('nan')):.2f} s (target p95 <= 2 s)"
        )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="bench_capture")
    parser.add_argument("--rate", type=float, default=200.0, help="submissions per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send")
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument("--http-workers", type=int, default=1, help="serve's HTTP worker processes")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="longest wait for the last records (s)"
    )
    parser.add_argument(
        "--state",
        metavar="POSTGRESQL_URL",
        help="keep serve's state on this PostgreSQL server (a schema of its own) instead of SQLite",
    )
    args = parser.parse_args()
    run(args.rate, args.seconds, args.settle, args.processes, args.http_workers, args.state)


if __name__ == "__main__":
    main()
