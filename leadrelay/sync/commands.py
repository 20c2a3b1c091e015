"""``leadrelay sync``, ``leadrelay dlq list|retry|drop`` and ``leadrelay runs list|show``.

Registered by :mod:`leadrelay.cli`::

    app.command("sync")(sync_command)
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(runs_app, name="runs")

Exit codes (DESIGN §11): ``sync`` 0 ok, 1 some records dead-lettered or a flow failed, 2 config
error, 3 could not run (credentials refused, lock held), 130 / 143 stopped by SIGINT / SIGTERM at
a page boundary (the run is recorded as interrupted); ``dlq`` and ``runs`` 0, or 2 on a config
error or an unknown id (3 when a retry cannot run for the same reasons as sync).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer
from rich.console import Console
from rich.markup import escape

from leadrelay.clikit import (
    CliError,
    ConfigOption,
    JsonOption,
    load_project_config,
    make_console,
    open_store,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from rich.table import Table

    from leadrelay.config import Config, FlowConfig
    from leadrelay.sync.engine import ConnectorPool, FlowStats, PlannedRecord
    from leadrelay.sync.runner import RunOutcome
    from leadrelay.sync.state import DeadLetter, Run, StateStore, StoreLock

__all__ = ["dlq_app", "runs_app", "sync_command"]

_console = make_console()
_err = make_console(stderr=True)

dlq_app = typer.Typer(
    help="Records a system refused: list them, replay them, or drop them.",
    no_args_is_help=True,
    add_completion=False,
)
runs_app = typer.Typer(
    help="Past sync runs: counts, conflicts resolved and what was skipped.",
    no_args_is_help=True,
    add_completion=False,
)


def _select_flows(config: Config, names: Sequence[str] | None) -> list[FlowConfig]:
    if not config.flows:
        raise CliError(f"{config.path}: no [[flows]] defined", 2)
    if not names:
        return list(config.flows)
    selected = []
    for name in dict.fromkeys(names):
        try:
            selected.append(config.flow(name))
        except KeyError as exc:
            raise CliError(str(exc.args[0]), 2) from exc
    return selected


@contextmanager
def _locks(store: StateStore, flows: Sequence[FlowConfig]) -> Iterator[list[StoreLock]]:
    """Hold the sync lock of every flow, or fail with exit 3 naming the holder."""
    from leadrelay.sync.runner import FlowLocked, hold_locks

    try:
        with hold_locks(store, flows) as held:
            yield held
    except FlowLocked as exc:
        raise CliError(str(exc), 3) from exc


#: Seconds between progress lines when stderr is not a terminal (cron, CI, a log file).
LOG_PROGRESS_EVERY_S = 5.0


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int | None], None]]:
    """Progress of each pass: on a terminal a rich display (records, rate, elapsed; a bar and
    the time left when the total is known), elsewhere a plain line every few seconds."""
    if not enabled:
        yield lambda _label, _n, _total: None
    elif _err.is_terminal:
        with _live_progress() as advance:
            yield advance
    else:
        yield _LogProgress(_err, LOG_PROGRESS_EVERY_S)


@contextmanager
def _live_progress() -> Iterator[Callable[[str, int, int | None], None]]:
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")

    class CountColumn(ProgressColumn):
        """Records so far, and of how many when the read says (a backfill's total)."""

        def render(self, task: Task) -> Text:
            return Text(_count_text(task.completed, task.total), style="progress.download")

    tasks: dict[str, TaskID] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        CountColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_err,
        transient=False,
    ) as progress:

        def advance(label: str, count: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=None)
            if total is not None:
                progress.update(tasks[label], total=total)
            progress.advance(tasks[label], count)

        yield advance


def _count_text(done: float, total: float | None) -> str:
    """``1,200 of 100,000`` (or ``1,200`` while the total is unknown or already passed)."""
    if total is not None and total >= done:
        return f"{done:,.0f} of {total:,.0f}"
    return f"{done:,.0f}"


class _LogProgress:
    """One line per pass every ``every_s`` seconds: records so far, rate, time running."""

    def __init__(self, console: Console, every_s: float) -> None:
        self.console = console
        self.every_s = every_s
        self.started: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.last_line = time.monotonic()

    def __call__(self, label: str, count: int, total: int | None = None) -> None:
        now = time.monotonic()
        self.started.setdefault(label, now)
        self.counts[label] = self.counts.get(label, 0) + count
        if total is not None:
            self.totals[label] = total
        if now - self.last_line < self.every_s:
            return
        self.last_line = now
        elapsed = now - self.started[label]
        rate = self.counts[label] / elapsed if elapsed > 0 else 0.0
        done = self.counts[label]
        total = self.totals.get(label)
        of, left = "", ""
        if total is not None and total >= done:
            of = f" of {total:,}"
            if rate > 0:
                left = f", about {(total - done) / rate:,.0f}s left"
        # A pass that just began has no rate yet: its first page only.
        pace = f", {rate:,.0f}/s, {elapsed:,.0f}s{left}" if elapsed >= 1 else ""
        self.console.print(
            f"sync {label}: {done:,}{of} records{pace}",
            highlight=False,
            soft_wrap=True,
        )


def _value_text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, default=str, ensure_ascii=False)


def _plan_table(planned: Sequence[PlannedRecord]) -> Table:
    """The dry run's plan: one row per field a record would have written (or per record)."""
    from rich.table import Table

    table = Table(title="plan (dry run: nothing written)", show_lines=False)
    for column in ("flow", "to", "lead", "email", "action", "field", "old", "new"):
        table.add_column(column, overflow="fold")
    for record in planned:
        for name, old, new in record.changes or [("", None, None)]:
            table.add_row(
                escape(record.flow),
                escape(record.target),
                # A new person's key in a dry run is made up; the real run makes its own.
                "(new)" if record.new_lead else escape(record.lead_key),
                escape(record.email or ""),
                record.action.value,
                escape(name),
                escape(_value_text(old)),
                escape(_value_text(new)),
            )
    return table


def _plan_json(record: PlannedRecord) -> dict[str, Any]:
    return {
        "flow": record.flow,
        "target": record.target,
        "lead_key": record.lead_key,
        "new_lead": record.new_lead,
        "email": record.email,
        "action": record.action.value,
        "changes": [{"field": name, "old": old, "new": new} for name, old, new in record.changes],
    }


def _stats_table(flows: Sequence[FlowStats], *, dry_run: bool) -> Table:
    from rich.table import Table

    title = "sync (dry run: counts of what would be written)" if dry_run else "sync"
    table = Table(title=title)
    columns = ("flow", "read", "created", "updated", "unchanged", "written back", "dead letters")
    for column in columns:
        table.add_column(column, justify="left" if column == "flow" else "right", no_wrap=True)
    table.add_column("API calls")
    # The error itself is one line on stderr; the table only says which flow failed.
    failed = any(stats.error for stats in flows)
    if failed:
        table.add_column("status")
    for stats in flows:
        calls = ", ".join(f"{name} {count}" for name, count in stats.api_calls.items())
        status = ["[red]failed[/]" if stats.error else "ok"] if failed else []
        table.add_row(
            escape(stats.name),
            str(stats.read),
            str(stats.created),
            str(stats.updated),
            str(stats.unchanged),
            str(stats.written_back),
            str(stats.dead_lettered),
            calls,
            *status,
        )
    return table


class _StopOnSignal:
    """While a sync runs, SIGINT (Ctrl-C) and SIGTERM ask it to stop at the next page
    boundary instead of killing it mid-write; a second Ctrl-C stops it at once."""

    EXIT_CODES: ClassVar[dict[str, int]] = {"SIGINT": 130, "SIGTERM": 143}

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> str | None:
        return self.reason

    def _handle(self, signum: int, _frame: object) -> None:
        import signal

        name = signal.Signals(signum).name
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = name
        hint = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
        _err.print(f"{name}: stopping after the page being written{hint}", highlight=False)

    def __enter__(self) -> _StopOnSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# --------------------------------------------------------------------------------------------
# sync


def sync_command(
    flows: Annotated[
        list[str] | None, typer.Argument(help="Flows to run (default: every flow).")
    ] = None,
    config: ConfigOption = Path("leadrelay.toml"),
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan (per record and field) and write nothing."),
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Re-read both sides from the start (ignore cursors).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync the flows: changed leads both ways under the field rules, nothing lost or doubled.

    Exit 0 when everything was written, 1 when some records were dead-lettered or a flow
    failed, 2 on a config error, 3 when it could not run (credentials refused, lock held),
    130 / 143 when Ctrl-C / SIGTERM stopped it (at a page boundary, what was written kept).
    With --json, one JSON object is printed in every case, an error included.
    """
    planned: list[PlannedRecord] = []
    try:
        outcome = _run(config, flows, dry_run=dry_run, full=full, planned=planned, quiet=as_json)
    except CliError as exc:
        if as_json:
            print_json({"ok": False, "error": str(exc), "flows": []})
        raise
    except Exception as exc:
        # A failure nobody foresaw: still one JSON document for the machine reading it (the
        # CLI's main() prints the line, and the traceback with --debug).
        if as_json:
            print_json({"ok": False, "error": f"{type(exc).__name__}: {exc}", "flows": []})
        raise
    results = outcome.results
    plan = [record for record in planned if record.action.value != "unchanged"]
    error = _outcome_error(outcome)
    if as_json:
        document: dict[str, Any] = {"ok": outcome.ok, "flows": [s.to_json() for s in results]}
        if dry_run:
            document["plan"] = [_plan_json(record) for record in plan]
        if outcome.interrupted is not None:
            document["interrupted"] = outcome.interrupted
        if error is not None:
            document["error"] = error[0]
        print_json(document)
    else:
        if dry_run and plan:
            print_table(_console, _plan_table(plan))
        print_table(_console, _stats_table(results, dry_run=dry_run))
        fatal = str(outcome.fatal) if outcome.fatal is not None else None
        for stats in results:
            # The error that stopped the run is the last line (below), not printed twice.
            if stats.error and stats.error != fatal:
                _err.print(f"[bold red]error:[/] flow {escape(stats.name)}: {escape(stats.error)}")
    if error is not None:
        # An exception, not typer.Exit: the CLI's main() turns it into the exit code.
        raise CliError(*error)


def _run(
    config_path: Path,
    names: Sequence[str] | None,
    *,
    dry_run: bool,
    full: bool,
    planned: list[PlannedRecord],
    quiet: bool,
) -> RunOutcome:
    """Load the project and run the flows under a Ctrl-C / SIGTERM stop."""
    from leadrelay.sync.runner import FlowLocked, FlowSetupError, run_flows

    loaded = load_project_config(config_path)
    selected = _select_flows(loaded, names)
    store = open_store(loaded)
    try:
        with _StopOnSignal() as stop, _progress(not quiet) as advance:
            return run_flows(
                loaded,
                store,
                selected,
                dry_run=dry_run,
                full=full,
                on_plan=planned.append,
                on_page=advance,
                stop=stop,
            )
    except FlowLocked as exc:
        raise CliError(str(exc), 3) from exc
    except FlowSetupError as exc:
        raise CliError(str(exc), 2) from exc
    except KeyboardInterrupt:
        raise CliError(
            "interrupted at once by a second Ctrl-C: the pages committed before stay, the page "
            "being written was rolled back and is read again by the next sync; the run is "
            "recorded as interrupted",
            130,
        ) from None
    finally:
        store.close()


def _outcome_error(outcome: RunOutcome) -> tuple[str, int] | None:
    """The one-line error and exit code of a run that was not ok, or None."""
    results = outcome.results
    if outcome.interrupted is not None:
        code = _StopOnSignal.EXIT_CODES.get(outcome.interrupted, 130)
        done = ", ".join(
            f"{s.name}: {s.read} read, {s.created} created, {s.updated} updated, "
            f"{s.written_back} written back"
            for s in results
        )
        run = f"run {outcome.run_id} recorded as interrupted; " if outcome.run_id else ""
        return (
            f"interrupted by {outcome.interrupted}: stopped at a page boundary with what was "
            f"written committed ({done or 'nothing read yet'}); {run}the next sync goes on "
            "from there",
            code,
        )
    if outcome.fatal is not None:
        where = next((f" at flow {s.name}" for s in results if s.error == str(outcome.fatal)), "")
        return f"sync stopped{where}: {outcome.fatal}", 3
    if outcome.ok:
        return None
    failed_flows = [s.name for s in results if s.error]
    letters = sum(s.dead_lettered for s in results)
    parts = [f"flow {', '.join(failed_flows)} failed"] if failed_flows else []
    if letters:
        parts.append(f"{letters} record(s) dead-lettered (see `leadrelay dlq list`)")
    return "; ".join(parts), 1


# --------------------------------------------------------------------------------------------
# dlq


def _dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "flow": letter.flow,
        "connection": letter.connection,
        "system": letter.system,
        "record": letter.record_ref,
        "lead_key": letter.lead_key,
        "field": letter.field,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "status": letter.status.value,
        "created_at": letter.created_at.isoformat(),
        "last_attempt_at": letter.last_attempt_at.isoformat(),
    }


@dlq_app.command("list")
def dlq_list(
    config: ConfigOption = Path("leadrelay.toml"),
    flow: Annotated[str | None, typer.Option("--flow", help="Only this flow's.")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also retried, dropped and resolved ones.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List dead letters: the record, the system, the field and the system's own reason."""
    from leadrelay.sync.state import DeadLetterStatus

    loaded = load_project_config(config)
    store = open_store(loaded)
    try:
        letters = store.list_dead_letters(
            status=None if show_all else DeadLetterStatus.OPEN, flow=flow
        )
    finally:
        store.close()
    if as_json:
        print_json({"dead_letters": [_dead_letter_json(letter) for letter in letters]})
        return
    if not letters:
        _console.print("no dead letters" if show_all else "no open dead letters")
        return
    from rich.table import Table

    table = Table(title="dead letters")
    for column in ("id", "flow", "system", "record", "field", "reason", "attempts", "status"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.flow or "",
            f"{letter.connection} ({letter.system})",
            letter.record_ref,
            letter.field or "",
            letter.reason,
            str(letter.attempts),
            letter.status.value,
        )
    print_table(_console, table)


def _pick_letters(store: StateStore, ids: Sequence[int] | None, every: bool) -> list[DeadLetter]:
    from leadrelay.sync.state import DeadLetterStatus, StateError

    if not ids and not every:
        raise CliError("name dead-letter ids, or --all for every open one", 2)
    if every:
        return store.list_dead_letters(status=DeadLetterStatus.OPEN)
    letters = []
    for letter_id in ids or []:
        try:
            letters.append(store.get_dead_letter(letter_id))
        except StateError as exc:
            raise CliError(str(exc), 2) from exc
    return letters


def _retry_captured(
    config: Config, store: StateStore, pool: ConnectorPool, letters: Sequence[DeadLetter]
) -> dict[int, str]:
    """Put the captured leads' inbox rows back to pending and deliver the inbox once."""
    from leadrelay.capture.worker import drain_inbox

    outcome: dict[int, str] = {}
    queued: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        key = str(letter.payload["inbox_key"])
        if store.requeue_inbox(key) or key in queued:
            queued.setdefault(key, []).append(letter)
        else:
            outcome[letter.id] = "its capture inbox row is not failed; resolve it by hand"
    if not queued:
        return outcome
    stats = drain_inbox(config, store, connectors=pool)
    for key, waiting in queued.items():
        result = stats.outcomes.get(key)
        for letter in waiting:
            if result == "delivered":
                store.mark_dead_letter_retried(letter.id)
                outcome[letter.id] = "written"
            elif result == "dead_lettered":
                outcome[letter.id] = "failed again"
            else:
                outcome[letter.id] = "queued for delivery (the destination did not answer)"
    return outcome


@dlq_app.command("retry")
def dlq_retry(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead-letter ids.")] = None,
    config: ConfigOption = Path("leadrelay.toml"),
    every: Annotated[bool, typer.Option("--all", help="Every open dead letter.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Replay dead letters: a flow's record is read again from its system and synced; a
    captured lead is delivered again from the capture inbox (with its form's current mapping).
    """
    from leadrelay.connectors.errors import AuthError, ConnectorError
    from leadrelay.mappings.engine import MappingError
    from leadrelay.sync.engine import ConnectorPool, SyncContext, SyncEngine
    from leadrelay.sync.state import DeadLetterStatus

    loaded = load_project_config(config)
    store = open_store(loaded)
    outcome: dict[int, str] = {}
    try:
        letters = _pick_letters(store, ids, every)
        by_flow: dict[str, list[DeadLetter]] = {}
        captured: list[DeadLetter] = []
        for letter in letters:
            if letter.status is not DeadLetterStatus.OPEN:
                outcome[letter.id] = f"not open ({letter.status.value})"
            elif letter.flow is None and letter.payload.get("inbox_key"):
                captured.append(letter)
            elif letter.flow is None or letter.flow not in {f.name for f in loaded.flows}:
                outcome[letter.id] = "not from a configured flow; fix and resolve it by hand"
            else:
                by_flow.setdefault(letter.flow, []).append(letter)
        flows = [loaded.flow(name) for name in by_flow]
        with _locks(store, flows), ConnectorPool(loaded, store=store) as pool:
            if captured:
                outcome.update(_retry_captured(loaded, store, pool, captured))
            context = SyncContext(loaded, store, pool)
            for flow in flows:
                try:
                    engine = SyncEngine.for_flow(context, flow)
                    written = engine.retry(by_flow[flow.name])
                except MappingError as exc:
                    raise CliError(f"flow {flow.name}: {exc}", 2) from exc
                except AuthError as exc:
                    raise CliError(f"flow {flow.name}: {exc}", 3) from exc
                except ConnectorError as exc:
                    for letter in by_flow[flow.name]:
                        outcome[letter.id] = f"not retried: {exc}"
                    continue
                for letter_id, done in written.items():
                    outcome[letter_id] = "written" if done else "failed again"
        # Why it failed again: the system's newest answer, kept on the letter by the retry.
        reasons = {
            letter_id: store.get_dead_letter(letter_id).reason
            for letter_id, result in outcome.items()
            if result == "failed again"
        }
    finally:
        store.close()
    if as_json:
        retried = [
            {"id": k, "result": v, **({"reason": reasons[k]} if k in reasons else {})}
            for k, v in sorted(outcome.items())
        ]
        print_json({"retried": retried})
    else:
        for letter_id, text in sorted(outcome.items()):
            why = f": {reasons[letter_id]}" if letter_id in reasons else ""
            _console.print(f"{letter_id}: {text}{why}", highlight=False, markup=False)
    failed = [k for k, v in outcome.items() if v != "written"]
    if failed:
        # DESIGN §7.7: a replay that did not write the record is a failure (exit 1).
        raise CliError(f"{len(failed)} of {len(outcome)} dead letter(s) not written", 1)


@dlq_app.command("drop")
def dlq_drop(
    ids: Annotated[list[int], typer.Argument(help="Dead-letter ids to give up on.")],
    config: ConfigOption = Path("leadrelay.toml"),
    as_json: JsonOption = False,
) -> None:
    """Give up on dead letters: they are kept, marked dropped, and never retried."""
    from leadrelay.sync.state import StateError

    loaded = load_project_config(config)
    store = open_store(loaded)
    dropped = []
    try:
        for letter_id in ids:
            try:
                dropped.append(store.drop_dead_letter(letter_id))
            except StateError as exc:
                raise CliError(str(exc), 2) from exc
    finally:
        store.close()
    if as_json:
        print_json({"dropped": [letter.id for letter in dropped]})
        return
    for letter in dropped:
        _console.print(f"{letter.id}: dropped")


# --------------------------------------------------------------------------------------------
# runs


def _status(run: Run) -> str:
    """A run's status as shown: ``interrupted`` for one a signal stopped at a page boundary."""
    from leadrelay.sync.state import RunStatus

    if run.status is RunStatus.ABORTED and run.stats.get("interrupted"):
        return "interrupted"
    return run.status.value


def _run_json(run: Run, *, log: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "flows": run.flows,
        "status": _status(run),
        "dry_run": run.dry_run,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "stats": run.stats,
    }
    if log:
        data["log"] = run.log
    return data


def _totals(run: Run) -> dict[str, int]:
    totals = dict.fromkeys(
        ("read", "created", "updated", "written_back", "dead_lettered", "conflicts"), 0
    )
    for flow in run.stats.get("flows", []):
        for key in totals:
            value = flow.get(key)
            if isinstance(value, int):
                totals[key] += value
    return totals


@runs_app.command("list")
def runs_list(
    config: ConfigOption = Path("leadrelay.toml"),
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many.")] = 20,
    flow: Annotated[str | None, typer.Option("--flow", help="Only runs of this flow.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The latest sync runs, newest first, with their counts."""
    loaded = load_project_config(config)
    store = open_store(loaded)
    try:
        runs = store.list_runs(limit=limit, flow=flow)
    finally:
        store.close()
    if as_json:
        print_json({"runs": [_run_json(run, log=False) for run in runs]})
        return
    if not runs:
        _console.print("no runs yet")
        return
    from rich.table import Table

    table = Table(title="sync runs")
    columns = ("id", "flows", "started", "status", "read", "created", "updated", "written back")
    for column in (*columns, "dead letters", "conflicts"):
        table.add_column(column, no_wrap=column != "flows")
    for run in runs:
        totals = _totals(run)
        table.add_row(
            str(run.id),
            ", ".join(run.flows),
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _status(run),
            *(
                str(totals[k])
                for k in (
                    "read",
                    "created",
                    "updated",
                    "written_back",
                    "dead_lettered",
                    "conflicts",
                )
            ),
        )
    print_table(_console, table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(help="The run id (from `leadrelay runs list`).")],
    config: ConfigOption = Path("leadrelay.toml"),
    as_json: JsonOption = False,
) -> None:
    """One run: its counts per flow and its log (conflicts resolved, records skipped)."""
    from leadrelay.sync.state import StateError

    loaded = load_project_config(config)
    store = open_store(loaded)
    try:
        try:
            run = store.get_run(run_id)
        except StateError as exc:
            raise CliError(str(exc), 2) from exc
    finally:
        store.close()
    if as_json:
        print_json(_run_json(run, log=True))
        return
    finished = run.finished_at.isoformat() if run.finished_at else "still running"
    _console.print(
        f"run {run.id}: {', '.join(run.flows)} — {_status(run)}"
        f"{' (dry run)' if run.dry_run else ''}, {run.started_at.isoformat()} → {finished}",
        highlight=False,
    )
    from rich.table import Table

    flows_stats = run.stats.get("flows", [])
    if flows_stats:
        table = Table(title="flows")
        keys = ("name", "rounds", "read", "created", "updated", "unchanged", "written_back")
        more = ("dead_lettered", "field_problems", "deleted", "conflicts", "error")
        for column in (*keys, *more):
            table.add_column(column)
        for stats in flows_stats:
            table.add_row(*(str(stats.get(k, "") or "") for k in (*keys, *more)))
        print_table(_console, table)
    if not run.log:
        _console.print("no events")
        return
    log = Table(title="events")
    for column in ("at", "flow", "event", "lead", "field", "source", "destination", "rule / why"):
        log.add_column(column, overflow="fold")
    for event in run.log:
        log.add_row(
            str(event.get("at", "")),
            str(event.get("flow", "")),
            str(event.get("event", "")),
            str(event.get("lead", "")),
            str(event.get("field", "")),
            json.dumps(event.get("source_value", event.get("value")), default=str)
            if "source_value" in event or "value" in event
            else "",
            json.dumps(event.get("destination_value"), default=str)
            if "destination_value" in event
            else "",
            str(event.get("rule") or event.get("reason") or "")
            + (f" → {event['winner']} wins" if "winner" in event else ""),
        )
    print_table(_console, log)
