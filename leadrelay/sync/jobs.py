"""Work as a job queue in PostgreSQL: ``leadrelay worker`` processes on any number of hosts.

Built on procrastinate (a PostgreSQL-native task queue; ``pip install 'leadrelay[postgres]'``).
With a PostgreSQL ``[state] url`` every worker:

- defers each scheduled flow once per fire time of its ``schedule``, read in
  ``[schedule] timezone``: every worker tries, the database keeps one (procrastinate's periodic
  defers are unique per task, flow and time), so a flow runs exactly once across all hosts;
- defers an inbox delivery job every ``[worker] delivery_every_s`` seconds the same way;
- takes jobs with ``SELECT … FOR UPDATE SKIP LOCKED`` (procrastinate's fetch), one flow's jobs
  never at once (a job lock per flow) and at most one of them waiting (a queueing lock);
- heartbeats every third of ``[state] lease_s``; a worker that missed its heartbeats for a lease
  is stalled, and the others put its jobs back in the queue (:func:`retry_stalled_jobs`), while
  its inbox claims and sync locks lapse on their own leases.

SQLite stays the one-machine default: ``leadrelay serve`` runs its own delivery loop and
scheduler there, and ``leadrelay worker`` refuses it.

API calls of every worker draw from one rate budget per CRM account in the database
(:class:`~leadrelay.connectors.policy.RateBudget`). A flow whose read yields more than
``[worker] split_pages`` pages is split into part jobs (:data:`PART_TASK`) that every worker
takes (:mod:`leadrelay.sync.parts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leadrelay.childproc import SPAWN, ServeChild, child_logging

if TYPE_CHECKING:
    import procrastinate
    import procrastinate.periodic

    from leadrelay.config import Config
    from leadrelay.sync.state import StateStore

__all__ = [
    "DELIVER_TASK",
    "FLOW_TASK",
    "PART_TASK",
    "DeliveryNudge",
    "QueueError",
    "WorkerProcess",
    "conninfo",
    "ensure_queue_schema",
    "make_app",
    "retry_stalled_jobs",
    "run_worker",
    "worker_logging",
]

log = logging.getLogger("leadrelay.worker")

#: Task names, as stored in ``procrastinate_jobs.task_name``.
FLOW_TASK = "leadrelay.run_flow"
DELIVER_TASK = "leadrelay.deliver_inbox"
PART_TASK = "leadrelay.run_flow_part"

#: How often an idle worker looks for jobs besides being woken by LISTEN/NOTIFY. With
#: procrastinate's 5 s default, deliveries were measured to start seconds after their tick
#: (bench_workers, 1 worker: 14.8 -> 44.5 leads/s with 1 s). One way a wake-up is lost:
#: procrastinate clears its wake-up event after every fetch, so a job queued during a fetch that
#: found nothing waits for the next poll. One cheap query a second per idle worker.
_POLL_S = 1.0

#: Key of the advisory lock under which the first worker creates procrastinate's tables.
_SCHEMA_LOCK = 0x6C656164  # "lead"


class QueueError(Exception):
    """The job queue cannot run: SQLite state, procrastinate missing, a schema problem."""


def conninfo(url: str) -> str:
    """The libpq URL of a ``[state] url`` (its SQLAlchemy driver suffix dropped)."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise QueueError(
            f"the job queue needs PostgreSQL; [state] url is {backend} "
            "(on one machine, `leadrelay serve` delivers and runs schedules itself)"
        )
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _require_procrastinate() -> None:
    try:
        import procrastinate  # noqa: F401
    except ImportError as exc:  # the extra is missing
        raise QueueError(
            "the job queue needs procrastinate: pip install 'leadrelay[postgres]'"
        ) from exc


def _zoned_periodic(zone: Any) -> type[procrastinate.periodic.PeriodicTask[Any, Any, Any]]:
    """procrastinate's periodic task reading its cron in ``zone`` rather than UTC."""
    import croniter
    from procrastinate.periodic import PeriodicTask

    class ZonedPeriodicTask(PeriodicTask[Any, Any, Any]):
        @property
        def croniter(self) -> croniter.croniter:
            # A zone-aware start makes croniter compute every later fire time in that zone.
            return croniter.croniter(self.cron, datetime.now(zone))

    return ZonedPeriodicTask


def make_app(config: Config) -> procrastinate.App:
    """A procrastinate app on the project's database with leadrelay's tasks: one periodic
    flow job per scheduled flow and the periodic inbox delivery."""
    _require_procrastinate()
    from procrastinate import App, PsycopgConnector

    from leadrelay.sync.schedule import scheduled_flows

    connector = PsycopgConnector(
        conninfo=conninfo(config.state.url),
        min_size=1,
        max_size=config.worker.concurrency + 3,
    )
    app = App(connector=connector)
    flow_task = app.task(name=FLOW_TASK, pass_context=True)(_flow_job)
    deliver_task = app.task(name=DELIVER_TASK, pass_context=True)(_deliver_job)
    # No job lock: the parts of one flow run at once on several workers (their own claims
    # keep one person to one part at a time).
    app.task(name=PART_TASK, pass_context=True)(_part_job)
    zoned = _zoned_periodic(config.schedule.zone)
    registry = app.periodic_registry.periodic_tasks
    for flow in scheduled_flows(config):
        assert flow.schedule is not None
        registry[(FLOW_TASK, flow.name)] = zoned(
            task=flow_task,
            cron=flow.schedule,
            periodic_id=flow.name,
            configure_kwargs={
                "task_kwargs": {"flow": flow.name},
                "lock": f"flow:{flow.name}",
                "queueing_lock": f"flow:{flow.name}",
            },
        )
    every = config.worker.delivery_every_s  # divides a minute or is whole minutes (config)
    # croniter's sixth field is seconds.
    seconds = f"*/{every}" if every < 60 else "0"
    minutes = "*" if every < 60 else f"*/{every // 60}"
    app.periodic_registry.register_task(
        task=deliver_task,
        cron=f"{minutes} * * * * {seconds}",
        periodic_id="inbox",
        configure_kwargs={"queueing_lock": "deliver"},
    )
    return app


def _context(job_context: Any) -> tuple[Config, StateStore]:
    extra = job_context.additional_context
    return extra["config"], extra["store"]


def _flow_job(job_context: Any, flow: str, timestamp: int | None = None) -> str:
    """Run one flow (its own lock and recorded run). A flow another sync holds is waited for
    up to one lease and a second: a job put back in the queue after its worker died finds the
    dead worker's lock until that lock's lease runs out, and must then run (and mark the dead
    run aborted), not be skipped. A flow still held after that (a live run) is skipped."""
    from leadrelay.sync.runner import FlowLocked, run_flows
    from leadrelay.sync.schedule import describe_outcome

    config, store = _context(job_context)
    app = job_context.app

    def defer_part(name: str, run_id: int, phase: str, part: int) -> None:
        app.configure_task(PART_TASK).defer(flow=name, run_id=run_id, phase=phase, part=part)

    give_up = time.monotonic() + config.state.lease_s + 1.0
    while True:
        try:
            outcome = run_flows(
                config, store, [config.flow(flow)], drain_inbox=False, defer_part=defer_part
            )
            break
        except FlowLocked as exc:
            if time.monotonic() >= give_up:
                log.warning("flow %s skipped: %s", flow, exc)
                return "skipped"
            time.sleep(0.5)
    status, detail = describe_outcome(outcome)
    level = logging.INFO if status == "ok" else logging.ERROR
    log.log(level, "flow %s %s (run %s): %s", flow, status, outcome.run_id, detail)
    return status


def _part_job(job_context: Any, flow: str, run_id: int, phase: str, part: int) -> str:
    """Write one part of a split flow's run: ``part``, or, when another worker took it
    already, the first part of the run that can run. "none" when no part was left."""
    from leadrelay.sync.engine import ConnectorPool, SyncContext
    from leadrelay.sync.parts import run_part

    config, store = _context(job_context)
    with ConnectorPool(config, store=store) as pool:
        context = SyncContext(config, store, pool, run_id=run_id)
        lease_s = config.state.lease_s
        flow_config = config.flow(flow)
        if run_part(context, flow_config, run_id, phase, part=part, lease_s=lease_s):
            return "written"
        if run_part(context, flow_config, run_id, phase, lease_s=lease_s):
            return "written"
    return "none"


def _deliver_job(job_context: Any, timestamp: int | None = None) -> int:
    """Deliver the inbox until nothing is left to claim; returns how many leads it claimed."""
    from leadrelay.capture.worker import RECHECK_EVERY_S, drain_inbox

    config, store = _context(job_context)
    stats = drain_inbox(config, store, recheck_every_s=RECHECK_EVERY_S)
    if stats.claimed:
        log.info("delivered %d lead(s), %d pending", stats.delivered, stats.pending)
    return stats.claimed


def ensure_queue_schema(config: Config) -> bool:
    """Create procrastinate's tables in the state store's database (and schema) unless they
    exist; True when it created them. Workers starting at once create them once."""
    import psycopg

    _require_procrastinate()
    from procrastinate.schema import SchemaManager

    schema_sql = SchemaManager.get_schema()
    with psycopg.connect(conninfo(config.state.url)) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        row = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if row is not None and row[0] is not None:
            return False
        conn.execute(schema_sql)
    return True


async def retry_stalled_jobs(app: procrastinate.App, *, lease_s: float) -> list[int]:
    """Put back in the queue the jobs of workers that missed their heartbeats for ``lease_s``
    (killed, host lost); returns their ids. Several workers may race: one wins per job."""
    from procrastinate import exceptions

    retried = []
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=lease_s):
        try:
            await app.job_manager.retry_job(job)
        except exceptions.ProcrastinateException:
            continue  # another worker retried it first, or it ended meanwhile
        assert job.id is not None
        retried.append(job.id)
        log.warning("job %s (%s) of a stalled worker put back in the queue", job.id, job.task_name)
    return retried


async def _reaper(app: procrastinate.App, lease_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await retry_stalled_jobs(app, lease_s=lease_s)
        except Exception as exc:  # the database briefly away: try again next beat
            log.warning("looking for stalled jobs failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=lease_s / 3)


def worker_logging() -> None:
    """Log leadrelay's INFO lines and procrastinate's warnings to stderr, secrets redacted."""
    from leadrelay.connectors.errors import RedactingFilter

    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    for name, level in (("leadrelay", logging.INFO), ("procrastinate", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)


def run_worker(
    config: Config,
    *,
    name: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run one worker until SIGINT / SIGTERM (the job in progress finishes first)."""
    from leadrelay.sync.state import open_state

    app = make_app(config)
    ensure_queue_schema(config)
    lease_s = config.state.lease_s
    worker_name = name or f"{socket.gethostname()}:{os.getpid()}"
    store = open_state(config)

    async def main() -> None:
        stop = asyncio.Event()
        async with app.open_async():
            reaper = asyncio.create_task(_reaper(app, lease_s, stop))
            if on_ready is not None:
                on_ready()
            try:
                await app.run_worker_async(
                    name=worker_name,
                    concurrency=config.worker.concurrency,
                    additional_context={"config": config, "store": store},
                    update_heartbeat_interval=lease_s / 3,
                    stalled_worker_timeout=lease_s,
                    delete_jobs="successful",
                    fetch_job_polling_interval=_POLL_S,
                )
            finally:
                stop.set()
                await reaper

    try:
        asyncio.run(main())
    finally:
        store.close()


def _worker_process_main(config_path: str, name: str, stop: Any) -> None:
    """The body of :class:`WorkerProcess`'s child: one queue worker on the project."""
    from leadrelay.config import load_config

    child_logging(log, name)
    run_worker(load_config(config_path), name=f"{socket.gethostname()}:{os.getpid()}:{name}")


class WorkerProcess(ServeChild):
    """A queue worker in a child process of ``leadrelay serve --workers N`` (PostgreSQL).

    It ends with ``serve``, even a killed one (:mod:`leadrelay.childproc`); :meth:`stop` asks
    it to finish the job in progress (SIGTERM, procrastinate's graceful stop), waits up to
    60 s, then makes sure it is gone.
    """

    def __init__(self, config_path: Path, name: str) -> None:
        stop = SPAWN.Event()
        super().__init__(
            f"leadrelay-{name}",
            _worker_process_main,
            (str(config_path), name, stop),
            stop,
            stop_timeout_s=60.0,
        )

    def _request_stop(self) -> None:
        super()._request_stop()
        process = self._process
        if process is not None and process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)


class DeliveryNudge:
    """Queues an inbox delivery job soon after the capture service stored leads, so they do
    not wait for the next ``[worker] delivery_every_s`` tick.

    :meth:`__call__` is cheap and thread-safe (the capture app's ``on_stored``); a thread queues
    at most one job every ``min_gap_s`` (none while one already waits: its queueing lock).
    """

    def __init__(self, config: Config, *, min_gap_s: float = 0.5) -> None:
        _require_procrastinate()
        from procrastinate import App, SyncPsycopgConnector

        self.app = App(
            connector=SyncPsycopgConnector(
                conninfo=conninfo(config.state.url), min_size=1, max_size=2
            )
        )
        self.min_gap_s = min_gap_s
        self.queued = 0
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self) -> None:
        self._wanted.set()

    def _queue(self) -> None:
        from procrastinate import exceptions

        try:
            self.app.configure_task(DELIVER_TASK, queueing_lock="deliver").defer()
        except exceptions.AlreadyEnqueued:
            return
        except Exception as exc:  # the periodic delivery still comes
            log.warning("queueing a delivery failed: %s", exc)
            return
        self.queued += 1

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stop.is_set():
                return
            self._wanted.clear()
            self._queue()
            if self._stop.wait(self.min_gap_s):
                return

    def __enter__(self) -> DeliveryNudge:
        self.app.open()
        self._thread = threading.Thread(target=self._run, name="leadrelay-nudge", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(10)
        self.app.close()
