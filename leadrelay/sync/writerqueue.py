"""The queue for SQLite's one writer, across threads and processes.

SQLite lets one connection write at a time. A writer that finds the lock taken waits in
SQLite's busy handler, which sleeps 1, 2, 5 … up to 100 ms between tries: a capture request that
meets the delivery worker's commit can wait a hundred milliseconds after the lock came free.
:class:`WriterQueue` makes writers wait their turn instead: threads of one process on a
re-entrant lock, processes (``serve --http-workers``, the delivery worker, ``leadrelay sync``)
on an exclusive ``flock`` of a file beside the database, which a waiting writer tries again
every half millisecond (so it goes on within about that long of its release, not after a
busy-handler sleep). SQLite's own locking still guards the data; the queue only orders the
waiting.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType

__all__ = ["WriterQueue", "lock_path_for"]

#: How often a writer looks again while another process holds the queue's file lock.
_POLL_S = 0.0005


def lock_path_for(database: str | None) -> str | None:
    """The queue's lock file for a SQLite database file, None for an in-memory database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + "-writer"


class WriterQueue:
    """``with queue:`` around a write transaction waits for this process's and every other
    process's writers to finish theirs (re-entrant within a thread).

    The file lock is polled (about every half millisecond) for at most ``timeout_s``; past it
    the writer goes ahead and SQLite's busy timeout decides, as without the queue. Without
    ``fcntl`` (Windows) or a lock file, only the threads of this process are queued.
    """

    def __init__(self, lock_path: str | None, *, timeout_s: float) -> None:
        self._threads = threading.RLock()
        self._path = lock_path if sys.platform != "win32" else None
        self._timeout_s = timeout_s
        self._fd: int | None = None
        self._pid = 0
        self._depth = 0
        self._held = False

    def __enter__(self) -> WriterQueue:
        self._threads.acquire()
        if self._depth == 0:
            try:
                self._held = self._lock_file()
            except BaseException:
                self._threads.release()
                raise
        self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._held:
                import fcntl

                self._held = False
                assert self._fd is not None
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _lock_file(self) -> bool:
        if self._path is None:
            return False
        import fcntl

        if self._fd is None or self._pid != os.getpid():
            # A forked child opens its own: a lock taken through the parent's would be shared.
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self._path = None
                return False
            self._pid = os.getpid()
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_S)

    def close(self) -> None:
        """Close the lock file (a later writer opens it again)."""
        with self._threads:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None
