"""The bookkeeping of a flow split into part jobs (``flow_parts``, ``flow_part_claims``).

Store-level: parts stored in read order, taken under a lease with their claims, handed on,
finished in the page's transaction, and the cursor moved over the finished prefix only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from leadrelay.sync.state import FlowPart, PartClaims, PartLost, PartStatus, StateStore
from tests.postgres import BOTH_BACKENDS, state_url

pytestmark = BOTH_BACKENDS

FLOW = "hubspot-salesforce"
PHASE = "source"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(state_backend: str, tmp_path: Path, clock: Clock) -> Iterator[StateStore]:
    with state_url(state_backend, tmp_path) as url, StateStore(url, clock=clock) as opened:
        yield opened


def record(rid: str, email: str, name: str = "Ann") -> dict[str, Any]:
    return {"id": rid, "email": email, "firstname": name}


def by_email(part: FlowPart) -> PartClaims:
    """Claims as the engine makes them, from the record id and e-mail alone."""
    keys = [{f"rec:{r['id']}", f"email:{r['email']}"} for r in part.records]
    return keys, [{f"rec:{d['record_id']}"} for d in part.deleted]


def add(store: StateStore, run_id: int, *records: dict[str, Any], cursor: str) -> int:
    return store.add_part(
        run_id,
        PHASE,
        flow=FLOW,
        connection="hubspot",
        records=list(records),
        record_ids=[r["id"] for r in records],
        deleted=[],
        cursor=cursor,
    )


def take(store: StateStore, run_id: int, holder: str, part: int | None = None) -> FlowPart | None:
    return store.claim_part(run_id, PHASE, holder=holder, lease_s=30, claims=by_email, part=part)


def finish(store: StateStore, run_id: int, part: int, holder: str) -> str | None:
    with store.transaction() as conn:
        return store.finish_part(run_id, PHASE, part, holder=holder, stats={}, conn=conn)


def test_parts_are_numbered_in_read_order(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    numbers = [add(store, run_id, record(str(n), f"p{n}@acme.io"), cursor=f"c{n}") for n in "abc"]
    assert numbers == [1, 2, 3]


def test_a_later_page_drops_the_earlier_copy_from_a_part_not_started(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "a@acme.io"), record("2", "b@acme.io"), cursor="c1")
    add(store, run_id, record("1", "a@acme.io", "Newer"), cursor="c2")
    first, second = store.list_parts(run_id, PHASE)
    assert (first.record_ids, second.records[0]["firstname"]) == (["2"], "Newer")


def test_a_started_part_keeps_its_copy_for_the_claims_to_order(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "a@acme.io"), cursor="c1")
    assert take(store, run_id, "w1") is not None
    add(store, run_id, record("1", "a@acme.io", "Newer"), cursor="c2")
    assert store.list_parts(run_id, PHASE)[0].record_ids == ["1"]


def test_the_cursor_does_not_pass_an_unfinished_part(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    for n in (1, 2, 3):
        add(store, run_id, record(str(n), f"p{n}@acme.io"), cursor=f"c{n}")
        assert take(store, run_id, f"w{n}", part=n) is not None
    moved = [finish(store, run_id, 1, "w1"), finish(store, run_id, 3, "w3")]
    assert (moved, store.get_cursor(FLOW, "hubspot")) == (["c1", None], "c1")


def test_the_cursor_moves_over_every_part_once_the_gap_is_done(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    for n in (1, 2, 3):
        add(store, run_id, record(str(n), f"p{n}@acme.io"), cursor=f"c{n}")
        assert take(store, run_id, f"w{n}", part=n) is not None
    finish(store, run_id, 3, "w3")
    finish(store, run_id, 1, "w1")
    assert finish(store, run_id, 2, "w2") == "c3"


def test_a_record_of_a_person_another_part_writes_is_handed_on(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    add(store, run_id, record("2", "ann@acme.io"), record("3", "bob@acme.io"), cursor="c2")
    assert take(store, run_id, "w1", part=1) is not None
    second = take(store, run_id, "w2", part=2)
    assert second is not None and second.record_ids == ["3"]
    handed = store.list_parts(run_id, PHASE)[-1]
    assert (handed.part, handed.record_ids, handed.wait_for, handed.origin) == (3, ["2"], [1], 2)


def test_a_handed_on_part_waits_for_the_part_holding_its_person(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    add(store, run_id, record("2", "ann@acme.io"), cursor="c2")
    take(store, run_id, "w1", part=1)
    take(store, run_id, "w2", part=2)
    waiting = take(store, run_id, "w3")
    finish(store, run_id, 1, "w1")
    assert (waiting, getattr(take(store, run_id, "w3"), "part", None)) == (None, 3)


def test_the_cursor_waits_for_the_records_a_page_handed_on(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    add(store, run_id, record("2", "ann@acme.io"), cursor="c2")
    take(store, run_id, "w1", part=1)
    take(store, run_id, "w2", part=2)
    finish(store, run_id, 2, "w2")
    finish(store, run_id, 1, "w1")
    assert store.get_cursor(FLOW, "hubspot") == "c1"
    take(store, run_id, "w3", part=3)
    assert finish(store, run_id, 3, "w3") == "c2"


def test_a_part_whose_lease_ran_out_is_taken_over(store: StateStore, clock: Clock) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    take(store, run_id, "dead")
    clock.now += timedelta(seconds=31)
    again = take(store, run_id, "alive")
    assert again is not None and again.attempts == 2
    with pytest.raises(PartLost):
        finish(store, run_id, 1, "dead")


def test_a_renewed_part_is_not_taken_over(store: StateStore, clock: Clock) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    take(store, run_id, "w1")
    clock.now += timedelta(seconds=20)
    assert store.renew_part(run_id, PHASE, 1, holder="w1", lease_s=30)
    clock.now += timedelta(seconds=20)
    assert take(store, run_id, "w2") is None


def test_no_part_of_an_ended_run_is_taken(store: StateStore) -> None:
    from leadrelay.sync.state import RunStatus

    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    store.finish_run(run_id, RunStatus.ABORTED, {})
    assert take(store, run_id, "w1") is None


def test_abandoned_parts_are_the_ones_not_started(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    add(store, run_id, record("2", "bob@acme.io"), cursor="c2")
    take(store, run_id, "w1", part=1)
    store.abandon_parts(run_id)
    statuses = [p.status for p in store.list_parts(run_id, PHASE)]
    assert statuses == [PartStatus.RUNNING, PartStatus.ABANDONED]


def test_the_parts_of_earlier_ended_runs_are_forgotten(store: StateStore) -> None:
    from leadrelay.sync.state import RunStatus

    earlier = store.start_run([FLOW])
    add(store, earlier, record("1", "ann@acme.io"), cursor="c1")
    store.finish_run(earlier, RunStatus.OK, {})
    latest = store.start_run([FLOW])
    add(store, latest, record("2", "bob@acme.io"), cursor="c2")
    store.drop_parts(FLOW, keep=latest)
    assert (store.list_parts(earlier), len(store.list_parts(latest))) == ([], 1)


def test_parts_listed_without_content_leave_the_records_out(store: StateStore) -> None:
    run_id = store.start_run([FLOW])
    add(store, run_id, record("1", "ann@acme.io"), cursor="c1")
    [part] = store.list_parts(run_id, content=False)
    assert (part.records, part.cursor, part.status) == ([], "c1", PartStatus.PENDING)
