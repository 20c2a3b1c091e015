"""``leadrelay dlq retry`` on dead letters of captured leads: delivered again from the inbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer

from leadrelay.capture.worker import drain_inbox
from leadrelay.clikit import CliError
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.commands import dlq_app
from leadrelay.sync.state import DeadLetterStatus, InboxStatus
from tests.capture.sandbox_project import Project, admin
from tests.hubspot_sandbox import restore_job_title
from tests.postgres import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


def retry(project: Project, capsys: pytest.CaptureFixture[str], *ids: int) -> dict[int, str]:
    """``leadrelay dlq retry IDS --json``; the result per id."""
    app = typer.Typer()
    app.add_typer(dlq_app, name="dlq")
    capsys.readouterr()
    config = str(project.folder / "leadrelay.toml")
    code = 0
    try:
        app(
            args=["dlq", "retry", *map(str, ids), "--config", config, "--json"],
            standalone_mode=False,
        )
    except CliError as exc:
        code = exc.exit_code
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    results = {item["id"]: item["result"] for item in data["retried"]}
    # A replay that did not write every letter exits 1 (DESIGN §7.7).
    assert code == (0 if set(results.values()) == {"written"} else 1)
    return results


def refused_by_hubspot(project: Project, sandbox: SandboxServer) -> int:
    """A web-form lead HubSpot refuses (its job title property was deleted, and the project's
    mapping says a lead waits for its job title); the letter id."""
    (project.folder / "mappings" / "hubspot.toml").write_text(
        '[fields]\njob_title = { field = "jobtitle", on_invalid = "dead_letter" }\n'
    )
    admin(sandbox, "schema", {"system": "hubspot", "remove_field": "jobtitle"})
    with project.client() as client:
        response = project.post_webform(
            client, email="cto@acme.io", last_name="Silva", job_title="CTO"
        )
    assert response.status_code == 202
    stats = drain_inbox(project.config, project.store, connectors=project.pool)
    assert stats.dead_lettered == 1
    (letter,) = project.store.list_dead_letters()
    assert (letter.connection, letter.flow) == ("hubspot", None)
    return letter.id


def test_a_retry_that_fails_again_counts_an_attempt_on_the_same_letter(
    project: Project, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    letter_id = refused_by_hubspot(project, sandbox)
    assert retry(project, capsys, letter_id) == {letter_id: "failed again"}
    (letter,) = project.store.list_dead_letters(status=None)
    assert (letter.id, letter.attempts, letter.status) == (letter_id, 2, DeadLetterStatus.OPEN)
    assert "jobtitle" in letter.reason


def test_a_retry_after_the_fix_delivers_the_lead_and_closes_the_letter(
    project: Project, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    letter_id = refused_by_hubspot(project, sandbox)
    restore_job_title(sandbox)
    assert retry(project, capsys, letter_id) == {letter_id: "written"}
    assert project.store.get_dead_letter(letter_id).status is DeadLetterStatus.RETRIED
    assert project.store.inbox_counts()[InboxStatus.FAILED] == 0
    record = project.lookup("hubspot", "cto@acme.io")
    assert record is not None and record["jobtitle"] == "CTO"


def test_a_letter_whose_inbox_row_is_not_failed_is_left_alone(
    project: Project, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    letter_id = refused_by_hubspot(project, sandbox)
    key = project.store.get_dead_letter(letter_id).payload["inbox_key"]
    assert project.store.requeue_inbox(key)
    assert retry(project, capsys, letter_id) == {
        letter_id: "its capture inbox row is not failed; resolve it by hand"
    }
