"""The handoff rules against each CRM of the sandbox, through the shipped connectors and mappings:
routing to the owner of an existing account / company, an SLA breach escalated as a task on the
record, and the assignment time read back from the CRM."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadrelay.connectors.base import Connector, UpsertInput
from leadrelay.handoff.qualify import Qualifier, crm_owners
from leadrelay.handoff.routing import OwnerInfo
from leadrelay.mappings.engine import build_lead, load_mapping
from leadrelay.model import Lead, Tier
from leadrelay.sandbox.server import SandboxServer
from tests.capture.sandbox_project import Project, admin
from tests.hubspot_sandbox import hubspot_api

CRMS = ("hubspot", "salesforce", "zoho")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Project]:
    admin(sandbox, "reset", {})
    admin(sandbox, "faults", {})
    opened = Project(tmp_path, sandbox)
    yield opened
    opened.close()


def zoho_api(sandbox: SandboxServer, method: str, path: str, body: Any = None) -> Any:
    """Call the sandbox's Zoho API as an integration would: refresh a token, then the call."""
    env = sandbox.env()
    tls = ssl.create_default_context(cafile=env["LEADRELAY_CA_BUNDLE"])
    with httpx.Client(verify=tls, trust_env=False, timeout=10) as client:
        token = client.post(
            f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token",
            params={
                "grant_type": "refresh_token",
                "client_id": env["ZOHO_CLIENT_ID"],
                "client_secret": env["ZOHO_CLIENT_SECRET"],
                "refresh_token": env["ZOHO_REFRESH_TOKEN"],
            },
        ).json()["access_token"]
        response = client.request(
            method,
            f"{env['ZOHO_API_DOMAIN']}/crm/v7/{path}",
            json=body,
            headers={"Authorization": f"Zoho-oauthtoken {token}"},
        )
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def create_account(
    project: Project, kind: str, connector: Connector[Any], website: str, owner: str
) -> None:
    """An existing customer account owned by ``owner``, created through the CRM's own API."""
    if kind == "hubspot":
        body = {"properties": {"name": "Acme", "domain": website, "hubspot_owner_id": owner}}
        hubspot_api(project.sandbox, "POST", "/crm/v3/objects/companies", body, expect=201)
    elif kind == "salesforce":
        client = connector.client()  # type: ignore[attr-defined]
        client.Account.create({"Name": "Acme", "Website": f"https://{website}", "OwnerId": owner})
    else:
        body = {"data": [{"Account_Name": "Acme", "Website": website, "Owner": {"id": owner}}]}
        zoho_api(project.sandbox, "POST", "Accounts", body)


def an_owner(connector: Connector[Any]) -> OwnerInfo:
    """The CRM's last active user (seeded by the sandbox)."""
    return [owner for owner in crm_owners(connector) if owner.active][-1]


def qualifier(project: Project, kind: str) -> Qualifier:
    return Qualifier(
        project.config,
        project.store,
        project.pool.get(kind),
        destination_mapping=load_mapping(kind),
    )


@pytest.mark.parametrize("kind", CRMS)
def test_a_lead_of_an_existing_account_goes_to_the_account_owner(
    project: Project, kind: str
) -> None:
    connector = project.pool.get(kind)
    owner = an_owner(connector)
    create_account(project, kind, connector, "acme.io", owner.id)
    lead = Lead(email="ana@acme.io", last_name="Silva", company="Acme")

    done = qualifier(project, kind).qualify(lead, now=NOW)

    assert done.assignment is not None and done.assignment.rule == "account_owner"
    assert lead.owner is not None and lead.owner.id == owner.id
    assert lead.assigned_at == NOW


@pytest.mark.parametrize("kind", CRMS)
def test_a_lead_of_no_known_account_goes_on_to_the_next_rule(project: Project, kind: str) -> None:
    connector = project.pool.get(kind)
    create_account(project, kind, connector, "acme.io", an_owner(connector).id)
    lead = Lead(email="bo@other.io", last_name="Bo", company="Other")

    done = qualifier(project, kind).qualify(lead, now=NOW)

    assert done.assignment is not None and done.assignment.rule != "account_owner"


@pytest.mark.parametrize("kind", CRMS)
def test_users_and_accounts_are_read_once_for_the_qualify_steps_of_one_connector(
    project: Project, kind: str
) -> None:
    connector = project.pool.get(kind)
    create_account(project, kind, connector, "acme.io", an_owner(connector).id)
    qualifier(project, kind).qualify(Lead(email="ana@acme.io", last_name="A"), now=NOW)
    calls = connector.api_calls

    done = qualifier(project, kind).qualify(Lead(email="bo@acme.io", last_name="B"), now=NOW)

    assert connector.api_calls == calls
    assert done.assignment is not None and done.assignment.rule == "account_owner"


def write(project: Project, kind: str, lead: Lead) -> str:
    """The lead mapped to the CRM and upserted; its record id (linked in the store)."""
    mapping = load_mapping(kind)
    fields = mapping.to_system(lead)
    [result] = project.pool.get(kind).upsert([UpsertInput(lead.key, fields)])
    assert result.ok and result.external_id is not None, result
    project.store.link(lead.key, kind, result.external_id)
    return result.external_id


def read_back(project: Project, kind: str, record_id: str) -> Lead:
    raw = project.pool.get(kind).lookup(ids=[record_id])[record_id]
    lead, problems = build_lead(load_mapping(kind).to_lead(raw, connection=kind))
    assert problems == [] and lead is not None
    return lead


@pytest.mark.parametrize("kind", CRMS)
def test_the_assignment_time_is_read_back_from_the_crm(project: Project, kind: str) -> None:
    lead = Lead(email="ana@acme.io", last_name="Silva", company="Acme")
    qualifier(project, kind).qualify(lead, now=NOW)
    assert lead.owner is not None and lead.assigned_at == NOW

    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    back = read_back(project, kind, write(project, kind, lead))

    assert back.owner is not None and back.owner.id == lead.owner.id
    assert back.assigned_at is not None
    if kind == "hubspot":
        # HubSpot stamps "Owner assigned date" itself when the owner is written.
        assert before <= back.assigned_at <= datetime.now(UTC)
    else:
        assert back.assigned_at == NOW


@pytest.mark.parametrize("kind", CRMS)
def test_the_landing_page_is_kept_in_the_crm_for_scoring_downstream(
    project: Project, kind: str
) -> None:
    lead = Lead(
        email="ana@acme.io",
        last_name="Silva",
        company="Acme",
        landing_page="https://www.example.org/pricing?plan=team",
    )
    back = read_back(project, kind, write(project, kind, lead))
    assert back.landing_page == lead.landing_page


def tasks_of(project: Project, kind: str, record_id: str) -> list[dict[str, Any]]:
    """The tasks on one record, read through the CRM's own API: subject, owner, status."""
    if kind == "hubspot":
        found = hubspot_api(
            project.sandbox,
            "GET",
            "/crm/v3/objects/tasks?limit=100&associations=contacts"
            "&properties=hs_task_subject,hubspot_owner_id,hs_task_status",
        )
        return [
            {
                "subject": task["properties"]["hs_task_subject"],
                "owner": task["properties"].get("hubspot_owner_id"),
                "status": task["properties"]["hs_task_status"],
            }
            for task in found["results"]
            if any(
                link["id"] == record_id
                for link in task.get("associations", {}).get("contacts", {}).get("results", [])
            )
        ]
    if kind == "salesforce":
        rows = project.pool.get(kind).query(  # type: ignore[attr-defined]
            f"SELECT Subject, OwnerId, Status FROM Task WHERE WhoId = '{record_id}'",
            describe="tasks of the lead",
        )
        return [
            {"subject": row["Subject"], "owner": row["OwnerId"], "status": row["Status"]}
            for row in rows
        ]
    found = zoho_api(project.sandbox, "GET", "Tasks?fields=Subject,Owner,Status,What_Id")
    return [
        {"subject": task["Subject"], "owner": task["Owner"]["id"], "status": task["Status"]}
        for task in (found or {}).get("data", [])
        if (task.get("What_Id") or {}).get("id") == record_id
    ]


@pytest.mark.parametrize("kind", CRMS)
def test_a_breached_hot_clock_becomes_one_task_on_the_record_for_its_owner(
    project: Project, kind: str
) -> None:
    step = qualifier(project, kind)
    lead = Lead(
        email="dir@bigco.io",
        last_name="Dir",
        company="BigCo",
        job_title="Director of Operations",
        employees=120,
        landing_page="https://www.example.org/pricing",
        intent_signals=["demo_request"],
        created_at=NOW - timedelta(minutes=5),
    )
    step.qualify_page([(lead, None, True)], now=NOW)
    assert lead.tier is Tier.HOT and lead.owner is not None
    record_id = write(project, kind, lead)

    first = step.escalate_due(NOW + timedelta(hours=2))
    again = step.escalate_due(NOW + timedelta(hours=3))

    assert first is not None and [(d.kind.value, d.channel) for d in first.sent] == [
        ("hot", f"crm_task:{kind}")
    ]
    assert again is not None and again.sent == []
    [task] = tasks_of(project, kind, record_id)
    assert task["subject"].startswith("SLA breach (hot): ")
    assert task["owner"] == lead.owner.id
    assert task["status"] in ("NOT_STARTED", "Not Started")
