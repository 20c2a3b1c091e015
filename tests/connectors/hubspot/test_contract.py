"""The shared connector contract against the HubSpot sandbox, plain and under faults."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from leadrelay.config import HubSpotConnection
from leadrelay.connectors.base import RawRecord, UpsertInput
from leadrelay.connectors.errors import ConnectorError
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer
from tests.connectors.contract import ConnectorContract, read_all
from tests.connectors.hubspot.conftest import FAST_RETRY, MakeConnector, private_app_settings


class TestHubSpotContract(ConnectorContract):
    email_field = "email"

    @pytest.fixture(scope="class")
    @classmethod
    def hubspot_server(cls) -> Iterator[SandboxServer]:
        with SandboxServer(emulator_types=[HubSpotEmulator]) as server:
            yield server

    @pytest.fixture(scope="class")
    @classmethod
    def sandbox(cls, hubspot_server: SandboxServer) -> dict[str, str]:
        return hubspot_server.env()

    @pytest.fixture
    def connector(
        self, hubspot_server: SandboxServer, sandbox: dict[str, str]
    ) -> Iterator[HubSpotConnector]:
        hubspot_server.sandbox.reset()
        with HubSpotConnector(private_app_settings(sandbox), "hubspot", retry=FAST_RETRY) as made:
            yield made

    def new_record(self, email: str) -> RawRecord:
        return {"email": email, "firstname": "Ada", "lastname": "Silva", "company": "Acme"}

    def changed_fields(self) -> RawRecord:
        return {"lastname": "Souza", "jobtitle": "CTO"}

    def invalid_value(self) -> tuple[str, Any]:
        return "lifecyclestage", "not_a_stage"

    def record_id(self, record: RawRecord) -> str:
        return str(record["hs_object_id"])

    def modified_at(self, record: RawRecord) -> datetime:
        return datetime.fromisoformat(str(record["lastmodifieddate"]))


LIVE_TOKEN = "HUBSPOT_LIVE_ACCESS_TOKEN"


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get(LIVE_TOKEN), reason=f"{LIVE_TOKEN} is not set")
class TestHubSpotLiveContract(TestHubSpotContract):
    """The contract against a real portal (a private-app token with contacts scopes).

    ``HUBSPOT_LIVE_BASE_URL`` overrides the API root. Records it creates use unique
    ``contract-…@example.com`` emails; HubSpot's search lags writes by seconds, so the
    read_changes tests may need a rerun on a busy portal.
    """

    @pytest.fixture
    def connector(
        self,
    ) -> Iterator[HubSpotConnector]:
        settings = HubSpotConnection(
            kind="hubspot",
            access_token=os.environ[LIVE_TOKEN],
            base_url=os.environ.get("HUBSPOT_LIVE_BASE_URL", "https://api.hubapi.com"),
        )
        with HubSpotConnector(settings, "hubspot-live") as made:
            yield made


FAULTS = [
    pytest.param({"error_rate": 0.3}, id="errors-503"),
    pytest.param({"error_rate": 0.3, "error_status": 429}, id="errors-429"),
    pytest.param({"rate_limit_per_10s": 20}, id="rate-limit"),
    pytest.param({"reset_rate": 0.2}, id="resets"),
    pytest.param({"latency_ms": 50}, id="latency"),
]


def _attempt(outcomes: list[str], name: str, call: Any) -> Any:
    """Run one connector call; record whether it succeeded or ended in a typed error."""
    try:
        result = call()
        if isinstance(result, Iterator):
            result = list(result)
    except ConnectorError as error:
        outcomes.append(f"{name}: {type(error).__name__}")
        return None
    outcomes.append(f"{name}: ok")
    return result


@pytest.mark.timeout(90)
@pytest.mark.parametrize("faults", FAULTS)
def test_every_call_ends_and_upserts_never_duplicate(
    faults: dict[str, Any],
    make_connector: MakeConnector,
    server: SandboxServer,
    emulator: HubSpotEmulator,
) -> None:
    connector = make_connector()
    tag = uuid.uuid4().hex[:8]
    emails = [f"fault-{tag}-{n}@example.com" for n in range(150)]
    inputs = [UpsertInput(e, {"email": e, "firstname": "F", "lastname": "L"}) for e in emails]
    server.sandbox.set_faults(Faults.model_validate(faults | {"systems": ["hubspot"]}))
    outcomes: list[str] = []
    for _ in range(2):  # the same leads twice: the second round must update, never duplicate
        _attempt(outcomes, "upsert", lambda: connector.upsert(inputs))
    _attempt(outcomes, "lookup", lambda: connector.lookup(emails=emails[:120]))
    _attempt(outcomes, "read", lambda: read_all(connector, None))
    _attempt(outcomes, "describe", connector.describe)
    _attempt(outcomes, "health", connector.health)
    server.sandbox.set_faults(Faults())

    assert len(outcomes) == 6, outcomes
    with emulator.lock:
        live = [c for c in emulator.store.contacts.values() if c.archived_ms is None]
    stored = [str(c.props.get("email")) for c in live]
    assert len(stored) == len(set(stored)), "an email was stored twice"
    assert set(stored) <= set(emails)
    # Whatever was refused under faults, a clean rerun writes every lead exactly once.
    results = connector.upsert(inputs)
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    with emulator.lock:
        emails_now = [
            str(c.props.get("email"))
            for c in emulator.store.contacts.values()
            if c.archived_ms is None
        ]
    assert sorted(emails_now) == sorted(emails)
