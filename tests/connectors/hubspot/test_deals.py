"""HubSpot as the CRM: a contact's deal read with it and mapped to the Lead's outcome, against
the sandbox's HubSpot emulator (real HTTP); and the outcome a CRM reports written back to
HubSpot as marketing."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from leadrelay.connectors.base import UpsertInput, WriteOutcome
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.connectors.hubspot.deals import choose_deal, join_cursor, split_cursor
from leadrelay.connectors.hubspot.fields import custom_property_specs
from leadrelay.mappings.engine import DEFAULTS_DIR, Mapping, build_lead, load_mapping
from leadrelay.model import Lead, OutcomeReason, Stage
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer
from tests.connectors.contract import read_all
from tests.connectors.hubspot.conftest import MakeConnector
from tests.hubspot_sandbox import hubspot_api

PRESET = DEFAULTS_DIR / "presets" / "hubspot_crm.toml"
DEAL_ROUTES = {
    "POST /hubspot/crm/v3/objects/deals/search",
    "POST /hubspot/crm/v3/objects/deals/batch/read",
    "POST /hubspot/crm/v4/associations/contacts/deals/batch/read",
    "POST /hubspot/crm/v4/associations/deals/contacts/batch/read",
}
CONTACT_SEARCH = "POST /hubspot/crm/v3/objects/contacts/search"
DEAL_SEARCH = "POST /hubspot/crm/v3/objects/deals/search"


def crm_mapping() -> Mapping:
    return load_mapping("hubspot", override=PRESET)


def routes(server: SandboxServer) -> Counter[str]:
    with server.sandbox.lock:
        return Counter(server.sandbox.stats.by_route)


def crm_connector(make_connector: MakeConnector, **kwargs: Any) -> HubSpotConnector:
    connector = make_connector(**kwargs)
    connector.read_mapped(crm_mapping().system_fields())
    return connector


def contact(connector: HubSpotConnector, email: str) -> str:
    [result] = connector.upsert([UpsertInput(email, {"email": email, "lastname": "Silva"})])
    assert result.outcome is WriteOutcome.CREATED
    return str(result.external_id)


def deal(server: SandboxServer, stage: str, *contacts: str, **props: str) -> str:
    body = {
        "properties": {"dealname": "Acme", "dealstage": stage, **props},
        "associations": [
            {
                "to": {"id": c},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
            }
            for c in contacts
        ],
    }
    return str(hubspot_api(server, "POST", "/crm/v3/objects/deals", body, expect=201)["id"])


def lead_of(record: dict[str, Any]) -> Lead:
    found, problems = build_lead(crm_mapping().to_lead(record))
    assert problems == []
    assert found is not None
    return found


def by_email(records: list[dict[str, Any]], email: str) -> dict[str, Any]:
    return [r for r in records if r.get("email") == email][-1]


# -- HubSpot as the CRM: reading ---------------------------------------------------------------


def test_a_deal_won_with_a_reason_reaches_the_lead(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = crm_connector(make_connector)
    ada = contact(connector, "ada@example.com")
    deal_id = deal(
        server,
        "closedwon",
        ada,
        amount="5000",
        deal_currency_code="EUR",
        closed_won_reason="Price",
        closedate="2026-03-02T09:00:00.000Z",
    )

    records, _ = read_all(connector, None)

    lead = lead_of(by_email(records, "ada@example.com"))
    assert (lead.stage, lead.outcome_reason) == (Stage.WON, OutcomeReason.PRICE)
    assert (lead.opportunity_id, lead.opportunity_stage) == (deal_id, "closedwon")
    assert (lead.amount, lead.currency) == (5000.0, "EUR")
    assert lead.closed_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stage", "props", "expected", "reason"),
    [
        ("contractsent", {}, Stage.OPPORTUNITY, None),
        ("closedlost", {"closed_lost_reason": "Lost to competitor"}, Stage.LOST, "competitor"),
        ("closedlost", {"closed_lost_reason": "they went quiet"}, Stage.LOST, "other"),
    ],
)
def test_the_deals_stage_and_reason_are_the_leads(
    make_connector: MakeConnector,
    server: SandboxServer,
    stage: str,
    props: dict[str, str],
    expected: Stage,
    reason: str | None,
) -> None:
    connector = crm_connector(make_connector)
    ada = contact(connector, "ada@example.com")
    deal(server, stage, ada, **props)

    lead = lead_of(by_email(read_all(connector, None)[0], "ada@example.com"))

    assert lead.stage is expected
    assert lead.outcome_reason == (OutcomeReason(reason) if reason else None)


def test_a_contact_without_a_deal_has_a_blank_outcome(make_connector: MakeConnector) -> None:
    connector = crm_connector(make_connector)
    contact(connector, "ada@example.com")

    record = by_email(read_all(connector, None)[0], "ada@example.com")

    assert record["deal.dealstage"] is None
    lead = lead_of(record)
    assert (lead.opportunity_id, lead.amount, lead.outcome_reason) == (None, None, None)


def test_a_deal_changed_later_brings_its_contact_back_with_it(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    connector = crm_connector(make_connector, deals_every_s=0)  # deals searched in every read
    emulator.store.clock = lambda: 1_700_000_000  # long before the reads
    ada = contact(connector, "ada@example.com")
    deal_id = deal(server, "contractsent", ada)
    first, cursor = read_all(connector, None)
    assert lead_of(by_email(first, "ada@example.com")).stage is Stage.OPPORTUNITY
    emulator.store.clock = time.time  # the change comes after the first read

    hubspot_api(
        server,
        "PATCH",
        f"/crm/v3/objects/deals/{deal_id}",
        {"properties": {"dealstage": "closedlost", "closed_lost_reason": "timing"}},
    )
    records, _ = read_all(connector, cursor)

    lead = lead_of(by_email(records, "ada@example.com"))
    assert (lead.stage, lead.outcome_reason) == (Stage.LOST, OutcomeReason.TIMING)
    assert str(records[-1]["hs_object_id"]) == ada  # the record id stays the contact's


def test_an_idle_read_with_deals_costs_one_search(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    connector = crm_connector(make_connector)
    emulator.store.clock = lambda: 1_700_000_000
    deal(server, "closedwon", contact(connector, "ada@example.com"))
    _, cursor = read_all(connector, None)
    before = routes(server)

    records, after = read_all(connector, cursor)

    assert records == []
    assert routes(server) - before == Counter({CONTACT_SEARCH: 1})
    assert split_cursor(after)[1] == split_cursor(cursor)[1]  # the deals' place is kept


def test_a_deal_change_alone_is_read_once_deals_every_s_passed(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    # HubSpot's clock (its Date header) has whole seconds: 2 s apart is 1 to 3 s of real time.
    connector = crm_connector(make_connector, deals_every_s=2.0)
    emulator.store.clock = lambda: 1_700_000_000  # long before the reads
    deal_id = deal(server, "contractsent", contact(connector, "ada@example.com"))
    _, cursor = read_all(connector, None)
    emulator.store.clock = time.time
    hubspot_api(
        server,
        "PATCH",
        f"/crm/v3/objects/deals/{deal_id}",
        {"properties": {"dealstage": "closedlost", "closed_lost_reason": "timing"}},
    )

    early, cursor = read_all(connector, cursor)  # within deals_every_s: the contacts only
    time.sleep(3.1)
    later, _ = read_all(connector, cursor)

    assert early == []  # the contact did not change: only the deals' search finds it
    assert lead_of(by_email(later, "ada@example.com")).stage is Stage.LOST


def test_deals_are_searched_in_a_read_that_finds_changed_contacts(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    connector = crm_connector(make_connector)
    emulator.store.clock = lambda: 1_700_000_000
    contact(connector, "ada@example.com")
    _, cursor = read_all(connector, None)
    emulator.store.clock = time.time
    contact(connector, "bea@example.com")
    before = routes(server)

    read_all(connector, cursor)

    assert routes(server)[DEAL_SEARCH] - before[DEAL_SEARCH] == 1


def test_deals_stay_off_the_read_path_when_the_mapping_maps_none(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    connector.read_mapped(load_mapping("hubspot").system_fields())
    deal(server, "closedwon", contact(connector, "ada@example.com"))

    records, cursor = read_all(connector, None)
    connector.lookup(emails=["ada@example.com"])

    assert not any(name.startswith("deal.") for name in records[0])
    assert not DEAL_ROUTES & set(routes(server))
    assert cursor is not None and "deals" not in cursor


def test_a_lookup_carries_the_contacts_deal(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = crm_connector(make_connector)
    ada = contact(connector, "ada@example.com")
    deal_id = deal(server, "closedwon", ada)

    found = connector.lookup(ids=[ada])

    assert found[ada]["deal.hs_object_id"] == deal_id


def test_describe_lists_the_deal_properties_as_read_only_fields(
    make_connector: MakeConnector,
) -> None:
    connector = crm_connector(make_connector)

    schema = connector.describe()

    assert schema.fields["deal.closed_lost_reason"].read_only
    assert "closedwon" in (schema.fields["deal.dealstage"].picklist_values or ())
    assert crm_mapping().validate_against(schema) == []


@pytest.mark.parametrize(
    ("deals", "chosen"),
    [
        # a won deal stays the outcome, whatever later deal opens
        ([("1", "true", 100), ("2", "false", 200)], "1"),
        # otherwise the most recently created one, open or lost
        ([("1", "false", 100), ("2", "false", 300), ("3", "false", 200)], "2"),
        # the latest win, when there are several
        ([("1", "true", 100), ("2", "true", 50)], "1"),
        ([], None),
    ],
)
def test_which_deal_is_the_contacts(deals: list[tuple[str, str, int]], chosen: str | None) -> None:
    records = [
        {"hs_object_id": i, "hs_is_closed_won": won, "createdate": str(at), "closedate": str(at)}
        for i, won, at in deals
    ]
    found = choose_deal(records)
    assert (found or {}).get("hs_object_id") == chosen


@pytest.mark.parametrize(
    ("contacts", "deals"), [("1:2:3", None), ("1:2:3", "4:5:"), (None, "4::"), (None, None)]
)
def test_a_read_cursor_keeps_both_parts(contacts: str | None, deals: str | None) -> None:
    assert split_cursor(join_cursor(contacts, deals)) == (contacts, deals)


# -- HubSpot as marketing: the outcome written back ---------------------------------------------


def test_a_won_lead_written_back_makes_a_customer_with_its_outcome(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    ada = contact(connector, "ada@example.com")
    mapping = load_mapping("hubspot")
    lead = Lead(
        email="ada@example.com",
        stage=Stage.WON,
        opportunity_id="006000000000001",
        opportunity_stage="Closed Won",
        amount=12500.0,
        currency="USD",
        outcome_reason=OutcomeReason.RELATIONSHIP,
    )

    [result] = connector.update({ada: mapping.to_system(lead)})

    assert result.ok
    names = "lifecyclestage,leadrelay_outcome,leadrelay_outcome_reason,leadrelay_amount"
    read = hubspot_api(server, "GET", f"/crm/v3/objects/contacts/{ada}?properties={names}")
    assert read["properties"] == {
        "lifecyclestage": "customer",
        "leadrelay_outcome": "Closed Won",
        "leadrelay_outcome_reason": "relationship",
        "leadrelay_amount": "12500.0",
    }


def test_an_opportunity_after_a_win_leaves_the_customer_a_customer(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    ada = contact(connector, "ada@example.com")
    mapping = load_mapping("hubspot")
    for stage in (Stage.OPPORTUNITY, Stage.WON, Stage.OPPORTUNITY):
        lead = Lead(email="ada@example.com", stage=stage)
        connector.update({ada: mapping.to_system(lead, fields=["stage"])})

    read = hubspot_api(server, "GET", f"/crm/v3/objects/contacts/{ada}?properties=lifecyclestage")
    assert read["properties"]["lifecyclestage"] == "customer"


def test_check_create_fields_creates_the_outcome_properties(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    outcome = ["leadrelay_outcome", "leadrelay_outcome_reason", "leadrelay_amount"]
    for name in outcome:
        hubspot_api(server, "DELETE", f"/crm/v3/properties/contacts/{name}", expect=204)

    created = make_connector().ensure_properties()

    assert created == outcome
    reason = hubspot_api(server, "GET", "/crm/v3/properties/contacts/leadrelay_outcome_reason")
    assert [o["value"] for o in reason["options"]] == [r.value for r in OutcomeReason]
    amount = next(s for s in custom_property_specs() if s.name == "leadrelay_amount")
    assert amount.type == "number"
