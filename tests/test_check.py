"""`leadrelay check` against the sandbox: connections, budgets, mappings vs the live schema."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadrelay.check import run_checks
from leadrelay.cli import main
from leadrelay.config import load_config
from leadrelay.connectors.base import Connector, connector_class
from leadrelay.connectors.customfields import CustomFieldSpec
from leadrelay.connectors.errors import Rejected
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.connectors.salesforce.fields import TOOLING_PATH
from leadrelay.connectors.salesforce.fields import custom_field_body as salesforce_body
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.connectors.zoho.fields import custom_field_body as zoho_body
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


#: fields of every kind leadrelay creates: text, unique key, number, text area, picklist,
#: URL and date-time
_REMOVED = {
    "hubspot": ("utm_term", "rejection_reason"),
    "salesforce": (
        "UTM_Term__c",
        "LeadRelay_Key__c",
        "Lead_Score__c",
        "Qualification_Reason__c",
        "Rejection_Reason__c",
        "Landing_Page__c",
        "Assigned_At__c",
    ),
    "zoho": (
        "UTM_Term",
        "LeadRelay_Key",
        "Lead_Score",
        "Qualification_Reason",
        "Lead_Tier",
        "Landing_Page",
        "Accepted_At",
    ),
}


def _connector(project: Path, system: str) -> Connector[Any]:
    config = load_config(project)
    return connector_class(system)(config.connections[system], system)


@pytest.mark.parametrize("system", ["hubspot", "salesforce", "zoho"])
def test_create_fields_makes_a_sandbox_without_its_custom_fields_pass(
    server: SandboxServer, project: Path, capsys: pytest.CaptureFixture[str], system: str
) -> None:
    for name in _REMOVED[system]:
        server.sandbox.emulators[system].change_schema({"remove_field": name})
    with pytest.raises(SystemExit) as failing:
        main(["check", "--config", str(project)])
    assert failing.value.code == 1
    capsys.readouterr()
    main(["check", "--config", str(project), "--create-fields", "--json"])
    report = json.loads(capsys.readouterr().out)
    [created] = [
        c
        for c in report["checks"]
        if c["subject"] == f"connection {system} ({system}) create fields"
    ]
    assert set(created["detail"].removeprefix("created ").split(";")[0].split(", ")) == set(
        _REMOVED[system]
    )
    assert report["ok"] is True, [c for c in report["checks"] if not c["ok"]]


@pytest.mark.parametrize(
    ("system", "name", "kind", "allowed"),
    [
        ("salesforce", "Rejection_Reason__c", "picklist", "No Authority"),
        ("salesforce", "Lead_Score__c", "double", None),
        ("zoho", "Lead_Tier", "picklist", "Warm"),
        ("zoho", "Landing_Page", "website", None),
    ],
)
def test_a_created_field_is_described_with_its_type_and_values(
    server: SandboxServer,
    project: Path,
    system: str,
    name: str,
    kind: str,
    allowed: str | None,
) -> None:
    server.sandbox.emulators[system].change_schema({"remove_field": name})
    main(["check", "--config", str(project), "--create-fields", "--json"])
    connector = _connector(project, system)
    try:
        info = connector.describe().field(name)
    finally:
        connector.close()
    assert info.type == kind
    if allowed is not None:
        assert info.picklist_values and allowed in info.picklist_values


def test_create_fields_when_every_field_exists_creates_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["check", "--config", str(project), "--create-fields", "--json"])
    report = json.loads(capsys.readouterr().out)
    details = [c["detail"] for c in report["checks"] if c["subject"].endswith("create fields")]
    assert len(details) == 3
    assert all("created" not in detail for detail in details), details


_TEXT = CustomFieldSpec("UTM_Source__c", "UTM Source", "text", 255)


def test_salesforce_refuses_a_custom_field_the_lead_already_has(project: Path) -> None:
    connector = _connector(project, "salesforce")
    assert isinstance(connector, SalesforceConnector)
    try:
        with pytest.raises(Rejected) as refused:
            connector.restful(
                TOOLING_PATH,
                method="POST",
                json=salesforce_body(_TEXT),
                describe="duplicate field",
                idempotent=False,
            )
    finally:
        connector.close()
    assert refused.value.code == "DUPLICATE_DEVELOPER_NAME"


def test_zoho_refuses_a_field_the_module_already_has(server: SandboxServer, project: Path) -> None:
    connector = _connector(project, "zoho")
    assert isinstance(connector, ZohoConnector)
    try:
        connector.describe()  # a token the sandbox knows (a reset forgets the cached one)
        token, domain = connector.tokens.token(), connector.api_domain
    finally:
        connector.close()
    spec = CustomFieldSpec("UTM_Source", "UTM Source", "text", 255)
    fresh = CustomFieldSpec("Webinar_Name", "Webinar", "text", 120)
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(verify=context, timeout=30) as http:
        answer = http.post(
            f"{domain}/crm/v7/settings/fields",
            params={"module": "Leads"},
            headers={"Authorization": f"Zoho-oauthtoken {token}"},
            json={"fields": [zoho_body(spec), zoho_body(fresh)]},
        )
    assert answer.status_code == 207
    duplicate, made = answer.json()["fields"]
    assert (duplicate["code"], duplicate["details"]["api_name"]) == ("DUPLICATE_DATA", "UTM_Source")
    assert made["status"] == "success"
