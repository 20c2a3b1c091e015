"""Field rules: who wins a canonical field on a flow (DESIGN §7.3), and their defaults.

A flow has a *source* (the marketing system, e.g. HubSpot) and a *destination* (the CRM, e.g.
Salesforce). Each canonical field has a :class:`~leadrelay.config.FieldRule`; the defaults are:

- attribution, score and consent: ``source_wins`` (marketing → sales);
- owner, rejection reason, first action and the other SLA times: ``destination_wins``
  (sales → marketing);
- contact details and custom fields: ``two_way`` (the latest change wins);
- bookkeeping (key, external ids, created/updated times, test flag): ``none``;
- ``stage``: the *handoff* rule: marketing owns the stages before SAL, sales owns SAL and what
  follows, so "stage after SAL flows sales → marketing" (see :func:`stage_side`).

A flow's ``field_rules`` override any of these, stage included (then the plain rule applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from leadrelay.config import FieldRule
from leadrelay.model import Stage

__all__ = [
    "ATTRIBUTION_FIELDS",
    "BOOKKEEPING_FIELDS",
    "CONSENT_FIELDS",
    "CONTACT_FIELDS",
    "DEFAULT_RULES",
    "HANDOFF",
    "MARKETING_STAGES",
    "SALES_FIELDS",
    "SALES_STAGES",
    "SCORE_FIELDS",
    "FieldRules",
    "Rule",
    "Side",
    "default_rule",
    "stage_side",
]

#: The stage's default rule: ownership of the stage moves from marketing to sales at SAL.
HANDOFF: Final = "handoff"

#: A field's rule: one of the config's :class:`FieldRule` values, or :data:`HANDOFF` (stage).
Rule = FieldRule | Literal["handoff"]


class Side(StrEnum):
    """One end of a flow."""

    SOURCE = "source"
    DESTINATION = "destination"

    @property
    def other(self) -> Side:
        """The opposite end."""
        return Side.DESTINATION if self is Side.SOURCE else Side.SOURCE


ATTRIBUTION_FIELDS: Final = frozenset(
    {
        "channel",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
        "click_ids",
        "landing_page",
        "referrer",
        "form_id",
        "ad_account",
        "campaign_id",
        "ad_id",
        "first_touch",
    }
)
SCORE_FIELDS: Final = frozenset(
    {"score", "score_breakdown", "qualification_reason", "intent_signals", "tier"}
)
CONSENT_FIELDS: Final = frozenset({"email_opt_in", "consent_text", "consent_at"})
SALES_FIELDS: Final = frozenset(
    {
        "owner",
        "queue",
        "rejection_reason",
        "opportunity_id",
        "opportunity_stage",
        "amount",
        "currency",
        "closed_at",
        "outcome_reason",
        "assigned_at",
        "first_action_at",
        "accepted_at",
        "sla_due_at",
    }
)
CONTACT_FIELDS: Final = frozenset(
    {
        "email",
        "phone",
        "first_name",
        "last_name",
        "job_title",
        "company",
        "company_domain",
        "website",
        "industry",
        "employees",
        "annual_revenue",
        "country",
        "region",
        "city",
        "postal_code",
    }
)
BOOKKEEPING_FIELDS: Final = frozenset(
    {"key", "external_ids", "created_at", "updated_at", "is_test"}
)

#: Stages sales sets: from SAL on, the CRM's stage is the truth.
SALES_STAGES: Final = frozenset(
    {Stage.SAL, Stage.SQL, Stage.OPPORTUNITY, Stage.WON, Stage.LOST, Stage.DISQUALIFIED}
)
#: Stages marketing sets (recycled is sales handing the lead back to marketing).
MARKETING_STAGES: Final = frozenset({Stage.LEAD, Stage.MQL, Stage.RECYCLED})


def _defaults() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for name in ATTRIBUTION_FIELDS | SCORE_FIELDS | CONSENT_FIELDS:
        rules[name] = FieldRule.SOURCE_WINS
    for name in SALES_FIELDS:
        rules[name] = FieldRule.DESTINATION_WINS
    for name in CONTACT_FIELDS:
        rules[name] = FieldRule.TWO_WAY
    for name in BOOKKEEPING_FIELDS:
        rules[name] = FieldRule.NONE
    rules["stage"] = HANDOFF
    return rules


#: The default rule of every Lead field that has one (DESIGN §7.3).
DEFAULT_RULES: Final[Mapping[str, Rule]] = _defaults()


def default_rule(field: str) -> Rule:
    """The default rule of a canonical field (``custom.NAME``/``click_ids.NAME`` included).

    ``click_ids.NAME`` follows ``click_ids`` (attribution); custom fields and any field without
    a listed default are two-way.
    """
    head = field.partition(".")[0]
    if field in DEFAULT_RULES:
        return DEFAULT_RULES[field]
    if head != field and head in DEFAULT_RULES and head != "custom":
        return DEFAULT_RULES[head]
    return FieldRule.TWO_WAY


def stage_side(
    source_stage: Stage | None,
    destination_stage: Stage | None,
    *,
    source_newer: bool,
) -> Side | None:
    """Which side's stage wins under the handoff rule; None when they agree.

    - a stage sales set (SAL and after) in the destination wins;
    - otherwise a stage only the source has, or any source stage while the destination is
      still before SAL, wins — except that sales' recycle verdict (destination ``recycled``)
      stands until the source changes the lead again (``source_newer``).
    """
    if source_stage == destination_stage:
        return None
    if destination_stage is None:
        return Side.SOURCE
    if source_stage is None:
        return Side.DESTINATION
    if destination_stage in SALES_STAGES:
        return Side.DESTINATION
    if destination_stage is Stage.RECYCLED and not source_newer:
        return Side.DESTINATION
    return Side.SOURCE


@dataclass(frozen=True)
class FieldRules:
    """The resolved rules of one flow: its ``field_rules`` over the defaults."""

    overrides: Mapping[str, FieldRule]

    def rule(self, field: str) -> Rule:
        """The rule of ``field`` on this flow."""
        found = self.overrides.get(field)
        if found is not None:
            return found
        head = field.partition(".")[0]
        if head != field and head in self.overrides and head != "custom":
            return self.overrides[head]
        return default_rule(field)

    def as_dict(self, fields: list[str]) -> dict[str, str]:
        """``{field: rule}`` for ``fields`` (for display)."""
        return {name: str(self.rule(name)) for name in fields}
