"""The ``leadrelay`` command line (typer + rich). Thin: parses, calls, prints.

Exit codes follow DESIGN §11. An error is one clear line on stderr; ``--debug`` prints the
traceback (secrets redacted) before it and changes nothing else, the exit code included.

Start-up stays fast: this module imports typer and nothing heavy. The commands of the other
packages (:data:`LAZY_COMMANDS`) are imported only when one of them runs, and every command
imports the libraries it needs (CRM clients, SQLAlchemy, FastAPI, rich tables) inside its body,
so ``leadrelay --version`` and ``leadrelay --help`` load none of them.
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from typer.core import TyperCommand, TyperGroup

from leadrelay import __version__
from leadrelay.clikit import (
    CliError,
    ConfigOption,
    EncodingOption,
    load_project_config,
    make_console,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from rich.console import Console

#: Commands defined in other packages, imported on first use: name -> (module, attribute, the
#: one-line help ``leadrelay --help`` shows without importing the module). An attribute is a
#: command function or a ``typer.Typer`` of sub-commands.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "sync": (
        "leadrelay.sync.commands",
        "sync_command",
        "Sync the flows: changed leads both ways under the field rules, nothing lost or doubled.",
    ),
    "report": (
        "leadrelay.handoff.commands",
        "report_command",
        "Report the handoff: funnel conversion, SLA, rejections by source, ledger, diagnosis.",
    ),
    "validate": (
        "leadrelay.validation.commands",
        "validate_command",
        "Send a test lead through a form's real path and check it in the CRM.",
    ),
    "serve": (
        "leadrelay.capture.commands",
        "serve_command",
        "Run the capture service: form and ad-lead endpoints, with delivery to the CRMs, and "
        "the flows that have a schedule.",
    ),
    "import": (
        "leadrelay.capture.commands",
        "import_command",
        "Load a CSV list through the capture path: stored, tagged, deduped, delivered.",
    ),
    "dlq": (
        "leadrelay.sync.commands",
        "dlq_app",
        "Records a system refused: list them, replay them, or drop them.",
    ),
    "runs": (
        "leadrelay.sync.commands",
        "runs_app",
        "Past sync runs: counts, conflicts resolved and what was skipped.",
    ),
    "forms": (
        "leadrelay.capture.commands",
        "forms_app",
        "Connect web forms and ad lead forms, and see what each has received.",
    ),
    "connect": (
        "leadrelay.connect",
        "connect_app",
        "Connect a CRM once: obtain its refresh token and write it to the project's .env.",
    ),
    "trace": (
        "leadrelay.trace",
        "trace_command",
        "One lead's journey: receipts, attribution, identity, every write, problems, deletes.",
    ),
    "reconcile": (
        "leadrelay.reconcile",
        "reconcile_command",
        "Backfill the Meta / LinkedIn leads whose webhook never arrived, from the platforms' "
        "lists.",
    ),
}

# rich markup is "[style]…[/]": an unescaped "[forms]" in a help text would vanish from --help.
_MARKUP_OPEN = re.compile(r"(?<!\\)\[")


def tidy_help(command: Any) -> Any:
    """Make a click command's help print whole, as written: brackets in help texts are shown,
    not taken for rich markup, and a boolean flag is shown as a flag (no ``<bool>`` type)."""
    for attribute in ("help", "short_help", "epilog"):
        text = getattr(command, attribute, None)
        if text:
            setattr(command, attribute, _MARKUP_OPEN.sub(r"\\[", text))
    # click adds --help when a context asks for it, and keeps that one option from then on
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "help", None):
            param.help = _MARKUP_OPEN.sub(r"\\[", param.help)
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
    return command


def load_command(name: str) -> Any:
    """The click command of a lazily loaded command, its module imported now."""
    module_name, attribute, _ = LAZY_COMMANDS[name]
    target = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(target, typer.Typer):
        single = typer.Typer(add_completion=False, rich_markup_mode="rich")
        single.command(name)(target)
        target = single
    command = typer.main.get_command(target)
    command.name = name
    return tidy_help(command)


class _LazyGroup(TyperGroup):
    """The root group: commands of :data:`LAZY_COMMANDS` are imported when they run.

    Listing them in ``leadrelay --help`` needs only their one-line help, so a stand-in with
    that help is shown instead of importing every command module.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        tidy_help(self)
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        if self._listing:
            return TyperCommand(cmd_name, short_help=LAZY_COMMANDS[cmd_name][2])
        self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="leadrelay",
    cls=_LazyGroup,
    help=(
        "Lead-handoff integration middleware: forms and ad lead forms into HubSpot, Salesforce "
        "and Zoho CRM, and sales' verdict back, with nothing lost or duplicated."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


@cache
def _out() -> Console:
    return make_console()


@cache
def _err() -> Console:
    return make_console(stderr=True)


class _Options:
    debug = False


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"leadrelay {__version__}\n")
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
        _out().print(f"wrote {path}")
    _out().print(
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
            help="Create the custom fields the mappings need (HubSpot, Salesforce, Zoho).",
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

    try:
        loaded = load_project_config(config)
    except CliError as exc:
        if as_json:  # one JSON document in every case, a config error included
            print_json({"ok": False, "error": str(exc), "checks": []})
        raise
    results = run_checks(loaded, connections=not offline, create_fields=create_fields)
    ok = all(result.ok for result in results)
    if as_json:
        print_json({"ok": ok, "checks": [result.to_json() for result in results]})
    else:
        print_table(_out(), render_checks(results))
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

    check_url(url, "URL")
    if referrer is not None:
        check_url(referrer, "--referrer")
    attribution = tag_url(url, referrer, own_domains=own_domain or ())
    if as_json:
        print_json(attribution.to_dict())
    else:
        print_table(_out(), render_attribution(attribution))


# --- dedupe ------------------------------------------------------------------------------


@app.command()
def dedupe(
    file: Annotated[
        Path, typer.Argument(help="A CSV whose headers are Lead field names.", exists=False)
    ],
    encoding: EncodingOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Worker processes that make the rows' identity keys of a file of 4 MiB or "
            "more (default 1: this process alone). More help only where cores are free: "
            "docs/performance.md, Normalization round 4.",
        ),
    ] = 1,
) -> None:
    """Find clusters of duplicate leads in a CSV list, each with the reason it matched."""
    from leadrelay.sync.csvfile import CsvError
    from leadrelay.sync.dedupe import dedupe_csv, render

    if not file.is_file():
        raise CliError(f"{file}: no such file", exit_code=2)
    try:
        report = dedupe_csv(file, encoding=encoding, jobs=jobs)
    except CsvError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    if as_json:
        print_json(report.to_json())
    else:
        from rich.table import Table

        for renderable in render(report):
            if isinstance(renderable, Table):
                print_table(_out(), renderable)
            else:
                _out().print(renderable)


# --- demo --------------------------------------------------------------------------------


@app.command()
def demo() -> None:
    """Run the main job end to end on the embedded sandbox, then the sample-list section.

    The sandbox starts in-process; a web form, a Meta and a Google lead are captured and
    delivered, synced into HubSpot, Salesforce and Zoho, sales' verdicts are written back,
    one validation run proves a test lead arrives; a summary per system is printed.
    """
    from leadrelay import demo as demo_module

    raise typer.Exit(demo_module.main(_out(), _err()))


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
    seed: Annotated[
        int,
        typer.Option(
            "--seed", min=0, help="Create this many example leads in HubSpot once it is up."
        ),
    ] = 0,
) -> None:
    """Run local emulators of HubSpot, Salesforce, Zoho, Meta and LinkedIn over HTTPS.

    Salesforce answers at /services/…, HubSpot under /hubspot, Zoho under /zoho, Meta under
    /meta, LinkedIn under /linkedin; the admin API is under /__sandbox__. Prints the settings
    clients need (LEADRELAY_CA_BUNDLE among them) and serves until Ctrl-C or SIGTERM. The
    emulators keep their data in memory: a new sandbox starts empty (--seed adds leads).
    """
    from leadrelay.sandbox.server import SandboxServer, parse_faults

    try:
        fault_settings = parse_faults(faults) if faults else None
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from exc
    # Absolute: the CA path goes into .env, which is read from wherever the project runs.
    if init is not None:
        ca_dir: Path | None = init.resolve() / ".sandbox"
    elif env_file is not None:
        ca_dir = env_file.resolve().parent / ".sandbox"
    else:
        ca_dir = None
    try:
        server = SandboxServer(port=port, ca_dir=ca_dir, faults=fault_settings, log_level="info")
    except OSError as exc:
        raise CliError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror} (is a sandbox already running? "
            "stop it, or start this one with --port on a free port)",
            exit_code=2,
        ) from exc
    lines = server.env_lines()
    if env_file is not None:
        env_file.write_text(lines, encoding="utf-8")
    if init is not None:
        from leadrelay.sandbox.project import set_aside_state, write_sandbox_project

        kept = set_aside_state(init)
        written = write_sandbox_project(init, server.env())
        _err().print(f"wrote a project wired to this sandbox into {init}:", highlight=False)
        for path in written:
            _err().print(f"  {path}", highlight=False)
        if kept is not None:
            _err().print(
                f"this sandbox starts empty: the previous run's state database was moved to "
                f"{kept}, so no link or cursor points at records that are gone",
                highlight=False,
            )
    sys.stdout.write(lines)
    sys.stdout.flush()
    server.start()
    try:
        if seed:
            import httpx

            from leadrelay.sandbox.project import seed_leads

            try:
                emails = seed_leads(server.env(), seed)
            except httpx.HTTPError as exc:
                raise CliError(f"could not seed HubSpot leads: {exc}", exit_code=1) from exc
            _err().print(f"seeded {len(emails)} leads in HubSpot: {', '.join(emails)}")
        _err().print(f"sandbox listening on {server.url} (Ctrl-C to stop)", highlight=False)
        _wait_for_stop()
    finally:
        server.stop()


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
            on_ready=lambda: _err().print(
                f"worker ready on {loaded.state.display_url}", highlight=False
            ),
        )
    except QueueError as exc:
        raise CliError(str(exc), 2) from exc


def _wait_for_stop() -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_url(text: str, what: str) -> None:
    """Refuse (exit 2) what is not a web address: ``tag`` reads a landing page's URL."""
    candidate = text.strip()
    parts = urlsplit(candidate if "://" in candidate else f"https://{candidate}")
    host = parts.hostname or ""
    is_host = bool(host) and (
        "." in host or host == "localhost" or (parts.netloc.startswith("[") and ":" in host)
    )
    if parts.scheme not in ("http", "https") or not is_host or any(c.isspace() for c in candidate):
        raise CliError(
            f"{what} {text!r} is not a web address: expected a page URL such as "
            "https://acme.io/pricing?utm_source=google&utm_medium=cpc",
            exit_code=2,
        )


def _fail(message: str, exit_code: int) -> NoReturn:
    from rich.markup import escape

    _err().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
        if exc.exit_code == 130:  # typer's answer to Ctrl-C
            _fail("interrupted (Ctrl-C)", 130)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        _fail("aborted", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except SystemExit:
        raise
    except Exception as exc:  # a crash is still one clear line, after the traceback with --debug
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()  # click's usage errors (unknown command or option): usage, hint, exit 2
            raise SystemExit(exc.exit_code) from None  # type: ignore[attr-defined]
        if _debugging(argv):
            _print_traceback()
            _fail(f"{type(exc).__name__}: {exc}", 1)
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    except BaseException:
        raise
