"""The Zoho connector's handoff methods against the sandbox: tasks, account owners, duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from leadrelay.connectors.errors import Rejected
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator
from leadrelay.sandbox.zoho.schema import API_USER, SEEDED_USERS
from leadrelay.sandbox.zoho.store import StoredRecord
from tests.connectors.zoho.test_contract import FAST, sandbox_settings
from tests.zoho_sandbox import zoho_emulator, zoho_server  # noqa: F401 (fixtures)

BRUNO = SEEDED_USERS[1]
CHEN = SEEDED_USERS[2]
DISABLED = SEEDED_USERS[5]
DUE = datetime(2024, 6, 3, 15, 30, tzinfo=UTC)


@pytest.fixture
def zoho(server: SandboxServer) -> Iterator[ZohoConnector]:
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()
    with ZohoConnector(sandbox_settings(server.env()), "zoho", retry=FAST) as connector:
        yield connector


def add(emulator: ZohoEmulator, module: str, **values: Any) -> StoredRecord:
    with emulator.lock:
        return emulator.modules[module].insert(values)


def stored_task(emulator: ZohoEmulator, task_id: str) -> dict[str, Any]:
    with emulator.lock:
        return dict(emulator.modules["Tasks"].records[task_id].values)


# -- create_task ---------------------------------------------------------------------------


def test_a_task_is_created_on_the_lead_for_its_owner(
    zoho: ZohoConnector, emulator: ZohoEmulator
) -> None:
    lead = add(emulator, "Leads", Last_Name="Silva", Owner=BRUNO.lookup())
    task_id = zoho.create_task(lead.id, "Call Silva", "Hot lead: no first action", DUE)
    task = stored_task(emulator, task_id)
    assert task["What_Id"]["id"] == lead.id
    assert task["$se_module"] == "Leads"
    assert task["Owner"]["id"] == BRUNO.id
    assert (task["Subject"], task["Description"]) == ("Call Silva", "Hot lead: no first action")
    assert (task["Status"], task["Priority"]) == ("Not Started", "High")


@pytest.mark.parametrize(
    ("due", "day"),
    [
        (datetime(2024, 6, 3, 23, 30, tzinfo=timezone(timedelta(hours=-5))), "2024-06-04"),
        (datetime(2024, 6, 4, 2, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))), "2024-06-03"),
        (datetime(2024, 6, 3, 23, 59), "2024-06-03"),
    ],
    ids=["behind-utc", "ahead-of-utc", "naive-is-utc"],
)
def test_the_due_date_is_dues_utc_date(
    zoho: ZohoConnector, emulator: ZohoEmulator, due: datetime, day: str
) -> None:
    lead = add(emulator, "Leads", Last_Name="Silva")
    assert stored_task(emulator, zoho.create_task(lead.id, "s", "b", due))["Due_Date"] == day


def test_a_long_subject_is_cut_to_255_characters(
    zoho: ZohoConnector, emulator: ZohoEmulator
) -> None:
    lead = add(emulator, "Leads", Last_Name="Silva")
    task_id = zoho.create_task(lead.id, "S" * 300, "body", DUE)
    assert stored_task(emulator, task_id)["Subject"] == "S" * 255


def test_a_lead_owned_by_a_deactivated_user_gets_a_task_for_the_api_user(
    zoho: ZohoConnector, emulator: ZohoEmulator
) -> None:
    lead = add(emulator, "Leads", Last_Name="Silva")
    with emulator.lock:
        lead.values["Owner"] = DISABLED.lookup()  # deactivated after it was assigned
    task_id = zoho.create_task(lead.id, "Call", "body", DUE)
    assert stored_task(emulator, task_id)["Owner"]["id"] == API_USER.id
    with emulator.lock:
        assert len(emulator.modules["Tasks"].records) == 1


@pytest.mark.parametrize("record_id", ["5725767000009999999", "../Accounts", ""])
def test_a_task_on_a_lead_that_does_not_exist_is_rejected_naming_it(
    zoho: ZohoConnector, emulator: ZohoEmulator, record_id: str
) -> None:
    with pytest.raises(Rejected) as caught:
        zoho.create_task(record_id, "Call", "body", DUE)
    assert caught.value.record == record_id
    with emulator.lock:
        assert emulator.modules["Tasks"].records == {}


def test_create_task_makes_two_calls(zoho: ZohoConnector, emulator: ZohoEmulator) -> None:
    lead = add(emulator, "Leads", Last_Name="Silva")
    zoho.health()
    before = zoho.api_calls
    zoho.create_task(lead.id, "Call", "body", DUE)
    assert zoho.api_calls - before == 2


# -- account_owners ------------------------------------------------------------------------


def test_account_owners_lists_accounts_with_a_website_and_an_owner_oldest_first(
    zoho: ZohoConnector, emulator: ZohoEmulator
) -> None:
    first = add(emulator, "Accounts", Account_Name="A", Website="HTTPS://Acme.example/")
    add(emulator, "Accounts", Account_Name="B")
    no_owner = add(emulator, "Accounts", Account_Name="C", Website="orphan.example")
    last = add(
        emulator, "Accounts", Account_Name="D", Website="www.beta.example", Owner=CHEN.lookup()
    )
    with emulator.lock:
        del no_owner.values["Owner"]
        # Created in the same instant as the first: the id decides.
        last.created = first.created
    assert zoho.account_owners() == [
        ("HTTPS://Acme.example/", API_USER.id),
        ("www.beta.example", CHEN.id),
    ]


def test_account_owners_sorts_by_creation_time(zoho: ZohoConnector, emulator: ZohoEmulator) -> None:
    older = add(emulator, "Accounts", Account_Name="Old", Website="old.example")
    newer = add(emulator, "Accounts", Account_Name="New", Website="new.example")
    with emulator.lock:
        older.created, newer.created = newer.created, older.created - timedelta(days=1)
    assert [site for site, _ in zoho.account_owners()] == ["new.example", "old.example"]


def test_account_owners_of_an_empty_org_is_empty(zoho: ZohoConnector) -> None:
    assert zoho.account_owners() == []


def test_account_owners_reads_every_page_with_the_fewest_calls(
    zoho: ZohoConnector, emulator: ZohoEmulator
) -> None:
    with emulator.lock:
        for n in range(2050):
            emulator.modules["Accounts"].insert({"Account_Name": f"C{n}", "Website": f"c{n}.io"})
    zoho.health()
    before = zoho.api_calls
    owners = zoho.account_owners()
    # page=11 is refused by the sandbox: the last 50 came with a page_token.
    assert [site for site, _ in owners] == [f"c{n}.io" for n in range(2050)]
    assert zoho.api_calls - before == 11


# -- find_by_email -------------------------------------------------------------------------


def test_find_by_email_returns_every_duplicate(zoho: ZohoConnector, emulator: ZohoEmulator) -> None:
    copies = [add(emulator, "Leads", Last_Name=f"C{n}", Email="dup@x.io").id for n in range(3)]
    add(emulator, "Leads", Last_Name="Other", Email="other@x.io")
    found = zoho.find_by_email(["DUP@x.io"])
    assert [record["id"] for record in found] == copies


def test_find_by_email_searches_ten_emails_per_call(
    zoho: ZohoConnector, emulator: ZohoEmulator
) -> None:
    emails = [f"p{n}@x.io" for n in range(12)]
    for email in emails:
        add(emulator, "Leads", Last_Name="P", Email=email)
    zoho.health()
    before = zoho.api_calls
    found = zoho.find_by_email([*emails, emails[0]])
    assert sorted(record["Email"] for record in found) == sorted(emails)
    assert zoho.api_calls - before == 2


def test_find_by_email_refuses_a_blank_email(zoho: ZohoConnector) -> None:
    with pytest.raises(ValueError, match="blank"):
        zoho.find_by_email(["a@x.io", " "])


def test_the_private_search_still_answers(zoho: ZohoConnector, emulator: ZohoEmulator) -> None:
    lead = add(emulator, "Leads", Last_Name="Silva", Email="ana@x.io")
    assert [row["id"] for row in zoho._search_emails(["ana@x.io"])] == [lead.id]
