"""Lead routing: ordered rules so that every routed lead gets an owner or a queue (DESIGN §12).

Rules are tried in the order of ``[[routing.rules]]``:

* ``account_owner`` — the owner of the CRM account / company whose domain is the lead's
  ``company_domain`` (the connector builds the :class:`AccountIndex`; routing does no I/O);
* ``territory`` — countries / regions / postal-code prefixes → a pool of owners;
* ``segment`` — an employees range and / or industries → a pool of owners;
* ``round_robin`` — a pool of owners (all active CRM users when ``owners`` is empty).

Territory, segment and round-robin pools are served by weighted round robin: a smooth weighted
cycle (each owner appears ``weight`` times per cycle, spread out), a persistent position, and
skipping owners who are inactive, marked ``available = false``, out of office today, or at
their daily ``cap``. A rule whose pool has nobody available passes the lead on to the next rule;
when no rule assigns an owner the lead goes to ``fallback_queue``. Every assignment, the account
owner's too, counts toward the owner's daily cap. Days are calendar days in ``timezone``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, Protocol, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leadrelay.handoff.scoring import set_checked
from leadrelay.model import Lead, Owner, domain_from_website, normalize_country
from leadrelay.taxonomy.geo import region_code


class OutOfOffice(BaseModel):
    """An owner's absence, ``start`` to ``end`` inclusive (calendar days)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"out of office ends ({self.end}) before it starts ({self.start})")
        return self


class OwnerSettings(BaseModel):
    """Routing settings of one owner (``[routing.owners."jane@acme.io"]``, by id or email)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: int = Field(default=1, ge=0)
    cap: int | None = Field(default=None, ge=0)
    available: bool = True
    out_of_office: list[OutOfOffice] = Field(default_factory=list)


@dataclass(frozen=True)
class OwnerInfo:
    """A CRM user that can own leads, with its routing settings.

    Attributes:
        id: the CRM's user id (HubSpot owner id, Salesforce User Id, Zoho user id).
        email, name: as the CRM has them.
        active: false for deactivated users.
        weight: share of round-robin turns (0: never by round robin).
        cap: most leads per day, or None.
        available: false while the owner takes no new leads.
        out_of_office: absences.
    """

    id: str
    email: str | None = None
    name: str | None = None
    active: bool = True
    weight: int = 1
    cap: int | None = None
    available: bool = True
    out_of_office: tuple[OutOfOffice, ...] = ()

    @property
    def label(self) -> str:
        """The owner's name, else email, else id."""
        return self.name or self.email or self.id

    def owner(self) -> Owner:
        """The canonical :class:`leadrelay.model.Owner`."""
        return Owner(id=self.id, email=self.email, name=self.name)

    def away_on(self, day: date) -> bool:
        """Whether the owner is out of office on ``day``."""
        return any(span.start <= day <= span.end for span in self.out_of_office)

    def with_settings(self, settings: OwnerSettings) -> OwnerInfo:
        """This owner with routing settings from the config applied."""
        return OwnerInfo(
            id=self.id,
            email=self.email,
            name=self.name,
            active=self.active,
            weight=settings.weight,
            cap=settings.cap,
            available=settings.available,
            out_of_office=tuple(settings.out_of_office),
        )


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountOwnerRule(_Rule):
    """Route to the owner of the existing account with the lead's company domain."""

    kind: Literal["account_owner"]


class _PoolRule(_Rule):
    name: str = Field(min_length=1)
    owners: list[str] = Field(default_factory=list)


class TerritoryRule(_PoolRule):
    """Leads in these countries / regions / postal-code prefixes go to ``owners``."""

    kind: Literal["territory"]
    countries: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    postal_prefixes: list[str] = Field(default_factory=list)

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        return [normalize_country(item) for item in value]

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.countries or self.regions or self.postal_prefixes):
            raise ValueError(f"territory {self.name!r} needs countries, regions or postal_prefixes")
        if not self.owners:
            raise ValueError(f"territory {self.name!r} needs owners")
        return self

    def matches(self, lead: Lead) -> bool:
        """Whether the lead is in this territory (any of the given criteria)."""
        if lead.country is not None and lead.country in self.countries:
            return True
        if lead.region is not None:
            # A region is held as its ISO 3166-2 code when the lead's country has it: a rule may
            # name the code ("US-CA"), its second part ("CA") or the name ("California").
            regions = {
                (region_code(lead.country, item) or item).casefold() for item in self.regions
            }
            if lead.region.casefold() in regions:
                return True
        if lead.postal_code is not None:
            code = lead.postal_code.replace(" ", "").upper()
            prefixes = (item.replace(" ", "").upper() for item in self.postal_prefixes)
            return any(code.startswith(prefix) for prefix in prefixes if prefix)
        return False


class SegmentRule(_PoolRule):
    """Leads in this size range and / or these industries go to ``owners``."""

    kind: Literal["segment"]
    employees_min: int | None = Field(default=None, ge=0)
    employees_max: int | None = Field(default=None, ge=0)
    industries: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.employees_min is None and self.employees_max is None and not self.industries:
            raise ValueError(
                f"segment {self.name!r} needs employees_min, employees_max or industries"
            )
        if (
            self.employees_min is not None
            and self.employees_max is not None
            and self.employees_min > self.employees_max
        ):
            raise ValueError(f"segment {self.name!r}: employees_min is above employees_max")
        if not self.owners:
            raise ValueError(f"segment {self.name!r} needs owners")
        return self

    def matches(self, lead: Lead) -> bool:
        """Whether the lead is in this segment (every given criterion holds)."""
        if self.employees_min is not None or self.employees_max is not None:
            if lead.employees is None:
                return False
            if self.employees_min is not None and lead.employees < self.employees_min:
                return False
            if self.employees_max is not None and lead.employees > self.employees_max:
                return False
        if self.industries:
            wanted = {item.casefold() for item in self.industries}
            return lead.industry is not None and lead.industry.casefold() in wanted
        return True


class RoundRobinRule(_PoolRule):
    """Every lead that reaches this rule goes round robin over ``owners`` (empty: everyone)."""

    kind: Literal["round_robin"]
    name: str = Field(default="all", min_length=1)


RoutingRule = Annotated[
    AccountOwnerRule | TerritoryRule | SegmentRule | RoundRobinRule, Field(discriminator="kind")
]


def _default_rules() -> list[RoutingRule]:
    return [AccountOwnerRule(kind="account_owner")]


class RoutingConfig(BaseModel):
    """The ``[routing]`` section: ordered ``rules``, per-owner ``owners`` settings, and the
    ``fallback_queue`` (SOP default "Unassigned Leads") for leads no rule assigns."""

    model_config = ConfigDict(extra="forbid")

    fallback_queue: str = Field(default="Unassigned Leads", min_length=1)
    timezone: str = "UTC"
    rules: list[RoutingRule] = Field(default_factory=_default_rules)
    owners: dict[str, OwnerSettings] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for rule in self.rules:
            if isinstance(rule, _PoolRule):
                if rule.name in seen:
                    raise ValueError(f"two routing rules are called {rule.name!r}")
                seen.add(rule.name)
        return self


class AccountIndex(Protocol):
    """Existing CRM accounts / companies by domain (the connector builds it)."""

    def owner_of(self, domain: str) -> str | None:
        """The owner id of the account with this domain (or a parent domain), else None."""
        ...


class DomainAccounts:
    """An :class:`AccountIndex` over a ``{domain: owner_id}`` mapping.

    A lead at ``eu.acme.io`` matches the account ``acme.io``; the longest match wins.
    """

    def __init__(self, owners_by_domain: Mapping[str, str]) -> None:
        self._owners: dict[str, str] = {}
        for domain, owner in owners_by_domain.items():
            normalized = domain_from_website(domain)
            if normalized is None:
                raise ValueError(f"account domain {domain!r} is not a domain")
            self._owners[normalized] = owner

    def owner_of(self, domain: str) -> str | None:
        """The owner id of the account with this domain or a parent domain, else None."""
        labels = domain.lower().strip(".").split(".")
        for start in range(len(labels) - 1):
            owner = self._owners.get(".".join(labels[start:]))
            if owner is not None:
                return owner
        return None


class RoutingState(Protocol):
    """Where round-robin positions and daily counts persist between runs."""

    def get(self, key: str) -> int | None:
        """The value stored under ``key``, or None."""
        ...

    def set(self, key: str, value: int) -> None:
        """Store ``value`` under ``key``."""
        ...


class MemoryRoutingState:
    """A :class:`RoutingState` in a dict (tests, one-off runs)."""

    def __init__(self, values: Mapping[str, int] | None = None) -> None:
        self.values: dict[str, int] = dict(values or {})

    def get(self, key: str) -> int | None:
        """The value stored under ``key``, or None."""
        return self.values.get(key)

    def set(self, key: str, value: int) -> None:
        """Store ``value`` under ``key``."""
        self.values[key] = value


@dataclass(frozen=True)
class Assignment:
    """Where a lead goes: an owner, or a queue when there is none, and why.

    Attributes:
        owner: the owner, or None when the lead goes to ``queue``.
        queue: the queue, when there is no owner.
        reason: "territory EMEA -> round robin, position 3" and the like.
        rule: the kind of rule that decided (``account_owner``, ``territory``, ``segment``,
            ``round_robin``, ``fallback_queue``, ``existing_owner``).
    """

    owner: Owner | None
    queue: str | None
    reason: str
    rule: str


def weighted_cycle(owners: Sequence[OwnerInfo]) -> list[OwnerInfo]:
    """One round-robin cycle: each owner ``weight`` times, spread out (smooth weighted RR).

    Deterministic: ties go to the owner listed first.
    """
    pool = [owner for owner in owners if owner.weight > 0]
    total = sum(owner.weight for owner in pool)
    current = [0] * len(pool)
    cycle: list[OwnerInfo] = []
    for _ in range(total):
        for index, owner in enumerate(pool):
            current[index] += owner.weight
        best = max(range(len(pool)), key=lambda i: (current[i], -i))
        current[best] -= total
        cycle.append(pool[best])
    return cycle


class Router:
    """Routes leads by a :class:`RoutingConfig` over the CRM's owners.

    Args:
        config: the routing rules.
        owners: the CRM's users (``OwnerInfo``); ``config.owners`` settings are applied to
            them by id or email.
        accounts: the existing accounts, for the ``account_owner`` rule.
        state: round-robin positions and daily counts (kept across runs by the caller).
    """

    def __init__(
        self,
        config: RoutingConfig,
        owners: Iterable[OwnerInfo],
        accounts: AccountIndex | None = None,
        state: RoutingState | None = None,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.state: RoutingState = state if state is not None else MemoryRoutingState()
        self._zone = ZoneInfo(config.timezone)
        self._owners: dict[str, OwnerInfo] = {}
        self._refs: dict[str, str] = {}
        # The owners are fixed for the router's life, so is each rule's round-robin cycle:
        # worked out once per pool of refs, not per lead.
        self._cycles: dict[tuple[str, ...], list[OwnerInfo]] = {}
        by_ref = {(ref.lower() if "@" in ref else ref): item for ref, item in config.owners.items()}
        for owner in owners:
            settings = by_ref.get(owner.id)
            if settings is None and owner.email is not None:
                settings = by_ref.get(owner.email.lower())
            self._owners[owner.id] = owner.with_settings(settings) if settings else owner
            self._refs[owner.id] = owner.id
            if owner.email is not None:
                self._refs[owner.email.lower()] = owner.id
        # Per router, not per lead: each owner's canonical Owner (frozen, so one serves every
        # lead it is given to), the day of the last ``now`` routed at and the keys of its
        # daily counts, and each rule's text in the reasons.
        self._owner_models: dict[str, Owner] = {}
        self._today: tuple[datetime, date, str] | None = None
        self._count_keys: dict[str, str] = {}
        self._prefixes = [_reason_prefix(rule) for rule in config.rules]

    def owner(self, ref: str) -> OwnerInfo | None:
        """The owner with this id or email, else None."""
        owner_id = self._refs.get(ref) or self._refs.get(ref.lower())
        return self._owners.get(owner_id) if owner_id is not None else None

    def _day(self, now: datetime) -> date:
        if now.tzinfo is None:
            raise ValueError("routing needs a timezone-aware 'now'")
        today = self._today
        # A page of leads is routed at one moment: its day is worked out once.
        if today is not None and today[0] is now:
            return today[1]
        day = now.astimezone(self._zone).date()
        if today is None or today[1] != day:
            self._count_keys = {}
        self._today = (now, day, day.isoformat())
        return day

    def _count_key(self, owner: OwnerInfo, day: date) -> str:
        today = self._today
        if today is None or today[1] != day:
            return f"count/{owner.id}/{day.isoformat()}"
        key = self._count_keys.get(owner.id)
        if key is None:
            key = self._count_keys[owner.id] = f"count/{owner.id}/{today[2]}"
        return key

    def _owner_model(self, owner: OwnerInfo) -> Owner:
        model = self._owner_models.get(owner.id)
        if model is None:
            model = self._owner_models[owner.id] = owner.owner()
        return model

    @staticmethod
    def _absent(owner: OwnerInfo, day: date) -> str | None:
        if not owner.active:
            return "inactive"
        if not owner.available:
            return "unavailable"
        if owner.away_on(day):
            return "out of office"
        return None

    def _unavailable(self, owner: OwnerInfo, day: date) -> str | None:
        absent = self._absent(owner, day)
        if absent is not None:
            return absent
        count = self.state.get(self._count_key(owner, day)) or 0
        if owner.cap is not None and count >= owner.cap:
            return f"at cap {owner.cap}"
        return None

    def _count(self, owner: OwnerInfo, day: date) -> None:
        key = self._count_key(owner, day)
        self.state.set(key, (self.state.get(key) or 0) + 1)

    def _pool(self, refs: Sequence[str]) -> list[OwnerInfo]:
        if not refs:
            return sorted(
                (o for o in self._owners.values() if o.active), key=lambda o: (o.label, o.id)
            )
        pool: list[OwnerInfo] = []
        for ref in refs:
            owner = self.owner(ref)
            if owner is not None and owner not in pool:
                pool.append(owner)
        return pool

    def _round_robin(
        self, rule_name: str, refs: Sequence[str], day: date
    ) -> tuple[OwnerInfo, int] | None:
        pool_key = tuple(refs)
        cycle = self._cycles.get(pool_key)
        if cycle is None:
            cycle = self._cycles[pool_key] = weighted_cycle(self._pool(refs))
        if not cycle:
            return None
        key = f"rr/{rule_name}/position"
        start = self.state.get(key) or 0
        for step in range(len(cycle)):
            index = (start + step) % len(cycle)
            owner = cycle[index]
            if self._unavailable(owner, day) is None:
                self.state.set(key, (index + 1) % len(cycle))
                return owner, index + 1
        return None

    def account_assignment(self, lead: Lead, now: datetime) -> Assignment | None:
        """The account owner's assignment for the lead, or None (no account, owner away …).

        Does not count toward the owner's cap; :meth:`route` does when it uses this.
        """
        assignment, _ = self._account(lead, self._day(now))
        return assignment

    def _account(self, lead: Lead, day: date) -> tuple[Assignment | None, str | None]:
        domain = lead.company_domain
        if self.accounts is None or domain is None:
            return None, None
        owner_id = self.accounts.owner_of(domain)
        if owner_id is None:
            return None, None
        owner = self._owners.get(owner_id)
        if owner is None:
            return None, f"existing account {domain}: owner {owner_id} is not a CRM user"
        # Caps limit round robin only: an account's leads belong with the account's owner.
        why = self._absent(owner, day)
        if why is not None:
            return None, f"existing account {domain}: owner {owner.label} {why}"
        reason = f"existing account {domain} -> owner {owner.label}"
        return Assignment(self._owner_model(owner), None, reason, "account_owner"), None

    def route(self, lead: Lead, now: datetime, *, reassign: bool = False) -> Assignment:
        """Where ``lead`` goes as of ``now``; never nothing (the fallback queue at worst).

        A lead that already has an owner keeps it unless ``reassign``. The reason names the
        deciding rule, after any rule that matched but could not assign ("; " between).
        Advances round-robin positions and daily counts in the state.
        """
        day = self._day(now)
        if lead.owner is not None and not reassign:
            label = lead.owner.name or lead.owner.email or lead.owner.id
            return Assignment(lead.owner, None, f"already owned by {label}", "existing_owner")
        notes: list[str] = []
        for rule, prefix in zip(self.config.rules, self._prefixes, strict=True):
            if isinstance(rule, AccountOwnerRule):
                assignment, note = self._account(lead, day)
                if note is not None:
                    notes.append(note)
                if assignment is None:
                    continue
                assert assignment.owner is not None
                self._count(self._owners[assignment.owner.id], day)
                reason = "; ".join([*notes, assignment.reason])
                return Assignment(assignment.owner, None, reason, assignment.rule)
            if isinstance(rule, TerritoryRule | SegmentRule) and not rule.matches(lead):
                continue
            picked = self._round_robin(rule.name, rule.owners, day)
            if picked is None:
                notes.append(f"{prefix}: no owner available")
                continue
            owner, position = picked
            self._count(owner, day)
            reason = "; ".join([*notes, f"{prefix}, position {position} -> {owner.label}"])
            return Assignment(self._owner_model(owner), None, reason, rule.kind)
        queue = self.config.fallback_queue
        head = "; ".join(notes) if notes else "no rule matched"
        return Assignment(None, queue, f"{head} -> queue {queue}", "fallback_queue")


def _reason_prefix(rule: RoutingRule) -> str:
    """How a pool rule names itself in a routing reason ("" for ``account_owner``)."""
    if isinstance(rule, TerritoryRule):
        return f"territory {rule.name} -> round robin"
    if isinstance(rule, SegmentRule):
        return f"segment {rule.name} -> round robin"
    if isinstance(rule, RoundRobinRule):
        return f"round robin {rule.name}"
    return ""


def apply_assignment(lead: Lead, assignment: Assignment, now: datetime) -> None:
    """Put an assignment on the lead: owner or queue, and ``assigned_at`` when it changed."""
    if now.tzinfo is None:
        raise ValueError("apply_assignment needs a timezone-aware 'now'")
    changed = lead.owner != assignment.owner or lead.queue != assignment.queue
    values: dict[str, Any] = {
        "owner": assignment.owner,
        "queue": assignment.queue if assignment.owner is None else None,
    }
    if changed or lead.assigned_at is None:
        values["assigned_at"] = now
    set_checked(lead, values)
