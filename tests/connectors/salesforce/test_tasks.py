"""The Salesforce connector's handoff methods against the emulator: ``create_task`` (a Task on
a Lead or Contact, owned by the record's user owner) and ``account_owners`` (paged SOQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from leadrelay.connectors.base import RawRecord
from leadrelay.connectors.errors import Rejected, Retryable
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.sandbox.salesforce import SalesforceEmulator
from leadrelay.sandbox.salesforce.schema import make_id
from leadrelay.sandbox.server import SandboxServer
from tests.connectors.salesforce.conftest import admin, stats

Make = Callable[..., SalesforceConnector]
DUE = datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
ANA = "ana.silva@leadrelay.sandbox"
API_USER = "integration@leadrelay.sandbox"
TASK_FIELDS = (
    "WhoId, Subject, Description, ActivityDate, Status, Priority, OwnerId, IsReminderSet, "
    "ReminderDateTime"
)


def _emulator(server: SandboxServer) -> SalesforceEmulator:
    emulator = server.sandbox.emulators["salesforce"]
    assert isinstance(emulator, SalesforceEmulator)
    return emulator


def _create(server: SandboxServer, sobject: str, **values: Any) -> str:
    """A record written straight into the emulated org (as the integration user)."""
    emulator = _emulator(server)
    with emulator.lock:
        store = emulator.store
        return store.create(store.schema[sobject], values, store.integration_user_id)


def _user(connector: SalesforceConnector, username: str) -> str:
    soql = f"SELECT Id FROM User WHERE Username = '{username}'"
    return str(connector.query(soql, describe="test")[0]["Id"])


def _queue(connector: SalesforceConnector) -> str:
    soql = "SELECT Id FROM Group WHERE Type = 'Queue'"
    return str(connector.query(soql, describe="test")[0]["Id"])


def _tasks(connector: SalesforceConnector) -> list[RawRecord]:
    return connector.query(f"SELECT {TASK_FIELDS} FROM Task", describe="test")


def _lead(server: SandboxServer, owner: str | None) -> str:
    values: dict[str, Any] = {"LastName": "Silva", "Company": "Acme"}
    if owner is not None:
        values["OwnerId"] = owner
    return _create(server, "Lead", **values)


# -- create_task ---------------------------------------------------------------------------


@pytest.mark.parametrize("sobject", ["Lead", "Contact"])
def test_create_task_writes_every_field_and_assigns_the_owner(
    make_connector: Make, sf_server: SandboxServer, sobject: str
) -> None:
    connector = make_connector()
    ana = _user(connector, ANA)
    values: dict[str, Any] = {"LastName": "Silva", "OwnerId": ana}
    if sobject == "Lead":
        values["Company"] = "Acme"
    record = _create(sf_server, sobject, **values)
    task_id = connector.create_task(record, "Call Ana", "Asked for pricing", DUE)
    assert task_id.startswith("00T")
    assert _tasks(connector) == [
        {
            "attributes": {"type": "Task"},
            "WhoId": record,
            "Subject": "Call Ana",
            "Description": "Asked for pricing",
            "ActivityDate": "2024-05-02",
            "Status": "Not Started",
            "Priority": "High",
            "OwnerId": ana,
            "IsReminderSet": True,
            "ReminderDateTime": "2024-05-02T09:30:00.000+0000",
        }
    ]


def test_create_task_on_a_queue_owned_lead_goes_to_the_api_user(
    make_connector: Make, sf_server: SandboxServer
) -> None:
    connector = make_connector()
    lead = _lead(sf_server, _queue(connector))
    connector.create_task(lead, "Call", "", DUE)
    assert _tasks(connector)[0]["OwnerId"] == _user(connector, API_USER)


def test_create_task_with_an_inactive_owner_goes_to_the_api_user(
    make_connector: Make, sf_server: SandboxServer
) -> None:
    connector = make_connector()
    ana = _user(connector, ANA)
    lead = _lead(sf_server, ana)
    emulator = _emulator(sf_server)
    with emulator.lock:
        # Ana leaves after the lead was assigned to her (users are not writable via the API).
        users = emulator.store.records["User"]
        users[ana] = {**users[ana], "IsActive": False}
    connector.create_task(lead, "Call", "", DUE)
    assert _tasks(connector)[0]["OwnerId"] == _user(connector, API_USER)


def test_create_task_accepts_a_15_character_id(
    make_connector: Make, sf_server: SandboxServer
) -> None:
    connector = make_connector()
    lead = _lead(sf_server, None)
    connector.create_task(lead[:15], "Call", "", DUE)
    assert _tasks(connector)[0]["WhoId"] == lead


@pytest.mark.parametrize(
    ("due", "day", "reminder"),
    [
        (datetime(2024, 5, 1, 23, 30), "2024-05-01", "2024-05-01T23:30:00.000+0000"),
        (
            datetime(2024, 5, 1, 20, 30, tzinfo=timezone(timedelta(hours=-5))),
            "2024-05-02",
            "2024-05-02T01:30:00.000+0000",
        ),
    ],
)
def test_create_task_due_is_the_utc_day_and_moment(
    make_connector: Make, sf_server: SandboxServer, due: datetime, day: str, reminder: str
) -> None:
    connector = make_connector()
    connector.create_task(_lead(sf_server, None), "Call", "", due)
    task = _tasks(connector)[0]
    assert (task["ActivityDate"], task["ReminderDateTime"]) == (day, reminder)


def test_create_task_cuts_the_subject_to_255_characters(
    make_connector: Make, sf_server: SandboxServer
) -> None:
    connector = make_connector()
    connector.create_task(_lead(sf_server, None), "s" * 300, "", DUE)
    assert _tasks(connector)[0]["Subject"] == "s" * 255


def _missing(server: SandboxServer, connector: SalesforceConnector, kind: str) -> str:
    if kind == "deleted lead":
        lead = _lead(server, None)
        connector.delete([lead])
        return lead
    if kind == "account":
        return _create(server, "Account", Name="Acme")
    return {"unknown lead": make_id("00Q", 999_999), "not an id": "x@example.com"}[kind]


@pytest.mark.parametrize("kind", ["unknown lead", "deleted lead", "account", "not an id"])
def test_create_task_on_a_record_that_does_not_exist_is_rejected(
    make_connector: Make, sf_server: SandboxServer, kind: str
) -> None:
    connector = make_connector()
    record = _missing(sf_server, connector, kind)
    with pytest.raises(Rejected) as exc:
        connector.create_task(record, "Call", "", DUE)
    assert exc.value.record == record
    assert record in str(exc.value)
    assert _tasks(connector) == []


def test_create_task_is_not_retried_after_an_unclear_failure(
    make_connector: Make, sf_server: SandboxServer, env: dict[str, str], monkeypatch: Any
) -> None:
    connector = make_connector()
    lead = _lead(sf_server, None)
    real_query_in = connector._query_in

    def then_fail(*args: Any) -> Sequence[RawRecord]:
        rows = real_query_in(*args)
        # After the owner read, every call answers 503: the Task may or may not exist.
        admin(env, "faults", {"error_rate": 1.0, "error_status": 503})
        return rows

    monkeypatch.setattr(connector, "_query_in", then_fail)
    before = stats(env)["by_route"]
    with pytest.raises(Retryable):
        connector.create_task(lead, "Call", "", DUE)
    admin(env, "faults", {})
    after = stats(env)["by_route"]
    posts = {
        route: after[route] - before.get(route, 0)
        for route in after
        if route.startswith("POST") and "sobjects" in route
    }
    assert sum(posts.values()) == 1
    assert _tasks(connector) == []


# -- account_owners ------------------------------------------------------------------------


def test_account_owners_lists_websites_with_owners_oldest_first(
    make_connector: Make, sf_server: SandboxServer
) -> None:
    connector = make_connector()
    ana = _user(connector, ANA)
    api_user = _user(connector, API_USER)
    _create(sf_server, "Account", Name="B", Website="https://www.b.example/", OwnerId=ana)
    _create(sf_server, "Account", Name="No site")
    _create(sf_server, "Account", Name="A", Website="A.example")
    assert connector.account_owners() == [
        ("https://www.b.example/", ana),
        ("A.example", api_user),
    ]


def test_account_owners_reads_every_page_in_as_few_calls_as_possible(
    make_connector: Make, sf_server: SandboxServer
) -> None:
    connector = make_connector()
    connector.client()
    count = 2_100  # more than one 2,000-row query page
    for n in range(count):
        _create(sf_server, "Account", Name=f"Acme {n}", Website=f"acme{n}.example")
    before = connector.api_calls
    owners = connector.account_owners()
    assert connector.api_calls - before == 2
    assert [website for website, _ in owners] == [f"acme{n}.example" for n in range(count)]
