"""The Salesforce REST emulator: OAuth token endpoint, sObjects, SOQL, collections, Bulk 2.0.

Mounted at the real root path ``/services`` (simple-salesforce keeps only host and port of an
instance URL and always uses https — crm-api-facts §0). Every API response carries
``Sforce-Limit-Info``; errors are JSON arrays ``[{"message", "errorCode", …}]`` (§2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadrelay.sandbox.base import Emulator, Sandbox, SchemaChangeError
from leadrelay.sandbox.salesforce import soql
from leadrelay.sandbox.salesforce.bulk import BulkError, BulkJobs
from leadrelay.sandbox.salesforce.schema import ORG_ID, SObjectDef, format_datetime, make_id
from leadrelay.sandbox.salesforce.store import (
    ROLLED_BACK,
    SANDBOX_USERS,
    Journal,
    MultipleMatches,
    OrgStore,
    Problem,
    RecordError,
    RequestError,
    not_found,
    parse_datetime,
)
from leadrelay.sandbox.salesforce.tooling import (
    ToolingError,
    field_from_metadata,
    split_full_name,
)

#: Sandbox-only credentials (not secrets): the emulated org's integration user and connected app.
SANDBOX_USERNAME = SANDBOX_USERS[0][0]
SANDBOX_PASSWORD = "sandbox-password"
SANDBOX_SECURITY_TOKEN = "SANDBOXSECURITYTOKEN"
SANDBOX_CONSUMER_KEY = "3MVG9sandbox.leadrelay.consumer.key"
SANDBOX_CONSUMER_SECRET = "sandbox-consumer-secret"
#: The refresh token the sandbox org has issued to the connected app (web-server flow).
SANDBOX_REFRESH_TOKEN = "5Aep861sandbox.leadrelay.refresh.token"
#: How long an authorization code may be exchanged (Salesforce: 15 minutes).
AUTH_CODE_LIFETIME_S = 15 * 60
DEFAULT_DAILY_API_LIMIT = 15_000
QUERY_BATCH_SIZE = 2000
#: Composite: subrequests per call, and query operations among them (Salesforce's limits).
COMPOSITE_MAX_SUBREQUESTS = 25
COMPOSITE_MAX_QUERIES = 5
_COMPOSITE_QUERY = re.compile(r"^/services/data/v(\d{2}\.\d)/(query|queryAll)/?\?(.*)$")
_COMPOSITE_DESCRIBE = re.compile(r"^/services/data/v(\d{2}\.\d)/sobjects/(\w+)/describe/?$")
COLLECTION_LIMIT = 200
MAX_OPEN_CURSORS = 200
MIN_VERSION, MAX_VERSION = 31.0, 62.0
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Header names as Salesforce spells them on the wire (others: each word capitalised).
_HEADER_NAMES = {
    b"sforce-numberofrecords": b"Sforce-NumberOfRecords",
    b"www-authenticate": b"WWW-Authenticate",
}
_VERSION = re.compile(r"^\d{2}\.\d$")
#: A PKCE S256 challenge: base64url of a SHA-256 digest, no padding (RFC 7636).
_PKCE = re.compile(r"^[A-Za-z0-9_-]{43}$")

Handler = Callable[..., Awaitable[Response]]


class SalesforceAPIError(Exception):
    """Answer with ``status`` and a Salesforce error array."""

    def __init__(self, status: int, *problems: Problem) -> None:
        super().__init__(problems[0].message if problems else str(status))
        self.status = status
        self.problems = problems


def header_name(name: bytes) -> bytes:
    """``name`` as Salesforce spells it: ``content-type`` -> ``Content-Type``,
    ``sforce-limit-info`` -> ``Sforce-Limit-Info``."""
    lower = name.lower()
    known = _HEADER_NAMES.get(lower)
    if known is not None:
        return known
    return b"-".join(part[:1].upper() + part[1:] for part in lower.split(b"-"))


def vendor_headers(send: Send) -> Send:
    """``send`` with response header names in Salesforce's casing and JSON typed as
    ``application/json;charset=UTF-8``.

    HTTP header names are case-insensitive, but Starlette emits them in lower case and uvicorn
    writes them to the wire as given (with httptools and h11 alike); clients in the wild match
    the vendor's spelling, so the emulator renames them before the server sees them.
    """

    async def renamed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = []
            for name, value in message.get("headers", []):
                if name.lower() == b"content-type" and value == b"application/json":
                    value = b"application/json;charset=UTF-8"
                headers.append((header_name(name), value))
            message = {**message, "headers": headers}
        await send(message)

    return renamed


class SalesforceJSON(JSONResponse):
    """A JSON response sent with Salesforce's header casing (see :func:`vendor_headers`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, vendor_headers(send))


def sf_error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """A Salesforce error response: always a JSON array."""
    return SalesforceJSON([{"message": message, "errorCode": code, **extra}], status_code=status)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return SalesforceJSON({"error": error, "error_description": description}, status_code=status)


@dataclass
class _AuthCode:
    """An authorization code issued by ``/oauth2/authorize``, exchanged once."""

    client_id: str
    redirect_uri: str
    challenge: str | None
    expires: float


@dataclass
class _Cursor:
    rows: list[dict[str, Any]]
    bound: soql.BoundQuery
    version: str
    endpoint: str


class SalesforceEmulator(Emulator):
    """Salesforce REST API (v31.0–v62.0) over an in-memory org with Lead, Contact, Account,
    Opportunity, User, LeadStatus and OpportunityStage; an admin's lead conversion."""

    name = "salesforce"
    prefix = "/services"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        #: the org's DailyApiRequests Max (configurable; survives reset)
        self.daily_api_limit = DEFAULT_DAILY_API_LIMIT
        self.sessions: dict[str, str] = {}
        #: refresh token -> user id (survive reset, like sessions)
        self.refresh_tokens: dict[str, str] = {}
        self.auth_codes: dict[str, _AuthCode] = {}

    # --- Emulator contract -------------------------------------------------------------------

    def reset(self) -> None:
        """Fresh org: seeded users and lead statuses, no records, jobs or cursors; usage 0.

        Issued sessions stay valid (use ``expire_sessions`` to test re-authentication).
        """
        with self.lock:
            self.store = OrgStore()
            self.bulk = BulkJobs(self.store)
            self.cursors: OrderedDict[str, _Cursor] = OrderedDict()
            self.api_usage = 0
            self._cursor_sequence = 0
            self._field_sequence = 0
            self.refresh_tokens.setdefault(SANDBOX_REFRESH_TOKEN, self.store.integration_user_id)
            self.schema_changed_at = datetime.now(UTC)

    def expire_sessions(self) -> int:
        """Invalidate every issued access token; returns how many there were."""
        with self.lock:
            count = len(self.sessions)
            self.sessions.clear()
            return count

    def rate_limited(self, request: Request) -> Response:
        # Salesforce has no 429: a short-window overload is 403 REQUEST_LIMIT_EXCEEDED with the
        # concurrent-request message (crm-api-facts §2), which clears by itself. The daily
        # "TotalRequests" variant is answered by the real daily counter, not by this fault.
        return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")

    def fault(self, request: Request, status: int) -> Response:
        codes = {
            503: "SERVER_UNAVAILABLE",
            500: "UNKNOWN_EXCEPTION",
            502: "SERVER_UNAVAILABLE",
            429: "REQUEST_LIMIT_EXCEEDED",
            403: "REQUEST_LIMIT_EXCEEDED",
        }
        code = codes.get(status, "UNKNOWN_EXCEPTION" if status >= 500 else "INVALID_REQUEST")
        message = (
            "Service temporarily unavailable, please retry."
            if code == "SERVER_UNAVAILABLE"
            else f"An unexpected error occurred (HTTP {status})."
        )
        return sf_error(status, code, message)

    def change_schema(self, change: dict[str, Any]) -> None:
        """Remove a Lead field (``Name`` or ``Object.Name``) or a picklist value.

        Restricted picklists (Status, Rejection_Reason__c) then refuse the removed value with
        INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST. Unrestricted ones (LeadSource, Industry) keep
        accepting it: the API saves any value into an unrestricted picklist (Salesforce Help,
        "Restrict Picklists to the Values You Define"), so only describe changes.
        """
        with self.lock:
            self.schema_changed_at = datetime.now(UTC)
            if "remove_field" in change:
                sobject, spec = self._schema_field(str(change["remove_field"]))
                if not spec.custom and (not spec.nillable or not spec.createable):
                    raise SchemaChangeError(
                        f"{sobject.name}.{spec.name} is a required or system field and cannot "
                        "be deleted"
                    )
                sobject.remove_field(spec.name)
                for index in (self.store.indexes[sobject.name],):
                    index.pop(spec.name, None)
                return
            option = change.get("remove_option")
            if not isinstance(option, dict):
                raise SchemaChangeError("remove_option needs {field, value}")
            sobject, spec = self._schema_field(str(option.get("field")))
            value = option.get("value")
            entry = next((p for p in spec.picklist if p.value == value), None)
            if entry is None:
                raise SchemaChangeError(
                    f"{sobject.name}.{spec.name} has no picklist value {value!r}"
                )
            if entry.default:
                raise SchemaChangeError(
                    f"{value!r} is the default of {spec.name}; cannot remove it"
                )
            spec.picklist.remove(entry)
            if sobject.name == "Lead" and spec.name == "Status":
                statuses = self.store.records["LeadStatus"]
                for record_id, record in list(statuses.items()):
                    if record["ApiName"] == value:
                        del statuses[record_id]

    def _schema_field(self, name: str) -> tuple[SObjectDef, Any]:
        object_name, _, field_name = name.rpartition(".")
        sobject = self.store.sobject(object_name or "Lead")
        spec = sobject.field(field_name) if sobject else None
        if sobject is None or spec is None:
            raise SchemaChangeError(f"no field {name!r} on {object_name or 'Lead'}")
        return sobject, spec

    def env(self) -> dict[str, str]:
        return {
            "SALESFORCE_INSTANCE_URL": self.sandbox.base_url,
            # The sandbox answers the OAuth token endpoint too: a project from `leadrelay init`
            # reads its login URL from here instead of falling back to login.salesforce.com.
            "SALESFORCE_LOGIN_URL": self.sandbox.base_url,
            "SALESFORCE_USERNAME": SANDBOX_USERNAME,
            "SALESFORCE_PASSWORD": SANDBOX_PASSWORD,
            "SALESFORCE_CONSUMER_KEY": SANDBOX_CONSUMER_KEY,
            "SALESFORCE_CONSUMER_SECRET": SANDBOX_CONSUMER_SECRET,
            "SALESFORCE_REFRESH_TOKEN": SANDBOX_REFRESH_TOKEN,
        }

    def admin_routes(self) -> list[BaseRoute]:
        async def expire(request: Request) -> Response:
            return JSONResponse({"ok": True, "expired": self.expire_sessions()})

        async def limits(request: Request) -> Response:
            try:
                body = await request.json()
                limit = int(body["daily_api_requests"])
            except (ValueError, KeyError, TypeError):
                return JSONResponse(
                    {"error": 'body must be {"daily_api_requests": N}'}, status_code=400
                )
            with self.lock:
                self.daily_api_limit = limit
            return JSONResponse({"ok": True, "daily_api_requests": limit})

        async def merge(request: Request) -> Response:
            try:
                body = await request.json()
                master_id = str(body["master_id"])
                merged = body["merged_ids"]
                if not isinstance(merged, list):
                    raise TypeError("merged_ids")
            except (ValueError, KeyError, TypeError):
                return JSONResponse(
                    {"error": 'body must be {"master_id": ID, "merged_ids": [ID, …]}'},
                    status_code=400,
                )
            with self.lock:
                spec = next(
                    (s for s in self.store.schema.values() if master_id.startswith(s.key_prefix)),
                    None,
                )
                if spec is None:
                    return JSONResponse(
                        {"error": f"no sObject has id {master_id}"}, status_code=400
                    )
                try:
                    self.store.merge(
                        spec, master_id, [str(i) for i in merged], self.store.integration_user_id
                    )
                except RecordError as exc:
                    return JSONResponse([exc.problem.rest()], status_code=exc.status)
            return JSONResponse({"ok": True, "master_id": master_id})

        async def convert(request: Request) -> Response:
            usage = (
                'body must be {"lead_id": ID, "opportunity": {"Name", "StageName", "Amount", '
                '"CloseDate"} (optional)}'
            )
            try:
                body = await request.json()
                lead_id = body["lead_id"]
                opportunity = body.get("opportunity")
                if not isinstance(lead_id, str) or not isinstance(opportunity, dict | None):
                    raise TypeError("lead_id")
            except (ValueError, KeyError, TypeError, AttributeError):
                return JSONResponse({"error": usage}, status_code=400)
            with self.lock:
                try:
                    contact_id, account_id, opportunity_id = self.store.convert(
                        lead_id, opportunity, self.store.integration_user_id
                    )
                except RecordError as exc:
                    return JSONResponse([exc.problem.rest()], status_code=exc.status)
            return JSONResponse(
                {
                    "contact_id": contact_id,
                    "account_id": account_id,
                    "opportunity_id": opportunity_id,
                }
            )

        return [
            Route("/salesforce/convert", convert, methods=["POST"]),
            Route("/salesforce/merge", merge, methods=["POST"]),
            Route("/salesforce/expire-sessions", expire, methods=["POST"]),
            Route("/salesforce/limits", limits, methods=["POST"]),
        ]

    def app(self) -> ASGIApp:
        api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        self._install_handlers(api)
        self._oauth_routes(api)
        self._rest_routes(api)
        self._bulk_routes(api)

        async def not_found_route(request: Request) -> Response:
            allowed: set[str] = set()
            for candidate in api.router.routes:
                if isinstance(candidate, APIRoute) and candidate.endpoint is not not_found_route:
                    match, _ = candidate.matches({**request.scope, "method": "_"})
                    if match is not Match.NONE:
                        allowed |= candidate.methods or set()
            if allowed:
                return sf_error(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"HTTP Method '{request.method}' not allowed. Allowed are "
                    + ",".join(sorted(allowed)),
                )
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")

        api.add_api_route(
            "/{rest:path}",
            not_found_route,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
            include_in_schema=False,
        )
        return _ApiGate(self, api)

    # --- sessions and limits ---------------------------------------------------------------

    def issue_token(self, user_id: str, client_secret: str) -> dict[str, Any]:
        """A new access token, shaped as the token endpoint answers."""
        token = f"{ORG_ID[:15]}!AQ" + secrets.token_urlsafe(72)
        with self.lock:
            self.sessions[token] = user_id
        issued_at = str(int(time.time() * 1000))
        identity = f"{self.sandbox.base_url}/id/{ORG_ID}/{user_id}"
        signature = base64.b64encode(
            hmac.new(
                client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        return {
            "access_token": token,
            "instance_url": self.sandbox.base_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        }

    def session_user(self, authorization: str | None) -> str | None:
        """The user of a ``Bearer``/``OAuth`` token header, or None if invalid or expired."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return None
        with self.lock:
            return self.sessions.get(token.strip())

    def count_call(self) -> tuple[int, bool]:
        """Count one API call; returns (usage, over the daily limit)."""
        with self.lock:
            self.api_usage += 1
            return self.api_usage, self.api_usage > self.daily_api_limit

    def limit_info(self) -> str:
        """The ``Sforce-Limit-Info`` header value."""
        return f"api-usage={self.api_usage}/{self.daily_api_limit}"

    # --- handlers -----------------------------------------------------------------------------

    def _install_handlers(self, api: FastAPI) -> None:
        async def api_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, SalesforceAPIError)
            return JSONResponse([p.rest() for p in exc.problems], status_code=exc.status)

        async def record_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, RecordError)
            return JSONResponse([exc.problem.rest()], status_code=exc.status)

        async def soql_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, soql.SoqlError)
            return sf_error(400, exc.error_code, exc.message)

        async def bulk_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, BulkError)
            return sf_error(exc.status, exc.code, exc.message)

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, StarletteHTTPException)
            if exc.status_code == 405:
                return sf_error(
                    405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed."
                )
            return sf_error(exc.status_code, "NOT_FOUND", "The requested resource does not exist")

        async def validation_error(request: Request, exc: Exception) -> Response:
            return sf_error(400, "INVALID_QUERY_PARAMETER", f"Invalid request: {exc}")

        async def crash(request: Request, exc: Exception) -> Response:
            return sf_error(
                500, "UNKNOWN_EXCEPTION", f"An unexpected error occurred: {type(exc).__name__}"
            )

        api.add_exception_handler(SalesforceAPIError, api_error)
        api.add_exception_handler(RecordError, record_error)
        api.add_exception_handler(soql.SoqlError, soql_error)
        api.add_exception_handler(BulkError, bulk_error)
        api.add_exception_handler(StarletteHTTPException, http_error)
        api.add_exception_handler(RequestValidationError, validation_error)
        api.add_exception_handler(Exception, crash)

    # --- OAuth ---------------------------------------------------------------------------------

    def _oauth_routes(self, api: FastAPI) -> None:
        @api.post("/oauth2/token")
        async def token(request: Request) -> Response:
            form = {
                k: v[0]
                for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()
            }
            form.update({k: v for k, v in request.query_params.items() if k not in form})
            grant = form.get("grant_type", "")
            if grant == "password":
                return self._password_grant(form)
            if grant == "client_credentials":
                return self._client_credentials_grant(form, request.headers.get("authorization"))
            if grant == JWT_GRANT:
                return self._jwt_grant(form.get("assertion", ""))
            if grant == "refresh_token":
                return self._refresh_grant(form, request.headers.get("authorization"))
            if grant == "authorization_code":
                return self._code_grant(form, request.headers.get("authorization"))
            return _oauth_error("unsupported_grant_type", "grant type not supported")

        @api.get("/oauth2/authorize")
        async def authorize(request: Request) -> Response:
            return self._authorize(dict(request.query_params))

        @api.post("/oauth2/revoke")
        async def revoke(request: Request) -> Response:
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            value = (form.get("token") or [request.query_params.get("token", "")])[0]
            with self.lock:
                revoked = self.refresh_tokens.pop(value, None) or self.sessions.pop(value, None)
                if revoked is None:
                    return _oauth_error(
                        "unsupported_token_type", "this token type is not supported"
                    )
            return Response(status_code=200)

    def _client_ok(self, client_id: str | None, client_secret: str | None) -> JSONResponse | None:
        if client_id != SANDBOX_CONSUMER_KEY:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if client_secret is not None and client_secret != SANDBOX_CONSUMER_SECRET:
            return _oauth_error("invalid_client", "invalid client credentials")
        return None

    def _basic_client(
        self, form: dict[str, str], authorization: str | None
    ) -> tuple[str | None, str | None] | JSONResponse:
        """The client id and secret of a token request: HTTP Basic, else the form."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                return _oauth_error("invalid_client", "invalid client credentials")
            client_id, _, client_secret = decoded.partition(":")
        return client_id, client_secret

    def _refresh_grant(self, form: dict[str, str], authorization: str | None) -> Response:
        """Refresh-token flow: a new access token for the org of the refresh token (no new
        refresh token: the sandbox's connected app does not rotate them)."""
        client = self._basic_client(form, authorization)
        if isinstance(client, JSONResponse):
            return client
        refused = self._client_ok(*client)
        if refused is not None:
            return refused
        with self.lock:
            user = self.refresh_tokens.get(form.get("refresh_token", ""))
        if user is None:
            return _oauth_error("invalid_grant", "expired access/refresh token")
        return SalesforceJSON(self.issue_token(user, SANDBOX_CONSUMER_SECRET))

    def _authorize(self, params: dict[str, str]) -> Response:
        """The web-server flow's authorize page, approved at once by the integration user:
        a redirect to ``redirect_uri`` with ``code`` (and ``state``). The sandbox's connected
        app lists any loopback ``http://127.0.0.1:PORT/…`` or ``http://localhost:PORT/…`` as a
        callback URL; Salesforce shows an error page (no redirect) for an unknown client or
        callback."""
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if client_id != SANDBOX_CONSUMER_KEY:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        target = urlsplit(redirect_uri)
        if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost"):
            return _oauth_error("redirect_uri_mismatch", "redirect_uri must match configuration")
        state = {"state": params["state"]} if "state" in params else {}
        if params.get("response_type") != "code":
            query = {
                "error": "unsupported_response_type",
                "error_description": "response type not supported",
                **state,
            }
            return RedirectResponse(_with_query(redirect_uri, query), status_code=302)
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method", "S256")
        if challenge is not None and (method != "S256" or not _PKCE.match(challenge)):
            query = {
                "error": "invalid_request",
                "error_description": "invalid code_challenge",
                **state,
            }
            return RedirectResponse(_with_query(redirect_uri, query), status_code=302)
        code = "aPrx" + secrets.token_urlsafe(48)
        with self.lock:
            self.auth_codes[code] = _AuthCode(
                client_id, redirect_uri, challenge, time.monotonic() + AUTH_CODE_LIFETIME_S
            )
        return RedirectResponse(_with_query(redirect_uri, {"code": code, **state}), 302)

    def _code_grant(self, form: dict[str, str], authorization: str | None) -> Response:
        """The web-server flow's code exchange: the code once, for the same client and
        redirect URI, with the PKCE verifier when the authorize request had a challenge; the
        answer adds a refresh token."""
        client = self._basic_client(form, authorization)
        if isinstance(client, JSONResponse):
            return client
        client_id, client_secret = client
        refused = self._client_ok(client_id, client_secret)
        if refused is not None:
            return refused
        with self.lock:
            issued = self.auth_codes.pop(form.get("code", ""), None)
        if issued is None or issued.expires < time.monotonic() or issued.client_id != client_id:
            return _oauth_error("invalid_grant", "invalid authorization code")
        if form.get("redirect_uri") != issued.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri must match configuration")
        verifier = form.get("code_verifier")
        if issued.challenge is not None:
            if not verifier:
                return _oauth_error("invalid_grant", "invalid code verifier")
            digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not hmac.compare_digest(expected, issued.challenge):
                return _oauth_error("invalid_grant", "invalid code verifier")
        elif client_secret is None:
            # Without PKCE the web-server flow needs the consumer secret.
            return _oauth_error("invalid_client", "invalid client credentials")
        user = self.store.integration_user_id
        refresh = "5Aep861" + secrets.token_urlsafe(64)
        with self.lock:
            self.refresh_tokens[refresh] = user
        body = self.issue_token(user, SANDBOX_CONSUMER_SECRET)
        return SalesforceJSON({**body, "refresh_token": refresh, "scope": "refresh_token api"})

    def _password_grant(self, form: dict[str, str]) -> Response:
        refused = self._client_ok(form.get("client_id"), form.get("client_secret", ""))
        if refused is not None:
            return refused
        password = form.get("password", "")
        if form.get("username") != SANDBOX_USERNAME or password not in (
            SANDBOX_PASSWORD,
            SANDBOX_PASSWORD + SANDBOX_SECURITY_TOKEN,
        ):
            return _oauth_error("invalid_grant", "authentication failure")
        return JSONResponse(
            self.issue_token(self.store.integration_user_id, SANDBOX_CONSUMER_SECRET)
        )

    def _client_credentials_grant(
        self, form: dict[str, str], authorization: str | None
    ) -> Response:
        client = self._basic_client(form, authorization)
        if isinstance(client, JSONResponse):
            return client
        client_id, client_secret = client
        refused = self._client_ok(client_id, client_secret or "")
        if refused is not None:
            return refused
        body = self.issue_token(self.store.integration_user_id, SANDBOX_CONSUMER_SECRET)
        return JSONResponse({**body, "scope": "api", "token_format": "opaque"})

    def _jwt_grant(self, assertion: str) -> Response:
        """JWT bearer flow: ``iss`` must be the consumer key, ``sub`` the username, ``exp`` in
        the future. The RS256 signature is not verified (the sandbox has no uploaded cert)."""
        parts = assertion.split(".")
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (IndexError, ValueError, binascii.Error):
            return _oauth_error("invalid_grant", "invalid assertion")
        if not isinstance(claims, dict) or len(parts) != 3:
            return _oauth_error("invalid_grant", "invalid assertion")
        if claims.get("iss") != SANDBOX_CONSUMER_KEY:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if claims.get("sub") != SANDBOX_USERNAME:
            return _oauth_error("invalid_grant", "user hasn't approved this consumer")
        try:
            expired = float(claims.get("exp", 0)) < time.time()
        except (TypeError, ValueError):
            expired = True
        if expired:
            return _oauth_error("invalid_grant", "expired access/refresh token")
        return JSONResponse(
            self.issue_token(self.store.integration_user_id, SANDBOX_CONSUMER_SECRET)
        )

    # --- REST -----------------------------------------------------------------------------------

    def _sobject(self, name: str) -> SObjectDef:
        sobject = self.store.sobject(name)
        if sobject is None:
            raise not_found()
        return sobject

    def _rest_routes(self, api: FastAPI) -> None:
        def route(path: str, methods: list[str]) -> Callable[[Handler], Handler]:
            """Register ``path`` with and without a trailing slash (simple-salesforce sends
            both ``sobjects/Lead/`` and ``query/``)."""

            def register(handler: Handler) -> Handler:
                for variant in {path, path.rstrip("/") + "/"}:
                    api.add_api_route(variant, handler, methods=methods)
                return handler

            return register

        @route("/data", ["GET"])
        async def versions() -> Response:
            return JSONResponse(
                [
                    {"label": f"v{v}.0", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                    for v in range(int(MIN_VERSION), int(MAX_VERSION) + 1)
                ]
            )

        @route("/data/v{version}", ["GET"])
        async def resources(version: str) -> Response:
            _check_version(version)
            base = f"/services/data/v{version}"
            names = ["sobjects", "query", "queryAll", "composite", "limits", "jobs"]
            return JSONResponse({name: f"{base}/{name}" for name in names})

        @route("/data/v{version}/limits", ["GET"])
        async def limits(version: str) -> Response:
            _check_version(version)
            with self.lock:
                used = self.api_usage
                limit = self.daily_api_limit
            return JSONResponse(
                {
                    "DailyApiRequests": {"Max": limit, "Remaining": max(limit - used, 0)},
                    "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                    "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
                    "DataStorageMB": {"Max": 5, "Remaining": 5},
                    "HourlyODataCallout": {"Max": 10000, "Remaining": 10000},
                }
            )

        @route("/data/v{version}/sobjects", ["GET"])
        async def global_describe(version: str) -> Response:
            _check_version(version)
            with self.lock:
                objects = [s.basic(version) for s in self.store.schema.values()]
            return JSONResponse({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects})

        @route("/data/v{version}/sobjects/{sobject}/describe", ["GET"])
        async def describe(version: str, sobject: str, request: Request) -> Response:
            _check_version(version)
            with self.lock:
                spec = self._sobject(sobject)
                # "Get Object Metadata Changes": unchanged since If-Modified-Since -> 304. The
                # header has whole seconds: a change within that second counts as later.
                since = _http_date(request.headers.get("if-modified-since"))
                if since is not None and self.schema_changed_at.replace(microsecond=0) < since:
                    return Response(status_code=304)
                return JSONResponse(spec.describe(version))

        @route("/data/v{version}/sobjects/{sobject}/updated", ["GET"])
        async def updated(version: str, sobject: str, request: Request) -> Response:
            _check_version(version)
            start, end = _window(request)
            with self.lock:
                spec = self._sobject(sobject)
                ids = [
                    rid
                    for rid, rec in self.store.records[spec.name].items()
                    if not rec.get("IsDeleted") and start <= rec["SystemModstamp"] < end
                ]
            return JSONResponse({"ids": ids, "latestDateCovered": _iso(end)})

        @route("/data/v{version}/sobjects/{sobject}/deleted", ["GET"])
        async def deleted(version: str, sobject: str, request: Request) -> Response:
            _check_version(version)
            start, end = _window(request)
            with self.lock:
                spec = self._sobject(sobject)
                gone = [
                    {"id": rid, "deletedDate": _iso(rec["SystemModstamp"])}
                    for rid, rec in self.store.records[spec.name].items()
                    if rec.get("IsDeleted") and start <= rec["SystemModstamp"] < end
                ]
            return JSONResponse(
                {
                    "deletedRecords": gone,
                    "earliestDateAvailable": _iso(start),
                    "latestDateCovered": _iso(end),
                }
            )

        @route("/data/v{version}/sobjects/{sobject}", ["GET", "POST"])
        async def sobject_root(version: str, sobject: str, request: Request) -> Response:
            _check_version(version)
            if request.method == "GET":
                with self.lock:
                    spec = self._sobject(sobject)
                    recent = [
                        self.store.render(
                            spec, rec, version, ["Id", "Name"] if "Name" in spec.fields else ["Id"]
                        )
                        for rec in list(self.store.records[spec.name].values())[-10:]
                        if not rec.get("IsDeleted")
                    ]
                    return JSONResponse(
                        {"objectDescribe": spec.basic(version), "recentItems": recent}
                    )
            body = await _json_body(request)
            with self.lock:
                spec = self._sobject(sobject)
                values = self.store.deserialize(spec, body)
                record_id = self.store.create(
                    spec, values, _user(request), allow_save=_allow_save(request)
                )
            return JSONResponse({"id": record_id, "success": True, "errors": []}, status_code=201)

        @api.api_route(
            "/data/v{version}/sobjects/{sobject}/{record_id}", methods=["GET", "PATCH", "DELETE"]
        )
        async def record(version: str, sobject: str, record_id: str, request: Request) -> Response:
            _check_version(version)
            if request.method == "GET":
                with self.lock:
                    spec = self._sobject(sobject)
                    rec = self.store.get(spec, record_id)
                    if rec.get("IsDeleted"):
                        raise not_found()
                    names = _field_list(spec, request.query_params.get("fields"))
                    return JSONResponse(self.store.render(spec, rec, version, names))
            body = await _json_body(request) if request.method == "PATCH" else None
            with self.lock:
                spec = self._sobject(sobject)
                rec = self.store.get(spec, record_id)
                if rec.get("IsDeleted"):
                    raise RecordError(Problem("ENTITY_IS_DELETED", "entity is deleted"), 404)
                if request.method == "DELETE":
                    self.store.delete(spec, rec["Id"])
                    return Response(status_code=204)
                values = self.store.deserialize(spec, body)
                if "Id" in values:
                    raise RecordError(
                        Problem(
                            "INVALID_FIELD",
                            "The Id field should not be specified in the sobject data.",
                        )
                    )
                self.store.update(
                    spec, rec["Id"], values, _user(request), allow_save=_allow_save(request)
                )
            return Response(status_code=204)

        @api.api_route(
            "/data/v{version}/sobjects/{sobject}/{field}/{value:path}", methods=["GET", "PATCH"]
        )
        async def by_external_id(
            version: str, sobject: str, field: str, value: str, request: Request
        ) -> Response:
            _check_version(version)
            if request.method == "GET":
                with self.lock:
                    spec = self._sobject(sobject)
                    key = self.store.upsert_key(spec, field)
                    matches = self.store.lookup(spec, key.name, value)
                    if not matches:
                        raise not_found()
                    if len(matches) > 1:
                        return _multiple(spec, version, matches)
                    rec = self.store.records[spec.name][matches[0]]
                    names = _field_list(spec, request.query_params.get("fields"))
                    return JSONResponse(self.store.render(spec, rec, version, names))
            body = await _json_body(request)
            with self.lock:
                spec = self._sobject(sobject)
                key = self.store.upsert_key(spec, field)
                values = self.store.deserialize(spec, body)
                for name in {"Id", key.name} & values.keys():
                    raise RecordError(
                        Problem(
                            "INVALID_FIELD",
                            f"The {name} field should not be specified in the sobject data.",
                        )
                    )
                try:
                    record_id, created = self.store.upsert(
                        spec, key, value, values, _user(request), allow_save=_allow_save(request)
                    )
                except MultipleMatches as exc:
                    return _multiple(spec, version, exc.ids)
            result = {"id": record_id, "success": True, "errors": [], "created": created}
            if created:
                return JSONResponse(result, status_code=201)
            # Upsert-update answers 200 with a body from v46.0, 204 before (crm-api-facts §2).
            if float(version) >= 46.0:
                return JSONResponse(result, status_code=200)
            return Response(status_code=204)

        @route("/data/v{version}/query", ["GET"])
        async def query(version: str, request: Request) -> Response:
            return self._query(version, request, include_deleted=False)

        @route("/data/v{version}/queryAll", ["GET"])
        async def query_all(version: str, request: Request) -> Response:
            return self._query(version, request, include_deleted=True)

        @api.get("/data/v{version}/query/{locator}")
        async def query_more(version: str, locator: str) -> Response:
            return self._query_more(version, locator)

        @api.get("/data/v{version}/queryAll/{locator}")
        async def query_all_more(version: str, locator: str) -> Response:
            return self._query_more(version, locator)

        @route("/data/v{version}/composite", ["POST"])
        async def composite(version: str, request: Request) -> Response:
            _check_version(version)
            return self._composite(version, await _json_body(request))

        @route("/data/v{version}/composite/sobjects", ["POST", "PATCH", "DELETE"])
        async def collections(version: str, request: Request) -> Response:
            _check_version(version)
            if request.method == "DELETE":
                return self._collection_delete(request)
            body = await _json_body(request)
            records, all_or_none = _collection_body(body)
            with self.lock:
                if request.method == "POST":
                    return self._collection_write(records, all_or_none, request, "create")
                return self._collection_write(records, all_or_none, request, "update")

        @route("/data/v{version}/composite/sobjects/{sobject}/{field}", ["PATCH"])
        async def collection_upsert(
            version: str, sobject: str, field: str, request: Request
        ) -> Response:
            _check_version(version)
            body = await _json_body(request)
            records, all_or_none = _collection_body(body)
            with self.lock:
                spec = self._sobject(sobject)
                key = self.store.upsert_key(spec, field)
                return self._collection_write(
                    records, all_or_none, request, "upsert", spec, key.name
                )

        @route("/data/v{version}/tooling/sobjects/CustomField", ["POST"])
        async def create_custom_field(version: str, request: Request) -> Response:
            _check_version(version)
            body = await _json_body(request)
            if not isinstance(body, dict):
                return sf_error(400, "JSON_PARSER_ERROR", "the body must be a JSON object")
            with self.lock:
                try:
                    sobject_name, name = split_full_name(body.get("FullName"))
                    sobject = self.store.sobject(sobject_name)
                    if sobject is None:
                        raise ToolingError("INVALID_TYPE", f"no such sObject: {sobject_name}")
                    spec = field_from_metadata(sobject, name, body.get("Metadata"))
                except ToolingError as error:
                    return sf_error(error.status, error.code, error.message, fields=[])
                # a field deleted earlier left no values behind: the new one starts empty
                for record in self.store.records[sobject.name].values():
                    record.pop(spec.name, None)
                sobject.add_field(spec)
                if spec.external_id:
                    self.store.indexes[sobject.name][spec.name] = {}
                self.schema_changed_at = datetime.now(UTC)
                self._field_sequence += 1
                field_id = make_id("00N", self._field_sequence)
            return SalesforceJSON(
                {"id": field_id, "success": True, "errors": [], "warnings": [], "infos": []},
                status_code=201,
            )

    # --- query ------------------------------------------------------------------------------------

    def _query(self, version: str, request: Request, *, include_deleted: bool) -> Response:
        _check_version(version)
        text = request.query_params.get("q")
        if not text:
            return sf_error(400, "MALFORMED_QUERY", "A query string has to be specified")
        batch = _batch_size(request.headers.get("sforce-query-options", ""))
        return JSONResponse(self._query_body(version, text, batch, include_deleted=include_deleted))

    def _query_body(
        self, version: str, text: str, batch: int, *, include_deleted: bool
    ) -> dict[str, Any]:
        """The first page of a query's answer (SoqlError for a bad query)."""
        with self.lock:
            bound = soql.compile_query(text, self.store.schema, self.store.resolve)
            rows = [
                record
                for record in self.store.candidates(
                    bound.sobject, bound.hints, include_deleted=include_deleted
                )
                if (include_deleted or not record.get("IsDeleted")) and bound.matches(record)
            ]
            if bound.count_only:
                return {"totalSize": len(rows), "done": True, "records": []}
            rows = bound.order(rows)
            endpoint = "queryAll" if include_deleted else "query"
            cursor = _Cursor(rows, bound, version, endpoint)
            return self._page(cursor, None, 0, batch)

    # --- composite ----------------------------------------------------------------------------

    def _composite(self, version: str, body: Any) -> Response:
        """``POST /composite`` with query / queryAll and sObject describe subrequests (the
        sandbox runs no others).

        At most 25 subrequests, of which at most 5 queries (Salesforce's Composite limits); each
        subrequest answers ``{body, httpHeaders, httpStatusCode, referenceId}``. The whole call
        counts as one API request.
        """
        requests = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise SalesforceAPIError(
                400, Problem("JSON_PARSER_ERROR", "compositeRequest is required and not empty")
            )
        if len(requests) > COMPOSITE_MAX_SUBREQUESTS:
            # Wording unverified; the limit of 25 subrequests is Salesforce's.
            raise SalesforceAPIError(
                400,
                Problem(
                    "INVALID_FIELD",
                    f"Composite request can't have more than {COMPOSITE_MAX_SUBREQUESTS} "
                    "subrequests",
                ),
            )
        queries = sum(1 for item in requests if _composite_query(item) is not None)
        if queries > COMPOSITE_MAX_QUERIES:
            # Wording unverified; at most 5 query operations per call is Salesforce's limit.
            raise SalesforceAPIError(
                400,
                Problem(
                    "INVALID_FIELD",
                    f"Composite request can't have more than {COMPOSITE_MAX_QUERIES} "
                    "query operations",
                ),
            )
        answers = []
        for index, item in enumerate(requests):
            if not isinstance(item, dict):
                raise SalesforceAPIError(
                    400, Problem("JSON_PARSER_ERROR", f"subrequest {index} is not an object")
                )
            reference = str(item.get("referenceId") or "")
            status, answer = self._subrequest(version, item)
            answers.append(
                {
                    "body": answer,
                    "httpHeaders": {},
                    "httpStatusCode": status,
                    "referenceId": reference,
                }
            )
        return JSONResponse({"compositeResponse": answers})

    def _subrequest(self, version: str, item: dict[str, Any]) -> tuple[int, Any]:
        query = _composite_query(item)
        get = str(item.get("method", "")).upper() == "GET"
        described = _COMPOSITE_DESCRIBE.match(str(item.get("url") or "")) if get else None
        if described is not None:
            with self.lock:
                spec = self.store.sobject(described.group(2))
                if spec is None:
                    return 404, [not_found().problem.rest()]
                return 200, spec.describe(version)
        if query is None or not get:
            return 400, [
                {
                    "errorCode": "NOT_SUPPORTED",
                    "message": "the sandbox's composite runs query, queryAll and describe "
                    "subrequests only",
                }
            ]
        endpoint, text = query
        if not text:
            return 400, [
                {"errorCode": "MALFORMED_QUERY", "message": "A query string has to be specified"}
            ]
        try:
            answer = self._query_body(
                version, text, QUERY_BATCH_SIZE, include_deleted=endpoint == "queryAll"
            )
        except soql.SoqlError as exc:
            return 400, [{"errorCode": exc.error_code, "message": exc.message}]
        return 200, answer

    def _page(self, cursor: _Cursor, locator: str | None, start: int, batch: int) -> dict[str, Any]:
        end = start + batch
        page = cursor.rows[start:end]
        body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
        if end < len(cursor.rows):
            if locator is None:
                self._cursor_sequence += 1
                locator = make_id("01g", self._cursor_sequence)
                self.cursors[locator] = cursor
                while len(self.cursors) > MAX_OPEN_CURSORS:
                    self.cursors.popitem(last=False)
            body["nextRecordsUrl"] = (
                f"/services/data/v{cursor.version}/{cursor.endpoint}/{locator}-{end}"
            )
        elif locator is not None:
            self.cursors.pop(locator, None)
        body["records"] = [cursor.bound.project(record, cursor.version) for record in page]
        return body

    def _query_more(self, version: str, locator: str) -> Response:
        _check_version(version)
        cursor_id, _, offset = locator.partition("-")
        with self.lock:
            cursor = self.cursors.get(cursor_id)
            if cursor is None or not offset.isdigit() or int(offset) > len(cursor.rows):
                return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            return JSONResponse(self._page(cursor, cursor_id, int(offset), QUERY_BATCH_SIZE))

    # --- collections ------------------------------------------------------------------------------

    def _collection_write(
        self,
        records: list[Any],
        all_or_none: bool,
        request: Request,
        operation: str,
        target: SObjectDef | None = None,
        key: str | None = None,
    ) -> Response:
        user, allow_save = _user(request), _allow_save(request)
        prepared: list[tuple[SObjectDef, dict[str, Any]]] = []
        for item in records:
            if not isinstance(item, dict):
                raise SalesforceAPIError(
                    400,
                    Problem(
                        "JSON_PARSER_ERROR",
                        "Cannot deserialize SObject: each record must be a JSON object",
                    ),
                )
            attributes = item.get("attributes")
            type_name = attributes.get("type") if isinstance(attributes, dict) else None
            if not isinstance(type_name, str):
                raise SalesforceAPIError(
                    400,
                    Problem(
                        "JSON_PARSER_ERROR", "Can not deserialize SObject, no attributes.type found"
                    ),
                )
            spec = self.store.sobject(type_name)
            if spec is None or (target is not None and spec.name != target.name):
                raise SalesforceAPIError(
                    400, Problem("INVALID_TYPE", f"sObject type '{type_name}' is not supported.")
                )
            try:
                prepared.append((spec, self.store.deserialize(spec, item)))
            except RequestError as exc:
                raise SalesforceAPIError(400, exc.problem) from None
        keys: dict[Any, int] = {}
        if key is not None:
            for _, values in prepared:
                value = values.get(key)
                if value is not None:
                    folded = value.lower() if isinstance(value, str) else value
                    keys[folded] = keys.get(folded, 0) + 1
        journal: Journal = []
        results: list[dict[str, Any]] = []
        failed = False
        for spec, values in prepared:
            try:
                result = self._write_one(
                    spec, values, operation, key, keys, user, allow_save, journal
                )
                results.append(result)
            except RecordError as exc:
                failed = True
                results.append({"success": False, "errors": [exc.problem.save_result()]})
        if all_or_none and failed:
            self.store.rollback(journal)
            rolled = Problem("ALL_OR_NONE_OPERATION_ROLLED_BACK", ROLLED_BACK)
            results = [
                r
                if not r["success"]
                else {"id": None, "success": False, "errors": [rolled.save_result()]}
                for r in results
            ]
            if operation == "upsert":
                for r in results:
                    r.setdefault("created", False)
        return JSONResponse(results)

    def _write_one(
        self,
        spec: SObjectDef,
        values: dict[str, Any],
        operation: str,
        key: str | None,
        keys: dict[Any, int],
        user: str,
        allow_save: bool,
        journal: Journal,
    ) -> dict[str, Any]:
        if operation == "create":
            if "Id" in values:
                raise RecordError(
                    Problem("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
                )
            record_id = self.store.create(
                spec, values, user, allow_save=allow_save, journal=journal
            )
            return {"id": record_id, "success": True, "errors": []}
        if operation == "update":
            record_id = values.pop("Id", None)
            if not record_id:
                raise RecordError(
                    Problem("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
                )
            self.store.update(spec, record_id, values, user, allow_save=allow_save, journal=journal)
            return {"id": self.store.get(spec, record_id)["Id"], "success": True, "errors": []}
        assert key is not None
        value = values.pop(key, None) if key != "Id" else values.pop("Id", None)
        if value is None:
            raise RecordError(Problem("MISSING_ARGUMENT", f"{key} not specified", [key]))
        if keys.get(value.lower() if isinstance(value, str) else value, 0) > 1:
            raise RecordError(
                Problem("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [key])
            )
        try:
            record_id, created = self.store.upsert(
                spec, spec.fields[key], value, values, user, allow_save=allow_save, journal=journal
            )
        except MultipleMatches as exc:
            message = (
                f"{key}: more than one record found for external id field: [{', '.join(exc.ids)}]"
            )
            raise RecordError(Problem("DUPLICATE_EXTERNAL_ID", message, [key])) from None
        return {"id": record_id, "success": True, "errors": [], "created": created}

    def _collection_delete(self, request: Request) -> Response:
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        if not ids:
            return sf_error(400, "MISSING_ARGUMENT", "ids parameter is required")
        if len(ids) > COLLECTION_LIMIT:
            return _too_many()
        all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
        journal: Journal = []
        results: list[dict[str, Any]] = []
        failed = False
        with self.lock:
            for raw in ids:
                spec = next(
                    (s for s in self.store.schema.values() if raw.startswith(s.key_prefix)), None
                )
                try:
                    if spec is None:
                        raise RecordError(Problem("MALFORMED_ID", f"malformed id {raw}"))
                    record_id = self.store.get(spec, raw)["Id"]
                    self.store.delete(spec, record_id, journal=journal)
                    results.append({"id": record_id, "success": True, "errors": []})
                except RecordError as exc:
                    failed = True
                    problem = exc.problem
                    if problem.code == "NOT_FOUND":
                        problem = Problem(
                            "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
                        )
                    results.append({"id": raw, "success": False, "errors": [problem.save_result()]})
            if all_or_none and failed:
                self.store.rollback(journal)
                rolled = Problem("ALL_OR_NONE_OPERATION_ROLLED_BACK", ROLLED_BACK).save_result()
                results = [
                    r if not r["success"] else {**r, "success": False, "errors": [rolled]}
                    for r in results
                ]
        return JSONResponse(results)

    # --- Bulk API 2.0 -----------------------------------------------------------------------------

    def _bulk_routes(self, api: FastAPI) -> None:
        base = "/data/v{version}/jobs"

        @api.api_route(base + "/ingest", methods=["GET", "POST"])
        @api.api_route(base + "/ingest/", methods=["GET", "POST"])
        async def ingest_jobs(version: str, request: Request) -> Response:
            _check_version(version)
            if request.method == "GET":
                with self.lock:
                    return JSONResponse(self.bulk.list_jobs("ingest"))
            body = await _json_body(request)
            with self.lock:
                job = self.bulk.create_ingest(body, _user(request), version)
                return JSONResponse(job.info())

        @api.api_route(base + "/ingest/{job_id}", methods=["GET", "PATCH", "DELETE"])
        async def ingest_job(version: str, job_id: str, request: Request) -> Response:
            _check_version(version)
            body = await _json_body(request) if request.method == "PATCH" else None
            with self.lock:
                if request.method == "GET":
                    return JSONResponse(self.bulk.get("ingest", job_id).info())
                if request.method == "DELETE":
                    self.bulk.delete("ingest", job_id)
                    return Response(status_code=204)
                return JSONResponse(self.bulk.set_state(job_id, body, _user(request)).info())

        @api.put(base + "/ingest/{job_id}/batches")
        async def upload(version: str, job_id: str, request: Request) -> Response:
            _check_version(version)
            data = await request.body()
            with self.lock:
                self.bulk.upload(job_id, data)
            return Response(status_code=201)

        @api.get(base + "/ingest/{job_id}/{kind}")
        async def ingest_results(version: str, job_id: str, kind: str) -> Response:
            _check_version(version)
            if kind.lower() not in ("successfulresults", "failedresults", "unprocessedrecords"):
                raise not_found()
            with self.lock:
                text = self.bulk.ingest_results(job_id, kind.lower())
            return Response(text, media_type="text/csv")

        @api.api_route(base + "/query", methods=["GET", "POST"])
        @api.api_route(base + "/query/", methods=["GET", "POST"])
        async def query_jobs(version: str, request: Request) -> Response:
            _check_version(version)
            if request.method == "GET":
                with self.lock:
                    return JSONResponse(self.bulk.list_jobs("query"))
            body = await _json_body(request)
            with self.lock:
                job = self.bulk.create_query(body, _user(request), version)
                info = job.info()
            # A new query job reports UploadComplete; it is JobComplete on the next GET.
            return JSONResponse({**info, "state": "UploadComplete"})

        @api.api_route(base + "/query/{job_id}", methods=["GET", "PATCH", "DELETE"])
        async def query_job(version: str, job_id: str, request: Request) -> Response:
            _check_version(version)
            body = await _json_body(request) if request.method == "PATCH" else None
            with self.lock:
                if request.method == "GET":
                    return JSONResponse(self.bulk.get("query", job_id).info())
                if request.method == "DELETE":
                    self.bulk.delete("query", job_id)
                    return Response(status_code=204)
                return JSONResponse(self.bulk.abort_query(job_id, body).info())

        @api.get(base + "/query/{job_id}/results")
        async def query_results(version: str, job_id: str, request: Request) -> Response:
            _check_version(version)
            raw_max = request.query_params.get("maxRecords")
            if raw_max is not None and not raw_max.isdigit():
                raise BulkError(400, "INVALIDREQUEST", f"Invalid maxRecords: {raw_max}")
            with self.lock:
                text, locator, count = self.bulk.query_results(
                    job_id, request.query_params.get("locator"), int(raw_max) if raw_max else None
                )
            return Response(
                text,
                media_type="text/csv",
                headers={"Sforce-Locator": locator, "Sforce-NumberOfRecords": str(count)},
            )


class _ApiGate:
    """In front of the FastAPI app: session check, API usage count, limit, Sforce-Limit-Info."""

    def __init__(self, emulator: SalesforceEmulator, app: ASGIApp) -> None:
        self.emulator = emulator
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        send = vendor_headers(send)
        if not path.startswith("/data/") or path.rstrip("/") == "/data":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        user = self.emulator.session_user(headers.get("authorization"))
        if user is None:
            response = sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            await response(scope, receive, send)
            return
        _, over = self.emulator.count_call()
        limit_header = (b"Sforce-Limit-Info", self.emulator.limit_info().encode())
        if over:
            response = sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            response.headers["Sforce-Limit-Info"] = self.emulator.limit_info()
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["sf_user"] = user

        async def with_limit_info(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), limit_header]}
            await send(message)

        await self.app(scope, receive, with_limit_info)


# --- helpers -------------------------------------------------------------------------------------


def _http_date(value: str | None) -> datetime | None:
    """An HTTP-date header value as an aware datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _composite_query(item: Any) -> tuple[str, str] | None:
    """``(endpoint, SOQL)`` of a composite subrequest to query / queryAll, else None."""
    url = item.get("url") if isinstance(item, dict) else None
    match = _COMPOSITE_QUERY.match(str(url or ""))
    if match is None:
        return None
    text = parse_qs(match.group(3)).get("q", [""])[0]
    return match.group(2), text


def _check_version(version: str) -> None:
    if not _VERSION.match(version) or not MIN_VERSION <= float(version) <= MAX_VERSION:
        raise not_found()


def _user(request: Request) -> str:
    return str(request.state.sf_user)


def _allow_save(request: Request) -> bool:
    header = request.headers.get("sforce-duplicate-rule-header", "")
    return "allowsave=true" in header.replace(" ", "").lower()


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
        # A lone surrogate (``"\\ud800"``) decodes to no Unicode text: refused like bad UTF-8.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise SalesforceAPIError(
            400, Problem("JSON_PARSER_ERROR", f"Invalid UTF-8 or JSON in the request body: {exc}")
        ) from None
    return body


def _collection_body(body: Any) -> tuple[list[Any], bool]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise SalesforceAPIError(
            400,
            Problem(
                "JSON_PARSER_ERROR", 'The request body must be {"allOrNone": …, "records": […]}'
            ),
        )
    records: list[Any] = body["records"]
    if len(records) > COLLECTION_LIMIT:
        raise SalesforceAPIError(
            400,
            Problem(
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            ),
        )
    return records, bool(body.get("allOrNone", False))


def _too_many() -> Response:
    return sf_error(
        400,
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )


def _multiple(spec: SObjectDef, version: str, ids: list[str]) -> Response:
    urls = [f"/services/data/v{version}/sobjects/{spec.name}/{rid}" for rid in ids]
    return JSONResponse(urls, status_code=300)


def _field_list(spec: SObjectDef, raw: str | None) -> list[str] | None:
    if not raw:
        return None
    names = []
    for name in (part.strip() for part in raw.split(",") if part.strip()):
        field = spec.field(name)
        if field is None:
            raise RecordError(
                Problem(
                    "INVALID_FIELD",
                    f"No such column '{name}' on entity '{spec.name}'. If you are attempting to "
                    "use a custom field, be sure to append the '__c' after the custom field name. "
                    "Please reference your WSDL or the describe call for the appropriate names.",
                )
            )
        names.append(field.name)
    return names


def _batch_size(options: str) -> int:
    match = re.search(r"batchSize=(\d+)", options)
    if match is None:
        return QUERY_BATCH_SIZE
    return min(max(int(match.group(1)), 200), QUERY_BATCH_SIZE)


def _window(request: Request) -> tuple[Any, Any]:
    start = parse_datetime(request.query_params.get("start", ""))
    end = parse_datetime(request.query_params.get("end", ""))
    if start is None or end is None or end <= start:
        raise SalesforceAPIError(
            400,
            Problem(
                "INVALID_REPLICATION_DATE", "start and end must be datetimes, start before end"
            ),
        )
    return start, end


def _iso(value: Any) -> str:
    return format_datetime(value)
