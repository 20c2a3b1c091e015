"""In-memory Leads of the Zoho CRM sandbox: records, indexes, and the per-record write results.

Not thread-safe by itself: the emulator holds its lock around every call.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from leadrelay.sandbox.zoho.schema import (
    API_USER,
    SEEDED_USERS,
    FieldDef,
    User,
    ValueError_,
    check_value,
    default_fields,
)

MAX_RECORDS_PER_CALL = 100
#: Fields the upsert duplicate check may use besides unique fields (Leads' system field).
SYSTEM_DUPLICATE_FIELDS = ("Email",)
_FIRST_ID = 5725767000001000000


def iso(moment: datetime) -> str:
    """Zoho's datetime format: ISO 8601 to the second with an offset (``+00:00``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _keyset_key(record: StoredRecord) -> tuple[datetime, int]:
    return record.modified.replace(microsecond=0), int(record.id)


def index_key(value: Any) -> str | None:
    """The case-insensitive key of a value in the email / unique-field indexes."""
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


@dataclass
class StoredRecord:
    """One Lead: its field values plus the system fields Zoho maintains."""

    id: str
    values: dict[str, Any]
    created: datetime
    modified: datetime
    created_by: User
    modified_by: User
    written_at: float

    def get(self, api_name: str) -> Any:
        """The value of a field, system fields included, in the API's JSON form."""
        if api_name == "id":
            return self.id
        if api_name == "Created_Time":
            return iso(self.created)
        if api_name == "Modified_Time":
            return iso(self.modified)
        if api_name == "Created_By":
            return {"name": self.created_by.full_name, "id": self.created_by.id}
        if api_name == "Modified_By":
            return {"name": self.modified_by.full_name, "id": self.modified_by.id}
        if api_name == "Converted__s":
            return bool(self.values.get(api_name))
        return self.values.get(api_name)

    def to_json(self, field_names: list[str]) -> dict[str, Any]:
        """The record with the given fields and its id."""
        body = {name: self.get(name) for name in field_names}
        body["id"] = self.id
        return body


@dataclass
class DeletedRecord:
    """One entry of the recycle bin (Get Deleted Records): who deleted what, and when.

    ``type`` is ``recycle`` while the record can be restored, ``permanent`` once the bin is
    emptied; Zoho names no surviving record for a record merged away, so a merge is a deletion.
    """

    id: str
    display_name: str
    created_by: User
    deleted_by: User
    deleted_time: datetime
    type: str = "recycle"

    def to_json(self) -> dict[str, Any]:
        """The entry as ``GET /crm/v7/{module}/deleted`` answers it."""
        return {
            "deleted_by": {"name": self.deleted_by.full_name, "id": self.deleted_by.id},
            "id": self.id,
            "display_name": self.display_name,
            "type": self.type,
            "created_by": {"name": self.created_by.full_name, "id": self.created_by.id},
            "deleted_time": iso(self.deleted_time),
        }


@dataclass
class RecordResult:
    """One entry of a write response's ``data`` array."""

    ok: bool
    body: dict[str, Any]


def error_result(code: str, message: str, details: dict[str, Any]) -> RecordResult:
    """A failed per-record result in Zoho's shape."""
    return RecordResult(
        False, {"code": code, "details": details, "message": message, "status": "error"}
    )


class LeadStore:
    """The Leads module: records by id (id order = creation order) and by modification order.

    Other modules reuse it with their own fields and id range (:mod:`.modules`).
    """

    #: the module's API name
    module = "Leads"

    def __init__(
        self, fields: dict[str, FieldDef] | None = None, first_id: int = _FIRST_ID
    ) -> None:
        self.fields: dict[str, FieldDef] = fields if fields is not None else default_fields()
        self.users: dict[str, User] = {user.id: user for user in SEEDED_USERS}
        self.records: dict[str, StoredRecord] = {}
        self.by_modified: OrderedDict[str, None] = OrderedDict()
        #: (Modified_Time to the second, numeric id) of every record, sorted: COQL's keyset
        #: order ``Modified_Time asc, id asc``, kept as an index is
        self.keyset: list[tuple[datetime, int]] = []
        #: the recycle bin and permanently deleted records, oldest deletion first
        self.deleted: OrderedDict[str, DeletedRecord] = OrderedDict()
        #: Leads converted with Convert Lead: out of the module's lists, searches, COQL and
        #: duplicate checks, still read with ``converted=true`` (Get Records, Search)
        self.converted: dict[str, StoredRecord] = {}
        self.indexes: dict[str, dict[str, list[str]]] = {}
        self._next_id = first_id
        self._last_time = datetime.fromtimestamp(0, UTC)
        for name in self.indexed_fields():
            self.indexes[name] = {}

    # -- schema --------------------------------------------------------------------------------

    def indexed_fields(self) -> list[str]:
        """Fields with a lookup index: the system duplicate-check field and unique fields."""
        names = [name for name in SYSTEM_DUPLICATE_FIELDS if name in self.fields]
        names += [name for name, field in self.fields.items() if field.unique]
        return names

    def duplicate_check_candidates(self) -> list[str]:
        """Fields upsert's ``duplicate_check_fields`` may name, in Zoho's default order."""
        return self.indexed_fields()

    def output_fields(self, names: list[str]) -> list[str]:
        """The keys a read answers for the requested field names (Tasks add ``$se_module``)."""
        return names

    def add_field(self, definition: FieldDef) -> None:
        """Add a custom field (listed last); a unique one gets its lookup index."""
        self.fields[definition.api_name] = definition
        for record in self.records.values():
            record.values.pop(definition.api_name, None)
        if definition.unique:
            self.indexes[definition.api_name] = {}

    def remove_field(self, api_name: str) -> None:
        """Delete a field: its metadata, its stored values and its index."""
        del self.fields[api_name]
        self.indexes.pop(api_name, None)
        for record in self.records.values():
            record.values.pop(api_name, None)

    # -- clock and ids -------------------------------------------------------------------------

    def tick(self) -> datetime:
        """Now, strictly after the previous write, so Modified_Time advances on every write."""
        now = datetime.now(UTC)
        if now <= self._last_time:
            now = self._last_time + timedelta(microseconds=1)
        self._last_time = now
        return now

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    # -- reads ---------------------------------------------------------------------------------

    def find_by(self, api_name: str, value: Any) -> list[str]:
        """Ids whose indexed field equals ``value`` (case-insensitive), oldest first."""
        key = index_key(value)
        if key is None or api_name not in self.indexes:
            return []
        return list(self.indexes[api_name].get(key, ()))

    def iter_sorted(self, sort_by: str, descending: bool) -> Iterator[StoredRecord]:
        """Records in ``id`` / ``Created_Time`` order or ``Modified_Time`` order."""
        order: Any = self.by_modified if sort_by == "Modified_Time" else self.records
        ids = reversed(order) if descending else iter(order)
        for record_id in ids:
            yield self.records[record_id]

    def keyset_from(self, key: tuple[datetime, int]) -> Iterator[StoredRecord]:
        """Records at or after ``key`` in (Modified_Time second, id) order."""
        start = bisect.bisect_left(self.keyset, key)
        for _, record_id in self.keyset[start:]:
            yield self.records[str(record_id)]

    def restamp(self, record: StoredRecord, moment: datetime) -> None:
        """Set a record's Modified_Time (tests: writes within one second), keeping the index."""
        self._unkey(record)
        record.modified = moment
        bisect.insort(self.keyset, _keyset_key(record))

    def _unkey(self, record: StoredRecord) -> None:
        key = _keyset_key(record)
        index = bisect.bisect_left(self.keyset, key)
        if index < len(self.keyset) and self.keyset[index] == key:
            del self.keyset[index]

    def clear(self) -> None:
        """Drop every record, deleted ones too (the module keeps its fields)."""
        self.records.clear()
        self.by_modified.clear()
        self.keyset.clear()
        self.deleted.clear()
        self.converted.clear()
        for index in self.indexes.values():
            index.clear()

    def modified_after(self, since: datetime) -> list[StoredRecord]:
        """Records modified strictly after ``since``, oldest change first."""
        newer: list[StoredRecord] = []
        for record_id in reversed(self.by_modified):
            record = self.records[record_id]
            if record.modified <= since:
                break
            newer.append(record)
        newer.reverse()
        return newer

    # -- writes --------------------------------------------------------------------------------

    def _clean(self, raw: dict[str, Any], path: str) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in raw.items():
            definition = self.fields.get(key)
            # Zoho ignores keys that are not fields of the module (and read-only / "$" keys)
            # rather than failing the record: an unknown API name is silently dropped
            # (observed: amalc/rubyzoho#20 "Zoho doesn't throw an error").
            if definition is None or definition.read_only:
                continue
            clean[key] = check_value(definition, value, f"{path}.{key}", self.users)
        return clean

    def _check_mandatory(self, clean: dict[str, Any], path: str, inserting: bool) -> None:
        for name, definition in self.fields.items():
            if not definition.mandatory:
                continue
            present = name in clean
            if (inserting and not present) or (present and clean[name] in (None, "")):
                raise ValueError_(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    {"api_name": name, "json_path": f"{path}.{name}"},
                )

    def _check_unique(self, clean: dict[str, Any], path: str, own_id: str | None) -> None:
        for name, definition in self.fields.items():
            if not definition.unique or name not in clean:
                continue
            others = [rid for rid in self.find_by(name, clean[name]) if rid != own_id]
            if others:
                existing = self.records[others[0]]
                raise ValueError_(
                    "DUPLICATE_DATA",
                    "duplicate data",
                    {
                        "api_name": name,
                        "json_path": f"{path}.{name}",
                        "duplicate_record": {
                            "id": existing.id,
                            "module": {"api_name": self.module},
                            "Owner": existing.values.get("Owner"),
                        },
                    },
                )

    def _index(self, record: StoredRecord, old: dict[str, Any]) -> None:
        for name, index in self.indexes.items():
            before, after = index_key(old.get(name)), index_key(record.values.get(name))
            if before == after:
                continue
            if before is not None:
                ids = index.get(before, [])
                if record.id in ids:
                    ids.remove(record.id)
                if not ids:
                    index.pop(before, None)
            if after is not None:
                index.setdefault(after, []).append(record.id)

    def _touch(self, record: StoredRecord) -> None:
        self._unkey(record)
        record.modified = self.tick()
        bisect.insort(self.keyset, _keyset_key(record))
        record.modified_by = API_USER
        record.written_at = time.monotonic()
        self.by_modified[record.id] = None
        self.by_modified.move_to_end(record.id)

    def insert(self, clean: dict[str, Any]) -> StoredRecord:
        """Store a new record from already validated values."""
        values = {"Owner": API_USER.lookup(), **clean}
        if values.get("Owner") is None:
            values["Owner"] = API_USER.lookup()
        now = self.tick()
        record = StoredRecord(
            self._new_id(), values, now, now, API_USER, API_USER, time.monotonic()
        )
        self.records[record.id] = record
        self.by_modified[record.id] = None
        bisect.insort(self.keyset, _keyset_key(record))
        self._index(record, {})
        return record

    def update(self, record: StoredRecord, clean: dict[str, Any]) -> None:
        """Apply validated values to a record; Modified_Time advances even with no change."""
        old = dict(record.values)
        record.values.update(clean)
        if record.values.get("Owner") is None:
            record.values["Owner"] = API_USER.lookup()
        self._touch(record)
        self._index(record, old)

    def display_name(self, record: StoredRecord) -> str:
        """The name Zoho shows for a record (Leads: first and last name)."""
        parts = (record.values.get("First_Name"), record.values.get("Last_Name"))
        return " ".join(str(part) for part in parts if part)

    def delete(self, record_id: str, by: User = API_USER) -> bool:
        """Move a record to the recycle bin; False when there is none."""
        record = self._detach(record_id)
        if record is None:
            return False
        self.deleted[record_id] = DeletedRecord(
            record_id, self.display_name(record), record.created_by, by, self.tick()
        )
        return True

    def _detach(self, record_id: str) -> StoredRecord | None:
        """Take a record out of the module's lists and indexes; None when there is none."""
        record = self.records.pop(record_id, None)
        if record is None:
            return None
        self.by_modified.pop(record_id, None)
        self._unkey(record)
        for name, index in self.indexes.items():
            key = index_key(record.values.get(name))
            if key is not None and record_id in index.get(key, []):
                index[key].remove(record_id)
                if not index[key]:
                    del index[key]
        return record

    def convert(self, record: StoredRecord, links: dict[str, dict[str, str] | None]) -> None:
        """Mark a Lead converted into the records ``links`` names (``Converted_Account`` /
        ``_Contact`` / ``_Deal`` lookups) and move it out of the module's lists.

        Zoho keeps a converted Lead (Get Records with ``converted=true`` reads it) but lists,
        searches and checks duplicates only among the unconverted ones.
        """
        self._detach(record.id)
        record.values.update(links)
        record.values["Converted__s"] = True
        record.modified = self.tick()
        record.values["Converted_Date_Time"] = iso(record.modified)
        record.modified_by = API_USER
        record.written_at = time.monotonic()
        self.converted[record.id] = record

    def empty_recycle_bin(self) -> int:
        """Delete every record of the recycle bin for good; how many there were."""
        emptied = 0
        for entry in self.deleted.values():
            if entry.type == "recycle":
                entry.type = "permanent"
                emptied += 1
        return emptied

    # -- batch operations answering per-record results -----------------------------------------

    @staticmethod
    def success(record: StoredRecord, message: str, **extra: Any) -> RecordResult:
        """A SUCCESS result with the details Zoho returns."""
        details = {
            "Modified_Time": iso(record.modified),
            "Modified_By": {"name": record.modified_by.full_name, "id": record.modified_by.id},
            "Created_Time": iso(record.created),
            "id": record.id,
            "Created_By": {"name": record.created_by.full_name, "id": record.created_by.id},
            "$approval_state": "approved",
        }
        body = {"code": "SUCCESS", **extra, "details": details, "message": message}
        body["status"] = "success"
        return RecordResult(True, body)

    def insert_one(self, raw: Any, index: int) -> RecordResult:
        """Validate and insert one input record of an insert call."""
        path = f"$.data[{index}]"
        try:
            clean = self._record_object(raw, path)
            self._check_mandatory(clean, path, inserting=True)
            self._check_unique(clean, path, None)
        except ValueError_ as exc:
            return error_result(exc.code, exc.message, exc.details)
        return self.success(self.insert(clean), "record added")

    def update_one(self, raw: Any, index: int, record_id: str | None = None) -> RecordResult:
        """Validate and apply one input record of an update call (``id`` in it or the URL)."""
        path = f"$.data[{index}]"
        try:
            if not isinstance(raw, dict):
                raise ValueError_(
                    "INVALID_DATA",
                    "invalid data",
                    {"expected_data_type": "jsonobject", "json_path": path},
                )
            target = record_id if record_id is not None else raw.get("id")
            if target in (None, ""):
                raise ValueError_(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    {"api_name": "id", "json_path": f"{path}.id"},
                )
            record = self.records.get(str(target))
            if record is None:
                raise ValueError_(
                    "INVALID_DATA",
                    "the id given seems to be invalid",
                    {"api_name": "id", "json_path": f"{path}.id", "id": str(target)},
                )
            clean = self._record_object(raw, path)
            self._check_mandatory(clean, path, inserting=False)
            self._check_unique(clean, path, record.id)
        except ValueError_ as exc:
            return error_result(exc.code, exc.message, exc.details)
        self.update(record, clean)
        return self.success(record, "record updated")

    def upsert_one(self, raw: Any, index: int, check_fields: list[str]) -> RecordResult:
        """Update the record matching the first duplicate-check field with a value, else insert."""
        path = f"$.data[{index}]"
        try:
            clean = self._record_object(raw, path)
            target: StoredRecord | None = None
            matched_on: str | None = None
            for name in check_fields:
                ids = self.find_by(name, clean.get(name))
                if ids:
                    # Several records can share a non-unique Email; the oldest one is updated.
                    target, matched_on = self.records[ids[0]], name
                    break
            if target is None:
                self._check_mandatory(clean, path, inserting=True)
                self._check_unique(clean, path, None)
            else:
                self._check_mandatory(clean, path, inserting=False)
                self._check_unique(clean, path, target.id)
        except ValueError_ as exc:
            return error_result(exc.code, exc.message, exc.details)
        if target is None:
            record = self.insert(clean)
            return self.success(record, "record added", action="insert", duplicate_field=None)
        self.update(target, clean)
        return self.success(target, "record updated", action="update", duplicate_field=matched_on)

    def _record_object(self, raw: Any, path: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ValueError_(
                "INVALID_DATA",
                "invalid data",
                {"expected_data_type": "jsonobject", "json_path": path},
            )
        return self._clean(raw, path)


def batch_status(results: list[RecordResult], all_ok_status: int) -> int:
    """HTTP status of a batch write: all ok, 207 Multi-Status when mixed, 400 when all failed."""
    ok = sum(1 for result in results if result.ok)
    if ok == len(results):
        return all_ok_status
    return 207 if ok else 400
