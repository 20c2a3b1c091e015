"""Child processes of ``leadrelay serve``: the delivery worker and the scheduler.

:class:`ServeChild` spawns a daemon child with a stop event and stops it by setting the event,
waiting for the work in progress, then terminating what is left; :func:`child_logging` is what
each child does first (Ctrl-C ignored, the parent stops it; its log lines redacted and labelled).

A child never outlives ``serve``, even one killed with SIGKILL (which runs no clean-up): on
Linux the kernel sends the child SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
and on every platform a thread of the child watches the pipe its parent holds open
(``multiprocessing.parent_process().sentinel``) and sends it SIGTERM when the pipe closes. A
child ends on SIGTERM by raising :class:`SystemExit` in its main thread, so the pass in
progress stops and releases what it claimed; one whose parent died and that has not ended
:data:`ORPHAN_GRACE_S` seconds later is cut off.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = [
    "ORPHAN_GRACE_S",
    "SPAWN",
    "ServeChild",
    "child_logging",
    "end_with_parent",
    "keep_startup_objects",
    "share_secrets",
]

#: Children are spawned, not forked: the parent runs threads (uvicorn, the thread pool).
SPAWN = multiprocessing.get_context("spawn")

#: Seconds a child whose parent died has to end the work in progress before it is cut off.
ORPHAN_GRACE_S = 10.0

#: ``prctl`` option number (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _end_on_sigterm() -> None:
    """Make SIGTERM raise :class:`SystemExit` in the main thread, once: the parent-death signal
    and the parent watch may both send one, and the second must not cut the clean-up short."""

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _parent_death_signal() -> bool:
    """Ask Linux to send this process SIGTERM when its parent dies; False elsewhere.

    The kernel tracks the parent *thread* that started the child; ``serve`` starts its
    children from its main thread, which lives as long as the process.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(grace_s: float) -> None:
    """Start a daemon thread that sends this process SIGTERM when the parent's end of the
    spawn pipe closes (the parent died), then ends the process ``grace_s`` seconds later."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="leadrelay-parent-watch", daemon=True).start()


def end_with_parent(grace_s: float = ORPHAN_GRACE_S) -> None:
    """In a child process started by :mod:`multiprocessing`: end it when its parent dies,
    even when the parent was killed outright (the parent-death signal, and a thread watching
    the parent's end of the spawn pipe; cut off ``grace_s`` seconds after the parent died)."""
    _parent_death_signal()
    # Also covers a parent that died before the death signal was asked for.
    _watch_parent(grace_s)


_shared_secrets: set[str] = set()


def share_secrets(*values: str) -> None:
    """Secrets that children started from now on remove from their log lines too (see
    :func:`~leadrelay.connectors.errors.register_secret`). They reach a child through the
    spawn pipe, never its command line."""
    _shared_secrets.update(value for value in values if value)


def _child_main(
    target: Callable[..., None], args: tuple[Any, ...], grace_s: float, secrets: tuple[str, ...]
) -> None:
    """What a :class:`ServeChild` runs: end with the parent, then ``target(*args)``."""
    from leadrelay.connectors.errors import register_secret

    _end_on_sigterm()
    end_with_parent(grace_s)
    register_secret(*secrets)
    target(*args)


def keep_startup_objects() -> None:
    """Take what a long-running process has set up (its modules, the app, the mappings and
    connectors) out of the cyclic garbage collector's walks, after collecting what is garbage
    already (:func:`gc.freeze`).

    A full collection walks every object that is tracked. In a ``serve`` process most of those
    are the imports (several hundred thousand objects, FastAPI, pydantic, SQLAlchemy and the
    CRM clients), so each one cost ~50 ms of CPU, run whenever enough objects had survived,
    in the middle of a request or of a delivery transaction that capture requests queue
    behind. Frozen objects are never freed, so this is called once, when set-up is done:
    what the process makes afterwards is collected as before.
    """
    gc.collect()
    gc.freeze()


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
    """A daemon child process running ``target(*args)`` (a module-level function); it ends
    when ``stop_event`` (one of ``args``, made with :data:`SPAWN`) is set, on SIGTERM, and
    when the parent dies."""

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
        self._name = name
        self._target = target
        self._args = args
        self._process: Any = None

    def start(self) -> None:
        """Start the child process (with the secrets shared so far, see :func:`share_secrets`)."""
        secrets = tuple(sorted(_shared_secrets))
        self._process = SPAWN.Process(
            target=_child_main,
            args=(self._target, self._args, ORPHAN_GRACE_S, secrets),
            name=self._name,
            daemon=True,
        )
        self._process.start()

    @property
    def alive(self) -> bool:
        """Whether the child is running."""
        return self._process is not None and bool(self._process.is_alive())

    @property
    def exitcode(self) -> int | None:
        """The child's exit code once it ended (negative: the signal that ended it)."""
        return None if self._process is None else self._process.exitcode

    def _request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the child to end, wait for the work in progress (``timeout``, default the
        child's own), then make sure it is gone."""
        self._request_stop()
        if self._process is None:
            return
        self._process.join(self._stop_timeout_s if timeout is None else timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        if self._process.is_alive():
            # It ignores a second SIGTERM while it cleans up after the first; that took too long.
            self._process.kill()
            self._process.join(5)
