"""The ``leadrelay`` command line (typer + rich). Thin: parses, calls, prints.

Exit codes follow DESIGN §11. An error is one clear line on stderr; ``--debug`` prints the
traceback (secrets redacted) before it and changes nothing else, the exit code included.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from leadrelay import __version__
from leadrelay.capture.commands import forms_app, import_command, serve_command
from leadrelay.clikit import CliError, ConfigOption, load_project_config, print_json
from leadrelay.handoff.commands import report_command
from leadrelay.sync.commands import dlq_app, runs_app, sync_command
from leadrelay.validation.commands import validate_command

if TYPE_CHECKING:
    pass

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


def _version(value: bool) -> None:
    if value:
        console.print(f"leadrelay {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Also show the traceback of an error."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _Options.debug = debug


# --- project -----------------------------------------------------------------------------


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the project.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a starter project: leadrelay.toml, mappings/ and .env.example."""
    from leadrelay.project import write_starter_project

    try:
        written = write_starter_project(directory, force=force)
    except FileExistsError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    for path in written:
        console.print(f"wrote {path}")
    console.print(
        "next: copy .env.example to .env and fill it in, then run [bold]leadrelay check[/]"
    )


@app.command()
def check(
    config: ConfigOption = Path("leadrelay.toml"),
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Skip the connection checks (credentials, budget, live schema)."
        ),
    ] = False,
    create_fields: Annotated[
        bool,
        typer.Option(
            "--create-fields",
            help="Create the custom HubSpot properties leadrelay's mapping needs.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate the project: config, state store, mappings, and each connection.

    Each connection is checked live: credentials, instance, API budget left, and every mapped
    field and picklist value against the system's describe(). Exit 0 when everything is fine,
    1 when a check found a problem, 2 on a config error.
    """
    from leadrelay.check import render_checks, run_checks

    loaded = load_project_config(config)
    results = run_checks(loaded, connections=not offline, create_fields=create_fields)
    ok = all(result.ok for result in results)
    if as_json:
        print_json({"ok": ok, "checks": [result.to_json() for result in results]})
    else:
        console.print(render_checks(results))
    if not ok:
        raise typer.Exit(1)


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
        print_json(attribution.to_dict())
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
        print_json(report.to_json())
    else:
        for renderable in render(report):
            console.print(renderable)


# --- demo --------------------------------------------------------------------------------


@app.command()
def demo() -> None:
    """Run the main job end to end on the embedded sandbox, then the sample-list section.

    The sandbox starts in-process; a web form, a Meta and a Google lead are captured and
    delivered, synced into HubSpot, Salesforce and Zoho, sales' verdicts are written back,
    one validation run proves a test lead arrives; a summary per system is printed.
    """
    from leadrelay import demo as demo_module

    raise typer.Exit(demo_module.main(console, err_console))


# --- sandbox -----------------------------------------------------------------------------


@app.command()
def sandbox(
    port: Annotated[int, typer.Option("--port", "-p", help="Port on 127.0.0.1.")] = 8765,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help='Fault injection JSON, e.g. \'{"error_rate": 0.2, "rate_limit_per_10s": 100}\'.',
        ),
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="Also write the KEY=value lines here.")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Write a ready project wired to this sandbox into DIR."),
    ] = None,
) -> None:
    """Run local emulators of HubSpot, Salesforce, Zoho, Meta and LinkedIn over HTTPS.

    Salesforce answers at /services/…, HubSpot under /hubspot, Zoho under /zoho, Meta under
    /meta, LinkedIn under /linkedin; the admin API is under /__sandbox__. Prints the settings
    clients need (LEADRELAY_CA_BUNDLE among them) and serves until Ctrl-C.
    """
    from leadrelay.sandbox.server import SandboxServer, parse_faults

    try:
        fault_settings = parse_faults(faults) if faults else None
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    if init is not None:
        ca_dir = init / ".sandbox"
    elif env_file is not None:
        ca_dir = env_file.resolve().parent / ".sandbox"
    else:
        ca_dir = None
    try:
        server = SandboxServer(port=port, ca_dir=ca_dir, faults=fault_settings, log_level="info")
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}", exit_code=2) from exc
    lines = server.env_lines()
    if env_file is not None:
        env_file.write_text(lines, encoding="utf-8")
    if init is not None:
        from leadrelay.sandbox.project import write_sandbox_project

        written = write_sandbox_project(init, server.env())
        err_console.print(f"wrote a project wired to this sandbox into {init}:")
        for path in written:
            err_console.print(f"  {path}")
    sys.stdout.write(lines)
    sys.stdout.flush()
    err_console.print(f"sandbox listening on {server.url} (Ctrl-C to stop)")
    server.serve_forever()


# --- worker (leadrelay/sync/jobs.py) ----------------------------------------------------


@app.command()
def worker(
    config: ConfigOption = Path("leadrelay.toml"),
    name: Annotated[
        str | None,
        typer.Option("--name", help="The worker's name in the queue (default: HOST:PID)."),
    ] = None,
) -> None:
    """Run a worker of the PostgreSQL job queue, on any number of hosts at once.

    Needs a postgresql:// [state] url. Workers run each scheduled flow once per fire time
    across all hosts ([schedule] timezone, UTC by default), deliver the capture inbox every
    [worker] delivery_every_s seconds, and take over the jobs, inbox claims and sync locks of
    a worker that stopped heartbeating for [state] lease_s seconds. Stops on Ctrl-C or
    SIGTERM after the job in progress.
    """
    from leadrelay.capture.logs import register_config_secrets
    from leadrelay.connectors.errors import register_secret
    from leadrelay.sync.jobs import QueueError, run_worker, worker_logging

    loaded = load_project_config(config)
    if loaded.state.is_sqlite:
        raise CliError(
            "leadrelay worker needs a postgresql:// [state] url; on one machine with SQLite, "
            "`leadrelay serve` delivers the inbox and runs the schedules itself",
            2,
        )
    from sqlalchemy import make_url

    register_config_secrets(loaded)
    register_secret(make_url(loaded.state.url).password or "")
    worker_logging()
    try:
        run_worker(
            loaded,
            name=name,
            on_ready=lambda: err_console.print(
                f"worker ready on {loaded.state.display_url}", highlight=False
            ),
        )
    except QueueError as exc:
        raise CliError(str(exc), 2) from exc


# --- sync, dead letters, runs (leadrelay/sync/commands.py) ------------------------------

app.command("sync")(sync_command)
app.add_typer(dlq_app, name="dlq")
app.add_typer(runs_app, name="runs")
app.command("report")(report_command)
app.command("validate")(validate_command)
app.command("serve")(serve_command)
app.add_typer(forms_app, name="forms")
app.command("import")(import_command)


def _fail(message: str, exit_code: int) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(exit_code)


def _print_traceback() -> None:
    from leadrelay.connectors.errors import redact

    sys.stderr.write(redact(traceback.format_exc()))


def _debugging(argv: list[str] | None) -> bool:
    # An error while the options are parsed comes before _Options.debug is set.
    return _Options.debug or "--debug" in (argv if argv is not None else sys.argv)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app, turning errors into one line and an exit code."""
    try:
        # Without standalone mode, click returns the code of a typer.Exit instead of exiting.
        code = app(args=argv, prog_name="leadrelay", standalone_mode=False)
        if isinstance(code, int) and code != 0:
            raise SystemExit(code)
    except CliError as exc:
        # --debug adds the traceback and changes nothing else: same line, same exit code.
        if _debugging(argv):
            _print_traceback()
        _fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        _fail("aborted", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except SystemExit:
        raise
    except Exception as exc:  # a crash is still one clear line, after the traceback with --debug
        if _debugging(argv):
            _print_traceback()
            _fail(f"{type(exc).__name__}: {exc}", 1)
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    except BaseException:
        raise
