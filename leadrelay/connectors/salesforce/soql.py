"""SOQL text built safely: literal escaping and ``IN (...)`` lists split under the length limits.

Every value leadrelay puts into SOQL goes through :func:`quote` (or :func:`quote_like` inside a
``LIKE``), so an email or a name holding quotes, backslashes or newlines can neither break the
query nor change its meaning (crm-api-facts §2: the escapes are
``\\n \\r \\t \\b \\f \\" \\' \\\\`` and ``\\u`` + 4 hex; ``\\%`` and ``\\_`` are only valid
inside ``LIKE``, where ``%`` and ``_`` are wildcards — with ``=`` and ``IN`` they are plain
characters and stay as they are).

Two limits bound a query (Salesforce "SOQL and SOSL Limits"): the SOQL statement may be at most
100,000 characters, and the REST ``query`` resource is a GET, whose URI must stay under about
16,000 characters. The URL, with the query percent-encoded, is the binding one for an
``IN`` list, so :func:`in_batches` measures each query as it will travel in the URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote_plus, urlencode

__all__ = [
    "MAX_QUERY_URL_CHARS",
    "MAX_SOQL_CHARS",
    "datetime_literal",
    "in_batches",
    "quote",
    "quote_like",
]

#: The documented maximum length of a SOQL statement.
MAX_SOQL_CHARS = 100_000
#: What leadrelay allows for the query part of a GET URL (Salesforce answers 414 beyond about
#: 16,384 bytes of URI; the rest is left for the instance host and the API path).
MAX_QUERY_URL_CHARS = 15_000

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
# Other control characters have no short escape: SOQL spells them \u + 4 hex. One table,
# built once, so a value is escaped in one pass of ``str.translate``.
_TABLE: dict[int, str] = {
    code: f"\\u{code:04x}" for code in (*range(0x20), 0x7F) if chr(code) not in _ESCAPES
}
_TABLE.update({ord(char): escaped for char, escaped in _ESCAPES.items()})
# Text with none of these characters (nearly every email) needs no escaping at all.
_NEEDS_ESCAPE = re.compile("[\\\\'\"\x00-\x1f\x7f]")


def _escape(value: str) -> str:
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_TABLE)


def quote(value: str) -> str:
    """``value`` as a SOQL string literal for ``=``, ``!=`` and ``IN``: ``'O\\'Brien'``."""
    if not isinstance(value, str):
        raise TypeError(f"SOQL string literal needs a str, not {type(value).__name__}")
    return f"'{_escape(value)}'"


def quote_like(value: str) -> str:
    """``value`` as a literal for ``LIKE`` that matches it exactly: ``%`` and ``_`` escaped too.

    Add wildcards around the escaped text yourself (``quote_like(x)[:-1] + "%'"``).
    """
    escaped = _escape(value).replace("%", "\\%").replace("_", "\\_")
    return f"'{escaped}'"


def datetime_literal(value: datetime) -> str:
    """A SOQL dateTime literal in UTC, whole seconds: ``2024-05-01T09:30:00Z``.

    Naive datetimes are taken as UTC; sub-seconds are dropped (rounded down).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _url_length(soql: str) -> int:
    return len(urlencode({"q": soql}))


def in_batches(
    template: str,
    values: Iterable[str],
    *,
    max_url_chars: int = MAX_QUERY_URL_CHARS,
    max_soql_chars: int = MAX_SOQL_CHARS,
    max_values: int | None = None,
) -> list[tuple[str, list[str]]]:
    """Split ``values`` into queries ``template.format(values=<quoted list>)`` under the limits.

    Args:
        template: the query with one ``{values}`` slot, e.g.
            ``"SELECT Id, Email FROM Lead WHERE Email IN ({values})"``; it must not contain any
            other brace.
        values: the raw values; each is quoted with :func:`quote`. Duplicates are sent once.
        max_url_chars: the longest ``q=<percent-encoded query>`` allowed.
        max_soql_chars: the longest SOQL statement allowed.
        max_values: at most this many values per query (None: as many as fit).

    Returns:
        ``(query, values in it)`` pairs, in the order the values came.

    Raises:
        ValueError: a single value does not fit in one query on its own.
    """
    unique: list[str] = list(dict.fromkeys(values))
    batches: list[tuple[str, list[str]]] = []
    base_url = _url_length(template.format(values=""))
    base_soql = len(template.format(values=""))
    current: list[str] = []
    literals: list[str] = []
    url_size, soql_size = base_url, base_soql
    for value in unique:
        literal = quote(value)
        # Each value adds its literal and a comma; measured percent-encoded as it travels
        # (as ``urlencode`` encodes a value).
        item_url = len(quote_plus(literal + ","))
        item_soql = len(literal) + 1
        full = max_values is not None and len(current) >= max_values
        if current and (
            full or url_size + item_url > max_url_chars or soql_size + item_soql > max_soql_chars
        ):
            batches.append(_render(template, current, literals))
            current, literals, url_size, soql_size = [], [], base_url, base_soql
        if base_url + item_url > max_url_chars or base_soql + item_soql > max_soql_chars:
            raise ValueError(
                f"value of {len(value)} characters is too long for one SOQL query: {value[:40]!r}…"
            )
        current.append(value)
        literals.append(literal)
        url_size += item_url
        soql_size += item_soql
    if current:
        batches.append(_render(template, current, literals))
    return batches


def _render(template: str, values: Sequence[str], literals: Sequence[str]) -> tuple[str, list[str]]:
    return template.format(values=",".join(literals)), list(values)
