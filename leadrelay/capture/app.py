"""The capture service: an ASGI app taking leads from web forms and ad lead forms (DESIGN §9).

Endpoints:

``POST /forms/{form}`` (and ``OPTIONS`` for CORS preflight)
    A ``webform``: ``application/x-www-form-urlencoded`` or ``application/json`` (an object of
    scalars or lists of scalars). A request is accepted when it comes from one of the form's
    ``allowed_origins`` (browser ``Origin`` header), or carries a valid ``X-Leadrelay-Secret``
    (the form's ``secret``) or ``X-Leadrelay-Signature: sha256=<hex HMAC-SHA256 of the raw
    body>`` (its ``hmac_secret``). A credential that is sent must be valid; an ``Origin`` not
    in the list is refused (403). A filled ``honeypot`` field gets the same 202 as a real lead,
    so a bot learns nothing, but nothing is stored. An ``email`` or ``phone`` field (under any
    name the form's mapping gives them) is required.
``GET|POST /hooks/meta``
    The ``hub.verify_token`` handshake (any Meta form's token), then ``X-Hub-Signature-256``
    over the raw body with the app secret; each ``leadgen`` change goes to the Meta form whose
    ``form_ids`` list its form id, or whose ``page_id`` is its page, or that lists neither.
``GET|POST /hooks/linkedin``
    The ``challengeCode`` validation (only a UUID, as LinkedIn sends it, is answered, else 400;
    ``?form=NAME`` picks the form whose client secret answers; by default the first LinkedIn
    form), then ``X-LI-Signature``; ``leadAction: CREATED`` only.
``POST /hooks/google-ads``
    ``google_key`` in the body compared in constant time with the key of the Google form that
    lists the body's ``form_id`` (or of a form listing no ids); ``is_test`` is kept.
``POST /hooks/hubspot``
    Webhook signature v3 over method + URI + body + timestamp, the timestamp within 5 minutes.
    The URI is ``[capture] public_url`` + path when set, else built from ``X-Forwarded-Proto``
    / ``X-Forwarded-Host`` or the request. Each ``contact.*`` event is stored as one lead of
    source ``hubspot_form``.
``GET /healthz``, ``GET /metrics``
    Liveness with a state-store check (503 when it fails) and the Prometheus counters.

Durability (DESIGN §7.1): a lead is written to the inbox (and ``received`` in the ledger for
the form's destination) in one transaction before the 202 ``{"key", "status": "accepted"}``
goes out. A replay answers 202 with the first key and ``"status": "duplicate"``. Dedupe keys:
``meta:{leadgen_id}``, ``linkedin:{leadGenFormResponse URN}``, ``google:{lead_id}``,
``hubspot:{eventId}``; a web form's is its ``Idempotency-Key`` header when sent, else a hash of
form and fields within the current minute, so a browser double-submit is stored once.

Rejections store nothing and answer JSON ``{"detail", "reason"}`` (plus ``"field"`` for a
missing or bad field): 401 bad or missing credential, 400 malformed body, 422 missing field,
413 too large, 415 unsupported content type, 404 unknown form, 503 when the store is down.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from leadrelay.capture.httpworkers import uvicorn_config
from leadrelay.capture.logs import register_config_secrets
from leadrelay.capture.metrics import UNKNOWN_FORM, CaptureMetrics
from leadrelay.capture.sources import Fetchers
from leadrelay.capture.text import find_bad_text
from leadrelay.capture.verify import (
    VerificationError,
    check_form_secret,
    check_google_key,
    check_hubspot_v3,
    check_linkedin_signature,
    check_meta_signature,
    check_webform_hmac,
    linkedin_challenge_response,
    meta_handshake,
)
from leadrelay.config import (
    Config,
    FormConfig,
    GoogleAdsFormConfig,
    HubSpotConnection,
    HubSpotFormConfig,
    LinkedInFormConfig,
    MetaFormConfig,
    WebformConfig,
)
from leadrelay.mappings.engine import MappingError, load_form_mapping
from leadrelay.model import new_lead_key
from leadrelay.sync.state import StateError, StateStore, open_state

__all__ = ["create_app", "serve"]

WEBFORM = "webform"
META = "meta_lead_ads"
LINKEDIN = "linkedin_lead_gen"
GOOGLE = "google_ads_lead_form"
HUBSPOT = "hubspot_form"

#: Seconds within which identical web form submissions without an Idempotency-Key are one.
WEBFORM_DEDUPE_WINDOW_S = 60

_F = TypeVar("_F", bound=FormConfig)
_T = TypeVar("_T")


class _Reject(Exception):
    """A refused request: answered as JSON, counted in metrics, nothing stored."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        source: str,
        form: str = UNKNOWN_FORM,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.source = source
        self.form = form
        self.field = field
        self.headers = dict(headers or {})


@dataclass
class _Lead:
    form: str
    source: str
    destination: str
    payload: dict[str, Any]
    dedupe_key: str
    is_test: bool = False


@dataclass
class _Stored:
    lead: _Lead
    key: str
    created: bool


@dataclass
class _Ignored:
    reason: str
    ids: dict[str, str] = field(default_factory=dict)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _reject_constant(value: str) -> float:
    raise ValueError(f"{value} is not a number JSON allows")


def _refuse_bad_text(value: object, *, source: str, form: str, path: str = "") -> None:
    """Refuse (400, naming the field) a NUL or a lone surrogate anywhere in ``value``: neither
    can be stored nor sent to a CRM."""
    bad = find_bad_text(value, path)
    if bad is not None:
        raise _Reject(400, "bad_text", str(bad), source=source, form=form, field=bad.field)


def _parse_json(body: bytes, *, source: str, form: str) -> Any:
    """The JSON value of ``body``; malformed JSON or text that cannot be stored is a 400."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; deep nesting is RecursionError.
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        if isinstance(exc, RecursionError):
            reason = "nested too deeply"
        raise _Reject(
            400, "malformed_body", f"malformed JSON: {reason}", source=source, form=form
        ) from None
    _refuse_bad_text(data, source=source, form=form)
    return data


def _id_text(value: object) -> str | None:
    """An id that may come as a JSON number or string (Google's int64 ids), as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _missing(field_name: str, *, source: str, form: str, what: str = "is required") -> _Reject:
    return _Reject(
        422, "missing_field", f"{field_name} {what}", source=source, form=form, field=field_name
    )


def _contact_names(form: WebformConfig) -> tuple[set[str], set[str]]:
    """The form field names that carry the email and the phone, read from the form's mapping.

    The ``email`` / ``phone`` names themselves and every field the mapping reads those Lead
    fields from count, alternatives included (``email = ["email", "work_email"]``).
    """
    emails, phones = {"email"}, {"phone"}
    try:
        mapping = load_form_mapping(form.mapping, source=form.source)
    except (MappingError, OSError, ValueError):
        return emails, phones
    for canonical, names in (("email", emails), ("phone", phones)):
        field_map = mapping.fields.get(canonical)
        if field_map is None:
            continue
        for spec in field_map.specs:
            if spec.reads:
                names.update(spec.system_fields)
    return emails, phones


def _filled(value: object) -> bool:
    if isinstance(value, list):
        return any(_filled(item) for item in value)
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None and value is not False


def _origin_key(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class _Capture:
    """The endpoints' logic, bound to one config, store and metrics registry."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        metrics: CaptureMetrics,
        clock: Callable[[], datetime],
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.on_stored = on_stored
        self._contacts = {
            name: _contact_names(form)
            for name, form in config.forms.items()
            if isinstance(form, WebformConfig)
        }

    # -- helpers -------------------------------------------------------------------------------

    def forms_of(self, kind: type[_F]) -> list[tuple[str, _F]]:
        return [(name, form) for name, form in self.config.forms.items() if isinstance(form, kind)]

    def verified_forms(
        self, forms: list[tuple[str, _T]], check: Callable[[_T], None], *, source: str
    ) -> list[tuple[str, _T]]:
        """The forms whose secret verifies this request (``check`` raises when it does not).

        A platform signs with the secret of the app a form belongs to, so any configured form
        may be the one; none verifying is a 401 with the last reason, and nothing is stored.
        """
        verified: list[tuple[str, _T]] = []
        failure: VerificationError | None = None
        for name, form in forms:
            try:
                check(form)
            except VerificationError as exc:
                failure = exc
            else:
                verified.append((name, form))
        if not verified:
            reason = failure.reason if failure else "bad_signature"
            raise _Reject(401, reason, str(failure or "no signing secret"), source=source)
        return verified

    def limit(self, forms: Iterable[FormConfig]) -> int:
        default = self.config.capture.max_body_bytes
        return max((form.max_body_bytes or default for form in forms), default=default)

    async def read_body(self, request: Request, limit: int, *, source: str, form: str) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise _Reject(
                    400,
                    "malformed_body",
                    "Content-Length is not a number",
                    source=source,
                    form=form,
                )
            if int(declared) > limit:
                raise _Reject(
                    413, "too_large", f"body exceeds {limit} bytes", source=source, form=form
                )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Reject(
                    413, "too_large", f"body exceeds {limit} bytes", source=source, form=form
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _put(self, leads: Sequence[_Lead]) -> list[_Stored]:
        stored: list[_Stored] = []
        received_at = self.clock()
        with self.store.transaction() as conn:
            for lead in leads:
                put = self.store.put_inbox(
                    key=new_lead_key(),
                    form=lead.form,
                    source=lead.source,
                    payload=lead.payload,
                    dedupe_key=lead.dedupe_key,
                    is_test=lead.is_test,
                    received_at=received_at,
                    conn=conn,
                )
                if put.created:
                    self.store.mark_received(
                        put.key,
                        lead.destination,
                        form=lead.form,
                        source=lead.source,
                        is_test=lead.is_test,
                        at=received_at,
                        conn=conn,
                    )
                stored.append(_Stored(lead, put.key, put.created))
        return stored

    async def store_leads(self, leads: Sequence[_Lead], *, source: str) -> list[_Stored]:
        form = leads[0].form if len({lead.form for lead in leads}) == 1 else UNKNOWN_FORM
        try:
            stored = await run_in_threadpool(self._put, leads)
        except (sa.exc.SQLAlchemyError, StateError, OSError):
            raise _Reject(
                503,
                "store_unavailable",
                "the lead could not be stored; send it again later",
                source=source,
                form=form,
                headers={"Retry-After": "30"},
            ) from None
        for item in stored:
            self.metrics.received(item.lead.form, item.lead.source)
            if item.created:
                self.metrics.stored(item.lead.form, item.lead.source)
            else:
                self.metrics.duplicate(item.lead.form, item.lead.source)
        if self.on_stored is not None and any(item.created for item in stored):
            self.on_stored()
        return stored

    def batch_answer(
        self, stored: Sequence[_Stored], ignored: Sequence[_Ignored], source: str
    ) -> JSONResponse:
        for item in ignored:
            self.metrics.received(UNKNOWN_FORM, source)
            self.metrics.rejected(UNKNOWN_FORM, source, item.reason)
        leads = [
            {
                "key": item.key,
                "status": "accepted" if item.created else "duplicate",
                "form": item.lead.form,
                "dedupe_key": item.lead.dedupe_key,
            }
            for item in stored
        ]
        if not stored:
            return JSONResponse(
                {"status": "ignored", "leads": [], "ignored": [vars(i) for i in ignored]},
                status_code=200,
            )
        status = "accepted" if any(item.created for item in stored) else "duplicate"
        return JSONResponse(
            {"status": status, "leads": leads, "ignored": [vars(i) for i in ignored]},
            status_code=202,
        )

    # -- web forms -----------------------------------------------------------------------------

    def webform(self, form_id: str) -> WebformConfig:
        form = self.config.forms.get(form_id)
        if not isinstance(form, WebformConfig):
            raise _Reject(404, "unknown_form", "no such web form", source=WEBFORM)
        return form

    def cors_headers(self, form: WebformConfig, origin: str | None) -> dict[str, str] | None:
        """CORS headers for an allowed browser origin; None when ``origin`` is not allowed."""
        if origin is None:
            return None
        allowed = {_origin_key(item) for item in form.allowed_origins}
        if _origin_key(origin) not in allowed:
            return None
        return {"Access-Control-Allow-Origin": origin.strip(), "Vary": "Origin"}

    def preflight(self, request: Request, form_id: str) -> Response:
        try:
            form = self.webform(form_id)
        except _Reject as reject:
            return self.refuse(reject)
        origin = request.headers.get("origin")
        headers = self.cors_headers(form, origin)
        method = request.headers.get("access-control-request-method", "POST").upper()
        if headers is None or method != "POST":
            return self.refuse(
                _Reject(
                    403,
                    "origin",
                    "origin not allowed for this form",
                    source=WEBFORM,
                    form=form_id,
                )
            )
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type, Idempotency-Key",
                "Access-Control-Max-Age": "600",
            }
        )
        return Response(status_code=204, headers=headers)

    def _webform_auth(
        self, form: WebformConfig, name: str, request: Request, body: bytes, origin_ok: bool
    ) -> None:
        presented = False
        try:
            if form.secret is not None and request.headers.get("x-leadrelay-secret") is not None:
                presented = True
                check_form_secret(
                    form.secret.get_secret_value(), request.headers.get("x-leadrelay-secret")
                )
            signature = request.headers.get("x-leadrelay-signature")
            if form.hmac_secret is not None and signature is not None:
                presented = True
                check_webform_hmac(form.hmac_secret.get_secret_value(), body, signature)
        except VerificationError as exc:
            raise _Reject(401, exc.reason, str(exc), source=WEBFORM, form=name) from None
        if presented or origin_ok:
            return
        if form.secret is not None:
            reason, detail = "missing_secret", "X-Leadrelay-Secret header is missing"
        elif form.hmac_secret is not None:
            reason, detail = "missing_signature", "X-Leadrelay-Signature header is missing"
        else:
            reason, detail = "missing_origin", "an Origin header from an allowed origin is required"
        raise _Reject(401, reason, detail, source=WEBFORM, form=name)

    def _webform_fields(self, request: Request, body: bytes, name: str) -> dict[str, Any]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            data = _parse_json(body, source=WEBFORM, form=name)
            if not isinstance(data, dict):
                raise _Reject(
                    422, "bad_body", "the JSON body must be an object", source=WEBFORM, form=name
                )
            for key, value in data.items():
                scalars = value if isinstance(value, list) else [value]
                if any(isinstance(item, dict | list) for item in scalars):
                    raise _Reject(
                        422,
                        "bad_field",
                        f"{key} must be a string, number, boolean or a list of them",
                        source=WEBFORM,
                        form=name,
                        field=key,
                    )
            return data
        if media == "application/x-www-form-urlencoded":
            try:
                pairs = parse_qsl(
                    body.decode("utf-8"),
                    keep_blank_values=True,
                    strict_parsing=False,
                    max_num_fields=1000,
                )
            except (UnicodeDecodeError, ValueError) as exc:
                reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "too many fields"
                raise _Reject(
                    400,
                    "malformed_body",
                    f"malformed form body: {reason}",
                    source=WEBFORM,
                    form=name,
                ) from None
            fields: dict[str, Any] = {}
            for key, value in pairs:
                if key in fields:
                    previous = fields[key]
                    fields[key] = (
                        [*previous, value]
                        if isinstance(previous, list)
                        else [
                            previous,
                            value,
                        ]
                    )
                else:
                    fields[key] = value
            _refuse_bad_text(fields, source=WEBFORM, form=name)
            return fields
        raise _Reject(
            415,
            "unsupported_media_type",
            "send application/x-www-form-urlencoded or application/json",
            source=WEBFORM,
            form=name,
        )

    def _webform_dedupe_key(self, name: str, request: Request, fields: Mapping[str, Any]) -> str:
        idempotency = request.headers.get("idempotency-key")
        if idempotency:
            digest = hashlib.sha256(idempotency.encode("utf-8", "replace")).hexdigest()
            return f"webform:{name}:idem:{digest}"
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        bucket = math.floor(self.clock().timestamp() / WEBFORM_DEDUPE_WINDOW_S)
        digest = hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()
        return f"webform:{name}:{digest}:{bucket}"

    async def submit_form(self, request: Request, name: str) -> Response:
        form = self.webform(name)
        origin = request.headers.get("origin")
        cors = self.cors_headers(form, origin)
        if origin is not None and form.allowed_origins and cors is None:
            raise _Reject(
                403, "origin", "origin not allowed for this form", source=WEBFORM, form=name
            )
        try:
            return await self._submit_form(request, name, form, cors)
        except _Reject as reject:
            # The page's script may read why its own submission was refused.
            reject.headers.update(cors or {})
            raise

    async def _submit_form(
        self, request: Request, name: str, form: WebformConfig, cors: dict[str, str] | None
    ) -> Response:
        limit = form.max_body_bytes or self.config.capture.max_body_bytes
        body = await self.read_body(request, limit, source=WEBFORM, form=name)
        self._webform_auth(form, name, request, body, origin_ok=cors is not None)
        fields = self._webform_fields(request, body, name)
        if form.honeypot is not None and _filled(fields.get(form.honeypot)):
            # Answer as if accepted: a bot must not learn that its submission was dropped.
            self.metrics.received(name, WEBFORM)
            self.metrics.rejected(name, WEBFORM, "honeypot")
            return JSONResponse(
                {"key": new_lead_key(), "status": "accepted"}, status_code=202, headers=cors
            )
        if form.honeypot is not None:
            fields.pop(form.honeypot, None)
        emails, phones = self._contacts[name]
        email = next((fields[n] for n in sorted(emails) if _filled(fields.get(n))), None)
        if email is None and not any(_filled(fields.get(n)) for n in phones):
            raise _missing("email", source=WEBFORM, form=name, what="(or phone) is required")
        page_url = fields.get("page_url")
        if not isinstance(page_url, str) or not page_url:
            page_url = request.headers.get("referer")
        referrer = fields.get("referrer")
        headers = {
            key.replace("-", "_"): request.headers[key]
            for key in ("user-agent", "origin", "referer")
            if key in request.headers
        }
        payload: dict[str, Any] = {
            "fields": fields,
            "page_url": page_url,
            "referrer": referrer if isinstance(referrer, str) else None,
            "headers": headers,
        }
        if request.headers.get("idempotency-key"):
            payload["idempotency_key"] = request.headers["idempotency-key"]
        # The fields were checked as parsed; this finds a bad header value that is kept.
        _refuse_bad_text(payload, source=WEBFORM, form=name)
        domain = str(email).rpartition("@")[2].strip().lower() if isinstance(email, str) else ""
        test_domain = form.test_email_domain.lower()
        is_test = bool(domain) and (domain == test_domain or domain.endswith("." + test_domain))
        lead = _Lead(
            form=name,
            source=WEBFORM,
            destination=form.destination,
            payload=payload,
            dedupe_key=self._webform_dedupe_key(name, request, fields),
            is_test=is_test,
        )
        (stored,) = await self.store_leads([lead], source=WEBFORM)
        return JSONResponse(
            {"key": stored.key, "status": "accepted" if stored.created else "duplicate"},
            status_code=202,
            headers=cors,
        )

    # -- Meta ----------------------------------------------------------------------------------

    def meta_handshake(self, request: Request) -> Response:
        forms = self.forms_of(MetaFormConfig)
        if not forms:
            raise _Reject(404, "unknown_form", "no Meta lead ads form is configured", source=META)
        try:
            challenge = meta_handshake(
                request.query_params,
                [form.verify_token.get_secret_value() for _, form in forms],
            )
        except VerificationError as exc:
            raise _Reject(403, exc.reason, str(exc), source=META) from None
        return PlainTextResponse(challenge, headers={"X-Content-Type-Options": "nosniff"})

    async def meta_notification(self, request: Request) -> Response:
        forms = self.forms_of(MetaFormConfig)
        if not forms:
            raise _Reject(404, "unknown_form", "no Meta lead ads form is configured", source=META)
        body = await self.read_body(
            request, self.limit(f for _, f in forms), source=META, form=UNKNOWN_FORM
        )
        header = request.headers.get("x-hub-signature-256")
        verified = self.verified_forms(
            forms,
            lambda form: check_meta_signature(form.app_secret.get_secret_value(), body, header),
            source=META,
        )
        data = _parse_json(body, source=META, form=UNKNOWN_FORM)
        if not isinstance(data, dict):
            raise _Reject(422, "bad_body", "the body must be a JSON object", source=META)
        entries = data.get("entry")
        if not isinstance(entries, list):
            raise _missing("entry", source=META, form=UNKNOWN_FORM, what="must be a list")
        leads: list[_Lead] = []
        ignored: list[_Ignored] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise _missing(
                    f"entry[{i}]", source=META, form=UNKNOWN_FORM, what="must be an object"
                )
            changes = entry.get("changes", [])
            if not isinstance(changes, list):
                raise _missing(
                    f"entry[{i}].changes", source=META, form=UNKNOWN_FORM, what="must be a list"
                )
            for j, change in enumerate(changes):
                where = f"entry[{i}].changes[{j}]"
                if not isinstance(change, dict):
                    raise _missing(where, source=META, form=UNKNOWN_FORM, what="must be an object")
                if change.get("field") != "leadgen":
                    continue
                value = change.get("value")
                if not isinstance(value, dict):
                    raise _missing(f"{where}.value", source=META, form=UNKNOWN_FORM)
                leadgen_id = _id_text(value.get("leadgen_id"))
                if leadgen_id is None:
                    raise _missing(f"{where}.value.leadgen_id", source=META, form=UNKNOWN_FORM)
                page_id = _id_text(value.get("page_id")) or _id_text(entry.get("id"))
                form_id = _id_text(value.get("form_id"))
                match = _match_meta(verified, form_id, page_id)
                ids = {"leadgen_id": leadgen_id, "form_id": form_id or "", "page_id": page_id or ""}
                if match is None:
                    ignored.append(_Ignored("unknown_form", ids))
                    continue
                name, form = match
                payload = {
                    key: _id_text(value.get(key)) for key in ("ad_id", "adgroup_id", "created_time")
                }
                payload.update(
                    {
                        "leadgen_id": leadgen_id,
                        "page_id": page_id,
                        "form_id": form_id,
                        "entry_time": _id_text(entry.get("time")),
                    }
                )
                leads.append(
                    _Lead(name, META, form.destination, payload, dedupe_key=f"meta:{leadgen_id}")
                )
        if not leads and ignored:
            raise _Reject(
                404,
                "unknown_form",
                "no Meta lead ads form matches form_id "
                + ", ".join(sorted({item.ids["form_id"] or "-" for item in ignored})),
                source=META,
            )
        stored = await self.store_leads(leads, source=META) if leads else []
        return self.batch_answer(stored, ignored, META)

    # -- LinkedIn ------------------------------------------------------------------------------

    def linkedin_forms(self) -> list[tuple[str, LinkedInFormConfig]]:
        forms = self.forms_of(LinkedInFormConfig)
        if not forms:
            raise _Reject(
                404, "unknown_form", "no LinkedIn lead gen form is configured", source=LINKEDIN
            )
        return forms

    def linkedin_challenge(self, request: Request) -> Response:
        forms = self.linkedin_forms()
        chosen = request.query_params.get("form")
        if chosen is not None:
            forms = [(name, form) for name, form in forms if name == chosen]
            if not forms:
                raise _Reject(404, "unknown_form", "no such LinkedIn form", source=LINKEDIN)
        code = request.query_params.get("challengeCode")
        if not code:
            raise _Reject(
                400,
                "missing_challenge",
                "challengeCode is required",
                source=LINKEDIN,
                field="challengeCode",
            )
        secret = forms[0][1].client_secret.get_secret_value()
        try:
            answer = linkedin_challenge_response(secret, code)
        except VerificationError as exc:
            raise _Reject(
                400, exc.reason, str(exc), source=LINKEDIN, field="challengeCode"
            ) from None
        return JSONResponse({"challengeCode": code, "challengeResponse": answer})

    async def linkedin_notification(self, request: Request) -> Response:
        forms = self.linkedin_forms()
        body = await self.read_body(
            request, self.limit(f for _, f in forms), source=LINKEDIN, form=UNKNOWN_FORM
        )
        header = request.headers.get("x-li-signature")
        verified = self.verified_forms(
            forms,
            lambda form: check_linkedin_signature(
                form.client_secret.get_secret_value(), body, header
            ),
            source=LINKEDIN,
        )
        data = _parse_json(body, source=LINKEDIN, form=UNKNOWN_FORM)
        if not isinstance(data, dict):
            raise _Reject(422, "bad_body", "the body must be a JSON object", source=LINKEDIN)
        action = data.get("leadAction")
        if action != "CREATED":
            # DELETED (a member withdrew) and other types carry no new lead to store.
            return JSONResponse({"status": "ignored", "leads": [], "reason": "not a new lead"})
        urn = data.get("leadGenFormResponse")
        if not isinstance(urn, str) or not urn.strip():
            raise _missing("leadGenFormResponse", source=LINKEDIN, form=UNKNOWN_FORM)
        form_urn = data.get("leadGenForm")
        form_id = _linkedin_form_number(form_urn) if isinstance(form_urn, str) else None
        match = _match_listed(verified, form_id, lambda f: f.form_ids, "urn:li:leadGenForm:")
        if match is None:
            raise _Reject(
                404,
                "unknown_form",
                f"no LinkedIn lead gen form matches form {form_id or '-'}",
                source=LINKEDIN,
            )
        name, form = match
        payload = {
            key: data.get(key)
            for key in ("type", "leadAction", "leadGenForm", "leadType", "occurredAt")
            if isinstance(data.get(key), str | int) and not isinstance(data.get(key), bool)
        }
        for key in ("owner", "associatedEntity"):
            if isinstance(data.get(key), dict):
                payload[key] = data[key]
        payload.update({"leadGenFormResponse": urn.strip(), "form_id": form_id})
        lead = _Lead(name, LINKEDIN, form.destination, payload, f"linkedin:{urn.strip()}")
        (stored,) = await self.store_leads([lead], source=LINKEDIN)
        return JSONResponse(
            {"key": stored.key, "status": "accepted" if stored.created else "duplicate"},
            status_code=202,
        )

    # -- Google Ads ----------------------------------------------------------------------------

    async def google_lead(self, request: Request) -> Response:
        forms = self.forms_of(GoogleAdsFormConfig)
        if not forms:
            raise _Reject(
                404, "unknown_form", "no Google Ads lead form is configured", source=GOOGLE
            )
        body = await self.read_body(
            request, self.limit(f for _, f in forms), source=GOOGLE, form=UNKNOWN_FORM
        )
        data = _parse_json(body, source=GOOGLE, form=UNKNOWN_FORM)
        if not isinstance(data, dict):
            raise _Reject(422, "bad_body", "the body must be a JSON object", source=GOOGLE)
        form_id = _id_text(data.get("form_id"))
        listed = [(n, f) for n, f in forms if form_id is not None and form_id in f.form_ids]
        candidates = listed or [(n, f) for n, f in forms if not f.form_ids]
        if not candidates:
            raise _Reject(
                404,
                "unknown_form",
                f"no Google Ads lead form matches form_id {form_id or '-'}",
                source=GOOGLE,
            )
        match, failure = None, None
        for name, form in candidates:
            try:
                check_google_key(form.google_key.get_secret_value(), data.get("google_key"))
            except VerificationError as exc:
                failure = exc
                continue
            match = match or (name, form)
        if match is None:
            assert failure is not None
            raise _Reject(401, failure.reason, str(failure), source=GOOGLE)
        name, form = match
        lead_id = _id_text(data.get("lead_id"))
        if lead_id is None:
            raise _missing("lead_id", source=GOOGLE, form=name)
        columns = data.get("user_column_data")
        if not isinstance(columns, list):
            raise _missing("user_column_data", source=GOOGLE, form=name, what="must be a list")
        for i, column in enumerate(columns):
            if not isinstance(column, dict):
                raise _missing(
                    f"user_column_data[{i}]", source=GOOGLE, form=name, what="must be an object"
                )
        # The key authenticates the request; it is never stored.
        payload = {key: value for key, value in data.items() if key != "google_key"}
        payload["lead_id"] = lead_id
        is_test = data.get("is_test") is True
        lead = _Lead(name, GOOGLE, form.destination, payload, f"google:{lead_id}", is_test)
        (stored,) = await self.store_leads([lead], source=GOOGLE)
        return JSONResponse(
            {"key": stored.key, "status": "accepted" if stored.created else "duplicate"},
            status_code=202,
        )

    # -- HubSpot -------------------------------------------------------------------------------

    def hubspot_secret(self, form: HubSpotFormConfig) -> str | None:
        if form.client_secret is not None:
            return form.client_secret.get_secret_value()
        connection = self.config.connections.get(form.connection or "")
        if isinstance(connection, HubSpotConnection) and connection.signing_secret is not None:
            return connection.signing_secret.get_secret_value()
        return None

    def public_uri(self, request: Request) -> str:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else str(raw_path)
        query = request.scope.get("query_string", b"").decode("latin-1")
        tail = path + (f"?{query}" if query else "")
        if self.config.capture.public_url:
            return self.config.capture.public_url + tail
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        return f"{proto or request.url.scheme}://{host or request.headers.get('host', '')}{tail}"

    async def hubspot_events(self, request: Request) -> Response:
        forms = self.forms_of(HubSpotFormConfig)
        if not forms:
            raise _Reject(404, "unknown_form", "no HubSpot form is configured", source=HUBSPOT)
        body = await self.read_body(
            request, self.limit(f for _, f in forms), source=HUBSPOT, form=UNKNOWN_FORM
        )
        uri = self.public_uri(request)
        now_ms = int(self.clock().timestamp() * 1000)
        signed = [
            (name, (form, secret))
            for name, form in forms
            if (secret := self.hubspot_secret(form)) is not None
        ]

        def check(signing: tuple[HubSpotFormConfig, str]) -> None:
            check_hubspot_v3(
                signing[1],
                method=request.method,
                uri=uri,
                body=body,
                signature=request.headers.get("x-hubspot-signature-v3"),
                timestamp=request.headers.get("x-hubspot-request-timestamp"),
                now_ms=now_ms,
            )

        verified = [
            (name, form) for name, (form, _) in self.verified_forms(signed, check, source=HUBSPOT)
        ]
        data = _parse_json(body, source=HUBSPOT, form=UNKNOWN_FORM)
        if not isinstance(data, list):
            raise _Reject(
                422, "bad_body", "the body must be a JSON array of events", source=HUBSPOT
            )
        leads: list[_Lead] = []
        ignored: list[_Ignored] = []
        for i, event in enumerate(data):
            if not isinstance(event, dict):
                raise _missing(
                    f"[{i}]", source=HUBSPOT, form=UNKNOWN_FORM, what="must be an object"
                )
            event_id = _id_text(event.get("eventId"))
            if event_id is None:
                raise _missing(f"[{i}].eventId", source=HUBSPOT, form=UNKNOWN_FORM)
            kind = event.get("subscriptionType")
            if not (isinstance(kind, str) and kind.startswith("contact.")):
                continue
            form_guid = _id_text(event.get("formId")) or _id_text(event.get("formGuid"))
            portal = _id_text(event.get("portalId"))
            candidates = [
                (name, form) for name, form in verified if self._portal_matches(form, portal)
            ]
            match = _match_listed(candidates, form_guid, lambda f: f.form_ids, "")
            if match is None:
                ignored.append(_Ignored("unknown_form", {"eventId": event_id}))
                continue
            name, form = match
            leads.append(_Lead(name, HUBSPOT, form.destination, event, f"hubspot:{event_id}"))
        if not leads and ignored:
            raise _Reject(
                404, "unknown_form", "no HubSpot form matches these events", source=HUBSPOT
            )
        stored = await self.store_leads(leads, source=HUBSPOT) if leads else []
        return self.batch_answer(stored, ignored, HUBSPOT)

    def _portal_matches(self, form: HubSpotFormConfig, portal: str | None) -> bool:
        connection = self.config.connections.get(form.connection or "")
        if not isinstance(connection, HubSpotConnection) or connection.portal_id is None:
            return True
        return portal == connection.portal_id

    # -- health --------------------------------------------------------------------------------

    def health(self) -> Response:
        try:
            counts = self.store.inbox_counts()
        except (sa.exc.SQLAlchemyError, StateError, OSError):
            return JSONResponse(
                {"status": "error", "detail": "the state store is unavailable"}, status_code=503
            )
        return JSONResponse(
            {"status": "ok", "inbox": {str(status): count for status, count in counts.items()}}
        )

    def refuse(self, reject: _Reject) -> JSONResponse:
        self.metrics.received(reject.form, reject.source)
        self.metrics.rejected(reject.form, reject.source, reject.reason)
        content: dict[str, Any] = {"detail": reject.detail, "reason": reject.reason}
        if reject.field is not None:
            content["field"] = reject.field
        return JSONResponse(content, status_code=reject.status, headers=reject.headers)


def _linkedin_form_number(urn: str) -> str | None:
    marker = "urn:li:leadGenForm:"
    start = urn.find(marker)
    if start < 0:
        return None
    rest = urn[start + len(marker) :]
    for stop in (",", ")"):
        rest = rest.split(stop)[0]
    return rest or None


def _match_listed(
    forms: Sequence[tuple[str, _F]],
    form_id: str | None,
    listed: Callable[[_F], Sequence[str]],
    urn_prefix: str,
) -> tuple[str, _F] | None:
    """The form that lists ``form_id`` (bare or as ``urn_prefix + id``), else one listing none."""
    if form_id is not None:
        for name, form in forms:
            ids = listed(form)
            if form_id in ids or (urn_prefix and urn_prefix + form_id in ids):
                return name, form
    for name, form in forms:
        if not listed(form):
            return name, form
    return None


def _match_meta(
    forms: Sequence[tuple[str, MetaFormConfig]], form_id: str | None, page_id: str | None
) -> tuple[str, MetaFormConfig] | None:
    """The most specific Meta form for a change: listing its form id, else its page, else any."""

    def page_ok(form: MetaFormConfig) -> bool:
        return form.page_id is None or form.page_id == page_id

    if form_id is not None:
        for name, form in forms:
            if form_id in form.form_ids and page_ok(form):
                return name, form
    for name, form in forms:
        if not form.form_ids and form.page_id is not None and form.page_id == page_id:
            return name, form
    for name, form in forms:
        if not form.form_ids and form.page_id is None:
            return name, form
    return None


def create_app(
    config: Config,
    store: StateStore,
    *,
    fetchers: Fetchers | None = None,
    clock: Callable[[], datetime] | None = None,
    on_stored: Callable[[], None] | None = None,
) -> FastAPI:
    """The capture service for ``config``, storing into ``store``.

    ``fetchers`` (the Meta / LinkedIn answer fetchers the delivery step uses) and the metrics
    are kept on ``app.state`` (``fetchers``, ``metrics``, ``store``, ``config``) for the worker
    that runs beside the app. ``clock`` returns aware UTC time (HubSpot timestamp window, web
    form dedupe window); tests pass their own. ``on_stored`` is called (from a worker thread)
    after new leads were stored, to wake the delivery worker.
    """

    def inbox_counts() -> dict[tuple[str, str, str], int]:
        return {
            (form, source, str(status)): count
            for (form, source, status), count in store.inbox_counts_by_form().items()
        }

    metrics = CaptureMetrics(inbox_counts)
    capture = _Capture(config, store, metrics, clock or _utcnow, on_stored)
    app = FastAPI(title="leadrelay capture", version="1", docs_url=None, redoc_url=None)
    app.state.config = config
    app.state.store = store
    app.state.metrics = metrics
    app.state.fetchers = fetchers or Fetchers()

    @app.exception_handler(_Reject)
    async def _refused(request: Request, exc: _Reject) -> JSONResponse:
        return capture.refuse(exc)

    @app.post("/forms/{form_id}", status_code=202)
    async def submit_form(request: Request, form_id: str) -> Response:
        """Take a web form submission (form-encoded or JSON)."""
        return await capture.submit_form(request, form_id)

    @app.options("/forms/{form_id}")
    async def form_preflight(request: Request, form_id: str) -> Response:
        """CORS preflight for a web form's allowed origins."""
        return capture.preflight(request, form_id)

    @app.get("/hooks/meta", response_class=PlainTextResponse)
    async def meta_handshake_endpoint(request: Request) -> Response:
        """Meta's subscription handshake (hub.verify_token)."""
        return capture.meta_handshake(request)

    @app.post("/hooks/meta", status_code=202)
    async def meta_notification(request: Request) -> Response:
        """Meta leadgen notifications (X-Hub-Signature-256)."""
        return await capture.meta_notification(request)

    @app.get("/hooks/linkedin")
    async def linkedin_challenge(request: Request) -> Response:
        """LinkedIn's webhook validation (challengeCode)."""
        return capture.linkedin_challenge(request)

    @app.post("/hooks/linkedin", status_code=202)
    async def linkedin_notification(request: Request) -> Response:
        """LinkedIn lead notifications (X-LI-Signature)."""
        return await capture.linkedin_notification(request)

    @app.post("/hooks/google-ads", status_code=202)
    async def google_lead(request: Request) -> Response:
        """Google Ads lead form webhook (google_key in the body)."""
        return await capture.google_lead(request)

    @app.post("/hooks/hubspot", status_code=202)
    async def hubspot_events(request: Request) -> Response:
        """HubSpot webhook events (signature v3)."""
        return await capture.hubspot_events(request)

    @app.get("/healthz")
    def healthz() -> Response:
        """Liveness with a state-store check."""
        return capture.health()

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        """Prometheus text exposition of the capture counters."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def _in_memory(sqlite_url: str) -> bool:
    """Whether a SQLite URL names an in-memory database (one per process, nothing shared)."""
    path = sqlite_url.partition(":///")[2]
    return path.partition("?")[0] in ("", ":memory:") or "mode=memory" in path


def _end_serving(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: end ``serve`` as Ctrl-C does, then exit 0.

    uvicorn shuts down on SIGTERM and sends it again once it has; this handler then ends the
    process cleanly (after its children, see :func:`serve`) instead of dying by the signal.
    Later SIGTERMs are ignored, so they cannot cut the children's stop short.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    workers: int = 1,
    http_workers: int = 1,
) -> None:
    """Run the capture service in the foreground (uvicorn) on ``config.state.url``'s store,
    with the delivery worker in a child process (every ``[capture] worker_interval_s``, and
    right after a lead is stored; see :class:`~leadrelay.capture.worker.DeliveryProcess`) and,
    when a flow has a ``schedule``, the scheduler in another
    (:class:`~leadrelay.sync.schedule.ScheduleProcess`). With a PostgreSQL store it starts
    ``workers`` queue workers instead (:class:`~leadrelay.sync.jobs.WorkerProcess`; 0 when
    ``leadrelay worker`` processes run elsewhere), which deliver and run the schedules.
    Reconcile and the retention prune run in one more child
    (:class:`~leadrelay.reconcile.UpkeepProcess`).

    With ``http_workers`` > 1 the capture app runs in that many child processes sharing one
    listening socket (:mod:`leadrelay.capture.httpworkers`); this process only supervises.

    ``host`` and ``port`` default to ``[capture]``. Returns when the server stops (Ctrl-C),
    after the delivery pass in progress; SIGTERM stops it the same way and exits 0. The
    children end with it, even when it is killed (:mod:`leadrelay.childproc`). Log lines,
    uvicorn's access log included, carry no secret (:mod:`leadrelay.capture.logs`).
    """
    from contextlib import ExitStack

    from leadrelay.capture.worker import DeliveryProcess
    from leadrelay.childproc import ServeChild, keep_startup_objects
    from leadrelay.reconcile import UpkeepProcess
    from leadrelay.sync.schedule import ScheduleProcess, scheduled_flows

    if http_workers > 1 and config.state.is_sqlite and _in_memory(config.state.url):
        raise StateError(
            "several HTTP workers need a state store they can share: an SQLite file or "
            "PostgreSQL, not an in-memory database"
        )
    register_config_secrets(config)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _end_serving)
    store = open_state(config)
    stack = ExitStack()
    try:
        if http_workers > 1:
            # The HTTP workers count into one directory (inherited by every child started
            # after this), so /metrics is whole whichever worker answers; removed when all ended.
            from leadrelay.capture.metrics import shared_counts

            stack.enter_context(shared_counts())
        children: list[ServeChild]
        on_stored: Callable[[], None] | None
        wake: Any = None
        if config.state.is_sqlite:
            loop = DeliveryProcess(config.path)
            children = [loop]
            if scheduled_flows(config):
                children.append(ScheduleProcess(config.path))
            on_stored = loop.wake
            wake = loop.wake_event
        else:
            # PostgreSQL: the job queue delivers and runs the schedules, here and on other hosts;
            # a lead stored queues a delivery at once.
            from leadrelay.sync.jobs import DeliveryNudge, WorkerProcess, ensure_queue_schema

            ensure_queue_schema(config)
            children = [WorkerProcess(config.path, f"worker{n}") for n in range(workers)]
            on_stored = None if http_workers > 1 else stack.enter_context(DeliveryNudge(config))
        # Reconcile on [reconcile] schedule, the retention prune once a day (leadrelay.reconcile).
        children.append(UpkeepProcess(config.path))
        for child in children:
            child.start()
        try:
            listen_host = host or config.capture.host
            listen_port = port or config.capture.port
            if http_workers > 1:
                _serve_http_workers(
                    config, http_workers, wake, children, listen_host, listen_port, log_level
                )
            else:
                app = create_app(config, store, on_stored=on_stored)
                keep_startup_objects()
                uvicorn.Server(
                    uvicorn_config(app, host=listen_host, port=listen_port, log_level=log_level)
                ).run()
        finally:
            for child in children:
                child.stop()
    finally:
        stack.close()
        store.close()


def _serve_http_workers(
    config: Config,
    count: int,
    wake: Any,
    children: list[Any],
    host: str,
    port: int,
    log_level: str,
) -> None:
    """Run ``count`` HTTP worker processes on one socket (added to ``children``, which the
    caller stops) until Ctrl-C or SIGTERM."""
    from leadrelay.capture.httpworkers import HttpWorkerProcess, bind_socket, supervise

    sock = bind_socket(host, port, log_level)
    try:
        workers = [
            HttpWorkerProcess(config.path, sock, wake, log_level=log_level, number=n)
            for n in range(1, count + 1)
        ]
        # Stopped first: the submissions in progress are stored before delivery stops.
        children[:0] = workers
        for worker in workers:
            worker.start()
        supervise(workers)
    finally:
        sock.close()
