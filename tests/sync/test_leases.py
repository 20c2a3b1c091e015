"""Short leases renewed by heartbeat, honest run statuses, schedules in a named time zone,
and what the job queue refuses (leadrelay/sync/lease.py, runner.py, schedule.py, jobs.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leadrelay.config import Config, ConfigError, load_config
from leadrelay.sync.engine import SyncEngine
from leadrelay.sync.jobs import QueueError, conninfo
from leadrelay.sync.lease import Lease
from leadrelay.sync.runner import LockLost, check_locks, hold_locks, run_flows
from leadrelay.sync.schedule import Scheduler
from leadrelay.sync.state import RunStatus, StateStore, open_state
from tests.sync.fake_crm import fake_project
from tests.sync.test_schedule import TOML, Recorder

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    text = TOML.replace('url = "sqlite:///state.db"', 'url = "sqlite:///state.db"\nlease_s = 3')
    text += '\n[schedule]\ntimezone = "Asia/Kolkata"\n'
    with fake_project(tmp_path, monkeypatch, text) as path:
        yield load_config(path)


@pytest.fixture
def store(config: Config) -> Iterator[StateStore]:
    with open_state(config) as opened:
        yield opened


# -- Lease -------------------------------------------------------------------------------------


def test_a_lease_renews_until_the_block_ends() -> None:
    beats = threading.Semaphore(0)

    def renew() -> bool:
        beats.release()
        return True

    with Lease(renew, every_s=0.01, name="test") as lease:
        assert beats.acquire(timeout=10) and beats.acquire(timeout=10)
    assert not lease.lost
    assert lease.beats >= 2


def test_a_lease_renewal_refused_marks_it_lost_and_stops() -> None:
    calls: list[int] = []
    refused = threading.Event()

    def renew() -> bool:
        calls.append(1)
        refused.set()
        return False

    with Lease(renew, every_s=0.01, name="test") as lease:
        assert refused.wait(10)
        lease._thread.join(10)  # type: ignore[union-attr]
    assert lease.lost
    assert calls == [1]


def test_a_failing_renewal_is_retried() -> None:
    attempts: list[int] = []
    second = threading.Event()

    def renew() -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database restarting")
        second.set()
        return True

    with Lease(renew, every_s=0.01, name="test") as lease:
        assert second.wait(10)
    assert not lease.lost


# -- sync locks ----------------------------------------------------------------------------------


def test_held_locks_are_heartbeated_while_the_block_runs(config: Config, store: StateStore) -> None:
    with hold_locks(store, [config.flow("every-5")], lease_s=0.3) as held:
        first = store.lock_info("sync:every-5")
        assert first is not None
        deadline = datetime.now(UTC).timestamp() + 10
        while True:
            info = store.lock_info("sync:every-5")
            assert info is not None
            if info.heartbeat_at > first.heartbeat_at:
                break
            assert datetime.now(UTC).timestamp() < deadline, "no heartbeat"
        check_locks(held)
    assert store.lock_info("sync:every-5") is None


def test_a_lock_taken_over_is_reported_at_the_next_check(config: Config, store: StateStore) -> None:
    with hold_locks(store, [config.flow("every-5")], lease_s=30) as held:
        store.release_lock("sync:every-5", held[0].holder)  # as a take-over would
        assert not held[0].heartbeat()
        with pytest.raises(LockLost, match="sync:every-5"):
            check_locks(held)


# -- honest runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "status", "reason"),
    [
        (RuntimeError("disk full"), RunStatus.FAILED, "crashed: RuntimeError: disk full"),
        (KeyboardInterrupt(), RunStatus.ABORTED, "interrupted (KeyboardInterrupt)"),
        (SystemExit(143), RunStatus.ABORTED, "interrupted (SystemExit)"),
    ],
)
def test_a_run_that_crashed_or_was_interrupted_is_not_ok(
    config: Config,
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
    raised: BaseException,
    status: RunStatus,
    reason: str,
) -> None:
    def boom(self: SyncEngine, *, full: bool = False) -> None:
        raise raised

    monkeypatch.setattr(SyncEngine, "run", boom)
    with pytest.raises(type(raised)):
        run_flows(config, store, [config.flow("on-demand")], drain_inbox=False)
    [run] = store.list_runs()
    assert run.status is status
    assert run.stats["error"] == reason


def test_a_run_left_running_by_a_dead_process_is_aborted_by_the_next(
    config: Config, store: StateStore
) -> None:
    dead = store.start_run("on-demand")
    outcome = run_flows(config, store, [config.flow("on-demand")], drain_inbox=False)
    assert outcome.ok
    assert store.get_run(dead).status is RunStatus.ABORTED
    assert outcome.run_id is not None
    assert store.get_run(outcome.run_id).status is RunStatus.OK


# -- schedules in [schedule] timezone ----------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "due"),
    [
        # Kolkata is UTC+05:30: an hour starts there at half past in UTC.
        (datetime(2026, 11, 23, 14, 30, tzinfo=UTC), [["every-5"], ["hourly"]]),
        (datetime(2026, 11, 23, 15, 0, tzinfo=UTC), [["every-5"]]),
    ],
)
def test_a_tick_reads_the_schedule_in_the_configured_zone(
    config: Config, store: StateStore, moment: datetime, due: list[list[str]]
) -> None:
    runner = Recorder()
    runs = Scheduler(config, store, runner=runner).tick(moment)
    assert runner.calls == due
    assert {run.at.utcoffset() for run in runs} == {
        datetime(2026, 11, 23, tzinfo=config.schedule.zone).utcoffset()
    }


def test_an_unknown_time_zone_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "leadrelay.toml"
    path.write_text('[schedule]\ntimezone = "Mars/Olympus"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"schedule\.timezone.*unknown time zone 'Mars/Olympus'"):
        load_config(path)


# -- the job queue -------------------------------------------------------------------------------


def test_the_queue_refuses_sqlite(config: Config) -> None:
    with pytest.raises(QueueError, match="needs PostgreSQL"):
        conninfo(config.state.url)


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgresql", "postgres"])
def test_the_queue_connects_with_the_state_url_of_any_postgres_scheme(scheme: str) -> None:
    url = f"{scheme}://app:s3cret@db.internal:5432/leads?options=-csearch_path%3Dq"
    assert (
        conninfo(url) == "postgresql://app:s3cret@db.internal:5432/leads?options=-csearch_path%3Dq"
    )


@pytest.mark.parametrize(
    ("every", "valid"), [(1, True), (15, True), (7, False), (120, True), (90, False)]
)
def test_the_delivery_interval_divides_a_minute_or_is_whole_minutes(
    tmp_path: Path, every: int, valid: bool
) -> None:
    path = tmp_path / "leadrelay.toml"
    path.write_text(f"[worker]\ndelivery_every_s = {every}\n", encoding="utf-8")
    if valid:
        assert load_config(path).worker.delivery_every_s == every
    else:
        with pytest.raises(
            ConfigError, match=f"worker.delivery_every_s: {every} s does not divide"
        ):
            load_config(path)
