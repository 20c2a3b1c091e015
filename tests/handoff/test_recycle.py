from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from leadrelay.handoff.recycle import (
    MERGED_INTO_KEY,
    REENTRY_KEY,
    PlayKind,
    RecycleConfig,
    RecyclePlay,
    RecycleProblem,
    apply_play,
    due_for_reentry,
    is_rejected,
    plan_recycle,
    reenter,
)
from leadrelay.handoff.routing import DomainAccounts, OwnerInfo, Router, RoutingConfig
from leadrelay.model import Lead, OutcomeReason, Owner, RejectionReason, Stage

NOW = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)
AM = OwnerInfo("u7", "am@acme.io", "Ann Manager")


def rejected(reason: RejectionReason | None, **fields: Any) -> Lead:
    return Lead(
        key="ld_1",
        email="bob@customer.io",
        stage=fields.pop("stage", Stage.DISQUALIFIED),
        rejection_reason=reason,
        **fields,
    )


def account_router(accounts: dict[str, str] | None = None) -> Router:
    return Router(RoutingConfig(), [AM], DomainAccounts(accounts or {"customer.io": "u7"}))


@pytest.mark.parametrize(
    ("reason", "kind", "days"),
    [
        (RejectionReason.TIMING, PlayKind.NURTURE, 90),
        (RejectionReason.NO_RESPONSE, PlayKind.NURTURE, 30),
        (RejectionReason.NO_NEED, PlayKind.NURTURE, 180),
        (RejectionReason.OTHER, PlayKind.NURTURE, 90),
        (RejectionReason.BAD_FIT, PlayKind.DISQUALIFY, None),
        (RejectionReason.WRONG_ROLE, PlayKind.DISQUALIFY, None),
        (RejectionReason.INVALID_CONTACT, PlayKind.DISQUALIFY, None),
        (RejectionReason.COMPETITOR, PlayKind.DISQUALIFY, None),
        (RejectionReason.DUPLICATE, PlayKind.MERGE_DUPLICATE, None),
        (RejectionReason.EXISTING_CUSTOMER, PlayKind.ROUTE_TO_ACCOUNT_OWNER, None),
    ],
)
def test_sop_default_plays(reason: RejectionReason, kind: PlayKind, days: int | None) -> None:
    play = RecycleConfig().play_for(reason)
    assert (play.play, play.days) == (kind, days)


def test_every_reason_has_a_play() -> None:
    config = RecycleConfig()
    assert {reason.value for reason in RejectionReason} == set(RecycleConfig.model_fields)
    assert all(config.play_for(reason) for reason in RejectionReason)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"timing": {"play": "nurture"}}, "a nurture play needs days"),
        ({"bad_fit": {"play": "disqualify", "days": 3}}, "days applies to nurture only"),
        ({"timing": {"play": "ignore"}}, "Input should be 'nurture'"),
    ],
)
def test_bad_config_is_explained(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RecycleConfig.model_validate(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [({"timeing": {}}, "timeing"), ({"timing": {"play": "nurture", "days": 5, "when": 1}}, "when")],
)
def test_unknown_key_is_named(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as info:
        RecycleConfig.model_validate(data)
    assert any(e["type"] == "extra_forbidden" and e["loc"][-1] == key for e in info.value.errors())


def test_config_overrides_one_reason() -> None:
    config = RecycleConfig.model_validate({"timing": {"play": "nurture", "days": 45}})
    assert config.timing.days == 45
    assert config.no_response.days == 30


@pytest.mark.parametrize("stage", [Stage.DISQUALIFIED, Stage.LOST])
def test_rejected_without_reason_is_reported(stage: Stage) -> None:
    result = plan_recycle(rejected(None, stage=stage), NOW)
    assert result == RecycleProblem("ld_1", f"rejected (stage {stage.value}) without a reason")
    assert str(result) == f"lead ld_1: rejected (stage {stage.value}) without a reason"


@pytest.mark.parametrize(
    ("stage", "reason", "expected"),
    [
        (Stage.LEAD, None, False),
        (Stage.MQL, None, False),
        (Stage.SQL, None, False),
        (Stage.WON, None, False),
        (Stage.RECYCLED, RejectionReason.TIMING, False),
        (Stage.DISQUALIFIED, None, True),
        (Stage.LOST, RejectionReason.TIMING, True),
        (Stage.SAL, RejectionReason.BAD_FIT, True),
    ],
)
def test_is_rejected(stage: Stage, reason: RejectionReason | None, expected: bool) -> None:
    assert is_rejected(rejected(reason, stage=stage)) is expected


def test_lead_not_rejected_has_no_play() -> None:
    assert plan_recycle(rejected(None, stage=Stage.MQL), NOW) is None


def test_nurture_plan_and_apply() -> None:
    lead = rejected(RejectionReason.TIMING, stage=Stage.LOST)
    play = plan_recycle(lead, NOW)
    assert isinstance(play, RecyclePlay)
    assert play.reentry_at == NOW + timedelta(days=90)
    assert play.description == "rejected as timing -> nurture, re-entry 2024-08-08 (90 d)"
    apply_play(lead, play, NOW)
    assert lead.stage is Stage.RECYCLED
    assert lead.custom[REENTRY_KEY] == "2024-08-08T09:00:00+00:00"
    assert lead.rejection_reason is RejectionReason.TIMING
    assert plan_recycle(lead, NOW) is None


@pytest.mark.parametrize(
    ("reason", "kind"),
    [(OutcomeReason.COMPETITOR, PlayKind.DISQUALIFY), (OutcomeReason.TIMING, PlayKind.NURTURE)],
)
def test_a_lost_deal_stays_lost_whatever_its_play(reason: OutcomeReason, kind: PlayKind) -> None:
    lead = Lead(key="ld_1", email="bob@customer.io", stage=Stage.LOST, outcome_reason=reason)
    play = plan_recycle(lead, NOW)
    assert isinstance(play, RecyclePlay) and play.kind is kind
    apply_play(lead, play, NOW)
    assert lead.stage is Stage.LOST
    if kind is PlayKind.NURTURE:  # it comes back into the funnel on its date
        assert due_for_reentry(lead, NOW + timedelta(days=90))
        reenter(lead)
        assert lead.stage is Stage.LEAD


def test_reentry_when_due() -> None:
    lead = rejected(RejectionReason.NO_RESPONSE)
    play = plan_recycle(lead, NOW)
    assert isinstance(play, RecyclePlay)
    apply_play(lead, play, NOW)
    assert due_for_reentry(lead, NOW + timedelta(days=29)) is False
    assert due_for_reentry(lead, NOW + timedelta(days=30)) is True
    reenter(lead)
    assert (lead.stage, lead.rejection_reason) == (Stage.LEAD, None)
    assert REENTRY_KEY not in lead.custom


def test_reenter_refuses_other_stages() -> None:
    with pytest.raises(ValueError, match="ld_1 is disqualified, not recycled"):
        reenter(rejected(RejectionReason.BAD_FIT))


def test_disqualify_plan_and_apply() -> None:
    lead = rejected(RejectionReason.WRONG_ROLE, stage=Stage.SAL)
    play = plan_recycle(lead, NOW)
    assert isinstance(play, RecyclePlay)
    assert play.description == "rejected as wrong_role -> disqualify"
    apply_play(lead, play, NOW)
    assert lead.stage is Stage.DISQUALIFIED


def test_duplicate_names_survivor() -> None:
    lead = rejected(RejectionReason.DUPLICATE)
    play = plan_recycle(lead, NOW, duplicate_of="ld_0")
    assert isinstance(play, RecyclePlay)
    assert (play.kind, play.survivor) == (PlayKind.MERGE_DUPLICATE, "ld_0")
    assert play.description == "rejected as duplicate -> merge into ld_0"
    apply_play(lead, play, NOW)
    assert lead.custom[MERGED_INTO_KEY] == "ld_0"


@pytest.mark.parametrize("survivor", [None, "ld_1"])
def test_duplicate_without_survivor_is_reported(survivor: str | None) -> None:
    result = plan_recycle(rejected(RejectionReason.DUPLICATE), NOW, duplicate_of=survivor)
    assert result == RecycleProblem(
        "ld_1", "rejected as duplicate, but no surviving record was found to merge"
    )


def test_existing_customer_goes_to_account_owner() -> None:
    lead = rejected(RejectionReason.EXISTING_CUSTOMER, owner=Owner(id="u1"))
    play = plan_recycle(lead, NOW, router=account_router())
    assert isinstance(play, RecyclePlay)
    assert play.description == (
        "rejected as existing_customer -> existing account customer.io -> owner Ann Manager"
    )
    apply_play(lead, play, NOW)
    assert lead.owner == AM.owner()
    assert lead.assigned_at == NOW


def test_existing_customer_without_account_is_reported() -> None:
    lead = rejected(RejectionReason.EXISTING_CUSTOMER)
    result = plan_recycle(lead, NOW, router=account_router({"other.io": "u7"}))
    assert result == RecycleProblem(
        "ld_1",
        "rejected as existing_customer, but no available account owner was found (customer.io)",
    )


def test_existing_customer_needs_router() -> None:
    with pytest.raises(ValueError, match="needs a router"):
        plan_recycle(rejected(RejectionReason.EXISTING_CUSTOMER), NOW)


def test_play_for_another_lead_is_refused() -> None:
    play = plan_recycle(rejected(RejectionReason.BAD_FIT), NOW)
    assert isinstance(play, RecyclePlay)
    other = Lead(key="ld_2")
    with pytest.raises(ValueError, match="play for lead ld_1 applied to lead ld_2"):
        apply_play(other, play, NOW)
