"""``leadrelay trace``: one lead's path through capture, sync and write-back on the sandbox, and
the retention that prunes what it is made of."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from leadrelay.capture.worker import drain_inbox
from leadrelay.cli import main
from leadrelay.config import read_env_file
from leadrelay.connectors.base import UpsertInput
from leadrelay.handoff.qualify import Qualifier
from leadrelay.journal import WITHHELD_CONSENT, WITHHELD_SECRET, Journal, redact_payload
from leadrelay.mappings.engine import load_mapping
from leadrelay.reconcile import reconcile
from leadrelay.sync.runner import run_flows
from leadrelay.sync.state import (
    RunStatus,
    StateStore,
    dead_letters_table,
    journal_table,
    runs_table,
)
from leadrelay.trace import TraceEvent, details_text, find_trace, prune
from tests.reconcile_sandbox import ReconcileProject, project_fixture, sandbox_fixture  # noqa: F401 (fixtures)


def run_cli(project: ReconcileProject, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main([*argv, "--config", str(project.toml)])
        raise SystemExit(0)
    return int(exited.value.code or 0), out.getvalue(), err.getvalue()


def submit_webform(project: ReconcileProject, email: str, **extra: str) -> str:
    fields = {
        "email": email,
        "first_name": "Ana",
        "last_name": "Silva",
        "company": "Acme",
        "page_url": "https://www.acme.io/pricing?utm_source=linkedin&utm_medium=paid_social",
        "consent_text": "I agree to be contacted by Acme about my request.",
        **extra,
    }
    with project.client() as client:
        response = project.post_webform(client, **fields)
    assert response.status_code == 202, response.text
    return str(response.json()["key"])


def is_secret_name(name: str) -> bool:
    return any(part in name for part in ("SECRET", "TOKEN", "PASSWORD", "KEY"))


def kinds(trace: Any) -> list[str]:
    return [event.kind for event in trace.events]


def submit_and_sync(project: ReconcileProject, email: str, **extra: str) -> tuple[str, str]:
    """A web form lead captured into HubSpot, synced to Salesforce, rejected there by sales
    and written back to HubSpot; its inbox key and Salesforce id."""
    key = submit_webform(project, email, **extra)
    drain_inbox(project.config, project.store, connectors=project.pool)
    flows = [flow for flow in project.config.flows if flow.name == "hubspot-salesforce"]
    run_flows(project.config, project.store, flows)
    salesforce = project.pool.get("salesforce")
    record_id = str(salesforce.lookup(emails=[email])[email]["Id"])
    [verdict] = salesforce.update(
        {record_id: {"Status": "Closed - Not Converted", "Rejection_Reason__c": "Competitor"}}
    )
    assert verdict.ok, verdict
    run_flows(project.config, project.store, flows)
    return key, record_id


def test_trace_shows_capture_sync_and_write_back_in_time_order(
    project: ReconcileProject,
) -> None:
    key, salesforce_id = submit_and_sync(project, "journey@acme.io")
    trace = find_trace(project.config, project.store, "journey@acme.io")
    steps = [(event.kind, event.where) for event in trace.events]
    path = [
        ("received", "demo-webform"),
        ("qualified", "hubspot"),
        ("written", "hubspot"),
        ("delivered", "demo-webform"),
        ("qualified", "salesforce"),
        ("written", "salesforce"),
        ("written back", "hubspot"),
        ("recycle", "hubspot-salesforce"),
    ]
    assert trace.lead_keys == [key]
    assert [step for step in steps if step in path] == path
    assert trace.records == {"hubspot": trace.records["hubspot"], "salesforce": salesforce_id}
    assert trace.attribution is not None
    assert (trace.attribution["channel"], trace.attribution["first_touch"]["form"]) == (
        "paid_social",
        "demo-webform",
    )


OWNER_FIELDS = {"hubspot": "hubspot_owner_id", "salesforce": "OwnerId"}


def journaled(trace: Any, kind: str, where: str) -> TraceEvent:
    (event,) = [e for e in trace.events if (e.kind, e.where) == (kind, where)]
    return event


def test_each_write_shows_its_field_level_diff_and_the_api_call_it_went_in(
    project: ReconcileProject,
) -> None:
    submit_and_sync(project, "journey@acme.io")
    trace = find_trace(project.config, project.store, "journey@acme.io")
    created = journaled(trace, "written", "hubspot").details
    back = journaled(trace, "written back", "hubspot").details
    assert created["outcome"] == "created"
    assert created["changes"]["email"] == {"old": None, "new": "journey@acme.io"}
    assert created["call"] == "POST /hubspot/crm/v3/objects/contacts/batch/upsert #1"
    assert back["changes"] == {
        "hs_lead_status": {"old": "NEW", "new": "UNQUALIFIED"},
        "rejection_reason": {"old": None, "new": "competitor"},
    }
    assert back["call"] == "POST /hubspot/crm/v3/objects/contacts/batch/update #1"
    assert journaled(trace, "written", "salesforce").details["changes"]["Email"]["new"] == (
        "journey@acme.io"
    )


@pytest.mark.parametrize("system", ["hubspot", "salesforce"])
def test_every_lead_shows_its_score_breakdown_tier_and_routing(
    project: ReconcileProject, system: str
) -> None:
    submit_and_sync(project, "journey@acme.io")
    trace = find_trace(project.config, project.store, "journey@acme.io")
    details = journaled(trace, "qualified", system).details
    assert set(details["breakdown"]) == {"fit", "intent", "engagement"}
    assert sum(details["breakdown"].values()) == details["score"]
    assert details["tier"] in {"hot", "warm", "cold"}
    assert details["routing"]["rule"] == "round_robin"
    record = project.pool.get(system).lookup(emails=["journey@acme.io"])["journey@acme.io"]
    assert details["routing"]["owner"] == record[OWNER_FIELDS[system]]
    assert "round robin inbound" in details["routing"]["reason"]


def test_normalization_repairs_show_the_submitted_and_the_stored_value(
    project: ReconcileProject,
) -> None:
    submit_webform(project, "Repaired@Acme.io", phone="(415) 555-0100", country="United States")
    drain_inbox(project.config, project.store, connectors=project.pool)
    trace = find_trace(project.config, project.store, "repaired@acme.io")
    repairs = journaled(trace, "normalized", "demo-webform").details["repairs"]
    assert repairs["phone"] == {"submitted": "(415) 555-0100", "stored": "+14155550100"}
    assert repairs["country"] == {"submitted": "United States", "stored": "US"}


def test_a_second_submission_says_which_lead_it_joined_and_why(
    project: ReconcileProject,
) -> None:
    first = submit_webform(project, "twice@acme.io")
    drain_inbox(project.config, project.store, connectors=project.pool)
    second = submit_webform(project, "Twice@Acme.io", company="Acme Inc")
    drain_inbox(project.config, project.store, connectors=project.pool)
    trace = find_trace(project.config, project.store, "twice@acme.io")
    joined = journaled(trace, "deduplicated", "demo-webform")
    assert joined.details["record"] == second
    assert f"joined lead {first}" in joined.summary
    assert "twice@acme.io" in joined.summary


def test_a_sync_that_finds_the_record_already_there_says_why_it_linked_it(
    project: ReconcileProject,
) -> None:
    fields = {"Email": "known@acme.io", "LastName": "Known", "Company": "Acme"}
    [made] = project.pool.get("salesforce").upsert([UpsertInput("known", fields)])
    submit_and_sync(project, "known@acme.io")
    trace = find_trace(project.config, project.store, "known@acme.io")
    matched = journaled(trace, "deduplicated", "salesforce")
    assert matched.details["record"] == made.external_id
    assert "same e-mail" in matched.summary
    assert journaled(trace, "written", "salesforce").details["outcome"] == "updated"


def test_an_sla_clock_shows_its_due_time_escalation_and_close(project: ReconcileProject) -> None:
    submit_webform(
        project,
        "hot@acme.io",
        job_title="VP of Sales",
        employees="500",
        page_url="https://www.acme.io/demo?utm_source=google&utm_medium=cpc",
    )
    drain_inbox(project.config, project.store, connectors=project.pool)
    qualified = journaled(
        find_trace(project.config, project.store, "hot@acme.io"), "qualified", "hubspot"
    )
    assert qualified.details["tier"] == "hot"
    due = datetime.fromisoformat(qualified.details["sla_due_at"])
    step = Qualifier(
        project.config,
        project.store,
        project.pool.get("hubspot"),
        destination_mapping=load_mapping("hubspot"),
    )
    step.escalate_due(due + timedelta(minutes=5))
    step.escalate_due(due + timedelta(days=31))
    trace = find_trace(project.config, project.store, "hot@acme.io")
    escalated = [e.details for e in trace.events if e.kind == "escalated"]
    closed = {e.details["clock"]: e.kind for e in trace.events if e.kind.startswith("sla ")}
    assert escalated == [
        {"clock": clock, "channel": "crm_task:hubspot"} for clock in ("hot", "mql")
    ]
    assert closed == {"hot": "sla breached", "mql": "sla breached", "unassigned": "sla met"}


def test_a_secret_in_a_lead_reaches_neither_the_journal_nor_the_output(
    project: ReconcileProject,
) -> None:
    env = read_env_file(project.folder / ".env")
    token = env["HUBSPOT_ACCESS_TOKEN"]
    submit_and_sync(project, "journey@acme.io", company=f"Acme {token}")
    with project.store.transaction() as conn:
        stored = json.dumps(
            [list(row) for row in conn.execute(sa.select(journal_table))], default=str
        )
    outputs = [
        run_cli(project, "trace", "journey@acme.io", *extra)[1] for extra in ((), ("--json",))
    ]
    secrets = [value for name, value in env.items() if is_secret_name(name) and value]
    assert "Acme ***" in stored
    assert [value for value in secrets if any(value in text for text in [stored, *outputs])] == []


@pytest.mark.parametrize(
    "query",
    [
        lambda key, sf, hs: "Journey@Acme.io",
        lambda key, sf, hs: key,
        lambda key, sf, hs: f"salesforce:{sf}",
        lambda key, sf, hs: f"hubspot:{hs}",
    ],
    ids=["email", "lead-key", "salesforce-id", "hubspot-id"],
)
def test_a_lead_is_found_by_email_key_or_system_id(
    project: ReconcileProject, query: Callable[[str, str, str], str]
) -> None:
    key, salesforce_id = submit_and_sync(project, "journey@acme.io")
    hubspot_id = project.store.external_id_for(key, "hubspot")
    assert hubspot_id is not None
    trace = find_trace(project.config, project.store, query(key, salesforce_id, hubspot_id))
    assert trace.lead_keys == [key]


def test_the_command_shows_no_secret_and_no_consent_text(project: ReconcileProject) -> None:
    env = read_env_file(project.folder / ".env")
    secrets = {name: value for name, value in env.items() if is_secret_name(name) and value}
    with project.client() as client:
        response = project.post_webform(
            client,
            email="leaky@acme.io",
            last_name="Leak",
            company="Acme",
            message=f"token {env['HUBSPOT_ACCESS_TOKEN']} and {env['FORM_DEMO_WEBFORM_SECRET']}",
            consent_text="I agree to be contacted by Acme about my request.",
        )
    assert response.status_code == 202
    drain_inbox(project.config, project.store, connectors=project.pool)
    outputs = [run_cli(project, "trace", "leaky@acme.io", *extra) for extra in ((), ("--json",))]
    for code, out, _ in outputs:
        assert code == 0
        assert "leaky@acme.io" in out
        assert "I agree to be contacted" not in out
        leaked = [name for name, value in secrets.items() if value in out]
        assert leaked == []
    assert WITHHELD_CONSENT in outputs[1][1]


def test_an_unknown_lead_is_exit_1_saying_where_it_looked(project: ReconcileProject) -> None:
    code, out, err = run_cli(project, "trace", "hubspot:424242")
    assert code == 1
    assert "no lead matches" in err
    assert "links (hubspot record 424242)" in err
    assert out == ""


def test_a_reconciled_lead_is_traced_by_its_platform_id(project: ReconcileProject) -> None:
    leadgen_id = project.create_meta("found.late@acme.io")
    reconcile(project.config, project.store, forms=["demo-meta"])
    drain_inbox(project.config, project.store, connectors=project.pool)
    code, out, _ = run_cli(project, "trace", f"meta:{leadgen_id}", "--json")
    body = json.loads(out)
    (received,) = [e for e in body["events"] if e["kind"] == "received"]
    assert code == 0
    assert received["summary"].startswith("backfilled by reconcile")
    assert body["emails"] == ["found.late@acme.io"]


# -- problems, deletes and merges from the store ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


def test_problems_dead_letters_conflicts_and_merges_are_in_the_journey(
    store: StateStore, project: ReconcileProject
) -> None:
    key = "ld_trace_problems"
    store.claim_emails({"pat@acme.io": key})
    store.link(key, "salesforce", "00Q1")
    store.record_field_problems(
        key,
        "salesforce",
        [
            {
                "field": "industry",
                "system_field": "Industry",
                "value": "Space",
                "reason": "not a pick-list value",
                "action": "left_out",
            }
        ],
        origin={"inbox_keys": [key]},
    )
    store.add_dead_letter(
        connection="zoho",
        system="zoho",
        record_ref="hs-1",
        reason="INVALID_DATA: Last_Name is required",
        payload={"email": "pat@acme.io"},
        lead_key=key,
        field="Last_Name",
    )
    run = store.start_run(["hubspot-salesforce"])
    store.append_event(
        run,
        {
            "event": "conflict",
            "lead": key,
            "field": "phone",
            "rule": "destination_wins",
            "winner": "destination",
        },
    )
    store.append_event(run, {"event": "merged", "lead": key, "record": "00Q1", "into": "00Q2"})
    store.finish_run(run, RunStatus.OK, {})
    store.add_tombstones("salesforce", [("00Q1", key, "00Q2", None)])

    trace = find_trace(project.config, store, "pat@acme.io")
    summaries = {event.kind: event.summary for event in trace.events}
    assert "Last_Name is required" in summaries["dead letter"]
    assert "industry" in summaries["field problem"]
    assert "destination_wins" in summaries["conflict"]
    assert summaries["tombstone"] == "record 00Q1 merged into 00Q2"
    assert summaries["merged"] == "merged: record 00Q1 into 00Q2"


# -- retention -------------------------------------------------------------------------------


def old_run(store: StateStore, key: str, *, days_ago: int, finished: bool = True) -> int:
    moment = store.now() - timedelta(days=days_ago)
    at = moment.isoformat()
    run = store.start_run(["f"])
    store.append_event(run, {"event": "skipped", "lead": key, "reason": "old", "at": at})
    if finished:
        store.finish_run(run, RunStatus.OK, {})
    with store.transaction() as conn:
        conn.execute(
            runs_table.update()
            .where(runs_table.c.id == run)
            .values(started_at=moment, finished_at=moment if finished else None)
        )
    return run


def test_prune_drops_run_events_older_than_the_retention(store: StateStore) -> None:
    old = old_run(store, "ld_a", days_ago=120)
    recent = old_run(store, "ld_b", days_ago=10)
    mixed = old_run(store, "ld_c", days_ago=100)
    store.append_event(mixed, {"event": "skipped", "lead": "ld_c", "reason": "new"})
    result = prune(store, retention_days=90)
    remaining = {run.id: run.log for run in store.list_runs(limit=10)}
    assert (result.runs, result.events) == (1, 2)
    assert old not in remaining
    assert len(remaining[recent]) == 1
    assert [event["reason"] for event in remaining[mixed]] == ["new"]


def test_prune_drops_journal_events_older_than_the_retention(store: StateStore) -> None:
    journal = Journal(store)
    store.add_journal(
        [
            journal.row("ld_j", "qualified", "hubspot", "old", at=store.now() - timedelta(days=91)),
            journal.row("ld_j", "qualified", "hubspot", "recent"),
        ]
    )
    result = prune(store, retention_days=90)
    assert result.journal == 1
    assert [row.summary for row in store.journal_for(["ld_j"])] == ["recent"]


@pytest.mark.parametrize(
    ("status", "kept"), [("resolved", False), ("dropped", False), ("open", True)]
)
def test_prune_keeps_open_dead_letters_and_drops_settled_ones(
    store: StateStore, status: str, kept: bool
) -> None:
    store.add_dead_letter(
        connection="zoho", system="zoho", record_ref="r", reason="bad", payload={}
    )
    with store.transaction() as conn:
        conn.execute(
            dead_letters_table.update().values(
                status=status, last_attempt_at=store.now() - timedelta(days=200)
            )
        )
    prune(store, retention_days=90)
    assert (store.count_dead_letters(status=None) == 1) is kept


def test_prune_from_the_command_uses_the_configured_retention(
    project: ReconcileProject,
) -> None:
    text = project.toml.read_text(encoding="utf-8")
    project.toml.write_text(
        text.replace("[state]\n", "[state]\nretention_days = 30\n", 1), encoding="utf-8"
    )
    old_run(project.store, "ld_x", days_ago=40)
    old_run(project.store, "ld_y", days_ago=20)
    code, out, _ = run_cli(project, "trace", "--prune", "--json")
    assert code == 0
    assert json.loads(out)["run_events"] == 1


# -- payload redaction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        ({"google_key": "k-123456"}, {"google_key": WITHHELD_SECRET}),
        ({"fields": {"access_token": "abcdefgh"}}, {"fields": {"access_token": WITHHELD_SECRET}}),
        ({"consent_text": "I agree"}, {"consent_text": WITHHELD_CONSENT}),
        (
            {"consentResponses": [{"accepted": True, "text": "Yes"}]},
            {"consentResponses": [{"accepted": True, "text": WITHHELD_CONSENT}]},
        ),
        ({"note": "Bearer abcdefghijkl"}, {"note": "Bearer ***"}),
        ({"email": "a@b.io", "n": 3}, {"email": "a@b.io", "n": 3}),
    ],
)
def test_payloads_are_shown_without_secrets_or_consent_text(
    payload: dict[str, Any], shown: dict[str, Any]
) -> None:
    assert redact_payload(payload) == shown


def test_a_registered_secret_is_removed_from_any_text() -> None:
    assert redact_payload({"note": "my key is s3cr3t-value"}, ["s3cr3t-value"]) == {
        "note": "my key is ***"
    }


def test_a_lead_refused_before_it_had_an_identity_is_found_by_email(
    project: ReconcileProject,
) -> None:
    # An address email-validator refuses (no dot in the domain) holds the lead at delivery,
    # before it has a key; trace finds it by the address it was sent with.
    with project.client() as client:
        project.post_webform(client, email="Bad.Value@acme", employees="lots")
    drain_inbox(project.config, project.store, connectors=project.pool)
    code, out, _ = run_cli(project, "trace", "Bad.Value@acme", "--json")
    body = json.loads(out)
    (letter,) = [e for e in body["events"] if e["kind"] == "dead letter"]
    assert code == 0
    assert "(field email)" in letter["summary"]
    assert [e["kind"] for e in body["events"]][:1] == ["received"]


def test_a_bad_optional_value_shows_as_a_field_problem_of_the_delivered_lead(
    project: ReconcileProject,
) -> None:
    with project.client() as client:
        project.post_webform(client, email="Bad.Value@acme.io", employees="lots")
    drain_inbox(project.config, project.store, connectors=project.pool)
    code, out, _ = run_cli(project, "trace", "bad.value@acme.io", "--json")
    body = json.loads(out)
    kinds = [e["kind"] for e in body["events"]]
    assert code == 0
    assert "dead letter" not in kinds
    (problem,) = [e for e in body["events"] if e["kind"] == "field problem"]
    assert "employees" in problem["summary"]


def test_the_table_shows_a_writes_changes_one_per_line_old_to_new() -> None:
    details = {
        "call": "#1",
        "changes": {"City": {"old": "Porto", "new": "Lisbon"}, "Phone": {"new": "+1415"}},
    }
    assert details_text(details).splitlines() == [
        '{"call": "#1"}',
        'City: "Porto" → "Lisbon"',
        'Phone: → "+1415"',
    ]
