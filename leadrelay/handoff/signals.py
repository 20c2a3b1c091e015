"""Activity signals: what a lead did, and when, as scoring reads it (DESIGN §12).

Signals come from three places, all declarative:

* page URLs of submissions (the landing page, the form's page): :func:`signals_from_url`
  classifies the path by :class:`UrlPattern` regular expressions;
* the marketing system's counters and flags (HubSpot ``hs_email_open``,
  ``num_conversion_events``, ``hs_email_optout`` …): :func:`signals_from_fields` reads them by a
  list of :class:`FieldSignal`;
* names already on the Lead (``Lead.intent_signals``): :func:`signals_from_lead`, dated by the
  lead's latest update.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from leadrelay.model import Lead


class Category(StrEnum):
    """Scoring category of a signal or rule (DESIGN §12: fit, intent, engagement)."""

    FIT = "fit"
    INTENT = "intent"
    ENGAGEMENT = "engagement"


@dataclass(frozen=True)
class Signal:
    """One thing a lead did.

    Attributes:
        name: what it was (``pricing_page``, ``demo_request``, ``email_open`` …).
        category: the category it speaks for by default.
        at: when it happened (timezone-aware).
        source: where leadrelay learnt it (a URL, ``hubspot:hs_email_open``, ``lead``).
        count: how many times, for counters read from a marketing system.
    """

    name: str
    category: Category
    at: datetime
    source: str
    count: int = 1

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError(f"signal {self.name!r} from {self.source}: 'at' has no timezone")
        if self.count < 1:
            raise ValueError(f"signal {self.name!r} from {self.source}: count must be >= 1")


class UrlPattern(BaseModel):
    """A page-path pattern: a path matching ``pattern`` (``re.search``, case-insensitive) is a
    signal called ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    category: Category
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


#: Default page patterns, tried in order; the first that matches names the signal. Patterns
#: match whole path segments so that ``/blog/new-pricing-tips`` is a blog post, not pricing.
DEFAULT_URL_PATTERNS: tuple[UrlPattern, ...] = (
    UrlPattern(
        name="demo_request",
        category=Category.INTENT,
        pattern=r"(^|/)(demo|contact-sales)(/|$)|request-demo",
    ),
    UrlPattern(name="pricing_page", category=Category.INTENT, pattern=r"(^|/)pricing(/|$)"),
    UrlPattern(name="case_study", category=Category.INTENT, pattern=r"(^|/)case-stud(y|ies)"),
    UrlPattern(name="webinar", category=Category.ENGAGEMENT, pattern=r"(^|/)webinars?(/|$)"),
    UrlPattern(name="docs", category=Category.INTENT, pattern=r"(^|/)docs(/|$)"),
    UrlPattern(name="job_seeker", category=Category.FIT, pattern=r"(^|/)(careers|jobs)(/|$)"),
    UrlPattern(name="blog_post", category=Category.ENGAGEMENT, pattern=r"(^|/)blog/."),
)


def signals_from_url(
    url: str | None,
    at: datetime,
    patterns: Sequence[UrlPattern] = DEFAULT_URL_PATTERNS,
) -> list[Signal]:
    """The signal a page URL stands for (at most one: the first pattern that matches its path).

    ``url`` may be a full URL or a bare path; the query and fragment are ignored.
    """
    if not url or not url.strip():
        return []
    text = url.strip()
    parts = urlsplit(text if "//" in text or text.startswith("/") else "//" + text)
    path = parts.path.lower() or "/"
    for pattern in patterns:
        if _search(pattern.pattern)(path):
            return [Signal(pattern.name, pattern.category, at, text)]
    return []


@lru_cache(maxsize=256)
def _search(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """A page pattern compiled once (case-insensitive), not looked up per URL."""
    return re.compile(pattern, flags=re.IGNORECASE).search


class FieldSignal(BaseModel):
    """A marketing-system field read as a signal.

    ``kind = "count"``: a counter; the signal counts its value (nothing at 0).
    ``kind = "flag"``: a yes/no field; one signal when it is true.
    ``at_field`` names the record's field holding when it last happened (else the record time).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1)
    name: str = Field(min_length=1)
    category: Category
    kind: Literal["count", "flag"] = "count"
    at_field: str | None = None


#: HubSpot contact properties that carry activity (marketing email and conversion counters).
HUBSPOT_FIELD_SIGNALS: tuple[FieldSignal, ...] = (
    FieldSignal(
        field="hs_email_open",
        name="email_open",
        category=Category.ENGAGEMENT,
        at_field="hs_email_last_open_date",
    ),
    FieldSignal(
        field="hs_email_click",
        name="email_click",
        category=Category.ENGAGEMENT,
        at_field="hs_email_last_click_date",
    ),
    FieldSignal(
        field="num_conversion_events",
        name="form_submission",
        category=Category.ENGAGEMENT,
        at_field="recent_conversion_date",
    ),
    FieldSignal(
        field="hs_email_optout", name="unsubscribed", category=Category.ENGAGEMENT, kind="flag"
    ),
)

_TRUE = frozenset({"true", "yes", "1", "y", "on"})
_FALSE = frozenset({"false", "no", "0", "n", "off", ""})


def _count(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a count, got {value!r}")
    if isinstance(value, int):
        number = float(value)
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        if not value.strip():
            return 0
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{where}: expected a count, got {value!r}") from None
    else:
        raise ValueError(f"{where}: expected a count, got {type(value).__name__}")
    if number < 0 or number != int(number):
        raise ValueError(f"{where}: expected a whole count >= 0, got {value!r}")
    return int(number)


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{where}: expected true or false, got {value!r}")


def parse_time(value: Any, where: str) -> datetime | None:
    """A timezone-aware datetime from a datetime, an ISO 8601 text or epoch milliseconds.

    Naive values are read as UTC. Raises ValueError naming ``where`` for anything else.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    result: datetime
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = datetime.fromtimestamp(value / 1000, UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            result = datetime.fromtimestamp(int(text) / 1000, UTC)
        else:
            try:
                result = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{where}: not a date and time: {value!r}") from None
    else:
        raise ValueError(f"{where}: not a date and time: {value!r}")
    return result if result.tzinfo is not None else result.replace(tzinfo=UTC)


def signals_from_fields(
    record: Mapping[str, Any],
    mapping: Iterable[FieldSignal],
    at: datetime,
    *,
    system: str = "crm",
) -> list[Signal]:
    """The signals a marketing-system record's fields carry, by ``mapping``.

    ``at`` dates a signal whose ``at_field`` is absent or empty. Raises ValueError naming the
    field when a value is not a count, a flag or a date.
    """
    signals: list[Signal] = []
    for item in mapping:
        value = record.get(item.field)
        if value is None:
            # no count, no flag: nothing to read (and no text naming the field to make)
            continue
        where = f"{system} field {item.field}"
        count = _count(value, where) if item.kind == "count" else int(_flag(value, where))
        if count == 0:
            continue
        when = at
        if item.at_field is not None:
            when = parse_time(record.get(item.at_field), f"{system} field {item.at_field}") or at
        signals.append(Signal(item.name, item.category, when, f"{system}:{item.field}", count))
    return signals


def lead_time(lead: Lead) -> datetime:
    """When the lead was last updated by any source (else when it was created)."""
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in lead.updated_at.values()]
    created = lead.created_at if lead.created_at.tzinfo else lead.created_at.replace(tzinfo=UTC)
    return max(times, default=created)


def signals_from_lead(
    lead: Lead,
    patterns: Sequence[UrlPattern] = DEFAULT_URL_PATTERNS,
    *,
    at: datetime | None = None,
) -> list[Signal]:
    """Signals the Lead itself carries: its ``intent_signals`` names and its landing page.

    Both are dated by the lead's latest update (``at``: that time, when the caller has it
    already). A name's category is the one of the URL pattern of that name; other names count
    as intent.
    """
    if at is None:
        at = lead_time(lead)
    signals: list[Signal] = []
    if lead.intent_signals:
        categories = (
            _DEFAULT_CATEGORIES
            if patterns is DEFAULT_URL_PATTERNS
            else {pattern.name: pattern.category for pattern in patterns}
        )
        signals = [
            Signal(name, categories.get(name, Category.INTENT), at, "lead.intent_signals")
            for name in dict.fromkeys(lead.intent_signals)
        ]
    if lead.landing_page:
        known = {signal.name for signal in signals}
        for signal in signals_from_url(lead.landing_page, at, patterns):
            if signal.name not in known:
                signals.append(signal)
    return signals


#: The category of each default page pattern's signal, by name.
_DEFAULT_CATEGORIES: dict[str, Category] = {
    pattern.name: pattern.category for pattern in DEFAULT_URL_PATTERNS
}
