"""The one way a Lead is written to a system: capture delivery and sync flows both call it.

DESIGN §7.5 and §7.7: a lead is dead-lettered only when it cannot exist in the destination —
its identity (no e-mail where the system creates records by e-mail), a required field with no
value and no default, or the system refusing the record as a whole. Any other value the
destination refuses, or that fails its check before writing, is a *field problem*: the field is
left out (``on_invalid = "skip"``, the default for optional fields) or written as the mapping's
``fallback`` (``on_invalid = "fallback"``), the lead is written, and the problem is recorded
with the record, the field, the value and the reason.

:class:`LeadWriter` holds that logic once:

- :meth:`LeadWriter.system_record` maps a Lead to the system's fields; a value the mapping
  cannot write (no entry in a value map) is a field problem, not a failure of the record;
- :meth:`LeadWriter.vet` checks each value against the live ``describe()`` (field exists,
  pick-list value allowed) and against what any API can carry (no lone surrogate, no NUL);
- :meth:`LeadWriter.write` sends creates (``upsert``) and updates in batches as large as the
  API takes. A record the system refuses over one optional field is sent once more without it
  (or with its fallback); a record that breaks the call itself (a value the client cannot
  encode) fails alone: the batch is split so every other record is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from leadrelay.connectors.base import (
    Capability,
    Connector,
    RawRecord,
    Schema,
    UpsertInput,
    WriteResult,
)
from leadrelay.connectors.errors import ConnectorError, Rejected
from leadrelay.connectors.policy import CallNote, watch_calls
from leadrelay.mappings.engine import Mapping as FieldMapping
from leadrelay.mappings.engine import Problem
from leadrelay.model import Lead

__all__ = [
    "IDENTITY_FIELDS",
    "FieldProblem",
    "LeadWriter",
    "Pending",
    "Vetted",
    "WriteOutcomeOf",
    "left_out",
    "text_problem",
    "without_left_out",
]

#: Canonical fields a record cannot exist without downstream: never left out.
IDENTITY_FIELDS = frozenset({"email", "key"})

SKIP = "skip"
FALLBACK = "fallback"
DEAD_LETTER = "dead_letter"


def text_problem(value: Any) -> str | None:
    """Why ``value`` (or a string inside it) cannot travel as text in any API, or None.

    A lone surrogate (``\\ud800``) cannot be encoded as UTF-8, and a NUL is refused by
    PostgreSQL and by the CRMs' JSON parsers.
    """
    if isinstance(value, str):
        if "\x00" in value:
            return f"contains a NUL character at position {value.index(chr(0))}"
        if value.isascii():
            return None  # no surrogate in ASCII: nothing to encode to know
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"is not valid Unicode (a lone surrogate at position {exc.start})"
        return None
    if isinstance(value, Mapping):
        for item in value.values():
            found = text_problem(item)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for item in value:
            found = text_problem(item)
            if found is not None:
                return found
    return None


def _shown(value: Any) -> Any:
    """A value as a field problem shows it (text made printable, long text cut)."""
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
        return text if len(text) <= 200 else text[:197] + "..."
    return value


@dataclass(frozen=True)
class FieldProblem:
    """One field of one record that the destination refused, and what was done instead.

    Attributes:
        field: the canonical field.
        system_field: the destination's field.
        value: the refused value (printable).
        reason: why, in the system's words when it gave any.
        action: ``skipped`` (written without it) or ``fallback`` (its fallback written).
        stage: where it was refused: ``source`` (the value read from the other system is
            not valid for its field: a phone that does not parse; ``system_field`` is that
            system's), ``mapping`` (no value in the value map; ``value`` is the canonical value),
            ``check`` (the live schema or the text check before sending) or ``system`` (the
            system's answer to the write).
    """

    field: str
    system_field: str | None
    value: Any
    reason: str
    action: str = "skipped"
    stage: str = "check"

    def to_json(self) -> dict[str, Any]:
        """The shape of ``sync --json`` and the run log."""
        return {
            "field": self.field,
            "system_field": self.system_field,
            "value": self.value,
            "reason": self.reason,
            "action": self.action,
            "stage": self.stage,
        }

    def __str__(self) -> str:
        target = f" ({self.system_field})" if self.system_field else ""
        return f"{self.field}{target} {self.action}: {self.reason} [value {self.value!r}]"


def left_out(problems: Sequence[Problem]) -> list[FieldProblem]:
    """The bad values read from a record and left out of its Lead
    (:func:`~leadrelay.mappings.engine.build_lead`), as field problems of the lead's write
    (stage ``source``: only a change at the source mends them)."""
    return [
        FieldProblem(
            field=p.field,
            system_field=p.system_field,
            value=p.value
            if p.value is None or isinstance(p.value, int | float | bool)
            else str(p.value),
            reason=p.reason,
            stage="source",
        )
        for p in problems
    ]


def without_left_out(
    fields: Sequence[str], problems: Sequence[Problem], lead: Lead | None
) -> list[str]:
    """``fields`` but those whose value read from the record was bad and left out of ``lead``
    (:func:`~leadrelay.mappings.engine.build_lead`): neither written nor taken for a blanked
    value, so a bad value at the source never clears a good one at the destination. A field
    the lead still holds a value for (another submission merged into it gave one) stays."""
    if not problems:
        return list(fields)
    gone = {p.top_field for p in problems}
    return [name for name in fields if name not in gone or getattr(lead, name, None) is not None]


@dataclass
class Vetted:
    """A record ready to write: its fields, what was left out, and what stops it entirely."""

    fields: dict[str, Any]
    problems: list[FieldProblem] = field(default_factory=list)
    fatal: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the record can be written."""
        return not self.fatal


@dataclass
class Pending:
    """One record to write.

    Attributes:
        ref: the caller's key (the lead key); results come back under it.
        fields: system field → value.
        external_id: the destination's id: an update by id when the connector can, else an
            upsert that names it.
        problems: field problems found so far (more may be added while writing).
        call: the API call the record went in, once sent (``POST /…/batch/upsert #3``, the
            writer's call number), for the journal.
    """

    ref: str
    fields: dict[str, Any]
    external_id: str | None = None
    problems: list[FieldProblem] = field(default_factory=list)
    call: str | None = None


#: Exact types of a value any writable field without a pick-list takes (``FieldInfo.allows``).
_NUMBERS: frozenset[type] = frozenset({int, float, bool})


@dataclass(frozen=True)
class _VetTable:
    """Of one live schema, what vetting a record asks per field, worked out once.

    Attributes:
        schema: the schema it was made of.
        free: the writable fields without a pick-list (no value but a blank one is refused).
        required: ``(system field, canonical field)`` of every required writable field the
            mapping writes, in the schema's order.
    """

    schema: Schema
    free: frozenset[str]
    required: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, schema: Schema, canonical_of: Callable[[str], str | None]) -> _VetTable:
        free = frozenset(
            name
            for name, info in schema.fields.items()
            if not info.read_only and info.picklist_values is None
        )
        required: list[tuple[str, str]] = []
        for system_field in schema.required:
            canonical = canonical_of(system_field)
            if not schema.fields[system_field].read_only and canonical is not None:
                required.append((system_field, canonical))
        return cls(schema, free, tuple(required))


#: One written record: what was asked, what the system answered, the field problems.
WriteOutcomeOf = tuple[Pending, WriteResult]


class LeadWriter:
    """Writes Leads to one destination (see the module docstring).

    Args:
        connector: the destination.
        mapping: its mapping (Lead → system fields, ``on_invalid`` / ``fallback``).
        schema: the destination's live schema, read on first use (None: no pre-write check).
        batch_size: the largest batch to send (at most the connector's).
    """

    def __init__(
        self,
        connector: Connector[Any],
        mapping: FieldMapping,
        *,
        schema: Callable[[], Schema | None] | None = None,
        fresh_schema: Callable[[], Schema | None] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.connector = connector
        self.mapping = mapping
        self._schema_source = schema
        self._fresh_source = fresh_schema
        self._schema: Schema | None = None
        self._schema_read = schema is None
        self.batch_size = min(batch_size or connector.batch_size, connector.batch_size)
        self._calls = 0
        self._vet_tables: _VetTable | None = None
        self._by_system: dict[str, str] = {}
        for name, fmap in mapping.fields.items():
            if fmap.primary.writes:
                for system_field in fmap.primary.written_fields():
                    self._by_system.setdefault(system_field.casefold(), name)

    # -- what to do with a refused value ---------------------------------------------------

    @property
    def schema(self) -> Schema | None:
        """The destination's live schema (read once per writer)."""
        if not self._schema_read:
            self._schema_read = True
            assert self._schema_source is not None
            self._schema = self._schema_source()
        return self._schema

    def canonical_of(self, system_field: str | None) -> str | None:
        """The canonical field written to ``system_field``, if the mapping writes it."""
        if not system_field:
            return None
        return self._by_system.get(system_field.casefold())

    def policy(self, name: str) -> str:
        """``skip``, ``fallback`` or ``dead_letter`` for a refused value of canonical ``name``."""
        fmap = self.mapping.fields.get(name)
        if fmap is not None and fmap.primary.on_invalid:
            return fmap.primary.on_invalid
        if name in IDENTITY_FIELDS:
            return DEAD_LETTER
        schema = self.schema
        if fmap is not None and schema is not None:
            for system_field in fmap.primary.written_fields():
                info = schema.fields.get(system_field)
                if info is not None and info.required:
                    return DEAD_LETTER
        return SKIP

    def refuse(self, vetted: Vetted, problem: Problem) -> None:
        """Apply the field's ``on_invalid`` to a value the mapping could not write."""
        self._refuse(
            vetted,
            name=problem.field,
            system_field=problem.system_field,
            value=problem.value,
            reason=problem.reason,
            record=problem.record or "",
            stage="mapping",
        )

    def _refuse(
        self,
        vetted: Vetted,
        *,
        name: str | None,
        system_field: str | None,
        value: Any,
        reason: str,
        record: str,
        stage: str = "check",
    ) -> None:
        """Apply the field's policy to one refused value of ``vetted`` (in place)."""
        policy = self.policy(name) if name is not None else SKIP
        label = name or system_field or "?"
        if policy == FALLBACK and name is not None and system_field is not None:
            fallback = self.mapping.fields[name].primary.fallback
            if self._allowed(system_field, fallback) is None:
                vetted.fields[system_field] = fallback
                vetted.problems.append(
                    FieldProblem(label, system_field, _shown(value), reason, "fallback", stage)
                )
                return
            policy = SKIP
        if policy == DEAD_LETTER:
            vetted.fields.pop(system_field or "", None)
            vetted.fatal.append(
                Problem(
                    label, reason, system_field=system_field, value=_shown(value), record=record
                )
            )
            return
        vetted.fields.pop(system_field or "", None)
        vetted.problems.append(
            FieldProblem(label, system_field, _shown(value), reason, "skipped", stage)
        )

    def accepts_now(self, problem: Mapping[str, Any]) -> bool:
        """True when a recorded field problem (``field``, ``system_field``, ``value``,
        ``stage``) would pass today: the value map now has the value, or the live schema
        now allows it. A refusal only the system itself gave is never presumed lifted."""
        stage = problem.get("stage")
        name = str(problem.get("field") or "")
        system_field = problem.get("system_field")
        if stage == "mapping":
            return self.mapping.can_write(name, problem.get("value"))
        if stage == "check" and system_field:
            return self._allowed(str(system_field), problem.get("value")) is None
        return False

    def _allowed(self, system_field: str, value: Any) -> str | None:
        """Why the destination would refuse ``value`` in ``system_field`` before any call.

        A refusal over a schema read from a cache is checked once against a fresh read (an
        admin may have added the field or the pick-list value since)."""
        reason = self._refused_by(self.schema, system_field, value)
        if reason is not None and self._fresh_source is not None and not reason.startswith("text"):
            fresh, self._fresh_source = self._fresh_source, None
            self._schema = fresh()
            reason = self._refused_by(self._schema, system_field, value)
        return reason

    def _refused_by(self, schema: Schema | None, system_field: str, value: Any) -> str | None:
        found = text_problem(value)
        if found is not None:
            return f"text {found}"
        if schema is None:
            return None
        info = schema.fields.get(system_field)
        if info is None:
            return f"{schema.object_name} has no field {system_field!r} (removed from the schema?)"
        if info.read_only or info.allows(value):
            return None
        if value is None or value == "":
            return f"{schema.object_name}.{system_field} is required"
        allowed = ", ".join(info.picklist_values or ())
        return f"value not allowed in {schema.object_name}.{system_field}" + (
            f" (allowed: {allowed})" if allowed else ""
        )

    # -- building and vetting records ------------------------------------------------------

    def system_record(
        self,
        lead: Lead,
        *,
        fields: Sequence[str] | None = None,
        creating: bool,
    ) -> Vetted:
        """The destination record of ``lead`` (``fields``: only those canonical fields),
        vetted. A blank value is written as its mapping ``default`` (DESIGN §6)."""
        record, problems = self.mapping.to_system_partial(lead, fields=fields)
        vetted = Vetted(record)
        for problem in problems:
            self.refuse(vetted, problem)
        return self.vet(lead.key, vetted, creating=creating)

    def _vet_table(self, schema: Schema) -> _VetTable:
        """What :meth:`vet` needs of ``schema``, worked out once per schema read."""
        table = self._vet_tables
        if table is None or table.schema is not schema:
            table = self._vet_tables = _VetTable.of(schema, self.canonical_of)
        return table

    def vet(self, ref: str, record: Vetted | dict[str, Any], *, creating: bool) -> Vetted:
        """Check every value of ``record`` before it is sent; a create also needs every
        required field the mapping writes."""
        vetted = record if isinstance(record, Vetted) else Vetted(dict(record))
        schema = self.schema
        free = self._vet_table(schema).free if schema is not None else frozenset()
        for system_field, value in list(vetted.fields.items()):
            kind = type(value)
            if system_field in free and (
                kind in _NUMBERS
                or (kind is str and value and value.isascii() and "\x00" not in value)
            ):
                # What _allowed finds for it, without the calls: nothing (a writable field
                # without a pick-list takes any text that travels and any number)
                continue
            reason = self._allowed(system_field, value)
            if self._schema is not schema:
                # a refusal read the schema afresh: the rest is vetted against that one
                schema = self._schema
                free = self._vet_table(schema).free if schema is not None else frozenset()
            if reason is not None:
                self._refuse(
                    vetted,
                    name=self.canonical_of(system_field),
                    system_field=system_field,
                    value=value,
                    reason=reason,
                    record=ref,
                )
        schema = self.schema
        if creating and schema is not None:
            for system_field, name in self._vet_table(schema).required:
                value = vetted.fields.get(system_field)
                if value is None or (isinstance(value, str) and not value.strip()):
                    vetted.fatal.append(
                        Problem(
                            name,
                            f"{schema.object_name}.{system_field} is required: no value and no "
                            "default in the mapping",
                            system_field=system_field,
                            record=ref,
                        )
                    )
        return vetted

    # -- writing ---------------------------------------------------------------------------

    def write(
        self,
        pending: Sequence[Pending],
        *,
        update_by_id: bool = True,
        batch_size: int | None = None,
    ) -> Iterator[WriteOutcomeOf]:
        """Write ``pending`` records in batches; yields each with its result, in an order of
        its own. A record with an ``external_id`` is updated by id where the connector can
        (unless ``update_by_id`` is False: then every record goes through ``upsert``, which
        matches by natural key and takes the id as a hint). ``batch_size`` overrides
        :attr:`batch_size` for this call: a connector given more than its own batch (a bulk
        job, :attr:`Connector.bulk_threshold`) splits or gathers them itself.

        Raises ConnectorError when a whole call fails (auth, budget, transport after retries):
        what was yielded before was written.
        """
        use_update = update_by_id and self.connector.supports(Capability.UPDATE)
        creates = [p for p in pending if p.external_id is None or not use_update]
        updates = [p for p in pending if p.external_id is not None and use_update]
        size = batch_size or self.batch_size
        for group, updating in ((creates, False), (updates, True)):
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                yield from self._write_chunk(chunk, updating=updating)

    def _write_chunk(self, chunk: Sequence[Pending], *, updating: bool) -> Iterator[WriteOutcomeOf]:
        with watch_calls() as notes:
            results = self._call(chunk, updating=updating)
        self._name_call(chunk, notes)
        again: list[Pending] = []
        for item, result in zip(chunk, results, strict=True):
            if result.ok or not self._drop_refused_field(item, result):
                yield item, result
            else:
                again.append(item)
        if again:
            with watch_calls() as notes:
                resent = self._call(again, updating=updating)
            self._name_call(again, notes)
            yield from zip(again, resent, strict=True)

    def _name_call(self, chunk: Sequence[Pending], notes: Sequence[CallNote]) -> None:
        """Name on each record the write call it went in (reads made on the way left out)."""
        self._calls += 1
        writes = [n.label for n in notes if n.method != "GET"] or [n.label for n in notes]
        label = "; ".join(dict.fromkeys(writes)) or self.connector.name
        for item in chunk:
            item.call = f"{label} #{self._calls}"

    def _drop_refused_field(self, item: Pending, result: WriteResult) -> bool:
        """When the system refused ``item`` over one optional field it names, take that field
        out (or put its fallback in) and say True: the record is worth sending once more."""
        error = result.error
        if error is None or not error.field:
            return False
        system_field = next(
            (k for k in item.fields if k.casefold() == str(error.field).casefold()), None
        )
        name = self.canonical_of(system_field or error.field)
        if system_field is None or name is None:
            return False
        vetted = Vetted(dict(item.fields))
        self._refuse(
            vetted,
            name=name,
            system_field=system_field,
            value=item.fields[system_field],
            reason=error.message or str(error),
            record=item.ref,
            stage="system",
        )
        if vetted.fatal or vetted.fields == item.fields:
            return False
        item.fields = vetted.fields
        item.problems.extend(vetted.problems)
        return True

    def _call(self, chunk: Sequence[Pending], *, updating: bool) -> list[WriteResult]:
        """One API call for ``chunk``; a record that breaks the call fails alone."""
        try:
            if updating:
                payload: dict[str, RawRecord] = {
                    str(p.external_id): p.fields for p in chunk if p.external_id
                }
                results = self.connector.update(payload)
                results = [
                    WriteResult(p.ref, r.external_id or p.external_id, r.outcome, r.error)
                    for p, r in zip(chunk, results, strict=True)
                ]
            else:
                results = self.connector.upsert(
                    [
                        UpsertInput(ref=p.ref, fields=p.fields, external_id=p.external_id)
                        for p in chunk
                    ]
                )
        except ConnectorError:
            raise
        except (UnicodeError, ValueError, TypeError) as exc:
            # Something in one record cannot be sent at all (the client could not encode it):
            # split the batch so that record fails alone and every other one is written.
            if len(chunk) == 1:
                reason = f"{self.connector.name}: the record could not be sent: {exc}"
                return [
                    WriteResult.failed(chunk[0].ref, Rejected(reason, system=self.connector.kind))
                ]
            middle = len(chunk) // 2
            return self._call(chunk[:middle], updating=updating) + self._call(
                chunk[middle:], updating=updating
            )
        if len(results) != len(chunk):
            raise RuntimeError(
                f"{self.connector.name}: {len(chunk)} records written but {len(results)} "
                "results returned"
            )
        for item, result in zip(chunk, results, strict=True):
            if result.ref != item.ref:
                raise RuntimeError(
                    f"{self.connector.name}: result for {result.ref!r} where {item.ref!r} was "
                    "expected"
                )
        return results
