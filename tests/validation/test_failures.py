"""A failing form is explained: each cause gives a failing check that names it (exit 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from leadrelay.cli import CliError
from leadrelay.config import Config, load_config
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.validation.commands import validate_command
from leadrelay.validation.runner import ValidationResult, validate_form


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Config]:
    sandbox.sandbox.reset()
    write_sandbox_project(tmp_path, sandbox.env())
    yield load_config(tmp_path / "leadrelay.toml")
    sandbox.sandbox.set_faults(Faults())


def failing(result: ValidationResult) -> list[str]:
    return [f"{c.name}: expected {c.expected}, got {c.actual}" for c in result.checks if not c.ok]


def test_field_removed_in_the_crm(project: Config, sandbox: SandboxServer) -> None:
    sandbox.sandbox.emulators["hubspot"].change_schema({"remove_field": "jobtitle"})

    result = validate_form(project, "demo-webform", timeout=5, capture_url=False)

    assert not result.ok
    assert any("has no field 'jobtitle'" in line for line in failing(result))


def test_picklist_value_not_allowed(project: Config, sandbox: SandboxServer) -> None:
    sandbox.sandbox.emulators["zoho"].change_schema(
        {"remove_option": {"field": "Lead_Source", "value": "Advertisement"}}
    )

    result = validate_form(project, "demo-google", timeout=5, capture_url=False)

    assert any(
        "Lead_Source" in line and "not in the picklist" in line and "Advertisement" in line
        for line in failing(result)
    )


def test_mapping_typo(project: Config) -> None:
    override = project.folder / "mappings" / "hubspot.toml"
    override.write_text('[fields]\njob_title = "jobtitel"\n', encoding="utf-8")

    result = validate_form(project, "demo-webform", timeout=5, capture_url=False)

    assert any("did you mean 'jobtitle'" in line for line in failing(result))


def test_form_mapping_that_does_not_load(project: Config) -> None:
    mapping = project.folder / "mappings" / "forms" / "demo-webform.toml"
    mapping.write_text('[fields]\njob_titel = "role"\n', encoding="utf-8")

    result = validate_form(project, "demo-webform", timeout=5, capture_url=False)

    assert [c.name for c in result.checks if not c.ok] == ["pre-flight: form mapping"]
    assert "job_titel" in failing(result)[0]


def test_capture_that_never_delivered(project: Config, sandbox: SandboxServer) -> None:
    # The outage starts after the pre-flight read describe(): the delivery is what fails.
    quick = RetryPolicy(max_attempts=1, max_total_s=0.0, base_s=0.0)

    def outage(config: Config, store: object, **kwargs: object) -> None:
        from leadrelay.capture.worker import deliver_inbox

        sandbox.sandbox.set_faults(
            Faults.model_validate({"error_rate": 1.0, "error_status": 503, "systems": ["zoho"]})
        )
        deliver_inbox(config, store, **kwargs)  # type: ignore[arg-type]

    result = validate_form(
        project,
        "demo-google",
        timeout=1,
        capture_url=False,
        deliver=outage,
        connector_options={"retry": quick},
    )

    (line,) = failing(result)
    assert line.startswith("arrived: expected a record in zoho within 1s")
    assert "not delivered within 1s" in line
    assert "503" in line


def test_failing_form_exits_1(project: Config, sandbox: SandboxServer) -> None:
    sandbox.sandbox.emulators["hubspot"].change_schema({"remove_field": "jobtitle"})
    app = typer.Typer()
    app.command("validate")(validate_command)
    app.command("noop")(lambda: None)

    with pytest.raises(CliError) as raised:
        app(args=["validate", "demo-webform", "--config", str(project.path)], standalone_mode=False)

    assert raised.value.exit_code == 1
