"""The README's quick start works as written: its ``sh`` blocks run, in order, against the sandbox.

The blocks are read from the README itself. A line whose comment says ``keeps running`` is a
command the reader leaves running in a terminal of its own (the sandbox): it is started in the
background (on a free port, so that parallel test runs do not collide) and stopped with SIGTERM
at the end. The other blocks run in one shell each, in the folder the sandbox was started in.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

import leadrelay.cli
from leadrelay.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KEEPS_RUNNING = "# keeps running"
#: Variables a project reads: the README's commands must work from the files they write alone.
PROJECT_VARIABLES = re.compile(r"^(HUBSPOT|SALESFORCE|ZOHO|LEADRELAY|META|GOOGLE|LINKEDIN|FORM)_")


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section("Quickstart"), flags=re.DOTALL)


def demo_block() -> list[str]:
    [block] = re.findall(r"```\n(· starting.*?)```", section("Quickstart"), flags=re.DOTALL)
    return block.splitlines()


def commands(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_setup_block_uses_the_makefile_and_its_venv() -> None:
    setup = commands(shell_blocks()[0])
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert setup[0].split("#")[0].split() == ["make", "demo"]
    assert re.search(r"^demo:.*\n\t\$\(BIN\)/leadrelay demo$", makefile, flags=re.MULTILINE)
    assert re.search(r"^VENV\s*:=\s*\.venv$", makefile, flags=re.MULTILINE)
    assert setup[1].split("#")[0].split() == [".", ".venv/bin/activate"]


def normalized(line: str) -> str:
    """A line without its figures (API calls, seconds) and without centring blanks."""
    return re.sub(r"\d+(\.\d+)?", "#", line.strip())


def test_the_demo_output_in_the_readme_is_what_the_demo_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Console(force_terminal=True, width=120, color_system=None, file=sys.stdout)
    monkeypatch.setattr(leadrelay.cli, "_out", lambda: terminal)
    main(["demo"])  # exit 0 returns; any other code raises SystemExit
    captured = capsys.readouterr()
    printed = iter(normalized(line) for line in (captured.err + captured.out).splitlines())
    for line in demo_block():
        if line == "…":
            continue
        wanted = normalized(line)
        assert any(seen == wanted for seen in printed), f"not printed (in this order): {line}"


@pytest.fixture
def reader_env() -> dict[str, str]:
    """The reader's shell: this environment with .venv/bin first, and no project variables."""
    env = {key: value for key, value in os.environ.items() if not PROJECT_VARIABLES.match(key)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "100"
    return env


@pytest.fixture
def background(
    tmp_path: Path, reader_env: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (tmp_path / "background.log").read_text()


def start_and_wait(
    command: str, folder: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    log = folder / "background.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*shlex.split(command), "--port", "0"],
            cwd=folder,
            env=env,
            stdout=handle,
            stderr=handle,
        )
    started.append(process)
    deadline = time.monotonic() + 120
    while "sandbox listening" not in log.read_text(encoding="utf-8", errors="replace"):
        assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
        assert time.monotonic() < deadline, "the sandbox did not start"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(
    tmp_path: Path, reader_env: dict[str, str], background: list[subprocess.Popen[bytes]]
) -> None:
    for block in shell_blocks()[1:]:
        lines = commands(block)
        if any(KEEPS_RUNNING in line for line in lines):
            [line] = lines
            start_and_wait(line.split("#")[0].strip(), tmp_path, reader_env, background)
            continue
        result = subprocess.run(
            ["bash", "-eu", "-c", block],
            cwd=tmp_path,
            env=reader_env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, f"{block}\n{result.stdout}\n{result.stderr}"
    listed = subprocess.run(
        ["leadrelay", "runs", "list", "--json"],
        cwd=tmp_path / "demo",
        env=reader_env,
        capture_output=True,
        text=True,
        check=True,
    )
    first, *_ = reversed(json.loads(listed.stdout)["runs"])
    created = {flow["name"]: flow["created"] for flow in first["stats"]["flows"]}
    assert created == {"hubspot-salesforce": 5, "hubspot-zoho": 5}
