"""The state store: everything leadrelay must remember between runs, in one database.

SQLite (``sqlite:///leadrelay.db``, WAL) by default; PostgreSQL by URL
(``postgresql+psycopg://…``) with no code change. Built on SQLAlchemy Core with generic column
types only.

Tables and what they are for:

``inbox``
    Captured submissions, stored before the capture service answers 2xx. ``dedupe_key`` is
    unique, so a replayed notification (the same Meta ``leadgen_id``) is stored once. Sync
    workers *claim* batches of pending rows with a claim token; a claim older than its expiry is
    taken over, so a crashed worker never strands a lead.
``ledger``
    One row per (lead key, destination connection): received → written → verified (or failed),
    with times, form and source, for the report of what arrived and what is missing.
``links`` and ``identities``
    Lead key ↔ (connection, external id), unique both ways; and normalized email → lead key, so a
    lead seen again from another source finds its key.
``cursors``
    Per (flow, connection) read position. Move it in the same transaction as the page's ledger
    and links (see below), so a cursor never runs ahead of what was committed.
``fingerprints``
    (connection, external id) → fingerprint of the values leadrelay last wrote, to recognize its
    own writes when they come back (echo suppression).
``dead_letters``
    Records a system refused, with the system's own reason, for ``leadrelay dlq``.
``runs``
    One row per ``leadrelay sync`` run: status, counts, and a list of events.
``flow_parts`` and ``flow_part_claims``
    A large flow's pages split into part jobs on PostgreSQL (:mod:`leadrelay.sync.parts`): per
    run and pass, each page's records, the cursor after it, its status and lease; and the lead
    keys (hashed) each running part holds, so two parts never write one person at once.
``locks``
    Named locks (``"sync"``) held by a random token (hostname and pid are kept to name the
    holder), alive only while its heartbeat is younger than its TTL.

Transactions: every method that writes takes an optional keyword ``conn``. Without it the method
runs in its own transaction. To make several writes atomic (the sync engine's "ledger + links +
fingerprints + cursor" for one page) open ``store.transaction()`` and pass its connection::

    with store.transaction() as conn:
        store.mark_written_many(rows, conn=conn)
        store.link_many("sf", links, conn=conn)
        store.put_fingerprints("sf", fingerprints, conn=conn)
        store.set_cursor("hs-to-sf", "hs", next_cursor, conn=conn)

Read methods accept the same ``conn`` so they can see the transaction's own writes.

Concurrency: on SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (the write lock
is taken up front, so two processes never deadlock upgrading a read lock) and waits up to
``busy_timeout`` for another writer; reads use a plain deferred ``BEGIN`` and never block writers
under WAL. On PostgreSQL, claims and lock take-overs are conditional updates, so two workers
cannot both win.

All times are timezone-aware UTC, also on SQLite (which stores them naive).
Payloads may hold personal data; nothing here logs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from leadrelay.sync.writerqueue import WriterQueue, lock_path_for

if TYPE_CHECKING:
    from leadrelay.config import Config

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "DeadLetterStatus",
    "FieldProblemRow",
    "FlowPart",
    "InboxItem",
    "InboxPut",
    "InboxStatus",
    "LedgerCount",
    "LedgerRow",
    "LedgerState",
    "LinkConflictError",
    "LockHolder",
    "LockInfo",
    "PartLost",
    "PartStatus",
    "Run",
    "RunStatus",
    "SchemaVersionError",
    "StateError",
    "StateStore",
    "StoreLock",
    "open_state",
]

SCHEMA_VERSION = 1
"""The schema version this code writes and understands."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite connection waits for another process's write lock before failing."""

_IN_CHUNK = 500
"""Largest IN (…) list sent at once; keeps far below SQLite's bound-parameter limit."""

#: The columns of a captured submission's inbox row (:meth:`StateStore.put_inbox`).
_INBOX_COLUMNS = (
    "key",
    "form",
    "source",
    "payload",
    "dedupe_key",
    "is_test",
    "received_at",
    "status",
    "attempts",
)

#: The columns of a lead's ``received`` ledger row (:meth:`StateStore.mark_received_many`).
_RECEIVED_COLUMNS = ("lead_key", "destination", "form", "source", "state", "received_at", "is_test")

#: The columns of a refused field's row in :meth:`StateStore.record_field_problems_many`.
_REFUSE_COLUMNS = (
    "lead_key",
    "connection",
    "field",
    "system_field",
    "value",
    "reason",
    "action",
    "stage",
    "flow",
    "origin",
    "first_seen",
    "last_seen",
)

_READ_ONLY = "leadrelay_read_only"

_PARTS_LOCK = 0x70617274
"""First key of the advisory locks that serialize one run's part bookkeeping ("part")."""

T = TypeVar("T")


class StateError(Exception):
    """A state-store operation could not be done as asked."""


class SchemaVersionError(StateError):
    """The database's schema is newer than this leadrelay understands."""


class LinkConflictError(StateError):
    """A link would silently move an external id or a lead to another partner."""


class InboxStatus(StrEnum):
    """Delivery status of a captured submission."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class LedgerState(StrEnum):
    """Where a lead stands with one destination."""

    RECEIVED = "received"
    WRITTEN = "written"
    VERIFIED = "verified"
    FAILED = "failed"


class DeadLetterStatus(StrEnum):
    """What became of a dead letter."""

    OPEN = "open"
    RETRIED = "retried"
    DROPPED = "dropped"
    RESOLVED = "resolved"


class PartLost(StateError):
    """A flow part is no longer this holder's: its lease ran out and another took it over, or
    its run ended."""


class PartStatus(StrEnum):
    """Where one part of a split flow stands (:mod:`leadrelay.sync.parts`)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    #: its run ended before the part ran (the next run reads its page again)
    ABANDONED = "abandoned"


class RunStatus(StrEnum):
    """Outcome of a sync run."""

    RUNNING = "running"
    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"
    ABORTED = "aborted"


# ---------------------------------------------------------------------------------------------
# Schema


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    Refuses naive datetimes on the way in; SQLite hands back naive values, which are read as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

meta_table = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

inbox_table = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False, unique=True),
    sa.Column("form", sa.String(255), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("dedupe_key", sa.String(255), nullable=False, unique=True),
    sa.Column("is_test", sa.Boolean, nullable=False, default=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("claim_token", sa.String(64), nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Index("ix_inbox_status_id", "status", "id"),
)

ledger_table = sa.Table(
    "ledger",
    metadata,
    sa.Column("lead_key", sa.String(64), primary_key=True),
    sa.Column("destination", sa.String(255), primary_key=True),
    sa.Column("form", sa.String(255), nullable=True),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("written_at", UTCDateTime, nullable=True),
    sa.Column("verified_at", UTCDateTime, nullable=True),
    sa.Column("failed_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("is_test", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_ledger_received_at", "received_at"),
)

links_table = sa.Table(
    "links",
    metadata,
    sa.Column("connection", sa.String(255), primary_key=True),
    sa.Column("external_id", sa.String(255), primary_key=True),
    sa.Column("lead_key", sa.String(64), nullable=False),
    sa.Column("linked_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("lead_key", "connection", name="uq_links_lead_key_connection"),
)

identities_table = sa.Table(
    "identities",
    metadata,
    sa.Column("email", sa.String(320), primary_key=True),
    sa.Column("lead_key", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

cursors_table = sa.Table(
    "cursors",
    metadata,
    sa.Column("flow", sa.String(255), primary_key=True),
    sa.Column("connection", sa.String(255), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

fingerprints_table = sa.Table(
    "fingerprints",
    metadata,
    sa.Column("connection", sa.String(255), primary_key=True),
    sa.Column("external_id", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(255), nullable=False),
    sa.Column("written_at", UTCDateTime, nullable=False),
)

dead_letters_table = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("lead_key", sa.String(64), nullable=True),
    sa.Column("flow", sa.String(255), nullable=True),
    sa.Column("connection", sa.String(255), nullable=False),
    sa.Column("system", sa.String(64), nullable=False),
    sa.Column("record_ref", sa.String(512), nullable=False),
    sa.Column("field", sa.String(255), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_attempt_at", UTCDateTime, nullable=False),
    sa.Index("ix_dead_letters_status", "status"),
)

runs_table = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow", sa.String(1024), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stats", sa.JSON, nullable=False),
    sa.Column("log", sa.JSON, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
)

locks_table = sa.Table(
    "locks",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("ttl_s", sa.Integer, nullable=False),
)

tombstones_table = sa.Table(
    "tombstones",
    metadata,
    # A record deleted (or merged away) in a system: leadrelay never re-creates it (§7.4a).
    sa.Column("connection", sa.String(255), primary_key=True),
    sa.Column("external_id", sa.String(255), primary_key=True),
    sa.Column("lead_key", sa.String(64), nullable=True, index=True),
    sa.Column("merged_into", sa.String(255), nullable=True),
    sa.Column("deleted_at", UTCDateTime, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
)

field_clock_table = sa.Table(
    "field_clock",
    metadata,
    # Per lead and two-way field: the value every system was last brought to, and when that
    # value was set where it came from. A value leadrelay copied into a system keeps its origin's
    # time, so "the later change wins" never counts leadrelay's own writes as changes.
    sa.Column("lead_key", sa.String(64), primary_key=True),
    sa.Column("field", sa.String(255), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("changed_at", UTCDateTime, nullable=False),
)

baselines_table = sa.Table(
    "baselines",
    metadata,
    # Per flow and lead: the values each side held when the flow last synced it (the base of
    # a three-way merge, DESIGN §7.4).
    sa.Column("flow", sa.String(255), primary_key=True),
    sa.Column("lead_key", sa.String(64), primary_key=True),
    sa.Column("source", sa.JSON, nullable=False),
    sa.Column("destination", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

field_problems_table = sa.Table(
    "field_problems",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("lead_key", sa.String(64), nullable=False),
    sa.Column("connection", sa.String(255), nullable=False),
    sa.Column("field", sa.String(255), nullable=False),
    sa.Column("system_field", sa.String(255), nullable=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    # mapping / check / system: where the value was refused (what a replay waits for)
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("flow", sa.String(255), nullable=True),
    # How to send the lead again once the destination accepts the value (reader + id, or the
    # capture inbox key).
    sa.Column("origin", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("count", sa.Integer, nullable=False, default=1),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.UniqueConstraint("lead_key", "connection", "field", name="uq_field_problems_lead_field"),
    sa.Index("ix_field_problems_status_connection", "status", "connection"),
)

credentials_table = sa.Table(
    "credentials",
    metadata,
    # A hash naming what the credential is for (never the secret itself).
    sa.Column("key", sa.String(64), primary_key=True),
    # Fernet-sealed JSON (leadrelay.connectors.credentials): opaque without the client secret.
    sa.Column("sealed", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

journal_table = sa.Table(
    "journal",
    metadata,
    # A lead's events as they happen (leadrelay.journal): every write with its field-level diff
    # and the API call it went in, the score and routing, SLA clocks, normalization repairs,
    # dedupe decisions. Redacted before it is stored; pruned after [state] retention_days.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("lead_key", sa.String(64), nullable=False, index=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("system", sa.String(255), nullable=False),
    sa.Column("record_id", sa.String(255), nullable=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Index("ix_journal_system_record", "system", "record_id"),
)

#: How long a rate-budget slot stays taken by a call that never ends (its process died).
_IN_FLIGHT_S = 600.0

rate_budget_table = sa.Table(
    "rate_budget",
    metadata,
    # One rolling window per CRM account and limit (a hash; see connectors.policy.account_key),
    # shared by every process on this store so that together they stay under the API's limit:
    # as many slots as the limit allows calls, each free one window after its last call ended.
    # Times are the database's clock, in epoch seconds.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
    # When the slot's last call ended (or later, while the API asked to wait).
    sa.Column("used_at", sa.Float, nullable=False),
    # While a call holds the slot: when it is given up if the call never ends (a dead process).
    sa.Column("taken_until", sa.Float, nullable=True),
)

flow_parts_table = sa.Table(
    "flow_parts",
    metadata,
    # One page of a split flow's pass (phase: the side read, "source" or "destination"). Parts
    # are numbered in read order; a part made of records handed over by another has the page
    # it came from as ``origin`` and runs only after the parts in ``wait_for`` are done.
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("phase", sa.String(16), primary_key=True),
    sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("flow", sa.String(255), nullable=False),
    sa.Column("connection", sa.String(255), nullable=False),
    sa.Column("records", sa.JSON, nullable=False),
    sa.Column("record_ids", sa.JSON, nullable=False),
    sa.Column("deleted", sa.JSON, nullable=False),
    sa.Column("cursor", sa.Text, nullable=True),
    sa.Column("origin", sa.Integer, nullable=True),
    sa.Column("wait_for", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("holder", sa.String(128), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("stats", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

flow_part_claims_table = sa.Table(
    "flow_part_claims",
    metadata,
    # A lead key (or record, or identity e-mail) a running part writes, hashed: held until the
    # part is done, so another part meeting the same person hands that record on instead.
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("claim", sa.String(64), primary_key=True),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("part", sa.Integer, nullable=False),
)

Migration = Callable[[Connection], None]

MIGRATIONS: dict[int, list[Migration]] = {}
"""Forward migrations: ``MIGRATIONS[n]`` turns a version ``n - 1`` database into version ``n``.

Version 1 is created from :data:`metadata` directly, so it has no entry. When the schema
changes, bump :data:`SCHEMA_VERSION`, change the tables above, and add the DDL steps here.
"""


# ---------------------------------------------------------------------------------------------
# Return types


class InboxPut(NamedTuple):
    """Result of :meth:`StateStore.put_inbox`: the stored key and whether this call stored it."""

    key: str
    created: bool


@dataclass(frozen=True)
class InboxItem:
    """A captured submission waiting for (or done with) delivery."""

    key: str
    form: str
    source: str
    payload: dict[str, Any]
    dedupe_key: str
    is_test: bool
    received_at: datetime
    status: InboxStatus
    attempts: int
    last_error: str | None
    delivered_at: datetime | None
    claim_token: str | None
    claimed_at: datetime | None


@dataclass(frozen=True)
class LedgerRow:
    """One lead's standing with one destination."""

    lead_key: str
    destination: str
    form: str | None
    source: str | None
    state: LedgerState
    external_id: str | None
    received_at: datetime
    written_at: datetime | None
    verified_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    is_test: bool


@dataclass(frozen=True)
class LedgerCount:
    """A count of ledger rows; ``day`` (UTC day received) is set when counted by day."""

    form: str | None
    source: str | None
    destination: str
    state: LedgerState
    count: int
    day: date | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A record a system refused, with the system's own reason."""

    id: int
    lead_key: str | None
    flow: str | None
    connection: str
    system: str
    record_ref: str
    field: str | None
    reason: str
    payload: dict[str, Any]
    attempts: int
    status: DeadLetterStatus
    created_at: datetime
    last_attempt_at: datetime


@dataclass(frozen=True)
class FieldProblemRow:
    """A field of a lead that a destination refused; the lead was written without it (or with
    its fallback). Open until a later write of the lead carries the field."""

    id: int
    lead_key: str
    connection: str
    field: str
    system_field: str | None
    value: Any
    reason: str
    action: str
    stage: str
    flow: str | None
    origin: dict[str, Any]
    status: str
    count: int
    first_seen: datetime
    last_seen: datetime

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``runs show`` / ``sync --json``."""
        return {
            "lead": self.lead_key,
            "connection": self.connection,
            "field": self.field,
            "system_field": self.system_field,
            "value": self.value,
            "reason": self.reason,
            "action": self.action,
            "stage": self.stage,
            "flow": self.flow,
            "status": self.status,
            "count": self.count,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


@dataclass(frozen=True)
class Run:
    """One sync run. ``flow`` holds the flow names joined by commas."""

    id: int
    flow: str
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    stats: dict[str, Any]
    log: list[dict[str, Any]]
    dry_run: bool

    @property
    def flows(self) -> list[str]:
        """The flow names of this run."""
        return [name for name in self.flow.split(",") if name]


@dataclass(frozen=True)
class FlowPart:
    """One part of a split flow's pass: a page's records (``deleted`` as
    :meth:`~leadrelay.sync.parts.deletion_row` dicts) and where it stands."""

    run_id: int
    phase: str
    part: int
    flow: str
    connection: str
    records: list[dict[str, Any]]
    record_ids: list[str | None]
    deleted: list[dict[str, Any]]
    cursor: str | None
    origin: int | None
    wait_for: list[int]
    status: PartStatus
    holder: str | None
    attempts: int
    stats: dict[str, Any] | None
    error: str | None

    @property
    def page(self) -> int:
        """The read-order number of the page its records came from."""
        return self.part if self.origin is None else self.origin


#: Claims computed for a part: per record, and per deletion, the keys it writes.
PartClaims = tuple[list[set[str]], list[set[str]]]


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or wants) a lock: a process on a host, told apart by a random token."""

    hostname: str
    pid: int
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @classmethod
    def this_process(cls) -> LockHolder:
        """A new holder identity for the calling process."""
        return cls(hostname=socket.gethostname(), pid=os.getpid())


@dataclass(frozen=True)
class LockInfo:
    """The current holder of a named lock."""

    name: str
    holder: LockHolder
    acquired_at: datetime
    heartbeat_at: datetime
    ttl_s: int

    def describe(self) -> str:
        """A one-line description for an error message ("held by host pid 12 since …")."""
        return (
            f"lock {self.name!r} held by {self.holder.hostname} pid {self.holder.pid} "
            f"since {self.acquired_at.isoformat()}, last heartbeat {self.heartbeat_at.isoformat()}"
        )


# ---------------------------------------------------------------------------------------------
# Helpers


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _normalize_email(email: str) -> str:
    return email.strip().lower()


class _ValueList(sa.types.TypeDecorator[Sequence[Any]]):
    """A list of values bound as ONE parameter (:func:`_among`): an array on PostgreSQL, a
    JSON array on SQLite (read there with ``json_each``)."""

    impl = sa.types.String
    cache_ok = True

    def __init__(self, item: sa.types.TypeEngine[Any]) -> None:
        super().__init__()
        self.item = item

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(pg_dialect.ARRAY(self.item))
        return dialect.type_descriptor(sa.types.String())

    def process_bind_param(self, value: Sequence[Any] | None, dialect: sa.Dialect) -> Any:
        values = list(value or ())
        return values if dialect.name == "postgresql" else json.dumps(values)


def _among(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """``column IN :values``, the values bound as ONE parameter named ``values``: ``= ANY(array)``
    on PostgreSQL, ``IN (SELECT value FROM json_each(…))`` on SQLite (an index on ``column`` is
    still used). SQLAlchemy renders an ``IN`` of N parameters again on every execution (its
    "expanding" parameters); a statement built with this one (:func:`_prepared`) is built and
    compiled once, whatever the number of values."""
    bound = sa.bindparam("values", type_=_ValueList(column.type))
    if dialect == "postgresql":
        return column == sa.any_(bound)
    each = sa.func.json_each(bound).table_valued("value")
    return column.in_(sa.select(each.c.value).scalar_subquery())


_Built = TypeVar("_Built", bound=sa.Executable)
#: Statements built once per dialect (:func:`_prepared`).
_PREPARED: dict[tuple[str, str], Any] = {}


def _prepared(
    c: Connection, name: str, build: Callable[[Callable[[sa.ColumnElement[Any]], Any]], _Built]
) -> _Built:
    """The statement ``name``, built on first use for this connection's dialect and kept:
    ``build`` is given :func:`_among` for the dialect. A statement built per call costs more
    CPU to build (and to make its cache key) than to run for a page's keys."""
    dialect = c.dialect.name
    stmt = _PREPARED.get((name, dialect))
    if stmt is None:
        stmt = _PREPARED[name, dialect] = build(lambda column: _among(dialect, column))
    return stmt


class JsonDocument(dict[str, Any]):
    """A JSON object with its serialized text, made once: a JSON column of a bulk statement
    (:meth:`StateStore.add_journal`) stores ``text`` as it is instead of serializing the
    object again. ``text`` must be the object's JSON; the object is final once made."""

    __slots__ = ("text",)

    def __init__(self, value: Mapping[str, Any], text: str) -> None:
        super().__init__(value)
        self.text = text


def _json_bind(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A JSON column's bind processing that passes a :class:`JsonDocument`'s text on."""

    def process(value: Any) -> Any:
        if type(value) is JsonDocument:
            return value.text
        return processor(value)

    return process


class _Bulk:
    """An INSERT (or upsert) of rows given as tuples in ``columns`` order, compiled once per
    store and sent with the driver's ``executemany``.

    SQLAlchemy's ``execute(stmt, rows)`` rebuilds every row's parameters and looks up and runs
    each column's bind processing per row; here the processing of each column (JSON
    serialization, UTC datetimes, and the dialect's own) is looked up once, a datetime shared by
    the rows (a page's one timestamp) is processed once per call, and the rows go to the driver
    as they are. The values sent are those SQLAlchemy would send: the same processors.
    """

    def __init__(self, stmt: sa.Insert, columns: Sequence[str], dialect: sa.Dialect) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(columns), for_executemany=True)
        self.sql = str(compiled)
        self.width = len(columns)
        binds = compiled.binds
        missing = [name for name in columns if name not in binds]
        if missing:
            raise StateError(f"bulk statement has no parameter for {', '.join(missing)}")
        processors: list[tuple[int, Callable[[Any], Any], bool]] = []
        for index, name in enumerate(columns):
            kind = binds[name].type
            processor = kind.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                apply = _json_bind(processor) if isinstance(kind, sa.JSON) else processor
                processors.append((index, apply, isinstance(kind, UTCDateTime)))
        self.processors = tuple(processors)
        constants: dict[str, Any] = {}
        for name, bind in binds.items():
            if name in columns:
                continue
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            value = bind.effective_value
            constants[name] = processor(value) if processor is not None else value
        self.columns = tuple(columns)
        self.constants = constants
        #: Positional drivers (SQLite): where each of the statement's parameters comes from, a
        #: column's index or a constant; None when they are the columns in order.
        self.order: tuple[tuple[int, Any], ...] | None = None
        self.positional = bool(dialect.positional)
        if self.positional:
            names = list(compiled.positiontup or ())
            index_of = {name: index for index, name in enumerate(columns)}
            if names != list(columns):
                self.order = tuple(
                    (index_of[name], None) if name in index_of else (-1, constants[name])
                    for name in names
                )

    def execute(self, conn: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """Send ``rows`` (each a tuple in the columns' order) in one ``executemany``."""
        params = self._params(rows)
        if params:
            conn.exec_driver_sql(self.sql, params)

    def execute_one(self, conn: Connection, row: Sequence[Any]) -> sa.CursorResult[Any]:
        """Send one row; the result (the rows of a ``RETURNING``)."""
        [params] = self._params([row])
        return conn.exec_driver_sql(self.sql, params)

    def _params(self, rows: Iterable[Sequence[Any]]) -> list[Any]:
        """The driver's parameters of ``rows``: each column processed as SQLAlchemy would."""
        prepared: list[list[Any]] = []
        memos: dict[int, dict[datetime, Any]] = {}
        for row in rows:
            if len(row) != self.width:
                raise StateError(f"bulk row of {len(row)} values for {self.width} columns")
            values = list(row)
            try:
                for index, processor, is_time in self.processors:
                    value = values[index]
                    if is_time:
                        memo = memos.setdefault(index, {})
                        done = memo.get(value)
                        if done is None:
                            done = memo[value] = processor(value)
                        values[index] = done
                    else:
                        values[index] = processor(value)
            except (TypeError, ValueError) as exc:
                # As SQLAlchemy's own execute reports a value its type refuses (a naive datetime).
                raise sa.exc.StatementError(
                    f"({type(exc).__module__}.{type(exc).__name__}) {exc}", self.sql, None, exc
                ) from exc
            prepared.append(values)
        if not prepared:
            return []
        params: list[Any]
        if not self.positional:
            columns, constants = self.columns, self.constants
            params = [
                {**constants, **dict(zip(columns, values, strict=True))} for values in prepared
            ]
        elif self.order is None:
            params = [tuple(values) for values in prepared]
        else:
            order = self.order
            params = [
                tuple(values[index] if index >= 0 else constant for index, constant in order)
                for values in prepared
            ]
        return params


def _install_sqlite_listeners(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite would otherwise defer it and
        # upgrade read locks to write locks mid-transaction, which deadlocks between processes).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_url(parsed: sa.URL) -> sa.URL:
    """``postgres://`` and ``postgresql://`` (no driver named) use psycopg 3, the driver the
    ``leadrelay[postgres]`` extra installs."""
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql") and driver in ("", "psycopg"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StateError(
                "a PostgreSQL state store needs its driver: pip install 'leadrelay[postgres]'"
            ) from None
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "postgres":
        return parsed.set(drivername=f"postgresql+{driver}")
    return parsed


def _make_engine(url: str | sa.URL, *, pool_size: int = 5) -> Engine:
    parsed = _postgres_url(sa.make_url(url))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            engine = sa.create_engine(
                parsed,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
        else:
            engine = sa.create_engine(parsed)
        _install_sqlite_listeners(engine)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)


# ---------------------------------------------------------------------------------------------
# The store


class StateStore:
    """leadrelay's state in one database, opened by SQLAlchemy URL.

    Creates the schema when the database is empty, migrates it forward when older, and refuses
    a database written by a newer leadrelay (:class:`SchemaVersionError`). ``clock`` returns the
    current aware UTC time; tests pass their own.
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        clock: Callable[[], datetime] = _utcnow,
        pool_size: int = 5,
    ) -> None:
        self._engine = _make_engine(url, pool_size=pool_size)
        self._read_engine = self._engine.execution_options(**{_READ_ONLY: True})
        self._clock = clock
        self._dialect = self._engine.dialect.name
        self._bulks: dict[str, _Bulk] = {}
        # SQLite has one writer at a time. Threads and processes queue here for it instead of
        # in SQLite's busy handler, whose sleeps grow to 100 ms. PostgreSQL needs no queue.
        self._writer: WriterQueue | None = (
            WriterQueue(
                lock_path_for(self._engine.url.database),
                timeout_s=SQLITE_BUSY_TIMEOUT_MS / 1000,
            )
            if self._dialect == "sqlite"
            else None
        )
        if self._dialect not in ("sqlite", "postgresql"):
            self._engine.dispose()
            raise StateError(
                f"state store URL uses {self._dialect!r}; supported are sqlite and postgresql"
            )
        try:
            self._ensure_schema()
        except BaseException:
            self._engine.dispose()
            raise

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        """The store's clock (aware UTC)."""
        value = self._clock()
        if value.tzinfo is None:
            raise StateError("the state store clock returned a naive datetime")
        return value.astimezone(UTC)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction; pass the connection as ``conn=`` to make several calls atomic.

        Commits when the block ends, rolls back when it raises.
        """
        with self._writing(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reading only: it neither waits for nor holds SQLite's writer, so a
        long read (streamed rows) never delays a capture request's write."""
        with self._read(None) as conn:
            yield conn

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this process's SQLite writer queue (nothing on PostgreSQL)."""
        if self._writer is None:
            yield
            return
        with self._writer:
            yield

    @contextmanager
    def _write(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        with self._writing(), self._engine.begin() as own:
            yield own

    @contextmanager
    def _read(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        with self._read_engine.connect() as own:
            yield own

    def _insert(self, table: sa.Table) -> Any:
        if self._dialect == "postgresql":
            return pg_dialect.insert(table)
        return sqlite_dialect.insert(table)

    def _bulk(self, name: str, build: Callable[[], sa.Insert], columns: Sequence[str]) -> _Bulk:
        """The bulk statement ``name`` (built and compiled on first use, then kept)."""
        bulk = self._bulks.get(name)
        if bulk is None:
            bulk = self._bulks[name] = _Bulk(build(), columns, self._engine.dialect)
        return bulk

    def _replacing(self, table: sa.Table, keys: Sequence[str], columns: Sequence[str]) -> _Bulk:
        """The bulk upsert of ``columns`` into ``table`` that replaces, on a row with the same
        ``keys``, every other column with the new row's value (kept under the table's name)."""

        def build() -> sa.Insert:
            insert = self._insert(table)
            upsert: sa.Insert = insert.on_conflict_do_update(
                index_elements=[table.c[key] for key in keys],
                set_={name: insert.excluded[name] for name in columns if name not in keys},
            )
            return upsert

        return self._bulk(table.name, build, columns)

    # -- schema --------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._read(None) as conn:
            value = conn.scalar(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            )
        if value is None:
            raise StateError("the state database has no schema_version")
        return int(value)

    def _ensure_schema(self) -> None:
        with self._engine.begin() as conn:
            if self._dialect == "postgresql":
                # Two processes opening an empty database at once: one creates, the other waits.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(0x1EAD7E1A)))
            if not sa.inspect(conn).has_table(meta_table.name):
                metadata.create_all(conn)
                conn.execute(
                    meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )
                return
            raw = conn.scalar(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            )
            if raw is None:
                raise StateError(f"state database {self.url} has a meta table but no version")
            version = int(raw)
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"state database {self.url} has schema version {version}, but this leadrelay "
                    f"understands up to {SCHEMA_VERSION}; upgrade leadrelay to use it"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for migrate in MIGRATIONS.get(step, []):
                    migrate(conn)
            # A table added since the database was made is created here; a column added to an
            # existing table still needs a step in MIGRATIONS.
            metadata.create_all(conn, checkfirst=True)
            if version < SCHEMA_VERSION:
                conn.execute(
                    meta_table.update()
                    .where(meta_table.c.key == "schema_version")
                    .values(value=str(SCHEMA_VERSION))
                )

    # -- inbox ---------------------------------------------------------------------------------

    # The capture service's statements, built and compiled once per store (``_bulk``):
    # building an upsert and its ``excluded`` columns cost more CPU than running it.
    def _inbox_insert(self) -> sa.Insert:
        insert: sa.Insert = (
            self._insert(inbox_table)
            .on_conflict_do_nothing(index_elements=[inbox_table.c.dedupe_key])
            .returning(inbox_table.c.key)
        )
        return insert

    def _ledger_received_upsert(self) -> sa.Insert:
        stmt = self._insert(ledger_table)
        upsert: sa.Insert = stmt.on_conflict_do_update(
            index_elements=[ledger_table.c.lead_key, ledger_table.c.destination],
            set_={
                "form": sa.func.coalesce(ledger_table.c.form, stmt.excluded.form),
                "source": sa.func.coalesce(ledger_table.c.source, stmt.excluded.source),
            },
        )
        return upsert

    def put_inbox(
        self,
        *,
        key: str,
        form: str,
        source: str,
        payload: Mapping[str, Any],
        dedupe_key: str,
        is_test: bool = False,
        received_at: datetime | None = None,
        conn: Connection | None = None,
    ) -> InboxPut:
        """Store a captured submission once per ``dedupe_key``.

        Returns the stored key and ``created=True``; for a replay (same ``dedupe_key``) the key
        stored the first time and ``created=False``.
        """
        row = (
            key,
            form,
            source,
            dict(payload),
            dedupe_key,
            is_test,
            received_at or self.now(),
            InboxStatus.PENDING.value,
            0,
        )
        insert = self._bulk("inbox:insert", self._inbox_insert, _INBOX_COLUMNS)
        with self._write(conn) as c:
            try:
                result = insert.execute_one(c, row)
            except sa.exc.IntegrityError as exc:
                raise StateError(
                    f"inbox key {key!r} is already stored under another dedupe key"
                ) from exc
            if result.first() is not None:
                return InboxPut(key, True)
            existing = c.scalar(
                sa.select(inbox_table.c.key).where(inbox_table.c.dedupe_key == dedupe_key)
            )
        if existing is None:
            raise StateError(f"inbox row for dedupe key {dedupe_key!r} vanished during insert")
        return InboxPut(str(existing), False)

    def get_inbox(self, key: str, *, conn: Connection | None = None) -> InboxItem | None:
        """The inbox row for a lead key, or None."""
        with self._read(conn) as c:
            row = c.execute(sa.select(inbox_table).where(inbox_table.c.key == key)).first()
        return None if row is None else _inbox_item(row)

    def claim_inbox(
        self,
        *,
        limit: int = 100,
        claim_ttl_s: float = 30.0,
        conn: Connection | None = None,
    ) -> list[InboxItem]:
        """Claim up to ``limit`` pending rows, oldest first, for one delivery worker.

        A row is claimed by one caller only; a claim not renewed (:meth:`renew_inbox_claim`)
        for ``claim_ttl_s`` (its worker died) is taken over. The returned items carry the
        ``claim_token`` to pass to ``mark_*``.
        """
        if limit <= 0:
            return []
        token = secrets.token_hex(16)
        now = self.now()
        expired = now - timedelta(seconds=claim_ttl_s)
        claimable = sa.and_(
            inbox_table.c.status == InboxStatus.PENDING.value,
            sa.or_(inbox_table.c.claim_token.is_(None), inbox_table.c.claimed_at < expired),
        )
        candidates = (
            sa.select(inbox_table.c.id)
            .where(claimable)
            .order_by(inbox_table.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._write(conn) as c:
            # Select, then update by id: on PostgreSQL the selected rows stay locked until commit
            # and rows other workers hold are skipped; on SQLite the transaction holds the write
            # lock. (An UPDATE … WHERE id IN (SELECT … LIMIT n) may update more than n rows on
            # PostgreSQL when the planner re-runs the sub-select.)
            ids = list(c.scalars(candidates))
            if not ids:
                return []
            c.execute(
                inbox_table.update()
                .where(claimable, inbox_table.c.id.in_(ids))
                .values(claim_token=token, claimed_at=now)
            )
            rows = c.execute(
                sa.select(inbox_table)
                .where(inbox_table.c.claim_token == token)
                .order_by(inbox_table.c.id)
            ).all()
        return [_inbox_item(row) for row in rows]

    def renew_inbox_claim(self, claim_token: str, *, conn: Connection | None = None) -> int:
        """Heartbeat of a delivery worker: restart the lease of the pending rows it holds under
        ``claim_token``; returns how many it still holds (0: taken over or all settled)."""
        with self._write(conn) as c:
            result = c.execute(
                inbox_table.update()
                .where(
                    inbox_table.c.claim_token == claim_token,
                    inbox_table.c.status == InboxStatus.PENDING.value,
                )
                .values(claimed_at=self.now())
            )
        return int(result.rowcount)

    def mark_inbox_delivered(
        self,
        keys: Iterable[str],
        *,
        claim_token: str | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Mark pending rows delivered; returns how many changed.

        With ``claim_token`` only rows still held by that claim change, so a worker whose claim
        was taken over does not mark what another worker now owns.
        """
        key_list = list(dict.fromkeys(keys))
        changed = 0
        now = self.now()
        with self._write(conn) as c:
            held = claim_token is not None

            def build(among: Callable[[sa.ColumnElement[Any]], Any]) -> sa.Update:
                stmt = inbox_table.update().where(
                    among(inbox_table.c.key), inbox_table.c.status == InboxStatus.PENDING.value
                )
                if held:
                    stmt = stmt.where(inbox_table.c.claim_token == sa.bindparam("token"))
                return stmt.values(
                    status=InboxStatus.DELIVERED.value,
                    delivered_at=sa.bindparam("now"),
                    attempts=inbox_table.c.attempts + 1,
                    last_error=None,
                    claim_token=None,
                    claimed_at=None,
                )

            stmt = _prepared(c, "inbox:delivered" + (":held" if held else ""), build)
            for chunk in _chunks(key_list):
                params = {"values": chunk, "now": now, "token": claim_token}
                changed += c.execute(stmt, params).rowcount
        return changed

    def mark_inbox_failed(
        self,
        key: str,
        error: str,
        *,
        retry: bool,
        claim_token: str | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Record a failed delivery attempt (attempts + 1, ``last_error``) and release the claim.

        ``retry=True`` leaves the row pending for a later claim; ``retry=False`` marks it failed
        for good. Returns False when the row is not pending (or not held by ``claim_token``).
        """
        stmt = inbox_table.update().where(
            inbox_table.c.key == key, inbox_table.c.status == InboxStatus.PENDING.value
        )
        if claim_token is not None:
            stmt = stmt.where(inbox_table.c.claim_token == claim_token)
        status = InboxStatus.PENDING if retry else InboxStatus.FAILED
        with self._write(conn) as c:
            result = c.execute(
                stmt.values(
                    status=status.value,
                    attempts=inbox_table.c.attempts + 1,
                    last_error=error,
                    claim_token=None,
                    claimed_at=None,
                )
            )
        return result.rowcount == 1

    def requeue_inbox(self, key: str, *, conn: Connection | None = None) -> bool:
        """Put a failed row back to pending (for a manual retry); True if it was failed."""
        with self._write(conn) as c:
            result = c.execute(
                inbox_table.update()
                .where(inbox_table.c.key == key, inbox_table.c.status == InboxStatus.FAILED.value)
                .values(status=InboxStatus.PENDING.value, claim_token=None, claimed_at=None)
            )
        return result.rowcount == 1

    def inbox_counts(self, *, conn: Connection | None = None) -> dict[InboxStatus, int]:
        """Number of inbox rows per status (every status present, zero when none)."""
        counts = dict.fromkeys(InboxStatus, 0)
        with self._read(conn) as c:
            rows = c.execute(
                sa.select(inbox_table.c.status, sa.func.count()).group_by(inbox_table.c.status)
            ).all()
        for status, count in rows:
            counts[InboxStatus(status)] = int(count)
        return counts

    def inbox_counts_by_form(
        self, *, conn: Connection | None = None
    ) -> dict[tuple[str, str, InboxStatus], int]:
        """Number of inbox rows per (form, source, status), in one query.

        The capture service's ``/metrics`` reads delivered and failed counts here, so they are
        right whichever process delivered the leads.
        """
        with self._read(conn) as c:
            rows = c.execute(
                sa.select(
                    inbox_table.c.form,
                    inbox_table.c.source,
                    inbox_table.c.status,
                    sa.func.count(),
                ).group_by(inbox_table.c.form, inbox_table.c.source, inbox_table.c.status)
            ).all()
        return {
            (str(form), str(source), InboxStatus(status)): int(count)
            for form, source, status, count in rows
        }

    # -- ledger --------------------------------------------------------------------------------

    def mark_received(
        self,
        lead_key: str,
        destination: str,
        *,
        form: str | None = None,
        source: str | None = None,
        is_test: bool = False,
        at: datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Record that a lead arrived for a destination (kept as is when already recorded)."""
        self.mark_received_many(
            [lead_key], destination, form=form, source=source, is_test=is_test, at=at, conn=conn
        )

    def mark_received_many(
        self,
        lead_keys: Sequence[str],
        destination: str,
        *,
        form: str | None = None,
        source: str | None = None,
        is_test: bool = False,
        at: datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """:meth:`mark_received` for many leads of one form/source in one statement."""
        if not lead_keys:
            return
        now = at or self.now()
        state = LedgerState.RECEIVED.value
        rows = [
            (key, destination, form, source, state, now, is_test)
            for key in dict.fromkeys(lead_keys)
        ]
        upsert = self._bulk("ledger:received", self._ledger_received_upsert, _RECEIVED_COLUMNS)
        with self._write(conn) as c:
            upsert.execute(c, rows)

    def mark_test(self, lead_key: str, destination: str, *, conn: Connection | None = None) -> bool:
        """Mark a lead's existing ledger row for a destination as a test lead (reports leave it
        out). Returns whether there was such a row; a test lead never becomes a real one."""
        return self.mark_test_many([lead_key], destination, conn=conn) == 1

    def mark_test_many(
        self, lead_keys: Sequence[str], destination: str, *, conn: Connection | None = None
    ) -> int:
        """:meth:`mark_test` for many leads of one destination; the number of rows found."""
        found = 0
        with self._write(conn) as c:
            stmt = _prepared(
                c,
                "ledger:test",
                lambda among: (
                    ledger_table.update()
                    .where(
                        among(ledger_table.c.lead_key),
                        ledger_table.c.destination == sa.bindparam("to"),
                    )
                    .values(is_test=True)
                ),
            )
            for chunk in _chunks(list(dict.fromkeys(lead_keys))):
                params = {"values": chunk, "to": destination}
                found += c.execute(stmt, params).rowcount
        return found

    def mark_written(
        self,
        lead_key: str,
        destination: str,
        external_id: str,
        *,
        at: datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Record that a lead was written to a destination as ``external_id``."""
        self.mark_written_many([(lead_key, external_id)], destination, at=at, conn=conn)

    def mark_written_many(
        self,
        written: Sequence[tuple[str, str]],
        destination: str,
        *,
        at: datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Record ``(lead_key, external_id)`` pairs written to one destination.

        A lead with no ledger row yet gets one (received at the same time). A verified lead stays
        verified; a failed one becomes written.
        """
        if not written:
            return
        now = at or self.now()
        state = LedgerState.WRITTEN.value
        rows = [
            (key, destination, state, external_id, now, now, False)
            for key, external_id in dict(written).items()
        ]

        def build() -> sa.Insert:
            stmt = self._insert(ledger_table)
            upsert: sa.Insert = stmt.on_conflict_do_update(
                index_elements=[ledger_table.c.lead_key, ledger_table.c.destination],
                set_={
                    "state": sa.case(
                        (ledger_table.c.state == LedgerState.VERIFIED.value, ledger_table.c.state),
                        else_=stmt.excluded.state,
                    ),
                    "external_id": stmt.excluded.external_id,
                    "written_at": stmt.excluded.written_at,
                    "last_error": None,
                },
            )
            return upsert

        columns = (
            "lead_key",
            "destination",
            "state",
            "external_id",
            "received_at",
            "written_at",
            "is_test",
        )
        bulk = self._bulk("mark_written", build, columns)
        with self._write(conn) as c:
            bulk.execute(c, rows)

    def mark_verified(
        self,
        lead_key: str,
        destination: str,
        *,
        at: datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Record that a written lead was read back from the destination and checked."""
        with self._write(conn) as c:
            result = c.execute(
                ledger_table.update()
                .where(
                    ledger_table.c.lead_key == lead_key,
                    ledger_table.c.destination == destination,
                    ledger_table.c.state.in_(
                        [LedgerState.WRITTEN.value, LedgerState.VERIFIED.value]
                    ),
                )
                .values(state=LedgerState.VERIFIED.value, verified_at=at or self.now())
            )
        if result.rowcount != 1:
            raise StateError(
                f"lead {lead_key} has not been written to {destination}; cannot mark it verified"
            )

    def mark_failed(
        self,
        lead_key: str,
        destination: str,
        reason: str,
        *,
        at: datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Record that writing a lead to a destination failed.

        A lead already written or verified keeps that state (the failure is kept in
        ``last_error`` and the dead-letter queue); otherwise its state becomes failed.
        """
        now = at or self.now()
        stmt = self._insert(ledger_table).values(
            lead_key=lead_key,
            destination=destination,
            state=LedgerState.FAILED.value,
            received_at=now,
            failed_at=now,
            last_error=reason,
            is_test=False,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[ledger_table.c.lead_key, ledger_table.c.destination],
            set_={
                "state": sa.case(
                    (
                        ledger_table.c.state.in_(
                            [LedgerState.WRITTEN.value, LedgerState.VERIFIED.value]
                        ),
                        ledger_table.c.state,
                    ),
                    else_=stmt.excluded.state,
                ),
                "failed_at": stmt.excluded.failed_at,
                "last_error": stmt.excluded.last_error,
            },
        )
        with self._write(conn) as c:
            c.execute(stmt)

    def ledger_rows(self, lead_key: str, *, conn: Connection | None = None) -> list[LedgerRow]:
        """A lead's ledger rows, one per destination."""
        with self._read(conn) as c:
            rows = c.execute(
                sa.select(ledger_table)
                .where(ledger_table.c.lead_key == lead_key)
                .order_by(ledger_table.c.destination)
            ).all()
        return [_ledger_row(row) for row in rows]

    def ledger_counts(
        self,
        *,
        by_day: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
        include_test: bool = False,
        conn: Connection | None = None,
    ) -> list[LedgerCount]:
        """Ledger rows counted by form, source, destination and state (and UTC day received).

        ``since`` / ``until`` bound ``received_at`` (since inclusive, until exclusive). Test
        leads are left out unless ``include_test``.
        """
        group: list[sa.ColumnElement[Any]] = [
            ledger_table.c.form,
            ledger_table.c.source,
            ledger_table.c.destination,
            ledger_table.c.state,
        ]
        if by_day:
            group.append(self._day_of(ledger_table.c.received_at).label("day"))
        query = sa.select(*group, sa.func.count().label("n")).group_by(*group)
        if not include_test:
            query = query.where(ledger_table.c.is_test.is_(False))
        if since is not None:
            query = query.where(ledger_table.c.received_at >= since)
        if until is not None:
            query = query.where(ledger_table.c.received_at < until)
        with self._read(conn) as c:
            rows = c.execute(query).all()
        counts = [
            LedgerCount(
                form=row.form,
                source=row.source,
                destination=row.destination,
                state=LedgerState(row.state),
                count=int(row.n),
                day=date.fromisoformat(row.day) if by_day else None,
            )
            for row in rows
        ]
        counts.sort(
            key=lambda n: (
                n.day or date.min,
                n.form or "",
                n.source or "",
                n.destination,
                n.state.value,
            )
        )
        return counts

    def _day_of(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        if self._dialect == "postgresql":
            return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD", type_=sa.String)
        # SQLite stores UTC as "YYYY-MM-DD HH:MM:SS.ffffff"; date() keeps the day part.
        return sa.func.date(column, type_=sa.String)

    # -- links and identities ------------------------------------------------------------------

    def link(
        self, lead_key: str, connection: str, external_id: str, *, conn: Connection | None = None
    ) -> None:
        """Link a lead to its record in a connection (idempotent).

        Raises :class:`LinkConflictError` when the external id belongs to another lead or the lead
        already has another record there; use :meth:`relink` to move a link on purpose.
        """
        self.link_many(connection, {lead_key: external_id}, conn=conn)

    def claim_links(
        self, connection: str, links: Mapping[str, str], *, conn: Connection | None = None
    ) -> dict[str, str]:
        """Link ``{external_id: lead_key}`` where neither side is linked yet, atomically, and
        return every external id's owner: a record two processes meet at once is one lead's,
        the first to claim it (race-free identity)."""
        if not links:
            return {}
        now = self.now()
        rows = [
            {"connection": connection, "external_id": ext, "lead_key": key, "linked_at": now}
            for ext, key in links.items()
        ]
        with self._write(conn) as c:
            c.execute(self._insert(links_table).on_conflict_do_nothing(), rows)
            return self._keys_for(c, connection, list(links))

    def link_many(
        self,
        connection: str,
        links: Mapping[str, str],
        *,
        conn: Connection | None = None,
    ) -> None:
        """:meth:`link` for many ``{lead_key: external_id}`` of one connection, all or none."""
        if not links:
            return
        by_external: dict[str, str] = {}
        for key, external_id in links.items():
            other = by_external.setdefault(external_id, key)
            if other != key:
                raise LinkConflictError(
                    f"{connection} record {external_id} given for two leads: {other} and {key}"
                )
        keys = list(links)
        now = self.now()
        with self._write(conn) as c:
            existing_by_ext = self._keys_for(c, connection, list(by_external))
            existing_by_key = self._external_ids_for(c, connection, keys)
            new_rows: list[tuple[str, str, str, datetime]] = []
            for key, external_id in links.items():
                owner = existing_by_ext.get(external_id)
                if owner is not None and owner != key:
                    raise LinkConflictError(
                        f"{connection} record {external_id} is linked to lead {owner}, "
                        f"not {key}; relink it explicitly to move it"
                    )
                current = existing_by_key.get(key)
                if current is not None and current != external_id:
                    raise LinkConflictError(
                        f"lead {key} is linked to {connection} record {current}, "
                        f"not {external_id}; relink it explicitly to move it"
                    )
                if owner is None:
                    new_rows.append((connection, external_id, key, now))
            if new_rows:
                bulk = self._bulk(
                    "links",
                    links_table.insert,
                    ("connection", "external_id", "lead_key", "linked_at"),
                )
                try:
                    bulk.execute(c, new_rows)
                except sa.exc.IntegrityError as exc:
                    raise LinkConflictError(
                        f"{connection} links changed concurrently; retry the batch"
                    ) from exc

    def relink(
        self, lead_key: str, connection: str, external_id: str, *, conn: Connection | None = None
    ) -> None:
        """Link a lead to ``external_id``, removing whatever link either side had (e.g. after a
        merge in the destination)."""
        with self._write(conn) as c:
            c.execute(
                links_table.delete().where(
                    links_table.c.connection == connection,
                    sa.or_(
                        links_table.c.external_id == external_id,
                        links_table.c.lead_key == lead_key,
                    ),
                )
            )
            c.execute(
                links_table.insert().values(
                    connection=connection,
                    external_id=external_id,
                    lead_key=lead_key,
                    linked_at=self.now(),
                )
            )

    def unlink(self, lead_key: str, connection: str, *, conn: Connection | None = None) -> bool:
        """Remove a lead's link to a connection (its record was deleted); True if there was one."""
        with self._write(conn) as c:
            result = c.execute(
                links_table.delete().where(
                    links_table.c.lead_key == lead_key, links_table.c.connection == connection
                )
            )
        return result.rowcount == 1

    def key_for(
        self, connection: str, external_id: str, *, conn: Connection | None = None
    ) -> str | None:
        """The lead key linked to a record of a connection, or None."""
        return self.keys_for_many(connection, [external_id], conn=conn).get(external_id)

    def external_id_for(
        self, lead_key: str, connection: str, *, conn: Connection | None = None
    ) -> str | None:
        """The id of a lead's record in a connection, or None."""
        return self.external_ids_for_many(connection, [lead_key], conn=conn).get(lead_key)

    def keys_for_many(
        self, connection: str, external_ids: Iterable[str], *, conn: Connection | None = None
    ) -> dict[str, str]:
        """``{external_id: lead_key}`` for the linked ones among ``external_ids`` (one query)."""
        with self._read(conn) as c:
            return self._keys_for(c, connection, list(dict.fromkeys(external_ids)))

    def external_ids_for_many(
        self, connection: str, lead_keys: Iterable[str], *, conn: Connection | None = None
    ) -> dict[str, str]:
        """``{lead_key: external_id}`` for the linked ones among ``lead_keys`` (one query)."""
        with self._read(conn) as c:
            return self._external_ids_for(c, connection, list(dict.fromkeys(lead_keys)))

    def links_of(self, lead_key: str, *, conn: Connection | None = None) -> dict[str, str]:
        """``{connection: external_id}`` for every link of a lead."""
        with self._read(conn) as c:
            rows = c.execute(
                sa.select(links_table.c.connection, links_table.c.external_id).where(
                    links_table.c.lead_key == lead_key
                )
            ).all()
        return {row.connection: row.external_id for row in rows}

    @staticmethod
    def _keys_for(c: Connection, connection: str, external_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        stmt = _prepared(
            c,
            "keys_for",
            lambda among: sa.select(links_table.c.external_id, links_table.c.lead_key).where(
                links_table.c.connection == sa.bindparam("connection"),
                among(links_table.c.external_id),
            ),
        )
        for chunk in _chunks(external_ids):
            rows = c.execute(stmt, {"connection": connection, "values": chunk}).all()
            found.update({row.external_id: row.lead_key for row in rows})
        return found

    @staticmethod
    def _external_ids_for(
        c: Connection, connection: str, lead_keys: Sequence[str]
    ) -> dict[str, str]:
        found: dict[str, str] = {}
        stmt = _prepared(
            c,
            "external_ids_for",
            lambda among: sa.select(links_table.c.lead_key, links_table.c.external_id).where(
                links_table.c.connection == sa.bindparam("connection"),
                among(links_table.c.lead_key),
            ),
        )
        for chunk in _chunks(lead_keys):
            rows = c.execute(stmt, {"connection": connection, "values": chunk}).all()
            found.update({row.lead_key: row.external_id for row in rows})
        return found

    def claim_emails(
        self, emails: Mapping[str, str], *, conn: Connection | None = None
    ) -> dict[str, str]:
        """Record ``{email: lead_key}`` where the email is new; return every email's owner.

        An email already known keeps its first lead key, which is returned, so a lead seen again
        from another source (or by a concurrent process) gets the same key. Emails are
        compared lower-cased and stripped; pass the Lead's normalized email.
        """
        wanted: dict[str, str] = {}
        for email, key in emails.items():
            wanted.setdefault(_normalize_email(email), key)
        if not wanted:
            return {}
        now = self.now()

        def build() -> sa.Insert:
            stmt: sa.Insert = self._insert(identities_table).on_conflict_do_nothing(
                index_elements=[identities_table.c.email]
            )
            return stmt

        bulk = self._bulk("identities", build, ("email", "lead_key", "created_at"))
        with self._write(conn) as c:
            bulk.execute(c, [(e, k, now) for e, k in wanted.items()])
            owners = self._find_keys(c, list(wanted))
        return {email: owners[_normalize_email(email)] for email in emails}

    def find_key_by_email(self, email: str, *, conn: Connection | None = None) -> str | None:
        """The lead key known for an email, or None."""
        return self.find_keys_by_emails([email], conn=conn).get(email)

    def find_keys_by_emails(
        self, emails: Iterable[str], *, conn: Connection | None = None
    ) -> dict[str, str]:
        """``{email: lead_key}`` for the known ones among ``emails`` (one query per 500)."""
        email_list = list(dict.fromkeys(emails))
        with self._read(conn) as c:
            found = self._find_keys(c, list({_normalize_email(e) for e in email_list}))
        return {e: found[_normalize_email(e)] for e in email_list if _normalize_email(e) in found}

    @staticmethod
    def _find_keys(c: Connection, emails: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        stmt = _prepared(
            c,
            "find_keys",
            lambda among: sa.select(identities_table.c.email, identities_table.c.lead_key).where(
                among(identities_table.c.email)
            ),
        )
        for chunk in _chunks(emails):
            rows = c.execute(stmt, {"values": chunk}).all()
            found.update({row.email: row.lead_key for row in rows})
        return found

    # -- cursors -------------------------------------------------------------------------------

    def get_cursor(
        self, flow: str, connection: str, *, conn: Connection | None = None
    ) -> str | None:
        """The saved read position of a flow on a connection, or None (read from the start)."""
        with self._read(conn) as c:
            value = c.scalar(
                sa.select(cursors_table.c.value).where(
                    cursors_table.c.flow == flow, cursors_table.c.connection == connection
                )
            )
        return None if value is None else str(value)

    def set_cursor(
        self, flow: str, connection: str, value: str, *, conn: Connection | None = None
    ) -> None:
        """Save a read position; pass the page's transaction as ``conn`` so both commit together."""
        self.set_cursors(flow, {connection: value}, conn=conn)

    def set_cursors(
        self, flow: str, values: Mapping[str, str], *, conn: Connection | None = None
    ) -> None:
        """Save ``{connection: value}`` under ``flow`` in one statement (executemany)."""
        if not values:
            return
        now = self.now()
        bulk = self._replacing(
            cursors_table, ("flow", "connection"), ("flow", "connection", "value", "updated_at")
        )
        with self._write(conn) as c:
            bulk.execute(
                c, [(flow, connection, value, now) for connection, value in values.items()]
            )

    def cursor_updated_at(
        self, flow: str, connection: str, *, conn: Connection | None = None
    ) -> datetime | None:
        """When a cursor was last saved, or None."""
        with self._read(conn) as c:
            value: datetime | None = c.scalar(
                sa.select(cursors_table.c.updated_at).where(
                    cursors_table.c.flow == flow, cursors_table.c.connection == connection
                )
            )
        return value

    def reset_cursors(self, flow: str, *, conn: Connection | None = None) -> int:
        """Forget every cursor of a flow (``sync --full``); returns how many were removed."""
        with self._write(conn) as c:
            result = c.execute(cursors_table.delete().where(cursors_table.c.flow == flow))
        return result.rowcount

    # -- fingerprints --------------------------------------------------------------------------

    def get_fingerprints(
        self, connection: str, external_ids: Iterable[str], *, conn: Connection | None = None
    ) -> dict[str, str]:
        """``{external_id: fingerprint}`` of what leadrelay last wrote, for the known ids."""
        ids = list(dict.fromkeys(external_ids))
        found: dict[str, str] = {}
        with self._read(conn) as c:
            stmt = _prepared(
                c,
                "fingerprints",
                lambda among: sa.select(
                    fingerprints_table.c.external_id, fingerprints_table.c.fingerprint
                ).where(
                    fingerprints_table.c.connection == sa.bindparam("connection"),
                    among(fingerprints_table.c.external_id),
                ),
            )
            for chunk in _chunks(ids):
                rows = c.execute(stmt, {"connection": connection, "values": chunk}).all()
                found.update({row.external_id: row.fingerprint for row in rows})
        return found

    def put_fingerprints(
        self,
        connection: str,
        fingerprints: Mapping[str, str],
        *,
        conn: Connection | None = None,
    ) -> None:
        """Save ``{external_id: fingerprint}`` of values just written (replacing older ones)."""
        if not fingerprints:
            return
        now = self.now()
        columns = ("connection", "external_id", "fingerprint", "written_at")
        bulk = self._replacing(fingerprints_table, ("connection", "external_id"), columns)
        with self._write(conn) as c:
            bulk.execute(c, [(connection, ext, fp, now) for ext, fp in fingerprints.items()])

    # -- dead letters --------------------------------------------------------------------------

    def add_dead_letter(
        self,
        *,
        connection: str,
        system: str,
        record_ref: str,
        reason: str,
        payload: Mapping[str, Any],
        lead_key: str | None = None,
        flow: str | None = None,
        field: str | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Queue a record a system refused, with the system's own ``reason``; returns its id."""
        now = self.now()
        with self._write(conn) as c:
            result = c.execute(
                dead_letters_table.insert().values(
                    lead_key=lead_key,
                    flow=flow,
                    connection=connection,
                    system=system,
                    record_ref=record_ref,
                    field=field,
                    reason=reason,
                    payload=dict(payload),
                    attempts=1,
                    status=DeadLetterStatus.OPEN.value,
                    created_at=now,
                    last_attempt_at=now,
                )
            )
        primary_key = result.inserted_primary_key
        if primary_key is None:
            raise StateError("the database did not return the new dead letter's id")
        return int(primary_key[0])

    def add_capture_dead_letter(
        self,
        *,
        connection: str,
        system: str,
        record_ref: str,
        reason: str,
        payload: Mapping[str, Any],
        lead_key: str,
        field: str | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Queue a captured lead a system refused, or — when the same inbox row already has an
        open dead letter for ``connection`` (a ``dlq retry`` that failed again) — count another
        attempt on that one with the newest reason. Returns the letter's id."""
        with self._write(conn) as c:
            existing = c.execute(
                sa.select(dead_letters_table.c.id).where(
                    dead_letters_table.c.lead_key == lead_key,
                    dead_letters_table.c.flow.is_(None),
                    dead_letters_table.c.connection == connection,
                    dead_letters_table.c.status == DeadLetterStatus.OPEN.value,
                )
            ).first()
            if existing is not None:
                values = {
                    "attempts": dead_letters_table.c.attempts + 1,
                    "last_attempt_at": self.now(),
                    "reason": reason,
                    "field": field,
                    "payload": dict(payload),
                }
                return self._update_dead_letter(int(existing[0]), values, c).id
            return self.add_dead_letter(
                connection=connection,
                system=system,
                record_ref=record_ref,
                reason=reason,
                payload=payload,
                lead_key=lead_key,
                field=field,
                conn=c,
            )

    def get_dead_letter(self, dead_letter_id: int, *, conn: Connection | None = None) -> DeadLetter:
        """One dead letter; :class:`StateError` when there is none with that id."""
        with self._read(conn) as c:
            row = c.execute(
                sa.select(dead_letters_table).where(dead_letters_table.c.id == dead_letter_id)
            ).first()
        if row is None:
            raise StateError(f"no dead letter with id {dead_letter_id}")
        return _dead_letter(row)

    def list_dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = DeadLetterStatus.OPEN,
        flow: str | None = None,
        connection: str | None = None,
        limit: int | None = None,
        conn: Connection | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first; open ones by default (``status=None`` for all)."""
        query = sa.select(dead_letters_table).order_by(dead_letters_table.c.id)
        if status is not None:
            query = query.where(dead_letters_table.c.status == DeadLetterStatus(status).value)
        if flow is not None:
            query = query.where(dead_letters_table.c.flow == flow)
        if connection is not None:
            query = query.where(dead_letters_table.c.connection == connection)
        if limit is not None:
            query = query.limit(limit)
        with self._read(conn) as c:
            rows = c.execute(query).all()
        return [_dead_letter(row) for row in rows]

    def count_dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = DeadLetterStatus.OPEN,
        conn: Connection | None = None,
    ) -> int:
        """How many dead letters have ``status`` (all when None)."""
        query = sa.select(sa.func.count()).select_from(dead_letters_table)
        if status is not None:
            query = query.where(dead_letters_table.c.status == DeadLetterStatus(status).value)
        with self._read(conn) as c:
            return int(c.scalar(query) or 0)

    def bump_dead_letter(
        self,
        dead_letter_id: int,
        *,
        reason: str | None = None,
        conn: Connection | None = None,
    ) -> DeadLetter:
        """Count another failed attempt (a retry that failed again), with the newest reason."""
        values: dict[str, Any] = {
            "attempts": dead_letters_table.c.attempts + 1,
            "last_attempt_at": self.now(),
            "status": DeadLetterStatus.OPEN.value,
        }
        if reason is not None:
            values["reason"] = reason
        return self._update_dead_letter(dead_letter_id, values, conn)

    def mark_dead_letter_retried(
        self, dead_letter_id: int, *, conn: Connection | None = None
    ) -> DeadLetter:
        """A retry wrote the record: status retried."""
        return self._set_dead_letter_status(dead_letter_id, DeadLetterStatus.RETRIED, conn)

    def resolve_dead_letter(
        self, dead_letter_id: int, *, conn: Connection | None = None
    ) -> DeadLetter:
        """Someone fixed it by hand: status resolved."""
        return self._set_dead_letter_status(dead_letter_id, DeadLetterStatus.RESOLVED, conn)

    def drop_dead_letter(
        self, dead_letter_id: int, *, conn: Connection | None = None
    ) -> DeadLetter:
        """Give up on it (``dlq drop``): status dropped."""
        return self._set_dead_letter_status(dead_letter_id, DeadLetterStatus.DROPPED, conn)

    def _set_dead_letter_status(
        self, dead_letter_id: int, status: DeadLetterStatus, conn: Connection | None
    ) -> DeadLetter:
        values: dict[str, Any] = {"status": status.value}
        if status is DeadLetterStatus.RETRIED:
            values["last_attempt_at"] = self.now()
            values["attempts"] = dead_letters_table.c.attempts + 1
        return self._update_dead_letter(dead_letter_id, values, conn)

    def _update_dead_letter(
        self, dead_letter_id: int, values: dict[str, Any], conn: Connection | None
    ) -> DeadLetter:
        with self._write(conn) as c:
            result = c.execute(
                dead_letters_table.update()
                .where(dead_letters_table.c.id == dead_letter_id)
                .values(**values)
            )
            if result.rowcount != 1:
                raise StateError(f"no dead letter with id {dead_letter_id}")
            return self.get_dead_letter(dead_letter_id, conn=c)

    # -- runs ----------------------------------------------------------------------------------

    def start_run(
        self,
        flows: str | Sequence[str],
        *,
        dry_run: bool = False,
        conn: Connection | None = None,
    ) -> int:
        """Record the start of a sync run over one or more flows; returns the run id."""
        names = [flows] if isinstance(flows, str) else list(flows)
        with self._write(conn) as c:
            result = c.execute(
                runs_table.insert().values(
                    flow=",".join(names),
                    started_at=self.now(),
                    status=RunStatus.RUNNING.value,
                    stats={},
                    log=[],
                    dry_run=dry_run,
                )
            )
        primary_key = result.inserted_primary_key
        if primary_key is None:
            raise StateError("the database did not return the new run's id")
        return int(primary_key[0])

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        stats: Mapping[str, Any],
        *,
        conn: Connection | None = None,
    ) -> Run:
        """Record how a run ended and its counts."""
        if RunStatus(status) is RunStatus.RUNNING:
            raise StateError(f"run {run_id} cannot finish with status running")
        with self._write(conn) as c:
            result = c.execute(
                runs_table.update()
                .where(runs_table.c.id == run_id)
                .values(status=RunStatus(status).value, stats=dict(stats), finished_at=self.now())
            )
            if result.rowcount != 1:
                raise StateError(f"no run with id {run_id}")
            return self.get_run(run_id, conn=c)

    def abort_orphan_runs(
        self, flows: Sequence[str], *, conn: Connection | None = None
    ) -> list[int]:
        """Mark ``aborted`` the runs of ``flows`` still recorded as running; returns their ids.

        Call it holding those flows' sync locks: no live run of them can exist then, so a run
        still ``running`` belonged to a process that died (killed, machine lost) and stopped
        heartbeating its locks.
        """
        wanted = set(flows)
        aborted: list[int] = []
        with self._write(conn) as c:
            rows = c.execute(
                sa.select(runs_table.c.id, runs_table.c.flow, runs_table.c.stats).where(
                    runs_table.c.status == RunStatus.RUNNING.value
                )
            ).all()
            for row in rows:
                if not wanted & set(row.flow.split(",")):
                    continue
                stats = {**(row.stats or {}), "error": "interrupted: its process stopped"}
                c.execute(
                    runs_table.update()
                    .where(
                        runs_table.c.id == row.id,
                        runs_table.c.status == RunStatus.RUNNING.value,
                    )
                    .values(status=RunStatus.ABORTED.value, stats=stats, finished_at=self.now())
                )
                aborted.append(int(row.id))
        return aborted

    def append_event(
        self, run_id: int, event: Mapping[str, Any], *, conn: Connection | None = None
    ) -> None:
        """Add an event (a conflict resolved, a record skipped…) to a run's log; ``at`` is added
        when the event has none."""
        entry = dict(event)
        entry.setdefault("at", self.now().isoformat())
        with self._write(conn) as c:
            log = c.scalar(
                sa.select(runs_table.c.log).where(runs_table.c.id == run_id).with_for_update()
            )
            if log is None:
                raise StateError(f"no run with id {run_id}")
            c.execute(
                runs_table.update().where(runs_table.c.id == run_id).values(log=[*log, entry])
            )

    def get_run(self, run_id: int, *, conn: Connection | None = None) -> Run:
        """One run; :class:`StateError` when there is none with that id."""
        with self._read(conn) as c:
            row = c.execute(sa.select(runs_table).where(runs_table.c.id == run_id)).first()
        if row is None:
            raise StateError(f"no run with id {run_id}")
        return _run(row)

    def list_runs(
        self, *, limit: int = 20, flow: str | None = None, conn: Connection | None = None
    ) -> list[Run]:
        """The newest runs first; ``flow`` keeps runs that included that flow."""
        query = sa.select(runs_table).order_by(runs_table.c.id.desc())
        with self._read(conn) as c:
            if flow is None:
                rows = c.execute(query.limit(limit)).all()
                return [_run(row) for row in rows]
            runs = [_run(row) for row in c.execute(query).all()]
        return [run for run in runs if flow in run.flows][:limit]

    # -- tombstones ----------------------------------------------------------------------------

    def add_tombstones(
        self,
        connection: str,
        deleted: Sequence[tuple[str, str | None, str | None, datetime | None]],
        *,
        conn: Connection | None = None,
    ) -> None:
        """Record records of ``connection`` as deleted: ``(external_id, lead_key, merged_into,
        deleted_at)`` each. A record recorded twice keeps its first entry."""
        if not deleted:
            return
        now = self.now()
        table = tombstones_table
        with self._write(conn) as c:
            for external_id, lead_key, merged_into, deleted_at in deleted:
                c.execute(
                    self._insert(table)
                    .values(
                        connection=connection,
                        external_id=external_id,
                        lead_key=lead_key,
                        merged_into=merged_into,
                        deleted_at=deleted_at,
                        recorded_at=now,
                    )
                    .on_conflict_do_nothing(
                        index_elements=[table.c.connection, table.c.external_id]
                    )
                )

    def tombstoned_keys(
        self, connection: str, lead_keys: Iterable[str], *, conn: Connection | None = None
    ) -> set[str]:
        """The lead keys whose record in ``connection`` was deleted (not merged into another)."""
        keys = sorted(set(lead_keys))
        table = tombstones_table
        found: set[str] = set()
        with self._read(conn) as c:
            stmt = _prepared(
                c,
                "tombstoned",
                lambda among: sa.select(table.c.lead_key).where(
                    table.c.connection == sa.bindparam("connection"),
                    table.c.merged_into.is_(None),
                    among(table.c.lead_key),
                ),
            )
            for chunk in _chunks(keys):
                params = {"connection": connection, "values": chunk}
                found.update(c.scalars(stmt, params).all())
        return {key for key in found if key is not None}

    def tombstones(
        self, *, connection: str | None = None, conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        """Every tombstone (of ``connection``), oldest first."""
        table = tombstones_table
        query = sa.select(table).order_by(table.c.recorded_at, table.c.external_id)
        if connection is not None:
            query = query.where(table.c.connection == connection)
        with self._read(conn) as c:
            return [dict(row._mapping) for row in c.execute(query).all()]

    # -- baselines -----------------------------------------------------------------------------

    def get_baselines(
        self, flow: str, lead_keys: Iterable[str], *, conn: Connection | None = None
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """``{lead_key: {"source": values, "destination": values}}`` for the keys that have one."""
        keys = sorted(set(lead_keys))
        found: dict[str, dict[str, dict[str, Any]]] = {}
        table = baselines_table
        with self._read(conn) as c:
            stmt = _prepared(
                c,
                "baselines",
                lambda among: sa.select(
                    table.c.lead_key, table.c.source, table.c.destination
                ).where(table.c.flow == sa.bindparam("flow"), among(table.c.lead_key)),
            )
            for chunk in _chunks(keys):
                rows = c.execute(stmt, {"flow": flow, "values": chunk}).all()
                for row in rows:
                    found[row.lead_key] = {
                        "source": dict(row.source),
                        "destination": dict(row.destination),
                    }
        return found

    def get_field_clocks(
        self, lead_keys: Iterable[str], *, conn: Connection | None = None
    ) -> dict[str, dict[str, tuple[Any, datetime]]]:
        """``{lead_key: {field: (value, changed_at)}}`` for the keys that have any."""
        keys = sorted(set(lead_keys))
        table = field_clock_table
        found: dict[str, dict[str, tuple[Any, datetime]]] = {}
        with self._read(conn) as c:
            stmt = _prepared(
                c, "field_clocks", lambda among: sa.select(table).where(among(table.c.lead_key))
            )
            for chunk in _chunks(keys):
                rows = c.execute(stmt, {"values": chunk}).all()
                for row in rows:
                    found.setdefault(row.lead_key, {})[row.field] = (row.value, row.changed_at)
        return found

    def put_field_clocks(
        self,
        clocks: Sequence[tuple[str, str, Any, datetime]],
        *,
        conn: Connection | None = None,
    ) -> None:
        """Set ``(lead_key, field, value, changed_at)`` entries (one statement)."""
        if not clocks:
            return
        bulk = self._replacing(
            field_clock_table, ("lead_key", "field"), ("lead_key", "field", "value", "changed_at")
        )
        with self._write(conn) as c:
            bulk.execute(c, clocks)

    def put_baselines(
        self,
        flow: str,
        baselines: Mapping[str, Mapping[str, Mapping[str, Any]]],
        *,
        conn: Connection | None = None,
    ) -> None:
        """Store ``{lead_key: {"source": values, "destination": values}}`` for ``flow``."""
        if not baselines:
            return
        now = self.now()
        rows = [
            (flow, key, dict(sides["source"]), dict(sides["destination"]), now)
            for key, sides in baselines.items()
        ]
        columns = ("flow", "lead_key", "source", "destination", "updated_at")
        bulk = self._replacing(baselines_table, ("flow", "lead_key"), columns)
        with self._write(conn) as c:
            bulk.execute(c, rows)  # one statement for the page (executemany)

    # -- field problems ------------------------------------------------------------------------

    def record_field_problems(
        self,
        lead_key: str,
        connection: str,
        problems: Sequence[Mapping[str, Any]],
        *,
        origin: Mapping[str, Any],
        flow: str | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Record what ``connection`` refused of a written lead, and resolve the lead's other
        open problems there: this write carried every other field.

        Each problem is a mapping with ``field``, ``system_field``, ``value``, ``reason`` and
        ``action`` (:meth:`leadrelay.sync.write.FieldProblem.to_json`).
        """
        self.record_field_problems_many(
            connection, [(lead_key, origin, problems)], flow=flow, conn=conn
        )

    def record_field_problems_many(
        self,
        connection: str,
        written: Sequence[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]],
        *,
        flow: str | None = None,
        conn: Connection | None = None,
    ) -> None:
        """:meth:`record_field_problems` for each ``(lead_key, origin, problems)`` written to
        ``connection``, in a few statements: one look-up of the leads' open problems, then the
        resolved and the refused fields each in one ``executemany`` (a page or a delivery
        batch of leads with no problem costs the look-up alone)."""
        if not written:
            return
        now = self.now()
        table = field_problems_table
        keys = list(dict.fromkeys(key for key, _, _ in written))
        if len(keys) < len(written):
            # A lead written twice: the second write resolves what the first refused, in order.
            with self._write(conn) as c:
                for entry in written:
                    self.record_field_problems_many(connection, [entry], flow=flow, conn=c)
            return
        with self._write(conn) as c:
            open_fields: dict[str, set[str]] = {}
            stmt = _prepared(
                c,
                "field_problems:open",
                lambda among: sa.select(table.c.lead_key, table.c.field).where(
                    table.c.connection == sa.bindparam("connection"),
                    table.c.status == "open",
                    among(table.c.lead_key),
                ),
            )
            for chunk in _chunks(keys):
                rows = c.execute(stmt, {"connection": connection, "values": chunk})
                for lead_key, name in rows:
                    open_fields.setdefault(lead_key, set()).add(name)
            resolved: list[dict[str, Any]] = []
            refused: list[tuple[Any, ...]] = []
            for lead_key, origin, problems in written:
                fields = {str(p["field"]) for p in problems}
                resolved.extend(
                    {"b_now": now, "b_lead_key": lead_key, "b_connection": connection, "b_field": f}
                    for f in sorted(open_fields.pop(lead_key, set()) - fields)
                )
                refused.extend(
                    (
                        lead_key,
                        connection,
                        str(problem["field"]),
                        problem.get("system_field"),
                        problem.get("value"),
                        str(problem.get("reason", "")),
                        str(problem.get("action", "skipped")),
                        str(problem.get("stage", "system")),
                        flow,
                        dict(origin),
                        now,
                        now,
                    )
                    for problem in problems
                )
            if resolved:
                c.execute(self._resolving_problems, resolved)
            if refused:
                self._bulk(
                    "field_problems:refuse", self._refusing_problems, _REFUSE_COLUMNS
                ).execute(c, refused)

    @cached_property
    def _resolving_problems(self) -> sa.Update:
        table = field_problems_table
        return (
            table.update()
            .where(
                table.c.lead_key == sa.bindparam("b_lead_key"),
                table.c.connection == sa.bindparam("b_connection"),
                table.c.field == sa.bindparam("b_field"),
                table.c.status == "open",
            )
            .values(status="resolved", last_seen=sa.bindparam("b_now", type_=UTCDateTime))
        )

    def _refusing_problems(self) -> sa.Insert:
        table = field_problems_table
        insert = self._insert(table).values(status="open", count=1)
        kept = ("system_field", "value", "reason", "action", "stage", "flow", "origin", "last_seen")
        upsert: sa.Insert = insert.on_conflict_do_update(
            index_elements=[table.c.lead_key, table.c.connection, table.c.field],
            set_={
                **{name: insert.excluded[name] for name in kept},
                "status": "open",
                "count": table.c.count + 1,
            },
        )
        return upsert

    def field_problems(
        self,
        *,
        status: str | None = "open",
        connection: str | None = None,
        flow: str | None = None,
        lead_key: str | None = None,
        limit: int | None = None,
        conn: Connection | None = None,
    ) -> list[FieldProblemRow]:
        """Field problems, newest first, filtered by status, connection, flow and lead."""
        table = field_problems_table
        query = sa.select(table).order_by(table.c.last_seen.desc(), table.c.id.desc())
        if status is not None:
            query = query.where(table.c.status == status)
        if connection is not None:
            query = query.where(table.c.connection == connection)
        if flow is not None:
            query = query.where(table.c.flow == flow)
        if lead_key is not None:
            query = query.where(table.c.lead_key == lead_key)
        if limit is not None:
            query = query.limit(limit)
        with self._read(conn) as c:
            rows = c.execute(query).all()
        return [
            FieldProblemRow(
                id=row.id,
                lead_key=row.lead_key,
                connection=row.connection,
                field=row.field,
                system_field=row.system_field,
                value=row.value,
                reason=row.reason,
                action=row.action,
                stage=row.stage,
                flow=row.flow,
                origin=dict(row.origin or {}),
                status=row.status,
                count=int(row._mapping["count"]),
                first_seen=row.first_seen,
                last_seen=row.last_seen,
            )
            for row in rows
        ]

    def count_field_problems(
        self, *, status: str = "open", conn: Connection | None = None
    ) -> dict[str, int]:
        """Open (or ``status``) field problems per connection."""
        table = field_problems_table
        query = (
            sa.select(table.c.connection, sa.func.count())
            .where(table.c.status == status)
            .group_by(table.c.connection)
        )
        with self._read(conn) as c:
            return {str(name): int(n) for name, n in c.execute(query).all()}

    # -- cached credentials --------------------------------------------------------------------

    def get_credential(
        self, key: str, *, conn: Connection | None = None
    ) -> tuple[str, datetime] | None:
        """The sealed credential stored under ``key`` and when it expires, if not yet expired."""
        with self._read(conn) as c:
            row = c.execute(
                sa.select(credentials_table.c.sealed, credentials_table.c.expires_at).where(
                    credentials_table.c.key == key
                )
            ).first()
        if row is None or row.expires_at <= self.now():
            return None
        return str(row.sealed), row.expires_at

    def put_credential(
        self, key: str, sealed: str, expires_at: datetime, *, conn: Connection | None = None
    ) -> None:
        """Store (or replace) a sealed credential until ``expires_at``; expired ones are pruned."""
        insert = self._insert(credentials_table).values(
            key=key, sealed=sealed, expires_at=expires_at
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[credentials_table.c.key],
            set_={"sealed": sealed, "expires_at": expires_at},
        )
        with self._write(conn) as c:
            c.execute(upsert)
            c.execute(
                credentials_table.delete().where(credentials_table.c.expires_at <= self.now())
            )

    def forget_credential(self, key: str, *, conn: Connection | None = None) -> None:
        """Drop the credential stored under ``key`` (a token the system refused)."""
        with self._write(conn) as c:
            c.execute(credentials_table.delete().where(credentials_table.c.key == key))

    # -- journal -------------------------------------------------------------------------------

    def add_journal(
        self, rows: Sequence[Mapping[str, Any]], *, conn: Connection | None = None
    ) -> None:
        """Append journal rows (``lead_key``, ``at``, ``kind``, ``system``, ``record_id``,
        ``summary``, ``details``) in one statement."""
        if not rows:
            return
        columns = ("lead_key", "at", "kind", "system", "record_id", "summary", "details")
        bulk = self._bulk("journal", journal_table.insert, columns)
        values = [
            (
                row["lead_key"],
                row["at"],
                row["kind"],
                row["system"],
                row.get("record_id"),
                row["summary"],
                row["details"],
            )
            for row in rows
        ]
        with self._write(conn) as c:
            bulk.execute(c, values)

    def journal_for(
        self, lead_keys: Iterable[str], *, conn: Connection | None = None
    ) -> list[sa.Row[Any]]:
        """The journal rows of ``lead_keys``, oldest first."""
        keys = sorted(set(lead_keys))
        rows: list[sa.Row[Any]] = []
        with self._read(conn) as c:
            for chunk in _chunks(keys):
                rows.extend(
                    c.execute(sa.select(journal_table).where(journal_table.c.lead_key.in_(chunk)))
                )
        return sorted(rows, key=lambda row: (row.at, row.id))

    def journal_keys(
        self, system: str, record_id: str, *, conn: Connection | None = None
    ) -> set[str]:
        """The lead keys the journal holds for a system's record."""
        query = sa.select(journal_table.c.lead_key).where(
            journal_table.c.system == system, journal_table.c.record_id == record_id
        )
        with self._read(conn) as c:
            return {str(key) for key in c.scalars(query.distinct())}

    def prune_journal(self, before: datetime, *, conn: Connection | None = None) -> int:
        """Drop the journal rows older than ``before``; returns how many."""
        with self._write(conn) as c:
            return int(
                c.execute(journal_table.delete().where(journal_table.c.at < before)).rowcount
            )

    # -- shared rate budget --------------------------------------------------------------------

    def _epoch_now(self) -> sa.ColumnElement[float]:
        """The database's clock in epoch seconds, the same for every host using the store.

        Constant within one statement (PostgreSQL's statement timestamp, SQLite's ``now``).
        """
        if self._dialect == "postgresql":
            seconds = sa.func.extract("epoch", sa.func.statement_timestamp())
            return sa.cast(seconds, sa.Float)
        return (sa.func.julianday("now") - 2440587.5) * 86400.0

    @contextmanager
    def _budget_write(self) -> Iterator[Connection]:
        """A write transaction of the rate budget. Its rows are worth nothing after a crash
        (the windows are seconds long), so PostgreSQL does not wait for them to reach the
        disk: a call's budget costs two round trips, not two flushes."""
        with self._write(None) as conn:
            if self._dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield conn

    def take_rate_slot(self, key: str, *, calls: int, per_s: float) -> tuple[int | None, float]:
        """Take one call of the shared rolling window ``key`` of ``calls`` per ``per_s``.

        The window is a ring of ``calls`` slots (created on first use). A slot is free one
        window after the call that last used it *ended* (:meth:`release_rate_slot`), so however
        late a call reaches the API, no ``per_s`` seconds see more than ``calls`` of them from
        all the processes sharing the store. Answers ``(slot, 0.0)`` when a free slot was
        taken, in one atomic statement; else ``(None, seconds)`` until one may be free.
        """
        if calls < 1 or per_s <= 0:
            raise ValueError(f"rate budget {key}: need calls >= 1 and per_s > 0")
        table = rate_budget_table
        now = self._epoch_now()
        idle = sa.or_(table.c.taken_until.is_(None), table.c.taken_until < now)
        free = (
            sa.select(table.c.slot)
            .where(table.c.key == key, idle, table.c.used_at <= now - float(per_s))
            .order_by(table.c.used_at, table.c.slot)
            .limit(1)
        )
        if self._dialect == "postgresql":
            # Concurrent callers take different slots instead of queueing for the same one.
            free = free.with_for_update(skip_locked=True)
        take = (
            sa.update(table)
            .where(table.c.key == key, table.c.slot == free.scalar_subquery())
            .values(taken_until=now + _IN_FLIGHT_S)
            .returning(table.c.slot)
        )
        due: float | None = None
        with self._budget_write() as conn:
            slot = conn.execute(take).scalar()
            if slot is None:
                ring, due = conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.min(sa.case((idle, table.c.used_at + float(per_s) - now))),
                    ).where(table.c.key == key)
                ).one()
                if not ring:  # a new window: all its slots free, this call takes one
                    slots = [{"key": key, "slot": n, "used_at": 0.0} for n in range(calls)]
                    conn.execute(self._insert(table).on_conflict_do_nothing(), slots)
                    slot = conn.execute(take).scalar()
        if slot is not None:
            return int(slot), 0.0
        if due is None:  # every slot's call is still going, or taken by others this instant
            return None, min(0.05, float(per_s))
        return None, max(float(due), 0.001)  # the slot used longest ago (or held) frees then

    def release_rate_slot(self, key: str, slot: int) -> None:
        """The call holding ``slot`` of window ``key`` ended: the slot is free one window on."""
        table = rate_budget_table
        greatest = sa.func.greatest if self._dialect == "postgresql" else sa.func.max
        with self._budget_write() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.key == key, table.c.slot == slot)
                .values(taken_until=None, used_at=greatest(table.c.used_at, self._epoch_now()))
            )

    def hold_rate_budget(self, key: str, seconds: float, *, per_s: float) -> None:
        """No slot of window ``key`` is free sooner than ``seconds`` from now (the API said to
        wait, e.g. a 429's ``Retry-After``)."""
        table = rate_budget_table
        greatest = sa.func.greatest if self._dialect == "postgresql" else sa.func.max
        hold = greatest(table.c.used_at, self._epoch_now() + (float(seconds) - float(per_s)))
        with self._write(None) as conn:
            conn.execute(sa.update(table).where(table.c.key == key).values(used_at=hold))

    # -- flow parts (a large flow split into part jobs, PostgreSQL) ----------------------------

    def _lock_parts(self, c: Connection, run_id: int) -> None:
        """Serialize the part bookkeeping of one run (numbering, claims, the cursor prefix)
        until the transaction ends; SQLite's single writer does that already."""
        if self._dialect == "postgresql":
            c.execute(sa.select(sa.func.pg_advisory_xact_lock(_PARTS_LOCK, run_id)))

    def add_part(
        self,
        run_id: int,
        phase: str,
        *,
        flow: str,
        connection: str,
        records: Sequence[Mapping[str, Any]],
        record_ids: Sequence[str | None],
        deleted: Sequence[Mapping[str, Any]],
        cursor: str | None,
    ) -> int:
        """Store one read page as the next part of a run's pass; returns its number.

        A record this page holds again (same id) is dropped from the parts of the pass that
        have not started: the later copy is the newer one, and one part writes a record.
        """
        table = flow_parts_table
        ids = {rid for rid in record_ids if rid is not None}
        of_pass = (table.c.run_id == run_id, table.c.phase == phase)
        with self._write(None) as c:
            self._lock_parts(c, run_id)
            pending = c.execute(
                sa.select(table.c.part, table.c.record_ids).where(
                    *of_pass, table.c.status == PartStatus.PENDING.value
                )
            ).all()
            for row in pending:
                keep = [n for n, rid in enumerate(row.record_ids) if rid is None or rid not in ids]
                if len(keep) == len(row.record_ids):
                    continue
                held: list[Any] = (
                    c.scalar(sa.select(table.c.records).where(*of_pass, table.c.part == row.part))
                    or []
                )
                c.execute(
                    table.update()
                    .where(*of_pass, table.c.part == row.part)
                    .values(
                        records=[held[n] for n in keep],
                        record_ids=[row.record_ids[n] for n in keep],
                    )
                )
            number = int(c.scalar(sa.select(sa.func.max(table.c.part)).where(*of_pass)) or 0) + 1
            c.execute(
                table.insert().values(
                    run_id=run_id,
                    phase=phase,
                    part=number,
                    flow=flow,
                    connection=connection,
                    records=[dict(r) for r in records],
                    record_ids=list(record_ids),
                    deleted=[dict(d) for d in deleted],
                    cursor=cursor,
                    origin=None,
                    wait_for=[],
                    status=PartStatus.PENDING.value,
                    attempts=0,
                )
            )
        return number

    def claim_part(
        self,
        run_id: int,
        phase: str,
        *,
        holder: str,
        lease_s: float,
        claims: Callable[[FlowPart], PartClaims],
        part: int | None = None,
    ) -> FlowPart | None:
        """Take a part of a running run's pass for ``holder`` for ``lease_s`` seconds: ``part``,
        or the first one that can run; None when there is none.

        A part can run when it is pending, or running under a lease that ran out (its holder
        died), and the parts it waits for are done. In the same transaction it claims the keys
        ``claims`` gives for its records and deletions (insert-or-ignore). A record whose key
        another running part holds is handed on to a new part that waits for that one — or
        dropped, when the holder has a later page's copy of the same record (``rec:`` keys).
        The part returned holds what is left.
        """
        table = flow_parts_table
        of_pass = (table.c.run_id == run_id, table.c.phase == phase)
        now = self.now()
        with self._write(None) as c:
            self._lock_parts(c, run_id)
            status = c.scalar(sa.select(runs_table.c.status).where(runs_table.c.id == run_id))
            if status != RunStatus.RUNNING.value:
                return None
            rows = c.execute(
                sa.select(
                    table.c.part, table.c.status, table.c.wait_for, table.c.lease_until
                ).where(*of_pass)
            ).all()
            done = {r.part for r in rows if r.status == PartStatus.DONE.value}
            candidates = sorted(
                r.part
                for r in rows
                if (part is None or r.part == part)
                and (
                    r.status == PartStatus.PENDING.value
                    or (
                        r.status == PartStatus.RUNNING.value
                        and r.lease_until is not None
                        and r.lease_until < now
                    )
                )
                and all(int(w) in done for w in r.wait_for)
            )
            found: FlowPart | None = None
            for number in candidates:
                # SKIP LOCKED: a part whose commit is under way (its lease just ran out) is not
                # waited for; that commit holds the run's part lock next.
                row = c.execute(
                    sa.select(table)
                    .where(*of_pass, table.c.part == number)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is not None and row.status in (
                    PartStatus.PENDING.value,
                    PartStatus.RUNNING.value,
                ):
                    found = _flow_part(row)
                    break
            if found is None:
                return None
            taken = self._claim_part_keys(c, found, claims(found))
            c.execute(
                table.update()
                .where(*of_pass, table.c.part == found.part)
                .values(
                    status=PartStatus.RUNNING.value,
                    holder=holder,
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=found.attempts + 1,
                    records=taken.records,
                    record_ids=taken.record_ids,
                    deleted=taken.deleted,
                )
            )
        return replace(taken, status=PartStatus.RUNNING, holder=holder, attempts=found.attempts + 1)

    def _claim_part_keys(self, c: Connection, found: FlowPart, keys: PartClaims) -> FlowPart:
        """Claim a part's keys; hand on (or drop) what another part holds; the part kept."""
        claims = flow_part_claims_table
        table = flow_parts_table
        record_keys, deletion_keys = keys
        wanted = {
            _claim_hash(key): key for group in (*record_keys, *deletion_keys) for key in group
        }
        mine = {
            "run_id": found.run_id,
            "phase": found.phase,
            "part": found.part,
        }
        for chunk in _chunks(sorted(wanted), _IN_CHUNK // 4):
            c.execute(
                self._insert(claims)
                .values([{**mine, "claim": digest} for digest in chunk])
                .on_conflict_do_nothing(index_elements=[claims.c.run_id, claims.c.claim])
            )
        holders: dict[str, tuple[str, int]] = {}
        for chunk in _chunks(sorted(wanted)):
            for row in c.execute(
                sa.select(claims.c.claim, claims.c.phase, claims.c.part).where(
                    claims.c.run_id == found.run_id, claims.c.claim.in_(chunk)
                )
            ):
                if (row.phase, row.part) != (found.phase, found.part):
                    holders[row.claim] = (row.phase, row.part)
        if not holders:
            return found
        pages = {
            (row.phase, row.part): row.part if row.origin is None else row.origin
            for row in c.execute(
                sa.select(table.c.phase, table.c.part, table.c.origin).where(
                    table.c.run_id == found.run_id
                )
            )
        }

        def verdict(group: set[str]) -> tuple[bool, set[int]]:
            """(dropped: a later copy of the record is held, parts to wait for)."""
            blockers: set[int] = set()
            for key in group:
                held = holders.get(_claim_hash(key))
                if held is None:
                    continue
                later = pages.get(held, 0) > found.page
                if key.startswith("rec:") and held[0] == found.phase and later:
                    return True, set()
                blockers.add(held[1])
            return False, blockers

        kept = replace(found, records=[], record_ids=[], deleted=[])
        handed_records: list[tuple[dict[str, Any], str | None]] = []
        handed_deleted: list[dict[str, Any]] = []
        wait: set[int] = set()
        kept_keys: set[str] = set()
        for record, rid, group in zip(found.records, found.record_ids, record_keys, strict=True):
            dropped, blockers = verdict(group)
            if dropped:
                continue
            if blockers:
                handed_records.append((record, rid))
                wait |= blockers
            else:
                kept.records.append(record)
                kept.record_ids.append(rid)
                kept_keys |= group
        for deletion, group in zip(found.deleted, deletion_keys, strict=True):
            dropped, blockers = verdict(group)
            if blockers:
                handed_deleted.append(deletion)
                wait |= blockers
            elif not dropped:
                kept.deleted.append(deletion)
                kept_keys |= group
        let_go = [digest for digest, key in wanted.items() if key not in kept_keys]
        for chunk in _chunks(let_go):
            c.execute(
                claims.delete().where(
                    claims.c.run_id == found.run_id,
                    claims.c.phase == found.phase,
                    claims.c.part == found.part,
                    claims.c.claim.in_(chunk),
                )
            )
        if handed_records or handed_deleted:
            of_pass = (table.c.run_id == found.run_id, table.c.phase == found.phase)
            number = int(c.scalar(sa.select(sa.func.max(table.c.part)).where(*of_pass)) or 0) + 1
            c.execute(
                table.insert().values(
                    run_id=found.run_id,
                    phase=found.phase,
                    part=number,
                    flow=found.flow,
                    connection=found.connection,
                    records=[record for record, _rid in handed_records],
                    record_ids=[rid for _record, rid in handed_records],
                    deleted=handed_deleted,
                    cursor=None,
                    origin=found.page,
                    wait_for=sorted(wait),
                    status=PartStatus.PENDING.value,
                    attempts=0,
                )
            )
        return kept

    def renew_part(
        self, run_id: int, phase: str, part: int, *, holder: str, lease_s: float
    ) -> bool:
        """Extend ``holder``'s lease on a running part; False when it is no longer its."""
        table = flow_parts_table
        with self._write(None) as c:
            result = c.execute(
                table.update()
                .where(
                    table.c.run_id == run_id,
                    table.c.phase == phase,
                    table.c.part == part,
                    table.c.holder == holder,
                    table.c.status == PartStatus.RUNNING.value,
                )
                .values(lease_until=self.now() + timedelta(seconds=lease_s))
            )
        return result.rowcount == 1

    def finish_part(
        self,
        run_id: int,
        phase: str,
        part: int,
        *,
        holder: str,
        stats: Mapping[str, Any],
        conn: Connection,
    ) -> str | None:
        """Mark ``holder``'s part done in the transaction that commits its page, free its
        claims, and move the flow's cursor to the cursor after the longest run of finished
        pages from the first (a page is finished when its part and every part made of records
        it handed on are done); returns the cursor saved, if it moved.

        Raises :class:`PartLost` (rolling the page back) when the part is no longer the
        holder's.
        """
        table = flow_parts_table
        claims = flow_part_claims_table
        of_pass = (table.c.run_id == run_id, table.c.phase == phase)
        result = conn.execute(
            table.update()
            .where(
                *of_pass,
                table.c.part == part,
                table.c.holder == holder,
                table.c.status == PartStatus.RUNNING.value,
            )
            .values(
                status=PartStatus.DONE.value,
                stats=dict(stats),
                records=[],
                record_ids=[],
                deleted=[],
                lease_until=None,
            )
        )
        if result.rowcount != 1:
            raise PartLost(f"part {part} of run {run_id} ({phase}) was taken over")
        conn.execute(
            claims.delete().where(
                claims.c.run_id == run_id, claims.c.phase == phase, claims.c.part == part
            )
        )
        self._lock_parts(conn, run_id)
        rows = conn.execute(
            sa.select(
                table.c.part,
                table.c.origin,
                table.c.status,
                table.c.cursor,
                table.c.flow,
                table.c.connection,
            )
            .where(*of_pass)
            .order_by(table.c.part)
        ).all()
        unfinished = {
            row.origin
            for row in rows
            if row.origin is not None and row.status != PartStatus.DONE.value
        }
        mine = next(row for row in rows if row.part == part)
        page = part if mine.origin is None else mine.origin
        cursor: str | None = None
        moved = False
        for row in rows:
            if row.origin is not None:
                continue
            if row.status != PartStatus.DONE.value or row.part in unfinished:
                break
            cursor = row.cursor if row.cursor is not None else cursor
            moved = moved or row.part == page
        if not moved or cursor is None:
            return None
        self.set_cursor(mine.flow, mine.connection, cursor, conn=conn)
        return cursor

    def fail_part(self, run_id: int, phase: str, part: int, *, holder: str, error: str) -> bool:
        """Record that ``holder``'s part failed (the cursor stays before it); False when it was
        no longer the holder's."""
        table = flow_parts_table
        claims = flow_part_claims_table
        with self._write(None) as c:
            result = c.execute(
                table.update()
                .where(
                    table.c.run_id == run_id,
                    table.c.phase == phase,
                    table.c.part == part,
                    table.c.holder == holder,
                    table.c.status == PartStatus.RUNNING.value,
                )
                .values(status=PartStatus.FAILED.value, error=error, lease_until=None)
            )
            c.execute(
                claims.delete().where(
                    claims.c.run_id == run_id, claims.c.phase == phase, claims.c.part == part
                )
            )
        return result.rowcount == 1

    def list_parts(
        self,
        run_id: int,
        phase: str | None = None,
        *,
        content: bool = True,
        conn: Connection | None = None,
    ) -> list[FlowPart]:
        """A run's parts (of one pass), in order; without ``content`` their records, ids and
        deletions are left out (empty), for a look at where they stand."""
        table = flow_parts_table
        heavy = {"records", "record_ids", "deleted"}
        columns = table.c if content else [c for c in table.c if c.name not in heavy]
        query = sa.select(*columns).where(table.c.run_id == run_id)
        if phase is not None:
            query = query.where(table.c.phase == phase)
        with self._read(conn) as c:
            rows = c.execute(query.order_by(table.c.phase, table.c.part)).all()
        if content:
            return [_flow_part(row) for row in rows]
        empty: dict[str, list[Any]] = {"records": [], "record_ids": [], "deleted": []}
        return [_flow_part({**row._mapping, **empty}) for row in rows]

    def drop_parts(self, flow: str, *, keep: int) -> int:
        """Forget the parts and claims of ``flow``'s ended runs other than run ``keep`` (the
        last one's stay, to look at); how many parts there were."""
        parts = flow_parts_table
        claims = flow_part_claims_table
        with self._write(None) as c:
            runs = (
                sa.select(parts.c.run_id)
                .join(runs_table, runs_table.c.id == parts.c.run_id)
                .where(
                    parts.c.flow == flow,
                    parts.c.run_id != keep,
                    runs_table.c.status != RunStatus.RUNNING.value,
                )
                .distinct()
            )
            ended = [int(n) for n in c.scalars(runs)]
            if not ended:
                return 0
            c.execute(claims.delete().where(claims.c.run_id.in_(ended)))
            result = c.execute(parts.delete().where(parts.c.run_id.in_(ended)))
        return int(result.rowcount)

    def abandon_parts(self, run_id: int) -> int:
        """Mark a run's parts that have not started abandoned; how many there were."""
        table = flow_parts_table
        with self._write(None) as c:
            result = c.execute(
                table.update()
                .where(table.c.run_id == run_id, table.c.status == PartStatus.PENDING.value)
                .values(status=PartStatus.ABANDONED.value, records=[], record_ids=[], deleted=[])
            )
        return int(result.rowcount)

    # -- locks ---------------------------------------------------------------------------------

    def lock(self, name: str, *, ttl_s: int = 600) -> StoreLock:
        """A named lock for this process (not yet acquired)."""
        return StoreLock(self, name, ttl_s=ttl_s)

    def acquire_lock(self, name: str, holder: LockHolder, *, ttl_s: int) -> bool:
        """Take a named lock for ``holder``; False at once when another live holder has it.

        A holder is taken over when its last heartbeat is older than the TTL it acquired with
        (whatever its host and pid). Re-acquiring one's own lock refreshes it.
        """
        if ttl_s <= 0:
            raise StateError(f"lock {name!r}: ttl_s must be positive, got {ttl_s}")
        now = self.now()
        mine = {
            "hostname": holder.hostname,
            "pid": holder.pid,
            "token": holder.token,
            "acquired_at": now,
            "heartbeat_at": now,
            "ttl_s": ttl_s,
        }
        insert = (
            self._insert(locks_table)
            .values(name=name, **mine)
            .on_conflict_do_nothing(index_elements=[locks_table.c.name])
            .returning(locks_table.c.name)
        )
        with self._write(None) as c:
            if c.execute(insert).first() is not None:
                return True
            current = self._lock_info(c, name, for_update=True)
            if current is None:
                return c.execute(insert).first() is not None
            if current.holder.token == holder.token:
                c.execute(
                    locks_table.update()
                    .where(locks_table.c.name == name, locks_table.c.token == holder.token)
                    .values(heartbeat_at=now, ttl_s=ttl_s)
                )
                return True
            if not self._is_stale(current, now):
                return False
            # Conditional on the old token: of two processes taking over at once, one wins.
            result = c.execute(
                locks_table.update()
                .where(locks_table.c.name == name, locks_table.c.token == current.holder.token)
                .values(**mine)
            )
            return result.rowcount == 1

    def heartbeat_lock(self, name: str, holder: LockHolder) -> bool:
        """Refresh the holder's heartbeat; False when the lock is no longer the holder's."""
        with self._write(None) as c:
            result = c.execute(
                locks_table.update()
                .where(locks_table.c.name == name, locks_table.c.token == holder.token)
                .values(heartbeat_at=self.now())
            )
        return result.rowcount == 1

    def release_lock(self, name: str, holder: LockHolder) -> bool:
        """Release the lock if the holder has it; True when it did."""
        with self._write(None) as c:
            result = c.execute(
                locks_table.delete().where(
                    locks_table.c.name == name, locks_table.c.token == holder.token
                )
            )
        return result.rowcount == 1

    def lock_info(self, name: str) -> LockInfo | None:
        """Who holds a named lock, or None."""
        with self._read(None) as c:
            return self._lock_info(c, name, for_update=False)

    @staticmethod
    def _lock_info(c: Connection, name: str, *, for_update: bool) -> LockInfo | None:
        query = sa.select(locks_table).where(locks_table.c.name == name)
        if for_update:
            query = query.with_for_update()
        row = c.execute(query).first()
        if row is None:
            return None
        return LockInfo(
            name=row.name,
            holder=LockHolder(hostname=row.hostname, pid=row.pid, token=row.token),
            acquired_at=row.acquired_at,
            heartbeat_at=row.heartbeat_at,
            ttl_s=row.ttl_s,
        )

    @staticmethod
    def _is_stale(info: LockInfo, now: datetime) -> bool:
        # A holder is alive only while it heartbeats: a pid says nothing across containers
        # and hosts (the same pid may be another process, or alive in another namespace).
        return info.heartbeat_at + timedelta(seconds=info.ttl_s) < now


class StoreLock:
    """A named lock held by this process: ``acquire()``, ``heartbeat()``, ``release()``.

    Also a context manager that raises :class:`StateError` (naming the holder) when the lock is
    held by someone else, and releases it on exit.
    """

    def __init__(self, store: StateStore, name: str, *, ttl_s: int = 600) -> None:
        self.store = store
        self.name = name
        self.ttl_s = ttl_s
        self.holder = LockHolder.this_process()
        self.held = False

    def acquire(self) -> bool:
        """Take the lock; False at once when a live holder has it."""
        self.held = self.store.acquire_lock(self.name, self.holder, ttl_s=self.ttl_s)
        return self.held

    def heartbeat(self) -> bool:
        """Tell others this holder is alive; False when the lock was taken over."""
        self.held = self.store.heartbeat_lock(self.name, self.holder)
        return self.held

    def release(self) -> None:
        """Release the lock (nothing happens when it is not held)."""
        if self.held:
            self.store.release_lock(self.name, self.holder)
            self.held = False

    def __enter__(self) -> StoreLock:
        if not self.acquire():
            info = self.store.lock_info(self.name)
            raise StateError(info.describe() if info else f"lock {self.name!r} is held")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_state(config: Config, *, clock: Callable[[], datetime] = _utcnow) -> StateStore:
    """The project's state store: ``[state] url`` with its ``pool_size``."""
    return StateStore(config.state.url, clock=clock, pool_size=config.state.pool_size)


# ---------------------------------------------------------------------------------------------
# Row → dataclass


def _inbox_item(row: sa.Row[Any]) -> InboxItem:
    return InboxItem(
        key=row.key,
        form=row.form,
        source=row.source,
        payload=row.payload,
        dedupe_key=row.dedupe_key,
        is_test=bool(row.is_test),
        received_at=row.received_at,
        status=InboxStatus(row.status),
        attempts=row.attempts,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        claim_token=row.claim_token,
        claimed_at=row.claimed_at,
    )


def _ledger_row(row: sa.Row[Any]) -> LedgerRow:
    return LedgerRow(
        lead_key=row.lead_key,
        destination=row.destination,
        form=row.form,
        source=row.source,
        state=LedgerState(row.state),
        external_id=row.external_id,
        received_at=row.received_at,
        written_at=row.written_at,
        verified_at=row.verified_at,
        failed_at=row.failed_at,
        last_error=row.last_error,
        is_test=bool(row.is_test),
    )


def _dead_letter(row: sa.Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        lead_key=row.lead_key,
        flow=row.flow,
        connection=row.connection,
        system=row.system,
        record_ref=row.record_ref,
        field=row.field,
        reason=row.reason,
        payload=row.payload,
        attempts=row.attempts,
        status=DeadLetterStatus(row.status),
        created_at=row.created_at,
        last_attempt_at=row.last_attempt_at,
    )


def _flow_part(row: sa.Row[Any] | Mapping[str, Any]) -> FlowPart:
    values = row if isinstance(row, Mapping) else row._mapping
    return FlowPart(
        run_id=values["run_id"],
        phase=values["phase"],
        part=values["part"],
        flow=values["flow"],
        connection=values["connection"],
        records=list(values["records"]),
        record_ids=list(values["record_ids"]),
        deleted=list(values["deleted"]),
        cursor=values["cursor"],
        origin=values["origin"],
        wait_for=[int(n) for n in values["wait_for"]],
        status=PartStatus(values["status"]),
        holder=values["holder"],
        attempts=values["attempts"],
        stats=values["stats"],
        error=values["error"],
    )


def _claim_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _run(row: sa.Row[Any]) -> Run:
    return Run(
        id=row.id,
        flow=row.flow,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status=RunStatus(row.status),
        stats=row.stats,
        log=row.log,
        dry_run=bool(row.dry_run),
    )
