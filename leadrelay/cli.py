"""The ``leadrelay`` command line (typer + rich). Thin: parses, calls, prints.

Exit codes follow DESIGN §11. An error is one clear line on stderr; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from leadrelay import __version__

app = typer.Typer(
    name="leadrelay",
    help=(
        "Lead-handoff integration middleware: forms and ad lead forms into HubSpot, Salesforce "
        "and Zoho CRM, and sales' verdict back, with nothing lost or duplicated."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err_console = Console(stderr=True)


class _Options:
    debug = False


class CliError(Exception):
    """An error the CLI reports as one line, with the exit code of DESIGN §11."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _print_json(value: Any) -> None:
    """Machine output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


def _version(value: bool) -> None:
    if value:
        console.print(f"leadrelay {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _Options.debug = debug


# --- attribution -------------------------------------------------------------------------


@app.command()
def tag(
    url: Annotated[str, typer.Argument(help="A landing-page URL, with its query string.")],
    referrer: Annotated[
        str | None, typer.Option("--referrer", "-r", help="The page the visitor came from.")
    ] = None,
    own_domain: Annotated[
        list[str] | None,
        typer.Option("--own-domain", help="A domain of your own site (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the attribution a landing URL (and referrer) yields: UTMs, click ids, channel."""
    from leadrelay.sync.tagging import render_attribution, tag_url

    attribution = tag_url(url, referrer, own_domains=own_domain or ())
    if as_json:
        _print_json(attribution.to_dict())
    else:
        console.print(render_attribution(attribution))


# --- dedupe ------------------------------------------------------------------------------


@app.command()
def dedupe(
    file: Annotated[
        Path, typer.Argument(help="A CSV whose headers are Lead field names.", exists=False)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find clusters of duplicate leads in a CSV list, each with the reason it matched."""
    from leadrelay.sync.csvfile import CsvError
    from leadrelay.sync.dedupe import dedupe_csv, render

    if not file.is_file():
        raise CliError(f"{file}: no such file", exit_code=2)
    try:
        report = dedupe_csv(file)
    except CsvError as exc:
        raise CliError(f"{file}: {exc}", exit_code=2) from exc
    if as_json:
        _print_json(report.to_json())
    else:
        for renderable in render(report):
            console.print(renderable)


def _fail(message: str, exit_code: int) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app, turning errors into one line and an exit code."""
    try:
        app(args=argv, prog_name="leadrelay", standalone_mode=False)
    except CliError as exc:
        if _Options.debug:
            raise
        _fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        _fail("aborted", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except SystemExit:
        raise
    except Exception as exc:  # a crash is still one clear line unless --debug
        if _Options.debug or "--debug" in (argv if argv is not None else sys.argv):
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    except BaseException:
        raise
