"""The emulated HubSpot companies object (``/crm/v3/objects/companies``).

What leadrelay's account-owner routing (and ``hubspot-api-client``'s
``crm.companies.basic_api`` / ``batch_api``) uses: create, read by id, update, archive, a paged
list (``limit`` at most 100, ``properties``, ``paging.next.after``) and ``batch/read``. The
company properties (``/crm/v3/properties/companies``) are the few a new portal has that matter
here: ``name``, ``domain``, ``website``, ``phone``, ``industry``, ``city``, ``country``,
``hubspot_owner_id`` and the HubSpot-set ``createdate``, ``hs_lastmodifieddate``,
``hs_object_id``. Every method runs under the emulator's lock and answers HubSpot-shaped JSON
or raises :class:`HubSpotError`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from leadrelay.sandbox.hubspot.errors import (
    HubSpotError,
    not_found,
    property_errors,
    property_problem,
    validation_error,
)
from leadrelay.sandbox.hubspot.schema import (
    Schema,
    hubspot_set_properties,
    iso_ms,
    make_property,
    seeded_owner_options,
)
from leadrelay.sandbox.hubspot.store import ContactStore, wanted_properties

OWNER = "hubspot_owner_id"
#: What a read returns when it names no properties (HubSpot's default company read set).
DEFAULT_COMPANY_PROPERTIES = ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name")
#: HubSpot company record ids are large numbers; the sandbox's start here.
FIRST_COMPANY_ID = 3_000_001


def company_properties() -> dict[str, dict[str, Any]]:
    """The company properties of a fresh sandbox account, by name."""
    owner_options = seeded_owner_options()
    info = "companyinformation"
    props = [
        make_property("name", "Company name", group=info),
        make_property("domain", "Company Domain Name", group=info),
        make_property("website", "Website URL", group=info),
        make_property("phone", "Phone Number", "string", "phonenumber", group=info),
        make_property("industry", "Industry", group=info),
        make_property("city", "City", group=info),
        make_property("country", "Country/Region", group=info),
        make_property(
            OWNER,
            "Company owner",
            "enumeration",
            "select",
            group=info,
            options=owner_options,
            external_options=True,
        ),
        *hubspot_set_properties(info),
    ]
    return {p["name"]: p for p in props}


@dataclass
class Company:
    """One company: its set (non-empty) property values and timestamps."""

    id: int
    props: dict[str, str]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None


def _not_found_by_id(key: str) -> HubSpotError:
    return not_found("Object not found.  objectId are usually numeric.", context={"id": [key]})


class CompanyStore:
    """Companies of the sandbox account, by id (ids grow with creation)."""

    def __init__(self, now_ms: Callable[[], int], owner_ids: Callable[[], Collection[str]]) -> None:
        self.now_ms = now_ms
        self.owner_ids = owner_ids
        self.schema = Schema(company_properties())
        self.companies: dict[int, Company] = {}
        self._next_id = FIRST_COMPANY_ID

    # ----------------------------------------------------------------- writing

    def prepare(self, raw: Any) -> dict[str, str]:
        """Validated property values of a write (raises HubSpot's "Property values were not
        valid" 400 listing every problem)."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise validation_error("Invalid input JSON: properties must be an object")
        values = dict(raw)
        owner = values.pop(OWNER, None) if OWNER in self.schema.properties else None
        clean, problems = self.schema.normalise(values)
        text = "" if owner is None else str(owner).strip()
        if text and text not in self.owner_ids():
            # The error code is the one HubSpot users report for an owner id that is no owner
            # of the portal (HubSpot Community, "invalid_owner_id"); the wording is unverified.
            problems.append(
                property_problem(OWNER, "INVALID_OWNER_ID", f"{text} is not a valid owner id")
            )
        elif owner is not None:
            clean[OWNER] = text
        if problems:
            raise property_errors(problems)
        return clean

    def create(self, body: Any) -> Company:
        """``POST /crm/v3/objects/companies``: validate the properties and store the company."""
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an object with properties")
        clean = self.prepare(body.get("properties"))
        now = self.now_ms()
        company = Company(self._next_id, {k: v for k, v in clean.items() if v != ""}, now, now)
        self._next_id += 1
        stamp = iso_ms(now)
        company.props.update(
            createdate=stamp, hs_lastmodifieddate=stamp, hs_object_id=str(company.id)
        )
        self.companies[company.id] = company
        return company

    def update(self, key: str, body: Any) -> Company:
        """``PATCH /crm/v3/objects/companies/{id}``: ``""`` clears a value."""
        company = self.find(key)
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: expected an object with properties")
        clean = self.prepare(body.get("properties"))
        props = dict(company.props)
        for name, value in clean.items():
            if value == "":
                props.pop(name, None)
            else:
                props[name] = value
        if props != company.props:
            now = max(self.now_ms(), company.updated_ms + 1)
            props["hs_lastmodifieddate"] = iso_ms(now)
            company.props = props
            company.updated_ms = now
        return company

    def archive(self, key: str) -> None:
        """``DELETE /crm/v3/objects/companies/{id}``: archive it (an unknown id is ignored)."""
        company = self.companies.get(int(key)) if key.isdigit() else None
        if company is not None and company.archived_ms is None:
            company.archived_ms = max(self.now_ms(), company.updated_ms + 1)

    # ----------------------------------------------------------------- reading

    def find(self, key: str, id_property: str | None = None, archived: bool = False) -> Company:
        """The company with record id ``key``."""
        if id_property not in (None, "", "hs_object_id"):
            if id_property not in self.schema.properties:
                raise validation_error(f'Property "{id_property}" does not exist')
            raise validation_error(
                f"{id_property} is not a unique-valued property; companies can be identified "
                "by hs_object_id"
            )
        company = self.companies.get(int(key)) if key.isdigit() else None
        if company is None or (company.archived_ms is not None) != archived:
            raise _not_found_by_id(key)
        return company

    def render(
        self, company: Company, wanted: list[str] | None, *, all_set: bool = False
    ) -> dict[str, Any]:
        """A SimplePublicObject: the wanted (or default) properties, or every set one."""
        exists = self.schema.exists
        if all_set:
            shown: dict[str, str | None] = {k: v for k, v in company.props.items() if exists(k)}
        else:
            names = list(DEFAULT_COMPANY_PROPERTIES) if wanted is None else wanted
            shown = {name: company.props.get(name) for name in names if exists(name)}
        body: dict[str, Any] = {
            "id": str(company.id),
            "properties": shown,
            "createdAt": iso_ms(company.created_ms),
            "updatedAt": iso_ms(company.updated_ms),
            "archived": company.archived_ms is not None,
        }
        if company.archived_ms is not None:
            body["archivedAt"] = iso_ms(company.archived_ms)
        return body

    def page(
        self, limit: int, after: str | None, archived: bool
    ) -> tuple[list[Company], str | None]:
        """Up to ``limit`` companies in id order from the cursor ``after``; the next cursor."""
        if after and not after.isdigit():
            raise validation_error(f"after must be a numeric cursor, got {after!r}")
        start = int(after) if after else 0
        found: list[Company] = []
        for company_id in sorted(self.companies):
            company = self.companies[company_id]
            if company_id < start or (company.archived_ms is not None) != archived:
                continue
            if len(found) == limit:
                return found, str(company_id)
            found.append(company)
        return found, None

    def batch_read(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``batch/read``: 200, or 207 with OBJECT_NOT_FOUND naming the ids not found."""
        started = self.now_ms()
        inputs = ContactStore.batch_inputs(body)
        wanted = wanted_properties(body.get("properties"))
        archived = bool(body.get("archived", False))
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in inputs:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                raise validation_error("Each input of a batch read needs an id")
            key = str(item["id"])
            try:
                company = self.find(key, body.get("idProperty"), archived)
            except HubSpotError as exc:
                if exc.status != 404:
                    raise
                missing.append(key)
                continue
            results.append(self.render(company, wanted))
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso_ms(started),
            "completedAt": iso_ms(self.now_ms()),
        }
        if missing:
            # Worded like the contacts' batch read (facts §1); the COMPANY wording is unverified.
            error = not_found(
                "Could not get some COMPANY objects, they may be deleted or not exist. "
                "Check that ids are valid."
            ).batch_error({"ids": missing})
            answer["numErrors"] = 1
            answer["errors"] = [error]
            return 207, answer
        return 200, answer
