"""``leadrelay serve``, ``leadrelay forms add|list`` and ``leadrelay import``.

Registered by :mod:`leadrelay.cli`::

    app.command("serve")(serve_command)
    app.add_typer(forms_app, name="forms")
    app.command("import")(import_command)

Exit codes (DESIGN §11): ``forms`` 0, or 2 on a configuration error; ``import`` 0 when every
row was delivered, 1 when a row was skipped, dead-lettered or left pending (the CRM failing:
the next ``leadrelay sync`` or ``serve`` pass delivers it), 2 on a configuration error or a file
that cannot be read as a whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from leadrelay.capture import worker as _worker  # registers the inbox drainer of `sync`
from leadrelay.clikit import (
    CliError,
    ConfigOption,
    EncodingOption,
    JsonOption,
    load_project_config,
    make_console,
    open_store,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from leadrelay.config import Config
    from leadrelay.sync.dedupe import DedupeRecord
    from leadrelay.sync.state import StateStore

__all__ = ["forms_app", "import_command", "serve_command"]

_console = make_console()
_err = make_console(stderr=True)

forms_app = typer.Typer(
    help="Connect web forms and ad lead forms, and see what each has received.",
    no_args_is_help=True,
    add_completion=False,
)


# --------------------------------------------------------------------------------------------
# serve


def serve_command(
    config: ConfigOption = Path("leadrelay.toml"),
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to listen on (default: capture.host)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=1, max=65535, help="Port (default: capture.port)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            max=64,
            help="PostgreSQL state only: queue workers to start (0: `leadrelay worker` "
            "processes run elsewhere).",
        ),
    ] = 1,
    http_workers: Annotated[
        int,
        typer.Option(
            "--http-workers",
            min=1,
            max=64,
            help="Processes answering HTTP on the one port. More use more "
            "cores; they share the inbox (SQLite file in WAL mode, or PostgreSQL).",
        ),
    ] = 1,
) -> None:
    """Run the capture service: form and ad-lead endpoints, with delivery to the CRMs, and
    the flows that have a schedule.

    Each lead is stored before it is acknowledged (202) and delivered by a background
    worker every capture.worker_interval_s seconds (and right after it arrives), with
    retries while a CRM is down. A flow with schedule = "*/5 * * * *" (cron, in
    [schedule] timezone, UTC by default) runs in each minute it matches, unless another sync
    holds its lock. With a PostgreSQL [state] url, --workers queue workers do both (see
    `leadrelay worker`). --http-workers N answers HTTP in N processes sharing the port
    (more capture throughput on several cores). Stops on Ctrl-C or SIGTERM after the
    requests, the delivery pass and the run in progress.
    """
    from leadrelay.capture.app import serve

    loaded = load_project_config(config)
    if workers != 1 and loaded.state.is_sqlite:
        raise CliError(
            "--workers needs a PostgreSQL [state] url (the job queue); with SQLite, serve runs "
            "one delivery worker itself (--http-workers N answers HTTP in N processes)",
            2,
        )
    for name, form in sorted(loaded.forms.items()):
        from leadrelay.capture.formsconfig import form_endpoint

        url = form_endpoint(loaded, name, form.source)
        if url is not None:
            _err.print(f"form {name} ({form.source} → {form.destination}): {url}", highlight=False)
    from datetime import datetime

    from leadrelay.sync.schedule import schedule_lines

    for line in schedule_lines(loaded, datetime.now(loaded.schedule.zone)):
        _err.print(line, highlight=False)
    from leadrelay.capture.httpworkers import HttpWorkerError

    _check_port_free(host or loaded.capture.host, port or loaded.capture.port)
    try:
        serve(loaded, host=host, port=port, workers=workers, http_workers=http_workers)
    except HttpWorkerError as exc:
        raise CliError(str(exc), 1) from exc


# --------------------------------------------------------------------------------------------
# forms


@forms_app.command("add")
def forms_add(
    name: Annotated[str, typer.Argument(help="The form's name (used in its URL).")],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="webform, meta_lead_ads, linkedin_lead_gen, google_ads_lead_form or csv.",
        ),
    ],
    destination: Annotated[
        str, typer.Option("--destination", help="The connection its leads go to.")
    ],
    config: ConfigOption = Path("leadrelay.toml"),
    as_json: JsonOption = False,
) -> None:
    """Connect a form: writes forms.NAME in leadrelay.toml, its mapping and its secrets in .env.

    Prints the endpoint URL and the values to paste into the form or ad platform. New secrets
    (a web form's shared secret, Meta's verify token, a Google Ads key) are yours and are
    printed this once so you can paste them; they are kept only in .env.
    """
    from leadrelay.capture.formsconfig import FormsConfigError, add_form

    try:
        added = add_form(config, name, source=source, destination=destination)
    except FormsConfigError as exc:
        raise CliError(str(exc), 2) from exc
    if as_json:
        print_json(
            {
                "form": added.name,
                "source": added.source,
                "destination": added.destination,
                "endpoint": added.endpoint,
                "paste": added.paste,
                "files": [str(path) for path in added.files],
            }
        )
        return
    _console.print(f"added form [bold]{added.name}[/] ({added.source} → {added.destination})")
    for path in added.files:
        _console.print(f"  wrote {path}", highlight=False)
    if added.endpoint is not None:
        _console.print(f"endpoint: {added.endpoint}", highlight=False)
    else:
        _console.print(f"load a list with: leadrelay import FILE.csv --form {added.name}")
    for label, value in added.paste.items():
        _console.print(f"{label}: {value}", highlight=False)
    _console.print(
        f"next: edit mappings/forms/{added.name}.toml, run `leadrelay check`, "
        f"then `leadrelay validate {added.name}`"
    )


def _form_summaries(config: Config, store: StateStore) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from leadrelay.capture.formsconfig import form_endpoint
    from leadrelay.sync.state import InboxStatus, LedgerState, inbox_table

    with store.transaction() as conn:
        last: dict[str, Any] = dict(
            conn.execute(
                sa.select(inbox_table.c.form, sa.func.max(inbox_table.c.received_at)).group_by(
                    inbox_table.c.form
                )
            ).all()
        )
        pending: dict[str, int] = dict(
            conn.execute(
                sa.select(inbox_table.c.form, sa.func.count())
                .where(inbox_table.c.status == InboxStatus.PENDING.value)
                .group_by(inbox_table.c.form)
            ).all()
        )
        counts = store.ledger_counts(include_test=True, conn=conn)
    rows = []
    for name, form in sorted(config.forms.items()):
        # Cumulative, as in `leadrelay report`'s ledger: every lead received, those of them
        # written (verified ones included), verified, failed.
        states = dict.fromkeys(("received", "written", "verified", "failed"), 0)
        for count in counts:
            if count.form == name and count.destination == form.destination:
                states["received"] += count.count
                if count.state in (LedgerState.WRITTEN, LedgerState.VERIFIED):
                    states["written"] += count.count
                if count.state in (LedgerState.VERIFIED, LedgerState.FAILED):
                    states[count.state.value] += count.count
        received = last.get(name)
        if isinstance(received, datetime):
            received = received.isoformat(timespec="seconds")
        rows.append(
            {
                "form": name,
                "source": form.source,
                "destination": form.destination,
                "endpoint": form_endpoint(config, name, form.source),
                "last_lead_at": received,
                "ledger": states,
                "pending": int(pending.get(name, 0)),
            }
        )
    return rows


@forms_app.command("list")
def forms_list(config: ConfigOption = Path("leadrelay.toml"), as_json: JsonOption = False) -> None:
    """Each form with its endpoint, last lead, counts by ledger state and inbox items pending.

    The ledger counts each lead once per destination, as `leadrelay report` does: received
    (every lead stored), written (of those, the ones in the destination), verified (of those,
    read back by `leadrelay validate`: its test leads) and failed (dead-lettered); pending is
    what the inbox still has to deliver. Test leads are counted.
    """
    loaded = load_project_config(config)
    store = open_store(loaded)
    try:
        rows = _form_summaries(loaded, store)
    finally:
        store.close()
    if as_json:
        print_json({"forms": rows})
        return
    if not rows:
        _console.print("no forms yet: add one with `leadrelay forms add NAME --source …`")
        return
    table = Table(title="forms")
    for column in ("form", "source", "destination", "endpoint", "last lead"):
        table.add_column(column, overflow="fold")
    for column in ("received", "written", "verified", "failed", "pending"):
        table.add_column(column, justify="right")
    for row in rows:
        ledger = row["ledger"]
        table.add_row(
            row["form"],
            row["source"],
            row["destination"],
            row["endpoint"] or "(import)",
            row["last_lead_at"] or "-",
            *(str(ledger[state]) for state in ("received", "written", "verified", "failed")),
            str(row["pending"]),
        )
    print_table(_console, table)


def _check_port_free(host: str, port: int) -> None:
    """Refuse at once, with the reason, a port another process listens on (uvicorn would log
    it only after the children started, then exit)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another serve "
                "running? stop it, or pass --port)",
                2,
            ) from exc


# --------------------------------------------------------------------------------------------
# import


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    with Progress(
        TextColumn("delivering"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
    ) as progress:
        task = progress.add_task("import", total=total)
        yield lambda n: progress.advance(task, n)


def _row_fields(values: dict[str, str], aliases: dict[str, str]) -> dict[str, str]:
    """A CSV row as form fields: its columns, also under the mapping's own spelling."""
    fields = {name: value for name, value in values.items() if value.strip()}
    for normalized, system in aliases.items():
        if normalized in fields and system not in fields:
            fields[system] = fields[normalized]
    return fields


def import_command(
    file: Annotated[Path, typer.Argument(help="A CSV list (event attendees, referrals …).")],
    form: Annotated[str, typer.Option("--form", help="The form whose mapping and destination.")],
    config: ConfigOption = Path("leadrelay.toml"),
    encoding: EncodingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a CSV list through the capture path: stored, tagged, deduped, delivered.

    Headers are Lead field names (First Name or first_name), the form mapping's field names,
    utm_*, click ids, page_url and referrer. Re-importing the same file stores nothing twice; a
    corrected row is delivered as an update. Exit 0 when every row was delivered, 1 when a row
    was skipped, dead-lettered or left pending, 2 on a configuration error.
    """
    from leadrelay.mappings.engine import MappingError, load_form_mapping
    from leadrelay.sync.csvfile import CsvError, LeadRow, header_to_field, read_lead_rows
    from leadrelay.sync.dedupe import DedupeRecord
    from leadrelay.sync.tagging import CLICK_ID_PARAMS, UTM_PARAMS

    loaded = load_project_config(config)
    try:
        form_config = loaded.form(form)
    except KeyError as exc:
        raise CliError(str(exc.args[0]), 2) from exc
    if not file.is_file():
        raise CliError(f"{file}: no such file", 2)
    try:
        mapping = load_form_mapping(form_config.mapping, source=form_config.source)
    except MappingError as exc:
        raise CliError(f"form {form}: {exc}", 2) from exc
    aliases = {header_to_field(name): name for name in mapping.system_fields()}
    extra = sorted({*aliases, *UTM_PARAMS, *CLICK_ID_PARAMS, "page_url", "referrer"})
    store = open_store(loaded)
    skipped: list[dict[str, Any]] = []
    keys: list[str] = []
    identities: list[DedupeRecord] = []
    read = stored = duplicates = 0
    try:
        from leadrelay.model import new_lead_key

        try:
            with store.transaction() as conn:
                for row in read_lead_rows(
                    file, required=(), extra_columns=extra, encoding=encoding
                ):
                    if not isinstance(row, LeadRow):
                        skipped.append({"row": row.row_number, "reason": row.reason})
                        continue
                    read += 1
                    identities.append(DedupeRecord.from_mapping(row.row_number, row.values))
                    fields = _row_fields(row.values, aliases)
                    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
                    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]
                    put = store.put_inbox(
                        key=new_lead_key(),
                        form=form,
                        source=_worker.CSV_SOURCE,
                        payload={"fields": fields, "file": file.name, "row": row.row_number},
                        dedupe_key=f"csv:{form}:{digest}",
                        conn=conn,
                    )
                    if put.created:
                        stored += 1
                        keys.append(put.key)
                        store.mark_received(
                            put.key,
                            form_config.destination,
                            form=form,
                            source=_worker.CSV_SOURCE,
                            conn=conn,
                        )
                    else:
                        duplicates += 1
        except CsvError as exc:
            raise CliError(f"{file}: {exc}", 2) from exc
        show = _err.is_terminal and not as_json
        with _progress(show, stored) as advance:
            stats = _worker.drain_inbox(loaded, store, on_progress=advance)
    finally:
        store.close()
    delivered = sum(1 for key in keys if stats.outcomes.get(key) == "delivered")
    dead = sum(1 for key in keys if stats.outcomes.get(key) == "dead_lettered")
    pending = len(keys) - delivered - dead
    possible = _possible_duplicates(identities)
    result = {
        "file": str(file),
        "form": form,
        "read": read,
        "stored": stored,
        "duplicates": duplicates,
        "delivered": delivered,
        "dead_lettered": dead,
        "pending": pending,
        "skipped": skipped,
        "possible_duplicates": possible,
    }
    if as_json:
        print_json(result)
    else:
        _console.print(
            f"{file.name} → {form}: read {read}, stored {stored}, already imported {duplicates}, "
            f"delivered {delivered}, dead-lettered {dead}, pending {pending}, "
            f"skipped {len(skipped)}",
            highlight=False,
        )
        for item in skipped:
            _err.print(f"  row {item['row']} skipped: {item['reason']}", highlight=False)
        for cluster in possible:
            rows = ", ".join(str(row) for row in cluster["rows"])
            _console.print(
                f"  possible duplicates, not merged: rows {rows} ({cluster['reason']})",
                highlight=False,
            )
        if pending:
            _err.print("  " + "; ".join(stats.errors[:3]), highlight=False)
    problems = []
    if skipped:
        problems.append(f"{len(skipped)} row(s) skipped")
    if dead:
        problems.append(f"{dead} row(s) dead-lettered (see `leadrelay dlq list`)")
    if pending:
        problems.append(
            f"{pending} row(s) stored but not delivered yet (the next `leadrelay sync` or "
            "`serve` pass retries them)"
        )
    if problems:
        raise CliError("; ".join(problems), 1)


def _possible_duplicates(identities: Sequence[DedupeRecord]) -> list[dict[str, Any]]:
    """Rows of the list that ``leadrelay dedupe`` clusters by something other than the e-mail
    (the same phone and last name, a close name at one company domain). The capture path makes
    one lead of one e-mail address only; these are reported for a person to decide, never
    merged, as two people can share a phone or a name."""
    from leadrelay.sync.dedupe import RULE_EMAIL, find_clusters

    return [
        {"rows": cluster.rows, "reason": cluster.reason}
        for cluster in find_clusters(identities)
        if cluster.rule != RULE_EMAIL
    ]
