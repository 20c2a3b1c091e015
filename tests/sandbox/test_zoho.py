"""The Zoho CRM v7 emulator, driven with plain httpx as Zoho's API docs describe it."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator
from tests.zoho_sandbox import refresh, zoho_api


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[ZohoEmulator]) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(verify=context, timeout=30) as client:
        yield client


@pytest.fixture
def emulator(server: SandboxServer) -> ZohoEmulator:
    found = server.sandbox.emulators["zoho"]
    assert isinstance(found, ZohoEmulator)
    return found


@pytest.fixture(autouse=True)
def clean(server: SandboxServer, emulator: ZohoEmulator) -> Iterator[None]:
    server.sandbox.reset()
    server.sandbox.set_faults(Faults())
    emulator.token_lifetime_s = 3600
    emulator.credit_limit = 50_000
    emulator.concurrency_limit = 15
    yield


@pytest.fixture
def api(server: SandboxServer) -> Iterator[httpx.Client]:
    with zoho_api(server) as client:
        yield client


def lead(n: int, **extra: Any) -> dict[str, Any]:
    return {"Last_Name": f"Person{n}", "Email": f"p{n}@example.com", "Company": "Acme", **extra}


def store_many(emulator: ZohoEmulator, count: int) -> None:
    with emulator.lock:
        for n in range(count):
            emulator.store.insert({"Last_Name": f"Bulk{n}", "Email": f"bulk{n}@example.com"})


# -- accounts token endpoint -------------------------------------------------------------------


def test_refresh_grant_answers_a_token_and_the_api_domain(
    server: SandboxServer, http: httpx.Client
) -> None:
    body = refresh(http, server.env()).json()
    assert body["api_domain"] == server.env()["ZOHO_API_DOMAIN"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].startswith("1000.")


def test_refresh_grant_accepts_a_form_body(server: SandboxServer, http: httpx.Client) -> None:
    env = server.env()
    response = http.post(
        f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": env["ZOHO_CLIENT_ID"],
            "client_secret": env["ZOHO_CLIENT_SECRET"],
            "refresh_token": env["ZOHO_REFRESH_TOKEN"],
        },
    )
    assert "access_token" in response.json()


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "1000.OTHER"}, "invalid_client"),
        ({"refresh_token": "1000.revoked.token"}, "invalid_code"),
    ],
)
def test_token_errors_come_with_http_200(
    server: SandboxServer, http: httpx.Client, override: dict[str, str], error: str
) -> None:
    response = refresh(http, server.env(), **override)
    assert response.status_code == 200
    assert response.json() == {"error": error}


def test_eleventh_token_in_ten_minutes_is_denied(server: SandboxServer, http: httpx.Client) -> None:
    env = server.env()
    for _ in range(10):
        assert "access_token" in refresh(http, env).json()
    denied = refresh(http, env)
    assert denied.status_code == 400
    assert denied.json()["error"] == "Access Denied"
    assert "too many requests" in denied.json()["error_description"]


# -- API authentication ------------------------------------------------------------------------


def test_bearer_scheme_is_refused(server: SandboxServer, http: httpx.Client) -> None:
    env = server.env()
    token = refresh(http, env).json()["access_token"]
    response = http.get(
        f"{env['ZOHO_API_DOMAIN']}/crm/v7/users",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_TOKEN"


@pytest.mark.parametrize("how", ["expire_admin", "lifetime"])
def test_expired_token_is_invalid(
    server: SandboxServer, http: httpx.Client, emulator: ZohoEmulator, how: str
) -> None:
    env = server.env()
    if how == "lifetime":
        emulator.token_lifetime_s = 0
    token = refresh(http, env).json()["access_token"]
    if how == "expire_admin":
        http.post(f"{server.url}/__sandbox__/zoho/expire-tokens")
    response = http.get(
        f"{env['ZOHO_API_DOMAIN']}/crm/v7/users",
        headers={"Authorization": f"Zoho-oauthtoken {token}"},
    )
    assert response.status_code == 401
    assert response.json() == {
        "code": "INVALID_TOKEN",
        "details": {},
        "message": "invalid oauth token",
        "status": "error",
    }


# -- list records ------------------------------------------------------------------------------


def test_fields_param_is_required(api: httpx.Client) -> None:
    response = api.get("/Leads")
    assert response.status_code == 400
    assert response.json()["code"] == "REQUIRED_PARAM_MISSING"
    assert response.json()["details"] == {"param_name": "fields"}


def test_empty_module_is_a_bare_204(api: httpx.Client) -> None:
    response = api.get("/Leads", params={"fields": "Last_Name"})
    assert response.status_code == 204
    assert response.content == b""


def test_list_returns_requested_fields_and_info(api: httpx.Client) -> None:
    api.post("/Leads", json={"data": [lead(1), lead(2)]})
    response = api.get("/Leads", params={"fields": "Last_Name,Email,Owner", "sort_order": "asc"})
    body = response.json()
    assert [r["Last_Name"] for r in body["data"]] == ["Person1", "Person2"]
    assert set(body["data"][0]) == {"Last_Name", "Email", "Owner", "id"}
    assert len(body["data"][0]["id"]) == 19
    assert body["data"][0]["Owner"]["email"].endswith("@sandbox.example")
    assert body["info"]["more_records"] is False
    assert body["info"]["count"] == 2


def test_page_beyond_2000_records_needs_page_token(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    store_many(emulator, 2200)
    params = {"fields": "Last_Name", "sort_by": "id", "sort_order": "asc"}
    last_page = api.get("/Leads", params={**params, "page": 10})
    assert last_page.status_code == 200
    refused = api.get("/Leads", params={**params, "page": 11})
    assert refused.status_code == 400
    assert refused.json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
    assert refused.json()["details"] == {"limit": 2000}
    assert last_page.json()["info"]["page_token_expiry"]
    token = last_page.json()["info"]["next_page_token"]
    beyond = api.get("/Leads", params={**params, "page_token": token}).json()
    assert [beyond["data"][0]["Last_Name"], beyond["data"][-1]["Last_Name"]] == [
        "Bulk2000",
        "Bulk2199",
    ]
    assert beyond["info"]["more_records"] is False


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"page": "1", "page_token": "x"}, "AMBIGUITY_DURING_PROCESSING"),
        ({"page_token": "not-a-token"}, "INVALID_DATA"),
        ({"per_page": "201"}, "INVALID_DATA"),
        ({"sort_by": "Email"}, "INVALID_DATA"),
    ],
)
def test_bad_list_params_are_refused(api: httpx.Client, extra: dict[str, str], code: str) -> None:
    response = api.get("/Leads", params={"fields": "Last_Name", **extra})
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_page_token_is_bound_to_its_params(api: httpx.Client, emulator: ZohoEmulator) -> None:
    store_many(emulator, 3)
    first = api.get("/Leads", params={"fields": "Last_Name", "per_page": 1}).json()
    token = first["info"]["next_page_token"]
    changed = api.get("/Leads", params={"fields": "Email", "per_page": 1, "page_token": token})
    assert changed.json()["code"] == "TOKEN_BOUND_DATA_MISMATCH"


def test_if_modified_since_returns_only_later_changes(api: httpx.Client) -> None:
    first = api.post("/Leads", json={"data": [lead(1), lead(2)]}).json()["data"]
    cutoff = first[1]["details"]["Modified_Time"]
    updated = api.put(
        f"/Leads/{first[0]['details']['id']}", json={"data": [{"Company": "Changed"}]}
    )
    assert updated.json()["data"][0]["details"]["Modified_Time"] >= cutoff
    response = api.get(
        "/Leads", params={"fields": "Company"}, headers={"If-Modified-Since": cutoff}
    )
    # Times print to the second, so a cutoff in the same second still includes later writes.
    assert "Changed" in [row["Company"] for row in response.json()["data"]]


def test_if_modified_since_without_changes_is_304(api: httpx.Client) -> None:
    api.post("/Leads", json={"data": [lead(1)]})
    response = api.get(
        "/Leads",
        params={"fields": "Last_Name"},
        headers={"If-Modified-Since": "Wed, 01 Jan 2999 00:00:00 GMT"},
    )
    assert response.status_code == 304


def test_modified_time_advances_on_every_write(api: httpx.Client, emulator: ZohoEmulator) -> None:
    record_id = api.post("/Leads", json={"data": [lead(1)]}).json()["data"][0]["details"]["id"]
    before = emulator.store.records[record_id].modified
    api.put("/Leads", json={"data": [{"id": record_id, "Company": "Acme"}]})
    assert emulator.store.records[record_id].modified > before


# -- writes ------------------------------------------------------------------------------------


def test_insert_all_ok_is_201_and_get_by_id(api: httpx.Client) -> None:
    response = api.post("/Leads", json={"data": [lead(1)], "trigger": []})
    assert response.status_code == 201
    result = response.json()["data"][0]
    assert (result["code"], result["message"], result["status"]) == (
        "SUCCESS",
        "record added",
        "success",
    )
    fetched = api.get(f"/Leads/{result['details']['id']}").json()["data"][0]
    assert fetched["Email"] == "p1@example.com"
    assert fetched["Created_Time"].endswith("+00:00")


@pytest.mark.parametrize(
    ("record", "code", "api_name"),
    [
        ({"Email": "x@example.com"}, "MANDATORY_NOT_FOUND", "Last_Name"),
        ({"Last_Name": "A", "No_of_Employees": "many"}, "INVALID_DATA", "No_of_Employees"),
        ({"Last_Name": "A", "Email": "not-an-email"}, "INVALID_DATA", "Email"),
        ({"Last_Name": "A" * 81}, "INVALID_DATA", "Last_Name"),
        ({"Last_Name": "A", "Owner": {"id": "1"}}, "INVALID_DATA", "Owner"),
        ({"Last_Name": "A", "Email_Opt_Out": "yes"}, "INVALID_DATA", "Email_Opt_Out"),
    ],
)
def test_insert_per_record_errors(
    api: httpx.Client, record: dict[str, Any], code: str, api_name: str
) -> None:
    response = api.post("/Leads", json={"data": [lead(9), record]})
    assert response.status_code == 207
    failed = response.json()["data"][1]
    assert failed["code"] == code
    assert failed["details"]["api_name"] == api_name
    assert failed["details"]["json_path"] == f"$.data[1].{api_name}"


def test_unknown_fields_are_ignored(api: httpx.Client) -> None:
    response = api.post("/Leads", json={"data": [lead(1, Favourite_Colour="blue")]})
    assert response.status_code == 201
    record_id = response.json()["data"][0]["details"]["id"]
    assert "Favourite_Colour" not in api.get(f"/Leads/{record_id}").json()["data"][0]


def test_unique_field_duplicate_is_duplicate_data(api: httpx.Client) -> None:
    first = api.post("/Leads", json={"data": [lead(1, LeadRelay_Key="k-1")]}).json()
    response = api.post("/Leads", json={"data": [lead(2, LeadRelay_Key="K-1")]})
    assert response.status_code == 400
    failed = response.json()["data"][0]
    assert failed["code"] == "DUPLICATE_DATA"
    assert failed["details"]["api_name"] == "LeadRelay_Key"
    assert failed["details"]["duplicate_record"]["id"] == first["data"][0]["details"]["id"]


def test_update_needs_a_known_id(api: httpx.Client) -> None:
    response = api.put("/Leads", json={"data": [{"Company": "X"}, {"id": "1", "Company": "X"}]})
    codes = [item["code"] for item in response.json()["data"]]
    assert response.status_code == 400
    assert codes == ["MANDATORY_NOT_FOUND", "INVALID_DATA"]


def test_upsert_inserts_then_updates_by_email(api: httpx.Client) -> None:
    body = {"data": [lead(1, Lead_Status="Not Contacted")], "duplicate_check_fields": ["Email"]}
    inserted = api.post("/Leads/upsert", json=body).json()["data"][0]
    assert (inserted["action"], inserted["message"]) == ("insert", "record added")
    again = {
        "data": [{"Last_Name": "Person1", "Email": "P1@EXAMPLE.com", "Lead_Status": "Contacted"}]
    }
    updated = api.post("/Leads/upsert", json={**again, "duplicate_check_fields": ["Email"]})
    result = updated.json()["data"][0]
    assert (result["action"], result["duplicate_field"]) == ("update", "Email")
    assert result["details"]["id"] == inserted["details"]["id"]
    assert api.get(f"/Leads/{result['details']['id']}").json()["data"][0]["Lead_Status"] == (
        "Contacted"
    )


def test_upsert_results_keep_input_order_with_errors(api: httpx.Client) -> None:
    response = api.post(
        "/Leads/upsert", json={"data": [lead(1), {"Email": "z@example.com"}, lead(3)]}
    )
    assert response.status_code == 207
    assert [item["code"] for item in response.json()["data"]] == [
        "SUCCESS",
        "MANDATORY_NOT_FOUND",
        "SUCCESS",
    ]


@pytest.mark.parametrize("path", ["/Leads", "/Leads/upsert"])
def test_more_than_100_records_is_limit_exceeded(api: httpx.Client, path: str) -> None:
    response = api.post(path, json={"data": [lead(n) for n in range(101)]})
    assert response.status_code == 400
    assert response.json()["code"] == "LIMIT_EXCEEDED"


def test_upsert_refuses_a_non_unique_duplicate_check_field(api: httpx.Client) -> None:
    response = api.post(
        "/Leads/upsert", json={"data": [lead(1)], "duplicate_check_fields": ["Company"]}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_DATA"


def test_delete_by_ids_reports_each_record(api: httpx.Client) -> None:
    record_id = api.post("/Leads", json={"data": [lead(1)]}).json()["data"][0]["details"]["id"]
    response = api.delete("/Leads", params={"ids": f"{record_id},123"})
    assert response.status_code == 207
    assert [item["code"] for item in response.json()["data"]] == ["SUCCESS", "INVALID_DATA"]
    assert api.get(f"/Leads/{record_id}").status_code == 204


def test_delete_one(api: httpx.Client) -> None:
    record_id = api.post("/Leads", json={"data": [lead(1)]}).json()["data"][0]["details"]["id"]
    assert api.delete(f"/Leads/{record_id}").json()["data"][0]["message"] == "record deleted"


# -- search ------------------------------------------------------------------------------------


def search(api: httpx.Client, criteria: str) -> httpx.Response:
    return api.get("/Leads/search", params={"criteria": criteria})


def test_search_with_escaped_company_name(api: httpx.Client) -> None:
    company = "Smith (UK), Ltd"
    api.post("/Leads", json={"data": [lead(1, Company=company), lead(2)]})
    escaped = company.replace("(", "\\(").replace(")", "\\)").replace(",", "\\,")
    response = search(api, f"((Company:equals:{escaped})and(Last_Name:starts_with:Per))")
    assert [row["Company"] for row in response.json()["data"]] == [company]


@pytest.mark.parametrize(
    ("criteria", "names"),
    [
        ("(Email:equals:p1@example.com)", ["Person1"]),
        ("((Email:equals:p1@example.com)or(Email:equals:p2@example.com))", ["Person1", "Person2"]),
        ("(Lead_Status:in:Contacted,Junk Lead)", ["Person2"]),
        (
            "(((Last_Name:starts_with:Person)and(Company:equals:acme))or(Email:equals:x))",
            ["Person1", "Person2"],
        ),
        ("(No_of_Employees:greater_than:10)", ["Person2"]),
    ],
)
def test_search_criteria(api: httpx.Client, criteria: str, names: list[str]) -> None:
    api.post(
        "/Leads",
        json={
            "data": [
                lead(1, No_of_Employees=5),
                lead(2, Lead_Status="Contacted", No_of_Employees=50),
            ]
        },
    )
    response = search(api, criteria)
    assert [row["Last_Name"] for row in response.json()["data"]] == names


@pytest.mark.parametrize(
    "criteria",
    [
        "(Email:equals:a",
        "Email:equals:a",
        "(Nope:equals:a)",
        "(Email:contains:a)",
        "(Last_Name:equals:a,b)",
        "(Email:greater_than:a)",
        "(" + "and".join(["(Last_Name:equals:a)"] * 11) + ")",
    ],
)
def test_malformed_criteria_is_invalid_query(api: httpx.Client, criteria: str) -> None:
    response = search(api, criteria)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_QUERY"


@pytest.mark.parametrize(
    ("param", "value"),
    [("email", "P1@example.com"), ("phone", "+1 (555) 010-0001"), ("word", "erson1")],
)
def test_search_shortcuts(api: httpx.Client, param: str, value: str) -> None:
    api.post("/Leads", json={"data": [lead(1, Phone="+1 555 010 0001"), lead(2)]})
    response = api.get("/Leads/search", params={param: value})
    assert [row["Last_Name"] for row in response.json()["data"]] == ["Person1"]


def test_search_without_match_is_204(api: httpx.Client) -> None:
    assert search(api, "(Email:equals:none@example.com)").status_code == 204


def test_search_lags_writes(api: httpx.Client, server: SandboxServer) -> None:
    server.sandbox.set_faults(Faults(search_lag_s=60))
    api.post("/Leads", json={"data": [lead(1)]})
    assert search(api, "(Email:equals:p1@example.com)").status_code == 204


# -- COQL --------------------------------------------------------------------------------------


def coql(api: httpx.Client, query: str) -> httpx.Response:
    return api.post("/coql", json={"select_query": query})


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("select Last_Name from Leads where Email = 'p1@example.com'", ["Person1"]),
        (
            "select Last_Name from Leads where Email != 'p1@example.com' order by Last_Name",
            ["O'Brien", "Person2"],
        ),
        (
            "select Last_Name from Leads where Last_Name like 'per%' order by Last_Name desc",
            ["Person2", "Person1"],
        ),
        ("select Last_Name from Leads where Last_Name = 'O\\'Brien'", ["O'Brien"]),
        (
            "select Last_Name from Leads where Lead_Status in ('Contacted', 'Junk Lead')",
            ["Person2"],
        ),
        (
            "select Last_Name from Leads where Lead_Status is null order by id",
            ["Person1", "O'Brien"],
        ),
        (
            "select Last_Name from Leads where (Company = 'Acme' and Lead_Status is not null) "
            "or Email = 'p1@example.com' order by id",
            ["Person1", "Person2"],
        ),
        (
            "select Last_Name from Leads where No_of_Employees >= 50 order by id limit 1",
            ["Person2"],
        ),
        ("select Last_Name from Leads where id is not null order by id limit 1, 1", ["Person2"]),
        (
            "select Last_Name from Leads where id is not null order by id limit 1 offset 2",
            ["O'Brien"],
        ),
    ],
)
def test_coql_valid_queries(api: httpx.Client, query: str, names: list[str]) -> None:
    api.post(
        "/Leads",
        json={
            "data": [
                lead(1, No_of_Employees=5),
                lead(2, Lead_Status="Contacted", No_of_Employees=50),
                lead(3, Last_Name="O'Brien", Email="ob@example.com", Company="Other"),
            ]
        },
    )
    response = coql(api, query)
    assert response.status_code == 200, response.text
    assert [row["Last_Name"] for row in response.json()["data"]] == names


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("update Leads set Last_Name = 'x' where id = 1", "SYNTAX_ERROR"),
        ("select Last_Name Leads where id is not null", "SYNTAX_ERROR"),
        ("select Last_Name from Leads", "SYNTAX_ERROR"),
        (
            "select Last_Name from Leads where Email = 'a' and Email = 'b' and Email = 'c'",
            "SYNTAX_ERROR",
        ),
        ("select Last_Name from Leads where (Email = 'a'", "SYNTAX_ERROR"),
        ("select Last_Name from Leads where Email = 'unterminated", "SYNTAX_ERROR"),
        ("select Nope from Leads where id is not null", "INVALID_QUERY"),
        ("select Last_Name from Campaigns where id is not null", "INVALID_QUERY"),
        ("select Last_Name from Leads where No_of_Employees = 'many'", "INVALID_QUERY"),
        ("select Last_Name from Leads where Last_Name >= 'a'", "INVALID_QUERY"),
        ("select Last_Name from Leads where id is not null limit 2001", "LIMIT_EXCEEDED"),
    ],
)
def test_coql_malformed_queries(api: httpx.Client, query: str, code: str) -> None:
    response = coql(api, query)
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_coql_without_rows_is_204(api: httpx.Client) -> None:
    assert coql(api, "select Last_Name from Leads where id is not null").status_code == 204


def test_coql_costs_credits_by_limit(api: httpx.Client, emulator: ZohoEmulator) -> None:
    before = emulator.credits_remaining()
    coql(api, "select Last_Name from Leads where id is not null limit 1500")
    assert before - emulator.credits_remaining() == 3


# -- metadata, users, limits, drift ------------------------------------------------------------


def test_settings_fields_lists_picklists_and_mandatory_fields(api: httpx.Client) -> None:
    fields = {
        f["api_name"]: f
        for f in api.get("/settings/fields", params={"module": "Leads"}).json()["fields"]
    }
    assert fields["Last_Name"]["system_mandatory"] is True
    assert fields["Modified_Time"]["read_only"] is True
    statuses = [v["actual_value"] for v in fields["Lead_Status"]["pick_list_values"]]
    assert "Contacted" in statuses
    assert {"UTM_Source", "Rejection_Reason", "LeadRelay_Key"} <= fields.keys()


def test_active_users_are_seeded(api: httpx.Client) -> None:
    users = api.get("/users", params={"type": "ActiveUsers"}).json()["users"]
    assert len(users) >= 4
    assert all(user["status"] == "active" for user in users)
    one = api.get(f"/users/{users[1]['id']}").json()["users"][0]
    assert one["email"] == users[1]["email"]


def test_credits_run_out_with_429(api: httpx.Client, emulator: ZohoEmulator) -> None:
    emulator.credit_limit = emulator.credits_used + 1
    assert api.get("/users").status_code == 200
    response = api.get("/users")
    assert response.status_code == 429
    assert response.json()["code"] == "TOO_MANY_REQUESTS"


def test_concurrency_limit_answers_429(api: httpx.Client, emulator: ZohoEmulator) -> None:
    emulator.concurrency_limit = 0
    assert api.get("/users").json()["code"] == "TOO_MANY_REQUESTS"


@pytest.mark.parametrize(
    ("faults", "status"),
    [({"rate_limit_per_10s": 1}, 429), ({"error_rate": 1.0, "error_status": 503}, 503)],
)
def test_injected_faults_answer_zoho_bodies(
    api: httpx.Client, server: SandboxServer, faults: dict[str, Any], status: int
) -> None:
    server.sandbox.set_faults(Faults(**faults))
    responses = [api.get("/users") for _ in range(2)]
    assert responses[-1].status_code == status
    assert responses[-1].json()["status"] == "error"


def test_unknown_module_and_route(api: httpx.Client) -> None:
    assert api.get("/Widgets").json()["code"] == "INVALID_MODULE"
    assert api.get("/Leads/1/nothing/here").status_code == 404


def test_removed_field_disappears_and_writes_ignore_it(
    api: httpx.Client, server: SandboxServer, http: httpx.Client
) -> None:
    record_id = api.post("/Leads", json={"data": [lead(1, UTM_Source="google")]}).json()["data"][0][
        "details"
    ]["id"]
    http.post(
        f"{server.url}/__sandbox__/schema", json={"system": "zoho", "remove_field": "UTM_Source"}
    )
    names = [
        f["api_name"]
        for f in api.get("/settings/fields", params={"module": "Leads"}).json()["fields"]
    ]
    assert "UTM_Source" not in names
    assert "UTM_Source" not in api.get(f"/Leads/{record_id}").json()["data"][0]
    assert api.post("/Leads", json={"data": [lead(2, UTM_Source="bing")]}).status_code == 201
    assert (
        coql(api, "select UTM_Source from Leads where id is not null").json()["code"]
        == "INVALID_QUERY"
    )


def test_removed_option_leaves_the_list_but_is_still_stored(
    api: httpx.Client, server: SandboxServer, http: httpx.Client
) -> None:
    http.post(
        f"{server.url}/__sandbox__/schema",
        json={"system": "zoho", "remove_option": {"field": "Lead_Status", "value": "Junk Lead"}},
    )
    fields = {
        f["api_name"]: f
        for f in api.get("/settings/fields", params={"module": "Leads"}).json()["fields"]
    }
    assert "Junk Lead" not in [v["actual_value"] for v in fields["Lead_Status"]["pick_list_values"]]
    assert api.post("/Leads", json={"data": [lead(1, Lead_Status="Junk Lead")]}).status_code == 201


@pytest.mark.parametrize(
    "change",
    [
        {"remove_field": "Nope"},
        {"remove_field": "Last_Name"},
        {"remove_option": {"field": "Email", "value": "x"}},
    ],
)
def test_bad_schema_changes_are_refused(
    server: SandboxServer, http: httpx.Client, change: dict[str, Any]
) -> None:
    response = http.post(f"{server.url}/__sandbox__/schema", json={"system": "zoho", **change})
    assert response.status_code == 400


def test_env_names_the_accounts_server_and_api_domain(server: SandboxServer) -> None:
    env = server.env()
    assert env["ZOHO_ACCOUNTS_URL"] == f"{server.url}/zoho/accounts"
    assert env["ZOHO_API_DOMAIN"] == f"{server.url}/zoho"
    assert quote(env["ZOHO_CLIENT_ID"]) == env["ZOHO_CLIENT_ID"]


# -- wave 2: grant codes, deleted records, keyset COQL, unknown routes, text ----------------------


def grant(http: httpx.Client, server: SandboxServer, code: str) -> httpx.Response:
    env = server.env()
    return http.post(
        f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token",
        data={
            "grant_type": "authorization_code",
            "client_id": env["ZOHO_CLIENT_ID"],
            "client_secret": env["ZOHO_CLIENT_SECRET"],
            "code": code,
        },
    )


def test_a_grant_code_gives_a_refresh_token_that_refreshes(
    server: SandboxServer, http: httpx.Client
) -> None:
    code = http.post(f"{server.url}/__sandbox__/zoho/grant-code").json()["code"]
    body = grant(http, server, code).json()
    assert body["api_domain"] == server.env()["ZOHO_API_DOMAIN"]
    assert body["access_token"] and body["expires_in"] == 3600
    refreshed = refresh(http, server.env(), refresh_token=body["refresh_token"]).json()
    assert refreshed["access_token"] != body["access_token"]


def test_a_grant_code_is_used_once(server: SandboxServer, http: httpx.Client) -> None:
    code = http.post(f"{server.url}/__sandbox__/zoho/grant-code").json()["code"]
    assert "refresh_token" in grant(http, server, code).json()
    second = grant(http, server, code)
    assert (second.status_code, second.json()) == (200, {"error": "invalid_code"})


def test_an_unknown_grant_code_is_invalid_code(server: SandboxServer, http: httpx.Client) -> None:
    assert grant(http, server, "1000.not.issued").json() == {"error": "invalid_code"}


def test_deleted_leads_are_listed_newest_first_with_who_and_when(api: httpx.Client) -> None:
    ids = [
        item["details"]["id"]
        for item in api.post("/Leads", json={"data": [lead(1), lead(2), lead(3)]}).json()["data"]
    ]
    api.delete("/Leads", params={"ids": f"{ids[0]},{ids[1]}"})
    api.delete(f"/Leads/{ids[2]}")
    body = api.get("/Leads/deleted", params={"type": "all"}).json()
    assert [entry["id"] for entry in body["data"]] == [ids[2], ids[1], ids[0]]
    entry = body["data"][0]
    assert entry["type"] == "recycle"
    assert entry["display_name"] == "Person3"
    assert entry["deleted_by"]["id"] == entry["created_by"]["id"]
    assert entry["deleted_time"].endswith("+00:00")
    assert body["info"]["more_records"] is False


def test_deleted_leads_since_a_time_and_none_since_is_304(api: httpx.Client) -> None:
    record_id = api.post("/Leads", json={"data": [lead(1)]}).json()["data"][0]["details"]["id"]
    api.delete(f"/Leads/{record_id}")
    deleted_time = api.get("/Leads/deleted").json()["data"][0]["deleted_time"]
    before = api.get("/Leads/deleted", headers={"If-Modified-Since": "2000-01-01T00:00:00+00:00"})
    assert [entry["id"] for entry in before.json()["data"]] == [record_id]
    after = api.get("/Leads/deleted", headers={"If-Modified-Since": deleted_time})
    assert after.status_code == 304


def test_no_deleted_leads_is_204_not_a_record_read(api: httpx.Client) -> None:
    response = api.get("/Leads/deleted", params={"type": "recycle"})
    assert (response.status_code, response.content) == (204, b"")


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/Leads/deleted", {"type": "trash"}, 400, "INVALID_DATA"),
        ("/Leads/deleted", {"per_page": "201"}, 400, "INVALID_DATA"),
        ("/users", {"type": "Everyone"}, 400, "INVALID_DATA"),
        ("/settings/modules/Widgets", {}, 400, "INVALID_MODULE"),
        ("/Leads/1/actions/unknown", {}, 404, "INVALID_URL_PATTERN"),
        ("/Leads/deletd", {}, 404, "INVALID_URL_PATTERN"),
        ("/Accounts/not-an-id", {}, 404, "INVALID_URL_PATTERN"),
        ("/settings/unknown", {}, 404, "INVALID_URL_PATTERN"),
    ],
)
def test_unknown_routes_and_values_answer_as_zoho(
    api: httpx.Client, path: str, params: dict[str, str], status: int, code: str
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["status"] == "error"


def test_the_url_pattern_error_is_zohos_body(api: httpx.Client) -> None:
    assert api.get("/Leads/1/nothing/here").json() == {
        "code": "INVALID_URL_PATTERN",
        "details": {},
        "message": "Please check if the URL trying to access is a correct one",
        "status": "error",
    }


@pytest.mark.parametrize(
    ("kind", "emails"),
    [
        ("CurrentUser", ["ada.okafor@sandbox.example"]),
        ("AdminUsers", ["ada.okafor@sandbox.example"]),
        ("DeactiveUsers", ["farah.haddad@sandbox.example"]),
    ],
)
def test_users_by_type(api: httpx.Client, kind: str, emails: list[str]) -> None:
    body = api.get("/users", params={"type": kind}).json()
    assert [user["email"] for user in body["users"]] == emails


def test_modules_list_the_emulated_modules(api: httpx.Client) -> None:
    modules = api.get("/settings/modules").json()["modules"]
    assert [module["api_name"] for module in modules] == [
        "Leads",
        "Accounts",
        "Tasks",
        "Contacts",
        "Deals",
    ]
    [leads] = api.get("/settings/modules/Leads").json()["modules"]
    assert leads["api_supported"] is True


def test_a_body_that_is_not_utf8_is_refused(api: httpx.Client, emulator: ZohoEmulator) -> None:
    raw = b'{"data": [{"Last_Name": "Caf\xe9"}]}'
    response = api.post("/Leads", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_DATA"
    assert not emulator.store.records


def test_a_lone_surrogate_is_refused_naming_the_field(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    raw = b'{"data": [{"Last_Name": "Ok"}, {"Last_Name": "X", "City": "Bad \\ud800"}]}'
    response = api.post("/Leads", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 207
    refused = response.json()["data"][1]
    assert (refused["code"], refused["details"]["api_name"]) == ("INVALID_DATA", "City")
    assert [r.values["Last_Name"] for r in emulator.store.records.values()] == ["Ok"]


def test_coql_keyset_pages_by_modified_time_then_id(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    with emulator.lock:
        records = [emulator.store.insert({"Last_Name": f"K{n}"}) for n in range(5)]
        second = records[0].modified.replace(microsecond=0)
        for record in records:  # the same second, so only the id orders them
            emulator.store.restamp(record, second)
    stamp = second.isoformat()
    query = (
        "select Last_Name from Leads where (Modified_Time > '{t}') or "
        "((Modified_Time = '{t}') and (id > {i})) order by Modified_Time asc, id asc limit 2"
    )
    first = coql(api, query.format(t=stamp, i=0)).json()
    assert [row["Last_Name"] for row in first["data"]] == ["K0", "K1"]
    assert first["info"]["more_records"] is True
    rest = coql(api, query.format(t=stamp, i=first["data"][-1]["id"])).json()
    assert [row["Last_Name"] for row in rest["data"]] == ["K2", "K3"]


@pytest.mark.parametrize(
    "where",
    [
        "(Modified_Time > '{t1}') or ((Modified_Time = '{t1}') and (id > {n}))",
        "Modified_Time >= '{t1}'",
        "Modified_Time > '{t1}'",
        "(Modified_Time = '{t1}') and (id > {n})",
        "(id >= {n}) and (Modified_Time = '{t1}')",
        "Modified_Time between '{t0}' and '{t1}'",
        "(Modified_Time > '{t1}') or (Last_Name = 'K0')",
        "id is not null",
    ],
)
def test_a_keyset_ordered_query_answers_as_a_full_scan_would(
    api: httpx.Client, emulator: ZohoEmulator, where: str
) -> None:
    with emulator.lock:
        records = [emulator.store.insert({"Last_Name": f"K{n}"}) for n in range(12)]
        base = records[0].modified.replace(microsecond=0)
        for index, record in enumerate(records):  # four Leads in each of three seconds
            emulator.store.restamp(record, base + timedelta(seconds=index // 4))
    t0, t1 = (base + timedelta(seconds=s) for s in (0, 1))
    condition = where.format(t0=t0.isoformat(), t1=t1.isoformat(), n=records[5].id)
    ordered = coql(
        api, f"select Last_Name from Leads where {condition} order by Modified_Time asc, id asc"
    )
    # The same where clause without an order is a scan in id order; sorted here by the keyset.
    scanned = coql(api, f"select Last_Name, Modified_Time from Leads where {condition}")
    expected = sorted(
        scanned.json()["data"] if scanned.status_code == 200 else [],
        key=lambda row: (row["Modified_Time"], int(row["id"])),
    )
    got = ordered.json()["data"] if ordered.status_code == 200 else []
    assert [row["id"] for row in got] == [row["id"] for row in expected]
    assert got, condition


@pytest.mark.parametrize(
    ("master", "children"),
    [
        ("1", [{"id": "2"}]),  # no such master
        ("own", [{"id": "404"}]),  # no such duplicate
        ("own", []),
        ("own", [{"id": "404"}, {"id": "405"}, {"id": "406"}]),  # at most three records in all
        ("own", [{"id": "other", "_fields": [{"api_name": "Modified_Time"}]}]),
    ],
)
def test_a_merge_zoho_refuses_changes_nothing(
    api: httpx.Client, emulator: ZohoEmulator, master: str, children: list[dict[str, Any]]
) -> None:
    own, other = (
        item["details"]["id"]
        for item in api.post("/Leads", json={"data": [lead(1), lead(2)]}).json()["data"]
    )
    master = own if master == "own" else master
    for child in children:
        child["id"] = other if child["id"] == "other" else child["id"]
    response = api.post(f"/Leads/{master}/actions/merge", json={"merge": [{"data": children}]})
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_DATA")
    assert len(emulator.store.records) == 2 and not emulator.store.deleted
