"""Zoho OAuth: the refresh-token grant against the data centre's accounts server, cached.

Zoho issues at most 10 access tokens per refresh token in 10 minutes and then refuses every
refresh for the rest of the window (Token Validity doc), so a token is cached per process and
shared by every connector built from the same accounts server, client id and refresh token:
:func:`shared_token_source` hands them one :class:`ZohoTokenSource`, whose
:class:`~leadrelay.connectors.policy.RefreshingAuth` refreshes under a lock, once per expiry.

The token reply names the ``api_domain`` of the org's data centre; it is authoritative, so it
replaces the ``api_domain`` of the configuration.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from leadrelay.connectors.errors import Fatal, register_secret
from leadrelay.connectors.policy import (
    CallPolicy,
    Classified,
    Decision,
    RefreshingAuth,
    ResponseInfo,
    RetryPolicy,
    classify_default,
    from_httpx,
)

__all__ = [
    "HEADER_FORMAT",
    "ZohoTokenSource",
    "classify_token_reply",
    "forget_token_sources",
    "shared_token_source",
    "token_source_key",
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


def token_source_key(accounts_url: str, client_id: str, refresh_token: str) -> str:
    """The cache key of a token source: a hash, so no secret is kept as a dict key."""
    material = "\x00".join((accounts_url.rstrip("/"), client_id, refresh_token))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ZohoTokenSource:
    """Access tokens of one refresh token, and the API domain the accounts server named.

    Use :func:`shared_token_source` rather than building one, so connectors share it.

    Args:
        accounts_url: the data centre's accounts server (``https://accounts.zoho.eu``).
        client_id, client_secret, refresh_token: the OAuth client and its refresh token.
        verify: TLS verification for the accounts server (an SSL context, or True).
        timeout_s: the token request's timeout.
        retry: bounds of retrying a refresh that failed transiently (5xx, reset).
        sleep, clock: injectable for tests.
        refresh_margin_s: refresh this long before the token expires.
    """

    def __init__(
        self,
        accounts_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = 60.0,
    ) -> None:
        register_secret(client_secret, refresh_token)
        self.accounts_url = accounts_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._verify = verify
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        #: The API root the last token reply named (``https://www.zohoapis.eu``), if any.
        self.api_domain: str | None = None
        #: Token-endpoint HTTP calls made (each attempt counts).
        self.token_calls = 0
        self.policy = CallPolicy(
            _SYSTEM,
            retry=retry or RetryPolicy(max_attempts=3, max_total_s=30.0),
            classify=classify_token_reply,
            on_call=self._count,
            sleep=sleep,
        )
        self.auth = RefreshingAuth(
            self._fetch, HEADER_FORMAT, refresh_margin_s=refresh_margin_s, clock=clock
        )

    def __repr__(self) -> str:
        return f"<ZohoTokenSource {self.accounts_url} client {self.client_id}>"

    @property
    def refreshes(self) -> int:
        """Access tokens obtained so far."""
        return self.auth.refreshes

    def use_transport(self, verify: ssl.SSLContext | bool, timeout_s: float) -> None:
        """TLS verification and timeout for the next refreshes (the newest connector's).

        A sandbox restarted on the same address has a new CA, so the latest settings win.
        """
        with self._lock:
            self._verify = verify
            self._timeout_s = timeout_s

    def _count(self) -> None:
        with self._lock:
            self.token_calls += 1

    def token(self) -> str:
        """A valid access token (refreshed first when missing or about to expire)."""
        return self.auth.token()

    def _fetch(self) -> tuple[str, float]:
        url = f"{self.accounts_url}/oauth/v2/token"
        # Sent as a form body rather than the query string the doc shows (the accounts server
        # takes both): a query would put the secrets into URLs that clients and proxies log.
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }
        with self._lock:
            verify, timeout_s = self._verify, self._timeout_s
        with httpx.Client(verify=verify, timeout=timeout_s) as client:
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
            with self._lock:
                self.api_domain = domain.rstrip("/")
        try:
            expires_in = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        return token, expires_in


_sources: dict[str, ZohoTokenSource] = {}
_sources_lock = threading.Lock()


def shared_token_source(
    accounts_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    **options: Any,
) -> ZohoTokenSource:
    """The process-wide :class:`ZohoTokenSource` of these credentials, made on first use.

    Keyed by a hash of (accounts_url, client_id, refresh_token). ``verify`` and ``timeout_s``
    replace those of an existing source; the other ``options`` (``retry``, ``sleep`` …) apply
    only when the source is made.
    """
    key = token_source_key(accounts_url, client_id, refresh_token)
    with _sources_lock:
        source = _sources.get(key)
        if source is None:
            source = ZohoTokenSource(
                accounts_url, client_id, client_secret, refresh_token, **options
            )
            _sources[key] = source
        elif "verify" in options or "timeout_s" in options:
            source.use_transport(options.get("verify", True), float(options.get("timeout_s", 30.0)))
        return source


def forget_token_sources() -> None:
    """Drop every cached token source (tests; a process that rotates credentials)."""
    with _sources_lock:
        _sources.clear()
