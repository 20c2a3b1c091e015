"""The journal: what happened to each lead, as it happens, for ``leadrelay trace``.

The state store's other tables keep the *current* state (the latest write per destination,
the open SLA clock); the journal keeps the *events*, one row each (``journal`` table): lead
key, time, kind, system, record id, a one-line summary and details. The steps that do the work
call it where their data is, once per batch (one ``executemany``, never a statement per lead):

* ``written`` / ``write failed``: every write to every system by the write step
  (:mod:`leadrelay.sync.write`), capture delivery and sync flows alike (a write back to the
  marketing system is one too): record id, created / updated, the field-level diff old → new,
  and the API call it went in (``PATCH /services/data/v60.0/composite/sobjects #2``);
* ``qualified``: the score with its breakdown, reasons and tier, the routing (rule, owner or
  queue, reason) and the SLA due time (:mod:`leadrelay.handoff.qualify`);
* ``sla met`` / ``sla breached``: each clock when it is checked after its due time;
* ``normalized``: the values normalization repaired (submitted → stored);
* ``deduplicated``: a receipt that joined a lead already known, and why.

Everything is redacted before it is stored (:func:`redact_payload`: values under secret keys,
consent text, registered secrets and token shapes) and redacted again when shown. Rows older
than ``[state] retention_days`` are pruned with the rest of trace's material.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from leadrelay.connectors.base import WriteOutcome, WriteResult
from leadrelay.connectors.errors import SECRET_KEYS, redact
from leadrelay.sync.state import JsonDocument

if TYPE_CHECKING:
    from leadrelay.handoff.escalation import EscalationOutcome
    from leadrelay.handoff.qualify import Qualification
    from leadrelay.handoff.sla import SlaStatus
    from leadrelay.model import Lead
    from leadrelay.sync.state import StateStore

__all__ = [
    "WITHHELD_CONSENT",
    "WITHHELD_SECRET",
    "Journal",
    "Written",
    "field_diff",
    "redact_payload",
]

WITHHELD_SECRET = "***"
WITHHELD_CONSENT = "[consent text withheld]"

#: Payload keys whose values are secrets (beyond the project-wide SECRET_KEYS).
_SECRET_PARTS = ("secret", "token", "password", "google_key", "signature", "api_key")
_CONSENT_PARTS = ("consent", "disclaimer")
#: The longest text a journal row keeps of one value.
_VALUE_LIMIT = 200


# -- redaction ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in SECRET_KEYS or any(part in lowered for part in _SECRET_PARTS)


@functools.lru_cache(maxsize=4096)
def _is_consent_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _CONSENT_PARTS)


def redact_payload(value: Any, secrets: Iterable[str] = (), *, consent: bool = False) -> Any:
    """A copy of a stored payload safe to show: values under secret keys are ``***``, text
    under consent keys (consent wording, disclaimers) is withheld (booleans are kept: whether
    consent was given is not the text), and every string goes through ``redact``."""
    secret_list = list(secrets)
    if isinstance(value, Mapping):
        shown: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if _is_secret_key(name) and item not in (None, ""):
                shown[name] = WITHHELD_SECRET
            else:
                shown[name] = redact_payload(
                    item, secret_list, consent=consent or _is_consent_key(name)
                )
        return shown
    if isinstance(value, list | tuple):
        return [redact_payload(item, secret_list, consent=consent) for item in value]
    if isinstance(value, str):
        return WITHHELD_CONSENT if consent and value else redact(value, secret_list)
    return value


def _withhold(value: Any, *, consent: bool = False) -> Any:
    """``value`` with values under secret keys and text under consent keys withheld (what
    :func:`redact_payload` does before it redacts each string)."""
    kind = type(value)
    if kind is dict:
        shown: dict[str, Any] = {}
        for name, item in value.items():
            if _is_secret_key(name) and item not in (None, ""):
                shown[name] = WITHHELD_SECRET
            elif consent or _is_consent_key(name) or type(item) in (dict, list):
                shown[name] = _withhold(item, consent=consent or _is_consent_key(name))
            else:
                shown[name] = item
        return shown
    if kind is list:
        return [_withhold(item, consent=consent) for item in value]
    if consent and kind is str and value:
        return WITHHELD_CONSENT
    return value


def _plain(value: Any) -> Any:
    """A value as JSON keeps it: enums by value, times in ISO form, long text cut."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= _VALUE_LIMIT else value[: _VALUE_LIMIT - 3] + "..."
    if value is None or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and len(value) > _VALUE_LIMIT:
        return value[: _VALUE_LIMIT - 3] + "..."
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _same(old: Any, new: Any) -> bool:
    """Whether a system's value and the value written are the same (``1`` and ``1.0``, a
    number and its text, blank and None are)."""
    if old in (None, "") and new in (None, ""):
        return True
    if old == new:
        return True
    if str(_plain(old)).strip() == str(_plain(new)).strip():
        return True
    # A number and the text a system returns it as (20 and "20.0"); two texts are compared as
    # text ("0123" is not "123").
    for number, other in ((old, new), (new, old)):
        if isinstance(number, int | float) and not isinstance(number, bool):
            try:
                return float(str(other)) == float(number)
            except ValueError:
                return False
    return False


# -- writes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """One record the write step sent.

    Attributes:
        lead_key: the lead.
        record_id: the system's record id (None when the system refused a new record).
        outcome: ``created``, ``updated``, ``unchanged`` or ``failed``.
        fields: what was sent, by the system's field names.
        before: the record as read from the system before the write (None: not read, so old
            values are unknown; ``{}`` for a record created).
        call: the API call it went in (:attr:`leadrelay.sync.write.Pending.call`).
        error: the system's message when it refused the record.
    """

    lead_key: str
    record_id: str | None
    outcome: str
    fields: Mapping[str, Any]
    before: Mapping[str, Any] | None
    call: str | None
    error: str | None = None

    @classmethod
    def of(
        cls,
        lead_key: str,
        result: WriteResult,
        fields: Mapping[str, Any],
        before: Mapping[str, Any] | None,
        call: str | None,
    ) -> Written:
        """What the write step's ``result`` says of one record sent with ``fields``."""
        error = None
        if not result.ok:
            error = (result.error.message or str(result.error)) if result.error else "refused"
        if before is None and result.outcome is WriteOutcome.CREATED:
            before = {}
        return cls(lead_key, result.external_id, result.outcome.value, fields, before, call, error)


def field_diff(
    fields: Mapping[str, Any], before: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """The fields a write changed, ``{field: {"old": …, "new": …}}``, values of secret or
    consent fields withheld. A field sent with the value it had is left out; with ``before``
    None (old values not read) every field sent is in, with ``new`` only."""
    if before is None:
        diff = {name: {"new": _plain(value)} for name, value in fields.items()}
    elif not before:
        diff = {
            name: {"old": None, "new": _plain(value)}
            for name, value in fields.items()
            if value not in (None, "")
        }
    else:
        old = {str(k).casefold(): v for k, v in before.items()}
        diff = {}
        for name, value in fields.items():
            was = old.get(name.casefold())
            if not _same(was, value):
                diff[name] = {"old": _plain(was), "new": _plain(value)}
    for name, change in diff.items():
        if _is_secret_key(name) or _is_consent_key(name):
            diff[name] = _withhold({name: change})[name]
    return diff


# -- the journal ----------------------------------------------------------------------------

#: The keys of a qualify row's details (:meth:`Journal.qualified`), of its breakdown and of its
#: routing. None is a secret or consent key, so nothing in the row is withheld and it is
#: built as :meth:`Journal._row` would show it, without walking it.
_QUALIFIED_KEYS = (
    "score",
    "breakdown",
    "reasons",
    "tier",
    "mql",
    "stage",
    "qualification_reason",
    "authority",
    "routing",
    "sla_due_at",
    "signal_problem",
    "fit",
    "intent",
    "engagement",
    "rule",
    "owner",
    "owner_name",
    "queue",
    "reason",
)
_QUALIFIED_SHOWN_AS_IS = not any(_is_secret_key(k) or _is_consent_key(k) for k in _QUALIFIED_KEYS)


#: ``json.dumps(value, ensure_ascii=False, default=str)``, with one encoder for every call
#: (``json.dumps`` makes an encoder per call when given options).
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


class Journal:
    """Builds journal rows (redacted) and appends them to the state store.

    Args:
        store: the state store.
        secrets: values to redact beyond the registered secrets.
    """

    def __init__(self, store: StateStore, *, secrets: Iterable[str] = ()) -> None:
        self.store = store
        self.secrets = [s for s in secrets if s]

    def row(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One journal row, redacted: ``lead_key, kind, system, summary`` and the keywords
        ``record_id``, ``at`` and details (see :meth:`_row`)."""
        return self.seal([self._row(*args, **kwargs)])[0]

    def _row(
        self,
        lead_key: str,
        kind: str,
        system: str,
        summary: str,
        *,
        record_id: str | None = None,
        at: datetime | None = None,
        changes: dict[str, dict[str, Any]] | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """One journal row, not yet redacted (:meth:`seal`): values under secret keys and
        consent text withheld, ``details`` with None values left out (``changes``: a
        :func:`field_diff`, withheld already)."""
        shown = _withhold(
            {
                k: v if type(v) in (dict, list) else _plain(v)
                for k, v in details.items()
                if v is not None
            }
        )
        if changes is not None:
            shown["changes"] = changes
        return {
            "lead_key": lead_key,
            "at": at or self.store.now(),
            "kind": kind,
            "system": system,
            "record_id": record_id,
            "summary": summary,
            "details": shown,
        }

    def seal(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with every secret and token shape removed from their summaries and
        details, in place. One :func:`redact` over the batch as JSON (the patterns know JSON),
        instead of one per value; text that would not read back as JSON is redacted value by
        value."""
        if not rows:
            return rows
        # Each row's details are serialized once: the text redacted here (the JSON of the
        # list, assembled from its items' JSON) is, when nothing in it needed redacting, what
        # the store keeps (:class:`JsonDocument`), not serialized a second time there.
        encode = _ENCODER.encode
        details = [encode(row["details"]) for row in rows]
        text = (
            "["
            + ", ".join(
                f"[{encode(row['summary'])}, {shown}]"
                for row, shown in zip(rows, details, strict=True)
            )
            + "]"
        )
        clean = redact(text, self.secrets)
        if clean == text:
            for row, shown in zip(rows, details, strict=True):
                if type(row["details"]) is dict:
                    row["details"] = JsonDocument(row["details"], shown)
            return rows
        try:
            parsed = json.loads(clean)
        except ValueError:
            parsed = None
        for index, row in enumerate(rows):
            if isinstance(parsed, list) and len(parsed) == len(rows):
                row["summary"], row["details"] = parsed[index]
            else:
                row["summary"] = redact(str(row["summary"]), self.secrets)
                row["details"] = redact_payload(row["details"], self.secrets)
        return rows

    def record(self, rows: list[dict[str, Any]], *, conn: Connection | None = None) -> None:
        """Redact ``rows`` (:meth:`seal`) and append them in one statement (in ``conn``'s
        transaction when given)."""
        self.store.add_journal(self.seal(rows), conn=conn)

    # -- what the steps record ------------------------------------------------------------

    def writes(
        self,
        system: str,
        writes: Iterable[Written],
        *,
        kind: str = "written",
        at: datetime | None = None,
        **context: Any,
    ) -> list[dict[str, Any]]:
        """The rows of a batch of writes to ``system`` (``kind``: ``written``, or ``written
        back`` for sales' verdict carried to the marketing system; ``context``: flow, run)."""
        moment = at or self.store.now()
        rows: list[dict[str, Any]] = []
        for write in writes:
            via = f" in {write.call}" if write.call else ""
            if write.error is not None:
                rows.append(
                    self._row(
                        write.lead_key,
                        "write failed",
                        system,
                        f"{system} refused the record{via}: {write.error}",
                        record_id=write.record_id,
                        at=moment,
                        call=write.call,
                        **context,
                    )
                )
                continue
            diff = field_diff(write.fields, write.before)
            changed = f"{len(diff)} field(s) changed" if diff else "no field changed"
            if write.before is None and write.outcome != "created":
                changed = f"{len(diff)} field(s) sent (old values not read)"
            rows.append(
                self._row(
                    write.lead_key,
                    kind,
                    system,
                    f"{write.outcome} record {write.record_id or '?'}{via}: {changed}",
                    record_id=write.record_id,
                    at=moment,
                    outcome=write.outcome,
                    call=write.call,
                    changes=diff,
                    **context,
                )
            )
        return self.seal(rows)

    def record_writes(
        self,
        system: str,
        writes: Iterable[Written],
        *,
        conn: Connection | None = None,
        **context: Any,
    ) -> None:
        """Append the rows of a batch of writes (:meth:`writes`) in one statement."""
        self.store.add_journal(self.writes(system, writes, **context), conn=conn)

    def qualified(
        self, lead: Lead, done: Qualification, system: str, *, at: datetime | None = None
    ) -> dict[str, Any]:
        """The row of one qualify step: score, breakdown, reasons, tier, routing, SLA due
        (redacted when recorded: :meth:`record`)."""
        score = done.score
        text = f"scored {score.total:g} ({score.tier.value}, {done.authority})"
        routing: dict[str, Any] | None = None
        if done.assignment is not None:
            who = (lead.owner.name or lead.owner.id) if lead.owner else None
            target = who or (f"queue {lead.queue}" if lead.queue else "nobody")
            text += f"; routed to {target} by {done.assignment.rule}: {done.assignment.reason}"
            routing = {
                "rule": done.assignment.rule,
                "owner": lead.owner.id if lead.owner else None,
                "owner_name": lead.owner.name if lead.owner else None,
                "queue": lead.queue,
                "reason": done.assignment.reason,
            }
        else:
            text += "; not routed (the record is not new to the destination, or its stage is "
            text += "not routed)"
        due = lead.sla_due_at
        if due is not None:
            text += f"; SLA due {due.isoformat()}"
        # What :meth:`_row` shows of these details, built as shown: their keys are fixed and
        # none is withheld (:data:`_QUALIFIED_SHOWN_AS_IS`), their values are of known types.
        breakdown = score.breakdown
        shown: dict[str, Any] = {
            "score": _plain(score.total),
            "breakdown": {
                "fit": breakdown.fit,
                "intent": breakdown.intent,
                "engagement": breakdown.engagement,
            },
            "reasons": list(score.reasons),
            "tier": _plain(score.tier.value),
            "mql": score.is_mql,
            "stage": _plain(lead.stage.value),
            "qualification_reason": _plain(score.qualification_reason),
            "authority": _plain(done.authority),
        }
        if routing is not None:
            shown["routing"] = routing
        if due is not None:
            shown["sla_due_at"] = due.isoformat()
        if done.signal_problem is not None:
            shown["signal_problem"] = _plain(done.signal_problem)
        return {
            "lead_key": lead.key,
            "at": at or self.store.now(),
            "kind": "qualified",
            "system": system,
            "record_id": None,
            "summary": text,
            "details": shown if _QUALIFIED_SHOWN_AS_IS else _withhold(shown),
        }

    def sla_checked(
        self,
        statuses: Iterable[SlaStatus],
        system: str,
        closed: set[str],
        escalation: EscalationOutcome | None = None,
        *,
        at: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The rows of an escalation check: each clock closed (met, on time or late, or
        breached and given up) and each escalation sent or failed. A clock still open and
        breached is recorded by the escalations it causes, not on every check."""
        moment = at or self.store.now()
        rows: list[dict[str, Any]] = []
        for status in statuses:
            if status.lead_key not in closed:
                continue
            due = f"due {status.due_at.isoformat()}"
            if status.met:
                late = f", {status.minutes_late:g} min late" if status.minutes_late else " on time"
                kind, text = "sla met", f"{status.kind.value} clock met{late} ({due})"
            else:
                kind = "sla breached"
                text = f"{status.kind.value} clock breached and closed unmet ({due})"
            shown = {k: v for k, v in status.to_dict().items() if k not in ("lead_key", "kind")}
            shown["clock"] = status.kind.value
            rows.append(self._row(status.lead_key, kind, system, text, at=moment, **shown))
        if escalation is not None:
            for delivery, kind in (
                *((d, "escalated") for d in escalation.sent),
                *((d, "escalation failed") for d in escalation.failed),
            ):
                text = f"{delivery.kind.value} clock breached: {kind} via {delivery.channel}"
                rows.append(
                    self._row(
                        delivery.lead_key,
                        kind,
                        system,
                        text + (f": {delivery.error}" if delivery.error else ""),
                        at=moment,
                        clock=delivery.kind.value,
                        channel=delivery.channel,
                    )
                )
        return self.seal(rows)

    def repairs(
        self,
        lead: Lead,
        submitted: Mapping[str, Any],
        system: str,
        *,
        record_id: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any] | None:
        """The row of what normalization changed between the mapped values and the Lead
        (e-mail case, phone in E.164, country code…), or None when it kept every value
        (redacted with the rest of its batch: :meth:`arrivals`)."""
        stored = lead.model_dump(mode="json")
        repaired = {
            name: {"submitted": _plain(value), "stored": _plain(stored.get(name))}
            for name, value in submitted.items()
            if name in stored
            and not isinstance(value, Mapping | list)
            and not _same(value, stored.get(name))
        }
        if not repaired:
            return None
        return self._row(
            lead.key,
            "normalized",
            system,
            f"normalization repaired {', '.join(sorted(repaired))}",
            record_id=record_id,
            at=at,
            repairs=repaired,
        )

    def matched(self, lead_key: str, system: str, record_id: str, relinked: bool) -> dict[str, Any]:
        """The row of a sync that found the lead's record in ``system`` by e-mail instead of
        creating one: a record already there, or the survivor of a merge (``relinked``)."""
        if relinked:
            text = (
                f"its linked {system} record is gone (merged away): relinked to record "
                f"{record_id}, which holds its e-mail"
            )
        else:
            text = (
                f"{system} already held it as record {record_id} (same e-mail): linked, not created"
            )
        return self.row(
            lead_key, "deduplicated", system, text, record_id=record_id, matched_on="email"
        )

    def arrivals(
        self, arrived: Iterable[tuple[Lead, Mapping[str, Any], str, str, str | None]]
    ) -> list[dict[str, Any]]:
        """The rows of captured leads once identified: ``(lead, submitted values, inbox key,
        form, identity e-mail)``. What normalization repaired, and a receipt that joined a
        lead already known (its e-mail is that lead's) with the reason."""
        rows: list[dict[str, Any]] = []
        moment = self.store.now()
        for lead, submitted, inbox_key, form, identity in arrived:
            repaired = self.repairs(lead, submitted, form, record_id=inbox_key, at=moment)
            if repaired is not None:
                rows.append(repaired)
            if lead.key != inbox_key:
                rows.append(
                    self._row(
                        lead.key,
                        "deduplicated",
                        form,
                        f"receipt {inbox_key} joined lead {lead.key}: the e-mail {identity} "
                        "is already that lead's (one person, one record)",
                        record_id=inbox_key,
                        at=moment,
                        inbox_key=inbox_key,
                        matched_on="email",
                    )
                )
        return self.seal(rows)
