"""Delivery of captured leads to the sandbox CRMs (the demo forms of ``sandbox --init``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import typer

from leadrelay.capture import worker
from leadrelay.capture.sources import FetchError, Fetchers
from leadrelay.capture.verify import hex_hmac_sha256
from leadrelay.capture.worker import (
    INBOX_FLOW,
    DeliveryLoop,
    attribution_of,
    deliver_inbox,
    drain_inbox,
    is_test_email,
)
from leadrelay.config import Config, MetaFormConfig, load_config
from leadrelay.connectors.base import UpsertInput
from leadrelay.sync.commands import sync_command
from leadrelay.sync.state import DeadLetterStatus, InboxStatus, LedgerState, StateStore
from tests.capture.conftest import meta_body
from tests.capture.sandbox_project import NO_RETRY, Project, admin
from tests.postgres import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


def deliver(project: Project) -> Any:
    return drain_inbox(project.config, project.store, connectors=project.pool)


def submit(project: Project, form: str, email: str) -> Any:
    with project.client() as client:
        if form == "demo-webform":
            response = project.post_webform(
                client,
                email=email,
                first_name="Ana",
                last_name="Silva",
                company="Acme",
                page_url="https://www.acme.io/pricing?utm_source=linkedin&utm_medium=paid_social"
                "&utm_campaign=q3-launch&gclid=ABC",
                referrer="https://www.linkedin.com/",
            )
        elif form == "demo-meta":
            response = project.post_meta(client, email=email, full_name="Ana Silva")
        else:
            response = project.post_google(
                client, f"lead-{email}", EMAIL=email, FULL_NAME="Ana Silva"
            )
    assert response.status_code == 202, response.text
    return response.json()


CASES = [
    ("demo-webform", "hubspot", "utm_source", "linkedin"),
    ("demo-meta", "hubspot", "utm_source", "facebook"),
    ("demo-google", "zoho", "UTM_Source", "google"),
]


@pytest.mark.parametrize(("form", "connection", "utm_field", "utm_value"), CASES)
def test_a_demo_form_lead_reaches_its_crm_with_its_utms(
    project: Project, form: str, connection: str, utm_field: str, utm_value: str
) -> None:
    submit(project, form, "ana@acme.io")
    stats = deliver(project)
    assert (stats.delivered, stats.dead_lettered, stats.pending) == (1, 0, 0)
    record = project.lookup(connection, "ana@acme.io")
    assert record is not None
    assert record[utm_field] == utm_value


def test_a_lead_with_only_an_alternative_email_field_is_accepted_and_delivered(
    project: Project,
) -> None:
    """The starter mapping reads ``email = ["email", "work_email"]``."""
    with project.client() as client:
        response = project.post_webform(client, work_email="ana@acme.io", first_name="Ana")
    assert response.status_code == 202, response.text
    stats = deliver(project)
    assert (stats.delivered, stats.dead_lettered) == (1, 0)
    assert project.lookup("hubspot", "ana@acme.io") is not None


@pytest.mark.parametrize(("form", "connection"), [(f, c) for f, c, _, _ in CASES])
def test_the_ledger_row_is_written_with_the_crm_record_id(
    project: Project, form: str, connection: str
) -> None:
    answer = submit(project, form, "ana@acme.io")
    deliver(project)
    key = answer["key"] if "key" in answer else answer["leads"][0]["key"]
    (row,) = project.store.ledger_rows(key)
    record = project.lookup(connection, "ana@acme.io")
    assert record is not None
    assert (row.state, row.destination) == (LedgerState.WRITTEN, connection)
    assert row.external_id == str(record.get("id") or record.get("hs_object_id"))


def test_a_replayed_meta_notification_is_stored_and_written_once(project: Project) -> None:
    leadgen_id = project.create_meta_lead(email="replay@acme.io", full_name="Re Play")
    with project.client() as client:
        first = project.notify_meta(client, leadgen_id)
        deliver(project)
        replay = project.notify_meta(client, leadgen_id)
    stats = deliver(project)
    assert (first.json()["status"], replay.json()["status"]) == ("accepted", "duplicate")
    assert stats.claimed == 0
    assert project.store.inbox_counts()[InboxStatus.DELIVERED] == 1


def test_the_same_person_from_two_forms_is_one_record(project: Project) -> None:
    submit(project, "demo-webform", "Same.Person@Acme.io")
    deliver(project)
    submit(project, "demo-meta", "same.person@acme.io")
    stats = deliver(project)
    assert stats.delivered == 1
    assert stats.created == 0
    record = project.lookup("hubspot", "same.person@acme.io")
    assert record is not None
    keys = {project.store.key_for("hubspot", str(record.get("hs_object_id") or record.get("id")))}
    assert None not in keys and len(keys) == 1


def test_two_submissions_of_one_person_in_one_batch_are_one_upsert(project: Project) -> None:
    with project.client() as client:
        project.post_webform(client, email="twice@acme.io", first_name="Tw", company="A")
        project.post_webform(client, email="TWICE@acme.io", first_name="Tw", company="B")
    stats = deliver(project)
    assert (stats.delivered, stats.created + stats.updated + stats.unchanged) == (2, 1)
    record = project.lookup("hubspot", "twice@acme.io")
    assert record is not None and record["company"] == "B"


def test_a_bad_optional_value_is_left_out_and_the_lead_delivered(project: Project) -> None:
    with project.client() as client:
        project.post_webform(client, email="bad@acme.io", employees="lots", last_name="Silva")
    stats = deliver(project)
    assert (stats.delivered, stats.dead_lettered, stats.field_problems) == (1, 0, 1)
    record = project.lookup("hubspot", "bad@acme.io")
    assert record is not None and record["lastname"] == "Silva"
    [problem] = project.store.field_problems()
    assert (problem.field, problem.value, problem.stage) == ("employees", "lots", "source")
    assert project.store.list_dead_letters(status=DeadLetterStatus.OPEN) == []


def test_a_record_the_crm_refuses_is_dead_lettered_with_its_message(project: Project) -> None:
    with project.client() as client:
        project.post_webform(client, phone="+14155550100", first_name="No", last_name="Mail")
    stats = deliver(project)
    assert stats.dead_lettered == 1
    (letter,) = project.store.list_dead_letters(status=DeadLetterStatus.OPEN)
    assert (letter.system, letter.connection) == ("hubspot", "hubspot")
    assert letter.reason


def test_sync_drains_the_inbox_as_a_pseudo_flow(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(project, "demo-webform", "via-sync@acme.io")
    app = typer.Typer()
    app.command("sync")(sync_command)
    app.command("noop")(lambda: None)
    capsys.readouterr()
    code = app(
        args=["sync", "--config", str(project.folder / "leadrelay.toml"), "--json"],
        standalone_mode=False,
    )
    assert code in (None, 0)
    flows = json.loads(capsys.readouterr().out)["flows"]
    inbox = [flow for flow in flows if flow["name"] == INBOX_FLOW]
    assert len(inbox) == 1
    assert set(inbox[0]) == {
        "name",
        "read",
        "created",
        "updated",
        "unchanged",
        "written_back",
        "dead_lettered",
        "field_problems",
        "api_calls",
    }
    assert (inbox[0]["read"], inbox[0]["created"]) == (1, 1)
    assert project.lookup("hubspot", "via-sync@acme.io") is not None


def test_the_delivery_loop_delivers_what_the_app_stores(project: Project) -> None:
    loop = DeliveryLoop(
        project.config, project.store, interval_s=0.05, connector_options={"retry": NO_RETRY}
    )
    loop.start()
    try:
        submit(project, "demo-webform", "looped@acme.io")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if project.store.inbox_counts()[InboxStatus.DELIVERED] == 1:
                break
            time.sleep(0.05)
    finally:
        loop.stop()
    assert project.lookup("hubspot", "looped@acme.io") is not None


def test_the_delivery_loop_calls_its_set_up_once_after_the_first_pass(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve's delivery child freezes its heap there: after the first pass built the connectors.
    loop = DeliveryLoop(project.config, project.store, interval_s=0.01, min_gap_s=0.0)
    seen: list[tuple[str, int]] = []

    def run_once(pool: object) -> None:
        seen.append(("pass", loop.passes))
        loop.passes += 1
        if loop.passes == 3:
            loop._stop.set()

    monkeypatch.setattr(loop, "run_once", run_once)
    loop._run(set_up=lambda: seen.append(("set-up", loop.passes)))
    assert seen == [("pass", 0), ("set-up", 1), ("pass", 1), ("pass", 2)]


# -- test leads: known only at delivery ------------------------------------------------------

LI_FORM = """
[forms.li-ads]
source = "linkedin_lead_gen"
destination = "hubspot"
mapping = "mappings/forms/li-ads.toml"
client_secret = "li-client-secret"
access_token = "${LINKEDIN_ACCESS_TOKEN}"
api_url = "${LINKEDIN_API_URL}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"
"""


def submit_linkedin(project: Project, email: str, *, test_lead: bool) -> str:
    """Add a LinkedIn form to the project, create a lead in the sandbox's LinkedIn and send its
    notification; the inbox key."""
    if "li-ads" not in project.config.forms:
        (project.folder / "mappings" / "forms" / "li-ads.toml").write_text("[fields]\n")
        toml = project.folder / "leadrelay.toml"
        toml.write_text(toml.read_text(encoding="utf-8") + LI_FORM, encoding="utf-8")
        project.config = load_config(toml, environ={})
    created = admin(
        project.sandbox,
        "leads/linkedin",
        {"form_id": "9100001", "answers": {"EMAIL": email}, "test_lead": test_lead},
    )
    body = json.dumps(
        {
            "type": "LEAD_ACTION",
            "leadAction": "CREATED",
            "leadGenFormResponse": created["id"],
            "leadGenForm": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:9100001,1)",
            "leadType": "SPONSORED",
            "occurredAt": 1700000000000,
        }
    ).encode()
    with project.client() as client:
        response = client.post(
            "/hooks/linkedin",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-LI-Signature": hex_hmac_sha256("li-client-secret", body),
            },
        )
    assert response.status_code == 202, response.text
    return inbox_key(response.json())


def inbox_key(answer: dict[str, Any]) -> str:
    return str(answer["key"] if "key" in answer else answer["leads"][0]["key"])


@pytest.mark.parametrize(
    ("email", "is_test"),
    [("ana@example.com", True), ("ana@eu.example.com", True), ("ana@acme.io", False)],
)
def test_a_meta_lead_under_the_test_domain_is_marked_a_test_at_delivery(
    project: Project, email: str, is_test: bool
) -> None:
    key = inbox_key(submit(project, "demo-meta", email))
    stats = deliver(project)
    (row,) = project.store.ledger_rows(key)
    assert stats.delivered == 1
    assert (row.state, row.is_test) == (LedgerState.WRITTEN, is_test)
    assert len(project.store.ledger_counts()) == (0 if is_test else 1)


@pytest.mark.parametrize("test_lead", [True, False])
def test_a_linkedin_test_lead_is_marked_a_test_at_delivery(
    project: Project, test_lead: bool
) -> None:
    key = submit_linkedin(project, "li.lead@acme.io", test_lead=test_lead)
    stats = deliver(project)
    (row,) = project.store.ledger_rows(key)
    assert stats.delivered == 1
    assert (row.state, row.is_test) == (LedgerState.WRITTEN, test_lead)


@pytest.mark.parametrize(
    ("email", "domain", "expected"),
    [
        ("a@example.com", "example.com", True),
        ("a@EU.Example.com", "example.com", True),
        ("a@notexample.com", "example.com", False),
        ("a@example.com.evil.io", "example.com", False),
        (None, "example.com", False),
    ],
)
def test_is_test_email_matches_the_domain_and_its_subdomains(
    email: str | None, domain: str, expected: bool
) -> None:
    assert is_test_email(email, domain) is expected


# -- the qualify step: owner and score for leads new to the CRM -----------------------------

HUBSPOT_OWNERS = {"61000001", "61000002", "61000003", "61000004"}


def test_a_web_form_lead_new_to_hubspot_is_routed_and_scored(project: Project) -> None:
    submit(project, "demo-webform", "routed@acme.io")
    deliver(project)
    record = project.lookup("hubspot", "routed@acme.io")
    assert record is not None
    assert record["hubspot_owner_id"] in HUBSPOT_OWNERS
    assert record["leadrelay_score"] not in (None, "")


def test_a_person_hubspot_already_holds_keeps_the_owner_sales_gave(project: Project) -> None:
    # Dana is last in the round robin's order: routing would give a new lead someone else.
    (created,) = project.pool.get("hubspot").upsert(
        [
            UpsertInput(
                ref="by-sales",
                fields={
                    "email": "known@acme.io",
                    "firstname": "Kno",
                    "hubspot_owner_id": "61000004",
                },
            )
        ]
    )
    assert created.ok
    submit(project, "demo-webform", "known@acme.io")
    submit(project, "demo-webform", "fresh@acme.io")
    stats = deliver(project)
    known = project.lookup("hubspot", "known@acme.io")
    fresh = project.lookup("hubspot", "fresh@acme.io")
    assert known is not None and fresh is not None
    assert (stats.created, stats.updated) == (1, 1)
    assert known["hubspot_owner_id"] == "61000004"
    assert known["company"] == "Acme"
    assert fresh["hubspot_owner_id"] in HUBSPOT_OWNERS - {"61000004"}


# -- without the sandbox: fetch failures ---------------------------------------------------


def _meta_fetcher(error: FetchError) -> Fetchers:
    def fail(form: MetaFormConfig, leadgen_id: str) -> dict[str, Any]:
        raise error

    return Fetchers(meta=fail)


def _store_meta(config: Config, store: StateStore) -> None:
    from fastapi.testclient import TestClient

    from leadrelay.capture.app import create_app
    from tests.capture.conftest import META_APP_SECRET, hex_sig

    body = meta_body()
    with TestClient(create_app(config, store)) as client:
        response = client.post(
            "/hooks/meta",
            content=body,
            headers={"X-Hub-Signature-256": "sha256=" + hex_sig(META_APP_SECRET, body)},
        )
    assert response.status_code == 202


def test_a_meta_answer_that_cannot_be_fetched_yet_stays_pending(
    config: Config, store: StateStore
) -> None:
    _store_meta(config, store)
    error = FetchError("meta_lead_ads", "987", "lead: HTTP 503", retryable=True, status=503)
    stats = deliver_inbox(config, store, fetchers=_meta_fetcher(error))
    assert (stats.pending, stats.dead_lettered) == (1, 0)
    (item,) = store.claim_inbox(limit=5)
    assert item.last_error == str(error)
    assert item.attempts == 1


def test_a_meta_lead_that_is_gone_is_dead_lettered(config: Config, store: StateStore) -> None:
    _store_meta(config, store)
    error = FetchError("meta_lead_ads", "987", "lead: HTTP 404", retryable=False, status=404)
    stats = deliver_inbox(config, store, fetchers=_meta_fetcher(error))
    assert stats.dead_lettered == 1
    (letter,) = store.list_dead_letters()
    assert (letter.system, letter.connection) == ("meta_lead_ads", "meta-ads")
    assert store.inbox_counts()[InboxStatus.FAILED] == 1


def test_a_pass_that_raises_releases_its_claims_at_once(config: Config, store: StateStore) -> None:
    _store_meta(config, store)

    def crash(form: MetaFormConfig, leadgen_id: str) -> dict[str, Any]:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    with pytest.raises(UnicodeEncodeError):
        deliver_inbox(config, store, fetchers=Fetchers(meta=crash))
    # Claimable again now, with a claim time-to-live far longer than the test.
    (item,) = store.claim_inbox(limit=5, claim_ttl_s=3600)
    assert item.status == InboxStatus.PENDING
    assert item.attempts == 1
    assert item.last_error is not None and "UnicodeEncodeError" in item.last_error


@pytest.mark.parametrize("value", ["ana\x00@acme.io", "Ana \ud800"])
def test_a_fetched_answer_that_cannot_be_sent_is_dead_lettered_naming_the_field(
    config: Config, store: StateStore, value: str
) -> None:
    _store_meta(config, store)

    def answer(form: MetaFormConfig, leadgen_id: str) -> dict[str, Any]:
        return {"field_data": [{"name": "email", "values": [value]}]}

    stats = deliver_inbox(config, store, fetchers=Fetchers(meta=answer))
    assert (stats.dead_lettered, stats.delivered) == (1, 0)
    (letter,) = store.list_dead_letters()
    assert letter.reason.startswith("meta_lead_ads lead meta:987: email contains")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"page_url": "https://a.io/?utm_source=google&utm_medium=cpc&gclid=X"},
            ("google", "cpc", "paid_search", {"gclid": "X"}),
        ),
        (
            {"page_url": "https://a.io/?utm_source=google", "utm_source": "bing"},
            ("bing", None, "organic_search", {}),
        ),
        ({"fbclid": "F"}, ("facebook", "paid_social", "paid_social", {"fbclid": "F"})),
        ({"referrer": "https://www.google.com/"}, ("facebook", "paid_social", "paid_social", {})),
    ],
)
def test_attribution_reads_the_url_then_fields_then_the_form_defaults(
    config: Config, fields: dict[str, str], expected: tuple[Any, ...]
) -> None:
    form = config.forms["meta-ads"].model_copy(
        update={
            "default_utm": config.forms["meta-ads"].default_utm.model_copy(
                update={"utm_source": "facebook", "utm_medium": "paid_social"}
            )
        }
    )
    found = attribution_of(fields, form)
    assert (found.utm_source, found.utm_medium, found.channel.value, found.click_ids) == expected


def test_a_batch_is_recorded_in_parts_with_each_person_whole(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "COMMIT_LEADS", 2)
    recorded: list[list[str]] = []
    record = worker._Delivery._record

    def watched(self: Any, part: Any, claim_token: str | None) -> None:
        recorded.append(sorted(w.item.form + ":" + str(w.lead.email) for w in part.delivered))
        record(self, part, claim_token)

    monkeypatch.setattr(worker._Delivery, "_record", watched)
    with project.client() as client:
        for email in ["a@acme.io", "b@acme.io", "A@acme.io", "c@acme.io", "d@acme.io"]:
            project.post_webform(client, email=email, first_name="Pa", company="A")
    stats = deliver(project)
    assert stats.delivered == 5
    leads = [len({e.lower() for e in part}) for part in recorded]
    if project.store.dialect == "sqlite":
        # Two leads a part; a@ and A@ are one person, so one lead in the first part.
        assert leads == [2, 2]
    else:
        assert leads == [4]  # PostgreSQL locks rows: one transaction for the batch
    assert sum(len(part) for part in recorded) == 5
    assert project.store.inbox_counts()[InboxStatus.DELIVERED] == 5


def test_a_pass_that_dies_recording_keeps_what_it_recorded_and_delivers_the_rest_once(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "COMMIT_LEADS", 2)
    emails = [f"part{n}@acme.io" for n in range(5)]
    with project.client() as client:
        for email in emails:
            project.post_webform(client, email=email, first_name="Pa", last_name="Rt", company="A")
    record = worker._Delivery._record
    parts = 0
    # On SQLite the second of three parts fails; on PostgreSQL the batch is one transaction.
    sqlite = project.store.dialect == "sqlite"
    failing, kept = (2, 2) if sqlite else (1, 0)

    def dies(self: Any, part: Any, claim_token: str | None) -> None:
        nonlocal parts
        parts += 1
        if parts == failing:
            raise OSError("the disk went away")
        record(self, part, claim_token)

    monkeypatch.setattr(worker._Delivery, "_record", dies)
    with pytest.raises(OSError):
        deliver(project)
    counts = project.store.inbox_counts()
    assert (counts[InboxStatus.DELIVERED], counts[InboxStatus.PENDING]) == (kept, 5 - kept)
    monkeypatch.setattr(worker._Delivery, "_record", record)
    stats = deliver(project)
    # The ones not recorded were written to HubSpot before the pass died: found there by
    # their e-mail now, so updated or unchanged, never created again.
    assert (stats.delivered, stats.created) == (5 - kept, 0)
    assert project.store.inbox_counts()[InboxStatus.DELIVERED] == 5
    for email in emails:
        record_ = project.lookup("hubspot", email)
        assert record_ is not None
        ext = str(record_.get("hs_object_id") or record_.get("id"))
        assert project.store.key_for("hubspot", ext) is not None


def test_delivery_passes_load_a_mapping_again_only_when_its_file_changed(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []
    load_mapping, load_form_mapping = worker.load_mapping, worker.load_form_mapping

    def counted(kind: str, **options: Any) -> Any:
        loaded.append(kind)
        return load_mapping(kind, **options)

    def counted_form(path: Any, **options: Any) -> Any:
        loaded.append("form")
        return load_form_mapping(path, **options)

    monkeypatch.setattr(worker, "load_mapping", counted)
    monkeypatch.setattr(worker, "load_form_mapping", counted_form)
    monkeypatch.setattr(worker, "_LOADED", {})
    submit(project, "demo-webform", "one@acme.io")
    deliver(project)
    submit(project, "demo-webform", "two@acme.io")
    deliver(project)
    assert loaded == ["form", "hubspot"]
    # A project mapping written since: HubSpot's mapping is read again, the form's is not.
    (project.folder / "mappings" / "hubspot.toml").write_text("# kept as shipped\n")
    submit(project, "demo-webform", "three@acme.io")
    stats = deliver(project)
    assert loaded == ["form", "hubspot", "hubspot"]
    assert stats.delivered == 1
