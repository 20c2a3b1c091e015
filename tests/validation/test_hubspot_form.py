"""``leadrelay validate`` of a ``hubspot_form`` form: HubSpot's forms submission API, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from leadrelay.config import Config, load_config
from leadrelay.sandbox.hubspot import SANDBOX_FORM_GUID
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool
from leadrelay.validation.runner import validate_form

HS_FORM = f"""
[forms.hs-form]
source = "hubspot_form"
destination = "hubspot"
connection = "hubspot"
mapping = "mappings/forms/hs-form.toml"
form_ids = ["{SANDBOX_FORM_GUID}"]
"""
BASE_URL_LINE = 'base_url = "${HUBSPOT_BASE_URL}"\n'


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Config:
    sandbox.sandbox.reset()
    write_sandbox_project(tmp_path, sandbox.env())
    (tmp_path / "mappings" / "forms" / "hs-form.toml").write_text("[fields]\n", encoding="utf-8")
    toml = tmp_path / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8")
    assert BASE_URL_LINE in text
    # A hubspot_form's webhooks are verified with
    # the app's client secret (the run itself sends none).
    extra = 'app_client_secret = "test-app-secret"\n'
    text = text.replace(BASE_URL_LINE, BASE_URL_LINE + extra, 1)
    toml.write_text(text + HS_FORM, encoding="utf-8")
    return load_config(toml)


def test_hubspot_form_passes_every_check(project: Config) -> None:
    result = validate_form(project, "hs-form", timeout=10, capture_url=False)

    assert [check for check in result.checks if not check.ok] == []
    names = {check.name.split(" (")[0] for check in result.checks}
    assert {"submitted", "arrived", "field email", "initial stage"} <= names


def test_submission_goes_through_the_forms_api(project: Config, sandbox: SandboxServer) -> None:
    validate_form(project, "hs-form", timeout=10, capture_url=False)

    route = "POST /hubspot/submissions/v3/integration/secure/submit/{portalId}/{formGuid}"
    assert sandbox.sandbox.stats.to_json()["by_route"].get(route) == 1


def test_test_record_is_deleted_after_the_run(project: Config) -> None:
    result = validate_form(project, "hs-form", timeout=10, capture_url=False)

    assert result.email is not None
    assert result.deleted == [result.record_id]
    with ConnectorPool(project) as pool:
        assert pool.get("hubspot").lookup(emails=[result.email]) == {}


def test_keep_leaves_the_test_record(project: Config) -> None:
    result = validate_form(project, "hs-form", timeout=10, keep=True, capture_url=False)

    assert result.deleted == []
    with ConnectorPool(project) as pool:
        found = pool.get("hubspot").lookup(emails=[result.email or ""])
    assert list(found) == [result.email]
