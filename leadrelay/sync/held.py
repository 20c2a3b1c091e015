"""Pages of a backfill held back until their writes fill one bulk job (issue #15).

A destination whose connector writes large calls as a bulk job
(:attr:`~leadrelay.connectors.base.Connector.bulk_threshold`, Salesforce's Bulk API 2.0) only
gains from it when one ``upsert`` holds more records than that threshold, while the sync engine
plans, writes and commits a page (100–200 records) at a time. During a read that says more
than the threshold remains (a first or ``--full`` read, :attr:`Page.remaining`), the engine
plans each page as usual but does not write it: it puts the page here, with its result and its
cursor, uncommitted. Once the held pages' creates are more than the threshold (or the read
ends, or a page needs what a held page has not committed yet), the engine sends every held
write in one call and commits the held pages one by one, in the order read, each with its own
cursor.

Nothing here is saved: a crash before the commits leaves the cursor at the last committed page,
so the held pages are read again, and the writes, upserts by natural key, create nothing twice.
:class:`WriteHold` only keeps the pages and decides when they must go; the engine does the
writing and committing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["RECORDS_PER_THRESHOLD", "HeldPage", "WriteHold"]

#: The engine's result of one page (what it commits).
ResultT = TypeVar("ResultT")

#: At most this many times the threshold of records read are held, however few of them are
#: writes (a re-read where most records are unchanged): the cursor is never held back long.
RECORDS_PER_THRESHOLD = 2


@dataclass
class HeldPage(Generic[ResultT]):
    """One page planned and not yet written or committed.

    Attributes:
        result: what the page commits once its writes are settled.
        cursor: where the read resumes once it is committed.
        records: how many records the page read.
        creates: how many of its planned writes create a record (an ``upsert``; the threshold
            counts those).
        leads: the lead keys and normalized e-mails the page planned for.
    """

    result: ResultT
    cursor: str | None
    records: int
    creates: int
    leads: frozenset[str] = field(default_factory=frozenset)


class WriteHold(Generic[ResultT]):
    """The pages of one pass held for a bulk write, in the order read.

    Args:
        threshold: the destination's bulk threshold (records in one ``upsert``).
    """

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("the bulk threshold must be at least 1")
        self.threshold = threshold
        self._pages: list[HeldPage[ResultT]] = []
        self._leads: set[str] = set()
        self._records = 0
        self._creates = 0

    def __len__(self) -> int:
        return len(self._pages)

    def wants(self, remaining: int | None) -> bool:
        """Whether the next page is held: once a page is held, every page after it is, until
        they go (they commit in order); otherwise only when the read says more than the
        threshold remains, this page's records included."""
        return bool(self._pages) or (remaining is not None and remaining > self.threshold)

    def holds_any(self, leads: Iterable[str]) -> bool:
        """True when a held page planned for one of ``leads`` (lead keys or e-mails): a page
        meeting one of them again must wait until the held pages are committed, so it plans
        against what they wrote and one job never holds a lead twice."""
        held = self._leads
        return bool(held) and any(lead in held for lead in leads)

    def add(self, page: HeldPage[ResultT]) -> None:
        """Hold ``page`` after the others."""
        self._pages.append(page)
        self._leads.update(page.leads)
        self._records += page.records
        self._creates += page.creates

    @property
    def full(self) -> bool:
        """True when the held pages must go now: their creates fill a bulk job, or they hold
        :data:`RECORDS_PER_THRESHOLD` times the threshold of records read."""
        return (
            self._creates > self.threshold
            or self._records >= RECORDS_PER_THRESHOLD * self.threshold
        )

    def take(self) -> list[HeldPage[ResultT]]:
        """The held pages, in the order read; the hold is empty afterwards."""
        pages, self._pages = self._pages, []
        self._leads = set()
        self._records = self._creates = 0
        return pages
