"""Secrets out of ``serve``'s log lines: the request targets uvicorn's access log prints."""

from __future__ import annotations

import logging

import pytest

from leadrelay.capture.logs import AccessLogFilter, redact_target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "/hooks/meta?hub.mode=subscribe&hub.verify_token=tok-123456&hub.challenge=42",
            "/hooks/meta?hub.mode=subscribe&hub.verify_token=***&hub.challenge=42",
        ),
        ("/hooks/meta?hub%2Everify_token=tok-123456", "/hooks/meta?hub%2Everify_token=***"),
        ("/hooks/google-ads?GOOGLE_KEY=k-1234567", "/hooks/google-ads?GOOGLE_KEY=***"),
        ("/x?key=a&signature=b&access_token=c", "/x?key=***&signature=***&access_token=***"),
        (
            "/hooks/linkedin?challengeCode=f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "/hooks/linkedin?challengeCode=f47ac10b-58cc-4372-a567-0e02b2c3d479",
        ),
        ("/healthz", "/healthz"),
    ],
)
def test_secret_query_values_are_redacted(target: str, expected: str) -> None:
    assert redact_target(target) == expected


def test_the_access_log_record_keeps_its_shape() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/hooks/meta?hub.verify_token=tok-123456", "1.1", 200),
        None,
    )
    assert AccessLogFilter().filter(record)
    assert (
        record.getMessage() == '127.0.0.1:5 - "GET /hooks/meta?hub.verify_token=*** HTTP/1.1" 200'
    )
