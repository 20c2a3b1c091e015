"""What the Salesforce connector and its Bulk API module both say about a record: the system
name, and the refusal of a Lead whose e-mail belongs to an existing customer (a Contact, or a
Lead converted into one). Kept apart so that neither module imports the other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leadrelay.connectors.base import UpsertInput, WriteResult
from leadrelay.connectors.errors import Rejected

__all__ = ["CONVERTED_LEAD", "EXISTING_CONTACT", "SYSTEM", "customer_result", "is_customer"]

SYSTEM = "salesforce"

#: Salesforce's answer to a write to a converted Lead (read-only since its conversion): not a
#: failure for leadrelay, which never means to write one.
CONVERTED_LEAD = "CANNOT_UPDATE_CONVERTED_LEAD"

#: The error code of a Lead not created because its e-mail is an existing customer's.
EXISTING_CONTACT = "EXISTING_CONTACT"


def is_customer(row: Mapping[str, Any]) -> bool:
    """True for a Contact, or a Lead already converted into one."""
    attributes = row.get("attributes")
    kind = attributes.get("type") if isinstance(attributes, Mapping) else None
    return kind == "Contact" or bool(row.get("IsConverted"))


def customer_result(item: UpsertInput, row: Mapping[str, Any]) -> WriteResult:
    """The refusal of ``item``: its e-mail belongs to the customer ``row``."""
    contact_id = str(row.get("ConvertedContactId") or row.get("Id"))
    return WriteResult.failed(
        item.ref,
        Rejected(
            f"the email belongs to the existing Contact {contact_id}; no Lead was created",
            system=SYSTEM,
            record=item.ref,
            field="Email",
            code=EXISTING_CONTACT,
        ),
        contact_id,
    )
