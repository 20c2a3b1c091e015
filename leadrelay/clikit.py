"""What every command module shares: the one-line error, options, JSON output, project loading.

``leadrelay/cli.py`` and the command modules of each package (``sync/commands.py``,
``capture/commands.py``, ``handoff/commands.py``, ``validation/commands.py``) use these, so a
config error is exit 2 with the same message everywhere and ``--json`` prints the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from leadrelay.config import Config
    from leadrelay.sync.state import StateStore


class CliError(Exception):
    """An error the CLI reports as one line, with the exit code of DESIGN §11."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The project file.", show_default=True)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
EncodingOption = Annotated[
    str | None,
    typer.Option(
        "--encoding",
        help="The CSV's text encoding (e.g. cp1252), when it is not detected cleanly.",
    ),
]


def make_console(*, stderr: bool = False) -> Console:
    """A rich console for a command's output. On a terminal rich wraps lines to its width; in
    a pipe, a log or cron's mail (no terminal) a line is never wrapped, so a value, a hint or
    a command to copy stays whole on its line."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=not stream.isatty())


def print_json(value: Any) -> None:
    """Machine output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


def load_project_config(path: Path) -> Config:
    """Load ``leadrelay.toml`` for a command: a config error (``[sla]`` included) is exit 2."""
    from leadrelay.config import ConfigError, load_config
    from leadrelay.handoff.sla import load_sla_config

    try:
        config = load_config(path)
        load_sla_config(config)  # [sla] is typed by the handoff package; a bad key is exit 2
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    return config


def open_store(config: Config) -> StateStore:
    """The project's state store; one that cannot be opened is exit 2, naming its URL."""
    from leadrelay.sync.state import StateError, open_state

    try:
        return open_state(config)
    except StateError as exc:
        raise CliError(f"state store {config.state.display_url}: {exc}", 2) from exc


_UNBOUNDED = 100_000


def print_table(console: Console, table: Table) -> None:
    """Print a table so that no value is wrapped word by word.

    On a terminal wide enough for every cell on one line it is a rich table. Otherwise (a log,
    a pipe, cron's mail, an 80-column terminal too narrow for it) it is the title, then one
    line a row of ``column=value`` pairs (values with spaces quoted), which keeps each value
    whole and can be searched with grep.
    """
    if console.is_terminal:
        unbounded = console.options.update(width=_UNBOUNDED, max_width=_UNBOUNDED)
        if console.measure(table, options=unbounded).maximum <= console.width:
            console.print(table)
            return
    from rich.text import Text

    def plain(cell: object) -> str:
        return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)

    headers = [plain(column.header) for column in table.columns]
    columns = [[plain(cell) for cell in column.cells] for column in table.columns]
    if table.title:
        console.print(plain(table.title), soft_wrap=True, highlight=False, markup=False)
    for row in zip(*columns, strict=True):
        pairs = [_pair(header, value) for header, value in zip(headers, row, strict=True) if value]
        console.print(" ".join(pairs), soft_wrap=True, highlight=False, markup=False)


def _pair(header: str, value: str) -> str:
    if not header:
        return value
    key = header.replace(" ", "_")
    if not value or any(c.isspace() or c in '"=' for c in value):
        value = json.dumps(value, ensure_ascii=False)
    return f"{key}={value}"
