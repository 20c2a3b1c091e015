"""The Zoho emulator's Convert Lead, Contacts and Deals, over httpx (real HTTP on loopback)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from leadrelay.sandbox.zoho import ZohoEmulator
from tests.zoho_sandbox import (  # noqa: F401 (fixtures)
    convert,
    converted_ids,
    deal,
    zoho_emulator,
    zoho_server,
    zoho_user,
)


def new_lead(api: httpx.Client, **extra: Any) -> str:
    record = {
        "First_Name": "Ana",
        "Last_Name": "Silva",
        "Email": "ana@acme.io",
        "Company": "Acme",
        "Lead_Source": "Web Research",
        **extra,
    }
    response = api.post("/Leads", json={"data": [record]})
    assert response.status_code == 201, response.text
    return str(response.json()["data"][0]["details"]["id"])


def one(api: httpx.Client, module: str, record_id: str, **params: str) -> dict[str, Any] | None:
    response = api.get(f"/{module}/{record_id}", params=params)
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["data"][0]
    return found


def test_a_conversion_answers_the_new_records_of_each_module(api: httpx.Client) -> None:
    lead_id = new_lead(api)
    response = convert(api, lead_id, deal("Closed Won", Amount=5000))
    assert response.status_code == 200
    [answer] = response.json()["data"]
    assert (answer["code"], answer["status"]) == ("SUCCESS", "success")
    assert answer["message"] == "The record has been converted successfully"
    details = answer["details"]
    assert set(details) == {"Contacts", "Deals", "Accounts"}
    assert details["Contacts"]["name"] == "Ana Silva"
    assert (details["Deals"]["name"], details["Accounts"]["name"]) == ("Acme renewal", "Acme")


def test_the_deal_is_related_to_the_new_contact_and_account(api: httpx.Client) -> None:
    details = converted_ids(api, new_lead(api), deal("Closed Won", Amount=5000))
    made = one(api, "Deals", details["Deals"]["id"])
    assert made is not None
    assert made["Contact_Name"] == details["Contacts"]
    assert made["Account_Name"] == details["Accounts"]
    assert (made["Stage"], made["Amount"], made["Closing_Date"]) == (
        "Closed Won",
        5000.0,
        "2026-12-01",
    )
    assert (made["Probability"], made["Pipeline"], made["Lead_Source"]) == (
        100,
        "Standard (Standard)",
        "Web Research",
    )
    contact = one(api, "Contacts", details["Contacts"]["id"])
    assert contact is not None
    assert (contact["Email"], contact["Account_Name"]) == ("ana@acme.io", details["Accounts"])


def test_a_converted_lead_leaves_the_module_but_is_read_with_converted_true(
    api: httpx.Client,
) -> None:
    lead_id = new_lead(api)
    details = converted_ids(api, lead_id, deal("Qualification"))
    assert one(api, "Leads", lead_id) is None
    assert api.get("/Leads", params={"fields": "Email"}).status_code == 204
    found = one(api, "Leads", lead_id, converted="true")
    assert found is not None
    assert found["Converted__s"] is True
    assert found["Converted_Deal"] == details["Deals"]
    assert found["Converted_Contact"] == details["Contacts"]
    listed = api.get("/Leads", params={"fields": "Email,Converted__s", "converted": "both"})
    assert [(r["id"], r["Converted__s"]) for r in listed.json()["data"]] == [(lead_id, True)]


def test_a_conversion_without_deals_makes_no_deal(api: httpx.Client) -> None:
    lead_id = new_lead(api)
    details = converted_ids(api, lead_id)
    assert details["Deals"] is None
    assert api.get("/Deals", params={"fields": "Deal_Name"}).status_code == 204
    found = one(api, "Leads", lead_id, converted="true")
    assert found is not None and found["Converted_Deal"] is None


def test_a_lead_without_company_gets_no_account(api: httpx.Client) -> None:
    details = converted_ids(api, new_lead(api, Company=None))
    assert details["Accounts"] is None


def test_a_conversion_links_existing_records_it_is_given(api: httpx.Client) -> None:
    account = api.post("/Accounts", json={"data": [{"Account_Name": "Globex"}]})
    account_id = account.json()["data"][0]["details"]["id"]
    response = api.post(
        f"/Leads/{new_lead(api)}/actions/convert",
        json={"data": [{"Accounts": {"id": account_id}, "Deals": deal("Qualification")}]},
    )
    details = response.json()["data"][0]["details"]
    assert details["Accounts"] == {"name": "Globex", "id": account_id}


@pytest.mark.parametrize(
    ("deal_fields", "api_name"),
    [
        ({"Deal_Name": "D", "Stage": "Closed Won"}, "Closing_Date"),
        ({"Deal_Name": "D", "Closing_Date": "2026-12-01", "Stage": "Won-ish"}, "Stage"),
        ({"Deal_Name": "D", "Closing_Date": "01/12/2026", "Stage": "Closed Won"}, "Closing_Date"),
    ],
)
def test_a_refused_deal_converts_nothing(
    api: httpx.Client, deal_fields: dict[str, Any], api_name: str
) -> None:
    lead_id = new_lead(api)
    response = convert(api, lead_id, deal_fields)
    assert response.status_code == 400
    [error] = response.json()["data"]
    assert error["status"] == "error"
    assert error["details"]["api_name"] == api_name
    assert error["details"]["json_path"] == f"$.data[0].Deals.{api_name}"
    assert one(api, "Leads", lead_id) is not None
    for module in ("Contacts", "Deals", "Accounts"):
        assert api.get(f"/{module}", params={"fields": "id"}).status_code == 204


def test_converting_twice_is_id_already_converted(api: httpx.Client) -> None:
    lead_id = new_lead(api)
    converted_ids(api, lead_id)
    response = convert(api, lead_id)
    assert response.status_code == 400
    assert response.json()["code"] == "ID_ALREADY_CONVERTED"


def test_converting_an_unknown_lead_is_invalid_data(api: httpx.Client) -> None:
    response = convert(api, "5725767000001999999")
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_DATA")


def test_a_converted_lead_refuses_updates(api: httpx.Client) -> None:
    lead_id = new_lead(api)
    converted_ids(api, lead_id)
    response = api.put("/Leads", json={"data": [{"id": lead_id, "City": "Porto"}]})
    assert response.status_code == 400
    assert response.json()["data"][0]["code"] == "CONVERTED_RECORD"


def test_a_conversion_costs_five_credits(api: httpx.Client, emulator: ZohoEmulator) -> None:
    lead_id = new_lead(api)
    before = emulator.credits_remaining()
    converted_ids(api, lead_id)
    assert before - emulator.credits_remaining() == 5


def test_deals_are_updated_and_read_by_coql_in_keyset_order(api: httpx.Client) -> None:
    details = converted_ids(api, new_lead(api), deal("Negotiation/Review"))
    deal_id = details["Deals"]["id"]
    update = {"Stage": "Closed Lost", "Reason_For_Loss__s": "Price"}
    response = api.put(f"/Deals/{deal_id}", json={"data": [update]})
    assert response.status_code == 200, response.text
    query = (
        "select Stage, Reason_For_Loss__s, Probability from Deals where id is not null "
        "order by Modified_Time asc, id asc limit 200"
    )
    rows = api.post("/coql", json={"select_query": query}).json()["data"]
    assert [(r["id"], r["Stage"], r["Reason_For_Loss__s"], r["Probability"]) for r in rows] == [
        (deal_id, "Closed Lost", "Price", 0)
    ]


def test_converted_leads_are_searched_by_their_deal(api: httpx.Client) -> None:
    first, second = new_lead(api), new_lead(api, Email="bo@acme.io", Last_Name="Bo")
    deals = [converted_ids(api, i, deal("Qualification"))["Deals"]["id"] for i in (first, second)]
    criteria = f"(Converted_Deal:equals:{deals[1]})"
    assert api.get("/Leads/search", params={"criteria": criteria}).status_code == 204
    found = api.get("/Leads/search", params={"criteria": criteria, "converted": "true"})
    assert [r["id"] for r in found.json()["data"]] == [second]


def test_deals_fields_list_the_stage_and_loss_reason_pick_lists(api: httpx.Client) -> None:
    fields = {f["api_name"]: f for f in api.get("/settings/fields?module=Deals").json()["fields"]}
    stages = [v["actual_value"] for v in fields["Stage"]["pick_list_values"]]
    assert {"Closed Won", "Closed Lost"} <= set(stages)
    assert fields["Reason_For_Loss__s"]["data_type"] == "picklist"


def test_deals_and_contacts_are_searched(api: httpx.Client) -> None:
    details = converted_ids(api, new_lead(api), deal("Qualification"))
    deals = api.get("/Deals/search", params={"criteria": "(Stage:equals:Qualification)"})
    assert [r["id"] for r in deals.json()["data"]] == [details["Deals"]["id"]]
    contacts = api.get("/Contacts/search", params={"email": "ana@acme.io"})
    assert [r["id"] for r in contacts.json()["data"]] == [details["Contacts"]["id"]]
    assert api.get("/Deals/search", params={"word": "nothing-like-it"}).status_code == 204
