"""A first (or ``--full``) read of HubSpot contacts walks the list endpoint, not search."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from leadrelay.connectors.base import UpsertInput, WriteOutcome
from leadrelay.connectors.errors import ConnectorError
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.connectors.hubspot.connector import (
    decode_cursor,
    decode_list_cursor,
    encode_cursor,
    encode_list_cursor,
)
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer
from tests.connectors.contract import read_all
from tests.connectors.hubspot.conftest import MakeConnector
from tests.hubspot_sandbox import hubspot_api

LIST_ROUTE = "GET /hubspot/crm/v3/objects/contacts"
SEARCH_ROUTE = "POST /hubspot/crm/v3/objects/contacts/search"
#: Long before any read: records written at it are behind every read's look-back.
PAST_S = 1_700_000_000


def routes(server: SandboxServer) -> Counter[str]:
    with server.sandbox.lock:
        return Counter(server.sandbox.stats.by_route)


def seed(connector: HubSpotConnector, count: int, prefix: str = "c") -> list[str]:
    """``count`` new contacts; their ids, in creation order."""
    ids: list[str] = []
    for start in range(0, count, 100):
        inputs = [
            UpsertInput(f"{prefix}{n}", {"email": f"{prefix}{n}@example.com", "lastname": "Li"})
            for n in range(start, min(count, start + 100))
        ]
        results = connector.upsert(inputs)
        assert all(r.outcome is WriteOutcome.CREATED for r in results), results
        ids += [str(r.external_id) for r in results]
    return ids


@pytest.fixture
def back_to_now(emulator: HubSpotEmulator) -> Callable[[], None]:
    """Writes are stamped long before the read until the test calls this (then: now)."""
    emulator.store.clock = lambda: PAST_S

    def now() -> None:
        emulator.store.clock = time.time

    return now


def small_pages(monkeypatch: pytest.MonkeyPatch, listed: int, page: int | None = None) -> None:
    """List calls of ``listed`` contacts, pages of ``page`` (default: one list call each)."""
    monkeypatch.setattr(HubSpotConnector, "list_page_size", listed)
    monkeypatch.setattr(HubSpotConnector, "page_size", page or listed)


def test_a_full_read_lists_every_contact_once_without_searching_them(
    make_connector: MakeConnector, server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pages(monkeypatch, 40)
    connector = make_connector()
    ids = seed(connector, 130)
    before = routes(server)

    records, cursor = read_all(connector, None)

    assert sorted(str(r["hs_object_id"]) for r in records) == sorted(ids)
    assert all(r["email"].endswith("@example.com") for r in records)
    # four list pages and the archived list; one search, for the count
    assert routes(server) - before == Counter({LIST_ROUTE: 4 + 1, SEARCH_ROUTE: 1})
    assert cursor is not None and decode_cursor(cursor).last_id is None


def test_a_full_read_says_how_many_contacts_remain_on_each_page(
    make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pages(monkeypatch, 40)
    connector = make_connector()
    seed(connector, 130)

    pages = list(connector.read_changes(None))

    assert [len(p.records) for p in pages] == [40, 40, 40, 10]
    assert [p.remaining for p in pages] == [130, 90, 50, 10]


def test_a_full_read_fills_its_pages_from_several_list_calls(
    make_connector: MakeConnector, server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pages(monkeypatch, 40, 80)
    connector = make_connector()
    seed(connector, 130)
    before = routes(server)

    pages = list(connector.read_changes(None))

    assert [(len(p.records), p.remaining) for p in pages] == [(80, 130), (50, 50)]
    assert (routes(server) - before)[LIST_ROUTE] == 4 + 1  # the archived list too


def test_a_full_read_without_the_count_makes_no_search(
    make_connector: MakeConnector, server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HubSpotConnector, "count_full_reads", False)
    connector = make_connector()
    seed(connector, 3)
    before = routes(server)

    pages = list(connector.read_changes(None))

    assert SEARCH_ROUTE not in routes(server) - before
    assert [p.remaining for p in pages] == [3]


def test_a_contact_changed_during_the_full_read_is_read_again_by_the_next_run(
    make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch, back_to_now: Callable[[], None]
) -> None:
    small_pages(monkeypatch, 5)
    connector = make_connector()
    ids = seed(connector, 12)
    back_to_now()
    pages = connector.read_changes(None)
    first = next(pages)
    read_already = str(first.records[0]["hs_object_id"])
    connector.update({read_already: {"firstname": "Edited"}})
    rest = list(pages)
    cursor = rest[-1].cursor

    records, _ = read_all(connector, cursor)

    assert [(str(r["hs_object_id"]), r["firstname"]) for r in records] == [(read_already, "Edited")]
    assert ids[0] == read_already


def test_a_contact_created_during_the_full_read_is_read_by_it_or_the_next_run(
    make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch, back_to_now: Callable[[], None]
) -> None:
    small_pages(monkeypatch, 5)
    connector = make_connector()
    seed(connector, 12)
    back_to_now()
    pages = connector.read_changes(None)
    seen = [str(r["hs_object_id"]) for r in next(pages).records]
    [late] = seed(connector, 1, prefix="late")
    rest = list(pages)
    seen += [str(r["hs_object_id"]) for page in rest for r in page.records]

    records, _ = read_all(connector, rest[-1].cursor)

    assert late in seen and late in {str(r["hs_object_id"]) for r in records}


def test_a_full_read_stopped_part_way_goes_on_from_its_page(
    make_connector: MakeConnector, server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pages(monkeypatch, 5)
    ids = seed(make_connector(), 12)
    pages = list(make_connector().read_changes(None))
    stopped_at = pages[0].cursor
    assert stopped_at is not None

    resumed = list(make_connector().read_changes(stopped_at))

    read = [str(r["hs_object_id"]) for p in [pages[0], *resumed] for r in p.records]
    assert read == ids
    # the resumed read ends where the read it goes on from would have: at that read's horizon
    ends = [p[-1].cursor for p in (pages, resumed)]
    assert [decode_cursor(str(c)).timestamp_ms for c in ends] == [
        decode_list_cursor(stopped_at)[1] + 1
    ] * 2
    assert [p.remaining for p in resumed] == [7, 2]


def test_a_full_read_reports_merges(make_connector: MakeConnector, server: SandboxServer) -> None:
    connector = make_connector()
    primary, other = seed(connector, 2)
    merged = hubspot_api(
        server,
        "POST",
        "/crm/v3/objects/contacts/merge",
        {"primaryObjectId": primary, "objectIdToMerge": other},
    )

    pages = list(connector.read_changes(None))

    deleted = {d.record_id: d.merged_into for page in pages for d in page.deleted}
    assert deleted == {primary: merged["id"], other: merged["id"]}
    assert [r["hs_object_id"] for p in pages for r in p.records] == [merged["id"]]


def test_a_full_read_reports_the_archived_contacts(make_connector: MakeConnector) -> None:
    connector = make_connector()
    kept, gone = seed(connector, 2)
    connector.delete([gone])

    pages = list(connector.read_changes(None))

    assert [r["hs_object_id"] for p in pages for r in p.records] == [kept]
    assert [d.record_id for p in pages for d in p.deleted] == [gone]


def test_a_list_that_answers_the_position_it_was_asked_for_stops_the_read(
    make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pages(monkeypatch, 2)
    connector = make_connector()
    seed(connector, 5)
    original = HubSpotConnector._list_page

    def stuck(self: HubSpotConnector, after: str | None) -> Any:
        answer = original(self, after)
        if after is not None:
            answer.body["paging"]["next"]["after"] = after
        return answer

    monkeypatch.setattr(HubSpotConnector, "_list_page", stuck)

    with pytest.raises(ConnectorError, match="position it was asked for"):
        list(connector.read_changes(None))


def test_a_list_cursor_round_trips() -> None:
    assert decode_list_cursor(encode_list_cursor("4711", 1_700_000_000_000)) == (
        "4711",
        1_700_000_000_000,
    )


@pytest.mark.parametrize("cursor", ["list:", "list:12", "list::12", "list:12:x"])
def test_a_malformed_list_cursor_is_refused(make_connector: MakeConnector, cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid HubSpot cursor"):
        list(make_connector().read_changes(cursor))


def test_a_search_cursor_is_not_a_list_cursor() -> None:
    with pytest.raises(ValueError, match="invalid HubSpot cursor"):
        decode_list_cursor(encode_cursor(1_700_000_000_000, None))
