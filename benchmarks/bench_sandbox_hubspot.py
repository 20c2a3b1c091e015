"""HubSpot sandbox: a 100-input batch/upsert by email with 10,000 contacts stored.

Run: ``python -m benchmarks.bench_sandbox_hubspot``. Prints ms per batch and records per second,
timed server side (the store call alone) and end to end over loopback HTTPS, plus one search
over the whole store.
"""

from __future__ import annotations

import ssl
import statistics
import time
from typing import Any

import httpx

from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer

STORED = 10_000
BATCH = 100
ROUNDS = 30


def _batch(round_: int) -> dict[str, Any]:
    """Half updates of stored contacts, half new ones."""
    inputs = []
    for i in range(BATCH):
        email = (
            f"S{round_ * 50 + i}@Example.com" if i < BATCH // 2 else f"new{round_}-{i}@example.com"
        )
        inputs.append(
            {
                "id": email,
                "idProperty": "email",
                "properties": {"firstname": f"B{round_}-{i}", "lifecyclestage": "lead"},
            }
        )
    return {"inputs": inputs}


def main() -> None:
    """Store 10,000 contacts, then time 100-input upserts in process and over HTTPS."""
    with SandboxServer(emulator_types=[HubSpotEmulator]) as server:
        emulator = server.sandbox.emulators["hubspot"]
        assert isinstance(emulator, HubSpotEmulator)
        with emulator.lock:
            for n in range(STORED):
                emulator.store.insert({"email": f"s{n}@example.com", "lastname": f"Stored{n}"})

        in_process: list[float] = []
        for round_ in range(ROUNDS):
            body = _batch(round_)
            started = time.perf_counter()
            with emulator.lock:
                status, _ = emulator.store.batch_upsert(body)
            in_process.append(time.perf_counter() - started)
            assert status == 200

        env = server.env()
        context = ssl.create_default_context(cafile=str(server.ca_bundle))
        headers = {"Authorization": f"Bearer {env['HUBSPOT_ACCESS_TOKEN']}"}
        url = f"{env['HUBSPOT_BASE_URL']}/crm/v3/objects/contacts"
        over_http: list[float] = []
        with httpx.Client(verify=context, timeout=60, headers=headers) as http:
            for round_ in range(ROUNDS, 2 * ROUNDS):
                started = time.perf_counter()
                response = http.post(f"{url}/batch/upsert", json=_batch(round_))
                over_http.append(time.perf_counter() - started)
                response.raise_for_status()
            search = {
                "filterGroups": [
                    {"filters": [{"propertyName": "firstname", "operator": "HAS_PROPERTY"}]}
                ],
                "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
                "limit": 200,
            }
            started = time.perf_counter()
            found = http.post(f"{url}/search", json=search)
            search_s = time.perf_counter() - started
            found.raise_for_status()

        for label, timings in (("server side", in_process), ("loopback HTTPS", over_http)):
            median = statistics.median(timings)
            print(
                f"hubspot batch/upsert, {STORED} stored, {label}: "
                f"{median * 1000:.2f} ms per {BATCH}-input batch, "
                f"{BATCH / median:.0f} records/s (median of {ROUNDS})"
            )
        total = found.json()["total"]
        print(f"hubspot search over {len(emulator.store.order)} contacts ({total} hits, sorted):")
        print(f"  {search_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
