"""Flows run on their ``schedule`` (five-field cron) inside ``leadrelay serve``.

A flow with ``schedule = "*/5 * * * *"`` runs, in a ``serve`` process, in every minute its
expression matches — read like cron does, in ``[schedule] timezone`` (UTC by default), never
the host's local time, so every host reads a schedule the same way. Each due flow runs on its
own through :func:`~leadrelay.sync.runner.run_flows` (its own lock and its own recorded run, so
``leadrelay runs list`` shows it) without draining the capture inbox, which ``serve``'s delivery
worker does. A flow whose lock is held (a ``leadrelay sync`` from cron, a run still going) is
skipped for that minute; a failing run is logged and the schedule goes on. A run that outlasts
the next matching minute makes the scheduler skip the minutes it missed rather than run the
flow twice in a row.

:class:`ScheduleProcess` runs :class:`Scheduler` in a child process of ``serve``, next to the
delivery worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leadrelay.childproc import SPAWN, ServeChild, child_logging
from leadrelay.sync.runner import FlowLocked, FlowSetupError, RunOutcome, run_flows

if TYPE_CHECKING:
    from leadrelay.config import Config, FlowConfig
    from leadrelay.sync.state import StateStore

__all__ = [
    "ScheduleProcess",
    "ScheduledRun",
    "Scheduler",
    "describe_outcome",
    "due_flows",
    "next_fire",
    "schedule_lines",
    "scheduled_flows",
]

log = logging.getLogger("leadrelay.schedule")

#: Runs one flow; :func:`run_flows` with the inbox left to the delivery worker.
FlowRunner = Callable[["Config", "StateStore", "Sequence[FlowConfig]"], RunOutcome]


def _run_one(config: Config, store: StateStore, flows: Sequence[FlowConfig]) -> RunOutcome:
    return run_flows(config, store, flows, drain_inbox=False)


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def scheduled_flows(config: Config) -> list[FlowConfig]:
    """The flows that have a ``schedule``."""
    return [flow for flow in config.flows if flow.schedule]


def due_flows(config: Config, moment: datetime) -> list[FlowConfig]:
    """The flows whose schedule matches the minute of ``moment``."""
    due = []
    for flow in scheduled_flows(config):
        cron = flow.cron
        if cron is not None and cron.matches(moment):
            due.append(flow)
    return due


def next_fire(config: Config, moment: datetime) -> datetime | None:
    """The first minute strictly after ``moment`` in which some flow is due, or None."""
    times = []
    for flow in scheduled_flows(config):
        cron = flow.cron
        following = cron.next_after(moment) if cron is not None else None
        if following is not None:
            times.append(following)
    return min(times) if times else None


@dataclass(frozen=True)
class ScheduledRun:
    """What the scheduler did with one due flow in one minute.

    ``status`` is ``ok``, ``partial`` (some records dead-lettered), ``failed`` or ``skipped``
    (the flow's lock was held); ``detail`` says why, or gives the counts.
    """

    flow: str
    at: datetime
    status: str
    detail: str
    run_id: int | None = None


def describe_outcome(outcome: RunOutcome) -> tuple[str, str]:
    errors = [f"{s.name}: {s.error}" for s in outcome.results if s.error]
    if outcome.fatal is not None or errors:
        return "failed", "; ".join(errors) or str(outcome.fatal)
    counts = ", ".join(
        f"{s.name}: read {s.read}, created {s.created}, updated {s.updated}, "
        f"dead-lettered {s.dead_lettered}"
        for s in outcome.results
    )
    return ("partial" if any(s.dead_lettered for s in outcome.results) else "ok"), counts


class Scheduler:
    """Runs the flows due in each minute (see the module docstring).

    Args:
        config: the project; its ``[[flows]]`` with a ``schedule`` are run.
        store: the state store runs and locks are kept in.
        runner: how one flow runs (tests give a recording one).
    """

    def __init__(self, config: Config, store: StateStore, *, runner: FlowRunner = _run_one) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self._last: dict[str, datetime] = {}

    def tick(self, moment: datetime) -> list[ScheduledRun]:
        """Run every flow due in the minute of ``moment`` (read in ``[schedule] timezone``) that
        has not run in that minute."""
        minute = _minute(moment.astimezone(self.config.schedule.zone))
        runs: list[ScheduledRun] = []
        for flow in due_flows(self.config, minute):
            if self._last.get(flow.name) == minute:
                continue
            self._last[flow.name] = minute
            runs.append(self._run(flow, minute))
        return runs

    def _run(self, flow: FlowConfig, minute: datetime) -> ScheduledRun:
        try:
            outcome = self.runner(self.config, self.store, [flow])
        except FlowLocked as exc:
            done = ScheduledRun(flow.name, minute, "skipped", str(exc))
            log.warning("flow %s skipped: %s", flow.name, exc)
            return done
        except FlowSetupError as exc:
            done = ScheduledRun(flow.name, minute, "failed", str(exc))
        except Exception as exc:  # one failing run must not end the schedule
            done = ScheduledRun(flow.name, minute, "failed", f"{type(exc).__name__}: {exc}")
        else:
            status, detail = describe_outcome(outcome)
            done = ScheduledRun(flow.name, minute, status, detail, outcome.run_id)
        level = logging.INFO if done.status == "ok" else logging.ERROR
        log.log(level, "flow %s %s: %s", flow.name, done.status, done.detail)
        return done

    def run(
        self,
        stop: Any,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Tick at each minute some flow is due in until ``stop`` (an Event) is set.

        ``clock`` gives the current time (default: now in ``[schedule] timezone``); the wait is
        ``stop.wait`` so that setting ``stop`` ends it at once.
        """
        zone = self.config.schedule.zone
        now = clock or (lambda: datetime.now(zone))
        while not stop.is_set():
            current = now().astimezone(zone)
            fire = next_fire(self.config, current)
            if fire is None:
                log.warning("no flow's schedule ever fires; the scheduler stops")
                return
            if stop.wait(max((fire - current).total_seconds(), 0.0)):
                return
            # A wait can end a little early: tick the minute that was due, not the one before.
            self.tick(max(now(), fire))


def _schedule_process_main(config_path: str, stop: Any) -> None:
    """The body of :class:`ScheduleProcess`'s child: the scheduler on the project."""
    from leadrelay.config import load_config
    from leadrelay.sync.state import open_state

    child_logging(log, "schedule")
    config = load_config(config_path)
    store = open_state(config)
    try:
        Scheduler(config, store).run(stop)
    finally:
        store.close()


class ScheduleProcess(ServeChild):
    """:class:`Scheduler` in a child process of ``leadrelay serve``; :meth:`stop` waits for the
    run in progress (60 s by default), then makes sure the child is gone."""

    def __init__(self, config_path: Path) -> None:
        stop = SPAWN.Event()
        super().__init__(
            "leadrelay-schedule",
            _schedule_process_main,
            (str(config_path), stop),
            stop,
            stop_timeout_s=60.0,
        )


def schedule_lines(config: Config, moment: datetime) -> list[str]:
    """One line per scheduled flow: its expression and its next run after ``moment``."""
    lines = []
    for flow in scheduled_flows(config):
        cron = flow.cron
        following = cron.next_after(moment) if cron is not None else None
        when = following.strftime("%Y-%m-%d %H:%M %Z").strip() if following else "never"
        lines.append(
            f"flow {flow.name} ({flow.source} → {flow.destination}) every "
            f"{flow.schedule!r}: next run {when}"
        )
    return lines
