"""Zoho sandbox: a 100-record upsert by Email with 10,000 Leads stored, over loopback HTTPS.

Run: ``python -m benchmarks.bench_sandbox_zoho``. Prints ms per batch and records per second.
"""

from __future__ import annotations

import ssl
import statistics
import time

import httpx

from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator

STORED = 10_000
BATCH = 100
ROUNDS = 30


def main() -> None:
    """Store 10,000 Leads, then time 100-record upserts (half updates, half inserts)."""
    with SandboxServer(emulator_types=[ZohoEmulator]) as server:
        emulator = server.sandbox.emulators["zoho"]
        assert isinstance(emulator, ZohoEmulator)
        with emulator.lock:
            for n in range(STORED):
                emulator.store.insert({"Last_Name": f"Stored{n}", "Email": f"s{n}@example.com"})
        env = server.env()
        context = ssl.create_default_context(cafile=str(server.ca_bundle))
        with httpx.Client(verify=context, timeout=60) as http:
            token = http.post(
                f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token",
                params={
                    "grant_type": "refresh_token",
                    "client_id": env["ZOHO_CLIENT_ID"],
                    "client_secret": env["ZOHO_CLIENT_SECRET"],
                    "refresh_token": env["ZOHO_REFRESH_TOKEN"],
                },
            ).json()["access_token"]
            headers = {"Authorization": f"Zoho-oauthtoken {token}"}
            url = f"{env['ZOHO_API_DOMAIN']}/crm/v7/Leads/upsert"
            timings: list[float] = []
            for round_ in range(ROUNDS):
                data = [
                    {
                        "Last_Name": f"Batch{round_}-{i}",
                        "Email": f"s{round_ * 50 + i}@example.com"
                        if i < BATCH // 2
                        else f"new{round_}-{i}@example.com",
                        "Lead_Status": "Contacted",
                    }
                    for i in range(BATCH)
                ]
                started = time.perf_counter()
                response = http.post(
                    url, json={"data": data, "duplicate_check_fields": ["Email"]}, headers=headers
                )
                timings.append(time.perf_counter() - started)
                response.raise_for_status()
        median = statistics.median(timings)
        print(f"zoho upsert, {STORED} stored: {median * 1000:.1f} ms per {BATCH}-record batch")
        print(f"  {BATCH / median:.0f} records/s (median of {ROUNDS} batches, loopback HTTPS)")


if __name__ == "__main__":
    main()
