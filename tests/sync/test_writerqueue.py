"""The SQLite writer queue: one writer at a time across the store objects of any process."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from leadrelay.sync.state import StateStore
from leadrelay.sync.writerqueue import WriterQueue, lock_path_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def _free(path: Path) -> bool:
    """Whether another open file description could take the lock now."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@contextmanager
def _held_elsewhere(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_the_lock_file_is_held_for_the_outermost_block_only(tmp_path: Path) -> None:
    path = tmp_path / "leads.db-writer"
    queue = WriterQueue(str(path), timeout_s=5)
    with queue:
        with queue:
            pass
        assert not _free(path)
    assert _free(path)
    queue.close()


def test_a_writer_goes_ahead_when_the_lock_is_not_given_in_time(tmp_path: Path) -> None:
    path = tmp_path / "leads.db-writer"
    queue = WriterQueue(str(path), timeout_s=0.05)
    with _held_elsewhere(path), queue:
        entered = True
    assert entered
    assert _free(path)


def test_a_store_waits_for_the_writer_of_another_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'leads.db'}"
    first, second = StateStore(url), StateStore(url)
    try:
        with first.transaction():
            assert not _free(tmp_path / "leads.db-writer")
        assert _free(tmp_path / "leads.db-writer")
        with second.transaction():
            assert not _free(tmp_path / "leads.db-writer")
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("database", [None, "", ":memory:", "file::memory:?cache=shared"])
def test_an_in_memory_database_has_no_lock_file(database: str | None) -> None:
    assert lock_path_for(database) is None
