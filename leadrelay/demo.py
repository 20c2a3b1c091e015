"""``leadrelay demo``: the main job end to end on the embedded sandbox, and the sample list.

:func:`run_end_to_end` (what ``leadrelay demo`` runs, DESIGN §10): the sandbox in-process, a
project written as ``leadrelay sandbox --init`` writes it, a web form lead, a Meta lead ad and a
Google Ads lead form lead captured by the capture service and delivered, two-way syncs
HubSpot <-> Salesforce and HubSpot <-> Zoho, sales' verdicts set in Salesforce and Zoho through
their APIs and written back to HubSpot by the next sync, then two leads converted in Salesforce
(the sandbox's admin conversion) into one won and one lost Opportunity whose outcome the last
sync carries back to HubSpot, one validation run, and a summary per system (leads, created,
updated, written back, API calls). After the write-back it reads every
demo lead back from each system: its score, tier and owner as that system holds them (the owner
by name: Salesforce and Zoho owners are the users routing assigned; HubSpot contacts keep
whatever owner HubSpot has, routing sets none for them), and builds the handoff report that
``leadrelay report`` prints.

:func:`run` / :func:`render` show what the pipeline does to a lead list: they read
``leadrelay/data/sample_leads.csv``, turn every row into the canonical Lead (a row that cannot
be repaired is rejected with its field and reason, never dropped silently), tag each lead's
attribution from its landing page and referrer, and cluster the duplicates with the reason
each matched.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from leadrelay.clikit import print_table
from leadrelay.model import Lead, lead_from_row
from leadrelay.sync.csvfile import LeadRow, read_lead_rows
from leadrelay.sync.dedupe import Cluster, DedupeRecord, find_clusters
from leadrelay.sync.tagging import apply_touch, tag_url

#: Columns of the sample list that are not Lead fields but feed attribution.
_TOUCH_COLUMNS = ("page_url", "referrer")


@dataclass
class DemoResult:
    """What the demo found: leads built, rows rejected (with reasons) and duplicate clusters."""

    leads: dict[int, Lead] = field(default_factory=dict)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)


def sample_path() -> Path:
    """The sample lead list shipped in the package."""
    return Path(str(resources.files("leadrelay") / "data" / "sample_leads.csv"))


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'row'}: {item['msg']}"
        for item in error.errors()
    )


def run(path: Path | None = None) -> DemoResult:
    """Build, tag and dedupe every lead of the list at ``path`` (default: the sample)."""
    result = DemoResult()
    records: list[DedupeRecord] = []
    for row in read_lead_rows(
        path or sample_path(), required=("email",), extra_columns=("page_url",)
    ):
        if not isinstance(row, LeadRow):
            result.rejected.append((row.row_number, row.reason))
            continue
        values = dict(row.values)
        touch = {name: values.pop(name, None) for name in _TOUCH_COLUMNS}
        try:
            lead = lead_from_row({k: v for k, v in values.items() if v not in ("", None)})
        except ValidationError as exc:
            result.rejected.append((row.row_number, _problems(exc)))
            continue
        apply_touch(lead, tag_url(touch["page_url"], touch["referrer"]))
        result.leads[row.row_number] = lead
        records.append(DedupeRecord.from_lead(lead, row=row.row_number))
    result.clusters = find_clusters(records)
    return result


def render(result: DemoResult, console: Console) -> None:
    """Print the demo's tables: leads with their channel, rejected rows, duplicate clusters."""
    leads = Table(title="Leads, normalized and tagged")
    for column in ("row", "email", "phone", "company domain", "channel", "campaign"):
        leads.add_column(column, overflow="fold")
    for row_number, lead in sorted(result.leads.items()):
        leads.add_row(
            str(row_number),
            lead.email or "-",
            lead.phone or "-",
            lead.company_domain or "-",
            lead.channel.value if lead.channel else "-",
            lead.utm_campaign or "-",
        )
    print_table(console, leads)
    if result.rejected:
        rejected = Table(title="Rows rejected (field: reason)")
        rejected.add_column("row")
        rejected.add_column("reason", overflow="fold")
        for row_number, reason in result.rejected:
            rejected.add_row(str(row_number), reason)
        print_table(console, rejected)
    clusters = Table(title="Duplicates")
    clusters.add_column("rows")
    clusters.add_column("emails", overflow="fold")
    clusters.add_column("why", overflow="fold")
    for cluster in result.clusters:
        emails = ", ".join(
            result.leads[row].email or "-" for row in cluster.rows if row in result.leads
        )
        clusters.add_row(", ".join(str(row) for row in cluster.rows), emails, cluster.reason)
    print_table(console, clusters)
    people = len(result.leads) - sum(len(cluster.rows) - 1 for cluster in result.clusters)
    console.print(
        f"{len(result.leads)} leads accepted, {len(result.rejected)} rejected with a reason, "
        f"{len(result.clusters)} duplicate clusters -> {people} distinct people"
    )


# --------------------------------------------------------------------------------------------
# end to end on the sandbox

#: The systems of the summary, in the order the lead travels.
SYSTEMS = ("hubspot", "salesforce", "zoho")

#: The demo's people: (form, email, first name, last name, company, job title).
DEMO_PEOPLE = (
    ("demo-webform", "ana.silva@northwind.example", "Ana", "Silva", "Northwind", "VP Sales"),
    ("demo-meta", "li.wei@contoso.example", "Li", "Wei", "Contoso", "Marketing Manager"),
    ("demo-google", "omar.haddad@fabrikam.example", "Omar", "Haddad", "Fabrikam", "CTO"),
)


@dataclass
class SystemSummary:
    """One system's line of the summary table."""

    name: str
    leads: int = 0
    created: int = 0
    updated: int = 0
    written_back: int = 0
    api_calls: int = 0


@dataclass
class HandoffLine:
    """One demo lead as one system holds it after the write-back: score, tier and owner."""

    form: str
    email: str
    system: str
    score: float | None = None
    tier: str | None = None
    owner: str | None = None


@dataclass
class EndToEndResult:
    """What the end-to-end demo did: per-system counts, the demo leads as HubSpot holds them
    after sales' verdicts are written back, the converted leads' deals after the next sync,
    their score, tier and owner in each system, the handoff report, the validation run, and how
    long it took."""

    systems: dict[str, SystemSummary]
    leads: list[dict[str, Any]] = field(default_factory=list)
    handoff: list[HandoffLine] = field(default_factory=list)
    #: the converted demo leads as the Salesforce mapping reads them (stage, amount, reason)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    report: Any = None
    captured: int = 0
    delivered: int = 0
    validation: Any = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every lead delivered and the validation run passed."""
        return (
            self.delivered == self.captured
            and self.validation is not None
            and bool(self.validation.ok)
        )


def _post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> Any:
    response = client.post(
        url, content=body, headers={"Content-Type": "application/json", **headers}
    )
    if response.status_code >= 300:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:200]}")
    return response.json()


def _capture_leads(config: Any, capture: str, sandbox_url: str, ca: Path) -> int:
    """Send the three demo leads the way their sources send them; returns how many."""
    import ssl

    from leadrelay.capture.verify import hex_hmac_sha256
    from leadrelay.config import GoogleAdsFormConfig, MetaFormConfig, WebformConfig

    web, meta, google = (config.form(p[0]) for p in DEMO_PEOPLE)
    assert isinstance(web, WebformConfig) and isinstance(meta, MetaFormConfig)
    assert isinstance(google, GoogleAdsFormConfig)
    _, email, first, last, company, title = DEMO_PEOPLE[0]
    with httpx.Client(timeout=30) as client:
        form = {
            "email": email,
            "first_name": first,
            "last_name": last,
            "company": company,
            "job_title": title,
            "phone": "+14155550123",
            "page_url": "https://www.example.com/pricing?utm_source=google&utm_medium=cpc"
            "&utm_campaign=brand&gclid=demo-gclid-1",
        }
        headers = {"X-Leadrelay-Secret": web.secret.get_secret_value()} if web.secret else {}
        _post(client, f"{capture}/forms/demo-webform", json.dumps(form).encode(), headers)

        _, email, first, last, company, title = DEMO_PEOPLE[1]
        form_id = meta.form_ids[0] if meta.form_ids else "700000000000001"
        answers = {"email": email, "full_name": f"{first} {last}", "company_name": company}
        answers["job_title"] = title
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as admin:
            created = _post(
                admin,
                f"{sandbox_url}/__sandbox__/leads/meta",
                json.dumps(
                    {
                        "form_id": form_id,
                        "field_data": [{"name": k, "values": [v]} for k, v in answers.items()],
                    }
                ).encode(),
                {},
            )
        change = {"leadgen_id": created["id"], "form_id": form_id, "created_time": int(time.time())}
        note = json.dumps(
            {
                "object": "page",
                "entry": [
                    {
                        "id": "0",
                        "time": int(time.time()),
                        "changes": [{"field": "leadgen", "value": change}],
                    }
                ],
            }
        ).encode()
        signature = hex_hmac_sha256(meta.app_secret.get_secret_value(), note)
        _post(client, f"{capture}/hooks/meta", note, {"X-Hub-Signature-256": f"sha256={signature}"})

        _, email, first, last, company, title = DEMO_PEOPLE[2]
        lead = {
            "lead_id": "demo-google-lead-1",
            "api_version": "1.0",
            "form_id": google.form_ids[0] if google.form_ids else "40000000000",
            "campaign_id": "20000000000",
            "google_key": google.google_key.get_secret_value(),
            "is_test": False,
            "gcl_id": "demo-gclid-2",
            "user_column_data": [
                {"column_id": "EMAIL", "string_value": email},
                {"column_id": "FULL_NAME", "string_value": f"{first} {last}"},
                {"column_id": "COMPANY_NAME", "string_value": company},
                {"column_id": "JOB_TITLE", "string_value": title},
            ],
        }
        _post(client, f"{capture}/hooks/google-ads", json.dumps(lead).encode(), {})
    return len(DEMO_PEOPLE)


def _count(connector: Any) -> int:
    """How many records a full read finds (a record read twice counts once: Salesforce reads a
    converted Lead with the Leads and again with the outcomes)."""
    seen: set[str] = set()
    for page in connector.read_changes(None):
        for record in page.records:
            key = next((record[k] for k in ("Id", "id", "hs_object_id") if record.get(k)), None)
            seen.add(
                str(key) if key is not None else json.dumps(record, sort_keys=True, default=str)
            )
    return len(seen)


def _sync(config: Any, store: Any, pool: Any) -> list[Any]:
    from leadrelay.sync.engine import SyncContext, SyncEngine
    from leadrelay.sync.state import RunStatus

    run_id = store.start_run([flow.name for flow in config.flows])
    context = SyncContext(config, store, pool, run_id=run_id)
    results = [SyncEngine.for_flow(context, flow).run() for flow in config.flows]
    status = RunStatus.PARTIAL if any(s.dead_lettered for s in results) else RunStatus.OK
    store.finish_run(run_id, status, {"flows": [s.to_stats() for s in results]})
    return results


def _sales_verdicts(pool: Any) -> None:
    """What sales does in the CRMs: work one lead, reject one with a reason, junk one."""
    salesforce, zoho = pool.get("salesforce"), pool.get("zoho")
    web_email, meta_email, google_email = (p[1] for p in DEMO_PEOPLE)
    found = salesforce.lookup(emails=[web_email, meta_email])
    salesforce.update(
        {
            str(found[web_email]["Id"]): {"Status": "Working - Contacted"},
            str(found[meta_email]["Id"]): {
                "Status": "Closed - Not Converted",
                "Rejection_Reason__c": "No Need",
            },
        }
    )
    lead = zoho.lookup(emails=[google_email])[google_email]
    zoho.update({str(lead["id"]): {"Lead_Status": "Junk Lead"}})


#: The deals sales makes of two demo leads after the first write-back: the web form lead is
#: converted and won on price, the Google Ads lead converted and lost to a competitor.
DEMO_DEALS = (
    (
        "demo-webform",
        {
            "Name": "Northwind - 40 seats",
            "StageName": "Closed Won",
            "Amount": 48000,
            "Win_Reason__c": "Price",
        },
    ),
    (
        "demo-google",
        {
            "Name": "Fabrikam - pilot",
            "StageName": "Closed Lost",
            "Amount": 12000,
            "Loss_Reason__c": "Competitor",
        },
    ),
)


def _sales_outcomes(pool: Any, sandbox_url: str, ca: Path) -> dict[str, str]:
    """What sales does next in Salesforce: converts two leads into Opportunities the way an
    admin does in the UI (the sandbox's convert endpoint), one won, one lost with its reason.
    Returns form -> the Opportunity's id."""
    import ssl

    salesforce = pool.get("salesforce")
    emails = {p[0]: p[1] for p in DEMO_PEOPLE}
    found = salesforce.lookup(emails=list(emails.values()))
    today = time.strftime("%Y-%m-%d", time.gmtime())
    made: dict[str, str] = {}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30) as admin:
        for form, deal in DEMO_DEALS:
            body = {
                "lead_id": str(found[emails[form]]["Id"]),
                "opportunity": {**deal, "CloseDate": today},
            }
            answer = _post(
                admin,
                f"{sandbox_url}/__sandbox__/salesforce/convert",
                json.dumps(body).encode(),
                {},
            )
            made[form] = str(answer["opportunity_id"])
    return made


def _owner_names(connector: Any) -> dict[str, str]:
    """Owner id -> name (or e-mail) of a CRM's users."""
    from leadrelay.handoff.qualify import crm_owners

    return {owner.id: owner.name or owner.email or owner.id for owner in crm_owners(connector)}


def _owner_label(owner: Any, names: dict[str, str]) -> str | None:
    if owner is None or owner == "":
        return None
    if isinstance(owner, dict):
        # a Zoho lookup carries the user's name with its id
        label = owner.get("name") or owner.get("email") or names.get(str(owner.get("id")))
        return str(label or owner.get("id"))
    return names.get(str(owner), f"{owner} (not a user)")


def _handoff_lines(config: Any, pool: Any) -> list[HandoffLine]:
    """Each demo lead's score, tier and owner in each system, read back through its mapping."""
    from leadrelay.mappings.engine import load_mapping

    emails = [p[1] for p in DEMO_PEOPLE]
    lines: list[HandoffLine] = []
    for name in SYSTEMS:
        connector = pool.get(name)
        mapping = load_mapping(config.connection(name).kind, project_dir=config.folder)
        records = connector.lookup(emails=emails)
        names = _owner_names(connector)
        for form, email, *_ in DEMO_PEOPLE:
            raw = records.get(email)
            if raw is None:
                lines.append(HandoffLine(form, email, name))
                continue
            values = mapping.to_lead(raw).values
            score, tier = values.get("score"), values.get("tier")
            lines.append(
                HandoffLine(
                    form,
                    email,
                    name,
                    score=float(score) if isinstance(score, int | float) else None,
                    tier=str(getattr(tier, "value", tier)) if tier else None,
                    owner=_owner_label(values.get("owner"), names),
                )
            )
    return lines


def _hubspot_view(config: Any, pool: Any) -> list[dict[str, Any]]:
    """The demo leads as HubSpot holds them (read through its mapping), with owner names."""
    from leadrelay.mappings.engine import load_mapping

    hubspot = pool.get("hubspot")
    mapping = load_mapping("hubspot", project_dir=config.folder)
    records = hubspot.lookup(emails=[p[1] for p in DEMO_PEOPLE])
    owners = _owner_names(hubspot)
    leads = []
    for form, email, *_ in DEMO_PEOPLE:
        values = mapping.to_lead(records.get(email, {})).values
        owner = _owner_label(values.get("owner"), owners)
        leads.append({"form": form, "email": email, **values, "owner": owner})
    return leads


def _outcome_lines(config: Any, pool: Any, hubspot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The converted demo leads as leadrelay reads them from Salesforce (stage, the
    Opportunity's stage, amount and reason), with the stage HubSpot holds after the sync."""
    from leadrelay.mappings.engine import load_mapping

    mapping = load_mapping("salesforce", project_dir=config.folder)
    people = {p[0]: p[1] for p in DEMO_PEOPLE}
    records = pool.get("salesforce").lookup(emails=list(people.values()))
    marketing = {lead["form"]: lead for lead in hubspot}
    lines = []
    for form, _ in DEMO_DEALS:
        values = mapping.to_lead(records.get(people[form], {})).values
        line = {"form": form, "email": people[form], **values}
        line["hubspot_stage"] = marketing.get(form, {}).get("stage")
        lines.append(line)
    return lines


def run_end_to_end(
    workdir: Path | None = None, *, progress: Callable[[str], None] | None = None
) -> EndToEndResult:
    """Run the end-to-end demo (see the module docstring) in ``workdir`` (default: a temporary
    folder, removed afterwards). ``progress`` is told each step as it starts."""
    from leadrelay.capture.worker import drain_inbox
    from leadrelay.config import load_config
    from leadrelay.handoff.commands import build_project_report
    from leadrelay.sandbox.project import write_sandbox_project
    from leadrelay.sandbox.server import SandboxServer
    from leadrelay.sync.engine import ConnectorPool
    from leadrelay.sync.state import open_state
    from leadrelay.validation.runner import in_process_capture, validate_form

    say = progress or (lambda _step: None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="leadrelay-demo-") as tmp:
        folder = workdir or Path(tmp)
        say("starting the sandbox (HubSpot, Salesforce, Zoho, Meta, LinkedIn emulators)")
        with SandboxServer(ca_dir=folder / ".sandbox") as server:
            write_sandbox_project(folder, server.env())
            config = load_config(folder / "leadrelay.toml")
            store = open_state(config)
            try:
                with ConnectorPool(config) as pool:
                    systems = {name: SystemSummary(name) for name in SYSTEMS}
                    before = {name: _count(pool.get(name)) for name in SYSTEMS}
                    say("capturing a web form lead, a Meta lead ad and a Google Ads lead")
                    with in_process_capture(config, store) as capture:
                        captured = _capture_leads(config, capture, server.url, server.ca_bundle)
                    delivery = drain_inbox(config, store, connectors=pool)
                    say("syncing HubSpot <-> Salesforce and HubSpot <-> Zoho")
                    flows = _sync(config, store, pool)
                    say("sales works, rejects and junks leads in Salesforce and Zoho")
                    _sales_verdicts(pool)
                    say("syncing again: sales' verdicts written back to HubSpot")
                    flows += _sync(config, store, pool)
                    leads = _hubspot_view(config, pool)
                    say("sales converts two leads in Salesforce: one deal won, one lost")
                    _sales_outcomes(pool, server.url, server.ca_bundle)
                    say("syncing again: the won and the lost deal written back to HubSpot")
                    flows += _sync(config, store, pool)
                    for stats in flows:
                        flow = config.flow(stats.name)
                        systems[flow.destination].updated += stats.updated
                        systems[flow.source].written_back += stats.written_back
                    for name in SYSTEMS:
                        systems[name].leads = _count(pool.get(name))
                        systems[name].created = systems[name].leads - before[name]
                    say("reading scores and owners back, building the handoff report")
                    handoff = _handoff_lines(config, pool)
                    outcomes = _outcome_lines(config, pool, _hubspot_view(config, pool))
                    report = build_project_report(config, store, pool)
                    say("validating the demo-google form with a test lead")
                    validation = validate_form(
                        config, "demo-google", timeout=30, store=store, capture_url=False
                    )
                requests = server.sandbox.stats.to_json()["requests"]
                for name in SYSTEMS:
                    systems[name].api_calls = int(requests.get(name, 0))
            finally:
                store.close()
    return EndToEndResult(
        systems=systems,
        leads=leads,
        handoff=handoff,
        outcomes=outcomes,
        report=report,
        captured=captured,
        delivered=delivery.delivered,
        validation=validation,
        seconds=time.monotonic() - started,
    )


def _value(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, dict):
        return str(value.get("email") or value.get("id") or "-")
    return str(getattr(value, "value", value))


def render_end_to_end(result: EndToEndResult, console: Console) -> None:
    """Print the demo's summary: per system, the demo leads in HubSpot, the validation run."""
    from leadrelay.handoff.report import render_tables
    from leadrelay.validation.output import render_table

    summary = Table(title="leadrelay demo: what each system saw")
    for column in ("system", "leads", "created", "updated", "written back", "API calls"):
        summary.add_column(column, justify="left" if column == "system" else "right")
    for line in result.systems.values():
        summary.add_row(
            line.name,
            str(line.leads),
            str(line.created),
            str(line.updated),
            str(line.written_back),
            str(line.api_calls),
        )
    print_table(console, summary)
    leads = Table(title="The demo leads in HubSpot after sales' verdicts, before the deals")
    for column in ("form", "email", "channel", "stage", "rejection", "owner", "score"):
        leads.add_column(column, overflow="fold")
    for lead in result.leads:
        leads.add_row(
            lead["form"],
            lead["email"],
            _value(lead.get("channel")),
            _value(lead.get("stage")),
            _value(lead.get("rejection_reason")),
            _value(lead.get("owner")),
            _value(lead.get("score")),
        )
    print_table(console, leads)
    if result.outcomes:
        deals = Table(title="Sales' outcomes in Salesforce, and the stage HubSpot got")
        columns = ("form", "email", "stage", "opportunity stage", "amount", "reason", "in HubSpot")
        for column in columns:
            deals.add_column(column, overflow="fold")
        for deal in result.outcomes:
            deals.add_row(
                deal["form"],
                deal["email"],
                _value(deal.get("stage")),
                _value(deal.get("opportunity_stage")),
                _value(deal.get("amount")),
                _value(deal.get("outcome_reason")),
                _value(deal.get("hubspot_stage")),
            )
        print_table(console, deals)
    if result.handoff:
        handoff = Table(title="Score, tier and owner of each demo lead in each system")
        for column in ("form", "email", "system", "score", "tier", "owner"):
            handoff.add_column(column, overflow="fold")
        for entry in result.handoff:
            handoff.add_row(
                entry.form,
                entry.email,
                entry.system,
                _value(None if entry.score is None else f"{entry.score:g}"),
                _value(entry.tier),
                _value(entry.owner),
            )
        print_table(console, handoff)
    if result.report is not None:
        console.print("[bold]Handoff report[/] (what `leadrelay report` prints)", highlight=False)
        for table in render_tables(result.report):
            if isinstance(table, Table):
                print_table(console, table)
            else:
                console.print(table)
    if result.validation is not None:
        print_table(console, render_table(result.validation))
    console.print(
        f"{result.captured} leads captured, {result.delivered} delivered; "
        f"validation {'passed' if result.validation and result.validation.ok else 'FAILED'}; "
        f"{result.seconds:.1f}s"
    )


def main(console: Console, progress: Console | None = None) -> int:
    """``leadrelay demo``: the end-to-end run on the sandbox, then the sample-list section.

    Steps are announced on ``progress`` (stderr in the CLI). Returns the exit code: 0 when
    every lead was delivered and the validation run passed, else 1.
    """

    def say(step: str) -> None:
        if progress is not None:
            progress.print(f"[dim]· {step}[/]", highlight=False)

    result = run_end_to_end(progress=say)
    render_end_to_end(result, console)
    console.print()
    render(run(), console)
    return 0 if result.ok else 1
