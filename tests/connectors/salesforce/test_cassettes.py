"""Recorded Salesforce exchanges replayed without the sandbox, and the cassette-secret scan.

The cassettes under ``tests/connectors/cassettes/salesforce/`` were recorded from the sandbox
with ``LEADRELAY_RECORD_CASSETTES=1 pytest tests/connectors/salesforce/test_cassettes.py``.
Before anything is written, the Authorization header is dropped, the token request's form (which
holds the password and client secret) is replaced, the token reply's ``access_token`` and
``signature`` are replaced by placeholders, and every URL is rewritten to one neutral host, so
requests match by method, path and query whatever host and port the sandbox had.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import vcr

from leadrelay.config import SalesforceConnection
from leadrelay.connectors.base import UpsertInput, WriteOutcome
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.sandbox.salesforce import SalesforceEmulator
from leadrelay.sandbox.server import SandboxServer, build_sandbox
from tests.connectors.salesforce.conftest import FAST_RETRY, sandbox_settings

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"
SALESFORCE_CASSETTES = CASSETTES / "salesforce"
#: The neutral host every recorded URL is rewritten to.
HOST = "https://salesforce.cassette.invalid"
PLACEHOLDER_TOKEN = "SCRUBBED-ACCESS-TOKEN"
RECORDING = os.environ.get("LEADRELAY_RECORD_CASSETTES") == "1"


def _neutral(url: str) -> str:
    parts = urlsplit(url)
    neutral = urlsplit(HOST)
    return urlunsplit((neutral.scheme, neutral.netloc, parts.path, parts.query, parts.fragment))


def _scrub_request(request: Any) -> Any:
    request.uri = _neutral(request.uri)
    if request.path.endswith("/oauth2/token"):
        request.body = b"grant_type=SCRUBBED"
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response.get("body", {}).get("string", b"")
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        return response
    if isinstance(data, dict) and "access_token" in data:
        data["access_token"] = PLACEHOLDER_TOKEN
        data["signature"] = "SCRUBBED"
        data["instance_url"] = HOST
        data["id"] = _neutral(str(data.get("id", "")))
        response["body"]["string"] = json.dumps(data).encode()
    return response


def _recorder(mode: str) -> vcr.VCR:
    return vcr.VCR(
        cassette_library_dir=str(SALESFORCE_CASSETTES),
        record_mode=mode,
        match_on=["method", "path", "query"],
        filter_headers=["authorization", "cookie", "set-cookie"],
        before_record_request=_scrub_request,
        before_record_response=_scrub_response,
        decode_compressed_response=True,
    )


@pytest.fixture
def recorded() -> Iterator[tuple[SalesforceConnection, SandboxServer | None]]:
    """Settings for the sandbox when recording, for the neutral host when replaying."""
    if RECORDING:
        with SandboxServer(emulator_types=[SalesforceEmulator]) as server:
            yield sandbox_settings(server.env()), server
        return
    settings = SalesforceConnection(
        kind="salesforce",
        auth="password",
        login_url=HOST,
        username="integration@example.com",
        password="not-used-in-replay",
        consumer_key="not-used-in-replay",
        consumer_secret="not-used-in-replay",
    )
    yield settings, None


def _lead(email: str) -> dict[str, Any]:
    return {"Email": email, "LastName": "O'Hara", "Company": "Acme", "LeadSource": "Web"}


def test_replays_upsert_lookup_and_read(
    recorded: tuple[SalesforceConnection, SandboxServer | None],
) -> None:
    settings, _ = recorded
    recorder = _recorder("all" if RECORDING else "none")
    with (
        recorder.use_cassette("upsert_lookup_read.yaml"),
        SalesforceConnector(settings, "sf", retry=FAST_RETRY) as connector,
    ):
        assert isinstance(connector, SalesforceConnector)
        assert connector.health().budget_max == 15000
        emails = ["cassette.one@example.com", "cassette'two@example.com"]
        results = connector.upsert([UpsertInput(e, _lead(e)) for e in emails])
        assert [r.outcome for r in results] == [WriteOutcome.CREATED] * 2
        found = connector.lookup(emails=emails)
        assert {r["Id"] for r in found.values()} == {r.external_id for r in results}
        records = [r for page in connector.read_changes(None) for r in page.records]
        assert sorted(r["Email"] for r in records) == sorted(emails)


def test_replays_a_session_refresh(
    recorded: tuple[SalesforceConnection, SandboxServer | None],
) -> None:
    settings, server = recorded
    recorder = _recorder("all" if RECORDING else "none")
    with (
        recorder.use_cassette("session_refresh.yaml"),
        SalesforceConnector(settings, "sf", retry=FAST_RETRY) as connector,
    ):
        assert isinstance(connector, SalesforceConnector)
        connector.health()
        if server is not None:
            emulator = server.sandbox.emulators["salesforce"]
            assert isinstance(emulator, SalesforceEmulator)
            emulator.expire_sessions()
        assert connector.lookup(emails=["nobody@example.com"]) == {}
        assert connector.token_requests == 2


# -- the secret scan -----------------------------------------------------------------------------

_PLACEHOLDER = r"(?:SCRUBBED|REDACTED|\*\*\*|<[^>]*>|placeholder|PLACEHOLDER)"
_SECRET_SHAPES = [
    re.compile(rf"(?:Bearer|Zoho-oauthtoken|OAuth)\s+(?!{_PLACEHOLDER})[A-Za-z0-9._~+/=!-]{{8,}}"),
    re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]+"),  # Salesforce session id
    re.compile(r"\b1000\.[0-9a-f]{16,}\.[0-9a-f]{16,}\b"),  # Zoho token
    re.compile(r"\bpat-[a-z0-9]+-[0-9a-f-]{20,}"),  # HubSpot private-app token
    re.compile(
        rf"(?i)[\"']?(?:access_token|refresh_token|client_secret|password|assertion)[\"']?"
        rf"\s*[:=]\s*[\"']?(?!{_PLACEHOLDER})[^\s\"'&,}}]{{6,}}"
    ),
]


def _sandbox_credentials() -> list[str]:
    """The credential values every emulator hands out (passwords, secrets, tokens, keys)."""
    sandbox = build_sandbox()
    values: list[str] = []
    for emulator in sandbox.emulators.values():
        for key, value in emulator.env().items():
            if re.search(r"TOKEN|SECRET|PASSWORD|KEY", key) and len(value) >= 6:
                values.append(value)
    return values


def _cassette_files() -> list[Path]:
    return sorted(p for p in CASSETTES.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))


def test_cassettes_exist() -> None:
    names = {p.name for p in SALESFORCE_CASSETTES.glob("*.yaml")}
    assert {"upsert_lookup_read.yaml", "session_refresh.yaml"} <= names


@pytest.mark.parametrize("path", _cassette_files(), ids=lambda p: p.name)
def test_cassette_holds_no_secret(path: Path) -> None:
    text = path.read_text("utf-8")
    leaked = [value for value in _sandbox_credentials() if value in text]
    assert not leaked, f"{path.name} holds a sandbox credential"
    for shape in _SECRET_SHAPES:
        match = shape.search(text)
        assert match is None, f"{path.name} holds a secret-shaped value near {match.start()}"


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer 00D5g000000LEADAQAQsomething",
        "Zoho-oauthtoken 1000.abcdef0123456789abcdef.0123456789abcdef0123",
        '"access_token": "real-token-value"',
        "password=hunter22&username=x",
        "sandbox-consumer-secret",
    ],
)
def test_the_scan_catches_secret_shapes(text: str) -> None:
    caught = any(shape.search(text) for shape in _SECRET_SHAPES) or any(
        value in text for value in _sandbox_credentials()
    )
    assert caught
