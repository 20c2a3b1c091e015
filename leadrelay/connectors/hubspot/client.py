"""The hubspot-api-client objects of one connection, and HubSpot's answers as policy outcomes.

Every request is sent through a generated ``*_with_http_info`` method with
``_preload_content=False``: the raw urllib3 response gives the status, the rate-limit headers
(``X-HubSpot-RateLimit-*``, which the typed models drop) and the JSON body, read inside the
call so a connection reset while reading is a transport failure the policy sees.

The client's own ``retry=`` is never used to retry: it is set to ``Retry(total=0)`` so urllib3
does not silently repeat requests (its default is three), and :class:`CallPolicy` decides and
counts every attempt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from hubspot import HubSpot
from urllib3.util.retry import Retry

from leadrelay.connectors.policy import (
    Classified,
    Decision,
    ResponseInfo,
    classify_default,
    from_exception,
)

__all__ = [
    "HubSpotApis",
    "HubSpotResponse",
    "PropertyProblem",
    "classify_hubspot",
    "classify_token",
    "error_info",
    "existing_id",
    "property_problems",
]

_PROPERTY_ERRORS = "Property values were not valid: "
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


@dataclass(frozen=True)
class HubSpotResponse:
    """One successful answer: status, headers and the parsed JSON body (None when empty)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def info(self, url: str, method: str) -> ResponseInfo:
        """The response as the policy sees it."""
        return ResponseInfo(
            status=self.status, headers=self.headers, body=self.body, url=url, method=method
        )

    def server_time_ms(self) -> int | None:
        """The server's clock when it answered (the ``Date`` header), in epoch ms."""
        for name, value in self.headers.items():
            if name.lower() == "date":
                try:
                    return int(parsedate_to_datetime(value).timestamp() * 1000)
                except (TypeError, ValueError):
                    return None
        return None

    def items(self, key: str) -> list[dict[str, Any]]:
        """The objects under ``key`` (``results``, ``errors``) of a JSON object body."""
        if not isinstance(self.body, dict):
            return []
        found = self.body.get(key)
        return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def _api(discover: Callable[[HubSpot], Any]) -> cached_property[Any]:
    """A :class:`HubSpotApis` attribute: the API ``discover`` reaches, built on first use."""

    def build(apis: HubSpotApis) -> Any:
        return apis._build(discover)

    return cached_property(build)


class HubSpotApis:
    """The API objects one connection uses, each built on its first use (each discovery access
    builds a new ``ApiClient`` with its own connection pool, and imports that API's package of
    models), then kept, and closed together.

    A sync with nothing to write uses three or four of the eleven: building them all up front
    cost ~0.15 s of the start-up of every scheduled ``leadrelay sync``.

    Args:
        base_url: API root; the sandbox serves under ``/hubspot``, so it includes that prefix.
        access_token: the private-app token, or None until an OAuth token is fetched.
        ca_bundle: a CA file to trust (TLS verification always stays on).
        timeout_s: per-request timeout.
    """

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str | None,
        ca_bundle: Path | None,
        timeout_s: float,
    ) -> None:
        self.timeout_s = timeout_s
        self._client = HubSpot(
            access_token=access_token,
            host=base_url.rstrip("/"),
            # Configuration.ssl_ca_cert becomes the PoolManager's ca_certs.
            ssl_ca_cert=str(ca_bundle) if ca_bundle is not None else None,
            # No hidden urllib3 retries: the policy retries (and counts) every attempt.
            retry=Retry(total=0, redirect=False),
        )
        self._built: list[Any] = []

    def _build(self, discover: Callable[[HubSpot], Any]) -> Any:
        api = discover(self._client)
        self._built.append(api)
        return api

    contacts_basic = _api(lambda client: client.crm.contacts.basic_api)
    contacts_batch = _api(lambda client: client.crm.contacts.batch_api)
    contacts_search = _api(lambda client: client.crm.contacts.search_api)
    properties = _api(lambda client: client.crm.properties.core_api)
    owners = _api(lambda client: client.crm.owners.owners_api)
    tasks = _api(lambda client: client.crm.objects.tasks.basic_api)
    companies = _api(lambda client: client.crm.companies.basic_api)
    deals_batch = _api(lambda client: client.crm.deals.batch_api)
    deals_search = _api(lambda client: client.crm.deals.search_api)
    associations = _api(lambda client: client.crm.associations.v4.batch_api)
    tokens = _api(lambda client: client.oauth.tokens_api)

    def set_token(self, token: str) -> None:
        """Send ``token`` as the Bearer token from now on (after an OAuth refresh), from the
        APIs built so far and from those built later."""
        self._client.access_token = token
        for api in self._built:
            api.api_client.configuration.access_token = token

    def send(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> HubSpotResponse:
        """Call a generated ``*_with_http_info`` method; return status, headers and JSON.

        Raises the client's ``ApiException`` for a non-2xx answer and urllib3 errors for
        transport failures (the policy classifies both).
        """
        raw = method(*args, _preload_content=False, _request_timeout=self.timeout_s, **kwargs)
        try:
            data: bytes = raw.data
        finally:
            raw.release_conn()
        headers = {str(k): str(v) for k, v in raw.headers.items()}
        body: Any = None
        text = data.decode("utf-8", errors="replace") if data else ""
        if text.strip():
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        return HubSpotResponse(int(raw.status), headers, body)

    def close(self) -> None:
        """Close every connection pool."""
        for api in self._built:
            manager = api.api_client.rest_client.pool_manager
            # urllib3 2.x no longer closes pools when the manager is cleared.
            for key in list(manager.pools.keys()):
                pool = manager.pools.get(key)
                if pool is not None:
                    pool.close()
            manager.clear()
            api.api_client.close()


def error_info(error: BaseException, url: str, method: str) -> ResponseInfo | None:
    """The :class:`ResponseInfo` of an exception raised by the client (None: not transport).

    The generated REST client turns a urllib3 ``SSLError`` into ``ApiException(status=0)``;
    that is a connection failure (a certificate problem or a handshake cut short), not an
    HTTP answer.
    """
    status = getattr(error, "status", None)
    if status == 0 and hasattr(error, "body"):
        return ResponseInfo(status=None, url=url, method=method, error=error)
    info = from_exception(error, url=url, method=method)
    if info is not None and not info.url:
        info = replace(info, url=url, method=method)
    return info


@dataclass(frozen=True)
class PropertyProblem:
    """One refused property value: the property, HubSpot's message and its error code."""

    name: str | None
    message: str
    code: str | None = None


def property_problems(message: str) -> list[PropertyProblem]:
    """The entries of HubSpot's ``Property values were not valid: [...]`` message.

    HubSpot puts a JSON list of ``{isValid, message, error, name}`` inside the message text.
    Returns [] for any other message.
    """
    if not message.startswith(_PROPERTY_ERRORS):
        return []
    try:
        entries = json.loads(message[len(_PROPERTY_ERRORS) :])
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    problems = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        text = entry.get("message") or entry.get("localizedErrorMessage")
        code = entry.get("error")
        problems.append(
            PropertyProblem(
                name if isinstance(name, str) else None,
                str(text) if text else "invalid value",
                code if isinstance(code, str) else None,
            )
        )
    return problems


def explain(message: str) -> tuple[str, str | None, str | None]:
    """(message, field, code) of a HubSpot error message, property problems unpacked."""
    problems = property_problems(message)
    if not problems:
        return message, None, None
    text = "; ".join(p.message for p in problems)
    return text, problems[0].name, problems[0].code


def existing_id(message: str) -> str | None:
    """The record id in HubSpot's ``Contact already exists. Existing ID: N`` (409), or None."""
    found = _EXISTING_ID.search(message)
    return found.group(1) if found else None


def classify_hubspot(info: ResponseInfo) -> Classified:
    """:func:`classify_default`, refined for HubSpot's answers.

    * Search's own 429 ("secondly limit") has no ``Retry-After``; its window is one second.
    * ``Property values were not valid: [...]`` names the property and the reason inside
      a JSON list; the first property becomes the error's field.
    """
    classified = classify_default(info)
    if (
        info.status == 429
        and classified.retry_after is None
        and classified.decision is Decision.RETRY
        and "secondly limit" in info.text()
    ):
        classified = replace(classified, retry_after=1.0)
    if classified.message:
        message, field_name, code = explain(classified.message)
        if field_name is not None:
            classified = replace(
                classified,
                message=message,
                field=field_name,
                code=code or classified.code,
                reason=f"HTTP {info.status}: {message}",
            )
    return classified


def classify_token(info: ResponseInfo) -> Classified:
    """The token endpoint: a refused refresh (400 ``BAD_REFRESH_TOKEN`` …) is an auth failure."""
    classified = classify_default(info)
    if info.status in (400, 401, 403):
        return replace(classified, decision=Decision.REAUTH)
    return classified
