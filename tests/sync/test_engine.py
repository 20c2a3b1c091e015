"""The sync engine against in-memory systems: pipeline, echoes, rules, dead letters, crashes."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from leadrelay.config import FieldRule, FlowConfig
from leadrelay.connectors.base import DELETIONS_EVERY_S
from leadrelay.connectors.errors import Retryable
from leadrelay.mappings.engine import load_mapping
from leadrelay.model import Stage
from leadrelay.sync import engine as engine_module
from leadrelay.sync.engine import FlowStats, PlannedRecord, SyncEngine
from leadrelay.sync.state import DeadLetterStatus, LedgerState, StateStore
from tests.postgres import fresh_schema
from tests.sync.fake_crm import FakeCrm, FakeHub, FakeSystem

HUB_FIELDS = load_mapping("hubspot").system_fields()
CRM_FIELDS = load_mapping("salesforce").system_fields()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """The engine's state on SQLite and, where a test server is set, on PostgreSQL."""
    if request.param == "sqlite":
        with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as opened:
            yield opened
        return
    with fresh_schema() as url, StateStore(url) as opened:
        yield opened


@pytest.fixture
def hub() -> FakeSystem:
    return FakeSystem("hs", "email", "contacts", set(HUB_FIELDS))


@pytest.fixture
def crm() -> FakeSystem:
    return FakeSystem("00Q", "Email", "Lead", set(CRM_FIELDS), required={"LastName", "Company"})


Sync = Callable[..., FlowStats]


@pytest.fixture
def sync(store: StateStore, hub: FakeSystem, crm: FakeSystem) -> Sync:
    mappings = (load_mapping("hubspot"), load_mapping("salesforce"))

    def run(
        *, full: bool = False, dry_run: bool = False, run_id: int | None = None, **flow: Any
    ) -> FlowStats:
        config = FlowConfig(
            name="hs-sf", source="hs", destination="sf", **{"two_way": True, **flow}
        )
        engine = SyncEngine(
            store,
            config,
            source=FakeHub(None, "hs", hub),
            destination=FakeCrm(None, "sf", crm),
            source_mapping=mappings[0],
            destination_mapping=mappings[1],
            dry_run=dry_run,
            run_id=run_id,
            on_plan=planned.append,
        )
        return engine.run(full=full)

    planned: list[PlannedRecord] = []
    run.planned = planned  # type: ignore[attr-defined]
    return run


def contact(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": f"lead{n}@acme{n}.io",
        "firstname": f"Ann{n}",
        "lastname": f"Lee{n}",
        "company": f"Acme {n}",
        "lifecyclestage": "marketingqualifiedlead",
        "hs_lead_status": "NEW",
        "utm_source": "google",
        "utm_medium": "cpc",
        **extra,
    }


def counts(stats: FlowStats) -> tuple[int, int, int, int]:
    return stats.created, stats.updated, stats.written_back, stats.dead_lettered


def test_first_sync_creates_every_source_lead_once(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    ids = [hub.put(contact(n)) for n in range(23)]
    stats = sync()
    assert (stats.created, stats.dead_lettered) == (23, 0)
    emails = sorted(str(r["Email"]) for r in crm.records.values())
    assert emails == sorted(f"lead{n}@acme{n}.io" for n in range(23))
    key = store.key_for("hs", ids[0])
    assert key is not None
    assert store.links_of(key).keys() == {"hs", "sf"}
    assert [row.state for row in store.ledger_rows(key)] == [LedgerState.WRITTEN]


def _freeze_counts_while_planning(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    plan = engine_module.plan_record

    def planning(**kwargs: Any) -> Any:
        seen.append(gc.get_freeze_count())
        return plan(**kwargs)

    monkeypatch.setattr(engine_module, "plan_record", planning)
    return seen


def test_a_run_keeps_the_collector_off_older_objects_until_it_ends(
    sync: Sync, hub: FakeSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _freeze_counts_while_planning(monkeypatch)
    hub.put(contact(1))
    assert sync().created == 1
    assert seen and seen[0] > 0
    assert gc.get_freeze_count() == 0


def test_a_run_leaves_objects_the_process_froze_itself_frozen(
    sync: Sync, hub: FakeSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _freeze_counts_while_planning(monkeypatch)
    hub.put(contact(1))
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert sync().created == 1
        # frozen objects the run let go of leave the count; none joined it, none were thawed
        assert len(seen) == 1 and 0 < seen[0] <= frozen
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_fields_are_mapped_through_the_canonical_lead(
    sync: Sync, hub: FakeSystem, crm: FakeSystem
) -> None:
    hub.put(contact(1, phone="+1 415 555 0100"))
    sync()
    [record] = crm.records.values()
    assert record["LastName"] == "Lee1"
    assert record["Phone"] == "+14155550100"
    assert record["UTM_Source__c"] == "google"
    assert record["Status"] == "Open - Not Contacted"
    assert str(record["LeadRelay_Key__c"]).startswith("ld_")


def test_a_second_sync_without_outside_change_writes_nothing(sync: Sync, hub: FakeSystem) -> None:
    for n in range(12):
        hub.put(contact(n))
    sync()
    again = sync()
    assert counts(again) == (0, 0, 0, 0)


def test_a_lead_created_in_the_crm_reaches_the_marketing_system_once(
    sync: Sync, hub: FakeSystem, crm: FakeSystem
) -> None:
    crm.put(
        {
            "Email": "walk.in@shop.io",
            "LastName": "Walker",
            "Company": "Shop",
            "Status": "Open - Not Contacted",
        }
    )
    first = sync()
    second = sync()
    assert first.created == 1
    assert [r["email"] for r in hub.records.values()] == ["walk.in@shop.io"]
    assert counts(second) == (0, 0, 0, 0)


def test_a_sales_rejection_flows_back_with_its_reason(
    sync: Sync, hub: FakeSystem, crm: FakeSystem
) -> None:
    hub_id = hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    crm.put({"Status": "Closed - Not Converted", "Rejection_Reason__c": "Bad Fit"}, crm_id)
    stats = sync()
    assert stats.written_back == 1
    assert hub.records[hub_id]["hs_lead_status"] == "UNQUALIFIED"
    assert hub.records[hub_id]["rejection_reason"] == "bad_fit"
    assert counts(sync()) == (0, 0, 0, 0)


def test_attribution_flows_to_sales_and_not_back(
    sync: Sync, hub: FakeSystem, crm: FakeSystem
) -> None:
    hub_id = hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    crm.put({"UTM_Source__c": "typed-by-sales"}, crm_id)
    hub.put({"utm_campaign": "spring"}, hub_id)
    sync()
    assert hub.records[hub_id]["utm_source"] == "google"
    assert crm.records[crm_id]["UTM_Campaign__c"] == "spring"


def test_contact_details_latest_change_wins_and_the_conflict_is_logged(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub_id = hub.put(contact(1, phone="+14155550100"))
    sync()
    [crm_id] = crm.records
    hub.put({"phone": "+14155550111"}, hub_id)
    crm.put({"Phone": "+14155550122"}, crm_id)  # sales changed it later
    run_id = store.start_run("hs-sf")
    stats = sync(run_id=run_id)
    assert hub.records[hub_id]["phone"] == "+14155550122"
    assert crm.records[crm_id]["Phone"] == "+14155550122"
    assert stats.conflicts >= 1
    [event] = [e for e in store.get_run(run_id).log if e["event"] == "conflict"]
    assert (event["field"], event["rule"], event["winner"]) == ("phone", "two_way", "destination")
    assert (event["source_value"], event["destination_value"]) == ("+14155550111", "+14155550122")


def test_one_person_in_both_systems_ends_as_one_record_per_system(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub_id = hub.put(contact(1))
    crm_id = crm.put({"Email": "LEAD1@acme1.io", "LastName": "Lee", "Company": "Acme 1"})
    stats = sync()
    assert (len(hub.records), len(crm.records)) == (1, 1)
    assert stats.created == 0
    key = store.key_for("hs", hub_id)
    assert key is not None and store.key_for("sf", crm_id) == key


def test_a_refused_record_is_dead_lettered_with_the_systems_message(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    for n in range(4):
        hub.put(contact(n))
    hub.put(contact(9, company="Blocked Inc"))
    crm.reject_values["Blocked Inc"] = "FIELD_CUSTOM_VALIDATION_EXCEPTION: company is blocked"
    stats = sync()
    assert (stats.created, stats.dead_lettered) == (4, 1)
    [letter] = store.list_dead_letters()
    assert (letter.connection, letter.system, letter.field) == ("sf", "fakecrm", "Company")
    assert letter.reason == "FIELD_CUSTOM_VALIDATION_EXCEPTION: company is blocked"
    assert letter.lead_key is not None
    assert store.ledger_rows(letter.lead_key)[0].state is LedgerState.FAILED


def test_a_record_that_does_not_map_is_dead_lettered_naming_the_field(
    sync: Sync, hub: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1, email="not an email"))
    hub.put(contact(2))
    stats = sync()
    assert (stats.created, stats.dead_lettered) == (1, 1)
    [letter] = store.list_dead_letters()
    assert (letter.connection, letter.field) == ("hs", "email")
    assert "email" in letter.reason
    assert counts(sync()) == (0, 0, 0, 0)


def test_retrying_a_dead_letter_after_the_fix_writes_it(
    store: StateStore, hub: FakeSystem, crm: FakeSystem
) -> None:
    hub.put(contact(9, company="Blocked Inc"))
    crm.reject_values["Blocked Inc"] = "company is blocked"
    flow = FlowConfig(name="hs-sf", source="hs", destination="sf", two_way=True)
    engine = SyncEngine(
        store,
        flow,
        source=FakeHub(None, "hs", hub),
        destination=FakeCrm(None, "sf", crm),
        source_mapping=load_mapping("hubspot"),
        destination_mapping=load_mapping("salesforce"),
    )
    engine.run()
    [letter] = store.list_dead_letters()
    again = engine.retry([letter])
    assert again == {letter.id: False}
    assert store.get_dead_letter(letter.id).attempts == 2
    crm.reject_values.clear()
    assert engine.retry([letter]) == {letter.id: True}
    assert store.get_dead_letter(letter.id).status is DeadLetterStatus.RETRIED
    assert [r["Company"] for r in crm.records.values()] == ["Blocked Inc"]


def test_a_field_removed_from_the_schema_is_left_out_and_recorded_not_dead_lettered(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1, utm_term="shoes"))
    hub.put(contact(2))
    crm.fields.discard("UTM_Term__c")
    stats = sync()
    assert (stats.created, stats.dead_lettered, stats.field_problems) == (2, 0, 1)
    assert store.list_dead_letters() == []
    [problem] = store.field_problems()
    assert (problem.connection, problem.field, problem.system_field) == (
        "sf",
        "utm_term",
        "UTM_Term__c",
    )
    assert problem.value == "shoes"
    assert "UTM_Term__c" in problem.reason
    assert all("UTM_Term__c" not in record for record in crm.records.values())


def test_a_picklist_value_removed_leaves_that_field_out_and_writes_the_lead(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    crm.picklists["Status"] = ("Open - Not Contacted", "Closed - Converted")
    hub.put(contact(1))
    hub.put(contact(2, lifecyclestage="marketingqualifiedlead", hs_lead_status="IN_PROGRESS"))
    stats = sync()
    assert (stats.created, stats.dead_lettered) == (2, 0)
    [problem] = store.field_problems()
    assert problem.system_field == "Status"
    assert problem.value == "Working - Contacted"
    assert "allowed: Open - Not Contacted, Closed - Converted" in problem.reason


def test_a_value_the_system_refuses_in_an_optional_field_is_sent_again_without_it(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1, utm_term="forbidden"))
    hub.put(contact(2))
    crm.reject_values["forbidden"] = "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: bad value"
    stats = sync()
    assert (stats.created, stats.dead_lettered, stats.field_problems) == (2, 0, 1)
    [problem] = store.field_problems()
    assert problem.reason == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: bad value"
    assert problem.action == "skipped"


def test_a_refused_value_in_a_required_field_dead_letters_the_lead(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1, company="Blocked Inc"))
    crm.reject_values["Blocked Inc"] = "FIELD_CUSTOM_VALIDATION_EXCEPTION: company is blocked"
    stats = sync()
    assert (stats.created, stats.dead_lettered, stats.field_problems) == (0, 1, 0)


def test_a_field_problem_is_resolved_when_a_later_write_carries_the_field(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    rid = hub.put(contact(1, utm_term="shoes"))
    crm.fields.discard("UTM_Term__c")
    sync()
    assert len(store.field_problems()) == 1
    crm.fields.add("UTM_Term__c")
    hub.put({"utm_term": "boots"}, rid)
    sync()
    assert store.field_problems() == []
    [resolved] = store.field_problems(status="resolved")
    assert resolved.field == "utm_term"
    assert [r.get("UTM_Term__c") for r in crm.records.values()] == ["boots"]


def test_dry_run_plans_and_writes_nothing(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1))
    stats = sync(dry_run=True)
    assert stats.created == 1
    assert crm.records == {}
    assert store.get_cursor("hs-sf", "hs") is None
    [plan] = sync.planned  # type: ignore[attr-defined]
    assert plan.action.value == "create"
    assert ("last_name", None, "Lee1") in plan.changes


def test_full_rereads_from_the_start_and_still_writes_nothing_new(
    sync: Sync, hub: FakeSystem
) -> None:
    for n in range(9):
        hub.put(contact(n))
    first = sync()
    incremental = sync()
    full = sync(full=True)
    assert full.read >= first.read > incremental.read
    assert counts(full) == (0, 0, 0, 0)


def test_include_stages_keeps_earlier_leads_out_of_the_crm(
    sync: Sync, hub: FakeSystem, crm: FakeSystem
) -> None:
    hub.put(contact(1, lifecyclestage="lead"))
    hub.put(contact(2))
    stats = sync(include_stages=[Stage.MQL, Stage.SAL, Stage.SQL])
    assert stats.created == 1
    assert [r["Email"] for r in crm.records.values()] == ["lead2@acme2.io"]


def test_a_flow_rule_override_changes_who_wins(
    sync: Sync, hub: FakeSystem, crm: FakeSystem
) -> None:
    hub_id = hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    crm.put({"UTM_Source__c": "sales-says"}, crm_id)
    sync(field_rules={"utm_source": FieldRule.DESTINATION_WINS})
    assert hub.records[hub_id]["utm_source"] == "sales-says"


def test_a_crash_mid_run_then_a_rerun_delivers_every_lead_exactly_once(
    sync: Sync, hub: FakeSystem, crm: FakeSystem
) -> None:
    for n in range(30):
        hub.put(contact(n))
    crm.fail_writes_after = 3
    with pytest.raises(Retryable):
        sync()
    written_before = len(crm.records)
    crm.fail_writes_after = None
    sync()
    emails = [str(r["Email"]) for r in crm.records.values()]
    assert 0 < written_before < 30
    assert sorted(emails) == sorted(f"lead{n}@acme{n}.io" for n in range(30))


def test_with_the_destination_down_every_lead_stays_pending_for_the_next_run(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    for n in range(8):
        hub.put(contact(n))
    crm.down = True
    with pytest.raises(Retryable):
        sync()
    assert store.get_cursor("hs-sf", "hs") is None
    crm.down = False
    assert sync().created == 8


def test_api_calls_are_counted_per_connection(sync: Sync, hub: FakeSystem) -> None:
    for n in range(10):
        hub.put(contact(n))
    stats = sync()
    # hs: 2 pages + 1 empty page, then the write-back pass reads nothing; sf: per 5-record batch
    assert set(stats.api_calls) == {"hs", "sf"}
    assert stats.api_calls["sf"] >= 2


def test_a_blank_required_value_is_written_as_the_mappings_default(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1, company=""))
    stats = sync()
    assert (stats.created, stats.dead_lettered) == (1, 0)
    [record] = crm.records.values()
    assert record["Company"] == "[not provided]"


def test_a_default_fills_a_blank_field_of_an_existing_record(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    rid = hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    crm.put({"Company": ""}, crm_id)
    hub.put({"firstname": "Anna", "company": ""}, rid)
    sync()
    assert crm.records[crm_id]["Company"] == "[not provided]"
    assert crm.records[crm_id]["FirstName"] == "Anna"


def test_text_no_api_can_carry_is_a_field_problem_and_the_lead_is_written(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1, utm_term="bad\ud800term"))
    hub.put(contact(2, utm_campaign="nul\x00here"))
    stats = sync()
    assert (stats.created, stats.dead_lettered, stats.field_problems) == (2, 0, 2)
    reasons = sorted(p.reason for p in store.field_problems())
    assert reasons[0].startswith("text contains a NUL character")
    assert reasons[1].startswith("text is not valid Unicode")


def test_two_way_fields_are_merged_per_field_not_by_record_time(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    rid = hub.put(contact(1, city="Berlin", zip="10115"))
    sync()
    [crm_id] = crm.records
    hub.put({"city": "Munich"}, rid)
    crm.put({"PostalCode": "80331"}, crm_id)  # a second later, another field
    sync()
    assert crm.records[crm_id]["City"] == "Munich"
    assert crm.records[crm_id]["PostalCode"] == "80331"
    assert hub.records[rid]["city"] == "Munich"
    assert hub.records[rid]["zip"] == "80331"


def test_a_field_changed_on_both_sides_goes_to_the_later_change_and_is_a_conflict(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    rid = hub.put(contact(1, city="Berlin"))
    sync()
    [crm_id] = crm.records
    hub.put({"city": "Munich"}, rid)
    crm.put({"City": "Hamburg"}, crm_id)  # later
    stats = sync()
    assert crm.records[crm_id]["City"] == "Hamburg"
    assert hub.records[rid]["city"] == "Hamburg"
    assert stats.conflicts >= 1


def test_a_field_problem_is_replayed_once_the_pick_list_takes_the_value(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    crm.picklists["Status"] = ("Open - Not Contacted", "Closed - Converted")
    hub.put(contact(1, lifecyclestage="marketingqualifiedlead", hs_lead_status="IN_PROGRESS"))
    sync()
    [crm_id] = crm.records
    assert "Status" not in crm.records[crm_id]
    assert len(store.field_problems()) == 1
    sync()  # nothing changed: the value is still refused, nothing is replayed
    assert len(store.field_problems()) == 1
    crm.picklists["Status"] = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted")
    sync()
    assert crm.records[crm_id]["Status"] == "Working - Contacted"
    assert store.field_problems() == []


def test_a_lead_deleted_in_the_crm_is_not_re_created(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    rid = hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    crm.delete(crm_id)
    sync()
    hub.put({"firstname": "Anna"}, rid)  # marketing touches the contact again
    stats = sync()
    assert crm.records == {}
    assert stats.created == 0
    assert rid in hub.records  # keep: the other side is left alone
    [tomb] = store.tombstones(connection="sf")
    assert tomb["external_id"] == crm_id


def test_a_contact_deleted_in_the_marketing_system_is_not_re_created_by_write_back(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    rid = hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    hub.delete(rid)
    sync()
    crm.put({"Status": "Working - Contacted"}, crm_id)  # sales works the lead
    sync()
    assert hub.records == {}
    assert crm_id in crm.records


def test_a_delete_not_read_from_the_change_feed_is_not_re_created_either(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    rid = hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    del crm.records[crm_id]  # gone without a trace in the feed (e.g. purged)
    crm.seq.pop(crm_id)
    hub.put({"firstname": "Anna"}, rid)
    stats = sync()
    assert (crm.records, stats.created) == ({}, 0)
    assert [t["external_id"] for t in store.tombstones(connection="sf")] == [crm_id]


def test_on_delete_propagate_deletes_the_linked_record(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    hub.put(contact(1))
    sync()
    [crm_id] = crm.records
    crm.delete(crm_id)
    sync(on_delete="propagate")
    assert hub.records == {}
    assert crm.records == {}


@pytest.mark.parametrize(("on_delete", "every"), [("keep", DELETIONS_EVERY_S), ("propagate", 0)])
def test_a_propagating_flow_reads_the_deletion_lists_in_every_run(
    store: StateStore, hub: FakeSystem, crm: FakeSystem, on_delete: str, every: float
) -> None:
    source, destination = FakeHub(None, "hs", hub), FakeCrm(None, "sf", crm)
    SyncEngine(
        store,
        FlowConfig(name="hs-sf", source="hs", destination="sf", on_delete=on_delete),
        source=source,
        destination=destination,
        source_mapping=load_mapping("hubspot"),
        destination_mapping=load_mapping("salesforce"),
    )
    assert (source.deletions_every_s, destination.deletions_every_s) == (every, every)


def test_a_merge_that_keeps_the_e_mail_of_a_record_never_synced_creates_no_duplicate(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    synced = hub.put(contact(1))
    sync()
    key = store.key_for("hs", synced)
    [crm_id] = crm.records
    # Marketing merges it with a contact leadrelay has not seen yet, whose e-mail wins: HubSpot
    # makes a new record and reports both former ids merged into it.
    unseen = hub.put(contact(9))
    survivor = hub.put(contact(9))
    hub.delete(synced, merged_into=survivor)
    hub.delete(unseen, merged_into=survivor)

    sync()

    assert list(crm.records) == [crm_id]
    assert crm.records[crm_id]["Email"] == "lead9@acme9.io"
    assert store.key_for("hs", survivor) == key
    # the merged-away record is remembered as that lead's, merged into the survivor
    merged = {t["external_id"]: t for t in store.tombstones(connection="hs")}[synced]
    assert (merged["lead_key"], merged["merged_into"]) == (key, survivor)


def test_two_synced_leads_merged_into_one_record_leave_it_to_the_lead_of_its_e_mail(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    first, second = hub.put(contact(1)), hub.put(contact(2))
    sync()
    keys = {rid: store.key_for("hs", rid) for rid in (first, second)}
    survivor = hub.put(contact(2, firstname="Merged"))
    hub.delete(first, merged_into=survivor)
    hub.delete(second, merged_into=survivor)

    sync()

    assert store.key_for("hs", survivor) == keys[second]
    assert store.external_id_for(str(keys[first]), "hs") is None
    assert len(crm.records) == 2
    by_email = {rec["Email"]: rec for rec in crm.records.values()}
    assert by_email["lead2@acme2.io"]["FirstName"] == "Merged"
    assert by_email["lead1@acme1.io"]["FirstName"] == "Ann1"


def test_a_merge_relinks_the_lead_to_the_survivor_without_a_duplicate(
    sync: Sync, hub: FakeSystem, crm: FakeSystem, store: StateStore
) -> None:
    first = hub.put(contact(1))
    second = hub.put(contact(2))
    sync()
    key = store.key_for("hs", first)
    assert key is not None
    hub.delete(first, merged_into=second)
    sync()
    assert store.external_id_for(key, "hs") is None or store.external_id_for(key, "hs") == second
    hub.put({"firstname": "Bea"}, second)
    sync()
    assert len(crm.records) == 2
