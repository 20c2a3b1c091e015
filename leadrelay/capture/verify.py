"""Signature and token checks of the capture service, one per source, as each platform does it.

Every check is a pure function: it takes the secret, the raw request body (the exact bytes
received, never a re-serialized copy) and the header values, and either returns ``None`` or
raises :class:`VerificationError` with a short machine reason (``missing_signature``,
``bad_signature``, ``stale_timestamp`` …) that is safe to log and to use as a metrics label. No
secret and no expected signature ever appears in an error.

Every comparison of a secret or a signature goes through :func:`hmac.compare_digest`, so the
time it takes does not tell an attacker how many leading characters were right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "HUBSPOT_MAX_AGE_S",
    "VerificationError",
    "check_form_secret",
    "check_google_key",
    "check_hubspot_v3",
    "check_linkedin_signature",
    "check_meta_signature",
    "check_webform_hmac",
    "constant_time_equal",
    "hex_hmac_sha256",
    "hubspot_v3_signature",
    "linkedin_challenge_response",
    "meta_handshake",
]

#: HubSpot rejects v3 requests whose timestamp is older than five minutes (facts §0, §1).
HUBSPOT_MAX_AGE_S = 300


class VerificationError(Exception):
    """A request failed authentication. ``reason`` is a short code, safe for logs and metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def constant_time_equal(expected: str | bytes, given: str | bytes) -> bool:
    """Whether two secrets or signatures are equal, compared in constant time."""
    return hmac.compare_digest(_bytes(expected), _bytes(given))


def hex_hmac_sha256(secret: str | bytes, message: str | bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``message`` keyed with ``secret``."""
    return hmac.new(_bytes(secret), _bytes(message), hashlib.sha256).hexdigest()


def _check_hex_signature(
    secret: str, body: bytes, header: str | None, *, prefix: str, prefix_required: bool, name: str
) -> None:
    if header is None or not header.strip():
        raise VerificationError("missing_signature", f"{name} header is missing")
    value = header.strip()
    if value[: len(prefix)].lower() == prefix:
        value = value[len(prefix) :]
    elif prefix_required:
        raise VerificationError("bad_signature", f"{name} must be '{prefix}<hex digest>'")
    if not constant_time_equal(hex_hmac_sha256(secret, body), value.lower()):
        raise VerificationError("bad_signature", f"{name} does not match the body")


# -- Meta ------------------------------------------------------------------------------------


def meta_handshake(params: Mapping[str, str], verify_tokens: Iterable[str]) -> str:
    """Answer Meta's subscription handshake: the ``hub.challenge`` to echo back.

    Meta sends ``GET ?hub.mode=subscribe&hub.challenge=N&hub.verify_token=T`` and expects the
    raw challenge as the body when T is the token set in the app (facts §4). ``verify_tokens``
    are the tokens of every configured Meta form; any of them is accepted.
    """
    if params.get("hub.mode") != "subscribe":
        raise VerificationError("bad_handshake", "hub.mode must be 'subscribe'")
    given = params.get("hub.verify_token")
    if not given:
        raise VerificationError("missing_token", "hub.verify_token is missing")
    # Compare against every token so the time taken does not reveal which form matched.
    matched = False
    for token in verify_tokens:
        matched |= constant_time_equal(token, given)
    if not matched:
        raise VerificationError("bad_token", "hub.verify_token does not match")
    challenge = params.get("hub.challenge")
    if challenge is None or challenge == "":
        raise VerificationError("bad_handshake", "hub.challenge is missing")
    return challenge


def check_meta_signature(app_secret: str, body: bytes, header: str | None) -> None:
    """Check ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>``."""
    _check_hex_signature(
        app_secret, body, header, prefix="sha256=", prefix_required=True, name="X-Hub-Signature-256"
    )


# -- LinkedIn --------------------------------------------------------------------------------


#: LinkedIn's ``challengeCode`` is a UUID in its canonical 8-4-4-4-12 hex form (facts §4).
_LINKEDIN_CHALLENGE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def linkedin_challenge_response(client_secret: str, challenge_code: str) -> str:
    """The ``challengeResponse`` LinkedIn expects: hex HMAC-SHA256(clientSecret, challengeCode).

    Only a code shaped as LinkedIn sends it (a UUID) is answered: the answer is the same keyed
    hash as ``X-LI-Signature``, so answering any text would sign a forged notification body
    for whoever asks. No notification body is a UUID (it is a JSON object).
    """
    if not _LINKEDIN_CHALLENGE.fullmatch(challenge_code):
        raise VerificationError("bad_challenge", "challengeCode must be a UUID")
    return hex_hmac_sha256(client_secret, challenge_code)


def check_linkedin_signature(client_secret: str, body: bytes, header: str | None) -> None:
    """Check ``X-LI-Signature``: hex HMAC-SHA256(clientSecret, raw body).

    The documented value is the bare hex digest; some descriptions show an ``hmacsha256=``
    prefix (facts §4 marks it VERIFY), so both forms are accepted.
    """
    _check_hex_signature(
        client_secret,
        body,
        header,
        prefix="hmacsha256=",
        prefix_required=False,
        name="X-LI-Signature",
    )


# -- Google Ads ------------------------------------------------------------------------------


def check_google_key(expected: str, given: object) -> None:
    """Check the ``google_key`` of a Google Ads lead form webhook body (no signature exists)."""
    if given is None or given == "":
        raise VerificationError("missing_key", "google_key is missing")
    if not isinstance(given, str):
        raise VerificationError("bad_key", "google_key must be a string")
    if not constant_time_equal(expected, given):
        raise VerificationError("bad_key", "google_key does not match")


# -- HubSpot ---------------------------------------------------------------------------------

# HubSpot signs the URI with these percent-escapes decoded (webhooks v3 validation guide).
_HUBSPOT_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_DECODE), re.IGNORECASE)


def _hubspot_uri(uri: str) -> str:
    return _HUBSPOT_ESCAPE.sub(lambda match: _HUBSPOT_DECODE[match[0].upper()], uri)


def hubspot_v3_signature(
    client_secret: str, method: str, uri: str, body: bytes, timestamp: str
) -> str:
    """base64 HMAC-SHA256(client_secret, method + uri + body + timestamp) (HubSpot v3)."""
    message = method.upper().encode() + _hubspot_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(client_secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def check_hubspot_v3(
    client_secret: str,
    *,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now_ms: int,
    max_age_s: int = HUBSPOT_MAX_AGE_S,
) -> None:
    """Check ``X-HubSpot-Signature-v3`` and ``X-HubSpot-Request-Timestamp`` (milliseconds).

    ``uri`` is the full URI as HubSpot called it (scheme, host, path and query). A timestamp
    more than ``max_age_s`` away from ``now_ms`` — older, or as far in the future — is refused,
    so a captured request cannot be replayed later.
    """
    if signature is None or not signature.strip():
        raise VerificationError("missing_signature", "X-HubSpot-Signature-v3 header is missing")
    if timestamp is None or not timestamp.strip():
        raise VerificationError("missing_timestamp", "X-HubSpot-Request-Timestamp is missing")
    stamp = timestamp.strip()
    if not stamp.isdigit() or len(stamp) > 16:
        raise VerificationError(
            "bad_timestamp", "X-HubSpot-Request-Timestamp must be milliseconds since the epoch"
        )
    if abs(now_ms - int(stamp)) > max_age_s * 1000:
        raise VerificationError(
            "stale_timestamp", f"X-HubSpot-Request-Timestamp is more than {max_age_s} s away"
        )
    expected = hubspot_v3_signature(client_secret, method, uri, body, stamp)
    if not constant_time_equal(expected, signature.strip()):
        raise VerificationError("bad_signature", "X-HubSpot-Signature-v3 does not match")


# -- web forms -------------------------------------------------------------------------------


def check_form_secret(secret: str, header: str | None) -> None:
    """Check the shared secret a server-side form handler sends in ``X-Leadrelay-Secret``."""
    if header is None or header == "":
        raise VerificationError("missing_secret", "X-Leadrelay-Secret header is missing")
    if not constant_time_equal(secret, header):
        raise VerificationError("bad_secret", "X-Leadrelay-Secret does not match")


def check_webform_hmac(hmac_secret: str, body: bytes, header: str | None) -> None:
    """Check ``X-Leadrelay-Signature: sha256=<hex HMAC-SHA256(hmac_secret, raw body)>``.

    The ``sha256=`` prefix is optional, as with LinkedIn.
    """
    _check_hex_signature(
        hmac_secret,
        body,
        header,
        prefix="sha256=",
        prefix_required=False,
        name="X-Leadrelay-Signature",
    )
