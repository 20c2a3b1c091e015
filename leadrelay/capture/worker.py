"""Delivery of captured leads: from the inbox into each form's destination CRM (DESIGN §2, §9).

The capture endpoints store what arrives before answering 2xx; this step delivers it. Per
claimed batch (``StateStore.claim_inbox``, so several workers never deliver one lead twice):

1. the submitted fields (:func:`~leadrelay.capture.sources.submission_fields`; Meta and
   LinkedIn answers are fetched from their APIs by id). A fetch the platform may answer later
   (timeout, 429, 5xx) leaves the item pending with its error; one it never will is a dead
   letter;
2. normalize with the form's mapping into a :class:`~leadrelay.model.Lead`; a bad value is a
   dead letter naming the field (system = the form's source), never dropped;
3. tag: the page URL and referrer (:func:`~leadrelay.sync.tagging.tag_url`), UTM and click-id
   form fields over them, the form's ``default_utm`` when the visit had no UTMs; plus form,
   ad, campaign and ad-account ids and ``is_test`` (the platform's test flag, or an e-mail
   under the form's ``test_email_domain``: a Meta / LinkedIn lead's e-mail is known only now,
   so its ledger row is marked a test when the batch is recorded);
4. identify by email: the lead key the state store knows for the person (any earlier lead,
   any form, any flow), else the first of the batch with that email, else the item's own key.
   A replayed notification never gets here (the inbox stores it once); the same person from two
   forms ends as one record;
5. qualify the leads new to the destination (not linked, not found by e-mail) as a sync flow
   does (:class:`~leadrelay.handoff.qualify.Qualifier`, one per destination per pass): score,
   route to one of the destination's users, SLA due time. A record the destination already
   holds keeps its owner and what else sales owns;
6. map to the destination (its connector mapping) and upsert in batches as large as the API
   takes. A record the system refuses is a dead letter with the system's own message; a failed
   call (5xx, 429, a transport error after the connector's retries, credentials) leaves the
   whole batch pending for the next pass: nothing is lost while the CRM is down.

``leadrelay serve`` runs :class:`DeliveryLoop` beside the capture app; ``leadrelay sync`` drains
the inbox first through the drainer registered here (a pseudo-flow named ``inbox`` in its
output, only when there was something to deliver).

What the sync engine could share: it has no entry point that writes already-normalized Leads
(its pipeline starts from a source connector's raw records), so steps 4-6 are kept small here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from leadrelay.capture.sources import FetchError, Fetchers, submission_fields
from leadrelay.childproc import SPAWN, ServeChild, child_logging, keep_startup_objects
from leadrelay.config import Config, FormConfig
from leadrelay.connectors.base import (
    Capability,
    Connector,
    WriteOutcome,
    WriteResult,
    normalize_email,
)
from leadrelay.connectors.errors import ConnectorError, redact
from leadrelay.handoff.qualify import Qualifier
from leadrelay.journal import Journal, Written
from leadrelay.mappings.engine import (
    LeadDraft,
    MappingError,
    Problem,
    build_lead,
    load_form_mapping,
    load_mapping,
)
from leadrelay.mappings.engine import Mapping as FieldMapping
from leadrelay.model import Lead, fast_lead
from leadrelay.sync.dedupe import identity_email
from leadrelay.sync.engine import (
    ConnectorPool,
    FlowStats,
    SyncContext,
    register_inbox_drainer,
)
from leadrelay.sync.lease import Lease
from leadrelay.sync.state import InboxItem, InboxStatus, StateStore, inbox_table, open_state
from leadrelay.sync.tagging import (
    CLICK_ID_PARAMS,
    UTM_PARAMS,
    Attribution,
    classify_channel,
    tag_url,
)
from leadrelay.sync.write import LeadWriter, Pending, left_out, without_left_out

__all__ = [
    "CSV_SOURCE",
    "INBOX_FLOW",
    "SALES_OWNED",
    "DeliveryLoop",
    "DeliveryProcess",
    "DeliveryStats",
    "deliver_inbox",
    "drain_inbox",
    "is_test_email",
]

log = logging.getLogger("leadrelay.capture.worker")

#: The pseudo-flow name the inbox drainer reports in ``leadrelay sync`` output.
INBOX_FLOW = "inbox"

#: The ``source`` of inbox rows stored by ``leadrelay import``.
CSV_SOURCE = "csv"

#: Canonical fields sales owns (DESIGN §7.3): a form submission of a person the CRM already
#: holds does not overwrite them.
SALES_OWNED: frozenset[str] = frozenset(
    {
        "stage",
        "owner",
        "queue",
        "rejection_reason",
        "assigned_at",
        "first_action_at",
        "accepted_at",
        "sla_due_at",
    }
)

#: Ids a form source may carry that are Lead fields of their own.
_ID_FIELDS = ("form_id", "ad_id", "campaign_id", "ad_account")


@dataclass
class DeliveryStats:
    """What one or more delivery passes did.

    ``outcomes`` maps each inbox key handled to ``delivered``, ``dead_lettered`` or
    ``pending`` (left for a later pass); ``errors`` holds the distinct reasons items were left
    pending (redacted).
    """

    claimed: int = 0
    delivered: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    pending: int = 0
    dead_lettered: int = 0
    field_problems: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)

    def add(self, other: DeliveryStats) -> None:
        """Add another pass's counts to these."""
        for name in ("claimed", "delivered", "created", "updated", "unchanged", "pending"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dead_lettered += other.dead_lettered
        self.field_problems += other.field_problems
        for connection, calls in other.api_calls.items():
            self.api_calls[connection] = self.api_calls.get(connection, 0) + calls
        for error in other.errors:
            if error not in self.errors:
                self.errors.append(error)
        self.outcomes.update(other.outcomes)

    def to_flow_stats(self) -> FlowStats:
        """The counts as a ``leadrelay sync`` flow entry named :data:`INBOX_FLOW`."""
        stats = FlowStats(
            INBOX_FLOW,
            read=self.claimed,
            created=self.created,
            updated=self.updated,
            unchanged=self.unchanged,
            dead_lettered=self.dead_lettered,
            field_problems=self.field_problems,
            api_calls=dict(self.api_calls),
        )
        if self.pending:
            stats.error = f"{self.pending} captured lead(s) left pending: " + "; ".join(
                self.errors[:3]
            )
        return stats


@dataclass
class _Work:
    """One claimed inbox item on its way to the destination."""

    item: InboxItem
    form: FormConfig | None
    lead: Lead | None = None
    identity: str | None = None
    submitted: dict[str, Any] = field(default_factory=dict)
    #: Bad optional values of the submission, left out of its Lead and recorded.
    left_out: list[Problem] = field(default_factory=list)


@dataclass
class _Outcome:
    """What one batch leaves in the store, written in one transaction."""

    delivered: list[_Work] = field(default_factory=list)
    written: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    identities: dict[str, str] = field(default_factory=dict)
    retry: list[tuple[_Work, str]] = field(default_factory=list)
    dead: list[tuple[_Work, dict[str, Any]]] = field(default_factory=list)
    field_problems: list[tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = field(
        default_factory=list
    )
    journal: list[dict[str, Any]] = field(default_factory=list)


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return next((v for v in value if v not in (None, "")), None)
    return value


def _text(value: Any) -> str | None:
    value = _first(value)
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def attribution_of(fields: Mapping[str, Any], form: FormConfig) -> Attribution:
    """The attribution of a submission: its page URL and referrer, UTM and click-id fields
    over those, and the form's ``default_utm`` when the visit carried no UTM at all."""
    tagged = tag_url(_text(fields.get("page_url")), _text(fields.get("referrer")))
    utms = {name: getattr(tagged, name) for name in UTM_PARAMS}
    changed = False
    for name in UTM_PARAMS:
        given = _text(fields.get(name))
        if given is not None:
            utms[name] = given
            changed = True
    if not any(utms.values()):
        defaults = form.default_utm
        utms = {name: getattr(defaults, name) for name in UTM_PARAMS}
        changed = True
    click_ids = dict(tagged.click_ids)
    for name in CLICK_ID_PARAMS:
        given = _text(fields.get(name))
        if given is not None:
            click_ids[name] = given
            changed = True
    if not changed:
        # the page URL's own attribution, classified by tag_url from these same values
        return tagged
    channel, rule = classify_channel(
        utm_source=utms["utm_source"],
        utm_medium=utms["utm_medium"],
        utm_campaign=utms["utm_campaign"],
        click_ids=click_ids,
        referrer=tagged.referrer,
        landing_page=tagged.landing_page,
    )
    return replace(tagged, channel=channel, channel_rule=rule, click_ids=click_ids, **utms)


def _lead_extras(
    item: InboxItem, form: FormConfig, fields: Mapping[str, Any], attribution: Attribution
) -> dict[str, Any]:
    extras: dict[str, Any] = {
        "key": item.key,
        "created_at": item.received_at,
        "is_test": item.is_test or fields.get("is_test") is True,
        "channel": attribution.channel,
        "click_ids": dict(attribution.click_ids),
        "landing_page": attribution.landing_page,
        "referrer": attribution.referrer,
        "first_touch": attribution.to_touch(item.received_at),
    }
    for name in UTM_PARAMS:
        extras[name] = getattr(attribution, name)
    for name in _ID_FIELDS:
        value = _text(fields.get(name))
        if value is not None:
            extras[name] = value
    if "form_id" not in extras:
        extras["form_id"] = item.form
    if form.owner is not None:
        extras["owner"] = {"id": form.owner}
    if form.queue is not None:
        extras["queue"] = form.queue
    return extras


def _build_lead(draft: LeadDraft, extras: dict[str, Any]) -> tuple[Lead | None, list[Problem]]:
    """``build_lead(draft, **extras)``: through the row fast path (:func:`fast_lead`, the same
    Lead) when the form's values are a plain row of text without a mapping problem, else
    validated, which leaves a bad optional value out and names its field."""
    if not draft.problems and "custom" not in draft.values and "click_ids" not in draft.values:
        # (build_lead merges a draft's custom and click ids with the extras' instead)
        lead = fast_lead(draft.values, extras)
        if lead is not None:
            return lead, []
    return build_lead(draft, **extras)


def is_test_email(email: str | None, test_domain: str) -> bool:
    """Whether ``email`` is under the form's ``test_email_domain`` (or a subdomain of it), as
    the capture app decides for a web form when it stores the submission."""
    if not email or not test_domain:
        return False
    domain = email.rpartition("@")[2].strip().lower()
    test_domain = test_domain.strip().lower()
    return bool(domain) and (domain == test_domain or domain.endswith("." + test_domain))


def _merge(first: Lead, later: Lead) -> Lead:
    """One lead from two submissions of a person: the later's values over the first's, the
    first touch kept."""
    data = first.model_dump()
    for name, value in later.model_dump().items():
        if name in ("key", "first_touch", "created_at") or value in (None, {}, []):
            continue
        data[name] = value
    return Lead.model_validate(data)


def _test_keys(outcome: _Outcome) -> dict[str, list[str]]:
    """The inbox keys of the test leads a batch delivered or dead-lettered, by destination."""
    works = [*outcome.delivered, *(work for work, _ in outcome.dead)]
    keys: dict[str, list[str]] = {}
    for work in works:
        if work.form is not None and work.lead is not None and work.lead.is_test:
            keys.setdefault(work.form.destination, []).append(work.item.key)
    return keys


#: Leads recorded per delivery transaction on SQLite. SQLite has one writer and a capture
#: request waits for it, so a batch's results are recorded in parts this small (each part whole
#: for its leads), not in one transaction as long as the batch's: a request then waits for one
#: part. PostgreSQL locks rows, not the database: there a batch is one transaction.
COMMIT_LEADS = 25


def _parts(outcome: _Outcome, size: int) -> list[_Outcome]:
    """``outcome`` split into outcomes of at most ``size`` leads, in order. Everything of one
    lead is in one part: its inbox items (several receipts of one person are one lead), its
    link, identity, ledger rows, field problems, journal rows and dead letters. Rows that name
    no lead of the batch (a journal row of an item left for a later pass) go with the last
    part. Items to retry are not recorded here (:meth:`_Delivery.finish`)."""
    lead_of: dict[str, str] = {}
    for work in [*outcome.delivered, *(work for work, _ in outcome.dead)]:
        lead_of[work.item.key] = work.lead.key if work.lead is not None else work.item.key
    index = {lead: n // size for n, lead in enumerate(dict.fromkeys(lead_of.values()))}
    parts = [_Outcome() for _ in range(max(1, -(-len(index) // size)))]

    def part(lead: str | None) -> _Outcome:
        return parts[index.get(lead, -1) if lead is not None else -1]

    for work in outcome.delivered:
        part(lead_of[work.item.key]).delivered.append(work)
    for work, letter in outcome.dead:
        part(lead_of[work.item.key]).dead.append((work, letter))
    for destination, pairs in outcome.written.items():
        for inbox_key, external_id in pairs:
            owner = part(lead_of.get(inbox_key))
            owner.written.setdefault(destination, []).append((inbox_key, external_id))
    for destination, links in outcome.links.items():
        for key, external_id in links.items():
            part(key).links.setdefault(destination, {})[key] = external_id
    for identity, key in outcome.identities.items():
        part(key).identities[identity] = key
    for problem in outcome.field_problems:
        part(problem[0]).field_problems.append(problem)
    for row in outcome.journal:
        part(row.get("lead_key")).journal.append(row)
    return parts


#: Mappings the delivery passes of this process loaded, by what they were loaded from, with
#: the project file's text they were read from. ``serve`` delivers every second or so, and
#: loading a mapping (reading and compiling its TOML) cost ~30 ms of CPU a pass; a mapping is
#: loaded again when its project file changed (a pick list added, a value map fixed).
_LOADED: dict[tuple[str, ...], tuple[bytes | None, FieldMapping]] = {}


def _kept(key: tuple[str, ...], path: Path, load: Callable[[], FieldMapping]) -> FieldMapping:
    """The mapping ``load`` gives, kept across passes while ``path`` holds the same text (or
    stays missing)."""
    try:
        text: bytes | None = path.read_bytes()
    except OSError:
        text = None
    kept = _LOADED.get(key)
    if kept is not None and kept[0] == text:
        return kept[1]
    mapping = load()
    _LOADED[key] = (text, mapping)
    return mapping


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Delivery:
    """One pass over one claimed batch."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        pool: ConnectorPool,
        *,
        fetchers: Fetchers | None,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.fetchers = fetchers
        self.on_progress = on_progress
        self.stats = DeliveryStats()
        self._form_mappings: dict[str, FieldMapping] = {}
        self._mappings: dict[str, FieldMapping] = {}
        self._qualifiers: dict[str, Qualifier] = {}
        self._writers: dict[str, LeadWriter] = {}
        self.deferred: list[tuple[_Work, str, str | None]] = []
        #: Destinations whose write call failed in this pass, with the reason: their leads
        #: wait for the next pass without another call (or fetch) now.
        self.down: dict[str, str] = {}
        self.journal = Journal(store)

    # -- normalize -----------------------------------------------------------------------------

    def _form_mapping(self, name: str, form: FormConfig) -> FieldMapping:
        if name not in self._form_mappings:
            self._form_mappings[name] = _kept(
                ("form", str(form.mapping), form.source),
                form.mapping,
                lambda: load_form_mapping(form.mapping, source=form.source),
            )
        return self._form_mappings[name]

    def _fields(self, item: InboxItem) -> dict[str, Any]:
        if item.source == CSV_SOURCE:
            raw = item.payload.get("fields")
            return dict(raw) if isinstance(raw, dict) else {}
        return submission_fields(item, self.config, fetchers=self.fetchers)

    def _dead_letter(
        self,
        work: _Work,
        outcome: _Outcome,
        *,
        connection: str,
        system: str,
        field: str | None,
        reason: str,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        item = work.item
        ref = item.key
        if item.source == CSV_SOURCE and "row" in item.payload:
            ref = f"{item.payload.get('file', 'import')} row {item.payload['row']}"
        outcome.dead.append(
            (
                work,
                {
                    "connection": connection,
                    "system": system,
                    "record_ref": ref,
                    "field": field,
                    "reason": reason,
                    "lead_key": item.key,
                    "payload": {
                        "inbox_key": item.key,
                        "form": item.form,
                        "source": item.source,
                        "fields": dict(fields) if fields is not None else None,
                    },
                },
            )
        )

    def normalize(self, work: _Work, outcome: _Outcome) -> None:
        """Fields → tagged Lead; a problem leaves the item pending or dead-letters it."""
        item, form = work.item, work.form
        assert form is not None
        try:
            fields = self._fields(item)
        except FetchError as exc:
            if exc.retryable:
                outcome.retry.append((work, str(exc)))
            else:
                self._dead_letter(
                    work,
                    outcome,
                    connection=item.form,
                    system=item.source,
                    field=None,
                    reason=str(exc),
                )
            return
        try:
            mapping = self._form_mapping(item.form, form)
        except MappingError as exc:
            # The form's configuration, not the lead, is wrong: keep the lead until it is fixed.
            outcome.retry.append((work, f"form {item.form}: {exc}"))
            return
        draft = mapping.to_lead(fields)
        draft.record = item.key
        attribution = attribution_of(fields, form)
        lead, problems = _build_lead(draft, _lead_extras(item, form, fields, attribution))
        if lead is None:
            first = problems[0] if problems else Problem("lead", "did not map")
            self._dead_letter(
                work,
                outcome,
                connection=item.form,
                system=item.source,
                field=first.system_field or first.field,
                reason="; ".join(str(p) for p in problems) or "record did not map",
                fields=fields,
            )
            return
        if not lead.is_test and is_test_email(lead.email, form.test_email_domain):
            lead.is_test = True
        work.lead = lead
        work.submitted = draft.values
        work.left_out = problems
        if lead.email:
            try:
                work.identity = identity_email(lead.email)
            except ValueError:
                work.identity = None

    # -- identify ------------------------------------------------------------------------------

    def identify(self, works: Sequence[_Work]) -> None:
        """Give each lead the key its person already has, claimed atomically in the state
        store before anything is written: a sync or another worker meeting the same person at
        the same time ends with the same key (race-free identity)."""
        proposals: dict[str, str] = {}
        for work in works:
            assert work.lead is not None
            if work.identity is not None:
                proposals.setdefault(work.identity, work.lead.key)
        owners = self.store.claim_emails(proposals) if proposals else {}
        for work in works:
            assert work.lead is not None
            if work.identity is not None and owners[work.identity] != work.lead.key:
                work.lead.key = owners[work.identity]

    # -- write ---------------------------------------------------------------------------------

    def _mapping(self, destination: str) -> FieldMapping:
        if destination not in self._mappings:
            kind = self.config.connection(destination).kind
            folder = self.config.folder
            self._mappings[destination] = _kept(
                ("crm", kind, str(folder)),
                folder / "mappings" / f"{kind}.toml",
                lambda: load_mapping(kind, project_dir=folder),
            )
        return self._mappings[destination]

    def _qualifier(self, destination: str, connector: Connector[Any]) -> Qualifier:
        """The qualify step of one destination, kept for the whole pass (its owners are read
        from the CRM once)."""
        if destination not in self._qualifiers:
            self._qualifiers[destination] = Qualifier(
                self.config, self.store, connector, destination_mapping=self._mapping(destination)
            )
        return self._qualifiers[destination]

    def _existing(
        self,
        connector: Connector[Any],
        groups: Mapping[str, list[_Work]],
        linked: Mapping[str, str],
    ) -> set[str]:
        """The lead keys the destination already holds: linked in the store, or found by
        e-mail (one lookup per batch of the connector's size). Raises ConnectorError."""
        existing = {key for key in groups if key in linked}
        by_email: dict[str, list[str]] = {}
        for key, group in groups.items():
            email = next((w.lead.email for w in group if w.lead is not None and w.lead.email), None)
            if key not in existing and email:
                by_email.setdefault(normalize_email(email), []).append(key)
        if not by_email or not connector.supports(Capability.LOOKUP):
            return existing
        emails = list(by_email)
        for chunk in _chunks(emails, connector.batch_size):
            found = connector.lookup(emails=list(chunk))
            for email in found:
                existing.update(by_email.get(normalize_email(email), []))
        return existing

    def write(self, destination: str, works: Sequence[_Work], outcome: _Outcome) -> None:
        """Upsert the leads of one destination, one record per lead key.

        A lead new to the destination goes through the qualify step first (score, route to
        one of the destination's users, SLA due time), as in a sync flow; a record the
        destination holds keeps what sales owns (:data:`SALES_OWNED`) and is not re-routed.
        """
        try:
            mapping = self._mapping(destination)
            connector: Connector[Any] = self.pool.get(destination)
        except (MappingError, KeyError, LookupError, TypeError) as exc:
            for work in works:
                outcome.retry.append((work, f"destination {destination}: {exc}"))
            return
        groups: dict[str, list[_Work]] = {}
        for work in works:
            assert work.lead is not None
            groups.setdefault(work.lead.key, []).append(work)
        linked = self.store.external_ids_for_many(destination, list(groups))
        leads: dict[str, Lead] = {}
        for key, group in groups.items():
            lead = group[0].lead
            assert lead is not None
            for later in group[1:]:
                assert later.lead is not None
                lead = _merge(lead, later.lead)
            leads[key] = lead
        try:
            existing = self._existing(connector, groups, linked)
            self._qualify(destination, connector, leads, existing)
        except ConnectorError as exc:
            reason = redact(f"{destination}: {exc}")
            self.down[destination] = reason
            outcome.retry.extend((work, reason) for work in works)
            return
        writer = self._writer(destination, connector, mapping)
        pending: list[tuple[Pending, list[_Work]]] = []
        for key, group in groups.items():
            lead = leads[key]
            names = None
            bad = [p for work in group for p in work.left_out]
            if key in existing:
                # A value left out is not a blank: the CRM's own value stays.
                names = without_left_out(
                    [name for name in mapping.fields if name not in SALES_OWNED], bad, lead
                )
            vetted = writer.system_record(lead, fields=names, creating=key not in existing)
            if vetted.fatal:
                first = vetted.fatal[0]
                for work in group:
                    self._dead_letter(
                        work,
                        outcome,
                        connection=destination,
                        system=connector.kind,
                        field=first.system_field or first.field,
                        reason="; ".join(str(p) for p in vetted.fatal),
                    )
                continue
            one = Pending(key, vetted.fields, linked.get(key), [*left_out(bad), *vetted.problems])
            pending.append((one, group))
        groups_of = {id(one): group for one, group in pending}
        written: list[Written] = []
        try:
            for one, result in writer.write([one for one, _ in pending], update_by_id=False):
                written.append(Written.of(one.ref, result, one.fields, None, one.call))
                group = groups_of.pop(id(one))
                self._settle(destination, connector, one, group, result, linked, outcome)
        except ConnectorError as exc:
            # The call failed as a whole (CRM down, credentials, budget): what it held waits
            # for the next pass; what was written before is settled.
            reason = redact(f"{destination}: {exc}")
            self.down[destination] = reason
            for group in groups_of.values():
                outcome.retry.extend((work, reason) for work in group)
        finally:
            outcome.journal += self.journal.writes(destination, written)

    def _writer(
        self, destination: str, connector: Connector[Any], mapping: FieldMapping
    ) -> LeadWriter:
        """The write step of one destination, kept for the pass (its schema read once)."""
        if destination not in self._writers:
            describes = connector.supports(Capability.DESCRIBE)
            self._writers[destination] = LeadWriter(
                connector,
                mapping,
                schema=connector.describe if describes else None,
                fresh_schema=connector.describe_fresh if describes else None,
            )
        return self._writers[destination]

    def _settle(
        self,
        destination: str,
        connector: Connector[Any],
        written: Pending,
        group: list[_Work],
        result: WriteResult,
        linked: Mapping[str, str],
        outcome: _Outcome,
    ) -> None:
        if not result.ok or not result.external_id:
            error = result.error
            message = (error.message or str(error)) if error is not None else "no record id"
            for work in group:
                self._dead_letter(
                    work,
                    outcome,
                    connection=destination,
                    system=connector.kind,
                    field=getattr(error, "field", None),
                    reason=redact(str(message)),
                )
            return
        external_id = str(result.external_id)
        if result.outcome is WriteOutcome.CREATED:
            self.stats.created += 1
        elif result.outcome is WriteOutcome.UPDATED:
            self.stats.updated += 1
        else:
            self.stats.unchanged += 1
        if written.ref not in linked:
            outcome.links.setdefault(destination, {})[written.ref] = external_id
        outcome.field_problems.append(
            (
                written.ref,
                destination,
                {"inbox_keys": [w.item.key for w in group], "form": group[0].item.form},
                [p.to_json() for p in written.problems],
            )
        )
        self.stats.field_problems += len(written.problems)
        for work in group:
            outcome.delivered.append(work)
            outcome.written.setdefault(destination, []).append((work.item.key, external_id))
            if work.identity is not None:
                outcome.identities.setdefault(work.identity, written.ref)

    def _qualify(
        self,
        destination: str,
        connector: Connector[Any],
        leads: Mapping[str, Lead],
        existing: set[str],
    ) -> None:
        """Score, route and set the SLA due time of the leads new to the destination (in
        place). A lead whose form names a queue keeps it: the form bypasses routing (a form's
        owner is kept by the router itself). Raises ConnectorError (reading the owners)."""
        new = [lead for key, lead in leads.items() if key not in existing]
        if not new:
            return
        qualifier = self._qualifier(destination, connector)
        moment = self.store.now()
        try:
            for lead in new:
                route = lead.owner is not None or lead.queue is None
                qualifier.qualify(lead, route=route, now=moment)
        finally:
            qualifier.flush()

    # -- commit --------------------------------------------------------------------------------

    def commit(self, outcome: _Outcome, claim_token: str | None) -> None:
        """Record a batch's results: on SQLite a transaction per :data:`COMMIT_LEADS` leads,
        each whole for its leads (:func:`_parts`). A pass that dies between two parts keeps what the
        first recorded; the rest of the batch is released and delivered again by a later
        pass, which finds those leads in the CRM by their e-mail (updated, not created twice)."""
        outcome.links = self._free_links(outcome.links)
        if self.store.dialect == "sqlite":
            for part in _parts(outcome, COMMIT_LEADS):
                self._record(part, claim_token)
        else:
            self._record(outcome, claim_token)
        self._count(outcome, claim_token)

    def _record(self, outcome: _Outcome, claim_token: str | None) -> None:
        """Record one part of a batch in one transaction."""
        links = outcome.links
        with self.store.transaction() as conn:
            if outcome.identities:
                self.store.claim_emails(outcome.identities, conn=conn)
            for destination, pairs in links.items():
                self.store.link_many(destination, pairs, conn=conn)
            for destination, written in outcome.written.items():
                self.store.mark_written_many(written, destination, conn=conn)
            by_destination: dict[str, list[tuple[str, dict[str, Any], list[dict[str, Any]]]]] = {}
            for key, destination, origin, problems in outcome.field_problems:
                by_destination.setdefault(destination, []).append((key, origin, problems))
            for destination, written_problems in by_destination.items():
                self.store.record_field_problems_many(destination, written_problems, conn=conn)
            self.store.add_journal(outcome.journal, conn=conn)
            if outcome.delivered:
                self.store.mark_inbox_delivered(
                    [w.item.key for w in outcome.delivered], claim_token=claim_token, conn=conn
                )
            for work, letter in outcome.dead:
                self.store.add_capture_dead_letter(**letter, conn=conn)
                if work.form is not None:
                    self.store.mark_failed(
                        work.item.key, work.form.destination, letter["reason"], conn=conn
                    )
                self.store.mark_inbox_failed(
                    work.item.key, letter["reason"], retry=False, claim_token=claim_token, conn=conn
                )
            # The app stored the ledger row before a Meta / LinkedIn lead's e-mail or the
            # platform's test flag was known: a test lead is marked now, so reports skip it.
            for destination, keys in _test_keys(outcome).items():
                self.store.mark_test_many(keys, destination, conn=conn)

    def _count(self, outcome: _Outcome, claim_token: str | None) -> None:
        """After a batch is recorded: its items to retry wait, and the pass's counts."""
        # Items to retry keep their claim until the pass ends, so the rest of the inbox is
        # claimed past them (a CRM that is down does not hold up another's leads).
        self.deferred.extend((work, reason, claim_token) for work, reason in outcome.retry)
        for work in outcome.delivered:
            self.stats.outcomes[work.item.key] = "delivered"
        for work, _ in outcome.dead:
            self.stats.outcomes[work.item.key] = "dead_lettered"
        for work, reason in outcome.retry:
            self.stats.outcomes[work.item.key] = "pending"
            if reason not in self.stats.errors:
                self.stats.errors.append(reason)
        self.stats.delivered += len(outcome.delivered)
        self.stats.dead_lettered += len(outcome.dead)
        self.stats.pending += len(outcome.retry)
        if self.on_progress is not None:
            self.on_progress(len(outcome.delivered) + len(outcome.dead) + len(outcome.retry))

    def finish(self) -> None:
        """Release the items left for a later pass, with their errors (attempts + 1)."""
        if not self.deferred:
            return
        with self.store.transaction() as conn:
            for work, reason, token in self.deferred:
                self.store.mark_inbox_failed(
                    work.item.key, reason, retry=True, claim_token=token, conn=conn
                )
        self.deferred.clear()

    def _free_links(self, links: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        """The new links whose external id no other lead holds (a record the CRM merged or a
        flow linked first keeps its link)."""
        free: dict[str, dict[str, str]] = {}
        for destination, pairs in links.items():
            owners = self.store.keys_for_many(destination, pairs.values())
            kept = {k: ext for k, ext in pairs.items() if owners.get(ext) in (None, k)}
            if kept:
                free[destination] = kept
        return free

    # -- field problems the destination now accepts -------------------------------------------

    def requeue_accepted(self) -> int:
        """Put captured leads back in the queue whose refused values their destination would
        now take (a pick list extended, a value map added; DESIGN §7.7): delivered again, with
        the form's current mapping. Returns how many inbox rows went back."""
        rows = [p for p in self.store.field_problems() if p.origin.get("inbox_keys")]
        keys: set[str] = set()
        for row in rows:
            try:
                connector: Connector[Any] = self.pool.get(row.connection)
                writer = self._writer(row.connection, connector, self._mapping(row.connection))
                accepted = writer.accepts_now(row.to_json())
            except (ConnectorError, MappingError, KeyError, LookupError) as exc:
                log.warning("field problem of %s not rechecked: %s", row.lead_key, redact(str(exc)))
                continue
            if accepted:
                keys.update(str(key) for key in row.origin["inbox_keys"])
        if not keys:
            return 0
        with self.store.transaction() as conn:
            done = conn.execute(
                inbox_table.update()
                .where(
                    inbox_table.c.key.in_(sorted(keys)),
                    inbox_table.c.status == InboxStatus.DELIVERED.value,
                )
                .values(status=InboxStatus.PENDING.value, claim_token=None, claimed_at=None)
            ).rowcount
        log.info(
            "%d captured lead(s) queued again: their destination now takes a refused value", done
        )
        return int(done)

    # -- one batch -----------------------------------------------------------------------------

    def run(self, items: Sequence[InboxItem]) -> None:
        """Deliver one claimed batch."""
        self.stats.claimed += len(items)
        outcome = _Outcome()
        ready: list[_Work] = []
        for item in items:
            work = _Work(item, self.config.forms.get(item.form))
            if work.form is None:
                self._dead_letter(
                    work,
                    outcome,
                    connection=item.form,
                    system=item.source,
                    field=None,
                    reason=f"form {item.form!r} is no longer in the configuration",
                )
                continue
            if work.form.destination in self.down:
                outcome.retry.append((work, self.down[work.form.destination]))
                continue
            self.normalize(work, outcome)
            if work.lead is not None:
                ready.append(work)
        self.identify(ready)
        outcome.journal += self.journal.arrivals(
            (w.lead, w.submitted, w.item.key, w.item.form, w.identity) for w in ready if w.lead
        )
        by_destination: dict[str, list[_Work]] = {}
        for work in ready:
            assert work.form is not None
            by_destination.setdefault(work.form.destination, []).append(work)
        before = {name: self._calls(name) for name in by_destination}
        for destination, works in by_destination.items():
            self.write(destination, works, outcome)
        for name, calls in before.items():
            spent = self._calls(name) - calls
            self.stats.api_calls[name] = self.stats.api_calls.get(name, 0) + spent
        self.commit(outcome, items[0].claim_token if items else None)

    def _calls(self, destination: str) -> int:
        try:
            return self.pool.get(destination).api_calls
        except (KeyError, LookupError, TypeError):
            return 0


def deliver_inbox(
    config: Config,
    store: StateStore,
    *,
    connectors: ConnectorPool | None = None,
    fetchers: Fetchers | None = None,
    limit: int = 100,
    claim_ttl_s: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DeliveryStats:
    """Claim one batch of up to ``limit`` pending inbox items and deliver it (see the module
    docstring). ``connectors`` defaults to a pool of this call's own, closed at the end."""
    return drain_inbox(
        config,
        store,
        connectors=connectors,
        fetchers=fetchers,
        limit=limit,
        claim_ttl_s=claim_ttl_s,
        max_batches=1,
        on_progress=on_progress,
    )


def drain_inbox(
    config: Config,
    store: StateStore,
    *,
    connectors: ConnectorPool | None = None,
    fetchers: Fetchers | None = None,
    limit: int = 100,
    claim_ttl_s: float | None = None,
    max_batches: int = 1000,
    on_progress: Callable[[int], None] | None = None,
    recheck_every_s: float = 0.0,
) -> DeliveryStats:
    """Deliver batches of ``limit`` until nothing is left to claim or ``max_batches`` ran.

    First, captured leads whose refused values their destination now takes are queued again
    (:meth:`_Delivery.requeue_accepted`); a service delivering every few seconds passes
    ``recheck_every_s`` (:data:`RECHECK_EVERY_S`) so that is done at most that often.

    Items left for a later pass (their destination or platform failing) stay claimed until
    the end of the call, so later items are claimed past them; a destination whose write call
    failed is not called again in this pass.

    Claims last ``claim_ttl_s`` (default ``[state] lease_s``) and are renewed every third of
    that while the call runs, so a worker that dies loses its leads to another within a lease.
    """
    lease_s = claim_ttl_s if claim_ttl_s is not None else config.state.lease_s
    tokens: list[str] = []

    def renew() -> bool:
        for token in list(tokens):
            store.renew_inbox_claim(token)
        return True

    pool = connectors if connectors is not None else ConnectorPool(config, store=store)
    delivery = _Delivery(config, store, pool, fetchers=fetchers, on_progress=on_progress)
    try:
        if _recheck_due(store, recheck_every_s):
            delivery.requeue_accepted()
        with Lease(renew, every_s=max(lease_s / 3, 0.1), name="inbox claims"):
            for _ in range(max_batches):
                items = store.claim_inbox(limit=limit, claim_ttl_s=lease_s)
                if items:
                    tokens.extend({item.claim_token for item in items if item.claim_token})
                    try:
                        delivery.run(items)
                    except BaseException as exc:  # SystemExit too: SIGTERM ends a serve child
                        _release(store, items, exc)
                        raise
                if len(items) < limit:
                    break
    finally:
        try:
            delivery.finish()
        finally:
            if connectors is None:
                pool.close()
    return delivery.stats


#: How often a delivery pass rechecks the open field problems of captured leads (a ``serve``
#: worker delivers every few seconds; a pick list is not extended that often).
RECHECK_EVERY_S = 60.0
_last_recheck: dict[str, float] = {}


def _recheck_due(store: StateStore, every_s: float) -> bool:
    """True at most once per ``every_s`` per state store in this process."""
    url = str(store.url)
    now = time.monotonic()
    last = _last_recheck.get(url)
    if last is not None and now - last < every_s:
        return False
    _last_recheck[url] = now
    return True


def _release(store: StateStore, items: Sequence[InboxItem], exc: BaseException) -> None:
    """After a pass raised, put the batch's items it did not finish back to pending now (not
    after the claim expires), with the error (attempts + 1), and log it.

    Only rows still pending under this batch's claim change: what the pass committed before it
    raised keeps its outcome.
    """
    reason = redact(f"delivery pass failed: {type(exc).__name__}: {exc}")
    released = 0
    try:
        with store.transaction() as conn:
            for item in items:
                released += store.mark_inbox_failed(
                    item.key, reason, retry=True, claim_token=item.claim_token, conn=conn
                )
    except Exception as release_exc:  # the store itself failing: the claims expire instead
        log.error(
            "%s; releasing its %d claimed lead(s) failed too: %s",
            reason,
            len(items),
            redact(f"{type(release_exc).__name__}: {release_exc}"),
        )
        return
    log.warning("%d claimed lead(s) released for the next pass (%s)", released, reason)


def _sync_drainer(context: SyncContext) -> FlowStats | None:
    """``leadrelay sync`` delivers the inbox before its flows (not in a dry run)."""
    if context.dry_run:
        return None
    stats = drain_inbox(context.config, context.store, connectors=context.connectors)
    if stats.claimed == 0:
        return None
    return stats.to_flow_stats()


register_inbox_drainer(_sync_drainer)


class DeliveryLoop:
    """Delivers the inbox on a background thread every ``interval_s`` (sooner when
    :meth:`wake` is called, e.g. by the capture app after it stored a lead).

    Passes start at most every ``min_gap_s`` (default 0.5 s, at most ``interval_s``), so a
    burst of submissions is delivered in a few large batches rather than one call per lead.
    The thread has its own connectors. A failing pass is logged (secrets redacted) and the loop
    goes on; :meth:`stop` ends it after the pass in progress.
    """

    def __init__(
        self,
        config: Config,
        store: StateStore,
        *,
        interval_s: float | None = None,
        fetchers: Fetchers | None = None,
        connector_options: Mapping[str, Any] | None = None,
        min_gap_s: float = 0.5,
    ) -> None:
        self.config = config
        self.store = store
        self.interval_s = interval_s if interval_s is not None else config.capture.worker_interval_s
        self.fetchers = fetchers
        self.connector_options = dict(connector_options or {})
        self.min_gap_s = min(min_gap_s, self.interval_s)
        self.passes = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._run, name="leadrelay-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next pass now (thread-safe, cheap)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end and wait for the pass in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self, pool: ConnectorPool) -> DeliveryStats | None:
        """One pass; errors are logged and kept in :attr:`last_error`, never raised."""
        try:
            stats = drain_inbox(
                self.config,
                self.store,
                connectors=pool,
                fetchers=self.fetchers,
                recheck_every_s=RECHECK_EVERY_S,
            )
        except Exception as exc:  # the server must outlive any failure of a pass
            self.last_error = redact(f"{type(exc).__name__}: {exc}")
            log.error("delivery pass failed: %s", self.last_error)
            return None
        self.passes += 1
        if stats.pending:
            self.last_error = "; ".join(stats.errors[:3])
            log.warning(
                "%d captured lead(s) left pending: %s", stats.pending, redact(self.last_error)
            )
        elif stats.claimed:
            self.last_error = None
            log.info(
                "delivered %d captured lead(s), %d dead-lettered",
                stats.delivered,
                stats.dead_lettered,
            )
        return stats

    def _run(self, *, set_up: Callable[[], None] | None = None) -> None:
        """Pass after pass until stopped; ``set_up`` is called once, after the first pass
        (which imports and builds the connectors)."""
        with ConnectorPool(self.config, store=self.store, **self.connector_options) as pool:
            while not self._stop.is_set():
                self._wake.clear()
                self.run_once(pool)
                if set_up is not None:
                    set_up()
                    set_up = None
                if self._stop.wait(self.min_gap_s):
                    break
                self._wake.wait(max(0.0, self.interval_s - self.min_gap_s))


def _delivery_process_main(config_path: str, wake: Any, stop: Any, min_gap_s: float) -> None:
    """The body of :class:`DeliveryProcess`'s child: the delivery loop on the project."""
    from leadrelay.config import load_config

    child_logging(log, "delivery")
    config = load_config(config_path)
    store = open_state(config)
    try:
        loop = DeliveryLoop(config, store, min_gap_s=min_gap_s)
        loop._wake, loop._stop = wake, stop
        loop._run(set_up=keep_startup_objects)
    finally:
        store.close()


class DeliveryProcess(ServeChild):
    """:class:`DeliveryLoop` in a child process of its own, as ``leadrelay serve`` runs it.

    Mapping and writing leads costs CPU; in its own process it does not hold the capture
    endpoints' interpreter lock, so acknowledging a submission stays fast under load. The child
    re-reads the project from ``config_path``. :meth:`wake` is cheap and safe from any thread;
    :meth:`stop` waits for the pass in progress (30 s by default). ``/metrics`` reads the
    delivered / failed counts from the state store, so they are right in this mode too.
    """

    def __init__(self, config_path: Path, *, min_gap_s: float = 0.5) -> None:
        self._wake = SPAWN.Event()
        stop = SPAWN.Event()
        super().__init__(
            "leadrelay-delivery",
            _delivery_process_main,
            (str(config_path), self._wake, stop, min_gap_s),
            stop,
            stop_timeout_s=30.0,
        )

    def wake(self) -> None:
        """Run the next pass now."""
        self._wake.set()

    @property
    def wake_event(self) -> Any:
        """The event :meth:`wake` sets, for other child processes to set (HTTP workers)."""
        return self._wake

    def _request_stop(self) -> None:
        super()._request_stop()
        self._wake.set()
