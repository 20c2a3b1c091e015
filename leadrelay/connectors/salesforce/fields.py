"""Custom Lead fields through the Tooling API (``check --create-fields``).

``POST /services/data/vXX.X/tooling/sobjects/CustomField`` with ``FullName`` ``Lead.Name__c``
and ``Metadata`` (``type``, ``label``, ``length`` / ``precision`` and ``scale`` /
``valueSet``), as Salesforce's Tooling API reference documents the CustomField object. The
integration user needs the "Customize Application" permission. Field-level security is a
separate step: a field made through the API is not yet readable or editable by the integration
user's profile until an admin grants it (Setup, or a permission set), and until then the
user's describe() does not list it.
"""

from __future__ import annotations

from typing import Any

from leadrelay.connectors.customfields import CustomFieldSpec

__all__ = ["DUPLICATE_CODE", "TOOLING_PATH", "custom_field_body"]

#: simple-salesforce's ``restful`` path, relative to ``/services/data/vXX.X/``.
TOOLING_PATH = "tooling/sobjects/CustomField"
#: The errorCode of a CustomField whose developer name the object already has.
DUPLICATE_CODE = "DUPLICATE_DEVELOPER_NAME"

_TYPES = {
    "text": "Text",
    "textarea": "TextArea",
    "number": "Number",
    "picklist": "Picklist",
    "datetime": "DateTime",
    "url": "Url",
}


def custom_field_body(spec: CustomFieldSpec, sobject: str = "Lead") -> dict[str, Any]:
    """The Tooling API ``CustomField`` create body of ``spec`` on ``sobject``."""
    metadata: dict[str, Any] = {
        "type": _TYPES[spec.kind],
        "label": spec.label,
        "description": spec.description,
    }
    if spec.kind == "text":
        metadata["length"] = spec.length or 255
    if spec.kind == "number":
        metadata["precision"] = spec.precision or 18
        metadata["scale"] = spec.scale or 0
    if spec.kind == "picklist":
        metadata["valueSet"] = {
            "restricted": True,
            "valueSetDefinition": {
                "sorted": False,
                "value": [
                    {"fullName": value, "label": value, "default": False} for value in spec.options
                ],
            },
        }
    if spec.unique:
        metadata["unique"] = True
    if spec.external_id:
        metadata["externalId"] = True
    return {"FullName": f"{sobject}.{spec.name}", "Metadata": metadata}
