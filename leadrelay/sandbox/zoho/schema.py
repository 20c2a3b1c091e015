"""The Zoho CRM sandbox's field definitions, pick lists, seeded users and value checks.

Field metadata follows ``GET /crm/v7/settings/fields?module=Leads``: ``api_name``,
``field_label``, ``data_type``, ``json_type``, ``length``, ``system_mandatory``, ``read_only``,
``custom_field``, ``unique`` and ``pick_list_values``.

The Leads module of the org set up for leadrelay has the standard fields plus leadrelay's custom
fields: the UTM fields, the ``Rejection_Reason`` pick list, the unique ``LeadRelay_Key``, the
score, reason and tier, the ``First_Action_At`` / ``Accepted_At`` date-times the org's workflow
rules stamp, ``Landing_Page`` (URL, 255: the landing page of the lead's first captured touch)
and ``Assigned_At`` (date-time: written by leadrelay when it routes the lead). The Accounts and
Tasks modules (:mod:`leadrelay.sandbox.zoho.modules`) have their standard fields only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

#: Default Lead_Status values of a new Zoho org (crm-api-facts §3).
LEAD_STATUS_VALUES = (
    "-None-",
    "Attempted to Contact",
    "Contact in Future",
    "Contacted",
    "Junk Lead",
    "Lost Lead",
    "Not Contacted",
    "Pre-Qualified",
    "Not Qualified",
)
#: Default Lead_Source values of a new Zoho org (crm-api-facts §3).
LEAD_SOURCE_VALUES = (
    "-None-",
    "Advertisement",
    "Cold Call",
    "Employee Referral",
    "External Referral",
    "Online Store",
    "Partner",
    "Public Relations",
    "Sales Email Alias",
    "Seminar Partner",
    "Internal Seminar",
    "Trade Show",
    "Web Download",
    "Web Research",
    "Chat",
)
INDUSTRY_VALUES = (
    "-None-",
    "ASP (Application Service Provider)",
    "Data/Telecom OEM",
    "ERP (Enterprise Resource Planning)",
    "Government/Military",
    "Large Enterprise",
    "Management ISV",
    "MSP (Management Service Provider)",
    "Network Equipment Enterprise",
    "Non-management ISV",
    "Optical Networking",
    "Service Provider",
    "Small/Medium Enterprise",
    "Storage Equipment",
    "Storage Service Provider",
    "Systems Integrator",
    "Wireless Industry",
)
#: The custom pick list an org set up for leadrelay holds every value its default mapping writes.
REJECTION_REASON_VALUES = (
    "-None-",
    "Not a fit",
    "Wrong Role",
    "No Need",
    "Bad Timing",
    "No budget",
    "Duplicate",
    "Spam",
    "Unreachable",
    "Competitor",
    "Existing Customer",
    "Other",
)

#: Data types whose values are JSON strings.
STRING_TYPES = frozenset({"text", "textarea", "email", "phone", "website", "picklist"})
#: Data types the search ``starts_with`` and COQL ``like`` operators apply to.
TEXT_TYPES = STRING_TYPES
NUMBER_TYPES = frozenset({"integer", "double", "currency"})

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,22}$")
_WEBSITE = re.compile(r"^(https?://|ftp://)?[^\s/$.?#][^\s]*\.[^\s]+$", re.IGNORECASE)
_PHONE = re.compile(r"^\+?[0-9A-Za-z ().\-#;,]{1,30}$")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class FieldDef:
    """One field of the Leads module, as the fields metadata API lists it."""

    api_name: str
    label: str
    data_type: str
    json_type: str
    length: int | None = None
    mandatory: bool = False
    read_only: bool = False
    custom: bool = False
    unique: bool = False
    picklist: list[str] = field(default_factory=list)
    field_id: str = ""
    #: a system pick list that refuses a value it does not list (Tasks' Status / Priority)
    restricted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The field as ``settings/fields`` answers it."""
        body: dict[str, Any] = {
            "api_name": self.api_name,
            "field_label": self.label,
            "display_label": self.label,
            "data_type": self.data_type,
            "json_type": self.json_type,
            "length": self.length,
            "system_mandatory": self.mandatory,
            "read_only": self.read_only,
            "field_read_only": self.read_only,
            "custom_field": self.custom,
            "visible": True,
            "unique": {"casesensitive": False} if self.unique else {},
            "id": self.field_id,
            "pick_list_values": [
                {
                    "display_value": value,
                    "actual_value": value,
                    "id": f"{self.field_id[:-3]}{index + 100:03d}",
                    "sequence_number": index + 1,
                    "type": "used",
                }
                for index, value in enumerate(self.picklist)
            ],
        }
        return body


def _text(api: str, label: str, length: int = 255, **kw: Any) -> FieldDef:
    return FieldDef(api, label, "text", "string", length, **kw)


def default_fields() -> dict[str, FieldDef]:
    """A fresh set of the Leads fields of a new org plus leadrelay's custom fields."""
    fields = [
        FieldDef("Owner", "Lead Owner", "ownerlookup", "jsonobject"),
        _text("First_Name", "First Name", 40),
        _text("Last_Name", "Last Name", 80, mandatory=True),
        FieldDef("Email", "Email", "email", "string", 100),
        FieldDef("Secondary_Email", "Secondary Email", "email", "string", 100),
        FieldDef("Phone", "Phone", "phone", "string", 30),
        FieldDef("Mobile", "Mobile", "phone", "string", 30),
        _text("Company", "Company", 200),
        _text("Designation", "Title", 100),
        FieldDef("Website", "Website", "website", "string", 255),
        FieldDef("Industry", "Industry", "picklist", "string", 120, picklist=[*INDUSTRY_VALUES]),
        FieldDef("No_of_Employees", "No. of Employees", "integer", "integer", 9),
        FieldDef("Annual_Revenue", "Annual Revenue", "currency", "double", 16),
        _text("Street", "Street", 250),
        _text("City", "City", 100),
        _text("State", "State", 100),
        _text("Zip_Code", "Zip Code", 30),
        _text("Country", "Country", 100),
        FieldDef(
            "Lead_Source", "Lead Source", "picklist", "string", 120, picklist=[*LEAD_SOURCE_VALUES]
        ),
        FieldDef(
            "Lead_Status", "Lead Status", "picklist", "string", 120, picklist=[*LEAD_STATUS_VALUES]
        ),
        FieldDef("Email_Opt_Out", "Email Opt Out", "boolean", "boolean"),
        FieldDef("Description", "Description", "textarea", "string", 32000),
        _text("UTM_Source", "UTM Source", custom=True),
        _text("UTM_Medium", "UTM Medium", custom=True),
        _text("UTM_Campaign", "UTM Campaign", custom=True),
        _text("UTM_Term", "UTM Term", custom=True),
        _text("UTM_Content", "UTM Content", custom=True),
        FieldDef(
            "Rejection_Reason",
            "Rejection Reason",
            "picklist",
            "string",
            120,
            custom=True,
            picklist=[*REJECTION_REASON_VALUES],
        ),
        _text("LeadRelay_Key", "LeadRelay Key", custom=True, unique=True),
        FieldDef("Lead_Score", "Lead Score", "double", "double", 16, custom=True),
        FieldDef(
            "Qualification_Reason",
            "Qualification Reason",
            "textarea",
            "string",
            2000,
            custom=True,
        ),
        FieldDef(
            "Lead_Tier",
            "Lead Tier",
            "picklist",
            "string",
            120,
            custom=True,
            picklist=["-None-", "Hot", "Warm", "Cold"],
        ),
        FieldDef("Created_By", "Created By", "ownerlookup", "jsonobject", read_only=True),
        FieldDef("Modified_By", "Modified By", "ownerlookup", "jsonobject", read_only=True),
        FieldDef("Created_Time", "Created Time", "datetime", "string", read_only=True),
        FieldDef("Modified_Time", "Modified Time", "datetime", "string", read_only=True),
        # Sales' SLA stamps, set by the org's workflow rules (README: custom fields); listed
        # last so the other fields keep their ids.
        FieldDef("First_Action_At", "First Action At", "datetime", "string", custom=True),
        FieldDef("Accepted_At", "Accepted At", "datetime", "string", custom=True),
        # Written by leadrelay's handoff: the first touch's landing page and the routing time.
        FieldDef("Landing_Page", "Landing Page", "website", "string", 255, custom=True),
        FieldDef("Assigned_At", "Assigned At", "datetime", "string", custom=True),
        # Set by Convert Lead (read only): whether the Lead was converted, when, and the
        # records it became. Unverified: these API names come from public client code reading
        # converted Leads (``Converted__s``, ``Converted_Date_Time``, ``Converted_Account`` /
        # ``_Contact`` / ``_Deal`` lookups), not from Zoho's field reference.
        FieldDef("Converted__s", "Is Converted", "boolean", "boolean", read_only=True),
        FieldDef(
            "Converted_Date_Time", "Converted Date Time", "datetime", "string", read_only=True
        ),
        FieldDef("Converted_Account", "Converted Account", "lookup", "jsonobject", read_only=True),
        FieldDef("Converted_Contact", "Converted Contact", "lookup", "jsonobject", read_only=True),
        FieldDef("Converted_Deal", "Converted Deal", "lookup", "jsonobject", read_only=True),
    ]
    for index, definition in enumerate(fields):
        definition.field_id = str(5725767000000002500 + index * 7)
    return {definition.api_name: definition for definition in fields}


#: Fields an admin cannot delete in Zoho (system fields); the sandbox refuses to remove them.
UNDELETABLE = frozenset(
    {
        "Owner",
        "Last_Name",
        "Created_By",
        "Modified_By",
        "Created_Time",
        "Modified_Time",
        "Converted__s",
        "Converted_Date_Time",
        "Converted_Account",
        "Converted_Contact",
        "Converted_Deal",
    }
)


@dataclass(frozen=True)
class User:
    """A seeded CRM user (``GET /crm/v7/users``)."""

    id: str
    first_name: str
    last_name: str
    email: str
    role: str
    profile: str
    status: str = "active"

    @property
    def full_name(self) -> str:
        """First and last name, as Zoho's ``full_name``."""
        return f"{self.first_name} {self.last_name}"

    def lookup(self) -> dict[str, str]:
        """The user as an owner lookup value on a record."""
        return {"name": self.full_name, "id": self.id, "email": self.email}

    def to_json(self) -> dict[str, Any]:
        """The user as the users API answers it."""
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "full_name": self.full_name,
            "email": self.email,
            "status": self.status,
            "role": {"name": self.role, "id": _role_ids[self.role]},
            "profile": {"name": self.profile, "id": _profile_ids[self.profile]},
            "confirm": True,
            "time_zone": "Etc/UTC",
            "country_locale": "en_US",
        }


_role_ids = {"CEO": "5725767000000026005", "Manager": "5725767000000026008"}
_profile_ids = {"Administrator": "5725767000000026011", "Standard": "5725767000000026014"}

SEEDED_USERS = (
    User(
        "5725767000000411001", "Ada", "Okafor", "ada.okafor@sandbox.example", "CEO", "Administrator"
    ),
    User(
        "5725767000000411002", "Bruno", "Lima", "bruno.lima@sandbox.example", "Manager", "Standard"
    ),
    User("5725767000000411003", "Chen", "Wei", "chen.wei@sandbox.example", "Manager", "Standard"),
    User(
        "5725767000000411004",
        "Dana",
        "Kowalski",
        "dana.kowalski@sandbox.example",
        "Manager",
        "Standard",
    ),
    User(
        "5725767000000411005",
        "Emil",
        "Sorensen",
        "emil.sorensen@sandbox.example",
        "Manager",
        "Standard",
    ),
    User(
        "5725767000000411006",
        "Farah",
        "Haddad",
        "farah.haddad@sandbox.example",
        "Manager",
        "Standard",
        status="disabled",
    ),
)
#: The user the sandbox's OAuth client acts as (Created_By / Modified_By / default Owner).
API_USER = SEEDED_USERS[0]


class ValueError_(Exception):
    """A record value Zoho rejects: carries the error code and details of the per-record result."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def check_value(definition: FieldDef, value: Any, json_path: str, users: dict[str, User]) -> Any:
    """Validate one input value for ``definition``; return the value to store.

    Raises :class:`ValueError_` with Zoho's INVALID_DATA details on a wrong type, a value too
    long, a malformed email / website / phone, or an unknown owner.
    """
    if value is None:
        return None
    kind = definition.data_type

    def invalid(message: str = "invalid data", **extra: Any) -> ValueError_:
        details = {
            "expected_data_type": kind,
            "api_name": definition.api_name,
            "json_path": json_path,
            **extra,
        }
        return ValueError_("INVALID_DATA", message, details)

    if kind in STRING_TYPES:
        if not isinstance(value, str):
            raise invalid()
        if not is_unicode_text(value):
            # A lone surrogate (JSON "\ud800") is not text Zoho can store as UTF-8: the record
            # is refused like any malformed value, never stored.
            raise invalid("invalid data")
        if definition.length is not None and len(value) > definition.length:
            # Insert Records doc: INVALID_DATA when the value is longer than the field's length.
            raise invalid("invalid data", maximum_length=definition.length)
        if kind == "email" and value and not _EMAIL.match(value):
            raise invalid()
        if kind == "website" and value and not _WEBSITE.match(value):
            raise invalid()
        if kind == "phone" and value and not _PHONE.match(value):
            raise invalid()
        if kind == "picklist" and definition.restricted and value not in definition.picklist:
            # Unverified wording: the sandbox refuses a value a system pick list (Tasks' Status,
            # Priority) does not hold; custom pick lists take new values (below).
            raise invalid()
        # Insert Records doc (v7, "Picklist"): "You can either pass an existing pick list value
        # or add a new one" -- a value missing from the list is stored, not rejected.
        return value
    if kind == "integer":
        if isinstance(value, bool):
            raise invalid()
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
            return int(value)
        if not isinstance(value, int) or abs(value) >= 10**9:
            raise invalid()
        return value
    if kind in {"double", "currency"}:
        if isinstance(value, bool):
            raise invalid()
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise invalid() from None
        if not isinstance(value, int | float):
            raise invalid()
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise invalid()
        return value
    if kind == "ownerlookup":
        owner_id = value.get("id") if isinstance(value, dict) else None
        user = users.get(str(owner_id)) if owner_id is not None else None
        if user is None or user.status != "active":
            raise invalid()
        return user.lookup()
    if kind == "datetime":
        if not isinstance(value, str) or parse_datetime(value) is None:
            raise invalid()
        return value
    if kind == "date":
        # Date fields (Tasks' Due_Date) take ISO ``yyyy-MM-dd`` only.
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise invalid()
        try:
            date.fromisoformat(value)
        except ValueError:
            raise invalid() from None
        return value
    raise invalid()


def is_unicode_text(text: str) -> bool:
    """True when ``text`` encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_datetime(text: str) -> datetime | None:
    """Parse Zoho's ``yyyy-MM-ddTHH:mm:ss±HH:mm``; None when malformed or without an offset."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed
