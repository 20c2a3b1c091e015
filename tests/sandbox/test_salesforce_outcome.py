"""The Salesforce emulator's Opportunity, the admin's lead conversion and what a converted Lead
answers afterwards (its Contact followed by the Lead's ConvertedContact relationship), driven by
simple-salesforce over HTTPS on loopback (issue #13)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest

from leadrelay.sandbox.salesforce.schema import OPPORTUNITY_STAGES, WIN_REASONS
from leadrelay.sandbox.server import SandboxServer
from tests.sandbox.test_salesforce import _clean, http, server, sf, token

__all__ = ["_clean", "http", "server", "sf", "token"]  # the fixtures this module's tests use

# simple-salesforce builds sf.Opportunity dynamically (__getattr__ typed as a union).
Client = Any
OPPORTUNITY = {"Name": "Acme - 40 seats", "StageName": "Prospecting", "Amount": 48000,
               "CloseDate": "2026-12-31"}  # fmt: skip


def convert(
    server: SandboxServer, http: requests.Session, body: dict[str, Any]
) -> requests.Response:
    return http.post(f"{server.url}/__sandbox__/salesforce/convert", json=body)


def new_lead(sf: Client, **extra: Any) -> str:
    fields = {"FirstName": "Ana", "LastName": "Silva", "Company": "Acme", "Email": "ana@acme.io"}
    return str(sf.Lead.create({**fields, **extra})["id"])


def test_a_conversion_creates_account_contact_and_opportunity(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    lead_id = new_lead(sf, Title="CTO", LeadSource="Web")
    answer = convert(server, http, {"lead_id": lead_id, "opportunity": OPPORTUNITY})
    assert answer.status_code == 200
    ids = answer.json()
    lead = sf.Lead.get(lead_id)
    assert (lead["IsConverted"], lead["Status"]) == (True, "Closed - Converted")
    assert (
        lead["ConvertedContactId"],
        lead["ConvertedAccountId"],
        lead["ConvertedOpportunityId"],
    ) == (
        ids["contact_id"],
        ids["account_id"],
        ids["opportunity_id"],
    )
    assert lead["ConvertedDate"] == datetime.now(UTC).date().isoformat()
    contact = sf.Contact.get(ids["contact_id"])
    assert (contact["Email"], contact["Title"], contact["AccountId"]) == (
        "ana@acme.io",
        "CTO",
        ids["account_id"],
    )
    assert sf.Account.get(ids["account_id"])["Name"] == "Acme"
    opportunity = sf.Opportunity.get(ids["opportunity_id"])
    assert (opportunity["StageName"], opportunity["Amount"], opportunity["CloseDate"]) == (
        "Prospecting",
        48000.0,
        "2026-12-31",
    )
    assert (opportunity["IsClosed"], opportunity["IsWon"], opportunity["LeadSource"]) == (
        False,
        False,
        "Web",
    )


def test_a_conversion_without_an_opportunity(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    lead_id = new_lead(sf)
    ids = convert(server, http, {"lead_id": lead_id}).json()
    assert ids["opportunity_id"] is None
    lead = sf.Lead.get(lead_id)
    assert (lead["IsConverted"], lead["ConvertedOpportunityId"]) == (True, None)
    assert sf.query("SELECT COUNT() FROM Opportunity")["totalSize"] == 0


def test_a_converted_lead_refuses_updates(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    lead_id = new_lead(sf)
    convert(server, http, {"lead_id": lead_id})
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.Lead.update(lead_id, {"Title": "CEO"})
    assert refused.value.content == [
        {"message": "cannot reference converted lead", "errorCode": "CANNOT_UPDATE_CONVERTED_LEAD"}
    ]
    [result] = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Lead"}, "Id": lead_id, "Title": "CEO"}]},
    )
    assert result["errors"][0]["statusCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"
    assert sf.Lead.get(lead_id)["Title"] is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"lead_id": "00Q5g000000ZZZZZZZ"}, 400),
        ({"opportunity": OPPORTUNITY}, 400),
        ({"lead_id": "LEAD", "opportunity": {**OPPORTUNITY, "StageName": "Won-ish"}}, 400),
        ({"lead_id": "LEAD", "opportunity": {"Name": "No stage", "CloseDate": "2026-12-31"}}, 400),
    ],
)
def test_a_refused_conversion_creates_nothing(
    sf: Client, server: SandboxServer, http: requests.Session, body: dict[str, Any], status: int
) -> None:
    lead_id = new_lead(sf)
    if body.get("lead_id") == "LEAD":
        body = {**body, "lead_id": lead_id}
    answer = convert(server, http, body)
    assert answer.status_code == status
    assert sf.Lead.get(lead_id)["IsConverted"] is False
    for sobject in ("Account", "Contact", "Opportunity"):
        assert sf.query(f"SELECT COUNT() FROM {sobject}")["totalSize"] == 0


def test_a_lead_is_converted_once(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    lead_id = new_lead(sf)
    assert convert(server, http, {"lead_id": lead_id}).status_code == 200
    again = convert(server, http, {"lead_id": lead_id})
    assert again.json()[0]["errorCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"


@pytest.mark.parametrize(("stage", "closed", "won", "_p", "_f"), OPPORTUNITY_STAGES)
def test_is_closed_and_is_won_follow_the_stage(
    sf: Client, stage: str, closed: bool, won: bool, _p: int, _f: str
) -> None:
    account = sf.Account.create({"Name": "Acme"})["id"]
    record_id = sf.Opportunity.create({**OPPORTUNITY, "AccountId": account})["id"]
    sf.Opportunity.update(record_id, {"StageName": stage})
    found = sf.Opportunity.get(record_id)
    assert (found["IsClosed"], found["IsWon"]) == (closed, won)
    row = sf.query(f"SELECT IsClosed, IsWon FROM OpportunityStage WHERE ApiName = '{stage}'")
    assert (row["records"][0]["IsClosed"], row["records"][0]["IsWon"]) == (closed, won)


def test_opportunity_refuses_a_stage_or_reason_outside_its_pick_lists(sf: Client) -> None:
    for fields in (
        {"StageName": "Won-ish"},
        {"Loss_Reason__c": "Bad luck"},
        {"Win_Reason__c": "Good luck"},
    ):
        with pytest.raises(SalesforceMalformedRequest) as refused:
            sf.Opportunity.create({**OPPORTUNITY, **fields})
        assert refused.value.content[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


def test_describe_shows_the_opportunity(sf: Client) -> None:
    fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    stages = [v["value"] for v in fields["StageName"]["picklistValues"]]
    assert stages == [s[0] for s in OPPORTUNITY_STAGES]
    assert not fields["IsWon"]["updateable"] and not fields["IsClosed"]["createable"]
    for name in ("Loss_Reason__c", "Win_Reason__c"):
        assert fields[name]["custom"] and fields[name]["restrictedPicklist"]
    assert [v["value"] for v in fields["Win_Reason__c"]["picklistValues"]] == list(WIN_REASONS)
    lead = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert lead["ConvertedOpportunityId"]["referenceTo"] == ["Opportunity"]
    assert lead["ConvertedOpportunityId"]["relationshipName"] == "ConvertedOpportunity"


def test_converted_leads_are_queried_by_their_opportunity(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    first = new_lead(sf)
    second = new_lead(sf, Email="ben@acme.io")
    new_lead(sf, Email="cy@acme.io")  # not converted: no Opportunity, filtered out
    one = convert(server, http, {"lead_id": first, "opportunity": OPPORTUNITY}).json()
    convert(server, http, {"lead_id": second, "opportunity": OPPORTUNITY})
    sf.Opportunity.update(one["opportunity_id"], {"StageName": "Closed Won"})
    soql = (
        "SELECT Id, ConvertedOpportunity.StageName, ConvertedOpportunity.IsWon FROM Lead "
        "WHERE IsConverted = true AND ConvertedOpportunity.SystemModstamp >= 2000-01-01T00:00:00Z "
        "ORDER BY ConvertedOpportunity.SystemModstamp, Id"
    )
    rows = sf.query(soql)["records"]
    assert [r["Id"] for r in rows] == [second, first]  # the later change of the Opportunity last
    assert rows[1]["ConvertedOpportunity"]["StageName"] == "Closed Won"
    won = sf.query("SELECT Id FROM Lead WHERE ConvertedOpportunity.IsWon = true")["records"]
    assert [r["Id"] for r in won] == [first]


def test_query_all_shows_a_deleted_opportunity(sf: Client) -> None:
    record_id = sf.Opportunity.create(OPPORTUNITY)["id"]
    sf.Opportunity.delete(record_id)
    soql = f"SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{record_id}'"
    assert sf.query(soql)["totalSize"] == 0
    assert sf.query_all(soql, include_deleted=True)["records"][0]["IsDeleted"] is True


def test_close_date_is_a_date(sf: Client) -> None:
    record_id = sf.Opportunity.create({**OPPORTUNITY, "CloseDate": "2027-02-01"})["id"]
    assert date.fromisoformat(sf.Opportunity.get(record_id)["CloseDate"]) == date(2027, 2, 1)


def test_a_won_opportunity_keeps_its_win_reason(sf: Client) -> None:
    record_id = sf.Opportunity.create(
        {**OPPORTUNITY, "StageName": "Closed Won", "Win_Reason__c": "Product Fit"}
    )["id"]
    found = sf.Opportunity.get(record_id)
    assert (found["IsWon"], found["Win_Reason__c"]) == (True, "Product Fit")


def test_a_converted_lead_reads_its_contact_through_the_relationship(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    lead_id = new_lead(sf, City="Porto", Street="Rua das Flores 1")
    ids = convert(server, http, {"lead_id": lead_id}).json()
    sf.Contact.update(ids["contact_id"], {"Title": "CTO", "MailingCity": "Lisboa"})
    soql = (
        "SELECT Id, Title, City, ConvertedContact.Id, ConvertedContact.Title, "
        "ConvertedContact.MailingCity, ConvertedContact.MailingStreet "
        f"FROM Lead WHERE Id = '{lead_id}'"
    )
    [row] = sf.query(soql)["records"]
    assert (row["Title"], row["City"]) == (None, "Porto")  # the Lead is frozen at conversion
    contact = row["ConvertedContact"]
    assert (contact["Id"], contact["Title"], contact["MailingCity"]) == (
        ids["contact_id"],
        "CTO",
        "Lisboa",
    )
    assert contact["MailingStreet"] == "Rua das Flores 1"  # copied by the conversion


def test_an_edit_of_the_contact_stamps_the_contact_not_the_lead(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    lead_id = new_lead(sf)
    ids = convert(server, http, {"lead_id": lead_id}).json()
    before = sf.Lead.get(lead_id)["SystemModstamp"]
    contact_before = sf.Contact.get(ids["contact_id"])["SystemModstamp"]
    sf.Contact.update(ids["contact_id"], {"Phone": "+351 21 000 0000"})
    assert sf.Contact.get(ids["contact_id"])["SystemModstamp"] > contact_before
    assert sf.Lead.get(lead_id)["SystemModstamp"] == before


def test_converted_leads_are_queried_by_their_contact(
    sf: Client, server: SandboxServer, http: requests.Session
) -> None:
    first = new_lead(sf)
    second = new_lead(sf, Email="ben@acme.io")
    new_lead(sf, Email="cy@acme.io")  # not converted: no Contact, filtered out
    one = convert(server, http, {"lead_id": first}).json()
    convert(server, http, {"lead_id": second})
    sf.Contact.update(one["contact_id"], {"Email": "ana.silva@acme.io"})
    soql = (
        "SELECT Id, ConvertedContact.Email FROM Lead WHERE IsConverted = true AND "
        "ConvertedContact.SystemModstamp >= 2000-01-01T00:00:00Z "
        "ORDER BY ConvertedContact.SystemModstamp, Id"
    )
    rows = sf.query(soql)["records"]
    assert [r["Id"] for r in rows] == [second, first]  # the later change of the Contact last
    assert rows[1]["ConvertedContact"]["Email"] == "ana.silva@acme.io"


def test_a_composite_call_describes_several_objects(sf: Client) -> None:
    body = {
        "compositeRequest": [
            {"method": "GET", "url": f"/services/data/v{sf.sf_version}/sobjects/{name}/describe",
             "referenceId": name}
            for name in ("Opportunity", "Contact", "Nothing__c")
        ]
    }  # fmt: skip
    parts = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    assert [p["httpStatusCode"] for p in parts] == [200, 200, 404]
    assert parts[1]["body"]["name"] == "Contact"
    assert "Win_Reason__c" in {f["name"] for f in parts[0]["body"]["fields"]}
    assert parts[2]["body"][0]["errorCode"] == "NOT_FOUND"
