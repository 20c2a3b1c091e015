"""The Salesforce emulator's Task object (and the queue that may own Leads), driven by
simple-salesforce 1.12.10 over HTTPS on loopback."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.salesforce import (
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    SalesforceEmulator,
)
from leadrelay.sandbox.salesforce.schema import make_id
from leadrelay.sandbox.server import SandboxServer

# simple-salesforce builds sf.Task dynamically (__getattr__ typed as a union).
Client = Any


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[SalesforceEmulator]) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: SandboxServer) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.verify = str(server.ca_bundle)
        session.trust_env = False
        yield session
    # Responses kept by caught exceptions hold sockets; collect them before the server stops.
    gc.collect()


@pytest.fixture(scope="module")
def sf(server: SandboxServer, http: requests.Session) -> Client:
    form = {
        "grant_type": "password",
        "client_id": SANDBOX_CONSUMER_KEY,
        "client_secret": SANDBOX_CONSUMER_SECRET,
        "username": SANDBOX_USERNAME,
        "password": SANDBOX_PASSWORD,
    }
    token = http.post(f"{server.url}/services/oauth2/token", data=form).json()["access_token"]
    return Salesforce(instance_url=server.url, session_id=token, session=http)


@pytest.fixture(autouse=True)
def _clean(server: SandboxServer) -> None:
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()


def _lead(sf: Client, **extra: Any) -> str:
    body = {"LastName": "Silva", "Company": "Acme", "Email": "ana@example.com", **extra}
    return str(sf.Lead.create(body)["id"])


def _contact(sf: Client) -> str:
    return str(sf.Contact.create({"LastName": "Okafor", "Email": "ben@example.com"})["id"])


def _one(sf: Client, soql: str) -> str:
    return str(sf.query(soql)["records"][0]["Id"])


def _queue(sf: Client) -> str:
    return _one(sf, "SELECT Id FROM Group WHERE Type = 'Queue'")


def _error(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    content = exc.value.content
    assert isinstance(content, list)
    return dict(content[0])


# --- create, read, update, delete ----------------------------------------------------------


@pytest.mark.parametrize("who", ["lead", "contact"])
def test_create_on_a_lead_or_contact_returns_a_task_id(sf: Client, who: str) -> None:
    who_id = _lead(sf) if who == "lead" else _contact(sf)
    result = sf.Task.create({"WhoId": who_id, "Subject": "Call back"})
    assert result["success"] is True
    assert result["id"].startswith("00T")
    assert sf.Task.get(result["id"])["WhoId"] == who_id


def test_create_fills_the_defaults_and_the_api_user_as_owner(sf: Client) -> None:
    task = sf.Task.get(sf.Task.create({"WhoId": _lead(sf), "Subject": "Call"})["id"])
    me = _one(sf, f"SELECT Id FROM User WHERE Username = '{SANDBOX_USERNAME}'")
    assert {k: task[k] for k in ("Status", "Priority", "IsClosed", "IsReminderSet")} == {
        "Status": "Not Started",
        "Priority": "Normal",
        "IsClosed": False,
        "IsReminderSet": False,
    }
    assert task["OwnerId"] == me
    assert task["CreatedDate"] == task["LastModifiedDate"] == task["SystemModstamp"]


def test_create_keeps_every_written_field(sf: Client) -> None:
    owner = _one(sf, "SELECT Id FROM User WHERE Username = 'ana.silva@leadrelay.sandbox'")
    account = sf.Account.create({"Name": "Acme", "Website": "acme.example"})["id"]
    body = {
        "WhoId": _lead(sf),
        "WhatId": account,
        "Subject": "Follow up",
        "Description": "Asked for pricing\nsecond line",
        "ActivityDate": "2024-05-02",
        "Status": "In Progress",
        "Priority": "High",
        "OwnerId": owner,
        "IsReminderSet": True,
        "ReminderDateTime": "2024-05-02T09:30:00.000+0000",
    }
    task = sf.Task.get(sf.Task.create(body)["id"])
    assert {k: task[k] for k in body} == body
    assert task["IsHighPriority"] is True


@pytest.mark.parametrize(("status", "closed"), [("Completed", True), ("Deferred", False)])
def test_is_closed_follows_the_status(sf: Client, status: str, closed: bool) -> None:
    task_id = sf.Task.create({"WhoId": _lead(sf), "Subject": "Call"})["id"]
    before = sf.Task.get(task_id)["SystemModstamp"]
    assert sf.Task.update(task_id, {"Status": status}) == 204
    task = sf.Task.get(task_id)
    assert task["IsClosed"] is closed
    assert task["SystemModstamp"] > before


def test_delete_hides_the_task(sf: Client) -> None:
    task_id = sf.Task.create({"WhoId": _lead(sf), "Subject": "Call"})["id"]
    assert sf.Task.delete(task_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Task.get(task_id)


def test_clearing_a_required_picklist_is_refused(sf: Client) -> None:
    task_id = sf.Task.create({"WhoId": _lead(sf), "Subject": "Call"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.update(task_id, {"Priority": None})
    assert _error(exc)["errorCode"] == "REQUIRED_FIELD_MISSING"


# --- query, describe --------------------------------------------------------------------------


@pytest.mark.parametrize("id_length", [18, 15])
def test_query_by_who_id(sf: Client, id_length: int) -> None:
    mine, other = _lead(sf), _lead(sf, Email="other@example.com")
    for who, subject in ((mine, "A"), (other, "B"), (mine, "C")):
        sf.Task.create({"WhoId": who, "Subject": subject})
    soql = f"SELECT Id, Subject FROM Task WHERE WhoId = '{mine[:id_length]}' ORDER BY Subject"
    assert [r["Subject"] for r in sf.query(soql)["records"]] == ["A", "C"]


def test_query_by_due_date_and_open_state(sf: Client) -> None:
    lead = _lead(sf)
    sf.Task.create({"WhoId": lead, "Subject": "due", "ActivityDate": "2024-05-02"})
    sf.Task.create({"WhoId": lead, "Subject": "done", "Status": "Completed"})
    soql = "SELECT Subject FROM Task WHERE IsClosed = false AND ActivityDate = 2024-05-02"
    assert [r["Subject"] for r in sf.query(soql)["records"]] == ["due"]


def test_describe_task(sf: Client) -> None:
    described = sf.Task.describe()
    fields = {f["name"]: f for f in described["fields"]}
    assert described["keyPrefix"] == "00T"
    who = fields["WhoId"]
    assert (who["referenceTo"], who["relationshipName"], who["polymorphicForeignKey"]) == (
        ["Contact", "Lead"],
        "Who",
        True,
    )
    assert fields["OwnerId"]["referenceTo"] == ["User"]
    assert [p["value"] for p in fields["Status"]["picklistValues"]] == [
        "Not Started",
        "In Progress",
        "Completed",
        "Waiting on someone else",
        "Deferred",
    ]
    defaults = {
        name: next(p["value"] for p in fields[name]["picklistValues"] if p["defaultValue"])
        for name in ("Status", "Priority")
    }
    assert defaults == {"Status": "Not Started", "Priority": "Normal"}
    assert not fields["IsClosed"]["createable"] and not fields["IsClosed"]["updateable"]


@pytest.mark.parametrize(
    ("field", "type_", "length"),
    [
        ("Subject", "combobox", 255),
        ("Description", "textarea", 32000),
        ("ActivityDate", "date", 0),
        ("ReminderDateTime", "datetime", 0),
        ("IsReminderSet", "boolean", 0),
    ],
)
def test_describe_task_field_types(sf: Client, field: str, type_: str, length: int) -> None:
    spec = next(f for f in sf.Task.describe()["fields"] if f["name"] == field)
    assert (spec["type"], spec["length"]) == (type_, length)


# --- errors -----------------------------------------------------------------------------------


def _value(sf: Client, kind: str) -> str:
    """An id (or a non-id) of the kind a parametrized error case needs."""
    makers: dict[str, Callable[[], str]] = {
        "account": lambda: str(sf.Account.create({"Name": "Acme"})["id"]),
        "queue": lambda: _queue(sf),
        "missing lead": lambda: make_id("00Q", 999_999),
        "not an id": lambda: "not-an-id",
        "inactive user": lambda: _one(sf, "SELECT Id FROM User WHERE IsActive = false"),
    }
    return makers[kind]()


@pytest.mark.parametrize(
    ("field", "kind", "code", "message"),
    [
        ("WhoId", "account", "FIELD_INTEGRITY_EXCEPTION", "Name ID: id value of incorrect type: "),
        ("WhoId", "missing lead", "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"),
        ("WhoId", "not an id", "MALFORMED_ID", "Name ID: id value of incorrect type: "),
        (
            "OwnerId",
            "queue",
            "FIELD_INTEGRITY_EXCEPTION",
            "Assigned To ID: id value of incorrect type: ",
        ),
        (
            "OwnerId",
            "account",
            "FIELD_INTEGRITY_EXCEPTION",
            "Assigned To ID: id value of incorrect type: ",
        ),
        ("OwnerId", "inactive user", "INACTIVE_OWNER_OR_USER", "operation performed with"),
    ],
)
def test_bad_references_are_refused(
    sf: Client, field: str, kind: str, code: str, message: str
) -> None:
    value = _value(sf, kind)
    body = {"WhoId": _lead(sf), "Subject": "Call", field: value}
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create(body)
    error = _error(exc)
    assert error["errorCode"] == code
    assert error["message"].startswith(message)
    if code != "INACTIVE_OWNER_OR_USER":
        assert error["fields"] == [field]


def test_a_deleted_lead_as_who_is_refused(sf: Client) -> None:
    lead = _lead(sf)
    sf.Lead.delete(lead)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create({"WhoId": lead, "Subject": "Call"})
    assert _error(exc)["errorCode"] == "ENTITY_IS_DELETED"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("Status", "Done", "Status: bad value for restricted picklist field: Done"),
        ("Priority", "Urgent", "Priority: bad value for restricted picklist field: Urgent"),
    ],
)
def test_bad_picklist_values_are_refused(sf: Client, field: str, value: str, message: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create({"WhoId": _lead(sf), field: value})
    error = _error(exc)
    assert (error["errorCode"], error["message"], error["fields"]) == (
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        message,
        [field],
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"IsClosed": True}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"Subject": "x" * 256}, "STRING_TOO_LONG"),
        ({"ActivityDate": "tomorrow"}, "JSON_PARSER_ERROR"),
    ],
)
def test_invalid_task_values_are_refused(sf: Client, body: dict[str, Any], code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create({"WhoId": _lead(sf), **body})
    assert _error(exc)["errorCode"] == code


# --- queues -----------------------------------------------------------------------------------


def test_a_lead_can_be_owned_by_a_queue(sf: Client) -> None:
    queue = _queue(sf)
    lead = _lead(sf, OwnerId=queue)
    assert sf.Lead.get(lead)["OwnerId"] == queue


def test_the_seeded_queue_is_queryable(sf: Client) -> None:
    rows = sf.query("SELECT Name, DeveloperName, Type FROM Group WHERE Type = 'Queue'")["records"]
    assert [(r["Name"], r["DeveloperName"]) for r in rows] == [("Inbound Leads", "Inbound_Leads")]


def test_a_contact_cannot_be_owned_by_a_queue(sf: Client) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Okafor", "OwnerId": _queue(sf)})
    assert _error(exc)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
