"""The Zoho emulator driven by Zoho's official Python SDK for the v7 API (``zohocrmsdk7-0``).

The SDK is used as its README shows (``Initializer.initialize`` with an ``OAuthToken``, a
``FileStore`` and an ``SDKConfig``); only the base URLs differ: a ``DataCenter.Environment``
naming the sandbox's API domain and accounts server. Its token file and resource files are
written to a temporary directory, and the sandbox's CA is trusted through ``REQUESTS_CA_BUNDLE``
(the SDK sends with ``requests`` without a ``verify`` argument).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store import FileStore
from zohocrmsdk.src.com.zoho.api.logger import Logger
from zohocrmsdk.src.com.zoho.crm.api import ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.convert_lead import ActionWrapper as ConvertAnswer
from zohocrmsdk.src.com.zoho.crm.api.convert_lead import BodyWrapper as ConvertBody
from zohocrmsdk.src.com.zoho.crm.api.convert_lead import ConvertLeadOperations, LeadConverter
from zohocrmsdk.src.com.zoho.crm.api.convert_lead import SuccessResponse as Converted
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.find_and_merge import ActionWrapper as MergeAnswer
from zohocrmsdk.src.com.zoho.crm.api.find_and_merge import BodyWrapper as MergeBody
from zohocrmsdk.src.com.zoho.crm.api.find_and_merge import (
    DataFields,
    FindAndMergeOperations,
    Merge,
    MergeData,
)
from zohocrmsdk.src.com.zoho.crm.api.find_and_merge import ResponseWrapper as MergeStatus
from zohocrmsdk.src.com.zoho.crm.api.find_and_merge import SuccessResponse as MergeScheduled
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.modules import ModulesOperations
from zohocrmsdk.src.com.zoho.crm.api.modules import ResponseWrapper as ModulesWrapper
from zohocrmsdk.src.com.zoho.crm.api.record import (
    ActionWrapper,
    BodyWrapper,
    DeletedRecordsWrapper,
    DeleteRecordsParam,
    GetDeletedRecordsParam,
    GetRecordParam,
    Record,
    RecordOperations,
    SuccessResponse,
)
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig
from zohocrmsdk.src.com.zoho.crm.api.users import GetUsersParam, UsersOperations
from zohocrmsdk.src.com.zoho.crm.api.users import ResponseWrapper as UsersWrapper
from zohocrmsdk.src.com.zoho.crm.api.util import Choice

from leadrelay.sandbox.server import SandboxServer
from leadrelay.sandbox.zoho import ZohoEmulator
from leadrelay.sandbox.zoho.emulator import SANDBOX_ORG
from leadrelay.sandbox.zoho.schema import API_USER


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the SDK writes its token file, log and resource files."""
    return tmp_path_factory.mktemp("zoho-sdk")


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[SandboxServer]:
    """The sandbox, with the SDK initialised on a self-client grant code it minted."""
    with (
        SandboxServer(emulator_types=[ZohoEmulator]) as running,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_bundle))
        env = running.env()
        environment = DataCenter.Environment(
            env["ZOHO_API_DOMAIN"],
            f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token",
            env["ZOHO_API_DOMAIN"],
        )
        token = OAuthToken(
            client_id=env["ZOHO_CLIENT_ID"],
            client_secret=env["ZOHO_CLIENT_SECRET"],
            grant_token=admin(running, "grant-code")["code"],
        )
        Initializer.initialize(
            environment=environment,
            token=token,
            store=FileStore(str(folder / "tokens.csv")),
            sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=False),
            resource_path=str(folder),
            logger=Logger.get_instance(Logger.Levels.INFO, str(folder / "sdk.log")),
        )
        yield running


def admin(server: SandboxServer, route: str) -> Any:
    """POST a sandbox admin route of the Zoho emulator; its JSON answer."""
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    response = httpx.post(f"{server.url}/__sandbox__/zoho/{route}", verify=context)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def emulator(server: SandboxServer) -> Iterator[ZohoEmulator]:
    found = server.sandbox.emulators["zoho"]
    assert isinstance(found, ZohoEmulator)
    with found.lock:
        for store in found.modules.values():
            store.clear()
    yield found


def test_the_grant_code_is_exchanged_and_the_current_user_and_org_found(
    server: SandboxServer, folder: Path
) -> None:
    saved = FileStore(str(folder / "tokens.csv")).get_tokens()
    assert len(saved) == 1
    # The SDK exchanged the code for a refresh token, then asked for the current user and the
    # org (users?type=CurrentUser, /org) to sign the token with "email:zgid".
    assert saved[0].get_refresh_token()
    assert saved[0].get_user_signature().get_name() == f"{API_USER.email}:{SANDBOX_ORG['zgid']}"


def test_the_current_user_is_the_api_user(emulator: ZohoEmulator) -> None:
    params = ParameterMap()
    params.add(GetUsersParam.type, Choice("CurrentUser"))
    response = UsersOperations().get_users(params)
    assert response.get_status_code() == 200
    body = response.get_object()
    assert isinstance(body, UsersWrapper)
    assert [user.get_email() for user in body.get_users()] == [API_USER.email]


def test_modules_are_listed_and_read_by_api_name(emulator: ZohoEmulator) -> None:
    listed = ModulesOperations().get_modules().get_object()
    assert isinstance(listed, ModulesWrapper)
    assert [module.get_api_name() for module in listed.get_modules()] == [
        "Leads",
        "Accounts",
        "Tasks",
        "Contacts",
        "Deals",
    ]
    one = ModulesOperations().get_module_by_api_name("Leads").get_object()
    assert isinstance(one, ModulesWrapper)
    [leads] = one.get_modules()
    assert leads.get_api_name() == "Leads"
    assert leads.get_api_supported() is True


def create_leads(count: int) -> list[str]:
    records = []
    for n in range(count):
        record = Record()
        record.add_key_value("Last_Name", f"Sdk{n}")
        record.add_key_value("Email", f"sdk{n}@example.com")
        record.add_key_value("Phone", f"+1 555 010{n}")
        records.append(record)
    body = BodyWrapper()
    body.set_data(records)
    answer = RecordOperations("Leads").create_records(body).get_object()
    assert isinstance(answer, ActionWrapper)
    ids = []
    for item in answer.get_data():
        assert isinstance(item, SuccessResponse), item
        ids.append(str(item.get_details()["id"]))
    return ids


def deleted(kind: str) -> list[Any]:
    params = ParameterMap()
    params.add(GetDeletedRecordsParam.type, kind)
    response = RecordOperations("Leads").get_deleted_records(params)
    if response.get_status_code() == 204:
        return []
    body = response.get_object()
    assert isinstance(body, DeletedRecordsWrapper), body
    return list(body.get_data())


def test_deleted_leads_are_in_the_recycle_bin_with_who_and_when(emulator: ZohoEmulator) -> None:
    _, gone = create_leads(2)
    params = ParameterMap()
    params.add(DeleteRecordsParam.ids, gone)
    answer = RecordOperations("Leads").delete_records(params).get_object()
    assert isinstance(answer, ActionWrapper)
    assert [type(item) for item in answer.get_data()] == [SuccessResponse]
    [entry] = deleted("all")
    assert entry.get_id() == int(gone)
    assert entry.get_type() == "recycle"
    assert entry.get_deleted_by().get_id() == int(API_USER.id)
    assert isinstance(entry.get_deleted_time(), datetime)
    assert [e.get_id() for e in deleted("recycle")] == [entry.get_id()]
    assert deleted("permanent") == []


def test_an_emptied_recycle_bin_lists_the_leads_as_permanently_deleted(
    emulator: ZohoEmulator, server: SandboxServer
) -> None:
    [gone] = create_leads(1)
    params = ParameterMap()
    params.add(DeleteRecordsParam.ids, gone)
    RecordOperations("Leads").delete_records(params)
    assert admin(server, "empty-recycle-bin") == {"emptied": 1}
    assert deleted("recycle") == []
    assert [e.get_id() for e in deleted("permanent")] == [int(gone)]


def test_a_lone_surrogate_is_refused_per_record_and_never_stored(emulator: ZohoEmulator) -> None:
    good, bad = Record(), Record()
    good.add_key_value("Last_Name", "Fine")
    bad.add_key_value("Last_Name", "Broken \ud800 text")
    body = BodyWrapper()
    body.set_data([good, bad])
    answer = RecordOperations("Leads").create_records(body).get_object()
    assert isinstance(answer, ActionWrapper)
    first, second = answer.get_data()
    assert isinstance(first, SuccessResponse)
    assert second.get_code().get_value() == "INVALID_DATA"
    assert second.get_details()["api_name"] == "Last_Name"
    with emulator.lock:
        assert sorted(r.values["Last_Name"] for r in emulator.store.records.values()) == ["Fine"]


def test_a_merge_keeps_the_master_with_the_named_fields_and_deletes_the_duplicate(
    emulator: ZohoEmulator,
) -> None:
    master, duplicate = create_leads(2)
    child = MergeData()
    child.set_id(int(duplicate))
    phone = DataFields()
    phone.set_api_name("Phone")
    child.set_fields([phone])
    merge = Merge()
    merge.set_data([child])
    body = MergeBody()
    body.set_merge([merge])
    operations = FindAndMergeOperations("Leads", int(master))
    answer = operations.merge_records(body).get_object()
    assert isinstance(answer, MergeAnswer)
    [scheduled] = answer.get_merge()
    assert isinstance(scheduled, MergeScheduled)
    job_id = scheduled.get_details()["job_id"]
    status = operations.get_record_merge().get_object()
    assert isinstance(status, MergeStatus)
    assert [(str(m.get_job_id()), m.get_status()) for m in status.get_merge()] == [
        (str(job_id), "COMPLETED")
    ]
    assert [e.get_id() for e in deleted("all")] == [int(duplicate)]
    with emulator.lock:
        assert emulator.store.records[master].values["Phone"] == "+1 555 0101"
        assert emulator.store.records[master].values["Last_Name"] == "Sdk0"


def test_a_lead_converted_with_a_deal_is_read_with_the_deal_it_became(
    emulator: ZohoEmulator,
) -> None:
    [lead_id] = create_leads(1)
    deal = Record()
    deal.add_key_value("Deal_Name", "Sdk renewal")
    deal.add_key_value("Closing_Date", date(2026, 12, 1))
    deal.add_key_value("Stage", Choice("Closed Won"))
    deal.add_key_value("Amount", 5000.0)
    converter = LeadConverter()
    converter.set_overwrite(True)
    converter.set_notify_lead_owner(False)
    converter.set_notify_new_entity_owner(False)
    converter.set_deals(deal)
    body = ConvertBody()
    body.set_data([converter])
    answer = ConvertLeadOperations(int(lead_id)).convert_lead(body).get_object()
    assert isinstance(answer, ConvertAnswer)
    [done] = answer.get_data()
    assert isinstance(done, Converted), done
    assert done.get_code().get_value() == "SUCCESS"
    deal_id = int(done.get_details()["Deals"].get_id())
    read = RecordOperations("Deals").get_record(deal_id).get_object()
    [found] = read.get_data()
    assert found.get_key_value("Stage").get_value() == "Closed Won"
    assert found.get_key_value("Amount") == 5000.0
    params = ParameterMap()
    params.add(GetRecordParam.converted, "true")
    lead = RecordOperations("Leads").get_record(int(lead_id), params).get_object()
    [converted] = lead.get_data()
    assert converted.get_key_value("Converted__s") is True
