"""redact() runs a token pattern only where its markers say a match can be: never skips one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.connectors import errors
from leadrelay.connectors.errors import redact

# Pieces that make up secret shapes and the words around them, in any order and case.
_PIECES = st.sampled_from(
    [
        "Bearer ",
        "OAuth ",
        "pat-na1-",
        "00D5g000001AbCdEFG",
        "!",
        "1000.",
        "0123456789abcdef0123",
        ".",
        '"access_token"',
        "'token'",
        ": ",
        '"',
        "'",
        "=",
        "?",
        "&",
        "key",
        "code",
        "api_key",
        "LeadRelay_Key__c",
        "hapikey",
        "password",
        "abcDEF123456",
        " ",
        ",",
        "{",
        "}",
    ]
)


def _every_pattern(text: str) -> str:
    for pattern, replacement in errors._PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=400)
@given(st.lists(_PIECES, max_size=14).map("".join), st.booleans())
def test_markers_skip_only_texts_no_pattern_matches(text: str, upper: bool) -> None:
    text = text.upper() if upper else text
    assert redact(text) == _every_pattern(text)


def test_a_page_of_writes_without_secrets_runs_no_pattern() -> None:
    row = (
        '{"LeadRelay_Key__c": "k1", "Id": "00Q5g000001AbCd", "OwnerOrg": "00D5g000001AbCdEFG", '
        '"Assigned_At__c": "2026-12-07"}'
    )
    text = "\n".join([row] * 50)
    lowered = text.lower()
    ran = [
        all(any(marker in lowered for marker in group) for group in groups)
        for groups in errors._MARKERS
    ]
    assert ran == [False] * len(errors._PATTERNS)
    assert redact(text) == text


@settings(max_examples=400)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_the_markers_found_are_the_markers_in_the_text(text: str) -> None:
    lowered = text.lower()
    every = {m for m, _ in errors._MARKER_PLAN}
    assert errors._present_markers(lowered) == {m for m in every if m in lowered}
