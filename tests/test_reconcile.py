"""``leadrelay reconcile``: leads whose webhook never came are found in the platforms' own lists
(the sandbox's Meta bulk read and LinkedIn finder), stored once, and delivered once."""

from __future__ import annotations

import contextlib
import io
import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from leadrelay.capture.worker import drain_inbox
from leadrelay.cli import main
from leadrelay.config import load_config
from leadrelay.reconcile import (
    ReconcileError,
    Upkeep,
    UpkeepProcess,
    parse_since,
    reconcile,
    reconcile_due,
)
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import LedgerState
from leadrelay.trace import find_trace
from tests.capture.sandbox_project import META_FORM_ID, admin
from tests.reconcile_sandbox import (  # noqa: F401 (fixtures)
    LINKEDIN_ACCOUNT,
    LINKEDIN_FORM_ID,
    ReconcileProject,
    project_fixture,
    sandbox_fixture,
)


@pytest.fixture
def http(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sandbox.ca_bundle))
    with httpx.Client(verify=context, timeout=30) as client:
        yield client


def deliver(project: ReconcileProject) -> Any:
    return drain_inbox(project.config, project.store, connectors=project.pool)


def totals(report: Any, form: str) -> tuple[int, int, int]:
    (result,) = [r for r in report.forms if r.form == form]
    return result.total("found"), result.total("already"), result.total("backfilled")


# -- the platforms' list endpoints in the sandbox --------------------------------------------


def test_meta_lists_a_forms_leads_newest_first_in_cursor_pages(
    project: ReconcileProject, http: httpx.Client
) -> None:
    ids = [project.create_meta(f"m{n}@acme.io", created_time=1_800_000_000 + n) for n in range(5)]
    project.create_meta("other@acme.io", form_id="999")
    env = project.sandbox.env()
    url = f"{env['META_GRAPH_URL']}/v21.0/{META_FORM_ID}/leads"
    headers = {"Authorization": f"Bearer {env['META_ACCESS_TOKEN']}"}
    seen: list[str] = []
    params: dict[str, str] = {"limit": "2", "fields": "id,created_time"}
    pages = 0
    while True:
        body = http.get(url, params=params, headers=headers).json()
        pages += 1
        seen += [lead["id"] for lead in body["data"]]
        if "next" not in body.get("paging", {}):
            break
        params["after"] = body["paging"]["cursors"]["after"]
    assert (seen, pages) == (list(reversed(ids)), 3)


def test_meta_filters_a_forms_leads_by_time_created(
    project: ReconcileProject, http: httpx.Client
) -> None:
    project.create_meta("old@acme.io", created_time=1_700_000_000)
    new = project.create_meta("new@acme.io", created_time=1_800_000_000)
    env = project.sandbox.env()
    body = http.get(
        f"{env['META_GRAPH_URL']}/v21.0/{META_FORM_ID}/leads",
        params={
            "access_token": env["META_ACCESS_TOKEN"],
            "filtering": json.dumps(
                [{"field": "time_created", "operator": "GREATER_THAN", "value": 1_750_000_000}]
            ),
        },
    ).json()
    assert [lead["id"] for lead in body["data"]] == [new]


def test_linkedin_finds_an_owners_responses_with_offset_paging(
    project: ReconcileProject, http: httpx.Client
) -> None:
    urns = [
        project.create_linkedin_lead(f"l{n}@acme.io", submitted_at=1_800_000_000_000 + n)
        for n in range(3)
    ]
    env = project.sandbox.env()
    owner = f"urn%3Ali%3AsponsoredAccount%3A{LINKEDIN_ACCOUNT}"
    found: list[str] = []
    start = 0
    while True:
        response = http.get(
            f"{env['LINKEDIN_API_URL']}/leadFormResponses?q=owner&owner=(sponsoredAccount:{owner})"
            f"&leadType=(leadType:SPONSORED)&start={start}&count=2",
            headers={
                "Authorization": f"Bearer {env['LINKEDIN_ACCESS_TOKEN']}",
                "LinkedIn-Version": "202410",
                "X-Restli-Protocol-Version": "2.0.0",
            },
        )
        body = response.json()
        found += [f"urn:li:leadGenFormResponse:{e['id']}" for e in body["elements"]]
        start += len(body["elements"])
        if start >= body["paging"]["total"]:
            break
    assert found == list(reversed(urns))


# -- reconcile --------------------------------------------------------------------------------


def test_meta_leads_without_a_notification_are_backfilled_and_delivered_once(
    project: ReconcileProject,
) -> None:
    with project.client() as client:
        notified = project.post_meta(client, email="notified@acme.io", full_name="Ann Notified")
    assert notified.status_code == 202
    project.create_meta("lost.one@acme.io")
    project.create_meta("lost.two@acme.io")

    first = reconcile(project.config, project.store, forms=["demo-meta"])
    delivered = deliver(project)
    second = reconcile(project.config, project.store, forms=["demo-meta"])
    again = deliver(project)

    assert totals(first, "demo-meta") == (3, 1, 2)
    assert delivered.delivered == 3
    assert totals(second, "demo-meta") == (3, 3, 0)
    assert again.delivered == 0
    for email in ("notified@acme.io", "lost.one@acme.io", "lost.two@acme.io"):
        assert project.lookup("hubspot", email) is not None, email


def test_linkedin_leads_without_a_notification_are_backfilled_and_delivered_once(
    project: ReconcileProject,
) -> None:
    project.create_linkedin_lead("li.lost@acme.io")
    first = reconcile(project.config, project.store, forms=["li-ads"])
    stats = deliver(project)
    second = reconcile(project.config, project.store, forms=["li-ads"])
    assert totals(first, "li-ads") == (1, 0, 1)
    assert (stats.delivered, stats.dead_lettered) == (1, 0)
    assert totals(second, "li-ads") == (1, 1, 0)
    assert deliver(project).delivered == 0
    assert project.lookup("hubspot", "li.lost@acme.io") is not None


def test_a_backfilled_lead_is_stored_as_its_webhook_would_have_been(
    project: ReconcileProject,
) -> None:
    leadgen_id = project.create_meta("shape@acme.io")
    reconcile(project.config, project.store, forms=["demo-meta"])
    with project.client() as client:
        late = project.notify_meta(client, leadgen_id)
    (key,) = [lead["key"] for lead in late.json()["leads"]]
    item = project.store.get_inbox(key)
    (row,) = project.store.ledger_rows(key)
    assert late.json()["leads"][0]["status"] == "duplicate"
    assert item is not None
    assert (item.form, item.source, item.dedupe_key) == (
        "demo-meta",
        "meta_lead_ads",
        f"meta:{leadgen_id}",
    )
    assert (item.payload["leadgen_id"], item.payload["form_id"]) == (leadgen_id, META_FORM_ID)
    assert (row.destination, row.state) == ("hubspot", LedgerState.RECEIVED)


def test_a_dry_run_counts_the_missing_leads_and_stores_nothing(
    project: ReconcileProject,
) -> None:
    project.create_meta("dry@acme.io")
    report = reconcile(project.config, project.store, forms=["demo-meta"], dry_run=True)
    assert totals(report, "demo-meta") == (1, 0, 1)
    assert sum(project.store.inbox_counts().values()) == 0


def test_leads_before_since_are_not_read(project: ReconcileProject) -> None:
    ten_days_ago = time.time() - 10 * 86400
    project.create_meta("old@acme.io", created_time=ten_days_ago)
    project.create_meta("new@acme.io")
    default = reconcile(project.config, project.store, forms=["demo-meta"], dry_run=True)
    wider = reconcile(
        project.config,
        project.store,
        forms=["demo-meta"],
        since=datetime.now(UTC) - timedelta(days=15),
        dry_run=True,
    )
    assert totals(default, "demo-meta")[0] == 1
    assert totals(wider, "demo-meta")[0] == 2
    (result,) = wider.forms
    assert len(result.days) == 2


def test_counts_are_per_day_of_the_platforms_receipt(project: ReconcileProject) -> None:
    project.create_meta("a@acme.io", created_time=time.time() - 2 * 86400)
    project.create_meta("b@acme.io")
    report = reconcile(project.config, project.store, forms=["demo-meta"])
    (result,) = report.forms
    assert [(c.found, c.backfilled) for _, c in sorted(result.days.items())] == [(1, 1), (1, 1)]


def test_web_forms_have_nothing_to_reconcile(project: ReconcileProject) -> None:
    report = reconcile(project.config, project.store, forms=["demo-webform", "demo-google"])
    assert [(r.status, r.form) for r in report.forms] == [
        ("nothing_to_do", "demo-webform"),
        ("nothing_to_do", "demo-google"),
    ]
    assert report.exit_code == 0


def test_an_unknown_form_is_a_config_error(project: ReconcileProject) -> None:
    with pytest.raises(ReconcileError, match=r"unknown form.*nope"):
        reconcile(project.config, project.store, forms=["nope"])


def test_a_platform_that_fails_is_exit_1_and_the_other_forms_still_run(
    project: ReconcileProject,
) -> None:
    project.create_linkedin_lead("li@acme.io")
    admin(project.sandbox, "faults", {"error_rate": 1.0, "systems": ["meta"]})
    report = reconcile(project.config, project.store)
    by_form = {r.form: r for r in report.forms}
    assert report.exit_code == 1
    assert by_form["demo-meta"].status == "failed"
    assert "HTTP 503" in (by_form["demo-meta"].message or "")
    assert by_form["li-ads"].total("backfilled") == 1


def test_a_meta_form_without_form_ids_is_a_config_problem(project: ReconcileProject) -> None:
    text = project.toml.read_text(encoding="utf-8")
    project.toml.write_text(text.replace(f'form_ids = ["{META_FORM_ID}"]\n', "", 1))
    code, out = run_cli(project, "reconcile", "demo-meta")
    assert code == 2
    assert "form_ids is empty" in out


def run_cli(project: ReconcileProject, *argv: str) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit) as exited:
        main([*argv, "--config", str(project.toml)])
        raise SystemExit(0)
    return int(exited.value.code or 0), buffer.getvalue()


def test_the_command_prints_json_per_form_and_day(project: ReconcileProject) -> None:
    project.create_meta("cli@acme.io")
    code, out = run_cli(project, "reconcile", "demo-meta", "--json")
    body = json.loads(out)
    (form,) = body["forms"]
    assert code == 0
    assert (form["found"], form["already_here"], form["backfilled"]) == (1, 0, 1)
    assert form["days"][0]["backfilled"] == 1


def test_a_bad_since_is_a_config_error(project: ReconcileProject) -> None:
    code, _ = run_cli(project, "reconcile", "--since", "last tuesday")
    assert code == 2


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T08:30:00+01:00", datetime(2026, 12, 1, 7, 30, tzinfo=UTC)),
    ],
)
def test_since_takes_a_date_a_datetime_or_a_span(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2027-01-01", "7x"])
def test_since_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(text, now=NOW)


def test_the_schedule_says_when_serve_runs_reconcile(project: ReconcileProject) -> None:
    project.toml.write_text(
        project.toml.read_text(encoding="utf-8") + '\n[reconcile]\nschedule = "15 * * * *"\n'
    )
    config = load_config(project.toml, environ={})
    assert reconcile_due(config, datetime(2026, 12, 7, 3, 15, tzinfo=UTC))
    assert not reconcile_due(config, datetime(2026, 12, 7, 3, 16, tzinfo=UTC))
    assert not reconcile_due(project.config, datetime(2026, 12, 7, 3, 15, tzinfo=UTC))


def test_linkedin_form_id_listed_as_a_urn_is_reconciled(project: ReconcileProject) -> None:
    text = project.toml.read_text(encoding="utf-8")
    project.toml.write_text(
        text.replace(
            f'form_ids = ["{LINKEDIN_FORM_ID}"]',
            f'form_ids = ["urn:li:leadGenForm:{LINKEDIN_FORM_ID}"]',
        )
    )
    project.create_linkedin_lead("urn@acme.io")
    code, out = run_cli(project, "reconcile", "li-ads", "--json")
    assert (code, json.loads(out)["forms"][0]["backfilled"]) == (0, 1)


# -- serve's upkeep -----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.reconciled = 0
        self.pruned: list[int] = []

    def reconcile(self, config: Any, store: Any) -> Any:
        self.reconciled += 1
        return reconcile(config, store, dry_run=True)

    def prune(self, store: Any, days: int) -> None:
        self.pruned.append(days)


def test_upkeep_reconciles_in_each_scheduled_minute_once_and_prunes_daily(
    project: ReconcileProject,
) -> None:
    project.toml.write_text(
        project.toml.read_text(encoding="utf-8") + '\n[reconcile]\nschedule = "*/10 * * * *"\n'
    )
    config = load_config(project.toml, environ={})
    recorder = Recorder()
    upkeep = Upkeep(config, project.store, reconciler=recorder.reconcile, pruner=recorder.prune)
    start = datetime(2026, 12, 7, 3, 10, 5, tzinfo=UTC)
    ran = [
        upkeep.tick(start),
        upkeep.tick(start + timedelta(seconds=30)),
        upkeep.tick(start + timedelta(minutes=1)),
        upkeep.tick(start + timedelta(minutes=10)),
        upkeep.tick(start + timedelta(days=1)),
    ]
    assert ran == [["reconcile", "prune"], [], [], ["reconcile"], ["reconcile", "prune"]]
    assert (recorder.reconciled, recorder.pruned) == (3, [90, 90])


def test_serves_upkeep_child_backfills_a_lost_lead_on_its_schedule(
    project: ReconcileProject,
) -> None:
    project.toml.write_text(
        project.toml.read_text(encoding="utf-8") + '\n[reconcile]\nschedule = "* * * * *"\n'
    )
    leadgen_id = project.create_meta("upkept@acme.io")
    child = UpkeepProcess(project.toml)
    child.start()
    try:
        deadline = time.monotonic() + 60
        while not find_trace(project.config, project.store, f"meta:{leadgen_id}").found:
            assert time.monotonic() < deadline, "the upkeep child reconciled nothing in 60 s"
            time.sleep(0.2)
    finally:
        child.stop()
    trace = find_trace(project.config, project.store, f"meta:{leadgen_id}")
    (received,) = [event for event in trace.events if event.kind == "received"]
    assert received.summary.startswith("backfilled by reconcile")


def test_upkeep_without_a_schedule_only_prunes(project: ReconcileProject) -> None:
    recorder = Recorder()
    upkeep = Upkeep(
        project.config, project.store, reconciler=recorder.reconcile, pruner=recorder.prune
    )
    assert upkeep.tick(datetime(2026, 12, 7, 3, 0, tzinfo=UTC)) == ["prune"]
    assert recorder.reconciled == 0


def test_linkedin_responses_before_since_are_not_read(project: ReconcileProject) -> None:
    project.create_linkedin_lead("old.li@acme.io", submitted_at=int((time.time() - 864000) * 1000))
    project.create_linkedin_lead("new.li@acme.io")
    report = reconcile(project.config, project.store, forms=["li-ads"], dry_run=True)
    assert totals(report, "li-ads") == (1, 0, 1)
