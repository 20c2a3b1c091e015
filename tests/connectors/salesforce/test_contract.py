"""The shared connector contract against the Salesforce emulator, then the same under faults."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from leadrelay.config import SalesforceConnection
from leadrelay.connectors.base import RawRecord, UpsertInput, normalize_email
from leadrelay.connectors.errors import ConnectorError
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.connectors.salesforce.connector import parse_stamp
from leadrelay.sandbox.salesforce import SalesforceEmulator
from leadrelay.sandbox.server import SandboxServer
from tests.connectors.contract import ConnectorContract, unique_email
from tests.connectors.salesforce.conftest import FAST_RETRY, admin, sandbox_settings

OVERLAP = timedelta(seconds=60)


class TestSalesforceContract(ConnectorContract):
    email_field = "Email"
    # The connector reads back OVERLAP before the cursor, in whole seconds.
    overlap = OVERLAP + timedelta(seconds=1)

    @pytest.fixture(scope="class")
    @classmethod
    def sandbox(cls) -> Iterator[dict[str, str]]:
        with SandboxServer(emulator_types=[SalesforceEmulator]) as server:
            yield server.env()

    @pytest.fixture
    def connector(self, sandbox: dict[str, str]) -> Iterator[SalesforceConnector]:
        admin(sandbox, "reset")
        with SalesforceConnector(
            sandbox_settings(sandbox), "sf", retry=FAST_RETRY, overlap=OVERLAP
        ) as connector:
            assert isinstance(connector, SalesforceConnector)
            yield connector

    def new_record(self, email: str) -> RawRecord:
        return {"Email": email, "LastName": "Silva", "Company": "Acme", "LeadSource": "Web"}

    def changed_fields(self) -> RawRecord:
        return {"LastName": "Souza", "Title": "Head of Growth"}

    def invalid_value(self) -> tuple[str, Any]:
        return "Status", "Not a status"

    def record_id(self, record: RawRecord) -> str:
        return str(record["Id"])

    def modified_at(self, record: RawRecord) -> datetime:
        return parse_stamp(str(record["SystemModstamp"]))


FAULTS = [
    pytest.param({"error_rate": 0.3}, id="errors"),
    pytest.param({"reset_rate": 0.2}, id="resets"),
    pytest.param({"latency_ms": 50}, id="latency"),
    # The emulator answers its injected limit with 403 REQUEST_LIMIT_EXCEEDED "TotalRequests":
    # an org budget used up, which the policy fails fast on (a typed RateLimited).
    pytest.param({"rate_limit_per_10s": 20}, id="rate-limit"),
]


def _emails_in_org(connector: SalesforceConnector) -> Counter[str]:
    rows = connector.query("SELECT Id, Email FROM Lead", describe="count Leads")
    return Counter(normalize_email(str(r["Email"])) for r in rows if r.get("Email"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("faults", FAULTS)
@pytest.mark.parametrize("external_id", [None, "LeadRelay_Key__c"], ids=["lookup", "extid"])
def test_upserts_under_faults_end_typed_and_never_duplicate(
    make_connector: Callable[..., SalesforceConnector],
    env: dict[str, str],
    faults: dict[str, Any],
    external_id: str | None,
) -> None:
    connector = make_connector(external_id_field=external_id)
    connector.health()  # log in before the faults start
    emails = [unique_email(f"f{n}") for n in range(25)]
    inputs = [
        UpsertInput(e, {"Email": e, "LastName": "Faulty", "Company": "Acme", "LeadRelay_Key__c": e})
        for e in emails
    ]
    admin(env, "faults", faults)
    outcomes: list[str] = []
    for _ in range(2):
        try:
            results = connector.upsert(inputs)
        except ConnectorError as exc:  # a whole-call failure must be typed
            outcomes.append(type(exc).__name__)
            continue
        assert [r.ref for r in results] == emails
        assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
        outcomes.append("ok")
    admin(env, "faults", {})
    counts = _emails_in_org(connector)
    assert all(counts[normalize_email(e)] <= 1 for e in emails), counts.most_common(3)
    if "ok" in outcomes:
        assert all(counts[normalize_email(e)] == 1 for e in emails)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("faults", FAULTS)
def test_reads_under_faults_end_typed(
    make_connector: Callable[..., SalesforceConnector],
    env: dict[str, str],
    faults: dict[str, Any],
) -> None:
    connector = make_connector()
    emails = [unique_email(f"r{n}") for n in range(5)]
    connector.upsert(
        [UpsertInput(e, {"Email": e, "LastName": "R", "Company": "Acme"}) for e in emails]
    )
    admin(env, "faults", faults)
    try:
        found = connector.lookup(emails=emails)
        records = [r for page in connector.read_changes(None) for r in page.records]
    except ConnectorError:
        return
    assert sorted(found) == sorted(normalize_email(e) for e in emails)
    assert {normalize_email(r["Email"]) for r in records} >= set(found)


LIVE_KEYS = (
    "SALESFORCE_LIVE_USERNAME",
    "SALESFORCE_LIVE_PASSWORD",
    "SALESFORCE_LIVE_CONSUMER_KEY",
    "SALESFORCE_LIVE_CONSUMER_SECRET",
)


@pytest.mark.live
@pytest.mark.skipif(
    not all(os.environ.get(k) for k in LIVE_KEYS),
    reason=f"needs a real org's credentials in {', '.join(LIVE_KEYS)}",
)
class TestSalesforceLiveContract(TestSalesforceContract):
    """The contract against a real org (a Developer Edition or a sandbox org).

    Optional: SALESFORCE_LIVE_LOGIN_URL (default https://test.salesforce.com),
    SALESFORCE_LIVE_SECURITY_TOKEN. Records are created with contract-… emails; delete them
    afterwards. Run with ``pytest -m live``.
    """

    @pytest.fixture(scope="class")
    @classmethod
    def sandbox(cls) -> Iterator[dict[str, str]]:
        yield {k: os.environ[k] for k in os.environ if k.startswith("SALESFORCE_LIVE_")}

    @pytest.fixture
    def connector(self, sandbox: dict[str, str]) -> Iterator[SalesforceConnector]:
        settings = SalesforceConnection(
            kind="salesforce",
            auth="password",
            login_url=sandbox.get("SALESFORCE_LIVE_LOGIN_URL", "https://test.salesforce.com"),
            username=sandbox["SALESFORCE_LIVE_USERNAME"],
            password=sandbox["SALESFORCE_LIVE_PASSWORD"],
            security_token=sandbox.get("SALESFORCE_LIVE_SECURITY_TOKEN") or None,
            consumer_key=sandbox["SALESFORCE_LIVE_CONSUMER_KEY"],
            consumer_secret=sandbox["SALESFORCE_LIVE_CONSUMER_SECRET"],
        )
        with SalesforceConnector(settings, "live", overlap=OVERLAP) as connector:
            assert isinstance(connector, SalesforceConnector)
            yield connector
