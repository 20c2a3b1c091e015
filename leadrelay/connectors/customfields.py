"""The custom fields a mapping needs in Salesforce or Zoho, as ``check --create-fields`` makes them.

A mapping names its system fields; the ones leadrelay itself adds to a CRM (the raw UTMs, the
lead key, the score, its reason and tier, the rejection reason, the landing page and the three
SLA date-times) are described here by their canonical name, so a renamed mapping field is
created under its new name and a picklist gets the values the mapping writes and reads.
Each connector turns a :class:`CustomFieldSpec` into its own API's body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from leadrelay.mappings.engine import FieldSpec, Mapping

__all__ = ["CustomFieldSpec", "FieldCreator", "FieldKind", "custom_field_specs"]

FieldKind = Literal["text", "textarea", "number", "picklist", "datetime", "url"]


@dataclass(frozen=True)
class CustomFieldSpec:
    """One custom field to create.

    Attributes:
        name: the field's API name in the system (``UTM_Source__c``, ``UTM_Source``).
        label: the label users see.
        kind: what it holds; each connector names the system's type for it.
        length: characters of a text, text area or URL field.
        precision, scale: digits of a number, and of them after the decimal point.
        options: the values of a picklist, in order.
        unique: the system refuses a second record with the same value.
        external_id: Salesforce indexes it for upserts (the lead key).
        description: shown in the system's field settings.
    """

    name: str
    label: str
    kind: FieldKind
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    options: tuple[str, ...] = ()
    unique: bool = False
    external_id: bool = False
    description: str = ""


@dataclass(frozen=True)
class _Shape:
    label: str
    kind: FieldKind
    description: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    unique: bool = False


_TEXT = 255
#: canonical field -> how leadrelay's custom field for it is made (the mapping files' comments).
_SHAPES: dict[str, _Shape] = {
    **{
        f"utm_{part}": _Shape(
            f"UTM {part.capitalize()}", "text", f"Raw utm_{part} of the first touch", _TEXT
        )
        for part in ("source", "medium", "campaign", "term", "content")
    },
    "key": _Shape("LeadRelay Key", "text", "The lead's key in leadrelay", _TEXT, unique=True),
    "score": _Shape("Lead Score", "number", "The lead score computed by leadrelay", None, 5, 1),
    "qualification_reason": _Shape(
        "Qualification Reason", "textarea", "Why the lead is or is not an MQL", _TEXT
    ),
    "tier": _Shape("Lead Tier", "picklist", "The lead's urgency tier"),
    "rejection_reason": _Shape("Rejection Reason", "picklist", "Why sales rejected the lead"),
    "outcome_reason": _Shape("Outcome Reason", "picklist", "Why the deal was won or lost"),
    "opportunity_stage": _Shape("Outcome", "text", "The deal's stage in the CRM", _TEXT),
    "amount": _Shape("Deal Amount", "number", "The amount of the lead's deal", None, 16, 2),
    "landing_page": _Shape("Landing Page", "url", "The landing page of the first touch", _TEXT),
    "assigned_at": _Shape("Assigned At", "datetime", "When leadrelay routed the lead"),
    "first_action_at": _Shape("First Action At", "datetime", "Sales' first action (a Flow)"),
    "accepted_at": _Shape("Accepted At", "datetime", "When sales accepted the lead (a Flow)"),
}


def _options(spec: FieldSpec) -> tuple[str, ...]:
    """The values a picklist needs: every value the mapping writes, then the ones it reads."""
    written = sorted(spec.written_values().get(spec.system_field, set()))
    ordered = [str(t) for t in spec.values.values() if not isinstance(t, dict)]
    read = [value for value in spec.values_in if value != "*"]
    return tuple(dict.fromkeys(v for v in (*ordered, *written, *read) if v))


def custom_field_specs(mapping: Mapping) -> list[CustomFieldSpec]:
    """The custom fields ``mapping`` names, in the order of :data:`_SHAPES`. A field read from
    alternatives (Salesforce's win and loss reasons) gives one per alternative, each labelled
    by its own name."""
    specs: list[CustomFieldSpec] = []
    for canonical, shape in _SHAPES.items():
        fmap = mapping.fields.get(canonical)
        if fmap is None:
            continue
        for spec in fmap.specs:
            specs.append(
                CustomFieldSpec(
                    name=spec.system_field,
                    label=shape.label if len(fmap.specs) == 1 else _label(spec.system_field),
                    kind=shape.kind,
                    length=shape.length,
                    precision=shape.precision,
                    scale=shape.scale,
                    options=_options(spec) if shape.kind == "picklist" else (),
                    unique=shape.unique,
                    external_id=shape.unique,
                    description=f"{shape.description} (leadrelay)",
                )
            )
    return specs


def _label(system_field: str) -> str:
    """A label from an API name: ``ConvertedOpportunity.Win_Reason__c`` -> ``Win Reason``."""
    name = system_field.rpartition(".")[2].removesuffix("__c")
    return name.replace("_", " ").strip() or system_field


@runtime_checkable
class FieldCreator(Protocol):
    """A connector that creates custom fields through its system's API."""

    def create_fields(self, specs: Sequence[CustomFieldSpec]) -> list[str]:
        """Create the fields of ``specs`` the object lacks; return the names created."""
        ...
