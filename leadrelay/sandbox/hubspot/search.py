"""``POST /crm/v3/objects/contacts/search`` over the contact store.

Index lag (``search_lag_s``): search sees each contact as it was at ``now - lag``. A contact
created within the lag is invisible; one updated within the lag shows its previously indexed
values (and matches filters by them); one archived within the lag still shows. Each record keeps
its recent versions with their write times for this (see ``ContactStore._remember``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from leadrelay.sandbox.hubspot.errors import validation_error
from leadrelay.sandbox.hubspot.schema import (
    DEFAULT_READ_PROPERTIES,
    SEARCHABLE_PROPERTIES,
    iso_ms,
    parse_datetime_ms,
)
from leadrelay.sandbox.hubspot.store import Contact, ContactStore, Props, wanted_properties

# Filter limits since Aug 2024: 5 groups, 10 filters per group, 25 in all (facts §1 "Search").
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
MAX_LIMIT = 200
#: no query pages past this many results (facts §1 "Search")
MAX_RESULTS = 10_000

OPERATORS = {
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
}
_TOKEN_SPLIT = re.compile(r"[^0-9a-z_*?]+")

Key = float | str
Matcher = Callable[[Props], bool]


def _key_function(kind: str, prop: str) -> Callable[[str], Key]:
    """How values of a property of type ``kind`` compare (used for records and filter values)."""
    if kind == "number":

        def number(value: str) -> Key:
            try:
                return float(value)
            except ValueError:
                raise validation_error(
                    f"{value} is not a valid number for the number property {prop}"
                ) from None

        return number
    if kind in {"datetime", "date"}:
        # Stored values share one ISO format, so string order is time order; filter values may be
        # epoch ms or ISO (facts §1 "Search" example uses epoch ms strings).
        width = 10 if kind == "date" else 24

        def moment(value: str) -> Key:
            ms = parse_datetime_ms(value)
            if ms is None:
                raise validation_error(f"{value} is not a valid date or datetime for {prop}")
            return iso_ms(ms)[:width]

        return moment
    return str.casefold


def _tokens(value: str) -> set[str]:
    lowered = value.casefold()
    return {t for t in _TOKEN_SPLIT.split(lowered) if t} | {lowered}


def _contains_token(value: str, wanted: str) -> bool:
    wanted = wanted.casefold()
    tokens = _tokens(value)
    if "*" in wanted or "?" in wanted:
        return any(fnmatch.fnmatchcase(t, wanted) for t in tokens)
    return wanted in tokens


class _Request:
    def __init__(self, store: ContactStore, body: Any) -> None:
        if not isinstance(body, dict):
            raise validation_error("Invalid input JSON: the search body must be an object")
        self.store = store
        self.body = body
        self.limit = self._limit(body.get("limit", 10))
        self.after = self._after(body.get("after"))
        if self.after + self.limit > MAX_RESULTS:
            raise validation_error(
                f"Paging past {MAX_RESULTS} results is not supported: after={self.after} "
                f"with limit={self.limit}. Narrow the filters instead."
            )
        self.properties = wanted_properties(body.get("properties"))
        self.groups = self._groups(body.get("filterGroups") or [])
        self.sorts = self._sorts(body.get("sorts") or [])
        query = body.get("query")
        if query is not None and not isinstance(query, str):
            raise validation_error("query must be a string")
        self.query = [t for t in _TOKEN_SPLIT.split(query.casefold()) if t] if query else []

    @staticmethod
    def _limit(raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
            raise validation_error(f"limit must be a whole number, got {raw!r}")
        limit = int(raw)
        if limit > MAX_LIMIT:
            raise validation_error(f"limit must be at most {MAX_LIMIT}, got {limit}")
        return limit

    @staticmethod
    def _after(raw: Any) -> int:
        if raw is None or raw == "":
            return 0
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
            raise validation_error(f"after must be a numeric paging offset, got {raw!r}")
        return int(raw)

    def _kind(self, prop: Any) -> tuple[str, str]:
        if not isinstance(prop, str) or not prop:
            raise validation_error("Each filter and sort needs a propertyName")
        definition = self.store.schema.properties.get(prop)
        if definition is None:
            raise validation_error(f'Property "{prop}" does not exist')
        return prop, str(definition["type"])

    def _groups(self, raw: Any) -> list[list[Matcher]]:
        if not isinstance(raw, list):
            raise validation_error("filterGroups must be a list")
        if len(raw) > MAX_GROUPS:
            raise validation_error(
                f"Too many filter groups: {len(raw)}. A search may have at most {MAX_GROUPS}."
            )
        total = 0
        groups = []
        for group in raw:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                raise validation_error("Each filter group needs a filters list")
            if len(filters) > MAX_FILTERS_PER_GROUP:
                raise validation_error(
                    f"Too many filters in a group: {len(filters)}. A group may have at most "
                    f"{MAX_FILTERS_PER_GROUP}."
                )
            total += len(filters)
            if total > MAX_FILTERS:
                raise validation_error(
                    f"Too many filters: a search may have at most {MAX_FILTERS} in all groups."
                )
            groups.append([self._filter(f) for f in filters])
        return groups

    def _filter(self, raw: Any) -> Matcher:
        if not isinstance(raw, dict):
            raise validation_error("Each filter must be an object")
        prop, kind = self._kind(raw.get("propertyName"))
        operator = raw.get("operator", "EQ")
        if operator not in OPERATORS:
            raise validation_error(
                f"Invalid filter operator {operator!r}; allowed: {', '.join(sorted(OPERATORS))}"
            )
        key = _key_function(kind, prop)

        def need(name: str) -> str:
            value = raw.get(name)
            if value is None or isinstance(value, dict | list):
                raise validation_error(f"The {operator} filter on {prop} needs a {name}")
            return str(value).lower() if isinstance(value, bool) else str(value)

        if operator == "HAS_PROPERTY":
            return lambda p: prop in p
        if operator == "NOT_HAS_PROPERTY":
            return lambda p: prop not in p
        if operator in {"IN", "NOT_IN"}:
            values = raw.get("values")
            if not isinstance(values, list) or not values:
                raise validation_error(f"The {operator} filter on {prop} needs a values list")
            keys = {key(str(v)) for v in values}
            if operator == "IN":
                return lambda p: prop in p and key(p[prop]) in keys
            return lambda p: prop not in p or key(p[prop]) not in keys
        if operator in {"CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}:
            token = need("value")
            if operator == "CONTAINS_TOKEN":
                return lambda p: prop in p and _contains_token(p[prop], token)
            return lambda p: prop not in p or not _contains_token(p[prop], token)
        low = key(need("value"))
        if operator == "BETWEEN":
            high = key(need("highValue"))
            return lambda p: prop in p and low <= key(p[prop]) <= high  # type: ignore[operator]
        compare: dict[str, Callable[[Key], bool]] = {
            "EQ": lambda v: v == low,
            "LT": lambda v: v < low,  # type: ignore[operator]
            "LTE": lambda v: v <= low,  # type: ignore[operator]
            "GT": lambda v: v > low,  # type: ignore[operator]
            "GTE": lambda v: v >= low,  # type: ignore[operator]
        }
        if operator == "NEQ":
            # NEQ also matches records without a value.
            return lambda p: prop not in p or key(p[prop]) != low
        test = compare[operator]
        return lambda p: prop in p and test(key(p[prop]))

    def _sorts(self, raw: Any) -> list[tuple[str, Callable[[str], Key], bool]]:
        if not isinstance(raw, list):
            raise validation_error("sorts must be a list")
        sorts = []
        for item in raw:
            name: Any
            if isinstance(item, str):
                descending = item.startswith("-")
                name = item.lstrip("-")
            elif isinstance(item, dict):
                name = item.get("propertyName")
                direction = item.get("direction", "ASCENDING")
                if direction not in {"ASCENDING", "DESCENDING"}:
                    raise validation_error(
                        f"Sort direction must be ASCENDING or DESCENDING, got {direction!r}"
                    )
                descending = direction == "DESCENDING"
            else:
                raise validation_error("Each sort must be a property name or an object")
            prop, kind = self._kind(name)
            sorts.append((prop, _key_function(kind, prop), descending))
        return sorts

    def matches(self, props: Props) -> bool:
        if self.groups and not any(all(f(props) for f in group) for group in self.groups):
            return False
        if self.query:
            text = " ".join(props.get(name, "") for name in SEARCHABLE_PROPERTIES).casefold()
            return all(token in text for token in self.query)
        return True


def _indexed(contact: Contact, cutoff: int | None) -> Props | None:
    """The contact's properties as the index holds them at ``cutoff`` (None: not visible)."""
    if cutoff is None:
        return contact.props if contact.archived_ms is None else None
    for written, props in reversed(contact.versions):
        if written <= cutoff:
            return props
    return None


def search(store: ContactStore, body: Any, lag_s: float) -> dict[str, Any]:
    """Run one search request; returns ``{total, results, paging?}``."""
    request = _Request(store, body)
    cutoff = store.now_ms() - int(lag_s * 1000) if lag_s > 0 else None
    hits: list[tuple[Contact, Props]] = []
    for contact_id in store.order:
        contact = store.contacts[contact_id]
        props = _indexed(contact, cutoff)
        if props is not None and request.matches(props):
            hits.append((contact, props))
    for prop, key, descending in reversed(request.sorts):
        present = [h for h in hits if prop in h[1]]
        absent = [h for h in hits if prop not in h[1]]
        present.sort(key=lambda h, k=key, p=prop: k(h[1][p]), reverse=descending)  # type: ignore[misc]
        # Records without the value sort after those with one, in either direction.
        hits = present + absent
    page = hits[request.after : request.after + request.limit]
    wanted = request.properties if request.properties is not None else DEFAULT_READ_PROPERTIES
    results = [store.render(contact, wanted, props=props) for contact, props in page]
    answer: dict[str, Any] = {"total": len(hits), "results": results}
    end = request.after + len(page)
    if end < len(hits):
        answer["paging"] = {"next": {"after": str(end)}}
    return answer
