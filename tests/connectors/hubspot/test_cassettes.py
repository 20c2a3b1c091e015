"""Recorded HubSpot interactions (vcrpy), replayed without the sandbox; and the cassette scan.

The cassette was recorded against the sandbox with ``record_mode="once"``: the Authorization
header is dropped, token request and response bodies are scrubbed, and every URI is rewritten
to a placeholder host so the recording does not depend on the sandbox's port. Delete the file
and run this module to record it again (the test then starts a sandbox itself).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import vcr
from vcr.request import Request

from leadrelay.config import HubSpotConnection
from leadrelay.connectors.base import UpsertInput, WriteOutcome
from leadrelay.connectors.hubspot import HubSpotConnector
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer, build_sandbox
from tests.connectors.hubspot.conftest import FAST_RETRY, oauth_settings

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
CASSETTE = CASSETTES / "hubspot" / "oauth_describe_upsert_lookup.yaml"
PLACEHOLDER_HOST = "https://hubspot.cassette.invalid"
SCRUBBED = "SCRUBBED"
_TOKEN_KEYS = ("access_token", "refresh_token", "id_token", "client_secret", "client_id")


def _host_agnostic(uri: str) -> str:
    parts = urlsplit(uri)
    return PLACEHOLDER_HOST + parts.path + (f"?{parts.query}" if parts.query else "")


def _body_text(body: Any) -> str:
    if body is None:
        return ""
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)


def scrub_request(request: Request) -> Request:
    """Placeholder host; OAuth form values (client id, secret, refresh token) scrubbed."""
    request.uri = _host_agnostic(request.uri)
    if request.path.endswith("/oauth/v1/token"):
        form = parse_qsl(_body_text(request.body), keep_blank_values=True)
        request.body = urlencode([(k, SCRUBBED if k in _TOKEN_KEYS else v) for k, v in form])
    return request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """Token values in JSON response bodies replaced by a placeholder."""
    text = _body_text(response["body"]["string"])
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        return response
    if isinstance(data, dict) and any(k in data for k in _TOKEN_KEYS):
        cleaned = {k: (SCRUBBED if k in _TOKEN_KEYS else v) for k, v in data.items()}
        response["body"]["string"] = json.dumps(cleaned).encode("utf-8")
        response["headers"].pop("content-length", None)
        response["headers"].pop("Content-Length", None)
    return response


def _route(r1: Request, r2: Request) -> None:
    assert (r1.method, r1.path, r1.query) == (r2.method, r2.path, r2.query)


def _payload(request: Request) -> Any:
    text = _body_text(request.body)
    if request.path.endswith("/oauth/v1/token"):
        return dict(parse_qsl(text)).get("grant_type")
    return json.loads(text) if text.strip() else None


def _same_payload(r1: Request, r2: Request) -> None:
    assert _payload(r1) == _payload(r2)


def recorder(mode: str) -> vcr.VCR:
    """A VCR that scrubs secrets and matches requests whatever the host and port."""
    machine = vcr.VCR(
        record_mode=mode,
        filter_headers=["authorization"],
        before_record_request=scrub_request,
        before_record_response=scrub_response,
        decode_compressed_response=True,
        match_on=["route", "payload"],
    )
    machine.register_matcher("route", _route)
    machine.register_matcher("payload", _same_payload)
    return machine


def scenario(connector: HubSpotConnector) -> dict[str, Any]:
    """Describe, upsert two leads (one refused), look them up: what a sync does first."""
    schema = connector.describe()
    results = connector.upsert(
        [
            UpsertInput("ada", {"email": "Ada.Cassette@Example.com", "firstname": "Ada"}),
            UpsertInput("bob", {"email": "bob.cassette@example.com", "lifecyclestage": "nope"}),
        ]
    )
    found = connector.lookup(emails=["ada.cassette@example.com", "bob.cassette@example.com"])
    return {
        "stages": schema.field("lifecyclestage").picklist_values,
        "outcomes": [r.outcome for r in results],
        "refused_field": results[1].error.field if results[1].error else None,
        "found": {k: v["firstname"] for k, v in found.items()},
    }


def record_cassette() -> None:
    """Record :data:`CASSETTE` against a fresh sandbox."""
    CASSETTE.parent.mkdir(parents=True, exist_ok=True)
    with SandboxServer(emulator_types=[HubSpotEmulator]) as server:
        settings = oauth_settings(server.env())
        with (
            recorder("once").use_cassette(str(CASSETTE)),
            HubSpotConnector(settings, "hubspot", retry=FAST_RETRY) as connector,
        ):
            scenario(connector)


@pytest.fixture(scope="module")
def cassette() -> Iterator[Path]:
    if not CASSETTE.exists():
        record_cassette()
    yield CASSETTE


def test_recorded_interactions_replay_without_the_sandbox(cassette: Path) -> None:
    settings = HubSpotConnection(
        kind="hubspot",
        auth="oauth",
        client_id="cassette-client",
        client_secret="cassette-client-secret",
        refresh_token="cassette-refresh-token",
        base_url=f"{PLACEHOLDER_HOST}/hubspot",
    )
    with (
        recorder("none").use_cassette(str(cassette)) as tape,
        HubSpotConnector(settings, "hubspot", retry=FAST_RETRY) as connector,
    ):
        outcome = scenario(connector)
        assert tape.all_played
    assert outcome["outcomes"] == [WriteOutcome.CREATED, WriteOutcome.FAILED]
    assert outcome["refused_field"] == "lifecyclestage"
    assert outcome["found"] == {"ada.cassette@example.com": "Ada"}
    assert outcome["stages"] and "customer" in outcome["stages"]


# -- the secret scan (every cassette of every connector) ------------------------------------

_TOKEN_SHAPES = re.compile(
    r"(?i)(?:bearer|zoho-oauthtoken)\s+(?!<|\*\*\*|\[|x{4})[A-Za-z0-9._~+/=!-]{6,}"
    r"|\bpat-[a-z0-9]+-[0-9a-f-]{8,}"
    r"|\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]+"
    r"|\b1000\.[0-9a-f]{16,}\.[0-9a-f]{16,}"
    r"|sandbox-oauth-[0-9a-f]{8,}"
    r"|[\"']?(?:access_token|refresh_token|client_secret|password|session_id|sessionId)[\"']?"
    r"\s*[:=]\s*[\"']?(?!<|\*\*\*|\"|')[^\s\"'&,}]{6,}"
)
#: What a scrubbed value looks like; a match containing one of these is no secret.
_PLACEHOLDER = re.compile(r"(?i)scrubbed|redacted|placeholder|filtered|%3C|<|\*\*\*")


def sandbox_credentials() -> set[str]:
    """Every credential value the sandbox's emulators hand out in their environment."""
    sandbox = build_sandbox()
    sandbox.base_url = PLACEHOLDER_HOST
    values = set()
    for emulator in sandbox.emulators.values():
        for key, value in emulator.env().items():
            if any(word in key for word in ("TOKEN", "SECRET", "PASSWORD", "KEY")) and value:
                values.add(value)
    return values


def secrets_in(text: str, credentials: set[str]) -> list[str]:
    """What in ``text`` looks like a credential: a sandbox value or a token shape."""
    found = [value for value in credentials if value in text]
    found += [
        match.group(0)
        for match in _TOKEN_SHAPES.finditer(text)
        if not _PLACEHOLDER.search(match.group(0))
    ]
    return found


def cassette_files() -> list[Path]:
    return sorted(p for p in CASSETTES.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})


def test_no_cassette_holds_a_secret(cassette: Path) -> None:
    credentials = sandbox_credentials()
    assert credentials
    files = cassette_files()
    assert cassette in files
    leaks = {
        str(p.relative_to(CASSETTES)): secrets_in(p.read_text("utf-8"), credentials) for p in files
    }
    assert not {name: found for name, found in leaks.items() if found}


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer pat-na1-11111111-2222-3333-4444-555555555555",
        '{"access_token": "sandbox-oauth-0123456789abcdef"}',
        "client_secret=s3cr3t-value&grant_type=refresh_token",
        "Authorization: Zoho-oauthtoken 1000.0123456789abcdef0123.0123456789abcdef0123",
    ],
)
def test_the_scan_finds_tokens(text: str) -> None:
    assert secrets_in(text, set())


@pytest.mark.parametrize(
    "text",
    [
        "client_secret=%3Cscrubbed%3E&grant_type=refresh_token",
        '{"access_token": "<scrubbed>", "expires_in": 1800}',
        "Authorization: Bearer ***",
        '"access_token": "SCRUBBED-ACCESS-TOKEN"',
    ],
)
def test_the_scan_accepts_placeholders(text: str) -> None:
    assert not secrets_in(text, set())
