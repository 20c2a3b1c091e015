"""Escalation of SLA breaches: a CRM task on the record, an e-mail, a Slack message.

An :class:`Escalator` takes the open breaches of :func:`leadrelay.handoff.sla.evaluate` (breached
and still not met) and sends each through every configured channel. Each breach goes out once per
channel: what was sent is kept in a :class:`SentLog`, so a breach seen again on the next run is
not sent again, and a channel that failed is tried again on the next run without repeating the
others.

Channels:

* :class:`CrmTaskChannel` creates a task on the lead's CRM record through a
  :class:`TaskCreator` the connector layer provides (``create_task(record_id, subject, body,
  due)``); :class:`InMemoryTaskCreator` is a CRM-free one for tests and dry runs.
* :class:`EmailChannel` sends an e-mail with :mod:`smtplib` (STARTTLS and login optional).
* :class:`SlackChannel` posts ``{"text": …}`` to a Slack incoming webhook with httpx.

Secrets (the SMTP password, the webhook URL, whose path is its credential) never reach logs or
error messages: failures name the host only.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import ssl
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from leadrelay.handoff.sla import (
    ClockKind,
    EmailSettings,
    EscalationSettings,
    SlackSettings,
    SlaStatus,
)
from leadrelay.model import Lead

__all__ = [
    "Breach",
    "Channel",
    "CrmTaskChannel",
    "Delivery",
    "EmailChannel",
    "EscalationError",
    "EscalationOutcome",
    "Escalator",
    "InMemorySentLog",
    "InMemoryTaskCreator",
    "JsonFileSentLog",
    "SentLog",
    "SlackChannel",
    "TaskCreator",
    "build_escalator",
    "redact_url",
]

logger = logging.getLogger("leadrelay.handoff.escalation")

_WHAT_WAS_DUE: dict[ClockKind, str] = {
    ClockKind.HOT: "first action on a hot lead",
    ClockKind.MQL: "accept or reject the MQL",
    ClockKind.UNASSIGNED: "assign an owner",
}


class EscalationError(Exception):
    """A channel could not deliver an escalation (the message names no secret)."""


class _WebhookUrlFilter(logging.Filter):
    """Replaces webhook URLs in records of the ``httpx`` logger, which logs each request URL."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = message
        for url in self.urls:
            cleaned = cleaned.replace(url, redact_url(url))
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


_URL_FILTER = _WebhookUrlFilter()


def _hide_url_from_httpx_logs(url: str) -> None:
    _URL_FILTER.urls.add(url)
    httpx_logger = logging.getLogger("httpx")
    if _URL_FILTER not in httpx_logger.filters:
        httpx_logger.addFilter(_URL_FILTER)


def redact_url(url: str) -> str:
    """A URL reduced to scheme and host (``https://hooks.slack.com/***``): safe to show."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/***"


@dataclass(frozen=True)
class Breach:
    """An open SLA breach of one lead, with what a message about it needs."""

    status: SlaStatus
    lead: Lead
    now: datetime

    @property
    def who(self) -> str:
        """The lead as a person would name it: name, e-mail and company where known."""
        name = self.lead.full_name
        parts = [name] if name else []
        if self.lead.email:
            parts.append(f"<{self.lead.email}>" if name else self.lead.email)
        if self.lead.company:
            parts.append(f"({self.lead.company})")
        return " ".join(parts) or self.lead.key

    def subject(self) -> str:
        """One line naming the breach and the lead."""
        late = _duration(self.status.minutes_late)
        return f"SLA breach ({self.status.kind.value}): {self.who}, {late} overdue"

    def text(self) -> str:
        """The message body: what was due, when, how late, who owns the lead."""
        status = self.status
        owner = self.lead.owner
        owner_text = (owner.email or owner.name or owner.id) if owner else "nobody (unassigned)"
        lines = [
            f"SLA breached: {_WHAT_WAS_DUE[status.kind]}.",
            f"Lead: {self.who} [{self.lead.key}]",
            f"Clock started: {_utc(status.started_at)}",
            f"Due: {_utc(status.due_at)} ({_duration(status.minutes_late)} overdue)",
            f"Owner: {owner_text}",
        ]
        if self.lead.tier is not None:
            lines.append(f"Tier: {self.lead.tier.value}")
        if self.lead.form_id:
            lines.append(f"Form: {self.lead.form_id}")
        return "\n".join(lines)


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(minutes: float) -> str:
    whole = round(minutes)
    if whole < 60:
        return f"{whole} min"
    hours, rest = divmod(whole, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


# ---------------------------------------------------------------------------------------------
# channels


@runtime_checkable
class Channel(Protocol):
    """Somewhere an escalation goes. ``name`` tells channels apart in the sent log."""

    name: str

    def send(self, breach: Breach) -> None:
        """Deliver one breach; raise :class:`EscalationError` when it cannot."""


class TaskCreator(Protocol):
    """Creates a task on a CRM record; the connector layer implements it per CRM."""

    def create_task(self, record_id: str, subject: str, body: str, due: datetime) -> str:
        """Create the task and return its id in the CRM."""


@dataclass(frozen=True)
class CreatedTask:
    """A task :class:`InMemoryTaskCreator` holds."""

    id: str
    record_id: str
    subject: str
    body: str
    due: datetime


@dataclass
class InMemoryTaskCreator:
    """A :class:`TaskCreator` that keeps tasks in a list (tests, dry runs, the demo)."""

    tasks: list[CreatedTask] = field(default_factory=list)

    def create_task(self, record_id: str, subject: str, body: str, due: datetime) -> str:
        """Store the task; its id is ``task-N``."""
        task_id = f"task-{len(self.tasks) + 1}"
        self.tasks.append(CreatedTask(task_id, record_id, subject, body, due))
        return task_id


class CrmTaskChannel:
    """A task on the lead's record in one CRM connection, due at once."""

    def __init__(self, creator: TaskCreator, connection: str) -> None:
        self.creator = creator
        self.connection = connection
        self.name = f"crm_task:{connection}"

    def send(self, breach: Breach) -> None:
        """Create the task on the record the lead is linked to in ``connection``."""
        record_id = breach.lead.external_ids.get(self.connection)
        if not record_id:
            raise EscalationError(
                f"lead {breach.lead.key} has no record in connection {self.connection!r}"
            )
        self.creator.create_task(record_id, breach.subject(), breach.text(), breach.now)


class EmailChannel:
    """An e-mail per breach over SMTP."""

    name = "email"

    def __init__(self, settings: EmailSettings, *, tls_context: ssl.SSLContext | None = None):
        self.settings = settings
        self.tls_context = tls_context or ssl.create_default_context()

    def message(self, breach: Breach) -> EmailMessage:
        """The e-mail for a breach."""
        message = EmailMessage()
        message["Subject"] = breach.subject()
        message["From"] = self.settings.from_addr
        message["To"] = ", ".join(self.settings.to)
        message.set_content(breach.text())
        return message

    def send(self, breach: Breach) -> None:
        """Connect, optionally STARTTLS and log in, and send the message."""
        settings = self.settings
        try:
            with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as smtp:
                smtp.ehlo()
                if settings.starttls:
                    smtp.starttls(context=self.tls_context)
                    smtp.ehlo()
                if settings.username is not None and settings.password is not None:
                    smtp.login(settings.username, settings.password.get_secret_value())
                smtp.send_message(self.message(breach))
        except smtplib.SMTPAuthenticationError as exc:
            raise EscalationError(
                f"SMTP {settings.host}:{settings.port} refused the login of "
                f"{settings.username!r} ({exc.smtp_code})"
            ) from None
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            reason = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            raise EscalationError(
                f"SMTP {settings.host}:{settings.port} answered {exc.smtp_code} {reason}".rstrip()
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise EscalationError(
                f"SMTP {settings.host}:{settings.port} failed: {type(exc).__name__}: {exc}"
            ) from None


class SlackChannel:
    """A message per breach to a Slack incoming webhook."""

    name = "slack"

    def __init__(self, settings: SlackSettings, *, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self._client = client
        _hide_url_from_httpx_logs(settings.webhook_url.get_secret_value())

    def payload(self, breach: Breach) -> dict[str, str]:
        """The webhook body: Slack incoming webhooks take ``{"text": …}`` (mrkdwn)."""
        return {"text": f"*{breach.subject()}*\n{breach.text()}"}

    def send(self, breach: Breach) -> None:
        """POST the message; anything but 2xx is an :class:`EscalationError`."""
        url = self.settings.webhook_url.get_secret_value()
        shown = redact_url(url)
        try:
            if self._client is not None:
                response = self._client.post(url, json=self.payload(breach))
            else:
                with httpx.Client(timeout=self.settings.timeout_s) as client:
                    response = client.post(url, json=self.payload(breach))
        except httpx.HTTPError as exc:
            # httpx puts the request URL into some messages: show only the error's kind.
            raise EscalationError(f"Slack webhook {shown} failed: {type(exc).__name__}") from None
        if not response.is_success:
            body = response.text[:200].strip()
            raise EscalationError(
                f"Slack webhook {shown} answered {response.status_code}: {body}".rstrip(": ")
            )


# ---------------------------------------------------------------------------------------------
# what was sent


class SentLog(Protocol):
    """Remembers which (lead, clock, channel) escalations went out."""

    def was_sent(self, lead_key: str, kind: ClockKind, channel: str) -> bool:
        """Whether this breach already went out through this channel."""

    def mark_sent(self, lead_key: str, kind: ClockKind, channel: str, at: datetime) -> None:
        """Record that it did."""


@dataclass
class InMemorySentLog:
    """A :class:`SentLog` for one process."""

    sent: dict[tuple[str, str, str], datetime] = field(default_factory=dict)

    def was_sent(self, lead_key: str, kind: ClockKind, channel: str) -> bool:
        """Whether this breach already went out through this channel."""
        return (lead_key, kind.value, channel) in self.sent

    def mark_sent(self, lead_key: str, kind: ClockKind, channel: str, at: datetime) -> None:
        """Record that it did."""
        self.sent[(lead_key, kind.value, channel)] = at


class JsonFileSentLog:
    """A :class:`SentLog` kept in a JSON file, so cron runs do not repeat escalations.

    The file is rewritten atomically (a temporary file renamed over it) after each mark.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._sent: dict[str, str] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise EscalationError(f"cannot read escalation log {self.path}: {exc}") from None
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise EscalationError(f"escalation log {self.path} is not a JSON object of times")
            self._sent = dict(data)

    @staticmethod
    def _key(lead_key: str, kind: ClockKind, channel: str) -> str:
        return f"{lead_key}|{kind.value}|{channel}"

    def was_sent(self, lead_key: str, kind: ClockKind, channel: str) -> bool:
        """Whether this breach already went out through this channel."""
        return self._key(lead_key, kind, channel) in self._sent

    def mark_sent(self, lead_key: str, kind: ClockKind, channel: str, at: datetime) -> None:
        """Record that it did, and save the file."""
        self._sent[self._key(lead_key, kind, channel)] = at.isoformat()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".escalations-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(self._sent, out, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


# ---------------------------------------------------------------------------------------------
# the escalator


@dataclass(frozen=True)
class Delivery:
    """One breach through one channel; ``error`` is set when it failed."""

    lead_key: str
    kind: ClockKind
    channel: str
    error: str | None = None


@dataclass
class EscalationOutcome:
    """What one :meth:`Escalator.escalate` call did."""

    sent: list[Delivery] = field(default_factory=list)
    already_sent: list[Delivery] = field(default_factory=list)
    failed: list[Delivery] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No channel failed."""
        return not self.failed


class Escalator:
    """Sends each open breach once through each channel."""

    def __init__(self, channels: Sequence[Channel], sent_log: SentLog | None = None) -> None:
        names = [channel.name for channel in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"escalation channels must have distinct names, got {names}")
        self.channels = list(channels)
        self.sent_log: SentLog = sent_log if sent_log is not None else InMemorySentLog()

    def escalate(
        self,
        statuses: Iterable[SlaStatus],
        leads: Mapping[str, Lead] | Iterable[Lead],
        now: datetime,
    ) -> EscalationOutcome:
        """Escalate every open breach among ``statuses``; test leads never escalate.

        ``leads`` are the leads the statuses were evaluated from (by key, or a sequence).
        A status whose lead is missing is reported as failed on every channel.
        """
        by_key = dict(leads) if isinstance(leads, Mapping) else {lead.key: lead for lead in leads}
        outcome = EscalationOutcome()
        for status in statuses:
            if not status.open_breach:
                continue
            lead = by_key.get(status.lead_key)
            if lead is not None and lead.is_test:
                continue
            for channel in self.channels:
                self._one(channel, status, lead, now, outcome)
        return outcome

    def _one(
        self,
        channel: Channel,
        status: SlaStatus,
        lead: Lead | None,
        now: datetime,
        outcome: EscalationOutcome,
    ) -> None:
        key, kind = status.lead_key, status.kind
        if self.sent_log.was_sent(key, kind, channel.name):
            outcome.already_sent.append(Delivery(key, kind, channel.name))
            return
        if lead is None:
            error = f"lead {key} is not among the leads given"
        else:
            try:
                channel.send(Breach(status, lead, now))
            except EscalationError as exc:
                error = str(exc)
            else:
                self.sent_log.mark_sent(key, kind, channel.name, now)
                outcome.sent.append(Delivery(key, kind, channel.name))
                logger.info("escalated %s breach of lead %s via %s", kind.value, key, channel.name)
                return
        logger.warning(
            "could not escalate %s breach of lead %s via %s: %s",
            kind.value,
            key,
            channel.name,
            error,
        )
        outcome.failed.append(Delivery(key, kind, channel.name, error))


def build_escalator(
    settings: EscalationSettings,
    *,
    task_creator: TaskCreator | None = None,
    crm_connection: str | None = None,
    sent_log: SentLog | None = None,
    http_client: httpx.Client | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> Escalator:
    """The escalator ``[sla.escalation]`` describes.

    The CRM task channel is added when ``crm_task`` is on and a ``task_creator`` for
    ``crm_connection`` is given (the connector layer supplies it).
    """
    channels: list[Channel] = []
    if settings.crm_task and task_creator is not None:
        if not crm_connection:
            raise ValueError("a CRM task channel needs the connection its records live in")
        channels.append(CrmTaskChannel(task_creator, crm_connection))
    if settings.email is not None:
        channels.append(EmailChannel(settings.email, tls_context=tls_context))
    if settings.slack is not None:
        channels.append(SlackChannel(settings.slack, client=http_client))
    return Escalator(channels, sent_log)
