"""The sandbox server: every emulator on one HTTPS port, faults in front, admin API beside.

Paths (DESIGN §10): Salesforce at the real ``/services/…`` root paths, HubSpot under
``/hubspot``, Zoho under ``/zoho``, Meta under ``/meta``, LinkedIn under ``/linkedin``, the admin
API under ``/__sandbox__``. TLS uses a throw-away CA made by trustme and written to a file, so
clients keep verification on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from pathlib import Path
from typing import Any

import trustme
import uvicorn
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Message, Receive, Scope, Send

from leadrelay.sandbox.base import Emulator, Faults, Sandbox, SchemaChangeError

ADMIN_PREFIX = "/__sandbox__"


class _ConnectionDropped(Exception):
    """Raised inside the app to make uvicorn close a connection mid-response (reset_rate)."""


class _DropFilter(logging.Filter):
    """Keep the deliberate connection drops out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _ConnectionDropped)


def _route_label(scope: Scope, emulator: Emulator) -> str:
    method = str(scope.get("method", "GET"))
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str) or isinstance(route, Mount):
        # No route of the emulator served the path (only its mount matched): count the path
        # itself, not the mount's prefix.
        return f"{method} {scope.get('path', '')}"
    params: Mapping[str, Any] = scope.get("path_params") or {}
    # An API version in the path is shown with its value ("/services/data/v59.0/…"), as in
    # DESIGN §10's stats example; record ids stay as their template name.
    for name in ("version", "api_version"):
        if name in params:
            template = template.replace("{" + name + "}", str(params[name]))
    return f"{method} {emulator.prefix}{template}"


class _Server(uvicorn.Server):
    """uvicorn's server, closing client connections at once on shutdown.

    Clients that keep a response referenced (hubspot-api-client keeps ``last_response``) leave
    their TLS connections open; a graceful TLS close would wait on them and leak transports.
    A sandbox going away may drop them abruptly, as a real server restart would.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await super().shutdown(sockets)


def _dated(send: Send) -> Send:
    """``send`` adding the ``Date`` header every vendor sends (RFC 9110 HTTP-date)."""

    async def dated(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"date" for name, _ in headers):
                headers.insert(0, (b"Date", formatdate(usegmt=True).encode("latin-1")))
            message = {**message, "headers": headers}
        await send(message)

    return dated


class SandboxApp:
    """ASGI app: dispatches to the emulators by prefix, applies faults, counts requests."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        routes: list[BaseRoute] = [Mount(ADMIN_PREFIX, routes=_admin_routes(sandbox))]
        # Longest prefix first so "/services" never shadows a longer one.
        self._by_prefix = sorted(
            sandbox.emulators.values(), key=lambda emulator: len(emulator.prefix), reverse=True
        )
        for emulator in self._by_prefix:
            routes.append(Mount(emulator.prefix, app=emulator.app()))
        self.router = Router(routes=routes)

    def _emulator_for(self, path: str) -> Emulator | None:
        for emulator in self._by_prefix:
            if path == emulator.prefix or path.startswith(emulator.prefix + "/"):
                return emulator
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        send = _dated(send)
        path: str = scope["path"]
        emulator = None if path.startswith(ADMIN_PREFIX) else self._emulator_for(path)
        if emulator is None:
            await self.router(scope, receive, send)
            return

        counted: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not counted:
                # Counted before the client can have the answer: a test reading the stats
                # right after its call sees it.
                counted.append(int(message["status"]))
                self.sandbox.count(emulator.name, _route_label(scope, emulator), counted[0])
            await send(message)

        try:
            await self._serve(emulator, scope, receive, counting_send)
        finally:
            if not counted:  # no answer at all (a dropped connection)
                self.sandbox.count(emulator.name, _route_label(scope, emulator), 0)

    async def _serve(self, emulator: Emulator, scope: Scope, receive: Receive, send: Send) -> None:
        faults = self.sandbox.faults_for(emulator.name)
        if faults is None:
            await self.router(scope, receive, send)
            return
        request = Request(scope, receive)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.rate_limit_per_10s is not None and not self.sandbox.take_rate_token(
            emulator.name, faults.rate_limit_per_10s
        ):
            await emulator.rate_limited(request)(scope, receive, send)
            return
        if faults.error_rate and random.random() < faults.error_rate:
            await emulator.fault(request, faults.error_status)(scope, receive, send)
            return
        if faults.reset_rate and random.random() < faults.reset_rate:
            # Half the drops happen before the system acts, half after it has written: the
            # client cannot tell which, which is exactly what idempotent retries must survive.
            if random.random() < 0.5:
                await self.router(scope, receive, _swallow)
            await _drop_connection(send)
            return
        await self.router(scope, receive, send)


async def _swallow(message: Message) -> None:
    """A send that discards the response (the connection will be dropped instead)."""


async def _drop_connection(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"', "more_body": True})
    raise _ConnectionDropped("sandbox fault: connection reset")


def _admin_routes(sandbox: Sandbox) -> list[BaseRoute]:
    async def stats(request: Request) -> Response:
        with sandbox.lock:
            return JSONResponse(sandbox.stats.to_json())

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(sandbox.faults.model_dump(exclude_defaults=True))
        try:
            body = await request.json()
            new = Faults.model_validate(body)
        except (ValueError, ValidationError) as exc:
            return JSONResponse({"error": f"invalid faults: {exc}"}, status_code=400)
        sandbox.set_faults(new)
        return JSONResponse(new.model_dump(exclude_defaults=True))

    async def reset(request: Request) -> Response:
        sandbox.reset()
        return JSONResponse({"ok": True})

    async def schema(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        system = body.get("system")
        emulator = sandbox.emulators.get(str(system))
        if emulator is None:
            known = ", ".join(sorted(sandbox.emulators))
            return JSONResponse(
                {"error": f"unknown system {system!r}; known: {known}"}, status_code=404
            )
        change = {k: v for k, v in body.items() if k != "system"}
        if len(change) != 1 or not ({"remove_field", "remove_option"} & change.keys()):
            return JSONResponse(
                {"error": "give exactly one of remove_field or remove_option"}, status_code=400
            )
        try:
            emulator.change_schema(change)
        except SchemaChangeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "system": emulator.name, **change})

    routes: list[BaseRoute] = [
        Route("/stats", stats, methods=["GET"]),
        Route("/faults", faults, methods=["GET", "POST"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/schema", schema, methods=["POST"]),
    ]
    for emulator in sandbox.emulators.values():
        routes.extend(emulator.admin_routes())
    return routes


def default_emulator_types() -> list[type[Emulator]]:
    """Every built-in emulated system, in the order they are mounted."""
    from leadrelay.sandbox.adsources import LinkedInEmulator, MetaEmulator
    from leadrelay.sandbox.hubspot import HubSpotEmulator
    from leadrelay.sandbox.salesforce import SalesforceEmulator
    from leadrelay.sandbox.zoho import ZohoEmulator

    return [SalesforceEmulator, HubSpotEmulator, ZohoEmulator, MetaEmulator, LinkedInEmulator]


def build_sandbox(emulator_types: Iterable[type[Emulator]] | None = None) -> Sandbox:
    """A sandbox with the given systems registered (default: every built-in one)."""
    sandbox = Sandbox()
    for emulator_type in emulator_types or default_emulator_types():
        sandbox.register(emulator_type(sandbox))
    sandbox.reset()
    return sandbox


class SandboxServer:
    """Runs a sandbox over HTTPS on loopback, in the foreground or on a background thread.

    Use as a context manager in tests and the demo::

        with SandboxServer() as server:
            env = server.env()   # LEADRELAY_CA_BUNDLE, HUBSPOT_BASE_URL, …
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ca_dir: Path | None = None,
        faults: Faults | None = None,
        emulator_types: Iterable[type[Emulator]] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        self.sandbox = build_sandbox(emulator_types)
        if faults is not None:
            self.sandbox.set_faults(faults)
        self._tmp: str | None = None
        if ca_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="leadrelay-sandbox-")
            ca_dir = Path(self._tmp)
        ca_dir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle = ca_dir / "sandbox-ca.pem"
        self._server_pem = ca_dir / "sandbox-server.pem"
        ca = trustme.CA(organization_name="leadrelay sandbox")
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(self._server_pem)
        )
        # Bind now so the port (and so every URL) is known before the first request.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"https://{host}:{self.port}"
        self.sandbox.base_url = self.url
        self.sandbox.ca_bundle = str(self.ca_bundle)
        logging.getLogger("uvicorn.error").addFilter(_DropFilter())
        config = uvicorn.Config(
            SandboxApp(self.sandbox),
            ssl_certfile=str(self._server_pem),
            ssl_keyfile=str(self._server_pem),
            log_level=log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            # uvicorn's httptools protocol lower-cases every response header name on the wire
            # (its send() does name.lower()); the h11 protocol writes names as the app gives
            # them, so the emulators can answer in the vendors' casing (Content-Type,
            # Sforce-Limit-Info). uvicorn's own Date and Server headers are lower case too:
            # SandboxApp sends Date as the vendors spell it, and no vendor names uvicorn.
            http="h11",
            server_header=False,
            date_header=False,
        )
        self._server = _Server(config)
        self._thread: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        """The ``KEY=value`` settings of DESIGN §10 for this running sandbox."""
        values = {"LEADRELAY_SANDBOX_URL": self.url, "LEADRELAY_CA_BUNDLE": str(self.ca_bundle)}
        for emulator in self.sandbox.emulators.values():
            values.update(emulator.env())
        return values

    def env_lines(self) -> str:
        """:meth:`env` as ``KEY=value`` lines, ready for a ``.env`` file."""
        return "".join(f"{key}={value}\n" for key, value in self.env().items())

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (Ctrl-C)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._cleanup()

    def start(self) -> None:
        """Serve on a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="leadrelay-sandbox",
            daemon=True,
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("sandbox server failed to start")
            self._thread.join(0.01)

    def stop(self) -> None:
        """Stop the background server and remove the temporary CA folder."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._cleanup()

    def _cleanup(self) -> None:
        self._socket.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_faults(text: str) -> Faults:
    """Parse the ``--faults`` JSON of ``leadrelay sandbox``; ValueError names the problem."""
    try:
        return Faults.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--faults is not JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"--faults: {problems}") from None
