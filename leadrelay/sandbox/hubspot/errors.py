"""HubSpot's error dialect: ``{"status": "error", …}`` bodies and the exception carrying one."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any


def correlation_id() -> str:
    """A fresh ``correlationId`` (HubSpot uses a UUID per request)."""
    return str(uuid.uuid4())


def error_body(message: str, category: str, **extra: Any) -> dict[str, Any]:
    """The top-level HubSpot error object: status, message, correlationId, category, extras."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
        "category": category,
    }
    body.update(extra)
    return body


class HubSpotError(Exception):
    """An API error answered with ``status`` and HubSpot's error body."""

    def __init__(self, status: int, message: str, category: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body HubSpot answers with for this error."""
        return error_body(self.message, self.category, **self.extra)

    def batch_error(self, context: dict[str, list[str]]) -> dict[str, Any]:
        """This error as one entry of a 207 ``errors`` list (StandardError) with ``context``."""
        entry: dict[str, Any] = {
            "status": "error",
            "category": self.category,
            "message": self.message,
            "context": context,
            "errors": [],
            "links": {},
        }
        return entry


def validation_error(message: str, **extra: Any) -> HubSpotError:
    """A 400 VALIDATION_ERROR."""
    return HubSpotError(400, message, "VALIDATION_ERROR", **extra)


def not_found(message: str = "resource not found", **extra: Any) -> HubSpotError:
    """A 404 OBJECT_NOT_FOUND."""
    return HubSpotError(404, message, "OBJECT_NOT_FOUND", **extra)


def property_errors(problems: list[dict[str, Any]]) -> HubSpotError:
    """HubSpot's 400 for bad property values: the problem list JSON-encoded into the message."""
    # HubSpot answers "Property values were not valid: [{isValid, message, error, name, …}]",
    # the list being JSON inside the message string (observed in many client logs).
    return validation_error(
        "Property values were not valid: " + json.dumps(problems, separators=(",", ":"))
    )


def property_problem(name: str, error: str, message: str) -> dict[str, Any]:
    """One ``{isValid: false, …}`` entry of a "Property values were not valid" message."""
    return {
        "isValid": False,
        "message": message,
        "error": error,
        "name": name,
        "localizedErrorMessage": message,
    }


#: text no HubSpot store takes: NUL, and UTF-16 surrogates (alone they are not Unicode)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(value: Any, where: str = "") -> str | None:
    """Where ``value`` holds text HubSpot refuses (a NUL or a lone surrogate), None when it
    holds none. The answer never quotes the bad text itself, so it can be sent as JSON."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        what = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
        return f"{where or 'the body'} contains {what}, which cannot be stored"
    children: list[tuple[str, Any]]
    if isinstance(value, dict):
        children = []
        for key, item in value.items():
            if _UNSTORABLE.search(str(key)):
                return f"a key in {where or 'the body'} contains text that cannot be stored"
            children.append((f"{where}.{key}" if where else str(key), item))
    elif isinstance(value, list):
        children = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    else:
        return None
    for path, item in children:
        problem = unstorable_text(item, path)
        if problem:
            return problem
    return None
