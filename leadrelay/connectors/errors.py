"""Typed connector errors and the redaction that keeps secrets out of them and out of logs.

Every error a connector raises is a :class:`ConnectorError` carrying the ``system`` (connector
kind), the ``url`` called (query secrets removed), the HTTP ``status`` and the system's own
``message``. The subclasses say what the caller should do:

=================  =====================================================================
``AuthError``      credentials are wrong or could not be refreshed: stop, fix the config
``RateLimited``    the system asked us to slow down and the retry budget ran out
``Retryable``      a transient failure (5xx, timeout, reset) the caller may try again
``Rejected``       the system refused this record (validation): dead-letter it, go on
``Fatal``          anything else that retrying cannot fix (permissions, budget used up)
=================  =====================================================================

Secrets are removed twice: when an error or log message is built (:func:`redact`), and by
:class:`RedactingFilter` on the ``leadrelay`` loggers, which also knows every secret a
connector registered with :func:`register_secret` (tokens, passwords, client secrets).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "SECRET_KEYS",
    "SECRET_QUERY_KEYS",
    "AuthError",
    "ConnectorError",
    "Fatal",
    "RateLimited",
    "RedactingFilter",
    "Rejected",
    "Retryable",
    "UnsupportedCapability",
    "forget_secrets",
    "redact",
    "redact_url",
    "register_secret",
    "secrets_in_url",
]

#: Query-string keys whose values are secrets in a URL (OAuth token endpoints take them there:
#: Zoho's refresh grant sends client_secret and refresh_token in the query; an authorization
#: redirect carries the one-time ``code``).
SECRET_QUERY_KEYS: frozenset[str] = frozenset(
    {
        "access_token",
        "refresh_token",
        "client_secret",
        "code",
        "password",
        "assertion",
        "id_token",
        "token",
        "api_key",
        "apikey",
        "key",
        "hapikey",
        "signature",
        "sig",
        "security_token",
    }
)

REDACTED = "***"

#: Keys whose values are secrets wherever they appear: JSON bodies, form bodies, reprs.
SECRET_KEYS: frozenset[str] = frozenset(
    {
        "access_token",
        "refresh_token",
        "client_secret",
        "password",
        "assertion",
        "id_token",
        "security_token",
        "api_key",
        "apikey",
        "hapikey",
    }
)


def _alternation(keys: Iterable[str]) -> str:
    return "|".join(sorted((re.escape(key) for key in keys), key=len, reverse=True))


# Order matters: the specific token shapes first, then the generic key=value forms.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values: "Bearer <t>", "Zoho-oauthtoken <t>", "Basic <b64>".
    (
        re.compile(r"\b([Bb]earer|Zoho-oauthtoken|Basic|OAuth)\s+[A-Za-z0-9._~+/=:!-]{8,}"),
        rf"\1 {REDACTED}",
    ),
    # HubSpot private-app tokens: pat-<region>-<uuid>.
    (re.compile(r"\bpat-[A-Za-z0-9-]{8,}"), REDACTED),
    # Salesforce session ids: <15/18-char org id starting 00D>!<opaque>.
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![^\s\"',;&]+"), REDACTED),
    # Zoho access/refresh tokens: 1000.<hex>.<hex>.
    (re.compile(r"\b1000\.[0-9a-f]{16,}\.[0-9a-f]{16,}\b"), REDACTED),
    # JSON: "access_token": "value" (and a notification "token").
    (
        re.compile(
            rf"(?i)([\"'](?:{_alternation(SECRET_KEYS | {'token'})})[\"']\s*:\s*)[\"'][^\"']*[\"']"
        ),
        rf'\1"{REDACTED}"',
    ),
    # Form bodies and reprs: access_token=value
    (
        re.compile(rf"(?i)(?<![A-Za-z0-9_])((?:{_alternation(SECRET_KEYS)})=)[^&\s\"',;)]+"),
        rf"\1{REDACTED}",
    ),
    # URL query strings inside free text: ?code=value&...
    (
        re.compile(rf"(?i)([?&](?:{_alternation(SECRET_QUERY_KEYS)})=)[^&\s\"',;)#]+"),
        rf"\1{REDACTED}",
    ),
)

#: Per pattern, what any match contains: groups of lower-case text, each group met when one of
#: its texts is in the text. A pattern with a group unmet is not run over a text (a long text,
#: such as a batch of journal rows, would otherwise be scanned at every position by every
#: pattern; a page of Salesforce writes always holds "key" and "00d", so the word alone is not
#: enough: a query string also needs "=" and "?" or "&", a session id "!").
_MARKERS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("bearer", "zoho-oauthtoken", "basic", "oauth"),),
    (("pat-",),),
    (("00d",), ("!",)),
    (("1000.",),),
    (tuple(sorted(SECRET_KEYS | {"token"})), (":",), ('"', "'")),
    (tuple(sorted(SECRET_KEYS)), ("=",)),
    (tuple(sorted(SECRET_QUERY_KEYS)), ("=",), ("?", "&")),
)


def _marker_plan(
    markers: tuple[tuple[tuple[str, ...], ...], ...],
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every marker text once, shortest first, each with the shorter markers it contains."""
    ordered = sorted({m for groups in markers for group in groups for m in group}, key=len)
    return tuple(
        (m, tuple(part for part in ordered if len(part) < len(m) and part in m)) for m in ordered
    )


#: A text holds a marker only if it holds the shorter markers inside it too ("token" for
#: "access_token", "key" for "api_key"): one found missing rules the longer ones out unscanned.
_MARKER_PLAN = _marker_plan(_MARKERS)


def _present_markers(lowered: str) -> set[str]:
    """The markers in ``lowered``: each text searched for once, and only when it can be there."""
    present: set[str] = set()
    for marker, parts in _MARKER_PLAN:
        if all(part in present for part in parts) and marker in lowered:
            present.add(marker)
    return present


_registered: set[str] = set()
_registered_lock = threading.Lock()

# A secret shorter than this is not registered: replacing "a" or "1" everywhere would mangle
# every message without protecting anything.
_MIN_SECRET_LENGTH = 6


def register_secret(*values: str | None) -> None:
    """Remember secret values so that :func:`redact` and :class:`RedactingFilter` remove them.

    Connectors register every token, password and client secret they load or receive.
    """
    with _registered_lock:
        for value in values:
            if value and len(value) >= _MIN_SECRET_LENGTH:
                _registered.add(value)


def forget_secrets(*values: str) -> None:
    """Forget registered secrets (e.g. a token that was replaced); unknown values are ignored."""
    with _registered_lock:
        for value in values:
            _registered.discard(value)


def _registered_secrets() -> list[str]:
    with _registered_lock:
        # Longest first, so a secret containing another is replaced whole.
        return sorted(_registered, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given and the registered secrets, and every token shape, replaced."""
    extra = [s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH]
    for secret in sorted(extra, key=len, reverse=True) + _registered_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    present = _present_markers(text.lower())
    for (pattern, replacement), groups in zip(_PATTERNS, _MARKERS, strict=True):
        if all(any(marker in present for marker in group) for group in groups):
            text = pattern.sub(replacement, text)
    return text


def secrets_in_url(url: str | None) -> list[str]:
    """The values of secret query keys in ``url`` (to remove from text that may echo them)."""
    if not url or "?" not in url:
        return []
    try:
        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError:
        return []
    return [value for key, value in pairs if key.lower() in SECRET_QUERY_KEYS and value]


def redact_url(url: str | None) -> str | None:
    """``url`` with user info and the values of secret query keys removed."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs],
            safe="*",
        )
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message with secrets redacted.

    It formats the record (``msg % args``) first, so secrets passed as arguments are caught
    too. Attach it to a handler or logger: ``logger.addFilter(RedactingFilter())``.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        message = record.getMessage()
        cleaned = redact(message, self._secrets)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Format the traceback now so the redacted text is what handlers print.
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info), self._secrets
            )
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        return True


class ConnectorError(Exception):
    """A call to an external system failed.

    Attributes:
        system: the connector kind (``hubspot``, ``salesforce``, ``zoho`` …).
        url: the URL called, with query secrets and user info removed.
        status: the HTTP status, or None for a connection error or a failure before sending.
        message: the system's own message (redacted), e.g. ``Required fields are missing``.
        code: the system's error code when it gave one (``REQUIRED_FIELD_MISSING``).
        method: the HTTP method, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        system: str,
        url: str | None = None,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
    ) -> None:
        self.system = system
        self.url = redact_url(url)
        self.status = status
        # A system may echo the request URL (and so a token in its query) in its message.
        self.message = redact(message, secrets_in_url(url))
        self.code = code
        self.method = method
        super().__init__(self.message)

    def _where(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.method:
            parts.append(self.method)
        if self.url:
            parts.append(self.url)
        return " ".join(parts)

    def __str__(self) -> str:
        code = f"{self.code}: " if self.code and self.code not in self.message else ""
        where = self._where()
        suffix = f" ({where})" if where else ""
        return redact(f"{self.system}: {code}{self.message}{suffix}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive pickling (multiprocessing, logging queues).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ConnectorError], state: dict[str, Any]) -> ConnectorError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, state.get("message", ""))
    return error


class AuthError(ConnectorError):
    """The credentials were refused, or re-authenticating once did not help."""


class RateLimited(ConnectorError):
    """The system kept answering "too many requests" until the retry budget ran out.

    Attributes:
        retry_after: seconds the system asked us to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        system: str,
        retry_after: float | None = None,
        url: str | None = None,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(message, system=system, url=url, status=status, code=code, method=method)
        self.retry_after = retry_after


class Retryable(ConnectorError):
    """A transient failure (5xx, timeout, connection reset) that may succeed if tried later.

    Raised at once, without retrying, for a write that is not idempotent: the system may have
    applied it, so the caller resolves that first (e.g. by a lookup) instead of sending twice.
    """


class Rejected(ConnectorError):
    """The system refused a record: validation failed, a required field is missing, a value
    is not in a picklist. Retrying the same data cannot help; it goes to the dead-letter queue.

    Attributes:
        record: the caller's key for the record (the lead key or the system id), when known.
        field: the system field at fault, when the system named one.
    """

    def __init__(
        self,
        message: str,
        *,
        system: str,
        record: str | None = None,
        field: str | None = None,
        url: str | None = None,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(message, system=system, url=url, status=status, code=code, method=method)
        self.record = record
        self.field = field

    def __str__(self) -> str:
        base = super().__str__()
        about = []
        if self.record is not None:
            about.append(f"record {self.record}")
        if self.field is not None:
            about.append(f"field {self.field}")
        if not about:
            return base
        system, _, rest = base.partition(": ")
        return redact(f"{system}: {', '.join(about)}: {rest}")


class Fatal(ConnectorError):
    """A failure retrying cannot fix: missing permission, API budget used up, bad request."""


class UnsupportedCapability(Fatal):
    """The connector was asked for something it does not declare (see ``Capability``)."""
