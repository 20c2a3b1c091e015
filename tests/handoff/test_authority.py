"""`[scoring] authority`: leadrelay's score, or the marketing system's own stage and score."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from leadrelay.config import Config, FlowConfig
from leadrelay.handoff.qualify import Qualifier
from leadrelay.model import Lead, Stage, Tier
from leadrelay.sync.state import StateStore
from tests.handoff.test_qualify import NOW, OWNERS, pricing_director
from tests.sync.fake_crm import FakeCrm, FakeHub, FakeSystem


class HubSpotSource(FakeHub):
    """A marketing source of kind ``hubspot`` (its own score is ``hubspotscore``)."""

    kind = "hubspot"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: NOW) as opened:
        yield opened


def qualify(
    store: StateStore,
    lead: Lead,
    raw: dict[str, Any] | None = None,
    *,
    authority: str = "source",
    flow_authority: str | None = None,
) -> Any:
    config = Config.model_validate(
        {
            "scoring": {"authority": authority},
            "routing": {"rules": [{"kind": "round_robin", "name": "inbound"}]},
        }
    )
    flow = FlowConfig(name="f", source="hs", destination="sf", scoring_authority=flow_authority)
    step = Qualifier(
        config,
        store,
        FakeCrm(None, "sf", FakeSystem("00Q", "Email", "Lead", set())),
        source=HubSpotSource(None, "hs", FakeSystem("hs", "email", "c", set())),
        flow=flow,
        owners=OWNERS,
    )
    return step.qualify(lead, raw=raw, now=NOW)


def marked_mql(**extra: Any) -> Lead:
    """A contact marketing marked MQL in HubSpot that leadrelay's rules score low."""
    return Lead(
        email="kim@smallco.io",
        job_title="Analyst",
        stage=Stage.MQL,
        created_at=NOW - timedelta(minutes=5),
        **extra,
    )


def test_source_authority_takes_the_sources_stage_and_score(store: StateStore) -> None:
    lead = marked_mql()
    done = qualify(store, lead, {"hubspotscore": "45"})
    assert lead.stage is Stage.MQL
    assert lead.score == 45
    assert done.score.is_mql and lead.tier is Tier.WARM
    reason = lead.qualification_reason or ""
    assert reason.startswith("MQL (warm) by hubspot's verdict, hubspot score 45")
    assert "leadrelay's second opinion" in reason
    assert "not MQL" not in reason


def test_leadrelays_score_is_kept_as_the_second_opinion(store: StateStore) -> None:
    lead = marked_mql()
    done = qualify(store, lead, {"hubspotscore": "45"})
    assert lead.score_breakdown == done.score.breakdown
    assert done.score.total < 60
    assert f"second opinion {done.score.total:g}/60" in (lead.qualification_reason or "")


def test_source_authority_never_makes_an_mql_the_source_did_not(store: StateStore) -> None:
    # a lead HubSpot has not qualified that leadrelay's rules would make an MQL
    lead = pricing_director()
    done = qualify(store, lead, {"hubspotscore": "10"})
    assert done.score.total >= 60
    assert lead.stage is Stage.LEAD and not done.score.is_mql
    assert (lead.qualification_reason or "").startswith(
        "lead in hubspot, not qualified there yet (hubspot score 10)"
    )


def test_a_source_without_a_score_is_said_so_and_none_is_invented(store: StateStore) -> None:
    lead = marked_mql()
    qualify(store, lead, {})
    assert lead.score is None
    assert "no hubspot score" in (lead.qualification_reason or "")


@pytest.mark.parametrize(
    ("authority", "flow_authority", "expected_score"),
    [("leadrelay", "source", 45), ("source", "leadrelay", None), ("source", None, 45)],
)
def test_a_flow_overrides_the_project_authority(
    store: StateStore, authority: str, flow_authority: str | None, expected_score: float | None
) -> None:
    lead = marked_mql()
    done = qualify(
        store, lead, {"hubspotscore": "45"}, authority=authority, flow_authority=flow_authority
    )
    assert done.authority == (flow_authority or authority)
    if expected_score is None:
        assert lead.score == done.score.total
    else:
        assert lead.score == expected_score


def test_leadrelay_authority_does_not_contradict_a_stage_already_held(store: StateStore) -> None:
    lead = marked_mql()
    done = qualify(store, lead, {"hubspotscore": "45"}, authority="leadrelay")
    assert lead.stage is Stage.MQL and not done.score.is_mql
    reason = lead.qualification_reason or ""
    assert reason.startswith("MQL as held")
    assert "not MQL" not in reason
