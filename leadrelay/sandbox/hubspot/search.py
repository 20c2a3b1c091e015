"""``POST /crm/v3/objects/{contacts,deals}/search`` over the contact (or deal) store.

Index lag (``search_lag_s``): search sees each contact as it was at ``now - lag``. A contact
created within the lag is invisible; one updated within the lag shows its previously indexed
values (and matches filters by them); one archived within the lag still shows. Each record keeps
its recent versions with their write times for this (see ``ContactStore._remember``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leadrelay.sandbox.hubspot.errors import validation_error
from leadrelay.sandbox.hubspot.index import KeyRange, PropertyIndex
from leadrelay.sandbox.hubspot.schema import iso_ms, parse_datetime_ms
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


@dataclass
class _Filter:
    """One filter: its test on a record's values, and the key ranges an index can answer it
    with (None: ``NEQ``, ``NOT_IN``, tokens … need every record)."""

    test: Matcher
    prop: str
    kind: str
    key: Callable[[str], Key]
    ranges: list[KeyRange] | None = field(default=None)


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
        self.groups = self._groups(body.get("filterGroups") or [], body.get("filters"))
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

    def _groups(self, raw: Any, top_level: Any) -> list[list[_Filter]]:
        if not isinstance(raw, list):
            raise validation_error("filterGroups must be a list")
        if top_level is not None:
            # Filters given at the top level, without filterGroups, are applied together (AND),
            # as one group (HubSpot/hubspot-api-nodejs#491: the API accepts them; the search
            # guide shows the form). With filterGroups as well they must hold in every group.
            if not isinstance(top_level, list):
                raise validation_error("filters must be a list")
            if not raw:
                raw = [{"filters": top_level}]
            else:
                raw = [
                    {"filters": [*top_level, *(g.get("filters") or [])]}
                    if isinstance(g, dict)
                    else g
                    for g in raw
                ]
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

    def _filter(self, raw: Any) -> _Filter:
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

        def made(test: Matcher, ranges: list[KeyRange] | None = None) -> _Filter:
            return _Filter(test, prop, kind, key, ranges)

        if operator == "HAS_PROPERTY":
            return made(lambda p: prop in p, [KeyRange()])
        if operator == "NOT_HAS_PROPERTY":
            return made(lambda p: prop not in p)
        if operator in {"IN", "NOT_IN"}:
            values = raw.get("values")
            if not isinstance(values, list) or not values:
                raise validation_error(f"The {operator} filter on {prop} needs a values list")
            keys = {key(str(v)) for v in values}
            if operator == "IN":
                ranges = [KeyRange(k, k) for k in keys]
                return made(lambda p: prop in p and key(p[prop]) in keys, ranges)
            return made(lambda p: prop not in p or key(p[prop]) not in keys)
        if operator in {"CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}:
            token = need("value")
            if operator == "CONTAINS_TOKEN":
                return made(lambda p: prop in p and _contains_token(p[prop], token))
            return made(lambda p: prop not in p or not _contains_token(p[prop], token))
        low = key(need("value"))
        if operator == "BETWEEN":
            high = key(need("highValue"))
            return made(
                lambda p: prop in p and low <= key(p[prop]) <= high,  # type: ignore[operator]
                [KeyRange(low, high)],
            )
        compare: dict[str, Callable[[Key], bool]] = {
            "EQ": lambda v: v == low,
            "LT": lambda v: v < low,  # type: ignore[operator]
            "LTE": lambda v: v <= low,  # type: ignore[operator]
            "GT": lambda v: v > low,  # type: ignore[operator]
            "GTE": lambda v: v >= low,  # type: ignore[operator]
        }
        if operator == "NEQ":
            # NEQ also matches records without a value.
            return made(lambda p: prop not in p or key(p[prop]) != low)
        test = compare[operator]
        bounds = {
            "EQ": KeyRange(low, low),
            "LT": KeyRange(high=low, high_inclusive=False),
            "LTE": KeyRange(high=low),
            "GT": KeyRange(low, low_inclusive=False),
            "GTE": KeyRange(low),
        }
        return made(lambda p: prop in p and test(key(p[prop])), [bounds[operator]])

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
        if self.groups and not any(all(f.test(props) for f in group) for group in self.groups):
            return False
        if self.query:
            text = " ".join(props.get(name, "") for name in self.store.searchable).casefold()
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


def _index_for(store: ContactStore, item: _Filter) -> PropertyIndex | None:
    if item.ranges is None:
        return None
    return store.index.get(item.prop, item.kind, item.key)


def _best_filter(store: ContactStore, group: list[_Filter]) -> tuple[_Filter, PropertyIndex] | None:
    """The group's filter an index answers with the fewest records, with its index."""
    best: tuple[int, _Filter, PropertyIndex] | None = None
    for item in group:
        index = _index_for(store, item)
        if index is None or item.ranges is None:
            continue
        count = index.count(item.ranges)
        if best is None or count < best[0]:
            best = (count, item, index)
    return None if best is None else (best[1], best[2])


def _candidates(store: ContactStore, request: _Request) -> list[int]:
    """Ids of the live contacts that may match, in id order: from the indexes when every
    group has an indexed filter, else every contact."""
    if not request.groups:
        return store.order
    found: set[int] = set()
    for group in request.groups:
        best = _best_filter(store, group)
        if best is None:
            return store.order
        item, index = best
        assert item.ranges is not None
        found |= index.ids(item.ranges)
    return sorted(found)


def _straight_from_index(store: ContactStore, request: _Request) -> dict[str, Any] | None:
    """The answer read straight out of one index, when the search is one indexed filter with
    no free text, sorted (ascending) by the filtered property or not at all; else None."""
    if len(request.groups) != 1 or len(request.groups[0]) != 1 or request.query:
        return None
    item = request.groups[0][0]
    if request.sorts and (
        len(request.sorts) != 1 or request.sorts[0][0] != item.prop or request.sorts[0][2]
    ):
        return None
    if item.ranges is None or len(item.ranges) != 1:
        return None
    index = _index_for(store, item)
    if index is None:
        return None
    start, end = index.bounds(item.ranges[0])
    if request.sorts:
        # Ties on the key come in record-id order, as the stable sort of a scan gives them.
        first = start + request.after
        window = index.entries[first : min(end, first + request.limit)]
        page = [contact_id for _, contact_id in window]
    else:
        # Unsorted answers come in record-id order, as a scan gives them.
        ids = sorted(contact_id for _, contact_id in index.entries[start:end])
        page = ids[request.after : request.after + request.limit]
    hits = [(store.contacts[i], store.contacts[i].props) for i in page]
    return _answer(store, request, hits, end - start)


def _answer(
    store: ContactStore, request: _Request, page: list[tuple[Contact, Props]], total: int
) -> dict[str, Any]:
    wanted = request.properties if request.properties is not None else list(store.default_read)
    results = [store.render(contact, wanted, props=props) for contact, props in page]
    answer: dict[str, Any] = {"total": total, "results": results}
    end = request.after + len(page)
    if end < total:
        answer["paging"] = {"next": {"after": str(end)}}
    return answer


def search(store: ContactStore, body: Any, lag_s: float) -> dict[str, Any]:
    """Run one search request; returns ``{total, results, paging?}``.

    Without index lag the property indexes answer it (see :mod:`.index`); with lag every
    record is looked at as it was indexed ``lag_s`` ago.
    """
    request = _Request(store, body)
    cutoff = store.now_ms() - int(lag_s * 1000) if lag_s > 0 else None
    if cutoff is None:
        straight = _straight_from_index(store, request)
        if straight is not None:
            return straight
        ids = _candidates(store, request)
    else:
        ids = store.order
    hits: list[tuple[Contact, Props]] = []
    for contact_id in ids:
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
    return _answer(store, request, page, len(hits))
