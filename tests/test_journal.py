"""The journal's rows: field-level diffs, redaction before anything is stored, one statement
per batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.connectors.base import WriteOutcome, WriteResult
from leadrelay.connectors.errors import Rejected
from leadrelay.handoff.qualify import Qualification
from leadrelay.handoff.routing import Assignment
from leadrelay.handoff.scoring import ScoreResult
from leadrelay.journal import WITHHELD_CONSENT, WITHHELD_SECRET, Journal, Written, field_diff
from leadrelay.model import Lead, Owner, ScoreBreakdown, Stage, Tier
from leadrelay.sync.state import JsonDocument, StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


@pytest.mark.parametrize(
    ("fields", "before", "diff"),
    [
        (
            {"Phone": "+1415", "City": "Lisbon"},
            {"phone": "+1415", "City": "Porto"},
            {"City": {"old": "Porto", "new": "Lisbon"}},
        ),
        ({"Score": 20}, {"Score": "20.0"}, {}),
        ({"City": "Lisbon", "Phone": None}, {}, {"City": {"old": None, "new": "Lisbon"}}),
        ({"City": "Lisbon"}, None, {"City": {"new": "Lisbon"}}),
        (
            {"Consent_Text__c": "I agree", "api_key__c": "k-1"},
            {},
            {
                "Consent_Text__c": {"old": None, "new": WITHHELD_CONSENT},
                "api_key__c": WITHHELD_SECRET,
            },
        ),
    ],
    ids=["changed-only", "same-number", "created", "old-unread", "secret-and-consent"],
)
def test_a_diff_holds_what_changed_old_to_new(
    fields: dict[str, Any], before: dict[str, Any] | None, diff: dict[str, Any]
) -> None:
    assert field_diff(fields, before) == diff


def test_a_refused_write_is_recorded_with_the_systems_message(store: StateStore) -> None:
    refused = WriteResult.failed("ld_1", Rejected("INVALID_EMAIL_ADDRESS: bad", system="sf"))
    [row] = Journal(store).writes("salesforce", [Written.of("ld_1", refused, {}, {}, "#1")])
    assert (row["kind"], row["details"]["call"]) == ("write failed", "#1")
    assert "INVALID_EMAIL_ADDRESS: bad" in row["summary"]


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("token s3cr3t-value-1 here", "s3cr3t-value-1"),
        ("Bearer abcdefghijkl0123", "abcdefghijkl0123"),
        # redacted in the batch's JSON, the session id takes the escape of the quote with it:
        # the row is redacted value by value instead
        ('00D000000000001!abcdef"xyz', "00D000000000001!abc"),
    ],
    ids=["registered-secret", "token-shape", "session-id-before-a-quote"],
)
def test_a_secret_never_reaches_the_store(store: StateStore, value: str, secret: str) -> None:
    journal = Journal(store, secrets=["s3cr3t-value-1"])
    created = WriteResult("ld_1", "1001", WriteOutcome.CREATED)
    journal.record_writes("hubspot", [Written.of("ld_1", created, {"note": value}, None, "#1")])
    with store.transaction() as conn:
        stored = str(conn.execute(sa.text("select summary, details from journal")).all())
    assert secret not in stored
    assert "***" in stored


def test_a_batch_is_one_insert(store: StateStore) -> None:
    statements: list[str] = []
    engine = store._engine
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    created = WriteResult("r", "1", WriteOutcome.CREATED)
    writes = [Written.of(f"ld_{n}", created, {"City": "Lisbon"}, {}, "#1") for n in range(50)]
    Journal(store).record_writes("hubspot", writes)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert len(store.journal_for([f"ld_{n}" for n in range(50)])) == 50


def test_a_sealed_rows_details_are_stored_as_serialized_once(store: StateStore) -> None:
    created = WriteResult("ld_1", "1001", WriteOutcome.CREATED)
    [row] = Journal(store).writes(
        "hubspot", [Written.of("ld_1", created, {"City": "Évora"}, {}, "#1")]
    )
    assert isinstance(row["details"], JsonDocument)
    assert json.loads(row["details"].text) == row["details"]


def test_a_sealed_row_reads_back_with_its_details(store: StateStore) -> None:
    created = WriteResult("ld_1", "1001", WriteOutcome.CREATED)
    journal = Journal(store)
    [row] = journal.writes("hubspot", [Written.of("ld_1", created, {"City": "Évora"}, {}, "#1")])
    store.add_journal([row])
    [stored] = store.journal_for(["ld_1"])
    assert stored.details == dict(row["details"])
    assert stored.details["changes"]["City"]["new"] == "Évora"


def test_a_redacted_rows_details_are_plain_again(store: StateStore) -> None:
    created = WriteResult("ld_1", "1001", WriteOutcome.CREATED)
    journal = Journal(store, secrets=["s3cr3t-value-1"])
    note = {"note": "token s3cr3t-value-1 here"}
    [row] = journal.writes("hubspot", [Written.of("ld_1", created, note, {}, "#1")])
    assert type(row["details"]) is dict
    assert "s3cr3t-value-1" not in json.dumps(row["details"])


# -- the qualify step's row ---------------------------------------------------------------

_REASONS = st.lists(st.sampled_from(["demo request +30", "free-mail address -10", "x" * 150]))


@st.composite
def _qualifications(draw: st.DrawFn) -> tuple[Lead, Qualification]:
    owner = draw(st.sampled_from([None, Owner(id="005A"), Owner(id="7", name="Ana Silva")]))
    lead = Lead(
        email="ada@acme.io",
        stage=draw(st.sampled_from(list(Stage))),
        owner=owner,
        queue=draw(st.sampled_from([None, "Unassigned Leads"])),
        sla_due_at=draw(st.sampled_from([None, datetime(2026, 1, 5, 9, 30, tzinfo=UTC)])),
    )
    breakdown = ScoreBreakdown(
        fit=draw(st.sampled_from([0.0, 12.5])), intent=30.0, engagement=draw(st.just(1.25))
    )
    result = ScoreResult(
        total=breakdown.fit + breakdown.intent + breakdown.engagement,
        breakdown=breakdown,
        reasons=draw(_REASONS),
        is_mql=draw(st.booleans()),
        tier=draw(st.sampled_from(list(Tier))),
        qualification_reason=draw(st.sampled_from(["MQL (hot): score 61 >= 60", "r" * 255])),
    )
    assignment = draw(
        st.sampled_from(
            [
                None,
                Assignment(owner, None, "round robin inbound, position 2 -> Ana", "round_robin"),
                Assignment(None, "Unassigned Leads", "no rule matched", "fallback_queue"),
            ]
        )
    )
    problem = draw(st.sampled_from([None, "hubspot field hs_email_open: expected a count"]))
    authority = draw(st.sampled_from(["leadrelay", "source"]))
    return lead, Qualification(lead.key, result, assignment, problem, authority)


def _walked_qualified_row(
    journal: Journal, lead: Lead, done: Qualification, at: datetime
) -> dict[str, Any]:
    """The qualify row as every detail goes through the general row builder."""
    row = journal.qualified(lead, done, "salesforce", at=at)
    routing: dict[str, Any] | None = None
    if done.assignment is not None:
        routing = {
            "rule": done.assignment.rule,
            "owner": lead.owner.id if lead.owner else None,
            "owner_name": lead.owner.name if lead.owner else None,
            "queue": lead.queue,
            "reason": done.assignment.reason,
        }
    score = done.score
    return journal._row(
        lead.key,
        "qualified",
        "salesforce",
        row["summary"],
        at=at,
        score=score.total,
        breakdown=score.breakdown.model_dump(),
        reasons=score.reasons,
        tier=score.tier.value,
        mql=score.is_mql,
        stage=lead.stage.value,
        qualification_reason=score.qualification_reason,
        authority=done.authority,
        routing=routing,
        sla_due_at=lead.sla_due_at,
        signal_problem=done.signal_problem,
    )


@settings(max_examples=100, deadline=None)
@given(qualification=_qualifications())
def test_a_qualify_row_is_what_the_general_row_builder_shows(
    tmp_path_factory: pytest.TempPathFactory, qualification: tuple[Lead, Qualification]
) -> None:
    lead, done = qualification
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with StateStore(f"sqlite:///{tmp_path_factory.mktemp('q') / 'state.db'}") as opened:
        journal = Journal(opened)
        row = journal.qualified(lead, done, "salesforce", at=at)
        walked = _walked_qualified_row(journal, lead, done, at)
    assert row == walked
    assert json.dumps(row["details"]) == json.dumps(walked["details"])
