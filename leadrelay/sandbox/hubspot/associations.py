"""Associations between the emulated objects: contacts, companies, deals and tasks.

Served through the v4 API (``POST /crm/v4/associations/{from}/{to}/batch/read``,
``GET|PUT|DELETE /crm/v4/objects/{type}/{id}/associations/…``) and the v3 one
(``POST /crm/v3/associations/{from}/{to}/batch/read``, ``GET|PUT|DELETE
/crm/v3/objects/contacts/{id}/associations/…``). A task's contacts are the ones it was created
with; contacts are associated with companies and deals through these endpoints (or, for a
deal, when it is created with ``associations``). Type ids are HubSpot's
HUBSPOT_DEFINED ones (hubspot-api-client ``hubspot/crm/association_type.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from leadrelay.sandbox.hubspot.errors import HubSpotError, not_found, validation_error

#: object type names HubSpot accepts in a path, by the emulated type's plural name
OBJECT_TYPE_NAMES: dict[str, tuple[str, ...]] = {
    "contacts": ("contacts", "contact", "0-1"),
    "companies": ("companies", "company", "0-2"),
    "deals": ("deals", "deal", "0-3"),
    "tasks": ("tasks", "task", "0-27"),
}
_SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal", "tasks": "task"}
#: the types associated with contacts through the association endpoints (not tasks)
LINKED = ("companies", "deals")


@dataclass(frozen=True)
class AssociationType:
    """One HUBSPOT_DEFINED association type, in one direction."""

    type_id: int
    v3_name: str


#: (from, to) -> the default (unlabeled) association type
TYPES: dict[tuple[str, str], AssociationType] = {
    ("contacts", "companies"): AssociationType(279, "contact_to_company"),
    ("companies", "contacts"): AssociationType(280, "company_to_contact"),
    ("contacts", "tasks"): AssociationType(203, "contact_to_task"),
    ("tasks", "contacts"): AssociationType(204, "task_to_contact"),
    ("contacts", "deals"): AssociationType(4, "contact_to_deal"),
    ("deals", "contacts"): AssociationType(3, "deal_to_contact"),
}


def object_type(raw: str) -> str:
    """The emulated object type a path names (``contacts``, ``0-1``, ``contact`` …).

    Anything else is answered as HubSpot answers an object type it cannot resolve.
    """
    for name, aliases in OBJECT_TYPE_NAMES.items():
        if raw.lower() in aliases:
            return name
    raise validation_error(f"Unable to infer object type from: {raw}")


class Associations:
    """Contact–company and contact–deal links (kept here) and task–contact links (kept by the
    tasks). Archived records drop out of every answer."""

    def __init__(
        self,
        exists: Callable[[str, int], bool],
        task_contacts: Callable[[], Iterable[tuple[int, int]]],
    ) -> None:
        self.exists = exists
        self.task_contacts = task_contacts
        #: other type -> (contact id, id of the other record)
        self.linked: dict[str, set[tuple[int, int]]] = {name: set() for name in LINKED}

    @staticmethod
    def kind(from_type: str, to_type: str) -> AssociationType:
        """The default association type from one emulated type to another (400 if none)."""
        found = TYPES.get((from_type, to_type))
        if found is None:
            raise validation_error(
                f"Association from {_SINGULAR[from_type]} to {_SINGULAR[to_type]} is not a "
                "valid association"
            )
        return found

    def targets(self, from_type: str, from_id: int, to_type: str) -> list[int]:
        """The ids of ``to_type`` associated with ``from_type`` ``from_id``, ascending."""
        self.kind(from_type, to_type)
        other_type = to_type if from_type == "contacts" else from_type
        pairs: Iterable[tuple[int, int]]
        if other_type in self.linked:
            pairs = self.linked[other_type]
        else:
            pairs = ((c, t) for t, c in self.task_contacts())
        if from_type == "contacts":
            found = {other for contact, other in pairs if contact == from_id}
        else:
            found = {contact for contact, other in pairs if other == from_id}
        return sorted(i for i in found if self.exists(to_type, i))

    def check(self, object_name: str, object_id: str) -> int:
        """``object_id`` as a number, when such a live record exists (else HubSpot's 404)."""
        if not object_id.isdigit() or not self.exists(object_name, int(object_id)):
            raise not_found(
                f"No {_SINGULAR[object_name]} with ID {object_id} exists",
                context={"id": [object_id]},
            )
        return int(object_id)

    def link(self, from_type: str, from_id: str, to_type: str, to_id: str) -> AssociationType:
        """Associate two records (contacts with companies or deals: task links are made on the
        task)."""
        kind = self.kind(from_type, to_type)
        other_type = to_type if from_type == "contacts" else from_type
        if other_type not in self.linked:
            raise validation_error(
                "The sandbox associates tasks with contacts only when the task is created"
            )
        left, right = self.check(from_type, from_id), self.check(to_type, to_id)
        pair = (left, right) if from_type == "contacts" else (right, left)
        self.linked[other_type].add(pair)
        return kind

    def unlink(self, from_type: str, from_id: str, to_type: str, to_id: str) -> None:
        """Remove an association (absent ones are ignored, as HubSpot does)."""
        self.kind(from_type, to_type)
        other_type = to_type if from_type == "contacts" else from_type
        if not (from_id.isdigit() and to_id.isdigit()) or other_type not in self.linked:
            return
        left, right = int(from_id), int(to_id)
        pair = (left, right) if from_type == "contacts" else (right, left)
        self.linked[other_type].discard(pair)

    def move_contact(self, old: int, new: int) -> None:
        """A merge: the old contact's companies and deals are the merged record's."""
        for pairs in self.linked.values():
            for contact, other in list(pairs):
                if contact == old:
                    pairs.discard((contact, other))
                    pairs.add((new, other))

    def batch_read(
        self, from_type: str, to_type: str, body: Any, *, v4: bool
    ) -> tuple[int, dict[str, Any]]:
        """``batch/read``: one result per input with associations, and for the others a 207
        ``NO_ASSOCIATIONS_FOUND`` error (as HubSpot answers them)."""
        kind = self.kind(from_type, to_type)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            raise validation_error("Invalid input JSON: the body needs an inputs list")
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            raw = item.get("id") if isinstance(item, dict) else None
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise validation_error("Each input of an association batch read needs an id")
            key = str(raw)
            found = self.targets(from_type, int(key), to_type) if key.isdigit() else []
            if not found:
                error = HubSpotError(
                    404,
                    f"No {_SINGULAR[to_type]} is associated with {_SINGULAR[from_type]} {key}.",
                    "OBJECT_NOT_FOUND",
                )
                entry = error.batch_error(
                    {
                        "fromObjectId": [key],
                        "fromObjectType": [_SINGULAR[from_type]],
                        "toObjectType": [_SINGULAR[to_type]],
                    }
                )
                entry["subCategory"] = "crm.associations.NO_ASSOCIATIONS_FOUND"
                errors.append(entry)
                continue
            if v4:
                to = [{"toObjectId": t, "associationTypes": [self.spec(kind)]} for t in found]
            else:
                to = [{"id": str(t), "type": kind.v3_name} for t in found]
            results.append({"from": {"id": key}, "to": to})
        body_out: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body_out["numErrors"] = len(errors)
            body_out["errors"] = errors
        return (207 if errors else 200), body_out

    @staticmethod
    def spec(kind: AssociationType) -> dict[str, Any]:
        """A v4 ``associationTypes`` entry."""
        return {"category": "HUBSPOT_DEFINED", "typeId": kind.type_id, "label": None}


__all__ = [
    "LINKED",
    "OBJECT_TYPE_NAMES",
    "TYPES",
    "AssociationType",
    "Associations",
    "object_type",
]
