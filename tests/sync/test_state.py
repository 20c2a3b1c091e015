"""Tests for the state store (leadrelay.sync.state)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from leadrelay.sync import state as state_module
from leadrelay.sync.state import (
    SCHEMA_VERSION,
    DeadLetterStatus,
    InboxStatus,
    LedgerState,
    LinkConflictError,
    LockHolder,
    RunStatus,
    SchemaVersionError,
    StateError,
    StateStore,
)
from tests.postgres import fresh_schema

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A settable aware-UTC clock."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[StateStore]:
    if request.param == "sqlite":
        with StateStore("sqlite:///:memory:", clock=clock) as s:
            yield s
        return
    with fresh_schema() as url, StateStore(url, clock=clock) as s:
        yield s


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def put(store: StateStore, n: int, *, form: str = "f", prefix: str = "k") -> list[str]:
    keys = [f"{prefix}{i}" for i in range(n)]
    for key in keys:
        store.put_inbox(
            key=key, form=form, source="webform", payload={"email": f"{key}@x.io"}, dedupe_key=key
        )
    return keys


class StatementCounter:
    """Counts SELECT statements sent on an engine."""

    def __init__(self, store: StateStore) -> None:
        self.selects = 0
        self._engine = store._engine
        sa.event.listen(self._engine, "before_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.selects += 1

    def stop(self) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._count)


# -- schema ------------------------------------------------------------------------------------


def test_schema_created_with_every_table(file_url: str) -> None:
    with StateStore(file_url) as store:
        names = set(sa.inspect(store._engine).get_table_names())
        assert store.schema_version() == SCHEMA_VERSION
    assert names >= {
        "meta",
        "inbox",
        "ledger",
        "links",
        "identities",
        "cursors",
        "fingerprints",
        "dead_letters",
        "runs",
        "locks",
    }


def test_reopening_keeps_data(file_url: str) -> None:
    with StateStore(file_url) as store:
        store.set_cursor("flow", "hs", "42")
    with StateStore(file_url) as store:
        assert store.get_cursor("flow", "hs") == "42"


def test_sqlite_file_uses_wal(file_url: str) -> None:
    with StateStore(file_url) as store, store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_newer_schema_version_is_refused(file_url: str) -> None:
    with StateStore(file_url) as store, store.transaction() as conn:
        conn.execute(state_module.meta_table.update().values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        StateStore(file_url)


def test_forward_migration_runs_and_bumps_version(
    file_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    StateStore(file_url).close()
    ran: list[int] = []

    def add_column(conn: sa.Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN note TEXT")
        ran.append(1)

    monkeypatch.setattr(state_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(state_module.MIGRATIONS, SCHEMA_VERSION + 1, [add_column])
    with StateStore(file_url) as store:
        assert store.schema_version() == SCHEMA_VERSION + 1
        columns = {c["name"] for c in sa.inspect(store._engine).get_columns("runs")}
    assert ran == [1]
    assert "note" in columns


def test_store_reports_its_dialect(file_url: str) -> None:
    with StateStore(file_url) as store:
        assert (store.dialect, store.url) == ("sqlite", file_url)


# -- inbox -------------------------------------------------------------------------------------


def test_put_inbox_stores_a_replay_once(store: StateStore) -> None:
    first = store.put_inbox(
        key="k1", form="f", source="meta_lead_ads", payload={"a": 1}, dedupe_key="leadgen:9"
    )
    again = store.put_inbox(
        key="k2", form="f", source="meta_lead_ads", payload={"a": 1}, dedupe_key="leadgen:9"
    )
    assert (first.key, first.created) == ("k1", True)
    assert (again.key, again.created) == ("k1", False)
    assert store.inbox_counts()[InboxStatus.PENDING] == 1
    assert store.get_inbox("k2") is None


def test_put_inbox_refuses_a_key_under_another_dedupe_key(store: StateStore) -> None:
    store.put_inbox(key="k1", form="f", source="webform", payload={}, dedupe_key="a")
    with pytest.raises(StateError, match="k1"):
        store.put_inbox(key="k1", form="f", source="webform", payload={}, dedupe_key="b")


def test_get_inbox_returns_the_stored_row(store: StateStore) -> None:
    store.put_inbox(
        key="k1",
        form="pricing",
        source="webform",
        payload={"email": "a@b.io", "utm": {"source": "g"}},
        dedupe_key="d",
        is_test=True,
    )
    item = store.get_inbox("k1")
    assert item is not None
    assert (item.form, item.source, item.is_test, item.status) == (
        "pricing",
        "webform",
        True,
        InboxStatus.PENDING,
    )
    assert item.payload == {"email": "a@b.io", "utm": {"source": "g"}}
    assert item.received_at == T0


def test_claim_returns_oldest_first_up_to_limit(store: StateStore) -> None:
    put(store, 5)
    claimed = store.claim_inbox(limit=3)
    assert [i.key for i in claimed] == ["k0", "k1", "k2"]
    assert len({i.claim_token for i in claimed}) == 1


def test_claimed_rows_are_not_claimed_again(store: StateStore) -> None:
    put(store, 3)
    first = store.claim_inbox(limit=2)
    second = store.claim_inbox(limit=10)
    assert {i.key for i in first}.isdisjoint({i.key for i in second})
    assert store.claim_inbox(limit=10) == []


def test_expired_claim_is_taken_over(store: StateStore, clock: FakeClock) -> None:
    put(store, 1)
    first = store.claim_inbox(limit=1, claim_ttl_s=60)
    clock.advance(30)
    assert store.claim_inbox(limit=1, claim_ttl_s=60) == []
    clock.advance(31)
    second = store.claim_inbox(limit=1, claim_ttl_s=60)
    assert [i.key for i in second] == ["k0"]
    assert second[0].claim_token != first[0].claim_token


def test_renewed_claim_is_not_taken_over(store: StateStore, clock: FakeClock) -> None:
    put(store, 1)
    (held,) = store.claim_inbox(limit=1, claim_ttl_s=10)
    assert held.claim_token is not None
    clock.advance(8)
    assert store.renew_inbox_claim(held.claim_token) == 1
    clock.advance(8)
    assert store.claim_inbox(limit=1, claim_ttl_s=10) == []
    clock.advance(3)
    assert [item.key for item in store.claim_inbox(limit=1, claim_ttl_s=10)] == [held.key]
    assert store.renew_inbox_claim(held.claim_token) == 0


def test_stale_claim_token_cannot_mark_delivered(store: StateStore, clock: FakeClock) -> None:
    put(store, 1)
    old = store.claim_inbox(limit=1, claim_ttl_s=10)[0]
    clock.advance(11)
    new = store.claim_inbox(limit=1, claim_ttl_s=10)[0]
    assert store.mark_inbox_delivered(["k0"], claim_token=old.claim_token) == 0
    assert store.mark_inbox_delivered(["k0"], claim_token=new.claim_token) == 1


def test_mark_delivered_counts_each_row_once(store: StateStore) -> None:
    put(store, 3)
    assert store.mark_inbox_delivered(["k0", "k1", "k1"]) == 2
    assert store.mark_inbox_delivered(["k0"]) == 0
    item = store.get_inbox("k0")
    assert item is not None
    assert (item.status, item.delivered_at, item.claim_token) == (InboxStatus.DELIVERED, T0, None)


@pytest.mark.parametrize(
    ("retry", "status"), [(True, InboxStatus.PENDING), (False, InboxStatus.FAILED)]
)
def test_mark_failed_records_attempt_and_reason(
    store: StateStore, retry: bool, status: InboxStatus
) -> None:
    put(store, 1)
    claim = store.claim_inbox(limit=1)[0]
    assert store.mark_inbox_failed("k0", "HubSpot 503", retry=retry, claim_token=claim.claim_token)
    item = store.get_inbox("k0")
    assert item is not None
    assert (item.status, item.attempts, item.last_error, item.claim_token) == (
        status,
        1,
        "HubSpot 503",
        None,
    )


def test_retried_failure_is_claimable_again(store: StateStore) -> None:
    put(store, 1)
    store.claim_inbox(limit=1)
    store.mark_inbox_failed("k0", "timeout", retry=True)
    assert [i.key for i in store.claim_inbox(limit=1)] == ["k0"]


def test_requeue_puts_a_failed_row_back(store: StateStore) -> None:
    put(store, 1)
    store.mark_inbox_failed("k0", "bad", retry=False)
    assert store.requeue_inbox("k0")
    assert store.inbox_counts() == {
        InboxStatus.PENDING: 1,
        InboxStatus.DELIVERED: 0,
        InboxStatus.FAILED: 0,
    }


def test_inbox_counts_by_status(store: StateStore) -> None:
    put(store, 4)
    store.mark_inbox_delivered(["k0", "k1"])
    store.mark_inbox_failed("k2", "x", retry=False)
    assert store.inbox_counts() == {
        InboxStatus.PENDING: 1,
        InboxStatus.DELIVERED: 2,
        InboxStatus.FAILED: 1,
    }


# -- ledger ------------------------------------------------------------------------------------


def test_ledger_moves_received_written_verified(store: StateStore, clock: FakeClock) -> None:
    store.mark_received("L1", "hs", form="pricing", source="webform")
    clock.advance(5)
    store.mark_written("L1", "hs", "501")
    clock.advance(5)
    store.mark_verified("L1", "hs")
    (row,) = store.ledger_rows("L1")
    assert (row.state, row.external_id, row.form, row.source) == (
        LedgerState.VERIFIED,
        "501",
        "pricing",
        "webform",
    )
    assert (row.received_at, row.written_at, row.verified_at) == (
        T0,
        T0 + timedelta(seconds=5),
        T0 + timedelta(seconds=10),
    )


def test_mark_received_again_keeps_first_time_and_fills_blanks(
    store: StateStore, clock: FakeClock
) -> None:
    store.mark_received("L1", "hs")
    clock.advance(60)
    store.mark_received("L1", "hs", form="pricing", source="csv")
    (row,) = store.ledger_rows("L1")
    assert (row.received_at, row.form, row.source) == (T0, "pricing", "csv")


def test_mark_verified_needs_a_write(store: StateStore) -> None:
    store.mark_received("L1", "hs")
    with pytest.raises(StateError, match="L1"):
        store.mark_verified("L1", "hs")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("received", LedgerState.FAILED),
        ("written", LedgerState.WRITTEN),
        ("verified", LedgerState.VERIFIED),
    ],
)
def test_mark_failed_never_undoes_a_write(
    store: StateStore, before: str, after: LedgerState
) -> None:
    store.mark_received("L1", "sf")
    if before in ("written", "verified"):
        store.mark_written("L1", "sf", "00Q1")
    if before == "verified":
        store.mark_verified("L1", "sf")
    store.mark_failed("L1", "sf", "REQUIRED_FIELD_MISSING: Company")
    (row,) = store.ledger_rows("L1")
    assert (row.state, row.last_error) == (after, "REQUIRED_FIELD_MISSING: Company")


def test_written_after_failure_clears_the_error(store: StateStore) -> None:
    store.mark_failed("L1", "sf", "boom")
    store.mark_written("L1", "sf", "00Q1")
    (row,) = store.ledger_rows("L1")
    assert (row.state, row.last_error) == (LedgerState.WRITTEN, None)


def test_mark_written_many_writes_each_lead(store: StateStore) -> None:
    store.mark_received_many(["a", "b"], "hs", form="f", source="webform")
    store.mark_written_many([("a", "1"), ("b", "2"), ("c", "3")], "hs")
    got = {key: store.ledger_rows(key)[0] for key in "abc"}
    assert {k: (r.state, r.external_id) for k, r in got.items()} == {
        "a": (LedgerState.WRITTEN, "1"),
        "b": (LedgerState.WRITTEN, "2"),
        "c": (LedgerState.WRITTEN, "3"),
    }


def test_ledger_counts_by_form_source_state(store: StateStore) -> None:
    store.mark_received_many(["a", "b", "c"], "hs", form="pricing", source="webform")
    store.mark_received("d", "hs", form="demo", source="meta_lead_ads")
    store.mark_received("t", "hs", form="demo", source="meta_lead_ads", is_test=True)
    store.mark_written("a", "hs", "1")
    counts = {(c.form, c.source, c.state): c.count for c in store.ledger_counts()}
    assert counts == {
        ("demo", "meta_lead_ads", LedgerState.RECEIVED): 1,
        ("pricing", "webform", LedgerState.RECEIVED): 2,
        ("pricing", "webform", LedgerState.WRITTEN): 1,
    }


def test_mark_test_leaves_a_written_lead_out_of_the_counts(store: StateStore) -> None:
    store.mark_received("a", "hs", form="f", source="meta_lead_ads")
    store.mark_written("a", "hs", "1")
    assert store.mark_test("a", "hs") is True
    (row,) = store.ledger_rows("a")
    assert (row.state, row.external_id, row.is_test) == (LedgerState.WRITTEN, "1", True)
    assert store.ledger_counts() == []


def test_mark_test_touches_only_the_named_destination(store: StateStore) -> None:
    store.mark_received("a", "hs")
    store.mark_received("a", "sf")
    store.mark_test("a", "hs")
    assert {r.destination: r.is_test for r in store.ledger_rows("a")} == {"hs": True, "sf": False}


def test_mark_test_without_a_row_records_nothing(store: StateStore) -> None:
    assert store.mark_test("nobody", "hs") is False
    assert store.ledger_rows("nobody") == []


def test_mark_test_many_counts_the_rows_it_found(store: StateStore) -> None:
    store.mark_received_many(["a", "b"], "hs")
    assert store.mark_test_many(["a", "b", "b", "c"], "hs") == 2
    assert [r.is_test for k in "ab" for r in store.ledger_rows(k)] == [True, True]


def test_ledger_counts_by_day(store: StateStore, clock: FakeClock) -> None:
    store.mark_received("a", "hs", form="f", source="csv")
    clock.advance(86_400)
    store.mark_received_many(["b", "c"], "hs", form="f", source="csv")
    counts = {(c.day, c.state): c.count for c in store.ledger_counts(by_day=True)}
    assert counts == {
        (date(2025, 3, 1), LedgerState.RECEIVED): 1,
        (date(2025, 3, 2), LedgerState.RECEIVED): 2,
    }


def test_ledger_counts_since(store: StateStore, clock: FakeClock) -> None:
    store.mark_received("a", "hs")
    clock.advance(3600)
    store.mark_received("b", "hs")
    (count,) = store.ledger_counts(since=T0 + timedelta(minutes=30))
    assert count.count == 1


# -- links and identities ----------------------------------------------------------------------


def test_link_is_idempotent(store: StateStore) -> None:
    store.link("L1", "sf", "00Q1")
    store.link("L1", "sf", "00Q1")
    assert store.key_for("sf", "00Q1") == "L1"
    assert store.external_id_for("L1", "sf") == "00Q1"


@pytest.mark.parametrize(
    ("key", "external_id", "message"),
    [("L2", "00Q1", "linked to lead L1"), ("L1", "00Q2", "lead L1 is linked")],
)
def test_link_refuses_to_move_silently(
    store: StateStore, key: str, external_id: str, message: str
) -> None:
    store.link("L1", "sf", "00Q1")
    with pytest.raises(LinkConflictError, match=message):
        store.link(key, "sf", external_id)
    assert store.links_of("L1") == {"sf": "00Q1"}


def test_link_many_is_all_or_nothing(store: StateStore) -> None:
    store.link("L1", "sf", "00Q1")
    with pytest.raises(LinkConflictError):
        store.link_many("sf", {"L9": "00Q9", "L2": "00Q1"})
    assert store.key_for("sf", "00Q9") is None


def test_relink_moves_a_link_explicitly(store: StateStore) -> None:
    store.link("L1", "sf", "00Q1")
    store.link("L2", "sf", "00Q2")
    store.relink("L2", "sf", "00Q1")
    assert store.key_for("sf", "00Q1") == "L2"
    assert store.external_id_for("L1", "sf") is None
    assert store.key_for("sf", "00Q2") is None


def test_same_external_id_in_two_connections(store: StateStore) -> None:
    store.link("L1", "hs", "7")
    store.link("L2", "zoho", "7")
    assert (store.key_for("hs", "7"), store.key_for("zoho", "7")) == ("L1", "L2")


def test_unlink_removes_the_link(store: StateStore) -> None:
    store.link("L1", "sf", "00Q1")
    assert store.unlink("L1", "sf")
    assert store.key_for("sf", "00Q1") is None


@pytest.mark.parametrize(("n", "selects"), [(3, 2), (1200, 6)])
def test_keys_for_many_is_batched(store: StateStore, n: int, selects: int) -> None:
    store.link_many("hs", {f"L{i}": str(i) for i in range(n)})
    counter = StatementCounter(store)
    try:
        found = store.keys_for_many("hs", [str(i) for i in range(n)] + ["missing"])
        back = store.external_ids_for_many("hs", [f"L{i}" for i in range(n)])
    finally:
        counter.stop()
    assert found == {str(i): f"L{i}" for i in range(n)}
    assert back == {f"L{i}": str(i) for i in range(n)}
    assert counter.selects == selects  # one per 500 ids, per direction


def test_claim_emails_first_key_wins(store: StateStore) -> None:
    assert store.claim_emails({"ann@acme.io": "L1"}) == {"ann@acme.io": "L1"}
    assert store.claim_emails({"Ann@Acme.io": "L2", "bob@acme.io": "L3"}) == {
        "Ann@Acme.io": "L1",
        "bob@acme.io": "L3",
    }


def test_find_keys_by_emails_in_one_query(store: StateStore) -> None:
    store.claim_emails({f"u{i}@x.io": f"L{i}" for i in range(50)})
    counter = StatementCounter(store)
    try:
        found = store.find_keys_by_emails([f"U{i}@x.io" for i in range(50)] + ["no@x.io"])
    finally:
        counter.stop()
    assert found == {f"U{i}@x.io": f"L{i}" for i in range(50)}
    assert counter.selects == 1
    assert store.find_key_by_email("u3@x.io") == "L3"


# -- cursors and fingerprints ------------------------------------------------------------------


def test_cursor_starts_empty(store: StateStore) -> None:
    assert store.get_cursor("hs-to-sf", "hs") is None


def test_cursor_set_and_overwrite(store: StateStore, clock: FakeClock) -> None:
    store.set_cursor("hs-to-sf", "hs", "1")
    clock.advance(10)
    store.set_cursor("hs-to-sf", "hs", "2")
    assert store.get_cursor("hs-to-sf", "hs") == "2"
    assert store.cursor_updated_at("hs-to-sf", "hs") == T0 + timedelta(seconds=10)


def test_cursor_does_not_move_when_the_page_transaction_fails(store: StateStore) -> None:
    store.set_cursor("flow", "hs", "page-1")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        store.mark_written("L1", "sf", "00Q1", conn=conn)
        store.set_cursor("flow", "hs", "page-2", conn=conn)
        raise RuntimeError("write failed")
    assert store.get_cursor("flow", "hs") == "page-1"
    assert store.ledger_rows("L1") == []


def test_reset_cursors_forgets_a_flow(store: StateStore) -> None:
    store.set_cursor("a", "hs", "1")
    store.set_cursor("a", "sf", "1")
    store.set_cursor("b", "hs", "1")
    assert store.reset_cursors("a") == 2
    assert store.get_cursor("b", "hs") == "1"


def test_fingerprints_put_and_get_many(store: StateStore) -> None:
    store.put_fingerprints("hs", {"1": "aaa", "2": "bbb"})
    store.put_fingerprints("hs", {"2": "ccc"})
    assert store.get_fingerprints("hs", ["1", "2", "3"]) == {"1": "aaa", "2": "ccc"}
    assert store.get_fingerprints("sf", ["1"]) == {}


# -- dead letters ------------------------------------------------------------------------------


def add_dl(store: StateStore, **overrides: Any) -> int:
    values: dict[str, Any] = {
        "connection": "sf",
        "system": "salesforce",
        "record_ref": "ann@acme.io",
        "reason": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: Lead Source: bad value",
        "payload": {"LeadSource": "Tradeshow 2"},
        "lead_key": "L1",
        "flow": "hs-to-sf",
        "field": "LeadSource",
    }
    values.update(overrides)
    return store.add_dead_letter(**values)


def test_dead_letter_keeps_the_system_reason(store: StateStore) -> None:
    dl = store.get_dead_letter(add_dl(store))
    assert (dl.status, dl.attempts, dl.field, dl.payload, dl.created_at) == (
        DeadLetterStatus.OPEN,
        1,
        "LeadSource",
        {"LeadSource": "Tradeshow 2"},
        T0,
    )
    assert dl.reason.startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("mark_dead_letter_retried", DeadLetterStatus.RETRIED),
        ("resolve_dead_letter", DeadLetterStatus.RESOLVED),
        ("drop_dead_letter", DeadLetterStatus.DROPPED),
    ],
)
def test_dead_letter_status_changes(
    store: StateStore, method: str, status: DeadLetterStatus
) -> None:
    dl_id = add_dl(store)
    assert getattr(store, method)(dl_id).status == status
    assert store.list_dead_letters() == []
    assert [d.id for d in store.list_dead_letters(status=status)] == [dl_id]


def test_bump_dead_letter_counts_attempts(store: StateStore, clock: FakeClock) -> None:
    dl_id = add_dl(store)
    clock.advance(60)
    dl = store.bump_dead_letter(dl_id, reason="still bad")
    assert (dl.attempts, dl.reason, dl.last_attempt_at) == (
        2,
        "still bad",
        T0 + timedelta(seconds=60),
    )


@pytest.mark.parametrize(
    ("filters", "expected"),
    [({}, [1, 2, 3]), ({"flow": "other"}, [2]), ({"connection": "zoho"}, [3])],
)
def test_list_dead_letters_filters(
    store: StateStore, filters: dict[str, str], expected: list[int]
) -> None:
    add_dl(store)
    add_dl(store, flow="other")
    add_dl(store, connection="zoho", system="zoho")
    assert [d.id for d in store.list_dead_letters(**filters)] == expected
    assert store.count_dead_letters() == 3


def test_missing_dead_letter_is_a_clear_error(store: StateStore) -> None:
    with pytest.raises(StateError, match="no dead letter with id 99"):
        store.drop_dead_letter(99)


# -- runs --------------------------------------------------------------------------------------


def test_run_lifecycle(store: StateStore, clock: FakeClock) -> None:
    run_id = store.start_run(["hs-to-sf", "hs-to-zoho"], dry_run=True)
    store.append_event(run_id, {"kind": "conflict", "field": "phone", "winner": "hs"})
    clock.advance(3)
    run = store.finish_run(run_id, RunStatus.PARTIAL, {"read": 10, "dead_lettered": 1})
    assert (run.flows, run.status, run.dry_run, run.stats) == (
        ["hs-to-sf", "hs-to-zoho"],
        RunStatus.PARTIAL,
        True,
        {"read": 10, "dead_lettered": 1},
    )
    assert run.log == [{"kind": "conflict", "field": "phone", "winner": "hs", "at": T0.isoformat()}]
    assert run.finished_at == T0 + timedelta(seconds=3)


def test_list_runs_newest_first_and_by_flow(store: StateStore) -> None:
    a = store.start_run("a")
    ab = store.start_run(["a", "b"])
    b = store.start_run("b")
    assert [r.id for r in store.list_runs()] == [b, ab, a]
    assert [r.id for r in store.list_runs(flow="a")] == [ab, a]
    assert [r.id for r in store.list_runs(limit=1)] == [b]


def test_orphan_runs_of_a_flow_are_aborted(store: StateStore) -> None:
    dead = store.start_run(["a", "b"])
    other = store.start_run("c")
    done = store.start_run("a")
    store.finish_run(done, RunStatus.OK, {})
    assert store.abort_orphan_runs(["b"]) == [dead]
    assert store.get_run(dead).status is RunStatus.ABORTED
    assert "interrupted" in store.get_run(dead).stats["error"]
    assert store.get_run(other).status is RunStatus.RUNNING
    assert store.get_run(done).status is RunStatus.OK


def test_finish_unknown_run_is_an_error(store: StateStore) -> None:
    with pytest.raises(StateError, match="no run with id 5"):
        store.finish_run(5, RunStatus.OK, {})


# -- locks -------------------------------------------------------------------------------------


def other_host(token: str = "t-other") -> LockHolder:
    return LockHolder(hostname="elsewhere.invalid", pid=1, token=token)


def test_lock_refused_while_live_holder_has_it(store: StateStore) -> None:
    first = store.lock("sync")
    second = store.lock("sync")
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()


def test_lock_context_manager_names_the_holder(store: StateStore) -> None:
    with store.lock("sync"), pytest.raises(StateError, match=f"pid {os.getpid()}"):
        store.lock("sync").__enter__()


def test_lock_of_a_gone_pid_is_kept_until_its_lease_ends(
    store: StateStore, clock: FakeClock
) -> None:
    # A pid says nothing across containers and hosts: only a missed heartbeat frees a lock.
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = LockHolder(hostname=socket.gethostname(), pid=int(done.stdout), token="gone")
    assert store.acquire_lock("sync", gone, ttl_s=10)
    mine = store.lock("sync")
    assert not mine.acquire()
    clock.advance(11)
    assert mine.acquire()
    info = store.lock_info("sync")
    assert info is not None
    assert info.holder == mine.holder


@pytest.mark.parametrize(("elapsed", "taken"), [(59, False), (61, True)])
def test_lock_taken_over_after_heartbeat_ttl(
    store: StateStore, clock: FakeClock, elapsed: int, taken: bool
) -> None:
    assert store.acquire_lock("sync", other_host(), ttl_s=60)
    clock.advance(elapsed)
    assert store.lock("sync").acquire() is taken


def test_heartbeat_keeps_the_lock(store: StateStore, clock: FakeClock) -> None:
    assert store.acquire_lock("sync", other_host(), ttl_s=60)
    clock.advance(50)
    assert store.heartbeat_lock("sync", other_host())
    clock.advance(50)
    assert not store.lock("sync").acquire()


def test_heartbeat_after_takeover_reports_the_loss(store: StateStore, clock: FakeClock) -> None:
    assert store.acquire_lock("sync", other_host(), ttl_s=60)
    clock.advance(61)
    assert store.lock("sync").acquire()
    assert not store.heartbeat_lock("sync", other_host())
    assert not store.release_lock("sync", other_host())


# -- time --------------------------------------------------------------------------------------


def test_naive_datetimes_are_refused(store: StateStore) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        store.mark_received("L1", "hs", at=datetime(2025, 1, 1))


def test_times_read_back_aware_utc_from_a_file(file_url: str) -> None:
    from zoneinfo import ZoneInfo

    berlin = datetime(2025, 6, 1, 14, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    with StateStore(file_url) as store:
        store.mark_received("L1", "hs", at=berlin)
    with StateStore(file_url) as store:
        (row,) = store.ledger_rows("L1")
    assert row.received_at.tzinfo is UTC
    assert row.received_at == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


# -- two processes -----------------------------------------------------------------------------

N_LEADS = 300


def _report(path: str, body: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(body))


def _capture_process(url: str, out: str, done: Any) -> None:
    try:
        with StateStore(url) as store:
            for i in range(N_LEADS):
                key = f"L{i:04d}"
                with store.transaction() as conn:
                    store.put_inbox(
                        key=key,
                        form="pricing",
                        source="webform",
                        payload={"email": f"u{i}@acme.io"},
                        dedupe_key=f"sub-{i}",
                        conn=conn,
                    )
                    store.mark_received(key, "hs", form="pricing", source="webform", conn=conn)
                if i % 50 == 0:
                    # A replayed notification in the middle of the load.
                    store.put_inbox(
                        key=f"dup-{i}",
                        form="pricing",
                        source="webform",
                        payload={},
                        dedupe_key=f"sub-{i}",
                    )
        _report(out, {"ok": True})
    except BaseException:
        _report(out, {"ok": False, "error": traceback.format_exc()})
    finally:
        done.set()


def _sync_process(url: str, out: str, done: Any, name: str) -> None:
    delivered: list[str] = []
    dead_letters = 0
    try:
        with StateStore(url) as store:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                items = store.claim_inbox(limit=20, claim_ttl_s=120)
                if not items:
                    if done.is_set() and store.inbox_counts()[InboxStatus.PENDING] == 0:
                        break
                    time.sleep(0.005)
                    continue
                token = items[0].claim_token
                with store.transaction() as conn:
                    keys = [item.key for item in items]
                    # Read before writing, as the engine does (fingerprints, links); on SQLite
                    # this only works between processes because writes begin IMMEDIATE.
                    store.get_fingerprints("hs", [f"hs-{k}" for k in keys], conn=conn)
                    store.keys_for_many("hs", [f"hs-{k}" for k in keys], conn=conn)
                    time.sleep(0.002)
                    store.mark_written_many([(k, f"hs-{k}") for k in keys], "hs", conn=conn)
                    store.link_many("hs", {k: f"hs-{k}" for k in keys}, conn=conn)
                    store.put_fingerprints("hs", {f"hs-{k}": "fp" for k in keys}, conn=conn)
                    store.set_cursor("capture", name, keys[-1], conn=conn)
                    if keys[0].endswith("7"):
                        store.add_dead_letter(
                            connection="hs",
                            system="hubspot",
                            record_ref=keys[0],
                            reason="INVALID_EMAIL",
                            payload={},
                            conn=conn,
                        )
                        dead_letters += 1
                    changed = store.mark_inbox_delivered(keys, claim_token=token, conn=conn)
                    if changed != len(keys):
                        raise AssertionError(f"{name}: {changed} of {len(keys)} rows marked")
                delivered.extend(keys)
        _report(out, {"ok": True, "delivered": delivered, "dead_letters": dead_letters})
    except BaseException:
        _report(out, {"ok": False, "error": traceback.format_exc(), "delivered": delivered})


def _run_processes(procs: list[Any]) -> None:
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(90)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    for proc in procs:
        proc.close()


def test_capture_and_two_sync_workers_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    StateStore(url).close()
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Event()
    outs = [str(tmp_path / f"{n}.json") for n in ("capture", "w1", "w2")]
    procs = [
        ctx.Process(target=_capture_process, args=(url, outs[0], done)),
        ctx.Process(target=_sync_process, args=(url, outs[1], done, "w1")),
        ctx.Process(target=_sync_process, args=(url, outs[2], done, "w2")),
    ]
    _run_processes(procs)
    results = [json.loads(Path(out).read_text()) for out in outs]
    for result in results:
        assert result["ok"], result.get("error")
    delivered = results[1]["delivered"] + results[2]["delivered"]
    assert sorted(delivered) == [f"L{i:04d}" for i in range(N_LEADS)]
    with StateStore(url) as store:
        assert store.inbox_counts() == {
            InboxStatus.PENDING: 0,
            InboxStatus.DELIVERED: N_LEADS,
            InboxStatus.FAILED: 0,
        }
        counts = {(c.state, c.count) for c in store.ledger_counts()}
        assert counts == {(LedgerState.WRITTEN, N_LEADS)}
        keys = [f"L{i:04d}" for i in range(N_LEADS)]
        assert store.external_ids_for_many("hs", keys) == {k: f"hs-{k}" for k in keys}
        assert len(store.get_fingerprints("hs", [f"hs-{k}" for k in keys])) == N_LEADS
        for name, result in (("w1", results[1]), ("w2", results[2])):
            last = result["delivered"][-1] if result["delivered"] else None
            assert store.get_cursor("capture", name) == last
        assert store.count_dead_letters() == results[1]["dead_letters"] + results[2]["dead_letters"]


def _lock_racer(url: str, out: str, barrier: Any, hold: Any) -> None:
    try:
        with StateStore(url) as store:
            lock = store.lock("sync", ttl_s=600)
            barrier.wait(30)
            won = lock.acquire()
            _report(out, {"ok": True, "won": won})
            hold.wait(30)
    except BaseException:
        _report(out, {"ok": False, "error": traceback.format_exc()})


def test_two_processes_race_for_one_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    StateStore(url).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    hold = ctx.Barrier(2)
    outs = [str(tmp_path / f"racer{i}.json") for i in range(2)]
    _run_processes([ctx.Process(target=_lock_racer, args=(url, o, barrier, hold)) for o in outs])
    results = [json.loads(Path(out).read_text()) for out in outs]
    for result in results:
        assert result["ok"], result.get("error")
    assert sorted(r["won"] for r in results) == [False, True]


def test_inbox_counts_by_form_and_source(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'counts.db'}") as store:
        for n, (form, source) in enumerate(
            [("a", "webform"), ("a", "webform"), ("b", "meta_lead_ads")]
        ):
            store.put_inbox(key=f"k{n}", form=form, source=source, payload={}, dedupe_key=f"d{n}")
        claimed = store.claim_inbox(limit=1)
        store.mark_inbox_delivered([claimed[0].key], claim_token=claimed[0].claim_token)
        counts = store.inbox_counts_by_form()
    assert counts == {
        ("a", "webform", InboxStatus.DELIVERED): 1,
        ("a", "webform", InboxStatus.PENDING): 1,
        ("b", "meta_lead_ads", InboxStatus.PENDING): 1,
    }


# -- baselines, tombstones, field problems, credentials (wave 2) ---------------------------------


def test_baselines_round_trip_and_replace(store: StateStore) -> None:
    store.put_baselines("f", {"k1": {"source": {"city": "Berlin"}, "destination": {"city": "B"}}})
    store.put_baselines("f", {"k1": {"source": {"city": "Munich"}, "destination": {"city": "M"}}})
    assert store.get_baselines("f", ["k1", "k2"]) == {
        "k1": {"source": {"city": "Munich"}, "destination": {"city": "M"}}
    }
    assert store.get_baselines("other", ["k1"]) == {}


def test_tombstones_are_kept_once_and_merges_are_not_deletions(store: StateStore) -> None:
    store.add_tombstones("sf", [("00Q1", "k1", None, None), ("00Q2", "k2", "00Q9", T0)])
    store.add_tombstones("sf", [("00Q1", "k1", None, None)])
    assert store.tombstoned_keys("sf", ["k1", "k2", "k3"]) == {"k1"}
    assert [t["external_id"] for t in store.tombstones(connection="sf")] == ["00Q1", "00Q2"]


def test_field_problems_open_count_and_resolve(store: StateStore, clock: FakeClock) -> None:
    problem = {
        "field": "industry",
        "system_field": "Industry",
        "value": "Technology",
        "reason": "not in the pick list",
        "action": "skipped",
        "stage": "check",
    }
    origin = {"flow": "f", "from_side": "source", "reader": "hs", "reader_id": "1"}
    store.record_field_problems("k1", "zoho", [problem], origin=origin, flow="f")
    clock.advance(5)
    store.record_field_problems("k1", "zoho", [problem], origin=origin, flow="f")
    [row] = store.field_problems()
    assert (row.count, row.stage, row.value, row.origin["reader_id"]) == (
        2,
        "check",
        "Technology",
        "1",
    )
    assert store.count_field_problems() == {"zoho": 1}
    store.record_field_problems("k1", "zoho", [], origin=origin, flow="f")
    assert store.field_problems() == []
    assert [r.status for r in store.field_problems(status="resolved")] == ["resolved"]


def _problem(field: str, value: object = "x") -> dict[str, object]:
    return {"field": field, "system_field": field.title(), "value": value, "reason": "refused"}


def test_field_problems_of_many_leads_in_one_call(store: StateStore, clock: FakeClock) -> None:
    origin = {"flow": "f", "from_side": "source", "reader": "hs", "reader_id": "1"}
    store.record_field_problems(
        "k1", "zoho", [_problem("industry"), _problem("phone")], origin=origin
    )
    store.record_field_problems("k2", "zoho", [_problem("industry")], origin=origin)
    store.record_field_problems("k3", "sf", [_problem("industry")], origin=origin)
    clock.advance(5)
    store.record_field_problems_many(
        "zoho",
        [
            ("k1", origin, [_problem("phone", "+1 nope")]),  # industry mended, phone again
            ("k2", origin, []),  # everything mended
            ("k4", {**origin, "reader_id": "4"}, [_problem("city", None)]),  # new lead
        ],
        flow="f",
    )
    open_rows = {(r.lead_key, r.connection, r.field): r for r in store.field_problems()}
    assert sorted(open_rows) == [
        ("k1", "zoho", "phone"),
        ("k3", "sf", "industry"),
        ("k4", "zoho", "city"),
    ]
    phone = open_rows["k1", "zoho", "phone"]
    assert (phone.count, phone.value, phone.flow) == (2, "+1 nope", "f")
    assert phone.first_seen == T0 and phone.last_seen == T0 + timedelta(seconds=5)
    city = open_rows["k4", "zoho", "city"]
    assert (city.count, city.value, city.origin["reader_id"]) == (1, None, "4")
    resolved = {(r.lead_key, r.field) for r in store.field_problems(status="resolved")}
    assert resolved == {("k1", "industry"), ("k2", "industry")}


def test_field_problems_of_a_lead_written_twice_in_one_call(store: StateStore) -> None:
    origin = {"flow": "f", "from_side": "source", "reader": "hs", "reader_id": "1"}
    store.record_field_problems_many(
        "zoho", [("k1", origin, [_problem("industry")]), ("k1", origin, [])]
    )
    assert store.field_problems() == []
    assert [r.field for r in store.field_problems(status="resolved")] == ["industry"]


def test_credentials_expire(store: StateStore, clock: FakeClock) -> None:
    store.put_credential("key", "sealed-value", T0 + timedelta(seconds=60))
    assert store.get_credential("key") == ("sealed-value", T0 + timedelta(seconds=60))
    clock.advance(61)
    assert store.get_credential("key") is None


def test_claim_links_keeps_the_first_claim_and_never_links_a_lead_twice(
    store: StateStore,
) -> None:
    assert store.claim_links("hs", {"1": "k1"}) == {"1": "k1"}
    # the record is another process's already: its lead is answered
    assert store.claim_links("hs", {"1": "k2", "2": "k3"}) == {"1": "k1", "2": "k3"}
    # a lead linked to one record of the connection gets no second one there
    assert store.claim_links("hs", {"9": "k1"}) == {}
    assert store.external_id_for("k1", "hs") == "1"
