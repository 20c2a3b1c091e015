"""The refresh-token connection, sessions and describe kept across runs, and incremental reads
that lose nothing: keyset cursors, deletions and merges (issues #23 and #12)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from leadrelay.connectors.base import Deletion, Page, UpsertInput
from leadrelay.connectors.credentials import MemoryCredentialCache, SealedCredentialCache
from leadrelay.connectors.errors import AuthError
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.connectors.salesforce.connector import decode_cursor, parse_stamp
from leadrelay.sandbox.salesforce import SalesforceEmulator
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import StateStore
from tests.connectors.salesforce.conftest import admin, stats

Make = Callable[..., SalesforceConnector]


def refresh_settings(env: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """Keyword overrides of ``make_connector`` for ``auth = "refresh_token"``."""
    return {
        "auth": "refresh_token",
        "refresh_token": env["SALESFORCE_REFRESH_TOKEN"],
        "username": None,
        "password": None,
        **overrides,
    }


def lead(n: int, **extra: Any) -> dict[str, Any]:
    return {"Email": f"lead{n}@example.com", "LastName": f"Silva{n}", "Company": "Acme", **extra}


def read(connector: SalesforceConnector, cursor: str | None) -> tuple[list[Page], str | None]:
    pages = list(connector.read_changes(cursor))
    return pages, pages[-1].cursor if pages else cursor


def ids(pages: list[Page]) -> list[str]:
    return [str(r["Id"]) for p in pages for r in p.records]


def gone(pages: list[Page]) -> list[Deletion]:
    return [d for p in pages for d in p.deleted]


@pytest.fixture
def emulator(sf_server: SandboxServer) -> SalesforceEmulator:
    found = sf_server.sandbox.emulators["salesforce"]
    assert isinstance(found, SalesforceEmulator)
    return found


def seed(emulator: SalesforceEmulator, count: int) -> list[str]:
    """``count`` Leads written straight into the emulated org (fast); their ids."""
    with emulator.lock:
        spec = emulator.store.schema["Lead"]
        user = emulator.store.integration_user_id
        return [emulator.store.create(spec, lead(n), user) for n in range(count)]


def edit(emulator: SalesforceEmulator, record_id: str, **values: Any) -> None:
    with emulator.lock:
        spec = emulator.store.schema["Lead"]
        emulator.store.update(spec, record_id, values, emulator.store.integration_user_id)


# -- refresh-token auth, cached sessions and describe ------------------------------------------


def test_refresh_token_connection_logs_in_and_reads(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(**refresh_settings(env))
    [result] = connector.upsert([UpsertInput("a", lead(1))])
    assert result.ok
    pages, _ = read(connector, None)
    assert ids(pages) == [result.external_id]
    assert connector.token_requests == 1
    assert connector.instance_url == env["SALESFORCE_INSTANCE_URL"]


def test_a_refused_refresh_token_is_an_auth_error_without_the_token(
    make_connector: Make, env: dict[str, str]
) -> None:
    connector = make_connector(**refresh_settings(env, refresh_token="5Aep861revoked-grant"))
    with pytest.raises(AuthError) as caught:
        connector.describe()
    assert "expired access/refresh token" in str(caught.value)
    assert "revoked-grant" not in str(caught.value)


@pytest.fixture
def shared(env: dict[str, str]) -> Iterator[SealedCredentialCache]:
    """The state store's credential cache, as every process of one project shares it."""
    with StateStore("sqlite:///:memory:") as store:
        yield SealedCredentialCache(store)


def test_a_second_run_reuses_the_session_and_describe(
    make_connector: Make, env: dict[str, str], shared: SealedCredentialCache
) -> None:
    first = make_connector(**refresh_settings(env))
    first.use_credentials(shared)
    read(first, None)
    assert first.token_requests == 1
    # The next run: a new connector, a cold process cache, the same state store.
    second = make_connector(**refresh_settings(env))
    second.use_credentials(SealedCredentialCache(shared.store))
    before = stats(env)["requests"]["salesforce"]
    pages, _ = read(second, None)
    assert second.token_requests == 0
    assert second.api_calls == 1  # the query alone: no token call, no describe
    assert stats(env)["requests"]["salesforce"] == before + 1
    assert pages[-1].records == []


def test_a_refused_cached_session_is_dropped_and_renewed_once(
    make_connector: Make, env: dict[str, str], shared: SealedCredentialCache
) -> None:
    first = make_connector(**refresh_settings(env))
    first.use_credentials(shared)
    first.describe()
    admin(env, "salesforce/expire-sessions")
    second = make_connector(**refresh_settings(env))
    second.use_credentials(SealedCredentialCache(shared.store))
    read(second, None)
    # The cached session answered 401 INVALID_SESSION_ID: one token call, then the query again.
    assert second.token_requests == 1
    assert second.api_calls == 3
    third = make_connector(**refresh_settings(env))
    third.use_credentials(SealedCredentialCache(shared.store))
    read(third, None)
    assert (third.token_requests, third.api_calls) == (0, 1)


def test_a_kept_describe_is_revalidated_not_read_again(
    make_connector: Make, env: dict[str, str]
) -> None:
    cache = MemoryCredentialCache()
    first = make_connector()
    first.use_credentials(cache)
    time.sleep(1.1)  # past the second of the sandbox's reset (If-Modified-Since has seconds)
    assert first.describe().has("UTM_Term__c")
    second = make_connector()
    second.use_credentials(cache)
    second.client()
    before = second.api_calls
    assert second.describe().has("UTM_Term__c")
    assert second.api_calls == before + 1  # one conditional describe, answered 304
    assert stats(env)["status"].get("304") == 1
    admin(env, "schema", {"system": "salesforce", "remove_field": "UTM_Term__c"})
    assert not second.describe().has("UTM_Term__c")


def test_a_removed_field_drops_the_cached_describe(
    make_connector: Make, env: dict[str, str]
) -> None:
    cache = MemoryCredentialCache()
    first = make_connector()
    first.use_credentials(cache)
    assert "UTM_Term__c" in first.lead_fields()
    admin(env, "schema", {"system": "salesforce", "remove_field": "UTM_Term__c"})
    second = make_connector()
    second.use_credentials(cache)
    # The cached describe still names the field: the query is refused, the describe read
    # again, and the read completes without it.
    pages, _ = read(second, None)
    assert pages
    assert "UTM_Term__c" not in second.lead_fields()
    assert not second.describe().has("UTM_Term__c")


# -- keyset reads -------------------------------------------------------------------------------


@pytest.mark.parametrize("edited", [0, 2000], ids=["read-page", "unread-page"])
def test_a_record_edited_between_pages_is_read(
    make_connector: Make, emulator: SalesforceEmulator, edited: int
) -> None:
    lead_ids = seed(emulator, 2001)
    connector = make_connector()
    pages = connector.read_changes(None)
    first = next(pages)
    assert len(first.records) == 2000
    edit(emulator, lead_ids[edited], Title="Edited while reading")
    rest = list(pages)
    cursor = rest[-1].cursor if rest else first.cursor
    later, _ = read(connector, cursor)
    titles = {r["Id"]: r.get("Title") for p in later for r in p.records}
    assert titles.get(lead_ids[edited]) == "Edited while reading"


def test_an_idle_read_reads_nothing(make_connector: Make, emulator: SalesforceEmulator) -> None:
    seed(emulator, 3)
    connector = make_connector(overlap=timedelta(0))
    pages, cursor = read(connector, None)
    assert len(ids(pages)) == 3
    # Once the server's clock (whole seconds in its Date header) has passed the writes, the
    # records of the look-back window are read at most once more, then nothing.
    time.sleep(1.1)
    _, cursor = read(connector, cursor)
    calls = connector.api_calls
    pages, after = read(connector, cursor)
    assert (ids(pages), gone(pages)) == ([], [])
    assert connector.api_calls == calls + 1
    assert cursor is not None and after is not None
    assert decode_cursor(after) >= decode_cursor(cursor)


def test_the_last_cursor_stays_the_look_back_before_the_read(
    make_connector: Make, emulator: SalesforceEmulator
) -> None:
    seed(emulator, 3)
    connector = make_connector(overlap=timedelta(minutes=10))
    pages, cursor = read(connector, None)
    assert cursor is not None
    newest = max(parse_stamp(str(r["SystemModstamp"])) for p in pages for r in p.records)
    stamp, record_id = decode_cursor(cursor)
    assert (stamp < newest - timedelta(minutes=9), record_id) == (True, "")
    # Read again from there: the records of the window come back (the engine dedupes them).
    again, _ = read(connector, cursor)
    assert sorted(ids(again)) == sorted(ids(pages))


# -- deletions and merges -----------------------------------------------------------------------


def test_a_deleted_lead_is_reported_not_read(make_connector: Make) -> None:
    connector = make_connector()
    results = connector.upsert([UpsertInput(str(n), lead(n)) for n in range(2)])
    _, cursor = read(connector, None)
    _, deleted = (str(r.external_id) for r in results)
    connector.delete([deleted])
    pages, _ = read(connector, cursor)
    assert deleted not in ids(pages)
    assert [(d.record_id, d.merged_into) for d in gone(pages)] == [(deleted, None)]
    assert all(d.at is not None for d in gone(pages))


def test_a_merge_reports_the_survivor(
    make_connector: Make, env: dict[str, str], emulator: SalesforceEmulator
) -> None:
    master, loser = seed(emulator, 2)
    connector = make_connector()
    _, cursor = read(connector, None)
    admin(env, "salesforce/merge", {"master_id": master, "merged_ids": [loser]})
    pages, _ = read(connector, cursor)
    assert [(d.record_id, d.merged_into) for d in gone(pages)] == [(loser, master)]
    # The master is stamped as modified by the merge, so it is read again too.
    assert ids(pages) == [master]


def test_a_first_read_reports_what_the_recycle_bin_holds(
    make_connector: Make, emulator: SalesforceEmulator
) -> None:
    kept, deleted = seed(emulator, 2)
    with emulator.lock:
        emulator.store.delete(emulator.store.schema["Lead"], deleted)
    pages, _ = read(make_connector(), None)
    assert ids(pages) == [kept]
    assert [d.record_id for d in gone(pages)] == [deleted]
