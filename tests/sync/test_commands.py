"""``leadrelay sync``, ``dlq`` and ``runs``: exit codes, --json shapes, locks (DESIGN §11)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer

from leadrelay.cli import CliError
from leadrelay.connectors.errors import AuthError
from leadrelay.sync.commands import dlq_app, runs_app, sync_command
from leadrelay.sync.state import DeadLetterStatus, LockHolder, StateStore
from tests.postgres import BOTH_BACKENDS, state_url
from tests.sync.fake_crm import FakeSystem, _FakeConnector, fake_project

TOML = """\
[state]
url = "sqlite:///state.db"

[connections.hs]
kind = "fakehub"

[connections.sf]
kind = "fakecrm"

[[flows]]
name = "hs-sf"
source = "hs"
destination = "sf"
two_way = true
"""


pytestmark = BOTH_BACKENDS


@pytest.fixture
def store_url(tmp_path: Path, state_backend: str) -> Iterator[str]:
    with state_url(state_backend, tmp_path) as url:
        yield url


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Iterator[Path]:
    with fake_project(tmp_path, monkeypatch, TOML.replace("sqlite:///state.db", store_url)):
        yield tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    app = typer.Typer()
    app.command("sync")(sync_command)
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(runs_app, name="runs")
    code = 0
    try:
        code = app(args=argv, standalone_mode=False) or 0
    except CliError as exc:
        code = exc.exit_code
        print(f"error: {exc}", file=sys.stderr)
    except typer.Exit as exc:
        code = exc.exit_code
    out, err = capsys.readouterr()
    return code, out, err


def hub() -> FakeSystem:
    return _FakeConnector.systems["hs"]


def crm() -> FakeSystem:
    return _FakeConnector.systems["sf"]


def add_contacts(count: int, **extra: str) -> None:
    for n in range(count):
        hub().put({"email": f"p{n}@acme.io", "lastname": f"P{n}", "company": "Acme", **extra})


def test_sync_json_is_exactly_the_design_shape(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_contacts(3)
    code, out, _ = run(["sync", "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert set(data) == {"ok", "flows"}
    [flow] = data["flows"]
    assert set(flow) == {
        "name",
        "read",
        "created",
        "updated",
        "unchanged",
        "written_back",
        "dead_lettered",
        "field_problems",
        "api_calls",
    }
    assert (data["ok"], flow["name"], flow["created"]) == (True, "hs-sf", 3)
    assert set(flow["api_calls"]) == {"hs", "sf"}


def test_a_second_sync_reports_nothing_written(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_contacts(4)
    run(["sync", "--json"], capsys)
    _, out, _ = run(["sync", "--json"], capsys)
    [flow] = json.loads(out)["flows"]
    assert (flow["created"], flow["updated"], flow["written_back"]) == (0, 0, 0)


def test_dead_letters_make_exit_1_and_are_listed_with_the_systems_reason(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_contacts(2)
    hub().put({"email": "x@blocked.io", "lastname": "X", "company": "Blocked"})
    crm().reject_values["Blocked"] = "company is on the block list"
    code, out, _ = run(["sync", "--json"], capsys)
    assert code == 1
    assert json.loads(out)["ok"] is False
    code, out, _ = run(["dlq", "list", "--json"], capsys)
    [letter] = json.loads(out)["dead_letters"]
    assert code == 0
    assert (letter["system"], letter["field"], letter["reason"], letter["attempts"]) == (
        "fakecrm",
        "Company",
        "company is on the block list",
        1,
    )


def test_dlq_retry_replays_and_dlq_drop_gives_up(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hub().put({"email": "x@blocked.io", "lastname": "X", "company": "Blocked"})
    hub().put({"email": "y@blocked.io", "lastname": "Y", "company": "Blocked"})
    crm().reject_values["Blocked"] = "company is on the block list"
    run(["sync"], capsys)
    crm().reject_values.clear()
    code, out, _ = run(["dlq", "retry", "1", "--json"], capsys)
    assert (code, json.loads(out)) == (0, {"retried": [{"id": 1, "result": "written"}]})
    crm().reject_values["Blocked"] = "company is on the block list"
    code, out, _ = run(["dlq", "retry", "2", "--json"], capsys)
    reason = "company is on the block list"
    expected = {"retried": [{"id": 2, "result": "failed again", "reason": reason}]}
    assert (code, json.loads(out)) == (1, expected)
    code, _, _ = run(["dlq", "drop", "2"], capsys)
    with StateStore(store_url) as store:
        statuses = [dl.status for dl in store.list_dead_letters(status=None)]
    assert (code, statuses) == (0, [DeadLetterStatus.RETRIED, DeadLetterStatus.DROPPED])
    assert sorted(r["Email"] for r in crm().records.values()) == ["x@blocked.io"]


def test_dlq_drop_of_an_unknown_id_is_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["dlq", "drop", "99"], capsys)
    assert code == 2
    assert "99" in err


def test_dry_run_prints_the_plan_and_writes_nothing(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_contacts(1)
    code, out, _ = run(["sync", "--dry-run"], capsys)
    assert code == 0
    assert "p0@acme.io" in out and "last_name" in out
    assert crm().records == {}
    with StateStore(store_url) as store:
        assert store.list_runs() == []
        assert store.get_cursor("hs-sf", "hs") is None


def test_full_reads_everything_again(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_contacts(5)
    run(["sync"], capsys)
    _, out, _ = run(["sync", "--json"], capsys)
    incremental = json.loads(out)["flows"][0]["read"]
    _, out, _ = run(["sync", "--full", "--json"], capsys)
    [flow] = json.loads(out)["flows"]
    assert flow["read"] > incremental
    assert (flow["created"], flow["updated"]) == (0, 0)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_lock_held_by_a_live_process_is_exit_3_naming_the_holder(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    with StateStore(store_url) as store:
        holder = LockHolder(hostname=socket.gethostname(), pid=os.getpid())
        assert store.acquire_lock("sync:hs-sf", holder, ttl_s=300)
    code, out, err = run(["sync", "--json"] if as_json else ["sync"], capsys)
    assert code == 3
    if as_json:  # still exactly one JSON object
        data = json.loads(out)
        assert data["ok"] is False
        err = data["error"]
    assert f"pid {os.getpid()}" in err


def test_a_lock_left_by_a_killed_run_is_taken_over_after_its_lease(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its holder's last heartbeat is a minute old, longer than the 30 s it holds the lock for.
    a_minute_ago = datetime.now(UTC) - timedelta(seconds=60)
    with StateStore(store_url, clock=lambda: a_minute_ago) as store:
        holder = LockHolder(hostname=socket.gethostname(), pid=_dead_pid())
        assert store.acquire_lock("sync:hs-sf", holder, ttl_s=30)
    add_contacts(1)
    code, _, _ = run(["sync"], capsys)
    assert code == 0
    assert len(crm().records) == 1


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_refused_credentials_are_exit_3(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub().error = AuthError("invalid token", system="fakehub", status=401)
    code, _, err = run(["sync"], capsys)
    assert code == 3
    assert "invalid token" in err


def test_an_unforeseen_failure_still_prints_one_json_document(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("leadrelay.sync.runner.run_flows", crash)
    with pytest.raises(RuntimeError):
        run(["sync", "--json"], capsys)
    document = json.loads(capsys.readouterr().out)
    assert document == {"ok": False, "error": "RuntimeError: disk on fire", "flows": []}


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["sync", "nope"], "flow 'nope' is not defined"), (["sync", "-c", "missing.toml"], "no such")],
)
def test_config_errors_are_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err


def test_runs_list_and_show_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_contacts(2)
    run(["sync"], capsys)
    code, out, _ = run(["runs", "list", "--json"], capsys)
    [listed] = json.loads(out)["runs"]
    assert (code, listed["flows"], listed["status"]) == (0, ["hs-sf"], "ok")
    assert listed["stats"]["flows"][0]["created"] == 2
    code, out, _ = run(["runs", "show", str(listed["id"]), "--json"], capsys)
    shown = json.loads(out)
    assert (code, shown["id"], shown["log"]) == (0, listed["id"], [])


def test_runs_show_logs_a_conflict_with_both_values_and_the_rule(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_id = hub().put(
        {"email": "c@acme.io", "lastname": "C", "company": "Acme", "phone": "+14155550100"}
    )
    run(["sync"], capsys)
    [crm_id] = crm().records
    hub().put({"phone": "+14155550111"}, hub_id)
    crm().put({"Phone": "+14155550122"}, crm_id)
    run(["sync"], capsys)
    _, out, _ = run(["runs", "show", "2", "--json"], capsys)
    [event] = [e for e in json.loads(out)["log"] if e["event"] == "conflict"]
    assert (event["field"], event["rule"], event["winner"]) == ("phone", "two_way", "destination")
    code, out, _ = run(["runs", "show", "2"], capsys)
    assert code == 0 and "phone" in out


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_sync_at_a_page_boundary_and_records_it_interrupted(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    signum: signal.Signals,
    code: int,
) -> None:
    add_contacts(20)  # three pages of 7
    upsert = _FakeConnector.upsert

    sent: list[bool] = []

    def upsert_then_signal(self: _FakeConnector, inputs: Any) -> Any:
        results = upsert(self, inputs)
        if not sent:  # once, while the first page is being written
            sent.append(True)
            os.kill(os.getpid(), signum)
        return results

    monkeypatch.setattr(_FakeConnector, "upsert", upsert_then_signal)
    exit_code, out, err = run(["sync"], capsys)
    assert exit_code == code
    assert f"interrupted by {signum.name}" in err
    assert "run 1 recorded as interrupted" in err
    assert "hs-sf" in out  # what it did is printed
    assert len(crm().records) == 7
    monkeypatch.setattr(_FakeConnector, "upsert", upsert)
    _, out, _ = run(["runs", "list", "--json"], capsys)
    [listed] = json.loads(out)["runs"]
    assert (listed["status"], listed["stats"]["interrupted"]) == ("interrupted", signum.name)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    exit_code, _, _ = run(["sync"], capsys)
    assert (exit_code, len(crm().records)) == (0, 20)


def test_dry_run_json_lists_the_plan_per_record_and_field(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_contacts(2)
    code, out, _ = run(["sync", "--dry-run", "--json"], capsys)
    plan = json.loads(out)["plan"]
    assert code == 0
    assert sorted(record["email"] for record in plan) == ["p0@acme.io", "p1@acme.io"]
    [first] = [record for record in plan if record["email"] == "p0@acme.io"]
    assert first["action"] == "create"
    assert first["new_lead"] is True
    assert {"field": "last_name", "old": None, "new": "P0"} in first["changes"]
    assert crm().records == {}


def test_dry_run_marks_a_new_person_and_keeps_a_known_ones_key(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    known_id = hub().put({"email": "p0@acme.io", "lastname": "P0", "company": "Acme"})
    run(["sync"], capsys)
    with StateStore(store_url) as store:
        [known] = store.find_keys_by_emails({"p0@acme.io"}).values()
    hub().put({"lastname": "Changed"}, known_id)
    hub().put({"email": "new@acme.io", "lastname": "New", "company": "Acme"})
    _, out, _ = run(["sync", "--dry-run"], capsys)
    changed = [line for line in out.splitlines() if "p0@acme.io" in line]
    new = [line for line in out.splitlines() if "new@acme.io" in line]
    assert changed and all(f"lead={known}" in line for line in changed)
    assert new and all("lead=(new)" in line for line in new)


def test_progress_is_a_plain_line_when_stderr_is_not_a_terminal(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("leadrelay.sync.commands.LOG_PROGRESS_EVERY_S", 0.0)
    add_contacts(10)
    code, _, err = run(["sync"], capsys)
    assert code == 0
    assert "sync hs-sf: hs → sf: 7 records" in err
    assert "sync hs-sf: hs → sf: 10 records" in err


def test_a_second_ctrl_c_stops_at_once_and_the_run_is_still_interrupted(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_contacts(20)
    upsert = _FakeConnector.upsert

    def upsert_then_two_signals(self: _FakeConnector, inputs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return upsert(self, inputs)

    monkeypatch.setattr(_FakeConnector, "upsert", upsert_then_two_signals)
    code, _, err = run(["sync"], capsys)
    assert code == 130
    assert "interrupted at once by a second Ctrl-C" in err
    monkeypatch.setattr(_FakeConnector, "upsert", upsert)
    _, out, _ = run(["runs", "list", "--json"], capsys)
    assert json.loads(out)["runs"][0]["status"] == "interrupted"
    assert run(["sync"], capsys)[0] == 0
    assert len(crm().records) == 20


def test_a_log_progress_line_names_the_total_the_rate_and_the_time_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    from leadrelay.sync import commands
    from leadrelay.sync.commands import _LogProgress

    clock = iter([100.0, 100.0, 110.0])  # made, first page, second page
    monkeypatch.setattr(commands.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    progress = _LogProgress(Console(file=out, width=200), every_s=0.0)
    progress("hs-sf: hs → sf", 100, 1000)
    progress("hs-sf: hs → sf", 100, 1000)
    first, last = out.getvalue().strip().splitlines()
    assert first == "sync hs-sf: hs → sf: 100 of 1,000 records"  # no rate yet: no "0/s"
    assert last == "sync hs-sf: hs → sf: 200 of 1,000 records, 20/s, 10s, about 40s left"


@pytest.mark.parametrize(
    ("done", "total", "shown"),
    [(1200, 100_000, "1,200 of 100,000"), (1200, None, "1,200"), (1200, 1000, "1,200")],
)
def test_the_terminal_progress_shows_the_count_of_the_total(
    done: int, total: int | None, shown: str
) -> None:
    from leadrelay.sync.commands import _count_text

    assert _count_text(done, total) == shown
