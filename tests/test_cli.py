"""The command line: exit codes, --json shapes and one-line errors (DESIGN §11)."""

from __future__ import annotations

import json
from pathlib import Path

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
        "SALESFORCE_USERNAME",
        "SALESFORCE_PASSWORD",
        "SALESFORCE_CONSUMER_KEY",
        "SALESFORCE_CONSUMER_SECRET",
        "PRICING_DEMO_FORM_SECRET",
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
                "SALESFORCE_USERNAME",
                "SALESFORCE_PASSWORD",
                "SALESFORCE_CONSUMER_KEY",
                "SALESFORCE_CONSUMER_SECRET",
                "PRICING_DEMO_FORM_SECRET",
            )
        )
    )
    code, _, err = run([*command, "--config", str(toml)], capsys)
    assert code == 2
    assert "sla.hot_hour" in err
