"""The qualify step on its own: scoring, routing over CRM owners, SLA clocks, recycle plays."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from leadrelay.config import Config, FlowConfig
from leadrelay.connectors.hubspot.connector import HubSpotOwner
from leadrelay.handoff.qualify import (
    CLOCK_SPACE,
    ROUTING_SPACE,
    Qualifier,
    StoreRoutingState,
    crm_owners,
    lead_signals,
)
from leadrelay.handoff.routing import OwnerInfo
from leadrelay.mappings.engine import load_mapping
from leadrelay.model import Lead, Owner, RejectionReason, Stage, Tier
from leadrelay.sync.state import StateStore
from tests.sync.fake_crm import FakeCrm, FakeHub, FakeSystem

NOW = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
OWNERS = [
    OwnerInfo(id="005A", email="ana@acme.io", name="Ana"),
    OwnerInfo(id="005B", email="ben@acme.io", name="Ben"),
    OwnerInfo(id="005C", email="chen@acme.io", name="Chen"),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: NOW) as opened:
        yield opened


def make_config(**sections: Any) -> Config:
    return Config.model_validate(
        {
            "routing": {
                "rules": [{"kind": "round_robin", "name": "inbound"}],
                "owners": {"ana@acme.io": {"weight": 2}},
            },
            **sections,
        }
    )


def crm() -> FakeCrm:
    return FakeCrm(None, "sf", FakeSystem("00Q", "Email", "Lead", set()))


def qualifier(store: StateStore, config: Config | None = None, **kwargs: Any) -> Qualifier:
    kwargs.setdefault("owners", OWNERS)
    return Qualifier(config or make_config(), store, crm(), **kwargs)


def pricing_director(n: int = 1, **extra: Any) -> Lead:
    return Lead(
        email=f"dir{n}@bigco{n}.io",
        job_title="Director of Operations",
        employees=120,
        landing_page="https://www.example.org/pricing?plan=team",
        intent_signals=["demo_request"],
        created_at=NOW - timedelta(minutes=5),
        **extra,
    )


def test_a_qualifying_lead_is_scored_made_mql_routed_and_given_a_due_time(
    store: StateStore,
) -> None:
    lead = pricing_director()
    done = qualifier(store).qualify(lead, now=NOW)
    assert done.score.is_mql and lead.stage is Stage.MQL and lead.tier is Tier.HOT
    assert lead.score is not None and lead.score >= 60
    assert lead.qualification_reason is not None and "pricing page" in lead.qualification_reason
    assert lead.owner is not None and lead.owner.id in {o.id for o in OWNERS}
    assert lead.assigned_at == NOW
    assert lead.sla_due_at == lead.created_at + timedelta(hours=1)


def test_round_robin_spreads_leads_by_weight_across_runs(store: StateStore) -> None:
    # Ana weighs 2, Ben and Chen 1: a cycle is Ana, Ben, Chen, Ana. The position is kept in
    # the store, so a run of 1 and a run of 7 share out like one run of 8.
    picked: Counter[str] = Counter()
    for size in (1, 7):
        leads = [pricing_director(100 * size + n) for n in range(size)]
        outcome = qualifier(store).qualify_page([(lead, None, True) for lead in leads], now=NOW)
        assert outcome.routed == [True] * size
        picked.update(lead.owner.id for lead in leads if lead.owner)
    assert picked == {"005A": 4, "005B": 2, "005C": 2}


def test_with_no_owner_available_the_lead_goes_to_the_fallback_queue(store: StateStore) -> None:
    config = make_config(
        routing={
            "fallback_queue": "Inbound Queue",
            "rules": [{"kind": "round_robin", "name": "inbound"}],
            "owners": {o.email: {"available": False} for o in OWNERS if o.email},
        }
    )
    lead = pricing_director()
    done = qualifier(store, config).qualify(lead, now=NOW)
    assert not done.routed
    assert (lead.owner, lead.queue) == (None, "Inbound Queue")
    assert done.assignment is not None and "no owner available" in done.assignment.reason


def test_an_owner_from_a_system_of_another_kind_is_replaced_by_a_destination_user(
    store: StateStore,
) -> None:
    lead = pricing_director(owner=Owner(id="61000001", email="alex@example.com"))
    step = qualifier(store, source=FakeHub(None, "hs", FakeSystem("hs", "email", "c", set())))
    step.qualify(lead, now=NOW)
    assert lead.owner is not None and lead.owner.id in {o.id for o in OWNERS}


def test_a_lead_already_in_the_crm_is_scored_but_not_rerouted(store: StateStore) -> None:
    lead = pricing_director(owner=Owner(id="005C"))
    done = qualifier(store).qualify(lead, route=False, now=NOW)
    assert done.assignment is None and lead.owner == Owner(id="005C")
    assert lead.score is not None


def test_include_stages_is_applied_after_scoring(store: StateStore) -> None:
    flow = FlowConfig(name="f", source="hs", destination="sf", include_stages=[Stage.MQL])
    cold = Lead(email="student@gmail.com", job_title="Student", created_at=NOW)
    hot = pricing_director()
    step = qualifier(store, flow=flow)
    assert not step.qualify(cold, now=NOW).routed
    assert step.qualify(hot, now=NOW).routed  # a plain lead, made MQL by its score


def test_a_dry_run_keeps_no_routing_state(store: StateStore) -> None:
    step = qualifier(store, dry_run=True)
    step.qualify_page([(pricing_director(), None, True)], now=NOW)
    assert StoreRoutingState(store, "sf").get("rr/inbound/position") is None
    assert store.get_cursor(ROUTING_SPACE, "sf|rr/inbound/position") is None


def test_a_routing_value_the_store_lacks_is_asked_for_once(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    read = store.get_cursor
    monkeypatch.setattr(
        store, "get_cursor", lambda flow, name, **kw: asked.append(name) or read(flow, name, **kw)
    )
    state = StoreRoutingState(store, "sf")
    assert [state.get("cap/005A/2026-12-07") for _ in range(3)] == [None, None, None]
    assert asked == ["sf|cap/005A/2026-12-07"]


def test_hubspot_page_urls_and_counters_are_signals() -> None:
    lead = Lead(email="a@b.io", created_at=NOW)
    raw = {
        "hs_analytics_first_url": "https://acme.io/pricing",
        "hs_email_open": "3",
        "num_conversion_events": "1",
    }
    signals, problem = lead_signals(lead, raw, "hubspot")
    assert problem is None
    assert {(s.name, s.count) for s in signals} == {
        ("pricing_page", 1),
        ("email_open", 3),
        ("form_submission", 1),
    }


def test_a_counter_that_is_not_a_number_is_reported_not_guessed() -> None:
    lead = Lead(email="a@b.io", created_at=NOW)
    signals, problem = lead_signals(lead, {"hs_email_open": "many"}, "hubspot")
    assert signals == []
    assert problem is not None and "hs_email_open" in problem


@pytest.mark.parametrize(
    ("users", "expected"),
    [
        (
            [HubSpotOwner(id="61", email="A@x.io", name="A B")],
            [OwnerInfo(id="61", email="a@x.io", name="A B")],
        ),
        (
            [{"Id": "005X", "Email": "s@x.io", "Name": "S"}],
            [OwnerInfo(id="005X", email="s@x.io", name="S")],
        ),
        (
            [{"id": "57", "email": "z@x.io", "full_name": "Z", "status": "disabled"}],
            [OwnerInfo(id="57", email="z@x.io", name="Z", active=False)],
        ),
    ],
)
def test_crm_users_become_routing_owners(users: list[Any], expected: list[OwnerInfo]) -> None:
    class Connector:
        kind = "any"

        def users(self) -> list[Any]:
            return users

    assert crm_owners(Connector()) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "stage"),
    [(RejectionReason.TIMING, Stage.RECYCLED), (RejectionReason.BAD_FIT, Stage.DISQUALIFIED)],
)
def test_a_rejection_written_back_gets_its_recycle_play(
    store: StateStore, reason: RejectionReason, stage: Stage
) -> None:
    lead = Lead(email="x@acme.io", stage=Stage.DISQUALIFIED, rejection_reason=reason)
    outcome = qualifier(store).recycle_page([lead], now=NOW)
    assert lead.stage is stage
    assert [e["event"] for e in outcome.events] == ["recycle"]
    assert outcome.events[0]["rejection_reason"] == reason.value


def test_a_rejection_without_a_reason_is_reported_not_guessed(store: StateStore) -> None:
    lead = Lead(email="x@acme.io", stage=Stage.DISQUALIFIED)
    outcome = qualifier(store).recycle_page([lead], now=NOW)
    assert lead.rejection_reason is None and lead.stage is Stage.DISQUALIFIED
    assert outcome.events == [
        {
            "event": "rejected_without_reason",
            "lead": lead.key,
            "reason": "rejected (stage disqualified) without a reason",
        }
    ]


def test_a_lead_not_rejected_has_no_play(store: StateStore) -> None:
    assert qualifier(store).recycle_page([Lead(email="x@acme.io", stage=Stage.SQL)]).events == []


def test_an_open_clock_past_due_escalates_to_slack_once(store: StateStore) -> None:
    hook = "https://hooks.slack.test/services/T0/B0/secret"
    config = make_config(sla={"escalation": {"slack": {"webhook_url": hook}}})
    system = FakeSystem("00Q", "Email", "Lead", set(load_mapping("salesforce").system_fields()))
    destination = FakeCrm(None, "sf", system)
    lead = pricing_director()
    step = Qualifier(
        config,
        store,
        destination,
        owners=[],  # nobody to route to: the lead waits in the queue, unassigned
        destination_mapping=load_mapping("salesforce"),
    )
    step.qualify_page([(lead, None, True)], now=NOW)
    record_id = system.put({"Email": lead.email, "LastName": "Dir", "Company": "BigCo"})
    store.link(lead.key, "sf", record_id)
    assert store.get_cursor(CLOCK_SPACE, f"sf|{lead.key}") is not None
    later = NOW + timedelta(hours=13)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(hook).mock(return_value=httpx.Response(200, text="ok"))
        first = step.escalate_due(later)
        second = step.escalate_due(later + timedelta(hours=1))
    assert first is not None and {d.kind.value for d in first.sent} == {"hot", "unassigned"}
    assert second is not None and second.sent == [] and len(second.already_sent) == 2
    assert route.call_count == 2
    assert "secret" not in str(first)


def test_without_email_or_slack_nothing_escalates(store: StateStore) -> None:
    step = qualifier(store)
    step.qualify_page([(pricing_director(), None, True)], now=NOW)
    assert step.escalate_due(NOW + timedelta(days=2)) is None
