"""The plan: per record, which canonical fields to write to the other side, under field rules.

A record read from one side of a flow (the *incoming* Lead) is compared with the other side's
current record (the *target*, from a batched lookup). For each canonical field both mappings
hold, the flow's rule (:mod:`leadrelay.sync.rules`) decides whether the incoming value wins.
A winning value is kept only when writing it changes what the target will read back as: the
comparison happens in the target's own terms (its mapping applied to the record as it would be
after the write), so lossy value maps (HubSpot ``mql`` and ``lead`` are both Salesforce
"Open - Not Contacted") never cause a write that changes nothing.

Blank incoming values are never written: leadrelay does not clear a field on the other side.
When the target record does not exist yet, every non-blank mapped value is written (except
fields whose rule is ``none``).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum, StrEnum
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from leadrelay.config import FieldRule
from leadrelay.mappings.engine import Mapping, Problem
from leadrelay.model import Lead, Stage
from leadrelay.sync.rules import HANDOFF, FieldRules, Rule, Side, stage_side

#: The reasons a stage is set for; each travels with the stage when it is mapped.
STAGE_REASONS = ("rejection_reason", "outcome_reason")

__all__ = [
    "Action",
    "Conflict",
    "FieldChange",
    "RecordPlan",
    "canonical_value",
    "is_blank",
    "lead_value",
    "plan_record",
    "readable_fields",
    "writable_fields",
]


class Action(StrEnum):
    """What the plan does to the target record."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class FieldChange:
    """One canonical field written: the target's value before, the value written."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Conflict:
    """Both sides hold different values for a field and the target changed since the last sync.

    ``winner`` is the side whose value stays (or is written); ``rule`` the rule that chose it.
    """

    field: str
    source_value: Any
    destination_value: Any
    rule: str
    winner: Side

    def to_event(self, lead_key: str) -> dict[str, Any]:
        """The run-log event of this conflict."""
        return {
            "event": "conflict",
            "lead": lead_key,
            "field": self.field,
            "source_value": self.source_value,
            "destination_value": self.destination_value,
            "rule": self.rule,
            "winner": self.winner.value,
        }


@dataclass
class RecordPlan:
    """What to write to the target for one incoming record.

    Attributes:
        lead_key: the lead.
        action: create, update or unchanged.
        target_id: the target record's id (None when it is created).
        fields: system field → value to write.
        changes: the canonical fields written, old → new.
        conflicts: conflicts resolved by rule (for the run log).
        problems: values that could not be written (the record is dead-lettered).
    """

    lead_key: str
    action: Action
    target_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    changes: list[FieldChange] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    expected: dict[str, Any] | None = None


#: Types whose values are already in canonical form (exact types: a str enum is no plain str).
_PLAIN_TYPES: frozenset[type] = frozenset({str, int, bool})
#: Exact types :func:`is_blank` never calls blank.
_NEVER_BLANK: frozenset[type] = frozenset({int, bool, float, datetime, date})


def canonical_value(value: Any) -> Any:
    """A canonical value in a JSON-ready, comparable form."""
    if value is None or type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {str(k): canonical_value(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, list | tuple):
        return [canonical_value(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def is_blank(value: Any) -> bool:
    """None, an empty or whitespace string, or an empty collection."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, dict | list | tuple | set):
        return len(value) == 0
    return False


def lead_value(lead: Lead, name: str) -> Any:
    """The value of a canonical field on a Lead (``custom.NAME`` and ``click_ids.NAME`` too)."""
    if "." not in name:
        return getattr(lead, name, None)
    head, _, sub = name.partition(".")
    if sub:
        container = getattr(lead, head, None)
        return container.get(sub) if isinstance(container, dict) else None
    return getattr(lead, name, None)


def draft_value(values: MappingABC[str, Any], name: str) -> Any:
    """The value of a canonical field in a draft's values (``custom.NAME`` looked up inside)."""
    head, _, sub = name.partition(".")
    if sub:
        container = values.get(head)
        return container.get(sub) if isinstance(container, dict) else None
    return values.get(name)


def writable_fields(mapping: Mapping) -> list[str]:
    """Canonical fields the mapping writes."""
    return [name for name, fmap in mapping.fields.items() if fmap.primary.writes]


def readable_fields(mapping: Mapping) -> set[str]:
    """Canonical fields the mapping reads."""
    return {name for name, fmap in mapping.fields.items() if any(s.reads for s in fmap.specs)}


def _wins(
    rule: Rule,
    from_side: Side,
    incoming: Any,
    current: Any,
    *,
    incoming_newer: bool,
) -> bool:
    """True when the incoming side's value is the one to keep under ``rule``."""
    if rule == HANDOFF:
        source_stage, destination_stage = (
            (incoming, current) if from_side is Side.SOURCE else (current, incoming)
        )
        source_newer = incoming_newer if from_side is Side.SOURCE else not incoming_newer
        winner = stage_side(
            _as_stage(source_stage), _as_stage(destination_stage), source_newer=source_newer
        )
        return winner is from_side
    if rule is FieldRule.SOURCE_WINS:
        return from_side is Side.SOURCE
    if rule is FieldRule.DESTINATION_WINS:
        return from_side is Side.DESTINATION
    if rule is FieldRule.PREFER_DESTINATION_UNLESS_BLANK:
        return from_side is Side.DESTINATION or is_blank(current)
    if rule is FieldRule.TWO_WAY:
        return incoming_newer
    return False


def _changed(
    values: MappingABC[str, Any] | None, baseline: MappingABC[str, Any], name: str
) -> bool:
    """True when a side's value of ``name`` differs from what it held at the last sync."""
    if values is None:
        return True
    now, then = canonical_value(draft_value(values, name)), draft_value(baseline, name)
    return bool(now != canonical_value(then))


@lru_cache(maxsize=64)
def _write_defaults(mapping: Mapping) -> dict[str, Any]:
    """Canonical field → the default its primary spec writes for a blank value (a mapping
    does not change once loaded: worked out once, not per record and field)."""
    return {
        name: fmap.primary.default
        for name, fmap in mapping.fields.items()
        if fmap.primary.writes and fmap.primary.default is not None
    }


def _blank_in(mapping: Mapping, name: str, raw: MappingABC[str, Any] | None) -> bool:
    """True when every system field ``name`` writes is blank in the target record ``raw``."""
    if raw is None:
        return True
    fmap = mapping.fields[name]
    return all(is_blank(raw.get(system)) for system in fmap.primary.written_fields())


def _as_stage(value: Any) -> Stage | None:
    if value is None or isinstance(value, Stage):
        return value
    try:
        return Stage(str(value))
    except ValueError:
        return None


def plan_record(
    *,
    incoming: Lead,
    from_side: Side,
    rules: FieldRules,
    target_mapping: Mapping,
    target_raw: MappingABC[str, Any] | None,
    target_id: str | None,
    target_current: Lead | None,
    fields: Iterable[str],
    incoming_newer: bool = True,
    target_changed: bool = False,
    target_values: MappingABC[str, Any] | None = None,
    incoming_values: MappingABC[str, Any] | None = None,
    baseline: tuple[MappingABC[str, Any], MappingABC[str, Any]] | None = None,
    field_newer: MappingABC[str, bool] | None = None,
) -> RecordPlan:
    """Plan the write of one incoming Lead to the other side of its flow.

    Args:
        incoming: the Lead read from ``from_side`` (its key already resolved).
        from_side: the side it was read from; the target is the other side.
        rules: the flow's field rules.
        target_mapping: the target system's mapping.
        target_raw: the target's current record (system fields), None when it has none.
        target_id: the target record's id, None when it has none.
        target_current: ``target_raw`` as a Lead (None when it has none or it did not map).
        fields: canonical fields to consider (held by both mappings, minus excluded ones).
        incoming_newer: the incoming record changed after the target did (``two_way``).
        target_changed: the target changed since leadrelay last reconciled it, so differing
            values are conflicts worth logging.
        target_values: ``target_raw`` already mapped (its draft values), to save mapping it
            again.
        incoming_values: the incoming record's draft values (as its mapping read them).
        field_newer: per field, whether the incoming side's value was set later than the
            target's (from when each value was set where it came from; leadrelay's own writes
            are not changes); a field not named falls back to ``incoming_newer``.
        baseline: the draft values each side held when the flow last synced the lead
            (incoming side's, target side's). With it, a ``two_way`` field is decided per
            field, a three-way merge: changed on the incoming side only, it is written;
            unchanged there, it is not; changed on both sides, the later change wins and the
            conflict is logged. Without it (never synced), the record times decide.

    The plan's ``expected`` holds the canonical values the target will read back as after
    the write (None when nothing is written).
    """
    fields = list(fields)
    creating = target_raw is None
    plan = RecordPlan(
        lead_key=incoming.key,
        action=Action.CREATE if creating else Action.UNCHANGED,
        target_id=target_id,
    )
    winners: list[str] = []
    defaults: set[str] = set()
    #: The incoming values read for the fields (a created record's changes are these).
    news: dict[str, Any] = {}
    rule_of = rules.rule
    write_defaults = _write_defaults(target_mapping)
    for name in fields:
        if name == "key":
            rule: Rule = FieldRule.SOURCE_WINS
        else:
            rule = rule_of(name)
            if rule is FieldRule.NONE:
                continue
        # lead_value and is_blank, inline for a plain field and the types a Lead holds most
        new = news[name] = (
            getattr(incoming, name, None) if "." not in name else lead_value(incoming, name)
        )
        kind = type(new)
        if (
            new is None
            or (kind is str and not new.strip())
            or (kind not in _NEVER_BLANK and kind is not str and is_blank(new))
        ):
            # A blank value is never written, but a mapping default is: on create, and on
            # update when the target's field is blank too (DESIGN §6).
            if write_defaults.get(name) is None:
                continue
            if not creating and not _blank_in(target_mapping, name, target_raw):
                continue
            defaults.add(name)
            winners.append(name)
            continue
        if creating or name == "key":
            winners.append(name)
            continue
        old = lead_value(target_current, name) if target_current is not None else None
        new_c, old_c = canonical_value(new), canonical_value(old)
        newer = incoming_newer if field_newer is None else field_newer.get(name, incoming_newer)
        wins = _wins(rule, from_side, new, old, incoming_newer=newer)
        both_changed = target_changed
        if rule is FieldRule.TWO_WAY and baseline is not None and target_values is not None:
            base_in, base_target = baseline
            changed_here = _changed(incoming_values, base_in, name)
            changed_there = _changed(target_values, base_target, name)
            both_changed = changed_here and changed_there
            if not changed_here:
                wins = False
            elif not changed_there:
                wins = True
        if wins:
            winners.append(name)
        if both_changed and new_c != old_c and not is_blank(old):
            source_value, destination_value = (
                (new_c, old_c) if from_side is Side.SOURCE else (old_c, new_c)
            )
            plan.conflicts.append(
                Conflict(
                    field=name,
                    source_value=source_value,
                    destination_value=destination_value,
                    rule=str(rule),
                    winner=from_side if wins else from_side.other,
                )
            )
    if "stage" in winners:
        # A stage never travels without the reason it was set for (a rejection's, a win's or a
        # loss's reason).
        considered = set(fields)
        winners.extend(
            reason
            for reason in STAGE_REASONS
            if reason in considered
            and reason not in winners
            and not is_blank(lead_value(incoming, reason))
        )
    if not winners:
        return plan
    # A value the target's mapping cannot write is a problem of that field alone: the caller
    # decides by the field's on_invalid whether the record goes without it.
    written, problems = target_mapping.to_system_partial(incoming, fields=winners)
    if problems:
        plan.problems.extend(problems)
        failed = {problem.field for problem in problems}
        winners = [name for name in winners if name not in failed]
    if creating:
        plan.fields = written
        plan.expected = target_mapping.to_lead(written).values
        plain = _PLAIN_TYPES
        changes = []
        for name in winners:
            new = news[name] if name in news else lead_value(incoming, name)
            if new is not None and type(new) not in plain:
                new = canonical_value(new)
            changes.append(FieldChange(name, None, new))
        plan.changes = changes
        return plan
    raw = dict(target_raw or {})
    before = target_values if target_values is not None else target_mapping.to_lead(raw).values
    after = target_mapping.to_lead({**raw, **written}).values
    kept_systems: set[str] = set()
    for name in winners:
        old_value = draft_value(before, name)
        fmap = target_mapping.fields[name]
        if name in defaults:
            # A default reads back as blank: whether it changes anything is a matter of the
            # system field, which is blank now (else it would not be a winner).
            kept_systems.update(fmap.primary.written_fields() & written.keys())
            plan.changes.append(FieldChange(name, None, written.get(fmap.primary.system_field)))
            continue
        if canonical_value(draft_value(after, name)) == canonical_value(old_value):
            continue
        kept_systems.update(fmap.primary.written_fields() & written.keys())
        plan.changes.append(
            FieldChange(
                name, canonical_value(old_value), canonical_value(lead_value(incoming, name))
            )
        )
    if [change.field for change in plan.changes] == ["key"]:
        # The lead key rides along with real changes; stamping it alone is not worth a write.
        plan.changes, kept_systems = [], set()
    plan.fields = {k: v for k, v in written.items() if k in kept_systems}
    if plan.fields:
        plan.action = Action.UPDATE
        if kept_systems == written.keys():
            plan.expected = after
        else:
            plan.expected = target_mapping.to_lead({**raw, **plan.fields}).values
    else:
        plan.changes = []
    changed = {change.field for change in plan.changes}
    # A value that won but changes nothing once written was no conflict after all.
    plan.conflicts = [c for c in plan.conflicts if c.winner is not from_side or c.field in changed]
    return plan
