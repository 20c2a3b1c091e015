"""Zoho's Create Custom Fields API over the emulated Leads module (``check --create-fields``).

``POST /crm/v7/settings/fields?module=Leads`` with ``{"fields": [...]}`` (one to five): each
item names ``field_label`` and ``data_type`` and, by type, ``length``, ``decimal_place``,
``pick_list_values`` [{display_value, actual_value}] or ``textarea.type``. The API name is
``api_name`` when sent, else the label with spaces as ``_``. A label or API name the module
already has is refused per field with DUPLICATE_DATA; a created field is in ``settings/fields``
at once (last) and takes values like the seeded ones. Pick lists start with ``-None-`` as
Zoho's do.
"""

from __future__ import annotations

import re
from typing import Any

from leadrelay.sandbox.zoho.schema import FieldDef

__all__ = ["MAX_FIELDS", "FieldError", "field_from_item"]

#: Zoho creates at most five fields a call.
MAX_FIELDS = 5
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,49}$")
#: data_type -> (json_type, default length, longest length)
_TYPES: dict[str, tuple[str, int | None, int | None]] = {
    "text": ("string", 255, 255),
    "textarea": ("string", 2000, 32000),
    "email": ("string", 100, 100),
    "phone": ("string", 30, 30),
    "website": ("string", 255, 255),
    "picklist": ("string", 120, 120),
    "datetime": ("string", None, None),
    "date": ("string", None, None),
    "integer": ("integer", 9, 9),
    "double": ("double", 16, 16),
    "currency": ("double", 16, 16),
    "boolean": ("boolean", None, None),
}
_TEXTAREA_LENGTHS = {"small": 2000, "large": 32000, "rich_text": 50000}


class FieldError(Exception):
    """One refused field: Zoho's code, message and details."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The field's entry of the answer's ``fields`` array."""
        return {
            "code": self.code,
            "details": self.details,
            "message": self.message,
            "status": "error",
        }


def _invalid(key: str, path: str, **extra: Any) -> FieldError:
    return FieldError("INVALID_DATA", "invalid data", {"api_name": key, "json_path": path, **extra})


def _length(item: dict[str, Any], data_type: str, index: int) -> int | None:
    _, default, longest = _TYPES[data_type]
    if data_type == "textarea":
        textarea = item.get("textarea")
        kind = textarea.get("type") if isinstance(textarea, dict) else "small"
        if kind not in _TEXTAREA_LENGTHS:
            raise FieldError(
                "INVALID_DATA",
                "invalid data",
                {"api_name": "textarea.type", "json_path": f"$.fields[{index}].textarea.type"},
            )
        return _TEXTAREA_LENGTHS[str(kind)]
    value = item.get("length", default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= (longest or 0):
        raise FieldError(
            "INVALID_DATA",
            "invalid data",
            {
                "api_name": "length",
                "json_path": f"$.fields[{index}].length",
                "maximum_length": longest,
            },
        )
    return value


def _options(item: dict[str, Any], index: int) -> list[str]:
    raw = item.get("pick_list_values")
    if not isinstance(raw, list) or not raw:
        raise FieldError(
            "MANDATORY_NOT_FOUND",
            "required field not found",
            {"api_name": "pick_list_values", "json_path": f"$.fields[{index}].pick_list_values"},
        )
    values = ["-None-"]
    for position, option in enumerate(raw):
        value = (
            option.get("actual_value") or option.get("display_value")
            if isinstance(option, dict)
            else None
        )
        if not isinstance(value, str) or not value.strip() or value in values:
            raise FieldError(
                "INVALID_DATA",
                "invalid data",
                {
                    "api_name": "pick_list_values",
                    "json_path": f"$.fields[{index}].pick_list_values[{position}]",
                },
            )
        values.append(value)
    return values


def field_from_item(fields: dict[str, FieldDef], item: Any, index: int, field_id: str) -> FieldDef:
    """The :class:`FieldDef` item ``index`` of the body creates; :class:`FieldError` if refused."""
    path = f"$.fields[{index}]"
    if not isinstance(item, dict):
        raise FieldError("INVALID_DATA", "invalid data", {"json_path": path})
    label, data_type = item.get("field_label"), item.get("data_type")
    for key, value in (("field_label", label), ("data_type", data_type)):
        if not isinstance(value, str) or not value.strip():
            raise FieldError(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                {"api_name": key, "json_path": f"{path}.{key}"},
            )
    assert isinstance(label, str) and isinstance(data_type, str)
    if data_type not in _TYPES:
        raise FieldError(
            "INVALID_DATA",
            "invalid data",
            {"api_name": "data_type", "json_path": f"{path}.data_type"},
        )
    api_name = item.get("api_name") or "_".join(label.split())
    if not isinstance(api_name, str) or not _API_NAME.match(api_name):
        raise FieldError(
            "INVALID_DATA",
            "invalid data",
            {"api_name": "api_name", "json_path": f"{path}.api_name"},
        )
    taken_labels = {definition.label.lower() for definition in fields.values()}
    if api_name in fields or label.lower() in taken_labels:
        raise FieldError(
            "DUPLICATE_DATA",
            "duplicate data",
            {"api_name": api_name, "json_path": f"{path}.field_label"},
        )
    json_type = _TYPES[data_type][0]
    length = _length(item, data_type, index)
    picklist = _options(item, index) if data_type == "picklist" else []
    unique = isinstance(item.get("unique"), dict)
    return FieldDef(
        api_name,
        label,
        data_type,
        json_type,
        length,
        custom=True,
        unique=unique,
        picklist=picklist,
        field_id=field_id,
    )
