"""The Zoho CRM v7 emulator: accounts token endpoint, Leads records, search, COQL, metadata.

Mounted under ``/zoho``: the accounts server is ``/zoho/accounts`` (token endpoint
``/zoho/accounts/oauth/v2/token``) and the API domain is ``/zoho`` (``/zoho/crm/v7/Leads``).
The Accounts and Tasks modules (:mod:`leadrelay.sandbox.zoho.modules`) take inserts and answer
reads by id and paged lists.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message

from leadrelay.sandbox.base import Emulator, SchemaChangeError
from leadrelay.sandbox.zoho.composite import (
    COMPOSITE_CONCURRENCY,
    CompositeRequest,
    CompositeRequestError,
    ReferenceError_,
    SubRequest,
    parse_composite,
    record_limit,
    references_in,
    resolve_references,
    sub_request_error,
    sub_request_success,
)
from leadrelay.sandbox.zoho.coql import CoqlError, parse_query, query_module
from leadrelay.sandbox.zoho.criteria import CriteriaError, parse_criteria
from leadrelay.sandbox.zoho.fields import MAX_FIELDS, FieldError, field_from_item
from leadrelay.sandbox.zoho.modules import AccountStore, ContactStore, DealStore, TaskStore
from leadrelay.sandbox.zoho.schema import (
    API_USER,
    SEEDED_USERS,
    UNDELETABLE,
    ValueError_,
    parse_datetime,
)
from leadrelay.sandbox.zoho.store import (
    MAX_RECORDS_PER_CALL,
    LeadStore,
    RecordResult,
    StoredRecord,
    batch_status,
    error_result,
    iso,
)

#: Sandbox-only OAuth client of the emulated Zoho org (never a real credential).
SANDBOX_CLIENT_ID = "1000.SANDBOXLEADRELAYCLIENT0000000000"
SANDBOX_CLIENT_SECRET = "sandbox-zoho-client-secret-0000000000000000"
SANDBOX_REFRESH_TOKEN = "1000.sandboxrefresh00000000000000000000.sandboxrefresh000000000000000000"
SANDBOX_SCOPE = (
    "ZohoCRM.modules.ALL ZohoCRM.settings.ALL ZohoCRM.users.READ ZohoCRM.coql.READ "
    "ZohoCRM.composite_requests.CUSTOM"
)

#: A self-client grant code is valid for minutes (the console offers 3 to 10), once.
GRANT_CODE_LIFETIME_S = 600.0
#: ``type`` values of Get Users (users API doc / the SDK's ``GetUsersParam``).
USER_TYPES = (
    "AllUsers",
    "ActiveUsers",
    "DeactiveUsers",
    "ConfirmedUsers",
    "NotConfirmedUsers",
    "DeletedUsers",
    "ActiveConfirmedUsers",
    "AdminUsers",
    "ActiveConfirmedAdmins",
    "CurrentUser",
)
#: ``type`` values of Get Deleted Records.
DELETED_TYPES = ("all", "recycle", "permanent")

MAX_PER_PAGE = 200
#: Get Records: ``page`` reaches only the first 2,000 records; beyond it ``page_token``.
DISCRETE_PAGINATION_LIMIT = 2000
#: Get Records: ``page_token`` reaches 100,000 records; tokens expire after a day.
TOKEN_PAGINATION_LIMIT = 100_000
PAGE_TOKEN_LIFETIME = timedelta(days=1)
SEARCH_RESULT_LIMIT = 2000
SORTABLE = ("id", "Created_Time", "Modified_Time")
MAX_FIELDS_PARAM = 50
#: Modules besides Leads: insert, read by id, paged list and field metadata.
OTHER_MODULES = ("Accounts", "Tasks", "Contacts", "Deals")
#: Of those, the modules that take updates by id too (Update Records).
UPDATABLE_MODULES = ("Contacts", "Deals")
#: ``converted`` values of Get Records and Search Records (Leads): unconverted only (the
#: default), converted only, or both.
CONVERTED_CHOICES = ("false", "true", "both")
#: API credits one Convert Lead call costs (API limits doc; crm-api-facts §3).
CONVERT_CREDITS = 5

Handler = Callable[[Request], Awaitable[Response]]

#: True while a composite call runs its sub-requests (they are not charged on their own).
_IN_COMPOSITE: ContextVar[bool] = ContextVar("zoho_in_composite", default=False)
#: The record limit of the composite sub-request being run (None outside one or unlimited).
_RECORD_LIMIT: ContextVar[int | None] = ContextVar("zoho_record_limit", default=None)


def zoho_error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    """Zoho's error body: ``{code, details, message, status: "error"}``."""
    body = {"code": code, "details": details or {}, "message": message, "status": "error"}
    return JSONResponse(body, status_code=status)


class ZohoApiError(Exception):
    """Raised inside a handler to answer with a Zoho error body."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.response = zoho_error(status, code, message, details)


@dataclass
class PageCursor:
    """Server-side state behind an opaque ``page_token``."""

    signature: tuple[Any, ...]
    offset: int
    page: int
    expires: datetime


class ZohoEmulator(Emulator):
    """Zoho CRM v7 (Leads module) with Zoho Accounts' refresh-token grant."""

    name = "zoho"
    prefix = "/zoho"

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        #: access token lifetime in seconds (``expires_in``); tests may shorten it
        self.token_lifetime_s: float = 3600.0
        #: Token Validity doc: at most 10 access tokens per refresh token per 10 minutes
        self.token_limit = 10
        self.token_window_s = 600.0
        #: API credits per rolling 24 h (Professional base 50,000 — crm-api-facts §3)
        self.credit_limit = 50_000
        #: concurrent API calls (Professional: 15 — crm-api-facts §3)
        self.concurrency_limit = 15
        self._auth_lock = threading.Lock()
        self.in_flight = 0

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop records, tokens, cursors and credit usage; restore schema and users."""
        with self.lock:
            self.store = LeadStore()
            self.modules: dict[str, LeadStore] = {
                "Leads": self.store,
                "Accounts": AccountStore(),
                "Tasks": TaskStore(self._record_name),
                "Contacts": ContactStore(self._record_name),
                "Deals": DealStore(self._record_name),
            }
            self.cursors: dict[str, PageCursor] = {}
            #: merge jobs: job id -> master record id (every job completes at once)
            self.merge_jobs: dict[str, str] = {}
            self._field_sequence = 0
        with self._auth_lock:
            self.access_tokens: dict[str, float] = {}
            #: refresh tokens the accounts server takes: the sandbox's own and those issued
            #: for a grant code
            self.refresh_tokens: set[str] = {SANDBOX_REFRESH_TOKEN}
            #: unused grant codes and when they expire (monotonic)
            self.grant_codes: dict[str, float] = {}
            self.token_issues: dict[str, deque[float]] = {}
            self.credit_log: deque[tuple[float, int]] = deque()
            self.credits_used = 0
            self.in_flight = 0

    def env(self) -> dict[str, str]:
        """DESIGN §10 keys for Zoho."""
        return {
            "ZOHO_ACCOUNTS_URL": f"{self.base_url}/accounts",
            "ZOHO_API_DOMAIN": self.base_url,
            "ZOHO_CLIENT_ID": SANDBOX_CLIENT_ID,
            "ZOHO_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
            "ZOHO_REFRESH_TOKEN": SANDBOX_REFRESH_TOKEN,
        }

    def _record_name(self, module: str, record_id: str) -> str | None:
        """The display name of a record a lookup names; None when there is none (lock held)."""
        store = self.modules.get(module)
        record = store.records.get(record_id) if store is not None else None
        if record is None or store is None:
            return None
        return store.display_name(record)

    def expire_tokens(self) -> None:
        """Make every issued access token invalid (as if an hour had passed)."""
        with self._auth_lock:
            self.access_tokens.clear()

    def credits_remaining(self) -> int:
        """Credits left in the rolling 24-hour window."""
        with self._auth_lock:
            self._expire_credits(time.monotonic())
            return self.credit_limit - self.credits_used

    def _expire_credits(self, now: float) -> None:
        while self.credit_log and now - self.credit_log[0][0] >= 86_400:
            self.credits_used -= self.credit_log.popleft()[1]

    def charge(self, cost: int) -> bool:
        """Spend API credits; False when the 24-hour budget does not cover them. A composite
        call's sub-requests cost nothing of their own (the composite call is charged)."""
        if _IN_COMPOSITE.get():
            return True
        now = time.monotonic()
        with self._auth_lock:
            self._expire_credits(now)
            if self.credits_used + cost > self.credit_limit:
                return False
            self.credit_log.append((now, cost))
            self.credits_used += cost
            return True

    # -- frame hooks ---------------------------------------------------------------------------

    def rate_limited(self, request: Request) -> Response:
        """Zoho's 429 (API limits doc / Kaizen #203)."""
        return zoho_error(
            429,
            "TOO_MANY_REQUESTS",
            "You have reached the API limit. Please try again after some time.",
        )

    def fault(self, request: Request, status: int) -> Response:
        """Zoho's error body for an injected status (the accounts server answers its own way)."""
        if request.url.path.startswith(f"{self.prefix}/accounts"):
            return JSONResponse({"error": "general_error", "status": "failure"}, status_code=status)
        codes = {401: "INVALID_TOKEN", 403: "NO_PERMISSION", 404: "INVALID_URL_PATTERN"}
        code = codes.get(status, "INTERNAL_ERROR" if status >= 500 else "INVALID_REQUEST")
        message = "Internal Server Error" if status >= 500 else "the request could not be served"
        return zoho_error(status, code, message)

    def change_schema(self, change: dict[str, Any]) -> None:
        """Remove a field or a pick-list option, as an admin would in Setup."""
        with self.lock:
            fields = self.store.fields
            if "remove_field" in change:
                name = str(change["remove_field"])
                if name not in fields:
                    raise SchemaChangeError(f"Leads has no field {name!r}")
                if name in UNDELETABLE:
                    raise SchemaChangeError(f"{name} is a system field and cannot be removed")
                self.store.remove_field(name)
                return
            option = change.get("remove_option")
            if not isinstance(option, dict):
                raise SchemaChangeError("remove_option needs {field, value}")
            name, value = str(option.get("field")), option.get("value")
            definition = fields.get(name)
            if definition is None:
                raise SchemaChangeError(f"Leads has no field {name!r}")
            if definition.data_type != "picklist":
                raise SchemaChangeError(f"{name} is not a picklist")
            if value not in definition.picklist:
                raise SchemaChangeError(f"{name} has no option {value!r}")
            # After the option is gone a write of it is still stored: Zoho's Insert Records
            # doc says a picklist accepts "an existing pick list value or a new one".
            definition.picklist.remove(str(value))

    def admin_routes(self) -> list[BaseRoute]:
        """``POST /__sandbox__/zoho/expire-tokens``, ``GET /__sandbox__/zoho/credits``,
        ``POST /__sandbox__/zoho/grant-code`` (``{"code": ...}``, for ``leadrelay connect zoho``)
        and ``POST /__sandbox__/zoho/empty-recycle-bin`` (deleted Leads become permanent)."""

        async def expire(request: Request) -> Response:
            self.expire_tokens()
            return JSONResponse({"ok": True})

        async def credits(request: Request) -> Response:
            remaining = self.credits_remaining()
            return JSONResponse(
                {
                    "limit": self.credit_limit,
                    "used": self.credit_limit - remaining,
                    "remaining": remaining,
                }
            )

        async def grant_code(request: Request) -> Response:
            return JSONResponse({"code": self.mint_grant_code()})

        async def empty_bin(request: Request) -> Response:
            with self.lock:
                emptied = self.store.empty_recycle_bin()
            return JSONResponse({"emptied": emptied})

        return [
            Route("/zoho/expire-tokens", expire, methods=["POST"]),
            Route("/zoho/credits", credits, methods=["GET"]),
            Route("/zoho/grant-code", grant_code, methods=["POST"]),
            Route("/zoho/empty-recycle-bin", empty_bin, methods=["POST"]),
        ]

    def mint_grant_code(self) -> str:
        """A self-client grant code, as the API console shows one: single use, 10 minutes."""
        code = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        with self._auth_lock:
            self.grant_codes[code] = time.monotonic() + GRANT_CODE_LIFETIME_S
        return code

    # -- accounts server -----------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        params: dict[str, str] = dict(request.query_params)
        if "form" in request.headers.get("content-type", ""):
            form = await request.form()
            params.update({k: str(v) for k, v in form.items()})
        grant = params.get("grant_type")
        # Token-endpoint errors come back as HTTP 200 with an "error" key (crm-api-facts §3).
        if grant not in ("refresh_token", "authorization_code"):
            return JSONResponse({"error": "unsupported_grant_type"})
        if params.get("client_id") != SANDBOX_CLIENT_ID or not secrets.compare_digest(
            params.get("client_secret", ""), SANDBOX_CLIENT_SECRET
        ):
            return JSONResponse({"error": "invalid_client"})
        if grant == "authorization_code":
            return self._grant(params.get("code", ""))
        refresh = params.get("refresh_token", "")
        with self._auth_lock:
            known = any(secrets.compare_digest(refresh, t) for t in self.refresh_tokens)
        if not known:
            return JSONResponse({"error": "invalid_code"})
        now = time.monotonic()
        with self._auth_lock:
            issued = self.token_issues.setdefault(refresh, deque())
            while issued and now - issued[0] >= self.token_window_s:
                issued.popleft()
            if len(issued) >= self.token_limit:
                # Token Validity doc (v7/v8): after 10 access tokens from one refresh token in
                # 10 minutes, "Access Denied" for the rest of the window. The body shape and the
                # HTTP 400 are as widely reported for accounts.zoho.com (not in the doc itself).
                return JSONResponse(
                    {
                        "error_description": "You have made too many requests continuously. "
                        "Please try again after some time.",
                        "error": "Access Denied",
                        "status": "failure",
                    },
                    status_code=400,
                )
            issued.append(now)
        return JSONResponse(self._issue_access_token())

    def _grant(self, code: str) -> Response:
        """The authorization-code grant: a grant code (once, unexpired) -> refresh + access."""
        now = time.monotonic()
        with self._auth_lock:
            expires = self.grant_codes.pop(code, None)
            if expires is None or now >= expires:
                return JSONResponse({"error": "invalid_code"})
            refresh = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            self.refresh_tokens.add(refresh)
        return JSONResponse({**self._issue_access_token(), "refresh_token": refresh})

    def _issue_access_token(self) -> dict[str, Any]:
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        with self._auth_lock:
            self.access_tokens[token] = time.monotonic() + self.token_lifetime_s
        return {
            "access_token": token,
            "scope": SANDBOX_SCOPE,
            "api_domain": self.base_url,
            "token_type": "Bearer",
            "expires_in": int(self.token_lifetime_s),
        }

    def _authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization")
        if not header:
            return zoho_error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        scheme, _, token = header.partition(" ")
        # Only "Zoho-oauthtoken <token>" is accepted; anything else is an invalid token.
        if scheme != "Zoho-oauthtoken":
            return zoho_error(401, "INVALID_TOKEN", "invalid oauth token")
        with self._auth_lock:
            expires = self.access_tokens.get(token.strip())
        if expires is None or time.monotonic() >= expires:
            return zoho_error(401, "INVALID_TOKEN", "invalid oauth token")
        return None

    async def _guard(self, request: Request, call_next: Handler) -> Response:
        path = request.url.path
        if "/crm/" not in path:
            return await self._safely(request, call_next)
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        if _IN_COMPOSITE.get():
            # A sub-request: its composite call took the concurrency and the credit.
            return await self._safely(request, call_next)
        # Composite API doc: a composite call takes five concurrency credits.
        weight = COMPOSITE_CONCURRENCY if path.endswith("/__composite_requests") else 1
        with self._auth_lock:
            if self.in_flight + weight > self.concurrency_limit:
                busy = True
            else:
                busy = False
                self.in_flight += weight
        if busy:
            return self.rate_limited(request)
        try:
            # COQL is charged by its LIMIT in its handler; every other call costs 1 credit.
            if not path.endswith("/coql") and not self.charge(1):
                return self.rate_limited(request)
            return await self._safely(request, call_next)
        finally:
            with self._auth_lock:
                self.in_flight -= weight

    @staticmethod
    async def _safely(request: Request, call_next: Handler) -> Response:
        try:
            return await call_next(request)
        except ZohoApiError as exc:
            return exc.response
        except Exception:
            return zoho_error(500, "INTERNAL_ERROR", "Internal Server Error")

    # -- the app -------------------------------------------------------------------------------

    def app(self) -> ASGIApp:
        """The FastAPI app: accounts token endpoint and the CRM v7 API."""
        api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        api.middleware("http")(self._guard)

        @api.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
            if exc.status_code == 405:
                return zoho_error(
                    400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one"
                )
            return ZohoApiError(*_NO_SUCH_URL).response

        @api.exception_handler(ZohoApiError)
        async def zoho_api_error(request: Request, exc: ZohoApiError) -> Response:
            return exc.response

        @api.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError) -> Response:
            return zoho_error(400, "INVALID_DATA", "invalid data")

        api.add_api_route("/accounts/oauth/v2/token", self._token, methods=["POST"])
        base = "/crm/v{version}"
        routes: list[tuple[str, Callable[..., Any], list[str]]] = [
            (f"{base}/Leads", self._list, ["GET"]),
            (f"{base}/Leads", self._insert, ["POST"]),
            (f"{base}/Leads", self._update_many, ["PUT"]),
            (f"{base}/Leads", self._delete_many, ["DELETE"]),
            (f"{base}/Leads/search", self._search, ["GET"]),
            (f"{base}/Leads/upsert", self._upsert, ["POST"]),
            (f"{base}/Leads/deleted", self._deleted, ["GET"]),
            (f"{base}/Leads/{{record_id}}/actions/merge", self._merge, ["POST"]),
            (f"{base}/Leads/{{record_id}}/actions/merge", self._merge_status, ["GET"]),
            (f"{base}/Leads/{{record_id}}/actions/convert", self._convert, ["POST"]),
            (f"{base}/Leads/{{record_id}}", self._get_one, ["GET"]),
            (f"{base}/Leads/{{record_id}}", self._update_one, ["PUT"]),
            (f"{base}/Leads/{{record_id}}", self._delete_one, ["DELETE"]),
            (f"{base}/coql", self._coql, ["POST"]),
            (f"{base}/__composite_requests", self._composite, ["POST"]),
            (f"{base}/settings/fields", self._fields, ["GET"]),
            (f"{base}/settings/fields", self._create_fields, ["POST"]),
            (f"{base}/settings/modules", self._modules, ["GET"]),
            (f"{base}/settings/modules/{{module}}", self._module, ["GET"]),
            (f"{base}/users", self._users, ["GET"]),
            (f"{base}/org", self._org, ["GET"]),
            (f"{base}/users/{{user_id}}", self._user, ["GET"]),
        ]
        for module in OTHER_MODULES:
            routes += [
                (f"{base}/{module}/search", self._module_searcher(module), ["GET"]),
                (f"{base}/{module}", self._module_lister(module), ["GET"]),
                (f"{base}/{module}", self._module_inserter(module), ["POST"]),
                (f"{base}/{module}/{{record_id}}", self._module_getter(module), ["GET"]),
            ]
        for module in UPDATABLE_MODULES:
            update_many, update_one = self._module_updaters(module)
            routes += [
                (f"{base}/{module}", update_many, ["PUT"]),
                (f"{base}/{module}/{{record_id}}", update_one, ["PUT"]),
            ]
        routes.append(
            (f"{base}/{{module}}", self._unknown_module, ["GET", "POST", "PUT", "DELETE"])
        )
        for path, endpoint, methods in routes:
            api.add_api_route(path, endpoint, methods=methods)
        self._api = api
        return api

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ZohoApiError(400, "INVALID_DATA", "body is not a valid JSON") from None
        if not isinstance(body, dict):
            raise ZohoApiError(400, "INVALID_DATA", "body must be a JSON object")
        return body

    @staticmethod
    def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
        text = request.query_params.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": name}) from None
        if not low <= value <= high:
            raise ZohoApiError(
                400, "INVALID_DATA", "invalid data", {"param_name": name, "maximum": high}
            )
        return value

    def _field_list(
        self, request: Request, required: bool, store: LeadStore | None = None
    ) -> list[str] | None:
        text = request.query_params.get("fields")
        if text is None or not text.strip():
            if required:
                raise ZohoApiError(
                    400,
                    "REQUIRED_PARAM_MISSING",
                    "One of the expected parameter is missing",
                    {"param_name": "fields"},
                )
            return None
        names = [name.strip() for name in text.split(",") if name.strip()]
        if len(names) > MAX_FIELDS_PARAM:
            raise ZohoApiError(
                400, "LIMIT_EXCEEDED", "fields limit exceeded", {"limit": MAX_FIELDS_PARAM}
            )
        # Names that are not fields (e.g. removed by an admin) are not returned.
        fields = (store or self.store).fields
        return [name for name in names if name in fields]

    def _per_page(self, request: Request) -> int:
        """``per_page`` (default and most 200); in a composite sub-request default and most the
        sub-request's record limit (25), above it LIMIT_EXCEEDED."""
        limit = _RECORD_LIMIT.get()
        if limit is None:
            return self._int_param(request, "per_page", MAX_PER_PAGE, 1, MAX_PER_PAGE)
        per_page = self._int_param(request, "per_page", limit, 1, MAX_PER_PAGE)
        if per_page > limit:
            # Guess: ``by`` names the parameter, as the doc's COQL sample names ``limit``.
            raise ZohoApiError(
                400, "LIMIT_EXCEEDED", "limit exceeded", {"by": "per_page", "limit": limit}
            )
        return per_page

    def _data_list(self, body: dict[str, Any]) -> list[Any]:
        data = body.get("data")
        if not isinstance(data, list) or not data:
            raise ZohoApiError(
                400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "data"}
            )
        limit = _RECORD_LIMIT.get()
        if limit is not None and len(data) > limit:
            # A composite sub-request writes one record (guess: ``by`` names ``data``).
            raise ZohoApiError(
                400, "LIMIT_EXCEEDED", "limit exceeded", {"by": "data", "limit": limit}
            )
        if len(data) > MAX_RECORDS_PER_CALL:
            raise ZohoApiError(
                400,
                "LIMIT_EXCEEDED",
                "the number of records exceeds the limit",
                {"limit": MAX_RECORDS_PER_CALL},
            )
        return data

    @staticmethod
    def _results(results: list[RecordResult], ok_status: int) -> Response:
        return JSONResponse(
            {"data": [result.body for result in results]},
            status_code=batch_status(results, ok_status),
        )

    # -- records -------------------------------------------------------------------------------

    async def _list(self, request: Request, version: str) -> Response:
        return self._list_records(request, self.store)

    def _list_records(self, request: Request, store: LeadStore) -> Response:
        """Get Records of one module: fields, paging (page / page_token), sort, ids, since."""
        params = request.query_params
        names = self._field_list(request, required=True, store=store) or []
        per_page = self._per_page(request)
        sort_by = params.get("sort_by", "id")
        if sort_by not in SORTABLE:
            raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "sort_by"})
        sort_order = params.get("sort_order", "desc")
        if sort_order not in {"asc", "desc"}:
            raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "sort_order"})
        since_header = request.headers.get("if-modified-since")
        since = _if_modified_since(since_header)
        ids_param = params.get("ids")
        converted = self._converted_choice(request, store)
        token = params.get("page_token")
        if token is not None and "page" in params:
            raise ZohoApiError(
                400,
                "AMBIGUITY_DURING_PROCESSING",
                "You cannot use both page and page_token",
                {"ambiguity_due_to": ["page", "page_token"]},
            )
        signature = (
            store.module,
            tuple(names),
            per_page,
            sort_by,
            sort_order,
            since_header,
            ids_param,
            converted,
        )
        with self.lock:
            if token is not None:
                cursor = self._cursor(token, signature)
                offset, page = cursor.offset, cursor.page
            else:
                page = self._int_param(request, "page", 1, 1, 1_000_000)
                if page * per_page > DISCRETE_PAGINATION_LIMIT:
                    raise ZohoApiError(
                        400,
                        "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                        "You can only get the first 2000 records without using page_token param",
                        {"limit": DISCRETE_PAGINATION_LIMIT},
                    )
                offset = (page - 1) * per_page
            if offset + per_page > TOKEN_PAGINATION_LIMIT:
                raise ZohoApiError(
                    400,
                    "PAGINATION_LIMIT_EXCEEDED",
                    "You can only get up to first 100000 records using page_token param",
                    {"limit": TOKEN_PAGINATION_LIMIT},
                )
            rows = self._listing(store, sort_by, sort_order == "desc", since, ids_param, converted)
            if not rows:
                # Status codes doc: 304 when nothing changed after If-Modified-Since;
                # otherwise an empty module is a bare 204.
                return Response(status_code=304 if since is not None else 204)
            page_rows = rows[offset : offset + per_page]
            more = len(rows) > offset + per_page
            info: dict[str, Any] = {
                "per_page": per_page,
                "count": len(page_rows),
                "page": page,
                "sort_by": sort_by,
                "sort_order": sort_order,
                "more_records": more,
                "next_page_token": None,
                "previous_page_token": token,
                "page_token_expiry": None,
            }
            if more:
                expiry = datetime.now(UTC) + PAGE_TOKEN_LIFETIME
                next_token = secrets.token_hex(24)
                self.cursors[next_token] = PageCursor(
                    signature, offset + per_page, page + 1, expiry
                )
                info["next_page_token"] = next_token
                info["page_token_expiry"] = iso(expiry)
            keys = store.output_fields(names)
            data = [record.to_json(keys) for record in page_rows]
        return JSONResponse({"data": data, "info": info})

    def _cursor(self, token: str, signature: tuple[Any, ...]) -> PageCursor:
        cursor = self.cursors.get(token)
        if cursor is None:
            raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "page_token"})
        if datetime.now(UTC) >= cursor.expires:
            raise ZohoApiError(
                400, "EXPIRED_VALUE", "the page_token has expired", {"param_name": "page_token"}
            )
        if cursor.signature != signature:
            raise ZohoApiError(
                400,
                "TOKEN_BOUND_DATA_MISMATCH",
                "The page_token given seems to be invalid or input param is added, altered, or "
                "deleted",
                {"param_name": "page_token"},
            )
        return cursor

    def _converted_choice(self, request: Request, store: LeadStore) -> str:
        """The ``converted`` parameter (Leads only; other modules have nothing converted)."""
        choice = self._choice(request, "converted", CONVERTED_CHOICES, "false")
        return choice if store is self.store else "false"

    @staticmethod
    def _pool(store: LeadStore, converted: str) -> list[StoredRecord]:
        """The records ``converted`` selects, in id order."""
        pool = [] if converted == "true" else list(store.records.values())
        if converted != "false":
            pool += store.converted.values()
            pool.sort(key=lambda record: int(record.id))
        return pool

    @classmethod
    def _listing(
        cls,
        store: LeadStore,
        sort_by: str,
        descending: bool,
        since: datetime | None,
        ids: str | None,
        converted: str = "false",
    ) -> list[StoredRecord]:
        if converted != "false":
            named = {i.strip() for i in ids.split(",")} if ids is not None else None
            rows = [
                record
                for record in cls._pool(store, converted)
                if (named is None or record.id in named)
                and (since is None or record.modified > since)
            ]
            rows.sort(key=lambda r: _sort_value(r, sort_by), reverse=descending)
            return rows
        if ids is not None:
            wanted = [store.records[i] for i in ids.split(",") if i.strip() in store.records]
            rows = sorted(wanted, key=lambda r: _sort_value(r, sort_by), reverse=descending)
        elif since is not None:
            rows = store.modified_after(since)
            rows.sort(key=lambda r: _sort_value(r, sort_by), reverse=descending)
        else:
            rows = list(store.iter_sorted(sort_by, descending))
        if since is not None and ids is not None:
            rows = [row for row in rows if row.modified > since]
        return rows

    async def _get_one(self, request: Request, version: str, record_id: str) -> Response:
        return self._get_record(request, self.store, record_id)

    def _get_record(self, request: Request, store: LeadStore, record_id: str) -> Response:
        _record_path(record_id)
        names = self._field_list(request, required=False, store=store)
        converted = self._converted_choice(request, store)
        with self.lock:
            record = None if converted == "true" else store.records.get(record_id)
            if record is None and converted != "false":
                record = store.converted.get(record_id)
            if record is None:
                # A converted Lead too, unless converted=true|both asks for it.
                return Response(status_code=204)
            wanted = names if names is not None else list(store.fields)
            body = record.to_json(store.output_fields(wanted))
        return JSONResponse({"data": [body]})

    async def _insert(self, request: Request, version: str) -> Response:
        return await self._insert_records(request, self.store)

    async def _insert_records(self, request: Request, store: LeadStore) -> Response:
        data = self._data_list(await self._json(request))
        with self.lock:
            results = [store.insert_one(raw, index) for index, raw in enumerate(data)]
        return self._results(results, 201)

    # -- Accounts and Tasks ----------------------------------------------------------------------

    def _module_lister(self, module: str) -> Callable[[Request, str], Awaitable[Response]]:
        async def handler(request: Request, version: str) -> Response:
            return self._list_records(request, self.modules[module])

        return handler

    def _module_searcher(self, module: str) -> Callable[[Request, str], Awaitable[Response]]:
        async def handler(request: Request, version: str) -> Response:
            return self._search_in(request, self.modules[module])

        return handler

    def _module_inserter(self, module: str) -> Callable[[Request, str], Awaitable[Response]]:
        async def handler(request: Request, version: str) -> Response:
            return await self._insert_records(request, self.modules[module])

        return handler

    def _module_getter(self, module: str) -> Callable[[Request, str, str], Awaitable[Response]]:
        async def handler(request: Request, version: str, record_id: str) -> Response:
            return self._get_record(request, self.modules[module], record_id)

        return handler

    def _module_updaters(
        self, module: str
    ) -> tuple[
        Callable[[Request, str], Awaitable[Response]],
        Callable[[Request, str, str], Awaitable[Response]],
    ]:
        """Update Records of ``module``: by the ids in the body, and by the id in the URL."""

        async def update(request: Request, record_id: str | None) -> Response:
            store = self.modules[module]
            data = self._data_list(await self._json(request))
            with self.lock:
                results = [store.update_one(raw, i, record_id) for i, raw in enumerate(data)]
            return self._results(results, 200)

        async def many(request: Request, version: str) -> Response:
            return await update(request, None)

        async def one(request: Request, version: str, record_id: str) -> Response:
            _record_path(record_id)
            return await update(request, record_id)

        return many, one

    async def _update_many(self, request: Request, version: str) -> Response:
        data = self._data_list(await self._json(request))
        with self.lock:
            results = [self._update_lead(raw, index) for index, raw in enumerate(data)]
        return self._results(results, 200)

    async def _update_one(self, request: Request, version: str, record_id: str) -> Response:
        _record_path(record_id)
        data = self._data_list(await self._json(request))
        with self.lock:
            results = [self._update_lead(raw, index, record_id) for index, raw in enumerate(data)]
        return self._results(results, 200)

    def _update_lead(self, raw: Any, index: int, record_id: str | None = None) -> RecordResult:
        """Update Records on a Lead; a converted Lead is refused (lock held).

        Unverified: the code CONVERTED_RECORD for an edit of a converted record is as
        crm-api-facts records it (marked VERIFY there); the message is the sandbox's own.
        """
        target = (
            record_id
            if record_id is not None
            else (raw.get("id") if isinstance(raw, dict) else None)
        )
        if target is not None and str(target) in self.store.converted:
            return error_result(
                "CONVERTED_RECORD",
                "the record is converted and cannot be updated",
                {"id": str(target), "json_path": f"$.data[{index}]"},
            )
        return self.store.update_one(raw, index, record_id)

    async def _upsert(self, request: Request, version: str) -> Response:
        body = await self._json(request)
        data = self._data_list(body)
        with self.lock:
            allowed = self.store.duplicate_check_candidates()
            requested = body.get("duplicate_check_fields")
            if requested is None:
                # Upsert doc: without duplicate_check_fields the system field (Leads: Email)
                # is checked first, then the unique fields.
                check = allowed
            elif (
                not isinstance(requested, list)
                or not requested
                or any(name not in allowed for name in requested)
            ):
                raise ZohoApiError(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    {"api_name": "duplicate_check_fields", "expected": allowed},
                )
            else:
                check = [str(name) for name in requested]
            results = [self.store.upsert_one(raw, index, check) for index, raw in enumerate(data)]
        return self._results(results, 200)

    async def _delete_many(self, request: Request, version: str) -> Response:
        text = request.query_params.get("ids")
        if not text:
            raise ZohoApiError(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param_name": "ids"},
            )
        ids = [part.strip() for part in text.split(",") if part.strip()]
        if len(ids) > MAX_RECORDS_PER_CALL:
            raise ZohoApiError(
                400, "LIMIT_EXCEEDED", "the number of records exceeds the limit", {"limit": 100}
            )
        with self.lock:
            results = [self._delete(record_id) for record_id in ids]
        return self._results(results, 200)

    async def _delete_one(self, request: Request, version: str, record_id: str) -> Response:
        _record_path(record_id)
        with self.lock:
            results = [self._delete(record_id)]
        return self._results(results, 200)

    async def _merge(self, request: Request, version: str, record_id: str) -> Response:
        """Merge Records: up to two duplicates into the master Lead, which takes the values of
        the fields each duplicate names (``_fields``); the duplicates are deleted (recycle bin).

        Zoho schedules a job; the sandbox runs it at once, so its status is COMPLETED.
        """
        _record_path(record_id)
        merge = _only_item(await self._json(request), "merge")
        children = merge.get("data")
        if not isinstance(children, list) or not 1 <= len(children) <= 2:
            raise ZohoApiError(
                400,
                "INVALID_DATA",
                "up to two records can be merged into the master record",
                {"api_name": "data", "json_path": "$.merge[0].data"},
            )
        with self.lock:
            master = self.store.records.get(record_id)
            if master is None:
                raise ZohoApiError(
                    400, "INVALID_DATA", "the id given seems to be invalid", {"id": record_id}
                )
            values: dict[str, Any] = {}
            duplicates: list[str] = []
            for index, child in enumerate(children):
                path = f"$.merge[0].data[{index}]"
                child_id = str(child.get("id")) if isinstance(child, dict) else ""
                duplicate = self.store.records.get(child_id)
                if duplicate is None or child_id == record_id:
                    raise ZohoApiError(
                        400, "INVALID_DATA", "the id given seems to be invalid", {"json_path": path}
                    )
                for field in child.get("_fields") or []:
                    name = field.get("api_name") if isinstance(field, dict) else None
                    definition = self.store.fields.get(str(name))
                    if definition is None or definition.read_only:
                        raise ZohoApiError(
                            400,
                            "INVALID_DATA",
                            "invalid data",
                            {"api_name": str(name), "json_path": f"{path}._fields"},
                        )
                    values[definition.api_name] = duplicate.values.get(definition.api_name)
                duplicates.append(child_id)
            for child_id in duplicates:
                self.store.delete(child_id)
            self.store.update(master, values)
            job_id = str(5725767000009000000 + len(self.merge_jobs) + 1)
            self.merge_jobs[job_id] = record_id
        answer = {
            "code": "SUCCESS",
            "details": {"job_id": job_id},
            "message": "The merge job has been scheduled",
            "status": "success",
        }
        return JSONResponse({"merge": [answer]})

    async def _merge_status(self, request: Request, version: str, record_id: str) -> Response:
        """Get Records Merge Status: the master's merge jobs (``job_id`` picks one)."""
        _record_path(record_id)
        wanted = request.query_params.get("job_id")
        with self.lock:
            jobs = [
                {"job_id": job_id, "status": "COMPLETED"}
                for job_id, master in self.merge_jobs.items()
                if master == record_id and wanted in (None, job_id)
            ]
        if not jobs:
            return Response(status_code=204)
        return JSONResponse({"merge": jobs})

    async def _convert(self, request: Request, version: str, record_id: str) -> Response:
        """Convert Lead: the Lead becomes a Contact (new, or the one ``Contacts`` names), an
        Account (new from its Company, or the one ``Accounts`` names) and, when ``Deals`` is
        given, a Deal related to both; the Lead leaves the module's lists (converted).

        Every check runs before anything is created, so a refused conversion changes nothing.
        Costs 5 credits (the guard charged 1). Unverified: the success ``details`` hold each
        new record as ``{"name", "id"}`` (the v8 spec says a Record object, v2 answered bare
        ids); ``Accounts`` / ``Contacts`` / ``assign_to`` are taken as ``{"id"}`` (v7) or a
        bare id (v2 samples).
        """
        _record_path(record_id)
        item = _only_item(await self._json(request), "data")
        if not self.charge(CONVERT_CREDITS - 1):
            return self.rate_limited(request)
        with self.lock:
            lead = self.store.records.get(record_id)
            if lead is None:
                if record_id in self.store.converted:
                    raise ZohoApiError(
                        400,
                        "ID_ALREADY_CONVERTED",
                        "id already converted",
                        {"resource_path_index": 1},
                    )
                raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"resource_path_index": 1})
            try:
                answer = self._convert_lead(lead, item)
            except ValueError_ as exc:
                result = error_result(exc.code, exc.message, exc.details)
                return JSONResponse({"data": [result.body]}, status_code=400)
        return JSONResponse(
            {
                "data": [
                    {
                        "code": "SUCCESS",
                        "details": answer,
                        "message": "The record has been converted successfully",
                        "status": "success",
                    }
                ]
            }
        )

    def _existing(self, module: str, value: Any, path: str) -> StoredRecord | None:
        """The record of ``module`` a convert option names (``{"id"}`` or an id), None when
        the option is absent; INVALID_DATA naming the option when there is no such record."""
        if value is None:
            return None
        raw_id = value.get("id") if isinstance(value, dict) else value
        record = self.modules[module].records.get(str(raw_id)) if raw_id is not None else None
        if record is None or isinstance(raw_id, bool):
            raise ValueError_(
                "INVALID_DATA", "invalid data", {"api_name": module, "json_path": path}
            )
        return record

    def _convert_lead(self, lead: StoredRecord, item: dict[str, Any]) -> dict[str, Any]:
        """Create the records of one conversion (lock held); their lookups, by module."""
        accounts, contacts, deals = (self.modules[m] for m in ("Accounts", "Contacts", "Deals"))
        account = self._existing("Accounts", item.get("Accounts"), "$.data[0].Accounts")
        contact = self._existing("Contacts", item.get("Contacts"), "$.data[0].Contacts")
        owner: dict[str, Any] | None = lead.values.get("Owner")
        assign = item.get("assign_to")
        if assign is not None:
            assign_id = assign.get("id") if isinstance(assign, dict) else assign
            user = self.store.users.get(str(assign_id))
            if user is None or user.status != "active":
                raise ValueError_(
                    "INVALID_DATA",
                    "invalid data",
                    {"api_name": "assign_to", "json_path": "$.data[0].assign_to"},
                )
            owner = user.lookup()
        deal_values: dict[str, Any] | None = None
        raw_deal = item.get("Deals")
        if raw_deal is not None:
            path = "$.data[0].Deals"
            if not isinstance(raw_deal, dict):
                raise ValueError_(
                    "INVALID_DATA",
                    "invalid data",
                    {"api_name": "Deals", "json_path": path, "expected_data_type": "jsonobject"},
                )
            plain = {k: v for k, v in raw_deal.items() if k not in ("Account_Name", "Contact_Name")}
            deal_values = deals._record_object(plain, path)
            deals._check_mandatory(deal_values, path, inserting=True)
        values = lead.values
        company = values.get("Company")
        if account is None and company:
            account = accounts.insert(
                {
                    "Account_Name": str(company)[:200],
                    "Website": values.get("Website"),
                    "Phone": values.get("Phone"),
                    "Owner": owner,
                }
            )
        if contact is None:
            contact = contacts.insert(
                {
                    "First_Name": values.get("First_Name"),
                    "Last_Name": values.get("Last_Name"),
                    "Email": values.get("Email"),
                    "Phone": values.get("Phone"),
                    "Mobile": values.get("Mobile"),
                    "Title": values.get("Designation"),
                    "Lead_Source": values.get("Lead_Source"),
                    "Description": values.get("Description"),
                    "Owner": owner,
                    "Account_Name": _link(accounts, account),
                }
            )
        deal = None
        if deal_values is not None:
            deal_values.setdefault("Lead_Source", values.get("Lead_Source"))
            deal_values.setdefault("Owner", owner)
            deal_values["Account_Name"] = _link(accounts, account)
            deal_values["Contact_Name"] = _link(contacts, contact)
            deal = deals.insert(deal_values)
        links = {
            "Converted_Account": _link(accounts, account),
            "Converted_Contact": _link(contacts, contact),
            "Converted_Deal": _link(deals, deal),
        }
        self.store.convert(lead, links)
        return {
            "Contacts": links["Converted_Contact"],
            "Deals": links["Converted_Deal"],
            "Accounts": links["Converted_Account"],
        }

    def _delete(self, record_id: str) -> RecordResult:
        if self.store.delete(record_id):
            return RecordResult(
                True,
                {
                    "code": "SUCCESS",
                    "details": {"id": record_id},
                    "message": "record deleted",
                    "status": "success",
                },
            )
        return RecordResult(
            False,
            {
                "code": "INVALID_DATA",
                "details": {"id": record_id},
                "message": "the id given seems to be invalid",
                "status": "error",
            },
        )

    # -- search and COQL -----------------------------------------------------------------------

    async def _search(self, request: Request, version: str) -> Response:
        return self._search_in(request, self.store)

    def _search_in(self, request: Request, store: LeadStore) -> Response:
        """Search Records of one module (``converted`` applies to Leads only)."""
        params = request.query_params
        given = [key for key in ("criteria", "email", "phone", "word") if params.get(key)]
        if len(given) != 1:
            raise ZohoApiError(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param_name": "criteria/email/phone/word"},
            )
        names = self._field_list(request, required=False, store=store)
        per_page = self._per_page(request)
        page = self._int_param(request, "page", 1, 1, 1_000_000)
        if page * per_page > SEARCH_RESULT_LIMIT:
            raise ZohoApiError(
                400,
                "LIMIT_REACHED",
                "search results are limited to the first 2000 records",
                {"limit": SEARCH_RESULT_LIMIT},
            )
        kind, value = given[0], params[given[0]]
        converted = self._converted_choice(request, store)
        lag = self.sandbox.search_lag_s(self.name)
        visible_before = time.monotonic() - lag
        with self.lock:
            try:
                matches = self._matcher(store, kind, value)
            except CriteriaError as exc:
                raise ZohoApiError(
                    400, "INVALID_QUERY", "Invalid query formed", exc.details
                ) from None
            rows = [
                record
                for record in self._pool(store, converted)
                if (lag <= 0 or record.written_at <= visible_before) and matches(record)
            ]
            if not rows:
                return Response(status_code=204)
            page_rows = rows[(page - 1) * per_page : page * per_page]
            fields = names if names is not None else list(store.fields)
            data = [record.to_json(store.output_fields(fields)) for record in page_rows]
        info = {
            "per_page": per_page,
            "count": len(data),
            "page": page,
            "more_records": len(rows) > page * per_page,
        }
        if not data:
            return Response(status_code=204)
        return JSONResponse({"data": data, "info": info})

    @staticmethod
    def _matcher(store: LeadStore, kind: str, value: str) -> Callable[[StoredRecord], bool]:
        fields = store.fields
        if kind == "criteria":
            return parse_criteria(value, fields)
        wanted = value.strip().lower()
        if kind == "email":
            names = [n for n, f in fields.items() if f.data_type == "email"]
            return lambda r: any(str(r.get(n) or "").lower() == wanted for n in names)
        if kind == "phone":
            digits = "".join(ch for ch in value if ch.isdigit())
            names = [n for n, f in fields.items() if f.data_type == "phone"]
            return lambda r: (
                bool(digits)
                and any(
                    "".join(ch for ch in str(r.get(n) or "") if ch.isdigit()) == digits
                    for n in names
                )
            )
        names = [n for n, f in fields.items() if f.data_type in {"text", "email", "phone"}]
        return lambda r: any(wanted in str(r.get(n) or "").lower() for n in names)

    async def _coql(self, request: Request, version: str) -> Response:
        body = await self._json(request)
        text = body.get("select_query")
        text = text if isinstance(text, str) else ""
        with self.lock:
            # The query's own module (Leads when it names none the org has: the parser then
            # refuses the module by name).
            store = self.modules.get(query_module(text) or "", self.store)
            try:
                query = parse_query(text, store.fields, store.module)
            except CoqlError as exc:
                if not self.charge(1):
                    return self.rate_limited(request)
                return zoho_error(400, exc.code, exc.message, exc.details)
            limit = _RECORD_LIMIT.get()
            if limit is not None and query.limit > limit:
                # Composite API doc's sample: "limit 26" in a sub-request answers this.
                return zoho_error(
                    400, "LIMIT_EXCEEDED", "limit exceeded", {"by": "limit", "limit": limit}
                )
            if not self.charge(query.credits):
                return self.rate_limited(request)
            rows, more = query.run(store)
        if not rows:
            return Response(status_code=204)
        return JSONResponse({"data": rows, "info": {"count": len(rows), "more_records": more}})

    # -- composite API -------------------------------------------------------------------------

    async def _composite(self, request: Request, version: str) -> Response:
        """``POST /crm/v{n}/__composite_requests`` (:mod:`leadrelay.sandbox.zoho.composite`):
        up to five sub-requests run through this API as one call, each answered in place."""
        body = await self._json(request)
        try:
            plan = parse_composite(body, int(version))
        except CompositeRequestError as exc:
            return zoho_error(400, exc.code, exc.message, exc.details)
        snapshot = self._snapshot() if plan.rollback_on_fail else None
        entries: list[dict[str, Any] | None] = [None] * len(plan.requests)
        answers: dict[str, Any] = {}
        ran: set[int] = set()
        failed: int | None = None
        authorization = request.headers.get("authorization", "")
        running: set[int] = set()

        async def run(sub: SubRequest) -> None:
            nonlocal failed
            if sub.index in ran or failed is not None:
                return
            if sub.index in running:
                entries[sub.index] = sub_request_error(
                    "LOOPING_FOUND",
                    "the sub requests refer to each other",
                    {"sub_request_indexes": sorted(running)},
                )
                return
            running.add(sub.index)
            if plan.parallel_execution:
                # Independent sub-requests run in any order: a referred one runs first.
                for ref in references_in([sub.uri, sub.params, sub.body, sub.headers]):
                    target = next((r for r in plan.requests if r.sub_request_id == ref), None)
                    if target is not None and target.index != sub.index:
                        await run(target)
            running.discard(sub.index)
            if entries[sub.index] is not None:
                return
            try:
                uri, params, sub_body, headers = resolve_references(
                    [sub.uri, sub.params, sub.body, sub.headers], answers
                )
            except ReferenceError_ as exc:
                entries[sub.index] = sub_request_error(
                    "INVALID_REFERENCE",
                    exc.message,
                    {
                        "api_name": "__composite_requests",
                        "json_path": f"$.__composite_requests[{sub.index}]",
                        "reference": exc.reference,
                    },
                )
                if plan.rollback_on_fail:
                    failed = sub.index
                return
            status, out_headers, out_body = await self._sub_request(
                sub.method, uri, params, sub_body, headers, authorization
            )
            ran.add(sub.index)
            entries[sub.index] = sub_request_success(status, out_headers, out_body)
            if sub.sub_request_id is not None:
                answers[sub.sub_request_id] = out_body
            if plan.rollback_on_fail and _failed_answer(status, out_body):
                failed = sub.index

        token = _IN_COMPOSITE.set(True)
        try:
            for sub in plan.requests:
                await run(sub)
                if failed is not None:
                    break
        finally:
            _IN_COMPOSITE.reset(token)
        return self._composite_answer(plan, entries, ran, failed, snapshot)

    def _composite_answer(
        self,
        plan: CompositeRequest,
        entries: list[dict[str, Any] | None],
        ran: set[int],
        failed: int | None,
        snapshot: Any,
    ) -> Response:
        if failed is not None and snapshot is not None:
            self._restore(snapshot)
            details = {"rollbacked_by_sub_request_index": failed}
            message = (
                "the transaction was rolled back since another sub request in the same "
                "transaction failed."
            )
            for index in range(len(entries)):
                if index == failed:
                    continue
                code = "ROLLBACK_PERFORMED" if index in ran else "PROCESSING_STOPPED"
                entries[index] = sub_request_error(code, message, details)
            return JSONResponse({"__composite_requests": entries}, status_code=400)
        if plan.rollback_on_fail and not self.charge(1):
            # Composite API doc: a rollback_on_fail call that succeeds costs two credits.
            return self.rate_limited_response()
        status = 200 if len(ran) == len(entries) else 207 if ran else 400
        return JSONResponse({"__composite_requests": entries}, status_code=status)

    def rate_limited_response(self) -> Response:
        """Zoho's 429 body (the API limits doc)."""
        return zoho_error(
            429,
            "TOO_MANY_REQUESTS",
            "You have reached the API limit. Please try again after some time.",
        )

    async def _sub_request(
        self,
        method: str,
        uri: str,
        params: dict[str, Any],
        body: Any,
        headers: dict[str, str],
        authorization: str,
    ) -> tuple[int, dict[str, str], Any]:
        """Run one sub-request through this API in-process: its status, headers and body."""
        path, _, query_text = str(uri).partition("?")
        query = [(k, v) for k, v in _query_pairs(query_text)]
        query += [(str(k), _param_text(v)) for k, v in params.items()]
        raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]
        raw_headers.append((b"authorization", authorization.encode("latin-1")))
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            raw_headers.append((b"content-type", b"application/json"))
        raw_headers.append((b"content-length", str(len(payload)).encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": path,
            "raw_path": path.encode("utf-8"),
            "root_path": "",
            "query_string": urlencode(query).encode("ascii"),
            "headers": raw_headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 443),
        }
        done = asyncio.Event()
        delivered = False
        started: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        limit_token = _RECORD_LIMIT.set(record_limit(method, path))
        try:
            await self._api(scope, receive, send)
        finally:
            _RECORD_LIMIT.reset(limit_token)
            done.set()
        out_headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in started.get("headers", [])
            if k.lower() != b"content-length"
        }
        raw = b"".join(chunks)
        try:
            out_body: Any = json.loads(raw) if raw else {}  # guess: a 204 answers {}
        except ValueError:
            out_body = {}
        return int(started.get("status", 500)), out_headers, out_body

    def _snapshot(self) -> Any:
        """A deep copy of every module's records (a rollback_on_fail call restores it)."""
        with self.lock:
            return copy.deepcopy((self.modules, self.merge_jobs), memo={id(self): self})

    def _restore(self, snapshot: Any) -> None:
        modules, merge_jobs = snapshot
        with self.lock:
            self.modules = modules
            self.store = modules["Leads"]
            self.merge_jobs = merge_jobs

    # -- metadata and users --------------------------------------------------------------------

    def _fields_module(self, request: Request) -> LeadStore:
        """The module ``?module=`` of a fields call names; REQUIRED_PARAM_MISSING without it."""
        module = request.query_params.get("module")
        if not module:
            raise ZohoApiError(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param_name": "module"},
            )
        return self._module_store(module)

    async def _fields(self, request: Request, version: str) -> Response:
        store = self._fields_module(request)
        with self.lock:
            fields = [definition.to_json() for definition in store.fields.values()]
        return JSONResponse({"fields": fields})

    async def _create_fields(self, request: Request, version: str) -> Response:
        """Create Custom Fields: one result a field; 201 all made, 400 none, 207 some."""
        store = self._fields_module(request)
        items = (await self._json(request)).get("fields")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_FIELDS:
            raise ZohoApiError(
                400, "INVALID_DATA", "invalid data", {"api_name": "fields", "json_path": "$.fields"}
            )
        results: list[dict[str, Any]] = []
        with self.lock:
            for index, item in enumerate(items):
                self._field_sequence += 1
                field_id = str(5725767000000900000 + self._field_sequence * 7)
                try:
                    definition = field_from_item(store.fields, item, index, field_id)
                except FieldError as error:
                    results.append(error.to_json())
                    continue
                store.add_field(definition)
                results.append(
                    {
                        "code": "SUCCESS",
                        "details": {"id": field_id},
                        "message": "field created",
                        "status": "success",
                    }
                )
        made = sum(result["status"] == "success" for result in results)
        status = 201 if made == len(results) else 400 if made == 0 else 207
        return JSONResponse({"fields": results}, status_code=status)

    async def _users(self, request: Request, version: str) -> Response:
        filters: dict[str, Callable[[Any], bool]] = {
            "AllUsers": lambda user: True,
            "ActiveUsers": lambda user: user.status == "active",
            "DeactiveUsers": lambda user: user.status == "disabled",
            # Every seeded user accepted the invitation; none was deleted.
            "ConfirmedUsers": lambda user: True,
            "NotConfirmedUsers": lambda user: False,
            "DeletedUsers": lambda user: False,
            "ActiveConfirmedUsers": lambda user: user.status == "active",
            "AdminUsers": lambda user: user.profile == "Administrator",
            "ActiveConfirmedAdmins": lambda user: (
                user.status == "active" and user.profile == "Administrator"
            ),
            # The user the OAuth token belongs to (the SDK asks after every grant).
            "CurrentUser": lambda user: user.id == API_USER.id,
        }
        chosen = filters[self._choice(request, "type", USER_TYPES, "AllUsers")]
        users = [user.to_json() for user in SEEDED_USERS if chosen(user)]
        return self._paged(request, "users", users)

    async def _user(self, request: Request, version: str, user_id: str) -> Response:
        for user in SEEDED_USERS:
            if user.id == user_id:
                return JSONResponse({"users": [user.to_json()]})
        raise ZohoApiError(400, "INVALID_DATA", "the id given seems to be invalid", {"id": user_id})

    async def _org(self, request: Request, version: str) -> Response:
        """Get Organization Data (the SDK reads the org's ``zgid`` after every grant)."""
        return JSONResponse({"org": [SANDBOX_ORG]})

    async def _modules(self, request: Request, version: str) -> Response:
        return JSONResponse({"modules": [store_module(s) for s in self.modules.values()]})

    async def _module(self, request: Request, version: str, module: str) -> Response:
        return JSONResponse({"modules": [store_module(self._module_store(module))]})

    def _module_store(self, module: str) -> LeadStore:
        """The emulated module ``module``; INVALID_MODULE when the org has no such module."""
        store = self.modules.get(module)
        if store is None:
            raise ZohoApiError(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {}
            )
        return store

    async def _deleted(self, request: Request, version: str) -> Response:
        """Get Deleted Records: the recycle bin and the permanently deleted, newest first."""
        kind = self._choice(request, "type", DELETED_TYPES, "all")
        since = _if_modified_since(request.headers.get("if-modified-since"))
        with self.lock:
            rows = [
                entry.to_json()
                for entry in reversed(self.store.deleted.values())
                if (kind == "all" or entry.type == kind)
                and (since is None or entry.deleted_time.replace(microsecond=0) > since)
            ]
        # Nothing deleted after If-Modified-Since: 304, as Get Records answers.
        return self._paged(request, "data", rows, empty=304 if since is not None else 204)

    @staticmethod
    def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
        """A parameter that takes one of ``allowed``; INVALID_DATA naming it otherwise."""
        value = request.query_params.get(name, default)
        if value not in allowed:
            raise ZohoApiError(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": name, "supported_values": list(allowed)},
            )
        return value

    def _paged(
        self, request: Request, key: str, rows: list[dict[str, Any]], empty: int = 204
    ) -> Response:
        """One ``page`` / ``per_page`` slice of ``rows`` under ``key`` with its ``info``; a bare
        ``empty`` status when there are no rows at all, 204 past the last page."""
        per_page = self._per_page(request)
        page = self._int_param(request, "page", 1, 1, 1_000_000)
        page_rows = rows[(page - 1) * per_page : page * per_page]
        if not page_rows:
            return Response(status_code=empty if not rows else 204)
        info = {
            "per_page": per_page,
            "count": len(page_rows),
            "page": page,
            "more_records": len(rows) > page * per_page,
        }
        return JSONResponse({key: page_rows, "info": info})

    async def _unknown_module(self, request: Request, version: str, module: str) -> Response:
        if module in OTHER_MODULES:
            # The sandbox's other modules take inserts and reads (Contacts, Deals updates).
            raise ZohoApiError(
                400, "INVALID_REQUEST_METHOD", "The http request method type is not a valid one"
            )
        raise ZohoApiError(
            400, "INVALID_MODULE", "the module name given seems to be invalid", {"module": module}
        )


#: The sandbox org as ``GET /crm/v7/org`` answers it (types as the v7 SDK's ``Org`` model).
SANDBOX_ORG: dict[str, Any] = {
    "id": "5725767000000000011",
    "company_name": "LeadRelay Sandbox",
    "alias": None,
    "primary_email": API_USER.email,
    "primary_zuid": "20000000101",
    "zgid": "20000000011",
    "domain_name": "org20000000011",
    "type": "production",
    "time_zone": "Etc/UTC",
    "currency": "US Dollar - USD",
    "currency_symbol": "$",
    "currency_locale": "en_US",
    "iso_code": "USD",
    "country": "United States",
    "country_code": "US",
    "max_per_page": MAX_PER_PAGE,
    "mc_status": False,
    "gapps_enabled": False,
    "translation_enabled": False,
    "privacy_settings": False,
    "hipaa_compliance_enabled": False,
    "lite_users_enabled": False,
}

#: Module ids of the sandbox org (``GET /settings/modules``).
_MODULE_IDS = {
    "Leads": "5725767000000002175",
    "Accounts": "5725767000000002177",
    "Tasks": "5725767000000002181",
    "Contacts": "5725767000000002179",
    "Deals": "5725767000000002183",
}
_SINGULAR = {
    "Leads": "Lead",
    "Accounts": "Account",
    "Tasks": "Task",
    "Contacts": "Contact",
    "Deals": "Deal",
}


def store_module(store: LeadStore) -> dict[str, Any]:
    """One module as ``GET /crm/v7/settings/modules`` lists it."""
    name = store.module
    return {
        "id": _MODULE_IDS[name],
        "api_name": name,
        "module_name": name,
        "singular_label": _SINGULAR[name],
        "plural_label": name,
        "api_supported": True,
        "generated_type": "default",
        "convertable": name == "Leads",
        "creatable": True,
        "editable": True,
        "deletable": True,
        "viewable": True,
        "visible": True,
        "status": "visible",
        "sequence_number": list(_MODULE_IDS).index(name) + 1,
        "modified_time": None,
        "modified_by": None,
    }


def _only_item(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The one object of a body's ``key`` list (merge, convert); INVALID_DATA naming it when
    the list does not hold exactly one object."""
    items = body.get(key)
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise ZohoApiError(
            400, "INVALID_DATA", "invalid data", {"api_name": key, "json_path": f"$.{key}"}
        )
    item: dict[str, Any] = items[0]
    return item


def _failed_answer(status: int, body: Any) -> bool:
    """A sub-request answer that counts as failed for ``rollback_on_fail``: an error status,
    or a record the call refused."""
    if status >= 400:
        return True
    data = body.get("data") if isinstance(body, dict) else None
    return isinstance(data, list) and any(
        isinstance(item, dict) and item.get("status") == "error" for item in data
    )


def _query_pairs(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True) if text else []


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _link(store: LeadStore, record: StoredRecord | None) -> dict[str, str] | None:
    """A lookup value ``{"name", "id"}`` naming ``record`` (None for no record)."""
    if record is None:
        return None
    return {"name": store.display_name(record), "id": record.id}


def _sort_value(record: StoredRecord, sort_by: str) -> Any:
    if sort_by == "Modified_Time":
        return record.modified
    return int(record.id)


#: Zoho's answer to a URL it has no route for (status, code, message).
_NO_SUCH_URL = (
    404,
    "INVALID_URL_PATTERN",
    "Please check if the URL trying to access is a correct one",
)


def _record_path(record_id: str) -> None:
    """Record ids are numbers: ``/Leads/deleted`` or ``/Leads/anything`` is no record's URL."""
    if not record_id.isdigit():
        raise ZohoApiError(*_NO_SUCH_URL)


def _if_modified_since(header: str | None) -> datetime | None:
    """The If-Modified-Since header's time, None without one; INVALID_DATA when malformed."""
    if not header:
        return None
    since = _parse_http_date(header)
    if since is None:
        raise ZohoApiError(
            400, "INVALID_DATA", "invalid data", {"header_name": "If-Modified-Since"}
        )
    return since


def _parse_http_date(text: str) -> datetime | None:
    """If-Modified-Since: Zoho's docs show ISO 8601 with an offset; RFC 1123 is accepted too."""
    moment = parse_datetime(text)
    if moment is not None:
        return moment
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
