"""Search answered from the property indexes gives exactly what a scan of every contact gives."""

from __future__ import annotations

from typing import Any

import pytest

from leadrelay.sandbox.hubspot.schema import Schema, iso_ms
from leadrelay.sandbox.hubspot.search import search
from leadrelay.sandbox.hubspot.store import ContactStore

START_MS = 1_767_225_600_000
STAGES = ["subscriber", "lead", "marketingqualifiedlead", "customer"]


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture(scope="module")
def store() -> ContactStore:
    """Contacts written over time, several sharing a millisecond, then edited, archived and
    merged; the clock then moves on so a 1 ms index lag sees every current value (a scan)."""
    clock = Clock()
    made = ContactStore(Schema(), clock=clock)
    contacts = []
    for n in range(60):
        clock.ms += 0 if n % 4 else 7  # four contacts per millisecond
        values = {"email": f"c{n}@example.com", "lifecyclestage": STAGES[n % len(STAGES)]}
        if n % 3:
            values["city"] = ["Oslo", "Lima", "Pune"][n % 3]
        contacts.append(made.insert(values))
    for contact in contacts[::5]:
        clock.ms += 3
        made.apply(contact, {"firstname": "Edited", "city": ""})
    for contact in contacts[7::11]:
        made.archive(contact)
    clock.ms += 1
    made.merge({"primaryObjectId": str(contacts[2].id), "objectIdToMerge": str(contacts[3].id)})
    clock.ms += 10_000
    # Searches filtering on a moment shared by several contacts (42, 63) test the index edges.
    assert sum(c.props["lastmodifieddate"] == moment(42) for c in contacts) > 1
    return made


def moment(offset_ms: int) -> str:
    return iso_ms(START_MS + offset_ms)


def group(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"filters": list(filters)}


def where(prop: str, operator: str, **values: Any) -> dict[str, Any]:
    return {"propertyName": prop, "operator": operator, **values}


SEARCHES: dict[str, dict[str, Any]] = {
    "keyset page": {
        "filterGroups": [group(where("lastmodifieddate", "GTE", value=moment(42)))],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "limit": 7,
    },
    "keyset second page": {
        "filterGroups": [group(where("lastmodifieddate", "GT", value=moment(42)))],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "limit": 7,
        "after": "7",
    },
    "descending": {
        "filterGroups": [group(where("lastmodifieddate", "LT", value=moment(63)))],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
        "limit": 9,
    },
    "before a moment": {
        "filterGroups": [group(where("lastmodifieddate", "LT", value=moment(63)))],
        "sorts": ["lastmodifieddate"],
        "limit": 100,
    },
    "one millisecond by id": {
        "filterGroups": [
            group(
                where("lastmodifieddate", "EQ", value=moment(14)),
                where("hs_object_id", "GT", value="1005"),
            )
        ],
        "sorts": ["hs_object_id"],
    },
    "email EQ any case": {"filterGroups": [group(where("email", "EQ", value="C9@Example.com"))]},
    "stage IN, unsorted": {
        "filterGroups": [group(where("lifecyclestage", "IN", values=["lead", "customer"]))],
        "limit": 50,
    },
    "two groups": {
        "filterGroups": [
            group(where("city", "EQ", value="Oslo")),
            group(where("createdate", "BETWEEN", value=moment(10), highValue=moment(30))),
        ],
        "limit": 100,
    },
    "a group no index answers": {
        "filterGroups": [
            group(where("city", "EQ", value="Lima")),
            group(where("city", "NOT_HAS_PROPERTY")),
        ],
        "limit": 100,
    },
    "top-level filters": {
        "filters": [
            where("lifecyclestage", "EQ", value="lead"),
            where("city", "HAS_PROPERTY"),
        ],
        "limit": 100,
    },
    "sorted on another property": {
        "filterGroups": [group(where("hs_object_id", "LTE", value="1030"))],
        "sorts": [{"propertyName": "email", "direction": "DESCENDING"}],
        "limit": 100,
    },
    "merged ids listed": {
        "filterGroups": [group(where("hs_merged_object_ids", "HAS_PROPERTY"))],
        "properties": ["hs_merged_object_ids", "email"],
    },
}


@pytest.mark.parametrize("name", list(SEARCHES))
def test_an_indexed_search_answers_as_a_scan(store: ContactStore, name: str) -> None:
    body = SEARCHES[name]
    indexed = search(store, body, 0.0)
    assert indexed["results"], "the search should find something"
    assert indexed == search(store, body, 0.001)
