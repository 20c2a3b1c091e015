"""Outage: while the destination CRM answers 503 to everything, leads are still accepted, and
they are delivered exactly once after it recovers (the sandbox's fault injection)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from leadrelay.capture.worker import drain_inbox
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import InboxStatus, LedgerState
from tests.capture.sandbox_project import Project, admin
from tests.postgres import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

OUTAGE = {"error_rate": 1.0, "error_status": 503, "systems": ["hubspot"]}
EMAILS = [f"outage{n}@acme.io" for n in range(3)]


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Project]:
    admin(sandbox, "reset", {})
    opened = Project(tmp_path, sandbox)
    admin(sandbox, "faults", OUTAGE)
    try:
        yield opened
    finally:
        admin(sandbox, "faults", {})
        opened.close()


def capture_during_outage(project: Project) -> list[int]:
    with project.client() as client:
        codes = [project.post_webform(client, email=e).status_code for e in EMAILS]
        codes.append(project.post_meta(client, email="outage-meta@acme.io").status_code)
    return codes


def test_submissions_are_accepted_while_the_crm_is_down(project: Project) -> None:
    assert capture_during_outage(project) == [202] * 4


def test_leads_stay_pending_with_the_crm_error_while_it_is_down(project: Project) -> None:
    capture_during_outage(project)
    stats = drain_inbox(project.config, project.store, connectors=project.pool)
    assert (stats.pending, stats.delivered, stats.dead_lettered) == (4, 0, 0)
    assert any("503" in error for error in stats.errors)
    assert project.store.inbox_counts()[InboxStatus.PENDING] == 4
    assert project.store.list_dead_letters() == []


def test_a_failing_crm_is_called_once_per_pass(project: Project) -> None:
    capture_during_outage(project)
    stats = drain_inbox(project.config, project.store, connectors=project.pool, limit=1)
    assert stats.claimed == 4
    assert stats.api_calls == {"hubspot": 1}


def test_leads_are_delivered_once_after_the_crm_recovers(project: Project) -> None:
    capture_during_outage(project)
    drain_inbox(project.config, project.store, connectors=project.pool)
    admin(project.sandbox, "faults", {})
    stats = drain_inbox(project.config, project.store, connectors=project.pool)
    again = drain_inbox(project.config, project.store, connectors=project.pool)
    assert (stats.delivered, stats.created, again.claimed) == (4, 4, 0)
    found = project.pool.get("hubspot").lookup(emails=[*EMAILS, "outage-meta@acme.io"])
    assert len(found) == 4
    counts = project.store.ledger_counts(include_test=True)
    assert {c.state for c in counts} == {LedgerState.WRITTEN}
    assert sum(c.count for c in counts) == 4
