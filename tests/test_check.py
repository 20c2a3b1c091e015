"""`leadrelay check` against the sandbox: connections, budgets, mappings vs the live schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadrelay.check import run_checks
from leadrelay.cli import main
from leadrelay.config import load_config
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture
def project(server: SandboxServer, tmp_path: Path) -> Path:
    server.sandbox.reset()
    write_sandbox_project(tmp_path, server.env())
    return tmp_path / "leadrelay.toml"


def test_a_fresh_sandbox_project_passes_every_check(project: Path) -> None:
    results = run_checks(load_config(project))
    assert [r for r in results if not r.ok] == []
    subjects = {r.subject for r in results}
    for name in ("hubspot", "salesforce", "zoho"):
        assert f"connection {name} ({name})" in subjects
        assert f"connection {name} ({name}) {name} mapping" in subjects


def test_health_reports_the_api_budget(project: Path) -> None:
    results = {r.subject: r for r in run_checks(load_config(project))}
    assert "API budget" in results["connection salesforce (salesforce)"].detail


@pytest.mark.parametrize(
    ("system", "change", "named"),
    [
        ("salesforce", {"remove_field": "UTM_Source__c"}, "UTM_Source__c"),
        (
            "salesforce",
            {"remove_option": {"field": "Status", "value": "Working - Contacted"}},
            "Working - Contacted",
        ),
        ("hubspot", {"remove_field": "utm_campaign"}, "utm_campaign"),
        (
            "hubspot",
            {"remove_option": {"field": "hs_lead_status", "value": "IN_PROGRESS"}},
            "IN_PROGRESS",
        ),
        ("zoho", {"remove_field": "UTM_Medium"}, "UTM_Medium"),
    ],
)
def test_schema_drift_fails_naming_the_connection_field_and_value(
    server: SandboxServer,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    system: str,
    change: dict[str, object],
    named: str,
) -> None:
    server.sandbox.emulators[system].change_schema(change)
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--config", str(project), "--json"])
    assert exit_info.value.code == 1
    report = json.loads(capsys.readouterr().out)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed, report
    assert all(c["subject"].startswith(f"connection {system} ") for c in failed)
    assert any(named in c["detail"] for c in failed)


def test_bad_credentials_fail_without_printing_the_secret(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = project.parent / ".env"
    env = env_file.read_text()
    token = next(
        line.split("=", 1)[1] for line in env.splitlines() if line.startswith("HUBSPOT_ACCESS")
    )
    env_file.write_text(env.replace(token, "pat-wrong-token-123"))
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--config", str(project)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "pat-wrong-token-123" not in out
    assert token not in out


@pytest.mark.parametrize(
    ("variables", "connection"),
    [
        (("HUBSPOT_ACCESS_TOKEN",), "hubspot"),
        # whichever grant the project uses: the password or the refresh token
        (("SALESFORCE_PASSWORD", "SALESFORCE_REFRESH_TOKEN"), "salesforce"),
        (("ZOHO_REFRESH_TOKEN",), "zoho"),
    ],
)
def test_a_refused_connection_shows_the_systems_reason(
    project: Path, capsys: pytest.CaptureFixture[str], variables: tuple[str, ...], connection: str
) -> None:
    env_file = project.parent / ".env"
    lines = [
        f"{line.partition('=')[0]}=wrong-value-123" if line.partition("=")[0] in variables else line
        for line in env_file.read_text().splitlines()
    ]
    env_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit):
        main(["check", "--config", str(project), "--json"])
    report = json.loads(capsys.readouterr().out)
    [failed] = [c for c in report["checks"] if not c["ok"]]
    assert failed["subject"] == f"connection {connection} ({connection})"
    reason = failed["detail"].split(" (")[0]
    assert reason and "wrong-value-123" not in failed["detail"]
    assert any(word in reason.lower() for word in ("401", "invalid", "refused", "auth")), reason


def test_check_prints_one_line_a_check_when_stdout_is_not_a_terminal(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["check", "--config", str(project), "--offline"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "leadrelay check"
    assert out[1].startswith('✓ checked="config leadrelay.toml" detail=')
    assert len(out) == 1 + len([line for line in out if line[:1] in "✓✗"])


def test_create_fields_creates_the_missing_hubspot_properties(
    server: SandboxServer, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("utm_term", "rejection_reason"):
        server.sandbox.emulators["hubspot"].change_schema({"remove_field": name})
    with pytest.raises(SystemExit) as failing:
        main(["check", "--config", str(project)])
    assert failing.value.code == 1
    capsys.readouterr()
    main(["check", "--config", str(project), "--create-fields", "--json"])
    report = json.loads(capsys.readouterr().out)
    created = next(c for c in report["checks"] if c["subject"].endswith("create fields"))
    assert "utm_term" in created["detail"] and "rejection_reason" in created["detail"]
    assert report["ok"] is True
