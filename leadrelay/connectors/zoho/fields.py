"""Custom Leads fields through Zoho's Fields API (``check --create-fields``).

``POST /crm/v7/settings/fields?module=Leads`` with ``{"fields": [{field_label, data_type,
length, pick_list_values …}]}`` (Zoho CRM API, "Create Custom Fields"; at most five a call,
scope ``ZohoCRM.settings.fields.CREATE``). Zoho derives a new field's API name from its label
(spaces become ``_``), so the label is the wanted API name spelt with spaces and ``api_name``
is sent with it.
"""

from __future__ import annotations

from typing import Any

from leadrelay.connectors.customfields import CustomFieldSpec

__all__ = ["custom_field_body", "label_of"]

_TYPES = {
    "text": "text",
    "textarea": "textarea",
    "number": "double",
    "picklist": "picklist",
    "datetime": "datetime",
    "url": "website",
}


def label_of(api_name: str) -> str:
    """The label whose derived API name is ``api_name`` (``UTM_Source`` -> ``UTM Source``)."""
    return api_name.replace("_", " ")


def custom_field_body(spec: CustomFieldSpec) -> dict[str, Any]:
    """One element of the ``fields`` array that creates ``spec``."""
    body: dict[str, Any] = {
        "api_name": spec.name,
        "field_label": label_of(spec.name),
        "data_type": _TYPES[spec.kind],
        "tooltip": {"name": "static_text", "value": spec.description[:255]},
    }
    if spec.kind in ("text", "url"):
        body["length"] = spec.length or 255
    if spec.kind == "textarea":
        body["textarea"] = {"type": "small"}
    if spec.kind == "number":
        body["length"] = spec.precision or 16
        body["decimal_place"] = spec.scale or 0
    if spec.kind == "picklist":
        body["pick_list_values"] = [
            {"display_value": value, "actual_value": value} for value in spec.options
        ]
    if spec.unique:
        body["unique"] = {"casesensitive": False}
    return body
