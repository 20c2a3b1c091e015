"""The Accounts, Contacts, Deals and Tasks modules of the Zoho CRM sandbox.

Both are :class:`~leadrelay.sandbox.zoho.store.LeadStore` records with their own fields and id
range, so insert, read by id and paged list behave as for Leads (Insert Records, Get Records).

* Accounts: ``Account_Name`` (mandatory), ``Website``, ``Phone``, ``Description`` and ``Owner``.
* Contacts: a person (``Last_Name`` mandatory, ``Email``, ``Account_Name`` lookup); Convert Lead
  creates one from the Lead.
* Deals: ``Deal_Name``, ``Stage`` and ``Closing_Date`` (mandatory), ``Amount``, ``Pipeline``,
  ``Probability``, ``Reason_For_Loss__s``, ``Account_Name`` / ``Contact_Name`` lookups, and
  ``Currency`` (present only where multi-currency is on; the sandbox org has it).
* Tasks: ``Subject`` (mandatory, 255), ``Due_Date`` (``yyyy-MM-dd``), ``Status`` and
  ``Priority`` (system pick lists), ``Description``, ``Owner``, and the polymorphic
  ``What_Id`` lookup named by ``$se_module`` (a Lead or an Account here) plus ``Who_Id`` (a
  Contact). A lookup is answered as ``{"name", "id"}``, the way Get Records returns it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from leadrelay.sandbox.zoho.schema import LEAD_SOURCE_VALUES, FieldDef, ValueError_
from leadrelay.sandbox.zoho.store import LeadStore, StoredRecord

#: Default Tasks Status values of a new org (the Tasks layout's pick list).
TASK_STATUS_VALUES = ("Not Started", "Deferred", "In Progress", "Completed", "Waiting for input")
#: Default Tasks Priority values of a new org.
TASK_PRIORITY_VALUES = ("High", "Highest", "Low", "Lowest", "Normal")
#: Modules a task's ``$se_module`` may name ("Related To"): Zoho's standard modules with
#: activities. Only Leads and Accounts hold records in the sandbox.
RELATED_MODULES = frozenset(
    {
        "Leads",
        "Accounts",
        "Contacts",
        "Deals",
        "Campaigns",
        "Cases",
        "Solutions",
        "Products",
        "Vendors",
        "Price_Books",
        "Quotes",
        "Sales_Orders",
        "Purchase_Orders",
        "Invoices",
    }
)

#: Resolves (module, record id) to the record's display name, None when there is no such record.
Resolver = Callable[[str, str], str | None]

_ACCOUNT_FIRST_ID = 5725767000002000000
_TASK_FIRST_ID = 5725767000003000000
_CONTACT_FIRST_ID = 5725767000004000000
_DEAL_FIRST_ID = 5725767000005000000

#: The Stage pick list of the default "Standard" pipeline of a new org (Deals layout).
#: Unverified as a list: "Closed Won" is in Zoho's Convert Lead samples; the others are the
#: stages a new org's Standard pipeline shows.
DEAL_STAGE_VALUES = (
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
    "Closed Lost to Competition",
)
#: Stages that close a deal, and which of them are won (the stage's forecast category).
CLOSED_WON_STAGES = frozenset({"Closed Won"})
CLOSED_STAGES = frozenset({"Closed Won", "Closed Lost", "Closed Lost to Competition"})
#: Probability (%) a deal takes when it enters a stage (the stage-probability mapping).
STAGE_PROBABILITY = {
    "Qualification": 10,
    "Needs Analysis": 20,
    "Value Proposition": 40,
    "Id. Decision Makers": 60,
    "Proposal/Price Quote": 75,
    "Negotiation/Review": 90,
    "Closed Won": 100,
    "Closed Lost": 0,
    "Closed Lost to Competition": 0,
}
DEFAULT_PIPELINE = "Standard (Standard)"
#: The Deals "Reason For Loss" system pick list (``Reason_For_Loss__s``). Unverified values:
#: the field's API name is in Zoho's SDK field list; its options here are a guess an admin
#: would edit in Setup.
LOSS_REASON_VALUES = (
    "-None-",
    "Price",
    "Competition",
    "Lack of Budget",
    "No Decision",
    "Timing",
    "Missing Features",
    "Other",
)


def _numbered(fields: list[FieldDef], base: int) -> dict[str, FieldDef]:
    for index, definition in enumerate(fields):
        definition.field_id = str(base + index * 7)
    return {definition.api_name: definition for definition in fields}


def _system_fields() -> list[FieldDef]:
    return [
        FieldDef("Created_By", "Created By", "ownerlookup", "jsonobject", read_only=True),
        FieldDef("Modified_By", "Modified By", "ownerlookup", "jsonobject", read_only=True),
        FieldDef("Created_Time", "Created Time", "datetime", "string", read_only=True),
        FieldDef("Modified_Time", "Modified Time", "datetime", "string", read_only=True),
    ]


def account_fields() -> dict[str, FieldDef]:
    """The Accounts fields of a new org that leadrelay reads."""
    fields = [
        FieldDef("Owner", "Account Owner", "ownerlookup", "jsonobject"),
        FieldDef("Account_Name", "Account Name", "text", "string", 200, mandatory=True),
        FieldDef("Website", "Website", "website", "string", 255),
        FieldDef("Phone", "Phone", "phone", "string", 30),
        FieldDef("Description", "Description", "textarea", "string", 32000),
        *_system_fields(),
    ]
    return _numbered(fields, 5725767000000003100)


def task_fields() -> dict[str, FieldDef]:
    """The Tasks fields of a new org (the Tasks layout's API names)."""
    fields = [
        FieldDef("Owner", "Task Owner", "ownerlookup", "jsonobject"),
        FieldDef("Subject", "Subject", "text", "string", 255, mandatory=True),
        FieldDef("Due_Date", "Due Date", "date", "string"),
        FieldDef(
            "Status",
            "Status",
            "picklist",
            "string",
            120,
            picklist=[*TASK_STATUS_VALUES],
            restricted=True,
        ),
        FieldDef(
            "Priority",
            "Priority",
            "picklist",
            "string",
            120,
            picklist=[*TASK_PRIORITY_VALUES],
            restricted=True,
        ),
        FieldDef("Who_Id", "Contact Name", "lookup", "jsonobject", 120),
        FieldDef("What_Id", "Related To", "lookup", "jsonobject", 120),
        FieldDef("Description", "Description", "textarea", "string", 32000),
        *_system_fields(),
    ]
    return _numbered(fields, 5725767000000003500)


def contact_fields() -> dict[str, FieldDef]:
    """The Contacts fields of a new org that leadrelay and Convert Lead use."""
    fields = [
        FieldDef("Owner", "Contact Owner", "ownerlookup", "jsonobject"),
        FieldDef("First_Name", "First Name", "text", "string", 40),
        FieldDef("Last_Name", "Last Name", "text", "string", 80, mandatory=True),
        FieldDef("Email", "Email", "email", "string", 100),
        FieldDef("Phone", "Phone", "phone", "string", 30),
        FieldDef("Mobile", "Mobile", "phone", "string", 30),
        FieldDef("Title", "Title", "text", "string", 100),
        FieldDef("Account_Name", "Account Name", "lookup", "jsonobject", 120),
        FieldDef(
            "Lead_Source", "Lead Source", "picklist", "string", 120, picklist=[*LEAD_SOURCE_VALUES]
        ),
        FieldDef("Description", "Description", "textarea", "string", 32000),
        *_system_fields(),
    ]
    return _numbered(fields, 5725767000000003900)


def deal_fields() -> dict[str, FieldDef]:
    """The Deals fields of a new org (the Standard layout's API names)."""
    fields = [
        FieldDef("Owner", "Deal Owner", "ownerlookup", "jsonobject"),
        FieldDef("Deal_Name", "Deal Name", "text", "string", 120, mandatory=True),
        FieldDef("Amount", "Amount", "currency", "double", 16),
        FieldDef("Closing_Date", "Closing Date", "date", "string", mandatory=True),
        FieldDef(
            "Stage",
            "Stage",
            "picklist",
            "string",
            120,
            mandatory=True,
            picklist=[*DEAL_STAGE_VALUES],
            restricted=True,
        ),
        FieldDef(
            "Pipeline",
            "Pipeline",
            "picklist",
            "string",
            120,
            picklist=[DEFAULT_PIPELINE],
            restricted=True,
        ),
        FieldDef("Probability", "Probability (%)", "integer", "integer", 3),
        FieldDef(
            "Reason_For_Loss__s",
            "Reason For Loss",
            "picklist",
            "string",
            120,
            picklist=[*LOSS_REASON_VALUES],
        ),
        FieldDef("Currency", "Currency", "picklist", "string", 120, picklist=["USD", "EUR"]),
        FieldDef("Account_Name", "Account Name", "lookup", "jsonobject", 120),
        FieldDef("Contact_Name", "Contact Name", "lookup", "jsonobject", 120),
        FieldDef(
            "Lead_Source", "Lead Source", "picklist", "string", 120, picklist=[*LEAD_SOURCE_VALUES]
        ),
        FieldDef("Description", "Description", "textarea", "string", 32000),
        *_system_fields(),
    ]
    return _numbered(fields, 5725767000000004300)


class AccountStore(LeadStore):
    """The Accounts module."""

    module = "Accounts"

    def __init__(self) -> None:
        super().__init__(account_fields(), _ACCOUNT_FIRST_ID)

    def display_name(self, record: StoredRecord) -> str:
        """An Account is shown by its name."""
        return str(record.values.get("Account_Name") or "")


def _lookup_id(value: Any, api_name: str, path: str) -> str:
    """The ``id`` of a lookup value ``{"id": ...}``; INVALID_DATA when it is not one."""
    raw_id = value.get("id") if isinstance(value, dict) else None
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
        raise ValueError_(
            "INVALID_DATA",
            "invalid data",
            {"expected_data_type": "jsonobject", "api_name": api_name, "json_path": path},
        )
    return str(raw_id).strip()


def _no_record(api_name: str, path: str) -> ValueError_:
    # Unverified wording: INVALID_DATA naming the lookup field, as for any value Zoho refuses
    # (Insert Records doc's INVALID_DATA shape); the exact message for a missing record is not
    # documented.
    return ValueError_(
        "INVALID_DATA",
        "invalid data",
        {"expected_data_type": "lookup", "api_name": api_name, "json_path": path},
    )


class TaskStore(LeadStore):
    """The Tasks module; ``resolve`` finds the record a lookup names (in the other modules)."""

    module = "Tasks"

    def __init__(self, resolve: Resolver) -> None:
        super().__init__(task_fields(), _TASK_FIRST_ID)
        self.resolve = resolve

    def output_fields(self, names: list[str]) -> list[str]:
        """``$se_module`` comes back with ``What_Id`` (it names the lookup's module)."""
        if "What_Id" in names and "$se_module" not in names:
            return [*names, "$se_module"]
        return names

    def _record_object(self, raw: Any, path: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            return super()._record_object(raw, path)
        plain = {k: v for k, v in raw.items() if k not in ("What_Id", "Who_Id", "$se_module")}
        clean = super()._record_object(plain, path)
        clean.update(self._lookups(raw, path))
        return clean

    def _lookups(self, raw: dict[str, Any], path: str) -> dict[str, Any]:
        """Validated ``What_Id`` (+ ``$se_module``) and ``Who_Id`` values to store."""
        found: dict[str, Any] = {}
        module = raw.get("$se_module")
        module_path = f"{path}.$se_module"
        if module not in (None, "") and (
            not isinstance(module, str) or module not in RELATED_MODULES
        ):
            # Unverified wording: INVALID_DATA naming $se_module for a name that is not a
            # module with activities.
            raise ValueError_(
                "INVALID_DATA",
                "invalid data",
                {"api_name": "$se_module", "json_path": module_path},
            )
        what = raw.get("What_Id")
        if what is not None:
            if module in (None, ""):
                # Kaizen #36 (Tasks API): What_Id is sent together with $se_module, which
                # names the module of the related record.
                raise ValueError_(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    {"api_name": "$se_module", "json_path": module_path},
                )
            what_path = f"{path}.What_Id"
            what_id = _lookup_id(what, "What_Id", what_path)
            name = self.resolve(str(module), what_id)
            if name is None:
                raise _no_record("What_Id", what_path)
            found["What_Id"] = {"name": name, "id": what_id}
            found["$se_module"] = module
        who = raw.get("Who_Id")
        if who is not None:
            who_path = f"{path}.Who_Id"
            who_id = _lookup_id(who, "Who_Id", who_path)
            name = self.resolve("Contacts", who_id)
            if name is None:
                raise _no_record("Who_Id", who_path)
            found["Who_Id"] = {"name": name, "id": who_id}
        return found


class LinkedStore(LeadStore):
    """A module whose lookup fields name records of other modules (``lookups``: field → module).

    A lookup is written ``{"id": ...}`` and stored (and read) as ``{"name", "id"}``; a record
    that does not exist is INVALID_DATA naming the field.
    """

    lookups: ClassVar[Mapping[str, str]] = {}

    def __init__(self, fields: dict[str, FieldDef], first_id: int, resolve: Resolver) -> None:
        super().__init__(fields, first_id)
        self.resolve = resolve

    def _record_object(self, raw: Any, path: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            return super()._record_object(raw, path)
        clean = super()._record_object(
            {k: v for k, v in raw.items() if k not in self.lookups}, path
        )
        for name, module in self.lookups.items():
            if name not in raw or name not in self.fields:
                continue
            value = raw[name]
            if value is None:
                clean[name] = None
                continue
            field_path = f"{path}.{name}"
            record_id = _lookup_id(value, name, field_path)
            shown = self.resolve(module, record_id)
            if shown is None:
                raise _no_record(name, field_path)
            clean[name] = {"name": shown, "id": record_id}
        return clean


class ContactStore(LinkedStore):
    """The Contacts module."""

    module = "Contacts"
    lookups: ClassVar[Mapping[str, str]] = {"Account_Name": "Accounts"}

    def __init__(self, resolve: Resolver) -> None:
        super().__init__(contact_fields(), _CONTACT_FIRST_ID, resolve)


class DealStore(LinkedStore):
    """The Deals module: a Stage sets the deal's Probability, as the stage mapping does."""

    module = "Deals"
    lookups: ClassVar[Mapping[str, str]] = {
        "Account_Name": "Accounts",
        "Contact_Name": "Contacts",
    }

    def __init__(self, resolve: Resolver) -> None:
        super().__init__(deal_fields(), _DEAL_FIRST_ID, resolve)

    def display_name(self, record: StoredRecord) -> str:
        """A Deal is shown by its name."""
        return str(record.values.get("Deal_Name") or "")

    def _record_object(self, raw: Any, path: str) -> dict[str, Any]:
        clean = super()._record_object(raw, path)
        stage = clean.get("Stage")
        if isinstance(stage, str) and "Probability" not in clean:
            clean["Probability"] = STAGE_PROBABILITY.get(stage)
        if "Stage" in clean and "Pipeline" not in clean:
            clean["Pipeline"] = DEFAULT_PIPELINE
        return clean
