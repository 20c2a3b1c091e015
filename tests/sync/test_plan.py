"""The plan: field diff in the target's own terms, under the flow's rules."""

from __future__ import annotations

from typing import Any

import pytest

from leadrelay.config import FieldRule
from leadrelay.mappings.engine import Mapping, load_mapping
from leadrelay.model import Lead, Stage
from leadrelay.sync.plan import Action, plan_record, writable_fields
from leadrelay.sync.rules import FieldRules, Side

SF = load_mapping("salesforce")


def plan(
    incoming: Lead,
    target_raw: dict[str, Any] | None,
    *,
    from_side: Side = Side.SOURCE,
    rules: dict[str, FieldRule] | None = None,
    newer: bool = True,
    mapping: Mapping = SF,
) -> Any:
    current = None
    if target_raw is not None:
        current = Lead.model_validate({**mapping.to_lead(target_raw).values, "key": incoming.key})
    return plan_record(
        incoming=incoming,
        from_side=from_side,
        rules=FieldRules(rules or {}),
        target_mapping=mapping,
        target_raw=target_raw,
        target_id=None if target_raw is None else "00Q1",
        target_current=current,
        fields=writable_fields(mapping),
        incoming_newer=newer,
        target_changed=True,
    )


def lead(**values: Any) -> Lead:
    return Lead(email="ana@acme.io", last_name="Silva", company="Acme", **values)


SF_RECORD = {
    "Email": "ana@acme.io",
    "LastName": "Silva",
    "Company": "Acme",
    "Status": "Open - Not Contacted",
}


def test_a_new_record_gets_every_non_blank_mapped_value() -> None:
    result = plan(lead(utm_source="google", stage=Stage.MQL), None)
    assert result.action is Action.CREATE
    assert result.fields["UTM_Source__c"] == "google"
    assert result.fields["Status"] == "Open - Not Contacted"
    assert "Phone" not in result.fields


def test_a_lossy_stage_that_reads_back_the_same_is_no_change() -> None:
    result = plan(lead(stage=Stage.MQL), SF_RECORD)
    assert result.action is Action.UNCHANGED
    assert result.fields == {}


def test_a_change_lists_the_field_old_and_new() -> None:
    result = plan(lead(utm_source="bing"), {**SF_RECORD, "UTM_Source__c": "google"})
    assert result.action is Action.UPDATE
    assert result.fields == {"UTM_Source__c": "bing", "LeadRelay_Key__c": result.lead_key}
    assert ("utm_source", "google", "bing") in [(c.field, c.old, c.new) for c in result.changes]


def test_source_wins_fields_do_not_flow_back_from_the_destination() -> None:
    hubspot = load_mapping("hubspot")
    result = plan(
        lead(utm_source="typed-by-sales"),
        {"email": "ana@acme.io", "lastname": "Silva", "company": "Acme", "utm_source": "google"},
        from_side=Side.DESTINATION,
        mapping=hubspot,
    )
    assert result.action is Action.UNCHANGED
    [conflict] = result.conflicts
    assert (conflict.field, conflict.winner) == ("utm_source", Side.SOURCE)


def test_blank_incoming_values_never_clear_the_target() -> None:
    result = plan(lead(), {**SF_RECORD, "Phone": "+14155550100"})
    assert "Phone" not in result.fields


@pytest.mark.parametrize(("newer", "written"), [(True, True), (False, False)])
def test_two_way_fields_follow_the_latest_change(newer: bool, written: bool) -> None:
    result = plan(lead(phone="+14155550111"), {**SF_RECORD, "Phone": "+14155550100"}, newer=newer)
    assert ("Phone" in result.fields) is written


@pytest.mark.parametrize(("current", "written"), [(None, True), ("Bad Fit", False)])
def test_prefer_destination_unless_blank(current: str | None, written: bool) -> None:
    record = dict(SF_RECORD)
    if current:
        record["Rejection_Reason__c"] = current
    result = plan(
        lead(rejection_reason="timing"),
        record,
        rules={"rejection_reason": FieldRule.PREFER_DESTINATION_UNLESS_BLANK},
    )
    assert ("Rejection_Reason__c" in result.fields) is written


def test_sales_stage_is_not_overwritten_by_marketing() -> None:
    result = plan(lead(stage=Stage.MQL), {**SF_RECORD, "Status": "Working - Contacted"})
    assert "Status" not in result.fields
