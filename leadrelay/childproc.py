"""Child processes of ``leadrelay serve``: the delivery worker and the scheduler.

:class:`ServeChild` spawns a daemon child with a stop event and stops it by setting the event,
waiting for the work in progress, then terminating what is left; :func:`child_logging` is what
each child does first (Ctrl-C ignored, the parent stops it; its log lines redacted and labelled).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable
from typing import Any

__all__ = ["SPAWN", "ServeChild", "child_logging"]

#: Children are spawned, not forked: the parent runs threads (uvicorn, the thread pool).
SPAWN = multiprocessing.get_context("spawn")


def child_logging(logger: logging.Logger, label: str) -> None:
    """In a child: ignore SIGINT and log ``logger``'s INFO lines, secrets redacted, as
    ``LEVEL:     label: message``."""
    from leadrelay.connectors.errors import RedactingFilter

    # Ctrl-C reaches the whole process group: the parent stops the child between passes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter(f"%(levelname)s:     {label}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class ServeChild:
    """A daemon child process running ``target(*args)``; ``stop_event`` (one of ``args``, made
    with :data:`SPAWN`) tells it to end."""

    def __init__(
        self,
        name: str,
        target: Callable[..., None],
        args: tuple[Any, ...],
        stop_event: Any,
        *,
        stop_timeout_s: float,
    ) -> None:
        self._stop = stop_event
        self._stop_timeout_s = stop_timeout_s
        self._process = SPAWN.Process(target=target, args=args, name=name, daemon=True)

    def start(self) -> None:
        """Start the child process."""
        self._process.start()

    @property
    def alive(self) -> bool:
        """Whether the child is running."""
        return self._process.is_alive()

    def _request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the child to end, wait for the work in progress (``timeout``, default the
        child's own), then make sure it is gone."""
        self._request_stop()
        if self._process.pid is None:
            return
        self._process.join(self._stop_timeout_s if timeout is None else timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
