"""One validation run of a form, end to end (DESIGN §8).

1. Pre-flight: the form's mapping loads; the destination's mapping against its live
   ``describe()`` (fields exist, picklist values allowed, required fields written). A problem
   is a failing check naming it, and nothing is submitted.
2. A synthetic test lead (:mod:`leadrelay.validation.synthetic`).
3. Submitted through the form's real path, to a running ``leadrelay serve`` (``[capture]
   public_url``, else ``host:port``, when its ``/healthz`` answers) or else to the capture app
   run in-process on the same state store, whose delivery worker this run then drives itself:

   * ``webform``: ``POST /forms/{name}`` with the form's secret, HMAC or allowed origin;
   * ``meta_lead_ads`` / ``linkedin_lead_gen``: a test lead created in the platform (the
     sandbox's admin API, as the platforms' lead-testing tools do), then the notification,
     signed with the app / client secret. A real Graph or LinkedIn API cannot be given a lead
     by an API call: the run stops with exit 2 and says how to send one with the platform's
     own testing tool;
   * ``google_ads_lead_form``: ``POST /hooks/google-ads`` with ``is_test: true`` and the key;
   * ``csv``: a one-row CSV file, read with the form's delimiter and encoding and stored in
     the inbox as ``leadrelay import`` stores rows;
   * ``hubspot_form``: HubSpot's forms submission API (``/submissions/v3/integration/secure/
     submit/{portalId}/{formGuid}``); HubSpot then notifies ``/hooks/hubspot``.
4. The destination is polled by e-mail with backoff (a batch read, not a search: HubSpot's
   search index lags writes by seconds) until the record appears or the timeout passes; while
   waiting, the last delivery error (inbox, dead letter, ledger) is kept to explain a miss.
5. The record is read back by id and checked (:mod:`leadrelay.validation.checks`).
6. Unless ``keep``, the records this run created, and only those (found by the run's unique
   e-mail), are deleted. Test leads stay in the ledger marked ``is_test``; reports skip them.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from leadrelay.capture.verify import hex_hmac_sha256
from leadrelay.config import (
    Config,
    CsvFormConfig,
    FormConfig,
    GoogleAdsFormConfig,
    HubSpotConnection,
    HubSpotFormConfig,
    LinkedInFormConfig,
    MetaFormConfig,
    WebformConfig,
)
from leadrelay.connectors.base import Connector, RawRecord, Schema, normalize_email
from leadrelay.connectors.errors import ConnectorError, redact
from leadrelay.mappings.engine import Mapping, MappingError, load_form_mapping, load_mapping
from leadrelay.sync.engine import ConnectorPool, record_id
from leadrelay.sync.state import StateError, StateStore, open_state
from leadrelay.validation.checks import (
    Check,
    field_checks,
    ledger_check,
    one_record_check,
    owner_check,
    preflight_checks,
    stage_check,
)
from leadrelay.validation.synthetic import SyntheticError, SyntheticLead, build_synthetic

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Delivery",
    "ValidationConfigError",
    "ValidationResult",
    "validate_all",
    "validate_form",
]

#: Seconds to wait for the record to appear (``--timeout``).
DEFAULT_TIMEOUT_S = 60.0
#: Stages a freshly delivered lead may be in: new, or promoted to MQL by scoring.
INITIAL_STAGES = ("lead", "mql")
_HTTP_TIMEOUT_S = 30.0
#: The Google Ads form id / Meta form id sent when the form lists none.
_TEST_FORM_ID = "900000000000001"


class ValidationConfigError(Exception):
    """The run cannot start: unknown form, missing setting (exit 2)."""


class Delivery(Protocol):
    """Delivers captured leads from the inbox (the capture worker's ``deliver_inbox``)."""

    def __call__(self, config: Config, store: StateStore, *, connectors: ConnectorPool) -> Any: ...


@dataclass
class ValidationResult:
    """The outcome of one form's run (the ``validate --json`` object)."""

    form: str
    checks: list[Check] = field(default_factory=list)
    record_id: str | None = None
    latency_s: float | None = None
    email: str | None = None
    deleted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there were checks and every one passed."""
        return bool(self.checks) and all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        """``{"form", "ok", "record_id", "latency_s", "checks": [...]}`` (DESIGN §11)."""
        return {
            "form": self.form,
            "ok": self.ok,
            "record_id": self.record_id,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 3),
            "checks": [check.to_json() for check in self.checks],
        }


# --------------------------------------------------------------------------------------------
# submission transports


class _Capture(Protocol):
    def post(self, path: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response: ...


class _HttpCapture:
    """A running ``leadrelay serve``."""

    def __init__(self, client: httpx.Client, base: str) -> None:
        self.client = client
        self.base = base.rstrip("/")

    def post(self, path: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post(self.base + path, content=content, headers=headers)


def _serve_urls(config: Config) -> list[str]:
    urls = []
    if config.capture.public_url:
        urls.append(str(config.capture.public_url))
    host = config.capture.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is reached on loopback
        host = "127.0.0.1"
    with suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    urls.append(f"http://{host}:{config.capture.port}")
    return urls


def find_running_capture(config: Config) -> str | None:
    """The URL of a running capture service of this project (its ``/healthz`` answers ok)."""
    for url in _serve_urls(config):
        try:
            with httpx.Client(timeout=1.0) as client:
                response = client.get(url.rstrip("/") + "/healthz")
        except httpx.HTTPError:
            continue
        with suppress(ValueError):
            if response.status_code == 200 and response.json().get("status") == "ok":
                return url
    return None


@contextmanager
def in_process_capture(config: Config, store: StateStore) -> Iterator[str]:
    """The capture app served by uvicorn on a loopback port for the length of the block."""
    import socket
    import threading

    import uvicorn

    from leadrelay.capture.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, store), log_level="warning", access_log=False, lifespan="off"
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="leadrelay-validate-capture"
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise _SubmitError("the in-process capture service did not start")
            thread.join(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def _capture(config: Config, store: StateStore, url: str | None) -> Iterator[_Capture]:
    with (
        in_process_capture(config, store) if url is None else nullcontext(url) as base,
        httpx.Client(timeout=_HTTP_TIMEOUT_S) as client,
    ):
        yield _HttpCapture(client, base)


# --------------------------------------------------------------------------------------------
# submitting per source


@dataclass
class _Submitted:
    key: str | None
    at: float


def _lead_key(response: httpx.Response, what: str) -> str | None:
    if response.status_code >= 300:
        raise _SubmitError(f"{what} answered {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        if isinstance(body.get("key"), str):
            return str(body["key"])
        leads = body.get("leads")
        if isinstance(leads, list) and leads and isinstance(leads[0], dict):
            key = leads[0].get("key")
            return str(key) if isinstance(key, str) else None
    return None


class _SubmitError(Exception):
    """The submission was refused; the message says by whom and why."""


def _verify(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle is not None else True


def _sandbox_root(url: str) -> str | None:
    """The sandbox root of an API URL on loopback (its admin API lives there), else None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return f"{parts.scheme}://{parts.netloc}" if loopback else None


def _admin_post(root: str, path: str, body: dict[str, Any], ca_bundle: Path | None) -> Any:
    with httpx.Client(verify=_verify(ca_bundle), timeout=_HTTP_TIMEOUT_S) as client:
        response = client.post(f"{root}/__sandbox__/{path}", json=body)
    if response.status_code != 200:
        raise _SubmitError(
            f"the sandbox refused the test lead ({response.status_code}): {response.text[:300]}"
        )
    return response.json()


def _submit_webform(
    name: str, form: WebformConfig, syn: SyntheticLead, capture: _Capture
) -> _Submitted:
    payload = {**syn.fields, **syn.utm, "page_url": syn.page_url}
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"validate-{syn.run_id}"}
    if form.secret is not None:
        headers["X-Leadrelay-Secret"] = form.secret.get_secret_value()
    elif form.hmac_secret is not None:
        digest = hex_hmac_sha256(form.hmac_secret.get_secret_value(), body)
        headers["X-Leadrelay-Signature"] = f"sha256={digest}"
    elif form.allowed_origins:
        headers["Origin"] = str(form.allowed_origins[0]).rstrip("/")
    at = time.monotonic()
    response = capture.post(f"/forms/{name}", content=body, headers=headers)
    return _Submitted(_lead_key(response, f"POST /forms/{name}"), at)


def _submit_meta(form: MetaFormConfig, syn: SyntheticLead, capture: _Capture) -> _Submitted:
    root = _sandbox_root(str(form.graph_url))
    if root is None:
        raise ValidationConfigError(
            "a Meta lead cannot be created through the Graph API: send a test lead with Meta's "
            "Lead Ads Testing Tool for this page and form, then check the lead in the CRM "
            "(`leadrelay validate` creates Meta test leads only on the sandbox)"
        )
    form_id = form.form_ids[0] if form.form_ids else _TEST_FORM_ID
    lead: dict[str, Any] = {
        "form_id": form_id,
        "field_data": [{"name": k, "values": [str(v)]} for k, v in syn.fields.items()],
    }
    if form.page_id:
        lead["page_id"] = form.page_id
    created = _admin_post(root, "leads/meta", lead, form.ca_bundle)
    now = int(time.time())
    change = {"leadgen_id": created["id"], "form_id": form_id, "created_time": now}
    if form.page_id:
        change["page_id"] = form.page_id
    note = {
        "object": "page",
        "entry": [
            {
                "id": form.page_id or "0",
                "time": now,
                "changes": [{"field": "leadgen", "value": change}],
            }
        ],
    }
    body = json.dumps(note).encode()
    signature = hex_hmac_sha256(form.app_secret.get_secret_value(), body)
    at = time.monotonic()
    response = capture.post(
        "/hooks/meta",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={signature}"},
    )
    return _Submitted(_lead_key(response, "POST /hooks/meta"), at)


def _submit_linkedin(form: LinkedInFormConfig, syn: SyntheticLead, capture: _Capture) -> _Submitted:
    root = _sandbox_root(str(form.api_url))
    if root is None:
        raise ValidationConfigError(
            "a LinkedIn lead cannot be created through the API: submit a test lead from the "
            "form's preview in Campaign Manager, then check the lead in the CRM "
            "(`leadrelay validate` creates LinkedIn test leads only on the sandbox)"
        )
    form_number = form.form_ids[0].rsplit(":", 1)[-1] if form.form_ids else "9000001"
    answers = {k: str(v) for k, v in syn.fields.items()}
    created = _admin_post(
        root,
        "leads/linkedin",
        {"form_id": form_number, "answers": answers, "test_lead": True},
        form.ca_bundle,
    )
    note = {
        "type": "LEAD_ACTION",
        "leadAction": "CREATED",
        "leadGenFormResponse": created["id"],
        "leadGenForm": f"urn:li:versionedLeadGenForm:(urn:li:leadGenForm:{form_number},1)",
        "leadType": "SPONSORED",
        "occurredAt": int(time.time() * 1000),
    }
    body = json.dumps(note).encode()
    signature = hex_hmac_sha256(form.client_secret.get_secret_value(), body)
    at = time.monotonic()
    response = capture.post(
        "/hooks/linkedin",
        content=body,
        headers={"Content-Type": "application/json", "X-LI-Signature": signature},
    )
    return _Submitted(_lead_key(response, "POST /hooks/linkedin"), at)


def _submit_google(form: GoogleAdsFormConfig, syn: SyntheticLead, capture: _Capture) -> _Submitted:
    body = {
        "lead_id": f"leadrelay-test-{syn.run_id}",
        "api_version": "1.0",
        "form_id": form.form_ids[0] if form.form_ids else _TEST_FORM_ID,
        "campaign_id": "900000000000002",
        "google_key": form.google_key.get_secret_value(),
        "is_test": True,
        "gcl_id": syn.lead.click_ids.get("gclid", f"leadrelay-test-{syn.run_id}"),
        "user_column_data": [
            {"column_id": k, "string_value": str(v)} for k, v in syn.fields.items()
        ],
    }
    at = time.monotonic()
    response = capture.post(
        "/hooks/google-ads",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return _Submitted(_lead_key(response, "POST /hooks/google-ads"), at)


def _submit_csv(
    name: str, form: CsvFormConfig, syn: SyntheticLead, store: StateStore
) -> _Submitted:
    from leadrelay.capture.worker import CSV_SOURCE
    from leadrelay.model import new_lead_key

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(syn.fields), delimiter=form.delimiter)
    writer.writeheader()
    writer.writerow({k: str(v) for k, v in syn.fields.items()})
    with tempfile.TemporaryDirectory(prefix="leadrelay-validate-") as folder:
        path = Path(folder) / f"{name}-{syn.run_id}.csv"
        path.write_text(text.getvalue(), encoding=form.encoding)
        with path.open(encoding=form.encoding, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter=form.delimiter))
    at = time.monotonic()
    key = None
    with store.transaction() as conn:
        for number, row in enumerate(rows, start=1):
            put = store.put_inbox(
                key=new_lead_key(),
                form=name,
                source=CSV_SOURCE,
                payload={"fields": row, "file": path.name, "row": number},
                dedupe_key=f"csv:{name}:{path.name}:{number}",
                is_test=True,
                conn=conn,
            )
            store.mark_received(
                put.key, form.destination, form=name, source=CSV_SOURCE, is_test=True, conn=conn
            )
            key = put.key
    return _Submitted(key, at)


#: HubSpot's forms submission API host (crm-api-facts: api.hsforms.com).
HSFORMS_URL = "https://api.hsforms.com"


def _submit_hubspot_form(form: HubSpotFormConfig, syn: SyntheticLead, config: Config) -> _Submitted:
    connection = config.connections.get(form.connection or "")
    if not isinstance(connection, HubSpotConnection) or connection.access_token is None:
        raise ValidationConfigError(
            "a hubspot_form is validated through HubSpot's forms API: give the form a "
            "`connection` to a hubspot connection with an access token"
        )
    if connection.portal_id is None or not form.form_ids:
        raise ValidationConfigError(
            "the forms submission API needs the portal id (connection portal_id) and the "
            "form's GUID (form_ids)"
        )
    base = str(connection.base_url).rstrip("/")
    root = HSFORMS_URL if urlsplit(base).hostname == "api.hubapi.com" else base
    url = (
        f"{root}/submissions/v3/integration/secure/submit/{connection.portal_id}/{form.form_ids[0]}"
    )
    body = {
        "fields": [
            {"objectTypeId": "0-1", "name": k, "value": str(v)} for k, v in syn.fields.items()
        ],
        "submittedAt": int(time.time() * 1000),
        "context": {"pageUri": "https://www.example.com/leadrelay-validation"},
    }
    token = connection.access_token.get_secret_value()
    at = time.monotonic()
    with httpx.Client(verify=_verify(connection.ca_bundle), timeout=_HTTP_TIMEOUT_S) as client:
        response = client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    if response.status_code >= 300:
        raise _SubmitError(
            f"HubSpot's forms API answered {response.status_code}: {response.text[:300]}"
        )
    return _Submitted(None, at)


# --------------------------------------------------------------------------------------------
# the run


def _records_for_email(connector: Connector[Any], email: str) -> list[str] | None:
    """Ids of every destination record holding ``email``, where the system can list them.

    HubSpot keeps e-mail unique on contacts (upsert by ``idProperty=email``), so a batch read
    is the count; Salesforce and Zoho may hold several Leads with one e-mail.
    """
    if connector.kind == "salesforce":
        # The run's own e-mail (run id and the form's test domain): no quote to escape.
        soql = f"SELECT Id FROM Lead WHERE Email = '{email.replace(chr(39), '')}'"  # noqa: S608
        rows = connector.query(soql, describe="leads by validation email")  # type: ignore[attr-defined]
        return [str(row["Id"]) for row in rows]
    if connector.kind == "zoho":
        rows = connector.find_by_email([email])  # type: ignore[attr-defined]
        return [str(row["id"]) for row in rows if row.get("id")]
    found = connector.lookup(emails=[email])
    ids = [record_id(connector, raw) for raw in found.values()]
    return [i for i in ids if i]


def _explain_miss(store: StateStore, key: str | None, destination: str) -> str:
    """Why a submitted lead did not arrive, from the inbox, dead letters and the ledger."""
    if key is None:
        return "no lead key from the capture service"
    reasons = []
    item = store.get_inbox(key)
    if item is None:
        reasons.append("not in the inbox")
    else:
        reasons.append(f"inbox {item.status.value} after {item.attempts} attempt(s)")
        if item.last_error:
            reasons.append(f"last error: {item.last_error}")
    for letter in store.list_dead_letters(status=None):
        if letter.lead_key == key:
            where = f" ({letter.field})" if letter.field else ""
            reasons.append(f"dead-lettered by {letter.system}{where}: {letter.reason}")
    for row in store.ledger_rows(key):
        if row.destination == destination and row.last_error and row.last_error not in reasons:
            reasons.append(f"ledger: {row.last_error}")
    return redact("; ".join(reasons))


def _owner_expected(config: Config, form: FormConfig) -> bool:
    return form.owner is not None or "routing" in config.model_fields_set


def validate_form(
    config: Config,
    name: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    keep: bool = False,
    store: StateStore | None = None,
    capture_url: str | bool | None = True,
    deliver: Delivery | None = None,
    connector_options: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ValidationResult:
    """Run the six steps of DESIGN §8 for form ``name``.

    ``capture_url``: a running capture service's URL, ``True`` to look for one (``[capture]``),
    ``False`` / None to run the capture app in-process. ``deliver`` delivers the inbox when no
    service runs (default: the capture worker's ``deliver_inbox``). ``store`` defaults to the
    project's state store. Raises :class:`ValidationConfigError` (exit 2).
    """
    try:
        form = config.form(name)
    except KeyError as exc:
        raise ValidationConfigError(str(exc.args[0])) from None
    own_store = store is None
    active = store if store is not None else _open_store(config)
    try:
        with ConnectorPool(config, **(connector_options or {})) as pool:
            return _Run(config, name, form, active, pool, timeout, keep, sleep).run(
                capture_url, deliver
            )
    finally:
        if own_store:
            active.close()


def _open_store(config: Config) -> StateStore:
    try:
        return open_state(config)
    except StateError as exc:
        raise ValidationConfigError(f"state store {config.state.display_url}: {exc}") from exc


def validate_all(config: Config, **options: Any) -> list[ValidationResult]:
    """:func:`validate_form` for every configured form, in name order."""
    if not config.forms:
        raise ValidationConfigError(f"{config.path}: no [forms] defined")
    return [validate_form(config, name, **options) for name in sorted(config.forms)]


class _Run:
    """The state of one form's run."""

    def __init__(
        self,
        config: Config,
        name: str,
        form: FormConfig,
        store: StateStore,
        pool: ConnectorPool,
        timeout: float,
        keep: bool,
        sleep: Callable[[float], None],
    ) -> None:
        self.config = config
        self.name = name
        self.form = form
        self.store = store
        self.pool = pool
        self.timeout = timeout
        self.keep = keep
        self.sleep = sleep
        self.result = ValidationResult(name)
        self.destination = form.destination

    def add(self, check: Check) -> None:
        self.result.checks.append(check)

    def preflight(self) -> tuple[Mapping, Mapping, Schema, Connector[Any]] | None:
        kind = self.config.connection(self.destination).kind
        try:
            form_mapping = load_form_mapping(self.form.mapping, source=self.form.source)
        except MappingError as exc:
            self.add(Check("pre-flight: form mapping", False, "the form's mapping loads", str(exc)))
            return None
        try:
            mapping = load_mapping(kind, project_dir=self.config.folder)
        except MappingError as exc:
            self.add(Check(f"pre-flight: {kind} mapping", False, "the mapping loads", str(exc)))
            return None
        connector = self.pool.get(self.destination)
        try:
            schema = connector.describe()
        except ConnectorError as exc:
            self.add(
                Check(
                    f"pre-flight: {self.destination} describe()",
                    False,
                    "the live schema",
                    redact(str(exc)),
                )
            )
            return None
        checks = preflight_checks(
            mapping.validate_against(schema),
            destination=self.destination,
            object_name=schema.object_name,
        )
        self.result.checks.extend(checks)
        if not all(check.ok for check in checks):
            return None
        return form_mapping, mapping, schema, connector

    def run(self, capture_url: str | bool | None, deliver: Delivery | None) -> ValidationResult:
        ready = self.preflight()
        if ready is None:
            return self.result
        form_mapping, mapping, schema, connector = ready
        click_ids = {}
        if isinstance(self.form, GoogleAdsFormConfig):
            click_ids["gclid"] = "leadrelay-test-gclid"
        try:
            syn = build_synthetic(
                self.name, self.form, form_mapping, mapping, schema, click_ids=click_ids
            )
        except SyntheticError as exc:
            self.add(Check("synthetic lead", False, "a valid test lead", str(exc)))
            return self.result
        self.result.email = syn.email
        url = find_running_capture(self.config) if capture_url is True else capture_url or None
        try:
            submitted = self.submit(syn, url)
        except _SubmitError as exc:
            self.add(Check("submitted", False, "accepted by the form's path", redact(str(exc))))
            return self.result
        except httpx.HTTPError as exc:
            self.add(Check("submitted", False, "accepted by the form's path", redact(str(exc))))
            return self.result
        self.add(Check("submitted", True, "accepted", submitted.key or "accepted"))
        if url is None and deliver is None:
            from leadrelay.capture.worker import deliver_inbox

            deliver = deliver_inbox
        found = self.poll(syn, submitted, connector, deliver if url is None else None)
        if found is None:
            return self.result
        self.check_record(syn, submitted, mapping, connector, found)
        if not self.keep:
            self.cleanup(syn, connector)
        return self.result

    def submit(self, syn: SyntheticLead, url: str | None) -> _Submitted:
        form = self.form
        if isinstance(form, CsvFormConfig):
            return _submit_csv(self.name, form, syn, self.store)
        if isinstance(form, HubSpotFormConfig):
            return _submit_hubspot_form(form, syn, self.config)
        with _capture(self.config, self.store, url) as capture:
            if isinstance(form, WebformConfig):
                return _submit_webform(self.name, form, syn, capture)
            if isinstance(form, MetaFormConfig):
                return _submit_meta(form, syn, capture)
            if isinstance(form, LinkedInFormConfig):
                return _submit_linkedin(form, syn, capture)
            return _submit_google(form, syn, capture)

    def poll(
        self,
        syn: SyntheticLead,
        submitted: _Submitted,
        connector: Connector[Any],
        deliver: Delivery | None,
    ) -> RawRecord | None:
        deadline = submitted.at + self.timeout
        delay = 0.2
        last_error = ""
        while True:
            if deliver is not None:
                try:
                    deliver(self.config, self.store, connectors=self.pool)
                except (ConnectorError, StateError) as exc:
                    last_error = redact(str(exc))
            try:
                found = connector.lookup(emails=[syn.email]).get(normalize_email(syn.email))
            except ConnectorError as exc:
                found, last_error = None, redact(str(exc))
            if found is not None:
                self.result.latency_s = time.monotonic() - submitted.at
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sleep(min(delay, remaining))
            delay = min(delay * 1.6, 3.0)
        why = _explain_miss(self.store, submitted.key, self.destination)
        if last_error and last_error not in why:
            why = f"{why}; last lookup error: {last_error}" if why else last_error
        self.add(
            Check(
                "arrived",
                False,
                f"a record in {self.destination} within {self.timeout:g}s",
                f"not delivered within {self.timeout:g}s: {why or 'no error recorded'}",
            )
        )
        return None

    def check_record(
        self,
        syn: SyntheticLead,
        submitted: _Submitted,
        mapping: Mapping,
        connector: Connector[Any],
        found: RawRecord,
    ) -> None:
        rid = record_id(connector, found) or ""
        self.result.record_id = rid
        latency = self.result.latency_s or 0.0
        self.add(Check("arrived", True, f"within {self.timeout:g}s", f"{latency:.2f}s"))
        record = connector.lookup(ids=[rid]).get(rid, found) if rid else found
        self.result.checks.extend(field_checks(syn.checked, syn.expected, record))
        draft = mapping.to_lead(record)
        stage = draft.values.get("stage")
        if "stage" in mapping.fields:
            stage_text = getattr(stage, "value", stage)
            self.add(stage_check(INITIAL_STAGES, stage_text, mapping.fields["stage"].system_field))
        # Routing assigns the owner in leadrelay's pipeline; a submission that never passed
        # through it (hubspot_form: HubSpot made the record, no capture key) cannot have one.
        if "owner" in mapping.fields and submitted.key and _owner_expected(self.config, self.form):
            owner_field = mapping.fields["owner"].system_field
            self.add(owner_check(owner_field, record.get(owner_field)))
        ids = _records_for_email(connector, syn.email)
        if ids is not None:
            self.add(one_record_check(syn.email, ids))
        if submitted.key is not None:
            rows = self.store.ledger_rows(submitted.key)
            self.add(ledger_check(rows, self.destination, rid))
        if self.result.ok and submitted.key is not None:
            with suppress(StateError):
                self.store.mark_verified(submitted.key, self.destination)

    def cleanup(self, syn: SyntheticLead, connector: Connector[Any]) -> None:
        ids = _records_for_email(connector, syn.email) or []
        if not ids:
            return
        try:
            results = connector.delete(ids)
        except ConnectorError as exc:
            self.add(Check("clean-up", False, f"deleted {len(ids)}", redact(str(exc))))
            return
        self.result.deleted = [r.ref for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        if failed:
            reasons = "; ".join(str(r.error) for r in failed)
            self.add(Check("clean-up", False, f"deleted {len(ids)}", reasons))
