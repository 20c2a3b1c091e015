"""The journal's rows: field-level diffs, redaction before anything is stored, one statement
per batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from leadrelay.connectors.base import WriteOutcome, WriteResult
from leadrelay.connectors.errors import Rejected
from leadrelay.journal import WITHHELD_CONSENT, WITHHELD_SECRET, Journal, Written, field_diff
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
