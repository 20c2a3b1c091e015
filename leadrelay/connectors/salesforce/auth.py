"""OAuth 2.0 token requests to Salesforce: username-password, JWT bearer, client credentials and
refresh token (the token of the web-server flow, see :mod:`leadrelay.connect`).

leadrelay posts to ``{login_url}/services/oauth2/token`` itself instead of letting
simple-salesforce log in: its own re-login on ``INVALID_SESSION_ID`` recurses without bound and
drops caller headers such as ``Sforce-Duplicate-Rule-Header`` (crm-api-facts §0), and it can only
reach ``https://{domain}.salesforce.com``. The connector re-fetches a token at most once per
call (see :class:`~leadrelay.connectors.salesforce.SalesforceConnector`).

The JWT bearer assertion is built here (RS256 over ``{iss: consumer key, sub: username,
aud: login URL, exp: now + 3 min}``), signed with ``cryptography``'s RSA PKCS#1 v1.5 SHA-256.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from leadrelay.config import SalesforceConnection
from leadrelay.connectors.errors import AuthError, ConnectorError, register_secret
from leadrelay.connectors.policy import CallPolicy, from_requests

__all__ = ["JWT_GRANT", "Token", "fetch_token", "jwt_assertion", "token_url"]

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Salesforce accepts a JWT whose ``exp`` is at most 3 minutes ahead.
JWT_LIFETIME_S = 180


@dataclass(frozen=True)
class Token:
    """An access token and the instance it is valid for."""

    access_token: str
    instance_url: str


def token_url(settings: SalesforceConnection) -> str:
    """The token endpoint of the connection's login URL."""
    return f"{settings.login_url.rstrip('/')}/services/oauth2/token"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _private_key_pem(settings: SalesforceConnection) -> bytes:
    if settings.private_key is not None:
        return settings.private_key.get_secret_value().encode()
    if settings.private_key_file is not None:
        return settings.private_key_file.read_bytes()
    raise AuthError("auth 'jwt' needs private_key or private_key_file", system="salesforce")


def jwt_assertion(settings: SalesforceConnection, now: Callable[[], float] = time.time) -> str:
    """The signed RS256 JWT bearer assertion for ``settings`` (a secret: never log it)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(_private_key_pem(settings), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuthError(
            f"the JWT private key cannot be read as an unencrypted PEM key ({type(exc).__name__})",
            system="salesforce",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthError("the JWT private key must be an RSA key (RS256)", system="salesforce")
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {
        "iss": settings.consumer_key,
        "sub": settings.username,
        "aud": settings.login_url.rstrip("/"),
        "exp": int(now()) + JWT_LIFETIME_S,
    }
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _secret(value: Any) -> str:
    return "" if value is None else str(value.get_secret_value())


def _request_args(settings: SalesforceConnection) -> dict[str, Any]:
    """The form (and Basic auth) of the token request for the connection's auth mode."""
    if settings.auth == "password":
        password = _secret(settings.password) + _secret(settings.security_token)
        return {
            "data": {
                "grant_type": "password",
                "client_id": settings.consumer_key,
                "client_secret": _secret(settings.consumer_secret),
                "username": settings.username,
                "password": password,
            }
        }
    if settings.auth == "refresh_token":
        form = {
            "grant_type": "refresh_token",
            "client_id": str(settings.consumer_key),
            "refresh_token": _secret(settings.refresh_token),
        }
        if settings.consumer_secret is not None:
            form["client_secret"] = _secret(settings.consumer_secret)
        return {"data": form}
    if settings.auth == "client_credentials":
        return {
            "data": {"grant_type": "client_credentials"},
            "auth": (str(settings.consumer_key), _secret(settings.consumer_secret)),
        }
    return {"data": {"grant_type": JWT_GRANT, "assertion": jwt_assertion(settings)}}


def fetch_token(
    settings: SalesforceConnection, session: requests.Session, policy: CallPolicy
) -> Token:
    """A new access token for ``settings``, through ``policy`` (retried on 5xx and resets).

    Raises:
        AuthError: the token endpoint refused the credentials (``invalid_grant``,
            ``invalid_client_id`` …), with its ``error_description`` and no secret.
        RateLimited, Retryable, Fatal: the endpoint could not be reached or kept failing.
    """
    register_secret(
        _secret(settings.password),
        _secret(settings.security_token),
        _secret(settings.consumer_secret),
        _secret(settings.private_key),
        _secret(settings.refresh_token),
    )
    url = token_url(settings)
    args = _request_args(settings)
    register_secret(args["data"].get("assertion"), args["data"].get("password"))
    try:
        response = policy.execute(
            lambda: session.post(url, timeout=settings.timeout_s, **args),
            to_info=from_requests,
            idempotent=True,  # a second token request only issues another token
            describe=f"Salesforce token request ({settings.auth})",
        )
    except AuthError:
        raise
    except ConnectorError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            raise AuthError(
                f"Salesforce refused the {settings.auth} credentials: {exc.message}",
                system="salesforce",
                url=url,
                status=exc.status,
                code=exc.code,
                method="POST",
            ) from None
        raise
    try:
        body = response.json()
    except ValueError:
        body = None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthError(
            "the token endpoint answered without an access_token",
            system="salesforce",
            url=url,
            status=response.status_code,
        )
    register_secret(token)
    assert isinstance(body, dict)
    instance = body.get("instance_url")
    instance_url = str(instance) if isinstance(instance, str) and instance else ""
    if not instance_url:
        instance_url = settings.instance_url or ""
    if not instance_url:
        raise AuthError(
            "the token endpoint named no instance_url; set instance_url in the connection",
            system="salesforce",
            url=url,
        )
    return Token(token, instance_url.rstrip("/"))
