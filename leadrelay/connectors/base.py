"""The connector contract, its data types and the registry of connector kinds.

A connector moves raw records (system field names) in and out of one system. It declares what
it can do as :class:`Capability` values; the engine checks those instead of ``isinstance``, and
every method a connector does not declare raises
:class:`~leadrelay.connectors.errors.UnsupportedCapability`.

Writing one::

    class ZohoConnector(Connector[ZohoConnection]):
        kind = "zoho"
        capabilities = frozenset({Capability.READ_INCREMENTAL, Capability.LOOKUP, ...})
        batch_size = 100

        def __init__(self, settings: ZohoConnection, name: str) -> None:
            super().__init__(settings, name)
            self.policy = self.call_policy(limiter=RateLimiter("zoho", max_calls=..., per_s=...))

        def upsert(self, inputs): ...   # one WriteResult per input, in order

All HTTP goes through :class:`~leadrelay.connectors.policy.CallPolicy` (see
:meth:`Connector.call_policy`), which counts :attr:`Connector.api_calls`.

Built-in kinds are imported on demand (``hubspot``, ``salesforce``, ``zoho``); third-party
packages register theirs under the entry-point group ``leadrelay.connectors``::

    [project.entry-points."leadrelay.connectors"]
    pipedrive = "leadrelay_pipedrive:PipedriveConnector"
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

from leadrelay.connectors.credentials import CredentialCache, process_cache
from leadrelay.connectors.errors import Rejected, UnsupportedCapability
from leadrelay.connectors.policy import CallPolicy, RateLimiter, RetryPolicy

__all__ = [
    "BUILTIN_CONNECTORS",
    "DELETIONS_EVERY_S",
    "ENTRY_POINT_GROUP",
    "Capability",
    "Connector",
    "ConnectorNotFound",
    "Deletion",
    "FieldInfo",
    "Health",
    "LookupKey",
    "LookupKind",
    "Page",
    "RawRecord",
    "Schema",
    "UpsertInput",
    "WriteOutcome",
    "WriteResult",
    "available_kinds",
    "connector_class",
    "normalize_email",
    "register",
]

#: One record as the system names its fields.
RawRecord: TypeAlias = dict[str, Any]

#: The entry-point group third-party connectors register under (DESIGN §5).
ENTRY_POINT_GROUP = "leadrelay.connectors"

#: Built-in kinds → ``"module:Class"``, imported only when the kind is used.
BUILTIN_CONNECTORS: Mapping[str, str] = {
    "hubspot": "leadrelay.connectors.hubspot:HubSpotConnector",
    "salesforce": "leadrelay.connectors.salesforce:SalesforceConnector",
    "zoho": "leadrelay.connectors.zoho:ZohoConnector",
}


class Capability(StrEnum):
    """What a connector can do; the engine checks these, never the connector's type."""

    READ_INCREMENTAL = "read_incremental"
    LOOKUP = "lookup"
    UPSERT = "upsert"
    UPDATE = "update"
    DELETE = "delete"
    DESCRIBE = "describe"
    CAPTURE = "capture"


#: The method each capability stands for (capture is a webhook receiver, not a method here).
CAPABILITY_METHODS: Mapping[Capability, str] = {
    Capability.READ_INCREMENTAL: "read_changes",
    Capability.LOOKUP: "lookup",
    Capability.UPSERT: "upsert",
    Capability.UPDATE: "update",
    Capability.DELETE: "delete",
    Capability.DESCRIBE: "describe",
}


def normalize_email(email: str) -> str:
    """The form of an email used as a natural key: trimmed and lower-cased.

    HubSpot matches ``idProperty=email`` exactly, so every connector keys by this form.
    """
    return email.strip().lower()


# --------------------------------------------------------------------------------------------
# Data types


@dataclass(frozen=True)
class Deletion:
    """A record the system deleted (or archived) since the cursor, or merged into another.

    Attributes:
        record_id: the system id of the record that is gone.
        merged_into: for a merge, the id of the surviving record (Salesforce ``MasterRecordId``,
            HubSpot's survivor whose ``hs_merged_object_ids`` names this id, Zoho's merge);
            None for a plain delete.
        at: when the system says it happened, when it says so.
    """

    record_id: str
    merged_into: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Page:
    """One page of changed records.

    Attributes:
        records: raw records in the order the system returned them.
        cursor: where to resume once this page is committed (opaque to the caller); None when
            the system gave no position, in which case the caller keeps its previous cursor.
        deleted: records deleted or merged away since the cursor (DESIGN §7.4a); a connector
            may report them on any page, typically on the last one or on a page of their own
            with no records.
        remaining: how many records the system says this read still holds, this page's
            included, when it says so (for progress: total and time left); None when unknown.
    """

    records: list[RawRecord]
    cursor: str | None
    deleted: tuple[Deletion, ...] = ()
    remaining: int | None = None


class LookupKind(StrEnum):
    """What a :class:`LookupKey` looks a record up by."""

    EMAIL = "email"
    ID = "id"


@dataclass(frozen=True)
class LookupKey:
    """A natural key (email, normalised) or the system's own record id."""

    kind: LookupKind
    value: str

    @classmethod
    def by_email(cls, email: str) -> LookupKey:
        """A key by email; normalised with :func:`normalize_email`."""
        normalized = normalize_email(email)
        if not normalized:
            raise ValueError("lookup by email needs a non-empty email")
        return cls(LookupKind.EMAIL, normalized)

    @classmethod
    def by_id(cls, record_id: str) -> LookupKey:
        """A key by the system's record id."""
        if not record_id:
            raise ValueError("lookup by id needs a non-empty id")
        return cls(LookupKind.ID, record_id)


@dataclass(frozen=True)
class UpsertInput:
    """One record to create or update by natural key.

    Attributes:
        ref: the caller's key for the record (the lead key), echoed in its :class:`WriteResult`.
        fields: the values to write, by system field name.
        external_id: the system's record id when already known (update in place).
    """

    ref: str
    fields: RawRecord
    external_id: str | None = None


class WriteOutcome(StrEnum):
    """What a write did to one record."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class WriteResult:
    """The result of writing one record; ``error`` is set exactly when it failed.

    Attributes:
        ref: the caller's key (an :class:`UpsertInput` ref, or the id written).
        external_id: the system's record id, when known.
        outcome: created, updated, unchanged or failed.
        error: why the system refused it, in its own words.
    """

    ref: str
    external_id: str | None
    outcome: WriteOutcome
    error: Rejected | None = None

    def __post_init__(self) -> None:
        if (self.outcome is WriteOutcome.FAILED) != (self.error is not None):
            raise ValueError(
                f"write result for {self.ref!r}: a failed outcome needs an error, and only it"
            )

    @property
    def ok(self) -> bool:
        """True unless the write failed."""
        return self.outcome is not WriteOutcome.FAILED

    @classmethod
    def failed(cls, ref: str, error: Rejected, external_id: str | None = None) -> WriteResult:
        """A failed result carrying the system's reason."""
        return cls(ref, external_id, WriteOutcome.FAILED, error)


@dataclass(frozen=True)
class FieldInfo:
    """One field of the live schema.

    Attributes:
        name: the API name (``Email``, ``lifecyclestage``, ``Lead_Source``).
        label: the label users see.
        type: the system's type name (``string``, ``enumeration``, ``picklist`` …).
        required: a create fails without it.
        read_only: the API refuses writes to it.
        unique: the system enforces unique values (usable as an upsert key).
        picklist_values: the allowed values (API values, not labels), or None when free.
        multi_select: values are ``;``-separated lists of picklist values.
    """

    name: str
    label: str
    type: str
    required: bool = False
    read_only: bool = False
    unique: bool = False
    picklist_values: tuple[str, ...] | None = None
    multi_select: bool = False

    def allows(self, value: Any) -> bool:
        """True when ``value`` may be written to this field (blank only if not required)."""
        if self.read_only:
            return False
        if value is None or value == "":
            return not self.required
        if self.picklist_values is None:
            return True
        allowed = set(self.picklist_values)
        if self.multi_select and isinstance(value, str):
            return all(part in allowed for part in value.split(";") if part)
        if isinstance(value, list | tuple):
            return self.multi_select and all(str(v) in allowed for v in value)
        return str(value) in allowed


@dataclass(frozen=True)
class Schema:
    """The live schema of one object (``describe()``)."""

    object_name: str
    fields: Mapping[str, FieldInfo]

    def has(self, name: str) -> bool:
        """True when the object has a field ``name``."""
        return name in self.fields

    def field(self, name: str) -> FieldInfo:
        """The field ``name``; KeyError naming the object when it has none."""
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(f"{self.object_name} has no field {name!r}") from None

    def allows(self, name: str, value: Any) -> bool:
        """True when the field exists and ``value`` may be written to it."""
        info = self.fields.get(name)
        return info is not None and info.allows(value)

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the fields a create must set."""
        return tuple(name for name, info in self.fields.items() if info.required)

    @property
    def picklists(self) -> dict[str, tuple[str, ...]]:
        """Field name → allowed values, for every picklist field."""
        return {
            name: info.picklist_values
            for name, info in self.fields.items()
            if info.picklist_values is not None
        }


@dataclass(frozen=True)
class Health:
    """What ``health()`` found.

    Attributes:
        ok: the connection can be used.
        system: the connector kind.
        instance: the resolved instance / region / portal (e.g. the Zoho API domain).
        credentials_valid: the credentials were accepted.
        budget_used, budget_max: API calls used and allowed in the system's budget window,
            when the system reports them.
        details: anything else worth showing (no secrets).
    """

    ok: bool
    system: str
    instance: str | None
    credentials_valid: bool
    budget_used: int | None = None
    budget_max: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The contract

SettingsT = TypeVar("SettingsT")


#: Default of :attr:`Connector.deletions_every_s`: an idle read reads the deletion list hourly.
DELETIONS_EVERY_S = 3600.0


class Connector(ABC, Generic[SettingsT]):
    """The contract every connector implements (DESIGN §5).

    Subclasses set :attr:`kind`, :attr:`capabilities` and :attr:`batch_size`, and override
    the method of every capability they declare plus :meth:`health`. A method whose capability
    is not declared raises :class:`UnsupportedCapability`.

    Args:
        settings: the connection settings (a model from ``leadrelay.config``).
        name: the connection's name in the project (``[connections.NAME]``).
    """

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: The largest batch one API call takes (lookup, upsert, update, delete).
    batch_size: ClassVar[int] = 100

    def __init__(self, settings: SettingsT, name: str) -> None:
        check_capabilities(type(self))
        self.settings = settings
        self.name = name
        self._api_calls = 0
        self._calls_lock = threading.Lock()
        #: Where tokens, sessions and describe() results are kept for their lifetime; the
        #: process's memory unless :meth:`use_credentials` gives the state store's.
        self.credentials: CredentialCache = process_cache()
        #: The last read of this connector that found nothing, while no call followed it:
        #: (its start cursor, its end cursor, :attr:`api_calls` after it, monotonic time).
        #: The sync engine hands it to a second flow reading from a covered cursor.
        self.idle_read: tuple[str | None, str, int, float] | None = None
        every = getattr(settings, "deletions_every_s", None)
        #: How often a read that finds no change still reads the deletion list (seconds; 0:
        #: every read). The sync engine sets 0 for a flow with ``on_delete = "propagate"``.
        self.deletions_every_s: float = DELETIONS_EVERY_S if every is None else float(every)

    @property
    def bulk_threshold(self) -> int | None:
        """Above this many records in one :meth:`upsert` call, the connector writes them as a
        bulk job (one job instead of a call per :attr:`batch_size`); None when it has no such
        path (the default). The sync engine asks, to gather a backfill's writes into calls
        that large."""
        return None

    def answer_read(
        self, start: str | None, end: str, cursor: str | None, *, age_s: float
    ) -> str | None:
        """The cursor a read from ``cursor`` would end at now, when a finished read from
        ``start`` that found nothing, ended at ``end`` and was made ``age_s`` seconds ago
        answers it: that read searched every part a read from ``cursor`` would search (each
        keyset position) from no later a position, and each part it read only when due (a
        deletion list read at intervals) it either read from no later a watermark or is not
        due for ``cursor`` either (the read from ``cursor`` then keeps its own watermark).
        None when it does not answer, and by default (a connector that does not know its
        cursors' order never shares). Two flows sharing a source then read it once in an idle
        run (the sync engine asks)."""
        return None

    def deletions_due(self, last_read: float | None, now: float, *, changed: bool) -> bool:
        """Whether a read reads the deletion list: always when it found changes (so a run that
        may write learns of deletions first), on a first read, and otherwise once
        :attr:`deletions_every_s` has passed since ``last_read`` (epoch seconds, the server's
        time of the last deletion read) — so an idle run costs one read call, not two."""
        return (
            changed
            or last_read is None
            or self.deletions_every_s <= 0
            or now - last_read >= self.deletions_every_s
        )

    def use_credentials(self, cache: CredentialCache) -> None:
        """Keep tokens, sessions and schema reads in ``cache`` (shared across processes)."""
        self.credentials = cache

    def read_mapped(self, fields: Iterable[str]) -> None:
        """The system fields a flow's mapping names, before its first read: a connector that
        chooses what it reads adds them (HubSpot's properties; default: nothing to do)."""

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def api_calls(self) -> int:
        """HTTP calls made so far (each attempt counts; the sync engine reports it)."""
        with self._calls_lock:
            return self._api_calls

    def count_call(self) -> None:
        """Count one HTTP call; :class:`CallPolicy` calls it for every attempt."""
        with self._calls_lock:
            self._api_calls += 1

    def call_policy(
        self,
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> CallPolicy:
        """A :class:`CallPolicy` for this connection that counts into :attr:`api_calls`."""
        return CallPolicy(
            self.kind, retry=retry, limiter=limiter, on_call=self.count_call, **kwargs
        )

    @classmethod
    def supports(cls, capability: Capability) -> bool:
        """True when the connector declares ``capability``."""
        return capability in cls.capabilities

    def require(self, capability: Capability) -> None:
        """Raise :class:`UnsupportedCapability` unless the connector declares ``capability``."""
        if capability not in self.capabilities:
            declared = ", ".join(sorted(self.capabilities)) or "none"
            raise UnsupportedCapability(
                f"connection {self.name!r} ({self.kind}) cannot {capability.value}; "
                f"it supports: {declared}",
                system=self.kind,
            )

    # -- the contract ---------------------------------------------------------------------

    def read_changes(self, cursor: str | None) -> Iterator[Page]:
        """Pages of records changed since ``cursor`` (None: from the beginning).

        Each page carries the cursor to store once it is committed. The cursor may overlap the
        previous read by a small window (clock skew, equal timestamps); callers dedupe.
        """
        self.require(Capability.READ_INCREMENTAL)
        raise AssertionError("unreachable: read_incremental declared but not implemented")

    def lookup(
        self, emails: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> dict[str, RawRecord]:
        """Records found by email and/or id, keyed by normalised email or by id.

        One API call per batch of :attr:`batch_size` keys, never one per record. Keys not
        found are absent from the result.
        """
        self.require(Capability.LOOKUP)
        raise AssertionError("unreachable: lookup declared but not implemented")

    def upsert(self, inputs: Sequence[UpsertInput]) -> list[WriteResult]:
        """Create or update by natural key; one result per input, in input order.

        A record the system refuses is a failed :class:`WriteResult`, not an exception: only a
        failure of the whole call (auth, budget, transport) raises.
        """
        self.require(Capability.UPSERT)
        raise AssertionError("unreachable: upsert declared but not implemented")

    def update(self, updates: Mapping[str, RawRecord]) -> list[WriteResult]:
        """Write fields to existing records by system id; one result per id, in order."""
        self.require(Capability.UPDATE)
        raise AssertionError("unreachable: update declared but not implemented")

    def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        """Delete records by system id (validation clean-up); one result per id, in order."""
        self.require(Capability.DELETE)
        raise AssertionError("unreachable: delete declared but not implemented")

    def describe(self) -> Schema:
        """The live schema of the object leads are written to."""
        self.require(Capability.DESCRIBE)
        raise AssertionError("unreachable: describe declared but not implemented")

    def describe_fresh(self) -> Schema:
        """:meth:`describe` read from the system now, past any cached copy (a connector that
        caches its schema overrides this); the write step asks for it before refusing a value
        over a schema that may be stale."""
        return self.describe()

    @abstractmethod
    def health(self) -> Health:
        """Check credentials, API budget and the resolved instance, without writing."""

    def close(self) -> None:
        """Release clients and connections (default: nothing to release)."""

    def __enter__(self) -> Connector[SettingsT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.kind})>"


def check_capabilities(cls: type[Connector[Any]]) -> None:
    """TypeError unless ``cls`` overrides the method of every capability it declares."""
    if not isinstance(getattr(cls, "kind", None), str) or not cls.kind:
        raise TypeError(f"connector class {cls.__qualname__} must set kind")
    missing = [
        f"{capability.value} ({method})"
        for capability, method in CAPABILITY_METHODS.items()
        if capability in cls.capabilities and getattr(cls, method) is getattr(Connector, method)
    ]
    if missing:
        raise TypeError(
            f"connector {cls.kind!r} declares {', '.join(missing)} but does not implement it"
        )
    if cls.batch_size < 1:
        raise TypeError(f"connector {cls.kind!r}: batch_size must be at least 1")


# --------------------------------------------------------------------------------------------
# Registry


class ConnectorNotFound(LookupError):
    """No connector is installed for a kind."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        known = ", ".join(available_kinds()) or "none"
        extra = f" ({detail})" if detail else ""
        super().__init__(f"connector kind {kind!r} is not installed{extra}; known: {known}")

    def __str__(self) -> str:
        return str(self.args[0])


_registered: dict[str, type[Connector[Any]]] = {}
_loaded: dict[str, type[Connector[Any]]] = {}
_registry_lock = threading.Lock()


def register(kind: str, cls: type[Connector[Any]]) -> None:
    """Register ``cls`` as the connector for ``kind`` (overrides a built-in or entry point)."""
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"connector kind {kind!r}: {cls!r} is not a Connector subclass")
    check_capabilities(cls)
    with _registry_lock:
        _registered[kind] = cls


def unregister(kind: str) -> None:
    """Remove a kind added with :func:`register` (tests); unknown kinds are ignored."""
    with _registry_lock:
        _registered.pop(kind, None)
        _loaded.pop(kind, None)


def _import_target(kind: str, target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "that module is absent" means not installed; a broken import inside it is a bug.
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConnectorNotFound(kind) from exc
        raise
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConnectorNotFound(kind, f"{module_name} has no {attribute}") from None


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def connector_class(kind: str) -> type[Connector[Any]]:
    """The connector class for ``kind``: registered, built-in, then entry point.

    Raises:
        ConnectorNotFound: nothing provides ``kind`` ("connector kind 'x' is not installed;
            known: …").
        TypeError: what provides it is not a valid :class:`Connector`.
    """
    with _registry_lock:
        if kind in _registered:
            return _registered[kind]
        if kind in _loaded:
            return _loaded[kind]
    target: Any
    if kind in BUILTIN_CONNECTORS:
        target = _import_target(kind, BUILTIN_CONNECTORS[kind])
        source = BUILTIN_CONNECTORS[kind]
    else:
        matches = [ep for ep in _entry_points() if ep.name == kind]
        if not matches:
            raise ConnectorNotFound(kind)
        entry = matches[0]
        source = f"entry point {entry.value!r} ({ENTRY_POINT_GROUP})"
        target = entry.load()
    if not (isinstance(target, type) and issubclass(target, Connector)):
        raise TypeError(f"connector kind {kind!r}: {source} is not a Connector subclass")
    check_capabilities(target)
    with _registry_lock:
        _loaded[kind] = target
    return target


def available_kinds() -> list[str]:
    """Kinds that can be used: registered ones, installed built-ins and entry points."""
    kinds = set(_registered)
    for kind, target in BUILTIN_CONNECTORS.items():
        module_name = target.partition(":")[0]
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            kinds.add(kind)
    kinds.update(ep.name for ep in _entry_points())
    return sorted(kinds)
