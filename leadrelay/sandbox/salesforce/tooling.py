"""The Tooling API's CustomField create, as an org answers it (``check --create-fields``).

``POST /services/data/vXX.X/tooling/sobjects/CustomField`` with ``FullName``
(``Object.Name__c``) and ``Metadata`` {``type``, ``label``, ``length`` | ``precision``,
``scale`` | ``valueSet``, ``unique``, ``externalId``}. The field is then in describe (last),
writable and queryable. A name the object already has is refused with 400
DUPLICATE_DEVELOPER_NAME; a malformed body with 400 INVALID_INPUT / FIELD_INTEGRITY_EXCEPTION.
"""

from __future__ import annotations

import re
from typing import Any

from leadrelay.sandbox.salesforce.schema import FieldDef, PicklistValue, SObjectDef

__all__ = ["ToolingError", "field_from_metadata", "split_full_name"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*__c$")


class ToolingError(Exception):
    """A refused create: HTTP status, Salesforce errorCode and message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def split_full_name(full_name: Any) -> tuple[str, str]:
    """``Lead.UTM_Source__c`` -> (``Lead``, ``UTM_Source__c``)."""
    if not isinstance(full_name, str) or "." not in full_name:
        raise ToolingError("INVALID_INPUT", "FullName must be Object.Field__c")
    sobject, _, name = full_name.partition(".")
    if not _NAME.match(name) or "__" in name[:-3]:
        raise ToolingError(
            "FIELD_INTEGRITY_EXCEPTION",
            f"{name!r}: a custom field name starts with a letter, uses letters, digits and "
            "single underscores, and ends with __c",
        )
    return sobject, name


def _int(metadata: dict[str, Any], key: str, low: int, high: int) -> int:
    value = metadata.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ToolingError(
            "FIELD_INTEGRITY_EXCEPTION", f"{key} must be a whole number from {low} to {high}"
        )
    return value


def _picklist(metadata: dict[str, Any]) -> tuple[list[PicklistValue], bool]:
    value_set = metadata.get("valueSet")
    definition = value_set.get("valueSetDefinition") if isinstance(value_set, dict) else None
    values = definition.get("value") if isinstance(definition, dict) else None
    if not isinstance(values, list) or not values:
        raise ToolingError(
            "FIELD_INTEGRITY_EXCEPTION", "a Picklist needs valueSet.valueSetDefinition.value"
        )
    entries: list[PicklistValue] = []
    for item in values:
        name = item.get("fullName") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ToolingError("FIELD_INTEGRITY_EXCEPTION", "a picklist value needs a fullName")
        if any(entry.value == name for entry in entries):
            raise ToolingError("DUPLICATE_VALUE", f"duplicate picklist value: {name}")
        entries.append(
            PicklistValue(name, str(item.get("label") or name), bool(item.get("default")))
        )
    assert isinstance(value_set, dict)
    return entries, bool(value_set.get("restricted"))


def field_from_metadata(sobject: SObjectDef, name: str, metadata: Any) -> FieldDef:
    """The :class:`FieldDef` a CustomField create adds to ``sobject``."""
    if not isinstance(metadata, dict):
        raise ToolingError("INVALID_INPUT", "Metadata is required")
    if sobject.field(name) is not None:
        raise ToolingError(
            "DUPLICATE_DEVELOPER_NAME",
            f"There is already a field named {name[:-3]} on {sobject.name}.",
        )
    label = metadata.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ToolingError("FIELD_INTEGRITY_EXCEPTION", "Metadata.label is required")
    kind = metadata.get("type")
    common: dict[str, Any] = {
        "custom": True,
        "unique": bool(metadata.get("unique")),
        "external_id": bool(metadata.get("externalId")),
    }
    if kind == "Text":
        return FieldDef(name, label, "string", _int(metadata, "length", 1, 255), **common)
    if kind == "TextArea":
        return FieldDef(name, label, "textarea", 255, **common)
    if kind == "Url":
        return FieldDef(name, label, "url", 255, **common)
    if kind == "Email":
        return FieldDef(name, label, "email", 80, **common)
    if kind == "DateTime":
        return FieldDef(name, label, "datetime", **common)
    if kind == "Checkbox":
        return FieldDef(name, label, "boolean", nillable=False, defaulted_on_create=True)
    if kind == "Number":
        precision = _int(metadata, "precision", 1, 18)
        scale = _int(metadata, "scale", 0, precision)
        return FieldDef(name, label, "double", precision=precision, scale=scale, **common)
    if kind == "Picklist":
        entries, restricted = _picklist(metadata)
        return FieldDef(
            name, label, "picklist", 255, picklist=entries, restricted=restricted, custom=True
        )
    raise ToolingError("FIELD_INTEGRITY_EXCEPTION", f"unsupported field type: {kind!r}")
