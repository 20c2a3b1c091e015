"""A read holds one page of Zoho's answers at a time: when it asks for the next page it holds
nothing of the last one (its rows, the answer they came in), so the memory of a sync is set by
its page, not by how many Leads it reads."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import httpx
import pytest

from leadrelay.connectors.base import UpsertInput
from leadrelay.connectors.zoho import ZohoConnector
from tests.connectors.zoho.test_contacts_and_cost import zoho  # noqa: F401 (fixture)
from tests.zoho_sandbox import zoho_server, zoho_user  # noqa: F401 (fixtures)


def test_a_read_lets_go_of_a_page_before_it_asks_for_the_next(
    zoho: ZohoConnector,  # noqa: F811 (the imported fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 25 in the composite call's opening page, a full COQL page of 200, then the last one.
    emails = [f"held{n}@example.com" for n in range(226)]
    written = zoho.upsert([UpsertInput(e, {"Email": e, "Last_Name": "Silva"}) for e in emails])
    assert all(result.ok for result in written)
    # The first is a list referred to by ``answered`` alone: the count of references every
    # page's rows must be back to once the read lets go of them.
    answered: list[list[Any]] = [[]]
    responses: list[weakref.ref[httpx.Response]] = []
    held_rows: list[int] = []
    held_answers: list[bool] = []
    first_round, coql = ZohoConnector._first_round, ZohoConnector._coql

    def opened(self: ZohoConnector, *args: Any) -> Any:
        found = first_round(self, *args)
        if found is not None:
            # The Leads' opening page (the other streams' wait for their turn in the round).
            answered.append(found.pages["leads"][0])
        return found

    def watched(self: ZohoConnector, *args: Any, **options: Any) -> Any:
        counts = [sys.getrefcount(rows) for rows in answered]
        held_rows.extend(count - counts[0] for count in counts[1:])
        gc.collect()  # an httpx response is in a cycle with its stream: only reachable counts
        held_answers.extend(ref() is not None for ref in responses)
        rows, more, response = coql(self, *args, **options)
        answered.append(rows)
        responses.append(weakref.ref(response))
        return rows, more, response

    monkeypatch.setattr(ZohoConnector, "_first_round", opened)
    monkeypatch.setattr(ZohoConnector, "_coql", watched)
    sizes: list[int] = []
    pages = zoho.read_changes(None)
    while (page := next(pages, None)) is not None:
        sizes.append(len(page.records))
        del page  # the caller is done with it: nothing but the read may hold it now
    # (The last page, empty, is the Contacts stream's with the deletions.)
    assert sizes == [25, 200, 1, 0]
    # Asked for the first COQL page, the read held none of the opening page's rows; asked
    # for the second, none of those nor of the first COQL page's rows or answer.
    assert held_rows == [0, 0, 0]
    assert held_answers == [False]
