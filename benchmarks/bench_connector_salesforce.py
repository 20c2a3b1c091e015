"""Salesforce connector: API calls and throughput of upserting N new Leads into the sandbox.

Run: ``python -m benchmarks.bench_connector_salesforce [N ...]`` (default 1,000 and 10,000).
For each N it upserts N new Leads by each path — lookup then composite create, composite upsert
by external id, Bulk API 2.0 — and a naive one-call-per-lead find-or-create (N = 1,000 only,
unless asked), and prints API calls per 1,000 Leads (the connector's count and the sandbox's)
and Leads per second. Issue target: ceil(N / 200) write calls plus at most ceil(N / 200)
lookups.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from leadrelay.config import SalesforceConnection
from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.connectors.salesforce.soql import quote
from leadrelay.sandbox.salesforce import SalesforceEmulator
from leadrelay.sandbox.server import SandboxServer

BATCH = 200


def _settings(env: dict[str, str], **extra: Any) -> SalesforceConnection:
    return SalesforceConnection.model_validate(
        {
            "kind": "salesforce",
            "auth": "password",
            "login_url": env["SALESFORCE_INSTANCE_URL"],
            "username": env["SALESFORCE_USERNAME"],
            "password": env["SALESFORCE_PASSWORD"],
            "consumer_key": env["SALESFORCE_CONSUMER_KEY"],
            "consumer_secret": env["SALESFORCE_CONSUMER_SECRET"],
            "ca_bundle": env["LEADRELAY_CA_BUNDLE"],
            **extra,
        }
    )


def _inputs(n: int, label: str) -> list[UpsertInput]:
    label = "".join(c if c.isalnum() else "-" for c in label)
    return [
        UpsertInput(
            f"{label}-{i}",
            {
                "Email": f"bench.{label}.{i}@example.com",
                "LastName": f"Lead{i}",
                "Company": "Acme",
                "LeadSource": "Web",
                "LeadRelay_Key__c": f"{label}-{i}",
            },
        )
        for i in range(n)
    ]


def _naive(connector: SalesforceConnector, inputs: Sequence[UpsertInput]) -> None:
    """Find-or-create one lead at a time: one query, then one create or update."""
    for item in inputs:
        email = str(item.fields["Email"])
        rows = connector.query(
            f"SELECT Id FROM Lead WHERE Email = {quote(email)}",
            describe="naive lookup",
        )
        body = {k: v for k, v in item.fields.items() if k != "LeadRelay_Key__c"}
        if rows:
            connector.restful(
                f"sobjects/Lead/{rows[0]['Id']}",
                method="PATCH",
                json=body,
                describe="naive update",
                idempotent=True,
            )
        else:
            connector.restful(
                "sobjects/Lead/",
                method="POST",
                json=body,
                describe="naive create",
                idempotent=False,
            )


def _run(
    server: SandboxServer,
    label: str,
    n: int,
    settings: SalesforceConnection,
    work: Callable[[SalesforceConnector, list[UpsertInput]], object],
) -> None:
    server.sandbox.reset()
    emulator = server.sandbox.emulators["salesforce"]
    assert isinstance(emulator, SalesforceEmulator)
    emulator.daily_api_limit = 10**9
    inputs = _inputs(n, label)
    with SalesforceConnector(settings, "bench") as connector:
        connector.health()  # log in outside the measurement
        before = connector.api_calls
        seen_before = server.sandbox.stats.requests["salesforce"]
        start = time.perf_counter()
        work(connector, inputs)
        elapsed = time.perf_counter() - start
        calls = connector.api_calls - before
        served = server.sandbox.stats.requests["salesforce"] - seen_before
    per_1000 = calls * 1000 / n
    print(
        f"{label:<22} N={n:>6}  calls={calls:>6}  sandbox={served:>6}  "
        f"per 1,000 leads={per_1000:>8.1f}  leads/s={n / elapsed:>9.0f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print API calls per 1,000 Leads and Leads per second for each upsert path."""
    args = list(sys.argv[1:] if argv is None else argv)
    sizes = [int(a) for a in args] or [1_000, 10_000]
    with SandboxServer(emulator_types=[SalesforceEmulator]) as server:
        env = server.env()
        for n in sizes:
            target = 2 * math.ceil(n / BATCH)
            print(
                f"-- N = {n}: issue target at most {target} calls ({target * 1000 / n:.1f}/1,000)"
            )
            big = {"bulk_threshold": n + 1}
            _run(server, "lookup+collections", n, _settings(env, **big), _upsert)
            _run(
                server,
                "external-id upsert",
                n,
                _settings(env, external_id_field="LeadRelay_Key__c", **big),
                _upsert,
            )
            _run(server, "bulk api 2.0", n, _settings(env, bulk_threshold=max(1, n - 1)), _upsert)
            if n <= 1_000 or len(sizes) == 1:
                _run(server, "naive find-or-create", n, _settings(env), _naive)


def _upsert(connector: SalesforceConnector, inputs: list[UpsertInput]) -> None:
    results = connector.upsert(inputs)
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} leads failed, e.g. {failed[0].error}")


if __name__ == "__main__":
    main()
