"""Zoho connector: API calls and credits per 1,000 new leads, batched upsert vs find-or-create.

Run: ``python -m benchmarks.bench_connector_zoho``. Upserts 1,000 and 10,000 new leads into the
sandbox through :class:`ZohoConnector` (100 per call, by Email) and compares with a naive
find-or-create (search one email, then upsert one lead) measured on a sample and scaled.
Issue target: ceil(N / 100) write calls, plus at most ceil(N / 100) lookups.
"""

from __future__ import annotations

import math
import ssl
import time

import httpx

from leadrelay.config import ZohoConnection
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.policy import RateLimiter
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator

SIZES = (1_000, 10_000)
NAIVE_SAMPLE = 200


def _connector(env: dict[str, str]) -> ZohoConnector:
    settings = ZohoConnection.model_validate(
        {
            "kind": "zoho",
            "client_id": env["ZOHO_CLIENT_ID"],
            "client_secret": env["ZOHO_CLIENT_SECRET"],
            "refresh_token": env["ZOHO_REFRESH_TOKEN"],
            "accounts_url": env["ZOHO_ACCOUNTS_URL"],
            "ca_bundle": env["LEADRELAY_CA_BUNDLE"],
        }
    )
    # The benchmark measures calls, not pacing: a limiter that never waits.
    limiter = RateLimiter("zoho", max_calls=1_000_000, per_s=1.0)
    return ZohoConnector(settings, "bench", limiter=limiter)


def _inputs(prefix: str, count: int) -> list[UpsertInput]:
    return [
        UpsertInput(
            f"{prefix}{n}",
            {"Email": f"{prefix}{n}@example.com", "Last_Name": f"Lead {n}", "Company": "Acme"},
        )
        for n in range(count)
    ]


def _zoho_requests(http: httpx.Client, url: str) -> int:
    stats = http.get(f"{url}/__sandbox__/stats").json()
    return int(stats["requests"].get("zoho", 0))


def main() -> None:
    """Print calls per 1,000 leads, credits and leads/s for batched and naive upserts."""
    with SandboxServer(emulator_types=[ZohoEmulator]) as server:
        env = server.env()
        context = ssl.create_default_context(cafile=str(server.ca_bundle))
        with httpx.Client(verify=context, timeout=60) as http:
            print(
                f"{'mode':<16}{'leads':>8}{'calls/1k':>10}{'server/1k':>11}"
                f"{'credits/1k':>12}{'leads/s':>10}"
            )
            for size in SIZES:
                server.sandbox.reset()
                with _connector(env) as zoho:
                    zoho.health()  # the token refresh is not part of the measurement
                    calls, credits = zoho.api_calls, zoho.credits_used
                    before = _zoho_requests(http, server.url)
                    started = time.perf_counter()
                    results = zoho.upsert(_inputs(f"b{size}-", size))
                    elapsed = time.perf_counter() - started
                    served = _zoho_requests(http, server.url) - before
                    assert all(r.ok for r in results)
                    used = zoho.api_calls - calls
                    assert used == math.ceil(size / zoho.batch_size), used
                    print(
                        f"{'batched upsert':<16}{size:>8}{used * 1000 / size:>10.1f}"
                        f"{served * 1000 / size:>11.1f}"
                        f"{(zoho.credits_used - credits) * 1000 / size:>12.1f}"
                        f"{size / elapsed:>10.0f}"
                    )
            server.sandbox.reset()
            with _connector(env) as zoho:
                zoho.health()
                calls, credits = zoho.api_calls, zoho.credits_used
                before = _zoho_requests(http, server.url)
                started = time.perf_counter()
                for item in _inputs("naive-", NAIVE_SAMPLE):
                    zoho.lookup(emails=[item.ref + "@example.com"])
                    zoho.upsert([item])
                elapsed = time.perf_counter() - started
                served = _zoho_requests(http, server.url) - before
                used = zoho.api_calls - calls
                print(
                    f"{'find-or-create':<16}{NAIVE_SAMPLE:>8}{used * 1000 / NAIVE_SAMPLE:>10.1f}"
                    f"{served * 1000 / NAIVE_SAMPLE:>11.1f}"
                    f"{(zoho.credits_used - credits) * 1000 / NAIVE_SAMPLE:>12.1f}"
                    f"{NAIVE_SAMPLE / elapsed:>10.0f}"
                )
            credits = http.get(f"{server.url}/__sandbox__/zoho/credits").json()
            print(f"sandbox credits used since the last reset: {credits['used']}")


if __name__ == "__main__":
    main()
