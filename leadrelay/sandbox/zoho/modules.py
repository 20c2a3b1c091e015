"""The Accounts and Tasks modules of the Zoho CRM sandbox.

Both are :class:`~leadrelay.sandbox.zoho.store.LeadStore` records with their own fields and id
range, so insert, read by id and paged list behave as for Leads (Insert Records, Get Records).

* Accounts: ``Account_Name`` (mandatory), ``Website``, ``Phone``, ``Description`` and ``Owner``.
* Tasks: ``Subject`` (mandatory, 255), ``Due_Date`` (``yyyy-MM-dd``), ``Status`` and
  ``Priority`` (system pick lists), ``Description``, ``Owner``, and the polymorphic
  ``What_Id`` lookup named by ``$se_module`` (a Lead or an Account here) plus ``Who_Id`` (a
  Contact). A lookup is answered as ``{"name", "id"}``, the way Get Records returns it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leadrelay.sandbox.zoho.schema import FieldDef, ValueError_
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
