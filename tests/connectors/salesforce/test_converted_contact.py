"""A converted Lead's later person changes (issue #13): they are made on its Contact, read with
the Lead (``ConvertedContact.*``) and again whenever the Contact changes, in the same Composite
call as the Lead and Opportunity reads, and stand for the Lead's frozen fields under its id."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.connectors.salesforce.connector import (
    CONVERTED_CONTACT_FIELDS,
    join_cursor,
    split_cursor,
)
from leadrelay.mappings.engine import load_mapping
from tests.connectors.salesforce.conftest import patch_record, stats
from tests.connectors.salesforce.test_outcome import (
    OPEN,
    convert,
    create,
    read,
    records,
)

Make = Callable[..., SalesforceConnector]


def patch_contact(connector: SalesforceConnector, record_id: str, fields: dict[str, Any]) -> None:
    patch_record(connector, "Contact", record_id, fields)


def test_a_converted_lead_reads_its_contacts_details_in_its_own_fields(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    patch_contact(
        connector,
        ids["contact_id"],
        {"Title": "CTO", "Phone": "+351210000000", "MailingCity": "Porto"},
    )
    row = records(read(connector, None)[0])[lead_id]
    assert (row["Title"], row["Phone"], row["City"]) == ("CTO", "+351210000000", "Porto")
    assert row["ConvertedContact.Id"] == ids["contact_id"]
    values = load_mapping("salesforce").to_lead(row).values
    assert (values["job_title"], values["city"]) == ("CTO", "Porto")


def test_a_lead_not_converted_keeps_its_own_fields(make_connector: Make) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    row = records(read(connector, None)[0])[lead_id]
    assert (row["Email"], row["LastName"]) == ("lead0@example.com", "Silva0")
    contact = {name: row[name] for name in CONVERTED_CONTACT_FIELDS if name in row}
    assert "ConvertedContact.Email" in contact and set(contact.values()) == {None}


def test_a_contact_field_is_read_for_a_lead_field_that_is_read(make_connector: Make) -> None:
    fields = make_connector().lead_fields()
    assert {"City", "ConvertedContact.MailingCity"} <= set(fields)
    assert "MobilePhone" not in fields and "ConvertedContact.MobilePhone" not in fields


def test_a_later_change_of_the_contact_is_read_under_the_lead_id(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(overlap=timedelta(0))
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    _, cursor = read(connector, None)
    time.sleep(1.1)  # past the second of the conversion: the Lead read itself finds nothing
    _, cursor = read(connector, cursor)
    patch_contact(connector, ids["contact_id"], {"Email": "ana.silva@example.com"})
    pages, after = read(connector, cursor)
    assert list(records(pages)) == [lead_id]
    row = records(pages)[lead_id]
    assert (row["Email"], row["IsConverted"]) == ("ana.silva@example.com", True)
    earlier, later = split_cursor(cursor)[2], split_cursor(after)[2]
    assert earlier is not None and later is not None and later > earlier


def test_a_lead_changed_with_its_contact_is_given_once(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    convert(env, lead_id, OPEN)  # stamps the Lead, the Contact and the Opportunity
    ids = [str(r["Id"]) for page in read(connector, None)[0] for r in page.records]
    assert ids == [lead_id]


def test_an_idle_read_costs_one_call_with_the_contact_followed(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(overlap=timedelta(0))
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    _, cursor = read(connector, None)
    patch_contact(connector, ids["contact_id"], {"Title": "VP Sales"})
    pages, cursor = read(connector, cursor)
    assert records(pages)[lead_id]["Title"] == "VP Sales"
    time.sleep(1.1)
    _, cursor = read(connector, cursor)  # the look-back window, read once more
    before = stats(env)["requests"]["salesforce"]
    pages, _ = read(connector, cursor)
    assert stats(env)["requests"]["salesforce"] == before + 1
    assert [len(p.records) for p in pages] == [0]


def test_an_older_cursor_reads_the_contacts_of_converted_leads_once(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(overlap=timedelta(0))
    plain, converted = create(connector, 2)
    convert(env, converted, OPEN)
    _, cursor = read(connector, None)
    time.sleep(1.1)
    _, cursor = read(connector, cursor)
    lead, opportunity, _contact = split_cursor(cursor)
    older = join_cursor(lead, opportunity)  # the cursor of the version without the Contact
    assert older is not None and older.count("|") == 3
    pages, after = read(connector, older)
    assert list(records(pages)) == [converted]  # every converted Lead's Contact, once
    assert split_cursor(after)[2] is not None
    assert plain not in records(pages)


@pytest.mark.parametrize(
    "cursor",
    [
        "2026-01-02T03:04:05.678+0000|00Q000000000001AAA",
        "2026-01-02T03:04:05.678+0000|00Q000000000001AAA|2026-01-02T03:04:06.000+0000|00Q000000000002AAA",
        "2026-01-02T03:04:05.678+0000|00Q000000000001AAA|||2026-01-02T03:04:07.000+0000|00Q000000000003AAA",
        "2026-01-02T03:04:05.678+0000||2026-01-02T03:04:06.000+0000||2026-01-02T03:04:07.000+0000|",
    ],
)
def test_a_cursor_reads_back_as_written(cursor: str) -> None:
    assert join_cursor(*split_cursor(cursor)) == cursor


@pytest.mark.parametrize("cursor", ["", "2026-01-02T03:04:05Z", "x|y", "a|b|c", "||||||"])
def test_a_foreign_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="not a Salesforce cursor"):
        split_cursor(cursor)


def test_a_lookup_by_the_leads_email_finds_it_after_the_contacts_email_changed(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector()
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    patch_contact(connector, ids["contact_id"], {"Email": "new.address@example.com"})
    found = make_connector().lookup(emails=["lead0@example.com"])
    assert found["lead0@example.com"]["Id"] == lead_id
    assert found["lead0@example.com"]["Email"] == "new.address@example.com"


def test_a_contact_field_hidden_from_the_user_leaves_the_leads_value(
    make_connector: Make, env: dict[str, str]
) -> None:
    from tests.connectors.salesforce.conftest import admin

    connector = make_connector()
    [lead_id] = create(connector, 1)
    ids = convert(env, lead_id, OPEN)
    patch_contact(connector, ids["contact_id"], {"Title": "CTO", "LastName": "Souza"})
    admin(env, "schema", {"system": "salesforce", "remove_field": "Contact.Title"})
    row = records(read(make_connector(), None)[0])[lead_id]
    assert "ConvertedContact.Title" not in row
    assert (row["Title"], row["LastName"]) == (None, "Souza")


def test_describe_holds_the_contact_fields_read_only(make_connector: Make) -> None:
    schema = make_connector().describe()
    city = schema.field("ConvertedContact.MailingCity")
    assert city.read_only and not city.required
    assert load_mapping("salesforce").validate_against(schema) == []
