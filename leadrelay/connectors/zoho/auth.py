"""Zoho OAuth: the refresh-token grant against the data centre's accounts server, cached.

Zoho issues at most 10 access tokens per refresh token in 10 minutes and then refuses every
refresh for the rest of the window (Token Validity doc), so an access token is kept for its
lifetime in the connector's :class:`~leadrelay.connectors.credentials.CredentialCache`, sealed
under the client secret: the process's memory by default, the state store (shared by every
process of the project) when the connector is given one. A dozen CLI commands in ten minutes
then use one token. Refreshes of one refresh token in one process are serialised, so threads and
connectors sharing a cache refresh once; a token the API refuses (401) is dropped from the cache
and refreshed once.

The token reply names the ``api_domain`` of the org's data centre; it is authoritative, so it
replaces the ``api_domain`` of the configuration, and is cached with the token.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from leadrelay.connectors.credentials import CredentialCache, cache_key
from leadrelay.connectors.errors import Fatal, register_secret
from leadrelay.connectors.policy import (
    CallPolicy,
    Classified,
    Decision,
    ResponseInfo,
    RetryPolicy,
    classify_default,
    from_httpx,
)

__all__ = [
    "HEADER_FORMAT",
    "ZohoTokenSource",
    "classify_token_reply",
    "token_cache_key",
]

#: The Authorization value Zoho CRM accepts (crm-api-facts §3); "Bearer" is refused.
HEADER_FORMAT = "Zoho-oauthtoken {token}"

_SYSTEM = "zoho"

#: What each token-endpoint error means, in words a person configuring leadrelay can act on.
_TOKEN_ERRORS = {
    "invalid_client": "the client_id or client_secret is wrong, or the client belongs to "
    "another data centre (check accounts_url)",
    "invalid_code": "the refresh_token is invalid, revoked or from another data centre "
    "(check accounts_url)",
    "invalid_client_secret": "the client_secret is wrong",
    "unsupported_grant_type": "the accounts server refused the refresh_token grant",
    "invalid_redirect_uri": "the client's redirect URI does not match",
}

_TOO_MANY = (
    "the accounts server refused to issue another access token: Zoho issues at most 10 access "
    "tokens per refresh token in 10 minutes and then blocks refreshes for the rest of the "
    "window; wait up to 10 minutes and make sure no other program refreshes with the same "
    "refresh token"
)


def _too_many(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    error = str(data.get("error") or "")
    description = str(data.get("error_description") or "")
    return error.lower() == "access denied" or "too many requests" in description.lower()


def classify_token_reply(info: ResponseInfo) -> Classified:
    """Classify a token-endpoint reply.

    Zoho answers refused credentials with HTTP 200 and an ``error`` key (crm-api-facts §3),
    and the 10-tokens-in-10-minutes limit with ``"error": "Access Denied"`` ("too many
    requests"); everything else as :func:`classify_default`.
    """
    data = info.json()
    if _too_many(data):
        return Classified(
            Decision.FAIL, _TOO_MANY, rate_limited=True, message=_TOO_MANY, code="Access Denied"
        )
    if info.status == 200 and isinstance(data, dict) and data.get("error"):
        code = str(data["error"])
        meaning = _TOKEN_ERRORS.get(code, "the accounts server refused the credentials")
        message = f"token refresh refused with {code!r}: {meaning}"
        # REAUTH without a reauth callback raises AuthError at once.
        return Classified(Decision.REAUTH, message, message=message, code=code)
    classified = classify_default(info)
    if classified.decision is Decision.REAUTH:
        return replace(classified, message=f"accounts server answered 401: {classified.message}")
    return classified


def token_cache_key(accounts_url: str, client_id: str, refresh_token: str) -> str:
    """The credential-cache key of the access token of one refresh token (a hash)."""
    return cache_key(_SYSTEM, "access-token", accounts_url.rstrip("/"), client_id, refresh_token)


_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    """One lock per refresh token in this process, shared by every connector using it."""
    with _key_locks_guard:
        return _key_locks.setdefault(key, threading.Lock())


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ZohoTokenSource:
    """Access tokens of one refresh token, and the API domain the accounts server named.

    Args:
        accounts_url: the data centre's accounts server (``https://accounts.zoho.eu``).
        client_id, client_secret, refresh_token: the OAuth client and its refresh token.
        cache: returns the cache the token is kept in (the connector's ``credentials``, read
            on every use so a cache given later is the one used).
        verify: TLS verification for the accounts server (an SSL context, or True).
        timeout_s: the token request's timeout.
        retry: bounds of retrying a refresh that failed transiently (5xx, reset).
        sleep, now: injectable for tests (``now`` is aware UTC: tokens outlive a process).
        refresh_margin_s: a token this close to its expiry is refreshed first.
    """

    def __init__(
        self,
        accounts_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        *,
        cache: Callable[[], CredentialCache],
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = _utcnow,
        refresh_margin_s: float = 60.0,
    ) -> None:
        register_secret(client_secret, refresh_token)
        self.accounts_url = accounts_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._verify = verify
        self._timeout_s = timeout_s
        self._cache = cache
        self._now = now
        self._margin = timedelta(seconds=refresh_margin_s)
        self.key = token_cache_key(accounts_url, client_id, refresh_token)
        self._lock = _lock_for(self.key)
        self._count_lock = threading.Lock()
        #: The API root the token names (``https://www.zohoapis.eu``), once a token is known.
        self.api_domain: str | None = None
        #: Token-endpoint HTTP calls made by this source (each attempt counts).
        self.token_calls = 0
        #: Access tokens this source obtained from the accounts server.
        self.refreshes = 0
        self.policy = CallPolicy(
            _SYSTEM,
            retry=retry or RetryPolicy(max_attempts=3, max_total_s=30.0),
            classify=classify_token_reply,
            on_call=self._count,
            sleep=sleep,
        )
        self.auth = ZohoAuth(self)

    def __repr__(self) -> str:
        return f"<ZohoTokenSource {self.accounts_url} client {self.client_id}>"

    def _count(self) -> None:
        with self._count_lock:
            self.token_calls += 1

    def token(self) -> str:
        """A valid access token: the cached one, else a new one from the accounts server."""
        with self._lock:
            cached = self._cached()
            return cached if cached is not None else self._refresh_locked()

    def refresh_after_rejection(self, rejected: str) -> str:
        """A token other than ``rejected``, which the API refused: one another connector or
        process already put in the cache, else a new one (the refused one is dropped)."""
        with self._lock:
            cached = self._cached()
            if cached is not None and cached != rejected:
                return cached
            self._cache().forget(self.key)
            return self._refresh_locked()

    def _cached(self) -> str | None:
        value = self._cache().get(self.key, secret=self._client_secret)
        if value is None:
            return None
        token, domain = value.get("access_token"), value.get("api_domain")
        try:
            expires_at = datetime.fromisoformat(str(value.get("expires_at")))
        except ValueError:
            return None
        if not isinstance(token, str) or not token or expires_at - self._margin <= self._now():
            return None
        register_secret(token)
        if isinstance(domain, str) and domain:
            self.api_domain = domain
        return token

    def _refresh_locked(self) -> str:
        token, expires_in, domain = self._fetch()
        expires_at = self._now() + timedelta(seconds=expires_in)
        if domain is not None:
            self.api_domain = domain
        value = {
            "access_token": token,
            "api_domain": domain or self.api_domain,
            "expires_at": expires_at.isoformat(),
        }
        self._cache().put(self.key, value, secret=self._client_secret, expires_at=expires_at)
        self.refreshes += 1
        return token

    def _fetch(self) -> tuple[str, float, str | None]:
        url = f"{self.accounts_url}/oauth/v2/token"
        # Sent as a form body rather than the query string the doc shows (the accounts server
        # takes both): a query would put the secrets into URLs that clients and proxies log.
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }
        with httpx.Client(verify=self._verify, timeout=self._timeout_s) as client:
            response = self.policy.execute(
                lambda: client.post(url, data=form),
                to_info=from_httpx,
                idempotent=True,
                describe="Zoho access-token refresh",
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise Fatal(
                "Zoho access-token refresh: the accounts server answered without an access_token",
                system=_SYSTEM,
                url=url,
                status=response.status_code,
            )
        register_secret(token)
        assert isinstance(body, dict)
        domain = body.get("api_domain")
        api_domain: str | None = None
        if isinstance(domain, str) and domain:
            parts = urlsplit(domain)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise Fatal(
                    f"Zoho access-token refresh: the token reply's api_domain {domain!r} is "
                    "not an http(s) URL",
                    system=_SYSTEM,
                    url=url,
                    status=response.status_code,
                )
            api_domain = domain.rstrip("/")
        try:
            expires_in = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        return token, expires_in, api_domain


class ZohoAuth(httpx.Auth):
    """httpx auth: the source's token as ``Zoho-oauthtoken``; on a 401 (``INVALID_TOKEN`` or
    ``AUTHENTICATION_FAILURE``) the token is dropped from the cache, refreshed once and the
    request sent once more."""

    requires_request_body = True

    def __init__(self, source: ZohoTokenSource) -> None:
        self._source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._source.token()
        request.headers["Authorization"] = HEADER_FORMAT.format(token=token)
        response = yield request
        if response.status_code == 401:
            response.read()
            token = self._source.refresh_after_rejection(token)
            request.headers["Authorization"] = HEADER_FORMAT.format(token=token)
            yield request
