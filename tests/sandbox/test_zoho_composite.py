"""The Zoho emulator's Composite API (``POST /crm/v7/__composite_requests``) over real HTTP,
with httpx as a third-party client would call it (Zoho's v7 Composite API page)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator
from tests.zoho_sandbox import (  # noqa: F401 (fixtures)
    zoho_emulator,
    zoho_server,
    zoho_user,
)

COMPOSITE = "/__composite_requests"


def coql(query: str, sub_id: str | None = None) -> dict[str, Any]:
    sub: dict[str, Any] = {"method": "POST", "uri": "/crm/v7/coql", "body": {"select_query": query}}
    return {**sub, "sub_request_id": sub_id} if sub_id else sub


def lead(api: httpx.Client, last_name: str, email: str | None = None) -> str:
    record = {"Last_Name": last_name, **({"Email": email} if email else {})}
    response = api.post("/Leads", json={"data": [record]})
    assert response.status_code == 201, response.text
    return str(response.json()["data"][0]["details"]["id"])


def answers(response: httpx.Response) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = response.json()["__composite_requests"]
    return entries


def inner(entry: dict[str, Any]) -> tuple[int, Any]:
    """A sub-request's own status and body."""
    assert (entry["code"], entry["status"]) == ("SUCCESS", "success"), entry
    response = entry["details"]["response"]
    return response["status_code"], response["body"]


def credits_used(emulator: ZohoEmulator) -> int:
    return emulator.credit_limit - emulator.credits_remaining()


def test_reads_of_several_modules_are_answered_in_order_in_one_call(
    api: httpx.Client, server: SandboxServer
) -> None:
    lead_id = lead(api, "Silva", "ana@acme.io")
    response = api.post(
        COMPOSITE,
        json={
            "__composite_requests": [
                coql("select Email from Leads where id is not null limit 25"),
                coql("select Deal_Name from Deals where id is not null limit 25"),
                {"method": "GET", "uri": "/crm/v7/Leads/deleted", "params": {"type": "all"}},
                {"method": "GET", "uri": f"/crm/v7/Leads/{lead_id}", "params": {"fields": "Email"}},
            ]
        },
    )
    assert response.status_code == 200
    leads, deals, deleted, one = (inner(entry) for entry in answers(response))
    assert leads[0] == 200 and [r["Email"] for r in leads[1]["data"]] == ["ana@acme.io"]
    assert (deals[0], deleted[0]) == (204, 204)
    assert one[1]["data"][0]["id"] == lead_id
    assert server.sandbox.stats.by_route[f"POST /zoho/crm/v7{COMPOSITE}"] == 1
    assert not any("coql" in route for route in server.sandbox.stats.by_route)


def test_a_composite_call_costs_one_credit_whatever_its_sub_requests(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    before = credits_used(emulator)
    subs = [coql(f"select Email from Leads where id is not null limit {n}") for n in (1, 5, 25)]
    assert api.post(COMPOSITE, json={"__composite_requests": subs}).status_code == 200
    assert credits_used(emulator) - before == 1


@pytest.mark.parametrize(
    ("sub", "by", "limit"),
    [
        (coql("select Email from Leads where id is not null limit 26"), "limit", 25),
        (coql("select Email from Leads where id is not null"), "limit", 25),
        (
            {
                "method": "GET",
                "uri": "/crm/v7/Leads",
                "params": {"fields": "Email", "per_page": 26},
            },
            "per_page",
            25,
        ),
        (
            {
                "method": "POST",
                "uri": "/crm/v7/Leads",
                "body": {"data": [{"Last_Name": "A"}, {"Last_Name": "B"}]},
            },
            "data",
            1,
        ),
    ],
)
def test_a_sub_request_over_its_record_limit_answers_limit_exceeded(
    api: httpx.Client, emulator: ZohoEmulator, sub: dict[str, Any], by: str, limit: int
) -> None:
    response = api.post(COMPOSITE, json={"__composite_requests": [sub]})
    assert response.status_code == 200  # triggered; its own answer is the refusal
    status, body = inner(answers(response)[0])
    assert (status, body["code"], body["details"]) == (
        400,
        "LIMIT_EXCEEDED",
        {"by": by, "limit": limit},
    )
    assert emulator.store.records == {}


def test_a_get_records_sub_request_pages_by_25(api: httpx.Client) -> None:
    for n in range(26):
        lead(api, f"L{n}")
    sub = {"method": "GET", "uri": "/crm/v7/Leads", "params": {"fields": "Last_Name"}}
    status, body = inner(answers(api.post(COMPOSITE, json={"__composite_requests": [sub]}))[0])
    assert (status, len(body["data"]), body["info"]["per_page"]) == (200, 25, 25)
    assert body["info"]["more_records"] is True


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        ({}, "MANDATORY_NOT_FOUND", {"api_name": "__composite_requests"}),
        ({"__composite_requests": {}}, "INVALID_DATA", {"expected_data_type": "jsonarray"}),
        (
            {"__composite_requests": [coql("select id from Leads where id is not null")] * 6},
            "INVALID_DATA",
            {"maximum_length": 5},
        ),
        (
            {"rollback_on_fail": True, "parallel_execution": True, "__composite_requests": []},
            "AMBIGUITY_DURING_PROCESSING",
            {},
        ),
        (
            {"rollback_on_fail": "yes", "__composite_requests": []},
            "INVALID_DATA",
            {"expected_data_type": "boolean"},
        ),
        (
            {
                "__composite_requests": [
                    {"method": "GET", "uri": "/crm/v7/org", "headers": {"Authorization": "x"}}
                ]
            },
            "INVALID_DATA",
            {"restricted_headers": ["Authorization"]},
        ),
        (
            {"__composite_requests": [{"method": "GET", "uri": "crm/v7/org"}]},
            "INVALID_DATA",
            {"api_name": "uri", "json_path": "$.__composite_requests[0].uri"},
        ),
        (
            {"__composite_requests": [{"method": "GET"}]},
            "MANDATORY_NOT_FOUND",
            {"api_name": "uri"},
        ),
        (
            {
                "__composite_requests": [
                    {"sub_request_id": "a", "method": "GET", "uri": "/crm/v7/org"},
                    {"sub_request_id": "a", "method": "GET", "uri": "/crm/v7/org"},
                ]
            },
            "DUPLICATE_DATA",
            {"json_path": "$.__composite_requests[1].sub_request_id"},
        ),
        (
            {"__composite_requests": [{"method": "POST", "uri": "/crm/v7/Leads/1/actions/merge"}]},
            "NOT_SUPPORTED",
            {"api_name": "uri"},
        ),
        (
            {
                "__composite_requests": [
                    {"method": "DELETE", "uri": "/crm/v7/Leads", "params": {"ids": "1"}}
                ]
            },
            "NOT_SUPPORTED",
            {"api_name": "uri"},
        ),
    ],
)
def test_a_composite_call_zoho_refuses_as_a_whole_runs_nothing(
    api: httpx.Client, body: dict[str, Any], code: str, detail: dict[str, Any]
) -> None:
    response = api.post(COMPOSITE, json=body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["code"], answer["status"]) == (code, "error")
    assert detail.items() <= answer["details"].items()


def test_a_sub_request_of_a_later_version_is_not_allowed(api: httpx.Client) -> None:
    url = str(api.base_url).rstrip("/").replace("/crm/v7", "/crm/v6") + COMPOSITE
    response = api.post(
        url, json={"__composite_requests": [{"method": "GET", "uri": "/crm/v7/org"}]}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "NOT_ALLOWED"
    assert response.json()["details"]["sub_request_version"] == 7


def test_a_reference_takes_a_value_from_an_earlier_answer(api: httpx.Client) -> None:
    body = {
        "parallel_execution": False,
        "__composite_requests": [
            {
                "sub_request_id": "made",
                "method": "POST",
                "uri": "/crm/v7/Leads",
                "body": {"data": [{"Last_Name": "Ref"}]},
            },
            {
                "sub_request_id": "read",
                "method": "GET",
                "uri": "/crm/v7/Leads/@{made:$.data[0].details.id}",
                "params": {"fields": "Last_Name"},
            },
        ],
    }
    made, read = (inner(entry) for entry in answers(api.post(COMPOSITE, json=body)))
    assert made[0] == 201
    assert read[1]["data"][0] == {"Last_Name": "Ref", "id": made[1]["data"][0]["details"]["id"]}


def test_a_reference_to_a_later_sub_request_in_sequence_is_invalid(api: httpx.Client) -> None:
    body = {
        "parallel_execution": False,
        "__composite_requests": [
            {"method": "GET", "uri": "/crm/v7/Leads/@{later:$.data[0].id}"},
            {"sub_request_id": "later", "method": "GET", "uri": "/crm/v7/org"},
        ],
    }
    response = api.post(COMPOSITE, json=body)
    assert response.status_code == 207
    first, second = answers(response)
    assert (first["code"], first["status"]) == ("INVALID_REFERENCE", "error")
    assert inner(second)[0] == 200


def test_parallel_sub_requests_run_what_they_refer_to_first(api: httpx.Client) -> None:
    body = {
        "__composite_requests": [
            {
                "method": "GET",
                "uri": "/crm/v7/Leads/@{made:$.data[0].details.id}",
                "params": {"fields": "Last_Name"},
            },
            {
                "sub_request_id": "made",
                "method": "POST",
                "uri": "/crm/v7/Leads",
                "body": {"data": [{"Last_Name": "Par"}]},
            },
        ],
    }
    response = api.post(COMPOSITE, json=body)
    assert response.status_code == 200
    read, made = (inner(entry) for entry in answers(response))
    assert (made[0], read[1]["data"][0]["Last_Name"]) == (201, "Par")


def test_a_failed_sub_request_rolls_back_the_others(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    before = credits_used(emulator)
    body = {
        "rollback_on_fail": True,
        "__composite_requests": [
            {"method": "POST", "uri": "/crm/v7/Leads", "body": {"data": [{"Last_Name": "Kept?"}]}},
            {"method": "POST", "uri": "/crm/v7/Leads", "body": {"data": [{"Email": "x@y.io"}]}},
            {"method": "GET", "uri": "/crm/v7/org"},
        ],
    }
    response = api.post(COMPOSITE, json=body)
    assert response.status_code == 400
    first, failed, last = answers(response)
    assert (first["code"], last["code"]) == ("ROLLBACK_PERFORMED", "PROCESSING_STOPPED")
    assert first["details"] == {"rollbacked_by_sub_request_index": 1}
    assert inner(failed)[1]["data"][0]["code"] == "MANDATORY_NOT_FOUND"
    assert emulator.store.records == {}
    assert credits_used(emulator) - before == 1


def test_a_rollback_on_fail_call_that_succeeds_costs_two_credits(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    before = credits_used(emulator)
    body = {
        "rollback_on_fail": True,
        "__composite_requests": [
            {"method": "POST", "uri": "/crm/v7/Leads", "body": {"data": [{"Last_Name": "Kept"}]}}
        ],
    }
    assert api.post(COMPOSITE, json=body).status_code == 200
    assert [r.values["Last_Name"] for r in emulator.store.records.values()] == ["Kept"]
    assert credits_used(emulator) - before == 2


def test_a_composite_call_takes_five_concurrency_credits(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    emulator.concurrency_limit = 4
    try:
        sub = {"method": "GET", "uri": "/crm/v7/org"}
        response = api.post(COMPOSITE, json={"__composite_requests": [sub]})
        assert (response.status_code, response.json()["code"]) == (429, "TOO_MANY_REQUESTS")
        assert api.get("/org").status_code == 200
    finally:
        emulator.concurrency_limit = 15


def test_sub_requests_that_refer_to_each_other_run_neither(api: httpx.Client) -> None:
    body = {
        "__composite_requests": [
            {"sub_request_id": "a", "method": "GET", "uri": "/crm/v7/Leads/@{b:$.data[0].id}"},
            {"sub_request_id": "b", "method": "GET", "uri": "/crm/v7/Leads/@{a:$.data[0].id}"},
        ],
    }
    response = api.post(COMPOSITE, json=body)
    assert response.status_code == 400
    assert [entry["status"] for entry in answers(response)] == ["error", "error"]
    assert answers(response)[0]["code"] == "LOOPING_FOUND"
