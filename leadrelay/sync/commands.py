"""``leadrelay sync``, ``leadrelay dlq list|retry|drop`` and ``leadrelay runs list|show``.

Registered by :mod:`leadrelay.cli`::

    app.command("sync")(sync_command)
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(runs_app, name="runs")

Exit codes (DESIGN §11): ``sync`` 0 ok, 1 some records dead-lettered or a flow failed, 2 config
error, 3 could not run (credentials refused, lock held); ``dlq`` and ``runs`` 0, or 2 on a config
error or an unknown id (3 when a retry cannot run for the same reasons as sync).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from leadrelay.clikit import (
    CliError,
    ConfigOption,
    JsonOption,
    load_project_config,
    open_store,
    print_json,
)

if TYPE_CHECKING:
    from leadrelay.config import Config, FlowConfig
    from leadrelay.sync.engine import ConnectorPool, FlowStats, PlannedRecord
    from leadrelay.sync.state import DeadLetter, Run, StateStore, StoreLock

__all__ = ["dlq_app", "runs_app", "sync_command"]

_console = Console()
_err = Console(stderr=True)

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


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], None]]:
    """A page counter: a rich progress display on a terminal, nothing otherwise."""
    if not enabled:
        yield lambda _label, _n: None
        return
    tasks: dict[str, TaskID] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed} records"),
        TimeElapsedColumn(),
        console=_err,
        transient=False,
    ) as progress:

        def advance(label: str, count: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=None)
            progress.advance(tasks[label], count)

        yield advance


def _plan_table(planned: Sequence[PlannedRecord]) -> Table:
    table = Table(title="plan (dry run: nothing written)", show_lines=False)
    for column in ("flow", "to", "lead", "email", "action", "field", "old", "new"):
        table.add_column(column, overflow="fold")
    for record in planned:
        changes = record.changes or [("", "", "")]
        for index, (name, old, new) in enumerate(changes):
            first = index == 0
            table.add_row(
                record.flow if first else "",
                record.target if first else "",
                record.lead_key if first else "",
                (record.email or "") if first else "",
                record.action.value if first else "",
                name,
                "" if old is None else json.dumps(old, default=str, ensure_ascii=False),
                "" if new is None else json.dumps(new, default=str, ensure_ascii=False),
            )
    return table


def _stats_table(flows: Sequence[FlowStats], *, dry_run: bool) -> Table:
    title = "sync (dry run: counts of what would be written)" if dry_run else "sync"
    table = Table(title=title)
    columns = ("flow", "read", "created", "updated", "unchanged", "written back", "dead letters")
    for column in columns:
        table.add_column(column, justify="left" if column == "flow" else "right")
    table.add_column("API calls")
    for stats in flows:
        calls = ", ".join(f"{name} {count}" for name, count in stats.api_calls.items())
        table.add_row(
            stats.name + (f" [red](failed: {stats.error})[/]" if stats.error else ""),
            str(stats.read),
            str(stats.created),
            str(stats.updated),
            str(stats.unchanged),
            str(stats.written_back),
            str(stats.dead_lettered),
            calls,
        )
    return table


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
    failed, 2 on a config error, 3 when it could not run (credentials refused, lock held).
    """
    from leadrelay.sync.runner import FlowLocked, FlowSetupError, run_flows

    loaded = load_project_config(config)
    selected = _select_flows(loaded, flows)
    store = open_store(loaded)
    planned: list[PlannedRecord] = []
    try:
        show_progress = _err.is_terminal and not as_json
        with _progress(show_progress) as advance:
            outcome = run_flows(
                loaded,
                store,
                selected,
                dry_run=dry_run,
                full=full,
                on_plan=planned.append,
                on_page=advance,
            )
    except FlowLocked as exc:
        raise CliError(str(exc), 3) from exc
    except FlowSetupError as exc:
        raise CliError(str(exc), 2) from exc
    finally:
        store.close()
    results, fatal, ok = outcome.results, outcome.fatal, outcome.ok
    if as_json:
        print_json({"ok": ok, "flows": [s.to_json() for s in results]})
    else:
        if dry_run and planned:
            _console.print(_plan_table([p for p in planned if p.action.value != "unchanged"]))
        _console.print(_stats_table(results, dry_run=dry_run))
        for stats in results:
            if stats.error:
                _err.print(f"[bold red]error:[/] flow {stats.name}: {stats.error}", highlight=False)
    if fatal is not None:
        code = 3
        raise CliError(f"sync stopped: {fatal}", code)
    if not ok:
        failed_flows = [s.name for s in results if s.error]
        letters = sum(s.dead_lettered for s in results)
        parts = [f"flow {', '.join(failed_flows)} failed"] if failed_flows else []
        if letters:
            parts.append(f"{letters} record(s) dead-lettered (see `leadrelay dlq list`)")
        # An exception, not typer.Exit: the CLI's main() turns it into the exit code.
        raise CliError("; ".join(parts), 1)


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
    _console.print(table)


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
    finally:
        store.close()
    if as_json:
        print_json({"retried": [{"id": k, "result": v} for k, v in sorted(outcome.items())]})
    else:
        for letter_id, text in sorted(outcome.items()):
            _console.print(f"{letter_id}: {text}")
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


def _run_json(run: Run, *, log: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "flows": run.flows,
        "status": run.status.value,
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
    table = Table(title="sync runs")
    columns = ("id", "flows", "started", "status", "read", "created", "updated", "written back")
    for column in (*columns, "dead letters", "conflicts"):
        table.add_column(column)
    for run in runs:
        totals = _totals(run)
        table.add_row(
            str(run.id),
            ", ".join(run.flows),
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            run.status.value,
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
    _console.print(table)


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
        f"run {run.id}: {', '.join(run.flows)} — {run.status.value}"
        f"{' (dry run)' if run.dry_run else ''}, {run.started_at.isoformat()} → {finished}",
        highlight=False,
    )
    flows_stats = run.stats.get("flows", [])
    if flows_stats:
        table = Table(title="flows")
        keys = ("name", "read", "created", "updated", "unchanged", "written_back")
        more = ("dead_lettered", "field_problems", "deleted", "conflicts", "error")
        for column in (*keys, *more):
            table.add_column(column)
        for stats in flows_stats:
            table.add_row(*(str(stats.get(k, "") or "") for k in (*keys, *more)))
        _console.print(table)
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
    _console.print(log)
