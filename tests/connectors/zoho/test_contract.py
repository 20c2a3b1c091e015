"""The shared connector contract against the Zoho sandbox, under faults, and live."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from leadrelay.config import ZohoConnection
from leadrelay.connectors.base import RawRecord, UpsertInput, normalize_email
from leadrelay.connectors.credentials import SealedCredentialCache, process_cache
from leadrelay.connectors.errors import ConnectorError
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.connectors.zoho.connector import ReadCursor
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator
from leadrelay.sync.state import StateStore
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
    def emulator(self, server: SandboxServer) -> ZohoEmulator:
        found = server.sandbox.emulators["zoho"]
        assert isinstance(found, ZohoEmulator)
        return found

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

    def test_reading_beyond_2000_records_is_one_query_per_200(
        self, connector: ZohoConnector, emulator: ZohoEmulator
    ) -> None:
        with emulator.lock:
            for n in range(2050):
                emulator.store.insert({"Last_Name": f"Bulk{n}", "Email": f"bulk{n}@example.com"})
        connector.health()
        before = connector.api_calls
        records, _ = read_all(connector, None)
        assert len({r["id"] for r in records}) == 2050
        # One composite call (the first 25 Leads; no changed Deal or Contact, no deleted Lead),
        # then 11 keyset COQL pages of 200 for the other 2,025; no offset reaches a limit.
        assert connector.api_calls - before == 12

    def test_a_lead_edited_between_pages_is_read_and_none_is_skipped(
        self, connector: ZohoConnector, emulator: ZohoEmulator
    ) -> None:
        with emulator.lock:
            ids = [emulator.store.insert({"Last_Name": f"K{n}"}).id for n in range(450)]
        pages = connector.read_changes(None)
        first = next(pages)
        # The composite call's first page: 25 Leads (a COQL sub-request's most).
        assert [r["id"] for r in first.records] == ids[:25]
        # Edits between pages: one Lead already read and one not read yet. Offset pages over
        # the Modified_Time order would now shift by one and skip a Lead for good.
        edited = {ids[0]: "Edited0", ids[300]: "Edited300"}
        assert all(r.ok for r in connector.update({i: {"Last_Name": n} for i, n in edited.items()}))
        seen = {r["id"]: r["Last_Name"] for r in first.records}
        cursor = first.cursor
        for page in pages:
            seen.update({r["id"]: r["Last_Name"] for r in page.records})
            cursor = page.cursor
        records, _ = read_all(connector, cursor)
        seen.update({r["id"]: r["Last_Name"] for r in records})
        assert set(seen) == set(ids)
        assert {i: seen[i] for i in edited} == edited

    def test_a_read_stopped_after_a_page_resumes_from_its_cursor(
        self, connector: ZohoConnector, emulator: ZohoEmulator
    ) -> None:
        with emulator.lock:
            ids = [emulator.store.insert({"Last_Name": f"R{n}"}).id for n in range(450)]
        first = next(iter(connector.read_changes(None)))  # the run dies after one page
        assert first.cursor is not None
        rest, _ = read_all(connector, first.cursor)
        assert [r["id"] for r in first.records + rest] == ids

    def test_deleted_leads_come_with_the_read_after_the_deletion(
        self, connector: ZohoConnector
    ) -> None:
        kept, gone = (unique_email("kept"), unique_email("gone"))
        _, gone_id = self.write(connector, kept, gone)
        _, cursor = read_all(connector, None)
        assert all(r.ok for r in connector.delete([gone_id]))
        deleted = [d for page in connector.read_changes(cursor) for d in page.deleted]
        assert [(d.record_id, d.merged_into) for d in deleted] == [(gone_id, None)]
        assert deleted[0].at is not None
        # A read from a cursor past the deletion (beyond the look-back) does not report it.
        past = deleted[0].at + timedelta(seconds=1)
        later = ReadCursor(past, None, past).encode()
        assert [d for page in connector.read_changes(later) for d in page.deleted] == []

    def test_a_read_that_finds_a_change_costs_one_composite_call(
        self, connector: ZohoConnector
    ) -> None:
        self.write(connector, unique_email())  # read again within the look-back: a change
        _, cursor = read_all(connector, None)
        before = connector.api_calls
        records, _ = read_all(connector, cursor)
        assert len(records) == 1
        # Leads, Deals, Contacts and deleted Leads in one composite call: none is full.
        assert connector.api_calls - before == 1

    def test_a_record_that_cannot_be_encoded_fails_alone(
        self, connector: ZohoConnector, emulator: ZohoEmulator
    ) -> None:
        good, bad, nan = (unique_email(n) for n in ("good", "bad", "nan"))
        inputs = [
            UpsertInput("good", {"Email": good, "Last_Name": "Fine"}),
            UpsertInput("bad", {"Email": bad, "Last_Name": "Broken \ud800"}),
            UpsertInput("nan", {"Email": nan, "Last_Name": "X", "Lead_Score": float("nan")}),
        ]
        results = connector.upsert(inputs)
        assert [r.ok for r in results] == [True, False, False]
        assert [r.error.field for r in results[1:] if r.error] == ["Last_Name", "Lead_Score"]
        assert "bad" in str(results[1].error)
        updated = connector.update({str(results[0].external_id): {"City": "\udfff"}})
        assert updated[0].error is not None and updated[0].error.field == "City"
        with emulator.lock:
            assert len(emulator.store.records) == 1

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


def test_a_dozen_commands_sharing_the_state_store_take_one_token(
    server: SandboxServer, tmp_path: Any
) -> None:
    server.sandbox.reset()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    for _ in range(12):
        process_cache().clear()  # a new process: nothing in memory
        with (
            StateStore(url) as store,
            ZohoConnector(sandbox_settings(server.env()), "zoho", retry=FAST) as zoho,
        ):
            zoho.use_credentials(SealedCredentialCache(store))
            assert zoho.health().ok
    emulator = server.sandbox.emulators["zoho"]
    assert isinstance(emulator, ZohoEmulator)
    assert [len(issued) for issued in emulator.token_issues.values()] == [1]


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
    process_cache().clear()
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
