"""The Zoho emulator's Tasks and Accounts modules and the Leads handoff fields, over httpx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from leadrelay.sandbox.zoho import ZohoEmulator
from leadrelay.sandbox.zoho.schema import API_USER, SEEDED_USERS
from tests.zoho_sandbox import zoho_emulator, zoho_server, zoho_user  # noqa: F401 (fixtures)

BRUNO = SEEDED_USERS[1]
DISABLED = SEEDED_USERS[5]


def insert(api: httpx.Client, module: str, record: dict[str, Any]) -> str:
    response = api.post(f"/{module}", json={"data": [record]})
    assert response.status_code == 201, response.text
    return str(response.json()["data"][0]["details"]["id"])


def new_lead(api: httpx.Client, **extra: Any) -> str:
    return insert(
        api, "Leads", {"First_Name": "Ana", "Last_Name": "Silva", "Email": "ana@x.io", **extra}
    )


def task(lead_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "Subject": "Call Ana back",
        "Due_Date": "2024-06-03",
        "Description": "Hot lead, no first action yet",
        "Status": "Not Started",
        "Priority": "High",
        "What_Id": {"id": lead_id},
        "$se_module": "Leads",
        **extra,
    }


# -- Tasks ---------------------------------------------------------------------------------


def test_a_task_insert_answers_zohos_per_record_success(api: httpx.Client) -> None:
    response = api.post("/Tasks", json={"data": [task(new_lead(api))]})
    assert response.status_code == 201
    entry = response.json()["data"][0]
    assert (entry["code"], entry["status"], entry["message"]) == (
        "SUCCESS",
        "success",
        "record added",
    )
    assert entry["details"]["id"].isdigit()
    assert entry["details"]["Created_By"]["id"] == API_USER.id


def test_a_task_reads_back_with_its_lead_module_and_owner(api: httpx.Client) -> None:
    lead_id = new_lead(api)
    task_id = insert(api, "Tasks", task(lead_id, Owner={"id": BRUNO.id}))
    body = api.get(f"/Tasks/{task_id}").json()["data"][0]
    assert body["What_Id"] == {"name": "Ana Silva", "id": lead_id}
    assert body["$se_module"] == "Leads"
    assert body["Owner"]["id"] == BRUNO.id
    assert (body["Subject"], body["Due_Date"], body["Status"], body["Priority"]) == (
        "Call Ana back",
        "2024-06-03",
        "Not Started",
        "High",
    )
    assert body["Description"] == "Hot lead, no first action yet"


def test_a_task_without_owner_belongs_to_the_api_user(api: httpx.Client) -> None:
    task_id = insert(api, "Tasks", task(new_lead(api)))
    assert (
        api.get(f"/Tasks/{task_id}", params={"fields": "Owner"}).json()["data"][0]["Owner"]["id"]
        == API_USER.id
    )


def test_a_task_may_relate_to_an_account(api: httpx.Client) -> None:
    account_id = insert(api, "Accounts", {"Account_Name": "Acme GmbH"})
    task_id = insert(api, "Tasks", task(account_id, **{"$se_module": "Accounts"}))
    body = api.get(f"/Tasks/{task_id}", params={"fields": "What_Id"}).json()["data"][0]
    assert body["What_Id"] == {"name": "Acme GmbH", "id": account_id}
    assert body["$se_module"] == "Accounts"


def test_tasks_are_listed_with_the_requested_fields(api: httpx.Client) -> None:
    lead_id = new_lead(api)
    ids = [insert(api, "Tasks", task(lead_id, Subject=f"T{n}")) for n in range(3)]
    response = api.get("/Tasks", params={"fields": "Subject,What_Id", "sort_order": "asc"})
    assert response.status_code == 200
    rows = response.json()["data"]
    assert [row["id"] for row in rows] == ids
    assert [row["Subject"] for row in rows] == ["T0", "T1", "T2"]
    assert all(row["$se_module"] == "Leads" and "Status" not in row for row in rows)


BAD_TASKS: list[tuple[str, dict[str, Any], str, str]] = [
    ("no subject", {"Subject": None}, "MANDATORY_NOT_FOUND", "Subject"),
    ("subject too long", {"Subject": "x" * 256}, "INVALID_DATA", "Subject"),
    (
        "lead that does not exist",
        {"What_Id": {"id": "5725767000999999999"}},
        "INVALID_DATA",
        "What_Id",
    ),
    ("what id not an object", {"What_Id": "5725767000001000001"}, "INVALID_DATA", "What_Id"),
    ("not a module", {"$se_module": "Widgets"}, "INVALID_DATA", "$se_module"),
    ("no se_module", {"$se_module": None}, "MANDATORY_NOT_FOUND", "$se_module"),
    (
        "contact that does not exist",
        {"Who_Id": {"id": "5725767000000000001"}},
        "INVALID_DATA",
        "Who_Id",
    ),
    ("owner not a user", {"Owner": {"id": "123"}}, "INVALID_DATA", "Owner"),
    ("owner deactivated", {"Owner": {"id": DISABLED.id}}, "INVALID_DATA", "Owner"),
    ("unknown status", {"Status": "Open"}, "INVALID_DATA", "Status"),
    ("unknown priority", {"Priority": "Urgent"}, "INVALID_DATA", "Priority"),
    ("impossible due date", {"Due_Date": "2024-02-30"}, "INVALID_DATA", "Due_Date"),
    ("due date with a time", {"Due_Date": "2024-06-03T10:00:00+00:00"}, "INVALID_DATA", "Due_Date"),
]


@pytest.mark.parametrize(
    ("change", "code", "field"), [case[1:] for case in BAD_TASKS], ids=[c[0] for c in BAD_TASKS]
)
def test_a_bad_task_is_refused_naming_the_field(
    api: httpx.Client, change: dict[str, Any], code: str, field: str
) -> None:
    record = {k: v for k, v in {**task(new_lead(api)), **change}.items() if v is not None}
    response = api.post("/Tasks", json={"data": [record]})
    assert response.status_code == 400
    entry = response.json()["data"][0]
    assert (entry["code"], entry["status"]) == (code, "error")
    assert entry["details"]["api_name"] == field
    assert entry["details"]["json_path"] == f"$.data[0].{field}"


def test_a_refused_task_is_not_stored(api: httpx.Client, emulator: ZohoEmulator) -> None:
    api.post("/Tasks", json={"data": [task("5725767000999999999")]})
    assert emulator.modules["Tasks"].records == {}


def test_a_missing_task_reads_as_204(api: httpx.Client) -> None:
    assert api.get("/Tasks/5725767000003999999").status_code == 204


def test_tasks_cannot_be_updated_in_the_sandbox(api: httpx.Client) -> None:
    response = api.put("/Tasks", json={"data": [{"id": "1", "Subject": "x"}]})
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_REQUEST_METHOD")


# -- Accounts ------------------------------------------------------------------------------


def test_an_account_without_a_name_is_refused(api: httpx.Client) -> None:
    response = api.post("/Accounts", json={"data": [{"Website": "acme.example"}]})
    entry = response.json()["data"][0]
    assert (response.status_code, entry["code"], entry["details"]["api_name"]) == (
        400,
        "MANDATORY_NOT_FOUND",
        "Account_Name",
    )


def test_an_account_reads_back_by_id(api: httpx.Client) -> None:
    account_id = insert(
        api,
        "Accounts",
        {"Account_Name": "Acme", "Website": "https://www.acme.example", "Owner": {"id": BRUNO.id}},
    )
    body = api.get(
        f"/Accounts/{account_id}", params={"fields": "Account_Name,Website,Owner"}
    ).json()["data"][0]
    assert (body["Account_Name"], body["Website"], body["Owner"]["id"]) == (
        "Acme",
        "https://www.acme.example",
        BRUNO.id,
    )


def test_an_empty_accounts_module_lists_as_204(api: httpx.Client) -> None:
    assert api.get("/Accounts", params={"fields": "Website,Owner"}).status_code == 204


def fill_accounts(emulator: ZohoEmulator, count: int) -> None:
    with emulator.lock:
        store = emulator.modules["Accounts"]
        for n in range(count):
            store.insert({"Account_Name": f"Co{n}", "Website": f"co{n}.example"})


def test_accounts_page_up_to_2000_records_then_need_a_page_token(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    fill_accounts(emulator, 2050)
    params = {"fields": "Account_Name,Website,Owner", "per_page": "200", "sort_order": "asc"}
    page10 = api.get("/Accounts", params={**params, "page": "10"}).json()
    assert page10["info"]["more_records"] is True
    refused = api.get("/Accounts", params={**params, "page": "11"})
    assert refused.json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
    rest = api.get(
        "/Accounts", params={**params, "page_token": page10["info"]["next_page_token"]}
    ).json()
    assert [row["Account_Name"] for row in rest["data"]] == [f"Co{n}" for n in range(2000, 2050)]
    assert rest["info"]["more_records"] is False


def test_a_leads_page_token_is_not_valid_for_accounts(
    api: httpx.Client, emulator: ZohoEmulator
) -> None:
    fill_accounts(emulator, 3)
    with emulator.lock:
        for n in range(3):
            emulator.store.insert({"Last_Name": f"L{n}"})
    params = {"fields": "Website", "per_page": "2"}
    token = api.get("/Leads", params=params).json()["info"]["next_page_token"]
    response = api.get("/Accounts", params={**params, "page_token": token})
    assert response.json()["code"] == "TOKEN_BOUND_DATA_MISMATCH"


@pytest.mark.parametrize(
    ("module", "mandatory"), [("Accounts", "Account_Name"), ("Tasks", "Subject")]
)
def test_module_fields_metadata(api: httpx.Client, module: str, mandatory: str) -> None:
    fields = {
        f["api_name"]: f
        for f in api.get("/settings/fields", params={"module": module}).json()["fields"]
    }
    assert fields[mandatory]["system_mandatory"] is True
    assert "Owner" in fields


def test_task_pick_lists_are_listed(api: httpx.Client) -> None:
    fields = api.get("/settings/fields", params={"module": "Tasks"}).json()["fields"]
    status = next(f for f in fields if f["api_name"] == "Status")
    assert "Not Started" in [v["actual_value"] for v in status["pick_list_values"]]


# -- Leads handoff fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data_type", "length"),
    [("Landing_Page", "website", 255), ("Assigned_At", "datetime", None)],
)
def test_leads_have_the_handoff_custom_fields(
    api: httpx.Client, name: str, data_type: str, length: int | None
) -> None:
    fields = api.get("/settings/fields", params={"module": "Leads"}).json()["fields"]
    field = next(f for f in fields if f["api_name"] == name)
    assert (field["data_type"], field["length"], field["custom_field"]) == (data_type, length, True)


def test_a_lead_stores_its_landing_page_and_assignment_time(api: httpx.Client) -> None:
    lead_id = new_lead(
        api,
        Landing_Page="https://acme.example/pricing?utm_source=ads",
        Assigned_At="2024-06-03T10:00:00+00:00",
    )
    body = api.get(f"/Leads/{lead_id}", params={"fields": "Landing_Page,Assigned_At"}).json()
    assert body["data"][0]["Landing_Page"] == "https://acme.example/pricing?utm_source=ads"
    assert body["data"][0]["Assigned_At"] == "2024-06-03T10:00:00+00:00"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Landing_Page", "not a url"),
        ("Landing_Page", "https://acme.example/" + "p" * 240),
        ("Assigned_At", "2024-06-03 10:00"),
    ],
)
def test_a_bad_handoff_field_value_is_refused(api: httpx.Client, name: str, value: str) -> None:
    response = api.post("/Leads", json={"data": [{"Last_Name": "Silva", name: value}]})
    entry = response.json()["data"][0]
    assert (entry["code"], entry["details"]["api_name"]) == ("INVALID_DATA", name)
