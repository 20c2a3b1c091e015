"""Tests for the per-source signature and token checks (leadrelay.capture.verify)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hubspot.utils.signature import Signature

from leadrelay.capture import verify
from leadrelay.capture.verify import (
    VerificationError,
    check_form_secret,
    check_google_key,
    check_hubspot_v3,
    check_linkedin_signature,
    check_meta_signature,
    check_webform_hmac,
    hubspot_v3_signature,
    linkedin_challenge_response,
    meta_handshake,
)

BODY = b'{"object":"page","entry":[]}'
SECRET = "s3cret-key"


def _hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


GOOD = _hex(SECRET, BODY)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (f"sha256={GOOD}", None),
        (f"SHA256={GOOD.upper()}", None),
        (None, "missing_signature"),
        ("", "missing_signature"),
        (GOOD, "bad_signature"),  # Meta always sends the sha256= prefix
        (f"sha256={_hex('other', BODY)}", "bad_signature"),
        (f"sha256={_hex(SECRET, BODY + b' ')}", "bad_signature"),
        ("sha256=", "bad_signature"),
        ("sha1=abc", "bad_signature"),
    ],
)
def test_meta_signature(header: str | None, reason: str | None) -> None:
    if reason is None:
        check_meta_signature(SECRET, BODY, header)
        return
    with pytest.raises(VerificationError) as caught:
        check_meta_signature(SECRET, BODY, header)
    assert caught.value.reason == reason
    assert SECRET not in str(caught.value) and GOOD not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (GOOD, None),
        (f"hmacsha256={GOOD}", None),
        (None, "missing_signature"),
        (_hex("other", BODY), "bad_signature"),
        (f"sha256={GOOD}", "bad_signature"),
    ],
)
def test_linkedin_signature(header: str | None, reason: str | None) -> None:
    if reason is None:
        check_linkedin_signature(SECRET, BODY, header)
        return
    with pytest.raises(VerificationError) as caught:
        check_linkedin_signature(SECRET, BODY, header)
    assert caught.value.reason == reason


def test_linkedin_challenge_response_is_hex_hmac_of_the_code() -> None:
    code = "f3e2b6a8-4d12-4c55-9a6b-3c2e5f8d9a01"
    assert linkedin_challenge_response(SECRET, code) == _hex(SECRET, code.encode())


@pytest.mark.parametrize(
    ("params", "result"),
    [
        (
            {"hub.mode": "subscribe", "hub.verify_token": "tok-b", "hub.challenge": "1158201444"},
            "1158201444",
        ),
        ({"hub.mode": "subscribe", "hub.verify_token": "tok-x", "hub.challenge": "1"}, "bad_token"),
        (
            {"hub.mode": "unsubscribe", "hub.verify_token": "tok-a", "hub.challenge": "1"},
            "bad_handshake",
        ),
        ({"hub.mode": "subscribe", "hub.challenge": "1"}, "missing_token"),
        ({"hub.mode": "subscribe", "hub.verify_token": "tok-a"}, "bad_handshake"),
    ],
)
def test_meta_handshake(params: dict[str, str], result: str) -> None:
    if result.isdigit():
        assert meta_handshake(params, ["tok-a", "tok-b"]) == result
        return
    with pytest.raises(VerificationError) as caught:
        meta_handshake(params, ["tok-a", "tok-b"])
    assert caught.value.reason == result


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("gkey", None),
        ("gkey ", "bad_key"),
        ("other", "bad_key"),
        (None, "missing_key"),
        ("", "missing_key"),
        (123, "bad_key"),
    ],
)
def test_google_key(given: object, reason: str | None) -> None:
    if reason is None:
        check_google_key("gkey", given)
        return
    with pytest.raises(VerificationError) as caught:
        check_google_key("gkey", given)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("shared-1", None),
        (None, "missing_secret"),
        ("", "missing_secret"),
        ("shared-2", "bad_secret"),
    ],
)
def test_form_secret(header: str | None, reason: str | None) -> None:
    if reason is None:
        check_form_secret("shared-1", header)
        return
    with pytest.raises(VerificationError) as caught:
        check_form_secret("shared-1", header)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("header", "ok"),
    [(f"sha256={GOOD}", True), (GOOD, True), (None, False), (_hex("x", BODY), False)],
)
def test_webform_hmac(header: str | None, ok: bool) -> None:
    if ok:
        check_webform_hmac(SECRET, BODY, header)
    else:
        with pytest.raises(VerificationError):
            check_webform_hmac(SECRET, BODY, header)


URI = "https://leads.example.com/hooks/hubspot?portal=1"
NOW_MS = 1_740_830_400_000
SIGNED_NOW = hubspot_v3_signature(SECRET, "POST", URI, BODY, str(NOW_MS))
SIGNED_BEFORE = hubspot_v3_signature(SECRET, "POST", URI, BODY, str(NOW_MS - 1))


def test_hubspot_signature_matches_the_official_client() -> None:
    stamp = str(NOW_MS)
    ours = hubspot_v3_signature(SECRET, "POST", URI, BODY, stamp)
    theirs = Signature.get_signature(
        SECRET, BODY.decode(), "v3", http_uri=URI, http_method="POST", timestamp=stamp
    )
    assert ours == theirs


def test_hubspot_signature_decodes_the_listed_escapes() -> None:
    encoded = "https://leads.example.com/hooks/hubspot?a=b%3Ac%40d%2Fe"
    plain = "https://leads.example.com/hooks/hubspot?a=b:c@d/e"
    message = b"POST" + plain.encode() + BODY + b"1"
    expected = base64.b64encode(hmac.new(SECRET.encode(), message, hashlib.sha256).digest())
    assert hubspot_v3_signature(SECRET, "POST", encoded, BODY, "1") == expected.decode()


def _hubspot(signature: str | None, timestamp: str | None, uri: str = URI) -> None:
    check_hubspot_v3(
        SECRET,
        method="POST",
        uri=uri,
        body=BODY,
        signature=signature,
        timestamp=timestamp,
        now_ms=NOW_MS,
    )


@pytest.mark.parametrize(
    ("offset_ms", "reason"),
    [
        (0, None),
        (-299_000, None),
        (-300_000, None),
        (-300_001, "stale_timestamp"),
        (-3_600_000, "stale_timestamp"),
        (299_000, None),
        (300_001, "stale_timestamp"),
    ],
)
def test_hubspot_timestamp_window(offset_ms: int, reason: str | None) -> None:
    stamp = str(NOW_MS + offset_ms)
    signature = hubspot_v3_signature(SECRET, "POST", URI, BODY, stamp)
    if reason is None:
        _hubspot(signature, stamp)
        return
    with pytest.raises(VerificationError) as caught:
        _hubspot(signature, stamp)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("signature", "timestamp", "uri", "reason"),
    [
        (None, str(NOW_MS), URI, "missing_signature"),
        ("sig", None, URI, "missing_timestamp"),
        ("sig", "12.5", URI, "bad_timestamp"),
        ("sig", "-5", URI, "bad_timestamp"),
        ("sig", str(NOW_MS), URI, "bad_signature"),
        (SIGNED_NOW, str(NOW_MS), "http://other/x", "bad_signature"),
        (SIGNED_BEFORE, str(NOW_MS), URI, "bad_signature"),
    ],
)
def test_hubspot_refusals(
    signature: str | None, timestamp: str | None, uri: str, reason: str
) -> None:
    with pytest.raises(VerificationError) as caught:
        _hubspot(signature, timestamp, uri)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "call",
    [
        lambda: check_meta_signature(SECRET, BODY, "sha256=00"),
        lambda: check_linkedin_signature(SECRET, BODY, "00"),
        lambda: check_google_key("gkey", "nope"),
        lambda: check_form_secret("shared", "nope"),
        lambda: check_webform_hmac(SECRET, BODY, "00"),
        lambda: _hubspot("AAAA", str(NOW_MS)),
        lambda: meta_handshake({"hub.mode": "subscribe", "hub.verify_token": "x"}, ["y"]),
    ],
)
def test_every_check_compares_in_constant_time(
    call: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(verify.hmac, "compare_digest", spy)
    with pytest.raises(VerificationError):
        call()  # type: ignore[operator]
    assert calls
