"""Zoho CRM's Composite API (``POST /crm/v7/__composite_requests``): request checks, the
limits of sub-requests, references between them and the shape of their answers.

Facts (Zoho CRM API v7 "Composite API" page; zoho/crm-oas v8.0 ``createCompositeRequest``):

* Body ``{"rollback_on_fail": bool = false, "parallel_execution": bool = true unless
  rollback_on_fail, "__composite_requests": [...]}``, one to five sub-requests each
  ``{sub_request_id?, method, uri, params?, body?, headers?}``; ``uri`` matches
  ``/crm(/.*)?/v[0-9]+([.][0-9]+)?/.*``, ``sub_request_id`` ``[a-zA-Z0-9][a-zA-Z0-9_]*``;
  the ``authorization`` and ``x-crm-org`` headers are refused; a sub-request may not name a
  version above the composite call's; the Composite API exists from v3 (``API_NOT_SUPPORTED``).
* ``rollback_on_fail`` and ``parallel_execution`` both true → ``AMBIGUITY_DURING_PROCESSING``.
* Allowed APIs and their record limits: Get/Search Records, COQL, Get Deleted Records, Get Users,
  Get Notes … 25 records; Create/Update/Upsert/Delete Records 1 (delete by id in the URL only,
  no bulk delete); Get Org, metadata, Convert Lead unrestricted. Over a limit the sub-request
  answers 400 ``LIMIT_EXCEEDED`` ``{"by": "limit", "limit": 25}`` (the doc's COQL sample).
* Answer ``{"__composite_requests": [{code, details: {response: {headers, status_code,
  body}}, message: "composite sub request executed successfully", status}]}`` in request
  order; HTTP 200 when every sub-request was triggered (whatever each answered), 207 when some
  were, 400 when none was; with ``rollback_on_fail`` 400 and ``ROLLBACK_PERFORMED`` /
  ``PROCESSING_STOPPED`` (``rollbacked_by_sub_request_index``) when one failed.
* A reference ``@{sub_request_id:$.json.path}`` takes a value from an earlier answer's body.
* Credits: one for the composite call (``rollback_on_fail`` false, or rolled back), two when a
  ``rollback_on_fail`` call succeeds; five concurrency credits whatever the sub-requests.

Guesses, marked where used: the ``details`` of request-level errors (the spec lists their keys,
not every message), ``by`` for a page size or a write over its limit (``per_page``,
``data``), that a COQL query without LIMIT (default 200) exceeds the 25 rows, and the body of a
sub-request answered 204 (``{}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from leadrelay.sandbox.zoho.coql import ZohoRefusal

__all__ = [
    "COMPOSITE_CONCURRENCY",
    "MAX_SUB_REQUESTS",
    "READ_RECORD_LIMIT",
    "WRITE_RECORD_LIMIT",
    "CompositeRequestError",
    "SubRequest",
    "parse_composite",
    "record_limit",
    "references_in",
    "resolve_references",
    "sub_request_error",
    "sub_request_success",
]

#: At most five sub-requests per composite call.
MAX_SUB_REQUESTS = 5
#: Records a read sub-request (Get/Search Records, COQL, deleted records, users) may return.
READ_RECORD_LIMIT = 25
#: Records a write sub-request (create, update, upsert, delete) may carry.
WRITE_RECORD_LIMIT = 1
#: Concurrency credits one composite call takes, whatever its sub-requests.
COMPOSITE_CONCURRENCY = 5
#: The Composite API exists from this API version on.
FIRST_VERSION = 3

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
URI_REGEX = r"/crm(/.*)?/v[0-9]+([.][0-9]+)?/.*"
ID_REGEX = r"[a-zA-Z0-9][a-zA-Z0-9_]*"
RESTRICTED_HEADERS = ("authorization", "x-crm-org")
_URI = re.compile(URI_REGEX)
_ID = re.compile(ID_REGEX)
_VERSION = re.compile(r"/crm(?:/.*)?/v([0-9]+)(?:[.][0-9]+)?/")
_REFERENCE = re.compile(r"@\{([a-zA-Z0-9][a-zA-Z0-9_]*):(\$[^}]*)\}")
_PATH_STEP = re.compile(r"\.([A-Za-z0-9_$]+)|\[(\d+)\]")

#: (method, path after ``/crm/vN``) patterns of the APIs a composite call refuses, as the
#: emulator has them: merge, creating fields, a composite call inside one, bulk delete.
_NOT_SUPPORTED = (
    ("POST", re.compile(r"/[A-Za-z_]+/[^/]+/actions/merge")),
    ("GET", re.compile(r"/[A-Za-z_]+/[^/]+/actions/merge")),
    ("POST", re.compile(r"/settings/fields")),
    ("POST", re.compile(r"/__composite_requests")),
    ("DELETE", re.compile(r"/[A-Za-z_]+")),
)
#: Reads limited to 25 records (Get/Search Records, deleted records, COQL, users).
_READS = (
    ("GET", re.compile(r"/[A-Za-z_]+(/search|/deleted)?")),
    ("GET", re.compile(r"/users")),
    ("POST", re.compile(r"/coql")),
)
#: Writes limited to one record (create, update, upsert; delete by id).
_WRITES = (
    ("POST", re.compile(r"/[A-Za-z_]+(/upsert)?")),
    ("PUT", re.compile(r"/[A-Za-z_]+(/[0-9]+)?")),
    ("DELETE", re.compile(r"/[A-Za-z_]+/[0-9]+")),
)
#: The services named in ``allowed_services`` of a NOT_SUPPORTED answer.
ALLOWED_SERVICES = (
    "Get Org",
    "Get Metadata",
    "Convert a Lead",
    "Get Records",
    "Search Records",
    "Get records through a COQL query",
    "Get Deleted Records",
    "Get Users",
    "Create Records",
    "Update Records",
    "Upsert Records",
    "Delete Records",
)


class CompositeRequestError(ZohoRefusal):
    """A composite call refused as a whole (HTTP 400, nothing executed)."""


@dataclass
class SubRequest:
    """One checked sub-request: its position, id, method, path, parameters, body, headers."""

    index: int
    sub_request_id: str | None
    method: str
    uri: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class CompositeRequest:
    """A checked composite call."""

    rollback_on_fail: bool
    parallel_execution: bool
    requests: list[SubRequest]


def _path(index: int, key: str | None = None) -> str:
    base = f"$.__composite_requests[{index}]"
    return f"{base}.{key}" if key else base


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise CompositeRequestError(
            "INVALID_DATA",
            "invalid data",
            {"api_name": key, "json_path": f"$.{key}", "expected_data_type": "boolean"},
        )
    return value


def parse_composite(body: dict[str, Any], version: int) -> CompositeRequest:
    """The composite call ``body`` sent to API ``version``; :class:`CompositeRequestError`
    for anything Zoho refuses before running a sub-request."""
    if version < FIRST_VERSION:
        raise CompositeRequestError(
            "API_NOT_SUPPORTED", "API is not supported in this version", {"supported_from": 3}
        )
    rollback = _flag(body, "rollback_on_fail", False)
    parallel = _flag(body, "parallel_execution", not rollback)
    if rollback and parallel:
        raise CompositeRequestError(
            "AMBIGUITY_DURING_PROCESSING",
            "rollback_on_fail and parallel_execution cannot both be true",
            {
                "ambiguity_due_to": [
                    {"api_name": "rollback_on_fail", "json_path": "$.rollback_on_fail"},
                    {"api_name": "parallel_execution", "json_path": "$.parallel_execution"},
                ]
            },
        )
    raw = body.get("__composite_requests")
    where = {"api_name": "__composite_requests", "json_path": "$.__composite_requests"}
    if raw is None:
        raise CompositeRequestError("MANDATORY_NOT_FOUND", "required field not found", where)
    if not isinstance(raw, list) or not raw:
        raise CompositeRequestError(
            "INVALID_DATA", "invalid data", {**where, "expected_data_type": "jsonarray"}
        )
    if len(raw) > MAX_SUB_REQUESTS:
        raise CompositeRequestError(
            "INVALID_DATA",
            "the number of sub requests exceeds the limit",
            {**where, "maximum_length": MAX_SUB_REQUESTS},
        )
    requests: list[SubRequest] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        request = _sub_request(index, item, version)
        if request.sub_request_id is not None:
            if request.sub_request_id in seen:
                raise CompositeRequestError(
                    "DUPLICATE_DATA",
                    "duplicate data",
                    {"api_name": "sub_request_id", "json_path": _path(index, "sub_request_id")},
                )
            seen.add(request.sub_request_id)
        requests.append(request)
    return CompositeRequest(rollback, parallel, requests)


def _sub_request(index: int, item: Any, version: int) -> SubRequest:
    if not isinstance(item, dict):
        raise CompositeRequestError(
            "INVALID_DATA",
            "invalid data",
            {"api_name": "__composite_requests", "json_path": _path(index)},
        )
    for key in ("method", "uri"):
        if item.get(key) is None:
            raise CompositeRequestError(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                {"api_name": key, "json_path": _path(index, key)},
            )
    method, uri = item["method"], item["uri"]
    if method not in METHODS:
        raise CompositeRequestError(
            "INVALID_DATA",
            "invalid data",
            {"api_name": "method", "json_path": _path(index, "method")},
        )
    if not isinstance(uri, str) or len(uri) > 2048 or not _URI.fullmatch(uri):
        raise CompositeRequestError(
            "INVALID_DATA",
            "invalid data",
            {"api_name": "uri", "json_path": _path(index, "uri"), "regex": URI_REGEX},
        )
    sub_id = item.get("sub_request_id")
    if sub_id is not None and (
        not isinstance(sub_id, str) or len(sub_id) > 100 or not _ID.fullmatch(sub_id)
    ):
        raise CompositeRequestError(
            "INVALID_DATA",
            "invalid data",
            {
                "api_name": "sub_request_id",
                "json_path": _path(index, "sub_request_id"),
                "regex": ID_REGEX,
            },
        )
    found = _VERSION.match(uri)
    if found is not None and int(found.group(1)) > version:
        raise CompositeRequestError(
            "NOT_ALLOWED",
            "the version of a sub request cannot be higher than the composite request's",
            {
                "api_name": "uri",
                "json_path": _path(index, "uri"),
                "sub_request_version": int(found.group(1)),
                "composite_request_version": version,
            },
        )
    params, headers = item.get("params") or {}, item.get("headers") or {}
    for key, value in (("params", params), ("headers", headers)):
        if not isinstance(value, dict):
            raise CompositeRequestError(
                "INVALID_DATA",
                "invalid data",
                {
                    "api_name": key,
                    "json_path": _path(index, key),
                    "expected_data_type": "jsonobject",
                },
            )
    restricted = [name for name in headers if str(name).lower() in RESTRICTED_HEADERS]
    if restricted:
        raise CompositeRequestError(
            "INVALID_DATA",
            "restricted headers cannot be given in a sub request",
            {
                "api_name": "headers",
                "json_path": _path(index, "headers"),
                "restricted_headers": restricted,
            },
        )
    body = item.get("body")
    if body is not None and not isinstance(body, dict):
        raise CompositeRequestError(
            "INVALID_DATA",
            "invalid data",
            {
                "api_name": "body",
                "json_path": _path(index, "body"),
                "expected_data_type": "jsonobject",
            },
        )
    request = SubRequest(
        index, sub_id, method, uri, dict(params), body, {str(k): str(v) for k, v in headers.items()}
    )
    if _matches(_NOT_SUPPORTED, method, api_path(uri)):
        raise CompositeRequestError(
            "NOT_SUPPORTED",
            "the API is not supported in a composite request",
            {
                "api_name": "uri",
                "json_path": _path(index, "uri"),
                "allowed_services": list(ALLOWED_SERVICES),
            },
        )
    return request


def api_path(uri: str) -> str:
    """The path after ``/crm/vN`` of a sub-request's ``uri`` (without a query string)."""
    path = uri.split("?", 1)[0]
    found = _VERSION.match(path)
    return "/" + path[found.end() :] if found else path


def _matches(patterns: tuple[tuple[str, re.Pattern[str]], ...], method: str, path: str) -> bool:
    return any(method == m and pattern.fullmatch(path) for m, pattern in patterns)


def record_limit(method: str, uri: str) -> int | None:
    """The most records the sub-request may read (25) or write (1); None: no restriction."""
    path = api_path(uri)
    if _matches(_READS, method, path):
        return READ_RECORD_LIMIT
    if _matches(_WRITES, method, path):
        return WRITE_RECORD_LIMIT
    return None


def references_in(value: Any) -> list[str]:
    """The sub-request ids ``value`` (a uri, params, body or headers) refers to."""
    if isinstance(value, str):
        return [match.group(1) for match in _REFERENCE.finditer(value)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in references_in(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in references_in(item)]
    return []


class ReferenceError_(Exception):
    """A reference that cannot be resolved (the sub-request answers INVALID_REFERENCE)."""

    def __init__(self, reference: str, message: str) -> None:
        super().__init__(message)
        self.reference = reference
        self.message = message


def _follow(body: Any, path: str, reference: str) -> Any:
    """The value at JSONPath ``path`` (``$.a.b[0].c``) of ``body``."""
    if not path.startswith("$"):
        raise ReferenceError_(reference, "invalid reference")
    rest, value = path[1:], body
    while rest:
        step = _PATH_STEP.match(rest)
        if step is None:
            raise ReferenceError_(reference, "invalid reference")
        key, position = step.group(1), step.group(2)
        if key is not None and isinstance(value, dict) and key in value:
            value = value[key]
        elif position is not None and isinstance(value, list) and int(position) < len(value):
            value = value[int(position)]
        else:
            raise ReferenceError_(reference, "the referred response has no proper value")
        rest = rest[step.end() :]
    if value is None or isinstance(value, (dict, list)):
        raise ReferenceError_(reference, "the referred response has no proper value")
    return value


def resolve_references(value: Any, answers: dict[str, Any]) -> Any:
    """``value`` with every reference replaced from ``answers`` (sub-request id → answered
    body); a string that is only a reference takes the value as it is."""
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value)
        if whole is not None:
            return _resolve_one(whole, answers)
        return _REFERENCE.sub(lambda m: _text(_resolve_one(m, answers)), value)
    if isinstance(value, dict):
        return {k: resolve_references(v, answers) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_references(v, answers) for v in value]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resolve_one(match: re.Match[str], answers: dict[str, Any]) -> Any:
    reference = match.group(0)
    if match.group(1) not in answers:
        raise ReferenceError_(reference, "the referred sub request is yet to be executed")
    return _follow(answers[match.group(1)], match.group(2), reference)


def sub_request_success(status: int, headers: dict[str, str], body: Any) -> dict[str, Any]:
    """The entry of a sub-request that ran (whatever its own status)."""
    return {
        "code": "SUCCESS",
        "details": {"response": {"headers": headers, "status_code": status, "body": body}},
        "message": "composite sub request executed successfully",
        "status": "success",
    }


def sub_request_error(code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    """The entry of a sub-request that did not run (or was rolled back)."""
    return {"code": code, "details": details, "message": message, "status": "error"}
