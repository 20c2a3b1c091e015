"""Field rules: the DESIGN §7.3 defaults, per-flow overrides and the stage handoff."""

from __future__ import annotations

import pytest

from leadrelay.config import FieldRule
from leadrelay.model import Stage
from leadrelay.sync.rules import HANDOFF, FieldRules, Side, default_rule, stage_side


@pytest.mark.parametrize(
    ("field", "rule"),
    [
        ("utm_source", FieldRule.SOURCE_WINS),
        ("click_ids.gclid", FieldRule.SOURCE_WINS),
        ("score", FieldRule.SOURCE_WINS),
        ("email_opt_in", FieldRule.SOURCE_WINS),
        ("owner", FieldRule.DESTINATION_WINS),
        ("rejection_reason", FieldRule.DESTINATION_WINS),
        ("first_action_at", FieldRule.DESTINATION_WINS),
        ("phone", FieldRule.TWO_WAY),
        ("last_name", FieldRule.TWO_WAY),
        ("custom.segment", FieldRule.TWO_WAY),
        ("key", FieldRule.NONE),
        ("stage", HANDOFF),
    ],
)
def test_defaults_follow_design(field: str, rule: object) -> None:
    assert default_rule(field) == rule


def test_a_flow_override_replaces_the_default_and_covers_keyed_fields() -> None:
    rules = FieldRules({"stage": FieldRule.SOURCE_WINS, "click_ids": FieldRule.NONE})
    assert rules.rule("stage") is FieldRule.SOURCE_WINS
    assert rules.rule("click_ids.gclid") is FieldRule.NONE
    assert rules.rule("phone") is FieldRule.TWO_WAY


@pytest.mark.parametrize(
    ("source", "destination", "source_newer", "winner"),
    [
        (Stage.MQL, None, True, Side.SOURCE),
        (Stage.MQL, Stage.LEAD, False, Side.SOURCE),
        (Stage.MQL, Stage.SQL, True, Side.DESTINATION),
        (Stage.MQL, Stage.DISQUALIFIED, True, Side.DESTINATION),
        (Stage.SAL, Stage.RECYCLED, False, Side.DESTINATION),
        (Stage.MQL, Stage.RECYCLED, True, Side.SOURCE),
        (Stage.SQL, Stage.SQL, True, None),
    ],
)
def test_stage_ownership_moves_to_sales_at_sal(
    source: Stage, destination: Stage | None, source_newer: bool, winner: Side | None
) -> None:
    assert stage_side(source, destination, source_newer=source_newer) is winner
