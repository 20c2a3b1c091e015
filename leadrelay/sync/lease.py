"""Short leases renewed by a heartbeat thread (DESIGN §7).

Work a process holds in the state store (an inbox batch, a flow's sync lock) is held for
``[state] lease_s`` seconds at a time and renewed every third of that while the process works.
A process that dies stops renewing, so another takes the work over one lease after its last
heartbeat — seconds, not minutes — without trusting a pid or a hostname.

:class:`Lease` runs the renewal on a daemon thread, so a slow page or a slow CRM call does not
let the lease lapse; the work checks :attr:`Lease.lost` between steps and stops when another
process has taken over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

from leadrelay.connectors.errors import redact

__all__ = ["Lease"]

log = logging.getLogger("leadrelay.lease")


class Lease:
    """Calls ``renew`` every ``every_s`` seconds on a daemon thread while the ``with`` block runs.

    ``renew`` returns False when the claim is no longer this process's (taken over): the lease
    is then :attr:`lost` and renewal stops. A renewal that raises (the database briefly away) is
    logged and retried at the next beat; the claim lapses only if that lasts a whole lease.
    """

    def __init__(self, renew: Callable[[], bool], *, every_s: float, name: str) -> None:
        if every_s <= 0:
            raise ValueError(f"lease {name!r}: every_s must be positive, got {every_s}")
        self.renew = renew
        self.every_s = every_s
        self.name = name
        self.lost = False
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                held = self.renew()
            except Exception as exc:  # the next beat tries again
                log.warning("renewing %s failed: %s", self.name, redact(f"{exc}"))
                continue
            self.beats += 1
            if not held:
                self.lost = True
                log.warning("%s was taken over by another process", self.name)
                return

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=f"lease:{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            # A renewal stuck on an unreachable database must not hold up the caller's exit;
            # the daemon thread ends with its next beat (or with the process).
            self._thread.join(timeout=self.every_s + 30)
            self._thread = None
