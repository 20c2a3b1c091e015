"""The emulated HubSpot tasks object (``/crm/v3/objects/tasks``), associated with contacts.

What leadrelay's escalation (and ``hubspot-api-client``'s ``crm.objects.tasks.basic_api``)
sends: a create with ``properties`` (``hs_timestamp`` required; ``hs_task_subject``,
``hs_task_body``, ``hs_task_status``, ``hs_task_priority``, ``hs_task_type``,
``hubspot_owner_id``) and ``associations`` to contacts (``HUBSPOT_DEFINED`` type 204,
task → contact); a read by id and a paged list, each with ``associations=contacts``.
Every method runs under the emulator's lock and answers HubSpot-shaped JSON or raises
:class:`HubSpotError`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from leadrelay.sandbox.hubspot.errors import HubSpotError, not_found, validation_error
from leadrelay.sandbox.hubspot.schema import iso_ms

#: The HUBSPOT_DEFINED association type of task → contact.
TASK_TO_CONTACT = 204

#: Task properties a create may set, with their allowed values (None: any text).
TASK_PROPERTIES: dict[str, frozenset[str] | None] = {
    "hs_timestamp": None,
    "hs_task_subject": None,
    "hs_task_body": None,
    "hs_task_status": frozenset({"NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"}),
    "hs_task_priority": frozenset({"NONE", "LOW", "MEDIUM", "HIGH"}),
    "hs_task_type": frozenset({"TODO", "CALL", "EMAIL", "LINKED_IN", "MEETING"}),
    "hubspot_owner_id": None,
}
#: What a read returns when it names no properties.
DEFAULT_TASK_PROPERTIES = ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")


@dataclass
class Task:
    """One task: its set property values and the contacts it is associated with."""

    id: int
    props: dict[str, str]
    created_ms: int
    contacts: list[int] = field(default_factory=list)


def _timestamp(value: str) -> str:
    """``hs_timestamp`` as HubSpot stores it (ISO 8601, ms, UTC); it takes epoch ms too."""
    if value.isdigit():
        moment = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise validation_error(
                f"Property values were not valid: hs_timestamp {value!r} is not a date-time "
                "(ISO 8601 or epoch milliseconds)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return iso_ms(int(moment.timestamp() * 1000))


class TaskStore:
    """Tasks of the sandbox account, by id, in creation order."""

    def __init__(
        self,
        now_ms: Callable[[], int],
        contact_exists: Callable[[int], bool],
        owner_ids: Callable[[], Collection[str]],
    ) -> None:
        self.now_ms = now_ms
        self.contact_exists = contact_exists
        self.owner_ids = owner_ids
        self.tasks: dict[int, Task] = {}
        self._next_id = 90_001

    def _properties(self, raw: Any) -> dict[str, str]:
        if not isinstance(raw, dict):
            raise validation_error("Invalid input JSON: properties must be an object")
        props: dict[str, str] = {}
        for name, value in raw.items():
            if name not in TASK_PROPERTIES:
                raise HubSpotError(
                    400,
                    f'Property "{name}" does not exist',
                    "VALIDATION_ERROR",
                    subCategory="PROPERTY_DOESNT_EXIST",
                )
            if value is None or value == "":
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            allowed = TASK_PROPERTIES[name]
            if allowed is not None and text not in allowed:
                raise validation_error(
                    f"Property values were not valid: {text!r} is not a valid option for "
                    f"{name} ({', '.join(sorted(allowed))})"
                )
            props[name] = text
        if "hs_timestamp" not in props:
            raise validation_error("Property values were not valid: hs_timestamp is required")
        props["hs_timestamp"] = _timestamp(props["hs_timestamp"])
        owner = props.get("hubspot_owner_id")
        if owner is not None and owner not in self.owner_ids():
            raise validation_error(
                f"Property values were not valid: {owner} is not a valid owner id "
                "for hubspot_owner_id"
            )
        return props

    def _associations(self, raw: Any) -> list[int]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise validation_error("Invalid input JSON: associations must be a list")
        contacts: list[int] = []
        for item in raw:
            to = item.get("to") if isinstance(item, dict) else None
            types = item.get("types") if isinstance(item, dict) else None
            key = str(to.get("id")) if isinstance(to, dict) else ""
            if not key.isdigit() or not isinstance(types, list) or not types:
                raise validation_error("Each association needs to.id and a list of types")
            for spec in types:
                if not isinstance(spec, dict) or (
                    spec.get("associationCategory"),
                    spec.get("associationTypeId"),
                ) != ("HUBSPOT_DEFINED", TASK_TO_CONTACT):
                    raise validation_error(
                        f"association type {spec!r} is not HUBSPOT_DEFINED "
                        f"{TASK_TO_CONTACT} (task to contact)"
                    )
            if not self.contact_exists(int(key)):
                raise validation_error(
                    f"One or more associations are invalid: contact {key} does not exist"
                )
            if int(key) not in contacts:
                contacts.append(int(key))
        return contacts

    def create(self, body: Any) -> dict[str, Any]:
        """``POST /crm/v3/objects/tasks``: the created task with every property set."""
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an object with properties")
        props = self._properties(body.get("properties"))
        contacts = self._associations(body.get("associations"))
        task = Task(self._next_id, props, self.now_ms(), contacts)
        self._next_id += 1
        self.tasks[task.id] = task
        return self.render(task, None, all_set=True)

    def find(self, key: str) -> Task:
        """The task with id ``key``."""
        task = self.tasks.get(int(key)) if key.isdigit() else None
        if task is None:
            raise not_found(
                "Object not found.  objectId are usually numeric.", context={"id": [key]}
            )
        return task

    def render(
        self,
        task: Task,
        wanted: list[str] | None,
        *,
        all_set: bool = False,
        associations: bool = False,
    ) -> dict[str, Any]:
        """A task as the API answers it: the wanted (or default) properties, and contacts."""
        stamp = iso_ms(task.created_ms)
        known = {
            **task.props,
            "hs_createdate": stamp,
            "hs_lastmodifieddate": stamp,
            "hs_object_id": str(task.id),
        }
        names = list(known) if all_set else (wanted or list(DEFAULT_TASK_PROPERTIES))
        body: dict[str, Any] = {
            "id": str(task.id),
            "properties": {name: known.get(name) for name in names},
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
        }
        if associations and task.contacts:
            body["associations"] = {
                "contacts": {
                    "results": [{"id": str(c), "type": "task_to_contact"} for c in task.contacts]
                }
            }
        return body

    def page(self, limit: int, after: str | None) -> tuple[list[Task], str | None]:
        """Up to ``limit`` tasks from the cursor ``after`` on; the next cursor or None."""
        ids = sorted(self.tasks)
        start = 0
        if after:
            if not after.isdigit():
                raise validation_error(f"after {after!r} is not a cursor this API handed out")
            start = next((i for i, task_id in enumerate(ids) if task_id >= int(after)), len(ids))
        chosen = ids[start : start + limit]
        following = str(ids[start + limit]) if start + limit < len(ids) else None
        return [self.tasks[i] for i in chosen], following
