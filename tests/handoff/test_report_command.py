"""``leadrelay report`` on the sandbox project against an in-process sandbox."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from leadrelay.cli import CliError
from leadrelay.config import load_config
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.handoff.commands import report_command
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine
from leadrelay.sync.state import StateStore

FAST_RETRY = RetryPolicy(max_attempts=3, max_total_s=5.0, base_s=0.005, cap_s=0.05)

PERSON = {"firstname": "Kim", "lastname": "Lee", "company": "BigCo", "jobtitle": "CFO"}

app = typer.Typer(add_completion=False)
app.command("report")(report_command)
app.command("noop")(lambda: None)  # two commands: "report" stays a sub-command


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running
    gc.collect()


@pytest.fixture
def project(server: SandboxServer, tmp_path: Path) -> Path:
    """The sandbox project after one sync of two HubSpot contacts, one of them a test lead."""
    server.sandbox.reset()
    write_sandbox_project(tmp_path, server.env())
    path = tmp_path / "leadrelay.toml"
    config = load_config(path)
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        from leadrelay.connectors.base import UpsertInput

        pool.get("hubspot").upsert(
            [
                UpsertInput(ref="1", fields={"email": "cfo@bigco.io", **PERSON}),
                UpsertInput(ref="2", fields={"email": "leadrelay-test+r1@example.com", **PERSON}),
            ]
        )
        with StateStore(config.state.url) as store:
            context = SyncContext(config, store, pool)
            for flow in config.flows:
                SyncEngine.for_flow(context, flow).run()
    return path


def test_json_has_the_report_sections_and_leaves_test_leads_out(project: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--config", str(project), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"funnel", "ledger", "sla", "rejections", "diagnosis"} <= data.keys()
    assert data["lead_count"] == 1  # one lead, in Salesforce and Zoho; the test lead left out
    assert data["ledger"]["totals"]["written"] == 4
    assert data["rejections"]["without_reason"] == []


def test_html_file_is_written_next_to_the_tables(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--config", str(project), "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert "Handoff diagnosis" in result.stdout
    assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html>")


@pytest.mark.parametrize(("since", "leads"), [("2000-01-01", 1), ("2999-01-01", 0)])
def test_since_and_until_keep_the_leads_that_arrived_between(
    project: Path, since: str, leads: int
) -> None:
    result = CliRunner().invoke(
        app,
        ["report", "--config", str(project), "--json", "--since", since, "--until", "2999-12-31"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["lead_count"] == leads
    assert data["funnel"]["period"] == {"since": since, "until": "2999-12-31"}


def test_a_period_ending_before_it_starts_is_exit_code_2(tmp_path: Path) -> None:
    project = tmp_path / "leadrelay.toml"
    result = CliRunner().invoke(
        app, ["report", "--config", str(project), "--since", "2024-05-10", "--until", "2024-05-01"]
    )
    assert isinstance(result.exception, CliError)
    assert result.exception.exit_code == 2
    assert "--since 2024-05-10 is after --until 2024-05-01" in str(result.exception)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[sla]\nhot_hours = -1\n", "sla.hot_hours"),
        ("[report]\nscore_bands = [80, 60]\n", "report.score_bands: must rise strictly"),
    ],
)
def test_a_config_error_is_exit_code_2(tmp_path: Path, body: str, message: str) -> None:
    bad = tmp_path / "leadrelay.toml"
    bad.write_text(body, encoding="utf-8")
    result = CliRunner().invoke(app, ["report", "--config", str(bad)])
    assert isinstance(result.exception, CliError)
    assert result.exception.exit_code == 2
    assert message in str(result.exception)


REPORT_SECTION = """
[report]
score_bands = [50]
calibration_min_leads = 1

[report.goals]
win_rate = 0.75
"""


@pytest.fixture
def closed_project(server: SandboxServer, tmp_path: Path) -> Path:
    """Two HubSpot contacts synced to the CRMs, then sales closes one won and one lost (the
    HubSpot lifecycle stage); the project sets its own goals and score bands in [report]."""
    server.sandbox.reset()
    write_sandbox_project(tmp_path, server.env())
    path = tmp_path / "leadrelay.toml"
    path.write_text(path.read_text(encoding="utf-8") + REPORT_SECTION, encoding="utf-8")
    config = load_config(path)
    from leadrelay.connectors.base import UpsertInput

    people = {"1": "won@bigco.io", "2": "lost@bigco.io"}
    with ConnectorPool(config, retry=FAST_RETRY) as pool:
        hubspot = pool.get("hubspot")
        hubspot.upsert(
            [UpsertInput(ref=r, fields={"email": e, **PERSON}) for r, e in people.items()]
        )
        with StateStore(config.state.url) as store:
            context = SyncContext(config, store, pool)
            for flow in config.flows:
                SyncEngine.for_flow(context, flow).run()
        hubspot.upsert(
            [
                UpsertInput(ref="1", fields={"email": people["1"], "lifecyclestage": "customer"}),
                UpsertInput(
                    ref="2",
                    fields={
                        "email": people["2"],
                        "lifecyclestage": "opportunity",
                        "hs_lead_status": "UNQUALIFIED",
                    },
                ),
            ]
        )
    return path


def test_json_follows_the_leads_past_sql_against_the_projects_goals(closed_project: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--config", str(closed_project), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    counts = {step["stage"]: step["count"] for step in data["funnel"]["stages"]}
    assert (counts["opportunity"], counts["won"]) == (2, 1)
    outcomes = data["outcomes"]
    assert (outcomes["won"], outcomes["lost"], outcomes["open"]) == (1, 1, 0)
    assert outcomes["win_rate"] == {"actual": 0.5, "goal": 0.75, "meets_goal": False}
    assert [band["band"] for band in outcomes["calibration"]["bands"]] == ["below 50", "50+"]
    assert outcomes["reasons"]["without_reason"] == {"won": 1, "lost": 1}  # none mapped yet
    [outcome] = [layer for layer in data["diagnosis"]["layers"] if layer["layer"] == "outcome"]
    assert "win rate 50.0 % against a goal of 75.0 %" in outcome["evidence"]


def test_html_shows_the_outcome_and_calibration(closed_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["report", "--config", str(closed_project), "--html", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Score calibration" in result.stdout
    page = out.read_text(encoding="utf-8")
    assert '<section id="outcomes">' in page and '<section id="calibration">' in page
    assert 'id="win-rate" data-actual="0.5" data-goal="0.75" data-meets-goal="false"' in page
