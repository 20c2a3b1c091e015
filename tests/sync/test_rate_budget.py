"""The shared rate budget: one rolling window per CRM account and limit in the state store,
drawn from by every process's connectors so that all of them together stay under an API's
limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadrelay.config import HubSpotConnection
from leadrelay.connectors.policy import ManualClock, RateLimiter, account_key, share_rate_limits
from leadrelay.sync.state import StateStore
from tests.postgres import BOTH_BACKENDS, state_url

pytestmark = BOTH_BACKENDS


@pytest.fixture
def store(tmp_path: Path, state_backend: str) -> Iterator[StateStore]:
    with state_url(state_backend, tmp_path) as url, StateStore(url) as opened:
        yield opened


def take(store: StateStore, calls: int = 2, per_s: float = 1000.0) -> tuple[int | None, float]:
    return store.take_rate_slot("acct", calls=calls, per_s=per_s)


def test_calls_up_to_the_limit_take_every_slot_at_once(store: StateStore) -> None:
    assert sorted(take(store, calls=3) for _ in range(3)) == [(0, 0.0), (1, 0.0), (2, 0.0)]


def test_a_call_past_the_limit_waits_while_the_others_are_going(store: StateStore) -> None:
    take(store), take(store)
    slot, wait = take(store)
    assert slot is None and 0 < wait <= 0.05


def test_a_released_slot_is_free_one_window_after_its_call_ended(store: StateStore) -> None:
    (first, _), _ = take(store), take(store)
    assert first is not None
    store.release_rate_slot("acct", first)
    slot, wait = take(store)
    assert slot is None and 900 < wait <= 1000


def test_windows_of_different_accounts_do_not_share_calls(store: StateStore) -> None:
    store.take_rate_slot("one", calls=1, per_s=1000.0)
    assert store.take_rate_slot("other", calls=1, per_s=1000.0) == (0, 0.0)


def test_a_hold_keeps_every_free_slot_for_that_long(store: StateStore) -> None:
    take(store, calls=5, per_s=1.0)
    store.hold_rate_budget("acct", 30.0, per_s=1.0)
    slot, wait = take(store, calls=5, per_s=1.0)
    assert slot is None and 29 < wait <= 30


@pytest.mark.parametrize(("calls", "per_s"), [(0, 1.0), (1, 0.0)])
def test_a_window_without_calls_or_length_is_refused(
    store: StateStore, calls: int, per_s: float
) -> None:
    with pytest.raises(ValueError, match="acct"):
        store.take_rate_slot("acct", calls=calls, per_s=per_s)


class Budget:
    """A RateBudget that hands out fixed turns and records what it was asked."""

    def __init__(self, turn: float) -> None:
        self.turn = turn
        self.taken: list[tuple[str, int, float]] = []
        self.released: list[tuple[str, int]] = []
        self.held: list[tuple[str, float]] = []

    def take_rate_slot(self, key: str, *, calls: int, per_s: float) -> tuple[int | None, float]:
        self.taken.append((key, calls, per_s))
        if len(self.taken) == 1 and self.turn:
            return None, self.turn
        return 7, 0.0

    def release_rate_slot(self, key: str, slot: int) -> None:
        self.released.append((key, slot))

    def hold_rate_budget(self, key: str, seconds: float, *, per_s: float) -> None:
        self.held.append((key, seconds))


def limiter(clock: ManualClock) -> RateLimiter:
    return RateLimiter("hubspot", max_calls=5, per_s=1.0, clock=clock.now, sleep=clock.sleep)


def test_a_shared_limiter_waits_for_a_slot_and_frees_it_when_the_call_ended() -> None:
    clock = ManualClock()
    shared, budget = limiter(clock), Budget(turn=0.75)
    shared.share(budget, "acct")
    release = shared.acquire()
    assert clock.sleeps == [0.75]
    assert [(calls, per_s) for _, calls, per_s in budget.taken] == [(5, 1.0), (5, 1.0)]
    assert budget.released == []
    release()
    assert budget.released == [(budget.taken[0][0], 7)]


def test_a_pause_of_a_shared_limiter_holds_every_process() -> None:
    shared, budget = limiter(ManualClock()), Budget(turn=0.0)
    shared.share(budget, "acct")
    shared.acquire()
    shared.pause(12.0)
    [(taken_key, _, _)] = budget.taken
    assert budget.held == [(taken_key, 12.0)]


def hubspot(token: str, **extra: Any) -> HubSpotConnection:
    return HubSpotConnection.model_validate({"kind": "hubspot", "access_token": token, **extra})


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (hubspot("pat-na1-a"), True),
        (hubspot("pat-na1-a", deletions_every_s=60), True),
        (hubspot("pat-na1-b"), False),
        (hubspot("pat-na1-a", base_url="https://eu.example.com"), False),
    ],
    ids=["same", "other-options", "other-token", "other-host"],
)
def test_the_account_key_is_the_api_root_and_credentials(
    other: HubSpotConnection, same: bool
) -> None:
    key = account_key("hubspot", hubspot("pat-na1-a"))
    assert (account_key("hubspot", other) == key) is same
    assert "pat-na1-a" not in key


def test_share_rate_limits_reaches_every_limiter_of_a_connector() -> None:
    class Connector:
        def __init__(self) -> None:
            clock = ManualClock()
            self.limiter = limiter(clock)
            self.search_limiter = limiter(clock)
            self.policy_limiter = self.limiter  # the same one twice counts once

    connector = Connector()
    assert share_rate_limits(connector, "acct", Budget(0.0)) == 2
    assert connector.limiter.shared and connector.search_limiter.shared
