"""Shared fixtures of the capture tests: a project with one form of every captured source."""

from __future__ import annotations

import hashlib
import hmac
import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x warns at import when its test client runs on httpx rather than httpx2;
    # the client works the same, and only this import is exempted.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from leadrelay.capture.app import create_app
from leadrelay.capture.verify import hubspot_v3_signature
from leadrelay.config import Config, load_config
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import StateStore
from tests.capture.sandbox_project import Project, admin
from tests.postgres import state_url

WEB_SECRET = "web-shared-secret-1"
WEB_HMAC = "web-hmac-key-2"
META_APP_SECRET = "meta-app-secret-3"
META_VERIFY = "meta-verify-token-4"
LINKEDIN_SECRET = "linkedin-client-secret-5"
GOOGLE_KEY = "google-form-key-6"
HUBSPOT_SECRET = "hubspot-app-secret-7"
ORIGIN = "https://www.example.com"
GOOGLE_FORM_ID = 40000000000
LINKEDIN_FORM_ID = "7001"
META_FORM_ID = "555"

PROJECT = f"""
[state]
url = "sqlite:///state.db"

[capture]
max_body_bytes = 8192

[connections.hs]
kind = "hubspot"
access_token = "pat-na1-test"
app_client_secret = "{HUBSPOT_SECRET}"

[forms.web-server]
source = "webform"
destination = "hs"
mapping = "mappings/web.toml"
secret = "{WEB_SECRET}"
honeypot = "website"
test_email_domain = "test.example.org"

[forms.web-signed]
source = "webform"
destination = "hs"
mapping = "mappings/work.toml"
hmac_secret = "{WEB_HMAC}"

[forms.web-browser]
source = "webform"
destination = "hs"
mapping = "mappings/web.toml"
allowed_origins = ["{ORIGIN}"]
honeypot = "website"
max_body_bytes = 1024

[forms.meta-ads]
source = "meta_lead_ads"
destination = "hs"
mapping = "mappings/web.toml"
app_secret = "{META_APP_SECRET}"
verify_token = "{META_VERIFY}"
access_token = "meta-page-token"
form_ids = ["{META_FORM_ID}"]

[forms.linkedin-ads]
source = "linkedin_lead_gen"
destination = "hs"
mapping = "mappings/web.toml"
client_secret = "{LINKEDIN_SECRET}"
access_token = "linkedin-token"
form_ids = ["{LINKEDIN_FORM_ID}"]

[forms.google-ads]
source = "google_ads_lead_form"
destination = "hs"
mapping = "mappings/web.toml"
google_key = "{GOOGLE_KEY}"
form_ids = ["{GOOGLE_FORM_ID}"]

[forms.hubspot-forms]
source = "hubspot_form"
destination = "hs"
mapping = "mappings/web.toml"
connection = "hs"
"""

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable aware-UTC clock."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def write_project(folder: Path, text: str = PROJECT) -> Config:
    """Write ``leadrelay.toml`` and its mapping files into ``folder`` and load it."""
    (folder / "mappings").mkdir(exist_ok=True)
    (folder / "mappings" / "web.toml").write_text('[fields]\nemail = "email"\n')
    (folder / "mappings" / "work.toml").write_text(
        '[fields]\nemail = { field = "work_email" }\nphone = "mobile"\n'
    )
    (folder / "leadrelay.toml").write_text(text)
    return load_config(folder / "leadrelay.toml", environ={})


def hex_sig(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dumps(data: Any) -> bytes:
    return json.dumps(data).encode()


def meta_body(leadgen_id: str = "987", form_id: str = META_FORM_ID) -> bytes:
    return dumps(
        {
            "object": "page",
            "entry": [
                {
                    "id": "1234",
                    "time": 1700000000,
                    "changes": [
                        {
                            "field": "leadgen",
                            "value": {
                                "leadgen_id": leadgen_id,
                                "page_id": "1234",
                                "form_id": form_id,
                                "ad_id": "777",
                                "adgroup_id": "666",
                                "created_time": 1700000000,
                            },
                        }
                    ],
                }
            ],
        }
    )


def linkedin_body(
    response: str = "urn:li:leadGenFormResponse:abc-1", form_id: str = LINKEDIN_FORM_ID
) -> bytes:
    return dumps(
        {
            "type": "LEAD_ACTION",
            "leadAction": "CREATED",
            "leadGenFormResponse": response,
            "leadGenForm": f"urn:li:versionedLeadGenForm:(urn:li:leadGenForm:{form_id},1)",
            "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:1"},
            "associatedEntity": {},
            "leadType": "SPONSORED",
            "occurredAt": 1700000000000,
        }
    )


def google_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lead_id": "TeSter-123",
        "api_version": "1.0",
        "form_id": GOOGLE_FORM_ID,
        "campaign_id": 20000000000,
        "google_key": GOOGLE_KEY,
        "is_test": True,
        "gcl_id": "Cj0",
        "user_column_data": [
            {"column_name": "Full Name", "string_value": "Ana Silva", "column_id": "FULL_NAME"},
            {"string_value": "ana@example.com", "column_id": "EMAIL"},
        ],
    }
    body.update(changes)
    return body


def hubspot_events(event_id: int = 100, kind: str = "contact.creation") -> bytes:
    return dumps(
        [
            {
                "eventId": event_id,
                "subscriptionId": 1,
                "portalId": 62515,
                "appId": 2,
                "occurredAt": 1700000000000,
                "subscriptionType": kind,
                "attemptNumber": 0,
                "objectId": 123,
                "changeSource": "FORM",
            }
        ]
    )


def hubspot_headers(
    body: bytes, when: datetime, uri: str = "http://testserver/hooks/hubspot"
) -> dict[str, str]:
    stamp = str(int(when.timestamp() * 1000))
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_v3_signature(HUBSPOT_SECRET, "POST", uri, body, stamp),
    }


@pytest.fixture
def config(tmp_path: Path, state_backend: str) -> Iterator[Config]:
    """The project of every captured source, its store on the test's backend."""
    with state_url(state_backend, tmp_path) as url:
        yield write_project(tmp_path, PROJECT.replace('"sqlite:///state.db"', f'"{url}"'))


@pytest.fixture
def store(config: Config) -> Iterator[StateStore]:
    with StateStore(config.state.url) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(config: Config, store: StateStore, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(config, store, clock=clock)) as opened:
        yield opened


# -- a project written by ``sandbox --init`` against a sandbox on loopback -------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """Every emulator on one HTTPS port, once per test module."""
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture
def project(sandbox: SandboxServer, tmp_path: Path, state_backend: str) -> Iterator[Project]:
    """The ``sandbox --init`` project on an emptied sandbox without faults, its store on the
    test's backend."""
    admin(sandbox, "reset", {})
    admin(sandbox, "faults", {})
    with state_url(state_backend, tmp_path, "leadrelay.db") as url:
        opened = Project(tmp_path, sandbox, url)
        try:
            yield opened
        finally:
            opened.close()
