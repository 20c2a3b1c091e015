"""Several HTTP worker processes for ``leadrelay serve --http-workers N``.

One Python process answers HTTP on one core: parsing, signature checks and the inbox write
of every submission hold its interpreter lock. With ``--http-workers N`` the parent binds the
listening socket once and starts N children (:class:`HttpWorkerProcess`), each running the
capture app under its own uvicorn server on that shared socket; the kernel hands each new
connection to one of them. The parent runs no app itself: it supervises (an HTTP worker that
ends is started again) and stops them all on SIGTERM or Ctrl-C.

Each child opens the state store itself. On SQLite the inbox is shared by WAL mode and the
store's busy timeout: several processes append to it safely, one write transaction at a time.
A child wakes the delivery worker through the event the parent gives it (SQLite), or queues a
delivery job itself (:class:`~leadrelay.sync.jobs.DeliveryNudge`, PostgreSQL). Being
:class:`~leadrelay.childproc.ServeChild` children, they end when ``serve`` is killed.

``/metrics`` is whole whichever worker answers: the workers' received / stored / rejected
counters are kept in one directory and summed by a scrape
(:func:`~leadrelay.capture.metrics.shared_counts`); the inbox and delivery counts come from the
state store.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import uvicorn

from leadrelay.capture.logs import register_config_secrets, uvicorn_log_config
from leadrelay.childproc import SPAWN, ServeChild, keep_startup_objects

__all__ = ["HttpWorkerError", "HttpWorkerProcess", "bind_socket", "supervise", "uvicorn_config"]

log = logging.getLogger("leadrelay.capture")

#: An HTTP worker that ends sooner than this after its start is not started again: it would
#: only fail the same way (a configuration or state store error); ``serve`` stops instead.
MIN_LIFETIME_S = 10.0


class HttpWorkerError(RuntimeError):
    """An HTTP worker ended right after it started: ``serve`` stops rather than retry."""


def uvicorn_config(app: Any, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """The uvicorn settings of the capture service (one process or each HTTP worker)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=uvicorn_log_config(),
        proxy_headers=True,
    )


def bind_socket(host: str, port: int, log_level: str) -> socket.socket:
    """The listening socket the HTTP workers share (bound, listening, inheritable)."""
    return uvicorn_config(None, host=host, port=port, log_level=log_level).bind_socket()


def _http_worker_main(
    config_path: str, sock: socket.socket, wake: Any, stop: Any, log_level: str
) -> None:
    """The body of an :class:`HttpWorkerProcess`: the capture app on the shared socket until
    ``stop`` is set or SIGTERM (both let the requests in progress finish)."""
    from leadrelay.capture.app import create_app
    from leadrelay.config import load_config
    from leadrelay.sync.state import open_state

    # Ctrl-C reaches the whole process group: the parent stops this worker through ``stop``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = load_config(config_path)
    register_config_secrets(config)
    with ExitStack() as stack:
        store = open_state(config)
        stack.callback(store.close)
        if wake is not None:
            on_stored = wake.set
        else:
            from leadrelay.sync.jobs import DeliveryNudge

            on_stored = stack.enter_context(DeliveryNudge(config))
        app = create_app(config, store, on_stored=on_stored)
        keep_startup_objects()
        server = uvicorn.Server(uvicorn_config(app, host="", port=0, log_level=log_level))

        def end_on_stop() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=end_on_stop, name="leadrelay-http-stop", daemon=True).start()
        # uvicorn turns SIGTERM (from ``serve``'s stop, or the parent-death watch) into a
        # graceful shutdown too.
        server.run(sockets=[sock])


class HttpWorkerProcess(ServeChild):
    """One HTTP worker of ``serve --http-workers N``: the capture app of the project at
    ``config_path`` served on ``sock``; ``wake`` (a :data:`~leadrelay.childproc.SPAWN` event)
    is set after a lead was stored, or None to queue PostgreSQL delivery jobs instead."""

    def __init__(
        self, config_path: Path, sock: socket.socket, wake: Any, *, log_level: str, number: int
    ) -> None:
        stop = SPAWN.Event()
        self.number = number
        self.started_at = 0.0
        super().__init__(
            f"leadrelay-http{number}",
            _http_worker_main,
            (str(config_path), sock, wake, stop, log_level),
            stop,
            stop_timeout_s=30.0,
        )

    def start(self) -> None:
        """Start the child (again after it ended)."""
        self.started_at = time.monotonic()
        super().start()


def supervise(workers: list[HttpWorkerProcess], *, poll_s: float = 0.5) -> None:
    """Keep the HTTP workers running until Ctrl-C (returns) or a signal handler raises.

    A worker that ends is started again, unless it ran less than :data:`MIN_LIFETIME_S`:
    then :class:`HttpWorkerError` says so (the caller stops the others).
    """
    try:
        while True:
            for worker in workers:
                if worker.alive:
                    continue
                lived = time.monotonic() - worker.started_at
                if lived < MIN_LIFETIME_S:
                    raise HttpWorkerError(
                        f"HTTP worker {worker.number} ended {lived:.1f} s after it started "
                        f"(exit code {worker.exitcode}); see its log lines above"
                    )
                log.warning(
                    "HTTP worker %d ended (exit code %s); starting it again",
                    worker.number,
                    worker.exitcode,
                )
                worker.start()
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return
