"""The Zoho connector on the sandbox (real HTTP): a converted Lead's Contact carries its person
fields, and what a read costs (one Composite API call when idle)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from leadrelay.connectors.base import RawRecord, UpsertInput
from leadrelay.connectors.credentials import process_cache
from leadrelay.connectors.zoho import ZohoConnector
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

COMPOSITE_ROUTE = "POST /zoho/crm/v7/__composite_requests"
#: The connector's default look-back (the tests read with none unless they need it).
LOOK_BACK = timedelta(seconds=2)


@pytest.fixture
def zoho(server: SandboxServer, api: httpx.Client) -> Iterator[ZohoConnector]:
    connector = ZohoConnector(
        sandbox_settings(server.env()), "zoho", retry=FAST, read_overlap=timedelta(0)
    )
    with connector:
        yield connector


def new_lead(zoho: ZohoConnector, email: str = "ana@acme.io") -> str:
    fields = {
        "Email": email,
        "First_Name": "Ana",
        "Last_Name": "Silva",
        "Company": "Acme",
        "Phone": "+351 21 000 0000",
        "Designation": "Analyst",
    }
    [result] = zoho.upsert([UpsertInput("1", fields)])
    assert result.ok and result.external_id
    return result.external_id


def by_id(records: list[RawRecord]) -> dict[str, RawRecord]:
    return {str(record["id"]): record for record in records}


def recorded(zoho: ZohoConnector) -> list[str]:
    """The API requests ``zoho`` sends from now on (``METHOD path``, each attempt)."""
    sent: list[str] = []
    zoho._client.event_hooks["request"].append(
        lambda request: sent.append(f"{request.method} {request.url.path}")
    )
    return sent


def test_a_contact_edited_after_the_conversion_is_read_under_the_leads_id(
    zoho: ZohoConnector, api: httpx.Client
) -> None:
    lead_id = new_lead(zoho)
    contact_id = converted_ids(api, lead_id, deal("Qualification"))["Contacts"]["id"]
    _, cursor = read_all(zoho, None)
    edit = {"Email": "ana.silva@acme.io", "Phone": "+351 21 999 9999", "Title": "Head of Data"}
    assert api.put(f"/Contacts/{contact_id}", json={"data": [edit]}).is_success
    records, _ = read_all(zoho, cursor)
    record = by_id(records)[lead_id]
    assert (record["Email"], record["Phone"], record["Designation"]) == (
        "ana.silva@acme.io",
        "+351 21 999 9999",
        "Head of Data",
    )
    assert (record["First_Name"], record["Last_Name"]) == ("Ana", "Silva")
    assert record["Converted_Deal.Stage"] == "Qualification"


def test_a_deal_change_carries_the_contacts_current_values(
    zoho: ZohoConnector, api: httpx.Client
) -> None:
    lead_id = new_lead(zoho)
    ids = converted_ids(api, lead_id, deal("Qualification"))
    renamed = {"First_Name": "Anabela", "Last_Name": "Sousa"}
    assert api.put(f"/Contacts/{ids['Contacts']['id']}", json={"data": [renamed]}).is_success
    _, cursor = read_all(zoho, None)
    assert api.put(f"/Deals/{ids['Deals']['id']}", json={"data": [{"Stage": "Closed Won"}]})
    records, _ = read_all(zoho, cursor)
    record = by_id(records)[lead_id]
    assert (record["First_Name"], record["Last_Name"]) == ("Anabela", "Sousa")
    assert record["Converted_Deal.Stage"] == "Closed Won"


def test_a_contact_no_converted_lead_names_is_not_read(
    zoho: ZohoConnector, api: httpx.Client
) -> None:
    _, cursor = read_all(zoho, None)
    made = api.post("/Contacts", json={"data": [{"Last_Name": "Walk-in", "Email": "w@shop.io"}]})
    assert made.status_code == 201
    records, _ = read_all(zoho, cursor)
    assert records == []


def test_a_converted_lead_looked_up_by_id_has_its_contacts_values(
    zoho: ZohoConnector, api: httpx.Client
) -> None:
    lead_id = new_lead(zoho)
    contact_id = converted_ids(api, lead_id)["Contacts"]["id"]
    assert api.put(f"/Contacts/{contact_id}", json={"data": [{"Mobile": "+351 91 000 0000"}]})
    assert api.put(f"/Contacts/{contact_id}", json={"data": [{"Email": "new@acme.io"}]})
    found = zoho.lookup(ids=[lead_id])[lead_id]
    assert (found["Converted__s"], found["Email"]) == (True, "new@acme.io")


def test_an_idle_read_is_one_composite_call_of_one_credit(
    zoho: ZohoConnector, emulator: ZohoEmulator
) -> None:
    new_lead(zoho)
    _, cursor = read_all(zoho, None)
    tokens, credits = zoho.tokens.token_calls, emulator.credits_remaining()
    sent = recorded(zoho)
    records, _ = read_all(zoho, cursor)
    assert records == [] or [r["Email"] for r in records] == ["ana@acme.io"]  # its second
    assert sent == [COMPOSITE_ROUTE]
    assert zoho.tokens.token_calls == tokens
    assert credits - emulator.credits_remaining() == 1


def test_an_idle_read_of_a_new_process_adds_one_auth_call(
    server: SandboxServer, zoho: ZohoConnector
) -> None:
    _, cursor = read_all(zoho, None)
    process_cache().clear()  # a new process: no token cached
    settings = sandbox_settings(server.env())
    with ZohoConnector(settings, "zoho", retry=FAST, read_overlap=timedelta(0)) as fresh:
        sent = recorded(fresh)
        read_all(fresh, cursor)
        assert (fresh.tokens.token_calls, sent) == (1, [COMPOSITE_ROUTE])


def test_a_deleted_lead_is_reported_by_the_composite_call(
    zoho: ZohoConnector, api: httpx.Client
) -> None:
    zoho.read_overlap = LOOK_BACK  # a deletion in the second of the last read is read
    lead_id = new_lead(zoho)
    _, cursor = read_all(zoho, None)
    assert api.delete(f"/Leads/{lead_id}").is_success
    sent = recorded(zoho)
    pages = list(zoho.read_changes(cursor))
    assert [d.record_id for p in pages for d in p.deleted] == [lead_id]
    assert sent == [COMPOSITE_ROUTE]


def test_more_than_25_deletions_are_read_on_with_get_deleted_records(
    zoho: ZohoConnector, api: httpx.Client, emulator: ZohoEmulator
) -> None:
    zoho.read_overlap = LOOK_BACK
    with emulator.lock:
        ids = [emulator.store.insert({"Last_Name": f"D{n}"}).id for n in range(30)]
    _, cursor = read_all(zoho, None)
    for batch in (ids[:15], ids[15:]):
        assert api.delete("/Leads", params={"ids": ",".join(batch)}).is_success
    pages = list(zoho.read_changes(cursor))
    assert sorted(d.record_id for p in pages for d in p.deleted) == sorted(ids)


def test_a_read_without_the_composite_call_reads_each_module(zoho: ZohoConnector) -> None:
    new_lead(zoho)
    zoho.composite_reads = False  # as after Zoho refused it (test_zoho_respx)
    sent = recorded(zoho)
    records, _ = read_all(zoho, None)
    assert [r["Email"] for r in records] == ["ana@acme.io"]
    # Leads, Deals and Contacts a COQL query each, and the deleted list (a first read).
    coql = "POST /zoho/crm/v7/coql"
    assert sent == [coql, coql, coql, "GET /zoho/crm/v7/Leads/deleted"]
