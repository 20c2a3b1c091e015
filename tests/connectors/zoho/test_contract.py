"""The shared connector contract against the Zoho sandbox, under faults, and live."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from leadrelay.config import ZohoConnection
from leadrelay.connectors.base import RawRecord, UpsertInput, normalize_email
from leadrelay.connectors.errors import ConnectorError
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.connectors.zoho.auth import forget_token_sources
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator
from tests.connectors.contract import ConnectorContract, read_all, unique_email

FAST = RetryPolicy(max_attempts=8, base_s=0.02, cap_s=0.3, max_total_s=20.0)


def sandbox_settings(env: dict[str, str]) -> ZohoConnection:
    return ZohoConnection.model_validate(
        {
            "kind": "zoho",
            "client_id": env["ZOHO_CLIENT_ID"],
            "client_secret": env["ZOHO_CLIENT_SECRET"],
            "refresh_token": env["ZOHO_REFRESH_TOKEN"],
            "accounts_url": env["ZOHO_ACCOUNTS_URL"],
            "api_domain": env["ZOHO_API_DOMAIN"],
            "ca_bundle": env["LEADRELAY_CA_BUNDLE"],
        }
    )


class ZohoFacts(ConnectorContract):
    """What the contract needs to know about Zoho Leads."""

    email_field = "Email"

    def new_record(self, email: str) -> RawRecord:
        return {"Email": email, "Last_Name": "Silva", "Company": "Acme"}

    def changed_fields(self) -> RawRecord:
        return {"Last_Name": "Souza", "Lead_Status": "Contacted"}

    def invalid_value(self) -> tuple[str, Any]:
        # Zoho stores a pick-list value it does not list (Insert Records doc), so the value
        # it refuses is a malformed email.
        return "Email", "not-an-email"

    def record_id(self, record: RawRecord) -> str:
        return str(record["id"])

    def modified_at(self, record: RawRecord) -> datetime:
        return datetime.fromisoformat(record["Modified_Time"])


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[ZohoEmulator]) as running:
        yield running


class TestZohoContract(ZohoFacts):
    @pytest.fixture(scope="class")
    @classmethod
    def sandbox(cls, server: SandboxServer) -> Iterator[dict[str, str]]:
        yield server.env()

    @pytest.fixture
    def connector(self, sandbox: dict[str, str], server: SandboxServer) -> Iterator[ZohoConnector]:
        server.sandbox.set_faults(Faults())
        server.sandbox.reset()
        with ZohoConnector(sandbox_settings(sandbox), "zoho", retry=FAST) as connector:
            yield connector

    def test_escaped_emails_are_found_by_search_and_coql(self, connector: ZohoConnector) -> None:
        emails = [f"o'brien(x),y\\z.{n}@example.com" for n in range(2)]
        self.write(connector, *emails)
        assert list(connector.lookup(emails=emails[:1])) == [normalize_email(emails[0])]
        assert sorted(connector.lookup(emails=emails)) == sorted(emails)

    def test_reading_beyond_2000_records_uses_page_token(
        self, connector: ZohoConnector, server: SandboxServer
    ) -> None:
        emulator = server.sandbox.emulators["zoho"]
        assert isinstance(emulator, ZohoEmulator)
        with emulator.lock:
            for n in range(2050):
                emulator.store.insert({"Last_Name": f"Bulk{n}", "Email": f"bulk{n}@example.com"})
        connector.health()
        before = connector.api_calls
        records, _ = read_all(connector, None)
        # The sandbox refuses page=11 (DISCRETE_PAGINATION_LIMIT_EXCEEDED): the last 50
        # records can only have come with a page_token.
        assert len({r["id"] for r in records}) == 2050
        assert connector.api_calls - before == 11

    def test_health_reports_the_token_replys_domain(
        self, connector: ZohoConnector, sandbox: dict[str, str]
    ) -> None:
        health = connector.health()
        assert health.instance == sandbox["ZOHO_API_DOMAIN"]
        assert health.details["credits_used_by_this_connection"] >= 1

    def test_expired_tokens_are_refreshed_once(
        self, connector: ZohoConnector, server: SandboxServer
    ) -> None:
        connector.health()
        before = connector.tokens.refreshes
        emulator = server.sandbox.emulators["zoho"]
        assert isinstance(emulator, ZohoEmulator)
        emulator.expire_tokens()
        assert connector.health().ok
        assert connector.tokens.refreshes == before + 1


FAULTS = [
    {"error_rate": 0.3},
    {"rate_limit_per_10s": 20},
    {"reset_rate": 0.2},
    {"latency_ms": 50},
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("faults", FAULTS, ids=lambda f: next(iter(f)))
def test_calls_end_in_success_or_a_typed_error_without_duplicates(
    server: SandboxServer, faults: dict[str, Any]
) -> None:
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()
    forget_token_sources()
    env = server.env()
    emails = [unique_email(f"fault{n}") for n in range(30)]
    inputs = [UpsertInput(e, {"Email": e, "Last_Name": "Fault", "Company": "Acme"}) for e in emails]
    server.sandbox.set_faults(Faults(systems=["zoho"], **faults))
    outcomes: list[str] = []
    try:
        with ZohoConnector(sandbox_settings(env), "zoho", retry=FAST) as zoho:
            steps = [
                lambda: zoho.upsert(inputs[:15]),
                lambda: zoho.upsert(inputs),
                lambda: zoho.lookup(emails=emails),
                lambda: read_all(zoho, None),
                lambda: zoho.describe(),
                lambda: zoho.upsert(inputs[10:20]),
            ]
            for step in steps * 3:  # about 25 calls: past the 20-per-10 s fault limit
                try:
                    step()
                    outcomes.append("ok")
                except ConnectorError as exc:
                    outcomes.append(type(exc).__name__)
            server.sandbox.set_faults(Faults())
            # Without faults every lead ends up stored exactly once, whatever was retried.
            assert all(r.ok for r in zoho.upsert(inputs))
    finally:
        server.sandbox.set_faults(Faults())
    emulator = server.sandbox.emulators["zoho"]
    assert isinstance(emulator, ZohoEmulator)
    with emulator.lock:
        copies = {e: len(emulator.store.find_by("Email", e)) for e in emails}
    assert set(copies.values()) == {1}, copies
    assert outcomes.count("ok") >= 1, outcomes


_LIVE_KEYS = ("ZOHO_LIVE_CLIENT_ID", "ZOHO_LIVE_CLIENT_SECRET", "ZOHO_LIVE_REFRESH_TOKEN")


@pytest.mark.live
class TestZohoLiveContract(ZohoFacts):
    """The contract against a real Zoho org (``ZOHO_LIVE_*`` in the environment)."""

    @pytest.fixture(scope="class")
    @classmethod
    def sandbox(cls) -> Iterator[dict[str, str]]:
        missing = [key for key in _LIVE_KEYS if not os.environ.get(key)]
        if missing:
            pytest.skip(f"live Zoho test needs {', '.join(missing)}")
        yield {key: os.environ[key] for key in os.environ if key.startswith("ZOHO_LIVE_")}

    @pytest.fixture
    def connector(self, sandbox: dict[str, str]) -> Iterator[ZohoConnector]:
        settings = ZohoConnection.model_validate(
            {
                "kind": "zoho",
                "client_id": sandbox["ZOHO_LIVE_CLIENT_ID"],
                "client_secret": sandbox["ZOHO_LIVE_CLIENT_SECRET"],
                "refresh_token": sandbox["ZOHO_LIVE_REFRESH_TOKEN"],
                "accounts_url": sandbox.get("ZOHO_LIVE_ACCOUNTS_URL", "https://accounts.zoho.com"),
            }
        )
        with ZohoConnector(settings, "zoho-live") as connector:
            yield connector


def test_a_sandbox_restarted_with_a_new_ca_still_gets_a_token() -> None:
    with SandboxServer(emulator_types=[ZohoEmulator]) as first:
        env = first.env()
        with ZohoConnector(sandbox_settings(env), "zoho", retry=FAST) as zoho:
            assert zoho.health().ok
        port = first.port
    with SandboxServer(emulator_types=[ZohoEmulator], port=port) as second:
        env = second.env()
        with ZohoConnector(sandbox_settings(env), "zoho", retry=FAST) as zoho:
            # Same accounts URL, so the same shared source: the old token is refused (401),
            # refreshed once through the new CA, and the call resent.
            assert zoho.health().ok
