"""HubSpot contact property names the connector relies on, and the custom ones it can create.

The custom properties (raw UTMs, the lead key, the score, the rejection reason, the landing page,
the outcome written back from a CRM) are named by the shipped mapping
``leadrelay/mappings/hubspot.toml``; :func:`custom_property_specs` reads their names from it so
a renamed mapping field is created under its new name.

Deal properties are read as ``deal.<name>`` (:data:`DEAL_PREFIX`): a mapping naming one makes
the connector read the contact's deal (see :mod:`leadrelay.connectors.hubspot.deals`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from leadrelay.connectors.shipped import (
    entry_system_fields,
    shipped_mapping,
    shipped_mapping_fields,
)
from leadrelay.model import OutcomeReason, RejectionReason, Tier

__all__ = [
    "ADDITIONAL_EMAILS",
    "CREATED",
    "DEAL_PREFIX",
    "DEAL_REQUIRED_READ",
    "EMAIL",
    "LAST_MODIFIED",
    "LEAD_STATUS",
    "LIFECYCLE_STAGE",
    "MERGED_IDS",
    "OWNER",
    "RECORD_ID",
    "REQUIRED_READ",
    "PropertySpec",
    "custom_property_specs",
    "default_read_properties",
]

#: The natural key: contacts upsert by it (``idProperty=email``).
EMAIL = "email"
#: The record id as a property (numeric, unique).
RECORD_ID = "hs_object_id"
#: When HubSpot last changed the record (datetime; drives incremental reads).
LAST_MODIFIED = "lastmodifieddate"
CREATED = "createdate"
#: Every record id merged into a contact, ``;``-separated (HubSpot sets it on a merge).
MERGED_IDS = "hs_merged_object_ids"
#: A contact's other emails, ``;``-separated (a merge keeps the merged record's email here).
ADDITIONAL_EMAILS = "hs_additional_emails"
#: Forward-only enumeration (facts §1 "Enumerations and business rules").
LIFECYCLE_STAGE = "lifecyclestage"
LEAD_STATUS = "hs_lead_status"
OWNER = "hubspot_owner_id"

#: Read with every record whatever the caller asks for: the key, the id and the change time.
REQUIRED_READ: tuple[str, ...] = (
    EMAIL,
    RECORD_ID,
    LAST_MODIFIED,
    CREATED,
    MERGED_IDS,
    ADDITIONAL_EMAILS,
)

#: How a contact record names the properties of its deal: ``deal.dealstage``, ``deal.amount``.
DEAL_PREFIX = "deal."
#: Deal properties read whatever the mapping names: the id, the change time (incremental reads)
#: and what the deal of a contact is chosen by (created, closed, won).
DEAL_REQUIRED_READ: tuple[str, ...] = (
    "hs_object_id",
    "hs_lastmodifieddate",
    "createdate",
    "closedate",
    "hs_is_closed",
    "hs_is_closed_won",
)

#: The property group custom properties are created in (it exists in every portal).
CUSTOM_GROUP = "contactinformation"

_UTM_PARTS = ("source", "medium", "campaign", "term", "content")

#: What is read when the shipped mapping cannot be loaded.
_FALLBACK_READ: tuple[str, ...] = (
    "firstname",
    "lastname",
    "phone",
    "company",
    "jobtitle",
    LIFECYCLE_STAGE,
    LEAD_STATUS,
    OWNER,
    *(f"utm_{part}" for part in _UTM_PARTS),
)


@dataclass(frozen=True)
class PropertySpec:
    """A custom contact property to create (Properties API ``PropertyCreate``).

    Attributes:
        name: the internal name (lower-case, digits, ``_``).
        label: the label users see.
        type: ``string``, ``number``, ``enumeration`` …
        field_type: ``text``, ``number``, ``select`` …
        options: the option values of an enumeration (labels are the values).
        unique: HubSpot enforces unique values.
        description: shown in HubSpot's property settings.
    """

    name: str
    label: str
    type: str = "string"
    field_type: str = "text"
    options: tuple[str, ...] = ()
    unique: bool = False
    description: str = ""

    def to_body(self) -> dict[str, Any]:
        """The ``PropertyCreate`` JSON body."""
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": CUSTOM_GROUP,
            "description": self.description or f"{self.label} (leadrelay)",
        }
        if self.options:
            body["options"] = [
                {"label": value.replace("_", " ").capitalize(), "value": value, "displayOrder": i}
                for i, value in enumerate(self.options)
            ]
        if self.unique:
            body["hasUniqueValue"] = True
        return body


def _shipped_mapping() -> Mapping[str, Any]:
    """The ``[fields]`` table of the shipped HubSpot mapping, or {} when it cannot be read."""
    fields = shipped_mapping("hubspot").get("fields")
    return fields if isinstance(fields, dict) else {}


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def default_read_properties() -> list[str]:
    """Every property the shipped mapping names, plus :data:`REQUIRED_READ`."""
    names = shipped_mapping_fields("hubspot")
    return _unique([*REQUIRED_READ, *(names or _FALLBACK_READ)])


def _mapped_name(fields: Mapping[str, Any], canonical: str, default: str) -> str:
    names = entry_system_fields(fields.get(canonical))
    return names[0] if names else default


def _mapped_options(spec: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    """The option values a mapping's value map writes (``default`` when it has none)."""
    if isinstance(spec, dict) and isinstance(spec.get("values"), dict):
        mapped = tuple(str(v) for v in spec["values"].values() if isinstance(v, str) and v)
        if mapped:
            return tuple(dict.fromkeys(mapped))
    return default


def custom_property_specs() -> list[PropertySpec]:
    """The custom properties leadrelay writes: utm_*, the lead key, rejection reason, score,
    qualification reason, tier, landing page and the outcome (its stage, reason and amount).

    Names (and the option values of the rejection reason and the tier) come from the shipped
    mapping when it names them; otherwise the documented defaults are used.
    """
    fields = _shipped_mapping()
    specs = [
        PropertySpec(
            _mapped_name(fields, f"utm_{part}", f"utm_{part}"),
            f"UTM {part}",
            description=f"Raw utm_{part} of the first captured touch (leadrelay)",
        )
        for part in _UTM_PARTS
    ]
    specs.append(
        PropertySpec(
            _mapped_name(fields, "key", "leadrelay_key"),
            "leadrelay key",
            unique=True,
            description="The lead's key in leadrelay (leadrelay)",
        )
    )
    specs.append(
        PropertySpec(
            _mapped_name(fields, "rejection_reason", "rejection_reason"),
            "Rejection reason",
            "enumeration",
            "select",
            options=_mapped_options(
                fields.get("rejection_reason"), tuple(r.value for r in RejectionReason)
            ),
            description="Why sales rejected the lead (leadrelay)",
        )
    )
    specs.append(
        PropertySpec(
            _mapped_name(fields, "score", "leadrelay_score"),
            "leadrelay score",
            "number",
            "number",
            description="The lead score computed by leadrelay (leadrelay)",
        )
    )
    specs.append(
        PropertySpec(
            _mapped_name(fields, "qualification_reason", "leadrelay_qualification_reason"),
            "leadrelay qualification reason",
            field_type="textarea",
            description="Why the lead is or is not an MQL, with its score breakdown (leadrelay)",
        )
    )
    specs.append(
        PropertySpec(
            _mapped_name(fields, "tier", "leadrelay_tier"),
            "leadrelay tier",
            "enumeration",
            "select",
            options=_mapped_options(fields.get("tier"), tuple(t.value for t in Tier)),
            description="The lead's urgency tier: hot, warm or cold (leadrelay)",
        )
    )
    specs.append(
        PropertySpec(
            _mapped_name(fields, "landing_page", "leadrelay_landing_page"),
            "leadrelay landing page",
            description="URL of the page of the lead's first captured touch (leadrelay)",
        )
    )
    specs.extend(_outcome_specs(fields))
    return specs


def _outcome_specs(fields: Mapping[str, Any]) -> list[PropertySpec]:
    """The properties the outcome a CRM reports is written back to (HubSpot as marketing)."""
    return [
        PropertySpec(
            _mapped_name(fields, "opportunity_stage", "leadrelay_outcome"),
            "leadrelay outcome",
            description="The stage of the lead's deal in the CRM, e.g. Closed Won (leadrelay)",
        ),
        PropertySpec(
            _mapped_name(fields, "outcome_reason", "leadrelay_outcome_reason"),
            "leadrelay outcome reason",
            "enumeration",
            "select",
            options=_mapped_options(
                fields.get("outcome_reason"), tuple(r.value for r in OutcomeReason)
            ),
            description="Why the lead's deal was won or lost (leadrelay)",
        ),
        PropertySpec(
            _mapped_name(fields, "amount", "leadrelay_amount"),
            "leadrelay amount",
            "number",
            "number",
            description="The amount of the lead's deal in the CRM (leadrelay)",
        ),
    ]
