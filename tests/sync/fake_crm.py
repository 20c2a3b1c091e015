"""An in-memory system behind the Connector contract, for sync engine tests.

``FakeSystem`` holds records by id with a change sequence (what ``read_changes`` pages
through) and a modification time per record; tests change records "from outside" with
:meth:`FakeSystem.put`. ``FakeHub`` speaks HubSpot contact property names (use the hubspot
mapping), ``FakeCrm`` Salesforce Lead field names (the salesforce mapping).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from leadrelay import config as config_module
from leadrelay.connectors import base
from leadrelay.connectors.base import (
    Capability,
    Connector,
    Deletion,
    FieldInfo,
    Health,
    Page,
    RawRecord,
    Schema,
    UpsertInput,
    WriteOutcome,
    WriteResult,
    normalize_email,
)
from leadrelay.connectors.errors import Rejected, Retryable
from leadrelay.mappings.engine import DEFAULTS_DIR, load_mapping

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_clock = itertools.count(1)


def tick() -> datetime:
    """A strictly increasing time shared by every fake system (one second per change)."""
    return _EPOCH + timedelta(seconds=next(_clock))


@dataclass
class FakeSystem:
    """The records of one fake system, and knobs to make it misbehave."""

    prefix: str
    key_field: str
    object_name: str
    fields: set[str]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    picklists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: fields a create needs (describe() says so), as Salesforce's LastName and Company.
    required: set[str] = field(default_factory=set)
    #: value → the system's message: a write holding this value anywhere is refused.
    reject_values: dict[str, str] = field(default_factory=dict)
    #: fail every write call after this many (a crash mid-run); None: never.
    fail_writes_after: int | None = None
    down: bool = False
    #: raised by every call (e.g. an AuthError); None: none.
    error: Exception | None = None
    writes: int = 0
    #: deleted record id → (change number, id of the record it was merged into)
    deleted: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _changes: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def put(self, values: Mapping[str, Any], record_id: str | None = None) -> str:
        """Create or change a record from outside leadrelay; returns its id."""
        if record_id is None:
            record_id = f"{self.prefix}{next(self._counter):05d}"
            self.records[record_id] = {}
        self.records[record_id].update(values)
        self._touch(record_id)
        return record_id

    def delete(self, record_id: str, merged_into: str | None = None) -> None:
        """Delete a record from outside leadrelay (or merge it into ``merged_into``)."""
        del self.records[record_id]
        self.seq.pop(record_id, None)
        self.deleted[record_id] = (next(self._changes), merged_into)

    def _touch(self, record_id: str) -> None:
        self.records[record_id]["updatedAt"] = tick().isoformat()
        self.seq[record_id] = next(self._changes)

    def by_email(self, email: str) -> list[str]:
        """Ids of records with this email."""
        wanted = normalize_email(email)
        return [
            rid
            for rid, rec in self.records.items()
            if normalize_email(str(rec.get(self.key_field) or "")) == wanted
        ]

    def raw(self, record_id: str) -> RawRecord:
        """A record as the API returns it."""
        return {"id": record_id, **self.records[record_id]}


class _FakeConnector(Connector[Any]):
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.READ_INCREMENTAL,
            Capability.LOOKUP,
            Capability.UPSERT,
            Capability.UPDATE,
            Capability.DELETE,
            Capability.DESCRIBE,
        }
    )
    batch_size: ClassVar[int] = 10
    page_size = 7
    #: Systems by connection name, for connectors built from a config (command tests).
    systems: ClassVar[dict[str, FakeSystem]] = {}

    def __init__(self, settings: Any, name: str, system: FakeSystem | None = None) -> None:
        super().__init__(settings, name)
        self.system = system if system is not None else self.systems[name]

    def _call(self) -> None:
        self.count_call()
        if self.system.error is not None:
            raise self.system.error
        if self.system.down:
            raise Retryable("service unavailable", system=self.kind, status=503)

    def read_changes(self, cursor: str | None) -> Iterator[Page]:
        after = int(cursor) if cursor else 0
        while True:
            self._call()
            events = sorted(
                [(seq, rid, False) for rid, seq in self.system.seq.items() if seq > after]
                + [(seq, rid, True) for rid, (seq, _) in self.system.deleted.items() if seq > after]
            )[: self.page_size]
            records = [self.system.raw(rid) for _, rid, gone in events if not gone]
            deleted = tuple(
                Deletion(rid, self.system.deleted[rid][1]) for _, rid, gone in events if gone
            )
            if not events:
                if after == (int(cursor) if cursor else 0):
                    yield Page([], cursor)
                return
            after = events[-1][0]
            yield Page(records, str(after), deleted)

    def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        self._write_call()
        results = []
        for rid in ids:
            if rid in self.system.records:
                self.system.delete(rid)
                results.append(WriteResult(rid, rid, WriteOutcome.UPDATED))
            else:
                error = Rejected("ENTITY_IS_DELETED", system=self.kind, record=rid)
                results.append(WriteResult.failed(rid, error))
        return results

    def lookup(
        self, emails: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> dict[str, RawRecord]:
        self._call()
        found: dict[str, RawRecord] = {}
        for email in emails or ():
            matches = self.system.by_email(email)
            if matches:
                found[normalize_email(email)] = self.system.raw(matches[0])
        for rid in ids or ():
            if rid in self.system.records:
                found[rid] = self.system.raw(rid)
        return found

    def _write_call(self) -> None:
        self._call()
        limit = self.system.fail_writes_after
        if limit is not None and self.system.writes >= limit:
            raise Retryable("connection reset", system=self.kind)
        self.system.writes += 1

    def _refusal(self, ref: str, fields: Mapping[str, Any]) -> Rejected | None:
        for name, value in fields.items():
            if name not in self.system.fields:
                return Rejected(
                    f"No such column '{name}'", system=self.kind, record=ref, field=name
                )
            message = self.system.reject_values.get(str(value))
            if message is not None:
                return Rejected(message, system=self.kind, record=ref, field=name)
        return None

    def upsert(self, inputs: Sequence[UpsertInput]) -> list[WriteResult]:
        self._write_call()
        results = []
        for item in inputs:
            refused = self._refusal(item.ref, item.fields)
            if refused is not None:
                results.append(WriteResult.failed(item.ref, refused))
                continue
            rid = item.external_id
            if rid is None:
                email = str(item.fields.get(self.system.key_field) or "")
                matches = self.system.by_email(email) if email else []
                rid = matches[0] if matches else None
            if rid is None:
                rid = self.system.put(dict(item.fields))
                results.append(WriteResult(item.ref, rid, WriteOutcome.CREATED))
            else:
                self.system.put(dict(item.fields), rid)
                results.append(WriteResult(item.ref, rid, WriteOutcome.UPDATED))
        return results

    def update(self, updates: Mapping[str, RawRecord]) -> list[WriteResult]:
        self._write_call()
        results = []
        for rid, fields in updates.items():
            refused = self._refusal(rid, fields)
            if refused is not None:
                results.append(WriteResult.failed(rid, refused))
                continue
            self.system.put(dict(fields), rid)
            results.append(WriteResult(rid, rid, WriteOutcome.UPDATED))
        return results

    def describe(self) -> Schema:
        self._call()
        return Schema(
            self.system.object_name,
            {
                name: FieldInfo(
                    name,
                    name,
                    "picklist" if name in self.system.picklists else "string",
                    required=name in self.system.required,
                    picklist_values=self.system.picklists.get(name),
                )
                for name in self.system.fields
            },
        )

    def health(self) -> Health:
        return Health(True, self.kind, None, True)


class FakeHub(_FakeConnector):
    """A marketing system with HubSpot's contact property names."""

    kind = "fakehub"


class FakeCrm(_FakeConnector):
    """A CRM with Salesforce's Lead field names."""

    kind = "fakecrm"
    batch_size = 5


@contextmanager
def fake_project(folder: Path, monkeypatch: pytest.MonkeyPatch, config_text: str) -> Iterator[Path]:
    """A project in ``folder`` whose connections ``hs`` (kind ``fakehub``) and ``sf`` (kind
    ``fakecrm``) are fresh fake systems, with the shipped mappings; the working directory is
    ``folder`` while it is open. Yields the config file."""
    monkeypatch.setattr(
        config_module, "registered_connector_kinds", lambda: frozenset({"fakehub", "fakecrm"})
    )
    base.register("fakehub", FakeHub)
    base.register("fakecrm", FakeCrm)
    (folder / "mappings").mkdir()
    for kind, shipped in (("fakehub", "hubspot"), ("fakecrm", "salesforce")):
        text = (DEFAULTS_DIR / f"{shipped}.toml").read_text(encoding="utf-8")
        (folder / "mappings" / f"{kind}.toml").write_text(text, encoding="utf-8")
    path = folder / "leadrelay.toml"
    path.write_text(config_text, encoding="utf-8")
    _FakeConnector.systems.clear()
    _FakeConnector.systems["hs"] = FakeSystem(
        "hs", "email", "contacts", set(load_mapping("hubspot").system_fields())
    )
    _FakeConnector.systems["sf"] = FakeSystem(
        "00Q",
        "Email",
        "Lead",
        set(load_mapping("salesforce").system_fields()),
        required={"LastName", "Company"},
    )
    monkeypatch.chdir(folder)
    try:
        yield path
    finally:
        base.unregister("fakehub")
        base.unregister("fakecrm")
        _FakeConnector.systems.clear()
