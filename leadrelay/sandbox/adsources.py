"""Lead retrieval of the ad platforms: Meta's Graph API lead object and LinkedIn Lead Sync.

Leads are created through the admin API, as the platforms' lead-testing tools would
(``POST /__sandbox__/leads/meta`` and ``POST /__sandbox__/leads/linkedin``); a connector then
fetches them the way it would after a webhook (DESIGN §10, crm-api-facts §4).

Both platforms also list a form's leads, which is how a lead whose notification never came is
found again (``leadrelay reconcile``):

* Meta's bulk read ``GET /v{version}/{form_id}/leads``: newest first, ``limit`` (default 25),
  cursor paging ``{"data": [...], "paging": {"cursors": {"before", "after"}, "next"?}}`` and
  ``filtering=[{"field": "time_created", "operator": "GREATER_THAN", "value": unix}]``;
* LinkedIn's finder ``GET /rest/leadFormResponses?q=owner&owner=(sponsoredAccount:URN)
  &leadType=(leadType:SPONSORED)[&versionedLeadGenFormUrn=URN][&submittedAtTimeRange=(start:ms,
  end:ms)]&start=&count=``: offset paging ``{"elements": [...], "paging": {"start", "count",
  "total", "links"}}``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from leadrelay.sandbox.base import Emulator

#: Sandbox-only Graph API access token (never a real credential).
META_SANDBOX_ACCESS_TOKEN = "EAAsandboxLeadRelayGraphToken000000000000"
#: Sandbox-only LinkedIn access token (never a real credential).
LINKEDIN_SANDBOX_ACCESS_TOKEN = "AQVsandbox-leadrelay-linkedin-token-00000000"

META_LEAD_FIELDS = frozenset(
    {
        "id",
        "created_time",
        "ad_id",
        "ad_name",
        "adset_id",
        "adset_name",
        "campaign_id",
        "campaign_name",
        "form_id",
        "field_data",
        "is_organic",
        "platform",
        "custom_disclaimer_responses",
    }
)
META_DEFAULT_FIELDS = ("created_time", "id", "field_data")
_DIGITS = re.compile(r"^\d{1,20}$")

#: LinkedIn lead form ``predefinedField`` values a sandbox lead may answer.
LINKEDIN_PREDEFINED_FIELDS = (
    "FIRST_NAME",
    "LAST_NAME",
    "EMAIL",
    "WORK_EMAIL",
    "PHONE_NUMBER",
    "WORK_PHONE_NUMBER",
    "COMPANY_NAME",
    "JOB_TITLE",
    "SENIORITY",
    "INDUSTRY",
    "COMPANY_SIZE",
    "COUNTRY",
    "STATE",
    "CITY",
    "ZIP_CODE",
    "LINKEDIN_PROFILE_LINK",
)
_LINKEDIN_VERSION = re.compile(r"^(\d{4})(\d{2})(\.\d{2})?$")
#: Oldest LinkedIn-Version the sandbox treats as active (LinkedIn sunsets versions after a year).
LINKEDIN_OLDEST_VERSION = "202401"
#: The sponsored account that owns every sandbox lead form.
LINKEDIN_SANDBOX_OWNER = "urn:li:sponsoredAccount:500000001"
#: The largest page of the owner finder.
LINKEDIN_PAGE_MAX = 100
_LINKEDIN_OWNER = re.compile(r"^\((?:sponsoredAccount|organization):(?P<urn>urn:li:\w+:\d+)\)$")
_LINKEDIN_LEAD_TYPE = re.compile(r"^\(leadType:(?P<type>[A-Z_]+)\)$")
_LINKEDIN_RANGE = re.compile(r"^\((?:start:(?P<start>\d+))?,?(?:end:(?P<end>\d+))?\)$")
_LINKEDIN_FORM = re.compile(r"urn:li:leadGenForm:(?P<id>\d+)")


def _fbtrace() -> str:
    return "A" + secrets.token_urlsafe(16)


def graph_error(
    status: int, message: str, kind: str, code: int, subcode: int | None = None
) -> JSONResponse:
    """A Graph API error body ``{"error": {message, type, code, error_subcode?, fbtrace_id}}``."""
    error: dict[str, Any] = {"message": message, "type": kind, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = _fbtrace()
    return JSONResponse({"error": error}, status_code=status)


def _invalid_body(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


#: Graph's default and largest page of a form's leads.
META_PAGE_DEFAULT = 25
META_PAGE_MAX = 500


def _encode_cursor(lead_id: str) -> str:
    return base64.urlsafe_b64encode(f"lead:{lead_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return text.removeprefix("lead:") if text.startswith("lead:") else None


def _meta_time_filter(raw: str | None) -> tuple[float | None, float | None] | Response:
    """``filtering=[{"field": "time_created", "operator": "GREATER_THAN"|"LESS_THAN",
    "value": unix}]`` → (after, before) bounds in unix seconds."""
    if raw is None:
        return None, None
    try:
        rules = json.loads(raw)
    except ValueError:
        rules = None
    if not isinstance(rules, list):
        return graph_error(400, "(#100) filtering must be a JSON array", "OAuthException", 100)
    after: float | None = None
    before: float | None = None
    for rule in rules:
        if not isinstance(rule, dict) or rule.get("field") != "time_created":
            return graph_error(
                400, "(#100) Filtering field is not supported", "OAuthException", 100
            )
        value = rule.get("value")
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return graph_error(
                400, "(#100) time_created needs a unix time value", "OAuthException", 100
            )
        operator = rule.get("operator")
        if operator == "GREATER_THAN":
            after = float(value)
        elif operator == "LESS_THAN":
            before = float(value)
        else:
            return graph_error(
                400, f"(#100) Unsupported operator {operator!r}", "OAuthException", 100
            )
    return after, before


@dataclass
class MetaLead:
    """A lead as stored by the Graph API (``UserLeadGenInfo``)."""

    id: str
    created_time: datetime
    form_id: str
    page_id: str
    field_data: list[dict[str, Any]]
    is_organic: bool
    platform: str
    ad_id: str | None = None
    adset_id: str | None = None
    campaign_id: str | None = None

    def to_json(self, names: list[str]) -> dict[str, Any]:
        """The requested fields; absent values are left out, as Graph does."""
        values: dict[str, Any] = {
            "id": self.id,
            "created_time": self.created_time.strftime("%Y-%m-%dT%H:%M:%S+0000"),
            "form_id": self.form_id,
            "field_data": self.field_data,
            "is_organic": self.is_organic,
            "platform": self.platform,
            "ad_id": self.ad_id,
            "ad_name": f"Sandbox ad {self.ad_id}" if self.ad_id else None,
            "adset_id": self.adset_id,
            "adset_name": f"Sandbox ad set {self.adset_id}" if self.adset_id else None,
            "campaign_id": self.campaign_id,
            "campaign_name": f"Sandbox campaign {self.campaign_id}" if self.campaign_id else None,
            "custom_disclaimer_responses": [],
        }
        return {name: values[name] for name in names if values.get(name) is not None}


class MetaEmulator(Emulator):
    """Meta Lead Ads retrieval: ``GET /meta/v{version}/{leadgen_id}`` (Graph API)."""

    name = "meta"
    prefix = "/meta"

    def reset(self) -> None:
        """Forget every lead."""
        with self.lock:
            self.leads: dict[str, MetaLead] = {}
            self._next = 120_000_000_000_000

    def env(self) -> dict[str, str]:
        """Graph base URL and the sandbox access token."""
        return {"META_GRAPH_URL": self.base_url, "META_ACCESS_TOKEN": META_SANDBOX_ACCESS_TOKEN}

    def rate_limited(self, request: Request) -> Response:
        """Graph's application-level throttling error (code 4), answered with HTTP 400."""
        return graph_error(400, "(#4) Application request limit reached", "OAuthException", 4)

    def fault(self, request: Request, status: int) -> Response:
        """Graph's transient error body with the injected status."""
        return graph_error(
            status,
            "An unexpected error has occurred. Please retry your request later.",
            "OAuthException",
            2,
        )

    def create_lead(self, body: Any) -> MetaLead | str:
        """Validate an admin lead body; the stored lead, or the reason it is refused."""
        if not isinstance(body, dict):
            return "body must be a JSON object"
        form_id = body.get("form_id")
        if not isinstance(form_id, str | int) or not _DIGITS.match(str(form_id)):
            return "form_id must be a numeric id"
        field_data = body.get("field_data")
        if not isinstance(field_data, list) or not field_data:
            return "field_data must be a non-empty list of {name, values}"
        for index, item in enumerate(field_data):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return f"field_data[{index}] needs a string name"
            values = item.get("values")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                return f"field_data[{index}].values must be a list of strings"
        optional_ids: dict[str, str | None] = {}
        for key in ("ad_id", "adset_id", "campaign_id", "page_id"):
            value = body.get(key)
            if value is not None and not _DIGITS.match(str(value)):
                return f"{key} must be a numeric id"
            optional_ids[key] = str(value) if value is not None else None
        is_organic = body.get("is_organic", optional_ids["ad_id"] is None)
        if not isinstance(is_organic, bool):
            return "is_organic must be a boolean"
        platform = body.get("platform", "fb")
        if platform not in {"fb", "ig"}:
            return "platform must be fb or ig"
        created = body.get("created_time", time.time())
        if not isinstance(created, int | float) or isinstance(created, bool) or created < 0:
            return "created_time must be a unix time in seconds"
        with self.lock:
            self._next += 1 + secrets.randbelow(1000)
            lead = MetaLead(
                id=str(self._next),
                created_time=datetime.fromtimestamp(int(created), UTC),
                form_id=str(form_id),
                page_id=optional_ids["page_id"] or "100000000000001",
                field_data=[{"name": i["name"], "values": list(i["values"])} for i in field_data],
                is_organic=is_organic,
                platform=platform,
                ad_id=optional_ids["ad_id"],
                adset_id=optional_ids["adset_id"],
                campaign_id=optional_ids["campaign_id"],
            )
            self.leads[lead.id] = lead
        return lead

    def admin_routes(self) -> list[BaseRoute]:
        """``POST /__sandbox__/leads/meta``."""

        async def create(request: Request) -> Response:
            try:
                body = json.loads(await request.body() or b"null")
            except ValueError:
                return _invalid_body("body must be JSON")
            lead = self.create_lead(body)
            if isinstance(lead, str):
                return _invalid_body(lead)
            return JSONResponse({"id": lead.id})

        return [Route("/leads/meta", create, methods=["POST"])]

    def _refuse_token(self, request: Request) -> Response | None:
        token = request.query_params.get("access_token")
        header = request.headers.get("authorization", "")
        if token is None and header.startswith(("Bearer ", "OAuth ")):
            token = header.split(" ", 1)[1].strip()
        if not token:
            return graph_error(
                400, "An access token is required to request this resource.", "OAuthException", 104
            )
        if not secrets.compare_digest(token, META_SANDBOX_ACCESS_TOKEN):
            return graph_error(
                400, "Invalid OAuth access token - Cannot parse access token", "OAuthException", 190
            )
        return None

    @staticmethod
    def _field_names(request: Request) -> tuple[list[str], Response | None]:
        requested = request.query_params.get("fields")
        names = (
            [name.strip() for name in requested.split(",") if name.strip()]
            if requested
            else list(META_DEFAULT_FIELDS)
        )
        unknown = [name for name in names if name not in META_LEAD_FIELDS]
        if unknown:
            return names, graph_error(
                400,
                f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type "
                "(UserLeadGenInfo)",
                "OAuthException",
                100,
            )
        return names, None

    def _read(self, request: Request, leadgen_id: str) -> Response:
        refused = self._refuse_token(request)
        if refused is not None:
            return refused
        with self.lock:
            lead = self.leads.get(leadgen_id)
        if lead is None:
            return graph_error(
                400,
                f"Unsupported get request. Object with ID '{leadgen_id}' does not exist, cannot "
                "be loaded due to missing permissions, or does not support this operation. "
                "Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api",
                "GraphMethodException",
                100,
                33,
            )
        names, refused = self._field_names(request)
        if refused is not None:
            return refused
        return JSONResponse(lead.to_json(names))

    def _list(self, request: Request, form_id: str) -> Response:
        """A form's leads, newest first, with Graph's cursor paging (the bulk read)."""
        refused = self._refuse_token(request)
        if refused is not None:
            return refused
        if not _DIGITS.match(form_id):
            return graph_error(
                400,
                f"Unsupported get request. Object with ID '{form_id}' does not exist",
                "GraphMethodException",
                100,
                33,
            )
        names, refused = self._field_names(request)
        if refused is not None:
            return refused
        limit_text = request.query_params.get("limit", str(META_PAGE_DEFAULT))
        if not limit_text.isdigit() or int(limit_text) < 1:
            return graph_error(400, "(#100) Invalid parameter: limit", "OAuthException", 100)
        limit = min(int(limit_text), META_PAGE_MAX)
        bounds = _meta_time_filter(request.query_params.get("filtering"))
        if isinstance(bounds, Response):
            return bounds
        after_after, before = bounds
        with self.lock:
            leads = sorted(
                (lead for lead in self.leads.values() if lead.form_id == form_id),
                key=lambda lead: (lead.created_time, int(lead.id)),
                reverse=True,
            )
        leads = [
            lead
            for lead in leads
            if (after_after is None or lead.created_time.timestamp() > after_after)
            and (before is None or lead.created_time.timestamp() < before)
        ]
        start = 0
        cursor = request.query_params.get("after")
        if cursor:
            position = _decode_cursor(cursor)
            ids = [lead.id for lead in leads]
            if position is None or position not in ids:
                return graph_error(400, "(#100) Invalid cursor: after", "OAuthException", 100)
            start = ids.index(position) + 1
        page = leads[start : start + limit]
        body: dict[str, Any] = {"data": [lead.to_json(names) for lead in page]}
        if page:
            paging: dict[str, Any] = {
                "cursors": {
                    "before": _encode_cursor(page[0].id),
                    "after": _encode_cursor(page[-1].id),
                }
            }
            if start + limit < len(leads):
                query = dict(request.query_params)
                query["after"] = paging["cursors"]["after"]
                paging["next"] = f"{str(request.url).split('?', 1)[0]}?{urlencode(query)}"
            body["paging"] = paging
        return JSONResponse(body)

    def app(self) -> ASGIApp:
        """The Graph API subset: a lead by id, with or without a version prefix."""
        api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @api.get("/v{version}/{leadgen_id}")
        async def versioned(request: Request, version: str, leadgen_id: str) -> Response:
            return self._read(request, leadgen_id)

        @api.get("/v{version}/{form_id}/leads")
        async def versioned_list(request: Request, version: str, form_id: str) -> Response:
            return self._list(request, form_id)

        @api.get("/{form_id}/leads")
        async def bare_list(request: Request, form_id: str) -> Response:
            return self._list(request, form_id)

        @api.get("/{leadgen_id}")
        async def bare(request: Request, leadgen_id: str) -> Response:
            return self._read(request, leadgen_id)

        @api.exception_handler(StarletteHTTPException)
        async def unknown(request: Request, exc: StarletteHTTPException) -> Response:
            return graph_error(
                400, f"Unknown path components: {request.url.path}", "OAuthException", 2500
            )

        @api.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError) -> Response:
            return graph_error(400, "(#100) Invalid parameter", "OAuthException", 100)

        return api


# -- LinkedIn ----------------------------------------------------------------------------------


@dataclass
class LeadForm:
    """A LinkedIn lead gen form; questions are added as sandbox leads use predefined fields."""

    id: int
    questions: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The form as ``GET /rest/leadForms/{id}`` answers it."""
        questions = [
            {
                "questionId": question_id,
                "name": predefined.lower(),
                "predefinedField": predefined,
                "question": {"localized": {"en_US": predefined.replace("_", " ").title()}},
                "questionDetails": {"textQuestionDetails": {"maxResponseLength": 300}},
            }
            for predefined, question_id in self.questions.items()
        ]
        return {
            "id": self.id,
            "name": f"Sandbox lead form {self.id}",
            "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:500000001"},
            "state": "PUBLISHED",
            "versionId": 1,
            "hiddenFields": [],
            "content": {"questions": questions, "legalInfo": {"legalInfoId": 1}},
        }


@dataclass
class LeadResponse:
    """A submitted lead form response."""

    id: str
    form_id: int
    answers: list[tuple[int, str]]
    submitted_at: int
    test_lead: bool

    @property
    def urn(self) -> str:
        """``urn:li:leadGenFormResponse:{id}``, as notifications name it."""
        return f"urn:li:leadGenFormResponse:{self.id}"

    def to_json(self) -> dict[str, Any]:
        """The response as ``GET /rest/leadFormResponses/{id}`` answers it."""
        return {
            "id": self.id,
            "owner": {"sponsoredAccount": LINKEDIN_SANDBOX_OWNER},
            "submitter": f"urn:li:person:sandbox{self.id[:8]}",
            "leadType": "SPONSORED",
            "versionedLeadGenFormUrn": (
                f"urn:li:versionedLeadGenForm:(urn:li:leadGenForm:{self.form_id},1)"
            ),
            "submittedAt": self.submitted_at,
            "testLead": self.test_lead,
            "formResponse": {
                "answers": [
                    {
                        "questionId": question_id,
                        "answerDetails": {"textQuestionAnswer": {"answer": answer}},
                    }
                    for question_id, answer in self.answers
                ],
                "consentResponses": [],
            },
        }


def linkedin_error(
    status: int, code: str, message: str, service_code: int | None = None
) -> Response:
    """LinkedIn's error body ``{status, serviceErrorCode?, code, message}``."""
    body: dict[str, Any] = {"status": status}
    if service_code is not None:
        body["serviceErrorCode"] = service_code
    body.update({"code": code, "message": message})
    return JSONResponse(body, status_code=status)


class LinkedInEmulator(Emulator):
    """LinkedIn Lead Sync retrieval: ``leadFormResponses`` and ``leadForms`` under ``/rest``."""

    name = "linkedin"
    prefix = "/linkedin"

    def reset(self) -> None:
        """Forget every form and response."""
        with self.lock:
            self.forms: dict[int, LeadForm] = {}
            self.responses: dict[str, LeadResponse] = {}

    def env(self) -> dict[str, str]:
        """REST base URL and the sandbox access token."""
        return {
            "LINKEDIN_API_URL": f"{self.base_url}/rest",
            "LINKEDIN_ACCESS_TOKEN": LINKEDIN_SANDBOX_ACCESS_TOKEN,
        }

    def rate_limited(self, request: Request) -> Response:
        """LinkedIn's throttling answer."""
        return linkedin_error(
            429,
            "TOO_MANY_REQUESTS",
            "Resource level throttle APPLICATION DAY limit for calls to this resource is reached.",
        )

    def fault(self, request: Request, status: int) -> Response:
        """LinkedIn's error body with the injected status."""
        return linkedin_error(status, "INTERNAL_SERVER_ERROR", "Internal Server Error")

    def create_lead(self, body: Any) -> LeadResponse | str:
        """Validate an admin lead body; the stored response, or the reason it is refused."""
        if not isinstance(body, dict):
            return "body must be a JSON object"
        raw_form = body.get("form_id")
        form_text = str(raw_form).rsplit(":", 1)[-1] if raw_form is not None else ""
        if not _DIGITS.match(form_text):
            return "form_id must be a numeric id or urn:li:leadGenForm:N"
        answers = body.get("answers")
        if not isinstance(answers, dict) or not answers:
            return "answers must be a non-empty object of predefined field → answer"
        for key, value in answers.items():
            if key not in LINKEDIN_PREDEFINED_FIELDS:
                return f"answers: unknown predefined field {key!r}"
            if not isinstance(value, str):
                return f"answers.{key} must be a string"
        test_lead = body.get("test_lead", False)
        if not isinstance(test_lead, bool):
            return "test_lead must be a boolean"
        submitted_at = body.get("submitted_at", int(time.time() * 1000))
        if not isinstance(submitted_at, int) or isinstance(submitted_at, bool) or submitted_at < 0:
            return "submitted_at must be epoch milliseconds"
        form_id = int(form_text)
        with self.lock:
            form = self.forms.setdefault(form_id, LeadForm(form_id))
            for key in answers:
                if key not in form.questions:
                    form.questions[key] = 1000 + len(form.questions) + 1
            response = LeadResponse(
                id=secrets.token_hex(16),
                form_id=form_id,
                answers=[(form.questions[key], value) for key, value in answers.items()],
                submitted_at=submitted_at,
                test_lead=test_lead,
            )
            self.responses[response.id] = response
        return response

    def admin_routes(self) -> list[BaseRoute]:
        """``POST /__sandbox__/leads/linkedin``."""

        async def create(request: Request) -> Response:
            try:
                body = json.loads(await request.body() or b"null")
            except ValueError:
                return _invalid_body("body must be JSON")
            created = self.create_lead(body)
            if isinstance(created, str):
                return _invalid_body(created)
            return JSONResponse({"id": created.urn})

        return [Route("/leads/linkedin", create, methods=["POST"])]

    def _check_headers(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header:
            return linkedin_error(401, "EMPTY_ACCESS_TOKEN", "Empty oauth2 access token", 65604)
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not secrets.compare_digest(
            token.strip(), LINKEDIN_SANDBOX_ACCESS_TOKEN
        ):
            return linkedin_error(401, "INVALID_ACCESS_TOKEN", "Invalid access token", 65600)
        version = request.headers.get("linkedin-version")
        if not version:
            return linkedin_error(
                400,
                "VERSION_MISSING",
                "A version must be present. Please specify a version by adding the "
                "LinkedIn-Version header.",
            )
        match = _LINKEDIN_VERSION.match(version)
        current = datetime.now(UTC).strftime("%Y%m")
        if match is None or not LINKEDIN_OLDEST_VERSION <= version[:6] <= current:
            return linkedin_error(
                426, "NONEXISTENT_VERSION", f"Requested version {version} is not active"
            )
        return None

    def _find_by_owner(self, request: Request) -> Response:
        """The ``q=owner`` finder: an owner's responses, newest first, with offset paging."""
        params = request.query_params
        if params.get("q") != "owner":
            return linkedin_error(400, "ILLEGAL_ARGUMENT", "q must be owner", 100)
        owner = _LINKEDIN_OWNER.match(params.get("owner", ""))
        if owner is None:
            return linkedin_error(
                400,
                "ILLEGAL_ARGUMENT",
                "owner must be (sponsoredAccount:urn:li:sponsoredAccount:N) or "
                "(organization:urn:li:organization:N)",
                100,
            )
        lead_type = _LINKEDIN_LEAD_TYPE.match(params.get("leadType", ""))
        if lead_type is None:
            return linkedin_error(
                400, "ILLEGAL_ARGUMENT", "leadType must be (leadType:SPONSORED|EVENT|...)", 100
            )
        window = params.get("submittedAtTimeRange")
        start_ms: int | None = None
        end_ms: int | None = None
        if window is not None:
            found = _LINKEDIN_RANGE.match(window)
            if found is None:
                return linkedin_error(
                    400, "ILLEGAL_ARGUMENT", "submittedAtTimeRange must be (start:ms,end:ms)", 100
                )
            start_ms = int(found["start"]) if found["start"] else None
            end_ms = int(found["end"]) if found["end"] else None
        start_text, count_text = params.get("start", "0"), params.get("count", "10")
        if not start_text.isdigit() or not count_text.isdigit() or int(count_text) < 1:
            return linkedin_error(400, "ILLEGAL_ARGUMENT", "start and count must be numbers", 100)
        start, count = int(start_text), min(int(count_text), LINKEDIN_PAGE_MAX)
        form_filter = params.get("versionedLeadGenFormUrn")
        form_number = None
        if form_filter is not None:
            form_number = _LINKEDIN_FORM.search(form_filter)
            if form_number is None:
                return linkedin_error(
                    400, "ILLEGAL_ARGUMENT", "versionedLeadGenFormUrn is not a form URN", 100
                )
        test_only = params.get("limitedToTestLeads", "false") == "true"
        with self.lock:
            found_responses = [
                response
                for response in self.responses.values()
                if owner["urn"] == LINKEDIN_SANDBOX_OWNER
                and lead_type["type"] == "SPONSORED"
                and (form_number is None or response.form_id == int(form_number["id"]))
                and (start_ms is None or response.submitted_at >= start_ms)
                and (end_ms is None or response.submitted_at <= end_ms)
                and (not test_only or response.test_lead)
            ]
        found_responses.sort(
            key=lambda response: (response.submitted_at, response.id), reverse=True
        )
        page = found_responses[start : start + count]
        links: list[dict[str, Any]] = []
        if start + count < len(found_responses):
            query = dict(params)
            query["start"] = str(start + count)
            links.append(
                {
                    "rel": "next",
                    "type": "application/json",
                    "href": f"{request.url.path}?{urlencode(query)}",
                }
            )
        return JSONResponse(
            {
                "elements": [response.to_json() for response in page],
                "paging": {
                    "start": start,
                    "count": count,
                    "total": len(found_responses),
                    "links": links,
                },
            }
        )

    def app(self) -> ASGIApp:
        """``/rest/leadFormResponses`` (the owner finder), ``/rest/leadFormResponses/{id}`` and
        ``/rest/leadForms/{id}``."""
        api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @api.get("/rest/leadFormResponses")
        async def find_responses(request: Request) -> Response:
            refused = self._check_headers(request)
            if refused is not None:
                return refused
            return self._find_by_owner(request)

        @api.get("/rest/leadFormResponses/{response_id}")
        async def form_response(request: Request, response_id: str) -> Response:
            refused = self._check_headers(request)
            if refused is not None:
                return refused
            key = response_id.rsplit(":", 1)[-1]
            with self.lock:
                found = self.responses.get(key)
            if found is None:
                return linkedin_error(404, "NOT_FOUND", f"leadFormResponse {key} not found")
            return JSONResponse(found.to_json())

        @api.get("/rest/leadForms/{form_id}")
        async def lead_form(request: Request, form_id: str) -> Response:
            refused = self._check_headers(request)
            if refused is not None:
                return refused
            key = form_id.rsplit(":", 1)[-1]
            with self.lock:
                form = self.forms.get(int(key)) if _DIGITS.match(key) else None
            if form is None:
                return linkedin_error(404, "NOT_FOUND", f"leadForm {key} not found")
            return JSONResponse(form.to_json())

        @api.exception_handler(StarletteHTTPException)
        async def unknown(request: Request, exc: StarletteHTTPException) -> Response:
            return linkedin_error(404, "RESOURCE_NOT_FOUND", "Resource not found", 100)

        @api.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError) -> Response:
            return linkedin_error(400, "ILLEGAL_ARGUMENT", "Invalid request", 100)

        return api
