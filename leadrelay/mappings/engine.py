"""The mapping engine: TOML mapping files between a system's records and the canonical Lead.

Every system maps to the canonical :class:`~leadrelay.model.Lead`, never to another system.
A connector's mapping is its package default (``leadrelay/mappings/<kind>.toml``) with the
project's ``mappings/<kind>.toml`` merged over it field by field; a flow's ``mappings.<conn>``
file takes the project file's place for that flow. A form's mapping (form field names → Lead
fields) is merged over the default of its source (``webform``, ``meta_lead_ads``,
``linkedin_lead_gen``, ``google_ads_lead_form``).

File format
-----------

.. code-block:: toml

    object = "Lead"            # the system's object (contacts, Lead, Leads); not in form files
    key = "Email"              # the system's natural-key field (upsert / lookup key)
    blank_values = ["-None-"]  # system values read as blank (optional)

    [fields]                   # canonical Lead field = how the system holds it
    email = "Email"                                        # same field, both ways
    last_name = { field = "LastName", default = "[not provided]" }
    "custom.segment" = "Segment__c"                        # Lead.custom["segment"]
    "click_ids.gclid" = "GCLID__c"                         # Lead.click_ids["gclid"]
    phone = { field = "Phone", transform = "e164" }
    created_at = { field = "createdate", transform = "datetime", args = { format = "epoch_ms" },
                   direction = "in" }
    first_name = ["first_name", { field = "full_name", transform = "split_full_name",
                                  args = { part = "first" } }]
    utm_term = false           # in an override file: drop the default's entry

    [fields.channel]
    field = "LeadSource"
    values = { paid_search = "Web", offline = "Other" }    # canonical → system (writes)
    values_in = { "Phone Inquiry" = "offline", "*" = "other" }   # extra reads (many-to-one)

A field's value is a system field name, a table, ``false`` (an override removes the entry) or
an array of those: the array's entries are alternatives tried in order on read (the first
non-blank wins), and only the first one is written. Table keys:

``field``
    the system field.
``fields``
    instead of ``field``, for a value held by several system fields (see below); the first is
    the primary one.
``direction``
    ``"both"`` (default), ``"in"`` (system → Lead, read only) or ``"out"`` (Lead → system,
    write only). Form mappings read only.
``default``
    the system value written when the Lead's value is blank (or, with ``values``, has no entry
    in the map). Without a value map, a read of this exact value is blank: a placeholder such
    as Salesforce's required ``LastName = "[not provided]"`` never becomes data.
``on_invalid``, ``fallback``
    what a write does when the destination refuses this field's value (not in its pick list,
    too long, not valid text): ``"skip"`` (the default for optional fields: the lead is written
    without it and the field problem recorded), ``"fallback"`` (write ``fallback`` instead) or
    ``"dead_letter"`` (the default for identity and required fields: the lead waits).
``transform``, ``args``
    a transform name or a list of names from :mod:`leadrelay.mappings.transforms`, in reading
    order (writes apply them in reverse). ``args`` holds the arguments of a single transform;
    with a list it is a table per transform name (``args = { join = { separator = ", " } }``).
``values``
    value map canonical → system, used for writes. Reads use its reverse.
``values_in``
    value map system → canonical for reads, over the reverse of ``values``: several system
    values may read as one canonical value; ``"*"`` matches any other non-blank value, and a
    target ``""`` reads as blank. A system value that ``values`` writes for two canonical
    values must be resolved here. Reads match exactly, then ignoring case.
``read_when``
    a table ``{ system field = value(s) }`` (conditions as in read rules, below): the field is
    read from this entry only when every condition holds, else the entry reads blank and the
    next alternative is tried (an alternative's way to say which record it speaks for: a win
    reason for a won deal only).

Values held by several system fields (HubSpot lifecycle stage + lead status, Salesforce
Status + IsConverted) list them in ``fields``. ``values`` entries are then a primary-field
value or a table ``{ system field = value }`` of every field to write; ``values_in`` reads the
primary field; and ordered ``[[fields.<name>.read]]`` rules, checked first, read the record
as a whole::

    [fields.stage]
    fields = ["lifecyclestage", "hs_lead_status"]
    values.lead = { lifecyclestage = "lead", hs_lead_status = "NEW" }
    values.disqualified = { hs_lead_status = "UNQUALIFIED" }
    [[fields.stage.read]]
    when = { hs_lead_status = "UNQUALIFIED" }   # every condition must hold
    value = "disqualified"

A condition is a value, a list of values (any of them), ``""`` (blank) or ``"*"`` (any
non-blank value); booleans compare as ``"true"`` / ``"false"``.

Checked at load, each error naming the file, the line and the field: malformed TOML, an
unknown Lead field ("did you mean"), an unknown key, an unknown transform (with the known
names) or bad transform args, value-map keys outside the canonical enum (stage, channel,
rejection_reason, tier, industry, salutation), a stage map that does not cover every stage on
writes without a ``default``, a system value written for two canonical values and not resolved by
``values_in``, a composite value that no read rule reads back, and two canonical fields writing
one system field (make one ``direction = "in"``). :meth:`Mapping.validate_against` then checks
the mapping against the live ``describe()`` (``leadrelay check``).

Bad values never raise while mapping a record: :meth:`Mapping.to_lead` returns a
:class:`LeadDraft` with its problems, :func:`build_lead` adds the Lead's own validation errors
(each naming the field), and :meth:`Mapping.to_system` raises :class:`MappingError` with every
problem of that one record, so the caller dead-letters the record, not the batch.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Set
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from leadrelay.mappings.transforms import (
    REGISTRY,
    BoundTransform,
    TransformArgsError,
    TransformContext,
    UnmappedValue,
    bind,
    is_blank,
)
from leadrelay.model import (
    Channel,
    Industry,
    Lead,
    OutcomeReason,
    RejectionReason,
    Salutation,
    Stage,
    Tier,
)

if TYPE_CHECKING:
    from leadrelay.connectors.base import Schema

__all__ = [
    "DEFAULTS_DIR",
    "FORM_DEFAULTS",
    "FieldMap",
    "FieldSpec",
    "LeadDraft",
    "Mapping",
    "MappingError",
    "Problem",
    "ReadRule",
    "build_lead",
    "canonical_fields",
    "load_form_mapping",
    "load_mapping",
]

Direction = Literal["both", "in", "out"]

#: Where the package's default mapping files live.
DEFAULTS_DIR = Path(__file__).resolve().parent

#: Form source → the default mapping its form mappings are merged over.
FORM_DEFAULTS: dict[str, str] = {
    "webform": "webform",
    "csv": "webform",
    "meta_lead_ads": "meta_lead_ads",
    "linkedin_lead_gen": "linkedin_lead_gen",
    "google_ads_lead_form": "google_ads_lead_form",
    # HubSpot form fields are contact property names.
    "hubspot_form": "hubspot",
}

#: Canonical fields whose value maps must use the enum's values.
ENUM_FIELDS: dict[str, type[Enum]] = {
    "stage": Stage,
    "channel": Channel,
    "rejection_reason": RejectionReason,
    "outcome_reason": OutcomeReason,
    "tier": Tier,
    "industry": Industry,
    "salutation": Salutation,
}

#: Standard pick lists (leadrelay.taxonomy): a value no map covers is kept in custom, not refused.
_STANDARD_LISTS = frozenset({"industry", "salutation"})

#: Lead fields that hold a structure; they are mapped by key (``custom.NAME``) or not at all.
_STRUCTURED = frozenset(
    {"custom", "click_ids", "external_ids", "updated_at", "first_touch", "score_breakdown"}
)
_KEYED = ("custom", "click_ids")
_SPEC_KEYS = frozenset(
    {
        "field",
        "fields",
        "direction",
        "default",
        "transform",
        "args",
        "values",
        "values_in",
        "read",
        "on_invalid",
        "fallback",
        "read_when",
    }
)

#: What a write does with a value the destination refuses (DESIGN §6, §7.7).
ON_INVALID = ("skip", "fallback", "dead_letter")
_TOP_KEYS = frozenset({"object", "key", "blank_values", "fields"})
_FORM_TOP_KEYS = frozenset({"blank_values", "fields"})


def canonical_fields() -> list[str]:
    """Every scalar Lead field a mapping may name (besides ``custom.*`` and ``click_ids.*``)."""
    return [name for name in Lead.model_fields if name not in _STRUCTURED]


@cache
def _nullable(name: str) -> bool:
    if "." in name:
        return True
    info = Lead.model_fields.get(name)
    return info is not None and not info.is_required() and info.default is None


# --- problems -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong: with a mapping file, or with one field of one record.

    Attributes:
        field: the canonical field (or a top-level key of the file).
        reason: what is wrong, in words.
        system_field: the system field involved, when there is one.
        value: the offending value, when there is one.
        file: the mapping file, when the problem is in one.
        line: the line in that file, when known.
        record: the record (lead key, external id or natural key), for record problems.
    """

    field: str
    reason: str
    system_field: str | None = None
    value: Any = None
    file: Path | None = None
    line: int | None = None
    record: str | None = None

    @property
    def top_field(self) -> str:
        """The Lead field the problem's field path starts with (``custom.size``: ``custom``)."""
        return self.field.partition(".")[0]

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        record = f"record {self.record}: " if self.record else ""
        system = f" ({self.system_field})" if self.system_field else ""
        value = ""
        if self.value is not None:
            shown = repr(self.value)
            value = f" [value {shown[:77] + '...' if len(shown) > 80 else shown}]"
        return f"{where}{record}{self.field}{system}: {self.reason}{value}"


class MappingError(Exception):
    """A mapping file that cannot be used, or a record that cannot be mapped.

    ``file`` is the mapping file (None for a record problem of a merged mapping);
    ``problems`` lists every problem found, each naming its file, field and reason.
    """

    def __init__(self, problems: list[Problem], *, file: Path | None = None) -> None:
        self.file = file
        self.problems = problems
        head = f"{file}: " if file is not None and len(problems) > 1 else ""
        lines = [str(p) for p in problems]
        if len(lines) == 1:
            message = head + lines[0]
        else:
            message = head + f"{len(lines)} problems:\n  " + "\n  ".join(lines)
        super().__init__(message)


# --- parsed mapping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadRule:
    """``[[fields.X.read]]``: when every condition holds, the canonical value is ``value``."""

    when: dict[str, tuple[str, ...]]
    value: str

    def matches(self, record: MappingABC[str, str]) -> bool:
        """True when each named system field holds one of the accepted values (``*``: any
        non-blank value; the others ignoring case)."""
        for name, (folded, anything) in self._accepted.items():
            actual = record.get(name, "")
            if not ((anything and actual != "") or actual.casefold() in folded):
                return False
        return True

    @cached_property
    def _accepted(self) -> dict[str, tuple[frozenset[str], bool]]:
        # per field: the accepted values case-folded once, and whether "*" is among them
        return {
            name: (frozenset(want.casefold() for want in accepted), "*" in accepted)
            for name, accepted in self.when.items()
        }


@dataclass(frozen=True)
class FieldSpec:
    """One way a canonical field is held by the system (one table of the file)."""

    system_field: str
    direction: Direction = "both"
    default: Any = None
    transforms: tuple[BoundTransform, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
    values_in: dict[str, str] = field(default_factory=dict)
    also: tuple[str, ...] = ()
    read: tuple[ReadRule, ...] = ()
    #: ``skip`` / ``fallback`` / ``dead_letter``; None: the default for the field (dead-letter
    #: for identity and required fields, skip for the rest; :mod:`leadrelay.sync.write`).
    on_invalid: str | None = None
    #: The system value written instead of a refused one when ``on_invalid = "fallback"``.
    fallback: Any = None
    #: ``read_when``: this spec is read only when the record meets the condition.
    read_when: ReadRule | None = None

    @property
    def reads(self) -> bool:
        """Used for system → Lead."""
        return self.direction in ("both", "in")

    @property
    def writes(self) -> bool:
        """Used for Lead → system."""
        return self.direction in ("both", "out")

    @property
    def system_fields(self) -> tuple[str, ...]:
        """The primary system field and the further ones of a composite value."""
        return (self.system_field, *self.also)

    def written_fields(self) -> set[str]:
        """System fields a write may set."""
        if not self.writes:
            return set()
        if not self.values:
            return {self.system_field}
        names: set[str] = set()
        for target in self.values.values():
            names.update(target if isinstance(target, dict) else {self.system_field})
        if self.default is not None:
            names.add(self.system_field)
        return names

    def written_values(self) -> dict[str, set[str]]:
        """System field → every value the value map or a transform may write there."""
        found: dict[str, set[str]] = {}
        for target in self.values.values():
            if isinstance(target, dict):
                for name, value in target.items():
                    found.setdefault(name, set()).add(_key(value))
            else:
                found.setdefault(self.system_field, set()).add(_key(target))
        if self.values and self.default is not None:
            found.setdefault(self.system_field, set()).add(_key(self.default))
        for bound in self.transforms:
            known = bound.system_values()
            if known is not None:
                found.setdefault(self.system_field, set()).update(known)
        return found

    def reverse(self) -> dict[str, str]:
        """System value of the primary field → canonical value, for reads (a copy)."""
        return dict(self._reverse)

    @cached_property
    def _reverse(self) -> dict[str, str]:
        # Read once per mapping, not once per record: a spec does not change after loading.
        reverse: dict[str, str] = {}
        for canonical, target in self.values.items():
            value = target.get(self.system_field) if isinstance(target, dict) else target
            if value is not None:
                reverse.setdefault(_key(value), canonical)
        reverse.update(self.values_in)
        return reverse


@dataclass(frozen=True)
class FieldMap:
    """How one canonical field maps: its specs (alternatives on read; the first is written)."""

    name: str
    specs: tuple[FieldSpec, ...]
    file: Path | None = None
    line: int | None = None

    @property
    def primary(self) -> FieldSpec:
        """The spec used for writes."""
        return self.specs[0]

    @property
    def system_field(self) -> str:
        """The primary system field."""
        return self.primary.system_field

    @property
    def direction(self) -> Direction:
        """The primary spec's direction."""
        return self.primary.direction


@dataclass
class LeadDraft:
    """A record mapped to canonical values, before the Lead model validates it.

    ``values`` holds canonical field → value (``custom`` and ``click_ids`` as sub-dicts);
    ``problems`` the values that could not be mapped; ``notes`` the values no standard-list map
    covers, kept verbatim in ``custom["<field>_raw"]`` (the record is still written);
    ``sources`` the system field each value came from, so the Lead's own validation errors can
    name it.
    """

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    record: str | None = None


#: Fields whose bad value rejects the whole record: the e-mail and leadrelay's key identify the
#: person, and a lead without the one it came with would be another person (or a duplicate).
HELD_FIELDS: frozenset[str] = frozenset({"email", "key"})


def build_lead(draft: LeadDraft, **extra: Any) -> tuple[Lead | None, list[Problem]]:
    """The Lead of a draft (``extra`` fields over its values) and every problem found.

    One bad optional value read from the record (a phone that does not parse, a number that is
    not one, a value the mapping could not read) never holds the lead back: the Lead is made
    without that field and its problem is returned with it, naming the field, the system field
    and the value, for the caller to record. The Lead is None, with the problems, when the
    e-mail (:data:`HELD_FIELDS`) is bad, or a value leadrelay adds (``extra``) or a keyed one
    (custom values, click ids) is refused. Nothing is dropped silently.
    """
    data = {**draft.values, **extra}
    for name in _KEYED:
        if name in draft.values and name in extra:
            data[name] = {**draft.values[name], **extra[name]}
    problems = list(draft.problems)
    if any(p.top_field in HELD_FIELDS for p in problems):
        return None, _first(problems, HELD_FIELDS)
    for _ in range(len(data) + 1):  # each pass leaves out the fields found bad
        try:
            return Lead.model_validate(data), problems
        except ValidationError as exc:
            found: list[Problem] = []
            for err in exc.errors():
                loc = [str(part) for part in err["loc"]]
                name = ".".join(loc) if loc else "lead"
                source = draft.sources.get(name) or (draft.sources.get(loc[0]) if loc else None)
                message = str(err["msg"]).removeprefix("Value error, ")
                found.append(
                    Problem(
                        field=name,
                        reason=message,
                        system_field=source,
                        value=err.get("input"),
                        record=draft.record,
                    )
                )
            problems.extend(found)
            bad = {p.top_field for p in found}
            held = {
                name
                for name in bad
                if name not in draft.values
                or name in extra
                or name in HELD_FIELDS
                or name in _KEYED
            }
            if held:
                # the problem that holds the lead first: a dead letter names its field
                return None, _first(problems, held)
            data = {name: value for name, value in data.items() if name not in bad}
    return None, problems


def _first(problems: list[Problem], fields: Set[str]) -> list[Problem]:
    """``problems`` with those of ``fields`` first (each part in its order)."""
    return sorted(problems, key=lambda p: p.top_field not in fields)


def _key(value: Any) -> str:
    """The string a value is compared as in value maps and read rules."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


#: Exact types a value written to a system keeps as it is.
_JSON_PLAIN: frozenset[type] = frozenset({str, int, float, bool})


def _jsonable(value: Any) -> Any:
    if value is None or type(value) in _JSON_PLAIN:
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return value


class Mapping:
    """A loaded, validated mapping between one system object (or form) and the Lead.

    Attributes:
        kind: the connector kind or form source (``hubspot``, ``webform``).
        object_name: the system object (``contacts``, ``Lead``, ``Leads``); None for forms.
        key_field: the system's natural-key field (``email``, ``Email``); None for forms.
        fields: canonical field → :class:`FieldMap`.
        blank_values: system values read as blank (Zoho's ``-None-``).
        files: the files merged into this mapping, lowest layer first.
    """

    def __init__(
        self,
        *,
        kind: str,
        object_name: str | None,
        key_field: str | None,
        fields: dict[str, FieldMap],
        blank_values: Iterable[str] = (),
        files: Iterable[Path] = (),
        form: bool = False,
    ) -> None:
        self.kind = kind
        self.object_name = object_name
        self.key_field = key_field
        self.fields = fields
        self.blank_values = frozenset(blank_values)
        self.files = tuple(files)
        self.form = form

    def __repr__(self) -> str:
        return (
            f"Mapping(kind={self.kind!r}, object={self.object_name!r}, {len(self.fields)} fields)"
        )

    # --- reads ---------------------------------------------------------------------------------

    def system_fields(self) -> set[str]:
        """Every system field read or written (for ``properties=`` / ``fields=`` lists)."""
        names: set[str] = set()
        for fmap in self.fields.values():
            for spec in fmap.specs:
                names.update(spec.system_fields)
                names.update(spec.written_fields())
                if spec.read_when is not None:
                    names.update(spec.read_when.when)
        if self.key_field:
            names.add(self.key_field)
        return names

    @cached_property
    def read_keys(self) -> frozenset[str]:
        """The system fields :meth:`to_lead` looks at: two records holding the same values in
        these (the same ``connection`` and ``external_id`` given) map to the same draft."""
        names = {name for reader in self._readers.values() for name in reader.deps}
        if self.key_field:
            names.add(self.key_field)
        return frozenset(names)

    @cached_property
    def none_reads_absent(self) -> frozenset[str]:
        """The :attr:`read_keys` whose None reads as if the record did not hold the field, but
        for a None value in a nullable field (an empty dict under its head for a nested one):
        no transform of a field reading them sees a blank value (``default`` does), and a
        read rule or condition reads an absent field as None."""
        unsafe = {
            name
            for reader in self._readers.values()
            if any(bound.transform.on_blank for spec in reader.specs for bound in spec.transforms)
            for name in reader.deps
        }
        return self.read_keys - unsafe

    @cached_property
    def read_through(self) -> frozenset[str] | None:
        """The canonical fields a read of another field looks at (a transform's
        ``ctx.canonical``, as ``e164`` reads the country); None when a transform that is not
        leadrelay's own may look at any."""
        names: set[str] = set()
        for reader in self._readers.values():
            for spec in reader.specs:
                for bound in spec.transforms:
                    if REGISTRY.get(bound.name) is not bound.transform:
                        return None
                    names.update(_INBOUND_READS.get(bound.name, ()))
        return frozenset(names)

    def readers_of(self, keys: frozenset[str]) -> frozenset[str]:
        """The canonical fields whose reads look at any of the system fields ``keys`` (a
        ``to_lead(only=...)`` of them gives every value those fields change directly)."""
        found = self._readers_of.get(keys)
        if found is None:
            found = frozenset(
                name for name, reader in self._readers.items() if not keys.isdisjoint(reader.deps)
            )
            if len(self._readers_of) >= _MEMO_SIZE:
                self._readers_of.clear()
            self._readers_of[keys] = found
        return found

    def _readers_for(self, only: Collection[str]) -> list[tuple[str, _FieldReader]]:
        """The readers a ``to_lead(only=...)`` runs, in the mapping's order: each field in
        ``only``, under a head in it, or keeping an unmapped value in it."""
        key = only if isinstance(only, frozenset) else frozenset(only)
        found = self._runs_for.get(key)
        if found is None:
            found = [
                (name, reader)
                for name, reader in self._readers.items()
                if name in key or reader.head in key or reader.kept_as in key
            ]
            if len(self._runs_for) >= _MEMO_SIZE:
                self._runs_for.clear()
            self._runs_for[key] = found
        return found

    @cached_property
    def _runs_for(self) -> dict[frozenset[str], list[tuple[str, _FieldReader]]]:
        return {}

    @cached_property
    def _readers_of(self) -> dict[frozenset[str], frozenset[str]]:
        return {}

    def to_lead(
        self,
        raw: MappingABC[str, Any],
        *,
        connection: str | None = None,
        external_id: str | None = None,
        only: Collection[str] | None = None,
    ) -> LeadDraft:
        """Map one system record to canonical values; problems are collected, not raised.

        ``only`` restricts the draft to those canonical fields (``custom.NAME`` included; a
        field another one's transform reads is still read for it): what a fingerprint of those
        fields needs, for a fraction of a whole record's work. Their values are the same as in
        a whole draft.
        """
        key_field = self.key_field
        record = external_id or (
            _key(raw.get(key_field)) if key_field and raw.get(key_field) else None
        )
        draft = LeadDraft(record=record)
        values = draft.values
        cache: dict[str, Any] = {}
        busy: set[str] = set()
        readers = self._readers
        blanks = self.blank_values

        def canonical(name: str) -> Any:
            if name in cache:
                return cache[name]
            reader = readers.get(name)
            if reader is None or name in busy:
                return None
            busy.add(name)
            try:
                found, _spec, _problem = reader.recall(raw, blanks, canonical)
            finally:
                busy.discard(name)
            cache[name] = None if found is _ABSENT or isinstance(found, _Kept) else found
            return cache[name]

        for name, reader in readers.items() if only is None else self._readers_for(only):
            spec: FieldSpec | None
            plain = reader.plain
            if plain is not None:
                # one system field read as it is (no rule, transform, value map or default)
                if plain not in raw:
                    continue
                found = raw[plain]
                if _blank(found) or (blanks and isinstance(found, str) and found.strip() in blanks):
                    found = None
                spec, problem = reader.specs[0].spec, None
            else:
                probes = reader.probes
                if probes is not None and raw.keys().isdisjoint(probes):
                    continue  # none of its system fields in the record: nothing to read
                found, spec, problem = reader.recall(raw, blanks, canonical)
            if problem is not None:
                draft.problems.append(
                    Problem(
                        field=name,
                        reason=problem[0],
                        system_field=problem[1],
                        value=problem[2],
                        file=None,
                        record=record,
                    )
                )
                continue
            if found is _ABSENT:
                continue
            if type(found) is _Kept:
                _keep_unmapped(draft, name, found)
                continue
            if found is None and not reader.nullable:
                continue
            cache[name] = found
            if reader.owner and isinstance(found, str | int) and not isinstance(found, bool):
                found = {"id": str(found)}
            if spec is not None:
                draft.sources[name] = spec.system_field
            sub = reader.sub
            if sub:
                container = values.setdefault(reader.head, {})
                if found is not None:
                    container[sub] = found
            else:
                values[name] = found
        if connection and external_id:
            values["external_ids"] = {connection: external_id}
        return draft

    @cached_property
    def _readers(self) -> dict[str, _FieldReader]:
        # Built once per mapping: a record's read then does only per-value work.
        return {name: _FieldReader.of(fmap) for name, fmap in self.fields.items()}

    # --- writes --------------------------------------------------------------------------------

    def to_system(
        self,
        lead: Lead,
        *,
        fields: Iterable[str] | None = None,
        include_blank: bool = False,
    ) -> dict[str, Any]:
        """The system record of a Lead: only mapped fields that are written.

        ``fields`` restricts the write to those canonical fields (write-back). A blank Lead
        value is written as its ``default`` when it has one; otherwise it is left out, or
        written as None (clear it) with ``include_blank``. Raises :class:`MappingError` listing
        every value of this record that cannot be written.
        """
        out, problems = self.to_system_partial(lead, fields=fields, include_blank=include_blank)
        if problems:
            raise MappingError(problems)
        return out

    def can_write(self, name: str, value: Any) -> bool:
        """True when canonical field ``name`` maps and writes ``value`` without a problem."""
        fmap = self.fields.get(name)
        if fmap is None or not fmap.primary.writes:
            return False
        try:
            self._write(fmap, fmap.primary, value, lambda other: None)
        except (ValueError, TypeError):
            return False
        return True

    def to_system_partial(
        self,
        lead: Lead,
        *,
        fields: Iterable[str] | None = None,
        include_blank: bool = False,
    ) -> tuple[dict[str, Any], list[Problem]]:
        """Like :meth:`to_system`, but a value that cannot be written is left out and returned
        as a :class:`Problem` (one per canonical field) beside the values that can."""
        wanted = set(fields) if fields is not None else None
        if wanted is not None and not wanted <= self.fields.keys():
            unknown = sorted(wanted - set(self.fields))
            raise ValueError(f"not mapped in {self.kind}: {', '.join(unknown)}")

        def canonical(name: str) -> Any:
            return _lead_value(lead, name)

        out: dict[str, Any] = {}
        problems: list[Problem] = []
        for name, fmap, plain in self._writable:
            if wanted is not None and name not in wanted:
                continue
            spec = fmap.primary
            if plain is not None:
                # one system field written as it is (what :meth:`_write` does for it)
                value = _lead_value(lead, name)
                if _blank(value):
                    value = spec.default
                value = _jsonable(value)
                if value is not None or include_blank:
                    out[plain] = value
                continue
            try:
                written = self._write(fmap, spec, canonical(name), canonical)
            except (ValueError, TypeError) as exc:
                problems.append(
                    Problem(
                        field=name,
                        reason=str(exc),
                        system_field=spec.system_field,
                        value=_jsonable(canonical(name)),
                        file=fmap.file,
                        record=lead.key,
                    )
                )
                continue
            for system_field, value in written.items():
                if value is None and not include_blank:
                    continue
                out[system_field] = value
        return out, problems

    @cached_property
    def _writable(self) -> tuple[tuple[str, FieldMap, str | None], ...]:
        # (field, its map, the system field when the value is written as it stands: no value
        # map, no transform, not the owner, whose Owner is written as its id)
        return tuple(
            (
                name,
                fmap,
                fmap.primary.system_field
                if not fmap.primary.values and not fmap.primary.transforms and name != "owner"
                else None,
            )
            for name, fmap in self.fields.items()
            if fmap.primary.writes
        )

    def _write(
        self,
        fmap: FieldMap,
        spec: FieldSpec,
        value: Any,
        canonical: Callable[[str], Any],
    ) -> dict[str, Any]:
        if fmap.name == "owner" and isinstance(value, BaseModel):
            value = getattr(value, "id", None)
        ctx = TransformContext(fmap.name, spec.system_field, canonical) if spec.transforms else None
        if spec.values:
            if is_blank(value):
                return {spec.system_field: spec.default}
            target = spec.values.get(_key(value), spec.default)
            if target is None:
                raise ValueError(f"{_key(value)!r} has no value in the value map and no default")
            targets = target if isinstance(target, dict) else {spec.system_field: target}
            result: dict[str, Any] = {}
            for system_field, system_value in targets.items():
                if ctx is not None:
                    for bound in reversed(spec.transforms):
                        system_value = bound.outbound(system_value, ctx)
                result[system_field] = _jsonable(system_value)
            return result
        if ctx is not None:
            for bound in reversed(spec.transforms):
                value = bound.outbound(value, ctx)
        if _blank(value):
            value = spec.default
        return {spec.system_field: _jsonable(value)}

    # --- check ---------------------------------------------------------------------------------

    def validate_against(self, schema: Schema) -> list[Problem]:
        """Problems of this mapping against a live schema (``describe()``).

        A mapped field missing from the object, a read-only field written, a value map or
        transform writing a value outside a picklist, a required field no mapping writes or
        one that may be written blank (no ``default``).
        """
        problems: list[Problem] = []
        available = sorted(schema.fields)
        if self.object_name and schema.object_name.casefold() != self.object_name.casefold():
            problems.append(
                Problem(
                    "object",
                    f"mapping is for {self.object_name}, schema is for {schema.object_name}",
                    file=self._file(),
                )
            )
        written: dict[str, FieldMap] = {}
        for name, fmap in self.fields.items():
            for index, spec in enumerate(fmap.specs):
                for system_field in spec.system_fields:
                    if system_field not in schema.fields:
                        close = difflib.get_close_matches(system_field, available, n=1)
                        hint = f"; did you mean {close[0]!r}?" if close else ""
                        problems.append(
                            Problem(
                                name,
                                f"{schema.object_name} has no field {system_field!r}{hint}",
                                system_field=system_field,
                                file=fmap.file,
                                line=fmap.line,
                            )
                        )
                if index:
                    continue
                for system_field in spec.written_fields():
                    written[system_field] = fmap
                    info = schema.fields.get(system_field)
                    if info is None:
                        continue
                    if info.read_only:
                        problems.append(
                            Problem(
                                name,
                                "is read-only but the mapping writes it",
                                system_field=system_field,
                                file=fmap.file,
                                line=fmap.line,
                            )
                        )
                    if info.picklist_values is None:
                        continue
                    allowed = set(info.picklist_values)
                    for value in sorted(spec.written_values().get(system_field, set())):
                        parts = value.split(";") if info.multi_select else [value]
                        if any(part not in allowed for part in parts if part):
                            problems.append(
                                Problem(
                                    name,
                                    "value is not in the picklist (allowed: "
                                    + ", ".join(info.picklist_values[:20])
                                    + ")",
                                    system_field=system_field,
                                    value=value,
                                    file=fmap.file,
                                    line=fmap.line,
                                )
                            )
        for system_field, info in schema.fields.items():
            if not info.required or info.read_only:
                continue
            writer = written.get(system_field)
            if writer is None:
                if system_field == self.key_field:
                    continue
                problems.append(
                    Problem(
                        system_field,
                        f"{schema.object_name} requires it but no mapping writes it "
                        "(map a Lead field to it with a default)",
                        system_field=system_field,
                        file=self._file(),
                    )
                )
            elif (
                writer.primary.default is None
                and _nullable(writer.name)
                and system_field != self.key_field
            ):
                # The natural key is never written blank: a connector refuses a record
                # without it, naming the field, before anything is sent.
                problems.append(
                    Problem(
                        writer.name,
                        f"{schema.object_name} requires it, but a Lead without "
                        f"{writer.name} would write it blank: give it a default",
                        system_field=system_field,
                        file=writer.file,
                        line=writer.line,
                    )
                )
        return problems

    def _file(self) -> Path | None:
        return self.files[-1] if self.files else None


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


@dataclass(frozen=True)
class _Kept:
    """A system value no standard-list map covers: kept in ``custom``, not mapped."""

    system_field: str
    value: Any
    reason: str


def _keep_unmapped(draft: LeadDraft, name: str, kept: _Kept) -> None:
    """Keep an unmapped standard-list value verbatim in ``custom["<field>_raw"]`` and note it."""
    key = f"{name.rpartition('.')[2]}_raw"
    draft.values.setdefault("custom", {})[key] = kept.value
    draft.notes.append(
        Problem(
            field=name,
            reason=f"{kept.reason}: kept verbatim in custom.{key}, the field left out",
            system_field=kept.system_field,
            value=kept.value,
            record=draft.record,
        )
    )


def _lookup(table: dict[str, str], key: str) -> str | None:
    if key in table:
        return table[key]
    folded = key.casefold()
    for candidate, value in table.items():
        if candidate.casefold() == folded:
            return value
    return table.get("*")


def _lead_value(lead: Lead, name: str) -> Any:
    head, _, sub = name.partition(".")
    if sub:
        container = getattr(lead, head, None)
        return container.get(sub) if isinstance(container, dict) else None
    return getattr(lead, name, None)


def _system_value(raw: MappingABC[str, Any], name: str, blanks: frozenset[str]) -> Any:
    value = raw.get(name)
    if blanks and isinstance(value, str) and value.strip() in blanks:
        return None
    return value


def _blank(value: Any) -> bool:
    """:func:`is_blank`, with the common cases first."""
    if value is None:
        return True
    kind = type(value)
    if kind is str:
        return not value.strip()
    if kind is int or kind is float or kind is bool:
        return False
    return is_blank(value)


class _SpecReader:
    """One readable :class:`FieldSpec`, with what its reads need worked out once."""

    __slots__ = (
        "default_key",
        "field",
        "reverse",
        "rules",
        "spec",
        "standard",
        "system_field",
        "system_fields",
        "transforms",
        "when",
    )

    def __init__(self, field: str, spec: FieldSpec) -> None:
        self.spec = spec
        self.field = field
        self.system_field = spec.system_field
        self.system_fields = spec.system_fields
        self.rules = spec.read
        self.when = spec.read_when
        # Without a value map, a read of the default (a placeholder) is blank.
        self.default_key = (
            _key(spec.default) if not spec.values and spec.default is not None else None
        )
        self.transforms = spec.transforms
        self.reverse = spec._reverse if (spec.values or spec.values_in) else None
        self.standard = field in _STANDARD_LISTS


#: Built-in transforms whose inbound reads the value alone (and the field's own name): a read
#: through them gives the same result for the same system values.
_PURE_INBOUND = frozenset(
    {
        "bool",
        "country",
        "date",
        "datetime",
        "default",
        "employee_range",
        "float",
        "hubspot_source",
        "int",
        "join",
        "lower",
        "picklist",
        "split_full_name",
        "strip",
        "truncate",
        "upper",
    }
)
#: Built-in transforms whose inbound looks at other canonical fields, and which (the other
#: built-ins look at none).
_INBOUND_READS: dict[str, frozenset[str]] = {
    "e164": frozenset({"country"}),
    "region": frozenset({"country"}),
}
#: A system field a record does not hold (a memo key apart from None, a field held blank).
_MISSING: Any = object()
#: Exact types of system values a memo key holds with their type (str, None and absent as
#: they are).
_SCALARS: frozenset[type] = frozenset({int, float, bool})
#: Read results a memo may hand to several records (they cannot be changed in place).
_IMMUTABLE: frozenset[type] = frozenset({str, int, float, bool, datetime, date, _Kept})
#: Entries a field's memo holds before it starts again (unique values, such as times, would
#: otherwise grow it without end).
_MEMO_SIZE = 512


class _FieldReader:
    """How one canonical field is read from a system record (:meth:`Mapping.to_lead`)."""

    __slots__ = (
        "deps",
        "head",
        "kept_as",
        "memo",
        "name",
        "nullable",
        "owner",
        "plain",
        "probes",
        "specs",
        "sub",
    )

    def __init__(self, name: str, specs: tuple[_SpecReader, ...]) -> None:
        self.name = name
        head, _, sub = name.partition(".")
        self.head, self.sub = head, sub
        self.specs = specs
        self.nullable = _nullable(name)
        self.owner = name == "owner"
        # where a value no standard-list map covers is kept (:func:`_keep_unmapped`)
        self.kept_as = f"custom.{name.rpartition('.')[2]}_raw"
        # Without read rules, a record holding none of these reads as absent.
        self.probes: tuple[str, ...] | None = (
            None if any(s.rules for s in specs) else tuple(s.system_field for s in specs)
        )
        conditional = any(s.when is not None for s in specs)
        # The system field of a value read as it stands, the commonest case.
        only = specs[0] if len(specs) == 1 else None
        self.plain: str | None = (
            only.system_field
            if only is not None
            and not conditional
            and not only.rules
            and not only.transforms
            and only.reverse is None
            and only.default_key is None
            else None
        )
        # The system fields a read looks at. When its transforms read nothing but the value
        # (not another canonical field, as e164 and region read the country), what a read
        # finds follows from those fields' values alone: a value map, read rule or transform
        # over a value seen before is answered from the memo (stages, sources, industries and
        # tiers repeat across records).
        deps: dict[str, None] = {}
        for reader in specs:
            deps.update(dict.fromkeys(reader.when.when if reader.when is not None else ()))
            deps.update(dict.fromkeys(reader.system_fields if reader.rules else ()))
            deps[reader.system_field] = None
        self.deps = tuple(deps)
        pure = all(
            REGISTRY.get(bound.name) is bound.transform and bound.name in _PURE_INBOUND
            for reader in specs
            for bound in reader.transforms
        )
        self.memo: dict[Any, tuple[Any, FieldSpec | None, tuple[str, str, Any] | None]] | None = (
            {} if pure and self.plain is None and self.deps else None
        )

    @classmethod
    def of(cls, fmap: FieldMap) -> _FieldReader:
        return cls(fmap.name, tuple(_SpecReader(fmap.name, s) for s in fmap.specs if s.reads))

    def recall(
        self,
        raw: MappingABC[str, Any],
        blanks: frozenset[str],
        canonical: Callable[[str], Any],
    ) -> tuple[Any, FieldSpec | None, tuple[str, str, Any] | None]:
        """:meth:`read`, from the memo when the same text (or absence) was read before.

        Text, numbers, booleans, None and absent values make a key (a number or boolean with
        its type: ``1``, ``1.0`` and ``True`` are one dict key, and read differently); only
        immutable results are kept."""
        memo = self.memo
        if memo is None:
            return self.read(raw, blanks, canonical)
        deps = self.deps
        key: Any
        if len(deps) == 1:
            key = raw.get(deps[0], _MISSING)
            if key is not None and key is not _MISSING and type(key) is not str:
                if type(key) not in _SCALARS:
                    return self.read(raw, blanks, canonical)
                key = (type(key), key)
        else:
            parts = []
            for name in deps:
                value = raw.get(name, _MISSING)
                if value is not None and value is not _MISSING and type(value) is not str:
                    if type(value) not in _SCALARS:
                        return self.read(raw, blanks, canonical)
                    value = (type(value), value)
                parts.append(value)
            key = tuple(parts)
        found = memo.get(key)
        if found is None:
            found = self.read(raw, blanks, canonical)
            value = found[0]
            if (
                value is None
                or value is _ABSENT
                or type(value) in _IMMUTABLE
                or isinstance(value, Enum)
            ):
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[key] = found
        return found

    def read(
        self,
        raw: MappingABC[str, Any],
        blanks: frozenset[str],
        canonical: Callable[[str], Any],
    ) -> tuple[Any, FieldSpec | None, tuple[str, str, Any] | None]:
        """(value or _ABSENT, the spec it came from, problem (reason, system field, value))."""
        result: Any = _ABSENT
        source: FieldSpec | None = None
        for reader in self.specs:
            if reader.when is not None:
                held = {n: _key(_system_value(raw, n, blanks)) for n in reader.when.when}
                if not reader.when.matches(held):
                    # Passed over: its value does not speak for this record, so it reads blank
                    # (a later alternative may still give one).
                    if result is _ABSENT and reader.system_field in raw:
                        result, source = None, reader.spec
                    continue
            if reader.rules:
                flat = {n: _key(_system_value(raw, n, blanks)) for n in reader.system_fields}
                rule = next((r for r in reader.rules if r.matches(flat)), None)
                if rule is not None:
                    return rule.value, reader.spec, None
            system_field = reader.system_field
            if system_field not in raw:
                continue
            value = _system_value(raw, system_field, blanks)
            if reader.default_key is not None and _key(value) == reader.default_key:
                value = None
            if reader.transforms:
                ctx = TransformContext(self.name, system_field, canonical)
                try:
                    for bound in reader.transforms:
                        value = bound.inbound(value, ctx)
                except UnmappedValue as exc:
                    return _Kept(system_field, raw.get(system_field), str(exc)), reader.spec, None
                except (ValueError, TypeError) as exc:
                    return _ABSENT, reader.spec, (str(exc), system_field, raw.get(system_field))
            if reader.reverse is not None and not _blank(value):
                mapped = _lookup(reader.reverse, _key(value))
                if mapped is None:
                    known = ", ".join(sorted(reader.reverse)[:12])
                    reason = f"value not in the value map (known: {known})"
                    if reader.standard:
                        return _Kept(system_field, value, reason), reader.spec, None
                    return _ABSENT, reader.spec, (reason, system_field, value)
                value = mapped or None
            if _blank(value):
                if result is _ABSENT:
                    result, source = None, reader.spec
                continue
            return value, reader.spec, None
        return result, source, None


# --- loading ------------------------------------------------------------------------------------


@dataclass
class _Layer:
    path: Path
    text: str
    data: dict[str, Any]


def _read_layer(path: Path) -> _Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(
            [Problem("file", "mapping file not found", file=path)], file=path
        ) from None
    except OSError as exc:
        raise MappingError(
            [Problem("file", f"cannot read: {exc.strerror}", file=path)], file=path
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise MappingError(
            [Problem("toml", f"not valid TOML: {reason}", file=path, line=line)], file=path
        ) from None
    return _Layer(path, text, data)


def _line_of(text: str, name: str) -> int | None:
    """The line where a [fields] entry (``name = …`` or ``[fields.name]``) is written."""
    entry = _entry_pattern(name)
    for number, line in enumerate(_lines(text), start=1):
        if entry.match(line):
            return number
    return None


@lru_cache(maxsize=1024)
def _entry_pattern(name: str) -> re.Pattern[str]:
    """One pattern for the lines that write the [fields] entry ``name`` (a mapping file has a
    few hundred; compiled once each, not once per look-up)."""
    head, _, sub = name.partition(".")
    keys = [re.escape(name), rf'"{re.escape(name)}"']
    if sub:
        keys.append(rf"{re.escape(head)}\s*\.\s*{re.escape(sub)}")
    either = "|".join(keys)
    return re.compile(rf"\s*(?:(?:{either})\s*=|\[+\s*fields\s*\.\s*(?:{either})\s*[\].])")


@lru_cache(maxsize=16)
def _lines(text: str) -> tuple[str, ...]:
    return tuple(text.splitlines())


def _flatten_fields(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    flat: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _KEYED and isinstance(value, dict) and not (_SPEC_KEYS & set(value)):
            for sub, inner in value.items():
                flat[f"{name}.{sub}"] = inner
        else:
            flat[name] = value
    return flat


def _merge(layers: list[_Layer], *, kind: str, form: bool) -> Mapping:
    top: dict[str, tuple[Any, _Layer]] = {}
    entries: dict[str, tuple[Any, _Layer]] = {}
    problems: list[Problem] = []
    allowed_top = _FORM_TOP_KEYS if form else _TOP_KEYS
    for layer in layers:
        for key, value in layer.data.items():
            if key not in allowed_top:
                close = difflib.get_close_matches(key, sorted(allowed_top), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    Problem(
                        key,
                        f"unknown top-level key (known: {', '.join(sorted(allowed_top))}){hint}",
                        file=layer.path,
                    )
                )
            elif key != "fields":
                top[key] = (value, layer)
        if "fields" in layer.data and not isinstance(layer.data["fields"], dict):
            problems.append(Problem("fields", "must be a table", file=layer.path))
        for name, value in _flatten_fields(layer.data.get("fields")).items():
            if value is False:
                entries.pop(name, None)
            else:
                entries[name] = (value, layer)
    object_name = _top_str(top, "object", problems)
    key_field = _top_str(top, "key", problems)
    blank_values: list[str] = []
    if "blank_values" in top:
        value, layer = top["blank_values"]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            blank_values = list(value)
        else:
            problems.append(Problem("blank_values", "must be a list of strings", file=layer.path))
    fields: dict[str, FieldMap] = {}
    for name, (value, layer) in entries.items():
        fmap = _parse_field(name, value, layer, form=form, problems=problems)
        if fmap is not None:
            fields[name] = fmap
    _check_targets(fields, problems)
    if problems:
        raise MappingError(problems, file=layers[-1].path)
    return Mapping(
        kind=kind,
        object_name=object_name,
        key_field=key_field,
        fields=fields,
        blank_values=blank_values,
        files=[layer.path for layer in layers],
        form=form,
    )


def _top_str(top: dict[str, tuple[Any, _Layer]], key: str, problems: list[Problem]) -> str | None:
    if key not in top:
        return None
    value, layer = top[key]
    if not isinstance(value, str) or not value.strip():
        problems.append(Problem(key, "must be a non-empty string", file=layer.path))
        return None
    return value


def _parse_field(
    name: str, value: Any, layer: _Layer, *, form: bool, problems: list[Problem]
) -> FieldMap | None:
    line = _line_of(layer.text, name)

    def problem(reason: str, system_field: str | None = None) -> None:
        problems.append(
            Problem(name, reason, system_field=system_field, file=layer.path, line=line)
        )

    head, dot, sub = name.partition(".")
    if dot:
        if head not in _KEYED or not sub:
            problem("only custom.NAME and click_ids.NAME may have a dot")
            return None
    elif name not in Lead.model_fields or name in _STRUCTURED:
        if name in _STRUCTURED:
            problem(
                f"{name} holds a structure; map its keys ({name}.NAME)"
                if name in _KEYED
                else f"{name} cannot be mapped"
            )
            return None
        close = difflib.get_close_matches(name, canonical_fields(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problem(f"not a Lead field (nor custom.NAME){hint}")
        return None
    raw_specs = value if isinstance(value, list) else [value]
    if not raw_specs:
        problem("an empty list maps nothing")
        return None
    specs: list[FieldSpec] = []
    before = len(problems)
    for index, raw in enumerate(raw_specs):
        spec = _parse_spec(name, raw, problem, form=form, alternative=index > 0)
        if spec is not None:
            specs.append(spec)
    if len(problems) > before or not specs:
        return None
    return FieldMap(name, tuple(specs), file=layer.path, line=line)


def _parse_spec(
    name: str,
    raw: Any,
    problem: Callable[..., None],
    *,
    form: bool,
    alternative: bool,
) -> FieldSpec | None:
    default_direction: Direction = "in" if form or alternative else "both"
    if isinstance(raw, str):
        if not raw.strip():
            problem("the system field name is empty")
            return None
        return FieldSpec(system_field=raw, direction=default_direction)
    if not isinstance(raw, dict):
        problem("must be a system field name, a table, false or a list of those")
        return None
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        problem(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_SPEC_KEYS))})")
        return None
    if ("field" in raw) == ("fields" in raw):
        problem('give exactly one of field = "X" or fields = ["X", "Y"]')
        return None
    if "field" in raw:
        names = [raw["field"]]
    else:
        names = raw["fields"]
        if not isinstance(names, list) or not names:
            problem("fields must be a non-empty list of system field names")
            return None
    if not all(isinstance(n, str) and n.strip() for n in names):
        problem("system field names must be non-empty strings")
        return None
    if len(set(names)) != len(names):
        problem("fields lists a system field twice")
        return None
    primary, also = names[0], tuple(names[1:])
    direction = raw.get("direction", default_direction)
    if direction not in ("both", "in", "out"):
        problem(f"direction must be both, in or out, not {direction!r}")
        return None
    if form and direction != "in":
        problem('form mappings only read (direction = "in")')
        return None
    if alternative and direction != "in":
        direction = "in"
    default = raw.get("default")
    if default is not None and not isinstance(default, str | int | float | bool):
        problem("default must be a string, number or boolean")
        return None
    on_invalid = raw.get("on_invalid")
    if on_invalid is not None and on_invalid not in ON_INVALID:
        problem(f"on_invalid must be one of {', '.join(ON_INVALID)}, not {on_invalid!r}")
        return None
    fallback = raw.get("fallback")
    if fallback is not None and not isinstance(fallback, str | int | float | bool):
        problem("fallback must be a string, number or boolean")
        return None
    if (on_invalid == "fallback") != (fallback is not None):
        problem('on_invalid = "fallback" goes with a fallback = value, and only it')
        return None
    transforms = _parse_transforms(raw.get("transform"), raw.get("args"), problem)
    if transforms is None:
        return None
    values = _parse_values(name, raw.get("values"), names, problem)
    values_in = _parse_values_in(name, raw.get("values_in"), problem)
    read = _parse_read(name, raw.get("read"), names, problem)
    when_ok, read_when = _parse_read_when(raw.get("read_when"), problem)
    if values is None or values_in is None or read is None or not when_ok:
        return None
    spec = FieldSpec(
        system_field=primary,
        direction=direction,
        default=default,
        transforms=transforms,
        values=values,
        values_in=values_in,
        also=also,
        read=read,
        on_invalid=on_invalid,
        fallback=fallback,
        read_when=read_when,
    )
    if not _check_values(name, spec, problem):
        return None
    return spec


def _parse_transforms(
    raw: Any, args: Any, problem: Callable[..., None]
) -> tuple[BoundTransform, ...] | None:
    if raw is None:
        if args is not None:
            problem("args given without a transform")
            return None
        return ()
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problem("transform must be a name or a list of names")
        return None
    if args is not None and not isinstance(args, dict):
        problem("args must be a table")
        return None
    args = args or {}
    if isinstance(raw, list):
        extra = sorted(set(args) - set(names))
        if extra:
            problem(
                f"args names {', '.join(extra)}, which is not in the transform list "
                "(with a list, args is a table per transform name)"
            )
            return None
    bound: list[BoundTransform] = []
    for transform_name in names:
        own = args if isinstance(raw, str) else args.get(transform_name, {})
        if not isinstance(own, dict):
            problem(f"args.{transform_name} must be a table")
            return None
        try:
            bound.append(bind(transform_name, own))
        except KeyError:
            close = difflib.get_close_matches(transform_name, sorted(REGISTRY), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problem(
                f"unknown transform {transform_name!r}; {hint}known: " + ", ".join(sorted(REGISTRY))
            )
            return None
        except TransformArgsError as exc:
            problem(str(exc))
            return None
    return tuple(bound)


def _valid_canonical(name: str, value: str) -> bool:
    enum = ENUM_FIELDS.get(name)
    if enum is None:
        return True
    return value in {str(member.value) for member in enum}


def _enum_hint(name: str) -> str:
    enum = ENUM_FIELDS[name]
    return "valid: " + ", ".join(str(m.value) for m in enum)


def _parse_values(
    name: str, raw: Any, names: list[str], problem: Callable[..., None]
) -> dict[str, Any] | None:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problem("values must be a table of canonical value = system value")
        return None
    values: dict[str, Any] = {}
    ok = True
    for canonical, target in raw.items():
        if not _valid_canonical(name, canonical):
            problem(f"values key {canonical!r} is not a {name} value ({_enum_hint(name)})")
            ok = False
            continue
        if isinstance(target, dict):
            if len(names) == 1:
                problem(f"values.{canonical} is a table; only fields = [...] entries take tables")
                ok = False
                continue
            stray = sorted(set(target) - set(names))
            if stray or not target:
                problem(
                    f"values.{canonical} names {', '.join(stray) or 'no field'}, "
                    f"not one of fields {names}"
                )
                ok = False
                continue
            if not all(isinstance(v, str | int | float | bool) for v in target.values()):
                problem(f"values.{canonical} must hold strings, numbers or booleans")
                ok = False
                continue
        elif not isinstance(target, str | int | float | bool):
            problem(f"values.{canonical} must be a string, number or boolean")
            ok = False
            continue
        values[canonical] = target
    return values if ok else None


def _parse_values_in(name: str, raw: Any, problem: Callable[..., None]) -> dict[str, str] | None:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problem("values_in must be a table of system value = canonical value")
        return None
    ok = True
    for system_value, canonical in raw.items():
        if not isinstance(canonical, str):
            problem(f"values_in.{system_value} must be a string")
            ok = False
        elif canonical and not _valid_canonical(name, canonical):
            problem(
                f"values_in maps {system_value!r} to {canonical!r}, not a {name} value "
                f"({_enum_hint(name)})"
            )
            ok = False
    return dict(raw) if ok else None


def _parse_read(
    name: str, raw: Any, names: list[str], problem: Callable[..., None]
) -> tuple[ReadRule, ...] | None:
    if raw is None:
        return ()
    if len(names) == 1 and raw:
        problem("read rules need fields = [...] (a value held by several system fields)")
        return None
    if not isinstance(raw, list):
        problem("read must be an array of tables ([[fields.X.read]])")
        return None
    rules: list[ReadRule] = []
    for index, rule in enumerate(raw, start=1):
        where = f"read rule {index}"
        if not isinstance(rule, dict) or set(rule) != {"when", "value"}:
            problem(f"{where} must have exactly the keys when and value")
            return None
        when, value = rule["when"], rule["value"]
        if not isinstance(when, dict) or not when:
            problem(f"{where}: when must be a non-empty table of system field = value(s)")
            return None
        conditions: dict[str, tuple[str, ...]] = {}
        for system_field, accepted in when.items():
            if system_field not in names:
                problem(f"{where}: {system_field!r} is not one of fields {names}")
                return None
            items = accepted if isinstance(accepted, list) else [accepted]
            if not items or not all(isinstance(i, str | bool | int) for i in items):
                problem(f"{where}: {system_field} must be a value or a list of values")
                return None
            conditions[system_field] = tuple(_key(i) for i in items)
        if not isinstance(value, str) or not _valid_canonical(name, value):
            problem(
                f"{where}: value {value!r} is not a {name} value"
                + (f" ({_enum_hint(name)})" if name in ENUM_FIELDS else "")
            )
            return None
        rules.append(ReadRule(conditions, value))
    return tuple(rules)


def _parse_read_when(raw: Any, problem: Callable[..., None]) -> tuple[bool, ReadRule | None]:
    """``read_when = { system field = value(s) }``: (whether it is valid, its condition)."""
    if raw is None:
        return True, None
    if not isinstance(raw, dict) or not raw:
        problem("read_when must be a non-empty table of system field = value(s)")
        return False, None
    conditions: dict[str, tuple[str, ...]] = {}
    for system_field, accepted in raw.items():
        items = accepted if isinstance(accepted, list) else [accepted]
        if not items or not all(isinstance(i, str | bool | int) for i in items):
            problem(f"read_when: {system_field} must be a value or a list of values")
            return False, None
        conditions[system_field] = tuple(_key(i) for i in items)
    return True, ReadRule(conditions, "")


def _check_values(name: str, spec: FieldSpec, problem: Callable[..., None]) -> bool:
    ok = True
    if name == "stage" and spec.writes and spec.values and spec.default is None:
        missing = [s.value for s in Stage if s.value not in spec.values]
        if missing:
            problem(
                "the stage value map has no value for "
                + ", ".join(missing)
                + " (map every stage, or give a default)"
            )
            ok = False
    if spec.reads and spec.values and not spec.also:
        writers: dict[str, list[str]] = {}
        for canonical, target in spec.values.items():
            writers.setdefault(_key(target), []).append(canonical)
        for system_value, canonicals in writers.items():
            if len(canonicals) > 1 and system_value not in spec.values_in:
                problem(
                    f"{system_value!r} is written for {', '.join(canonicals)}: say which one "
                    f"it reads as in values_in",
                    spec.system_field,
                )
                ok = False
    if spec.reads and spec.also:
        # A composite value must read back as itself, unless the primary value it writes has
        # an explicit values_in entry (a declared many-to-one read).
        for canonical, target in spec.values.items():
            targets = target if isinstance(target, dict) else {spec.system_field: target}
            flat = {n: _key(targets.get(n)) for n in spec.system_fields}
            read_back = _read_composite(spec, flat)
            if read_back == canonical or flat[spec.system_field] in spec.values_in:
                continue
            shown = ", ".join(f"{k} = {v!r}" for k, v in targets.items())
            problem(
                f"values.{canonical} writes {shown}, which reads back as "
                f"{read_back or 'nothing'}: add a read rule"
            )
            ok = False
    return ok


def _read_composite(spec: FieldSpec, flat: MappingABC[str, str]) -> str | None:
    """The canonical value a composite field reads from its system values (as strings)."""
    for rule in spec.read:
        if rule.matches(flat):
            return rule.value
    primary = flat.get(spec.system_field, "")
    return _lookup(spec.reverse(), primary) if primary else None


def _check_targets(fields: dict[str, FieldMap], problems: list[Problem]) -> None:
    writers: dict[str, list[FieldMap]] = {}
    for fmap in fields.values():
        for system_field in fmap.primary.written_fields():
            writers.setdefault(system_field, []).append(fmap)
    for system_field, fmaps in writers.items():
        if len(fmaps) < 2:
            continue
        names = ", ".join(f.name for f in fmaps)
        for fmap in fmaps[1:]:
            problems.append(
                Problem(
                    fmap.name,
                    f'{names} all write {system_field!r}; make all but one direction = "in"',
                    system_field=system_field,
                    file=fmap.file,
                    line=fmap.line,
                )
            )


def _is_path(kind_or_path: str) -> bool:
    return kind_or_path.endswith(".toml") or "/" in kind_or_path or "\\" in kind_or_path


def load_mapping(
    kind_or_path: str,
    *,
    project_dir: Path | None = None,
    override: Path | None = None,
) -> Mapping:
    """The mapping of a connector kind, or of one mapping file given by path.

    For a kind: the package default ``<kind>.toml`` (when leadrelay ships one), then the
    project's ``mappings/<kind>.toml`` merged over it field by field, or, for a flow that names
    one, its ``override`` file in the project file's place. Raises :class:`MappingError`.
    """
    if _is_path(kind_or_path):
        path = Path(kind_or_path)
        if override is not None:
            return _merge([_read_layer(path), _read_layer(override)], kind=path.stem, form=False)
        return _merge([_read_layer(path)], kind=path.stem, form=False)
    kind = kind_or_path
    layers: list[_Layer] = []
    default = DEFAULTS_DIR / f"{kind}.toml"
    if default.is_file() and kind not in _FORM_ONLY:
        layers.append(_read_layer(default))
    if override is not None:
        layers.append(_read_layer(override))
    elif project_dir is not None and (project_dir / "mappings" / f"{kind}.toml").is_file():
        layers.append(_read_layer(project_dir / "mappings" / f"{kind}.toml"))
    if not layers:
        where = f"{project_dir / 'mappings' / (kind + '.toml')}" if project_dir else "the project"
        raise MappingError(
            [
                Problem(
                    kind,
                    f"no mapping: leadrelay ships none for this kind and {where} does not exist",
                )
            ]
        )
    return _merge(layers, kind=kind, form=False)


_FORM_ONLY = frozenset({"webform", "meta_lead_ads", "linkedin_lead_gen", "google_ads_lead_form"})


def load_form_mapping(path: Path, *, source: str) -> Mapping:
    """A form's mapping (form field names → Lead fields) over its source's default mapping.

    The result reads only. Raises :class:`MappingError` naming the file, field and reason.
    """
    layers: list[_Layer] = []
    default_name = FORM_DEFAULTS.get(source)
    if default_name is not None:
        base = _read_layer(DEFAULTS_DIR / f"{default_name}.toml")
        if default_name not in _FORM_ONLY:
            base = _as_form_layer(base)
        layers.append(base)
    layers.append(_read_layer(path))
    return _merge(layers, kind=source, form=True)


def _as_form_layer(layer: _Layer) -> _Layer:
    """A connector mapping read as a form's default: reads only, no object or key."""
    fields: dict[str, Any] = {}
    for name, value in _flatten_fields(layer.data.get("fields")).items():
        specs = value if isinstance(value, list) else [value]
        kept = []
        for spec in specs:
            if isinstance(spec, dict):
                if spec.get("direction", "both") == "out":
                    continue
                spec = {k: v for k, v in spec.items() if k != "direction"}
            kept.append(spec)
        if kept:
            fields[name] = kept
    data = {"fields": fields}
    if "blank_values" in layer.data:
        data["blank_values"] = layer.data["blank_values"]
    return _Layer(layer.path, layer.text, data)


def iter_default_kinds() -> Iterator[str]:
    """The kinds leadrelay ships a connector mapping for."""
    for path in sorted(DEFAULTS_DIR.glob("*.toml")):
        if path.stem not in _FORM_ONLY:
            yield path.stem
