"""Running flows: what ``leadrelay sync`` and the scheduler inside ``leadrelay serve`` share.

:func:`run_flows` holds every selected flow's sync lock (:func:`hold_locks`; a held lock is
:class:`FlowLocked`, the CLI's exit 3), records one run in the state store, optionally drains
the capture inbox first, runs each flow's :class:`~leadrelay.sync.engine.SyncEngine` and
finishes the run with its status. A flow whose mapping or connector kind is wrong is
:class:`FlowSetupError` (exit 2); a connector error ends that flow only, an authentication
error or a lost lock ends the run (:attr:`RunOutcome.fatal`). A stop asked for (``stop``, e.g.
on SIGINT / SIGTERM) ends the run at the next page boundary, after that page was committed:
the run is recorded as interrupted (status ``aborted``, ``stats["interrupted"]`` names why) and
the next run goes on from the committed cursors.

Given ``defer_part`` (a worker's flow job on PostgreSQL), a flow whose read yields more than
``[worker] split_pages`` pages is split into part jobs (:mod:`leadrelay.sync.parts`); its counts
are the sum of its parts', and a failed part fails the flow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from leadrelay.sync.lease import Lease

if TYPE_CHECKING:
    from leadrelay.config import Config, FlowConfig
    from leadrelay.sync.engine import FlowStats, PlannedRecord
    from leadrelay.sync.parts import DeferPart, FlowSplitter
    from leadrelay.sync.state import StateStore, StoreLock

__all__ = [
    "FlowLocked",
    "FlowSetupError",
    "Interrupted",
    "LockLost",
    "RunOutcome",
    "check_locks",
    "hold_locks",
    "run_flows",
]

#: Seconds a sync lock lives without a heartbeat when the caller names no ``[state] lease_s``.
DEFAULT_LEASE_S = 30.0
#: At most this many rounds of the selected flows in one run (see :func:`run_flows`).
MAX_ROUNDS = 3


class LockLost(Exception):
    """Another process took the sync lock over while this run held it."""


class FlowLocked(Exception):
    """A flow's sync lock is held by another run; the message names the holder."""


class FlowSetupError(Exception):
    """A flow cannot be set up: its mapping does not load or its connector kind is unknown."""


class Interrupted(Exception):
    """A stop was asked for; raised at a page boundary, after the page was committed."""


@contextmanager
def hold_locks(
    store: StateStore, flows: Sequence[FlowConfig], *, lease_s: float = DEFAULT_LEASE_S
) -> Iterator[list[StoreLock]]:
    """Hold the sync lock of every flow (in name order), or raise :class:`FlowLocked`.

    Each lock lives ``lease_s`` seconds without a heartbeat, and a thread renews them every
    third of that while the block runs: a holder that dies loses them one lease after its last
    heartbeat. :func:`check_locks` tells whether another process took one over meanwhile.
    """
    held: list[StoreLock] = []

    def renew() -> bool:
        renewed = [lock.heartbeat() for lock in held]  # every lock, even after a loss
        return all(renewed)

    try:
        for flow in sorted(flows, key=lambda f: f.name):
            lock = store.lock(f"sync:{flow.name}", ttl_s=max(1, round(lease_s)))
            if not lock.acquire():
                info = store.lock_info(lock.name)
                holder = info.describe() if info else f"lock {lock.name!r} is held"
                raise FlowLocked(f"another sync is running: {holder}")
            held.append(lock)
        with Lease(renew, every_s=lease_s / 3, name="sync locks"):
            yield held
    finally:
        for lock in held:
            lock.release()


def check_locks(held: Sequence[StoreLock]) -> None:
    """Raise :class:`LockLost` when another process took one of the held locks over."""
    lost = [lock.name for lock in held if not lock.held]
    if lost:
        raise LockLost(f"lock {', '.join(lost)} was taken over by another process")


@dataclass
class RunOutcome:
    """What one run did: per-flow stats, the error that ended it early, its id."""

    results: list[FlowStats] = field(default_factory=list)
    fatal: Exception | None = None
    run_id: int | None = None
    #: Why the run stopped early at a page boundary (e.g. ``"SIGINT"``), if it did.
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing failed, nothing was dead-lettered and the run was not interrupted."""
        return (
            self.fatal is None
            and self.interrupted is None
            and not any(s.error or s.dead_lettered for s in self.results)
        )


def _reads(flow: FlowConfig) -> set[str]:
    """The connections a flow reads changes from."""
    return {flow.source, flow.destination} if flow.two_way else {flow.source}


def _merge(by_flow: dict[str, FlowStats], name: str, stats: FlowStats) -> None:
    """One flow's counts over the rounds of a run."""
    if name in by_flow:
        by_flow[name].add(stats)
    else:
        by_flow[name] = stats


def run_flows(
    config: Config,
    store: StateStore,
    flows: Sequence[FlowConfig],
    *,
    dry_run: bool = False,
    full: bool = False,
    drain_inbox: bool = True,
    on_plan: Callable[[PlannedRecord], None] | None = None,
    on_page: Callable[[str, int, int | None], None] | None = None,
    stop: Callable[[], str | None] | None = None,
    defer_part: DeferPart | None = None,
) -> RunOutcome:
    """Run ``flows`` once under their locks (none in a dry run) as one recorded run.

    ``stop`` is asked after every page (and before the inbox and each flow); a reason it
    returns ends the run there (:attr:`RunOutcome.interrupted`). ``defer_part`` queues a part
    job: with it, on PostgreSQL, a large flow is split (:mod:`leadrelay.sync.parts`).

    Raises :class:`FlowLocked` before anything runs when a lock is held, and
    :class:`FlowSetupError` for a flow that cannot be set up (the run is recorded as failed).
    """
    # registers the capture inbox drainer that every sync runs first (inbox_drainers)
    import leadrelay.capture.worker  # noqa: F401
    from leadrelay.connectors.base import ConnectorNotFound
    from leadrelay.connectors.errors import AuthError, ConnectorError
    from leadrelay.mappings.engine import MappingError
    from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine, inbox_drainers
    from leadrelay.sync.parts import PartsFailed

    outcome = RunOutcome()
    with hold_locks(store, [] if dry_run else flows, lease_s=config.state.lease_s) as held:
        if not dry_run:
            store.abort_orphan_runs([f.name for f in flows])
        outcome.run_id = None if dry_run else store.start_run([f.name for f in flows])

        def stop_here() -> None:
            reason = stop() if stop is not None else None
            if reason is not None:
                raise Interrupted(reason)

        def page_done(label: str, count: int, total: int | None) -> None:
            if on_page is not None:
                on_page(label, count, total)
            check_locks(held)
            stop_here()

        crash: BaseException | None = None
        try:
            with ConnectorPool(config, store=store) as pool:
                context = SyncContext(config, store, pool, dry_run=dry_run, run_id=outcome.run_id)
                try:
                    stop_here()
                    if drain_inbox:
                        for drainer in inbox_drainers():
                            drained = drainer(context)
                            if drained is not None:
                                outcome.results.append(drained)
                    by_flow: dict[str, FlowStats] = {}
                    try:
                        pending = list(flows)
                        for _round in range(1 if dry_run else MAX_ROUNDS):
                            wrote: dict[str, set[str]] = {}
                            for flow in pending:
                                stop_here()
                                try:
                                    engine = SyncEngine.for_flow(
                                        context, flow, on_plan=on_plan, on_page=page_done
                                    )
                                except (MappingError, ConnectorNotFound) as exc:
                                    outcome.fatal = exc
                                    raise FlowSetupError(f"flow {flow.name}: {exc}") from exc
                                splitter = _splitter(
                                    config, store, outcome.run_id, flow, defer_part, dry_run
                                )
                                engine.page_sink = splitter
                                try:
                                    try:
                                        stats = engine.run(full=full and _round == 0)
                                    finally:
                                        if splitter is not None:
                                            splitter.close()
                                            engine.stats.add(splitter.totals)
                                except Interrupted:
                                    _merge(by_flow, flow.name, engine.stats)
                                    raise
                                except (AuthError, LockLost) as exc:
                                    engine.stats.error = str(exc)
                                    outcome.fatal = exc
                                    stats = engine.stats
                                except (ConnectorError, PartsFailed) as exc:
                                    engine.stats.error = str(exc)
                                    stats = engine.stats
                                _merge(by_flow, flow.name, stats)
                                if (
                                    stats.created
                                    or stats.updated
                                    or stats.written_back
                                    or stats.propagated
                                ):
                                    wrote[flow.name] = {flow.source, flow.destination}
                                if outcome.fatal is not None:
                                    break
                            if outcome.fatal is not None:
                                break
                            # One run ends at a fixed point (DESIGN §7.4): a flow reading a
                            # connection that another flow wrote into runs again, so what one CRM
                            # wrote back to a shared source reaches the other CRM in this run.
                            pending = [
                                flow
                                for flow in flows
                                if not by_flow[flow.name].error
                                and any(
                                    _reads(flow) & written
                                    for other, written in wrote.items()
                                    if other != flow.name
                                )
                            ]
                            if not pending:
                                break
                    finally:
                        outcome.results.extend(by_flow.values())
                except Interrupted as exc:
                    outcome.interrupted = str(exc)
                except KeyboardInterrupt:
                    # stopped at once, mid-page: that page's transaction was rolled back
                    outcome.interrupted = "SIGINT"
                    raise
        except BaseException as exc:
            crash = exc
            raise
        finally:
            if outcome.run_id is not None:
                _finish(store, outcome, crash)
    return outcome


def _splitter(
    config: Config,
    store: StateStore,
    run_id: int | None,
    flow: FlowConfig,
    defer_part: DeferPart | None,
    dry_run: bool,
) -> FlowSplitter | None:
    """The splitter of one flow's run, when it may be split: a recorded run on PostgreSQL
    with a queue for its part jobs and ``[worker] split_pages`` set."""
    if (
        defer_part is None
        or dry_run
        or run_id is None
        or store.dialect != "postgresql"
        or config.worker.split_pages <= 0
    ):
        return None
    from leadrelay.sync.parts import FlowSplitter

    return FlowSplitter(
        config,
        store,
        run_id,
        flow,
        defer=defer_part,
        split_pages=config.worker.split_pages,
        lease_s=config.state.lease_s,
    )


def _finish(store: StateStore, outcome: RunOutcome, crash: BaseException | None) -> None:
    """Record how the run ended: interrupted (a stop asked for, Ctrl-C, SIGTERM) runs are
    ``aborted`` and crashed ones (an error no flow handled) ``failed``, with the reason, never
    ``ok``; otherwise failed, partial (dead letters) or ok."""
    from leadrelay.connectors.errors import redact
    from leadrelay.sync.state import RunStatus

    assert outcome.run_id is not None
    stats: dict[str, object] = {"flows": [s.to_stats() for s in outcome.results]}
    if isinstance(crash, KeyboardInterrupt | SystemExit):
        status = RunStatus.ABORTED
        stats["interrupted"] = outcome.interrupted or type(crash).__name__
        stats["error"] = f"interrupted ({type(crash).__name__})"
    elif outcome.interrupted is not None:
        status = RunStatus.ABORTED
        stats["interrupted"] = outcome.interrupted
        stats["error"] = f"interrupted ({outcome.interrupted})"
    elif crash is not None and outcome.fatal is None:
        status = RunStatus.FAILED
        stats["error"] = redact(f"crashed: {type(crash).__name__}: {crash}")
    elif outcome.fatal is not None or any(s.error for s in outcome.results):
        status = RunStatus.FAILED
        if outcome.fatal is not None:
            stats["error"] = redact(str(outcome.fatal))
    elif any(s.dead_lettered for s in outcome.results):
        status = RunStatus.PARTIAL
    else:
        status = RunStatus.OK
    store.finish_run(outcome.run_id, status, stats)
