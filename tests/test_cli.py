"""The command line: exit codes, --json shapes and one-line errors (DESIGN §11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from leadrelay.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


def test_tag_json_prints_the_attribution_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["tag", "https://acme.io/p?utm_source=google&utm_medium=cpc&gclid=x", "--json"], capsys
    )
    data = json.loads(out)
    assert code == 0
    assert data["channel"] == "paid_search"
    assert data["click_ids"] == {"gclid": "x"}
    assert data["landing_page"] == "https://acme.io/p"


def test_dedupe_json_lists_clusters_with_rows_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text(
        "email,first_name,last_name\nAna@Acme.io,Ana,Silva\nbob@x.io,Bob,Stone\nana@acme.io,,\n"
    )
    code, out, _ = run(["dedupe", str(csv_file), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["clusters"] == [
        {"rows": [1, 3], "reason": "same email after normalization"}
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("name,age\nx,1\n", "email")],
)
def test_dedupe_bad_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    csv_file = tmp_path / "leads.csv"
    if content is not None:
        csv_file.write_text(content)
    code, _, err = run(["dedupe", str(csv_file)], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_init_then_check_without_secrets_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["init", str(tmp_path)], capsys)[0] == 0
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    code, _, err = run(["check", "--config", str(tmp_path / "leadrelay.toml")], capsys)
    assert code == 2
    assert "HUBSPOT_ACCESS_TOKEN" in err


def test_check_json_prints_one_document_on_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["init", str(tmp_path)], capsys)[0] == 0
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    code, out, _ = run(["check", "--json", "--config", str(tmp_path / "leadrelay.toml")], capsys)
    document = json.loads(out)
    assert code == 2
    assert (document["ok"], document["checks"]) == (False, [])
    assert "HUBSPOT_ACCESS_TOKEN" in document["error"]


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["init", str(tmp_path)], capsys)
    code, _, err = run(["init", str(tmp_path)], capsys)
    assert code == 2
    assert "already exists" in err


def test_check_passes_on_a_complete_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["init", str(tmp_path)], capsys)
    env = (tmp_path / ".env.example").read_text()
    for name in (
        "HUBSPOT_ACCESS_TOKEN",
        "SALESFORCE_REFRESH_TOKEN",
        "SALESFORCE_CONSUMER_KEY",
        "SALESFORCE_CONSUMER_SECRET",
        "ZOHO_CLIENT_ID",
        "ZOHO_CLIENT_SECRET",
        "ZOHO_REFRESH_TOKEN",
        "FORM_PRICING_DEMO_SECRET",
    ):
        env += f"\n{name}=value-for-test"
    (tmp_path / ".env").write_text(env)
    code, out, _ = run(
        ["check", "--config", str(tmp_path / "leadrelay.toml"), "--offline", "--json"], capsys
    )
    report = json.loads(out)
    assert code == 0, report
    assert report["ok"] is True
    assert "value-for-test" not in out


def test_missing_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", "--config", str(tmp_path / "nope.toml")], capsys)
    assert code == 2
    assert "leadrelay init" in err


def test_demo_normalizes_tags_and_dedupes_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["demo"], capsys)
    assert code == 0
    assert "paid_search" in out
    assert "same email after normalization" in out
    assert "rejected with a reason" in out
    assert "validate demo-google: passed" in out


def test_sandbox_rejects_bad_faults_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["sandbox", "--faults", "{nope"], capsys)
    assert code == 2
    assert "--faults is not JSON" in err


def test_help_is_available_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        "tag",
        "dedupe",
        "init",
        "check",
        "demo",
        "sandbox",
        "sync",
        "validate",
        "serve",
        "import",
        "report",
    ):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0
        assert "Usage" in out


@pytest.mark.parametrize(
    "command",
    [["check", "--offline"], ["sync"], ["report"], ["validate", "--all"], ["forms", "list"]],
)
def test_a_bad_sla_key_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    run(["init", str(tmp_path)], capsys)
    toml = tmp_path / "leadrelay.toml"
    toml.write_text(toml.read_text().replace("hot_hours", "hot_hour"))
    (tmp_path / ".env").write_text(
        "\n".join(
            f"{name}=x"
            for name in (
                "HUBSPOT_ACCESS_TOKEN",
                "SALESFORCE_REFRESH_TOKEN",
                "SALESFORCE_CONSUMER_KEY",
                "SALESFORCE_CONSUMER_SECRET",
                "ZOHO_CLIENT_ID",
                "ZOHO_CLIENT_SECRET",
                "ZOHO_REFRESH_TOKEN",
                "FORM_PRICING_DEMO_SECRET",
            )
        )
    )
    code, _, err = run([*command, "--config", str(toml)], capsys)
    assert code == 2
    assert "sla.hot_hour" in err


def _all_commands() -> list[list[str]]:
    """Every command path of the CLI, sub-commands included (lazy ones loaded)."""
    import typer

    from leadrelay.cli import LAZY_COMMANDS, app, load_command

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    for name, command in getattr(root, "commands", {}).items():
        walk(command, [name])
    for name in LAZY_COMMANDS:
        walk(load_command(name), [name])
    return paths


def test_every_help_text_prints_whole_and_flags_as_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    for path in [[], *_all_commands()]:
        code, out, _ = run([*path, "--help"], capsys)
        assert code == 0, path
        assert "<bool>" not in out, path
        assert "  in the config" not in out, path
    code, out, _ = run(["validate", "--help"], capsys)
    assert "(see [forms] in the config)" in out


def test_root_help_lists_lazy_commands_with_their_own_summary() -> None:
    from leadrelay.cli import LAZY_COMMANDS, load_command

    for name, (_, _, summary) in LAZY_COMMANDS.items():
        command = load_command(name)
        assert command.get_short_help_str(limit=500) == summary.replace("[", "\\["), name


def test_version_and_help_import_no_heavy_library() -> None:
    script = (
        "import sys\n"
        "from leadrelay.cli import main\n"
        "for argv in (['--version'], ['--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = {'sqlalchemy', 'hubspot', 'simple_salesforce', 'fastapi', 'httpx'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "argv",
    [
        ["tag", "not a url"],
        ["tag", "ftp://files.acme.io/a"],
        ["tag", "https://acme.io/p", "--referrer", "nowhere"],
    ],
)
def test_tag_refuses_what_is_not_a_web_address(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "is not a web address" in err


def test_tag_takes_an_address_without_a_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["tag", "acme.io/p?utm_source=google&utm_medium=cpc", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["channel"] == "paid_search"


def test_dedupe_refuses_a_file_with_a_stray_byte_unless_given_the_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "leads.csv"
    csv_file.write_bytes(
        "email,last_name\nana@x.es,Peña\n".encode() + b"zoe@umbrella.fr,M\xfcller\n"
    )
    code, _, err = run(["dedupe", str(csv_file)], capsys)
    assert code == 2
    assert "line 3, byte 18 (0xFC)" in err
    code, out, _ = run(["dedupe", str(csv_file), "--encoding", "cp1252", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["encoding"] == "cp1252"


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["nosuch"], "No such command 'nosuch'"), (["sync", "--nope"], "No such option: --nope")],
)
def test_a_usage_error_shows_the_usage_and_is_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert "--help" in err


@pytest.mark.parametrize(
    ("terminal", "width", "as_table"),
    [(True, 120, True), (True, 25, False), (False, 120, False)],
    ids=["wide-terminal", "narrow-terminal", "log"],
)
def test_a_table_is_a_table_only_where_every_value_fits_whole(
    terminal: bool, width: int, as_table: bool
) -> None:
    import io

    from rich.console import Console
    from rich.table import Table

    from leadrelay.clikit import print_table

    table = Table(title="picklist")
    table.add_column("field")
    table.add_column("value")
    table.add_row("Status", "Working - Contacted")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=width, color_system=None)
    print_table(console, table)
    lines = buffer.getvalue().splitlines()
    if as_table:
        assert any("│ Status │ Working - Contacted │" in line for line in lines)
    else:
        assert lines == ["picklist", 'field=Status value="Working - Contacted"']
