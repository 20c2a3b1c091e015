"""The emulated HubSpot contact store: records, the email index, single and batch writes.

Every method runs under the emulator's lock and answers HubSpot-shaped JSON (or raises
:class:`HubSpotError`). Records keep the versions written in the last few minutes so search can
see each one as it was indexed (see :mod:`leadrelay.sandbox.hubspot.search`).
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from leadrelay.sandbox.hubspot.errors import (
    HubSpotError,
    not_found,
    property_errors,
    validation_error,
)
from leadrelay.sandbox.hubspot.index import ContactIndex
from leadrelay.sandbox.hubspot.schema import (
    ADDITIONAL_EMAILS,
    DEFAULT_READ_PROPERTIES,
    MERGED_OBJECT_IDS,
    OWNER_ASSIGNED_DATE,
    SEARCHABLE_PROPERTIES,
    Schema,
    iso_ms,
)

#: HubSpot batch endpoints take at most this many inputs
BATCH_LIMIT = 100
#: versions older than this are dropped (the largest search lag the sandbox allows)
VERSION_RETENTION_MS = 600_000

Props = dict[str, str]


@dataclass
class Contact:
    """One contact: its set (non-empty) property values and timestamps."""

    id: int
    props: Props
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None
    #: the contact this one was merged into (it is then archived and its id redirects there)
    merged_into: int | None = None
    #: (write time ms, properties as written, or None once archived), oldest first
    versions: list[tuple[int, Props | None]] = field(default_factory=list)


def _not_found_by_id(key: str) -> HubSpotError:
    return not_found("Object not found.  objectId are usually numeric.", context={"id": [key]})


def _conflict(existing: int) -> HubSpotError:
    # Clients parse the id out of this exact message (facts §1).
    return HubSpotError(409, f"Contact already exists. Existing ID: {existing}", "CONFLICT")


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").split(";") if part]


def _emails(props: Props) -> list[str]:
    """The contact's email and its additional emails (each identifies it)."""
    return _split(props.get("email")) + _split(props.get(ADDITIONAL_EMAILS))


def wanted_properties(raw: Any) -> list[str] | None:
    """The ``properties`` of a request (list, or comma-separated strings), None when absent."""
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise validation_error("properties must be a list of property names")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise validation_error("properties must be a list of property names")
        names.extend(part.strip() for part in item.split(",") if part.strip())
    return names or None


class ContactStore:
    """Contacts of the sandbox account, indexed by id and by lower-cased email.

    The class attributes name what differs for another object type kept the same way (deals,
    :mod:`leadrelay.sandbox.hubspot.deals`).
    """

    #: the HubSpot-set property holding the last change time
    modified_property: ClassVar[str] = "lastmodifieddate"
    #: what a read or search returns when it names no properties
    default_read: ClassVar[Sequence[str]] = DEFAULT_READ_PROPERTIES
    #: the properties a search's free-text ``query`` looks in
    searchable: ClassVar[Sequence[str]] = SEARCHABLE_PROPERTIES
    #: how a batch read names the object type in its OBJECT_NOT_FOUND message
    batch_label: ClassVar[str] = "CONTACT"
    #: the id of the first record created
    first_id: ClassVar[int] = 1001

    def __init__(self, schema: Schema, clock: Callable[[], float] = time.time) -> None:
        self.schema = schema
        self.clock = clock
        self.contacts: dict[int, Contact] = {}
        self.order: list[int] = []
        self.by_email: dict[str, int] = {}
        self.index = ContactIndex(self._live_values)
        self._next_id = self.first_id

    def _live_values(self) -> list[tuple[int, Props]]:
        return [(c.id, c.props) for c in self.contacts.values() if c.archived_ms is None]

    # ----------------------------------------------------------------- reading

    def now_ms(self) -> int:
        """The store clock in epoch milliseconds."""
        return int(self.clock() * 1000)

    def find(self, key: str, id_property: str | None = None, archived: bool = False) -> Contact:
        """The contact with record id ``key`` (or email, with ``id_property="email"``)."""
        contact: Contact | None = None
        if id_property in (None, "", "hs_object_id"):
            if key.isdigit():
                contact = self.contacts.get(int(key))
        elif id_property == "email":
            found = self.by_email.get(key.strip().lower())
            contact = self.contacts.get(found) if found is not None else None
            if contact is None and archived:
                contact = next(
                    (
                        c
                        for c in self.contacts.values()
                        if c.archived_ms is not None and c.props.get("email") == key.lower()
                    ),
                    None,
                )
        else:
            self._check_id_property(id_property)
        if contact is not None and not archived:
            # Both ids of a merge keep pointing to the merged record, so a read by either
            # answers it, under its own id (HubSpot changelog "Updated merge functionality").
            contact = self.resolve(contact)
        elif contact is not None and contact.merged_into is not None:
            contact = None
        if contact is None or (contact.archived_ms is not None) != archived:
            raise _not_found_by_id(key)
        return contact

    def resolve(self, contact: Contact) -> Contact:
        """The record ``contact`` was merged into (following merges of merges), or itself."""
        while contact.merged_into is not None:
            contact = self.contacts[contact.merged_into]
        return contact

    def _check_id_property(self, id_property: str) -> None:
        if not self.schema.exists(id_property):
            raise validation_error(f'Property "{id_property}" does not exist')
        raise validation_error(
            f"{id_property} is not a unique-valued property; contacts can be identified by "
            "hs_object_id or email"
        )

    def page(
        self, limit: int, after: str | None, archived: bool
    ) -> tuple[list[Contact], str | None]:
        """One page of contacts in id order starting at id ``after``; and the next cursor."""
        start = 0
        if after:
            if not after.isdigit():
                raise validation_error(f"after must be a numeric cursor, got {after!r}")
            start = bisect.bisect_left(self.order, int(after))
        found: list[Contact] = []
        for contact_id in self.order[start:]:
            contact = self.contacts[contact_id]
            if (contact.archived_ms is not None) != archived or contact.merged_into is not None:
                continue
            if len(found) == limit:
                return found, str(contact_id)
            found.append(contact)
        return found, None

    def render(
        self,
        contact: Contact,
        wanted: list[str] | None,
        *,
        all_set: bool = False,
        props: Props | None = None,
    ) -> dict[str, Any]:
        """A SimplePublicObject: id, properties (strings or null), createdAt, updatedAt, archived.

        ``wanted`` None means the default read set; ``all_set`` returns every set value (what a
        write answers). Removed properties are never returned.
        """
        values = contact.props if props is None else props
        exists = self.schema.exists
        if all_set:
            shown: dict[str, str | None] = {k: v for k, v in values.items() if exists(k)}
        else:
            names = list(self.default_read) if wanted is None else wanted
            shown = {name: values.get(name) for name in names if exists(name)}
        body: dict[str, Any] = {
            "id": str(contact.id),
            "properties": shown,
            "createdAt": iso_ms(contact.created_ms),
            "updatedAt": values.get(self.modified_property, iso_ms(contact.updated_ms)),
            "archived": contact.archived_ms is not None,
        }
        if contact.archived_ms is not None:
            body["archivedAt"] = iso_ms(contact.archived_ms)
        return body

    @staticmethod
    def history(contact: Contact, name: str) -> list[dict[str, Any]]:
        """The values ``name`` had, newest first, as far back as the kept versions go (the
        sandbox keeps the last few minutes of writes; the oldest kept value stands for all
        earlier ones)."""
        changes: list[dict[str, Any]] = []
        previous: str | None = None
        for written, props in contact.versions:
            value = props.get(name) if props is not None else None
            if value is not None and value != previous:
                changes.append({"value": value, "timestamp": iso_ms(written), "sourceType": "API"})
            previous = value
        return changes[::-1]

    # ----------------------------------------------------------------- writing

    def prepare(self, raw: Any) -> Props:
        """Validated, normalised property values of a write (raises the HubSpot 400)."""
        if raw is None:
            raw = {}
        clean, problems = self.schema.normalise(raw)
        if problems:
            raise property_errors(problems)
        return clean

    def check_email_free(self, email: str | None, own_id: int | None) -> None:
        """409 CONFLICT when another live contact already has ``email``."""
        if not email:
            return
        existing = self.by_email.get(email)
        if existing is not None and existing != own_id:
            raise _conflict(existing)

    @staticmethod
    def check_creatable(clean: Props) -> None:
        """A contact needs at least one of email, firstname, lastname (facts §1)."""
        if not any(clean.get(name) for name in ("email", "firstname", "lastname")):
            raise validation_error(
                "A contact needs at least one of the properties email, firstname or lastname"
            )

    def create(self, raw: Any) -> Contact:
        """POST create: validate, check the email is free, store."""
        clean = self.prepare(raw)
        self.check_creatable(clean)
        self.check_email_free(clean.get("email"), None)
        return self.insert(clean)

    def insert(self, clean: Props) -> Contact:
        """Store a new contact from already validated values."""
        now = self.now_ms()
        contact_id = self._next_id
        self._next_id += 1
        stamp = iso_ms(now)
        props = {k: v for k, v in clean.items() if v != ""}
        props.update(
            {"createdate": stamp, self.modified_property: stamp, "hs_object_id": str(contact_id)}
        )
        if "hubspot_owner_id" in props:
            props[OWNER_ASSIGNED_DATE] = stamp
        self.derive(props, None, now)
        return self._store(props, now, now)

    def derive(self, props: Props, old: Props | None, now: int) -> None:
        """Set the values HubSpot computes from the others on a write (``old`` None: a create).
        Contacts have none here; deals do (:class:`~leadrelay.sandbox.hubspot.deals.DealStore`).
        """

    def _store(self, props: Props, created_ms: int, now: int) -> Contact:
        contact_id = int(props["hs_object_id"])
        contact = Contact(contact_id, props, created_ms, now)
        contact.versions.append((now, props))
        self.contacts[contact_id] = contact
        self.order.append(contact_id)
        for email in _emails(props):
            self.by_email[email] = contact_id
        self.index.update(contact_id, props)
        return contact

    def update(self, key: str, raw: Any, id_property: str | None = None) -> Contact:
        """PATCH: update by record id or email."""
        contact = self.find(key, id_property)
        clean = self.prepare(raw)
        self.check_email_free(clean.get("email"), contact.id)
        self.apply(contact, clean)
        return contact

    def apply(self, contact: Contact, clean: Props) -> None:
        """Write validated values onto ``contact`` with HubSpot's business rules."""
        old = contact.props
        changes = dict(clean)
        stage = changes.get("lifecyclestage")
        current = old.get("lifecyclestage")
        if stage and current:
            # Lifecycle stage only moves forward; a backward write is silently ignored
            # (facts §1 "Enumerations and business rules").
            new_rank = self.schema.stage_rank(stage)
            old_rank = self.schema.stage_rank(current)
            if new_rank is not None and old_rank is not None and new_rank < old_rank:
                del changes["lifecyclestage"]
        if "hs_analytics_source" in changes and changes["hs_analytics_source"] != old.get(
            "hs_analytics_source", ""
        ):
            # The drill-downs belong to the source and are cleared when it changes (facts §1).
            changes.setdefault("hs_analytics_source_data_1", "")
            changes.setdefault("hs_analytics_source_data_2", "")
        props = dict(old)
        for name, value in changes.items():
            if value == "":
                props.pop(name, None)
            else:
                props[name] = value
        now = max(self.now_ms(), contact.updated_ms + 1)
        self.derive(props, old, now)
        if props == old:
            return
        props[self.modified_property] = iso_ms(now)
        owner = props.get("hubspot_owner_id")
        if owner != old.get("hubspot_owner_id"):
            # HubSpot stamps "Owner assigned date" whenever the owner is set or changed, and
            # clears it with the owner.
            if owner is None:
                props.pop(OWNER_ASSIGNED_DATE, None)
            else:
                props[OWNER_ASSIGNED_DATE] = iso_ms(now)
        old_email, new_email = old.get("email"), props.get("email")
        if old_email != new_email:
            if old_email is not None and self.by_email.get(old_email) == contact.id:
                del self.by_email[old_email]
            if new_email is not None:
                self.by_email[new_email] = contact.id
        contact.props = props
        contact.updated_ms = now
        self._remember(contact, now, props)
        self.index.update(contact.id, props)

    def archive(self, contact: Contact) -> None:
        """Archive (soft-delete) a contact; its email becomes free again."""
        if contact.archived_ms is not None:
            return
        self._retire(contact, max(self.now_ms(), contact.updated_ms + 1))

    def _retire(self, contact: Contact, now: int) -> None:
        """Take ``contact`` out of reads, search and the email index (archived or merged)."""
        contact.archived_ms = now
        for email in _emails(contact.props):
            if self.by_email.get(email) == contact.id:
                del self.by_email[email]
        self._remember(contact, now, None)
        self.index.update(contact.id, None)

    def merge(self, body: Any) -> Contact:
        """``POST …/merge``: merge ``objectIdToMerge`` into ``primaryObjectId``.

        As HubSpot merges contacts since 2025 (changelog "Updated merge functionality for
        contacts and companies"): the result is a NEW record with a new id; both former records
        are archived and their ids redirect to it; the primary's values win and values only the
        other record has are kept; ``hs_merged_object_ids`` lists every id merged into it
        (``;``-separated), and the other record's email becomes an additional email. The older
        create date is kept.
        """
        if not isinstance(body, dict):
            raise validation_error(
                "Invalid input JSON: expected primaryObjectId and objectIdToMerge"
            )
        keys = []
        for name in ("primaryObjectId", "objectIdToMerge"):
            raw = body.get(name)
            if isinstance(raw, bool) or not isinstance(raw, str | int) or not str(raw).strip():
                raise validation_error(f"{name} is required and must be a record id")
            keys.append(str(raw).strip())
        primary, other = self.find(keys[0]), self.find(keys[1])
        if primary.id == other.id:
            raise validation_error(
                f"Cannot merge a contact with itself: {keys[0]} and {keys[1]} are contact "
                f"{primary.id}"
            )
        now = max(self.now_ms(), primary.updated_ms + 1, other.updated_ms + 1)
        props = {**other.props, **primary.props}
        merged_ids = {primary.id, other.id}
        extra_emails: list[str] = []
        for source in (primary, other):
            merged_ids.update(int(i) for i in _split(source.props.get(MERGED_OBJECT_IDS)))
            extra_emails.extend(_emails(source.props))
        main_email = props.get("email")
        extra = [e for e in dict.fromkeys(extra_emails) if e != main_email]
        if extra:
            props[ADDITIONAL_EMAILS] = ";".join(extra)
        props[MERGED_OBJECT_IDS] = ";".join(str(i) for i in sorted(merged_ids))
        created_ms = min(primary.created_ms, other.created_ms)
        new_id = self._next_id
        self._next_id += 1
        props.update(
            createdate=iso_ms(created_ms), lastmodifieddate=iso_ms(now), hs_object_id=str(new_id)
        )
        for source in (primary, other):
            self._retire(source, now)
            source.merged_into = new_id
        return self._store(props, created_ms, now)

    @staticmethod
    def _remember(contact: Contact, now: int, props: Props | None) -> None:
        versions = contact.versions
        versions.append((now, props))
        horizon = now - VERSION_RETENTION_MS
        while len(versions) > 1 and versions[1][0] <= horizon:
            versions.pop(0)

    # ----------------------------------------------------------------- batches

    @staticmethod
    def batch_inputs(body: Any) -> list[Any]:
        """The ``inputs`` list of a batch body, at most 100 of them."""
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise validation_error("Invalid input JSON: the body needs an inputs list")
        inputs: list[Any] = body["inputs"]
        if len(inputs) > BATCH_LIMIT:
            raise validation_error(
                f"Too many inputs: {len(inputs)}. The number of inputs in a batch request may "
                f"not exceed {BATCH_LIMIT}."
            )
        return inputs

    @staticmethod
    def _partial_allowed(inputs: list[Any]) -> bool:
        # 207 partial results only when every input carries a unique objectWriteTraceId;
        # otherwise one bad input fails the whole batch (facts §1, §5.3).
        traces = [i.get("objectWriteTraceId") if isinstance(i, dict) else None for i in inputs]
        return all(isinstance(t, str) and t for t in traces) and len(set(traces)) == len(traces)

    def _envelope(
        self, started: int, results: list[dict[str, Any]], errors: list[dict[str, Any]]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso_ms(started),
            "completedAt": iso_ms(self.now_ms()),
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        return body

    @staticmethod
    def _trace(item: Any) -> str | None:
        trace = item.get("objectWriteTraceId") if isinstance(item, dict) else None
        return trace if isinstance(trace, str) else None

    def _with_trace(self, rendered: dict[str, Any], item: Any) -> dict[str, Any]:
        trace = self._trace(item)
        if trace is not None:
            rendered["objectWriteTraceId"] = trace
        return rendered

    def batch_read(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``batch/read``: 200, or 207 with OBJECT_NOT_FOUND for the ids not found."""
        started = self.now_ms()
        inputs = self.batch_inputs(body)
        id_property = body.get("idProperty")
        archived = bool(body.get("archived", False))
        wanted = wanted_properties(body.get("properties"))
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in inputs:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                raise validation_error("Each input of a batch read needs an id")
            key = str(item["id"])
            try:
                contact = self.find(key, id_property, archived)
            except HubSpotError as exc:
                if exc.status != 404:
                    raise
                missing.append(key)
                continue
            results.append(self.render(contact, wanted))
        errors = []
        if missing:
            errors.append(
                not_found(
                    f"Could not get some {self.batch_label} objects, they may be deleted or not "
                    "exist. Check that ids are valid."
                ).batch_error({"ids": missing})
            )
        return (207 if errors else 200), self._envelope(started, results, errors)

    def batch_create(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``batch/create``: 201, 207 with per-trace-id errors, or the first error for all."""
        started = self.now_ms()
        inputs = self.batch_inputs(body)
        planned: list[tuple[Any, Props]] = []
        failures: list[tuple[Any, HubSpotError]] = []
        emails_in_batch: set[str] = set()
        for item in inputs:
            try:
                if not isinstance(item, dict):
                    raise validation_error("Each input of a batch create must be an object")
                clean = self.prepare(item.get("properties"))
                self.check_creatable(clean)
                email = clean.get("email")
                self.check_email_free(email, None)
                if email:
                    if email in emails_in_batch:
                        raise validation_error(f"Duplicate email {email} in the batch input")
                    emails_in_batch.add(email)
                planned.append((item, clean))
            except HubSpotError as exc:
                failures.append((item, exc))
        if failures and not self._partial_allowed(inputs):
            raise failures[0][1]
        results = [
            self._with_trace(self.render(self.insert(clean), None, all_set=True), item)
            for item, clean in planned
        ]
        errors = [
            exc.batch_error({"objectWriteTraceId": [self._trace(item) or ""]})
            for item, exc in failures
        ]
        return (207 if errors else 201), self._envelope(started, results, errors)

    def _duplicate_ids(self, keys: list[str]) -> None:
        duplicates = sorted(key for key, n in Counter(keys).items() if n > 1)
        if duplicates:
            raise validation_error(f"Duplicate IDs found in batch input: {duplicates}")

    def batch_update(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``batch/update`` by record id (or ``idProperty`` email): 200 or 207."""
        started = self.now_ms()
        inputs = self.batch_inputs(body)
        keys: list[str] = []
        for item in inputs:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                raise validation_error("Each input of a batch update needs an id and properties")
            keys.append(str(item["id"]).lower())
        self._duplicate_ids(keys)
        planned: list[tuple[Any, Contact, Props]] = []
        failures: list[tuple[Any, HubSpotError, dict[str, list[str]]]] = []
        for item in inputs:
            key = str(item["id"])
            try:
                contact = self.find(key, item.get("idProperty"))
            except HubSpotError as exc:
                if exc.status != 404:
                    raise
                failures.append((item, exc, {"ids": [key]}))
                continue
            try:
                clean = self.prepare(item.get("properties"))
                self.check_email_free(clean.get("email"), contact.id)
                planned.append((item, contact, clean))
            except HubSpotError as exc:
                context = {"objectWriteTraceId": [self._trace(item) or ""]}
                failures.append((item, exc, context))
        validation = [f for f in failures if f[1].status != 404]
        if validation and not self._partial_allowed(inputs):
            raise validation[0][1]
        results = []
        for item, contact, clean in planned:
            self.apply(contact, clean)
            results.append(self._with_trace(self.render(contact, None, all_set=True), item))
        errors = [exc.batch_error(context) for _, exc, context in failures]
        return (207 if errors else 200), self._envelope(started, results, errors)

    def batch_upsert(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``batch/upsert`` with ``idProperty: "email"``: results carry ``new``; 200 or 207."""
        started = self.now_ms()
        inputs = self.batch_inputs(body)
        keys: list[str] = []
        for item in inputs:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise validation_error("Each input of a batch upsert needs an id and properties")
            if item.get("idProperty") != "email":
                # idProperty must be a unique-valued property; for contacts that is email
                # (facts §1 "Records, batch, upsert").
                raise validation_error(
                    f"idProperty {item.get('idProperty')!r} cannot be used for upsert; "
                    "contacts upsert by the unique property email"
                )
            keys.append(item["id"].strip().lower())
        self._duplicate_ids(keys)
        planned: list[tuple[Any, Contact | None, Props]] = []
        failures: list[tuple[Any, HubSpotError]] = []
        for item, email in zip(inputs, keys, strict=True):
            try:
                props = item.get("properties") or {}
                if not isinstance(props, dict):
                    raise validation_error("properties must be an object")
                clean = self.prepare({**props, "email": email})
                if clean["email"] != email:
                    raise validation_error(f"Email address {email} is invalid")
                existing = self.by_email.get(email)
                contact = self.contacts[existing] if existing is not None else None
                planned.append((item, contact, clean))
            except HubSpotError as exc:
                failures.append((item, exc))
        if failures and not self._partial_allowed(inputs):
            raise failures[0][1]
        results = []
        for item, found, clean in planned:
            if found is None:
                contact = self.insert(clean)
            else:
                contact = found
                self.apply(contact, clean)
            rendered = self.render(contact, None, all_set=True)
            rendered["new"] = found is None
            results.append(self._with_trace(rendered, item))
        errors = [
            exc.batch_error({"objectWriteTraceId": [self._trace(item) or ""]})
            for item, exc in failures
        ]
        return (207 if errors else 200), self._envelope(started, results, errors)

    def batch_archive(self, body: Any) -> None:
        """``batch/archive``: archive every id found (unknown ids are ignored, 204)."""
        for item in self.batch_inputs(body):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                raise validation_error("Each input of a batch archive needs an id")
            key = str(item["id"])
            contact = self.contacts.get(int(key)) if key.isdigit() else None
            if contact is not None:
                self.archive(contact)
