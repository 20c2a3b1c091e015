"""``leadrelay reconcile``: find the ad-platform leads whose notification never arrived.

Meta and LinkedIn announce a lead with a webhook, and some notifications are lost upstream;
the ledger can only count what was received. Reconcile reads each form's own list of leads from
the platform (Meta's bulk read ``/{form_id}/leads``, LinkedIn's ``leadFormResponses`` finder,
see :mod:`leadrelay.capture.sources`), compares their ids with the capture inbox by the dedupe
keys the capture app stores (``meta:{leadgen_id}``, ``linkedin:{response urn}``), and stores
each missing lead in the inbox exactly as the webhook would have (same form, source, payload
shape, dedupe key and ledger ``received`` row). The normal delivery step then sends it, once:
a second reconcile, or the late webhook itself, finds the dedupe key and stores nothing.

Web forms, CSV imports, Google Ads and HubSpot forms are not listed: they post to leadrelay
directly (or are read whole), so there is nothing to reconcile; the report says so.

Exit codes (DESIGN §11): 0 every platform read worked, 1 a platform read failed (the other
forms are still reconciled), 2 a configuration error (an unknown form, a form without the ids
its platform needs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.table import Table
from rich.text import Text

from leadrelay.capture.sources import (
    FetchError,
    linkedin_owner_urn,
    list_linkedin_responses,
    list_meta_leads,
)
from leadrelay.childproc import SPAWN, ServeChild, child_logging
from leadrelay.clikit import ConfigOption, JsonOption, make_console, print_table
from leadrelay.config import (
    Config,
    CronSchedule,
    FormConfig,
    LinkedInFormConfig,
    MetaFormConfig,
)
from leadrelay.model import new_lead_key
from leadrelay.sync.state import StateStore, inbox_table

__all__ = [
    "DayCount",
    "FormResult",
    "Listers",
    "ReconcileError",
    "ReconcileReport",
    "Upkeep",
    "UpkeepProcess",
    "parse_since",
    "reconcile",
    "reconcile_command",
    "reconcile_due",
]

_console = make_console()
log = logging.getLogger("leadrelay.upkeep")

#: The marker a backfilled lead's payload carries (shown by ``leadrelay trace``).
VIA_RECONCILE = "reconcile"

_RELATIVE = re.compile(r"^(?P<n>\d+)\s*(?P<unit>[dhw])$")
_IN_CHUNK = 500


class ReconcileError(Exception):
    """A configuration error: the run cannot start (exit 2)."""


@dataclass
class DayCount:
    """One form's leads of one day (the day the platform received each lead, UTC)."""

    day: date
    found: int = 0
    already: int = 0
    backfilled: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``reconcile --json``."""
        return {
            "day": self.day.isoformat(),
            "found": self.found,
            "already_here": self.already,
            "backfilled": self.backfilled,
        }


@dataclass
class FormResult:
    """What reconcile did for one form.

    ``status`` is ``ok``, ``failed`` (a platform read failed: ``message`` says why),
    ``config`` (the form lacks what its platform needs) or ``nothing_to_do`` (its source posts
    to leadrelay directly).
    """

    form: str
    source: str
    status: str = "ok"
    message: str | None = None
    days: dict[date, DayCount] = field(default_factory=dict)

    def day(self, day: date) -> DayCount:
        """The count of ``day`` (created on first use)."""
        return self.days.setdefault(day, DayCount(day))

    def total(self, name: str) -> int:
        """The sum of one count (``found``, ``already``, ``backfilled``) over the days."""
        return sum(int(getattr(count, name)) for count in self.days.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``reconcile --json``."""
        return {
            "form": self.form,
            "source": self.source,
            "status": self.status,
            "message": self.message,
            "found": self.total("found"),
            "already_here": self.total("already"),
            "backfilled": self.total("backfilled"),
            "days": [self.days[day].to_json() for day in sorted(self.days)],
        }


@dataclass
class ReconcileReport:
    """The outcome of a reconcile run."""

    since: datetime
    dry_run: bool
    forms: list[FormResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """2 when a form's configuration is wrong, 1 when a platform read failed, else 0."""
        if any(result.status == "config" for result in self.forms):
            return 2
        if any(result.status == "failed" for result in self.forms):
            return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``reconcile --json``."""
        return {
            "since": self.since.isoformat(),
            "dry_run": self.dry_run,
            "forms": [result.to_json() for result in self.forms],
        }


@dataclass(frozen=True)
class _Found:
    """A lead as the platform lists it: its dedupe key, the day it arrived, and the payload
    its notification would have carried."""

    dedupe_key: str
    day: date
    payload: dict[str, Any]


@dataclass(frozen=True)
class Listers:
    """The functions that read a form's list of leads; tests may swap them."""

    meta: Callable[[MetaFormConfig, str, datetime], Iterable[dict[str, Any]]] = field(
        default=lambda form, form_id, since: list_meta_leads(form, form_id, since=since)
    )
    linkedin: Callable[[LinkedInFormConfig, str, datetime], Iterable[dict[str, Any]]] = field(
        default=lambda form, form_id, since: list_linkedin_responses(form, form_id, since=since)
    )


def parse_since(text: str, *, now: datetime) -> datetime:
    """``--since``: a date (``2026-12-01``, midnight UTC), an ISO date-time (UTC when it has no
    offset) or a span back from now (``7d``, ``12h``, ``2w``). ValueError says what is accepted."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative is not None:
        amount = int(relative["n"])
        unit = {"d": "days", "h": "hours", "w": "weeks"}[relative["unit"]]
        return now - timedelta(**{unit: amount})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: use a date (2026-12-01), an ISO date-time or a span "
            "like 7d, 12h, 2w"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > now:
        raise ValueError(f"--since {text!r} is in the future")
    return parsed.astimezone(UTC)


def _meta_day(created: object, fallback: date) -> tuple[date, str | None]:
    """The UTC day of a Graph ``created_time`` (``2026-12-07T02:00:00+0000``) and its unix
    seconds as the webhook sends them."""
    if isinstance(created, str):
        try:
            moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return fallback, None
        return moment.astimezone(UTC).date(), str(int(moment.timestamp()))
    return fallback, None


def _bare_id(value: str, marker: str) -> str:
    return value.rsplit(":", 1)[-1] if value.startswith(marker) else value


def _meta_found(form: MetaFormConfig, form_id: str, lead: dict[str, Any], today: date) -> _Found:
    leadgen_id = str(lead.get("id", ""))
    day, created = _meta_day(lead.get("created_time"), today)
    # The shape of the payload the capture app stores for a leadgen change (app.py).
    payload: dict[str, Any] = {
        "ad_id": str(lead["ad_id"]) if lead.get("ad_id") else None,
        "adgroup_id": str(lead["adset_id"]) if lead.get("adset_id") else None,
        "created_time": created,
        "leadgen_id": leadgen_id,
        "page_id": form.page_id,
        "form_id": str(lead.get("form_id") or form_id),
        "entry_time": None,
        "via": VIA_RECONCILE,
    }
    return _Found(f"meta:{leadgen_id}", day, payload)


def _linkedin_found(
    form: LinkedInFormConfig, form_id: str, response: dict[str, Any], today: date
) -> _Found:
    response_id = str(response.get("id", ""))
    urn = (
        response_id
        if response_id.startswith("urn:li:leadGenFormResponse:")
        else f"urn:li:leadGenFormResponse:{response_id}"
    )
    submitted = response.get("submittedAt")
    day = today
    if isinstance(submitted, int) and not isinstance(submitted, bool):
        day = datetime.fromtimestamp(submitted / 1000, UTC).date()
    # The shape of the payload the capture app stores for a CREATED lead action (app.py).
    payload: dict[str, Any] = {
        "type": "LEAD_ACTION",
        "leadAction": "CREATED",
        "leadGenForm": str(
            response.get("versionedLeadGenFormUrn")
            or f"urn:li:versionedLeadGenForm:(urn:li:leadGenForm:{form_id},1)"
        ),
        "leadType": str(response.get("leadType") or "SPONSORED"),
    }
    if isinstance(submitted, int) and not isinstance(submitted, bool):
        payload["occurredAt"] = submitted
    owner = response.get("owner")
    payload["owner"] = (
        owner
        if isinstance(owner, dict)
        else {"sponsoredAccount": linkedin_owner_urn(form.ad_account or "")}
    )
    payload.update({"leadGenFormResponse": urn, "form_id": form_id, "via": VIA_RECONCILE})
    return _Found(f"linkedin:{urn}", day, payload)


def _listed(
    name: str,
    form: MetaFormConfig | LinkedInFormConfig,
    since: datetime,
    listers: Listers,
    today: date,
) -> Iterator[_Found]:
    for raw_id in form.form_ids:
        if isinstance(form, MetaFormConfig):
            form_id = raw_id.strip()
            for lead in listers.meta(form, form_id, since):
                if lead.get("id"):
                    yield _meta_found(form, form_id, lead, today)
        else:
            form_id = _bare_id(raw_id.strip(), "urn:li:leadGenForm:")
            for response in listers.linkedin(form, form_id, since):
                if response.get("id"):
                    yield _linkedin_found(form, form_id, response, today)


def _known_keys(store: StateStore, keys: Sequence[str]) -> set[str]:
    """The dedupe keys the inbox already holds."""
    known: set[str] = set()
    with store.transaction() as conn:
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            known.update(
                conn.scalars(
                    sa.select(inbox_table.c.dedupe_key).where(inbox_table.c.dedupe_key.in_(chunk))
                ).all()
            )
    return known


def _store(store: StateStore, name: str, form: FormConfig, missing: Sequence[_Found]) -> set[str]:
    """Store the missing leads as the capture app does (inbox + ledger ``received``); the
    dedupe keys this call stored (a webhook arriving meanwhile wins the others)."""
    stored: set[str] = set()
    received_at = store.now()
    with store.transaction() as conn:
        for found in missing:
            put = store.put_inbox(
                key=new_lead_key(),
                form=name,
                source=form.source,
                payload=found.payload,
                dedupe_key=found.dedupe_key,
                is_test=False,
                received_at=received_at,
                conn=conn,
            )
            if put.created:
                store.mark_received(
                    put.key,
                    form.destination,
                    form=name,
                    source=form.source,
                    is_test=False,
                    at=received_at,
                    conn=conn,
                )
                stored.add(found.dedupe_key)
    return stored


_NOTHING = {
    "webform": "web forms post to leadrelay directly: nothing to reconcile",
    "csv": "CSV files are imported whole: nothing to reconcile",
    "google_ads_lead_form": "Google Ads has no lead list read by leadrelay: nothing to reconcile",
    "hubspot_form": "HubSpot form submissions are read from HubSpot: nothing to reconcile",
}


def _chosen(config: Config, names: Sequence[str]) -> list[tuple[str, FormConfig]]:
    wanted = list(names) or list(config.reconcile.forms)
    unknown = [name for name in wanted if name not in config.forms]
    if unknown:
        defined = ", ".join(sorted(config.forms)) or "none"
        raise ReconcileError(
            f"unknown form(s) {', '.join(unknown)} (forms in the configuration: {defined})"
        )
    return [(name, config.forms[name]) for name in wanted or sorted(config.forms)]


def reconcile(
    config: Config,
    store: StateStore,
    *,
    forms: Sequence[str] = (),
    since: datetime | None = None,
    dry_run: bool = False,
    listers: Listers | None = None,
) -> ReconcileReport:
    """Reconcile ``forms`` (default: ``[reconcile] forms``, else every form: those that are not
    Meta or LinkedIn are reported as having nothing to reconcile) from ``since`` (default:
    ``[reconcile] lookback_days`` ago). Raises :class:`ReconcileError` for an unknown form."""
    chosen = _chosen(config, forms)
    now = store.now()
    start = since if since is not None else now - timedelta(days=config.reconcile.lookback_days)
    report = ReconcileReport(since=start, dry_run=dry_run)
    read = listers or Listers()
    for name, form in chosen:
        result = FormResult(name, str(form.source))
        report.forms.append(result)
        if not isinstance(form, MetaFormConfig | LinkedInFormConfig):
            result.status = "nothing_to_do"
            result.message = _NOTHING.get(str(form.source), "nothing to reconcile")
            continue
        if not form.form_ids:
            result.status = "config"
            result.message = (
                f"form {name}: form_ids is empty; list the platform's form ids to reconcile it"
            )
            continue
        if isinstance(form, LinkedInFormConfig) and not form.ad_account:
            result.status = "config"
            result.message = (
                f"form {name}: ad_account (the sponsored account owning the form) is needed to "
                "list its leads"
            )
            continue
        try:
            found = {lead.dedupe_key: lead for lead in _listed(name, form, start, read, now.date())}
        except FetchError as exc:
            result.status = "failed"
            result.message = str(exc)
            continue
        known = _known_keys(store, sorted(found))
        missing = [lead for key, lead in found.items() if key not in known]
        stored = set() if dry_run else _store(store, name, form, missing)
        for key, lead in found.items():
            count = result.day(lead.day)
            count.found += 1
            if key in known or (not dry_run and key not in stored):
                count.already += 1
            else:
                count.backfilled += 1
    return report


def reconcile_due(config: Config, moment: datetime) -> bool:
    """Whether ``[reconcile] schedule`` fires in the minute of ``moment`` (the hook
    ``leadrelay serve``'s scheduler calls each minute)."""
    expression = config.reconcile.schedule
    return expression is not None and CronSchedule.parse(expression).matches(moment)


# -- serve: reconcile on its schedule, prune once a day ---------------------------------------


class Upkeep:
    """What ``leadrelay serve`` runs beside delivery: reconcile in each minute ``[reconcile]
    schedule`` matches (host's local time, as flow schedules), and the retention prune of
    :mod:`leadrelay.trace` at start and then once a day.

    ``reconciler`` and ``pruner`` are the functions run (tests give recording ones).
    """

    def __init__(
        self,
        config: Config,
        store: StateStore,
        *,
        reconciler: Callable[[Config, StateStore], ReconcileReport] | None = None,
        pruner: Callable[[StateStore, int], object] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.reconciler = reconciler or (lambda config, store: reconcile(config, store))
        self.pruner = pruner or _prune
        self._reconciled: datetime | None = None
        self._pruned: datetime | None = None

    def tick(self, moment: datetime) -> list[str]:
        """Run what is due at ``moment``; the names of what ran (``reconcile``, ``prune``)."""
        minute = moment.replace(second=0, microsecond=0)
        ran: list[str] = []
        if reconcile_due(self.config, minute) and self._reconciled != minute:
            self._reconciled = minute
            ran.append("reconcile")
            try:
                report = self.reconciler(self.config, self.store)
            except Exception as exc:  # one failing run must not end the schedule
                log.error("reconcile failed: %s: %s", type(exc).__name__, exc)
            else:
                for result in report.forms:
                    level = logging.ERROR if result.status in {"failed", "config"} else logging.INFO
                    log.log(
                        level,
                        "reconcile %s: %s, found %d, already here %d, backfilled %d%s",
                        result.form,
                        result.status,
                        result.total("found"),
                        result.total("already"),
                        result.total("backfilled"),
                        f" ({result.message})" if result.message else "",
                    )
        if self._pruned is None or moment - self._pruned >= timedelta(days=1):
            self._pruned = moment
            ran.append("prune")
            try:
                self.pruner(self.store, self.config.state.retention_days)
            except Exception as exc:  # a failed prune is tried again the next day
                log.error("retention prune failed: %s: %s", type(exc).__name__, exc)
        return ran

    def run(self, stop: Any, *, clock: Callable[[], datetime] | None = None) -> None:
        """Tick each minute until ``stop`` (an Event) is set."""
        now = clock or (lambda: datetime.now().astimezone())
        while not stop.is_set():
            current = now()
            self.tick(current)
            following = current.replace(second=0, microsecond=0) + timedelta(minutes=1)
            if stop.wait(max((following - now()).total_seconds(), 0.0)):
                return


def _prune(store: StateStore, retention_days: int) -> object:
    from leadrelay.trace import prune

    result = prune(store, retention_days=retention_days)
    log.info(
        "retention (%d days): pruned %d journal event(s), %d run event(s), %d run(s), "
        "%d dead letter(s), %d field problem(s)",
        retention_days,
        result.journal,
        result.events,
        result.runs,
        result.dead_letters,
        result.field_problems,
    )
    return result


def _upkeep_process_main(config_path: str, stop: Any) -> None:
    """The body of :class:`UpkeepProcess`'s child."""
    from leadrelay.config import load_config

    child_logging(log, "upkeep")
    config = load_config(config_path)
    store = StateStore(config.state.url)
    try:
        Upkeep(config, store).run(stop)
    finally:
        store.close()


class UpkeepProcess(ServeChild):
    """:class:`Upkeep` in a child process of ``leadrelay serve``; :meth:`stop` waits for the
    reconcile in progress (60 s), then makes sure the child is gone."""

    def __init__(self, config_path: Path) -> None:
        stop = SPAWN.Event()
        super().__init__(
            "leadrelay-upkeep",
            _upkeep_process_main,
            (str(config_path), stop),
            stop,
            stop_timeout_s=60.0,
        )


# -- the command ----------------------------------------------------------------------------


def reconcile_command(
    forms: Annotated[
        list[str] | None,
        typer.Argument(
            help="Forms to reconcile (default: \\[reconcile] forms, else every form).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Read leads from this date, ISO date-time or span back (7d, 12h, 2w); "
            "default \\[reconcile] lookback_days (7).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what is missing; store nothing.")
    ] = False,
    config: ConfigOption = Path("leadrelay.toml"),
    as_json: JsonOption = False,
) -> None:
    """Backfill the Meta / LinkedIn leads whose webhook never arrived, from the platforms' lists.

    Exit 0 ok, 1 a platform read failed, 2 config error.
    """
    from leadrelay.capture.logs import register_config_secrets
    from leadrelay.clikit import CliError, load_project_config, open_store, print_json

    loaded = load_project_config(config)
    register_config_secrets(loaded)
    store = open_store(loaded)
    try:
        try:
            start = parse_since(since, now=store.now()) if since is not None else None
            report = reconcile(loaded, store, forms=forms or (), since=start, dry_run=dry_run)
        except (ReconcileError, ValueError) as exc:
            raise CliError(str(exc), 2) from exc
    finally:
        store.close()
    if as_json:
        print_json(report.to_json())
    else:
        _render(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _render(report: ReconcileReport) -> None:
    table = Table(
        title=f"reconcile since {report.since.isoformat(timespec='seconds')}"
        + (" (dry run: nothing stored)" if report.dry_run else "")
    )
    for column in ("form", "source", "day", "found", "already here", "backfilled"):
        table.add_column(column)
    notes: list[str] = []
    for result in report.forms:
        if result.message:
            notes.append(f"{result.form}: {result.message}")
        if not result.days:
            table.add_row(Text(result.form), result.source, "-", "0", "0", "0")
        for day in sorted(result.days):
            count = result.days[day]
            table.add_row(
                Text(result.form),
                result.source,
                day.isoformat(),
                str(count.found),
                str(count.already),
                str(count.backfilled),
            )
    print_table(_console, table)
    for note in notes:
        _console.print(Text(note), soft_wrap=True)
