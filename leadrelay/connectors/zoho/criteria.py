"""Literals for Zoho's two query languages: Search Records ``criteria`` and COQL.

Search criteria look like ``(Email:equals:ana@example.com)``; the Search Records doc says a
``(``, ``)`` or ``,`` inside a value is escaped with a backslash (and so is a backslash itself).
COQL string literals are single-quoted, with ``'`` and ``\\`` backslash-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "MAX_COQL_IN_VALUES",
    "MAX_SEARCH_CRITERIA",
    "coql_in",
    "coql_literal",
    "coql_select",
    "criteria_value",
    "equals_any",
]

#: Search Records doc: at most 10 criteria in one ``criteria`` parameter.
MAX_SEARCH_CRITERIA = 10
#: COQL: an ``in`` list takes at most 50 values.
MAX_COQL_IN_VALUES = 50

_CRITERIA_SPECIAL = ("\\", "(", ")", ",")
_API_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_ORDER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*( (asc|desc))?")


def criteria_value(value: str) -> str:
    """``value`` escaped for a Search Records criterion (``\\``, ``(``, ``)`` and ``,``)."""
    for char in _CRITERIA_SPECIAL:  # the backslash first, so added ones are not doubled
        value = value.replace(char, "\\" + char)
    return value


def equals_any(field: str, values: Sequence[str]) -> str:
    """A criteria string matching ``field`` equal to any of ``values``.

    ``(Email:equals:a)or(Email:equals:b)``; ValueError for no values or more than the 10
    criteria Search Records accepts.
    """
    if not values:
        raise ValueError(f"search criteria on {field} need at least one value")
    if len(values) > MAX_SEARCH_CRITERIA:
        raise ValueError(
            f"search criteria on {field}: {len(values)} values, at most "
            f"{MAX_SEARCH_CRITERIA} are allowed"
        )
    return "or".join(f"({field}:equals:{criteria_value(value)})" for value in values)


def coql_literal(value: str) -> str:
    """``value`` as a single-quoted COQL string literal (``\\`` and ``'`` escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def coql_in(field: str, values: Sequence[str]) -> str:
    """A COQL condition matching ``field`` equal to any of ``values``.

    Up to 50 values make one ``field in (…)``; up to 100 make two ``in`` lists joined by
    ``or`` (COQL wants every pair of criteria grouped, so more would need deeper nesting and
    is refused here). ValueError for no values or more than 100.
    """
    if not values:
        raise ValueError(f"a COQL in-list on {field} needs at least one value")
    if len(values) > 2 * MAX_COQL_IN_VALUES:
        raise ValueError(
            f"a COQL in-list on {field}: {len(values)} values, at most "
            f"{2 * MAX_COQL_IN_VALUES} per query"
        )
    chunks = [
        values[start : start + MAX_COQL_IN_VALUES]
        for start in range(0, len(values), MAX_COQL_IN_VALUES)
    ]
    parts = [f"{field} in ({', '.join(coql_literal(v) for v in chunk)})" for chunk in chunks]
    if len(parts) == 1:
        return parts[0]
    return " or ".join(f"({part})" for part in parts)


def coql_select(
    fields: Sequence[str],
    module: str,
    where: str,
    *,
    order_by: Sequence[str] = (),
    limit: int = 200,
    offset: int = 0,
) -> str:
    """A COQL select query; ValueError when a field or module is not an API name.

    ``where`` must be built from escaped literals (:func:`coql_in`, :func:`coql_literal`).
    """
    for name in (*fields, module):
        if not _API_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a Zoho API name")
    if not fields:
        raise ValueError("a COQL query needs at least one field")
    for order in order_by:
        if not _ORDER.fullmatch(order):
            raise ValueError(f"{order!r} is not a COQL order")
    if limit < 1 or offset < 0:
        raise ValueError("a COQL query needs limit >= 1 and offset >= 0")
    order = f" order by {', '.join(order_by)}" if order_by else ""
    columns = ", ".join(fields)
    # Names are checked above and values in ``where`` are escaped literals.
    return f"select {columns} from {module} where {where}{order} limit {limit} offset {offset}"  # noqa: S608
