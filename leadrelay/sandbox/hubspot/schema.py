"""Contact properties and owners of the emulated HubSpot account, and property value checks.

The defaults follow the contact properties a new portal has (names, types, enumeration options in
their display order), plus the custom properties a leadrelay-ready account carries (group
``leadrelay``):

* ``utm_source`` … ``utm_content``: Single-line text, the raw UTMs of the first captured touch;
* ``leadrelay_key``: Single-line text with unique values, leadrelay's own lead key;
* ``leadrelay_score`` (Number), ``leadrelay_qualification_reason`` (Multi-line text),
  ``leadrelay_tier`` (Dropdown select hot / warm / cold), ``rejection_reason`` (Dropdown select);
* ``leadrelay_landing_page``: Single-line text, the URL of the page of the lead's first
  captured touch;
* ``leadrelay_outcome`` (Single-line text), ``leadrelay_outcome_reason`` (Dropdown select of
  the outcome reasons), ``leadrelay_amount`` (Number): the outcome a CRM reports.

The moment a lead was assigned to its owner is HubSpot's own ``hubspot_owner_assigneddate``
("Owner assigned date", datetime, read only): HubSpot sets it whenever ``hubspot_owner_id`` is
set or changed and clears it with the owner (see ``ContactStore.apply``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from leadrelay.sandbox.hubspot.errors import (
    HubSpotError,
    property_problem,
    validation_error,
)

#: the sandbox portal ("hub") id
SANDBOX_HUB_ID = 24_680_135

PROPERTY_TYPES = {"string", "number", "date", "datetime", "enumeration", "bool", "phone_number"}
FIELD_TYPES = {
    "textarea",
    "text",
    "date",
    "file",
    "number",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "calculation_equation",
    "phonenumber",
    "html",
}

LIFECYCLE_STAGES = [
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
]
LEAD_STATUSES = [
    ("NEW", "New"),
    ("OPEN", "Open"),
    ("IN_PROGRESS", "In Progress"),
    ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"),
    ("ATTEMPTED_TO_CONTACT", "Attempted to Contact"),
    ("CONNECTED", "Connected"),
    ("BAD_TIMING", "Bad Timing"),
]
ANALYTICS_SOURCES = [
    ("ORGANIC_SEARCH", "Organic search"),
    ("PAID_SEARCH", "Paid search"),
    ("EMAIL_MARKETING", "Email marketing"),
    ("SOCIAL_MEDIA", "Organic social"),
    ("REFERRALS", "Referrals"),
    ("OTHER_CAMPAIGNS", "Other campaigns"),
    ("DIRECT_TRAFFIC", "Direct traffic"),
    ("OFFLINE", "Offline sources"),
    ("PAID_SOCIAL", "Paid social"),
]
EMPLOYEE_RANGES = ["1-5", "5-25", "25-50", "50-100", "100-500", "500-1000", "1000+"]

#: properties a read returns when the request names none (HubSpot search/read default set)
DEFAULT_READ_PROPERTIES = [
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
]
#: properties the free-text ``query`` of a search looks in
SEARCHABLE_PROPERTIES = ["firstname", "lastname", "email", "phone", "mobilephone", "company"]

#: HubSpot's "Owner assigned date": set by HubSpot when the owner is set or changed
OWNER_ASSIGNED_DATE = "hubspot_owner_assigneddate"
#: every record id merged into a contact, ``;``-separated (set by HubSpot on a merge)
MERGED_OBJECT_IDS = "hs_merged_object_ids"
#: a contact's other email addresses, ``;``-separated (a merge adds the other record's email)
ADDITIONAL_EMAILS = "hs_additional_emails"

#: epoch 2024-01-01T00:00:00Z in ms, when the seeded definitions were "created"
_SEEDED_AT = "2024-01-01T00:00:00.000Z"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as HubSpot's ISO-8601 ``2024-01-01T00:00:00.000Z``."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_datetime_ms(value: str) -> int | None:
    """Epoch ms from an epoch-ms string, an ISO-8601 datetime or a ``YYYY-MM-DD`` date."""
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


@dataclass
class Owner:
    """A seeded HubSpot user who can own contacts (``hubspot_owner_id``)."""

    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    team: str

    def to_json(self) -> dict[str, Any]:
        """The owner as ``/crm/v3/owners/`` answers it."""
        return {
            "id": self.id,
            "email": self.email,
            "type": "PERSON",
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "createdAt": _SEEDED_AT,
            "updatedAt": _SEEDED_AT,
            "archived": False,
            "teams": [{"id": "9001", "name": self.team, "primary": True}],
        }


SEEDED_OWNERS = [
    Owner("61000001", "alex.rivera@example.com", "Alex", "Rivera", 8_100_001, "Inbound Sales"),
    Owner("61000002", "bea.novak@example.com", "Bea", "Novak", 8_100_002, "Inbound Sales"),
    Owner("61000003", "chidi.okafor@example.com", "Chidi", "Okafor", 8_100_003, "Inbound Sales"),
    Owner("61000004", "dana.lind@example.com", "Dana", "Lind", 8_100_004, "Enterprise Sales"),
]


def _options(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"label": label, "value": value, "displayOrder": order, "hidden": False, "description": ""}
        for order, (value, label) in enumerate(pairs)
    ]


def make_property(
    name: str,
    label: str,
    type_: str = "string",
    field_type: str = "text",
    *,
    group: str = "contactinformation",
    options: list[dict[str, Any]] | None = None,
    read_only: bool = False,
    hubspot_defined: bool = True,
    description: str = "",
    has_unique_value: bool = False,
    external_options: bool = False,
) -> dict[str, Any]:
    """A property definition as the Properties API returns it."""
    definition: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "description": description,
        "groupName": group,
        "options": options or [],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": external_options,
        "hasUniqueValue": has_unique_value,
        "hidden": False,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": read_only,
        },
        "formField": not read_only,
        "dataSensitivity": "non_sensitive",
        "createdAt": _SEEDED_AT,
        "updatedAt": _SEEDED_AT,
        "archived": False,
    }
    if hubspot_defined:
        definition["hubspotDefined"] = True
    else:
        definition["createdUserId"] = str(SEEDED_OWNERS[0].user_id)
    return definition


def hubspot_set_properties(group: str) -> list[dict[str, Any]]:
    """``createdate``, ``hs_lastmodifieddate`` and ``hs_object_id``: what HubSpot sets on every
    record of an object other than contacts (companies, deals), read only."""
    return [
        make_property("createdate", "Create Date", "datetime", "date", group=group, read_only=True),
        make_property(
            "hs_lastmodifieddate",
            "Last Modified Date",
            "datetime",
            "date",
            group=group,
            read_only=True,
        ),
        make_property(
            "hs_object_id",
            "Record ID",
            "number",
            "number",
            group=group,
            read_only=True,
            has_unique_value=True,
        ),
    ]


def legacy_property(definition: dict[str, Any]) -> dict[str, Any]:
    """A v3 property definition in the shape of the legacy properties API (v1/v2): a flat
    object with the read-only flags at the top level and times in epoch milliseconds
    (HubSpot's "Get all contact properties" v1 reference)."""
    metadata = definition.get("modificationMetadata") or {}
    created = parse_datetime_ms(str(definition.get("createdAt") or _SEEDED_AT)) or 0
    updated = parse_datetime_ms(str(definition.get("updatedAt") or _SEEDED_AT)) or created
    read_only_value = bool(metadata.get("readOnlyValue"))
    return {
        "name": definition["name"],
        "label": definition.get("label", ""),
        "description": definition.get("description", ""),
        "groupName": definition.get("groupName", ""),
        "type": definition.get("type", "string"),
        "fieldType": definition.get("fieldType", "text"),
        "options": [
            {
                "label": o.get("label", ""),
                "value": o.get("value", ""),
                "displayOrder": o.get("displayOrder", -1),
                "hidden": bool(o.get("hidden")),
                "description": o.get("description", ""),
                "readOnly": read_only_value,
            }
            for o in definition.get("options") or []
        ],
        "displayOrder": definition.get("displayOrder", -1),
        "readOnlyValue": read_only_value,
        "readOnlyDefinition": bool(metadata.get("readOnlyDefinition")),
        "hidden": bool(definition.get("hidden")),
        "mutableDefinitionNotDeletable": bool(metadata.get("readOnlyDefinition")),
        "calculated": bool(definition.get("calculated")),
        "externalOptions": bool(definition.get("externalOptions")),
        "deleted": False,
        "hubspotDefined": bool(definition.get("hubspotDefined")),
        "formField": bool(definition.get("formField")),
        "hasUniqueValue": bool(definition.get("hasUniqueValue")),
        "createdAt": created,
        "updatedAt": updated,
        "createdUserId": definition.get("createdUserId"),
        "favorited": False,
        "favoritedOrder": -1,
        "displayMode": "current_value",
        "searchableInGlobalSearch": False,
    }


def seeded_owner_options() -> list[dict[str, Any]]:
    """The ``hubspot_owner_id`` options of a fresh sandbox account: one per seeded owner."""
    return [
        {
            "label": f"{o.first_name} {o.last_name} ({o.email})",
            "value": o.id,
            "displayOrder": i,
            "hidden": False,
            "description": "",
        }
        for i, o in enumerate(SEEDED_OWNERS)
    ]


def default_properties() -> dict[str, dict[str, Any]]:
    """The contact properties of a fresh sandbox account, by name."""
    owner_options = seeded_owner_options()
    analytics = "analyticsinformation"
    props = [
        make_property("firstname", "First Name"),
        make_property("lastname", "Last Name"),
        make_property("email", "Email"),
        make_property("phone", "Phone Number", "string", "phonenumber"),
        make_property("mobilephone", "Mobile Phone Number", "string", "phonenumber"),
        make_property("company", "Company Name"),
        make_property("jobtitle", "Job Title"),
        make_property("website", "Website URL"),
        make_property("industry", "Industry"),
        make_property(
            "numemployees",
            "Number of Employees",
            "enumeration",
            "select",
            options=_options([(r, r) for r in EMPLOYEE_RANGES]),
        ),
        make_property("annualrevenue", "Annual Revenue"),
        make_property("city", "City"),
        make_property("state", "State/Region"),
        make_property("zip", "Postal Code"),
        make_property("country", "Country/Region"),
        make_property(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            options=_options(LIFECYCLE_STAGES),
        ),
        make_property(
            "hs_lead_status",
            "Lead Status",
            "enumeration",
            "radio",
            group="sales_properties",
            options=_options(LEAD_STATUSES),
        ),
        # Original source can be edited through the API (facts §1 "Enumerations"); its
        # drill-downs are HubSpot-set and read-only.
        make_property(
            "hs_analytics_source",
            "Original Traffic Source",
            "enumeration",
            "select",
            group=analytics,
            options=_options(ANALYTICS_SOURCES),
        ),
        make_property(
            "hs_analytics_source_data_1",
            "Original Traffic Source Drill-Down 1",
            group=analytics,
            read_only=True,
        ),
        make_property(
            "hs_analytics_source_data_2",
            "Original Traffic Source Drill-Down 2",
            group=analytics,
            read_only=True,
        ),
        make_property(
            "hubspot_owner_id",
            "Contact owner",
            "enumeration",
            "select",
            group="sales_properties",
            options=owner_options,
            external_options=True,
        ),
        # Set by HubSpot whenever hubspot_owner_id is set or changed; read only.
        make_property(
            OWNER_ASSIGNED_DATE,
            "Owner assigned date",
            "datetime",
            "date",
            group="sales_properties",
            read_only=True,
            description="When the record's current owner was assigned (set by HubSpot).",
        ),
        make_property("createdate", "Create Date", "datetime", "date", read_only=True),
        # Set by HubSpot from the first call, e-mail or meeting a sales rep logs; read only.
        make_property(
            "hs_first_outreach_date",
            "First outreach date",
            "datetime",
            "date",
            group="sales_properties",
            read_only=True,
            description=(
                "The date of the first outreach (call, email, meeting or other communication)"
                " from a sales rep to the contact."
            ),
        ),
        make_property("lastmodifieddate", "Last Modified Date", "datetime", "date", read_only=True),
        make_property(
            "hs_object_id", "Record ID", "number", "number", read_only=True, has_unique_value=True
        ),
        make_property(
            MERGED_OBJECT_IDS,
            "Merged Contact IDs",
            "enumeration",
            "checkbox",
            read_only=True,
            description="The list of Contact record IDs that have been merged into this Contact",
        ),
        make_property(
            ADDITIONAL_EMAILS,
            "Additional email addresses",
            "enumeration",
            "checkbox",
            read_only=True,
            description="A set of additional email addresses for a contact",
        ),
    ]
    for part in ("source", "medium", "campaign", "term", "content"):
        props.append(
            make_property(
                f"utm_{part}",
                f"UTM {part}",
                group="leadrelay",
                hubspot_defined=False,
                description=f"Raw utm_{part} of the first captured touch (leadrelay)",
            )
        )
    # The other custom properties leadrelay's default mapping writes (README: custom fields).
    props.append(
        make_property(
            "leadrelay_key",
            "leadrelay key",
            group="leadrelay",
            hubspot_defined=False,
            has_unique_value=True,
            description="leadrelay's own lead key",
        )
    )
    props.append(
        make_property(
            "leadrelay_score",
            "leadrelay score",
            "number",
            "number",
            group="leadrelay",
            hubspot_defined=False,
            description="Lead score 0-100 (fit + intent + engagement)",
        )
    )
    props.append(
        make_property(
            "leadrelay_landing_page",
            "leadrelay landing page",
            group="leadrelay",
            hubspot_defined=False,
            description="URL of the page of the lead's first captured touch (leadrelay)",
        )
    )
    props.append(
        make_property(
            "leadrelay_qualification_reason",
            "leadrelay qualification reason",
            "string",
            "textarea",
            group="leadrelay",
            hubspot_defined=False,
            description="Why the lead is (not) an MQL, with the score's breakdown",
        )
    )
    props.append(
        make_property(
            "leadrelay_tier",
            "leadrelay tier",
            "enumeration",
            "select",
            group="leadrelay",
            hubspot_defined=False,
            options=_options([("hot", "Hot"), ("warm", "Warm"), ("cold", "Cold")]),
            description="Urgency tier set by scoring",
        )
    )
    props.append(
        make_property(
            "rejection_reason",
            "Rejection reason",
            "enumeration",
            "select",
            group="leadrelay",
            hubspot_defined=False,
            options=_options(
                [
                    (value, value.replace("_", " ").capitalize())
                    for value in (
                        "bad_fit",
                        "wrong_role",
                        "no_need",
                        "timing",
                        "no_response",
                        "competitor",
                        "invalid_contact",
                        "duplicate",
                        "existing_customer",
                        "other",
                    )
                ]
            ),
            description="Why sales rejected the lead",
        )
    )
    props.extend(_outcome_properties())
    return {p["name"]: p for p in props}


def _outcome_properties() -> list[dict[str, Any]]:
    """The properties the outcome a CRM reports is written back to (HubSpot as marketing)."""
    reasons = [
        *("price", "product_fit", "relationship", "competitor", "no_budget"),
        *("no_decision", "timing", "product_gap", "other"),
    ]
    return [
        make_property(
            "leadrelay_outcome",
            "leadrelay outcome",
            group="leadrelay",
            hubspot_defined=False,
            description="The stage of the lead's deal in the CRM (leadrelay)",
        ),
        make_property(
            "leadrelay_outcome_reason",
            "leadrelay outcome reason",
            "enumeration",
            "select",
            group="leadrelay",
            hubspot_defined=False,
            options=_options([(r, r.replace("_", " ").capitalize()) for r in reasons]),
            description="Why the lead's deal was won or lost (leadrelay)",
        ),
        make_property(
            "leadrelay_amount",
            "leadrelay amount",
            "number",
            "number",
            group="leadrelay",
            hubspot_defined=False,
            description="The amount of the lead's deal in the CRM (leadrelay)",
        ),
    ]


@dataclass
class Schema:
    """The contact property definitions of the account and the checks HubSpot runs on writes."""

    properties: dict[str, dict[str, Any]] = field(default_factory=default_properties)

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a (not archived) contact property."""
        return name in self.properties

    def stage_rank(self, stage: str) -> int | None:
        """Position of a lifecycle stage in the option order, None when it is not an option."""
        definition = self.properties.get("lifecyclestage")
        if definition is None:
            return None
        for option in definition["options"]:
            if option["value"] == stage:
                return int(option["displayOrder"])
        return None

    def normalise(self, values: Any) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """Check written property values; return them as stored strings plus the problems.

        ``""`` (or null) clears a value. Each problem is one ``{isValid: false, …}`` entry.
        """
        if not isinstance(values, dict):
            raise validation_error("Invalid input JSON: properties must be an object")
        clean: dict[str, str] = {}
        problems: list[dict[str, Any]] = []
        for name, raw in values.items():
            definition = self.properties.get(name)
            if definition is None:
                problems.append(
                    property_problem(
                        name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
                    )
                )
                continue
            if definition["modificationMetadata"]["readOnlyValue"]:
                problems.append(
                    property_problem(
                        name,
                        "READ_ONLY_VALUE",
                        f'"{name}" is a read only property; its value cannot be set.',
                    )
                )
                continue
            try:
                clean[name] = self._value(definition, raw)
            except _BadValue as bad:
                problems.append(property_problem(name, bad.code, bad.message))
        return clean, problems

    def _value(self, definition: dict[str, Any], raw: Any) -> str:
        if raw is None:
            return ""
        if isinstance(raw, bool):
            text = "true" if raw else "false"
        elif isinstance(raw, int | float):
            if isinstance(raw, float) and not math.isfinite(raw):
                raise _BadValue("INVALID_DECIMAL", f"{raw} was not a valid number.")
            text = str(int(raw)) if isinstance(raw, float) and raw.is_integer() else str(raw)
        elif isinstance(raw, str):
            text = raw
        else:
            raise _BadValue(
                "INVALID_PROPERTY_VALUE",
                f"{definition['name']} must be a string, number or boolean, not "
                f"{type(raw).__name__}",
            )
        if text == "":
            return ""
        kind = definition["type"]
        name = definition["name"]
        if name == "email":
            text = text.strip().lower()
            if not _EMAIL.match(text):
                raise _BadValue("INVALID_EMAIL", f"Email address {text} is invalid")
            return text
        if kind == "number":
            try:
                number = float(text)
            except ValueError:
                raise _BadValue("INVALID_DECIMAL", f"{text} was not a valid number.") from None
            if not math.isfinite(number):
                raise _BadValue("INVALID_DECIMAL", f"{text} was not a valid number.")
            return text.strip()
        if kind == "bool":
            if text.lower() not in {"true", "false"}:
                raise _BadValue("INVALID_BOOLEAN", f"{text} was not a valid boolean.")
            return text.lower()
        if kind in {"date", "datetime"}:
            ms = parse_datetime_ms(text)
            if ms is None:
                raise _BadValue("INVALID_DATE", f"{text} was not a valid date or datetime.")
            if kind == "date":
                if ms % 86_400_000:
                    raise _BadValue(
                        "INVALID_DATE", f"{text} is not midnight UTC; date values must be."
                    )
                return iso_ms(ms)[:10]
            return iso_ms(ms)
        if kind == "enumeration":
            allowed = [o["value"] for o in definition["options"] if not o.get("hidden")]
            chosen = text.split(";") if definition["fieldType"] == "checkbox" else [text]
            for value in chosen:
                if value not in allowed:
                    raise _BadValue(
                        "INVALID_OPTION",
                        f"{value} was not one of the allowed options: [{', '.join(allowed)}]",
                    )
            return text
        return text

    def create_property(self, body: Any) -> dict[str, Any]:
        """Validate a PropertyCreate body and add the property; returns its definition."""
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected a property object")
        missing = [
            k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)
        ]
        if missing:
            raise validation_error(
                f"Missing required field(s) for a property: {', '.join(missing)}"
            )
        name = str(body["name"])
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise validation_error(
                f"Property name {name!r} is invalid: use lower-case letters, digits and _ "
                "starting with a letter"
            )
        if name in self.properties:
            raise HubSpotError(
                409, f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS"
            )
        if body["type"] not in PROPERTY_TYPES:
            raise validation_error(
                f"Invalid property type {body['type']!r}; "
                f"allowed: {', '.join(sorted(PROPERTY_TYPES))}"
            )
        if body["fieldType"] not in FIELD_TYPES:
            raise validation_error(
                f"Invalid fieldType {body['fieldType']!r}; "
                f"allowed: {', '.join(sorted(FIELD_TYPES))}"
            )
        options = self._options(body.get("options") or [], body["type"], name)
        definition = make_property(
            name,
            str(body["label"]),
            str(body["type"]),
            str(body["fieldType"]),
            group=str(body["groupName"]),
            options=options,
            hubspot_defined=False,
            description=str(body.get("description") or ""),
            has_unique_value=bool(body.get("hasUniqueValue", False)),
        )
        definition["hidden"] = bool(body.get("hidden", False))
        definition["formField"] = bool(body.get("formField", True))
        if "displayOrder" in body:
            definition["displayOrder"] = _whole(body["displayOrder"], "displayOrder")
        self.properties[name] = definition
        return definition

    def update_property(self, name: str, body: Any) -> dict[str, Any]:
        """Apply a PropertyUpdate (label, description, options, …) to ``name``."""
        definition = self.properties.get(name)
        if definition is None:
            raise _property_not_found(name)
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected a property object")
        if definition.get("hubspotDefined") and "options" in body and name != "lifecyclestage":
            raise validation_error(f"Options of the HubSpot-defined property {name} are fixed")
        for key in ("label", "description", "groupName"):
            if key in body:
                definition[key] = str(body[key])
        for key in ("hidden", "formField"):
            if key in body:
                definition[key] = bool(body[key])
        if "displayOrder" in body:
            definition["displayOrder"] = _whole(body["displayOrder"], "displayOrder")
        if "options" in body:
            definition["options"] = self._options(body["options"], definition["type"], name)
        return definition

    def archive_property(self, name: str) -> None:
        """Archive (delete) a custom property; HubSpot-defined ones cannot be."""
        definition = self.properties.get(name)
        if definition is None:
            raise _property_not_found(name)
        if definition.get("hubspotDefined"):
            raise validation_error(f"Can't archive the HubSpot-defined property {name}")
        del self.properties[name]

    @staticmethod
    def _options(raw: Any, type_: str, name: str) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise validation_error(f"options of {name} must be a list")
        if raw and type_ != "enumeration":
            raise validation_error(f"Only enumeration properties have options ({name})")
        options = []
        for order, item in enumerate(raw):
            if not isinstance(item, dict) or not item.get("value") or not item.get("label"):
                raise validation_error(f"Each option of {name} needs a label and a value")
            options.append(
                {
                    "label": str(item["label"]),
                    "value": str(item["value"]),
                    "displayOrder": _whole(item.get("displayOrder", order), "displayOrder"),
                    "hidden": bool(item.get("hidden", False)),
                    "description": str(item.get("description") or ""),
                }
            )
        return options


def _whole(raw: Any, name: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise validation_error(f"{name} must be a whole number, got {raw!r}")
    try:
        return int(raw)
    except ValueError:
        raise validation_error(f"{name} must be a whole number, got {raw!r}") from None


def _property_not_found(name: str) -> HubSpotError:
    return HubSpotError(
        404, f"Unable to find property {name} for object type contacts", "OBJECT_NOT_FOUND"
    )


class _BadValue(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
