"""Rejection -> recycle: every rejection reason leads to a play (DESIGN §12).

A lead that sales writes back as rejected (stage ``disqualified`` or ``lost``, or a rejection
reason on a lead still in the funnel) must carry a ``rejection_reason``; one without is reported
as a :class:`RecycleProblem`, never guessed. A lost deal's ``outcome_reason`` stands for it
(:data:`LOSS_REJECTIONS`: a deal lost on timing is nurtured like a lead rejected on timing).
Each reason maps to a play by :class:`RecycleConfig` (``[recycle]``):

* ``nurture`` — back to marketing: stage ``recycled``, re-entry after ``days`` (the date is kept
  in ``Lead.custom["reentry_at"]`` as ISO 8601 text; :func:`reenter` brings the lead back);
* ``disqualify`` — stage ``disqualified``;
* ``merge_duplicate`` — a merge instruction naming the surviving record that dedupe found;
* ``route_to_account_owner`` — the owner of the existing account (the router's account rule).

Call :func:`plan_recycle` when a write-back brings a rejection, then :func:`apply_play`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leadrelay.handoff.routing import Assignment, Router, apply_assignment
from leadrelay.handoff.signals import parse_time
from leadrelay.model import Lead, OutcomeReason, RejectionReason, Stage

#: ``Lead.custom`` key of a nurtured lead's re-entry date (ISO 8601).
REENTRY_KEY = "reentry_at"
#: ``Lead.custom`` key naming the record a duplicate is merged into.
MERGED_INTO_KEY = "merged_into"

#: Stages that mean sales rejected or closed the lead without a win.
REJECTED_STAGES: frozenset[Stage] = frozenset({Stage.DISQUALIFIED, Stage.LOST})

#: The rejection a lost deal's reason plays as, when the lead carries no rejection reason.
LOSS_REJECTIONS: dict[OutcomeReason, RejectionReason] = {
    OutcomeReason.COMPETITOR: RejectionReason.COMPETITOR,
    OutcomeReason.TIMING: RejectionReason.TIMING,
    OutcomeReason.NO_BUDGET: RejectionReason.TIMING,
    OutcomeReason.NO_DECISION: RejectionReason.NO_NEED,
    OutcomeReason.PRICE: RejectionReason.OTHER,
    OutcomeReason.PRODUCT_GAP: RejectionReason.OTHER,
    OutcomeReason.PRODUCT_FIT: RejectionReason.OTHER,
    OutcomeReason.RELATIONSHIP: RejectionReason.OTHER,
    OutcomeReason.OTHER: RejectionReason.OTHER,
}


class PlayKind(StrEnum):
    """What happens to a rejected lead."""

    NURTURE = "nurture"
    DISQUALIFY = "disqualify"
    MERGE_DUPLICATE = "merge_duplicate"
    ROUTE_TO_ACCOUNT_OWNER = "route_to_account_owner"


class Play(BaseModel):
    """The play of one rejection reason; ``days`` (re-entry delay) only and always for nurture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    play: PlayKind
    days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _days(self) -> Self:
        if self.play is PlayKind.NURTURE and self.days is None:
            raise ValueError("a nurture play needs days (the re-entry delay)")
        if self.play is not PlayKind.NURTURE and self.days is not None:
            raise ValueError(f"days applies to nurture only, not {self.play.value}")
        return self


def _nurture(days: int) -> Play:
    return Play(play=PlayKind.NURTURE, days=days)


_DISQUALIFY = Play(play=PlayKind.DISQUALIFY)


class RecycleConfig(BaseModel):
    """The ``[recycle]`` section: one play per rejection reason (SOP defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bad_fit: Play = _DISQUALIFY
    wrong_role: Play = _DISQUALIFY
    no_need: Play = Field(default_factory=lambda: _nurture(180))
    timing: Play = Field(default_factory=lambda: _nurture(90))
    no_response: Play = Field(default_factory=lambda: _nurture(30))
    competitor: Play = _DISQUALIFY
    invalid_contact: Play = _DISQUALIFY
    duplicate: Play = Play(play=PlayKind.MERGE_DUPLICATE)
    existing_customer: Play = Play(play=PlayKind.ROUTE_TO_ACCOUNT_OWNER)
    other: Play = Field(default_factory=lambda: _nurture(90))

    def play_for(self, reason: RejectionReason) -> Play:
        """The play configured for ``reason``."""
        play: Play = getattr(self, reason.value)
        return play


@dataclass(frozen=True)
class RecyclePlay:
    """What to do with one rejected lead.

    Attributes:
        kind: the play.
        lead_key: the lead.
        reason: its rejection reason.
        description: one line for logs and reports.
        reentry_at: nurture: when the lead re-enters the funnel.
        survivor: merge_duplicate: the key of the record the lead is merged into.
        assignment: route_to_account_owner: the account owner's assignment.
    """

    kind: PlayKind
    lead_key: str
    reason: RejectionReason
    description: str
    reentry_at: datetime | None = None
    survivor: str | None = None
    assignment: Assignment | None = None


@dataclass(frozen=True)
class RecycleProblem:
    """A rejected lead no play can be planned for, for the reports."""

    lead_key: str
    message: str

    def __str__(self) -> str:
        return f"lead {self.lead_key}: {self.message}"


def is_rejected(lead: Lead) -> bool:
    """Whether the lead is rejected: a rejected stage, or a reason on a lead still in play."""
    if lead.stage in REJECTED_STAGES:
        return True
    return lead.rejection_reason is not None and lead.stage not in (Stage.RECYCLED, Stage.WON)


def plan_recycle(
    lead: Lead,
    now: datetime,
    config: RecycleConfig | None = None,
    *,
    router: Router | None = None,
    duplicate_of: str | None = None,
) -> RecyclePlay | RecycleProblem | None:
    """The play for a rejected lead, a problem to report, or None when it is not rejected.

    Args:
        lead: the lead as sales wrote it back.
        now: the current time (timezone-aware).
        config: the plays (SOP defaults when None).
        router: for ``route_to_account_owner``: its account rule finds the owner.
        duplicate_of: for ``merge_duplicate``: the key of the record dedupe matched.
    """
    if now.tzinfo is None:
        raise ValueError("plan_recycle needs a timezone-aware 'now'")
    if not is_rejected(lead):
        return None
    reason = lead.rejection_reason
    what = f"rejected as {reason.value}" if reason is not None else ""
    if reason is None and lead.stage is Stage.LOST and lead.outcome_reason is not None:
        reason = LOSS_REJECTIONS[lead.outcome_reason]
        what = f"lost on {lead.outcome_reason.value} (played as {reason.value})"
    if reason is None:
        return RecycleProblem(lead.key, f"rejected (stage {lead.stage.value}) without a reason")
    play = (config or RecycleConfig()).play_for(reason)
    if play.play is PlayKind.NURTURE:
        assert play.days is not None
        reentry = now + timedelta(days=play.days)
        return RecyclePlay(
            play.play,
            lead.key,
            reason,
            f"{what} -> nurture, re-entry {reentry.date().isoformat()} ({play.days} d)",
            reentry_at=reentry,
        )
    if play.play is PlayKind.DISQUALIFY:
        return RecyclePlay(play.play, lead.key, reason, f"{what} -> disqualify")
    if play.play is PlayKind.MERGE_DUPLICATE:
        if duplicate_of is None or duplicate_of == lead.key:
            return RecycleProblem(lead.key, f"{what}, but no surviving record was found to merge")
        return RecyclePlay(
            play.play,
            lead.key,
            reason,
            f"{what} -> merge into {duplicate_of}",
            survivor=duplicate_of,
        )
    if router is None:
        raise ValueError(f"lead {lead.key}: {what} needs a router to find the account owner")
    assignment = router.account_assignment(lead, now)
    if assignment is None:
        domain = lead.company_domain or "no company domain"
        return RecycleProblem(
            lead.key, f"{what}, but no available account owner was found ({domain})"
        )
    return RecyclePlay(
        play.play,
        lead.key,
        reason,
        f"{what} -> {assignment.reason}",
        assignment=assignment,
    )


def apply_play(lead: Lead, play: RecyclePlay, now: datetime) -> None:
    """Carry a play out on the lead (the CRM-side merge is the connector's job)."""
    if play.lead_key != lead.key:
        raise ValueError(f"play for lead {play.lead_key} applied to lead {lead.key}")
    # A lost deal (a loss reason, no rejection) stays lost: sales' outcome reaches marketing as
    # it is (HubSpot cannot move an opportunity back, and reads a disqualified one as lost), and
    # a nurture play only dates its re-entry (:func:`due_for_reentry`).
    lost_deal = lead.stage is Stage.LOST and lead.rejection_reason is None
    if play.kind is PlayKind.NURTURE:
        assert play.reentry_at is not None
        if not lost_deal:
            lead.stage = Stage.RECYCLED
        lead.custom = {**lead.custom, REENTRY_KEY: play.reentry_at.isoformat()}
    elif play.kind is PlayKind.DISQUALIFY:
        if not lost_deal:
            lead.stage = Stage.DISQUALIFIED
    elif play.kind is PlayKind.MERGE_DUPLICATE:
        lead.custom = {**lead.custom, MERGED_INTO_KEY: play.survivor}
    elif play.assignment is not None:
        apply_assignment(lead, play.assignment, now)


def reentry_at(lead: Lead) -> datetime | None:
    """When a nurtured lead re-enters the funnel, or None."""
    return parse_time(lead.custom.get(REENTRY_KEY), f"lead {lead.key} custom.{REENTRY_KEY}")


#: Stages a nurture play leaves a lead in until its re-entry date (a lost deal stays lost).
_NURTURED = frozenset({Stage.RECYCLED, Stage.LOST})


def due_for_reentry(lead: Lead, now: datetime) -> bool:
    """Whether a recycled lead's (or a nurtured lost deal's) re-entry date has come."""
    when = reentry_at(lead)
    return lead.stage in _NURTURED and when is not None and when <= now


def reenter(lead: Lead) -> None:
    """Bring a recycled lead (or a nurtured lost deal) back into the funnel as a fresh
    ``lead``, ready to be re-scored."""
    if lead.stage not in _NURTURED or reentry_at(lead) is None:
        raise ValueError(f"lead {lead.key} is {lead.stage.value}, not recycled")
    lead.stage = Stage.LEAD
    lead.rejection_reason = None
    lead.custom = {k: v for k, v in lead.custom.items() if k != REENTRY_KEY}
