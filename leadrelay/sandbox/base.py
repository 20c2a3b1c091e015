"""What every emulated system plugs into: shared faults, counters and the emulator contract.

One :class:`Sandbox` holds the fault settings and request counters for all systems; each system
is an :class:`Emulator` subclass that owns its in-memory data and answers in its own dialect
(its own error bodies, its own 429). The server in :mod:`leadrelay.sandbox.server` mounts every
emulator's ASGI app under its prefix and applies the faults in front of it.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp


class Faults(BaseModel):
    """Fault injection settings, as posted to ``/__sandbox__/faults`` (DESIGN §10).

    Every key is optional; without ``systems`` they apply to every system, each counting its
    own rate limit. ``{}`` clears all faults.
    """

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_status: int = Field(default=503, ge=400, le=599)
    rate_limit_per_10s: int | None = Field(default=None, ge=1)
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    reset_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    search_lag_s: float = Field(default=0.0, ge=0.0, le=600.0)
    systems: list[str] | None = None

    def applies_to(self, system: str) -> bool:
        """Whether these faults apply to ``system``."""
        return self.systems is None or system in self.systems


class SchemaChangeError(ValueError):
    """A ``/__sandbox__/schema`` request that the system cannot carry out (unknown field …)."""


@dataclass
class Stats:
    """Request counters of the whole sandbox, as ``GET /__sandbox__/stats`` shows them."""

    requests: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    status: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, dict[str, int]]:
        """The stats body of DESIGN §10."""
        return {
            "requests": dict(self.requests),
            "by_route": dict(self.by_route),
            "status": dict(self.status),
        }


class Sandbox:
    """Shared state of one sandbox: faults, counters, rate-limit windows and the emulators.

    Thread-safe: the server runs requests on an event loop thread while tests and the demo read
    counters and change faults from other threads.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = Faults()
        self.stats = Stats()
        self.emulators: dict[str, Emulator] = {}
        self._windows: dict[str, deque[float]] = {}
        self.base_url = ""
        self.ca_bundle = ""

    def register(self, emulator: Emulator) -> None:
        """Add a system; its name must be unique."""
        if emulator.name in self.emulators:
            raise ValueError(f"emulator {emulator.name!r} registered twice")
        self.emulators[emulator.name] = emulator

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings and restart the rate-limit windows."""
        with self.lock:
            self.faults = faults
            self._windows.clear()

    def faults_for(self, system: str) -> Faults | None:
        """The faults in force for ``system``, or None when none apply."""
        faults = self.faults
        return faults if faults.applies_to(system) else None

    def search_lag_s(self, system: str) -> float:
        """How long writes take to become visible to ``system``'s search index."""
        faults = self.faults_for(system)
        return faults.search_lag_s if faults else 0.0

    def take_rate_token(self, system: str, limit: int, window_s: float = 10.0) -> bool:
        """Count one request in ``system``'s rolling window; False when it is over ``limit``."""
        now = time.monotonic()
        with self.lock:
            window = self._windows.setdefault(system, deque())
            while window and now - window[0] >= window_s:
                window.popleft()
            if len(window) >= limit:
                return False
            window.append(now)
            return True

    def count(self, system: str, route: str, status: int) -> None:
        """Record one request: per system, per route template and per status."""
        with self.lock:
            self.stats.requests[system] += 1
            self.stats.by_route[route] += 1
            self.stats.status[str(status)] += 1

    def reset(self) -> None:
        """Empty all data and counters (``POST /__sandbox__/reset``); seeded users come back."""
        with self.lock:
            self.stats = Stats()
            self._windows.clear()
            for emulator in self.emulators.values():
                emulator.reset()


class Emulator(ABC):
    """One emulated system, mounted under :attr:`prefix` on the sandbox server.

    Subclasses keep their data in memory, guarded by ``self.lock``, and speak the real system's
    dialect: routes, status codes, error bodies and headers as the real API documents them.
    """

    #: name used in stats, faults ``systems`` and ``/__sandbox__/schema``
    name: ClassVar[str]
    #: path prefix of the mounted app (``/hubspot``; Salesforce uses the real ``/services``)
    prefix: ClassVar[str]

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.lock = threading.RLock()

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT`` + prefix, known once the server listens."""
        return self.sandbox.base_url + self.prefix

    @abstractmethod
    def app(self) -> ASGIApp:
        """The ASGI app serving this system; its routes are relative to :attr:`prefix`."""

    @abstractmethod
    def reset(self) -> None:
        """Drop every record and restore the seeded users, schema and tokens."""

    @abstractmethod
    def rate_limited(self, request: Request) -> Response:
        """The system's own 429 (or 403 where the system says so) for the injected rate limit."""

    @abstractmethod
    def fault(self, request: Request, status: int) -> Response:
        """The system's own error body for an injected ``status`` (e.g. 503)."""

    def change_schema(self, change: dict[str, Any]) -> None:
        """Apply ``{"remove_field": NAME}`` or ``{"remove_option": {"field", "value"}}``.

        Raise :class:`SchemaChangeError` with the reason when the change cannot be applied.
        """
        raise SchemaChangeError(f"{self.name} has no schema to change")

    def env(self) -> dict[str, str]:
        """The ``KEY=value`` lines a client needs to reach this system (DESIGN §10)."""
        return {}

    def admin_routes(self) -> list[BaseRoute]:
        """Extra routes mounted under ``/__sandbox__`` (e.g. ``leads/meta``)."""
        return []

    def route_label(self, request: Request) -> str | None:
        """A label for stats when the route template is not enough (None: use the template)."""
        return None
