"""``leadrelay trace``: one lead's whole journey, and the retention of what it is made of.

The answer to "this person filled in the form, where is the lead?" is spread over the state
store; :func:`find_trace` puts it together, in time order:

* **receipts**: each capture inbox item (form, source, time, whether ``reconcile`` backfilled
  it, delivery status and error), its payload with secrets and consent text withheld;
* **attribution** of the first receipt (channel and the rule that chose it, UTMs, click ids);
* **identity and dedupe**: the e-mails claimed for the lead key, the receipts that joined an
  existing lead because its person was already known, the records linked in each system;
* **writes**: per destination (ledger) the record id, written / verified / failed times and
  the system's message;
* **field problems**, **dead letters** (with the system's own message), **tombstones**
  (deleted or merged records);
* **run events** naming the lead: conflicts, skips, qualification (score, tier, owner, routing
  reason, SLA due), escalations, deletes and merges, write-back events.

A lead is looked up by e-mail, by lead key (or capture inbox key), or by ``SYSTEM:ID``: a
connection and its record id, a form's dedupe key (``meta:LEADGEN_ID``,
``linkedin:urn:li:leadGenFormResponse:X``), a dead letter's record. Every text that leaves this
module went through :func:`~leadrelay.connectors.errors.redact` with the project's secrets.

Retention: :func:`prune` drops what is older than ``[state] retention_days`` (90 by default):
run events (a run with nothing left is deleted), settled dead letters (resolved, dropped) and
fixed field problems. Open dead letters and field problems stay until settled; tombstones and
the capture inbox stay (they are what keeps a deleted record deleted and a replayed webhook
from being a second lead). ``leadrelay trace --prune`` runs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Connection

from leadrelay.clikit import ConfigOption, JsonOption, make_console, print_table
from leadrelay.config import Config
from leadrelay.connectors.errors import redact
from leadrelay.journal import redact_payload
from leadrelay.sync.state import (
    StateStore,
    dead_letters_table,
    field_problems_table,
    identities_table,
    inbox_table,
    journal_table,
    ledger_table,
    links_table,
    runs_table,
    tombstones_table,
)

__all__ = [
    "PruneResult",
    "Trace",
    "TraceEvent",
    "find_trace",
    "prune",
    "redact_payload",
    "trace_command",
]

_console = make_console()
_err = make_console(stderr=True)

#: Run-log events the journal records better (with details): shown from the journal when it
#: has the lead's rows of that kind.
_JOURNALED = {
    "qualified": "qualified",
    "escalated": "escalated",
    "escalation_failed": "escalation failed",
}


@dataclass(frozen=True)
class TraceEvent:
    """One step of a lead's journey."""

    at: datetime | None
    kind: str
    where: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``trace --json``."""
        return {
            "at": self.at.isoformat() if self.at else None,
            "kind": self.kind,
            "where": self.where,
            "summary": self.summary,
            "details": self.details,
        }


@dataclass
class Trace:
    """A lead's journey: its keys, what was searched, and its events oldest first."""

    query: str
    lead_keys: list[str]
    looked_in: list[str]
    events: list[TraceEvent] = field(default_factory=list)
    attribution: dict[str, Any] | None = None
    emails: list[str] = field(default_factory=list)
    records: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """Whether any part of the store knows the lead."""
        return bool(self.lead_keys)

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``trace --json``."""
        return {
            "query": self.query,
            "found": self.found,
            "lead_keys": self.lead_keys,
            "looked_in": self.looked_in,
            "emails": self.emails,
            "records": self.records,
            "attribution": self.attribution,
            "events": [event.to_json() for event in self.events],
        }


# -- finding the lead -----------------------------------------------------------------------


def _scalars(conn: Connection, query: sa.Select[Any]) -> set[str]:
    return {str(value) for value in conn.scalars(query).all() if value is not None}


def _initial_keys(conn: Connection, query: str) -> tuple[set[str], list[str]]:
    """The lead keys the query names directly, and the places looked in."""
    text = query.strip()
    if "@" in text and ":" not in text.split("@", 1)[0]:
        from leadrelay.sync.dedupe import identity_email

        try:
            email = identity_email(text)
        except ValueError:
            email = text.lower()
        owners = _scalars(
            conn,
            sa.select(identities_table.c.lead_key).where(
                identities_table.c.email.in_({email, text.lower()})
            ),
        )
        # A lead refused before its e-mail was claimed (a bad value, a CRM refusal) is known
        # only by what was submitted: the capture payloads and dead letters holding the e-mail.
        wanted = {email, text.lower()}
        for table, column in (
            (inbox_table, inbox_table.c.key),
            (dead_letters_table, dead_letters_table.c.lead_key),
        ):
            lowered = sa.func.lower(sa.cast(table.c.payload, sa.Text))
            for key, payload in conn.execute(
                sa.select(column, table.c.payload).where(
                    sa.or_(*(lowered.contains(value, autoescape=True) for value in wanted))
                )
            ):
                if key is not None and _holds(payload, wanted):
                    owners.add(str(key))
        return owners, ["identities (e-mail)", "capture inbox payloads", "dead letter payloads"]
    keys: set[str] = set()
    looked: list[str] = []
    if ":" in text:
        system, _, record = text.partition(":")
        # (lead key, system, record id) columns of each table that names a system's record
        for lead_key, system_column, record_column in (
            (links_table.c.lead_key, links_table.c.connection, links_table.c.external_id),
            (ledger_table.c.lead_key, ledger_table.c.destination, ledger_table.c.external_id),
            (
                tombstones_table.c.lead_key,
                tombstones_table.c.connection,
                tombstones_table.c.external_id,
            ),
            (
                dead_letters_table.c.lead_key,
                dead_letters_table.c.connection,
                dead_letters_table.c.record_ref,
            ),
            (journal_table.c.lead_key, journal_table.c.system, journal_table.c.record_id),
        ):
            keys |= _scalars(
                conn, sa.select(lead_key).where(system_column == system, record_column == record)
            )
        looked += [
            f"links ({system} record {record})",
            "ledger",
            "tombstones",
            "dead letters",
            "journal",
        ]
    keys |= _scalars(conn, sa.select(inbox_table.c.key).where(inbox_table.c.dedupe_key == text))
    looked.append("capture inbox (dedupe key)")
    if ":" not in text:
        for column in (
            inbox_table.c.key,
            ledger_table.c.lead_key,
            links_table.c.lead_key,
            identities_table.c.lead_key,
            dead_letters_table.c.lead_key,
            journal_table.c.lead_key,
        ):
            keys |= _scalars(conn, sa.select(column).where(column == text).limit(1))
        looked += ["capture inbox, ledger, links, identities, dead letters and journal (lead key)"]
    return keys, looked


def _holds(value: Any, emails: set[str]) -> bool:
    """Whether a payload holds one of ``emails`` as a whole value (any case)."""
    if isinstance(value, Mapping):
        return any(_holds(item, emails) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds(item, emails) for item in value)
    return isinstance(value, str) and value.strip().lower() in emails


def _related_keys(conn: Connection, keys: set[str]) -> set[str]:
    """``keys`` plus the receipts written to the same records (a second submission of a known
    person keeps its own inbox key but joins the lead's record) and the lead that owns them."""
    if not keys:
        return keys
    pairs: set[tuple[str, str]] = set()
    for row in conn.execute(
        sa.select(links_table.c.connection, links_table.c.external_id).where(
            links_table.c.lead_key.in_(keys)
        )
    ):
        pairs.add((row.connection, row.external_id))
    for row in conn.execute(
        sa.select(ledger_table.c.destination, ledger_table.c.external_id).where(
            ledger_table.c.lead_key.in_(keys), ledger_table.c.external_id.is_not(None)
        )
    ):
        pairs.add((row.destination, row.external_id))
    found = set(keys)
    for connection, external_id in pairs:
        found |= _scalars(
            conn,
            sa.select(ledger_table.c.lead_key).where(
                ledger_table.c.destination == connection,
                ledger_table.c.external_id == external_id,
            ),
        )
        found |= _scalars(
            conn,
            sa.select(links_table.c.lead_key).where(
                links_table.c.connection == connection,
                links_table.c.external_id == external_id,
            ),
        )
    return found


def _parse_at(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


class _Collector:
    """Gathers the events of a set of lead keys from every table."""

    def __init__(self, conn: Connection, keys: set[str], secrets: list[str]) -> None:
        self.conn = conn
        self.keys = keys
        self.secrets = secrets
        self.events: list[TraceEvent] = []
        #: (kind, system or inbox key) the journal holds for these leads
        self.journaled: set[tuple[str, str]] = set()

    def clean(self, value: Any) -> Any:
        return redact_payload(value, self.secrets)

    def add(self, at: datetime | None, kind: str, where: str, summary: str, **details: Any) -> None:
        self.events.append(
            TraceEvent(
                at,
                kind,
                where,
                redact(summary, self.secrets),
                {k: self.clean(v) for k, v in details.items() if v is not None},
            )
        )

    def receipts(self, owner: str | None) -> list[Any]:
        rows = list(
            self.conn.execute(
                sa.select(inbox_table)
                .where(inbox_table.c.key.in_(self.keys))
                .order_by(inbox_table.c.received_at, inbox_table.c.id)
            )
        )
        for row in rows:
            via = row.payload.get("via") if isinstance(row.payload, dict) else None
            how = "backfilled by reconcile" if via == "reconcile" else "received"
            self.add(
                row.received_at,
                "received",
                row.form,
                f"{how} from {row.source}" + (", a test lead" if row.is_test else ""),
                inbox_key=row.key,
                source=row.source,
                dedupe_key=row.dedupe_key,
                payload=row.payload,
            )
            if (
                owner is not None
                and row.key != owner
                and ("deduplicated", row.key) not in self.journaled
            ):
                self.add(
                    row.received_at,
                    "deduplicated",
                    row.form,
                    f"receipt {row.key} joined lead {owner} (same person, same record)",
                    inbox_key=row.key,
                    lead_key=owner,
                )
            if row.delivered_at is not None:
                self.add(row.delivered_at, "delivered", row.form, "delivered to its destination")
            elif row.status != "delivered":
                self.add(
                    None,
                    f"inbox {row.status}",
                    row.form,
                    f"{row.status} after {row.attempts} attempt(s)"
                    + (f": {row.last_error}" if row.last_error else ""),
                    inbox_key=row.key,
                )
        return rows

    def identities(self) -> list[str]:
        emails: list[str] = []
        for row in self.conn.execute(
            sa.select(identities_table)
            .where(identities_table.c.lead_key.in_(self.keys))
            .order_by(identities_table.c.created_at)
        ):
            emails.append(row.email)
            self.add(
                row.created_at,
                "identity",
                "leadrelay",
                f"e-mail {row.email} claimed for lead {row.lead_key}",
                lead_key=row.lead_key,
            )
        return emails

    def links(self) -> dict[str, str]:
        records: dict[str, str] = {}
        for row in self.conn.execute(
            sa.select(links_table).where(links_table.c.lead_key.in_(self.keys))
        ):
            records[row.connection] = row.external_id
            self.add(
                row.linked_at,
                "linked",
                row.connection,
                f"lead {row.lead_key} is record {row.external_id}",
            )
        return records

    def journal(self, store: StateStore) -> None:
        """The journal's events: every write with its diff and call, qualification, SLA
        clocks, normalization repairs, dedupe decisions."""
        for row in store.journal_for(self.keys, conn=self.conn):
            self.journaled.add((row.kind, "*"))
            self.journaled.add((row.kind, row.system))
            if row.kind == "deduplicated" and row.record_id:
                self.journaled.add((row.kind, row.record_id))
            details = dict(row.details or {})
            if row.record_id:
                details.setdefault("record", row.record_id)
            self.add(row.at, row.kind, row.system, row.summary, **details)

    def ledger(self) -> None:
        for row in self.conn.execute(
            sa.select(ledger_table).where(ledger_table.c.lead_key.in_(self.keys))
        ):
            record = f"record {row.external_id}" if row.external_id else "no record yet"
            if row.written_at is not None and ("written", row.destination) not in self.journaled:
                self.add(row.written_at, "written", row.destination, f"written: {record}")
            if row.verified_at is not None:
                self.add(row.verified_at, "verified", row.destination, f"verified: {record}")
            if row.failed_at is not None:
                self.add(
                    row.failed_at,
                    "write failed",
                    row.destination,
                    f"not written: {row.last_error or 'no reason recorded'}",
                )
            if row.written_at is None and row.failed_at is None:
                self.add(
                    row.received_at,
                    "awaiting write",
                    row.destination,
                    f"received for {row.destination}, not written yet ({row.state})",
                )

    def field_problems(self) -> None:
        for row in self.conn.execute(
            sa.select(field_problems_table).where(field_problems_table.c.lead_key.in_(self.keys))
        ):
            self.add(
                row.first_seen,
                "field problem",
                row.connection,
                f"{row.field} ({row.system_field or '-'}) {row.action}: {row.reason}"
                f" [{row.status}, seen {row.count}x]",
                value=row.value,
                stage=row.stage,
                flow=row.flow,
            )

    def dead_letters(self) -> None:
        for row in self.conn.execute(
            sa.select(dead_letters_table)
            .where(dead_letters_table.c.lead_key.in_(self.keys))
            .order_by(dead_letters_table.c.id)
        ):
            self.add(
                row.created_at,
                "dead letter",
                row.connection,
                f"#{row.id} {row.system} refused {row.record_ref}"
                + (f" (field {row.field})" if row.field else "")
                + f": {row.reason} [{row.status}, {row.attempts} attempt(s)]",
                flow=row.flow,
            )

    def tombstones(self, records: Mapping[str, str]) -> None:
        condition = sa.or_(
            tombstones_table.c.lead_key.in_(self.keys),
            *(
                sa.and_(
                    tombstones_table.c.connection == connection,
                    tombstones_table.c.external_id == external_id,
                )
                for connection, external_id in records.items()
            ),
        )
        for row in self.conn.execute(sa.select(tombstones_table).where(condition)):
            if row.merged_into:
                summary = f"record {row.external_id} merged into {row.merged_into}"
            else:
                summary = f"record {row.external_id} deleted"
            self.add(row.deleted_at or row.recorded_at, "tombstone", row.connection, summary)

    def run_events(self) -> None:
        text = sa.cast(runs_table.c.log, sa.Text)
        condition = sa.or_(*(text.contains(key, autoescape=True) for key in sorted(self.keys)))
        for row in self.conn.execute(
            sa.select(runs_table.c.id, runs_table.c.log, runs_table.c.dry_run)
            .where(condition)
            .order_by(runs_table.c.id)
        ):
            for event in row.log or []:
                if not isinstance(event, dict) or event.get("lead") not in self.keys:
                    continue
                kind = str(event.get("event", "event"))
                if (_JOURNALED.get(kind), "*") in self.journaled:
                    continue
                details = {
                    k: v for k, v in event.items() if k not in {"event", "lead", "at", "flow"}
                }
                details["run"] = row.id
                if row.dry_run:
                    details["dry_run"] = True
                self.add(
                    _parse_at(event.get("at")),
                    kind,
                    str(event.get("flow") or f"run {row.id}"),
                    _describe_run_event(kind, event),
                    **details,
                )


def _describe_run_event(kind: str, event: Mapping[str, Any]) -> str:
    if kind == "qualified":
        text = f"scored {event.get('score')} ({event.get('tier')}, {event.get('authority')})"
        if "owner" in event or "queue" in event:
            text += f"; routed to {event.get('owner') or event.get('queue') or 'nobody'}"
            if event.get("routing"):
                text += f" because {event['routing']}"
        if event.get("sla_due_at"):
            text += f"; SLA due {event['sla_due_at']}"
        return text
    if kind == "conflict":
        return (
            f"conflict on {event.get('field')}: {event.get('rule')} kept the "
            f"{event.get('winner')} value"
        )
    if kind in {"escalated", "escalation_failed"}:
        return f"SLA {event.get('clock')} {kind.replace('_', ' ')} via {event.get('channel')}"
    if kind in {"deleted", "merged", "delete_propagated", "delete_failed"}:
        into = f" into {event['into']}" if event.get("into") else ""
        return f"{kind.replace('_', ' ')}: record {event.get('record')}{into}"
    reason = event.get("reason") or event.get("field") or ""
    return f"{kind.replace('_', ' ')}" + (f": {reason}" if reason else "")


def _attribution(config: Config, receipt: Any, secrets: list[str]) -> dict[str, Any] | None:
    """The attribution of the first receipt, as the delivery step derives it. For ad
    platforms (whose answers are fetched, not stored) it comes from the ids and the form's
    ``default_utm``."""
    from leadrelay.capture.worker import attribution_of

    form = config.forms.get(receipt.form)
    if form is None:
        return None
    payload = receipt.payload if isinstance(receipt.payload, dict) else {}
    raw = payload.get("fields")
    fields: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    for key in ("page_url", "referrer"):
        if payload.get(key) is not None:
            fields.setdefault(key, payload[key])
    attribution = attribution_of(fields, form).to_dict()
    attribution["rule"] = attribution_of(fields, form).channel_rule
    attribution["first_touch"] = {
        "form": receipt.form,
        "source": receipt.source,
        "at": receipt.received_at.isoformat(),
    }
    shown = redact_payload(attribution, secrets)
    return shown if isinstance(shown, dict) else None


def find_trace(
    config: Config, store: StateStore, query: str, *, secrets: Iterable[str] = ()
) -> Trace:
    """The journey of the lead ``query`` names (e-mail, lead key or ``SYSTEM:ID``)."""
    secret_list = [s for s in secrets if s]
    with store.transaction() as conn:
        keys, looked = _initial_keys(conn, query)
        keys = _related_keys(conn, keys)
        trace = Trace(query=query, lead_keys=sorted(keys), looked_in=looked)
        if not keys:
            return trace
        owner = conn.scalar(
            sa.select(identities_table.c.lead_key)
            .where(identities_table.c.lead_key.in_(keys))
            .order_by(identities_table.c.created_at)
            .limit(1)
        ) or conn.scalar(
            sa.select(links_table.c.lead_key).where(links_table.c.lead_key.in_(keys)).limit(1)
        )
        collect = _Collector(conn, keys, secret_list)
        collect.journal(store)
        receipts = collect.receipts(owner)
        trace.emails = collect.identities()
        trace.records = collect.links()
        collect.ledger()
        collect.field_problems()
        collect.dead_letters()
        collect.tombstones(trace.records)
        collect.run_events()
    if receipts:
        trace.attribution = _attribution(config, receipts[0], secret_list)
    # Oldest first; a step with no time (an item still pending) comes last.
    trace.events = sorted(
        collect.events,
        key=lambda event: (event.at is None, event.at.timestamp() if event.at else 0.0),
    )
    return trace


# -- retention ------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """What :func:`prune` removed."""

    cutoff: datetime
    events: int = 0
    runs: int = 0
    dead_letters: int = 0
    field_problems: int = 0
    journal: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``trace --prune --json``."""
        return {
            "cutoff": self.cutoff.isoformat(),
            "run_events": self.events,
            "runs": self.runs,
            "dead_letters": self.dead_letters,
            "field_problems": self.field_problems,
            "journal": self.journal,
        }


def prune(store: StateStore, *, retention_days: int, now: datetime | None = None) -> PruneResult:
    """Drop what is older than ``retention_days``: journal rows, run events (runs left without
    events that finished before the cutoff are deleted), resolved or dropped dead letters, and
    field problems no longer open. Running runs, open dead letters and open field problems
    stay."""
    cutoff = (now or store.now()) - timedelta(days=retention_days)
    result = PruneResult(cutoff)
    with store.transaction() as conn:
        rows = conn.execute(
            sa.select(runs_table.c.id, runs_table.c.log, runs_table.c.finished_at).where(
                runs_table.c.started_at < cutoff
            )
        ).all()
        for row in rows:
            log = list(row.log or [])
            kept = [
                event
                for event in log
                if not isinstance(event, dict) or (_parse_at(event.get("at")) or cutoff) >= cutoff
            ]
            result.events += len(log) - len(kept)
            if not kept and row.finished_at is not None and row.finished_at < cutoff:
                conn.execute(runs_table.delete().where(runs_table.c.id == row.id))
                result.runs += 1
            elif len(kept) != len(log):
                conn.execute(runs_table.update().where(runs_table.c.id == row.id).values(log=kept))
        result.dead_letters = conn.execute(
            dead_letters_table.delete().where(
                dead_letters_table.c.status.in_(("resolved", "dropped")),
                dead_letters_table.c.last_attempt_at < cutoff,
            )
        ).rowcount
        result.field_problems = conn.execute(
            field_problems_table.delete().where(
                field_problems_table.c.status != "open",
                field_problems_table.c.last_seen < cutoff,
            )
        ).rowcount
        result.journal = store.prune_journal(cutoff, conn=conn)
    return result


def payload_text(value: Any) -> str:
    """A payload as one line of JSON for the table view."""
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


# -- the command ----------------------------------------------------------------------------


def trace_command(
    query: Annotated[
        str | None,
        typer.Argument(
            help="An e-mail, a lead key, or SYSTEM:ID (a connection and its record id, or a "
            "form's dedupe key such as meta:LEADGEN_ID).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = Path("leadrelay.toml"),
    as_json: JsonOption = False,
    prune_old: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Drop run events, settled dead letters and fixed field problems older than "
            "\\[state] retention_days (default 90).",
        ),
    ] = False,
) -> None:
    """One lead's journey: receipts, attribution, identity, every write, problems, deletes.

    Exit 0 found (or pruned), 1 not found (saying where it looked), 2 config error.
    """
    from leadrelay.capture.logs import register_config_secrets
    from leadrelay.clikit import CliError, load_project_config, open_store, print_json

    if query is None and not prune_old:
        raise CliError("give an e-mail, a lead key or SYSTEM:ID to trace (or --prune)", 2)
    loaded = load_project_config(config)
    register_config_secrets(loaded)
    store = open_store(loaded)
    try:
        if prune_old:
            pruned = prune(store, retention_days=loaded.state.retention_days)
            if as_json and query is None:
                print_json(pruned.to_json())
            elif not as_json:
                _console.print(
                    f"pruned what was older than {pruned.cutoff.isoformat()}: "
                    f"{pruned.journal} journal event(s), "
                    f"{pruned.events} run event(s), {pruned.runs} run(s), "
                    f"{pruned.dead_letters} settled dead letter(s), "
                    f"{pruned.field_problems} fixed field problem(s)",
                    highlight=False,
                )
            if query is None:
                return
        assert query is not None
        trace = find_trace(loaded, store, query)
    finally:
        store.close()
    if as_json:
        print_json(trace.to_json())
    else:
        _render(trace)
    if not trace.found:
        if not as_json:
            _err.print(
                Text(f"no lead matches {query!r}; looked in: {', '.join(trace.looked_in)}"),
                soft_wrap=True,
            )
        raise typer.Exit(1)


def _render(trace: Trace) -> None:
    # Every value may hold brackets (a payload, a system's message): printed as plain Text,
    # never read as Rich markup.
    if not trace.found:
        return
    lines = [f"lead {', '.join(trace.lead_keys)}"]
    if trace.emails:
        lines.append(f"e-mail: {', '.join(trace.emails)}")
    lines += [f"{name}: record {record}" for name, record in sorted(trace.records.items())]
    if trace.attribution:
        first = trace.attribution.get("first_touch", {})
        lines.append(
            f"attribution: channel {trace.attribution.get('channel')} "
            f"({trace.attribution.get('rule') or 'no rule'}); first touch {first.get('form')} "
            f"at {first.get('at')}"
        )
    for line in lines:
        _console.print(Text(line))
    table = Table(title="journey")
    for column in ("at", "step", "where", "what", "details"):
        table.add_column(column, overflow="fold")
    for event in trace.events:
        table.add_row(
            Text(event.at.isoformat(timespec="seconds") if event.at else "-"),
            Text(event.kind),
            Text(event.where),
            Text(event.summary),
            Text(details_text(event.details)),
        )
    print_table(_console, table)


def details_text(details: Mapping[str, Any]) -> str:
    """An event's details for the table: a write's changes one per line (``Field: old → new``),
    the rest as one line of JSON."""
    rest = {k: v for k, v in details.items() if k != "changes"}
    lines = [payload_text(rest)] if rest else []
    changes = details.get("changes")
    if isinstance(changes, Mapping):
        for name, change in changes.items():
            if isinstance(change, Mapping) and "old" in change:
                old = payload_text(change["old"])
                lines.append(f"{name}: {old} → {payload_text(change.get('new'))}")
            elif isinstance(change, Mapping):
                lines.append(f"{name}: → {payload_text(change.get('new'))}")
            else:
                lines.append(f"{name}: {payload_text(change)}")
    return "\n".join(lines)
