from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from leadrelay import config as config_module
from leadrelay.config import (
    ConfigError,
    CronSchedule,
    FieldRule,
    GoogleAdsFormConfig,
    HubSpotConnection,
    MetaFormConfig,
    PluginConnection,
    SalesforceConnection,
    WebformConfig,
    ZohoConnection,
    load_config,
)
from leadrelay.model import Stage

BASE = """\
[connections.hs]
kind = "hubspot"
access_token = "${HUBSPOT_ACCESS_TOKEN}"

[connections.sf]
kind = "salesforce"
auth = "password"
username = "ops@example.com"
password = "${SALESFORCE_PASSWORD}"
consumer_key = "3MVG9"
consumer_secret = "${SALESFORCE_CONSUMER_SECRET}"

[[flows]]
name = "hs-to-sf"
source = "hs"
destination = "sf"
two_way = true
schedule = "*/5 * * * *"

[forms.pricing-demo]
source = "webform"
destination = "hs"
mapping = "mappings/forms/pricing-demo.toml"
secret = "${FORM_SECRET}"
"""

ENV = {
    "HUBSPOT_ACCESS_TOKEN": "pat-na1-0000",
    "SALESFORCE_PASSWORD": "hunter2-pw",
    "SALESFORCE_CONSUMER_SECRET": "cs-0000",
    "FORM_SECRET": "form-secret-0000",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder holding the form mapping the BASE config names."""
    mapping = tmp_path / "mappings" / "forms" / "pricing-demo.toml"
    mapping.parent.mkdir(parents=True)
    mapping.write_text('[fields]\nemail = "email"\n', encoding="utf-8")
    return tmp_path


def write(project: Path, text: str, name: str = "leadrelay.toml") -> Path:
    path = project / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV if environ is None else environ)
    assert info.value.file == path
    return info.value.problems


def test_valid_config_loads(project: Path) -> None:
    config = load_config(write(project, BASE), environ=ENV)

    hs = config.connection("hs")
    sf = config.connection("sf")
    assert isinstance(hs, HubSpotConnection)
    assert hs.access_token is not None
    assert hs.access_token.get_secret_value() == "pat-na1-0000"
    assert isinstance(sf, SalesforceConnection)
    assert sf.api_version == "59.0"
    assert sf.login_url == "https://login.salesforce.com"
    assert config.flow("hs-to-sf").two_way is True
    form = config.form("pricing-demo")
    assert isinstance(form, WebformConfig)
    assert form.mapping == project / "mappings" / "forms" / "pricing-demo.toml"
    assert config.path == project / "leadrelay.toml"
    assert config.folder == project


def test_env_fixture_pattern_reads_process_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-from-process")

    hs = load_config(write(project, BASE)).connections["hs"]

    assert isinstance(hs, HubSpotConnection)
    assert hs.access_token is not None
    assert hs.access_token.get_secret_value() == "pat-from-process"


def test_malformed_toml_names_file_and_line(project: Path) -> None:
    path = write(project, BASE + "\n[capture]\nport 8080\n")

    problems = problems_of(path)

    line = BASE.count("\n") + 3
    assert problems == [
        f"invalid TOML: line {line}, column 6: Expected '=' after a key in a key/value pair"
    ]


def test_error_str_prefixes_every_problem_with_the_file(project: Path) -> None:
    path = write(project, BASE)

    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})

    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "leadrelay.toml", environ={})

    assert "no such config file" in str(info.value)
    assert "leadrelay init" in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'access_token = "${HUBSPOT_ACCESS_TOKEN}"',
            'acess_token = "x"',
            "connections.hs.acess_token: unknown key; did you mean 'access_token'?",
        ),
        (
            'name = "hs-to-sf"',
            'name = "hs-to-sf"\ntwoway = true',
            "flows.hs-to-sf.twoway: unknown key",
        ),
        (
            "[forms.pricing-demo]",
            "[forms.pricing-demo]\nhoneypt = 'x'",
            "forms.pricing-demo.honeypt",
        ),
    ],
)
def test_unknown_key_is_named(project: Path, old: str, new: str, expected: str) -> None:
    problems = problems_of(write(project, BASE.replace(old, new, 1)))

    assert any(problem.startswith(expected) for problem in problems), problems


def test_missing_variable_names_key_and_variable(project: Path) -> None:
    environ = {k: v for k, v in ENV.items() if k != "SALESFORCE_PASSWORD"}

    problems = problems_of(write(project, BASE), environ)

    assert problems == [
        "connections.sf.password: variable SALESFORCE_PASSWORD is not set (or empty) "
        "in the environment or .env"
    ]


def test_all_problems_are_listed(project: Path) -> None:
    text = BASE.replace('kind = "hubspot"', 'kind = "hubspot"\nportal = 1').replace(
        'consumer_key = "3MVG9"\n', ""
    )

    problems = problems_of(write(project, text))

    assert len(problems) == 2
    assert problems[0].startswith("connections.hs.portal: unknown key")
    assert problems[1] == "connections.sf: auth 'password' needs consumer_key"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"${X:-fallback}"', "fallback"),
        ('"a$$b"', "a$b"),
        ('"price $5"', "price $5"),
        ('"${X}-${Y}"', "1-2"),
    ],
)
def test_interpolation_forms(project: Path, text: str, expected: str) -> None:
    body = BASE.replace('username = "ops@example.com"', f"username = {text}")
    environ = {**ENV, "Y": "2"} if "${X}" not in text else {**ENV, "X": "1", "Y": "2"}

    sf = load_config(write(project, body), environ=environ).connections["sf"]

    assert isinstance(sf, SalesforceConnection)
    assert sf.username == expected


def test_empty_default_counts_as_absent(project: Path) -> None:
    body = BASE.replace('kind = "hubspot"', 'kind = "hubspot"\nportal_id = "${PORTAL:-}"')

    hs = load_config(write(project, body), environ=ENV).connections["hs"]

    assert isinstance(hs, HubSpotConnection)
    assert hs.portal_id is None


def test_unclosed_reference_is_an_error(project: Path) -> None:
    body = BASE.replace('username = "ops@example.com"', 'username = "${USER"')

    assert problems_of(write(project, body)) == [
        "connections.sf.username: '${' without a closing '}'"
    ]


def test_dotenv_fills_what_the_environment_lacks(project: Path) -> None:
    environ = {k: v for k, v in ENV.items() if k != "HUBSPOT_ACCESS_TOKEN"}
    (project / ".env").write_text(
        "# local secrets\nHUBSPOT_ACCESS_TOKEN='pat-from-dotenv$x'\nFORM_SECRET=from-dotenv\n",
        encoding="utf-8",
    )

    config = load_config(write(project, BASE), environ=environ)

    hs = config.connections["hs"]
    form = config.forms["pricing-demo"]
    assert isinstance(hs, HubSpotConnection) and hs.access_token is not None
    assert hs.access_token.get_secret_value() == "pat-from-dotenv$x"
    assert isinstance(form, WebformConfig) and form.secret is not None
    assert form.secret.get_secret_value() == ENV["FORM_SECRET"]


def test_dotenv_is_not_written_into_os_environ(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEADRELAY_TEST_ONLY_VAR", raising=False)
    (project / ".env").write_text("LEADRELAY_TEST_ONLY_VAR=1\n", encoding="utf-8")

    load_config(write(project, BASE), environ=ENV)

    assert "LEADRELAY_TEST_ONLY_VAR" not in os.environ


def test_malformed_dotenv_names_its_line(project: Path) -> None:
    dotenv = project / ".env"
    dotenv.write_text("A=1\nthis is not a statement\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_config(write(project, BASE), environ=ENV)

    assert info.value.file == dotenv
    assert info.value.problems == ["line 2: not a KEY=value statement"]


def test_explicit_env_file_is_used(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("elsewhere") / "sandbox.env"
    other.write_text("".join(f"{k}={v}\n" for k, v in ENV.items()), encoding="utf-8")

    config = load_config(write(project, BASE), environ={}, env_file=other)

    assert "hs" in config.connections


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///leadrelay.db", "sqlite:///{folder}/leadrelay.db"),
        ("sqlite:///state/lr.db?timeout=5", "sqlite:///{folder}/state/lr.db?timeout=5"),
        ("sqlite:////var/lib/lr.db", "sqlite:////var/lib/lr.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://lr:pw@db/lr", "postgresql://lr:pw@db/lr"),
    ],
)
def test_state_url_resolves_relative_sqlite_paths(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    url: str,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))

    config = load_config(write(project, f'[state]\nurl = "{url}"\n' + BASE), environ=ENV)

    assert config.state.url == expected.format(folder=project.as_posix())


def test_default_state_is_sqlite_next_to_the_config(project: Path) -> None:
    config = load_config(write(project, BASE), environ=ENV)

    assert config.state.url == f"sqlite:///{project.as_posix()}/leadrelay.db"
    assert config.state.is_sqlite


def test_state_password_is_hidden(project: Path) -> None:
    body = '[state]\nurl = "postgresql://lr:${DB_PASSWORD}@db:5432/lr"\n' + BASE

    config = load_config(write(project, body), environ={**ENV, "DB_PASSWORD": "pg-secret-9"})

    assert config.state.display_url == "postgresql://lr:***@db:5432/lr"
    assert "pg-secret-9" not in repr(config)


def test_unsupported_state_url(project: Path) -> None:
    problems = problems_of(write(project, '[state]\nurl = "mysql://db/lr"\n' + BASE))

    assert problems == [
        "state.url: unsupported database URL: use sqlite:///FILE or postgresql://HOST/DB"
    ]


def test_unknown_kind_is_named_with_a_suggestion(project: Path) -> None:
    body = BASE.replace('kind = "hubspot"', 'kind = "hubspt"')

    problems = problems_of(write(project, body))

    assert problems == [
        "connections.hs.kind: unknown connection kind 'hubspt' "
        "(known: hubspot, salesforce, zoho); did you mean 'hubspot'?"
    ]


def test_missing_kind(project: Path) -> None:
    body = BASE.replace('kind = "hubspot"\n', "")

    problems = problems_of(write(project, body))

    assert problems[0].startswith("connections.hs: needs a table with a 'kind' key")


def test_registered_plugin_kind_keeps_its_keys(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        config_module, "registered_connector_kinds", lambda: frozenset({"pipedrive"})
    )
    body = BASE + '\n[connections.pd]\nkind = "pipedrive"\napi_token = "${PD}"\nregion = "eu"\n'

    config = load_config(write(project, body), environ={**ENV, "PD": "pd-token-1"})

    pd = config.connections["pd"]
    assert isinstance(pd, PluginConnection)
    assert pd.options == {"api_token": "pd-token-1", "region": "eu"}
    assert "pd-token-1" not in repr(config)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'destination = "sf"',
            'destination = "zoho"',
            "flows.hs-to-sf.destination: connection 'zoho' is not defined (defined: hs, sf)",
        ),
        (
            'source = "hs"\ndestination = "sf"',
            'source = "crm"\ndestination = "sf"',
            "flows.hs-to-sf.source: connection 'crm' is not defined (defined: hs, sf)",
        ),
        (
            'destination = "hs"\nmapping',
            'destination = "marketo"\nmapping',
            "forms.pricing-demo.destination: connection 'marketo' is not defined (defined: hs, sf)",
        ),
    ],
)
def test_reference_to_unknown_connection(project: Path, old: str, new: str, expected: str) -> None:
    assert problems_of(write(project, BASE.replace(old, new, 1))) == [expected]


def test_a_bad_key_and_an_unknown_connection_are_reported_together(project: Path) -> None:
    body = BASE.replace('access_token = "${HUBSPOT_ACCESS_TOKEN}"', 'acess_token = "x"', 1)
    body = body.replace('destination = "sf"', 'destination = "zoho"', 1)

    assert problems_of(write(project, body)) == [
        "connections.hs.acess_token: unknown key; did you mean 'access_token'?",
        "flows.hs-to-sf.destination: connection 'zoho' is not defined (defined: hs, sf)",
    ]


def test_duplicate_flow_names(project: Path) -> None:
    extra = '\n[[flows]]\nname = "hs-to-sf"\nsource = "sf"\ndestination = "hs"\n'

    problems = problems_of(write(project, BASE + extra))

    assert problems == ["flows.hs-to-sf.name: another flow has the name 'hs-to-sf'"]


def test_flow_with_same_source_and_destination(project: Path) -> None:
    body = BASE.replace('destination = "sf"', 'destination = "hs"')

    assert problems_of(write(project, body)) == [
        "flows.hs-to-sf: source and destination are both 'hs'"
    ]


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("*/5 * * *", "cron schedule needs 5 fields (minute hour day month weekday), got 4"),
        ("0 25 * * *", "cron hour field: 25 is outside 0-23"),
        ("*/0 * * * *", "cron minute field: step '0' is not a positive number"),
        ("0 9 * * funday", "cron day of week field: 'funday' is not a number"),
    ],
)
def test_bad_schedule(project: Path, schedule: str, reason: str) -> None:
    body = BASE.replace('schedule = "*/5 * * * *"', f'schedule = "{schedule}"')

    assert problems_of(write(project, body)) == [f"flows.hs-to-sf.schedule: {reason}"]


def test_flow_rules_and_stages(project: Path) -> None:
    body = BASE.replace(
        "two_way = true",
        'two_way = true\ninclude_stages = ["mql", "sal"]\n'
        'field_rules = { phone = "prefer_destination_unless_blank", "custom.region" = "none" }',
    )

    flow = load_config(write(project, body), environ=ENV).flow("hs-to-sf")

    assert flow.include_stages == [Stage.MQL, Stage.SAL]
    assert flow.field_rules == {
        "phone": FieldRule.PREFER_DESTINATION_UNLESS_BLANK,
        "custom.region": FieldRule.NONE,
    }


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            '{ phon = "two_way" }',
            "'phon' is not a Lead field (nor custom.NAME); did you mean 'phone'?",
        ),
        ('{ phone = "sometimes" }', "input should be 'source_wins'"),
    ],
)
def test_bad_field_rule(project: Path, rules: str, expected: str) -> None:
    body = BASE.replace("two_way = true", f"two_way = true\nfield_rules = {rules}")

    problems = problems_of(write(project, body))

    assert len(problems) == 1
    assert problems[0].startswith("flows.hs-to-sf.field_rules")
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('auth = "password"', 'auth = "jwt"', "connections.sf: auth 'jwt' needs exactly one of"),
        ('auth = "password"\n', "", "connections.sf.auth: field required"),
        ('auth = "password"', 'auth = "oauth"', "connections.sf.auth: input should be"),
        (
            'auth = "password"',
            'auth = "client_credentials"',
            "connections.sf: auth 'client_credentials' needs login_url set to the org's My Domain",
        ),
        (
            'access_token = "${HUBSPOT_ACCESS_TOKEN}"',
            'auth = "oauth"\nclient_id = "abc"',
            "connections.hs: auth 'oauth' needs client_secret, refresh_token",
        ),
    ],
)
def test_auth_mode_requirements(project: Path, old: str, new: str, expected: str) -> None:
    problems = problems_of(write(project, BASE.replace(old, new, 1)))

    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_salesforce_jwt_key_file_resolved_against_folder(project: Path) -> None:
    (project / "server.key").write_text("-----BEGIN PRIVATE KEY-----\n", encoding="utf-8")
    body = BASE.replace('auth = "password"', 'auth = "jwt"\nprivate_key_file = "server.key"')

    sf = load_config(write(project, body), environ=ENV).connections["sf"]

    assert isinstance(sf, SalesforceConnection)
    assert sf.private_key_file == project / "server.key"


def test_missing_ca_bundle_file(project: Path) -> None:
    body = BASE.replace('kind = "hubspot"', 'kind = "hubspot"\nca_bundle = "certs/ca.pem"')

    assert problems_of(write(project, body)) == [
        f"connections.hs.ca_bundle: file not found: {project / 'certs' / 'ca.pem'}"
    ]


def test_zoho_connection_defaults(project: Path) -> None:
    body = BASE + (
        '\n[connections.zc]\nkind = "zoho"\nclient_id = "1000.A"\n'
        'client_secret = "${ZS}"\nrefresh_token = "${ZR}"\n'
    )

    zc = load_config(write(project, body), environ={**ENV, "ZS": "s", "ZR": "r"}).connections["zc"]

    assert isinstance(zc, ZohoConnection)
    assert (zc.accounts_url, zc.api_domain, zc.module) == (
        "https://accounts.zoho.com",
        None,
        "Leads",
    )


META_FORM = """
[forms.fb]
source = "meta_lead_ads"
destination = "hs"
mapping = "mappings/forms/pricing-demo.toml"
app_secret = "${META_APP_SECRET}"
verify_token = "${META_VERIFY_TOKEN}"
access_token = "${META_PAGE_TOKEN}"
"""
META_ENV = {"META_APP_SECRET": "a", "META_VERIFY_TOKEN": "v", "META_PAGE_TOKEN": "t"}


def test_meta_form_loads(project: Path) -> None:
    form = load_config(write(project, BASE + META_FORM), environ={**ENV, **META_ENV}).forms["fb"]

    assert isinstance(form, MetaFormConfig)
    assert form.verify_token.get_secret_value() == "v"


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        (
            META_FORM.replace('app_secret = "${META_APP_SECRET}"\n', ""),
            "forms.fb.app_secret: field required",
        ),
        (
            META_FORM.replace('verify_token = "${META_VERIFY_TOKEN}"\n', ""),
            "forms.fb.verify_token: field required",
        ),
        (
            '\n[forms.g]\nsource = "google_ads_lead_form"\ndestination = "hs"\n'
            'mapping = "mappings/forms/pricing-demo.toml"\n',
            "forms.g.google_key: field required",
        ),
        (
            '\n[forms.li]\nsource = "linkedin_lead_gen"\ndestination = "hs"\n'
            'mapping = "mappings/forms/pricing-demo.toml"\naccess_token = "t"\n',
            "forms.li.client_secret: field required",
        ),
        (
            '\n[forms.w]\nsource = "webform"\ndestination = "hs"\n'
            'mapping = "mappings/forms/pricing-demo.toml"\n',
            "forms.w: a webform needs secret, hmac_secret or allowed_origins",
        ),
        (
            '\n[forms.h]\nsource = "hubspot_form"\ndestination = "sf"\n'
            'mapping = "mappings/forms/pricing-demo.toml"\nconnection = "hs"\n',
            "forms.h.connection: connection 'hs' has no app_client_secret",
        ),
        (
            '\n[forms.x]\nsource = "typeform"\ndestination = "hs"\n',
            "forms.x: needs a table with a 'source' key",
        ),
        (
            '\n[forms.m]\nsource = "csv"\ndestination = "hs"\nmapping = "mappings/missing.toml"\n',
            "forms.m.mapping: file not found",
        ),
    ],
)
def test_form_source_requirements(project: Path, form: str, expected: str) -> None:
    problems = problems_of(write(project, BASE + form), {**ENV, **META_ENV})

    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_google_form_key_from_env(project: Path) -> None:
    form = (
        '\n[forms.g]\nsource = "google_ads_lead_form"\ndestination = "hs"\n'
        'mapping = "mappings/forms/pricing-demo.toml"\ngoogle_key = "${GOOGLE_ADS_KEY}"\n'
        'default_utm = { utm_source = "google", utm_medium = "cpc" }\n'
    )

    config = load_config(write(project, BASE + form), environ={**ENV, "GOOGLE_ADS_KEY": "gk"})

    g = config.forms["g"]
    assert isinstance(g, GoogleAdsFormConfig)
    assert g.google_key.get_secret_value() == "gk"
    assert g.default_utm.utm_medium == "cpc"


SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.mark.parametrize(
    "line",
    [
        f'access_token = ["{SECRET}"]',
        f'access_token = {{ value = "{SECRET}" }}',
    ],
)
def test_bad_secret_value_is_not_echoed(project: Path, line: str) -> None:
    body = BASE.replace('access_token = "${HUBSPOT_ACCESS_TOKEN}"', line)

    with pytest.raises(ConfigError) as info:
        load_config(write(project, body), environ=ENV)

    assert info.value.problems[0].startswith("connections.hs.access_token:")
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_secrets_absent_from_repr(project: Path) -> None:
    config = load_config(write(project, BASE), environ=ENV)

    text = repr(config) + str(config)
    for value in ENV.values():
        assert value not in text


def test_empty_secret_is_an_error(project: Path) -> None:
    body = BASE.replace('access_token = "${HUBSPOT_ACCESS_TOKEN}"', 'access_token = "  "')

    assert problems_of(write(project, body)) == ["connections.hs.access_token: is empty"]


@pytest.mark.parametrize("name", ["has space", "-lead"])
def test_bad_connection_name(project: Path, name: str) -> None:
    body = BASE + f'\n[connections."{name}"]\nkind = "zoho"\n'

    problems = problems_of(write(project, body))

    assert any("a name may hold only letters, digits" in problem for problem in problems), problems


def test_capture_defaults_and_bad_port(project: Path) -> None:
    config = load_config(write(project, BASE), environ=ENV)
    assert (config.capture.host, config.capture.port) == ("127.0.0.1", 8080)

    problems = problems_of(write(project, BASE + "\n[capture]\nport = 70000\n"))
    assert problems == ["capture.port: input should be less than or equal to 65535"]


def test_handoff_tables_are_typed(project: Path) -> None:
    body = BASE + "\n[scoring]\nmql_threshold = 55\n[sla]\nhot_hours = 1\n"

    config = load_config(write(project, body), environ=ENV)

    assert config.scoring.mql_threshold == 55
    assert config.sla == {"hot_hours": 1}
    assert config.routing.fallback_queue == "Unassigned Leads"


def test_a_misspelled_handoff_key_names_the_key(project: Path) -> None:
    body = BASE + "\n[scoring]\nmql_treshold = 55\n"

    with pytest.raises(ConfigError, match=r"scoring\.mql_treshold"):
        load_config(write(project, body), environ=ENV)


def test_numbers_from_variables_are_coerced(project: Path) -> None:
    body = BASE + '\n[capture]\nport = "${PORT}"\n'

    config = load_config(write(project, body), environ={**ENV, "PORT": "9090"})

    assert config.capture.port == 9090


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", datetime(2024, 5, 1, 10, 7), datetime(2024, 5, 1, 10, 15)),
        ("0 9 * * mon-fri", datetime(2024, 5, 3, 9, 0), datetime(2024, 5, 6, 9, 0)),
        ("30 2 1 * *", datetime(2024, 1, 31, 12, 0), datetime(2024, 2, 1, 2, 30)),
        ("@hourly", datetime(2024, 5, 1, 10, 0), datetime(2024, 5, 1, 11, 0)),
        ("0 0 13 * 5", datetime(2024, 5, 1, 0, 0), datetime(2024, 5, 3, 0, 0)),
    ],
)
def test_cron_next_after(expression: str, after: datetime, expected: datetime) -> None:
    schedule = CronSchedule.parse(expression)

    assert schedule.next_after(after) == expected
    assert schedule.matches(expected)


def test_cron_impossible_date_never_fires() -> None:
    assert CronSchedule.parse("0 0 30 2 *").next_after(datetime(2024, 1, 1)) is None
