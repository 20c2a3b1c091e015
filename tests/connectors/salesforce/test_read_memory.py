"""A read holds one page of Salesforce's answers at a time: the memory of a sync is bounded by
its page, not by how many Leads it reads."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.salesforce import SalesforceConnector

Make = Callable[..., SalesforceConnector]


def _row_lists(answer: Any) -> list[list[Any]]:
    """The ``records`` lists of a query answer or of each query of a Composite answer."""
    if not isinstance(answer, Mapping):
        return []
    parts = answer.get("compositeResponse")
    if isinstance(parts, list):
        return [rows for part in parts for rows in _row_lists(part.get("body"))]
    rows = answer.get("records")
    return [rows] if isinstance(rows, list) else []


def test_a_read_lets_go_of_a_page_answer_before_it_asks_for_the_next(
    make_connector: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = make_connector(bulk_threshold=100)
    emails = [f"held{n}@example.com" for n in range(2001)]
    written = connector.upsert(
        [UpsertInput(e, {"Email": e, "LastName": "Silva", "Company": "Acme"}) for e in emails]
    )
    assert all(result.ok for result in written)
    # The first is a list referred to by ``answered`` alone: the count of references every
    # answer's rows must be back to once the read lets go of them.
    answered: list[list[Any]] = [[]]
    held_when_next_asked: list[int] = []
    call = SalesforceConnector.call

    def watched(self: SalesforceConnector, send: Any, **options: Any) -> Any:
        if "next page" in options["describe"]:
            counts = [sys.getrefcount(rows) for rows in answered]
            held_when_next_asked.extend(count - counts[0] for count in counts[1:])
        answer = call(self, send, **options)
        answered.extend(_row_lists(answer))
        return answer

    monkeypatch.setattr(SalesforceConnector, "call", watched)
    pages = connector.read_changes(None)
    first = next(pages)
    second = next(pages)
    assert (len(first.records), len(second.records)) == (2000, 1)
    # Asked for the second page, the read held none of the first answer's rows (the Leads'
    # and those of each followed query read with them).
    assert len(held_when_next_asked) == 3
    assert held_when_next_asked == [0, 0, 0]
