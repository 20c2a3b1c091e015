"""The one transport policy every connector shares: classify, then wait, then give up typed.

A call goes through :meth:`CallPolicy.execute`:

1. the connection's :class:`RateLimiter` hands out a slot (blocking until one is free) — and,
   when the state store is shared by several processes, the account's :class:`RateBudget`
   in the database too, so that all of them together stay under the API's limit;
2. the call runs once; its outcome (a response or an exception of httpx, requests, urllib3,
   hubspot-api-client or simple-salesforce) is turned into a transport-neutral
   :class:`ResponseInfo` and the limiter learns from its rate-limit headers;
3. a classifier (:func:`classify_default`, or a system's refinement of it) decides
   ``success`` / ``retry`` / ``reauth`` / ``reject`` / ``fail``;
4. tenacity waits — ``Retry-After`` when the system sent one, else exponential backoff with
   jitter — within a bounded number of attempts and total time, logging every retry with its
   reason; then the typed error of the last classification is raised
   (:mod:`leadrelay.connectors.errors`).

Rules that keep writes safe (DESIGN §5, §7):

* **Only idempotent calls are retried after an ambiguous failure.** A timeout, a connection
  reset after the request went out, or a 5xx may mean the system applied the write. A call
  marked ``idempotent=False`` (a plain create) raises :class:`~.errors.Retryable` at once so
  the caller can resolve it (a lookup by natural key) instead of creating a duplicate.
* **Failures that prove nothing was applied are retried for every call**: 429 (and a
  rate-limit 403), and connection errors raised before the request was sent (refused, DNS,
  connect timeout, pool timeout, TLS handshake).
* **Re-authentication happens at most once per call**: a second 401 raises
  :class:`~.errors.AuthError`.
* **A used-up daily budget fails fast**: Salesforce ``REQUEST_LIMIT_EXCEEDED`` with
  ``TotalRequests`` and HubSpot's ``DAILY`` 429 reset hours later, so retrying would only burn
  time (the concurrent-request variant of ``REQUEST_LIMIT_EXCEEDED`` is retried).
* A TLS verification failure is a configuration error (``ca_bundle``), never retried.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import logging
import random
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import requests
import tenacity
import urllib3.exceptions
from pydantic import BaseModel, SecretStr

from leadrelay.connectors.credentials import cache_key
from leadrelay.connectors.errors import (
    AuthError,
    ConnectorError,
    Fatal,
    RateLimited,
    RedactingFilter,
    Rejected,
    Retryable,
    redact,
    register_secret,
    secrets_in_url,
)

__all__ = [
    "CallNote",
    "CallPolicy",
    "Classified",
    "Decision",
    "ManualClock",
    "RateBudget",
    "RateLimiter",
    "RefreshingAuth",
    "ResponseInfo",
    "RetryPolicy",
    "SystemMessage",
    "account_key",
    "classify_default",
    "connector_logger",
    "from_exception",
    "from_httpx",
    "from_requests",
    "parse_retry_after",
    "share_rate_limits",
    "system_message",
    "watch_calls",
]

T = TypeVar("T")

LOGGER_NAME = "leadrelay.connectors"

_MESSAGE_LIMIT = 300


def connector_logger(kind: str | None = None) -> logging.Logger:
    """The ``leadrelay.connectors[.kind]`` logger, with a :class:`RedactingFilter` attached.

    Logger filters only see records created on that very logger, so every connector logs
    through the logger this returns rather than ``logging.getLogger`` directly.
    """
    logger = logging.getLogger(f"{LOGGER_NAME}.{kind}" if kind else LOGGER_NAME)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger


# --------------------------------------------------------------------------------------------
# The transport-neutral view of one outcome


@dataclass(frozen=True)
class ResponseInfo:
    """What came back from one HTTP attempt, whatever client sent it.

    Attributes:
        status: the HTTP status; None when no response arrived (connection error, timeout).
        headers: response headers (looked up case-insensitively by this module).
        body: the response body, when there was one.
        url: the URL called (redacted before it reaches any message).
        error: the exception raised by the client, if any.
        method: the HTTP method, when known.
    """

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | Any | None = None
    url: str = ""
    error: BaseException | None = None
    method: str | None = None

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def text(self) -> str:
        """The body as text ('' when there is none); JSON-parsed bodies are re-serialised."""
        body = self.body
        if body is None:
            return ""
        if isinstance(body, bytes):
            return body.decode("utf-8", errors="replace")
        if isinstance(body, str):
            return body
        try:
            return json.dumps(body)
        except (TypeError, ValueError):
            return str(body)

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        body = self.body
        if body is None or isinstance(body, dict | list):
            return body
        text = self.text().strip()
        if not text or text[0] not in "[{":
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None


def _headers_dict(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers
    return {str(k): str(v) for k, v in items}


def from_httpx(response: httpx.Response) -> ResponseInfo:
    """The :class:`ResponseInfo` of an httpx response (its body is read if it was not)."""
    try:
        body: bytes | None = response.content
    except httpx.ResponseNotRead:
        body = response.read()
    url, method = "", None
    with contextlib.suppress(RuntimeError):  # a response built without a request
        url, method = str(response.request.url), response.request.method
    return ResponseInfo(
        status=response.status_code,
        headers=_headers_dict(response.headers),
        body=body,
        url=url,
        method=method,
    )


def from_requests(response: requests.Response) -> ResponseInfo:
    """The :class:`ResponseInfo` of a requests response."""
    return ResponseInfo(
        status=response.status_code,
        headers=_headers_dict(response.headers),
        body=response.content,
        url=response.url or "",
        method=response.request.method if response.request is not None else None,
    )


def from_exception(
    error: BaseException, url: str = "", method: str | None = None
) -> ResponseInfo | None:
    """The :class:`ResponseInfo` of a client exception, or None when it is not a transport one.

    Understood: httpx ``HTTPStatusError`` / ``TransportError``; requests ``HTTPError`` /
    ``RequestException``; urllib3 errors; hubspot-api-client ``ApiException`` (any of its
    per-API copies: ``.status``, ``.body``, ``.headers``); simple-salesforce ``SalesforceError``
    (``.status``, ``.url``, ``.content``). Anything else (a bug, a ``KeyError``) is not a
    transport failure and is re-raised unchanged by :meth:`CallPolicy.execute`.
    """
    if isinstance(error, httpx.HTTPStatusError):
        return from_httpx(error.response)
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return from_requests(error.response)
    if isinstance(error, httpx.TransportError):
        with contextlib.suppress(RuntimeError):  # the error was raised without a request
            url, method = str(error.request.url), error.request.method
        return ResponseInfo(status=None, url=url, method=method, error=error)
    if isinstance(error, requests.RequestException):
        sent = error.request
        if sent is not None:
            url = str(getattr(sent, "url", None) or url)
            method = getattr(sent, "method", None) or method
        return ResponseInfo(status=None, url=url, method=method, error=error)
    if isinstance(error, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return ResponseInfo(status=None, url=url, method=method, error=error)
    status = getattr(error, "status", None)
    if isinstance(status, int) and hasattr(error, "body"):
        # hubspot-api-client ApiException (each generated API package has its own class).
        return ResponseInfo(
            status=status,
            headers=_headers_dict(getattr(error, "headers", None)),
            body=error.body,
            url=url,
            method=method,
        )
    if isinstance(status, int) and hasattr(error, "content"):
        # simple-salesforce SalesforceError: content is the parsed JSON (or raw bytes).
        auth_message = getattr(error, "auth_message", None)
        body: Any = error.content
        if auth_message is not None:
            # SalesforceAuthenticationFailed: the token endpoint's OAuth error.
            body = {
                "error": str(getattr(error, "code", "") or ""),
                "error_description": auth_message,
            }
        return ResponseInfo(
            status=status, body=body, url=str(getattr(error, "url", "") or url), method=method
        )
    return None


def _causes(error: BaseException) -> Iterable[BaseException]:
    """``error`` and every exception it wraps (cause, context, ``.reason``, args)."""
    seen: set[int] = set()
    stack = [error]
    while stack and len(seen) < 20:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(getattr(current, "args", ()))
        stack.extend(e for e in linked if isinstance(e, BaseException))


class _Failure(StrEnum):
    TLS = "tls"
    CONNECT = "connect"
    AMBIGUOUS = "ambiguous"


def _connection_failure(error: BaseException) -> _Failure:
    chain = list(_causes(error))
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError) or (
            "CERTIFICATE_VERIFY_FAILED" in str(item)
        ):
            return _Failure.TLS
    not_sent = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        requests.exceptions.ConnectTimeout,
        urllib3.exceptions.NewConnectionError,
        urllib3.exceptions.ConnectTimeoutError,
        urllib3.exceptions.NameResolutionError,
        ConnectionRefusedError,
    )
    if any(isinstance(item, not_sent) for item in chain):
        return _Failure.CONNECT
    return _Failure.AMBIGUOUS


_VERIFY_FAILED = re.compile(r"certificate verify failed: ([^()'\"]+)")


def _tls_reason(error: BaseException) -> str:
    """OpenSSL's own words for a refused certificate ("unable to get local issuer
    certificate", "certificate has expired" …) out of the client's nested wrappers
    (requests' SSLError around urllib3's MaxRetryError around ssl's error)."""
    for item in _causes(error):
        said = getattr(item, "verify_message", None)  # set by OpenSSL, absent when made by hand
        if isinstance(item, ssl.SSLCertVerificationError) and said:
            return str(said)
    found = _VERIFY_FAILED.search(str(error))
    return found.group(1).strip() if found else "certificate verify failed"


# --------------------------------------------------------------------------------------------
# Classification


class Decision(StrEnum):
    """What to do with one outcome."""

    SUCCESS = "success"
    RETRY = "retry"
    REAUTH = "reauth"
    REJECT = "reject"
    FAIL = "fail"


@dataclass(frozen=True)
class Classified:
    """A classified outcome.

    Attributes:
        decision: what to do.
        reason: a one-line reason for logs and errors (no secrets).
        retry_after: seconds the system asked us to wait, when it said.
        resend_safe: True when the request was certainly not applied (429, a connect error),
            so even a non-idempotent write may be sent again.
        rate_limited: the system refused for rate or budget reasons (raises ``RateLimited``).
        message: the system's own message, when it gave one.
        code: the system's error code, when it gave one.
        field: the field the system named, when it named one.
    """

    decision: Decision
    reason: str
    retry_after: float | None = None
    resend_safe: bool = False
    rate_limited: bool = False
    message: str | None = None
    code: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class SystemMessage:
    """The system's own words about an error: message, error code and field when given."""

    message: str
    code: str | None = None
    field: str | None = None


def _first_str(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and isinstance(value[0], str) and value[0]:
            return value[0]
    return None


def _message_from_dict(data: Mapping[str, Any]) -> SystemMessage | None:
    error = data.get("error")
    if isinstance(error, str) and error:
        # OAuth token endpoints (Salesforce, Zoho, HubSpot): {"error", "error_description"}.
        return SystemMessage(_first_str(data.get("error_description"), error) or error, error)
    if isinstance(error, Mapping):
        nested = _message_from_dict(error)
        if nested is not None:
            return nested
    message = _first_str(data.get("message"), data.get("msg"), data.get("detail"))
    if message is None:
        items = data.get("data")
        if isinstance(items, list) and items and isinstance(items[0], Mapping):
            # Zoho answers a whole-request failure of a batch inside data[0].
            return _message_from_dict(items[0])
        return None
    code = _first_str(data.get("code"), data.get("errorCode"), data.get("category"))
    details = data.get("details")
    context = data.get("context")
    errors = data.get("errors")
    first_error = errors[0] if isinstance(errors, list) and errors else None
    field_name = _first_str(
        details.get("api_name") if isinstance(details, Mapping) else None,  # Zoho
        data.get("fields"),  # Salesforce
        context.get("propertyName") if isinstance(context, Mapping) else None,  # HubSpot
        first_error.get("in") if isinstance(first_error, Mapping) else None,  # HubSpot
    )
    return SystemMessage(message, code, field_name)


def system_message(body: Any, fallback: str = "") -> SystemMessage:
    """The system's message in an error body, whatever its dialect.

    HubSpot ``{"message", "category", "errors": [{"in"}]}``; Salesforce
    ``[{"message", "errorCode", "fields"}]``; Zoho ``{"code", "message", "details":
    {"api_name"}}``; OAuth ``{"error", "error_description"}``. Anything else: the first 300
    characters of the text, or ``fallback`` when the body is empty.
    """
    info = body if isinstance(body, ResponseInfo) else ResponseInfo(status=None, body=body)
    data = info.json()
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        found = _message_from_dict(data[0])
        if found is not None:
            return found
    if isinstance(data, Mapping):
        found = _message_from_dict(data)
        if found is not None:
            return found
    text = " ".join(info.text().split())
    if text:
        return SystemMessage(text[:_MESSAGE_LIMIT])
    return SystemMessage(fallback)


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


_RETRY_STATUSES = frozenset({408, 425, 500, 502, 503, 504})
_REJECT_STATUSES = frozenset({300, 400, 404, 409, 410, 422})
_RATE_WORDS = re.compile(r"(?i)rate.?limit|too many requests|secondly limit|throttl")


def classify_default(info: ResponseInfo) -> Classified:
    """The shared classification of one outcome (see the module docstring for the rules).

    A system refines it by wrapping it: e.g. Zoho's token endpoint answers errors with HTTP
    200 and an ``error`` key, so its classifier checks that before calling this one.
    """
    if info.status is None:
        error = info.error
        if error is None:
            return Classified(Decision.FAIL, "no response and no error")
        what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        failure = _connection_failure(error)
        if failure is _Failure.TLS:
            return Classified(
                Decision.FAIL,
                f"TLS certificate verification failed ({_tls_reason(error)}); check the "
                "connection's ca_bundle",
            )
        if failure is _Failure.CONNECT:
            return Classified(
                Decision.RETRY, f"connection failed before sending ({what})", resend_safe=True
            )
        return Classified(Decision.RETRY, f"no response ({what})")

    status = info.status
    if 200 <= status < 300 or status == 304:
        return Classified(Decision.SUCCESS, f"HTTP {status}")
    said = system_message(info, fallback=_reason_phrase(status))
    reason = f"HTTP {status}: {said.message}"
    retry_after = parse_retry_after(info.header("Retry-After"))
    said_fields = Classified(
        Decision.FAIL, reason, message=said.message, code=said.code, field=said.field
    )

    def common(decision: Decision, why: str = reason, **flags: Any) -> Classified:
        return replace(said_fields, decision=decision, reason=why, **flags)

    body = info.text()

    if status == 401:
        return common(Decision.REAUTH)
    if status == 429:
        if '"DAILY"' in body:
            # HubSpot's daily quota resets at midnight in the portal's time zone.
            return common(
                Decision.FAIL,
                f"{reason} (daily API limit reached; it resets at midnight)",
                rate_limited=True,
            )
        return common(
            Decision.RETRY, reason, retry_after=retry_after, resend_safe=True, rate_limited=True
        )
    if status == 403:
        if "REQUEST_LIMIT_EXCEEDED" in body:
            if "TotalRequests" in body or "ConcurrentPer" not in body:
                # Salesforce's org-wide API request limit is a rolling 24 h budget: waiting
                # seconds cannot help, so stop with the reason instead of hammering.
                return common(
                    Decision.FAIL,
                    f"{reason} (the org's API request limit for the last 24 hours is used up)",
                    rate_limited=True,
                )
            # ConcurrentPerOrgLongTxn: too many long-running requests at once.
            return common(
                Decision.RETRY, reason, retry_after=retry_after, resend_safe=True, rate_limited=True
            )
        if retry_after is not None or _RATE_WORDS.search(body):
            return common(
                Decision.RETRY, reason, retry_after=retry_after, resend_safe=True, rate_limited=True
            )
        return common(Decision.FAIL, f"{reason} (permission denied)")
    if status in _RETRY_STATUSES:
        # 425 Too Early is answered before processing; the others may follow a partial write.
        return common(Decision.RETRY, reason, retry_after=retry_after, resend_safe=status == 425)
    if status in _REJECT_STATUSES:
        return common(Decision.REJECT, reason)
    return common(Decision.FAIL, reason)


def _reason_phrase(status: int) -> str:
    try:
        return httpx.codes.get_reason_phrase(status) or f"status {status}"
    except ValueError:
        return f"status {status}"


# --------------------------------------------------------------------------------------------
# Clock, rate limiter


class ManualClock:
    """A clock whose ``sleep`` advances ``now`` instead of waiting; records every sleep.

    For tests and benchmarks of code that takes ``clock=`` and ``sleep=`` callables.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        """The current (manual) time in seconds."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` and record it."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Advance the clock without recording a sleep."""
        with self._lock:
            self._now += seconds


_SFORCE_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


class RateBudget(Protocol):
    """Rolling windows every process of a deployment shares (the state store's
    ``rate_budget`` table): one per CRM account and limit, each call taken in one atomic
    statement."""

    def take_rate_slot(self, key: str, *, calls: int, per_s: float) -> tuple[int | None, float]:
        """Take a slot for one call: ``(slot, 0.0)``, or ``(None, seconds)`` to wait first."""
        ...

    def release_rate_slot(self, key: str, slot: int) -> None:
        """The call holding ``slot`` ended."""
        ...

    def hold_rate_budget(self, key: str, seconds: float, *, per_s: float) -> None:
        """No call of the window is due sooner than ``seconds`` from now."""
        ...


def _nothing() -> None:
    return None


class RateLimiter:
    """A per-connection rolling-window limiter, kept honest by the system's headers.

    Set it from the system's published limit (HubSpot private apps: 190 per 10 s; HubSpot
    search: 5 per second; one limiter per limit policy) and feed it every response's headers
    through :meth:`observe`:

    * ``X-HubSpot-RateLimit-Max`` / ``-Interval-Milliseconds`` reset the window,
      ``-Remaining`` fills it when the server counts more calls than we did (other clients
      share the token), ``-Daily`` / ``-Daily-Remaining`` give the daily budget;
    * ``Sforce-Limit-Info: api-usage=N/M`` gives the org's 24 h budget;
    * ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (Zoho and others) as the window.

    When the daily budget is used up, :meth:`acquire` raises :class:`~.errors.Fatal` with the
    reason instead of sending more requests; it lets one request through again after
    ``budget_recheck_s`` so a long-running service notices the reset. Thread-safe.

    The window counts this process's calls only. :meth:`share` adds a :class:`RateBudget`
    that every process using the same state store draws from: each call then also waits for
    its turn in the account's shared window of ``max_calls`` per ``per_s``, so all processes
    together stay under the limit (bursts included); a 429's ``Retry-After`` holds them all.
    """

    def __init__(
        self,
        system: str,
        *,
        max_calls: int,
        per_s: float,
        name: str = "default",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        budget_recheck_s: float = 900.0,
    ) -> None:
        if max_calls < 1 or per_s <= 0:
            raise ValueError(f"rate limit {name}: need max_calls >= 1 and per_s > 0")
        self.system = system
        self.name = name
        self.max_calls = max_calls
        self.per_s = per_s
        self.budget_used: int | None = None
        self.budget_max: int | None = None
        self._clock = clock
        self._sleep = sleep
        self._recheck_s = budget_recheck_s
        self._calls: deque[float] = deque()
        self._paused_until = 0.0
        self._exhausted_at: float | None = None
        self._lock = threading.Lock()
        self._budget: RateBudget | None = None
        self._budget_key = ""

    def share(self, budget: RateBudget | None, account: str = "") -> None:
        """Draw every call from ``budget`` too, in the window of ``account`` and this limit;
        None: this process's window alone."""
        with self._lock:
            self._budget = budget
            self._budget_key = account

    @property
    def shared(self) -> bool:
        """Whether calls are drawn from a budget shared with other processes."""
        return self._budget is not None

    def _window(self) -> tuple[str, int, float]:
        """(key, calls, per_s) of the shared window: a limit the headers changed is a new one."""
        key = cache_key("rate", self._budget_key, self.name, f"{self.max_calls}/{self.per_s}")
        return key, self.max_calls, self.per_s

    def _purge(self, now: float) -> None:
        horizon = now - self.per_s
        while self._calls and self._calls[0] <= horizon:
            self._calls.popleft()

    @property
    def remaining(self) -> int:
        """Calls still free in the current window."""
        with self._lock:
            self._purge(self._clock())
            return max(0, self.max_calls - len(self._calls))

    def acquire(self) -> Callable[[], None]:
        """Take one slot, sleeping until one is free; Fatal when the budget is used up.

        Returns what to call once the call ended (a shared slot is free one window after).
        """
        while True:
            with self._lock:
                now = self._clock()
                if self._exhausted_at is not None:
                    if now - self._exhausted_at < self._recheck_s:
                        raise Fatal(
                            f"API budget used up ({self.budget_used}/{self.budget_max} calls); "
                            "no more requests are sent until the system resets it",
                            system=self.system,
                        )
                    self._exhausted_at = None
                self._purge(now)
                if self._paused_until > now:
                    wait = self._paused_until - now
                elif len(self._calls) >= self.max_calls:
                    wait = self._calls[0] + self.per_s - now
                else:
                    self._calls.append(now)
                    budget, (key, calls, per_s) = self._budget, self._window()
                    break
            self._sleep(max(wait, 0.001))
        if budget is None:
            return _nothing
        while True:
            slot, wait = budget.take_rate_slot(key, calls=calls, per_s=per_s)
            if slot is not None:
                return functools.partial(budget.release_rate_slot, key, slot)
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (a 429 with ``Retry-After`` applies to all, in
        every process sharing the budget)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            budget, (key, _, per_s) = self._budget, self._window()
        if budget is not None:
            budget.hold_rate_budget(key, seconds, per_s=per_s)

    def _fill_to(self, remaining: int, now: float) -> None:
        self._purge(now)
        free = self.max_calls - len(self._calls)
        for _ in range(max(0, free - max(0, remaining))):
            self._calls.append(now)

    def _set_budget(self, used: int, maximum: int, now: float) -> None:
        self.budget_used, self.budget_max = used, maximum
        self._exhausted_at = now if maximum > 0 and used >= maximum else None

    def observe(self, headers: Mapping[str, str]) -> None:
        """Update the window and the budget from one response's headers."""
        h = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            now = self._clock()
            max_calls = _int(h.get("x-hubspot-ratelimit-max"))
            interval_ms = _int(h.get("x-hubspot-ratelimit-interval-milliseconds"))
            if max_calls and max_calls > 0:
                self.max_calls = max_calls
            if interval_ms and interval_ms > 0:
                self.per_s = interval_ms / 1000
            remaining = _int(h.get("x-hubspot-ratelimit-remaining"))
            if remaining is not None:
                self._fill_to(remaining, now)
            daily = _int(h.get("x-hubspot-ratelimit-daily"))
            daily_left = _int(h.get("x-hubspot-ratelimit-daily-remaining"))
            if daily is not None and daily_left is not None:
                self._set_budget(daily - daily_left, daily, now)

            usage = _SFORCE_USAGE.search(h.get("sforce-limit-info", ""))
            if usage:
                self._set_budget(int(usage.group(1)), int(usage.group(2)), now)

            generic_left = _int(h.get("x-ratelimit-remaining"))
            if generic_left is not None:
                limit = _int(h.get("x-ratelimit-limit"))
                if limit and limit > 0:
                    self.max_calls = limit
                reset = _int(h.get("x-ratelimit-reset"))
                if generic_left <= 0 and reset is not None and reset > 0:
                    # The server said when its window reopens: wait exactly that long.
                    self._paused_until = max(self._paused_until, now + _reset_seconds(reset))
                else:
                    self._fill_to(generic_left, now)


#: Connection settings that say which account a connection talks to (with every secret).
_ACCOUNT_FIELDS = re.compile(r"(url|_id|_domain|username|consumer_key)$")


def account_key(kind: str, settings: object) -> str:
    """A hash naming the API account of a connection's settings: its kind, API roots, ids and
    credentials. Connections with the same ones share one rate budget, whatever they are
    called in the project; only the hash is ever stored."""
    parts: dict[str, str] = {}
    if isinstance(settings, BaseModel):
        for name, value in sorted(settings):
            if isinstance(value, SecretStr):
                parts[name] = value.get_secret_value()
            elif _ACCOUNT_FIELDS.search(name) or name == "options":
                parts[name] = json.dumps(value, sort_keys=True, default=str)
    else:
        parts["settings"] = repr(settings)
    return cache_key(kind, json.dumps(parts, sort_keys=True))


def share_rate_limits(owner: object, account: str, budget: RateBudget | None) -> int:
    """Make every :class:`RateLimiter` ``owner`` (a connector) holds draw from ``budget`` in
    ``account``'s windows (None: from nothing shared); how many it found. Some limiters are
    shared by every connector of the process (HubSpot's search limit), so the last call wins:
    one process uses one state store."""
    limiters = {id(v): v for v in vars(owner).values() if isinstance(v, RateLimiter)}
    for limiter in limiters.values():
        limiter.share(budget, account)
    return len(limiters)


def _reset_seconds(reset: int) -> float:
    """A ``X-RateLimit-Reset`` value as seconds from now: epoch ms, epoch s, or seconds."""
    wall = time.time()
    if reset > 10**12:
        return max(0.0, reset / 1000 - wall)
    if reset > 10**9:
        return max(0.0, reset - wall)
    return float(reset)


# --------------------------------------------------------------------------------------------
# Retry policy and execution


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of retrying one call.

    Attributes:
        max_attempts: attempts in all, the first included.
        max_total_s: no retry is scheduled that would end later than this after the start.
        base_s, cap_s: exponential backoff ``min(cap, base * 2**(n-1))`` for attempt n.
        jitter: wait between half and all of the backoff, so clients do not retry in step.
    """

    max_attempts: int = 6
    max_total_s: float = 120.0
    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_total_s < 0 or self.base_s < 0 or self.cap_s < 0:
            raise ValueError("max_total_s, base_s and cap_s must not be negative")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt ``attempt`` (1-based) when the system gave none."""
        exp: float = min(self.cap_s, self.base_s * 2.0 ** max(0, attempt - 1))
        if not self.jitter:
            return exp
        return exp / 2 + (rng or random.Random()).uniform(0, exp / 2)


@dataclass(frozen=True)
class CallNote:
    """One call made under :func:`watch_calls`: what it did, where (method and path, without
    the query: no secret travels there), how many attempts, the last status."""

    describe: str
    method: str | None
    path: str | None
    attempts: int
    status: int | None

    @property
    def label(self) -> str:
        """``PATCH /crm/v3/objects/contacts/batch/update``, or what the call did."""
        return f"{self.method} {self.path}" if self.method and self.path else self.describe


_WATCHED: ContextVar[list[CallNote] | None] = ContextVar("leadrelay_watched_calls", default=None)


@contextlib.contextmanager
def watch_calls() -> Generator[list[CallNote], None, None]:
    """Collect a :class:`CallNote` for each call this thread makes in the block (the write
    step names the API call each record went in)."""
    notes: list[CallNote] = []
    token = _WATCHED.set(notes)
    try:
        yield notes
    finally:
        _WATCHED.reset(token)


class _Outcome(Exception):
    """An attempt that did not succeed: its classification and the error to raise for it."""

    def __init__(self, classified: Classified, error: ConnectorError, may_retry: bool) -> None:
        super().__init__(classified.reason)
        self.reason = classified.reason
        self.classified = classified
        self.error = error
        self.may_retry = may_retry


class CallPolicy:
    """Runs calls to one connection under the shared transport rules.

    Args:
        system: the connector kind, named in every error.
        retry: the attempt and time bounds.
        classify: the classifier (default :func:`classify_default`).
        limiter: the connection's default rate limiter (``execute`` may name another).
        on_call: called once per HTTP attempt (the connector's ``count_call``).
        sleep, clock: injectable for tests (:class:`ManualClock`).
        rng: the random source of the jitter.
        logger: where retries are logged (default ``leadrelay.connectors.<system>``).
    """

    def __init__(
        self,
        system: str,
        *,
        retry: RetryPolicy | None = None,
        classify: Callable[[ResponseInfo], Classified] = classify_default,
        limiter: RateLimiter | None = None,
        on_call: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.system = system
        self.retry = retry or RetryPolicy()
        self.classify = classify
        self.limiter = limiter
        self._on_call = on_call
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self.logger = logger or connector_logger(system)

    def execute(
        self,
        call: Callable[[], T],
        *,
        to_info: Callable[[T], ResponseInfo] | None = None,
        idempotent: bool,
        reauth: Callable[[], None] | None = None,
        describe: str,
        limiter: RateLimiter | None = None,
        on_error: Callable[[BaseException], ResponseInfo | None] = from_exception,
        record: str | None = None,
    ) -> T:
        """Run ``call`` until it succeeds or the policy gives up; return its result.

        Args:
            call: sends one request; returns the client's result or raises its exception.
            to_info: turns a returned value into a :class:`ResponseInfo` (``from_httpx`` for
                httpx, which does not raise on errors); None when a returned value always
                means success (hubspot-api-client and simple-salesforce raise on errors).
            idempotent: True when sending twice has the effect of sending once (reads, upserts
                by natural key, updates, deletes). False calls are never retried after an
                ambiguous failure.
            reauth: refreshes the credentials; called at most once per call, on a 401.
            describe: what the call does, for logs and errors ("batch upsert of 100 contacts").
            limiter: the rate limiter for this call (default: the policy's).
            on_error: turns a raised exception into a :class:`ResponseInfo`, or None to let it
                propagate unchanged (default :func:`from_exception`).
            record: the record the call is about, named in a ``Rejected`` error.

        Raises:
            AuthError, RateLimited, Retryable, Rejected, Fatal: the typed error of the last
            classification. A :class:`ConnectorError` raised by ``call`` itself propagates.
        """
        limiter = limiter or self.limiter
        start = self._clock()
        reauthed = False
        attempts = 0
        policy = self.retry
        last: ResponseInfo | None = None

        def attempt() -> T:
            nonlocal reauthed, attempts, last
            attempts += 1
            while True:
                result, info = self._send(call, to_info, on_error, limiter)
                last = info
                if info is None:
                    return result
                classified = self.classify(info)
                if classified.decision is Decision.SUCCESS:
                    if result is _NO_RESULT and info.error is not None:
                        # A classifier called a raised exception a success: nothing to return.
                        raise info.error
                    return result
                if classified.decision is Decision.REAUTH and reauth is not None and not reauthed:
                    reauthed = True
                    self.logger.info(
                        "re-authenticating %s for %s: %s", self.system, describe, classified.reason
                    )
                    reauth()
                    continue
                if limiter is not None and classified.rate_limited and classified.retry_after:
                    limiter.pause(classified.retry_after)
                raise self._outcome(classified, info, describe, idempotent, record)

        def wait(state: tenacity.RetryCallState) -> float:
            outcome = _outcome_of(state)
            if outcome is not None and outcome.classified.retry_after is not None:
                return outcome.classified.retry_after
            return policy.backoff(state.attempt_number, self._rng)

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= policy.max_attempts:
                return True
            return self._clock() - start + state.upcoming_sleep > policy.max_total_s

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = _outcome_of(state)
            reason = outcome.reason if outcome is not None else "unknown"
            self.logger.warning(
                "retrying %s in %.1fs: %s (attempt %d/%d)",
                describe,
                state.upcoming_sleep,
                redact(reason),
                state.attempt_number,
                policy.max_attempts,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, _Outcome) and e.may_retry),
            wait=wait,
            stop=stop,
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Outcome as outcome:
            if outcome.may_retry:
                self._give_up(outcome, attempts, start)
            raise outcome.error from outcome.__cause__
        finally:
            watched = _WATCHED.get()
            if watched is not None:
                url = last.url if last is not None else ""
                watched.append(
                    CallNote(
                        describe,
                        last.method if last is not None else None,
                        urlsplit(url).path if url else None,
                        attempts,
                        last.status if last is not None else None,
                    )
                )

    def request(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        *,
        idempotent: bool,
        describe: str,
        reauth: Callable[[], None] | None = None,
        limiter: RateLimiter | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """``client.request(method, url, **kwargs)`` under :meth:`execute`."""
        return self.execute(
            lambda: client.request(method, url, **kwargs),
            to_info=from_httpx,
            idempotent=idempotent,
            reauth=reauth,
            describe=describe,
            limiter=limiter,
        )

    def _send(
        self,
        call: Callable[[], T],
        to_info: Callable[[T], ResponseInfo] | None,
        on_error: Callable[[BaseException], ResponseInfo | None],
        limiter: RateLimiter | None,
    ) -> tuple[T, ResponseInfo | None]:
        release = limiter.acquire() if limiter is not None else _nothing
        if self._on_call is not None:
            self._on_call()
        try:
            result = call()
        except ConnectorError:
            raise
        except Exception as exc:
            info = on_error(exc)
            if info is None:
                raise
            if limiter is not None and info.headers:
                limiter.observe(info.headers)
            return _NO_RESULT, info
        finally:
            release()
        info = to_info(result) if to_info is not None else None
        if limiter is not None and info is not None and info.headers:
            limiter.observe(info.headers)
        return result, info

    def _outcome(
        self,
        classified: Classified,
        info: ResponseInfo,
        describe: str,
        idempotent: bool,
        record: str | None,
    ) -> _Outcome:
        decision = classified.decision
        message = classified.message or classified.reason
        common: dict[str, Any] = {
            "system": self.system,
            "url": info.url or None,
            "status": info.status,
            "code": classified.code,
            "method": info.method,
        }
        error: ConnectorError
        may_retry = False
        if decision is Decision.RETRY:
            may_retry = idempotent or classified.resend_safe
            if not may_retry:
                error = Retryable(
                    f"{describe}: {classified.reason}; not retried because the write may have "
                    "been applied (resolve it by a lookup before sending again)",
                    **common,
                )
            elif classified.rate_limited:
                error = RateLimited(
                    f"{describe}: {message}", retry_after=classified.retry_after, **common
                )
            else:
                error = Retryable(f"{describe}: {classified.reason}", **common)
        elif decision is Decision.REAUTH:
            error = AuthError(
                f"{describe}: credentials refused ({message}); check the connection's credentials",
                **common,
            )
        elif decision is Decision.REJECT:
            error = Rejected(message, record=record, field=classified.field, **common)
        elif classified.rate_limited:
            error = RateLimited(f"{describe}: {classified.reason}", **common)
        else:
            error = Fatal(f"{describe}: {classified.reason}", **common)
        outcome = _Outcome(classified, error, may_retry)
        outcome.reason = redact(classified.reason, secrets_in_url(info.url))
        outcome.__cause__ = info.error
        return outcome

    def _give_up(self, outcome: _Outcome, attempts: int, start: float) -> None:
        error = outcome.error
        elapsed = self._clock() - start
        error.message = redact(
            f"{error.message} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} "
            f"in {elapsed:.1f}s)"
        )
        error.args = (error.message,)


_NO_RESULT: Any = object()


def _outcome_of(state: tenacity.RetryCallState) -> _Outcome | None:
    if state.outcome is None:
        return None
    error = state.outcome.exception()
    return error if isinstance(error, _Outcome) else None


# --------------------------------------------------------------------------------------------
# OAuth


class RefreshingAuth(httpx.Auth):
    """httpx auth that attaches a cached OAuth token, refreshes it before it expires, and on a
    401 refreshes and resends the request once.

    ``fetch_token()`` returns ``(access_token, expires_in_seconds)``; it is called under a lock,
    so concurrent requests share one refresh (Zoho issues at most 10 access tokens per refresh
    token per 10 minutes). Every token is registered for log redaction. For sync clients.

    Args:
        fetch_token: gets a new token (raises :class:`~.errors.AuthError` when refused).
        header_format: the Authorization value, e.g. ``"Zoho-oauthtoken {token}"``.
        refresh_margin_s: refresh this long before the token expires.
        clock: injectable monotonic clock.
    """

    requires_request_body = True

    def __init__(
        self,
        fetch_token: Callable[[], tuple[str, float]],
        header_format: str = "Bearer {token}",
        *,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch_token
        self._format = header_format
        self._margin = refresh_margin_s
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.refreshes = 0

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at - self._margin

    def _refresh_locked(self) -> str:
        token, expires_in = self._fetch()
        register_secret(token)
        self._token = token
        self._expires_at = self._clock() + max(0.0, float(expires_in))
        self.refreshes += 1
        return token

    def token(self) -> str:
        """The cached token, refreshed first when missing or about to expire."""
        with self._lock:
            if self._fresh() and self._token is not None:
                return self._token
            return self._refresh_locked()

    def refresh_after_rejection(self, rejected: str | None) -> str:
        """A new token after ``rejected`` was refused; shares a refresh another thread made."""
        with self._lock:
            if self._token is not None and self._token != rejected and self._fresh():
                return self._token
            return self._refresh_locked()

    def invalidate(self) -> None:
        """Forget the cached token so the next request fetches a new one."""
        with self._lock:
            self._token = None
            self._expires_at = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach the token; on a 401 refresh once and resend."""
        token = self.token()
        request.headers["Authorization"] = self._format.format(token=token)
        response = yield request
        if response.status_code == 401:
            response.read()
            token = self.refresh_after_rejection(token)
            request.headers["Authorization"] = self._format.format(token=token)
            yield request
