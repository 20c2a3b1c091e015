"""End-to-end sync scenarios on the sandbox: HubSpot <-> Salesforce and HubSpot <-> Zoho.

Each test runs ``leadrelay sync`` (the command function) against a project written by
``write_sandbox_project`` and checks the records in the emulators through the connectors.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from leadrelay.cli import CliError
from leadrelay.config import Config, load_config
from leadrelay.connectors.base import Connector, UpsertInput
from leadrelay.connectors.hubspot.connector import decode_cursor, encode_cursor
from leadrelay.mappings.engine import load_mapping
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.commands import dlq_app, sync_command
from leadrelay.sync.engine import ConnectorPool
from leadrelay.sync.state import StateStore

FLOWS = """
[[flows]]
name = "hubspot-salesforce"
source = "hubspot"
destination = "salesforce"
two_way = true

[[flows]]
name = "hubspot-zoho"
source = "hubspot"
destination = "zoho"
two_way = true
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


def admin(sandbox: SandboxServer, path: str, body: dict[str, Any]) -> Any:
    context = ssl.create_default_context(cafile=str(sandbox.ca_bundle))
    with httpx.Client(verify=context) as client:
        response = client.post(f"{sandbox.url}/__sandbox__/{path}", json=body)
        response.raise_for_status()
        return response.json()


class Project:
    """A sandbox project folder with its config, connectors and a way to run commands."""

    def __init__(self, folder: Path, sandbox: SandboxServer) -> None:
        self.folder = folder
        self.sandbox = sandbox
        write_sandbox_project(folder, sandbox.env())
        toml = folder / "leadrelay.toml"
        text = toml.read_text(encoding="utf-8")
        if "[[flows]]" not in text:
            toml.write_text(text + FLOWS, encoding="utf-8")
        self.config: Config = load_config(toml)
        self.pool = ConnectorPool(self.config)

    def connector(self, name: str) -> Connector[Any]:
        return self.pool.get(name)

    def run(self, *argv: str) -> tuple[int, Any]:
        app = typer.Typer()
        app.command("sync")(sync_command)
        app.add_typer(dlq_app, name="dlq")
        args = [*argv, "--config", str(self.folder / "leadrelay.toml"), "--json"]
        try:
            code = app(args=args, standalone_mode=False) or 0
        except CliError as exc:
            code = exc.exit_code
            print(f"error: {exc}", file=sys.stderr)
        return code, None

    def sync(self, *flows: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        code, _ = self.run("sync", *flows)
        out, _err = capsys.readouterr()
        return code, json.loads(out)

    def store(self) -> StateStore:
        return StateStore(self.config.state.url)


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Project]:
    admin(sandbox, "reset", {})
    opened = Project(tmp_path, sandbox)
    yield opened
    opened.pool.close()


def hubspot_contacts(project: Project, count: int, **extra: str) -> list[str]:
    results = project.connector("hubspot").upsert(
        [
            UpsertInput(
                ref=str(n),
                fields={
                    "email": f"lead{n}@acme{n}.io",
                    "firstname": f"Ann{n}",
                    "lastname": f"Lee{n}",
                    "company": f"Acme {n}",
                    "lifecyclestage": "marketingqualifiedlead",
                    "utm_source": "google",
                    **extra,
                },
            )
            for n in range(count)
        ]
    )
    assert all(result.ok for result in results), results
    return [str(result.external_id) for result in results]


def emails_in(project: Project, connection: str, emails: list[str]) -> dict[str, dict[str, Any]]:
    return project.connector(connection).lookup(emails=emails)


FLOW_OF = {"salesforce": "hubspot-salesforce", "zoho": "hubspot-zoho"}
EMAIL = {"hubspot": "email", "salesforce": "Email", "zoho": "Email"}


@pytest.mark.parametrize("crm", ["salesforce", "zoho"])
def test_marketing_leads_reach_the_crm_once_and_a_rerun_writes_nothing(
    project: Project, crm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 12)
    code, first = project.sync(FLOW_OF[crm], capsys=capsys)
    code2, second = project.sync(FLOW_OF[crm], capsys=capsys)
    emails = [f"lead{n}@acme{n}.io" for n in range(12)]
    assert (code, first["flows"][0]["created"]) == (0, 12)
    assert sorted(emails_in(project, crm, emails)) == sorted(emails)
    flow = second["flows"][0]
    assert (code2, flow["created"], flow["updated"], flow["written_back"]) == (0, 0, 0, 0)
    assert flow["api_calls"]["hubspot"] <= 2  # the search, and the archived list


def idle_project(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    """Both flows synced until a run reads nothing in either: that run's code and output."""
    # The look-back re-reads what the last minutes changed; cron runs minutes apart, this test
    # seconds, so it reads with none (the sandbox's search has no lag unless told to).
    toml = project.folder / "leadrelay.toml"
    text = toml.read_text(encoding="utf-8")
    for name in ("hubspot", "salesforce", "zoho"):
        text = text.replace(
            f"[connections.{name}]\n", f"[connections.{name}]\nread_lookback_s = 0\n"
        )
    toml.write_text(text, encoding="utf-8")
    hubspot_contacts(project, 3)
    project.sync(capsys=capsys)
    # The next runs read back leadrelay's own writes (changes, so the deletion lists too) until
    # a run writes nothing; Zoho's Modified_Time has whole seconds and a read resumes at its
    # second, so a write in that second is read once more. Cron's runs are minutes apart.
    for _ in range(8):
        time.sleep(1.1)
        code, idle = project.sync(capsys=capsys)
        if not any(f["read"] for f in idle["flows"]):
            break
    assert [f["read"] for f in idle["flows"]] == [0, 0]
    return code, idle


def test_an_idle_sync_reads_once_per_connection(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code, idle = idle_project(project, capsys)

    # Tokens, sessions and describe() are reused from the state store, the deletion lists
    # wait for their interval, and the second flow takes the first one's empty read of HubSpot:
    # one read call per connection, nothing else (Zoho's Leads, Deals, Contacts and deleted
    # Leads come in one Composite API call).
    assert code == 0
    assert {f["name"]: f["api_calls"] for f in idle["flows"]} == {
        "hubspot-salesforce": {"hubspot": 1, "salesforce": 1},
        "hubspot-zoho": {"hubspot": 0, "zoho": 1},
    }


def with_archived_read(cursor: str, archived_ms: int) -> str:
    position = decode_cursor(cursor)
    return encode_cursor(position.timestamp_ms, position.last_id, archived_ms)


@pytest.mark.parametrize(("older_by_s", "hubspot_calls"), [(600, 0), (7200, 2)])
def test_a_flow_that_last_read_the_archived_list_earlier_shares_the_idle_read_until_due(
    project: Project, capsys: pytest.CaptureFixture[str], older_by_s: int, hubspot_calls: int
) -> None:
    # A run in which the first flow read changes (so the archived list) and the second read
    # none leaves the second flow's archived-list read older than the first's. The first
    # flow's next empty read did not read the list (not due for it): it answers the second
    # flow too while the list is not due for that flow either, whose own watermark is kept.
    idle_project(project, capsys)
    store = project.store()
    own = store.get_cursor("hubspot-zoho", "hubspot")
    assert own is not None
    archived = decode_cursor(own).archived_read_ms
    assert archived is not None
    older = archived - older_by_s * 1000
    store.set_cursor("hubspot-zoho", "hubspot", with_archived_read(own, older))

    code, idle = project.sync(capsys=capsys)

    assert code == 0
    assert [f["read"] for f in idle["flows"]] == [0, 0]
    calls = {f["name"]: f["api_calls"]["hubspot"] for f in idle["flows"]}
    assert calls == {"hubspot-salesforce": 1, "hubspot-zoho": hubspot_calls}
    after = store.get_cursor("hubspot-zoho", "hubspot")
    assert after is not None
    if hubspot_calls == 0:  # shared: the position of the empty read, its own archived watermark
        assert decode_cursor(after).archived_read_ms == older
        assert decode_cursor(after).timestamp_ms >= decode_cursor(own).timestamp_ms
    else:  # due: it read the list itself
        assert decode_cursor(after).archived_read_ms > archived


@pytest.mark.parametrize(
    ("crm", "fields"),
    [
        ("salesforce", {"Email": "walk.in@shop.io", "LastName": "Walker", "Company": "Shop"}),
        ("zoho", {"Email": "walk.in@shop.io", "Last_Name": "Walker", "Company": "Shop"}),
    ],
)
def test_a_lead_created_by_sales_reaches_marketing_once(
    project: Project, crm: str, fields: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    [result] = project.connector(crm).upsert([UpsertInput(ref="w", fields=fields)])
    assert result.ok, result
    code, _ = project.sync(FLOW_OF[crm], capsys=capsys)
    _, again = project.sync(FLOW_OF[crm], capsys=capsys)
    found = emails_in(project, "hubspot", ["walk.in@shop.io"])
    assert code == 0
    assert found["walk.in@shop.io"]["lastname"] == "Walker"
    assert again["flows"][0]["created"] == 0


@pytest.mark.parametrize(
    ("crm", "verdict", "reason"),
    [
        (
            "salesforce",
            {"Status": "Closed - Not Converted", "Rejection_Reason__c": "No Authority"},
            "wrong_role",
        ),
        ("zoho", {"Lead_Status": "Junk Lead"}, "invalid_contact"),
    ],
)
def test_a_sales_rejection_flows_back_as_disqualified_with_its_reason(
    project: Project,
    crm: str,
    verdict: dict[str, str],
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [hub_id] = hubspot_contacts(project, 1)
    project.sync(FLOW_OF[crm], capsys=capsys)
    record = emails_in(project, crm, ["lead0@acme0.io"])["lead0@acme0.io"]
    record_id = str(record.get("Id") or record.get("id"))
    [updated] = project.connector(crm).update({record_id: verdict})
    assert updated.ok, updated
    code, result = project.sync(FLOW_OF[crm], capsys=capsys)
    contact = project.connector("hubspot").lookup(ids=[hub_id])[hub_id]
    mapped = load_mapping("hubspot").to_lead(contact).values
    assert (code, result["flows"][0]["written_back"]) == (0, 1)
    assert (mapped["stage"], mapped["rejection_reason"]) == ("disqualified", reason)
    _, quiet = project.sync(FLOW_OF[crm], capsys=capsys)
    assert quiet["flows"][0]["written_back"] == 0


@pytest.mark.parametrize(
    ("crm", "fields"),
    [
        ("salesforce", {"Email": "LEAD0@acme0.io", "LastName": "Lee", "Company": "Acme 0"}),
        ("zoho", {"Email": "LEAD0@acme0.io", "Last_Name": "Lee", "Company": "Acme 0"}),
    ],
)
def test_one_person_from_two_sources_is_one_record_per_system(
    project: Project, crm: str, fields: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 1)
    [result] = project.connector(crm).upsert([UpsertInput(ref="x", fields=fields)])
    assert result.ok
    code, report = project.sync(FLOW_OF[crm], capsys=capsys)
    assert (code, report["flows"][0]["created"]) == (0, 0)
    with project.store() as store:
        hub_key = store.find_key_by_email("lead0@acme0.io")
        assert hub_key is not None
        assert set(store.links_of(hub_key)) == {"hubspot", crm}


@pytest.mark.parametrize(
    ("crm", "change", "field"),
    [
        ("salesforce", {"remove_field": "UTM_Term__c"}, "UTM_Term__c"),
        ("zoho", {"remove_field": "UTM_Term"}, "UTM_Term"),
    ],
)
def test_a_removed_field_fails_the_mapping_check_and_is_left_out_of_the_affected_records(
    project: Project,
    crm: str,
    change: dict[str, str],
    field: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hubspot_contacts(project, 3)
    project.connector("hubspot").upsert(
        [
            UpsertInput(
                ref="t", fields={"email": "term@acme.io", "lastname": "T", "utm_term": "shoes"}
            )
        ]
    )
    admin(project.sandbox, "schema", {"system": crm, **change})
    problems = load_mapping(crm).validate_against(project.connector(crm).describe())
    assert any(problem.system_field == field for problem in problems)
    code, report = project.sync(FLOW_OF[crm], capsys=capsys)
    flow = report["flows"][0]
    assert (code, flow["created"], flow["dead_lettered"], flow["field_problems"]) == (0, 4, 0, 1)
    with project.store() as store:
        assert store.list_dead_letters() == []
        [problem] = store.field_problems()
    assert (problem.connection, problem.system_field, problem.value) == (crm, field, "shoes")
    assert field in problem.reason


def test_a_removed_picklist_value_is_left_out_of_only_the_records_holding_it(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    [hub_id] = hubspot_contacts(project, 1)
    project.sync("hubspot-salesforce", capsys=capsys)
    hubspot_contacts(project, 2, lifecyclestage="salesqualifiedlead")
    admin(
        project.sandbox,
        "schema",
        {
            "system": "salesforce",
            "remove_option": {"field": "Status", "value": "Closed - Converted"},
        },
    )
    code, report = project.sync("hubspot-salesforce", capsys=capsys)
    assert hub_id
    flow = report["flows"][0]
    assert (code, flow["dead_lettered"], flow["field_problems"]) == (0, 0, 2)
    with project.store() as store:
        problems = store.field_problems()
    assert {(p.system_field, p.value) for p in problems} == {("Status", "Closed - Converted")}


def test_one_sync_carries_a_salesforce_verdict_with_its_reason_to_hubspot_and_zoho(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 2)
    code, _ = project.sync(capsys=capsys)
    assert code == 0
    email = "lead0@acme0.io"
    lead = emails_in(project, "salesforce", [email])[email]
    project.connector("salesforce").update(
        {lead["Id"]: {"Status": "Closed - Not Converted", "Rejection_Reason__c": "Competitor"}}
    )
    code, _ = project.sync(capsys=capsys)
    assert code == 0
    with project.store() as store:
        [latest, *_] = store.list_runs()
    # hubspot-zoho ran again in the same run: the verdict reached HubSpot after its first pass
    rounds = {flow["name"]: flow["rounds"] for flow in latest.stats["flows"]}
    assert rounds["hubspot-zoho"] == 2
    hub = emails_in(project, "hubspot", [email])[email]
    assert hub["rejection_reason"] == "competitor"
    zoho = emails_in(project, "zoho", [email])[email]
    assert (zoho["Lead_Status"], zoho["Rejection_Reason"]) == ("Not Qualified", "Competitor")
    # a fixed point: run again with no outside change, nothing is written anywhere
    code, report = project.sync(capsys=capsys)
    assert code == 0
    for flow in report["flows"]:
        assert (flow["created"], flow["updated"], flow["written_back"]) == (0, 0, 0), flow


@pytest.mark.parametrize(
    ("crm", "blank", "field"),
    [
        ("salesforce", "company", "Company"),
        ("salesforce", "lastname", "LastName"),
        ("zoho", "lastname", "Last_Name"),
    ],
)
def test_a_blank_required_value_gets_the_mappings_default_in_the_crm(
    project: Project, crm: str, blank: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fields = {"email": "blank@acme.io", "lastname": "Nolan", "company": "Acme"}
    del fields[blank]
    assert project.connector("hubspot").upsert([UpsertInput(ref="n", fields=fields)])[0].ok
    code, report = project.sync(FLOW_OF[crm], capsys=capsys)
    assert (code, report["flows"][0]["dead_lettered"]) == (0, 0)
    record = emails_in(project, crm, ["blank@acme.io"])["blank@acme.io"]
    assert record[field] == "[not provided]"


@pytest.mark.parametrize("crm", ["salesforce", "zoho"])
def test_an_industry_the_crm_has_no_value_for_is_left_out_and_the_lead_written(
    project: Project, crm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 1, industry="Banking")
    if crm == "salesforce":  # Zoho's standard list has no banking value at all
        admin(
            project.sandbox,
            "schema",
            {"system": crm, "remove_option": {"field": "Industry", "value": "Banking"}},
        )
    code, report = project.sync(FLOW_OF[crm], capsys=capsys)
    flow = report["flows"][0]
    assert (code, flow["created"], flow["dead_lettered"]) == (0, 1, 0)
    record = emails_in(project, crm, ["lead0@acme0.io"])["lead0@acme0.io"]
    assert record["LastName" if crm == "salesforce" else "Last_Name"] == "Lee0"
    with project.store() as store:
        [problem] = store.field_problems()
    assert (problem.connection, problem.field) == (crm, "industry")


def test_a_bad_value_at_the_source_is_left_out_recorded_and_clears_nothing(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    hubspot_contacts(project, 1, phone="call me maybe")
    email = "lead0@acme0.io"

    code, first = project.sync("hubspot-salesforce", capsys=capsys)

    flow = first["flows"][0]
    assert code == 0
    assert (flow["created"], flow["dead_lettered"], flow["field_problems"]) == (1, 0, 1)
    lead = emails_in(project, "salesforce", [email])[email]
    assert lead["LastName"] == "Lee0" and not lead.get("Phone")
    [problem] = project.store().field_problems()
    assert (problem.field, problem.value, problem.stage) == ("phone", "call me maybe", "source")

    # Sales puts the right number in: marketing's unreadable one never clears it, and it
    # reaches marketing.
    [result] = project.connector("salesforce").update({lead["Id"]: {"Phone": "+14155550100"}})
    assert result.ok, result
    time.sleep(1.1)
    code, _ = project.sync("hubspot-salesforce", capsys=capsys)
    assert code == 0
    assert emails_in(project, "salesforce", [email])[email]["Phone"] == "+14155550100"
    assert emails_in(project, "hubspot", [email])[email]["phone"] == "+14155550100"
