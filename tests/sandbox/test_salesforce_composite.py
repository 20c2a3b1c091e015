"""The Salesforce emulator's Composite resource (query subrequests), driven by simple-salesforce."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.salesforce import (
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    SalesforceEmulator,
)
from leadrelay.sandbox.server import SandboxServer

Client = Any


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[SalesforceEmulator]) as running:
        yield running


@pytest.fixture(scope="module")
def sf(server: SandboxServer) -> Iterator[Client]:
    with requests.Session() as session:
        session.verify = str(server.ca_bundle)
        session.trust_env = False
        form = {
            "grant_type": "password",
            "client_id": SANDBOX_CONSUMER_KEY,
            "client_secret": SANDBOX_CONSUMER_SECRET,
            "username": SANDBOX_USERNAME,
            "password": SANDBOX_PASSWORD,
        }
        answer = session.post(f"{server.url}/services/oauth2/token", data=form).json()
        yield Salesforce(
            instance_url=server.url, session_id=answer["access_token"], session=session
        )
    gc.collect()


@pytest.fixture(autouse=True)
def _clean(server: SandboxServer) -> None:
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()


def query(soql: str, reference: str) -> dict[str, str]:
    return {
        "method": "GET",
        "url": f"/services/data/v59.0/query?{urlencode({'q': soql})}",
        "referenceId": reference,
    }


def composite(sf: Client, *subrequests: dict[str, Any]) -> list[dict[str, Any]]:
    answer = sf.restful("composite", method="POST", json={"compositeRequest": list(subrequests)})
    return list(answer["compositeResponse"])


def test_two_queries_answer_in_one_call_that_counts_once(sf: Client, server: SandboxServer) -> None:
    sf.Lead.create({"LastName": "Silva", "Company": "Acme", "Email": "ana@example.com"})
    sf.Contact.create({"LastName": "Okafor", "Email": "ben@example.com"})
    emulator = server.sandbox.emulators["salesforce"]
    assert isinstance(emulator, SalesforceEmulator)
    before = emulator.api_usage
    leads, contacts = composite(
        sf,
        query("SELECT Email FROM Lead WHERE Email = 'ana@example.com'", "leads"),
        query("SELECT Email FROM Contact WHERE Email = 'ben@example.com'", "contacts"),
    )
    assert emulator.api_usage - before == 1
    assert (leads["referenceId"], leads["httpStatusCode"]) == ("leads", 200)
    assert [r["Email"] for r in leads["body"]["records"]] == ["ana@example.com"]
    assert [r["Email"] for r in contacts["body"]["records"]] == ["ben@example.com"]


def test_a_malformed_query_fails_only_its_subrequest(sf: Client) -> None:
    good, bad = composite(
        sf,
        query("SELECT Id FROM Lead", "good"),
        query("SELECT Id FROM Lead WHERE", "bad"),
    )
    assert good["httpStatusCode"] == 200
    assert bad["httpStatusCode"] == 400
    assert bad["body"][0]["errorCode"] == "MALFORMED_QUERY"


def test_a_subrequest_the_sandbox_does_not_run_says_so(sf: Client) -> None:
    [answer] = composite(
        sf,
        {
            "method": "POST",
            "url": "/services/data/v59.0/sobjects/Lead",
            "referenceId": "new",
            "body": {"LastName": "X", "Company": "Y"},
        },
    )
    assert answer["httpStatusCode"] == 400
    assert answer["body"][0]["errorCode"] == "NOT_SUPPORTED"


@pytest.mark.parametrize(("count", "limit"), [(6, "5 query operations"), (26, "25 subrequests")])
def test_the_composite_limits_are_enforced(sf: Client, count: int, limit: str) -> None:
    with pytest.raises(SalesforceMalformedRequest, match=limit):
        composite(sf, *(query("SELECT Id FROM Lead", f"q{n}") for n in range(count)))
