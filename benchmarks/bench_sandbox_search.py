"""HubSpot sandbox search: a 200-record page out of 50,000 contacts.

Run: ``python -m benchmarks.bench_sandbox_search``. Prints the median ms of each search, timed in
process (the search call alone, indexes warm) and, for the keyset page, also with the index
bypassed (what every search cost before the indexes) and end to end over loopback HTTPS, so the
sandbox is never the bottleneck of a connector benchmark.
"""

from __future__ import annotations

import itertools
import ssl
import statistics
import time
from typing import Any

import httpx

from leadrelay.sandbox.hubspot import SANDBOX_ACCESS_TOKEN, HubSpotEmulator
from leadrelay.sandbox.hubspot.schema import Schema, iso_ms
from leadrelay.sandbox.hubspot.search import search
from leadrelay.sandbox.hubspot.store import ContactStore
from leadrelay.sandbox.server import SandboxServer

STORED = 50_000
ROUNDS = 20
#: the stored contacts were written one every 50 ms from this moment
START_MS = 1_767_225_600_000
STEP_MS = 50


def _searches() -> dict[str, dict[str, Any]]:
    middle = iso_ms(START_MS + STEP_MS * STORED // 2)
    keyset = {
        "filterGroups": [
            {"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": middle}]}
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "limit": 200,
    }
    return {
        "keyset page (lastmodifieddate GT, sorted)": keyset,
        "one timestamp by id (EQ + hs_object_id GT)": {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "lastmodifieddate", "operator": "EQ", "value": middle},
                        {"propertyName": "hs_object_id", "operator": "GT", "value": "0"},
                    ]
                }
            ],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "limit": 200,
        },
        "email EQ": {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": "s4242@x.com"}]}
            ],
        },
        "lifecyclestage EQ, 200 of 10,000": {
            "filterGroups": [
                {"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]}
            ],
            "limit": 200,
        },
    }


def _median_ms(store: ContactStore, body: dict[str, Any], lag_s: float) -> float:
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        answer = search(store, body, lag_s)
        timings.append(time.perf_counter() - started)
        assert answer["results"], body
    return statistics.median(timings) * 1000


def main() -> None:
    """Store 50,000 contacts, then time each search."""
    ticks = itertools.count()
    store = ContactStore(Schema(), clock=lambda: (START_MS + STEP_MS * next(ticks)) / 1000)
    stages = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "customer"]
    for n in range(STORED):
        store.insert({"email": f"s{n}@x.com", "lifecyclestage": stages[n % len(stages)]})
    for name, body in _searches().items():
        print(f"{name}: {_median_ms(store, body, 0.0):.2f} ms median")
    # A lag makes search look at past versions, which bypasses the indexes: the old cost.
    keyset = _searches()["keyset page (lastmodifieddate GT, sorted)"]
    print(f"keyset page, full scan: {_median_ms(store, keyset, 0.001):.2f} ms median")
    print(f"keyset page over HTTPS: {_over_https(store, keyset):.2f} ms median")


def _over_https(store: ContactStore, body: dict[str, Any]) -> float:
    """The keyset page end to end: the sandbox server holding ``store``, an httpx client."""
    with SandboxServer(emulator_types=[HubSpotEmulator]) as server:
        emulator = server.sandbox.emulators["hubspot"]
        assert isinstance(emulator, HubSpotEmulator)
        with emulator.lock:
            emulator.store = store
            store.schema = emulator.schema
        context = ssl.create_default_context(cafile=str(server.ca_bundle))
        headers = {"Authorization": f"Bearer {SANDBOX_ACCESS_TOKEN}"}
        url = "/crm/v3/objects/contacts/search"
        timings = []
        with httpx.Client(
            base_url=server.env()["HUBSPOT_BASE_URL"], verify=context, headers=headers
        ) as client:
            for _ in range(ROUNDS):
                time.sleep(0.25)  # stay under the emulated 5 searches a second
                started = time.perf_counter()
                response = client.post(url, json=body)
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        return statistics.median(timings) * 1000


if __name__ == "__main__":
    main()
