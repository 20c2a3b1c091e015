"""Salesforce sandbox: a 100-record collection upsert by LeadRelay_Key__c with 10,000 Leads stored.

Run: ``python -m benchmarks.bench_sandbox_salesforce``. Prints ms per batch and records per
second, timed server side (the store calls alone) and end to end over loopback HTTPS
(``PATCH composite/sobjects/Lead/LeadRelay_Key__c``), plus an indexed SOQL lookup of 100 emails
and an incremental ``SystemModstamp`` read over the whole store.
"""

from __future__ import annotations

import ssl
import statistics
import time
from typing import Any

import httpx

from leadrelay.sandbox.salesforce import (
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    SalesforceEmulator,
)
from leadrelay.sandbox.server import SandboxServer

STORED = 10_000
BATCH = 100
ROUNDS = 30


def _records(round_: int) -> list[dict[str, Any]]:
    """Half updates of stored leads, half new ones."""
    records = []
    for i in range(BATCH):
        key = f"k-{round_ * 50 + i}" if i < BATCH // 2 else f"new-{round_}-{i}"
        records.append(
            {
                "attributes": {"type": "Lead"},
                "LeadRelay_Key__c": key,
                "LastName": f"B{round_}-{i}",
                "Company": "Acme",
                "Email": f"{key}@example.com",
                "LeadSource": "Web",
            }
        )
    return records


def _report(label: str, seconds: list[float], records: int = BATCH) -> None:
    median = statistics.median(seconds)
    print(f"{label:<44} {median * 1000:8.2f} ms/batch  {records / median:10.0f} records/s")


def main() -> None:
    """Store 10,000 leads, then time 100-record upserts in process and over HTTPS."""
    with SandboxServer(emulator_types=[SalesforceEmulator]) as server:
        emulator = server.sandbox.emulators["salesforce"]
        assert isinstance(emulator, SalesforceEmulator)
        store = emulator.store
        lead = store.schema["Lead"]
        key = lead.fields["LeadRelay_Key__c"]
        user = store.integration_user_id
        with emulator.lock:
            for n in range(STORED):
                store.create(
                    lead,
                    {"LeadRelay_Key__c": f"k-{n}", "LastName": f"S{n}", "Company": "Acme",
                     "Email": f"k-{n}@example.com"},
                    user,
                )  # fmt: skip

        in_process: list[float] = []
        for round_ in range(ROUNDS):
            batch = _records(round_ + ROUNDS)
            started = time.perf_counter()
            with emulator.lock:
                for record in batch:
                    values = store.deserialize(lead, record)
                    value = values.pop("LeadRelay_Key__c")
                    store.upsert(lead, key, value, values, user, allow_save=True)
            in_process.append(time.perf_counter() - started)

        context = ssl.create_default_context(cafile=str(server.ca_bundle))
        with httpx.Client(base_url=server.url, verify=context, timeout=30) as http:
            token = http.post(
                "/services/oauth2/token",
                data={
                    "grant_type": "password",
                    "client_id": SANDBOX_CONSUMER_KEY,
                    "client_secret": SANDBOX_CONSUMER_SECRET,
                    "username": SANDBOX_USERNAME,
                    "password": SANDBOX_PASSWORD,
                },
            ).json()["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            http.headers["Sforce-Duplicate-Rule-Header"] = "allowSave=true"
            over_https: list[float] = []
            for round_ in range(ROUNDS):
                body = {"allOrNone": False, "records": _records(round_)}
                started = time.perf_counter()
                response = http.patch(
                    "/services/data/v59.0/composite/sobjects/Lead/LeadRelay_Key__c", json=body
                )
                over_https.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                assert all(r["success"] for r in response.json())

            emails = ", ".join(f"'k-{n}@example.com'" for n in range(0, STORED, STORED // BATCH))
            lookups: list[float] = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                response = http.get(
                    "/services/data/v59.0/query",
                    params={"q": f"SELECT Id, Email FROM Lead WHERE Email IN ({emails})"},
                )
                lookups.append(time.perf_counter() - started)
                assert response.json()["totalSize"] == BATCH

            scans: list[float] = []
            soql = (
                "SELECT Id, SystemModstamp FROM Lead WHERE SystemModstamp >= "
                "2000-01-01T00:00:00Z ORDER BY SystemModstamp, Id"
            )
            for _ in range(5):
                started = time.perf_counter()
                response = http.get("/services/data/v59.0/query", params={"q": soql})
                scans.append(time.perf_counter() - started)
                assert len(response.json()["records"]) == 2000

        print(f"Salesforce sandbox, {STORED} leads stored, {ROUNDS} rounds of {BATCH}")
        _report("upsert by LeadRelay_Key__c, store calls", in_process)
        _report("composite/sobjects upsert over HTTPS", over_https)
        _report("SOQL Email IN (100 values) over HTTPS", lookups)
        _report("SOQL incremental read, first 2,000 rows", scans, 2000)


if __name__ == "__main__":
    main()
