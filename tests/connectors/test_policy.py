"""Tests for the shared transport policy (leadrelay.connectors.policy) and errors."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import requests
import respx
import urllib3.exceptions

from leadrelay.connectors.errors import (
    AuthError,
    ConnectorError,
    Fatal,
    RateLimited,
    RedactingFilter,
    Rejected,
    Retryable,
    forget_secrets,
    redact,
    redact_url,
    register_secret,
)
from leadrelay.connectors.policy import (
    CallPolicy,
    Classified,
    Decision,
    ManualClock,
    RateLimiter,
    RefreshingAuth,
    ResponseInfo,
    RetryPolicy,
    classify_default,
    from_exception,
    from_httpx,
    from_requests,
    parse_retry_after,
    system_message,
)

URL = "https://api.example.test/crm/v3/objects/contacts"


def info(
    status: int | None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    error: BaseException | None = None,
) -> ResponseInfo:
    if body is not None and not isinstance(body, str | bytes):
        body = json.dumps(body)
    return ResponseInfo(status=status, headers=headers or {}, body=body, url=URL, error=error)


# --------------------------------------------------------------------------------------------
# Classification

HS_401 = {
    "status": "error",
    "message": "Authentication credentials not found.",
    "category": "INVALID_AUTHENTICATION",
}
SF_401 = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
ZOHO_401 = {
    "code": "INVALID_TOKEN",
    "details": {},
    "message": "invalid oauth token",
    "status": "error",
}
HS_429 = {
    "status": "error",
    "message": "You have reached your ten_secondly_rolling limit.",
    "policyName": "TEN_SECONDLY_ROLLING",
    "category": "RATE_LIMITS",
}
HS_429_DAILY = {
    "status": "error",
    "message": "You have reached your daily limit.",
    "policyName": "DAILY",
    "category": "RATE_LIMITS",
}
ZOHO_429 = {
    "code": "TOO_MANY_REQUESTS",
    "details": {},
    "message": "too many requests",
    "status": "error",
}
SF_403_DAILY = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
SF_403_CONCURRENT = [
    {"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
HS_403 = {
    "status": "error",
    "message": "This app hasn't been granted all required scopes.",
    "category": "MISSING_SCOPES",
}
SF_400 = [
    {
        "message": "Required fields are missing: [Company]",
        "errorCode": "REQUIRED_FIELD_MISSING",
        "fields": ["Company"],
    }
]
HS_400 = {
    "status": "error",
    "message": "Property values were not valid",
    "category": "VALIDATION_ERROR",
    "errors": [{"message": "bad option", "code": "INVALID_OPTION", "in": "lifecyclestage"}],
}
HS_409 = {
    "status": "error",
    "message": "Contact already exists. Existing ID: 501",
    "category": "CONFLICT",
}
ZOHO_400 = {
    "code": "MANDATORY_NOT_FOUND",
    "details": {"api_name": "Last_Name", "json_path": "$.data[0].Last_Name"},
    "message": "required field not found",
    "status": "error",
}


@pytest.mark.parametrize(
    ("status", "body", "headers", "decision", "resend_safe"),
    [
        (200, {"results": []}, {}, Decision.SUCCESS, False),
        (201, None, {}, Decision.SUCCESS, False),
        (204, None, {}, Decision.SUCCESS, False),
        (304, None, {}, Decision.SUCCESS, False),
        (401, HS_401, {}, Decision.REAUTH, False),
        (401, SF_401, {}, Decision.REAUTH, False),
        (401, ZOHO_401, {}, Decision.REAUTH, False),
        (429, HS_429, {}, Decision.RETRY, True),
        (429, ZOHO_429, {}, Decision.RETRY, True),
        (429, "error code: 1015", {"Content-Type": "text/plain"}, Decision.RETRY, True),
        (429, HS_429_DAILY, {}, Decision.FAIL, False),
        (403, SF_403_DAILY, {}, Decision.FAIL, False),
        (403, SF_403_CONCURRENT, {}, Decision.RETRY, True),
        (403, "Rate limit exceeded, slow down", {}, Decision.RETRY, True),
        (403, "", {"Retry-After": "5"}, Decision.RETRY, True),
        (403, HS_403, {}, Decision.FAIL, False),
        (408, None, {}, Decision.RETRY, False),
        (425, None, {}, Decision.RETRY, True),
        (500, "Internal Server Error", {}, Decision.RETRY, False),
        (502, None, {}, Decision.RETRY, False),
        (503, {"status": "error", "message": "Service unavailable"}, {}, Decision.RETRY, False),
        (504, None, {}, Decision.RETRY, False),
        (300, [{"errorCode": "MULTIPLE_CHOICES"}], {}, Decision.REJECT, False),
        (400, SF_400, {}, Decision.REJECT, False),
        (400, HS_400, {}, Decision.REJECT, False),
        (400, ZOHO_400, {}, Decision.REJECT, False),
        (404, None, {}, Decision.REJECT, False),
        (409, HS_409, {}, Decision.REJECT, False),
        (422, None, {}, Decision.REJECT, False),
        (405, None, {}, Decision.FAIL, False),
        (501, None, {}, Decision.FAIL, False),
    ],
)
def test_classify_response(
    status: int, body: Any, headers: dict[str, str], decision: Decision, resend_safe: bool
) -> None:
    classified = classify_default(info(status, body, headers))
    assert (classified.decision, classified.resend_safe) == (decision, resend_safe)


def _max_retry(reason: Exception) -> Exception:
    return urllib3.exceptions.MaxRetryError(None, URL, reason=reason)  # type: ignore[arg-type]


def _wrapped_ssl() -> Exception:
    error = httpx.ConnectError("handshake failed")
    error.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    return error


@pytest.mark.parametrize(
    ("error", "decision", "resend_safe"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), Decision.RETRY, True),
        (httpx.ConnectTimeout("timed out"), Decision.RETRY, True),
        (httpx.PoolTimeout("no connection free"), Decision.RETRY, True),
        (httpx.ReadTimeout("timed out"), Decision.RETRY, False),
        (httpx.RemoteProtocolError("Server disconnected"), Decision.RETRY, False),
        (requests.exceptions.ConnectTimeout("connect timed out"), Decision.RETRY, True),
        (requests.exceptions.ReadTimeout("read timed out"), Decision.RETRY, False),
        (
            requests.exceptions.ConnectionError(
                _max_retry(urllib3.exceptions.NewConnectionError(None, "refused"))  # type: ignore[arg-type]
            ),
            Decision.RETRY,
            True,
        ),
        (
            requests.exceptions.ConnectionError(
                urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
            ),
            Decision.RETRY,
            False,
        ),
        (_max_retry(urllib3.exceptions.ConnectTimeoutError("timed out")), Decision.RETRY, True),
        (urllib3.exceptions.ReadTimeoutError(None, URL, "read timed out"), Decision.RETRY, False),  # type: ignore[arg-type]
        (ConnectionResetError(104, "Connection reset by peer"), Decision.RETRY, False),
        (_wrapped_ssl(), Decision.FAIL, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_classify_connection_error(
    error: BaseException, decision: Decision, resend_safe: bool
) -> None:
    converted = from_exception(error, url=URL)
    assert converted is not None
    classified = classify_default(converted)
    assert (classified.decision, classified.resend_safe) == (decision, resend_safe)


def test_tls_failure_names_the_ca_bundle() -> None:
    converted = from_exception(_wrapped_ssl(), url=URL)
    assert converted is not None
    assert "ca_bundle" in classify_default(converted).reason


def test_tls_failure_gives_openssls_reason_not_the_wrappers(tmp_path: Path) -> None:
    """A real refused handshake through requests: the reason is OpenSSL's verdict, without
    urllib3's MaxRetryError / SSLError wrappers around it."""
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            connection, _ = listener.accept()
            with contextlib.suppress(OSError), connection:
                server_context.wrap_socket(connection, server_side=True)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(requests.exceptions.SSLError) as raised:
            requests.get(url, verify=str(tmp_path / "other.pem"), timeout=10)
        thread.join(10)
    converted = from_exception(raised.value, url=url)
    assert converted is not None
    reason = classify_default(converted).reason
    assert "unable to get local issuer certificate" in reason
    assert "MaxRetryError" not in reason and "ca_bundle" in reason


def test_unknown_exceptions_are_not_transport_errors() -> None:
    assert from_exception(KeyError("x")) is None


@pytest.mark.parametrize(
    ("body", "message", "code", "field"),
    [
        (HS_400, "Property values were not valid", "VALIDATION_ERROR", "lifecyclestage"),
        (SF_400, "Required fields are missing: [Company]", "REQUIRED_FIELD_MISSING", "Company"),
        (ZOHO_400, "required field not found", "MANDATORY_NOT_FOUND", "Last_Name"),
        (
            {"error": "invalid_grant", "error_description": "authentication failure"},
            "authentication failure",
            "invalid_grant",
            None,
        ),
        ({"error": "invalid_code"}, "invalid_code", "invalid_code", None),
        ({"data": [ZOHO_400]}, "required field not found", "MANDATORY_NOT_FOUND", "Last_Name"),
        ("<html>" + "x" * 400, "<html>" + "x" * 294, None, None),
    ],
)
def test_system_message_reads_each_dialect(
    body: Any, message: str, code: str | None, field: str | None
) -> None:
    said = system_message(info(400, body))
    assert (said.message, said.code, said.field) == (message, code, field)


def test_system_message_falls_back_for_an_empty_body() -> None:
    assert system_message(info(503, ""), fallback="Service Unavailable").message == (
        "Service Unavailable"
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("1.5", 1.5), ("", None), ("soon", None), (None, None)],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2025, 3, 1, 12, 0, 42, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now=lambda: now) == 42.0


def test_retry_after_in_the_past_is_zero() -> None:
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    earlier = format_datetime(datetime(2025, 3, 1, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(earlier, now=lambda: now) == 0.0


# --------------------------------------------------------------------------------------------
# Execute


class Script:
    """A call that answers a scripted sequence of ResponseInfos (or raises exceptions)."""

    def __init__(self, outcomes: Sequence[ResponseInfo | BaseException]) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> ResponseInfo:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def make_policy(clock: ManualClock, retry: RetryPolicy | None = None, **kwargs: Any) -> CallPolicy:
    return CallPolicy(
        "hubspot",
        retry=retry or RetryPolicy(jitter=False),
        sleep=clock.sleep,
        clock=clock.now,
        **kwargs,
    )


def run(
    policy: CallPolicy,
    script: Script,
    *,
    idempotent: bool = True,
    reauth: Callable[[], None] | None = None,
) -> ResponseInfo:
    return policy.execute(
        script, to_info=lambda r: r, idempotent=idempotent, reauth=reauth, describe="batch upsert"
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_success_returns_the_result_without_waiting(clock: ManualClock) -> None:
    script = Script([info(200, {"ok": True})])
    assert run(make_policy(clock), script).status == 200
    assert (script.calls, clock.sleeps) == (1, [])


def test_retry_after_seconds_is_honoured(clock: ManualClock) -> None:
    script = Script([info(429, HS_429, {"Retry-After": "3"}), info(200)])
    run(make_policy(clock), script)
    assert clock.sleeps == [3.0]


def test_retry_after_http_date_is_honoured(clock: ManualClock) -> None:
    when = format_datetime(datetime(2099, 1, 1, tzinfo=UTC), usegmt=True)
    script = Script([info(503, None, {"Retry-After": when}), info(200)])
    policy = make_policy(clock, RetryPolicy(max_total_s=10**10, jitter=False))
    run(policy, script)
    assert len(clock.sleeps) == 1 and clock.sleeps[0] > 10**9


def test_backoff_is_exponential_without_retry_after(clock: ManualClock) -> None:
    script = Script([info(503)] * 3 + [info(200)])
    run(make_policy(clock, RetryPolicy(base_s=1, cap_s=100, jitter=False)), script)
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(base_s=1, cap_s=4, jitter=False)
    assert [policy.backoff(n) for n in range(1, 7)] == [1, 2, 4, 4, 4, 4]


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_between_half_and_all_of_the_backoff(seed: int) -> None:
    import random

    wait = RetryPolicy(base_s=1, cap_s=30).backoff(4, random.Random(seed))
    assert 4.0 <= wait <= 8.0


def test_attempts_are_bounded(clock: ManualClock) -> None:
    script = Script([info(503)])
    with pytest.raises(Retryable, match="gave up after 3 attempts"):
        run(make_policy(clock, RetryPolicy(max_attempts=3, jitter=False)), script)
    assert (script.calls, len(clock.sleeps)) == (3, 2)


def test_total_time_is_bounded(clock: ManualClock) -> None:
    script = Script([info(503)])
    policy = make_policy(
        clock, RetryPolicy(max_attempts=100, max_total_s=10, base_s=1, cap_s=100, jitter=False)
    )
    with pytest.raises(Retryable):
        run(policy, script)
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_a_retry_after_beyond_the_time_budget_is_not_slept(clock: ManualClock) -> None:
    script = Script([info(429, HS_429, {"Retry-After": "600"})])
    with pytest.raises(RateLimited) as caught:
        run(make_policy(clock, RetryPolicy(max_total_s=120)), script)
    assert (clock.sleeps, caught.value.retry_after) == ([], 600.0)


@pytest.mark.parametrize(
    "failure",
    [
        info(503),
        info(500),
        info(None, error=httpx.ReadTimeout("timed out")),
        info(None, error=httpx.RemoteProtocolError("Server disconnected")),
    ],
    ids=["503", "500", "read-timeout", "reset"],
)
def test_non_idempotent_call_is_not_retried_after_an_ambiguous_failure(
    clock: ManualClock, failure: ResponseInfo
) -> None:
    script = Script([failure, info(201)])
    with pytest.raises(Retryable, match="may have been applied"):
        run(make_policy(clock), script, idempotent=False)
    assert script.calls == 1


@pytest.mark.parametrize(
    "failure",
    [info(429, ZOHO_429), httpx.ConnectError("[Errno 111] Connection refused")],
    ids=["429", "connect-error"],
)
def test_non_idempotent_call_is_retried_when_nothing_was_sent(
    clock: ManualClock, failure: ResponseInfo | BaseException
) -> None:
    script = Script([failure, info(201)])
    assert run(make_policy(clock), script, idempotent=False).status == 201
    assert script.calls == 2


def test_reauth_once_then_success(clock: ManualClock) -> None:
    refreshed: list[bool] = []
    script = Script([info(401, SF_401), info(200)])
    run(make_policy(clock), script, reauth=lambda: refreshed.append(True))
    assert (refreshed, script.calls, clock.sleeps) == ([True], 2, [])


def test_reauth_at_most_once_then_auth_error(clock: ManualClock) -> None:
    refreshed: list[bool] = []
    script = Script([info(401, SF_401)])
    with pytest.raises(AuthError, match="Session expired or invalid"):
        run(make_policy(clock), script, reauth=lambda: refreshed.append(True))
    assert (refreshed, script.calls) == ([True], 2)


def test_401_without_reauth_is_an_auth_error_at_once(clock: ManualClock) -> None:
    script = Script([info(401, ZOHO_401)])
    with pytest.raises(AuthError):
        run(make_policy(clock), script)
    assert script.calls == 1


@pytest.mark.parametrize(
    ("outcome", "error_type", "message", "code"),
    [
        (
            info(400, SF_400),
            Rejected,
            "Required fields are missing: [Company]",
            "REQUIRED_FIELD_MISSING",
        ),
        (info(409, HS_409), Rejected, "Contact already exists. Existing ID: 501", "CONFLICT"),
        (info(403, HS_403), Fatal, "required scopes", "MISSING_SCOPES"),
        (
            info(403, SF_403_DAILY),
            RateLimited,
            "TotalRequests Limit exceeded.",
            "REQUEST_LIMIT_EXCEEDED",
        ),
        (info(429, ZOHO_429), RateLimited, "too many requests", "TOO_MANY_REQUESTS"),
        (info(503, {"message": "Service unavailable"}), Retryable, "Service unavailable", None),
        (info(401, ZOHO_401), AuthError, "invalid oauth token", "INVALID_TOKEN"),
    ],
)
def test_typed_errors_carry_system_url_status_and_message(
    clock: ManualClock,
    outcome: ResponseInfo,
    error_type: type[ConnectorError],
    message: str,
    code: str | None,
) -> None:
    with pytest.raises(error_type) as caught:
        run(make_policy(clock, RetryPolicy(max_attempts=2, jitter=False)), Script([outcome]))
    error = caught.value
    assert (error.system, error.url, error.status, error.code) == (
        "hubspot",
        URL,
        outcome.status,
        code,
    )
    assert message in error.message and message in str(error)


def test_rejected_names_the_field_and_record(clock: ManualClock) -> None:
    with pytest.raises(Rejected) as caught:
        CallPolicy("salesforce", sleep=clock.sleep, clock=clock.now).execute(
            Script([info(400, SF_400)]),
            to_info=lambda r: r,
            idempotent=True,
            describe="upsert",
            record="lead-7",
        )
    assert (caught.value.field, caught.value.record) == ("Company", "lead-7")
    assert "record lead-7, field Company" in str(caught.value)


def test_connector_errors_raised_by_the_call_propagate(clock: ManualClock) -> None:
    error = AuthError("refresh token revoked", system="zoho")
    with pytest.raises(AuthError) as caught:
        run(make_policy(clock), Script([error]))
    assert caught.value is error


def test_other_exceptions_propagate_unretried(clock: ManualClock) -> None:
    script = Script([KeyError("results")])
    with pytest.raises(KeyError):
        run(make_policy(clock), script)
    assert script.calls == 1


def test_every_attempt_is_counted(clock: ManualClock) -> None:
    counted: list[int] = []
    policy = make_policy(clock, on_call=lambda: counted.append(1))
    run(policy, Script([info(503), info(401), info(200)]), reauth=lambda: None)
    assert len(counted) == 3


def test_a_returned_value_without_to_info_is_success(clock: ManualClock) -> None:
    policy = make_policy(clock)
    assert policy.execute(lambda: "ok", idempotent=True, describe="read") == "ok"


def test_hubspot_api_exception_is_classified(clock: ManualClock) -> None:
    class ApiException(Exception):  # the shape hubspot-api-client raises
        def __init__(self) -> None:
            super().__init__("(429)")
            self.status = 429
            self.body = json.dumps(HS_429)
            self.headers = {"Retry-After": "2"}

    calls = Script([ApiException(), info(200)])
    run(make_policy(clock), calls)
    assert clock.sleeps == [2.0]


def test_simple_salesforce_error_is_classified() -> None:
    from simple_salesforce.exceptions import SalesforceMalformedRequest

    error = SalesforceMalformedRequest(URL, 400, "Lead", SF_400)
    converted = from_exception(error)
    assert converted is not None
    classified = classify_default(converted)
    assert (classified.decision, classified.field) == (Decision.REJECT, "Company")


def test_simple_salesforce_login_failure_is_an_auth_failure() -> None:
    from simple_salesforce.exceptions import SalesforceAuthenticationFailed

    converted = from_exception(SalesforceAuthenticationFailed("invalid_grant", "bad password"))
    assert converted is not None
    classified = classify_default(converted)
    assert (classified.decision, classified.message) == (Decision.REAUTH, "bad password")


@respx.mock
def test_from_httpx_reads_status_headers_body_and_url() -> None:
    respx.get(URL).mock(return_value=httpx.Response(503, headers={"Retry-After": "4"}, text="busy"))
    with httpx.Client() as client:
        converted = from_httpx(client.get(URL))
    assert (converted.status, converted.header("retry-after"), converted.text(), converted.url) == (
        503,
        "4",
        "busy",
        URL,
    )


def test_from_requests_reads_status_headers_and_body() -> None:
    response = requests.Response()
    response.status_code = 429
    response.headers["Retry-After"] = "9"
    response._content = b'{"message": "slow"}'
    response.url = URL
    converted = from_requests(response)
    assert (
        converted.status,
        converted.header("Retry-After"),
        system_message(converted).message,
    ) == (
        429,
        "9",
        "slow",
    )


# --------------------------------------------------------------------------------------------
# Redaction


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://accounts.zoho.eu/oauth/v2/token?grant_type=refresh_token&client_id=1000.ABC"
            "&client_secret=s3cr3tvalue&refresh_token=1000.aa.bb",
            "https://accounts.zoho.eu/oauth/v2/token?grant_type=refresh_token&client_id=1000.ABC"
            "&client_secret=***&refresh_token=***",
        ),
        ("https://x.test/cb?code=abc123&state=ok", "https://x.test/cb?code=***&state=ok"),
        (
            "https://x.test/a?access_token=tok&password=pw",
            "https://x.test/a?access_token=***&password=***",
        ),
        ("https://user:pass@x.test/a", "https://***@x.test/a"),
        ("https://x.test/a?limit=100&after=5", "https://x.test/a?limit=100&after=5"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        (
            "Authorization: Zoho-oauthtoken "
            "1000.6f1e2d3c4b5a69788796a5b4c3d2e1f0.0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "1000.6f1e",
        ),
        ("token pat-na1-11111111-2222-3333-4444-555555555555 used", "pat-na1-1111"),
        ("session 00D5g000001abcD!AQ4AQFxyzSESSION used", "AQ4AQFxyzSESSION"),
        ('{"access_token": "abcdef123", "instance_url": "x"}', "abcdef123"),
        ('{"refresh_token":"r-123456"}', "r-123456"),
        ("grant_type=password&client_secret=cs-999&password=hunter22", "hunter22"),
        ("POST https://h.test/token?refresh_token=rt-777777&x=1", "rt-777777"),
    ],
)
def test_redact_removes_token_shapes(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_redact_keeps_error_codes() -> None:
    assert redact('{"code":"INVALID_TOKEN","message":"invalid oauth token"}') == (
        '{"code":"INVALID_TOKEN","message":"invalid oauth token"}'
    )


def test_redact_removes_given_and_registered_secrets() -> None:
    register_secret("registered-secret-1")
    try:
        text = redact("a given-secret-2 and registered-secret-1", ["given-secret-2"])
    finally:
        forget_secrets("registered-secret-1")
    assert text == "a *** and ***"


def test_error_str_never_contains_secrets() -> None:
    register_secret("hunter2-password")
    try:
        error = Fatal(
            "login failed for password hunter2-password with Bearer abc.def.ghi",
            system="salesforce",
            url="https://login.test/services/oauth2/token?password=hunter2-password",
            status=400,
        )
        text = f"{error} {error!r} {error.message} {error.url}"
    finally:
        forget_secrets("hunter2-password")
    assert "hunter2-password" not in text and "abc.def.ghi" not in text


def test_retry_logs_carry_the_reason_and_no_secret(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    secret_url = URL + "?access_token=SECRETTOKEN123"
    echo = {"message": "token SECRETTOKEN123 rejected by Bearer SECRETTOKEN123"}
    failing = ResponseInfo(status=503, body=json.dumps(echo), url=secret_url)
    caplog.set_level(logging.INFO, logger="leadrelay.connectors")
    policy = make_policy(clock, RetryPolicy(max_attempts=2, jitter=False))
    with pytest.raises(Retryable) as caught:
        policy.execute(Script([failing]), to_info=lambda r: r, idempotent=True, describe="read")
    assert "retrying read in 0.5s: HTTP 503" in caplog.text
    assert "(attempt 1/2)" in caplog.text
    assert "SECRETTOKEN123" not in caplog.text + str(caught.value)


def test_logging_filter_redacts_arguments_and_registered_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.connectors.redaction")
    logger.addFilter(RedactingFilter(["local-secret-9"]))
    register_secret("global-secret-8")
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("sent %s with %s", "Bearer tok123456", {"client_secret": "local-secret-9"})
            logger.info("value global-secret-8")
    finally:
        forget_secrets("global-secret-8")
    assert "sent Bearer *** with" in caplog.text
    for secret in ("tok123456", "local-secret-9", "global-secret-8"):
        assert secret not in caplog.text


# --------------------------------------------------------------------------------------------
# Rate limiter


def limiter(
    clock: ManualClock, max_calls: int = 2, per_s: float = 10.0, **kwargs: Any
) -> RateLimiter:
    return RateLimiter(
        "hubspot", max_calls=max_calls, per_s=per_s, clock=clock.now, sleep=clock.sleep, **kwargs
    )


def test_limiter_waits_for_a_free_slot(clock: ManualClock) -> None:
    bucket = limiter(clock)
    for _ in range(3):
        bucket.acquire()
    assert clock.sleeps == [10.0]


def test_limiter_slots_free_up_as_the_window_rolls(clock: ManualClock) -> None:
    bucket = limiter(clock)
    bucket.acquire()
    clock.advance(6)
    bucket.acquire()
    clock.advance(5)
    bucket.acquire()
    assert clock.sleeps == []


def test_limiter_follows_hubspot_window_headers(clock: ManualClock) -> None:
    bucket = limiter(clock, max_calls=100)
    bucket.observe(
        {"X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    )
    assert (bucket.max_calls, bucket.per_s) == (190, 10.0)


def test_limiter_fills_its_window_from_remaining(clock: ManualClock) -> None:
    bucket = limiter(clock, max_calls=190)
    bucket.acquire()
    bucket.observe({"X-HubSpot-RateLimit-Remaining": "0"})
    bucket.acquire()
    assert clock.sleeps == [10.0]


def test_limiter_reports_the_salesforce_budget(clock: ManualClock) -> None:
    bucket = limiter(clock)
    bucket.observe({"Sforce-Limit-Info": "api-usage=18/5000; per-app-api-usage=17/250(appName=x)"})
    assert (bucket.budget_used, bucket.budget_max) == (18, 5000)


@pytest.mark.parametrize(
    "headers",
    [
        {"Sforce-Limit-Info": "api-usage=5000/5000"},
        {"X-HubSpot-RateLimit-Daily": "250000", "X-HubSpot-RateLimit-Daily-Remaining": "0"},
    ],
)
def test_limiter_fails_fast_when_the_budget_is_used_up(
    clock: ManualClock, headers: dict[str, str]
) -> None:
    bucket = limiter(clock)
    bucket.observe(headers)
    with pytest.raises(Fatal, match="budget used up"):
        bucket.acquire()
    assert clock.sleeps == []


def test_limiter_lets_a_request_through_after_the_recheck_time(clock: ManualClock) -> None:
    bucket = limiter(clock, budget_recheck_s=60)
    bucket.observe({"Sforce-Limit-Info": "api-usage=5000/5000"})
    clock.advance(61)
    bucket.acquire()
    assert bucket.remaining == 1


def test_limiter_pauses_until_a_generic_reset(clock: ManualClock) -> None:
    bucket = limiter(clock, max_calls=50)
    bucket.observe(
        {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}
    )
    bucket.acquire()
    assert clock.sleeps == [5.0]


def test_a_429_with_retry_after_pauses_the_limiter(clock: ManualClock) -> None:
    bucket = limiter(clock, max_calls=100)
    policy = make_policy(clock, limiter=bucket)
    run(policy, Script([info(429, HS_429, {"Retry-After": "4"}), info(200)]))
    assert clock.sleeps[0] == 4.0


def test_limiter_is_thread_safe(clock: ManualClock) -> None:
    bucket = limiter(clock, max_calls=50, per_s=1000)

    def take() -> None:
        for _ in range(5):
            bucket.acquire()

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (bucket.remaining, clock.sleeps) == (10, [])


def test_policy_feeds_headers_to_the_limiter(clock: ManualClock) -> None:
    bucket = limiter(clock)
    run(
        make_policy(clock, limiter=bucket),
        Script([info(200, None, {"Sforce-Limit-Info": "api-usage=7/100"})]),
    )
    assert (bucket.budget_used, bucket.budget_max) == (7, 100)


# --------------------------------------------------------------------------------------------
# RefreshingAuth


class TokenSource:
    def __init__(self, expires_in: float = 3600.0) -> None:
        self.issued = 0
        self.expires_in = expires_in
        self.lock = threading.Lock()

    def __call__(self) -> tuple[str, float]:
        with self.lock:
            self.issued += 1
            return f"tok-{self.issued}", self.expires_in


def accept(token: str) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == f"Zoho-oauthtoken {token}":
            return httpx.Response(200, json={"data": []})
        return httpx.Response(401, json=ZOHO_401)

    return answer


@respx.mock
def test_auth_attaches_one_cached_token() -> None:
    route = respx.get(URL).mock(side_effect=accept("tok-1"))
    source = TokenSource()
    with httpx.Client(auth=RefreshingAuth(source, "Zoho-oauthtoken {token}")) as client:
        statuses = [client.get(URL).status_code for _ in range(3)]
    assert (statuses, source.issued, route.call_count) == ([200, 200, 200], 1, 3)


@respx.mock
def test_auth_refreshes_before_expiry() -> None:
    respx.get(URL).mock(side_effect=accept("tok-2"))
    clock = ManualClock()
    source = TokenSource(expires_in=3600)
    auth = RefreshingAuth(source, "Zoho-oauthtoken {token}", refresh_margin_s=60, clock=clock.now)
    assert auth.token() == "tok-1"
    clock.advance(3541)
    with httpx.Client(auth=auth) as client:
        assert client.get(URL).status_code == 200
    assert source.issued == 2


@respx.mock
def test_auth_refreshes_and_resends_once_on_401() -> None:
    route = respx.get(URL).mock(side_effect=accept("tok-2"))
    source = TokenSource()
    with httpx.Client(auth=RefreshingAuth(source, "Zoho-oauthtoken {token}")) as client:
        assert client.get(URL).status_code == 200
    assert (source.issued, route.call_count) == (2, 2)


@respx.mock
def test_auth_does_not_loop_on_a_persistent_401() -> None:
    route = respx.get(URL).mock(side_effect=accept("never"))
    source = TokenSource()
    with httpx.Client(auth=RefreshingAuth(source, "Zoho-oauthtoken {token}")) as client:
        assert client.get(URL).status_code == 401
    assert (source.issued, route.call_count) == (2, 2)


@respx.mock
def test_auth_shares_one_refresh_between_threads() -> None:
    respx.get(URL).mock(side_effect=accept("tok-2"))
    source = TokenSource()
    auth = RefreshingAuth(source, "Zoho-oauthtoken {token}")
    assert auth.token() == "tok-1"  # cached, about to be refused by the server
    start = threading.Barrier(8)
    statuses: list[int] = []

    with httpx.Client(auth=auth) as client:

        def fetch() -> None:
            start.wait()
            statuses.append(client.get(URL).status_code)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert (statuses, source.issued) == ([200] * 8, 2)


@respx.mock
def test_auth_registers_tokens_for_redaction(caplog: pytest.LogCaptureFixture) -> None:
    respx.get(URL).mock(return_value=httpx.Response(200))

    def fetch() -> tuple[str, float]:
        return "opaque-token-xyz", 3600

    with httpx.Client(auth=RefreshingAuth(fetch)) as client:
        client.get(URL)
    try:
        assert redact("the opaque-token-xyz leaked") == "the *** leaked"
    finally:
        forget_secrets("opaque-token-xyz")


# --------------------------------------------------------------------------------------------
# Real HTTP on loopback


class _Flaky(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []
    seen = 0

    def do_GET(self) -> None:
        status = type(self).answers[min(type(self).seen, len(type(self).answers) - 1)]
        type(self).seen += 1
        body = b'{"message": "busy"}' if status >= 500 else b'{"results": []}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, type[_Flaky]]]:
    handler = type("Handler", (_Flaky,), {"answers": [503, 503, 200], "seen": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/things", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_execute_over_real_http_succeeds_after_two_retries(
    clock: ManualClock, flaky_server: tuple[str, type[_Flaky]]
) -> None:
    url, handler = flaky_server
    with httpx.Client(timeout=5) as client:
        response = make_policy(clock).request(client, "GET", url, idempotent=True, describe="list")
    assert (response.status_code, handler.seen, len(clock.sleeps)) == (200, 3, 2)


def test_execute_over_real_http_retries_a_refused_connection(clock: ManualClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = make_policy(clock, RetryPolicy(max_attempts=2, jitter=False))
    with httpx.Client(timeout=5) as client, pytest.raises(Retryable, match="before sending"):
        policy.request(
            client, "POST", f"http://127.0.0.1:{port}/x", idempotent=False, describe="create"
        )
    assert len(clock.sleeps) == 1


def test_a_system_classifier_refines_the_default(clock: ManualClock) -> None:
    def zoho_token_endpoint(outcome: ResponseInfo) -> Classified:
        said = system_message(outcome)
        if outcome.status == 200 and said.code is not None:
            # Zoho's token endpoint answers errors with HTTP 200 and an "error" key.
            return Classified(Decision.REAUTH, f"token refused: {said.message}", code=said.code)
        return classify_default(outcome)

    policy = make_policy(clock, classify=zoho_token_endpoint)
    with pytest.raises(AuthError) as caught:
        run(policy, Script([info(200, {"error": "invalid_code"})]))
    assert (caught.value.code, caught.value.status) == ("invalid_code", 200)
