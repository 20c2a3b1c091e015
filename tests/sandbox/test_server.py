"""The sandbox frame: mounting, stats by route template, faults and the admin API."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from leadrelay.sandbox.base import Emulator, SchemaChangeError
from leadrelay.sandbox.server import SandboxServer, parse_faults


class EchoEmulator(Emulator):
    """A tiny system with one record store, enough to exercise the frame."""

    name = "echo"
    prefix = "/echo"

    def reset(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.fields = {"email", "name"}

    def app(self) -> ASGIApp:
        api = FastAPI()

        @api.put("/v{version}/things/{thing_id}")
        async def put_thing(version: str, thing_id: str, request: Request) -> dict[str, Any]:
            body = await request.json()
            with self.lock:
                self.records[thing_id] = body
            return {"id": thing_id}

        @api.get("/v{version}/things/{thing_id}")
        async def get_thing(version: str, thing_id: str) -> Response:
            with self.lock:
                record = self.records.get(thing_id)
            if record is None:
                return JSONResponse({"error": "NOT_FOUND"}, status_code=404)
            return JSONResponse(record)

        return api

    def rate_limited(self, request: Request) -> Response:
        return JSONResponse({"error": "ECHO_RATE_LIMIT"}, status_code=429)

    def fault(self, request: Request, status: int) -> Response:
        return JSONResponse({"error": "ECHO_FAULT"}, status_code=status)

    def change_schema(self, change: dict[str, Any]) -> None:
        name = change.get("remove_field")
        if name not in self.fields:
            raise SchemaChangeError(f"no field {name!r}")
        self.fields.discard(str(name))

    def env(self) -> dict[str, str]:
        return {"ECHO_BASE_URL": self.base_url}


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[EchoEmulator]) as running:
        yield running


@pytest.fixture
def client(server: SandboxServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(base_url=server.url, verify=context) as http:
        yield http


def test_tls_is_verified_with_the_written_ca(server: SandboxServer) -> None:
    with httpx.Client(base_url=server.url) as default_trust, pytest.raises(httpx.ConnectError):
        default_trust.get("/__sandbox__/stats")


def test_env_names_the_ca_and_each_system(server: SandboxServer) -> None:
    env = server.env()
    assert env["LEADRELAY_CA_BUNDLE"] == str(server.ca_bundle)
    assert env["ECHO_BASE_URL"] == f"{server.url}/echo"
    assert "LEADRELAY_SANDBOX_URL=" in server.env_lines()


def test_stats_count_by_system_route_template_and_status(client: httpx.Client) -> None:
    client.put("/echo/v1.0/things/a", json={"x": 1})
    client.put("/echo/v1.0/things/b", json={"x": 2})
    client.get("/echo/v1.0/things/zzz")
    stats = client.get("/__sandbox__/stats").json()
    assert stats["requests"] == {"echo": 3}
    assert stats["by_route"] == {
        "PUT /echo/v1.0/things/{thing_id}": 2,
        "GET /echo/v1.0/things/{thing_id}": 1,
    }
    assert stats["status"] == {"200": 2, "404": 1}


def test_error_rate_answers_in_the_systems_dialect(client: httpx.Client) -> None:
    client.post("/__sandbox__/faults", json={"error_rate": 1.0, "error_status": 502})
    response = client.get("/echo/v1/things/a")
    assert response.status_code == 502
    assert response.json() == {"error": "ECHO_FAULT"}


def test_admin_routes_are_never_faulted(client: httpx.Client) -> None:
    client.post("/__sandbox__/faults", json={"error_rate": 1.0, "rate_limit_per_10s": 1})
    for _ in range(3):
        assert client.get("/__sandbox__/stats").status_code == 200


def test_rate_limit_counts_a_rolling_window(client: httpx.Client) -> None:
    client.post("/__sandbox__/faults", json={"rate_limit_per_10s": 2})
    codes = [client.get("/echo/v1/things/a").status_code for _ in range(4)]
    assert codes == [404, 404, 429, 429]


def test_faults_apply_only_to_named_systems(client: httpx.Client) -> None:
    client.post("/__sandbox__/faults", json={"error_rate": 1.0, "systems": ["other"]})
    assert client.get("/echo/v1/things/a").status_code == 404


def test_empty_faults_clear_them(client: httpx.Client) -> None:
    client.post("/__sandbox__/faults", json={"error_rate": 1.0})
    client.post("/__sandbox__/faults", json={})
    assert client.get("/echo/v1/things/a").status_code == 404


def test_reset_rate_drops_the_connection(client: httpx.Client) -> None:
    client.post("/__sandbox__/faults", json={"reset_rate": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        client.put("/echo/v1/things/a", json={"x": 1})


def test_invalid_faults_are_refused_with_the_reason(client: httpx.Client) -> None:
    response = client.post("/__sandbox__/faults", json={"error_rate": 3})
    assert response.status_code == 400
    assert "error_rate" in response.json()["error"]


def test_reset_empties_data_and_counters(client: httpx.Client) -> None:
    client.put("/echo/v1/things/a", json={"x": 1})
    client.post("/__sandbox__/reset")
    assert client.get("/echo/v1/things/a").status_code == 404
    assert client.get("/__sandbox__/stats").json()["requests"] == {"echo": 1}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"system": "echo", "remove_field": "name"}, 200),
        ({"system": "echo", "remove_field": "nope"}, 400),
        ({"system": "nosuch", "remove_field": "name"}, 404),
        ({"system": "echo"}, 400),
    ],
)
def test_schema_changes(client: httpx.Client, body: dict[str, Any], status: int) -> None:
    assert client.post("/__sandbox__/schema", json=body).status_code == status


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "not JSON"), ('{"latency_ms": -1}', "latency_ms"), ('{"bogus": 1}', "bogus")],
)
def test_parse_faults_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_faults(text)
