"""HubSpot connector: API calls and throughput of upserting new leads into the sandbox.

Run: ``python -m benchmarks.bench_connector_hubspot [N …] [--naive M]``. For each N (default
1,000 and 10,000) it upserts N new leads through :class:`HubSpotConnector` (``batch/upsert``
by email, 100 per call) and prints API calls per 1,000 leads, counted by the sandbox
(``/__sandbox__/stats``) and by ``connector.api_calls``, next to a naive find-or-create
(look one email up, then create or update it: two calls per lead) run on M leads (default
200; at HubSpot's 190 calls per 10 s it is rate-limit bound) and scaled to 1,000.
Issue target: ceil(N / 100) write calls plus at most ceil(N / 100) lookups.
"""

from __future__ import annotations

import argparse
import math
import time

from leadrelay.config import HubSpotConnection
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer


def _leads(count: int, tag: str) -> list[UpsertInput]:
    return [
        UpsertInput(
            f"{tag}-{n}",
            {
                "email": f"Bench.{tag}.{n}@Example.com",
                "firstname": "Bench",
                "lastname": f"Lead{n}",
                "company": "Acme",
                "lifecyclestage": "lead",
            },
        )
        for n in range(count)
    ]


def _hubspot_requests(server: SandboxServer) -> int:
    with server.sandbox.lock:
        return server.sandbox.stats.requests.get("hubspot", 0)


def _report(label: str, leads: int, calls: int, counted: int, seconds: float) -> None:
    per_1000 = calls * 1000 / leads
    print(
        f"{label}: {leads} leads, {calls} API calls (connector counted {counted}), "
        f"{per_1000:.1f} calls per 1,000 leads, {leads / seconds:.0f} leads/s"
    )


def main() -> None:
    """Upsert N new leads batched, then M leads the naive way; print calls and leads/s."""
    parser = argparse.ArgumentParser(prog="bench_connector_hubspot")
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000, 10_000])
    parser.add_argument("--naive", type=int, default=200, help="leads for the naive run")
    args = parser.parse_args()
    with SandboxServer(emulator_types=[HubSpotEmulator]) as server:
        env = server.env()
        settings = HubSpotConnection(
            kind="hubspot",
            access_token=env["HUBSPOT_ACCESS_TOKEN"],
            base_url=env["HUBSPOT_BASE_URL"],
            ca_bundle=env["LEADRELAY_CA_BUNDLE"],
        )
        for size in args.sizes:
            server.sandbox.reset()
            with HubSpotConnector(settings, "bench") as connector:
                leads = _leads(size, f"b{size}")
                requests_before = _hubspot_requests(server)
                started = time.perf_counter()
                results = connector.upsert(leads)
                seconds = time.perf_counter() - started
                calls = _hubspot_requests(server) - requests_before
                assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
                _report("batched upsert", size, calls, connector.api_calls, seconds)
                target = 2 * math.ceil(size / HubSpotConnector.batch_size)
                verdict = "met" if calls <= target else "MISSED"
                print(f"  target: at most {target} calls for {size} leads ({verdict})")

        if args.naive > 0:
            server.sandbox.reset()
            with HubSpotConnector(settings, "bench-naive") as connector:
                leads = _leads(args.naive, "naive")
                requests_before = _hubspot_requests(server)
                started = time.perf_counter()
                for lead in leads:
                    connector.lookup(emails=[str(lead.fields["email"])])
                    [result] = connector.upsert([lead])
                    assert result.ok, result
                seconds = time.perf_counter() - started
                calls = _hubspot_requests(server) - requests_before
                _report("naive find-or-create", args.naive, calls, connector.api_calls, seconds)


if __name__ == "__main__":
    main()
