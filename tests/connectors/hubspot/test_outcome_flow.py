"""The sales outcome loop with HubSpot as the CRM, through the sync engine: a flow naming the
HubSpot-as-CRM mapping reads the contact's deal (the sandbox, real HTTP) and carries the outcome
back to marketing (an in-memory system with HubSpot's contact properties); a lost deal goes to
its recycle play."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leadrelay.check import check_connection
from leadrelay.config import FlowConfig, load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.handoff.recycle import (
    PlayKind,
    RecyclePlay,
    apply_play,
    due_for_reentry,
    plan_recycle,
)
from leadrelay.mappings.engine import DEFAULTS_DIR, build_lead, load_mapping
from leadrelay.model import Lead, OutcomeReason, Stage
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import SyncEngine
from leadrelay.sync.state import StateStore
from tests.connectors.contract import read_all
from tests.connectors.hubspot.conftest import MakeConnector
from tests.hubspot_sandbox import hubspot_api
from tests.sync.fake_crm import FakeHub, FakeSystem

PRESET = DEFAULTS_DIR / "presets" / "hubspot_crm.toml"
FLOW = FlowConfig(name="mkt-crm", source="mkt", destination="crm", two_way=True)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


@pytest.fixture
def marketing() -> FakeSystem:
    return FakeSystem("mk", "email", "contacts", set(load_mapping("hubspot").system_fields()))


def run(store: StateStore, marketing: FakeSystem, crm: HubSpotConnector) -> None:
    SyncEngine(
        store,
        FLOW,
        source=FakeHub(None, "mkt", marketing),
        destination=crm,
        source_mapping=load_mapping("hubspot"),
        destination_mapping=load_mapping("hubspot", override=PRESET),
    ).run()


def won_deal(server: SandboxServer, contact_id: str) -> None:
    body = {
        "properties": {
            "dealname": "Acme",
            "dealstage": "closedwon",
            "amount": "5000",
            "deal_currency_code": "EUR",
            "closed_won_reason": "Product fit",
        },
        "associations": [
            {
                "to": {"id": contact_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
            }
        ],
    }
    hubspot_api(server, "POST", "/crm/v3/objects/deals", body, expect=201)


def test_a_deal_won_in_hubspot_makes_the_marketing_contact_a_customer_with_its_outcome(
    make_connector: MakeConnector,
    server: SandboxServer,
    store: StateStore,
    marketing: FakeSystem,
) -> None:
    crm = make_connector()
    marketing.put(
        {
            "email": "ada@example.com",
            "lastname": "Silva",
            "lifecyclestage": "salesqualifiedlead",
            "hs_lead_status": "CONNECTED",
        }
    )
    run(store, marketing, crm)
    contact_id = str(crm.lookup(emails=["ada@example.com"])["ada@example.com"]["hs_object_id"])
    won_deal(server, contact_id)

    run(store, marketing, crm)

    [record] = marketing.records.values()
    assert record["lifecyclestage"] == "customer"
    assert record["leadrelay_outcome"] == "closedwon"
    assert record["leadrelay_outcome_reason"] == "product_fit"
    assert float(record["leadrelay_amount"]) == 5000.0


def test_a_lost_deal_goes_to_the_recycle_play_of_its_reason(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    crm = make_connector()
    mapping = load_mapping("hubspot", override=PRESET)
    crm.read_mapped(mapping.system_fields())
    fields = mapping.to_system(Lead(email="bob@example.com", stage=Stage.SQL))
    [written] = crm.upsert([UpsertInput("bob", fields)])
    body = {
        "properties": {"dealname": "Bob Co", "dealstage": "closedlost"},
        "associations": [
            {
                "to": {"id": written.external_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
            }
        ],
    }
    deal_id = hubspot_api(server, "POST", "/crm/v3/objects/deals", body, expect=201)["id"]
    hubspot_api(
        server,
        "PATCH",
        f"/crm/v3/objects/deals/{deal_id}",
        {"properties": {"closed_lost_reason": "Timing"}},
    )
    record = read_all(crm, None)[0][-1]  # its contact, read again with the changed deal
    lead, problems = build_lead(mapping.to_lead(record))
    assert problems == [] and lead is not None
    assert (lead.stage, lead.outcome_reason) == (Stage.LOST, OutcomeReason.TIMING)

    play = plan_recycle(lead, NOW)

    assert isinstance(play, RecyclePlay)
    assert play.kind is PlayKind.NURTURE
    assert play.reentry_at == NOW + timedelta(days=90)
    assert play.description.startswith("lost on timing (played as timing) -> nurture")
    apply_play(lead, play, NOW)
    # the deal stays lost for marketing; it re-enters the funnel on its date
    assert lead.stage is Stage.LOST
    assert due_for_reentry(lead, NOW + timedelta(days=90))


def test_check_validates_a_flow_naming_the_hubspot_crm_mapping(
    server: SandboxServer, tmp_path: Path
) -> None:
    env = server.env()
    connection = "\n".join(
        [
            'kind = "hubspot"',
            f'access_token = "{env["HUBSPOT_ACCESS_TOKEN"]}"',
            f'base_url = "{env["HUBSPOT_BASE_URL"]}"',
            f'ca_bundle = "{Path(env["LEADRELAY_CA_BUNDLE"]).resolve()}"',
        ]
    )
    (tmp_path / "mappings").mkdir()
    shutil.copy(PRESET, tmp_path / "mappings" / "hubspot_crm.toml")
    (tmp_path / "leadrelay.toml").write_text(
        f"[connections.marketing]\n{connection}\n\n[connections.crm]\n{connection}\n\n"
        '[[flows]]\nname = "marketing-crm"\nsource = "marketing"\ndestination = "crm"\n'
        'two_way = true\nmappings.crm = "mappings/hubspot_crm.toml"\n',
        encoding="utf-8",
    )
    config = load_config(tmp_path / "leadrelay.toml")

    results = check_connection(config, "crm", config.connection("crm"))

    assert [str(r) for r in results if not r.ok] == []
    assert any(r.subject.endswith("hubspot_crm.toml") for r in results)
