"""Scoring and routing rules name canonical values (DESIGN §4, §12).

A rule that tests a standard-list field (``industry``, ``salutation``, ``country``) or an enum
field (``stage``, ``tier``, ``channel``, ``rejection_reason``) must name the field's canonical
values: a Lead holds ``software``, never ``Computer Software`` or ``Technology``, so a rule
naming a system's own spelling would silently never match. :func:`rule_value_problems` finds
every such value (``leadrelay check`` refuses them, exit 1) with the nearest canonical values.
Case is ignored, as the rules compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from rapidfuzz import fuzz, process

from leadrelay.handoff.routing import RoutingConfig, SegmentRule, TerritoryRule
from leadrelay.handoff.scoring import ScoringConfig
from leadrelay.model import (
    Channel,
    Industry,
    OutcomeReason,
    RejectionReason,
    Salutation,
    Stage,
    Tier,
)
from leadrelay.taxonomy import fold, standard_list
from leadrelay.taxonomy.geo import country_code

__all__ = ["ENUM_RULE_FIELDS", "RuleValueProblem", "canonical_values", "rule_value_problems"]

#: Lead fields whose rule values must be canonical, and the enum holding them (``country``:
#: ISO 3166-1 alpha-2 codes, not an enum).
ENUM_RULE_FIELDS: dict[str, type[Enum] | None] = {
    "industry": Industry,
    "salutation": Salutation,
    "country": None,
    "stage": Stage,
    "tier": Tier,
    "channel": Channel,
    "rejection_reason": RejectionReason,
    "outcome_reason": OutcomeReason,
}


@dataclass(frozen=True)
class RuleValueProblem:
    """A rule value outside its field's canonical values.

    Attributes:
        rule: where the value is (``scoring rule 'target industry' (list target_industries)``).
        field: the Lead field the rule tests.
        value: the value as the rule names it.
        nearest: the closest canonical values, best first.
    """

    rule: str
    field: str
    value: str
    nearest: tuple[str, ...]

    def __str__(self) -> str:
        hint = f"; nearest: {', '.join(self.nearest)}" if self.nearest else ""
        return f"{self.rule}: {self.value!r} is not a canonical {self.field} value{hint}"


def canonical_values(field: str) -> tuple[str, ...]:
    """The canonical values of a field of :data:`ENUM_RULE_FIELDS`."""
    enum = ENUM_RULE_FIELDS[field]
    if enum is None:
        return ()
    return tuple(str(member.value) for member in enum)


def _is_canonical(field: str, value: str) -> bool:
    if field == "country":
        return len(value.strip()) == 2 and country_code(value) == value.strip().upper()
    return fold(value) in {fold(v) for v in canonical_values(field)}


def _nearest(field: str, value: str) -> tuple[str, ...]:
    if field in ("industry", "salutation"):
        return tuple(standard_list(field).nearest(value))
    if field == "country":
        code = country_code(value)
        return (code,) if code else ()
    found = process.extract(fold(value), list(canonical_values(field)), scorer=fuzz.WRatio, limit=3)
    return tuple(str(text) for text, _score, _index in found)


def _check(field: str, values: Iterable[str], rule: str) -> list[RuleValueProblem]:
    return [
        RuleValueProblem(rule, field, value, _nearest(field, value))
        for value in values
        if not _is_canonical(field, value)
    ]


def rule_value_problems(scoring: ScoringConfig, routing: RoutingConfig) -> list[RuleValueProblem]:
    """Every value a scoring or routing rule names outside its field's canonical values."""
    problems: list[RuleValueProblem] = []
    for rule in scoring.rules:
        field = rule.when.field
        if field not in ENUM_RULE_FIELDS:
            continue
        assert field is not None
        where = f"scoring rule {rule.name!r}"
        values: Sequence[str] = ()
        if rule.when.in_ is not None:
            values = rule.when.in_
        elif rule.when.in_list is not None:
            where += f" (list {rule.when.in_list})"
            values = scoring.lists.get(rule.when.in_list, [])
        problems.extend(_check(field, values, where))
    for route in routing.rules:
        if isinstance(route, SegmentRule):
            problems.extend(_check("industry", route.industries, f"routing segment {route.name!r}"))
        elif isinstance(route, TerritoryRule):
            problems.extend(_check("country", route.countries, f"routing territory {route.name!r}"))
    return problems
