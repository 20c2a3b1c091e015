"""The qualify step of the sync pipeline (DESIGN §2, §12): score, route, start the SLA clock.

For every lead on its way from marketing to sales (the forward pass of a flow),
:meth:`Qualifier.qualify`:

1. gathers its activity signals: the names on the Lead and its landing page
   (:func:`~leadrelay.handoff.signals.signals_from_lead`), the first touch's landing page, and,
   for a HubSpot source, the page and e-mail counters of the contact record
   (:data:`HUBSPOT_PAGE_FIELDS`, :data:`~leadrelay.handoff.signals.HUBSPOT_FIELD_SIGNALS`);
2. scores it (``[scoring]``) and applies the score: breakdown, reason, tier, MQL stage (never
   backward). With ``authority = "source"`` (``[scoring]`` or the flow's ``scoring_authority``)
   the source's own stage and score are the qualification and leadrelay's score is shown beside
   them as a second opinion (:meth:`~leadrelay.handoff.scoring.Scorer.second_opinion`);
3. routes it (``[routing]``) when it is new to the destination and the flow's
   ``include_stages`` (applied after scoring) lets it through. The owners are the
   destination's own users (HubSpot owners, Salesforce users, Zoho users), so the owner id
   written is one the destination knows; an owner read from a system of another kind is
   dropped first, never copied across. Round-robin positions and daily counts persist in the
   state store (:class:`StoreRoutingState`). The ``account_owner`` rule reads the
   destination's accounts (Salesforce Accounts, HubSpot companies, Zoho Accounts: website or
   domain → owner, :func:`crm_accounts`); users and accounts are read once and reused for
   :data:`DIRECTORY_TTL_S` by every qualify step on the same connector;
4. sets ``sla_due_at`` (``[sla]``) and records the lead's open clock, so that a later run can
   escalate a breach (:meth:`Qualifier.escalate_due`): by e-mail, Slack, and — with
   ``[sla.escalation] crm_task = true`` — a task on the lead's record in the destination
   (every built-in CRM connector has ``create_task``: a HubSpot task associated with the
   contact, a Salesforce Task whose WhoId is the Lead, a Zoho Task related to the Lead).

For every lead sales writes back (the backward pass), :meth:`Qualifier.recycle` turns a
rejection into its recycle play (``[recycle]``); a rejection without a reason is reported as a
``rejected_without_reason`` run event, never guessed.

State kept in the store's ``cursors`` table, used as a key-value store under reserved flow
names that no ``[[flows]]`` entry can take (they start with ``__``): :data:`ROUTING_SPACE`
(round-robin positions and daily counts per destination), :data:`CLOCK_SPACE` (open SLA clocks)
and :data:`ESCALATION_SPACE` (escalations sent).
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from leadrelay.config import Config, FlowConfig
from leadrelay.connectors.base import Capability, Connector, RawRecord
from leadrelay.connectors.errors import ConnectorError
from leadrelay.handoff.escalation import (
    EscalationError,
    EscalationOutcome,
    TaskCreator,
    build_escalator,
)
from leadrelay.handoff.recycle import RecyclePlay, RecycleProblem, apply_play, plan_recycle
from leadrelay.handoff.routing import (
    AccountOwnerRule,
    Assignment,
    DomainAccounts,
    OwnerInfo,
    Router,
    apply_assignment,
)
from leadrelay.handoff.scoring import (
    SOURCE_SCORE_FIELDS,
    Authority,
    Scorer,
    ScoreResult,
    apply_score,
    apply_source_verdict,
    set_checked,
    source_verdict,
)
from leadrelay.handoff.signals import (
    HUBSPOT_FIELD_SIGNALS,
    Signal,
    lead_time,
    signals_from_fields,
    signals_from_lead,
    signals_from_url,
)
from leadrelay.handoff.sla import (
    ClockKind,
    SlaCalendar,
    SlaConfig,
    apply_due,
    evaluate,
    load_sla_config,
)
from leadrelay.journal import Journal
from leadrelay.mappings.engine import Mapping as FieldMapping
from leadrelay.mappings.engine import build_lead
from leadrelay.model import STAGE_ORDER, Lead, Stage, Tier, domain_from_website
from leadrelay.sync.state import StateStore, cursors_table

__all__ = [
    "CLOCK_SPACE",
    "ESCALATION_SPACE",
    "HUBSPOT_PAGE_FIELDS",
    "QUALIFY_FIELDS",
    "ROUTING_SPACE",
    "ConnectorTasks",
    "PageOutcome",
    "Qualification",
    "Qualifier",
    "StoreRoutingState",
    "StoreSentLog",
    "crm_accounts",
    "crm_owners",
    "directory_read",
    "lead_signals",
    "task_creator",
]

#: Reserved cursor "flow" names (flow names cannot start with ``_``).
ROUTING_SPACE = "__routing__"
CLOCK_SPACE = "__sla_clocks__"
ESCALATION_SPACE = "__escalations__"

#: Lead fields the qualify step sets; they go to the destination when its mapping has them.
QUALIFY_FIELDS: tuple[str, ...] = (
    "score",
    "score_breakdown",
    "qualification_reason",
    "intent_signals",
    "tier",
    "sla_due_at",
)

#: HubSpot contact properties holding page URLs ("First page seen", "Last page seen").
HUBSPOT_PAGE_FIELDS: tuple[str, ...] = ("hs_analytics_first_url", "hs_analytics_last_url")

#: How long past its due time an unmet clock is still checked (then it is closed: the CRM may
#: never report the event, e.g. a first action with no mapped field).
CLOCK_TTL = timedelta(days=30)


# --------------------------------------------------------------------------------------------
# state in the store


class StoreRoutingState:
    """A :class:`~leadrelay.handoff.routing.RoutingState` kept in the state store.

    Values are read through on first use and buffered; :meth:`flush` writes what changed in
    one transaction (nothing when ``persist`` is false, as in a dry run). ``namespace`` keeps
    each destination's positions and counts apart (owner ids are per system).
    """

    def __init__(self, store: StateStore, namespace: str, *, persist: bool = True) -> None:
        self.store = store
        self.namespace = namespace
        self.persist = persist
        # None: read, and not in the store (asked once, not per lead)
        self._values: dict[str, int | None] = {}
        self._dirty: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.namespace}|{key}"

    def get(self, key: str) -> int | None:
        """The value stored under ``key``, or None."""
        if key not in self._values:
            text = self.store.get_cursor(ROUTING_SPACE, self._key(key))
            self._values[key] = None if text is None else int(text)
        return self._values[key]

    def set(self, key: str, value: int) -> None:
        """Store ``value`` under ``key`` (written by :meth:`flush`)."""
        self._values[key] = value
        self._dirty.add(key)

    def flush(self) -> None:
        """Write the changed values in one transaction."""
        if not self.persist or not self._dirty:
            self._dirty.clear()
            return
        self.store.set_cursors(
            ROUTING_SPACE, {self._key(key): str(self._values[key]) for key in sorted(self._dirty)}
        )
        self._dirty.clear()


class StoreSentLog:
    """An escalation :class:`~leadrelay.handoff.escalation.SentLog` kept in the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @staticmethod
    def _key(lead_key: str, kind: ClockKind, channel: str) -> str:
        return f"{lead_key}|{kind.value}|{channel}"

    def was_sent(self, lead_key: str, kind: ClockKind, channel: str) -> bool:
        """Whether this breach already went out through this channel."""
        return (
            self.store.get_cursor(ESCALATION_SPACE, self._key(lead_key, kind, channel)) is not None
        )

    def mark_sent(self, lead_key: str, kind: ClockKind, channel: str, at: datetime) -> None:
        """Record that it did."""
        self.store.set_cursor(ESCALATION_SPACE, self._key(lead_key, kind, channel), at.isoformat())


# --------------------------------------------------------------------------------------------
# what the CRM knows: owners and accounts


def _attr(item: Any, *names: str) -> Any:
    for name in names:
        value = item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)
        if value not in (None, ""):
            return value
    return None


def crm_owners(connector: Connector[Any]) -> list[OwnerInfo]:
    """The users of a CRM connection who can own leads, as routing's :class:`OwnerInfo`.

    HubSpot: ``owners()`` (owner ids, what ``hubspot_owner_id`` takes); Salesforce: active
    ``users()`` (User Ids, what ``OwnerId`` takes); Zoho: ``users()`` (a user whose status is
    not active is inactive). A connector with neither method has no owners (every lead then
    goes to the fallback queue).
    """
    listing = getattr(connector, "owners", None)
    if not callable(listing):
        listing = getattr(connector, "users", None)
    if not callable(listing):
        return []
    owners: list[OwnerInfo] = []
    for item in listing():
        owner_id = _attr(item, "id", "Id")
        if owner_id is None:
            continue
        status = _attr(item, "status")
        active_flag = _attr(item, "IsActive", "active")
        active = (status is None or str(status).lower() == "active") and active_flag is not False
        email = _attr(item, "email", "Email")
        name = _attr(item, "name", "Name", "full_name")
        owners.append(
            OwnerInfo(
                id=str(owner_id),
                email=str(email).lower() if email else None,
                name=str(name) if name else None,
                active=active,
            )
        )
    return owners


def crm_accounts(connector: Connector[Any]) -> DomainAccounts | None:
    """Existing accounts by website domain → owner id, for the ``account_owner`` rule.

    Read through the connector's ``account_owners()`` (Salesforce Accounts, HubSpot companies,
    Zoho Accounts: ``(website or domain, owner id)``, oldest first); None for a connector
    without one. An account whose website is not a domain is left out; when several accounts
    share a domain, the oldest keeps it (the first account of a customer is the one its owner
    was given).
    """
    listing = getattr(connector, "account_owners", None)
    if not callable(listing):
        return None
    owners: dict[str, str] = {}
    for website, owner in listing():
        domain = domain_from_website(str(website or ""))
        if domain is not None and owner:
            owners.setdefault(domain, str(owner))
    return DomainAccounts(owners)


#: How long a connection's users and accounts, once read, serve routing. ``leadrelay serve``
#: delivers every few seconds with a qualify step per pass: without this every pass would list
#: every account of the CRM again.
DIRECTORY_TTL_S = 300.0

_T = TypeVar("_T")
_directory: weakref.WeakKeyDictionary[Connector[Any], dict[str, tuple[float, Any]]] = (
    weakref.WeakKeyDictionary()
)


def directory_read(
    connector: Connector[Any], what: str, read: Callable[[Connector[Any]], _T]
) -> _T:
    """``read(connector)``, reused for :data:`DIRECTORY_TTL_S` seconds per connector object (a
    new connector, as each ``leadrelay sync`` run makes, reads afresh)."""
    now = time.monotonic()
    entries = _directory.setdefault(connector, {})
    cached = entries.get(what)
    if cached is not None and now - cached[0] < DIRECTORY_TTL_S:
        value: _T = cached[1]
        return value
    fresh = read(connector)
    entries[what] = (now, fresh)
    return fresh


# --------------------------------------------------------------------------------------------
# signals


def lead_signals(
    lead: Lead, raw: Mapping[str, Any] | None, system: str
) -> tuple[list[Signal], str | None]:
    """A lead's activity signals, and a problem reading them (or None).

    The Lead's own signals and landing page, its first touch's landing page, and for a
    HubSpot record its page URLs and e-mail / conversion counters. A counter that is not a
    number is reported and its counters are left out, never guessed.
    """
    at = lead_time(lead)
    signals = signals_from_lead(lead, at=at)
    urls: list[str] = []
    if lead.first_touch is not None and lead.first_touch.landing_page:
        urls.append(lead.first_touch.landing_page)
    problem: str | None = None
    if raw is not None and system == "hubspot":
        urls.extend(str(raw[name]) for name in HUBSPOT_PAGE_FIELDS if raw.get(name))
        try:
            signals.extend(signals_from_fields(raw, HUBSPOT_FIELD_SIGNALS, at, system=system))
        except ValueError as exc:
            problem = str(exc)
    seen = {lead.landing_page} if lead.landing_page else set()
    for url in urls:
        if url not in seen:
            seen.add(url)
            signals.extend(signals_from_url(url, at))
    return signals, problem


def extend_read_fields(connector: Connector[Any]) -> list[str]:
    """Make a HubSpot source read the signal properties its portal has; returns those added.

    The HubSpot connector reads the properties its mapping names; scoring also wants the page
    URLs and e-mail counters (:data:`HUBSPOT_PAGE_FIELDS`, ``HUBSPOT_FIELD_SIGNALS``) and, for
    ``authority = "source"``, HubSpot's own score (``hubspotscore``).
    Properties the portal lacks are not asked for.
    """
    current = getattr(connector, "read_properties", None)
    if connector.kind != "hubspot" or not isinstance(current, list):
        return []
    if not connector.supports(Capability.DESCRIBE):
        return []
    wanted = [*HUBSPOT_PAGE_FIELDS, SOURCE_SCORE_FIELDS["hubspot"]]
    for item in HUBSPOT_FIELD_SIGNALS:
        wanted.append(item.field)
        if item.at_field:
            wanted.append(item.at_field)
    try:
        schema = connector.describe()
    except ConnectorError:
        # The flow's own read reports a connection that does not answer.
        return []
    added = [name for name in wanted if schema.has(name) and name not in current]
    if added:
        connector.read_properties = [*current, *added]  # type: ignore[attr-defined]
    return added


# --------------------------------------------------------------------------------------------
# the qualifier


@dataclass(frozen=True)
class Qualification:
    """What the qualify step did to one lead."""

    lead_key: str
    score: ScoreResult
    assignment: Assignment | None
    signal_problem: str | None = None
    authority: Authority = "leadrelay"

    @property
    def routed(self) -> bool:
        """Whether the lead got an owner from the destination's users."""
        return self.assignment is not None and self.assignment.owner is not None

    @property
    def notable(self) -> bool:
        """Worth a run event: a signal could not be read. (Not every lead gets one: a run's
        log is rewritten per event; owners and queues show in the CRM and the report.)"""
        return self.signal_problem is not None

    def to_event(self, lead: Lead) -> dict[str, Any]:
        """The run-log event (``leadrelay runs show``)."""
        event: dict[str, Any] = {
            "event": "qualified",
            "lead": self.lead_key,
            "score": self.score.total,
            "authority": self.authority,
            "tier": self.score.tier.value,
            "stage": lead.stage.value,
            "reason": self.score.qualification_reason,
        }
        if self.assignment is not None:
            event["owner"] = lead.owner.id if lead.owner else None
            event["queue"] = lead.queue
            event["routing"] = self.assignment.reason
        if lead.sla_due_at is not None:
            event["sla_due_at"] = lead.sla_due_at.isoformat()
        if self.signal_problem is not None:
            event["signal_problem"] = self.signal_problem
        return event


@dataclass
class PageOutcome:
    """What the qualify step did to one page: run events, and per lead whether it was routed."""

    events: list[dict[str, Any]] = field(default_factory=list)
    routed: list[bool] = field(default_factory=list)


def recycle_event(lead: Lead, outcome: RecyclePlay | RecycleProblem) -> dict[str, Any]:
    """The run-log event of a recycle play, or of a rejection that could not be played."""
    if isinstance(outcome, RecyclePlay):
        return {
            "event": "recycle",
            "lead": lead.key,
            "play": outcome.kind.value,
            "rejection_reason": outcome.reason.value,
            "reason": outcome.description,
        }
    without = lead.rejection_reason is None
    return {
        "event": "rejected_without_reason" if without else "recycle_problem",
        "lead": lead.key,
        "reason": outcome.message,
    }


class ConnectorTasks:
    """The :class:`~leadrelay.handoff.escalation.TaskCreator` of a connector with a
    ``create_task`` method: a connector error becomes an :class:`EscalationError`, so a task
    that cannot be created is an ``escalation_failed`` event, never a failed sync."""

    def __init__(self, create: Callable[[str, str, str, datetime], Any], connection: str) -> None:
        self.create = create
        self.connection = connection

    def create_task(self, record_id: str, subject: str, body: str, due: datetime) -> str:
        """Create the task through the connector; return its id."""
        try:
            return str(self.create(record_id, subject, body, due))
        except ConnectorError as exc:
            raise EscalationError(
                f"{self.connection}: could not create a task on record {record_id}: {exc}"
            ) from exc


def task_creator(connector: Connector[Any]) -> TaskCreator | None:
    """A task creator for ``connector`` when it can create CRM tasks (``create_task``), else
    None."""
    create = getattr(connector, "create_task", None)
    return ConnectorTasks(create, connector.name) if callable(create) else None


def _clock_values(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the CRM does not hold of an open clock: arrival, assignment and tier."""
    assigned = entry.get("assigned_at")
    return {
        "created_at": datetime.fromisoformat(entry["created_at"]),
        "assigned_at": datetime.fromisoformat(assigned) if assigned else None,
        "tier": Tier(entry["tier"]) if entry.get("tier") else None,
    }


class Qualifier:
    """The qualify step for one destination (see the module docstring); a sync flow's
    :class:`~leadrelay.sync.stages.QualifyStep`.

    Args:
        config: the project (``[scoring]``, ``[routing]``, ``[sla]``, ``[recycle]``).
        store: the state store (routing state, open clocks, escalations sent).
        destination: the CRM connection leads are routed in; its users are the owners.
        source: the marketing connection leads come from (signals of its records).
        flow: the flow (``include_stages``); None outside a flow.
        destination_mapping: the destination's mapping (to read leads back for escalation).
        dry_run: nothing is written to the store.
        sla: the SLA settings (default: ``[sla]`` of ``config``).
        owners: the owners to route to (default: read from ``destination`` on first use,
            reused for :data:`DIRECTORY_TTL_S`).
        accounts: the account index (default: :func:`crm_accounts` when a rule needs it,
            reused likewise).
    """

    #: The canonical fields this step sets (:class:`~leadrelay.sync.stages.QualifyStep`).
    fields: tuple[str, ...] = QUALIFY_FIELDS

    def __init__(
        self,
        config: Config,
        store: StateStore,
        destination: Connector[Any],
        *,
        source: Connector[Any] | None = None,
        flow: FlowConfig | None = None,
        destination_mapping: FieldMapping | None = None,
        dry_run: bool = False,
        sla: SlaConfig | None = None,
        owners: Sequence[OwnerInfo] | None = None,
        accounts: DomainAccounts | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.destination = destination
        self.source = source
        self.flow = flow
        self.destination_mapping = destination_mapping
        self.dry_run = dry_run
        self.sla = sla or load_sla_config(config)
        self._calendar = SlaCalendar(self.sla)
        self.scorer = Scorer(config.scoring)
        self.authority: Authority = (
            flow.scoring_authority
            if flow is not None and flow.scoring_authority is not None
            else config.scoring.authority
        )
        self.state = StoreRoutingState(store, destination.name, persist=not dry_run)
        self._owners = list(owners) if owners is not None else None
        self._accounts = accounts
        self._router: Router | None = None
        self._clocks: dict[str, str] = {}
        self.journal = Journal(store)
        self._journal: list[dict[str, Any]] = []
        if source is not None:
            extend_read_fields(source)

    @property
    def router(self) -> Router:
        """The router over the destination's owners (read from the CRM on first use)."""
        if self._router is None:
            owners = self._owners
            if owners is None:
                owners = directory_read(self.destination, "owners", crm_owners)
            accounts = self._accounts
            wants_accounts = any(isinstance(r, AccountOwnerRule) for r in self.config.routing.rules)
            if accounts is None and wants_accounts:
                accounts = directory_read(self.destination, "accounts", crm_accounts)
            self._router = Router(self.config.routing, owners, accounts, self.state)
        return self._router

    def qualify(
        self,
        lead: Lead,
        *,
        raw: Mapping[str, Any] | None = None,
        route: bool = True,
        now: datetime | None = None,
    ) -> Qualification:
        """Score, route (when ``route`` and the flow's stages let it through) and set the SLA
        due time of one lead, in place. Call :meth:`flush` after a batch."""
        moment = now or self.store.now()
        system = self.source.kind if self.source is not None else ""
        signals, problem = lead_signals(lead, raw, system)
        result = self.scorer.score(lead, signals, moment)
        if self.authority == "source" and self.source is not None:
            verdict = source_verdict(lead, raw or {}, system)
            result = self.scorer.second_opinion(result, verdict, moment, signals)
            apply_source_verdict(lead, result, verdict)
        else:
            apply_score(lead, result)
        include = self.flow.include_stages if self.flow is not None else None
        assignment: Assignment | None = None
        if route and (include is None or lead.stage in include):
            if self.source is not None and self.source.kind != self.destination.kind:
                # An owner id of another system means nothing to the destination.
                set_checked(lead, {"owner": None})
            assignment = self.router.route(lead, moment)
            apply_assignment(lead, assignment, moment)
        apply_due(lead, self.sla, calendar=self._calendar)
        if lead.sla_due_at is not None and not lead.is_test:
            self._clocks[lead.key] = json.dumps(
                {
                    "created_at": lead.created_at.isoformat(),
                    # a queue is no owner: the unassigned clock runs on
                    "assigned_at": (
                        lead.assigned_at.isoformat() if lead.assigned_at and lead.owner else None
                    ),
                    "due_at": lead.sla_due_at.isoformat(),
                    "tier": lead.tier.value if lead.tier else None,
                    "stage": lead.stage.value,
                }
            )
        done = Qualification(lead.key, result, assignment, problem, self.authority)
        self._journal.append(self.journal.qualified(lead, done, self.destination.name, at=moment))
        return done

    def qualify_page(
        self, leads: Sequence[tuple[Lead, RawRecord | None, bool]], now: datetime | None = None
    ) -> PageOutcome:
        """Qualify ``(lead, raw record, new to the destination)`` entries; only new ones are
        routed (an existing record's owner is sales')."""
        moment = now or self.store.now()
        outcome = PageOutcome()
        for lead, raw, new in leads:
            done = self.qualify(lead, raw=raw, route=new, now=moment)
            if done.notable:
                outcome.events.append(done.to_event(lead))
            outcome.routed.append(done.routed)
        self.flush()
        return outcome

    def recycle(
        self, lead: Lead, now: datetime | None = None
    ) -> RecyclePlay | RecycleProblem | None:
        """Plan and apply the recycle play of a lead sales rejected (in place); None when the
        lead is not rejected. A problem (no reason, no account owner) is returned, not raised."""
        moment = now or self.store.now()
        outcome = plan_recycle(lead, moment, self.config.recycle, router=self.router)
        if isinstance(outcome, RecyclePlay):
            apply_play(lead, outcome, moment)
        return outcome

    def recycle_page(self, leads: Iterable[Lead], now: datetime | None = None) -> PageOutcome:
        """Recycle every rejected lead of a write-back page; events for plays and problems."""
        moment = now or self.store.now()
        outcome = PageOutcome()
        for lead in leads:
            done = self.recycle(lead, moment)
            if done is not None:
                outcome.events.append(recycle_event(lead, done))
            outcome.routed.append(False)
        return outcome

    def flush(self) -> None:
        """Persist routing positions, daily counts and the open SLA clocks (not in a dry run)."""
        self.state.flush()
        if not self.dry_run:
            self.journal.record(self._journal)
        self._journal.clear()
        if self.dry_run or not self._clocks:
            self._clocks.clear()
            return
        space = f"{self.destination.name}"
        self.store.set_cursors(
            CLOCK_SPACE, {f"{space}|{key}": value for key, value in self._clocks.items()}
        )
        self._clocks.clear()

    # -- escalation ------------------------------------------------------------------------------

    def _due_clocks(self, moment: datetime) -> dict[str, dict[str, Any]]:
        """The open clocks of this destination due by ``moment``. Every lead sent has one
        open until it is met, so they are streamed and only the due ones kept: a run's
        memory does not grow with the leads ever sent."""
        prefix = f"{self.destination.name}|"
        table = cursors_table
        due: dict[str, dict[str, Any]] = {}
        with self.store.reading() as conn:
            rows = conn.execution_options(stream_results=True, max_row_buffer=1000).execute(
                sa.select(table.c.connection, table.c.value).where(
                    table.c.flow == CLOCK_SPACE, table.c.connection.startswith(prefix)
                )
            )
            for row in rows:
                entry = json.loads(row.value)
                if datetime.fromisoformat(entry["due_at"]) <= moment:
                    due[str(row.connection)[len(prefix) :]] = entry
        return due

    def _close_clocks(self, keys: Iterable[str]) -> None:
        names = [f"{self.destination.name}|{key}" for key in keys]
        if not names:
            return
        with self.store.transaction() as conn:
            conn.execute(
                cursors_table.delete().where(
                    cursors_table.c.flow == CLOCK_SPACE, cursors_table.c.connection.in_(names)
                )
            )

    def escalation_events(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """:meth:`escalate_due`, as the run-log events of what went out and what failed."""
        outcome = self.escalate_due(now)
        if outcome is None:
            return []
        return [
            {"event": "escalated", "lead": d.lead_key, "clock": d.kind.value, "channel": d.channel}
            for d in outcome.sent
        ] + [
            {
                "event": "escalation_failed",
                "lead": d.lead_key,
                "clock": d.kind.value,
                "channel": d.channel,
                "reason": d.error,
            }
            for d in outcome.failed
        ]

    def escalate_due(self, now: datetime | None = None) -> EscalationOutcome | None:
        """Escalate the open SLA clocks of this destination that are past due.

        Only when ``[sla.escalation]`` names e-mail or Slack, or ``crm_task`` is on and the
        destination's connector creates tasks (:func:`task_creator`), the task going
        on the lead's record there; otherwise None and nothing is read. Each due lead is
        read back from the CRM by id (batched): its owner, stage and
        rejection decide whether its clocks were met (arrival, assignment and tier come from
        the qualify step). A lead whose clocks are all met, whose record is gone, or that is
        :data:`CLOCK_TTL` past due is closed. Each breach goes out once per channel
        (:class:`StoreSentLog`).
        """
        settings = self.sla.escalation
        tasks = task_creator(self.destination) if settings.crm_task else None
        if self.dry_run or (settings.email is None and settings.slack is None and tasks is None):
            return None
        if self.destination_mapping is None:
            raise ValueError("escalation needs the destination's mapping to read leads back")
        moment = now or self.store.now()
        clocks = self._due_clocks(moment)
        if not clocks:
            return EscalationOutcome()
        ids = self.store.external_ids_for_many(self.destination.name, list(clocks))
        by_id = {record_id: key for key, record_id in ids.items()}
        records: dict[str, RawRecord] = {}
        id_list = list(by_id)
        for start in range(0, len(id_list), self.destination.batch_size):
            records.update(
                self.destination.lookup(ids=id_list[start : start + self.destination.batch_size])
            )
        leads: dict[str, Lead] = {}
        closed: list[str] = [key for key in clocks if key in ids and ids[key] not in records]
        for record_id, key in by_id.items():
            raw = records.get(record_id)
            if raw is None:
                continue
            draft = self.destination_mapping.to_lead(
                raw, connection=self.destination.name, external_id=record_id
            )
            lead, _problems = build_lead(draft, key=key, **_clock_values(clocks[key]))
            if lead is not None:
                stage = Stage(clocks[key]["stage"])
                if STAGE_ORDER[lead.stage] < STAGE_ORDER[stage]:
                    # the CRM's status may not tell MQL from lead (Salesforce): keep ours
                    lead.stage = stage
                leads[key] = lead
        statuses = evaluate(leads.values(), moment, self.sla)
        unmet = {status.lead_key for status in statuses if not status.met}
        stale = moment - CLOCK_TTL
        closed.extend(
            key
            for key in leads
            if key not in unmet or datetime.fromisoformat(clocks[key]["due_at"]) < stale
        )
        escalator = build_escalator(
            settings,
            task_creator=tasks,
            crm_connection=self.destination.name,
            sent_log=StoreSentLog(self.store),
        )
        outcome = escalator.escalate(statuses, leads, moment)
        self._close_clocks(closed)
        self.store.add_journal(
            self.journal.sla_checked(
                statuses, self.destination.name, set(closed), outcome, at=moment
            )
        )
        return outcome
