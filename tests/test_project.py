from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from leadrelay.capture.formsconfig import env_prefix
from leadrelay.config import (
    ConfigError,
    HubSpotConnection,
    SalesforceConnection,
    WebformConfig,
    ZohoConnection,
    load_config,
    read_env_file,
)
from leadrelay.model import Lead
from leadrelay.project import FORM_NAME, STARTER_ENV_VARS, write_starter_project
from leadrelay.sandbox.project import seed_leads, set_aside_state, write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from tests.hubspot_sandbox import hubspot_api

FILLED = {
    "HUBSPOT_ACCESS_TOKEN": "pat-na1-test",
    "SALESFORCE_REFRESH_TOKEN": "5Aep-test",
    "SALESFORCE_CONSUMER_KEY": "3MVG9-test",
    "SALESFORCE_CONSUMER_SECRET": "cs-test",
    "ZOHO_CLIENT_ID": "1000.test",
    "ZOHO_CLIENT_SECRET": "zs-test",
    "ZOHO_REFRESH_TOKEN": "1000.rt-test",
    "FORM_PRICING_DEMO_SECRET": "form-test",
}


def test_writes_the_starter_files(tmp_path: Path) -> None:
    written = write_starter_project(tmp_path)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        ".env.example",
        ".gitignore",
        "leadrelay.toml",
        "mappings/README.md",
        f"mappings/forms/{FORM_NAME}.toml",
    ]


def test_loads_with_environment_set(tmp_path: Path) -> None:
    write_starter_project(tmp_path)

    config = load_config(tmp_path / "leadrelay.toml", environ=FILLED)

    assert isinstance(config.connections["hubspot"], HubSpotConnection)
    sf = config.connections["salesforce"]
    assert isinstance(sf, SalesforceConnection)
    assert sf.auth == "refresh_token"
    assert sf.instance_url is None
    assert sf.security_token is None
    zoho = config.connections["zoho"]
    assert isinstance(zoho, ZohoConnection)
    assert str(zoho.accounts_url).startswith("https://accounts.zoho.com")
    assert zoho.api_domain is None
    for crm in ("salesforce", "zoho"):
        flow = config.flow(f"hubspot-{crm}")
        assert (flow.source, flow.destination, flow.two_way) == ("hubspot", crm, True)
    assert isinstance(config.form(FORM_NAME), WebformConfig)
    assert config.state.url == f"sqlite:///{tmp_path.as_posix()}/leadrelay.db"


def test_loads_with_env_example_copied_to_dotenv(tmp_path: Path) -> None:
    write_starter_project(tmp_path)
    lines = (tmp_path / ".env.example").read_text(encoding="utf-8").splitlines()
    filled = [
        f"{line.partition('=')[0]}={FILLED[line.partition('=')[0]]}"
        if line.partition("=")[0] in FILLED
        else line
        for line in lines
    ]
    (tmp_path / ".env").write_text("\n".join(filled) + "\n", encoding="utf-8")

    config = load_config(tmp_path / "leadrelay.toml", environ={})

    hs = config.connections["hubspot"]
    assert isinstance(hs, HubSpotConnection) and hs.access_token is not None
    assert hs.access_token.get_secret_value() == FILLED["HUBSPOT_ACCESS_TOKEN"]
    assert hs.base_url == "https://api.hubapi.com"


def test_unfilled_env_example_names_every_missing_secret(tmp_path: Path) -> None:
    write_starter_project(tmp_path)
    shutil.copy(tmp_path / ".env.example", tmp_path / ".env")

    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "leadrelay.toml", environ={})

    named = set(re.findall(r"variable (\w+)", "\n".join(info.value.problems)))
    assert named == set(FILLED)


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


def test_env_example_lists_every_referenced_variable(tmp_path: Path) -> None:
    write_starter_project(tmp_path)
    data = tomllib.loads((tmp_path / "leadrelay.toml").read_text(encoding="utf-8"))
    example = (tmp_path / ".env.example").read_text(encoding="utf-8")

    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", " ".join(strings(data))))
    listed = {
        line.partition("=")[0] for line in example.splitlines() if line and not line.startswith("#")
    }
    assert referenced == listed == set(STARTER_ENV_VARS)


def test_secrets_are_references_only(tmp_path: Path) -> None:
    write_starter_project(tmp_path)
    data = tomllib.loads((tmp_path / "leadrelay.toml").read_text(encoding="utf-8"))

    secret_keys = {
        "access_token",
        "password",
        "consumer_secret",
        "security_token",
        "secret",
        "client_secret",
        "refresh_token",
    }
    tables = [*data["connections"].values(), *data["forms"].values()]
    values = [table[key] for table in tables for key in secret_keys & set(table)]
    assert values
    assert all(re.fullmatch(r"\$\{[A-Z_]+(:-)?\}", value) for value in values)


def test_the_form_secret_is_named_as_forms_add_names_it(tmp_path: Path) -> None:
    write_starter_project(tmp_path)
    data = tomllib.loads((tmp_path / "leadrelay.toml").read_text(encoding="utf-8"))

    assert data["forms"][FORM_NAME]["secret"] == f"${{{env_prefix(FORM_NAME)}_SECRET}}"


def test_handoff_defaults_follow_the_sop(tmp_path: Path) -> None:
    write_starter_project(tmp_path)

    config = load_config(tmp_path / "leadrelay.toml", environ=FILLED)

    assert config.scoring.mql_threshold == 60
    weights = config.scoring.weights
    assert (weights.fit, weights.intent, weights.engagement) == (40, 40, 20)
    assert config.sla == {"hot_hours": 1, "mql_hours": 24, "unassigned_hours": 12}
    assert config.routing.fallback_queue


def test_form_mapping_targets_lead_fields(tmp_path: Path) -> None:
    write_starter_project(tmp_path)

    mapping = tomllib.loads(
        (tmp_path / "mappings" / "forms" / f"{FORM_NAME}.toml").read_text(encoding="utf-8")
    )

    assert mapping["fields"]["email"] == "email"
    assert set(mapping["fields"]) <= set(Lead.model_fields)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "leadrelay.toml").write_text("# mine\n", encoding="utf-8")

    with pytest.raises(FileExistsError, match=r"leadrelay\.toml: already exists"):
        write_starter_project(tmp_path)

    assert (tmp_path / "leadrelay.toml").read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / ".env.example").exists()


def test_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "leadrelay.toml").write_text("# mine\n", encoding="utf-8")

    write_starter_project(tmp_path, force=True)

    assert "[connections.hubspot]" in (tmp_path / "leadrelay.toml").read_text(encoding="utf-8")


def test_gitignore_is_extended_not_replaced(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n.env", encoding="utf-8")

    write_starter_project(tmp_path)

    lines = (tmp_path / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["node_modules/", ".env"]
    assert lines.count(".env") == 1
    assert "leadrelay.db" in lines


def test_creates_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "project"

    write_starter_project(target)

    assert (target / "leadrelay.toml").is_file()


def test_the_sandbox_project_names_its_ca_bundle_by_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_sandbox_project(Path("demo"), {"LEADRELAY_CA_BUNDLE": "demo/.sandbox/sandbox-ca.pem"})

    env = read_env_file(tmp_path / "demo" / ".env")
    assert env["LEADRELAY_CA_BUNDLE"] == str(tmp_path / "demo" / ".sandbox" / "sandbox-ca.pem")


def test_a_sandbox_project_written_before_the_secret_rename_keeps_working(tmp_path: Path) -> None:
    write_sandbox_project(tmp_path, {})
    toml = tmp_path / "leadrelay.toml"
    toml.write_text(toml.read_text().replace("FORM_DEMO_WEBFORM_SECRET", "DEMO_WEBFORM_SECRET"))

    write_sandbox_project(tmp_path, {})

    env = read_env_file(tmp_path / ".env")
    assert env["DEMO_WEBFORM_SECRET"] == env["FORM_DEMO_WEBFORM_SECRET"]


def test_a_new_sandbox_run_keeps_the_env_lines_it_does_not_own(tmp_path: Path) -> None:
    write_sandbox_project(tmp_path, {"HUBSPOT_ACCESS_TOKEN": "old"})
    with (tmp_path / ".env").open("a", encoding="utf-8") as env_file:
        env_file.write("FORM_PRICING_SECRET=kept-by-forms-add\n")

    write_sandbox_project(tmp_path, {"HUBSPOT_ACCESS_TOKEN": "new"})

    env = read_env_file(tmp_path / ".env")
    assert (env["HUBSPOT_ACCESS_TOKEN"], env["FORM_PRICING_SECRET"]) == ("new", "kept-by-forms-add")


def test_a_new_sandbox_run_sets_the_previous_state_database_aside(tmp_path: Path) -> None:
    write_sandbox_project(tmp_path, {})
    (tmp_path / "leadrelay.db").write_bytes(b"links of the last sandbox")
    (tmp_path / "leadrelay.db-wal").write_bytes(b"wal")

    kept = set_aside_state(tmp_path)

    assert kept is not None and kept.parent == tmp_path
    assert kept.name.startswith("leadrelay.db.before-")
    assert kept.read_bytes() == b"links of the last sandbox"
    assert not (tmp_path / "leadrelay.db").exists()
    assert not (tmp_path / "leadrelay.db-wal").exists()
    assert set_aside_state(tmp_path) is None  # nothing left to set aside


def test_a_postgresql_state_is_not_touched_by_a_new_sandbox_run(tmp_path: Path) -> None:
    write_sandbox_project(tmp_path, {})
    toml = tmp_path / "leadrelay.toml"
    toml.write_text(
        toml.read_text().replace("sqlite:///leadrelay.db", "postgresql://db.internal/leadrelay")
    )
    (tmp_path / "leadrelay.db").write_bytes(b"unrelated")

    assert set_aside_state(tmp_path) is None
    assert (tmp_path / "leadrelay.db").exists()


def test_seeded_leads_are_distinct_contacts_in_the_sandbox_hubspot() -> None:
    with SandboxServer() as server:
        emails = seed_leads(server.env(), 12)
        found = hubspot_api(server, "GET", "/crm/v3/objects/contacts?limit=100")["results"]
    assert len(set(emails)) == 12
    assert sorted(c["properties"]["email"] for c in found) == sorted(emails)
