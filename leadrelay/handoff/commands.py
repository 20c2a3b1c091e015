"""``leadrelay report``: funnel, outcomes, SLA, rejections, ledger, diagnosis (DESIGN §11, §12).

Registered by :mod:`leadrelay.cli`::

    app.command("report")(report_command)

The leads are read from each flow's destination CRM (every record, through its connector's
``read_changes(None)`` and mapping), test leads left out; the ledger comes from the state store.
Exit 0; 2 on a config error; 3 when a CRM refuses the credentials; 1 when a CRM cannot be read.

For other callers (the demo): :func:`gather_leads` reads the leads, :func:`build_project_report`
builds the :class:`~leadrelay.handoff.report.Report` from a config and a store.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from leadrelay.clikit import CliError, load_project_config, make_console, open_store, print_table

if TYPE_CHECKING:
    from leadrelay.config import Config
    from leadrelay.handoff.report import Period, Report
    from leadrelay.model import Lead
    from leadrelay.sync.engine import ConnectorPool
    from leadrelay.sync.state import StateStore

__all__ = [
    "TEST_EMAIL_PREFIX",
    "build_project_report",
    "gather_leads",
    "rejected_without_reason",
    "report_command",
]

#: Local part prefix of ``leadrelay validate``'s synthetic leads (``leadrelay-test+RUN@…``).
TEST_EMAIL_PREFIX = "leadrelay-test+"

_console = make_console()
_err = make_console(stderr=True)


def is_test_lead(lead: Lead) -> bool:
    """A test lead: flagged, or a validation run's synthetic e-mail (the flag is not stored in
    the CRM, the address is)."""
    return lead.is_test or (lead.email or "").startswith(TEST_EMAIL_PREFIX)


def _read_leads(
    config: Config,
    connectors: ConnectorPool,
    name: str,
    override: Path | None,
    on_page: Callable[[str, int], None] | None,
) -> Iterator[Lead]:
    """Every record of one connection as a Lead (from the start); unmappable and test leads
    left out."""
    from leadrelay.mappings.engine import build_lead, load_mapping
    from leadrelay.sync.engine import record_id

    connector = connectors.get(name)
    mapping = load_mapping(
        config.connection(name).kind, project_dir=config.folder, override=override
    )
    for page in connector.read_changes(None):
        for raw in page.records:
            rid = record_id(connector, raw)
            lead, _problems = build_lead(mapping.to_lead(raw, connection=name, external_id=rid))
            if lead is not None and not is_test_lead(lead):
                yield lead
        if on_page is not None:
            on_page(name, len(page.records))


def gather_leads(
    config: Config,
    connectors: ConnectorPool,
    *,
    on_page: Callable[[str, int], None] | None = None,
    store: StateStore | None = None,
) -> list[Lead]:
    """Every lead in the flows' destination CRMs, as Leads; test leads left out.

    Each destination connection is read once, from the start, with the mapping its first flow
    uses. A lead held by several CRMs (one HubSpot lead in Salesforce and Zoho) counts once, at
    the furthest funnel position any of them reached. A record that does not map is skipped
    (``leadrelay sync`` dead-letters those).

    Stages count as the leads hold them: each flow's source (the marketing system) is read too,
    and a lead it holds further on than its CRMs do counts there (a contact marked MQL in
    HubSpot counts as an MQL, though Salesforce's Lead Status has no MQL value). Only leads
    already in a CRM count; a source record is matched by its lead key, or through the store's
    links when ``store`` is given.
    """
    from leadrelay.handoff.report import funnel_position

    by_key: dict[str, Lead] = {}
    seen: set[str] = set()
    for flow in config.flows:
        name = flow.destination
        if name in seen:
            continue
        seen.add(name)
        for lead in _read_leads(config, connectors, name, flow.mappings.get(name), on_page):
            known = by_key.get(lead.key)
            if known is None or funnel_position(lead) > funnel_position(known):
                by_key[lead.key] = lead
    for flow in config.flows:
        name = flow.source
        if name in seen:
            continue
        seen.add(name)
        held = list(_read_leads(config, connectors, name, flow.mappings.get(name), on_page))
        ids = [lead.external_ids.get(name, "") for lead in held]
        linked = store.keys_for_many(name, [i for i in ids if i]) if store is not None else {}
        for lead, record in zip(held, ids, strict=True):
            key = lead.key if lead.key in by_key else linked.get(record, "")
            known = by_key.get(key)
            if known is not None and funnel_position(lead) > funnel_position(known):
                by_key[key] = known.model_copy(update={"stage": lead.stage})
    return list(by_key.values())


def rejected_without_reason(leads: list[Lead]) -> list[dict[str, Any]]:
    """Leads sales rejected (disqualified or lost) without a reason: a disqualified lead needs
    a rejection reason, a lost one a rejection or a loss reason (``outcome_reason``)."""
    from leadrelay.handoff.recycle import REJECTED_STAGES
    from leadrelay.model import Stage

    return [
        {"lead_key": lead.key, "email": lead.email, "stage": lead.stage.value}
        for lead in leads
        if lead.stage in REJECTED_STAGES
        and lead.rejection_reason is None
        and not (lead.stage is Stage.LOST and lead.outcome_reason is not None)
    ]


def build_project_report(
    config: Config,
    store: StateStore,
    connectors: ConnectorPool,
    *,
    now: datetime | None = None,
    on_page: Callable[[str, int], None] | None = None,
    period: Period | None = None,
) -> Report:
    """The report of a project: its CRMs' leads, its store's ledger, its ``[sla]`` and
    ``[report]``; with a ``period``, the leads that arrived and the ledger days inside it.

    ``report.rejections["without_reason"]`` lists the leads rejected without a reason.
    """
    from leadrelay.handoff.report import report_command_data

    leads = gather_leads(config, connectors, on_page=on_page, store=store)
    report = report_command_data(config, store, leads, now=now, period=period)
    inside = [lead for lead in leads if period is None or period.holds(lead.created_at)]
    report.rejections["without_reason"] = rejected_without_reason(inside)
    return report


def report_command(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The project file.", show_default=True)
    ] = Path("leadrelay.toml"),
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: funnel, outcomes, ledger, sla, rejections, diagnosis (and metadata).",
        ),
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Report the leads that arrived on or after this day (YYYY-MM-DD, UTC).",
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            "--until",
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Report the leads that arrived on or before this day (YYYY-MM-DD, UTC).",
        ),
    ] = None,
) -> None:
    """Report the handoff: funnel conversion, SLA, rejections by source, ledger, diagnosis.

    The funnel runs to won, each step against its goal; after SQL come the win rate, pipeline
    and won revenue per currency, win/loss reasons and the score calibration. Reads every lead
    of the flows' CRMs (test leads left out) and the state store's ledger; goals and score
    bands come from ``[report]``.
    Exit 0; 2 on a config error; 3 when a CRM refuses the credentials; 1 when one cannot be read.
    """
    from leadrelay.connectors.base import ConnectorNotFound
    from leadrelay.connectors.errors import AuthError, ConnectorError
    from leadrelay.handoff.report import Period, render_tables
    from leadrelay.handoff.report_html import render_html
    from leadrelay.mappings.engine import MappingError
    from leadrelay.sync.engine import ConnectorPool

    try:
        period = Period(since.date() if since else None, until.date() if until else None)
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    loaded = load_project_config(config)
    if not loaded.flows:
        raise CliError(f"{loaded.path}: no [[flows]] defined: no CRM to report on", 2)
    store = open_store(loaded)
    try:
        with ConnectorPool(loaded, store=store) as pool:
            if _err.is_terminal and not as_json:
                with Progress(
                    SpinnerColumn(),
                    TextColumn("reading {task.description}"),
                    TextColumn("{task.completed} records"),
                    TimeElapsedColumn(),
                    console=_err,
                    transient=True,
                ) as progress:
                    tasks: dict[str, Any] = {}

                    def advance(name: str, count: int) -> None:
                        if name not in tasks:
                            tasks[name] = progress.add_task(name, total=None)
                        progress.advance(tasks[name], count)

                    report = build_project_report(
                        loaded, store, pool, on_page=advance, period=period
                    )
            else:
                report = build_project_report(loaded, store, pool, period=period)
    except (MappingError, ConnectorNotFound) as exc:
        raise CliError(str(exc), 2) from exc
    except AuthError as exc:
        raise CliError(f"cannot read the CRM: {exc}", 3) from exc
    except ConnectorError as exc:
        raise CliError(f"cannot read the CRM: {exc}", 1) from exc
    finally:
        store.close()
    if html is not None:
        try:
            html.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {html}: {exc.strerror}", 2) from exc
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
        return
    from rich.table import Table

    for table in render_tables(report):
        if isinstance(table, Table):
            print_table(_console, table)
        else:
            _console.print(table)
    missing = report.rejections.get("without_reason") or []
    if missing:
        _console.print(
            f"[yellow]{len(missing)} lead(s) rejected without a reason:[/] "
            + ", ".join(str(item["email"] or item["lead_key"]) for item in missing[:10])
            + (" …" if len(missing) > 10 else ""),
            highlight=False,
        )
    if html is not None:
        _err.print(f"wrote {html}", highlight=False)
