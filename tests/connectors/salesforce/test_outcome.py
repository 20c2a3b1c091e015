"""The sales outcome of a converted Lead (issue #13): its Opportunity read with the Lead and
again whenever the Opportunity changes, mapped to the canonical stage and outcome fields; and
no write ever sent to a converted Lead."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from leadrelay.connectors.base import Page, UpsertInput, WriteOutcome
from leadrelay.connectors.customfields import custom_field_specs
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.connectors.salesforce.connector import OPPORTUNITY_FIELDS, split_cursor
from leadrelay.mappings.engine import load_mapping
from leadrelay.model import OutcomeReason
from tests.connectors.salesforce.conftest import admin, patch_record, stats

Make = Callable[..., SalesforceConnector]
WON = {
    "Name": "Acme - 40 seats",
    "StageName": "Closed Won",
    "Amount": 48000,
    "CloseDate": "2026-11-30",
}
OPEN = {
    "Name": "Acme - pilot",
    "StageName": "Prospecting",
    "Amount": 12000,
    "CloseDate": "2027-01-31",
}


def lead(n: int) -> dict[str, Any]:
    return {"Email": f"lead{n}@example.com", "LastName": f"Silva{n}", "Company": f"Acme {n}"}


def create(connector: SalesforceConnector, count: int) -> list[str]:
    results = connector.upsert([UpsertInput(str(n), lead(n)) for n in range(count)])
    assert all(r.ok for r in results), results
    return [str(r.external_id) for r in results]


def convert(env: dict[str, str], lead_id: str, opportunity: dict[str, Any] | None) -> Any:
    body: dict[str, Any] = {"lead_id": lead_id}
    if opportunity is not None:
        body["opportunity"] = opportunity
    return admin(env, "salesforce/convert", body)


def read(connector: SalesforceConnector, cursor: str | None) -> tuple[list[Page], str | None]:
    pages = list(connector.read_changes(cursor))
    return pages, pages[-1].cursor if pages else cursor


def records(pages: list[Page]) -> dict[str, dict[str, Any]]:
    return {str(r["Id"]): r for p in pages for r in p.records}


def patch_opportunity(
    connector: SalesforceConnector, record_id: str, fields: dict[str, Any]
) -> None:
    patch_record(connector, "Opportunity", record_id, fields)


def test_a_converted_lead_is_read_with_its_opportunity(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    row = records(read(connector, None)[0])[lead_id]
    assert (row["IsConverted"], row["ConvertedOpportunityId"]) == (True, ids["opportunity_id"])
    assert row["ConvertedOpportunity.StageName"] == "Prospecting"
    assert (row["ConvertedOpportunity.IsClosed"], row["ConvertedOpportunity.Amount"]) == (
        False,
        12000.0,
    )


def test_a_read_gives_a_converted_lead_once(make_connector: Make, env: dict[str, str]) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    convert(env, lead_id, OPEN)
    ids = [str(r["Id"]) for page in read(connector, None)[0] for r in page.records]
    assert ids == [lead_id]  # by its own row, not again by its Opportunity's


def test_a_lead_without_an_opportunity_reads_its_outcome_fields_blank(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector()
    plain, converted = create(connector, 2)
    convert(env, converted, None)
    rows = records(read(connector, None)[0])
    for record_id in (plain, converted):
        assert all(rows[record_id][name] is None for name in OPPORTUNITY_FIELDS)


@pytest.mark.parametrize(
    ("opportunity", "stage", "reason"),
    [
        (OPEN, "opportunity", None),
        (WON, "won", None),
        ({**WON, "Win_Reason__c": "Product Fit"}, "won", "product_fit"),
        ({**WON, "Win_Reason__c": "Relationship"}, "won", "relationship"),
        # lost, reopened and won: the win reason is read
        ({**WON, "Win_Reason__c": "Price", "Loss_Reason__c": "Timing"}, "won", "price"),
        (
            {**OPEN, "StageName": "Closed Lost", "Loss_Reason__c": "Competitor"},
            "lost",
            "competitor",
        ),
        (
            {**OPEN, "StageName": "Closed Lost", "Loss_Reason__c": "Missing Features"},
            "lost",
            "product_gap",
        ),
        (None, "sql", None),
    ],
)
def test_the_mapping_reads_the_outcome(
    make_connector: Make,
    env: dict[str, str],
    opportunity: dict[str, Any] | None,
    stage: str,
    reason: str | None,
) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    convert(env, lead_id, opportunity)
    row = records(read(connector, None)[0])[lead_id]
    values = load_mapping("salesforce").to_lead(row).values
    assert values["stage"] == stage
    assert values.get("outcome_reason") == (OutcomeReason(reason) if reason else None)
    if opportunity is not None:
        assert values["opportunity_stage"] == opportunity["StageName"]
        assert values["amount"] == float(opportunity["Amount"])
        assert values["closed_at"].date().isoformat() == opportunity["CloseDate"]
        assert values["opportunity_id"] == row["ConvertedOpportunityId"]


def test_a_later_change_of_the_opportunity_is_read_by_the_next_read(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(overlap=timedelta(0))
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    _, cursor = read(connector, None)
    patch_opportunity(
        connector,
        ids["opportunity_id"],
        {"StageName": "Closed Lost", "Loss_Reason__c": "No Budget"},
    )
    pages, after = read(connector, cursor)
    row = records(pages)[lead_id]
    assert (row["ConvertedOpportunity.IsClosed"], row["ConvertedOpportunity.IsWon"]) == (
        True,
        False,
    )
    assert row["ConvertedOpportunity.Loss_Reason__c"] == "No Budget"
    assert split_cursor(after)[1] is not None
    # Once the server's clock (whole seconds in its Date header) has passed the writes, the
    # look-back window is read at most once more, then nothing.
    time.sleep(1.1)
    _, after = read(connector, after)
    quiet, _ = read(connector, after)
    assert records(quiet) == {}


def test_an_idle_read_costs_one_call_with_the_outcome_followed(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(overlap=timedelta(0))
    [lead_id] = create(connector, 1)
    convert(env, lead_id, WON)
    _, cursor = read(connector, None)
    time.sleep(1.1)
    _, cursor = read(connector, cursor)
    before = stats(env)["requests"]["salesforce"]
    pages, _ = read(connector, cursor)
    assert stats(env)["requests"]["salesforce"] == before + 1
    assert [len(p.records) for p in pages] == [0]


def test_no_update_is_sent_to_a_lead_read_as_converted(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector()
    converted, plain = create(connector, 2)
    convert(env, converted, WON)
    read(connector, None)
    before = stats(env)["requests"]["salesforce"]
    [result] = connector.update({converted: {"Title": "CTO"}})
    assert (result.outcome, result.external_id, result.error) == (
        WriteOutcome.UNCHANGED,
        converted,
        None,
    )
    assert stats(env)["requests"]["salesforce"] == before
    results = connector.update({converted: {"Title": "CTO"}, plain: {"Title": "CFO"}})
    assert [r.outcome for r in results] == [WriteOutcome.UNCHANGED, WriteOutcome.UPDATED]


def test_a_refusal_as_converted_is_unchanged_not_a_failure(
    make_connector: Make, env: dict[str, str]
) -> None:
    writer = make_connector()
    converted, plain = create(writer, 2)
    convert(env, converted, OPEN)
    fresh = make_connector()  # has read nothing: Salesforce itself refuses the write
    results = fresh.upsert(
        [
            UpsertInput("a", {"Title": "CTO"}, external_id=converted),
            UpsertInput("b", {"Title": "CFO"}, external_id=plain),
            UpsertInput("c", lead(7)),
        ]
    )
    assert [r.outcome for r in results] == [
        WriteOutcome.UNCHANGED,
        WriteOutcome.UPDATED,
        WriteOutcome.CREATED,
    ]
    before = stats(env)["requests"]["salesforce"]
    [again] = fresh.update({converted: {"Title": "CEO"}})
    assert again.outcome is WriteOutcome.UNCHANGED
    assert stats(env)["requests"]["salesforce"] == before  # remembered: not sent again


def test_describe_holds_the_opportunity_fields_read_only(make_connector: Make) -> None:
    schema = make_connector().describe()
    stage = schema.field("ConvertedOpportunity.StageName")
    assert stage.read_only and "Closed Won" in (stage.picklist_values or ())
    assert "Competitor" in (
        schema.field("ConvertedOpportunity.Loss_Reason__c").picklist_values or ()
    )
    assert load_mapping("salesforce").validate_against(schema) == []


def test_a_bulk_write_to_a_converted_lead_is_unchanged(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(bulk_threshold=2)
    ids = create(connector, 3)
    convert(env, ids[0], WON)
    results = connector.upsert(
        [
            UpsertInput(str(n), {"Title": "CTO"}, external_id=record_id)
            for n, record_id in enumerate(ids)
        ]
    )
    assert [r.outcome for r in results] == [WriteOutcome.UNCHANGED] + [WriteOutcome.UPDATED] * 2
    assert all(r.ok for r in results)


def test_an_org_without_the_loss_reason_field_still_reads_and_check_names_it(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    convert(env, lead_id, WON)
    assert "ConvertedOpportunity.Loss_Reason__c" in records(read(connector, None)[0])[lead_id]
    admin(env, "schema", {"system": "salesforce", "remove_field": "Opportunity.Loss_Reason__c"})
    # the cached field list names the removed field: the read describes again and runs once more
    row = records(read(connector, None)[0])[lead_id]
    assert "ConvertedOpportunity.Loss_Reason__c" not in row
    assert load_mapping("salesforce").to_lead(row).values["stage"] == "won"
    problems = load_mapping("salesforce").validate_against(connector.describe())
    assert [p.system_field for p in problems] == ["ConvertedOpportunity.Loss_Reason__c"]


def test_create_fields_makes_the_win_and_loss_reasons_on_opportunity(
    make_connector: Make, env: dict[str, str]
) -> None:
    for name in ("Loss_Reason__c", "Win_Reason__c"):
        admin(env, "schema", {"system": "salesforce", "remove_field": f"Opportunity.{name}"})
    connector = make_connector()
    specs = custom_field_specs(load_mapping("salesforce"))
    assert connector.create_fields(specs) == [
        "ConvertedOpportunity.Win_Reason__c",
        "ConvertedOpportunity.Loss_Reason__c",
    ]
    schema = connector.describe()
    lost = schema.field("ConvertedOpportunity.Loss_Reason__c")
    assert set(lost.picklist_values or ()) >= {"Competitor", "Missing Features", "No Budget"}
    won = schema.field("ConvertedOpportunity.Win_Reason__c")
    assert won.picklist_values == ("Price", "Product Fit", "Relationship", "Other")
    assert (won.label, lost.label) == ("Win Reason", "Loss Reason")
    assert not schema.has("Loss_Reason__c")  # made on Opportunity, not on Lead
    assert load_mapping("salesforce").validate_against(schema) == []
    assert connector.create_fields(specs) == []


def test_a_later_win_reason_is_read_by_the_next_read(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(overlap=timedelta(0))
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    _, cursor = read(connector, None)
    patch_opportunity(
        connector, ids["opportunity_id"], {"StageName": "Closed Won", "Win_Reason__c": "Other"}
    )
    row = records(read(connector, cursor)[0])[lead_id]
    values = load_mapping("salesforce").to_lead(row).values
    assert (values["stage"], values["outcome_reason"]) == ("won", OutcomeReason.OTHER)


@pytest.mark.parametrize(
    ("first", "then", "expected"),
    [
        # Won, then lost: the win reason left on the Opportunity is not read.
        (
            {"StageName": "Closed Won", "Win_Reason__c": "Relationship"},
            {"StageName": "Closed Lost", "Loss_Reason__c": "Timing"},
            ("lost", OutcomeReason.TIMING),
        ),
        # Lost, reopened and won: the loss reason left behind is not read.
        (
            {"StageName": "Closed Lost", "Loss_Reason__c": "Competitor"},
            {"StageName": "Closed Won", "Win_Reason__c": "Product Fit"},
            ("won", OutcomeReason.PRODUCT_FIT),
        ),
        # Reopened: an open deal has no reason, whatever the pick lists still hold.
        (
            {"StageName": "Closed Lost", "Loss_Reason__c": "Competitor"},
            {"StageName": "Prospecting"},
            ("opportunity", None),
        ),
    ],
)
def test_the_reason_read_is_the_one_of_the_deals_side_now(
    make_connector: Make,
    env: dict[str, str],
    first: dict[str, Any],
    then: dict[str, Any],
    expected: tuple[str, OutcomeReason | None],
) -> None:
    connector = make_connector(overlap=timedelta(0))
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    patch_opportunity(connector, ids["opportunity_id"], first)
    patch_opportunity(connector, ids["opportunity_id"], then)
    row = records(read(connector, None)[0])[lead_id]
    values = load_mapping("salesforce").to_lead(row).values
    assert (values["stage"], values.get("outcome_reason")) == expected
