"""The shared rate budget: one token bucket per CRM account and limit in the state store, drawn
from by every process's connectors so that all of them together stay under an API's limit."""

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


def test_a_new_bucket_lets_its_first_call_go_at_once(store: StateStore) -> None:
    assert store.take_rate_token("acct", burst=1, rate=0.001) == 0.0


def test_callers_past_the_burst_are_given_later_and_later_turns(store: StateStore) -> None:
    turns = [store.take_rate_token("acct", burst=2, rate=0.001) for _ in range(4)]
    assert turns[:2] == [0.0, 0.0]
    # One call per 1,000 s: the third waits about one refill, the fourth about two.
    assert 900 < turns[2] <= 1000 < 1900 < turns[3] <= 2000


def test_buckets_of_different_accounts_do_not_share_calls(store: StateStore) -> None:
    store.take_rate_token("one", burst=1, rate=0.001)
    assert store.take_rate_token("other", burst=1, rate=0.001) == 0.0


def test_a_hold_makes_the_next_caller_wait_at_least_that_long(store: StateStore) -> None:
    store.take_rate_token("acct", burst=5, rate=1000.0)
    store.hold_rate_budget("acct", 30.0, burst=5, rate=1000.0)
    assert 29 < store.take_rate_token("acct", burst=5, rate=1000.0) <= 31


@pytest.mark.parametrize(("burst", "rate"), [(0.5, 1.0), (1.0, 0.0)])
def test_a_bucket_without_room_or_refill_is_refused(
    store: StateStore, burst: float, rate: float
) -> None:
    with pytest.raises(ValueError, match="acct"):
        store.take_rate_token("acct", burst=burst, rate=rate)


class Budget:
    """A RateBudget that hands out fixed turns and records what it was asked."""

    def __init__(self, turn: float) -> None:
        self.turn = turn
        self.taken: list[tuple[str, float, float]] = []
        self.held: list[tuple[str, float]] = []

    def take_rate_token(self, key: str, *, burst: float, rate: float) -> float:
        self.taken.append((key, burst, rate))
        return self.turn

    def hold_rate_budget(self, key: str, seconds: float, *, burst: float, rate: float) -> None:
        self.held.append((key, seconds))


def limiter(clock: ManualClock) -> RateLimiter:
    return RateLimiter("hubspot", max_calls=5, per_s=1.0, clock=clock.now, sleep=clock.sleep)


def test_a_shared_limiter_waits_for_its_turn_in_the_budget() -> None:
    clock = ManualClock()
    shared, budget = limiter(clock), Budget(turn=0.75)
    shared.share(budget, "acct")
    shared.acquire()
    assert clock.sleeps == [0.75]
    # One call held, four refilled a second: never more than five in any second.
    [(_, burst, rate)] = budget.taken
    assert (burst, rate) == (1.0, 4.0)


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
