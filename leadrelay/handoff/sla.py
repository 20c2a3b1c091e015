"""SLA clocks of the lead handoff (DESIGN §12): hot leads, MQL verdicts, unassigned leads.

Three clocks, each with a start, a due time and a moment it is met:

``hot``
    A lead of tier hot must get a first action (call, e-mail, meeting) within ``hot_hours`` of
    arriving (``created_at``). Met at ``first_action_at``.
``mql``
    A lead that reached MQL must be accepted or rejected within ``mql_hours`` of being handed to
    sales (``assigned_at``, or ``created_at`` when it was never assigned). Met at
    ``accepted_at``; a rejection (a ``rejection_reason``) is met at ``first_action_at``, the
    moment sales acted on it.
``unassigned``
    Every lead must have an owner within ``unassigned_hours`` of arriving. Met at
    ``assigned_at``.

When a verdict is known but its time was not read back from the CRM (an owner without
``assigned_at``, a stage past SAL without ``accepted_at``), the clock counts as on time with
``met_at`` None: a breach is never invented from a missing timestamp.

With ``[sla.business_hours]`` configured, every clock counts only business time: the
weekdays and the local hours given, minus holidays, in the configured time zone. A lead
arriving Friday 17:30 with 09:00–18:00 hours and a 1-hour SLA is due Monday 09:30. Elapsed
time inside a business day is real (UTC) time, so DST changes are honoured.

The ``[sla]`` table of ``leadrelay.toml``::

    [sla]
    hot_hours = 1
    mql_hours = 24
    unassigned_hours = 12
    at_risk_share = 0.25            # pending clocks with less than this share left are at risk

    [sla.business_hours]            # optional
    timezone = "Europe/Berlin"
    days = ["mon", "tue", "wed", "thu", "fri"]
    start = "09:00"
    end = "18:00"
    holidays = ["2024-12-25", "2024-12-26"]

    [sla.escalation]                # optional; see leadrelay.handoff.escalation
    crm_task = true
    [sla.escalation.email]
    host = "smtp.example.com"
    port = 587
    starttls = true
    username = "alerts@example.com"
    password = "${SMTP_PASSWORD}"
    from_addr = "alerts@example.com"
    to = ["sales-ops@example.com"]
    [sla.escalation.slack]
    webhook_url = "${SLACK_WEBHOOK_URL}"
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from leadrelay.config import Config, ConfigError
from leadrelay.handoff.scoring import set_checked
from leadrelay.model import STAGE_ORDER, Lead, Stage, Tier

__all__ = [
    "BusinessHours",
    "ClockKind",
    "EmailSettings",
    "EscalationSettings",
    "SlaCalendar",
    "SlaConfig",
    "SlaError",
    "SlaState",
    "SlaStatus",
    "SlackSettings",
    "add_business_time",
    "apply_due",
    "clocks_for",
    "due_at",
    "evaluate",
    "load_sla_config",
    "parse_sla_table",
]

_WEEKDAYS: dict[str, int] = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_MAX_DAYS_SCANNED = 3700
"""Longest run of days searched for business time (ten years of holidays stops the search)."""


class SlaError(ValueError):
    """A clock cannot be computed for a lead (names the lead and the field)."""


class ClockKind(StrEnum):
    """Which SLA a clock measures."""

    HOT = "hot"
    MQL = "mql"
    UNASSIGNED = "unassigned"


class SlaState(StrEnum):
    """Where a clock stands at the evaluation time."""

    ON_TIME = "on_time"
    BREACHED = "breached"
    PENDING = "pending"
    AT_RISK = "at_risk"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusinessHours(_Settings):
    """``[sla.business_hours]``: when SLA clocks run.

    Keys:
        timezone: an IANA zone name (``Europe/Berlin``); default UTC.
        days: weekday names (``mon`` … ``sun``); default Monday to Friday.
        start, end: local wall-clock hours, ``HH:MM``; default 09:00–18:00; end after start.
        holidays: local dates on which no clock runs.
    """

    timezone: str = "UTC"
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: time = time(9, 0)
    end: time = time(18, 0)
    holidays: frozenset[date] = frozenset()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(day.strip().lower()[:3] for day in value)
        unknown = [day for day, name in zip(value, names, strict=True) if name not in _WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown weekday {unknown[0]!r} (use mon, tue, … sun)")
        if not names:
            raise ValueError("needs at least one business day")
        return names

    @model_validator(mode="after")
    def _window(self) -> BusinessHours:
        if self.end <= self.start:
            raise ValueError(f"end {self.end:%H:%M} must be after start {self.start:%H:%M}")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)

    @property
    def weekdays(self) -> frozenset[int]:
        """Business weekdays as ``date.weekday()`` numbers."""
        return frozenset(_WEEKDAYS[day] for day in self.days)

    def is_business_day(self, day: date) -> bool:
        """Whether clocks run on this local date."""
        return day.weekday() in self.weekdays and day not in self.holidays

    def window(self, day: date) -> tuple[datetime, datetime]:
        """The business window of a local date, as aware UTC times."""
        zone = self.zone
        opens = datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)
        closes = datetime.combine(day, self.end, tzinfo=zone).astimezone(UTC)
        return opens, closes


class EmailSettings(_Settings):
    """``[sla.escalation.email]``: where breach e-mails go (SMTP).

    Keys:
        host, port: the SMTP server (port 587 by default).
        starttls: upgrade the connection with STARTTLS before logging in (default true).
        username, password: SMTP login, optional; the password is a secret.
        from_addr: the sender; to: one or more recipients.
        timeout_s: socket timeout (default 30 s).
    """

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    from_addr: EmailStr
    to: tuple[EmailStr, ...] = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _login(self) -> EmailSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class SlackSettings(_Settings):
    """``[sla.escalation.slack]``: a Slack incoming webhook (the URL is a secret)."""

    webhook_url: SecretStr
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if not url.startswith(("https://", "http://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return SecretStr(url)


class EscalationSettings(_Settings):
    """``[sla.escalation]``: the channels a breach escalates through.

    Keys:
        crm_task: create a task on the CRM record (default true).
        email: :class:`EmailSettings`, optional.
        slack: :class:`SlackSettings`, optional.
    """

    crm_task: bool = True
    email: EmailSettings | None = None
    slack: SlackSettings | None = None


class SlaConfig(_Settings):
    """The ``[sla]`` table: clock lengths in hours, business hours, escalation channels."""

    hot_hours: float = Field(default=1.0, gt=0)
    mql_hours: float = Field(default=24.0, gt=0)
    unassigned_hours: float = Field(default=12.0, gt=0)
    at_risk_share: float = Field(default=0.25, ge=0, lt=1)
    business_hours: BusinessHours | None = None
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)

    def hours(self, kind: ClockKind) -> float:
        """The length of one clock in (business) hours."""
        return {
            ClockKind.HOT: self.hot_hours,
            ClockKind.MQL: self.mql_hours,
            ClockKind.UNASSIGNED: self.unassigned_hours,
        }[kind]


def load_sla_config(config: Config) -> SlaConfig:
    """The typed ``[sla]`` table of a loaded config.

    Raises ConfigError naming the config file, the ``sla.…`` key and the reason.
    """
    return parse_sla_table(config.sla, file=str(config.path))


def parse_sla_table(table: dict[str, Any], *, file: str = "leadrelay.toml") -> SlaConfig:
    """Validate an ``[sla]`` table; ConfigError lists every problem as ``sla.key: reason``."""
    try:
        return SlaConfig.model_validate(table)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in ("sla", *error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise ConfigError(file, problems) from None


# ---------------------------------------------------------------------------------------------
# business time


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise SlaError(f"{what} is a naive datetime ({value.isoformat()}); give an aware time")
    return value.astimezone(UTC)


def add_business_time(
    start: datetime, duration: timedelta, hours: BusinessHours | None
) -> datetime:
    """``start`` plus ``duration`` of business time (plain time without business hours).

    The result is aware UTC. Time is counted only inside each business day's local window;
    a start outside business hours begins counting at the next opening.
    """
    if hours is None:
        return _counted(start, duration, None, None)

    def window(day: date) -> tuple[datetime, datetime] | None:
        return hours.window(day) if hours.is_business_day(day) else None

    return _counted(start, duration, hours.zone, window)


_ONE_DAY = timedelta(days=1)


def _counted(
    start: datetime,
    duration: timedelta,
    zone: tzinfo | None,
    window: Callable[[date], tuple[datetime, datetime] | None] | None,
) -> datetime:
    """``start`` plus ``duration``, counted only inside each local day's business ``window``
    (opening and closing in UTC, None for a day off); plain time without one."""
    begin = _aware(start, "start")
    if duration < timedelta(0):
        raise SlaError(f"duration must not be negative, got {duration}")
    if window is None or zone is None:
        return begin + duration
    remaining = duration
    day = begin.astimezone(zone).date()
    cursor = begin
    for _ in range(_MAX_DAYS_SCANNED):
        hours = window(day)
        if hours is not None:
            opens, closes = hours
            cursor = max(cursor, opens)
            if cursor < closes:
                available = closes - cursor
                if remaining <= available:
                    return cursor + remaining
                remaining -= available
                cursor = closes
        day += _ONE_DAY
    raise SlaError(f"no business time found within {_MAX_DAYS_SCANNED} days of {begin}")


class SlaCalendar:
    """The due times of one ``[sla]`` table, for a qualify step that sets one per lead.

    Worked out once, not per lead: each clock's length, and with business hours each local
    day's window (whether it is a business day, its opening and closing in UTC), kept for
    the next lead whose clock runs over the same days. :meth:`add` gives what
    :func:`add_business_time` gives.
    """

    def __init__(self, config: SlaConfig) -> None:
        self.config = config
        self._lengths = {kind: timedelta(hours=config.hours(kind)) for kind in ClockKind}
        self._hours = config.business_hours
        self._windows: dict[date, tuple[datetime, datetime] | None] = {}
        if self._hours is not None:
            self._zone = self._hours.zone
            self._weekdays = self._hours.weekdays
            self._holidays = self._hours.holidays

    def _window(self, day: date) -> tuple[datetime, datetime] | None:
        """The business window of a local date, None for a day off."""
        try:
            return self._windows[day]
        except KeyError:
            pass
        assert self._hours is not None
        window = None
        if day.weekday() in self._weekdays and day not in self._holidays:
            window = self._hours.window(day)
        self._windows[day] = window
        return window

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """``start`` plus ``duration`` of business time, as :func:`add_business_time`."""
        if self._hours is None:
            return _counted(start, duration, None, None)
        return _counted(start, duration, self._zone, self._window)

    def due_at(self, lead: Lead, kind: ClockKind) -> datetime:
        """When the ``kind`` clock of ``lead`` is due, as :func:`due_at` with this config."""
        return self.add(_start(lead, kind), self._lengths[kind])


# ---------------------------------------------------------------------------------------------
# clocks


@dataclass(frozen=True)
class SlaStatus:
    """One clock of one lead at an evaluation time.

    ``met`` is whether the clock's event happened (its time may be unknown: ``met_at`` None);
    ``minutes_late`` is how late it was met, or how overdue it is now (0 when on time).
    """

    lead_key: str
    kind: ClockKind
    started_at: datetime
    due_at: datetime
    met_at: datetime | None
    met: bool
    state: SlaState
    minutes_late: float

    @property
    def open_breach(self) -> bool:
        """Breached and still not met: what escalation acts on."""
        return self.state is SlaState.BREACHED and not self.met

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "lead_key": self.lead_key,
            "kind": self.kind.value,
            "started_at": self.started_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "met_at": self.met_at.isoformat() if self.met_at else None,
            "met": self.met,
            "state": self.state.value,
            "minutes_late": round(self.minutes_late, 1),
        }


def _reached_mql(lead: Lead) -> bool:
    return STAGE_ORDER[lead.stage] >= STAGE_ORDER[Stage.MQL] or lead.rejection_reason is not None


def clocks_for(lead: Lead) -> list[ClockKind]:
    """The clocks that run for a lead: hot for tier hot, mql once it reached MQL, and the
    unassigned clock for every lead."""
    kinds = []
    if lead.tier is Tier.HOT:
        kinds.append(ClockKind.HOT)
    if _reached_mql(lead):
        kinds.append(ClockKind.MQL)
    kinds.append(ClockKind.UNASSIGNED)
    return kinds


def _start(lead: Lead, kind: ClockKind) -> datetime:
    if kind is ClockKind.MQL and lead.assigned_at is not None:
        at, name = lead.assigned_at, "assigned_at"
    else:
        at, name = lead.created_at, "created_at"
    if at.tzinfo is not None and at.utcoffset() is not None:
        return at.astimezone(UTC)
    return _aware(at, f"lead {lead.key} {name}")


def _met(lead: Lead, kind: ClockKind) -> tuple[bool, datetime | None]:
    """Whether the clock's event happened, and when (None when the CRM gave no time)."""
    if kind is ClockKind.HOT:
        if lead.first_action_at is None:
            return False, None
        return True, _aware(lead.first_action_at, f"lead {lead.key} first_action_at")
    if kind is ClockKind.UNASSIGNED:
        if lead.assigned_at is not None:
            return True, _aware(lead.assigned_at, f"lead {lead.key} assigned_at")
        return lead.owner is not None, None
    if lead.accepted_at is not None:
        return True, _aware(lead.accepted_at, f"lead {lead.key} accepted_at")
    rejected = lead.rejection_reason is not None or lead.stage is Stage.DISQUALIFIED
    if rejected:
        if lead.first_action_at is not None:
            return True, _aware(lead.first_action_at, f"lead {lead.key} first_action_at")
        return True, None
    accepted = STAGE_ORDER[lead.stage] >= STAGE_ORDER[Stage.SAL]
    return accepted, None


def due_at(lead: Lead, kind: ClockKind, config: SlaConfig | None = None) -> datetime:
    """When the ``kind`` clock of ``lead`` is due (aware UTC), honouring business hours."""
    settings = config or SlaConfig()
    length = timedelta(hours=settings.hours(kind))
    return add_business_time(_start(lead, kind), length, settings.business_hours)


def _status(lead: Lead, kind: ClockKind, now: datetime, config: SlaConfig) -> SlaStatus:
    started = _start(lead, kind)
    due = due_at(lead, kind, config)
    met, met_at = _met(lead, kind)
    if met:
        late = (met_at - due) if met_at is not None else timedelta(0)
        state = SlaState.BREACHED if late > timedelta(0) else SlaState.ON_TIME
    else:
        late = now - due
        if late > timedelta(0):
            state = SlaState.BREACHED
        else:
            risk_from = due - (due - started) * config.at_risk_share
            state = SlaState.AT_RISK if now >= risk_from else SlaState.PENDING
    minutes = max(late.total_seconds(), 0.0) / 60.0
    return SlaStatus(lead.key, kind, started, due, met_at, met, state, minutes)


def evaluate(
    leads: Iterable[Lead], now: datetime, config: SlaConfig | None = None
) -> list[SlaStatus]:
    """Every clock of every lead at ``now``; test leads are left out."""
    settings = config or SlaConfig()
    moment = _aware(now, "now")
    return [
        _status(lead, kind, moment, settings)
        for lead in leads
        if not lead.is_test
        for kind in clocks_for(lead)
    ]


def apply_due(
    lead: Lead, config: SlaConfig | None = None, *, calendar: SlaCalendar | None = None
) -> Lead:
    """Set ``lead.sla_due_at`` to the due time of the clock sales answers to first.

    That is the hot clock for a hot lead, else the MQL clock once the lead is an MQL, else the
    unassigned clock while it has no owner; otherwise the field is cleared. Returns the lead.
    ``calendar`` (of ``config``) works the due time out with what it kept from earlier leads.
    """
    kinds = clocks_for(lead)
    chosen: ClockKind | None = None
    for kind in (ClockKind.HOT, ClockKind.MQL):
        if kind in kinds:
            chosen = kind
            break
    if chosen is None and lead.owner is None:
        chosen = ClockKind.UNASSIGNED
    due: datetime | None = None
    if chosen is not None and calendar is not None:
        due = calendar.due_at(lead, chosen)
    elif chosen is not None:
        due = due_at(lead, chosen, config)
    set_checked(lead, {"sla_due_at": due})
    return lead
