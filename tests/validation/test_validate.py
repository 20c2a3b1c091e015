"""``leadrelay validate`` end to end on the sandbox: every source kind, outputs, clean-up."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from leadrelay.cli import CliError
from leadrelay.config import Config, load_config
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool
from leadrelay.sync.state import StateStore
from leadrelay.validation.commands import validate_command
from leadrelay.validation.runner import ValidationConfigError, validate_form

EXTRA_FORMS = """
[forms.event-list]
source = "csv"
destination = "salesforce"
mapping = "mappings/forms/event-list.toml"
delimiter = ";"
default_utm = { utm_source = "expo", utm_medium = "offline", utm_campaign = "expo-2025" }

[forms.li-ads]
source = "linkedin_lead_gen"
destination = "zoho"
mapping = "mappings/forms/li-ads.toml"
client_secret = "linkedin-client-secret"
access_token = "${LINKEDIN_ACCESS_TOKEN}"
api_url = "${LINKEDIN_API_URL}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"
default_utm = { utm_source = "linkedin", utm_medium = "paid_social", utm_campaign = "li" }
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Config:
    sandbox.sandbox.reset()
    write_sandbox_project(tmp_path, sandbox.env())
    forms = tmp_path / "mappings" / "forms"
    (forms / "event-list.toml").write_text("[fields]\n", encoding="utf-8")
    (forms / "li-ads.toml").write_text("[fields]\n", encoding="utf-8")
    toml = tmp_path / "leadrelay.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + EXTRA_FORMS, encoding="utf-8")
    return load_config(toml)


def run_cli(config: Config, *argv: str) -> int:
    app = typer.Typer()
    app.command("validate")(validate_command)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the command name
    try:
        return (
            app(
                args=["validate", *argv, "--config", str(config.path), "--timeout", "10"],
                standalone_mode=False,
            )
            or 0
        )
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def records(config: Config, connection: str, email: str) -> dict[str, Any]:
    with ConnectorPool(config) as pool:
        return pool.get(connection).lookup(emails=[email])


@pytest.mark.parametrize("form", ["demo-webform", "demo-google", "event-list"])
def test_form_passes_every_check(project: Config, form: str) -> None:
    result = validate_form(project, form, timeout=10, capture_url=False)

    failed = [check for check in result.checks if not check.ok]
    assert failed == []
    names = {check.name.split(" (")[0] for check in result.checks}
    assert {"submitted", "arrived", "field email", "ledger", "initial stage"} <= names
    assert result.record_id


@pytest.mark.parametrize("form", ["demo-meta", "li-ads"])
def test_ad_platform_form_passes_every_check(project: Config, form: str) -> None:
    result = validate_form(project, form, timeout=10, capture_url=False)

    assert [check for check in result.checks if not check.ok] == []


def test_synthetic_lead_is_deleted_after_the_run(project: Config) -> None:
    result = validate_form(project, "demo-webform", timeout=10, capture_url=False)

    assert result.email is not None
    assert result.deleted == [result.record_id]
    assert records(project, "hubspot", result.email) == {}


def test_keep_leaves_the_record(project: Config) -> None:
    result = validate_form(project, "demo-webform", timeout=10, keep=True, capture_url=False)

    assert result.email is not None
    assert result.deleted == []
    assert list(records(project, "hubspot", result.email)) == [result.email]


def test_test_leads_are_left_out_of_ledger_counts(project: Config) -> None:
    validate_form(project, "demo-webform", timeout=10, capture_url=False)

    with StateStore(project.state.url) as store:
        assert store.ledger_counts() == []
        assert sum(c.count for c in store.ledger_counts(include_test=True)) == 1


def test_json_output_has_the_design_shape(
    project: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(project, "demo-google", "--json")

    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(document) == {"form", "ok", "record_id", "latency_s", "checks"}
    assert document["ok"] is True
    assert all(set(c) == {"name", "ok", "expected", "actual"} for c in document["checks"])


def test_junit_has_a_testcase_per_check(project: Config, tmp_path: Path) -> None:
    junit = tmp_path / "out" / "validate.xml"

    code = run_cli(project, "demo-google", "--junit", str(junit))

    root = ET.parse(junit).getroot()
    (suite,) = root.findall("testsuite")
    assert code == 0
    assert suite.get("name") == "demo-google"
    assert len(suite.findall("testcase")) == int(suite.get("tests", "0")) > 5
    assert suite.findall("testcase/failure") == []


def test_all_validates_every_form(project: Config, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(project, "--all", "--json")

    document = json.loads(capsys.readouterr().out)
    assert sorted(f["form"] for f in document["forms"]) == sorted(project.forms)
    assert document["ok"] is all(f["ok"] for f in document["forms"])


def test_unknown_form_is_a_config_error(project: Config) -> None:
    assert run_cli(project, "no-such-form") == 2


def test_unknown_form_names_the_defined_ones(project: Config) -> None:
    with pytest.raises(ValidationConfigError, match="demo-webform"):
        validate_form(project, "no-such-form")
