"""Zoho OAuth: the refresh grant, its HTTP-200 errors, the token kept in the credential cache
(process memory, or the state store shared across processes), 401 → drop, refresh once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from leadrelay.config import ZohoConnection
from leadrelay.connectors.credentials import (
    MemoryCredentialCache,
    SealedCredentialCache,
    process_cache,
)
from leadrelay.connectors.errors import AuthError, RateLimited
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.connectors.zoho import ZohoConnector
from leadrelay.connectors.zoho.auth import ZohoTokenSource, token_cache_key
from leadrelay.sync.state import StateStore

ACCOUNTS = "https://accounts.zoho.eu"
API = "https://www.zohoapis.eu"
TOKEN_URL = f"{ACCOUNTS}/oauth/v2/token"
USERS_URL = f"{API}/crm/v7/users"
CLIENT_ID = "1000.TESTCLIENTID"
SECRET = "test-client-secret-0123456789abcdef"
REFRESH = "1000.refreshtoken0123456789abcdef.fedcba9876543210refresh"
ACCESS = "1000.0123456789abcdef0123456789abcdef.fedcba9876543210fedcba9876543210"
FAST = RetryPolicy(max_attempts=3, base_s=0.0, cap_s=0.0, max_total_s=5.0)


def settings(**overrides: str) -> ZohoConnection:
    values = {
        "kind": "zoho",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "refresh_token": REFRESH,
        "accounts_url": ACCOUNTS,
    } | overrides
    return ZohoConnection.model_validate(values)


def connector(**overrides: str) -> ZohoConnector:
    return ZohoConnector(settings(**overrides), "zoho", retry=FAST, sleep=lambda s: None)


def token_reply(token: str = ACCESS, expires_in: int = 3600) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "access_token": token,
            "scope": "ZohoCRM.modules.ALL",
            "api_domain": API,
            "token_type": "Bearer",
            "expires_in": expires_in,
        },
    )


USERS = httpx.Response(200, json={"users": [{"id": "1"}], "info": {"more_records": False}})


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    process_cache().clear()
    yield
    process_cache().clear()


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@respx.mock
def test_refresh_posts_the_grant_and_uses_the_token() -> None:
    token = respx.post(TOKEN_URL).mock(return_value=token_reply())
    users = respx.get(USERS_URL).mock(return_value=USERS)
    with connector() as zoho:
        assert zoho.health().ok
    form = parse_qs(token.calls.last.request.content.decode())
    assert form == {
        "grant_type": ["refresh_token"],
        "client_id": [CLIENT_ID],
        "client_secret": [SECRET],
        "refresh_token": [REFRESH],
    }
    assert SECRET not in str(token.calls.last.request.url)
    assert users.calls.last.request.headers["Authorization"] == f"Zoho-oauthtoken {ACCESS}"


@respx.mock
def test_the_token_replys_api_domain_overrides_the_configured_one() -> None:
    respx.post(TOKEN_URL).mock(return_value=token_reply())
    users = respx.get(USERS_URL).mock(return_value=USERS)
    with connector(api_domain="https://www.zohoapis.com") as zoho:
        health = zoho.health()
    assert users.called and health.instance == API


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        ("invalid_client", "client_id or client_secret"),
        ("invalid_code", "refresh_token is invalid"),
        ("something_new", "refused the credentials"),
    ],
)
@respx.mock
def test_a_200_with_an_error_key_is_an_auth_error(error: str, meaning: str) -> None:
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(200, json={"error": error}))
    users = respx.get(USERS_URL).mock(return_value=USERS)
    with connector() as zoho, pytest.raises(AuthError) as caught:
        zoho.describe()
    text = str(caught.value)
    assert error in text and meaning in text
    assert SECRET not in text and REFRESH not in text
    assert not users.called


@pytest.mark.parametrize("status", [200, 400])
@respx.mock
def test_too_many_token_requests_says_ten_per_ten_minutes(status: int) -> None:
    body = {
        "error_description": "You have made too many requests continuously. "
        "Please try again after some time.",
        "error": "Access Denied",
        "status": "failure",
    }
    token = respx.post(TOKEN_URL).mock(return_value=httpx.Response(status, json=body))
    with connector() as zoho, pytest.raises(RateLimited) as caught:
        zoho.describe()
    assert "10 access tokens per refresh token in 10 minutes" in str(caught.value)
    assert token.call_count == 1  # waiting seconds cannot help: not retried


@respx.mock
def test_two_connectors_and_twenty_threads_refresh_once() -> None:
    token = respx.post(TOKEN_URL).mock(side_effect=lambda request: token_reply())
    users = respx.get(USERS_URL).mock(return_value=USERS)
    first, second = connector(), connector()
    barrier = threading.Barrier(20)

    def call(n: int) -> bool:
        barrier.wait()
        return (first if n % 2 else second).health().ok

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            assert all(pool.map(call, range(20)))
    finally:
        first.close()
        second.close()
    assert token.call_count == 1
    assert users.call_count == 20
    assert first.tokens.refreshes + second.tokens.refreshes == 1


@respx.mock
def test_other_credentials_get_their_own_token() -> None:
    token = respx.post(TOKEN_URL).mock(side_effect=lambda request: token_reply())
    respx.get(USERS_URL).mock(return_value=USERS)
    with connector() as one, connector(refresh_token="1000.another.refresh-token") as two:
        one.health()
        two.health()
        assert one.tokens.key != two.tokens.key
    assert token.call_count == 2


def test_the_cache_key_hides_the_refresh_token() -> None:
    key = token_cache_key(ACCOUNTS, CLIENT_ID, REFRESH)
    assert REFRESH not in key and len(key) == 64
    assert key != token_cache_key("https://accounts.zoho.com", CLIENT_ID, REFRESH)


@respx.mock
def test_an_expired_token_is_refreshed_once_and_the_request_resent_once() -> None:
    new = ACCESS.replace("0123", "4567")
    token = respx.post(TOKEN_URL).mock(side_effect=[token_reply(), token_reply(new)])
    expired = httpx.Response(
        401,
        json={"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token"},
    )
    users = respx.get(USERS_URL).mock(side_effect=[USERS, expired, USERS])
    with connector() as zoho:
        assert zoho.health().ok
        assert zoho.health().ok
    assert token.call_count == 2
    assert users.call_count == 3
    sent = [call.request.headers["Authorization"] for call in users.calls]
    assert sent == [
        f"Zoho-oauthtoken {ACCESS}",
        f"Zoho-oauthtoken {ACCESS}",
        f"Zoho-oauthtoken {new}",
    ]


@respx.mock
def test_a_token_refused_twice_is_an_auth_error_after_one_refresh() -> None:
    token = respx.post(TOKEN_URL).mock(side_effect=lambda request: token_reply())
    refused = httpx.Response(401, json={"code": "INVALID_TOKEN", "message": "invalid oauth token"})
    users = respx.get(f"{API}/crm/v7/settings/fields").mock(return_value=refused)
    with connector() as zoho, pytest.raises(AuthError):
        zoho.describe()
    assert token.call_count == 2 and users.call_count == 2


@respx.mock
def test_a_token_is_refreshed_shortly_before_it_expires() -> None:
    now = [datetime.now(UTC)]
    cache = MemoryCredentialCache()
    source = ZohoTokenSource(
        ACCOUNTS, CLIENT_ID, SECRET, REFRESH, cache=lambda: cache, retry=FAST, now=lambda: now[0]
    )
    token = respx.post(TOKEN_URL).mock(side_effect=lambda request: token_reply(expires_in=3600))
    source.token()
    now[0] += timedelta(seconds=3600 - 61)
    source.token()
    assert token.call_count == 1
    now[0] += timedelta(seconds=2)  # now inside the 60 s refresh margin
    source.token()
    assert token.call_count == 2


Sealed = Callable[[], SealedCredentialCache]


@pytest.fixture
def sealed(state_url: str) -> Iterator[Sealed]:
    """Opens the project's state store as another process would (its own memory cache)."""
    stores: list[StateStore] = []

    def open_store() -> SealedCredentialCache:
        stores.append(StateStore(state_url))
        return SealedCredentialCache(stores[-1])

    yield open_store
    for store in stores:
        store.close()


@respx.mock
def test_a_dozen_processes_sharing_the_state_store_use_one_token(sealed: Sealed) -> None:
    token = respx.post(TOKEN_URL).mock(side_effect=lambda request: token_reply())
    users = respx.get(USERS_URL).mock(return_value=USERS)
    for _ in range(12):
        process_cache().clear()  # nothing kept in memory between commands
        with connector() as zoho:
            zoho.use_credentials(sealed())
            assert zoho.health().ok
    assert token.call_count == 1
    assert {call.request.headers["Authorization"] for call in users.calls} == {
        f"Zoho-oauthtoken {ACCESS}"
    }


@respx.mock
def test_the_state_store_holds_the_token_sealed(state_url: str, sealed: Sealed) -> None:
    respx.post(TOKEN_URL).mock(side_effect=lambda request: token_reply())
    respx.get(USERS_URL).mock(return_value=USERS)
    with connector() as zoho:
        zoho.use_credentials(sealed())
        zoho.health()
    raw = Path(state_url.removeprefix("sqlite:///")).read_bytes()
    assert ACCESS.encode() not in raw and REFRESH.encode() not in raw


@respx.mock
def test_a_refused_token_is_dropped_from_the_store_for_every_process(sealed: Sealed) -> None:
    new = ACCESS.replace("0123", "4567")
    token = respx.post(TOKEN_URL).mock(side_effect=[token_reply(), token_reply(new)])
    expired = httpx.Response(
        401, json={"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token"}
    )
    users = respx.get(USERS_URL).mock(side_effect=[USERS, expired, USERS, USERS])
    with connector() as first:
        first.use_credentials(sealed())
        first.health()
    with connector() as second:
        second.use_credentials(sealed())
        assert second.health().ok  # 401 with the stored token: refreshed once, resent
    with connector() as third:
        third.use_credentials(sealed())
        assert third.health().ok
    assert token.call_count == 2
    assert users.calls.last.request.headers["Authorization"] == f"Zoho-oauthtoken {new}"


@respx.mock
def test_a_token_from_a_secret_that_changed_is_not_used(sealed: Sealed) -> None:
    token = respx.post(TOKEN_URL).mock(side_effect=lambda request: token_reply())
    respx.get(USERS_URL).mock(return_value=USERS)
    with connector() as zoho:
        zoho.use_credentials(sealed())
        zoho.health()
    with connector(client_secret="another-secret-0123456789abcdef") as other:
        other.use_credentials(sealed())
        other.health()
    assert token.call_count == 2


@respx.mock
def test_a_failing_accounts_server_is_retried() -> None:
    token = respx.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(503, json={"error": "general_error"}), token_reply()]
    )
    respx.get(USERS_URL).mock(return_value=USERS)
    with connector() as zoho:
        assert zoho.health().ok
    assert token.call_count == 2


@respx.mock
def test_no_secret_or_token_reaches_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    respx.post(TOKEN_URL).mock(side_effect=[token_reply(), token_reply()])
    refused = httpx.Response(
        401, json={"code": "INVALID_TOKEN", "message": f"invalid oauth token {ACCESS}"}
    )
    respx.get(f"{API}/crm/v7/settings/fields").mock(
        side_effect=[httpx.Response(503, text=f"echo Zoho-oauthtoken {ACCESS}"), refused, refused]
    )
    with connector() as zoho, pytest.raises(AuthError) as caught:
        zoho.describe()
    texts = [str(caught.value), repr(caught.value), caplog.text]
    assert caplog.records  # the retry was logged
    for text in texts:
        for secret in (SECRET, REFRESH, ACCESS):
            assert secret not in text
