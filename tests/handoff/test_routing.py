from __future__ import annotations

import re
import tomllib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from leadrelay.handoff.routing import (
    Assignment,
    DomainAccounts,
    MemoryRoutingState,
    OwnerInfo,
    OwnerSettings,
    Router,
    RoutingConfig,
    apply_assignment,
    weighted_cycle,
)
from leadrelay.model import Lead, Owner
from leadrelay.project import write_starter_project

NOW = datetime(2024, 5, 10, 9, 0, tzinfo=UTC)

JANE = OwnerInfo("u1", "jane@acme.io", "Jane Doe")
MAX = OwnerInfo("u2", "max@acme.io", "Max Mustermann")
ANA = OwnerInfo("u3", "ana@acme.io", "Ana Silva")
LEFT = OwnerInfo("u9", "gone@acme.io", "Gone Person", active=False)
USERS = [JANE, MAX, ANA, LEFT]


def router(
    rules: list[dict[str, Any]] | None = None,
    owners: dict[str, Any] | None = None,
    accounts: dict[str, str] | None = None,
    state: MemoryRoutingState | None = None,
    users: list[OwnerInfo] | None = None,
) -> Router:
    data: dict[str, Any] = {"owners": owners or {}}
    if rules is not None:
        data["rules"] = rules
    return Router(
        RoutingConfig.model_validate(data),
        USERS if users is None else users,
        DomainAccounts(accounts or {}),
        state or MemoryRoutingState(),
    )


EMEA = {
    "kind": "territory",
    "name": "EMEA",
    "countries": ["Germany", "FR"],
    "regions": ["Bavaria"],
    "postal_prefixes": ["SW1"],
    "owners": ["jane@acme.io", "u2"],
}
ENTERPRISE = {
    "kind": "segment",
    "name": "enterprise",
    "employees_min": 1000,
    "industries": ["Banking"],
    "owners": ["u3"],
}


# --- config --------------------------------------------------------------------------------


def test_defaults_match_the_starter_project(tmp_path: Path) -> None:
    write_starter_project(tmp_path)
    section = tomllib.loads((tmp_path / "leadrelay.toml").read_text("utf-8"))["routing"]
    config = RoutingConfig.model_validate(section)
    assert config.fallback_queue == "Unassigned Leads" == RoutingConfig().fallback_queue
    assert [rule.kind for rule in config.rules] == ["account_owner"]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"fallback": "x"}, "fallback"),
        ({"rules": [{**EMEA, "country": ["DE"]}]}, "country"),
        ({"owners": {"u1": {"wieght": 2}}}, "wieght"),
    ],
)
def test_unknown_key_is_named(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as info:
        RoutingConfig.model_validate(data)
    assert any(e["type"] == "extra_forbidden" and e["loc"][-1] == key for e in info.value.errors())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": [{"kind": "lottery"}]}, "does not match any of the expected tags"),
        ({"rules": [{"kind": "territory", "name": "X", "owners": ["u1"]}]}, "needs countries"),
        ({"rules": [{**EMEA, "owners": []}]}, "territory 'EMEA' needs owners"),
        ({"rules": [{"kind": "segment", "name": "S", "owners": ["u1"]}]}, "needs employees_min"),
        (
            {"rules": [{**ENTERPRISE, "employees_min": 10, "employees_max": 5}]},
            "employees_min is above employees_max",
        ),
        ({"rules": [EMEA, EMEA]}, "two routing rules are called 'EMEA'"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        (
            {"owners": {"u1": {"out_of_office": [{"start": "2024-05-10", "end": "2024-05-01"}]}}},
            "ends (2024-05-01) before it starts",
        ),
    ],
)
def test_bad_config_is_explained(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RoutingConfig.model_validate(data)


# --- rules ---------------------------------------------------------------------------------


def test_account_owner_by_domain() -> None:
    r = router(accounts={"acme-customer.io": "u3"})
    assignment = r.route(Lead(email="bob@eu.acme-customer.io"), NOW)
    assert assignment == Assignment(
        Owner(id="u3", email="ana@acme.io", name="Ana Silva"),
        None,
        "existing account eu.acme-customer.io -> owner Ana Silva",
        "account_owner",
    )


def test_account_owner_inactive_falls_through() -> None:
    r = router(accounts={"globex.com": "u9"})
    assignment = r.route(Lead(company_domain="globex.com"), NOW)
    assert assignment.owner is None
    assert assignment.reason == (
        "existing account globex.com: owner Gone Person inactive -> queue Unassigned Leads"
    )


@pytest.mark.parametrize(
    "lead",
    [
        Lead(country="DE"),
        Lead(country="France"),
        Lead(region="bavaria"),
        Lead(postal_code="sw1a 1aa"),
    ],
)
def test_territory_matches(lead: Lead) -> None:
    assignment = router([EMEA]).route(lead, NOW)
    assert assignment.reason == "territory EMEA -> round robin, position 1 -> Jane Doe"
    assert assignment.rule == "territory"


@pytest.mark.parametrize("lead", [Lead(country="US"), Lead(postal_code="EC1 2AB"), Lead()])
def test_territory_miss_goes_to_fallback(lead: Lead) -> None:
    assignment = router([EMEA]).route(lead, NOW)
    assert assignment == Assignment(
        None, "Unassigned Leads", "no rule matched -> queue Unassigned Leads", "fallback_queue"
    )


@pytest.mark.parametrize(
    ("lead", "matched"),
    [
        (Lead(employees=5000, industry="banking"), True),
        (Lead(employees=999, industry="Banking"), False),
        (Lead(employees=5000, industry="Retail"), False),
        (Lead(industry="Banking"), False),
    ],
)
def test_segment_needs_every_criterion(lead: Lead, matched: bool) -> None:
    assignment = router([ENTERPRISE]).route(lead, NOW)
    assert (assignment.rule == "segment") is matched
    if matched:
        assert assignment.reason == "segment enterprise -> round robin, position 1 -> Ana Silva"


def test_rules_apply_in_order() -> None:
    lead = Lead(email="x@bank.de", country="DE", employees=5000, industry="Banking")
    segment_first = router([ENTERPRISE, EMEA]).route(lead, NOW)
    territory_first = router([EMEA, ENTERPRISE]).route(lead, NOW)
    account_first = router([{"kind": "account_owner"}, EMEA], accounts={"bank.de": "u2"}).route(
        lead, NOW
    )
    assert segment_first.rule == "segment"
    assert territory_first.rule == "territory"
    assert account_first.rule == "account_owner"


def test_round_robin_over_all_active_users() -> None:
    r = router([{"kind": "round_robin"}])
    names = [r.route(Lead(), NOW).reason for _ in range(4)]
    assert names == [
        "round robin all, position 1 -> Ana Silva",
        "round robin all, position 2 -> Jane Doe",
        "round robin all, position 3 -> Max Mustermann",
        "round robin all, position 1 -> Ana Silva",
    ]


def test_position_persists_in_state() -> None:
    state = MemoryRoutingState()
    router([EMEA], state=state).route(Lead(country="DE"), NOW)
    again = router([EMEA], state=state).route(Lead(country="DE"), NOW)
    assert again.reason == "territory EMEA -> round robin, position 2 -> Max Mustermann"
    assert state.values["rr/EMEA/position"] == 0


def test_weights_are_proportional_over_100_leads() -> None:
    r = router(
        [{"kind": "round_robin", "owners": ["u1", "u2", "u3"]}],
        owners={"u1": {"weight": 5}, "u2": {"weight": 3}, "ana@acme.io": {"weight": 2}},
    )
    counts = Counter(r.route(Lead(), NOW).owner.id for _ in range(100))  # type: ignore[union-attr]
    assert counts == {"u1": 50, "u2": 30, "u3": 20}


def test_weighted_cycle_spreads_turns() -> None:
    a, b = OwnerInfo("a", weight=3), OwnerInfo("b", weight=1)
    assert [o.id for o in weighted_cycle([a, b])] == ["a", "a", "b", "a"]
    assert weighted_cycle([OwnerInfo("z", weight=0)]) == []


def test_caps_stop_an_owner_for_the_day() -> None:
    r = router([{"kind": "round_robin", "owners": ["u1", "u2"]}], owners={"u1": {"cap": 10}})
    counts = Counter(r.route(Lead(), NOW).owner.id for _ in range(100))  # type: ignore[union-attr]
    assert counts == {"u1": 10, "u2": 90}
    tomorrow = r.route(Lead(), NOW + timedelta(days=1))
    assert tomorrow.owner is not None


def test_caps_count_in_the_configured_timezone() -> None:
    config = RoutingConfig.model_validate(
        {
            "timezone": "America/New_York",
            "rules": [{"kind": "round_robin", "owners": ["u1"]}],
            "owners": {"u1": {"cap": 1}},
        }
    )
    r = Router(config, USERS)
    late = datetime(2024, 5, 10, 23, 0, tzinfo=UTC)  # 19:00 in New York
    assert r.route(Lead(), late).owner is not None
    # 03:00 UTC next day is still 10 May in New York: the cap holds.
    assert r.route(Lead(), late + timedelta(hours=4)).owner is None


@pytest.mark.parametrize(
    "settings",
    [
        {"available": False},
        {"out_of_office": [{"start": "2024-05-09", "end": "2024-05-10"}]},
        {"cap": 0},
    ],
)
def test_unavailable_owner_is_skipped(settings: dict[str, Any]) -> None:
    r = router([{"kind": "round_robin", "owners": ["u1", "u2"]}], owners={"u1": settings})
    assert {r.route(Lead(), NOW).owner.id for _ in range(4)} == {"u2"}  # type: ignore[union-attr]


def test_out_of_office_ends() -> None:
    r = router(
        [{"kind": "round_robin", "owners": ["u1"]}],
        owners={"u1": {"out_of_office": [{"start": "2024-05-01", "end": "2024-05-09"}]}},
    )
    assert r.route(Lead(), NOW).owner is not None


def test_inactive_user_never_gets_round_robin() -> None:
    r = router([{"kind": "round_robin", "owners": ["u9", "u1"]}])
    assert {r.route(Lead(), NOW).owner.id for _ in range(3)} == {"u1"}  # type: ignore[union-attr]


def test_pool_with_nobody_available_passes_on() -> None:
    r = router(
        [EMEA, {"kind": "round_robin", "owners": ["u3"]}],
        owners={"u1": {"available": False}, "u2": {"available": False}},
    )
    assignment = r.route(Lead(country="DE"), NOW)
    assert assignment.owner == ANA.owner()
    assert assignment.reason == (
        "territory EMEA -> round robin: no owner available; "
        "round robin all, position 1 -> Ana Silva"
    )


def test_no_owner_anywhere_names_why() -> None:
    r = router([EMEA], owners={"u1": {"available": False}, "u2": {"cap": 0}})
    assignment = r.route(Lead(country="DE"), NOW)
    assert assignment == Assignment(
        None,
        "Unassigned Leads",
        "territory EMEA -> round robin: no owner available -> queue Unassigned Leads",
        "fallback_queue",
    )


def test_pool_refs_unknown_to_crm_are_ignored() -> None:
    r = router([{"kind": "round_robin", "owners": ["nobody@acme.io"]}])
    assert r.route(Lead(), NOW).queue == "Unassigned Leads"


def test_owned_lead_keeps_owner_unless_reassigned() -> None:
    owned = Lead(owner=Owner(id="u2", name="Max Mustermann"))
    r = router([{"kind": "round_robin", "owners": ["u1"]}])
    kept = r.route(owned, NOW)
    assert (kept.owner, kept.reason, kept.rule) == (
        owned.owner,
        "already owned by Max Mustermann",
        "existing_owner",
    )
    assert r.route(owned, NOW, reassign=True).owner == JANE.owner()


def test_every_lead_gets_owner_or_queue() -> None:
    r = router([EMEA, ENTERPRISE], owners={"u1": {"cap": 3}, "u2": {"cap": 3}})
    leads = [Lead(country=c) for c in ("DE", "US", "FR", "JP")] * 5
    for lead in leads:
        assignment = r.route(lead, NOW)
        assert (assignment.owner is None) != (assignment.queue is None)
        assert assignment.reason


def test_routing_is_deterministic() -> None:
    def run() -> list[str]:
        r = router([EMEA, {"kind": "round_robin"}], owners={"u2": {"weight": 2, "cap": 4}})
        return [r.route(Lead(country=c), NOW).reason for c in ("DE", "US") * 10]

    assert run() == run()


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        router().route(Lead(), datetime(2024, 5, 1))


def test_account_domains_must_be_domains() -> None:
    with pytest.raises(ValueError, match="'localhost' is not a domain"):
        DomainAccounts({"localhost": "u1"})


# --- apply_assignment -------------------------------------------------------------------------


def test_apply_owner() -> None:
    lead = Lead(queue="Unassigned Leads")
    apply_assignment(lead, Assignment(JANE.owner(), None, "r", "round_robin"), NOW)
    assert (lead.owner, lead.queue, lead.assigned_at) == (JANE.owner(), None, NOW)


def test_apply_queue() -> None:
    lead = Lead()
    apply_assignment(lead, Assignment(None, "Unassigned Leads", "r", "fallback_queue"), NOW)
    assert (lead.owner, lead.queue, lead.assigned_at) == (None, "Unassigned Leads", NOW)


def test_apply_same_owner_keeps_assigned_at() -> None:
    lead = Lead(owner=JANE.owner(), assigned_at=NOW)
    later = NOW + timedelta(hours=5)
    apply_assignment(lead, Assignment(JANE.owner(), None, "r", "existing_owner"), later)
    assert lead.assigned_at == NOW


@pytest.mark.parametrize(
    ("day", "away"),
    [(date(2024, 5, 1), True), (date(2024, 5, 9), True), (date(2024, 5, 10), False)],
)
def test_out_of_office_days_are_inclusive(day: date, away: bool) -> None:
    settings = OwnerSettings.model_validate(
        {"out_of_office": [{"start": "2024-05-01", "end": "2024-05-09"}]}
    )
    assert JANE.with_settings(settings).away_on(day) is away


def test_settings_by_email_apply() -> None:
    r = router(owners={"ana@acme.io": {"weight": 4}})
    assert r.owner("u3").weight == 4  # type: ignore[union-attr]
    assert r.owner("ANA@acme.io") == r.owner("u3")
