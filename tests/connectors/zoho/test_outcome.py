"""The Zoho connector follows converted Leads to their Deal, on the sandbox (real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from leadrelay.connectors.base import RawRecord, UpsertInput, WriteOutcome
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.mappings.engine import load_mapping
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator
from tests.connectors.contract import read_all
from tests.connectors.zoho.test_contract import FAST, sandbox_settings
from tests.zoho_sandbox import (  # noqa: F401 (fixtures)
    converted_ids,
    deal,
    zoho_emulator,
    zoho_server,
    zoho_user,
)


def connect(server: SandboxServer) -> ZohoConnector:
    return ZohoConnector(
        sandbox_settings(server.env()), "zoho", retry=FAST, read_overlap=timedelta(0)
    )


@pytest.fixture
def zoho(server: SandboxServer, api: httpx.Client) -> Iterator[ZohoConnector]:
    with connect(server) as connector:
        yield connector


def new_lead(zoho: ZohoConnector, email: str = "ana@acme.io") -> str:
    [result] = zoho.upsert(
        [UpsertInput("1", {"Email": email, "Last_Name": "Silva", "Company": "Acme"})]
    )
    assert result.ok and result.external_id
    return result.external_id


def by_id(records: list[RawRecord]) -> dict[str, RawRecord]:
    return {str(record["id"]): record for record in records}


def test_a_converted_lead_is_read_under_its_own_id_with_its_deal(
    zoho: ZohoConnector, api: httpx.Client
) -> None:
    lead_id = new_lead(zoho)
    _, cursor = read_all(zoho, None)
    lost = deal("Closed Lost", Amount=1200, Reason_For_Loss__s="Price")
    deal_id = converted_ids(api, lead_id, lost)["Deals"]["id"]
    records, _ = read_all(zoho, cursor)
    record = by_id(records)[lead_id]
    assert record["Email"] == "ana@acme.io"
    assert record["Converted_Deal.id"] == deal_id
    assert (record["Converted_Deal.Stage"], record["Converted_Deal.Amount"]) == (
        "Closed Lost",
        1200.0,
    )
    assert record["Converted_Deal.Reason_For_Loss__s"] == "Price"
    assert record["Converted_Deal.Closing_Date"] == "2026-12-01"


def test_a_later_change_of_the_deal_is_read(zoho: ZohoConnector, api: httpx.Client) -> None:
    lead_id = new_lead(zoho)
    deal_id = converted_ids(api, lead_id, deal("Negotiation/Review"))["Deals"]["id"]
    _, cursor = read_all(zoho, None)
    assert api.put(f"/Deals/{deal_id}", json={"data": [{"Stage": "Closed Won"}]}).is_success
    records, _ = read_all(zoho, cursor)
    # The Contact of the conversion may be read again within the cursor's second: by id.
    assert {r["id"]: r["Converted_Deal.Stage"] for r in records} == {lead_id: "Closed Won"}


def test_a_deal_no_converted_lead_names_is_not_read(zoho: ZohoConnector, api: httpx.Client) -> None:
    _, cursor = read_all(zoho, None)
    made = api.post("/Deals", json={"data": [deal("Qualification")]})
    assert made.status_code == 201
    records, _ = read_all(zoho, cursor)
    assert records == []


def test_a_converted_lead_is_looked_up_by_id_with_its_deal(
    zoho: ZohoConnector, api: httpx.Client
) -> None:
    lead_id = new_lead(zoho)
    converted_ids(api, lead_id, deal("Closed Won", Amount=5000))
    found = zoho.lookup(ids=[lead_id])[lead_id]
    assert (found["Converted__s"], found["Converted_Deal.Stage"]) == (True, "Closed Won")


def test_a_write_to_a_converted_lead_is_unchanged_and_not_sent(
    zoho: ZohoConnector, api: httpx.Client, emulator: ZohoEmulator
) -> None:
    lead_id = new_lead(zoho)
    converted_ids(api, lead_id, deal("Closed Won"))
    zoho.lookup(ids=[lead_id])
    modified = emulator.store.converted[lead_id].modified
    before = zoho.api_calls
    [updated] = zoho.update({lead_id: {"City": "Porto"}})
    [upserted] = zoho.upsert(
        [UpsertInput("1", {"Email": "ana@acme.io", "Last_Name": "S"}, external_id=lead_id)]
    )
    assert (updated.outcome, upserted.outcome) == (WriteOutcome.UNCHANGED, WriteOutcome.UNCHANGED)
    assert (updated.error, upserted.error) == (None, None)
    assert zoho.api_calls == before
    assert emulator.store.converted[lead_id].modified == modified


def test_a_write_zoho_refuses_as_converted_is_unchanged(
    server: SandboxServer, zoho: ZohoConnector, api: httpx.Client
) -> None:
    lead_id = new_lead(zoho)
    converted_ids(api, lead_id)
    with connect(server) as fresh:  # has never read the Lead
        [first] = fresh.update({lead_id: {"City": "Porto"}})
        before = fresh.api_calls
        [second] = fresh.update({lead_id: {"City": "Braga"}})
    assert (first.outcome, first.error) == (WriteOutcome.UNCHANGED, None)
    assert (second.outcome, fresh.api_calls) == (WriteOutcome.UNCHANGED, before)


def test_the_deal_fields_are_described_read_only_and_the_mapping_fits_them(
    zoho: ZohoConnector,
) -> None:
    schema = zoho.describe()
    stage = schema.fields["Converted_Deal.Stage"]
    assert stage.read_only and stage.picklist_values is not None
    assert "Closed Lost" in stage.picklist_values
    assert load_mapping("zoho").validate_against(schema) == []
