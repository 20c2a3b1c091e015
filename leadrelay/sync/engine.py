"""The sync engine: one flow between a marketing system (source) and a CRM (destination).

Per flow, page by page (DESIGN §2, §7):

1. read the records changed since the flow's cursor on that connection;
2. skip leadrelay's own echoes: a record whose mapped values hash to the fingerprint stored
   for (connection, id) is what leadrelay wrote or last reconciled (§7.4);
3. normalize (the connection's mapping → :class:`~leadrelay.model.Lead`), tag (channel from the
   UTMs when the system had none);
4. identify: lead key by link (connection, id), then by identity email, then within the page;
   the other side's current records by one batched ``lookup`` (ids of linked records, emails of
   the others), so a person arriving from two sources is one record (§7.2);
5. plan the field diff under the flow's field rules (:mod:`leadrelay.sync.plan`); check the
   values against the target's live ``describe()``;
6. write in batches (``upsert`` by natural key for new records, ``update`` by id for existing
   ones); a refused record is dead-lettered with the system's own message, the page goes on;
7. commit in one state-store transaction: identities, links, ledger, fingerprints, dead letters,
   run-log events and the cursor. A crash before the commit replays the page; every write is
   idempotent, so nothing is duplicated (§7.1).

The forward pass reads the source and writes the destination; with ``two_way`` the backward pass
reads the destination and carries what sales owns back (write-back), creating in the source the
leads that started in the CRM.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import queue
import threading
import time
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from leadrelay.config import Config, FieldRule, FlowConfig
from leadrelay.connectors.base import (
    Capability,
    Connector,
    Deletion,
    Page,
    RawRecord,
    Schema,
    WriteOutcome,
    WriteResult,
    connector_class,
    normalize_email,
)
from leadrelay.connectors.credentials import SealedCredentialCache
from leadrelay.connectors.policy import account_key, share_rate_limits
from leadrelay.journal import Journal, Written
from leadrelay.mappings.engine import LeadDraft, Problem, build_lead, load_mapping
from leadrelay.mappings.engine import Mapping as FieldMapping
from leadrelay.model import Lead
from leadrelay.sync.dedupe import identity_email
from leadrelay.sync.held import HeldPage, WriteHold
from leadrelay.sync.plan import (
    Action,
    RecordPlan,
    canonical_value,
    draft_value,
    plan_record,
    readable_fields,
    writable_fields,
)
from leadrelay.sync.rules import FieldRules, Rule, Side
from leadrelay.sync.stages import QualifyFactory, QualifyStep, handoff_qualify
from leadrelay.sync.state import DeadLetter, StateStore
from leadrelay.sync.tagging import classify_channel
from leadrelay.sync.write import (
    FieldProblem,
    LeadWriter,
    Pending,
    Vetted,
    left_out,
    without_left_out,
)

__all__ = [
    "ConnectorPool",
    "FlowStats",
    "InboxDrainer",
    "PageSink",
    "PlannedRecord",
    "SyncContext",
    "SyncEngine",
    "fingerprint",
    "inbox_drainers",
    "modified_at",
    "record_id",
    "register_inbox_drainer",
]

#: Canonical fields left out of a fingerprint: bookkeeping that differs between reads.
_UNHASHED = frozenset({"external_ids", "updated_at", "created_at"})
#: Exact types :func:`canonical_value` returns as they are (a str enum is no plain str).
_PLAIN_VALUE_TYPES: frozenset[type] = frozenset({str, int, bool, type(None)})

#: How long another flow's read that found nothing stands for a read of the same connection
#: (seconds; it also ends at the connection's next call of any kind).
SHARED_READ_S = 60.0

#: Raw keys holding a record's id (HubSpot ``hs_object_id``, Salesforce ``Id``, Zoho ``id``).
_ID_KEYS = ("id", "Id", "ID", "hs_object_id")

#: Raw keys holding when a record last changed (HubSpot, Salesforce, Zoho).
_MODIFIED_KEYS = (
    "updatedAt",
    "hs_lastmodifieddate",
    "lastmodifieddate",
    "SystemModstamp",
    "LastModifiedDate",
    "Modified_Time",
)


# --------------------------------------------------------------------------------------------
# helpers


def record_id(connector: Connector[Any], raw: RawRecord) -> str | None:
    """The system id of a raw record: the connector's ``record_id(raw)`` when it has one,
    else the ``id`` / ``Id`` key."""
    own = getattr(connector, "record_id", None)
    if callable(own):
        value = own(raw)
        return None if value is None else str(value)
    for key in _ID_KEYS:
        value = raw.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]  # Salesforce writes +0000
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def modified_at(connector: Connector[Any], raw: RawRecord) -> datetime | None:
    """When a raw record last changed: the connector's ``modified_at(raw)`` when it has one,
    else the system's usual modification-time key."""
    own = getattr(connector, "modified_at", None)
    if callable(own):
        value = own(raw)
        return value if isinstance(value, datetime) or value is None else _parse_time(value)
    for key in _MODIFIED_KEYS:
        found = _parse_time(raw.get(key))
        if found is not None:
            return found
    return None


#: A canonical field by name, head and sub-field (``custom.tier`` → custom, tier; ``email`` →
#: email, "").
_Part = tuple[str, str, str]


def _project(values: Mapping[str, Any], parts: Iterable[_Part]) -> dict[str, Any]:
    """The canonical values of the fields ``parts`` names that hold a value, by name (a
    ``custom.NAME`` looked up inside ``custom``): what :func:`fingerprint` hashes, bookkeeping
    fields included (:func:`_digest` leaves them out)."""
    plain = _PLAIN_VALUE_TYPES
    kept: dict[str, Any] = {}
    for name, head, sub in parts:
        value = values.get(head)
        if sub:
            value = value.get(sub) if isinstance(value, dict) else None
        if value is not None:
            kept[name] = value if type(value) in plain else canonical_value(value)
    return kept


def _digest(kept: Mapping[str, Any]) -> str:
    """:func:`fingerprint` of a :func:`_project` of its fields, from the projection."""
    if not _UNHASHED.isdisjoint(kept):
        kept = {k: v for k, v in kept.items() if k not in _UNHASHED}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _nest(kept: Mapping[str, Any], parts: Iterable[_Part]) -> dict[str, Any]:
    """A :func:`_project` as a baseline keeps it: ``custom.NAME`` under ``custom``."""
    nested: dict[str, Any] = {}
    for name, head, sub in parts:
        if name in kept:
            if sub:
                nested.setdefault(head, {})[sub] = kept[name]
            else:
                nested[name] = kept[name]
    return nested


def _parts(fields: Iterable[str]) -> list[_Part]:
    """Canonical field names as :func:`_project` takes them."""
    return [(name, *name.partition(".")[::2]) for name in fields]


def fingerprint(values: Mapping[str, Any], fields: Iterable[str] | None = None) -> str:
    """A stable hash of a record's canonical values (bookkeeping left out); with ``fields``,
    of those canonical fields only (``custom.NAME`` picks one key of ``custom``)."""
    if fields is not None:
        return _digest(_project(values, _parts(fields)))
    # A plain value (most of them) is its own canonical form: no call for it.
    plain = _PLAIN_VALUE_TYPES
    return _digest({k: v if type(v) in plain else canonical_value(v) for k, v in values.items()})


#: Records whose write the forward pass keeps for :func:`_reads_as` when the write-back pass
#: reads them (~1 KB each; the oldest go first: a larger run maps the rest of its echoes, as
#: before). A scheduled sync moves fewer than this; a backfill's peak memory stays within
#: ~1 MiB of what it was without them (with 5,000 a 10,000-lead sync's went 6.6 -> 13.7 MiB
#: -> Zoho, for ~1 % of its CPU).
WRITTEN_KEPT = 1_000
#: Exact types compared by value alone (a float's sign aside); a value of another type is
#: compared by value and ``repr`` (an aware datetime equals another zone's same moment).
_BY_VALUE: frozenset[type] = frozenset({str, int, bool, type(None)})
#: A key a record does not hold.
_MISSING: Any = object()


def _identical(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same value of the same type throughout (what a
    mapping's read or a fingerprint of them can tell apart, they do not differ in)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in _BY_VALUE:
        return bool(a == b)
    if kind is float:
        return bool(a == b) and math.copysign(1.0, a) == math.copysign(1.0, b)
    if kind is dict:
        return a.keys() == b.keys() and all(_identical(v, b[k]) for k, v in a.items())
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and repr(a) == repr(b)


def _reads_as(
    raw: Mapping[str, Any],
    written: Mapping[str, Any],
    mapping: FieldMapping,
    fields: Collection[str],
) -> bool:
    """Whether ``raw`` maps to the same fingerprint of ``fields`` as ``written`` (the system
    fields of :attr:`~leadrelay.mappings.engine.Mapping.read_keys` a write left in a record),
    told without mapping the whole record. The system fields both hold alike, and a None
    ``raw`` holds where ``written`` has nothing and a None reads as nothing
    (:attr:`~leadrelay.mappings.engine.Mapping.none_reads_absent`), need no read; the
    canonical fields reading any other are mapped from both and compared, where a fingerprint
    of ``fields`` holds them or a read of another field looks at them. False means "not
    known", not "different": the caller maps the record then."""
    differ: list[str] = []
    for name, value in written.items():
        held = raw.get(name, _MISSING)
        if held == value and type(held) is type(value) and type(value) in _BY_VALUE:
            continue
        if not _identical(held, value):
            differ.append(name)
    none_absent = mapping.none_reads_absent
    for name in raw.keys() & mapping.read_keys:
        if name not in written and (raw[name] is not None or name not in none_absent):
            differ.append(name)
    if not differ:
        return True
    through = mapping.read_through
    only = [
        name
        for name in mapping.readers_of(frozenset(differ))
        if through is None
        or name in fields
        or name in through
        # where a value no standard-list map covers is kept (custom.<field>_raw)
        or f"custom.{name.rpartition('.')[2]}_raw" in fields
    ]
    if not only:
        return True
    if "owner" in only and (through is None or "owner" in through):
        # An owner reads as {"id": text}: a number and its text are one draft value, though
        # another field's transform reading the owner would see them apart.
        return False
    mine, theirs = mapping.to_lead(raw, only=only), mapping.to_lead(written, only=only)
    return _identical(mine.values, theirs.values)


#: A pass's pages, each with the reader's call count after it was read.
_Pages = Generator[tuple[Page, int], None, None]

#: Pages read ahead of the one being processed (each holds at most a batch of records).
READ_AHEAD_PAGES = 1


def _read_in_line(reader: Connector[Any], cursor: str | None) -> _Pages:
    """The pages of ``reader.read_changes(cursor)``, each with the reader's call count after
    it was read."""
    for page in reader.read_changes(cursor):
        yield page, reader.api_calls


def _read_ahead(reader: Connector[Any], cursor: str | None) -> _Pages:
    """:func:`_read_in_line`, with the reading done in a thread :data:`READ_AHEAD_PAGES`
    pages ahead of the caller. Reading has no effect on the state store: a cursor still moves
    only when the caller commits its page. An error of the read (any exception, a process
    being killed included) is raised to the caller in order, after the pages read before it;
    a caller that stops early stops the thread (after the call under way)."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=READ_AHEAD_PAGES)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        pages = reader.read_changes(cursor)
        try:
            for page in pages:
                if not put(("page", (page, reader.api_calls))):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the caller, who raises it
            put(("error", exc))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=read, name=f"read-ahead {reader.name}", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "page":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        worker.join()


@contextmanager
def _older_objects_spared() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects that exist when a run starts (the
    modules, mappings, connectors, pools) until it ends: a full collection during the run then
    walks only what the run made (it walked the whole heap twice per 1,000 leads, ~70 ms
    each). A process that froze objects itself (``gc.freeze`` before forking workers) is left
    as it is. A cycle already unreachable when the run starts is collected after it."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _identity(email: str | None) -> str | None:
    if not email:
        return None
    try:
        return identity_email(email)
    except ValueError:
        return None


def _tag(lead: Lead) -> None:
    """Give a lead its channel from its UTMs / click ids / referrer when the system had none."""
    if lead.channel is not None:
        return
    if not any(
        (lead.utm_source, lead.utm_medium, lead.utm_campaign, lead.click_ids, lead.referrer)
    ):
        return
    channel, _rule = classify_channel(
        utm_source=lead.utm_source,
        utm_medium=lead.utm_medium,
        utm_campaign=lead.utm_campaign,
        click_ids=lead.click_ids,
        referrer=lead.referrer,
        landing_page=lead.landing_page,
    )
    lead.channel = channel
    if lead.first_touch is None:
        touch = lead.touch()
        touch.at = lead.created_at
        lead.first_touch = touch


# --------------------------------------------------------------------------------------------
# results


@dataclass
class FlowStats:
    """What one flow did in a run (the ``flows`` entries of ``sync --json``).

    ``created`` counts records created on either side, ``updated`` records updated in the
    destination, ``written_back`` records updated in the source (two-way), ``unchanged``
    records read that needed no write (echoes included).
    """

    name: str
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    written_back: int = 0
    dead_lettered: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    field_problems: int = 0
    deleted: int = 0
    #: linked records leadrelay deleted because their lead was deleted on the other side
    propagated: int = 0
    #: passes of the flow in the run (a flow runs again while another flow wrote into a system
    #: it reads, so ``read`` counts the records of every pass: echoes read again included)
    rounds: int = 1
    error: str | None = None

    def add(self, other: FlowStats) -> None:
        """Add another run of the same flow to these counts (its error, if any, is kept)."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, int):
                setattr(self, item.name, value + getattr(other, item.name))
        for connection, calls in other.api_calls.items():
            self.api_calls[connection] = self.api_calls.get(connection, 0) + calls
        self.error = other.error or self.error

    def to_json(self) -> dict[str, Any]:
        """The DESIGN §11 shape: name, counts and API calls per connection."""
        return {
            "name": self.name,
            "read": self.read,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "written_back": self.written_back,
            "dead_lettered": self.dead_lettered,
            "field_problems": self.field_problems,
            "api_calls": dict(self.api_calls),
        }

    def to_stats(self) -> dict[str, Any]:
        """The run-log form: the JSON shape plus conflicts and the error, if any."""
        return {
            **self.to_json(),
            "conflicts": self.conflicts,
            "deleted": self.deleted,
            "deletes_propagated": self.propagated,
            "rounds": self.rounds,
            "error": self.error,
        }


@dataclass(frozen=True)
class PlannedRecord:
    """One record's plan, for ``--dry-run`` output and the run log."""

    flow: str
    target: str
    lead_key: str
    email: str | None
    action: Action
    changes: list[tuple[str, Any, Any]]
    #: A person leadrelay does not know yet: in a dry run its key is made up for the plan
    #: (the real run makes its own).
    new_lead: bool = False


# --------------------------------------------------------------------------------------------
# connectors and context


class ConnectorPool:
    """The connectors of a project, built on first use and closed together.

    ``options`` are keyword arguments for every connector's constructor (e.g. a shorter
    ``retry`` policy in tests). With ``store``, every connector keeps its tokens, sessions and
    schema reads sealed in the state store, shared by every run and process using it; on
    PostgreSQL its API calls also draw from the account's rate budget there, shared by every
    worker.
    """

    def __init__(self, config: Config, *, store: StateStore | None = None, **options: Any) -> None:
        self.config = config
        self.options = options
        self._credentials = SealedCredentialCache(store) if store is not None else None
        self._budget = store if store is not None and store.dialect != "sqlite" else None
        self._open: dict[str, Connector[Any]] = {}

    def get(self, name: str) -> Connector[Any]:
        """The connector of connection ``name``."""
        if name not in self._open:
            settings = self.config.connection(name)
            cls = connector_class(settings.kind)
            connector = cls(settings, name, **self.options)
            if self._credentials is not None:
                connector.use_credentials(self._credentials)
            share_rate_limits(connector, account_key(settings.kind, settings), self._budget)
            self._open[name] = connector
        return self._open[name]

    def close(self) -> None:
        """Close every connector opened."""
        for connector in self._open.values():
            if self._budget is not None:  # the store may close next
                share_rate_limits(connector, "", None)
            connector.close()
        self._open.clear()

    def __enter__(self) -> ConnectorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SyncContext:
    """What one ``leadrelay sync`` invocation runs with (handed to inbox drainers too)."""

    config: Config
    store: StateStore
    connectors: ConnectorPool
    dry_run: bool = False
    run_id: int | None = None
    #: Builds each flow's qualify step (None: flows run without one).
    qualify: QualifyFactory | None = handoff_qualify


class InboxDrainer(Protocol):
    """A step ``leadrelay sync`` runs before the flows: delivers captured leads from the inbox
    (``store.claim_inbox``). Returns its counts as a :class:`FlowStats`, or None."""

    def __call__(self, context: SyncContext) -> FlowStats | None: ...


class PageSink(Protocol):
    """Takes the pages a pass reads in place of the engine (:mod:`leadrelay.sync.parts` stores
    them as part jobs), then ends the pass once they are written."""

    def take(self, engine: SyncEngine, from_side: Side, page: Page) -> bool:
        """Keep ``page`` (True), or leave it to the engine to process now (False)."""
        ...

    def end_pass(self, engine: SyncEngine, from_side: Side) -> None:
        """The read of the pass ended: returns once every page taken is written."""
        ...


_DRAINERS: list[InboxDrainer] = []


def register_inbox_drainer(drainer: InboxDrainer) -> None:
    """Add a step that ``leadrelay sync`` runs before its flows (the capture inbox)."""
    if drainer not in _DRAINERS:
        _DRAINERS.append(drainer)


def inbox_drainers() -> list[InboxDrainer]:
    """The registered inbox drainers, in registration order."""
    return list(_DRAINERS)


# --------------------------------------------------------------------------------------------
# the engine


@dataclass(frozen=True)
class _FlowRules(FieldRules):
    """A flow's field rules, each field's looked up once per run (the plan asks per record)."""

    looked_up: dict[str, Rule] = field(default_factory=dict, compare=False, repr=False)

    def rule(self, field: str) -> Rule:
        """The rule of ``field`` on this flow."""
        found = self.looked_up.get(field)
        if found is None:
            found = self.looked_up[field] = super().rule(field)
        return found


@dataclass
class _Item:
    """One record of a page on its way through the pipeline."""

    raw: RawRecord
    reader_id: str
    values: dict[str, Any]
    reader_fp: str
    #: ``values`` projected on the fields the flow carries (:func:`_project`).
    reader_kept: dict[str, Any]
    lead: Lead | None = None
    problems: list[Problem] = field(default_factory=list)
    key: str | None = None
    linked: bool = False
    new_lead: bool = False
    target_id: str | None = None
    target_raw: RawRecord | None = None
    relink_target: bool = False
    link_target: bool = False
    plan: RecordPlan | None = None
    target_changed: bool = True
    target_values: dict[str, Any] | None = None
    skip_reason: str | None = None
    dead_letter_id: int | None = None
    routed: bool = False
    field_problems: list[FieldProblem] = field(default_factory=list)
    baseline: dict[str, dict[str, Any]] | None = None
    call: str | None = None
    field_times: dict[str, tuple[datetime | None, datetime | None]] = field(default_factory=dict)


@dataclass
class _PageResult:
    """What one page commits."""

    identities: dict[str, str] = field(default_factory=dict)
    reader_links: dict[str, str] = field(default_factory=dict)
    target_links: dict[str, str] = field(default_factory=dict)
    target_relinks: dict[str, str] = field(default_factory=dict)
    written: list[tuple[str, str]] = field(default_factory=list)
    reader_fps: dict[str, str] = field(default_factory=dict)
    target_fps: dict[str, str] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    bumped: list[tuple[int, str]] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    field_problems: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = field(
        default_factory=list
    )
    baselines: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    tombstones: dict[str, list[tuple[str, str | None, str | None, datetime | None]]] = field(
        default_factory=dict
    )
    clocks: list[tuple[str, str, Any, datetime]] = field(default_factory=list)
    reader_unlinks: list[str] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    #: A page held for a bulk write (:mod:`leadrelay.sync.held`): its planned writes, not sent
    #: yet, and the lead keys and e-mails it planned for.
    unsent: list[_Item] = field(default_factory=list)
    leads: set[str] = field(default_factory=set)


class SyncEngine:
    """Runs one flow (see the module docstring).

    Args:
        store: the state store.
        flow: the flow's config.
        source, destination: the connectors of the flow's two connections.
        source_mapping, destination_mapping: their mappings.
        dry_run: plan only: no write to any system, nothing saved in the store.
        run_id: the run whose log receives conflict and skip events.
        on_plan: called with every record's plan (``--dry-run`` output).
        on_page: called after each page with (pass label, records in the page, the pass's
            total when the system reports one); progress display and the lock heartbeat hang
            here.
    """

    def __init__(
        self,
        store: StateStore,
        flow: FlowConfig,
        *,
        source: Connector[Any],
        destination: Connector[Any],
        source_mapping: FieldMapping,
        destination_mapping: FieldMapping,
        dry_run: bool = False,
        run_id: int | None = None,
        on_plan: Callable[[PlannedRecord], None] | None = None,
        on_page: Callable[[str, int, int | None], None] | None = None,
        qualifier: QualifyStep | None = None,
    ) -> None:
        self.store = store
        self.flow = flow
        self.source = source
        self.destination = destination
        # The flow's own mapping may name fields the connection's default does not read.
        source.read_mapped(source_mapping.system_fields())
        destination.read_mapped(destination_mapping.system_fields())
        self.mappings = {Side.SOURCE: source_mapping, Side.DESTINATION: destination_mapping}
        self.connectors: dict[Side, Connector[Any]] = {
            Side.SOURCE: source,
            Side.DESTINATION: destination,
        }
        self.rules = _FlowRules(dict(flow.field_rules))
        if flow.on_delete == "propagate":
            # A deletion to carry over is read in every run, idle or not (one more call).
            for connector in self.connectors.values():
                connector.deletions_every_s = 0.0
        self.dry_run = dry_run
        self.run_id = run_id
        self.on_plan = on_plan
        self.on_page = on_page
        self.qualifier = qualifier
        #: Takes the pages of a pass instead of this engine (a flow split into part jobs).
        self.page_sink: PageSink | None = None
        self.stats = FlowStats(flow.name)
        self._schemas: dict[Side, Schema | None] = {}
        self._writers: dict[Side, LeadWriter] = {}
        self._conflicts_seen: set[tuple[str, str]] = set()
        self._problem_keys: dict[Side, set[str]] = {}
        # A record's fingerprint covers the fields the flow carries from its side: a change
        # to anything else (a CRM default owner, a field no mapping of the other side holds)
        # is nothing to sync, so it is no reason to treat the record as news.
        self._fp_fields = {side: sorted(self._fields(side)) for side in Side}
        self._fp_only = {side: frozenset(names) for side, names in self._fp_fields.items()}
        self._fp_parts = {side: _parts(names) for side, names in self._fp_fields.items()}
        #: Per side, what this run wrote there and stored a fingerprint for: record id →
        #: (that fingerprint, the system values the write left in the fields the mapping
        #: reads), so the record read back (the write-back pass re-reads every record the
        #: forward pass wrote) is known for an echo without mapping it (:func:`_reads_as`).
        self._written: dict[Side, dict[str, tuple[str, dict[str, Any]]]] = {
            side: {} for side in Side
        }
        self._echo_reads = {side: self._echo_reads_of(side) for side in Side}
        self._calls_at_start = {
            source.name: source.api_calls,
            destination.name: destination.api_calls,
        }

    @classmethod
    def for_flow(
        cls,
        context: SyncContext,
        flow: FlowConfig,
        **kwargs: Any,
    ) -> SyncEngine:
        """An engine for ``flow`` with its connectors and mappings loaded from the project.

        Raises MappingError (a configuration error) when a mapping does not load.
        """
        config = context.config
        source = context.connectors.get(flow.source)
        destination = context.connectors.get(flow.destination)
        source_mapping = load_mapping(
            config.connection(flow.source).kind,
            project_dir=config.folder,
            override=flow.mappings.get(flow.source),
        )
        destination_mapping = load_mapping(
            config.connection(flow.destination).kind,
            project_dir=config.folder,
            override=flow.mappings.get(flow.destination),
        )
        return cls(
            context.store,
            flow,
            source=source,
            destination=destination,
            source_mapping=source_mapping,
            destination_mapping=destination_mapping,
            dry_run=context.dry_run,
            run_id=context.run_id,
            **{
                "qualifier": context.qualify(
                    config,
                    context.store,
                    flow,
                    source,
                    destination,
                    destination_mapping,
                    context.dry_run,
                )
                if context.qualify is not None
                else None,
                **kwargs,
            },
        )

    # -- running -------------------------------------------------------------------------------

    def run(self, *, full: bool = False) -> FlowStats:
        """Run the flow: forward pass, then (two-way) the write-back pass.

        ``full`` forgets the flow's cursors first, so both sides are read from the start.
        Connector errors other than a refused record (auth, budget, transport once retries ran
        out) propagate; what was committed before stays committed.
        """
        try:
            with _older_objects_spared():
                if full and not self.dry_run:
                    self.store.reset_cursors(self.flow.name)
                if not self.dry_run:
                    self._replay_field_problems()
                self._pass(Side.SOURCE, full=full)
                if self.flow.two_way:
                    self._pass(Side.DESTINATION, full=full)
                if self.qualifier is not None and not self.dry_run:
                    self._escalate(self.qualifier)
        finally:
            self._count_calls()
        return self.stats

    def _escalate(self, qualifier: QualifyStep) -> None:
        """Escalate SLA breaches of this flow's destination and log what went out."""
        events = qualifier.escalation_events()
        if events:
            with self.store.transaction() as conn:
                self._append_events(events, conn)

    def _count_calls(self) -> None:
        for connector in (self.source, self.destination):
            self.stats.api_calls[connector.name] = (
                connector.api_calls - self._calls_at_start[connector.name]
            )

    def _shared_idle_read(self, reader: Connector[Any], cursor: str | None) -> str | None:
        """The cursor a read of ``reader`` from ``cursor`` would end at, taken from another
        flow's read of it in this process that found nothing, when that read answers this one
        (:meth:`Connector.answer_read`) and nothing was called on ``reader`` since (no write,
        no other read), within :data:`SHARED_READ_S`: two flows sharing a source then read it
        once in an idle run."""
        memo = reader.idle_read
        if memo is None or cursor is None:
            return None
        start, end, calls, at = memo
        age = time.monotonic() - at
        if reader.api_calls != calls or age > SHARED_READ_S:
            return None
        return reader.answer_read(start, end, cursor, age_s=age)

    def _pass(self, from_side: Side, *, full: bool) -> None:
        reader = self.connectors[from_side]
        cursor = None if full else self.store.get_cursor(self.flow.name, reader.name)
        label = f"{self.flow.name}: {reader.name} → {self.connectors[from_side.other].name}"
        shared = None if full else self._shared_idle_read(reader, cursor)
        if shared is not None:
            if not self.dry_run:
                self.store.set_cursor(self.flow.name, reader.name, shared)
            if self.on_page is not None:
                self.on_page(label, 0, 0)
            return
        done = 0
        quiet = True
        # The next page is read while this one is processed and written (the reader's calls
        # then overlap the writer's). Write-back with a qualify step reads in line: a recycle
        # play may read the destination's owners through the connector being read.
        ahead = from_side is Side.SOURCE or self.qualifier is None
        pages = _read_ahead(reader, cursor) if ahead else _read_in_line(reader, cursor)
        hold = self._write_hold(from_side)
        try:
            for page, calls in pages:
                quiet = quiet and not page.records and not page.deleted
                if quiet and page.cursor is not None:
                    reader.idle_read = (cursor, page.cursor, calls, time.monotonic())
                else:
                    reader.idle_read = None
                if self.page_sink is None or not self.page_sink.take(self, from_side, page):
                    if hold is None:
                        self.apply_page(from_side, page)
                    else:
                        self._apply_or_hold(from_side, page, hold)
                total = None if page.remaining is None else done + page.remaining
                done += len(page.records)
                if self.on_page is not None:
                    self.on_page(label, len(page.records), total)
            if hold is not None:
                self._send_held(from_side, hold)  # the read ended
        finally:
            pages.close()  # stops a read-ahead thread at once when a page fails
        if self.page_sink is not None:
            self.page_sink.end_pass(self, from_side)

    def apply_page(
        self,
        from_side: Side,
        page: Page,
        *,
        then: Callable[[Connection], None] | None = None,
    ) -> None:
        """Process one page read from ``from_side`` and commit it (not in a dry run) with its
        cursor; ``then`` runs last in the page's transaction."""
        merged_keys = self._relink_merges(from_side, page)
        result = self._process(from_side, page.records)
        if page.deleted:
            self._deletions(from_side, page.deleted, result, merged_keys)
        if not self.dry_run:
            self._commit(from_side, result, page.cursor, then=then)

    # -- a backfill's writes as bulk jobs (leadrelay.sync.held) --------------------------------

    def _write_hold(self, from_side: Side) -> WriteHold[_PageResult] | None:
        """A hold for the pass's pages when its writer takes bulk jobs (not in a dry run, nor
        in a pass split into part jobs)."""
        if self.dry_run or self.page_sink is not None:
            return None
        threshold = self.connectors[from_side.other].bulk_threshold
        return None if threshold is None else WriteHold(threshold)

    def _apply_or_hold(self, from_side: Side, page: Page, hold: WriteHold[_PageResult]) -> None:
        """Process ``page`` as :meth:`apply_page` does, or plan it and hold its writes and its
        commit (see :mod:`leadrelay.sync.held`)."""
        if page.deleted:
            # Deletions and merges take effect in the order read: the held pages go first,
            # then this one on its own.
            self._send_held(from_side, hold)
            self.apply_page(from_side, page)
            return
        if not hold.wants(page.remaining):
            self.apply_page(from_side, page)
            return
        result = self._process(from_side, page.records, hold=hold)
        if not result.unsent and not len(hold):
            self._commit(from_side, result, page.cursor)
            return
        creates = 0
        for item in result.unsent:
            # Held per record until the job: what the write and the settling read (the raw
            # record for a dead letter, the mapped values, the plan's fields); the Lead and the
            # plan's change list (already logged) go.
            item.lead, item.problems = None, []
            if item.plan is not None:
                item.plan.changes, item.plan.conflicts = [], []
                creates += item.plan.target_id is None
        hold.add(HeldPage(result, page.cursor, len(page.records), creates, frozenset(result.leads)))
        if hold.full:
            self._send_held(from_side, hold)

    def _send_held(self, from_side: Side, hold: WriteHold[_PageResult]) -> None:
        """Write every held page's planned writes in one call (the connector makes it a bulk
        job above its threshold), settle each record into its own page's result, then commit
        the pages in the order read, each with its cursor."""
        pages = hold.take()
        sends = [item for page in pages for item in page.result.unsent]
        sent: dict[int, tuple[WriteResult, list[FieldProblem]]] = {}
        if sends:
            for item, outcome, problems in self._write(
                from_side.other, sends, batch_size=len(sends)
            ):
                sent[id(item)] = (outcome, problems)
            sends.clear()
        # Page by page, each settled and committed before the next: what a page commits
        # (journal, baselines, fingerprints) is held for one page at a time.
        for page in pages:
            result = page.result
            self._settle_sent(
                from_side, [(item, *sent.pop(id(item))) for item in result.unsent], result
            )
            result.unsent = []
            self._commit(from_side, result, page.cursor)

    @staticmethod
    def _leads_of(items: Mapping[str, _Item]) -> set[str]:
        """The lead keys and normalized e-mails of ``items`` (a page's records)."""
        leads: set[str] = set()
        for item in items.values():
            if item.key is not None:
                leads.add(item.key)
            if item.lead is not None and item.lead.email:
                leads.add(normalize_email(item.lead.email))
        return leads

    # -- deletes and merges --------------------------------------------------------------------

    def _relink_merges(self, from_side: Side, page: Page) -> dict[str, str]:
        """Before a page's records are processed, the record a merge made takes the lead of a
        record merged into it, so it is synced as that lead and not met as a new one (which
        would create a duplicate in the other system when the merge kept the e-mail of a
        record leadrelay never synced). When several linked records merged into one survivor
        (two leads were one person), the lead holding the survivor's e-mail keeps it, else the
        first; the others lose their link in :meth:`_deletions`. Relinking is idempotent, so a
        run that dies before its page is committed does it again. Returns the leads of the
        records merged away, as they were linked before (the merge's events name them)."""
        merges = [d for d in page.deleted if d.merged_into]
        if not merges or self.dry_run:
            return {}
        reader = self.connectors[from_side]
        keys = self.store.keys_for_many(reader.name, [d.record_id for d in merges])
        owned = self.store.keys_for_many(reader.name, [str(d.merged_into) for d in merges])
        claimants: dict[str, list[str]] = {}
        for deletion in merges:
            key, survivor = keys.get(deletion.record_id), str(deletion.merged_into)
            if key is not None and survivor not in owned:
                claimants.setdefault(survivor, [])
                if key not in claimants[survivor]:
                    claimants[survivor].append(key)
        if not claimants:
            return keys
        mapping = self.mappings[from_side]
        emails: dict[str, str] = {}
        for raw in page.records:
            rid = record_id(reader, raw)
            if rid in claimants:
                email = mapping.to_lead(raw, connection=reader.name, external_id=rid).values.get(
                    "email"
                )
                if isinstance(email, str) and email.strip():
                    emails[rid] = normalize_email(email)
        holders = self.store.find_keys_by_emails(list(emails.values())) if emails else {}
        for survivor, leads in claimants.items():
            holder = holders.get(emails.get(survivor, ""))
            self.store.relink(holder if holder in leads else leads[0], reader.name, survivor)
        return keys

    def _deletions(
        self,
        from_side: Side,
        deletions: Sequence[Deletion],
        result: _PageResult,
        merged_keys: Mapping[str, str],
    ) -> None:
        """Records the reader reports deleted or merged away (DESIGN §7.4a): tombstoned, so
        leadrelay never re-creates them; a merge's other leads lose their link to the survivor;
        with ``on_delete = "propagate"`` the linked record on the other side is deleted too.
        ``merged_keys``: the leads of records merged away that :meth:`_relink_merges` already
        moved to their survivor (their old link is gone)."""
        reader = self.connectors[from_side]
        other = self.connectors[from_side.other]
        keys = {
            **self.store.keys_for_many(reader.name, [d.record_id for d in deletions]),
            **merged_keys,
        }
        survivors = self.store.keys_for_many(
            reader.name, [d.merged_into for d in deletions if d.merged_into]
        )
        propagate: dict[str, str] = {}
        for deletion in deletions:
            key = keys.get(deletion.record_id)
            result.tombstones.setdefault(reader.name, []).append(
                (deletion.record_id, key, deletion.merged_into, deletion.at)
            )
            self.stats.deleted += 1
            if key is None:
                continue
            if deletion.merged_into:
                owner = survivors.get(deletion.merged_into)
                event: dict[str, Any] = {
                    "event": "merged",
                    "lead": key,
                    "connection": reader.name,
                    "record": deletion.record_id,
                    "into": deletion.merged_into,
                }
                if owner is not None and owner != key:
                    # Two leads turned out to be one person: the survivor's lead keeps the
                    # record; this one loses its link there. (The survivor was linked to the
                    # lead that keeps it before the page: _relink_merges.)
                    result.reader_unlinks.append(key)
                    event["into_lead"] = owner
                result.events.append(event)
                continue
            result.events.append(
                {
                    "event": "deleted",
                    "lead": key,
                    "connection": reader.name,
                    "record": deletion.record_id,
                    "on_delete": self.flow.on_delete,
                }
            )
            if self.flow.on_delete == "propagate":
                target_id = self.store.external_id_for(key, other.name)
                if target_id is not None:
                    propagate[target_id] = key
        if not propagate or self.dry_run:
            return
        if not other.supports(Capability.DELETE):
            result.events.append(
                {
                    "event": "delete_not_propagated",
                    "connection": other.name,
                    "reason": f"{other.kind} connector cannot delete",
                }
            )
            return
        ids = list(propagate)
        for start in range(0, len(ids), other.batch_size):
            chunk = ids[start : start + other.batch_size]
            for target_id, outcome in zip(chunk, other.delete(chunk), strict=True):
                key = propagate[target_id]
                if outcome.ok:
                    self.stats.propagated += 1
                    result.tombstones.setdefault(other.name, []).append(
                        (target_id, key, None, None)
                    )
                    result.events.append(
                        {
                            "event": "delete_propagated",
                            "lead": key,
                            "connection": other.name,
                            "record": target_id,
                        }
                    )
                else:
                    result.events.append(
                        {
                            "event": "delete_failed",
                            "lead": key,
                            "connection": other.name,
                            "record": target_id,
                            "reason": str(outcome.error),
                        }
                    )

    # -- field problems the destination now accepts -------------------------------------------

    def _replay_field_problems(self) -> None:
        """Send again the leads of this flow whose refused values would now pass (a pick list
        extended, a value map added; DESIGN §7.7): read from the side they came from and put
        through the page pipeline as if they had changed."""
        rows = self.store.field_problems(flow=self.flow.name)
        wanted: dict[Side, set[str]] = {}
        for row in rows:
            side = Side(str(row.origin.get("from_side", Side.SOURCE.value)))
            reader_id = row.origin.get("reader_id")
            if self.connectors[side.other].name != row.connection or not reader_id:
                continue
            if self._writer(side.other).accepts_now(row.to_json()):
                wanted.setdefault(side, set()).add(str(reader_id))
        for side, ids in wanted.items():
            reader = self.connectors[side]
            found = self._read_by_ids(reader, sorted(ids))
            if not found:
                continue
            result = self._process(side, list(found.values()), force=True)
            result.events.append(
                {
                    "event": "field_problems_replayed",
                    "connection": reader.name,
                    "records": len(found),
                }
            )
            self._commit(side, result, None)

    @staticmethod
    def _read_by_ids(reader: Connector[Any], ids: Sequence[str]) -> dict[str, RawRecord]:
        """The records of ``ids`` read again from ``reader``, a batch per call."""
        found: dict[str, RawRecord] = {}
        for chunk in _chunks(ids, reader.batch_size):
            found.update(reader.lookup(ids=list(chunk)))
        return found

    # -- retrying dead letters -----------------------------------------------------------------

    def retry(self, dead_letters: Sequence[DeadLetter]) -> dict[int, bool]:
        """Replay dead letters of this flow through the same path; ``{id: written}``.

        The record is read again from the system it came from (by id), so a fix made there is
        picked up. A letter whose record is gone is left open.
        """
        outcome: dict[int, bool] = {}
        by_side: dict[Side, list[DeadLetter]] = {Side.SOURCE: [], Side.DESTINATION: []}
        for letter in dead_letters:
            side = Side(letter.payload.get("from_side", Side.SOURCE.value))
            by_side[side].append(letter)
        for side, letters in by_side.items():
            if not letters:
                continue
            reader = self.connectors[side]
            wanted = {
                str(letter.payload.get("reader_id") or letter.record_ref): letter
                for letter in letters
            }
            found = self._read_by_ids(reader, list(wanted))
            records = [found[rid] for rid in wanted if rid in found]
            for rid, letter in wanted.items():
                if rid not in found:
                    outcome[letter.id] = False
            result = self._process(
                side, records, force=True, letters={rid: dl.id for rid, dl in wanted.items()}
            )
            if not self.dry_run:
                self._commit(side, result, None)
            bumped = {dl_id for dl_id, _ in result.bumped}
            for letter in letters:
                outcome.setdefault(letter.id, letter.id not in bumped)
        self._count_calls()
        return outcome

    # -- one page ------------------------------------------------------------------------------

    def _process(
        self,
        from_side: Side,
        records: Sequence[RawRecord],
        *,
        force: bool = False,
        letters: Mapping[str, int] | None = None,
        hold: WriteHold[_PageResult] | None = None,
    ) -> _PageResult:
        reader = self.connectors[from_side]
        reader_mapping = self.mappings[from_side]
        result = _PageResult()
        self.stats.read += len(records)
        letters = letters or {}

        # 1. map, drop echoes, then build the Leads of what is left. A record with a stored
        #    fingerprint is first mapped only as far as the fingerprint needs: an echo of
        #    leadrelay's own write (the write-back pass re-reads every record the forward pass
        #    wrote) costs no more than that.
        parts = self._fp_parts[from_side]
        known: dict[str, str] = {}
        if not force:
            ids = [rid for raw in records if (rid := record_id(reader, raw)) is not None]
            known = self.store.get_fingerprints(self._fp_space(reader), ids) if ids else {}
        items: dict[str, _Item] = {}
        drafts: dict[str, LeadDraft] = {}
        written = self._written[from_side]
        reads = self._echo_reads[from_side]
        for raw in records:
            rid = record_id(reader, raw)
            if rid is not None and rid in known:
                wrote = written.pop(rid, None) if written else None
                if (
                    wrote is not None
                    and reads
                    and wrote[0] == known[rid]
                    and _reads_as(raw, wrote[1], reader_mapping, self._fp_only[from_side])
                ):
                    # It holds what this run wrote, whose mapped values are the fingerprint.
                    self.stats.unchanged += 1
                    continue
                echo = reader_mapping.to_lead(
                    raw, connection=reader.name, external_id=rid, only=self._fp_only[from_side]
                )
                if _digest(_project(echo.values, parts)) == known[rid]:
                    self.stats.unchanged += 1
                    continue
            if rid is None:
                self._dead_letter(
                    result,
                    from_side,
                    connection=reader,
                    ref="(no id)",
                    field="id",
                    reason=f"{reader.kind} record has no id",
                    raw=raw,
                    reader_id=None,
                    key=None,
                )
                continue
            draft = reader_mapping.to_lead(raw, connection=reader.name, external_id=rid)
            drafts[rid] = draft
            kept = _project(draft.values, parts)
            items[rid] = _Item(
                raw, rid, draft.values, _digest(kept), kept, dead_letter_id=letters.get(rid)
            )
        if not items:
            return result
        # The Lead (validation, e-mail and phone normalization) only for records that are news:
        # an echo of leadrelay's own write is recognized by its mapped values alone.
        for rid, item in items.items():
            draft = drafts[rid]
            item.lead, item.problems = build_lead(draft)
            for note in draft.notes:
                # A value no standard-list map covers: kept verbatim in custom, and reported.
                result.events.append(
                    {
                        "event": "unmapped_value",
                        "connection": reader.name,
                        "record": rid,
                        "field": note.field,
                        "system_field": note.system_field,
                        "value": note.value,
                        "reason": note.reason,
                    }
                )

        # 2. lead keys: links, identities, then the record's own leadrelay key
        linked = self.store.keys_for_many(reader.name, list(items))
        emails = {
            rid: ident
            for rid, item in items.items()
            if rid not in linked
            and item.lead is not None
            and (ident := _identity(item.lead.email)) is not None
        }
        by_email = self.store.find_keys_by_emails(set(emails.values())) if emails else {}
        seen_identities: dict[str, str] = {}
        for rid, item in items.items():
            if rid in linked:
                item.key, item.linked = linked[rid], True
            elif rid in emails and emails[rid] in by_email:
                item.key = by_email[emails[rid]]
            elif item.lead is not None:
                item.key, item.new_lead = item.lead.key, True
            ident = emails.get(rid)
            if ident is not None and not item.linked:
                first = seen_identities.setdefault(ident, rid)
                if first != rid and items[first].key is not None:
                    # The same person twice in one system: one record per system downstream.
                    item.key, item.new_lead = items[first].key, items[first].new_lead
                    item.skip_reason = f"duplicate in {reader.name} of record {first} (same email)"
        # Claim the identities and the reader's records before anything is written, each in
        # its own short transaction: two processes meeting one person (two flows sharing a
        # source, or a sync beside a capture worker) end with one lead key, the first claim's.
        if not self.dry_run:
            self._claim_identities(reader, items, emails)
        # a lead linked to another record of the reader is a duplicate there
        unlinked_keys = {i.key for i in items.values() if not i.linked and i.key is not None}
        reader_links = (
            self.store.external_ids_for_many(reader.name, unlinked_keys) if unlinked_keys else {}
        )
        for rid, item in items.items():
            if not item.linked and item.key in reader_links and reader_links[item.key] != rid:
                item.skip_reason = item.skip_reason or (
                    f"duplicate in {reader.name} of record {reader_links[item.key]} "
                    f"(lead {item.key})"
                )

        # 3. problems while mapping: dead letters at the reader
        for rid, item in list(items.items()):
            if item.lead is None:
                problem = item.problems[0] if item.problems else None
                self._dead_letter(
                    result,
                    from_side,
                    connection=reader,
                    ref=rid,
                    field=problem.field if problem else None,
                    reason="; ".join(str(p) for p in item.problems) or "record did not map",
                    raw=item.raw,
                    reader_id=rid,
                    key=item.key if item.linked else None,
                    letter=item.dead_letter_id,
                )
                result.reader_fps[rid] = item.reader_fp
                del items[rid]
        for item in items.values():
            if item.lead is not None and item.key is not None:
                item.lead.__dict__["key"] = item.key
                _tag(item.lead)

        # 4. the other side's current records: by linked id, else by email. When a held page
        #    planned for one of this page's leads (the same key or e-mail), the held pages are
        #    written and committed first, so this page plans against what they wrote (their
        #    links, fingerprints, baselines) and no job writes one lead twice.
        if hold is not None:
            result.leads = self._leads_of(items)
            if hold.holds_any(result.leads):
                self._send_held(from_side, hold)
        self._lookup_targets(from_side, items, result)

        # 4b. qualify (handoff/): score, route and start the SLA clock of leads going to
        #     sales; a rejection sales writes back gets its recycle play
        if self.qualifier is not None:
            live = [i for i in items.values() if i.skip_reason is None and i.lead is not None]
            if from_side is Side.SOURCE:
                outcome = self.qualifier.qualify_page(
                    [(i.lead, i.raw, i.target_raw is None) for i in live if i.lead is not None]
                )
            else:
                outcome = self.qualifier.recycle_page(i.lead for i in live if i.lead is not None)
            for item, routed in zip(live, outcome.routed, strict=True):
                item.routed = routed
            result.events.extend(outcome.events)

        # 5. plan, check, write (a held page's writes wait in result.unsent)
        self._plan_and_write(from_side, items, result, defer=hold is not None)
        for item in items.values():
            result.reader_fps[item.reader_id] = item.reader_fp
            if item.key is not None and not item.linked and item.skip_reason is None:
                result.reader_links[item.key] = item.reader_id
            if item.lead is not None and item.key is not None and item.skip_reason is None:
                ident = _identity(item.lead.email)
                if ident is not None:
                    result.identities.setdefault(ident, item.key)
        return result

    def _claim_identities(
        self, reader: Connector[Any], items: dict[str, _Item], emails: Mapping[str, str]
    ) -> None:
        """Race-free identity: claim each unlinked record's e-mail, then the record itself,
        and adopt whichever lead key won each claim."""
        fresh = {
            rid: item
            for rid, item in items.items()
            if not item.linked and item.skip_reason is None and item.key is not None
        }
        claims: dict[str, str] = {}
        for rid, item in fresh.items():
            ident = emails.get(rid)
            if ident is not None and item.key is not None:
                claims.setdefault(ident, item.key)
        owners = self.store.claim_emails(claims) if claims else {}
        for rid, item in fresh.items():
            ident = emails.get(rid)
            if ident is not None and owners.get(ident, item.key) != item.key:
                item.key = owners[ident]
        # Insert-or-ignore answers both races in one statement: a record another process linked
        # first keeps its lead (adopted here), and a lead already linked to another record of
        # the reader gets no second link (a duplicate there, found by the caller).
        wanted = {rid: item.key for rid, item in fresh.items() if item.key is not None}
        holders = self.store.claim_links(reader.name, wanted)
        for rid, item in fresh.items():
            owner = holders.get(rid)
            if owner is not None:
                item.key, item.linked = owner, True

    def _lookup_targets(
        self, from_side: Side, items: dict[str, _Item], result: _PageResult
    ) -> None:
        writer = self.connectors[from_side.other]
        live = [i for i in items.values() if i.skip_reason is None and i.key is not None]
        dead = self.store.tombstoned_keys(writer.name, [i.key for i in live if i.key])
        for item in live:
            if item.key in dead:
                item.skip_reason = (
                    f"its {writer.name} record was deleted there; leadrelay does not re-create it"
                )
        live = [i for i in live if i.skip_reason is None]
        target_ids = self.store.external_ids_for_many(writer.name, [i.key for i in live if i.key])
        by_id: dict[str, _Item] = {}
        by_email: dict[str, list[_Item]] = {}
        for item in live:
            assert item.key is not None and item.lead is not None
            tid = target_ids.get(item.key)
            if tid is not None:
                item.target_id = tid
                by_id[tid] = item
            elif item.lead.email:
                by_email.setdefault(normalize_email(item.lead.email), []).append(item)
        if not by_id and not by_email:
            return
        found: dict[str, RawRecord] = {}
        if writer.supports(Capability.LOOKUP):
            id_list, email_list = list(by_id), list(by_email)
            size = writer.batch_size
            for start in range(0, max(len(id_list), len(email_list)), size):
                ids = id_list[start : start + size]
                mails = email_list[start : start + size]
                found.update(writer.lookup(emails=mails or None, ids=ids or None))
        for tid, item in by_id.items():
            raw = found.get(tid)
            if raw is not None:
                item.target_raw = raw
            else:
                # The linked record is gone from the target. Merged into another record, the
                # survivor holds the e-mail: relink to it. Deleted: never re-create it (§7.4a).
                item.target_id = None
                item.relink_target = True
                assert item.lead is not None
                raw = None
                if item.lead.email:
                    mail = normalize_email(item.lead.email)
                    raw = found.get(mail)
                    if raw is None and writer.supports(Capability.LOOKUP):
                        raw = writer.lookup(emails=[mail]).get(mail)
                if raw is not None:
                    item.target_raw = raw
                    item.target_id = record_id(writer, raw)
                else:
                    result.tombstones.setdefault(writer.name, []).append(
                        (tid, item.key, None, None)
                    )
                    result.events.append(
                        {
                            "event": "deleted",
                            "lead": item.key,
                            "connection": writer.name,
                            "record": tid,
                            "on_delete": "keep",
                        }
                    )
                    item.skip_reason = (
                        f"its {writer.name} record {tid} is gone (deleted there); leadrelay "
                        "does not re-create it"
                    )
        found_by_email: dict[str, _Item] = {}
        for mail, group in by_email.items():
            raw = found.get(mail)
            if raw is None:
                continue
            tid = record_id(writer, raw)
            if tid is None:
                continue
            for item in group:
                item.target_raw, item.target_id, item.link_target = raw, tid, True
                found_by_email[tid] = item
        if found_by_email:
            owners = self.store.keys_for_many(writer.name, list(found_by_email))
            for tid, owner in owners.items():
                item = found_by_email[tid]
                item.link_target = False
                if owner == item.key:
                    continue
                if item.linked:
                    item.skip_reason = (
                        f"{writer.name} record {tid} with this email belongs to lead {owner}, "
                        f"but {self.connectors[from_side].name} record {item.reader_id} is "
                        f"lead {item.key}"
                    )
                else:
                    # the same person, already known under another key: adopt it
                    item.key = owner
                    assert item.lead is not None
                    item.lead.__dict__["key"] = owner

    def _schema(self, side: Side) -> Schema | None:
        if side not in self._schemas:
            connector = self.connectors[side]
            self._schemas[side] = (
                connector.describe() if connector.supports(Capability.DESCRIBE) else None
            )
        return self._schemas[side]

    def _fields(self, from_side: Side) -> list[str]:
        reader_mapping = self.mappings[from_side]
        writer_mapping = self.mappings[from_side.other]
        readable = readable_fields(reader_mapping)
        fields = [
            name for name in writable_fields(writer_mapping) if name in readable or name == "key"
        ]
        if self.source.kind != self.destination.kind and "owner" not in self.flow.field_rules:
            # Owner ids belong to one system: a Salesforce user id means nothing to HubSpot.
            fields = [name for name in fields if name != "owner"]
        return fields

    def _plan_and_write(
        self, from_side: Side, items: dict[str, _Item], result: _PageResult, *, defer: bool = False
    ) -> None:
        writer = self.connectors[from_side.other]
        writer_mapping = self.mappings[from_side.other]
        fields = self._fields(from_side)
        two_way = [name for name in fields if self.rules.rule(name) is FieldRule.TWO_WAY]
        include = set(self.flow.include_stages) if self.flow.include_stages else None
        # What the qualify step sets reaches the writer's fields even when the reader's mapping
        # has none for it; a routed owner is one of the writer's own users, so it crosses kinds.
        writable = writable_fields(writer_mapping)
        qualified = [
            name
            for name in (self.qualifier.fields if self.qualifier is not None else ())
            if self.qualifier is not None
            and from_side is Side.SOURCE
            and name in writable
            and name not in fields
        ]
        routed_owner = ["owner"] if "owner" not in fields and "owner" in writable else []
        to_write: list[_Item] = []
        known_fps = self.store.get_fingerprints(
            self._fp_space(writer), [i.target_id for i in items.values() if i.target_id]
        )
        baselines = self.store.get_baselines(
            self.flow.name, [i.key for i in items.values() if i.key and i.target_id]
        )
        clocks = self.store.get_field_clocks([i.key for i in items.values() if i.key])
        for item in items.values():
            assert item.lead is not None and item.key is not None
            if item.skip_reason is not None:
                self.stats.unchanged += 1
                result.events.append(
                    {"event": "skipped", "lead": item.key, "reason": item.skip_reason}
                )
                continue
            creating = item.target_raw is None
            if (
                creating
                and from_side is Side.SOURCE
                and include is not None
                and item.lead.stage not in include
            ):
                self.stats.unchanged += 1
                continue
            target_lead: Lead | None = None
            target_fp: str | None = None
            target_values: dict[str, Any] | None = None
            if item.target_raw is not None:
                tdraft = writer_mapping.to_lead(item.target_raw)
                target_values = tdraft.values
                target_fp = _digest(_project(tdraft.values, self._fp_parts[from_side.other]))
                target_lead, _ = build_lead(tdraft)
            known_fp = known_fps.get(item.target_id) if item.target_id else None
            incoming_at = modified_at(self.connectors[from_side], item.raw)
            target_at = (
                modified_at(writer, item.target_raw) if item.target_raw is not None else None
            )
            newer = incoming_at is None or target_at is None or incoming_at >= target_at
            item.field_times = self._field_times(
                item, target_values, clocks.get(item.key, {}), incoming_at, target_at, two_way
            )
            plan = plan_record(
                incoming=item.lead,
                from_side=from_side,
                rules=self.rules,
                target_mapping=writer_mapping,
                target_raw=item.target_raw,
                target_id=item.target_id,
                target_current=target_lead,
                fields=without_left_out(
                    [*fields, *qualified, *(routed_owner if item.routed else [])],
                    item.problems,
                    item.lead,
                ),
                incoming_newer=newer,
                target_changed=target_fp is not None and known_fp != target_fp,
                target_values=target_values,
                incoming_values=item.values,
                baseline=self._baseline_of(baselines.get(item.key), from_side),
                field_newer={
                    name: tin is None or ttg is None or tin >= ttg
                    for name, (tin, ttg) in item.field_times.items()
                },
            )
            item.baseline = baselines.get(item.key)
            item.plan = plan
            item.target_changed = target_fp is None or known_fp != target_fp
            item.target_values = target_values
            for conflict in plan.conflicts:
                # Lost on one pass, the same conflict is seen again from the other side.
                if (item.key, conflict.field) in self._conflicts_seen:
                    continue
                self._conflicts_seen.add((item.key, conflict.field))
                self.stats.conflicts += 1
                result.events.append(conflict.to_event(item.key))
            vetted = self._vet(from_side.other, item, plan)
            if vetted.fatal:
                first = vetted.fatal[0]
                self._dead_letter(
                    result,
                    from_side,
                    connection=writer,
                    ref=item.key,
                    field=first.system_field or first.field,
                    reason="; ".join(str(p) for p in vetted.fatal),
                    raw=item.raw,
                    reader_id=item.reader_id,
                    key=item.key,
                    letter=item.dead_letter_id,
                )
                continue
            item.field_problems = [*left_out(item.problems), *vetted.problems]
            if self.on_plan is not None:
                self.on_plan(
                    PlannedRecord(
                        flow=self.flow.name,
                        target=writer.name,
                        lead_key=item.key,
                        email=item.lead.email,
                        action=plan.action,
                        changes=[(c.field, c.old, c.new) for c in plan.changes],
                        new_lead=item.new_lead,
                    )
                )
            if plan.action is Action.UNCHANGED:
                self.stats.unchanged += 1
                self._settle(from_side, item, result, None)
                continue
            to_write.append(item)
        if not to_write:
            return
        if self.dry_run:
            for item in to_write:
                self._count_write(from_side, item)
            return
        if defer:
            result.unsent = to_write
            return
        self._settle_sent(from_side, self._write(from_side.other, to_write), result)

    def _settle_sent(
        self,
        from_side: Side,
        sent: Iterable[tuple[_Item, WriteResult, list[FieldProblem]]],
        result: _PageResult,
    ) -> None:
        """Settle the written records of one page into its result: written, or dead-lettered
        with the system's message."""
        writer = self.connectors[from_side.other]
        written: list[Written] = []
        for item, outcome, problems in sent:
            assert item.plan is not None
            before = {} if item.plan.action is Action.CREATE else item.target_raw
            written.append(
                Written.of(item.key or item.reader_id, outcome, item.plan.fields, before, item.call)
            )
            if outcome.ok:
                item.field_problems = problems
                assert item.plan is not None
                if (
                    outcome.outcome is WriteOutcome.UNCHANGED
                    and item.plan.action is not Action.CREATE
                ):
                    # The system took nothing (a record that takes no writes, e.g. a Lead
                    # converted in Salesforce): it holds what was read, and nothing was written.
                    item.plan.expected = None
                    self.stats.unchanged += 1
                else:
                    self._count_write(from_side, item)
                self._settle(from_side, item, result, outcome)
            else:
                assert outcome.error is not None
                error = outcome.error
                self._dead_letter(
                    result,
                    from_side,
                    connection=writer,
                    ref=item.key or item.reader_id,
                    field=error.field,
                    reason=error.message or str(error),
                    raw=item.raw,
                    reader_id=item.reader_id,
                    key=item.key,
                    letter=item.dead_letter_id,
                )
        kind = "written" if from_side is Side.SOURCE else "written back"
        result.journal += Journal(self.store).writes(
            writer.name, written, kind=kind, flow=self.flow.name, run=self.run_id
        )

    def _count_write(self, from_side: Side, item: _Item) -> None:
        assert item.plan is not None
        if item.plan.action is Action.CREATE:
            self.stats.created += 1
        elif from_side is Side.SOURCE:
            self.stats.updated += 1
        else:
            self.stats.written_back += 1

    def _field_times(
        self,
        item: _Item,
        target_values: Mapping[str, Any] | None,
        clock: Mapping[str, tuple[Any, datetime]],
        incoming_at: datetime | None,
        target_at: datetime | None,
        two_way: Sequence[str],
    ) -> dict[str, tuple[datetime | None, datetime | None]]:
        """Per two-way field (``two_way``), when each side's value was set where it came from:
        the field clock's time when a side holds the value leadrelay last brought every system
        to (a copy leadrelay wrote is no change), else that side's record time."""
        times: dict[str, tuple[datetime | None, datetime | None]] = {}
        # Without a field clock (a lead new to the flow: a backfill's every field), each side's
        # record time, one pair shared by the fields.
        records = (incoming_at, target_at)
        for name in two_way:
            known = clock.get(name)
            if known is None:
                times[name] = records
                continue
            mine = item.reader_kept.get(name)  # it holds every field the flow carries
            theirs = (
                canonical_value(draft_value(target_values, name))
                if target_values is not None
                else None
            )
            same = canonical_value(known[0])
            times[name] = (
                known[1] if same == mine else incoming_at,
                known[1] if same == theirs else target_at,
            )
        return times

    def _next_clocks(
        self,
        from_side: Side,
        item: _Item,
        target_after: Mapping[str, Any],
        after_kept: Mapping[str, Any],
    ) -> list[tuple[str, str, Any, datetime]]:
        """Field-clock entries for the two-way fields both sides now agree on: the value, and
        when it was set where it came from (the earlier side when both already had it).
        ``after_kept`` is ``target_after`` projected (:func:`_project`) on the fields the flow
        carries from the target."""
        assert item.key is not None
        entries: list[tuple[str, str, Any, datetime]] = []
        before = item.target_values
        mine = item.reader_kept  # holds every field the flow carries from the reader
        projected = self._fp_only[from_side.other]
        for name, (tin, ttg) in item.field_times.items():
            value = mine.get(name)
            theirs = (
                after_kept.get(name)
                if name in projected
                else canonical_value(draft_value(target_after, name))
            )
            if value is None or value != theirs:
                continue
            had = before is not None and canonical_value(draft_value(before, name)) == value
            moments = [t for t in (tin, ttg if had else None) if t is not None]
            entries.append((item.key, name, value, min(moments) if moments else self.store.now()))
        return entries

    @staticmethod
    def _baseline_of(
        stored: Mapping[str, Mapping[str, Any]] | None, from_side: Side
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
        """A stored baseline as (incoming side's values, target side's values)."""
        if stored is None:
            return None
        return stored[from_side.value], stored[from_side.other.value]

    def _next_baseline(
        self,
        from_side: Side,
        here: dict[str, Any],
        there: dict[str, Any],
        previous: Mapping[str, Mapping[str, Any]] | None,
    ) -> dict[str, dict[str, Any]]:
        """The baseline after a record is settled, from what it keeps of each side's values
        (:func:`_nest` of a :func:`_project`; changed in place): a field both sides now agree
        on is synced at these values; a field they still disagree on (the incoming side lost
        a conflict) keeps its previous base, so the other side's change is carried when it is
        read."""
        if previous is not None:
            old_here, old_there = previous[from_side.value], previous[from_side.other.value]
            for name in set(here) | set(there) | set(old_here) | set(old_there):
                if canonical_value(here.get(name)) == canonical_value(there.get(name)):
                    continue
                for now, old in ((here, old_here), (there, old_there)):
                    if name in old:
                        now[name] = old[name]
                    else:
                        now.pop(name, None)
        return {from_side.value: here, from_side.other.value: there}

    def _echo_reads_of(self, side: Side) -> bool:
        """Whether :func:`_reads_as` can tell an echo in ``side``'s records: not when a
        fingerprint holds the head of a nested field (a nested field read as None leaves an
        empty dict under its head)."""
        heads = {name.partition(".")[0] for name in self.mappings[side].fields if "." in name}
        return heads.isdisjoint(self._fp_fields[side])

    def _remember_written(self, side: Side, item: _Item, target_id: str, fp: str) -> None:
        """Keep what a write left in ``side``'s record ``target_id`` (the values the plan's
        expected read-back was mapped from) with the fingerprint stored for it."""
        if side is Side.SOURCE or not self.flow.two_way or not self._echo_reads[side]:
            return  # only a write-back pass reads a record this run wrote, and it reads the CRM
        assert item.plan is not None
        keys = self.mappings[side].read_keys
        fields = item.plan.fields
        if item.plan.action is Action.CREATE or item.target_raw is None:
            left = {k: v for k, v in fields.items() if k in keys}
        else:
            left = {k: v for k, v in item.target_raw.items() if k in keys}
            left.update((k, v) for k, v in fields.items() if k in keys)
        kept = self._written[side]
        kept.pop(target_id, None)
        if len(kept) >= WRITTEN_KEPT:
            del kept[next(iter(kept))]
        kept[target_id] = (fp, left)

    def _open_problems(self, side: Side) -> set[str]:
        """The leads with open field problems in ``side``'s system (read once per run): only
        their writes need the store told what they resolved."""
        if side not in self._problem_keys:
            name = self.connectors[side].name
            self._problem_keys[side] = {
                row.lead_key for row in self.store.field_problems(connection=name)
            }
        return self._problem_keys[side]

    def _writer(self, side: Side) -> LeadWriter:
        """The write step of ``side`` (one per side per run: its schema is read once)."""
        if side not in self._writers:
            connector = self.connectors[side]
            self._writers[side] = LeadWriter(
                connector,
                self.mappings[side],
                schema=lambda: self._schema(side),
                fresh_schema=connector.describe_fresh
                if connector.supports(Capability.DESCRIBE)
                else None,
                batch_size=self.flow.batch_size,
            )
        return self._writers[side]

    def _vet(self, side: Side, item: _Item, plan: RecordPlan) -> Vetted:
        """The plan's values as the write step lets them go: a refused optional value is left
        out (or its fallback put in) and recorded; identity and required fields stop the
        record. The plan is adjusted in place (fields, action, expected read-back)."""
        writer = self._writer(side)
        vetted = Vetted(dict(plan.fields))
        for problem in plan.problems:
            writer.refuse(vetted, problem)
        if plan.action is not Action.UNCHANGED or plan.problems:
            vetted = writer.vet(item.key or "", vetted, creating=plan.action is Action.CREATE)
        if plan.action is Action.CREATE and item.lead is not None and not item.lead.email:
            vetted.fatal.append(
                Problem("email", f"no email: {writer.connector.kind} creates records by email")
            )
        if vetted.fatal or vetted.fields == plan.fields:
            return vetted
        plan.fields = vetted.fields
        if plan.action is Action.UPDATE and not plan.fields:
            plan.action, plan.changes, plan.expected = Action.UNCHANGED, [], None
        elif plan.action is not Action.UNCHANGED:
            raw = {} if plan.action is Action.CREATE else dict(item.target_raw or {})
            plan.expected = self.mappings[side].to_lead({**raw, **plan.fields}).values
        return vetted

    def _write(
        self, side: Side, items: list[_Item], *, batch_size: int | None = None
    ) -> Iterator[tuple[_Item, WriteResult, list[FieldProblem]]]:
        pending: dict[int, tuple[_Item, Pending]] = {}
        for item in items:
            assert item.plan is not None
            one = Pending(
                ref=item.key or item.reader_id,
                fields=item.plan.fields,
                external_id=item.plan.target_id,
                problems=list(item.field_problems),
            )
            pending[id(one)] = (item, one)
        for one, outcome in self._writer(side).write(
            [p for _, p in pending.values()], batch_size=batch_size
        ):
            item, _ = pending[id(one)]
            assert item.plan is not None
            if one.fields is not item.plan.fields:
                # a field refused by the system itself was taken out and the record resent
                raw = {} if item.plan.action is Action.CREATE else dict(item.target_raw or {})
                item.plan.fields = one.fields
                item.plan.expected = self.mappings[side].to_lead({**raw, **one.fields}).values
            item.call = one.call
            yield item, outcome, one.problems

    def _settle(
        self, from_side: Side, item: _Item, result: _PageResult, outcome: WriteResult | None
    ) -> None:
        """Record what a written (or already up-to-date) record leaves in the store."""
        assert item.key is not None and item.plan is not None
        writer_mapping = self.mappings[from_side.other]
        target_id = item.target_id
        if outcome is not None and outcome.external_id:
            target_id = outcome.external_id
        if target_id is None:
            return
        if item.relink_target:
            result.target_relinks[item.key] = target_id
        elif item.link_target or (outcome is not None and item.plan.action is Action.CREATE):
            result.target_links[item.key] = target_id
        if item.relink_target or item.link_target:
            system = self.connectors[from_side.other].name
            result.journal.append(
                Journal(self.store).matched(item.key, system, target_id, item.relink_target)
            )
        target_values = item.plan.expected
        if target_values is None:
            target_values = (
                item.target_values or writer_mapping.to_lead(item.target_raw or {}).values
            )
        # The fields the flow carries, as the target will read back: its fingerprint, its
        # baseline and its field clocks all start from this one projection.
        there_parts = self._fp_parts[from_side.other]
        there = _project(target_values, there_parts)
        if item.plan.action is Action.CREATE or not item.target_changed:
            # The target holds nothing leadrelay has not seen: what it will read back as is an
            # echo. A target changed by someone else keeps its old fingerprint, so its own
            # change is still carried the other way when it is read.
            fp = result.target_fps[target_id] = _digest(there)
            if item.plan.expected is not None:
                self._remember_written(from_side.other, item, target_id, fp)
        if outcome is not None:
            result.written.append((item.key, target_id))
        result.baselines[item.key] = self._next_baseline(
            from_side,
            _nest(item.reader_kept, self._fp_parts[from_side]),
            _nest(there, there_parts),
            item.baseline,
        )
        result.clocks.extend(self._next_clocks(from_side, item, target_values, there))
        if item.field_problems or (
            outcome is not None and item.key in self._open_problems(from_side.other)
        ):
            # A write carried every field but these: they are open, the lead's others resolved.
            problems = [p.to_json() for p in item.field_problems]
            result.field_problems.append(
                (
                    item.key,
                    {
                        "flow": self.flow.name,
                        "from_side": from_side.value,
                        "reader": self.connectors[from_side].name,
                        "reader_id": item.reader_id,
                    },
                    problems,
                )
            )
            self.stats.field_problems += len(problems)
            result.events.extend(
                {
                    "event": "field_problem",
                    "lead": item.key,
                    "connection": self.connectors[from_side.other].name,
                    **p,
                }
                for p in problems
            )
        if item.dead_letter_id is not None:
            result.retried.append(item.dead_letter_id)

    # -- dead letters and commit ---------------------------------------------------------------

    def _dead_letter(
        self,
        result: _PageResult,
        from_side: Side,
        *,
        connection: Connector[Any],
        ref: str,
        field: str | None,
        reason: str,
        raw: RawRecord,
        reader_id: str | None,
        key: str | None,
        letter: int | None = None,
    ) -> None:
        self.stats.dead_lettered += 1
        if letter is not None:
            result.bumped.append((letter, reason))
        else:
            result.dead_letters.append(
                {
                    "connection": connection.name,
                    "system": connection.kind,
                    "record_ref": ref,
                    "field": field,
                    "reason": reason,
                    "lead_key": key,
                    "flow": self.flow.name,
                    "payload": {
                        "from_side": from_side.value,
                        "reader": self.connectors[from_side].name,
                        "reader_id": reader_id,
                        "record": raw,
                    },
                }
            )
        if key is not None and connection is self.connectors[from_side.other]:
            result.failed.append((key, reason))

    def _fp_space(self, connector: Connector[Any]) -> str:
        """Fingerprints are kept per flow: what one flow reconciled is news to another flow
        reading the same connection (HubSpot feeds both Salesforce and Zoho)."""
        return f"{self.flow.name}/{connector.name}"

    def _commit(
        self,
        from_side: Side,
        result: _PageResult,
        cursor: str | None,
        *,
        then: Callable[[Connection], None] | None = None,
    ) -> None:
        reader = self.connectors[from_side]
        writer = self.connectors[from_side.other]
        with self.store.transaction() as conn:
            if result.identities:
                self.store.claim_emails(result.identities, conn=conn)
            self.store.link_many(reader.name, result.reader_links, conn=conn)
            self.store.link_many(writer.name, result.target_links, conn=conn)
            for key, target_id in result.target_relinks.items():
                self.store.relink(key, writer.name, target_id, conn=conn)
            for key in result.reader_unlinks:
                self.store.unlink(key, reader.name, conn=conn)
            for connection, rows in result.tombstones.items():
                self.store.add_tombstones(connection, rows, conn=conn)
            self.store.mark_written_many(result.written, writer.name, conn=conn)
            self.store.put_fingerprints(self._fp_space(reader), result.reader_fps, conn=conn)
            self.store.put_fingerprints(self._fp_space(writer), result.target_fps, conn=conn)
            for letter in result.dead_letters:
                self.store.add_dead_letter(**letter, conn=conn)
            for letter_id, reason in result.bumped:
                self.store.bump_dead_letter(letter_id, reason=reason, conn=conn)
            for letter_id in result.retried:
                self.store.mark_dead_letter_retried(letter_id, conn=conn)
            for key, reason in result.failed:
                self.store.mark_failed(key, writer.name, reason, conn=conn)
            self.store.put_baselines(self.flow.name, result.baselines, conn=conn)
            self.store.put_field_clocks(result.clocks, conn=conn)
            self.store.record_field_problems_many(
                writer.name, result.field_problems, flow=self.flow.name, conn=conn
            )
            self._append_events(result.events, conn)
            self.store.add_journal(result.journal, conn=conn)
            if cursor is not None:
                self.store.set_cursor(self.flow.name, reader.name, cursor, conn=conn)
            if then is not None:
                then(conn)

    def _append_events(self, events: Iterable[dict[str, Any]], conn: Connection) -> None:
        if self.run_id is None:
            return
        for event in events:
            self.store.append_event(self.run_id, {"flow": self.flow.name, **event}, conn=conn)
