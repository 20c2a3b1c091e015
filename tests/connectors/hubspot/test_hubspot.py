"""HubSpot-specific behaviour of the connector, against the sandbox's HubSpot emulator."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import pytest

from leadrelay.connectors.base import Capability, UpsertInput, WriteOutcome
from leadrelay.connectors.credentials import MemoryCredentialCache
from leadrelay.connectors.errors import AuthError, RateLimited, Rejected, Retryable
from leadrelay.connectors.hubspot import HubSpotConnector, PropertySpec
from leadrelay.connectors.hubspot.connector import ReadCursor, decode_cursor, encode_cursor
from leadrelay.connectors.hubspot.deals import join_cursor
from leadrelay.connectors.hubspot.fields import custom_property_specs, default_read_properties
from leadrelay.connectors.policy import ManualClock, RetryPolicy
from leadrelay.model import RejectionReason
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.hubspot import (
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    HubSpotEmulator,
)
from leadrelay.sandbox.hubspot import search as search_module
from leadrelay.sandbox.server import SandboxServer
from tests.connectors.contract import read_all
from tests.connectors.hubspot.conftest import MakeConnector, oauth_settings, private_app_settings
from tests.hubspot_sandbox import hubspot_api

UPSERT_ROUTE = "POST /hubspot/crm/v3/objects/contacts/batch/upsert"
UPDATE_ROUTE = "POST /hubspot/crm/v3/objects/contacts/batch/update"
SEARCH_ROUTE = "POST /hubspot/crm/v3/objects/contacts/search"


def lead(email: str, **fields: str) -> UpsertInput:
    return UpsertInput(email, {"email": email, "lastname": "Silva", **fields})


def routes(server: SandboxServer) -> Counter[str]:
    with server.sandbox.lock:
        return Counter(server.sandbox.stats.by_route)


def created_ids(connector: HubSpotConnector, *emails: str) -> list[str]:
    results = connector.upsert([lead(e) for e in emails])
    assert all(r.outcome is WriteOutcome.CREATED for r in results), results
    return [str(r.external_id) for r in results]


# -- read_changes -------------------------------------------------------------------------


#: A search read's cursor before every record: the keyset search from the start (a first read,
#: from None, lists the contacts instead; see test_full_read.py).
FROM_THE_START = encode_cursor(0, None)


def freeze_clock(emulator: HubSpotEmulator, seconds: float) -> None:
    """Make every write of the emulator carry one timestamp (in ms)."""
    emulator.store.clock = lambda: seconds


@pytest.mark.parametrize("sizes", [(130,), (30, 130, 30), (45, 1, 45)], ids=str)
def test_read_changes_splits_windows_so_shared_timestamps_are_read_once(
    sizes: tuple[int, ...],
    make_connector: MakeConnector,
    emulator: HubSpotEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pages of 40, and a search that refuses to page past 50 results (HubSpot's 10,000 cap,
    # scaled down): more records share one millisecond than a page or a query can hold.
    monkeypatch.setattr(HubSpotConnector, "page_size", 40)
    monkeypatch.setattr(search_module, "MAX_RESULTS", 50)
    connector = make_connector()
    expected: list[str] = []
    for group, size in enumerate(sizes):
        freeze_clock(emulator, 1_700_000_000 + group)
        emails = [f"g{group}-{n}@example.com" for n in range(size)]
        for start in range(0, size, 100):
            expected += created_ids(connector, *emails[start : start + 100])

    records, cursor = read_all(connector, FROM_THE_START)

    ids = [str(r["hs_object_id"]) for r in records]
    assert sorted(ids, key=int) == sorted(expected, key=int)  # every record, exactly once
    stamps = [str(r["lastmodifieddate"]) for r in records]
    assert stamps == sorted(stamps)
    assert read_all(connector, cursor)[0] == []  # the finished read's cursor is past them all


def test_an_idle_read_costs_one_search(
    make_connector: MakeConnector, emulator: HubSpotEmulator, server: SandboxServer
) -> None:
    connector = make_connector()
    freeze_clock(emulator, 1_700_000_000)  # long before the read
    created_ids(connector, "ada@example.com", "bob@example.com")
    _, cursor = read_all(connector, None)
    before = routes(server)

    records, later = read_all(connector, cursor)

    assert records == []
    assert later is not None
    assert routes(server) - before == Counter({SEARCH_ROUTE: 1})


def test_the_archived_list_is_read_again_once_it_is_due(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector(deletions_every_s=0)
    _, cursor = read_all(connector, None)
    before = routes(server)

    read_all(connector, cursor)

    assert routes(server) - before == Counter(
        {SEARCH_ROUTE: 1, "GET /hubspot/crm/v3/objects/contacts": 1}
    )


@pytest.mark.parametrize("option", ["look_back_s", "deletions_every_s"])
def test_a_negative_interval_is_refused(make_connector: MakeConnector, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        make_connector(**{option: -1})


def test_a_record_edited_between_pages_is_read_in_this_run_or_the_next(
    make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HubSpotConnector, "page_size", 5)
    connector = make_connector()
    ids = created_ids(connector, *(f"p{n}@example.com" for n in range(12)))
    pages = connector.read_changes(FROM_THE_START)
    first = next(pages)
    read_early, not_yet = str(first.records[0]["hs_object_id"]), ids[-1]
    connector.update({read_early: {"firstname": "Edited"}, not_yet: {"firstname": "Edited"}})

    seen = [r for page in pages for r in page.records]
    cursor = read_all(connector, None)[1]
    seen += read_all(connector, cursor)[0]

    edited = {str(r["hs_object_id"]) for r in seen if r.get("firstname") == "Edited"}
    assert {read_early, not_yet} <= edited


def test_a_record_the_index_shows_late_is_read_by_the_next_run(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector(look_back_s=5)
    _, cursor = read_all(connector, None)
    server.sandbox.set_faults(Faults(search_lag_s=1.0, systems=["hubspot"]))
    [late] = created_ids(connector, "late@example.com")
    records, cursor = read_all(connector, cursor)
    assert late not in {r["hs_object_id"] for r in records}  # not indexed yet
    time.sleep(1.2)

    records, _ = read_all(connector, cursor)

    assert late in {r["hs_object_id"] for r in records}


def test_read_changes_from_an_empty_account_gives_a_cursor_only(
    make_connector: MakeConnector,
) -> None:
    pages = list(make_connector().read_changes(None))
    assert [(p.records, p.deleted) for p in pages] == [([], ())]
    assert pages[0].cursor is not None


# -- deletions and merges -------------------------------------------------------------------


def test_a_contact_archived_since_the_last_archived_read_is_reported_deleted(
    make_connector: MakeConnector, emulator: HubSpotEmulator
) -> None:
    connector = make_connector(deletions_every_s=0)
    freeze_clock(emulator, 1_700_000_000)  # archived long before the first read
    [old] = created_ids(connector, "old@example.com")
    connector.delete([old])
    emulator.store.clock = time.time
    _, cursor = read_all(connector, None)
    [gone] = created_ids(connector, "gone@example.com")
    connector.delete([gone])

    deleted = [d for page in connector.read_changes(cursor) for d in page.deleted]

    assert [(d.record_id, d.merged_into) for d in deleted] == [(gone, None)]
    assert deleted[0].at is not None


def test_a_deletion_seen_while_the_archived_list_is_not_due_is_reported_when_it_is(
    make_connector: MakeConnector,
) -> None:
    connector = make_connector()
    _, cursor = read_all(connector, None)
    [gone] = created_ids(connector, "gone@example.com")
    connector.delete([gone])
    not_due = [d for page in connector.read_changes(cursor) for d in page.deleted]
    _, cursor = read_all(connector, cursor)

    due = make_connector(deletions_every_s=0)
    deleted = [d.record_id for page in due.read_changes(cursor) for d in page.deleted]

    assert (not_due, deleted) == ([], [gone])


def test_a_read_that_finds_changes_reads_the_archived_list_before_it_is_due(
    make_connector: MakeConnector,
) -> None:
    connector = make_connector()  # the default interval: an hour
    _, cursor = read_all(connector, None)
    [gone] = created_ids(connector, "gone@example.com")
    connector.delete([gone])
    created_ids(connector, "edited@example.com")

    deleted = [d.record_id for page in connector.read_changes(cursor) for d in page.deleted]

    assert deleted == [gone]


def merge_contacts(server: SandboxServer, primary: str, other: str) -> dict[str, Any]:
    """Merge ``other`` into ``primary`` in the sandbox's HubSpot; the new record."""
    merged: dict[str, Any] = hubspot_api(
        server,
        "POST",
        "/crm/v3/objects/contacts/merge",
        {"primaryObjectId": primary, "objectIdToMerge": other},
    )
    return merged


def test_a_merge_reports_both_former_ids_merged_into_the_new_record(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    primary, other = created_ids(connector, "ada@example.com", "ada.l@example.com")
    _, cursor = read_all(connector, None)
    merged = merge_contacts(server, primary, other)

    pages = list(connector.read_changes(cursor))

    deleted = {d.record_id: d.merged_into for page in pages for d in page.deleted}
    assert deleted == {primary: merged["id"], other: merged["id"]}
    assert merged["id"] in {r["hs_object_id"] for page in pages for r in page.records}


def test_a_lookup_by_a_merged_away_id_answers_the_new_record(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    primary, other = created_ids(connector, "ada@example.com", "ada.l@example.com")
    merged = merge_contacts(server, primary, other)

    found = connector.lookup(ids=[other])

    assert found[other]["hs_object_id"] == merged["id"]


@pytest.mark.parametrize("cursor", ["", "abc", "12:x", "12", "12:3:x", "1:2:3:4", "x:1:2"])
def test_a_malformed_cursor_is_refused(make_connector: MakeConnector, cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid HubSpot cursor"):
        list(make_connector().read_changes(cursor))


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(1_700_000_000_123, 42)) == ReadCursor(
        1_700_000_000_123, 42, None
    )
    assert decode_cursor(encode_cursor(5, None, 9)) == ReadCursor(5, None, 9)


def test_a_cursor_of_the_earlier_two_part_form_resumes_a_look_back_before_it(
    make_connector: MakeConnector, emulator: HubSpotEmulator
) -> None:
    connector = make_connector(read_archived=False)
    freeze_clock(emulator, 1_700_000_000)
    [old] = created_ids(connector, "old@example.com")
    freeze_clock(emulator, 1_700_000_010)
    [recent] = created_ids(connector, "recent@example.com")
    freeze_clock(emulator, 1_700_000_012)
    [newest] = created_ids(connector, "newest@example.com")

    records, _ = read_all(connector, f"1700000012000:{newest}")

    assert [r["hs_object_id"] for r in records] == [recent, newest]
    assert old not in {r["hs_object_id"] for r in records}


def test_read_properties_choose_what_is_returned(make_connector: MakeConnector) -> None:
    connector = make_connector(read_properties=["firstname"])
    connector.upsert([lead("props@example.com", firstname="Ada", company="Acme")])
    record = connector.lookup(emails=["props@example.com"])["props@example.com"]
    assert record["firstname"] == "Ada"
    assert "company" not in record and {"email", "hs_object_id", "lastmodifieddate"} <= set(record)


def test_default_read_properties_come_from_the_shipped_mapping() -> None:
    names = default_read_properties()
    assert {"email", "lifecyclestage", "hs_lead_status", "utm_source", "hs_object_id"} <= set(names)
    assert len(names) == len(set(names))


# -- upsert -------------------------------------------------------------------------------


def test_emails_are_lower_cased(make_connector: MakeConnector) -> None:
    connector = make_connector()
    [first] = connector.upsert([lead("MiXeD.Case@Example.COM")])
    [again] = connector.upsert([lead("mixed.case@EXAMPLE.com", firstname="Ada")])
    assert (first.outcome, again.outcome) == (WriteOutcome.CREATED, WriteOutcome.UPDATED)
    assert first.external_id == again.external_id
    found = connector.lookup(emails=["MIXED.case@example.com"])
    assert found["mixed.case@example.com"]["email"] == "mixed.case@example.com"


def test_an_input_without_email_fails_alone(make_connector: MakeConnector) -> None:
    results = make_connector().upsert(
        [UpsertInput("nomail", {"firstname": "Ada"}), lead("ok@example.com")]
    )
    error = results[0].error
    assert isinstance(error, Rejected) and error.field == "email"
    assert error.message == "HubSpot upserts by email; the record has none"
    assert results[1].outcome is WriteOutcome.CREATED


def test_a_207_entry_fails_only_its_record_with_hubspots_words(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    results = connector.upsert(
        [lead("a@example.com"), lead("b@example.com", numemployees="many"), lead("c@example.com")]
    )
    assert [r.outcome for r in results] == [
        WriteOutcome.CREATED,
        WriteOutcome.FAILED,
        WriteOutcome.CREATED,
    ]
    error = results[1].error
    assert isinstance(error, Rejected)
    assert (error.record, error.field, error.code) == (
        "b@example.com",
        "numemployees",
        "INVALID_OPTION",
    )
    assert error.message.startswith("many was not one of the allowed options")
    assert routes(server)[UPSERT_ROUTE] == 1


def test_a_whole_batch_refusal_is_narrowed_to_the_bad_input(
    make_connector: MakeConnector, server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without trace ids HubSpot fails the whole batch for one bad input (facts §1).
    monkeypatch.setattr(HubSpotConnector, "write_trace_ids", False)
    connector = make_connector()
    inputs = [lead(f"n{n}@example.com") for n in range(8)]
    inputs[5] = lead("n5@example.com", lifecyclestage="bogus")
    before = connector.api_calls

    results = connector.upsert(inputs)

    assert [r.ref for r in results if not r.ok] == ["n5@example.com"]
    error = results[5].error
    assert isinstance(error, Rejected) and error.field == "lifecyclestage"
    assert "bogus was not one of the allowed options" in error.message
    assert all(r.outcome is WriteOutcome.CREATED for i, r in enumerate(results) if i != 5)
    assert connector.api_calls - before <= 1 + 2 * len(inputs)
    assert len(connector.lookup(emails=[i.ref for i in inputs])) == 7


def test_a_409_existing_id_becomes_an_update_of_that_contact(
    make_connector: MakeConnector,
) -> None:
    connector = make_connector()
    first, second = created_ids(connector, "first@example.com", "second@example.com")
    # The lead was linked to `first`, but its email now belongs to `second`: HubSpot answers
    # 409 "Contact already exists. Existing ID: <second>".
    [result] = connector.upsert(
        [UpsertInput("lead-1", {"email": "second@example.com", "firstname": "Moved"}, first)]
    )
    assert (result.outcome, result.external_id) == (WriteOutcome.UPDATED, second)
    found = connector.lookup(ids=[first, second])
    assert found[second]["firstname"] == "Moved"
    assert found[first]["email"] == "first@example.com" and found[first]["firstname"] is None


def test_an_external_id_that_is_gone_falls_back_to_the_email(
    make_connector: MakeConnector,
) -> None:
    connector = make_connector()
    [result] = connector.upsert([UpsertInput("x", {"email": "gone@example.com"}, "987654")])
    assert result.outcome is WriteOutcome.CREATED and result.external_id != "987654"


def test_the_same_email_twice_in_one_call_is_written_in_order(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    results = connector.upsert(
        [lead("twice@example.com", firstname="One"), lead("TWICE@example.com", firstname="Two")]
    )
    assert [r.outcome for r in results] == [WriteOutcome.CREATED, WriteOutcome.UPDATED]
    assert connector.lookup(emails=["twice@example.com"])["twice@example.com"]["firstname"] == "Two"
    assert routes(server)[UPSERT_ROUTE] == 2


def test_upsert_costs_one_call_per_hundred(make_connector: MakeConnector) -> None:
    connector = make_connector()
    before = connector.api_calls
    results = connector.upsert([lead(f"bulk{n}@example.com") for n in range(250)])
    assert all(r.outcome is WriteOutcome.CREATED for r in results)
    assert connector.api_calls - before == 3


# -- lifecycle stage ----------------------------------------------------------------------


def test_a_backward_stage_is_ignored_unless_forced(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    [created] = connector.upsert([lead("stage@example.com", lifecyclestage="opportunity")])
    record_id = str(created.external_id)

    [plain] = connector.upsert([lead("stage@example.com", lifecyclestage="lead")])
    assert plain.outcome is WriteOutcome.UPDATED
    assert connector.lookup(ids=[record_id])[record_id]["lifecyclestage"] == "opportunity"

    updates_before = routes(server)[UPDATE_ROUTE]
    [forced] = connector.force_lifecycle_stage({record_id: "lead"})

    assert (forced.ref, forced.outcome) == (record_id, WriteOutcome.UPDATED)
    assert connector.lookup(ids=[record_id])[record_id]["lifecyclestage"] == "lead"
    assert routes(server)[UPDATE_ROUTE] - updates_before == 2  # clear, then set: two requests


def test_forcing_an_unknown_record_fails_it(make_connector: MakeConnector) -> None:
    [result] = make_connector().force_lifecycle_stage({"424242": "lead"})
    assert not result.ok and isinstance(result.error, Rejected)
    assert result.error.record == "424242"


# -- update, delete, describe, properties, owners ------------------------------------------


def test_update_of_an_unknown_id_fails_that_id_only(make_connector: MakeConnector) -> None:
    connector = make_connector()
    [known] = created_ids(connector, "known@example.com")
    results = connector.update({known: {"firstname": "K"}, "555555": {"firstname": "U"}})
    assert [(r.ref, r.ok) for r in results] == [(known, True), ("555555", False)]
    assert results[1].error is not None and "not found" in results[1].error.message.lower()


def test_delete_archives(make_connector: MakeConnector, emulator: HubSpotEmulator) -> None:
    connector = make_connector()
    [record_id] = created_ids(connector, "del@example.com")
    assert [r.ok for r in connector.delete([record_id])] == [True]
    assert emulator.store.contacts[int(record_id)].archived_ms is not None


def test_describe_reads_options_read_only_and_the_key(make_connector: MakeConnector) -> None:
    schema = make_connector().describe()
    assert schema.object_name == "contacts"
    assert schema.required == ("email",) and schema.field("email").unique
    assert schema.field("lastmodifieddate").read_only
    assert not schema.field("firstname").read_only
    stages = schema.field("lifecyclestage").picklist_values
    assert stages is not None and "customer" in stages and "lead" in stages


def test_describe_is_counted_and_kept_in_the_shared_cache_across_connectors(
    make_connector: MakeConnector,
) -> None:
    shared = MemoryCredentialCache()  # what a state store gives every run and process
    first = make_connector()
    first.use_credentials(shared)
    first.describe()
    first.describe()
    second = make_connector()
    second.use_credentials(shared)

    second.describe()

    assert (first.api_calls, second.api_calls) == (1, 0)


def test_without_a_shared_cache_each_connector_reads_the_schema_once(
    make_connector: MakeConnector,
) -> None:
    first, second = make_connector(), make_connector()
    first.describe()
    first.describe()
    second.describe()
    assert (first.api_calls, second.api_calls) == (1, 1)


def test_a_write_refused_for_a_removed_option_drops_the_kept_schema(
    make_connector: MakeConnector, emulator: HubSpotEmulator
) -> None:
    connector = make_connector()
    connector.describe()
    emulator.change_schema({"remove_option": {"field": "hs_lead_status", "value": "NEW"}})
    [result] = connector.upsert([lead("ana@example.com", hs_lead_status="NEW")])
    assert not result.ok

    statuses = connector.describe().field("hs_lead_status").picklist_values

    assert statuses is not None and "NEW" not in statuses
    assert connector.api_calls == 3  # describe, the refused upsert, describe again


def test_creating_properties_drops_the_kept_schema(make_connector: MakeConnector) -> None:
    connector = make_connector()
    connector.describe()
    connector.ensure_properties([PropertySpec("brand_new", "Brand new")])
    assert "brand_new" in connector.describe().fields


def test_ensure_properties_creates_only_the_missing_ones(
    make_connector: MakeConnector, emulator: HubSpotEmulator
) -> None:
    missing = [
        "utm_term",
        "leadrelay_key",
        "rejection_reason",
        "leadrelay_score",
        "leadrelay_landing_page",
    ]
    for name in missing:
        if emulator.schema.exists(name):
            emulator.change_schema({"remove_field": name})
    connector = make_connector()
    assert connector.ensure_properties() == missing
    assert connector.ensure_properties() == []
    schema = connector.describe()
    reasons = schema.field("rejection_reason").picklist_values
    assert reasons is not None and set(reasons) == {r.value for r in RejectionReason}
    assert schema.field("leadrelay_score").type == "number"
    assert schema.field("leadrelay_key").unique
    landing_page = emulator.schema.properties["leadrelay_landing_page"]
    assert (landing_page["type"], landing_page["label"]) == ("string", "leadrelay landing page")
    assert landing_page["description"] == (
        "URL of the page of the lead's first captured touch (leadrelay)"
    )


def test_ensure_properties_takes_explicit_specs(make_connector: MakeConnector) -> None:
    spec = PropertySpec("lr_extra", "Extra", "enumeration", "select", options=("a", "b"))
    connector = make_connector()
    assert connector.ensure_properties([spec]) == ["lr_extra"]
    assert connector.describe().field("lr_extra").picklist_values == ("a", "b")


def test_custom_property_specs_cover_utm_key_score_reason_tier_landing_page_and_outcome() -> None:
    names = [spec.name for spec in custom_property_specs()]
    assert names == [
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
        "leadrelay_key",
        "rejection_reason",
        "leadrelay_score",
        "leadrelay_qualification_reason",
        "leadrelay_tier",
        "leadrelay_landing_page",
        "leadrelay_outcome",
        "leadrelay_outcome_reason",
        "leadrelay_amount",
    ]


def test_owners_lists_the_portal_users(make_connector: MakeConnector) -> None:
    owners = make_connector().owners()
    assert len(owners) == 4
    assert owners[0].email == "alex.rivera@example.com" and owners[0].name == "Alex Rivera"


def test_health_reports_the_daily_budget(make_connector: MakeConnector) -> None:
    connector = make_connector()
    health = connector.health()
    assert health.ok and health.budget_max == 650_000
    assert health.budget_used is not None and health.budget_used >= 1
    assert connector.supports(Capability.UPSERT) and not connector.supports(Capability.CAPTURE)


# -- auth, typed errors, secrets -----------------------------------------------------------


def test_oauth_refreshes_before_the_token_expires(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    clock = ManualClock()
    connector = make_connector(oauth_settings(server.env()), token_clock=clock.now)
    assert connector.health().ok
    assert connector.health().ok
    assert connector.token_refreshes == 1
    clock.advance(1800 - 60)  # within the refresh margin of the 30-minute token
    assert connector.health().ok
    assert connector.token_refreshes == 2


def test_oauth_refreshes_once_after_a_401(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    connector = make_connector(oauth_settings(server.env()))
    assert connector.health().ok
    with emulator.lock:
        for token in emulator.oauth_tokens:
            emulator.oauth_tokens[token] = time.time() - 5  # expired early, server side
    assert connector.lookup(emails=["nobody@example.com"]) == {}
    assert connector.token_refreshes == 2


def test_a_refused_refresh_token_is_an_auth_error(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    settings = oauth_settings(server.env(), refresh_token="sandbox-refresh-revoked-0000")
    connector = make_connector(settings)
    with pytest.raises(AuthError) as raised:
        connector.describe()
    assert raised.value.status == 400 and "refresh token" in raised.value.message
    health = connector.health()
    assert (health.ok, health.credentials_valid) == (False, False)


def test_a_wrong_private_token_is_an_auth_error_with_hubspots_message(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    settings = private_app_settings(server.env(), access_token="pat-na1-00000000-wrong")
    with pytest.raises(AuthError) as raised:
        make_connector(settings).lookup(emails=["a@example.com"])
    assert raised.value.status == 401
    assert "Authentication credentials not found" in raised.value.message


def test_rate_limits_that_do_not_clear_are_typed_with_status_and_message(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector(retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.01))
    server.sandbox.set_faults(Faults(rate_limit_per_10s=1, systems=["hubspot"]))
    connector.describe()
    with pytest.raises(RateLimited) as raised:
        connector.lookup(emails=["a@example.com"])
    assert raised.value.status == 429
    assert "ten_secondly_rolling limit" in raised.value.message


def test_no_secret_reaches_the_logs(
    make_connector: MakeConnector,
    server: SandboxServer,
    emulator: HubSpotEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    oauth = make_connector(oauth_settings(server.env()))
    private = make_connector()
    oauth.health()
    # Every call fails for a while: each connector logs its retries, then gives up typed.
    server.sandbox.set_faults(Faults(error_rate=1.0, systems=["hubspot"]))
    for connector in (oauth, private):
        with pytest.raises(Retryable):
            connector.lookup(emails=["secret@example.com"])
    server.sandbox.set_faults(Faults())
    with emulator.lock:
        issued = list(emulator.oauth_tokens)
        for token in issued:
            emulator.oauth_tokens[token] = time.time() - 5
    for connector in (oauth, private):
        connector.upsert([lead("secret@example.com")])
        connector.lookup(emails=["secret@example.com"])
    refused = make_connector(
        oauth_settings(server.env(), client_secret="sandbox-secret-not-the-right-one")
    )
    with pytest.raises(AuthError) as raised:
        refused.describe()
    with emulator.lock:
        issued = list(emulator.oauth_tokens)
    assert "retrying" in caplog.text  # the faults were logged
    text = caplog.text + str(raised.value) + repr(raised.value)
    for secret in (
        SANDBOX_ACCESS_TOKEN,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_REFRESH_TOKEN,
        "sandbox-secret-not-the-right-one",
        *issued,
    ):
        assert secret not in text


def test_a_lookup_by_a_merged_away_email_answers_the_new_record(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    connector = make_connector()
    primary, other = created_ids(connector, "ada@example.com", "ada.l@example.com")
    merged = merge_contacts(server, primary, other)

    found = connector.lookup(emails=["ada.l@example.com"])

    assert found["ada.l@example.com"]["hs_object_id"] == merged["id"]


HOUR_MS = 3_600_000
NOW = 10 * HOUR_MS  # the server time of the empty read: its end is one ms after the horizon


def empty_read_end(archived: int | None, deals: str | None = None) -> str:
    return join_cursor(encode_cursor(NOW - 5_000 + 1, None, archived), deals)


@pytest.mark.parametrize(
    ("start", "end", "cursor", "answer"),
    [
        # A contacts position at or after the empty read's start: the read's end.
        (
            encode_cursor(100, None, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(100, None, NOW - 60),
            empty_read_end(NOW - 60),
        ),
        (
            encode_cursor(100, None, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(200, None, NOW - 50),
            empty_read_end(NOW - 50),
        ),
        (
            encode_cursor(200, None, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(100, None, NOW - 60),
            None,
        ),  # behind
        # The empty read did not read the archived list: an older watermark of the cursor is
        # kept while its interval has not passed (a flow that last read it earlier)...
        (
            encode_cursor(100, None, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(200, None, NOW - 600),
            empty_read_end(NOW - 600),
        ),
        # ...and is no answer once it has (that flow reads the archived list now).
        (
            encode_cursor(100, None, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(200, None, NOW - 2 * HOUR_MS),
            None,
        ),
        (
            encode_cursor(100, None, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(200, None, None),
            None,
        ),  # never read
        # The empty read read it: it answers a watermark at or after the one it read from.
        (
            encode_cursor(100, None, NOW - 2 * HOUR_MS),
            empty_read_end(NOW),
            encode_cursor(200, None, NOW - HOUR_MS),
            empty_read_end(NOW),
        ),
        (
            encode_cursor(100, None, NOW - HOUR_MS),
            empty_read_end(NOW),
            encode_cursor(200, None, NOW - 2 * HOUR_MS),
            None,
        ),
        # Deals: kept when the empty read did not search them and they are not due...
        (
            join_cursor(encode_cursor(100, None, NOW - 60), encode_cursor(NOW - 200_000, None)),
            empty_read_end(NOW - 60, encode_cursor(NOW - 200_000, None)),
            join_cursor(encode_cursor(200, None, NOW - 60), encode_cursor(NOW - 300_000, None)),
            empty_read_end(NOW - 60, encode_cursor(NOW - 300_000, None)),
        ),
        # ...no answer when they are (deals_every_s 900 s passed for that cursor).
        (
            join_cursor(encode_cursor(100, None, NOW - 60), encode_cursor(NOW - 200_000, None)),
            empty_read_end(NOW - 60, encode_cursor(NOW - 200_000, None)),
            join_cursor(encode_cursor(200, None, NOW - 60), encode_cursor(NOW - 1_000_000, None)),
            None,
        ),
        (
            encode_cursor(100, 7, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(200, None, NOW - 60),
            None,
        ),  # under way
        (
            encode_cursor(100, None, NOW - 60),
            empty_read_end(NOW - 60),
            encode_cursor(200, 7, NOW - 60),
            None,
        ),
        ("100:", empty_read_end(NOW - 60), "200:", None),  # a cursor of an older version
        (None, empty_read_end(NOW - 60), encode_cursor(200, None, NOW - 60), None),
        ("garbled", empty_read_end(NOW - 60), encode_cursor(200, None, NOW - 60), None),
    ],
)
def test_an_empty_read_answers_a_read_it_covers_or_that_would_not_read_what_it_skipped(
    make_connector: MakeConnector, start: str | None, end: str, cursor: str, answer: str | None
) -> None:
    connector = make_connector()
    connector.read_archived = True
    connector.deletions_every_s = 3600
    connector.deals_every_s = 900
    assert connector.answer_read(start, end, cursor, age_s=0) == answer


def test_a_flow_past_its_interval_while_the_shared_read_aged_reads_for_itself(
    make_connector: MakeConnector,
) -> None:
    connector = make_connector()
    connector.read_archived = True
    connector.deletions_every_s = 3600
    start, end = encode_cursor(100, None, NOW - 60), empty_read_end(NOW - 60)
    cursor = encode_cursor(200, None, NOW - HOUR_MS + 30_000)  # due 30 s after the read

    assert connector.answer_read(start, end, cursor, age_s=10) is not None
    assert connector.answer_read(start, end, cursor, age_s=40) is None
