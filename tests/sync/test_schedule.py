"""Flows on their cron schedules inside ``leadrelay serve`` (leadrelay/sync/schedule.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leadrelay.config import Config, FlowConfig, load_config
from leadrelay.sync.runner import FlowLocked, RunOutcome, run_flows
from leadrelay.sync.schedule import (
    ScheduleProcess,
    Scheduler,
    due_flows,
    next_fire,
    schedule_lines,
)
from leadrelay.sync.state import RunStatus, StateStore
from tests.sync.fake_crm import FakeSystem, _FakeConnector, fake_project

TOML = """\
[state]
url = "sqlite:///state.db"

[connections.hs]
kind = "fakehub"

[connections.sf]
kind = "fakecrm"

[[flows]]
name = "every-5"
source = "hs"
destination = "sf"
schedule = "*/5 * * * *"

[[flows]]
name = "hourly"
source = "sf"
destination = "hs"
schedule = "@hourly"

[[flows]]
name = "on-demand"
source = "hs"
destination = "sf"
"""

MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    with fake_project(tmp_path, monkeypatch, TOML) as path:
        yield load_config(path)


@pytest.fixture
def store(config: Config) -> Iterator[StateStore]:
    with StateStore(config.state.url) as opened:
        yield opened


class Recorder:
    """A flow runner that records what it was asked to run and can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.raises: dict[str, Exception] = {}

    def __call__(
        self, config: Config, store: StateStore, flows: Sequence[FlowConfig]
    ) -> RunOutcome:
        names = [flow.name for flow in flows]
        self.calls.append(names)
        for name in names:
            if name in self.raises:
                raise self.raises[name]
        return RunOutcome()


@pytest.mark.parametrize(
    ("moment", "due"),
    [
        (MONDAY_10, ["every-5", "hourly"]),
        (MONDAY_10 + timedelta(minutes=5, seconds=42), ["every-5"]),
        (MONDAY_10 + timedelta(minutes=7), []),
    ],
)
def test_due_flows_are_those_whose_schedule_matches_the_minute(
    config: Config, moment: datetime, due: list[str]
) -> None:
    assert [flow.name for flow in due_flows(config, moment)] == due


def test_next_fire_is_the_earliest_schedule(config: Config) -> None:
    assert next_fire(config, MONDAY_10 + timedelta(minutes=1)) == MONDAY_10 + timedelta(minutes=5)


def test_schedule_lines_name_each_scheduled_flow_and_its_next_run(config: Config) -> None:
    lines = schedule_lines(config, MONDAY_10)
    assert len(lines) == 2
    assert lines[0].startswith(
        "flow every-5 (hs → sf) every '*/5 * * * *': next run 2026-11-23 10:05"
    )
    assert "flow hourly (sf → hs)" in lines[1] and "11:00" in lines[1]


def test_a_tick_runs_each_due_flow_once_per_minute(config: Config, store: StateStore) -> None:
    runner = Recorder()
    scheduler = Scheduler(config, store, runner=runner)
    first = scheduler.tick(MONDAY_10 + timedelta(seconds=1))
    again = scheduler.tick(MONDAY_10 + timedelta(seconds=40))
    assert runner.calls == [["every-5"], ["hourly"]]
    assert [(r.flow, r.status) for r in first] == [("every-5", "ok"), ("hourly", "ok")]
    assert again == []


def test_a_locked_flow_is_skipped_and_a_failing_one_does_not_stop_the_others(
    config: Config, store: StateStore
) -> None:
    runner = Recorder()
    runner.raises = {
        "every-5": FlowLocked("another sync is running: pid 4242"),
        "hourly": RuntimeError("disk full"),
    }
    runs = Scheduler(config, store, runner=runner).tick(MONDAY_10)
    assert [(r.flow, r.status, r.detail) for r in runs] == [
        ("every-5", "skipped", "another sync is running: pid 4242"),
        ("hourly", "failed", "RuntimeError: disk full"),
    ]


def test_a_scheduled_run_syncs_and_is_recorded_without_draining_the_inbox(
    config: Config, store: StateStore
) -> None:
    hub: FakeSystem = _FakeConnector.systems["hs"]
    hub.put({"email": "ana@acme.io", "lastname": "Silva", "company": "Acme"})
    [done] = Scheduler(config, store).tick(MONDAY_10 + timedelta(minutes=5))
    assert (done.flow, done.status) == ("every-5", "ok")
    assert done.run_id is not None
    run = store.get_run(done.run_id)
    assert run.status is RunStatus.OK
    assert [flow["name"] for flow in run.stats["flows"]] == ["every-5"]
    assert _FakeConnector.systems["sf"].by_email("ana@acme.io")


def test_a_flow_locked_by_a_running_sync_is_skipped(config: Config, store: StateStore) -> None:
    lock = store.lock("sync:every-5", ttl_s=300)
    assert lock.acquire()
    try:
        [done] = Scheduler(config, store).tick(MONDAY_10 + timedelta(minutes=5))
    finally:
        lock.release()
    assert done.status == "skipped" and "another sync is running" in done.detail


class StopAfter:
    """A stop event whose waits return at once; it is set after ``waits`` waits."""

    def __init__(self, waits: int) -> None:
        self.left = waits
        self.waited: list[float] = []

    def is_set(self) -> bool:
        return self.left <= 0

    def wait(self, seconds: float) -> bool:
        self.waited.append(seconds)
        self.left -= 1
        return self.left <= 0


def test_run_waits_for_each_fire_time_and_ticks_it(config: Config, store: StateStore) -> None:
    runner = Recorder()
    times = iter(
        [
            MONDAY_10 + timedelta(minutes=3, seconds=30),  # before the first wait
            MONDAY_10 + timedelta(minutes=4, seconds=59.5),  # woke up a little early
            MONDAY_10 + timedelta(minutes=6),  # before the second wait
        ]
    )
    stop = StopAfter(2)
    Scheduler(config, store, runner=runner).run(stop, clock=lambda: next(times))
    assert stop.waited == [90.0, 240.0]
    assert runner.calls == [["every-5"]]


def test_the_schedule_process_starts_and_stops(config: Config) -> None:
    process = ScheduleProcess(config.path)
    process.start()
    try:
        deadline = time.monotonic() + 30
        while not process.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.alive
    finally:
        process.stop(timeout=30)
    assert not process.alive


def test_run_flows_can_leave_the_inbox_alone(config: Config, store: StateStore) -> None:
    outcome = run_flows(config, store, [config.flow("on-demand")], drain_inbox=False)
    assert [s.name for s in outcome.results] == ["on-demand"]
    assert outcome.ok
