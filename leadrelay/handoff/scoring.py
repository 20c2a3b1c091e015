"""Lead scoring: weighted categories of declarative point rules (DESIGN §12).

How a score is made, precisely:

1. Every rule whose condition holds gives its points to its category. A field rule counts once;
   a signal rule counts every occurrence (``Signal.count`` included) up to ``max_times``, each
   decayed by the signal's age: ``points * 0.5 ** (age_days / decay.half_life_days)``.
2. Velocity: when the undecayed signal points earned within ``velocity.window_days`` reach
   ``velocity.min_points``, ``velocity.bonus`` is added to ``velocity.category``.
3. Per category, the positive points are capped at the category's weight, then the negative
   points are added and the result floored at 0 — so a negative rule is never absorbed by
   points above the cap. The total (0–100) is the sum of the categories.
4. MQL: total >= ``mql_threshold`` and, when ``required_signal`` is set, a signal of that name.
5. Tier: **hot** = MQL (unless ``hot_requires_mql = false``) and a ``hot_signals`` signal
   (demo or pricing request) within ``hot_window_hours`` of now; **warm** = any other MQL, or a
   total >= ``mql_threshold - warm_margin``; **cold** = the rest.

Config keys (``[scoring]`` in ``leadrelay.toml``): ``mql_threshold``, ``[scoring.weights]``
``fit / intent / engagement`` (must add up to 100), ``required_signal``, ``[scoring.decay]``,
``[scoring.velocity]``, ``hot_signals``, ``hot_window_hours``, ``hot_requires_mql``,
``warm_margin``, ``[scoring.lists]`` (named value lists for ``in_list``), ``[[scoring.rules]]``
and ``authority``.

Authority (``authority = "leadrelay" | "source"``, a flow's ``scoring_authority`` overrides it):

* ``leadrelay`` (default): the score above is the qualification; it moves a lead to MQL (never
  backward). A lead the source already holds at MQL or later keeps its stage, and its reason
  says so instead of "not MQL".
* ``source``: the marketing system's own verdict is the qualification — the stage the lead
  holds there (HubSpot ``lifecyclestage``) and its own score (:data:`SOURCE_SCORE_FIELDS`:
  HubSpot ``hubspotscore``). ``Lead.score`` is the source's score; leadrelay's score is a
  second opinion, kept in ``score_breakdown`` and shown in the qualification reason
  (:meth:`Scorer.second_opinion`). The stage is never changed by scoring.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leadrelay.handoff.signals import Category, Signal
from leadrelay.model import (
    FREE_MAIL_DOMAINS,
    STAGE_ORDER,
    Lead,
    Owner,
    ScoreBreakdown,
    Stage,
    Tier,
)

#: Salesforce custom text fields hold at most 255 characters; the reason must fit one.
REASON_MAX_CHARS = 255

#: Whose verdict qualifies a lead: leadrelay's score, or the marketing system's own stage and
#: score.
Authority = Literal["leadrelay", "source"]

#: The marketing system's own lead score field, per connector kind (HubSpot "HubSpot Score").
SOURCE_SCORE_FIELDS: dict[str, str] = {"hubspot": "hubspotscore"}

#: Stages that mean the lead has been qualified (by whoever holds the verdict) or worked since.
_QUALIFIED = frozenset(s for s in Stage if STAGE_ORDER[s] >= STAGE_ORDER[Stage.MQL])

#: Lead fields a rule may test (``custom.NAME`` reads ``Lead.custom``).
RULE_FIELDS: frozenset[str] = frozenset(
    name
    for name, info in Lead.model_fields.items()
    if name
    not in {
        "external_ids",
        "click_ids",
        "first_touch",
        "updated_at",
        "custom",
        "score_breakdown",
        "owner",
    }
)


class Weights(BaseModel):
    """Maximum points per category (``[scoring.weights]``); they add up to 100."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fit: float = Field(default=40, ge=0)
    intent: float = Field(default=40, ge=0)
    engagement: float = Field(default=20, ge=0)

    @model_validator(mode="after")
    def _hundred(self) -> Self:
        total = self.fit + self.intent + self.engagement
        if abs(total - 100) > 1e-9:
            raise ValueError(
                f"fit + intent + engagement must add up to 100, not {total:g} "
                f"({self.fit:g} + {self.intent:g} + {self.engagement:g})"
            )
        return self

    def of(self, category: Category) -> float:
        """The weight of one category."""
        value: float = getattr(self, category.value)
        return value


class Condition(BaseModel):
    """When a rule applies: exactly one of a small fixed set of condition kinds.

    * ``signal = NAME`` — the lead has a signal of that name (counts each occurrence);
    * ``field = NAME`` with one of ``matches`` (regular expression, ``re.search``), ``between``
      (``[low, high]``, inclusive, numbers), ``in`` (values, compared case-insensitively) or
      ``in_list`` (the name of a ``[scoring.lists]`` list);
    * ``free_mail = true`` — the email is at a consumer mailbox provider;
    * ``opted_out = true`` — ``email_opt_in`` is false or the lead has an ``unsubscribed`` signal.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    signal: str | None = None
    field: str | None = None
    matches: str | None = None
    between: tuple[float, float] | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    in_list: str | None = None
    free_mail: bool | None = None
    opted_out: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [
            name
            for name, value in (
                ("signal", self.signal),
                ("field", self.field),
                ("free_mail", self.free_mail),
                ("opted_out", self.opted_out),
            )
            if value is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a condition needs exactly one of signal, field, free_mail, opted_out"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        tests = [
            name
            for name, value in (
                ("matches", self.matches),
                ("between", self.between),
                ("in", self.in_),
                ("in_list", self.in_list),
            )
            if value is not None
        ]
        if self.field is None:
            if tests:
                raise ValueError(f"{', '.join(tests)} needs a field")
        else:
            if self.field not in RULE_FIELDS and not self.field.startswith("custom."):
                raise ValueError(f"field {self.field!r} is not a Lead field (or custom.NAME)")
            if len(tests) != 1:
                raise ValueError(
                    f"field {self.field!r} needs exactly one of matches, between, in, in_list"
                )
        if self.free_mail is False or self.opted_out is False:
            raise ValueError("free_mail and opted_out conditions can only be true")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches is not a regular expression: {exc}") from None
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError(f"between {list(self.between)}: low is above high")
        return self


class Rule(BaseModel):
    """A point rule: ``points`` (negative to subtract) to ``category`` when ``when`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    category: Category
    points: float
    when: Condition
    max_times: int | None = Field(default=None, ge=1)


class Decay(BaseModel):
    """Signal points halve every ``half_life_days`` (``0`` turns decay off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life_days: float = Field(default=30, ge=0)


class Velocity(BaseModel):
    """A bonus when the lead earned ``min_points`` signal points within ``window_days``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: float = Field(default=7, gt=0)
    min_points: float = Field(default=30, gt=0)
    bonus: float = Field(default=5, ge=0)
    category: Category = Category.INTENT


_DIRECTOR_PLUS = r"(?i)\b(director|vp|vice president|head|chief|c[eo]o|cfo|cto|founder|owner)\b"
_NON_BUYER = r"(?i)\b(student|intern|job seeker|jobseeker|looking for (a )?(job|work)|unemployed)\b"


def _rule(name: str, category: Category, points: float, **when: Any) -> Rule:
    return Rule(name=name, category=category, points=points, when=Condition(**when))


#: The SOP's default rules. ``target_industries`` and ``competitors`` are empty until the
#: ``[scoring.lists]`` of the project fill them.
DEFAULT_RULES: tuple[Rule, ...] = (
    _rule("Director+ title", Category.FIT, 15, field="job_title", matches=_DIRECTOR_PLUS),
    _rule("target industry", Category.FIT, 10, field="industry", in_list="target_industries"),
    _rule("company size 50–500", Category.FIT, 10, field="employees", between=(50, 500)),
    _rule("free-mail address", Category.FIT, -10, free_mail=True),
    _rule("student / job-seeker title", Category.FIT, -20, field="job_title", matches=_NON_BUYER),
    _rule("careers page", Category.FIT, -10, signal="job_seeker"),
    _rule("competitor domain", Category.FIT, -40, field="company_domain", in_list="competitors"),
    _rule("demo request", Category.INTENT, 30, signal="demo_request"),
    _rule("pricing page", Category.INTENT, 20, signal="pricing_page"),
    _rule("case study", Category.INTENT, 15, signal="case_study"),
    _rule("docs", Category.INTENT, 5, signal="docs"),
    _rule("webinar", Category.ENGAGEMENT, 15, signal="webinar"),
    _rule("form submission", Category.ENGAGEMENT, 5, signal="form_submission"),
    _rule("email click", Category.ENGAGEMENT, 3, signal="email_click"),
    _rule("blog post", Category.ENGAGEMENT, 3, signal="blog_post"),
    _rule("email open", Category.ENGAGEMENT, 1, signal="email_open"),
    _rule("unsubscribed", Category.ENGAGEMENT, -20, opted_out=True),
)

_DEFAULT_LISTS: dict[str, list[str]] = {"target_industries": [], "competitors": []}


class ScoringConfig(BaseModel):
    """The ``[scoring]`` section (SOP defaults: fit 40 / intent 40 / engagement 20, MQL at 60)."""

    model_config = ConfigDict(extra="forbid")

    mql_threshold: float = Field(default=60, ge=0, le=100)
    weights: Weights = Field(default_factory=Weights)
    required_signal: str | None = None
    decay: Decay = Field(default_factory=Decay)
    velocity: Velocity = Field(default_factory=Velocity)
    hot_signals: list[str] = Field(default_factory=lambda: ["demo_request", "pricing_page"])
    hot_window_hours: float = Field(default=24, gt=0)
    hot_requires_mql: bool = True
    warm_margin: float = Field(default=15, ge=0)
    lists: dict[str, list[str]] = Field(default_factory=lambda: dict(_DEFAULT_LISTS))
    rules: list[Rule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    authority: Authority = "leadrelay"

    @field_validator("lists", mode="before")
    @classmethod
    def _default_lists(cls, value: Any) -> Any:
        # Lists the default rules name stay defined when a project sets only some of them.
        if isinstance(value, dict):
            return {**_DEFAULT_LISTS, **value}
        return value

    @model_validator(mode="after")
    def _lists_exist(self) -> Self:
        for index, rule in enumerate(self.rules):
            name = rule.when.in_list
            if name is not None and name not in self.lists:
                defined = ", ".join(sorted(self.lists)) or "none"
                raise ValueError(
                    f"rules[{index}] ({rule.name}): list {name!r} is not in [scoring.lists] "
                    f"(defined: {defined})"
                )
        return self


@dataclass(frozen=True)
class ScoreResult:
    """A lead's score and why.

    Attributes:
        total: 0–100, the sum of the categories.
        breakdown: points per category, each within 0 and its weight.
        reasons: one line per rule that fired ("pricing page 2 d ago +20 (decayed 19)").
        is_mql: whether the lead qualifies as an MQL.
        tier: hot / warm / cold.
        qualification_reason: one line for the CRM (at most 255 characters).
        signals: the names of the lead's intent-category signals, first seen first (what
            ``Lead.intent_signals`` holds).
    """

    total: float
    breakdown: ScoreBreakdown
    reasons: list[str]
    is_mql: bool
    tier: Tier
    qualification_reason: str
    signals: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourceVerdict:
    """The marketing system's own qualification of a lead (``authority = "source"``).

    Attributes:
        system: the source's connector kind (``hubspot``).
        stage: the stage the lead holds there (as its mapping reads it).
        score: the source's own score, or None when it has none (or does not say).
    """

    system: str
    stage: Stage
    score: float | None = None

    @property
    def qualified(self) -> bool:
        """The source holds the lead at MQL or later (or sales has worked it since)."""
        return self.stage in _QUALIFIED and self.stage is not Stage.RECYCLED


def source_verdict(lead: Lead, raw: Any, system: str) -> SourceVerdict:
    """The source's verdict on a lead read from it: its stage and its own score field.

    A score that is not a number is left out (None), never guessed.
    """
    score: float | None = None
    name = SOURCE_SCORE_FIELDS.get(system)
    value = raw.get(name) if name is not None and hasattr(raw, "get") else None
    if value not in (None, ""):
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = None
    return SourceVerdict(system=system, stage=lead.stage, score=score)


def _stage_label(stage: Stage) -> str:
    return stage.value.upper() if len(stage.value) == 3 else stage.value


def _number(value: float) -> str:
    rounded = round(value, 1)
    return f"{rounded:g}" if rounded != int(rounded) else str(int(rounded))


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + _number(abs(value))


def _age(now: datetime, at: datetime) -> str:
    seconds = max((now - at).total_seconds(), 0.0)
    if seconds < 3600:
        return "just now" if seconds < 60 else f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def _text(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


#: The categories in order (iterating the Enum class per lead costs more than this tuple).
_CATEGORIES: tuple[Category, ...] = tuple(Category)


#: A compiled lead rule's test: whether it holds for a lead with these signals.
_LeadTest = Callable[[Lead, Sequence[Signal]], bool]


def _field_test(condition: Condition, lists: dict[str, list[str]]) -> _LeadTest:
    """A ``field`` condition as one callable: the field read, the pattern compiled and the
    list case-folded once per scorer, not per lead."""
    assert condition.field is not None
    name = condition.field
    value_of: Callable[[Lead], Any]
    if name.startswith("custom."):
        key = name.removeprefix("custom.")

        def value_of(lead: Lead) -> Any:
            return lead.custom.get(key)

    else:
        value_of = attrgetter(name)
    if condition.matches is not None:
        search = re.compile(condition.matches).search

        def matches(lead: Lead, signals: Sequence[Signal]) -> bool:
            value = value_of(lead)
            return value is not None and search(_text(value)) is not None

        return matches
    if condition.between is not None:
        low, high = condition.between

        def between(lead: Lead, signals: Sequence[Signal]) -> bool:
            value = value_of(lead)
            if value is None:
                return False
            try:
                number = float(value)
            except (TypeError, ValueError):
                return False
            return low <= number <= high

        return between
    allowed = condition.in_ if condition.in_ is not None else lists[condition.in_list or ""]
    folded = frozenset(item.casefold() for item in allowed)

    def listed(lead: Lead, signals: Sequence[Signal]) -> bool:
        value = value_of(lead)
        return value is not None and _text(value).casefold() in folded

    return listed


def _free_mail(lead: Lead, signals: Sequence[Signal]) -> bool:
    return lead.email is not None and lead.email.rpartition("@")[2] in FREE_MAIL_DOMAINS


def _opted_out(lead: Lead, signals: Sequence[Signal]) -> bool:
    return lead.email_opt_in is False or any(s.name == "unsubscribed" for s in signals)


#: A rule that fired: (its index in ``rules``, category, points, reason, undecayed signal
#: points within the velocity window or None for a lead rule).
_Fired = tuple[int, Category, float, str, float | None]


class Scorer:
    """Scores leads by one :class:`ScoringConfig`.

    The rules are compiled once, when the scorer is made: a lead rule (field, free mail, opted
    out) becomes one callable with its reason text ready, a signal rule is filed under its
    signal's name, so that a lead is tested only against the rules that can fire for it. The
    config is read then: change it and make a new scorer.
    """

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config = config or ScoringConfig()
        self._lead_rules: list[tuple[int, Rule, _LeadTest, str]] = []
        self._signal_rules: dict[str, list[tuple[int, Rule]]] = {}
        for index, rule in enumerate(config.rules):
            when = rule.when
            if when.signal is not None:
                self._signal_rules.setdefault(when.signal, []).append((index, rule))
                continue
            test: _LeadTest
            if when.field is not None:
                test = _field_test(when, config.lists)
            elif when.free_mail:
                test = _free_mail
            else:
                test = _opted_out
            self._lead_rules.append((index, rule, test, f"{rule.name} {_signed(rule.points)}"))
        self._weights = tuple(config.weights.of(category) for category in _CATEGORIES)
        self._slot = {category: slot for slot, category in enumerate(_CATEGORIES)}
        self._window = timedelta(days=config.velocity.window_days)
        self._hot_window = timedelta(hours=config.hot_window_hours)

    def _decayed(self, points: float, at: datetime, now: datetime) -> float:
        half_life = self.config.decay.half_life_days
        age_days = max((now - at).total_seconds(), 0.0) / 86400
        if half_life == 0 or age_days == 0:
            return points
        decayed: float = points * 0.5 ** (age_days / half_life)
        return decayed

    def _signal_rule(
        self, rule: Rule, signals: Sequence[Signal], now: datetime
    ) -> tuple[float, float, str] | None:
        """(decayed points, raw points within the velocity window, reason) or None."""
        matching = sorted(
            (s for s in signals if s.name == rule.when.signal and s.at <= now),
            key=lambda s: s.at,
            reverse=True,
        )
        if not matching:
            return None
        remaining = rule.max_times
        window_start = now - self._window
        times = 0
        raw = decayed = recent = 0.0
        for signal in matching:
            count = signal.count if remaining is None else min(signal.count, remaining)
            times += count
            raw += rule.points * count
            decayed += self._decayed(rule.points * count, signal.at, now)
            if signal.at >= window_start:
                recent += rule.points * count
            if remaining is not None:
                remaining -= count
                if remaining == 0:
                    break
        label = rule.name if times == 1 else f"{rule.name} ×{times}"
        reason = f"{label} {_age(now, matching[0].at)} {_signed(raw)}"
        if _number(decayed) != _number(raw):
            reason += f" (decayed {_number(decayed)})"
        return decayed, recent, reason

    def score(self, lead: Lead, signals: Iterable[Signal], now: datetime) -> ScoreResult:
        """Score ``lead`` with its ``signals`` as of ``now`` (timezone-aware)."""
        if now.tzinfo is None:
            raise ValueError("scoring needs a timezone-aware 'now'")
        config = self.config
        signals = list(signals)
        fired: list[_Fired] = [
            (index, rule.category, rule.points, reason, None)
            for index, rule, test, reason in self._lead_rules
            if test(lead, signals)
        ]
        # Only the rules of the signals the lead has can fire among the signal rules.
        for name in {s.name for s in signals}:
            for index, rule in self._signal_rules.get(name, ()):
                found = self._signal_rule(rule, signals, now)
                if found is not None:
                    points, recent, reason = found
                    fired.append((index, rule.category, points, reason, recent))
        # Points are added up in the order of the rules, as the reasons are listed.
        fired.sort(key=itemgetter(0))
        slot = self._slot
        positive = [0.0, 0.0, 0.0]
        negative = [0.0, 0.0, 0.0]
        reasons: list[str] = []
        recent_points = 0.0
        for _index, category, points, reason, window_points in fired:
            if window_points is not None:
                recent_points += max(window_points, 0.0)
            if points >= 0:
                positive[slot[category]] += points
            else:
                negative[slot[category]] += points
            reasons.append(reason)
        velocity = config.velocity
        if velocity.bonus > 0 and recent_points >= velocity.min_points:
            positive[slot[velocity.category]] += velocity.bonus
            reasons.append(
                f"velocity {_number(recent_points)} points in {_number(velocity.window_days)} d "
                f"{_signed(velocity.bonus)}"
            )
        weights = self._weights
        fit = round(max(min(positive[0], weights[0]) + negative[0], 0.0), 2)
        intent = round(max(min(positive[1], weights[1]) + negative[1], 0.0), 2)
        engagement = round(max(min(positive[2], weights[2]) + negative[2], 0.0), 2)
        breakdown = ScoreBreakdown(fit=fit, intent=intent, engagement=engagement)
        total = round(sum((fit, intent, engagement)), 2)
        has_required = config.required_signal is None or any(
            s.name == config.required_signal and s.at <= now for s in signals
        )
        is_mql = total >= config.mql_threshold and has_required
        hot_since = now - self._hot_window
        hot_signal = any(s.name in config.hot_signals and hot_since <= s.at <= now for s in signals)
        if hot_signal and (is_mql or not config.hot_requires_mql):
            tier = Tier.HOT
        elif is_mql or total >= config.mql_threshold - config.warm_margin:
            tier = Tier.WARM
        else:
            tier = Tier.COLD
        names = list(dict.fromkeys(s.name for s in signals if s.category is Category.INTENT))
        return ScoreResult(
            total=total,
            breakdown=breakdown,
            reasons=reasons,
            is_mql=is_mql,
            tier=tier,
            qualification_reason=self._qualification_reason(
                total, breakdown, reasons, is_mql, has_required, tier, lead.stage
            ),
            signals=names,
        )

    def _qualification_reason(
        self,
        total: float,
        breakdown: ScoreBreakdown,
        reasons: list[str],
        is_mql: bool,
        has_required: bool,
        tier: Tier,
        stage: Stage = Stage.LEAD,
    ) -> str:
        threshold = _number(self.config.mql_threshold)
        if is_mql:
            head = f"MQL ({tier.value}): score {_number(total)} >= {threshold}"
        elif stage in _QUALIFIED:
            # The lead is already MQL or later (its source or sales put it there): scoring never
            # moves it back, and its reason does not contradict the stage it holds.
            head = (
                f"{_stage_label(stage)} as held ({tier.value}): leadrelay score "
                f"{_number(total)} is below its MQL threshold {threshold}"
            )
        elif total >= self.config.mql_threshold and not has_required:
            head = (
                f"not MQL: score {_number(total)} >= {threshold} "
                f"but no {self.config.required_signal} signal"
            )
        else:
            head = f"not MQL ({tier.value}): score {_number(total)} < {threshold}"
        head += (
            f" (fit {_number(breakdown.fit)}, intent {_number(breakdown.intent)}, "
            f"engagement {_number(breakdown.engagement)})"
        )
        return _with_reasons(head, reasons)

    def second_opinion(
        self,
        result: ScoreResult,
        verdict: SourceVerdict,
        now: datetime,
        signals: Sequence[Signal] = (),
    ) -> ScoreResult:
        """``result`` (leadrelay's score) as a second opinion beside the source's verdict.

        The source's stage decides MQL; the tier follows it (hot: qualified there and a hot
        signal within the window; warm: qualified there, or leadrelay's score near the bar;
        cold: the rest). The reason leads with the source's verdict and score, then leadrelay's.
        """
        config = self.config
        hot_since = now - timedelta(hours=config.hot_window_hours)
        hot_signal = any(s.name in config.hot_signals and hot_since <= s.at <= now for s in signals)
        if hot_signal and (verdict.qualified or not config.hot_requires_mql):
            tier = Tier.HOT
        elif verdict.qualified or result.total >= config.mql_threshold - config.warm_margin:
            tier = Tier.WARM
        else:
            tier = Tier.COLD
        held = _stage_label(verdict.stage)
        source_score = (
            f"{verdict.system} score {_number(verdict.score)}"
            if verdict.score is not None
            else f"no {verdict.system} score"
        )
        if verdict.qualified:
            head = f"{held} ({tier.value}) by {verdict.system}'s verdict, {source_score}"
        else:
            head = f"{held} in {verdict.system}, not qualified there yet ({source_score})"
        head += (
            f"; leadrelay's second opinion {_number(result.total)}/"
            f"{_number(config.mql_threshold)} (fit {_number(result.breakdown.fit)}, "
            f"intent {_number(result.breakdown.intent)}, "
            f"engagement {_number(result.breakdown.engagement)})"
        )
        return ScoreResult(
            total=result.total,
            breakdown=result.breakdown,
            reasons=result.reasons,
            is_mql=verdict.qualified,
            tier=tier,
            qualification_reason=_with_reasons(head, result.reasons),
            signals=result.signals,
        )


def _with_reasons(head: str, reasons: list[str]) -> str:
    """``head: reason; reason; …`` cut to :data:`REASON_MAX_CHARS` ("+N more" when cut)."""
    text = head
    for index, reason in enumerate(reasons):
        part = ("; " if index else ": ") + reason
        if len(text) + len(part) > REASON_MAX_CHARS:
            more = f"; +{len(reasons) - index} more"
            if len(text) + len(more) <= REASON_MAX_CHARS:
                text += more
            break
        text += part
    return text[:REASON_MAX_CHARS]


def score(
    lead: Lead,
    signals: Iterable[Signal],
    now: datetime,
    config: ScoringConfig | None = None,
) -> ScoreResult:
    """Score ``lead`` with ``signals`` as of ``now`` (see :class:`Scorer`)."""
    return Scorer(config).score(lead, signals, now)


def apply_source_verdict(lead: Lead, result: ScoreResult, verdict: SourceVerdict) -> None:
    """Write a source-authority qualification onto the lead: the source's score, leadrelay's
    breakdown as the second opinion, the reason, signals and tier. The stage is the source's
    and is left as it is."""
    lead.score = verdict.score
    lead.score_breakdown = result.breakdown
    lead.qualification_reason = result.qualification_reason
    lead.intent_signals = list(dict.fromkeys([*lead.intent_signals, *result.signals]))
    lead.tier = result.tier


#: Lead fields the qualify step sets, and the exact types a value of each may be set as
#: without validation (what the Lead's validation would keep as it is).
_SETTABLE: dict[str, tuple[type, ...]] = {
    "score": (float,),
    "score_breakdown": (ScoreBreakdown,),
    "qualification_reason": (str, type(None)),
    "intent_signals": (list,),
    "tier": (Tier,),
    "stage": (Stage,),
    "owner": (Owner, type(None)),
    "queue": (str, type(None)),
    "assigned_at": (datetime,),
    "sla_due_at": (datetime, type(None)),
}
#: Of those, the text fields the Lead trims and folds (``model._TEXT_FIELDS``).
_FOLDED = frozenset({"qualification_reason", "queue"})


def set_checked(lead: Lead, values: dict[str, Any]) -> None:
    """Set qualify-step fields on ``lead``: a value already of the field's type is set as
    the Lead's validation would leave it (text folded), in one step, instead of a validated
    assignment per field that re-runs the whole Lead's validators; any other value goes through
    validated assignment (and fails there as it always did)."""
    direct: dict[str, Any] = {}
    for name, value in values.items():
        kinds = _SETTABLE.get(name)
        if kinds is None or type(value) not in kinds:
            setattr(lead, name, value)
            continue
        if name in _FOLDED and value is not None:
            value = " ".join(value.split()) or None
        elif name == "intent_signals":
            if not all(type(item) is str for item in value):
                setattr(lead, name, value)
                continue
            value = list(value)
        direct[name] = value
    lead.__dict__.update(direct)
    lead.__pydantic_fields_set__.update(direct)


def apply_score(lead: Lead, result: ScoreResult) -> None:
    """Write a score onto the lead: score, breakdown, reason, signals, tier, and stage.

    The stage moves from ``lead`` to ``mql`` when the lead qualifies; it never moves backward
    and never touches a stage sales owns (sal and beyond), nor recycled / disqualified leads.
    """
    values: dict[str, Any] = {
        "score": result.total,
        "score_breakdown": result.breakdown,
        "qualification_reason": result.qualification_reason,
        "intent_signals": list(dict.fromkeys([*lead.intent_signals, *result.signals])),
        "tier": result.tier,
    }
    if result.is_mql and lead.stage is Stage.LEAD:
        values["stage"] = Stage.MQL
    set_checked(lead, values)
