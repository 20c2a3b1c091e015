"""``leadrelay forms add|list``, ``leadrelay import`` and ``leadrelay serve``'s config check."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from leadrelay.capture.commands import forms_app, import_command, serve_command
from leadrelay.capture.worker import drain_inbox
from leadrelay.cli import CliError
from leadrelay.config import load_config, read_env_file
from tests.capture.conftest import write_project
from tests.capture.sandbox_project import Project


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    app = typer.Typer()
    app.add_typer(forms_app, name="forms")
    app.command("import")(import_command)
    app.command("serve")(serve_command)
    capsys.readouterr()
    try:
        code = app(args=list(argv), standalone_mode=False) or 0
    except CliError as exc:
        code = exc.exit_code
        print(f"error: {exc}", file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("META_APP_SECRET", "META_ACCESS_TOKEN", "LINKEDIN_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    write_project(tmp_path)
    return tmp_path


def add(capsys: pytest.CaptureFixture[str], folder: Path, *argv: str) -> tuple[int, str]:
    return run(capsys, "forms", "add", *argv, "--config", str(folder / "leadrelay.toml"))


@pytest.mark.parametrize(
    ("source", "variable", "path"),
    [
        ("webform", "FORM_PRICING_DEMO_SECRET", "/forms/pricing-demo"),
        ("google_ads_lead_form", "FORM_PRICING_DEMO_GOOGLE_KEY", "/hooks/google-ads"),
    ],
)
def test_forms_add_writes_the_form_and_prints_its_new_secret(
    capsys: pytest.CaptureFixture[str], folder: Path, source: str, variable: str, path: str
) -> None:
    code, out = add(capsys, folder, "pricing-demo", "--source", source, "--destination", "hs")
    assert code == 0, out
    secret = read_env_file(folder / ".env")[variable]
    assert secret in out
    assert f"http://127.0.0.1:8080{path}" in out
    config = load_config(folder / "leadrelay.toml", environ={})
    assert config.forms["pricing-demo"].source == source
    assert (folder / "mappings" / "forms" / "pricing-demo.toml").is_file()


def test_forms_add_keeps_the_existing_text_of_the_file(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    toml = folder / "leadrelay.toml"
    before = "# my comment\n" + toml.read_text()
    toml.write_text(before)
    add(capsys, folder, "events", "--source", "csv", "--destination", "hs")
    assert toml.read_text().startswith(before)


def test_forms_add_meta_uses_the_app_secret_of_the_environment(
    capsys: pytest.CaptureFixture[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("META_APP_SECRET", "app-secret-from-meta")
    monkeypatch.setenv("META_ACCESS_TOKEN", "page-token-from-meta")
    code, out = add(capsys, folder, "fb", "--source", "meta_lead_ads", "--destination", "hs")
    assert code == 0, out
    assert read_env_file(folder / ".env")["FORM_FB_VERIFY_TOKEN"] in out
    assert "app-secret-from-meta" not in out


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (("web-server", "--source", "webform", "--destination", "hs"), "already exists"),
        (("new-form", "--source", "webform", "--destination", "sf"), "not a connection"),
        (("new-form", "--source", "fax", "--destination", "hs"), "unknown source"),
        (("new form", "--source", "webform", "--destination", "hs"), "form name"),
        (("fb", "--source", "meta_lead_ads", "--destination", "hs"), "META_APP_SECRET"),
    ],
)
def test_forms_add_refuses_with_exit_2_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], folder: Path, argv: tuple[str, ...], reason: str
) -> None:
    before = (folder / "leadrelay.toml").read_text()
    code, out = add(capsys, folder, *argv)
    assert (code, reason in out) == (2, True), out
    assert (folder / "leadrelay.toml").read_text() == before
    assert not (folder / ".env").exists()


def test_forms_add_rolls_back_when_the_project_does_not_load(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    toml = folder / "leadrelay.toml"
    # an inline table cannot be extended by a [forms.NAME] header: the new file is invalid
    before = 'forms = {}\n[connections.hs]\nkind = "hubspot"\naccess_token = "pat-na1-x"\n'
    toml.write_text(before)
    code, out = add(capsys, folder, "again", "--source", "webform", "--destination", "hs")
    assert (code, "does not load" in out) == (2, True)
    assert toml.read_text() == before
    assert not (folder / "mappings" / "forms" / "again.toml").exists()


def test_serve_with_a_bad_config_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = run(capsys, "serve", "--config", str(tmp_path / "missing.toml"))
    assert (code, "no such config file" in out) == (2, True)


# -- on the sandbox ------------------------------------------------------------------------


def run_json(capsys: pytest.CaptureFixture[str], project: Project, *argv: str) -> tuple[int, Any]:
    code, out = run(capsys, *argv, "--config", str(project.folder / "leadrelay.toml"), "--json")
    return code, json.loads(out[: out.rindex("}") + 1])


def test_forms_list_counts_leads_by_ledger_state(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    with project.client() as client:
        project.post_webform(client, email="listed@acme.io")
    code, data = run_json(capsys, project, "forms", "list")
    row = next(form for form in data["forms"] if form["form"] == "demo-webform")
    assert code == 0
    assert (row["ledger"]["received"], row["pending"], row["destination"]) == (1, 1, "hubspot")
    assert row["last_lead_at"] is not None
    assert row["endpoint"] == "http://127.0.0.1:8080/forms/demo-webform"


def test_forms_list_counts_a_written_lead_as_received_and_written(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    with project.client() as client:
        project.post_webform(client, email="listed@acme.io")
        project.post_webform(client, email="second@acme.io")
    drain_inbox(project.config, project.store, connectors=project.pool)
    code, data = run_json(capsys, project, "forms", "list")
    row = next(form for form in data["forms"] if form["form"] == "demo-webform")
    assert (code, row["pending"]) == (0, 0)
    assert row["ledger"] == {"received": 2, "written": 2, "verified": 0, "failed": 0}


def test_forms_list_into_a_pipe_prints_one_column_value_line_a_form(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    code, out = run(capsys, "forms", "list", "--config", str(project.folder / "leadrelay.toml"))
    [line] = [row for row in out.splitlines() if row.startswith("form=demo-webform ")]
    assert code == 0
    assert "endpoint=http://127.0.0.1:8080/forms/demo-webform" in line
    assert "┃" not in out and "│" not in out


CSV = "Email,First Name,Last Name,Company,utm_source\n{rows}"


def write_csv(project: Project, *rows: str) -> Path:
    path = project.folder / "event.csv"
    path.write_text(CSV.format(rows="".join(row + "\n" for row in rows)))
    return path


def test_import_reports_rows_dedupe_would_cluster_without_merging_them(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    path = project.folder / "event.csv"
    path.write_text(
        "Email,First Name,Last Name,Phone\n"
        "ann@acme.io,Ann,Lee,+1 415 555 0101\n"
        "ann.lee@home.example,Ann,Lee,+1 415 555 0101\n"
        "bob@beta.io,Bob,Ray,\n"
    )
    code, data = run_json(capsys, project, "import", str(path), "--form", "demo-webform")
    assert (code, data["delivered"]) == (0, 3)
    [cluster] = data["possible_duplicates"]
    assert cluster["rows"] == [1, 2]  # numbered as `leadrelay dedupe` numbers them
    assert "phone" in cluster["reason"]


def test_import_delivers_each_row(capsys: pytest.CaptureFixture[str], project: Project) -> None:
    path = write_csv(project, "a@acme.io,Ann,Lee,Acme,event", "b@acme.io,Bob,Ray,Beta,event")
    code, data = run_json(capsys, project, "import", str(path), "--form", "demo-webform")
    assert code == 0
    assert (data["read"], data["stored"], data["delivered"]) == (2, 2, 2)
    record = project.lookup("hubspot", "b@acme.io")
    assert record is not None and record["utm_source"] == "event"


def test_reimporting_a_file_stores_nothing_but_a_corrected_row(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    path = write_csv(project, "a@acme.io,Ann,Lee,Acme,event", "b@acme.io,Bob,Ray,Beta,event")
    run_json(capsys, project, "import", str(path), "--form", "demo-webform")
    write_csv(project, "a@acme.io,Ann,Lee,Acme,event", "b@acme.io,Bob,Ray,Gamma,event")
    code, data = run_json(capsys, project, "import", str(path), "--form", "demo-webform")
    assert (code, data["duplicates"], data["stored"], data["delivered"]) == (0, 1, 1, 1)
    record = project.lookup("hubspot", "b@acme.io")
    assert record is not None and record["company"] == "Gamma"


def test_import_reports_skipped_and_dead_lettered_rows_and_exits_1(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    path = write_csv(project, "a@acme.io,Ann,Lee,Acme,event", "too,few", "not-an-email,X,Y,Z,e")
    code, data = run_json(capsys, project, "import", str(path), "--form", "demo-webform")
    assert code == 1
    assert data["skipped"] == [{"row": 2, "reason": "row has 2 cells, the header has 5"}]
    assert (data["delivered"], data["dead_lettered"]) == (1, 1)


def test_import_of_an_unknown_form_exits_2(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    path = write_csv(project, "a@acme.io,Ann,Lee,Acme,event")
    code, _ = run(
        capsys,
        "import",
        str(path),
        "--form",
        "nope",
        "--config",
        str(project.folder / "leadrelay.toml"),
    )
    assert code == 2


# -- configuration errors and --debug (the whole command line) -------------------------------


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from leadrelay.cli import main

    capsys.readouterr()
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_a_ca_bundle_that_is_not_pem_is_a_config_error_for_every_connection(
    capsys: pytest.CaptureFixture[str], project: Project, debug: list[str]
) -> None:
    bad = project.folder / "not-a-ca.pem"
    bad.write_text("not a certificate\n", encoding="utf-8")
    toml = project.folder / "leadrelay.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace("${LEADRELAY_CA_BUNDLE}", bad.name),
        encoding="utf-8",
    )
    code, out = _main(capsys, *debug, "check", "--config", str(toml))
    assert code == 2, out
    for connection in ("hubspot", "salesforce", "zoho"):
        assert f"connections.{connection}.ca_bundle: cannot be read as a PEM CA bundle" in out
    assert str(bad) in out
    assert "SSLError" not in out


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_debug_keeps_the_exit_code_of_an_auth_failure(
    capsys: pytest.CaptureFixture[str], project: Project, debug: list[str]
) -> None:
    env = project.folder / ".env"
    token = project.env["HUBSPOT_ACCESS_TOKEN"]
    env.write_text(env.read_text(encoding="utf-8").replace(token, token[:-4] + "0000"))
    code, out = _main(capsys, *debug, "sync", "--config", str(project.folder / "leadrelay.toml"))
    assert code == 3, out
    assert ("Traceback" in out) == bool(debug)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("f" * 300, "longer than the file system allows"),
        ("../escape", "use letters, digits"),
        ("a/b", "use letters, digits"),
        ("a:b", "use letters, digits"),
        ("a\x00b", "use letters, digits"),
    ],
)
def test_forms_add_refuses_a_name_unfit_for_a_file_name(
    capsys: pytest.CaptureFixture[str], folder: Path, name: str, message: str
) -> None:
    before = (folder / "leadrelay.toml").read_text()
    code, out = add(capsys, folder, name, "--source", "webform", "--destination", "hs")
    assert code == 2
    assert message in out
    assert "OSError" not in out
    assert (folder / "leadrelay.toml").read_text() == before
    assert list((folder / "mappings").rglob("*.toml")) == list((folder / "mappings").glob("*.toml"))


def test_serve_refuses_workers_on_sqlite_instead_of_ignoring_them(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    config = str(project.folder / "leadrelay.toml")
    with pytest.raises(CliError) as refused:
        app = typer.Typer()
        app.command()(serve_command)
        app(args=["--config", config, "--workers", "2"], standalone_mode=False)
    assert refused.value.exit_code == 2
    assert "--workers needs a PostgreSQL" in str(refused.value)


def test_serve_says_at_once_that_its_port_is_taken(
    capsys: pytest.CaptureFixture[str], project: Project
) -> None:
    import socket

    config = str(project.folder / "leadrelay.toml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = typer.Typer()
        app.command()(serve_command)
        with pytest.raises(CliError) as refused:
            app(args=["--config", config, "--port", str(port)], standalone_mode=False)
    assert refused.value.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in str(refused.value)
