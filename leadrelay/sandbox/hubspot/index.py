"""Sorted indexes of contact property values, so search does not scan every contact.

One :class:`PropertyIndex` per searched property holds ``(key, contact id)`` pairs in order,
where the key is the value as search compares it (a number, a moment, a case-folded string).
An index is built the first time a search filters on its property and kept up to date by every
write after that, so a range filter (``GT``, ``BETWEEN`` …) finds its contacts by bisection
and a search sorted on the filtered property pages straight out of the index.

The index holds the current values; search with an index lag (``search_lag_s``) looks at past
versions and so scans instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from leadrelay.sandbox.hubspot.errors import HubSpotError

Key = float | str
KeyFunction = Callable[[str], Key]


@dataclass(frozen=True)
class KeyRange:
    """Keys from ``low`` to ``high`` (None: unbounded), each end included or not."""

    low: Key | None = None
    high: Key | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True


class PropertyIndex:
    """``(key, id)`` pairs of one property's current values, sorted."""

    def __init__(self, kind: str, key: KeyFunction) -> None:
        self.kind = kind
        self.key = key
        self.entries: list[tuple[Key, int]] = []
        self.keys: dict[int, Key] = {}

    def put(self, contact_id: int, value: str | None) -> None:
        """Index ``value`` as the property's value on ``contact_id`` (None: no value)."""
        old = self.keys.pop(contact_id, None)
        if old is not None:
            position = bisect.bisect_left(self.entries, (old, contact_id))
            del self.entries[position]
        if value is None:
            return
        key = self.key(value)
        bisect.insort(self.entries, (key, contact_id))
        self.keys[contact_id] = key

    def bounds(self, wanted: KeyRange) -> tuple[int, int]:
        """Positions ``[start, end)`` of the entries whose key is in ``wanted``."""
        entries = self.entries
        if wanted.low is None:
            start = 0
        elif wanted.low_inclusive:
            start = bisect.bisect_left(entries, (wanted.low, -1))
        else:
            start = bisect.bisect_left(entries, (wanted.low, float("inf")))
        if wanted.high is None:
            end = len(entries)
        elif wanted.high_inclusive:
            end = bisect.bisect_left(entries, (wanted.high, float("inf")))
        else:
            end = bisect.bisect_left(entries, (wanted.high, -1))
        return start, max(start, end)

    def count(self, ranges: Iterable[KeyRange]) -> int:
        """How many entries fall in any of ``ranges`` (an upper bound when they overlap)."""
        total = 0
        for wanted in ranges:
            start, end = self.bounds(wanted)
            total += end - start
        return total

    def ids(self, ranges: Iterable[KeyRange]) -> set[int]:
        """The contact ids whose key is in any of ``ranges``."""
        found: set[int] = set()
        for wanted in ranges:
            start, end = self.bounds(wanted)
            found.update(contact_id for _, contact_id in self.entries[start:end])
        return found


class ContactIndex:
    """The property indexes of one contact store, built on first use."""

    def __init__(self, values: Callable[[], Iterable[tuple[int, dict[str, str]]]]) -> None:
        self._values = values
        self.by_property: dict[str, PropertyIndex] = {}

    def get(self, prop: str, kind: str, key: KeyFunction) -> PropertyIndex | None:
        """The index of ``prop`` (built now if needed); None when a stored value has no key."""
        index = self.by_property.get(prop)
        if index is not None and index.kind == kind:
            return index
        index = PropertyIndex(kind, key)
        try:
            for contact_id, props in self._values():
                index.put(contact_id, props.get(prop))
        except HubSpotError:
            return None
        self.by_property[prop] = index
        return index

    def update(self, contact_id: int, props: dict[str, str] | None) -> None:
        """Re-index one contact after a write (``props`` None: archived or merged away)."""
        for prop, index in list(self.by_property.items()):
            try:
                index.put(contact_id, None if props is None else props.get(prop))
            except HubSpotError:
                # A value search cannot compare: drop the index, searches scan instead.
                del self.by_property[prop]

    def forget(self, prop: str) -> None:
        """Drop the index of ``prop`` (its definition changed or it was removed)."""
        self.by_property.pop(prop, None)

    def clear(self) -> None:
        """Drop every index."""
        self.by_property.clear()


__all__ = ["ContactIndex", "Key", "KeyRange", "PropertyIndex"]
