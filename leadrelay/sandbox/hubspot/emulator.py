"""The HubSpot CRM v3 emulator: contacts, batch, search, properties, owners, tasks, companies,
deals, deal pipelines and OAuth.

Mounted under ``/hubspot``; ``hubspot.HubSpot(access_token=HUBSPOT_ACCESS_TOKEN,
host=HUBSPOT_BASE_URL, ssl_ca_cert=CA)`` works against it unmodified. Every API response carries
HubSpot's rate-limit headers (search responses none, as on HubSpot) and every error answers in
HubSpot's ``{"status": "error", "message", "correlationId", "category"}`` dialect.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadrelay.sandbox.base import Emulator, Sandbox, SchemaChangeError
from leadrelay.sandbox.hubspot.associations import (
    OBJECT_TYPE_NAMES,
    TYPES,
    Associations,
    object_type,
)
from leadrelay.sandbox.hubspot.companies import CompanyStore
from leadrelay.sandbox.hubspot.deals import DealStore
from leadrelay.sandbox.hubspot.errors import (
    HubSpotError,
    correlation_id,
    error_body,
    not_found,
    unstorable_text,
    validation_error,
)
from leadrelay.sandbox.hubspot.forms import (
    SANDBOX_FORM_GUID,
    SANDBOX_PORTAL_ID,
    FormError,
    SubmissionLimits,
    seeded_forms,
    submit,
)
from leadrelay.sandbox.hubspot.schema import (
    SANDBOX_HUB_ID,
    SEEDED_OWNERS,
    Schema,
    legacy_property,
)
from leadrelay.sandbox.hubspot.search import search
from leadrelay.sandbox.hubspot.store import Contact, ContactStore, wanted_properties
from leadrelay.sandbox.hubspot.tasks import TaskStore

#: sandbox-only private-app token (never a real HubSpot credential)
SANDBOX_ACCESS_TOKEN = "pat-sandbox-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
#: sandbox-only OAuth app credentials and the refresh token of its one installation
SANDBOX_CLIENT_ID = "sandbox-client-5f0e3c1a-2b4d-4e6f-8a9b-0c1d2e3f4a5b"
SANDBOX_CLIENT_SECRET = "sandbox-secret-9d8c7b6a-5f4e-3d2c-1b0a-f9e8d7c6b5a4"
SANDBOX_REFRESH_TOKEN = "sandbox-refresh-1a2b3c4d-5e6f-7a8b-9c0d-e1f2a3b4c5d6"
SANDBOX_APP_ID = 3_210_987
#: lifetime of issued OAuth access tokens (HubSpot issues 30-minute tokens)
ACCESS_TOKEN_TTL_S = 1800

# Private-app limits of a Professional account: 190 per 10 s, 650,000 per day; search has its own
# 5 per second (facts §1 "Errors and rate limits", "Search").
TEN_SECOND_LIMIT = 190
DAILY_LIMIT = 650_000
SEARCH_PER_SECOND = 5

_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)

Handler = Callable[["_Call"], Response]

_EVERY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _route_not_found() -> HubSpotError:
    """A path no HubSpot API serves."""
    return not_found("resource not found")


@dataclass
class _Call:
    """One authenticated API request, as handlers see it."""

    request: Request
    body: Any
    token: str

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    def query_list(self, name: str) -> list[str] | None:
        values = self.request.query_params.getlist(name)
        return wanted_properties(values) if values else None

    def flag(self, name: str) -> bool:
        return (self.query(name) or "false").lower() == "true"

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])


class _RateLimits:
    """Per-token rolling windows: the 10-second burst budget, the daily count, search's 5/s."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.burst: dict[str, deque[float]] = {}
        self.search: dict[str, deque[float]] = {}
        self.daily: dict[tuple[str, str], int] = {}

    @staticmethod
    def _take(window: deque[float], now: float, span: float, limit: int) -> bool:
        while window and now - window[0] >= span:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def take_burst(self, token: str) -> tuple[bool, dict[str, str], bool]:
        """Count one API call; (allowed, headers, daily_exhausted)."""
        now = time.monotonic()
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        with self.lock:
            window = self.burst.setdefault(token, deque())
            used_today = self.daily.get((token, day), 0)
            if used_today >= DAILY_LIMIT:
                return False, {}, True
            allowed = self._take(window, now, 10.0, TEN_SECOND_LIMIT)
            if allowed:
                used_today += 1
                self.daily[(token, day)] = used_today
            last_second = sum(1 for t in window if now - t < 1.0)
            headers = {
                "X-HubSpot-RateLimit-Max": str(TEN_SECOND_LIMIT),
                "X-HubSpot-RateLimit-Remaining": str(max(0, TEN_SECOND_LIMIT - len(window))),
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                "X-HubSpot-RateLimit-Secondly": str(TEN_SECOND_LIMIT // 10),
                "X-HubSpot-RateLimit-Secondly-Remaining": str(
                    max(0, TEN_SECOND_LIMIT // 10 - last_second)
                ),
            }
            if token.startswith("pat-"):
                # OAuth calls omit the daily pair (facts §1 "Errors and rate limits").
                headers["X-HubSpot-RateLimit-Daily"] = str(DAILY_LIMIT)
                headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(DAILY_LIMIT - used_today)
            return allowed, headers, False

    def take_search(self, token: str) -> bool:
        """Count one search call against its own 5-per-second limit."""
        with self.lock:
            window = self.search.setdefault(token, deque())
            return self._take(window, time.monotonic(), 1.0, SEARCH_PER_SECOND)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def ten_secondly_response() -> JSONResponse:
    """HubSpot's 429 for the 10-second burst budget."""
    body = error_body(
        "You have reached your ten_secondly_rolling limit.",
        "RATE_LIMITS",
        errorType="RATE_LIMIT",
        policyName="TEN_SECONDLY_ROLLING",
        groupName=f"private-app:{SANDBOX_HUB_ID}",
    )
    return _json(body, 429)


class _CatchAll:
    """Outermost wrapper: anything that escaped the app still answers in HubSpot's dialect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                return
            body = error_body("internal error", "INTERNAL_ERROR")
            await _json(body, 500)(scope, receive, send)


class HubSpotEmulator(Emulator):
    """HubSpot CRM v3 (contacts, companies, tasks, properties, owners, OAuth) in memory."""

    name = "hubspot"
    prefix = "/hubspot"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.reset()

    def reset(self) -> None:
        """Drop every contact, task, company and issued token; restore the default properties
        and owners."""
        with self.lock:
            self.schema = Schema()
            self.store = ContactStore(self.schema)
            self.owners = list(SEEDED_OWNERS)
            self.tasks = TaskStore(
                self.store.now_ms,
                self._live_contact,
                lambda: {owner.id for owner in self.owners},
            )
            self.companies = CompanyStore(
                self.store.now_ms, lambda: {owner.id for owner in self.owners}
            )
            # The deals follow the contacts' clock, even one a test sets later.
            self.deals = DealStore(
                lambda: self.store.clock(), lambda: {owner.id for owner in self.owners}
            )
            self.associations = Associations(
                self._exists,
                lambda: [(t.id, c) for t in self.tasks.tasks.values() for c in t.contacts],
            )
            self.limits = _RateLimits()
            self.oauth_tokens: dict[str, float] = {}
            self.refresh_tokens = {SANDBOX_REFRESH_TOKEN}
            self.forms = seeded_forms()
            self.form_limits = SubmissionLimits()

    def env(self) -> dict[str, str]:
        """``HUBSPOT_BASE_URL``, ``HUBSPOT_ACCESS_TOKEN`` (DESIGN §10), the portal id and the
        seeded form's GUID (``HUBSPOT_PORTAL_ID``, ``HUBSPOT_FORM_GUID``)."""
        return {
            "HUBSPOT_BASE_URL": self.base_url,
            "HUBSPOT_ACCESS_TOKEN": SANDBOX_ACCESS_TOKEN,
            "HUBSPOT_PORTAL_ID": SANDBOX_PORTAL_ID,
            "HUBSPOT_FORM_GUID": SANDBOX_FORM_GUID,
        }

    # ------------------------------------------------------------ faults, schema

    def rate_limited(self, request: Request) -> Response:
        """The injected rate limit answers HubSpot's TEN_SECONDLY_ROLLING 429."""
        return ten_secondly_response()

    def fault(self, request: Request, status: int) -> Response:
        """An injected server error in HubSpot's error shape."""
        messages = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        category = "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR"
        return _json(error_body(messages.get(status, "internal error"), category), status)

    def change_schema(self, change: dict[str, Any]) -> None:
        """Remove a contact property, or one option of an enumeration property."""
        with self.lock:
            if "remove_field" in change:
                name = change["remove_field"]
                if not isinstance(name, str) or name not in self.schema.properties:
                    raise SchemaChangeError(f"hubspot has no contact property {name!r}")
                del self.schema.properties[name]
                return
            spec = change.get("remove_option")
            if not isinstance(spec, dict):
                raise SchemaChangeError('remove_option needs {"field": NAME, "value": V}')
            definition = self.schema.properties.get(str(spec.get("field")))
            if definition is None:
                raise SchemaChangeError(f"hubspot has no contact property {spec.get('field')!r}")
            options = definition["options"]
            kept = [o for o in options if o["value"] != spec.get("value")]
            if len(kept) == len(options):
                raise SchemaChangeError(
                    f"hubspot property {definition['name']} has no option {spec.get('value')!r}"
                )
            # HubSpot enumerations are restricted: a removed option is then refused with
            # INVALID_OPTION like any unknown value (facts §1 "Enumerations").
            definition["options"] = kept

    # ------------------------------------------------------------ plumbing

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if token == SANDBOX_ACCESS_TOKEN:
            return token
        with self.lock:
            expiry = self.oauth_tokens.get(token)
        if expiry is None:
            raise HubSpotError(401, _AUTH_MESSAGE, "INVALID_AUTHENTICATION")
        if expiry <= time.time():
            ago = int(time.time() - expiry)
            raise HubSpotError(
                401,
                f"The OAuth token used to make this call expired {ago} second(s) ago.",
                "EXPIRED_AUTHENTICATION",
            )
        return token

    async def _serve(self, request: Request, handler: Handler, *, is_search: bool) -> Response:
        headers: dict[str, str] = {}
        response: Response
        try:
            token = self._authenticate(request)
            if is_search:
                if not self.limits.take_search(token):
                    # Search's own limit answers RATE_LIMITS with no policyName (facts §1).
                    raise HubSpotError(429, "You have reached your secondly limit.", "RATE_LIMITS")
            else:
                allowed, headers, daily = self.limits.take_burst(token)
                if daily:
                    body = error_body(
                        "You have reached your daily limit.",
                        "RATE_LIMITS",
                        errorType="RATE_LIMIT",
                        policyName="DAILY",
                        groupName=f"private-app:{SANDBOX_HUB_ID}",
                    )
                    return _json(body, 429)
                if not allowed:
                    response = ten_secondly_response()
                    response.headers.update(headers)
                    return response
            body = await self._read_body(request)
            with self.lock:
                response = handler(_Call(request, body, token))
        except HubSpotError as exc:
            response = _json(exc.body(), exc.status)
        response.headers.update(headers)
        return response

    @staticmethod
    async def _read_body(request: Request) -> Any:
        if request.method not in {"POST", "PATCH", "PUT"}:
            return None
        raw = await request.body()
        if not raw.strip():
            return None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise validation_error(f"Invalid input JSON on line 1: {exc}") from None
        # JSON may escape a lone surrogate ("\ud800") or a NUL; neither is storable text, so
        # the request is refused before anything is stored, and no later read can fail on it.
        problem = unstorable_text(body)
        if problem is not None:
            raise validation_error(f"Invalid input JSON: {problem}")
        return body

    def _route(
        self, handler: Handler, *, is_search: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._serve(request, handler, is_search=is_search)

        return endpoint

    def app(self) -> ASGIApp:
        """The FastAPI app serving HubSpot's paths relative to ``/hubspot``."""
        api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        props = "/crm/v3/properties/{objectType}"
        routes: list[tuple[str, str, Handler, bool]] = []
        # HubSpot takes an object type by plural name, singular name or type id ("contacts",
        # "contact", "0-1") wherever the path names one.
        for contacts in (f"/crm/v3/objects/{n}" for n in OBJECT_TYPE_NAMES["contacts"]):
            routes.extend(self._contact_routes(contacts))
        for companies in (f"/crm/v3/objects/{n}" for n in OBJECT_TYPE_NAMES["companies"]):
            routes.extend(self._company_routes(companies))
        for deals in (f"/crm/v3/objects/{n}" for n in OBJECT_TYPE_NAMES["deals"]):
            routes.extend(self._deal_routes(deals))
        pipelines = "/crm/v3/pipelines/{objectType}"
        routes += [
            ("GET", pipelines, self._list_pipelines, False),
            ("POST", pipelines, self._create_pipeline, False),
            ("GET", pipelines + "/{pipelineId}", self._get_pipeline, False),
            ("GET", pipelines + "/{pipelineId}/stages", self._pipeline_stages, False),
        ]
        for tasks in (f"/crm/v3/objects/{n}" for n in OBJECT_TYPE_NAMES["tasks"]):
            routes.extend(
                [
                    ("GET", tasks, self._list_tasks, False),
                    ("POST", tasks, self._create_task, False),
                    ("GET", tasks + "/{taskId}", self._get_task, False),
                ]
            )
        v4_object = "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}"
        routes += [
            ("GET", props, self._list_properties, False),
            ("POST", props, self._create_property, False),
            ("POST", props + "/batch/read", self._properties_batch_read, False),
            ("POST", props + "/batch/create", self._properties_batch_create, False),
            ("POST", props + "/batch/archive", self._properties_batch_archive, False),
            ("GET", props + "/{propertyName}", self._get_property, False),
            ("PATCH", props + "/{propertyName}", self._update_property, False),
            ("DELETE", props + "/{propertyName}", self._archive_property, False),
            # The legacy properties API, still called by production connectors.
            ("GET", "/properties/v1/{objectType}/properties", self._legacy_properties, False),
            ("GET", "/properties/v2/{objectType}/properties", self._legacy_properties, False),
            ("GET", "/crm/v3/schemas", self._list_schemas, False),
            ("GET", "/crm-object-schemas/v3/schemas", self._list_schemas, False),
            ("GET", "/crm/v3/owners/", self._list_owners, False),
            ("GET", "/crm/v3/owners", self._list_owners, False),
            ("GET", "/crm/v3/owners/{ownerId}", self._get_owner, False),
            ("POST", self._ASSOC_BATCH_READ.format(3), self._association_batch_read(3), False),
            ("POST", self._ASSOC_BATCH_READ.format(4), self._association_batch_read(4), False),
            ("GET", v4_object, self._v4_associations, False),
            ("PUT", v4_object + "/{toObjectId}", self._v4_associate, False),
            ("DELETE", v4_object + "/{toObjectId}", self._v4_dissociate, False),
            (
                "PUT",
                "/crm/v4/objects/{objectType}/{objectId}/associations/default/{toObjectType}"
                "/{toObjectId}",
                self._v4_associate_default,
                False,
            ),
        ]
        for method, path, handler, is_search in routes:
            api.add_api_route(path, self._route(handler, is_search=is_search), methods=[method])
        # Any other object type, and any other path under a known one, answers as HubSpot does.
        for path in ("/crm/v3/objects/{objectType}", "/crm/v3/objects/{objectType}/{rest:path}"):
            api.add_api_route(path, self._route(self._unknown_object_path), methods=_EVERY_METHOD)
        form_path = "/{portalId}/{formGuid}"
        for mode, secure in (("secure/submit", True), ("submit", False)):
            api.add_api_route(
                f"/submissions/v3/integration/{mode}{form_path}",
                self._form_endpoint(secure=secure),
                methods=["POST"],
            )
        api.add_api_route("/oauth/v1/token", self._oauth_token, methods=["POST"])
        api.add_api_route(
            "/oauth/v1/access-tokens/{token}", self._access_token_info, methods=["GET"]
        )
        api.add_api_route(
            "/oauth/v1/refresh-tokens/{token}",
            self._refresh_token_info,
            methods=["GET", "DELETE"],
        )
        api.router.redirect_slashes = False
        self._api = api

        async def http_error(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
            if status == 405:
                return self._not_allowed(request)
            if status == 404:
                return _json(_route_not_found().body(), 404)
            return _json(error_body("internal error", "INTERNAL_ERROR"), status)

        api.add_exception_handler(StarletteHTTPException, http_error)
        api.add_exception_handler(Exception, http_error)
        return _CatchAll(api)

    _ASSOC_BATCH_READ = "/crm/v{}/associations/{{fromObjectType}}/{{toObjectType}}/batch/read"

    def _contact_routes(self, contacts: str) -> list[tuple[str, str, Handler, bool]]:
        one = contacts + "/{contactId}"
        association = one + "/associations/{toObjectType}"
        return [
            ("GET", contacts, self._list_contacts, False),
            ("POST", contacts, self._create_contact, False),
            ("POST", f"{contacts}/search", self._search, True),
            ("POST", f"{contacts}/merge", self._merge_contacts, False),
            ("POST", f"{contacts}/batch/read", self._batch("read"), False),
            ("POST", f"{contacts}/batch/create", self._batch("create"), False),
            ("POST", f"{contacts}/batch/update", self._batch("update"), False),
            ("POST", f"{contacts}/batch/upsert", self._batch("upsert"), False),
            ("POST", f"{contacts}/batch/archive", self._batch_archive, False),
            ("GET", one, self._get_contact, False),
            ("PATCH", one, self._update_contact, False),
            ("DELETE", one, self._archive_contact, False),
            # The v3 association endpoints of one contact.
            ("GET", association, self._v3_associations, False),
            ("PUT", association + "/{toObjectId}/{associationType}", self._v3_associate, False),
            ("DELETE", association + "/{toObjectId}/{associationType}", self._v3_dissociate, False),
        ]

    def _company_routes(self, companies: str) -> list[tuple[str, str, Handler, bool]]:
        return [
            ("GET", companies, self._list_companies, False),
            ("POST", companies, self._create_company, False),
            ("POST", f"{companies}/batch/read", self._batch_read_companies, False),
            ("GET", companies + "/{companyId}", self._get_company, False),
            ("PATCH", companies + "/{companyId}", self._update_company, False),
            ("DELETE", companies + "/{companyId}", self._archive_company, False),
        ]

    def _deal_routes(self, deals: str) -> list[tuple[str, str, Handler, bool]]:
        one = deals + "/{dealId}"
        return [
            ("GET", deals, self._list_deals, False),
            ("POST", deals, self._create_deal, False),
            ("POST", f"{deals}/search", self._search_deals, True),
            ("POST", f"{deals}/batch/read", self._batch_read_deals, False),
            ("GET", one, self._get_deal, False),
            ("PATCH", one, self._update_deal, False),
            ("DELETE", one, self._archive_deal, False),
        ]

    def _not_allowed(self, request: Request) -> Response:
        message = f"{request.method} is not allowed on {request.url.path}"
        return _json(error_body(message, "VALIDATION_ERROR"), 405)

    def _unknown_object_path(self, call: _Call) -> Response:
        """A path under ``/crm/v3/objects`` no route serves: an object type HubSpot cannot
        resolve is a 400; under a known type, the path (or method) is unknown."""
        object_type(call.path("objectType"))
        scope = dict(call.request.scope)
        for route in self._api.router.routes:
            if route.matches(scope)[0] == Match.PARTIAL:
                return self._not_allowed(call.request)
        raise _route_not_found()

    def _list_page(
        self, object_type: str, results: list[dict[str, Any]], after: str | None, limit: int
    ) -> Response:
        """A v3 list answer: the results, and ``paging.next`` when there are more."""
        body: dict[str, Any] = {"results": results}
        if after is not None:
            link = f"{self.base_url}/crm/v3/objects/{object_type}?after={after}&limit={limit}"
            body["paging"] = {"next": {"after": after, "link": link}}
        return _json(body)

    # ------------------------------------------------------------ contacts

    def _list_contacts(self, call: _Call) -> Response:
        limit = _int_param(call.query("limit"), "limit", default=10, maximum=100)
        page, after = self.store.page(limit, call.query("after"), call.flag("archived"))
        wanted = call.query_list("properties")
        return self._list_page(
            "contacts", [self._contact_body(call, c, wanted) for c in page], after, limit
        )

    def _get_contact(self, call: _Call) -> Response:
        contact = self.store.find(
            call.path("contactId"), call.query("idProperty"), call.flag("archived")
        )
        return _json(self._contact_body(call, contact, call.query_list("properties")))

    def _contact_body(self, call: _Call, contact: Contact, wanted: list[str] | None) -> Any:
        """A contact as a read answers it, with the ``propertiesWithHistory`` and
        ``associations`` the query asks for."""
        body = self.store.render(contact, wanted)
        history = call.query_list("propertiesWithHistory")
        if history:
            body["propertiesWithHistory"] = {
                name: self.store.history(contact, name)
                for name in history
                if self.schema.exists(name)
            }
        associated = self._associated(call, "contacts", contact.id)
        if associated:
            body["associations"] = associated
        return body

    def _associated(self, call: _Call, from_type: str, record_id: int) -> dict[str, Any]:
        """The ``associations`` a read asks for, by type (v3 names)."""
        associated: dict[str, Any] = {}
        for name in call.query_list("associations") or []:
            to_type = object_type(name)
            if from_type != "contacts" and (from_type, to_type) not in TYPES:
                continue  # the sandbox keeps a deal's contacts only
            kind = self.associations.kind(from_type, to_type)
            found = self.associations.targets(from_type, record_id, to_type)
            if found:
                # HubSpot leaves out the types with nothing associated.
                results = [{"id": str(t), "type": kind.v3_name} for t in found]
                associated[to_type] = {"results": results}
        return associated

    def _create_contact(self, call: _Call) -> Response:
        body = _object(call.body)
        contact = self.store.create(body.get("properties"))
        return _json(self.store.render(contact, None, all_set=True), 201)

    def _update_contact(self, call: _Call) -> Response:
        body = _object(call.body)
        contact = self.store.update(
            call.path("contactId"), body.get("properties"), call.query("idProperty")
        )
        return _json(self.store.render(contact, None, all_set=True))

    def _archive_contact(self, call: _Call) -> Response:
        key = call.path("contactId")
        if key.isdigit() and (contact := self.store.contacts.get(int(key))) is not None:
            self.store.archive(self.store.resolve(contact))
        return Response(status_code=204)

    def _merge_contacts(self, call: _Call) -> Response:
        merged = self.store.merge(call.body)
        for old in _split_ids(merged.props.get("hs_merged_object_ids")):
            # The old contacts' companies and deals are the merged record's.
            self.associations.move_contact(old, merged.id)
            for task in self.tasks.tasks.values():
                if old in task.contacts:
                    task.contacts = list(
                        dict.fromkeys(merged.id if c == old else c for c in task.contacts)
                    )
        return _json(self.store.render(merged, None))

    def _batch(self, operation: str) -> Handler:
        def handler(call: _Call) -> Response:
            run = {
                "read": self.store.batch_read,
                "create": self.store.batch_create,
                "update": self.store.batch_update,
                "upsert": self.store.batch_upsert,
            }[operation]
            status, body = run(call.body)
            return _json(body, status)

        return handler

    def _batch_archive(self, call: _Call) -> Response:
        self.store.batch_archive(call.body)
        return Response(status_code=204)

    def _search(self, call: _Call) -> Response:
        body = search(self.store, call.body, self.sandbox.search_lag_s(self.name))
        return _json(body)

    # ------------------------------------------------------------ properties

    def _object_type(self, call: _Call) -> tuple[str, Schema]:
        """The object type a properties path names (``contacts`` or ``companies``), and its
        property definitions."""
        object_type = call.path("objectType")
        if object_type in {"contacts", "contact", "0-1"}:
            return "contacts", self.schema
        if object_type in {"companies", "company", "0-2"}:
            return "companies", self.companies.schema
        if object_type in OBJECT_TYPE_NAMES["deals"]:
            return "deals", self.deals.schema
        raise validation_error(f"Unable to infer object type from: {object_type}")

    def _list_properties(self, call: _Call) -> Response:
        _, schema = self._object_type(call)
        return _json({"results": list(schema.properties.values())})

    def _legacy_properties(self, call: _Call) -> Response:
        """``GET /properties/v1|v2/{contacts|contact|companies|company}/properties``: a bare
        array in the legacy shape (times in epoch ms, read-only flags at the top level)."""
        object_name = call.path("objectType")
        if object_name in {"contacts", "contact"}:
            schema = self.schema
        elif object_name in {"companies", "company"}:
            schema = self.companies.schema
        else:
            raise _route_not_found()
        return _json([legacy_property(p) for p in schema.properties.values()])

    def _list_schemas(self, call: _Call) -> Response:
        # The sandbox portal has no custom objects (HubSpot answers such a portal this way).
        return _json({"results": []})

    # ------------------------------------------------------------ associations

    def _exists(self, object_name: str, object_id: int) -> bool:
        if object_name == "contacts":
            return self._live_contact(object_id)
        if object_name == "companies":
            company = self.companies.companies.get(object_id)
            return company is not None and company.archived_ms is None
        if object_name == "deals":
            deal = self.deals.deals.get(object_id)
            return deal is not None and deal.archived_ms is None
        return object_id in self.tasks.tasks

    def _association_batch_read(self, version: int) -> Handler:
        def handler(call: _Call) -> Response:
            started = _now_iso()
            status, body = self.associations.batch_read(
                object_type(call.path("fromObjectType")),
                object_type(call.path("toObjectType")),
                call.body,
                v4=version == 4,
            )
            body["startedAt"] = started
            body["completedAt"] = _now_iso()
            return _json(body, status)

        return handler

    def _from_to(self, call: _Call, id_param: str) -> tuple[str, int, str]:
        from_type = object_type(call.path("objectType"))
        to_type = object_type(call.path("toObjectType"))
        return from_type, self.associations.check(from_type, call.path(id_param)), to_type

    def _v4_associations(self, call: _Call) -> Response:
        from_type, from_id, to_type = self._from_to(call, "objectId")
        kind = self.associations.kind(from_type, to_type)
        found = self.associations.targets(from_type, from_id, to_type)
        spec = self.associations.spec(kind)
        return _json({"results": [{"toObjectId": t, "associationTypes": [spec]} for t in found]})

    def _v4_associate(self, call: _Call) -> Response:
        from_type, _, to_type = self._from_to(call, "objectId")
        kind = self.associations.kind(from_type, to_type)
        specs = call.body if isinstance(call.body, list) else None
        if not specs or not all(
            isinstance(s, dict)
            and s.get("associationCategory") == "HUBSPOT_DEFINED"
            and s.get("associationTypeId") == kind.type_id
            for s in specs
        ):
            raise validation_error(
                f"The body must list association types; the sandbox knows HUBSPOT_DEFINED "
                f"{kind.type_id} for {from_type} to {to_type}"
            )
        from_id, to_id = call.path("objectId"), call.path("toObjectId")
        self.associations.link(from_type, from_id, to_type, to_id)
        # A labelled association answers the pair and its labels (LabelsBetweenObjectPair).
        return _json(
            {
                "fromObjectTypeId": OBJECT_TYPE_NAMES[from_type][2],
                "fromObjectId": from_id,
                "toObjectTypeId": OBJECT_TYPE_NAMES[to_type][2],
                "toObjectId": to_id,
                "labels": [],
            },
            201,
        )

    def _v4_associate_default(self, call: _Call) -> Response:
        started = _now_iso()
        from_type = object_type(call.path("objectType"))
        to_type = object_type(call.path("toObjectType"))
        from_id, to_id = call.path("objectId"), call.path("toObjectId")
        kind = self.associations.link(from_type, from_id, to_type, to_id)
        spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": kind.type_id}
        result = {"from": {"id": from_id}, "to": {"id": to_id}, "associationSpec": spec}
        return _json(
            {
                "status": "COMPLETE",
                "results": [result],
                "startedAt": started,
                "completedAt": _now_iso(),
            }
        )

    def _v4_dissociate(self, call: _Call) -> Response:
        self.associations.unlink(
            object_type(call.path("objectType")),
            call.path("objectId"),
            object_type(call.path("toObjectType")),
            call.path("toObjectId"),
        )
        return Response(status_code=204)

    def _v3_associations(self, call: _Call) -> Response:
        key = call.path("contactId")
        contact = self.store.find(key)
        to_type = object_type(call.path("toObjectType"))
        kind = self.associations.kind("contacts", to_type)
        found = self.associations.targets("contacts", contact.id, to_type)
        return _json({"results": [{"id": str(t), "type": kind.v3_name} for t in found]})

    def _v3_associate(self, call: _Call) -> Response:
        contact = self.store.find(call.path("contactId"))
        to_type = object_type(call.path("toObjectType"))
        kind = self.associations.kind("contacts", to_type)
        if call.path("associationType") not in {kind.v3_name, str(kind.type_id)}:
            raise validation_error(
                f"{call.path('associationType')} is not a valid association type from contacts "
                f"to {to_type}; use {kind.v3_name}"
            )
        self.associations.link("contacts", str(contact.id), to_type, call.path("toObjectId"))
        body = self.store.render(contact, None)
        associated = self.associations.targets("contacts", contact.id, to_type)
        body["associations"] = {
            to_type: {"results": [{"id": str(t), "type": kind.v3_name} for t in associated]}
        }
        return _json(body)

    def _v3_dissociate(self, call: _Call) -> Response:
        contact = self.store.find(call.path("contactId"))
        to_type = object_type(call.path("toObjectType"))
        self.associations.unlink("contacts", str(contact.id), to_type, call.path("toObjectId"))
        return Response(status_code=204)

    def _known_property(self, call: _Call) -> tuple[Schema, str]:
        object_type, schema = self._object_type(call)
        name = call.path("propertyName")
        if name not in schema.properties:
            raise not_found(f"Unable to find property {name} for object type {object_type}")
        return schema, name

    def _get_property(self, call: _Call) -> Response:
        schema, name = self._known_property(call)
        return _json(schema.properties[name])

    def _create_property(self, call: _Call) -> Response:
        _, schema = self._object_type(call)
        return _json(schema.create_property(call.body), 201)

    def _update_property(self, call: _Call) -> Response:
        schema, name = self._known_property(call)
        return _json(schema.update_property(name, call.body))

    def _archive_property(self, call: _Call) -> Response:
        schema, name = self._known_property(call)
        schema.archive_property(name)
        return Response(status_code=204)

    def _names(self, body: Any) -> list[str]:
        inputs = ContactStore.batch_inputs(body)
        names = []
        for item in inputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise validation_error("Each input needs a property name")
            names.append(item["name"])
        return names

    def _properties_batch_read(self, call: _Call) -> Response:
        object_type, schema = self._object_type(call)
        started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        names = self._names(call.body)
        results = [schema.properties[n] for n in names if n in schema.properties]
        missing = [n for n in names if n not in schema.properties]
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started}
        body["completedAt"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if missing:
            body["numErrors"] = 1
            body["errors"] = [
                not_found(
                    f"Unable to find some properties for object type {object_type}"
                ).batch_error({"names": missing})
            ]
            return _json(body, 207)
        return _json(body)

    def _properties_batch_create(self, call: _Call) -> Response:
        _, schema = self._object_type(call)
        started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        inputs = ContactStore.batch_inputs(call.body)
        results = [schema.create_property(item) for item in inputs]
        body = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        return _json(body, 201)

    def _properties_batch_archive(self, call: _Call) -> Response:
        _, schema = self._object_type(call)
        for name in self._names(call.body):
            if name in schema.properties:
                schema.archive_property(name)
        return Response(status_code=204)

    # ------------------------------------------------------------ owners

    def _list_owners(self, call: _Call) -> Response:
        limit = _int_param(call.query("limit"), "limit", default=100, maximum=500)
        owners = self.owners
        email = call.query("email")
        if email:
            owners = [o for o in owners if o.email == email.strip().lower()]
        if call.flag("archived"):
            owners = []
        start = 0
        after = call.query("after")
        if after:
            ids = [o.id for o in owners]
            if after not in ids:
                raise validation_error(f"after {after!r} is not a cursor this API handed out")
            start = ids.index(after)
        page = owners[start : start + limit]
        body: dict[str, Any] = {"results": [o.to_json() for o in page]}
        if start + limit < len(owners):
            next_id = owners[start + limit].id
            link = f"{self.base_url}/crm/v3/owners/?after={next_id}&limit={limit}"
            body["paging"] = {"next": {"after": next_id, "link": link}}
        return _json(body)

    def _get_owner(self, call: _Call) -> Response:
        key = call.path("ownerId")
        by_user = call.query("idProperty") == "userId"
        for owner in self.owners:
            if (str(owner.user_id) if by_user else owner.id) == key:
                return _json(owner.to_json())
        raise not_found(f"Owner {key} not found", context={"id": [key]})

    # ------------------------------------------------------------ tasks

    def _live_contact(self, contact_id: int) -> bool:
        contact = self.store.contacts.get(contact_id)
        return contact is not None and contact.archived_ms is None

    def _with_contacts(self, call: _Call) -> bool:
        wanted = call.query_list("associations") or []
        return any(name in ("contacts", "contact", "0-1") for name in wanted)

    def _create_task(self, call: _Call) -> Response:
        return _json(self.tasks.create(call.body), 201)

    def _get_task(self, call: _Call) -> Response:
        task = self.tasks.find(call.path("taskId"))
        body = self.tasks.render(
            task, call.query_list("properties"), associations=self._with_contacts(call)
        )
        return _json(body)

    def _list_tasks(self, call: _Call) -> Response:
        limit = _int_param(call.query("limit"), "limit", default=10, maximum=100)
        page, after = self.tasks.page(limit, call.query("after"))
        wanted, associations = call.query_list("properties"), self._with_contacts(call)
        return self._list_page(
            "tasks",
            [self.tasks.render(t, wanted, associations=associations) for t in page],
            after,
            limit,
        )

    # ------------------------------------------------------------ companies

    def _list_companies(self, call: _Call) -> Response:
        limit = _int_param(call.query("limit"), "limit", default=10, maximum=100)
        page, after = self.companies.page(limit, call.query("after"), call.flag("archived"))
        wanted = call.query_list("properties")
        return self._list_page(
            "companies", [self.companies.render(c, wanted) for c in page], after, limit
        )

    def _get_company(self, call: _Call) -> Response:
        company = self.companies.find(
            call.path("companyId"), call.query("idProperty"), call.flag("archived")
        )
        return _json(self.companies.render(company, call.query_list("properties")))

    def _create_company(self, call: _Call) -> Response:
        company = self.companies.create(call.body)
        return _json(self.companies.render(company, None, all_set=True), 201)

    def _update_company(self, call: _Call) -> Response:
        company = self.companies.update(call.path("companyId"), call.body)
        return _json(self.companies.render(company, None, all_set=True))

    def _archive_company(self, call: _Call) -> Response:
        self.companies.archive(call.path("companyId"))
        return Response(status_code=204)

    def _batch_read_companies(self, call: _Call) -> Response:
        status, body = self.companies.batch_read(call.body)
        return _json(body, status)

    # ------------------------------------------------------------ deals and pipelines

    def _deal_body(self, call: _Call, deal: Contact, wanted: list[str] | None) -> Any:
        """A deal as a read answers it, with the ``associations`` the query asks for."""
        body = self.deals.render(deal, wanted)
        associated = self._associated(call, "deals", deal.id)
        if associated:
            body["associations"] = associated
        return body

    def _list_deals(self, call: _Call) -> Response:
        limit = _int_param(call.query("limit"), "limit", default=10, maximum=100)
        page, after = self.deals.page(limit, call.query("after"), call.flag("archived"))
        wanted = call.query_list("properties")
        return self._list_page(
            "deals", [self._deal_body(call, d, wanted) for d in page], after, limit
        )

    def _get_deal(self, call: _Call) -> Response:
        deal = self.deals.find(call.path("dealId"), call.query("idProperty"), call.flag("archived"))
        return _json(self._deal_body(call, deal, call.query_list("properties")))

    def _create_deal(self, call: _Call) -> Response:
        """``POST /crm/v3/objects/deals``, with ``associations`` to contacts (type 3)."""
        body = _object(call.body)
        contacts = self._deal_contacts(body.get("associations"))
        deal = self.deals.create(body.get("properties"))
        for contact_id in contacts:
            self.associations.link("deals", str(deal.id), "contacts", str(contact_id))
        return _json(self.deals.render(deal, None, all_set=True), 201)

    def _deal_contacts(self, raw: Any) -> list[int]:
        """The contact ids of a create's ``associations``, checked before anything is stored."""
        if raw is None:
            return []
        kind = self.associations.kind("deals", "contacts")
        if not isinstance(raw, list):
            raise validation_error("associations must be a list")
        found = []
        for item in raw:
            target = item.get("to") if isinstance(item, dict) else None
            types = item.get("types") if isinstance(item, dict) else None
            if not isinstance(target, dict) or not isinstance(types, list) or not types:
                raise validation_error("Each association needs to.id and types")
            for spec in types:
                if not isinstance(spec, dict) or spec.get("associationTypeId") != kind.type_id:
                    raise validation_error(
                        f"The sandbox associates a new deal with contacts only: "
                        f"HUBSPOT_DEFINED {kind.type_id}"
                    )
            found.append(self.associations.check("contacts", str(target.get("id"))))
        return found

    def _update_deal(self, call: _Call) -> Response:
        body = _object(call.body)
        deal = self.deals.update(call.path("dealId"), body.get("properties"))
        return _json(self.deals.render(deal, None, all_set=True))

    def _archive_deal(self, call: _Call) -> Response:
        key = call.path("dealId")
        if key.isdigit() and (deal := self.deals.deals.get(int(key))) is not None:
            self.deals.archive(deal)
        return Response(status_code=204)

    def _batch_read_deals(self, call: _Call) -> Response:
        status, body = self.deals.batch_read(call.body)
        return _json(body, status)

    def _search_deals(self, call: _Call) -> Response:
        return _json(search(self.deals, call.body, self.sandbox.search_lag_s(self.name)))

    def _pipelines_of(self, call: _Call) -> DealStore:
        if call.path("objectType") not in OBJECT_TYPE_NAMES["deals"]:
            # The sandbox keeps deal pipelines only (tickets have their own on HubSpot).
            raise validation_error(f"Unable to infer object type from: {call.path('objectType')}")
        return self.deals

    def _list_pipelines(self, call: _Call) -> Response:
        pipelines = sorted(
            self._pipelines_of(call).pipelines.values(), key=lambda p: p.display_order
        )
        return _json({"results": [p.to_json() for p in pipelines]})

    def _create_pipeline(self, call: _Call) -> Response:
        return _json(self._pipelines_of(call).create_pipeline(call.body).to_json(), 201)

    def _get_pipeline(self, call: _Call) -> Response:
        return _json(self._pipelines_of(call).pipeline(call.path("pipelineId")).to_json())

    def _pipeline_stages(self, call: _Call) -> Response:
        pipeline = self._pipelines_of(call).pipeline(call.path("pipelineId"))
        return _json({"results": pipeline.to_json()["stages"]})

    # ------------------------------------------------------------ forms submission API

    def _form_endpoint(self, *, secure: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._submit_form(request, secure=secure)

        return endpoint

    async def _submit_form(self, request: Request, *, secure: bool) -> Response:
        try:
            token = self._authenticate(request) if secure else None
        except HubSpotError as exc:
            return _json(exc.body(), exc.status)
        if not self.form_limits.take(token):
            # The forms API's 429 comes from its edge as plain text (facts §1 "Forms").
            return Response("error code: 1015", status_code=429, media_type="text/plain")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            body = None
        portal_id = str(request.path_params["portalId"])
        form_guid = str(request.path_params["formGuid"])
        try:
            with self.lock:
                answer = submit(self.forms, self.store, portal_id, form_guid, body, secure=secure)
        except FormError as exc:
            return _json(exc.body, exc.status)
        return _json(answer)

    # ------------------------------------------------------------ OAuth

    async def _oauth_token(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", errors="replace")
        form = {k: v[0] for k, v in parse_qs(raw).items()}

        def refused(status: str, message: str) -> Response:
            # HubSpot's OAuth errors carry the reason in "status" (BAD_REFRESH_TOKEN, …).
            body = {"status": status, "message": message, "correlationId": correlation_id()}
            return _json(body, 400)

        if form.get("grant_type") != "refresh_token":
            return refused("BAD_GRANT_TYPE", f"unsupported grant_type {form.get('grant_type')!r}")
        if form.get("client_id") != SANDBOX_CLIENT_ID:
            return refused("BAD_CLIENT_ID", "missing or invalid client_id")
        if form.get("client_secret") != SANDBOX_CLIENT_SECRET:
            return refused("BAD_CLIENT_SECRET", "missing or invalid client_secret")
        refresh = form.get("refresh_token", "")
        with self.lock:
            if refresh not in self.refresh_tokens:
                return refused("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
            token = "sandbox-oauth-" + secrets.token_hex(16)
            self.oauth_tokens[token] = time.time() + ACCESS_TOKEN_TTL_S
        return _json(
            {
                "access_token": token,
                "refresh_token": refresh,
                "token_type": "bearer",
                "expires_in": ACCESS_TOKEN_TTL_S,
            }
        )

    async def _access_token_info(self, request: Request) -> Response:
        token = str(request.path_params["token"])
        with self.lock:
            expiry = self.oauth_tokens.get(token)
        remaining = int(expiry - time.time()) if expiry is not None else -1
        if remaining <= 0:
            return _json(error_body("Token not found or expired", "OBJECT_NOT_FOUND"), 404)
        return _json(
            {
                "token": token,
                "user": SEEDED_OWNERS[0].email,
                "hub_domain": "leadrelay-sandbox.example.com",
                "scopes": ["crm.objects.contacts.read", "crm.objects.contacts.write", "oauth"],
                "hub_id": SANDBOX_HUB_ID,
                "app_id": SANDBOX_APP_ID,
                "expires_in": remaining,
                "user_id": SEEDED_OWNERS[0].user_id,
                "token_type": "access",
            }
        )

    async def _refresh_token_info(self, request: Request) -> Response:
        token = str(request.path_params["token"])
        with self.lock:
            known = token in self.refresh_tokens
            if known and request.method == "DELETE":
                self.refresh_tokens.discard(token)
                return Response(status_code=204)
        if not known:
            return _json(error_body("Refresh token not found", "OBJECT_NOT_FOUND"), 404)
        return _json(
            {
                "token": token,
                "user": SEEDED_OWNERS[0].email,
                "hub_domain": "leadrelay-sandbox.example.com",
                "scopes": ["crm.objects.contacts.read", "crm.objects.contacts.write", "oauth"],
                "hub_id": SANDBOX_HUB_ID,
                "client_id": SANDBOX_CLIENT_ID,
                "user_id": SEEDED_OWNERS[0].user_id,
                "token_type": "refresh",
            }
        )


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise validation_error("Invalid input JSON: expected an object with properties")
    return body


def _int_param(raw: str | None, name: str, *, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise validation_error(f"{name} must be a positive whole number, got {raw!r}")
    value = int(raw)
    if value > maximum:
        raise validation_error(f"{name} must be at most {maximum}, got {value}")
    return value


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _split_ids(value: str | None) -> list[int]:
    return [int(part) for part in (value or "").split(";") if part.isdigit()]
