"""Text that can be stored and sent on: no NUL character, no lone surrogate.

A JSON body may carry ``"\\ud800"`` (a lone UTF-16 surrogate, which no UTF-8 encoder takes) or
``"\\u0000"``, and a form-encoded body ``%00``. Neither survives the trip further: PostgreSQL
refuses NUL in text and JSON, and a CRM request cannot encode a surrogate. The capture service
refuses them at the door (:func:`find_bad_text` over the parsed body), and the delivery step
refuses them in answers fetched from an ad platform, each naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BadText", "find_bad_text", "printable_name"]

_BAD = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class BadText:
    """Where a value holds text that cannot be stored (``field``: a path such as
    ``entry[0].changes[0].value.leadgen_id``) and why (``problem``)."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field} {self.problem}"


def _problem(text: str) -> str | None:
    found = _BAD.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character"
    return "contains a lone surrogate (not valid Unicode)"


def printable_name(name: str) -> str:
    """``name`` made safe to show: NULs and surrogates as backslash escapes."""
    if _BAD.search(name) is None:
        return name
    return name.encode("unicode_escape").decode("ascii")


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    name = printable_name(key)
    return f"{path}.{name}" if path else name


def find_bad_text(value: object, path: str = "") -> BadText | None:
    """The first string in ``value`` (a parsed JSON or form body: dicts, lists, scalars), key
    or value, holding a NUL or a lone surrogate; None when there is none."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        where, current = stack.pop()
        if isinstance(current, str):
            problem = _problem(current)
            if problem is not None:
                return BadText(where or "body", problem)
        elif isinstance(current, dict):
            items: list[tuple[str, object]] = []
            for key, item in current.items():
                name = str(key)
                problem = _problem(name)
                if problem is not None:
                    return BadText(_child(where, name), f"(a field name) {problem}")
                items.append((_child(where, name), item))
            stack.extend(reversed(items))
        elif isinstance(current, list | tuple):
            stack.extend(reversed([(_child(where, i), item) for i, item in enumerate(current)]))
    return None
