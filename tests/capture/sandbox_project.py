"""A sandbox project for the delivery tests: the sandbox's demo forms and helpers to post to
them as each platform does."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from leadrelay.capture.app import create_app
from leadrelay.config import Config, load_config, read_env_file
from leadrelay.connectors.policy import RetryPolicy
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool
from leadrelay.sync.state import StateStore
from tests.postgres import point_state_at

META_FORM_ID = "4242"
#: One attempt per call: a test of a failing CRM does not wait for backoff.
NO_RETRY = RetryPolicy(max_attempts=1)


def admin(sandbox: SandboxServer, path: str, body: dict[str, Any]) -> Any:
    context = ssl.create_default_context(cafile=str(sandbox.ca_bundle))
    with httpx.Client(verify=context) as client:
        response = client.post(f"{sandbox.url}/__sandbox__/{path}", json=body)
        response.raise_for_status()
        return response.json()


class Project:
    """A project written by ``write_sandbox_project``, its store and its capture app."""

    def __init__(self, folder: Path, sandbox: SandboxServer, state: str | None = None) -> None:
        self.folder = folder
        self.sandbox = sandbox
        write_sandbox_project(folder, sandbox.env())
        if state is not None:
            point_state_at(folder / "leadrelay.toml", state)
        self.env = read_env_file(folder / ".env")
        self.config: Config = load_config(folder / "leadrelay.toml", environ={})
        self.store = StateStore(self.config.state.url)
        self.pool = ConnectorPool(self.config, retry=NO_RETRY)

    def close(self) -> None:
        self.pool.close()
        self.store.close()

    @contextmanager
    def client(self) -> Iterator[TestClient]:
        with TestClient(create_app(self.config, self.store)) as opened:
            yield opened

    # -- posting as each platform does -----------------------------------------------------

    def post_webform(self, client: TestClient, **fields: str) -> httpx.Response:
        return client.post(
            "/forms/demo-webform",
            data=fields,
            headers={"X-Leadrelay-Secret": self.env["FORM_DEMO_WEBFORM_SECRET"]},
        )

    def post_meta(self, client: TestClient, **answers: str) -> httpx.Response:
        return self.notify_meta(client, self.create_meta_lead(**answers))

    def create_meta_lead(self, **answers: str) -> str:
        """Create a lead in the sandbox's Meta, as Meta's lead-testing tool does; its id."""
        return self.meta_lead_with(answers)

    def meta_lead_with(self, answers: Mapping[str, str], **body: Any) -> str:
        """A lead with these form answers in the sandbox's Meta, no notification sent; its id.
        ``body`` adds keys of the admin call (``created_time``, another ``form_id``)."""
        created = admin(
            self.sandbox,
            "leads/meta",
            {
                "form_id": META_FORM_ID,
                "ad_id": "3001",
                "campaign_id": "3002",
                "field_data": [{"name": k, "values": [v]} for k, v in answers.items()],
                **body,
            },
        )
        return str(created["id"])

    def notify_meta(self, client: TestClient, leadgen_id: str) -> httpx.Response:
        """Send Meta's leadgen notification for a lead, signed with the app secret."""
        body = json.dumps(
            {
                "object": "page",
                "entry": [
                    {
                        "id": "100000000000001",
                        "time": 1700000000,
                        "changes": [
                            {
                                "field": "leadgen",
                                "value": {
                                    "leadgen_id": leadgen_id,
                                    "form_id": META_FORM_ID,
                                    "page_id": "100000000000001",
                                    "ad_id": "3001",
                                },
                            }
                        ],
                    }
                ],
            }
        ).encode()
        digest = hmac.new(self.env["META_APP_SECRET"].encode(), body, hashlib.sha256)
        return client.post(
            "/hooks/meta",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": "sha256=" + digest.hexdigest(),
            },
        )

    def post_google(self, client: TestClient, lead_id: str, **columns: str) -> httpx.Response:
        return client.post(
            "/hooks/google-ads",
            json={
                "lead_id": lead_id,
                "api_version": "1.0",
                "form_id": 50001,
                "campaign_id": 50002,
                "google_key": self.env["GOOGLE_ADS_KEY"],
                "is_test": False,
                "gcl_id": "Cj0KCQ-demo",
                "user_column_data": [
                    {"column_id": k, "string_value": v} for k, v in columns.items()
                ],
            },
        )

    def lookup(self, connection: str, email: str) -> dict[str, Any] | None:
        found = self.pool.get(connection).lookup(emails=[email])
        return found.get(email)
