"""Access tokens, sessions and schema reads kept across runs and processes.

An idle ``leadrelay sync`` must cost at most one read per connection plus, at most, one auth
call (DESIGN §7.4), and Zoho issues only 10 access tokens per refresh token in 10 minutes
(crm-api-facts §3). So what a connector obtained at a cost and may reuse until it expires (an
access token with its instance URL, a Salesforce session, a ``describe()`` result) is kept in a
:class:`CredentialCache`:

- :class:`MemoryCredentialCache`, one per process, the default of every connector;
- :class:`SealedCredentialCache`, in the state store, shared by every process that opens the
  same store. Each value is sealed with Fernet (the ``cryptography`` package) under a key derived
  from a secret of the connection (its client secret), so the database holds nothing usable
  without the project's ``.env``; the row's key is a hash, never the secret itself.

A connector names an entry with :func:`cache_key` over the parts that identify it (system, auth
server, client id, user or refresh token) and passes the connection's client secret as
``secret``. A value the system refuses (401) is dropped with :meth:`CredentialCache.forget`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken

__all__ = [
    "CredentialCache",
    "CredentialStore",
    "MemoryCredentialCache",
    "SealedCredentialCache",
    "cache_key",
    "process_cache",
]


def cache_key(*parts: str) -> str:
    """A stable name for one cached credential: a SHA-256 of its identifying parts.

    The parts may include secrets (a refresh token identifies the grant); only the hash is kept.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


class CredentialCache(Protocol):
    """Where a connector keeps what it may reuse until it expires."""

    def get(self, key: str, *, secret: str) -> dict[str, Any] | None:
        """The value stored under ``key`` if it has not expired (and unseals with ``secret``)."""
        ...

    def put(self, key: str, value: dict[str, Any], *, secret: str, expires_at: datetime) -> None:
        """Keep ``value`` (JSON-serializable) under ``key`` until ``expires_at``."""
        ...

    def forget(self, key: str) -> None:
        """Drop the value under ``key`` (the system refused it)."""
        ...


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryCredentialCache:
    """A :class:`CredentialCache` in this process's memory (thread-safe)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[dict[str, Any], datetime]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, *, secret: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._values.get(key)
            if found is None:
                return None
            value, expires_at = found
            if expires_at <= _now():
                del self._values[key]
                return None
            return dict(value)

    def put(self, key: str, value: dict[str, Any], *, secret: str, expires_at: datetime) -> None:
        with self._lock:
            self._values[key] = (dict(value), expires_at)

    def forget(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._values.clear()


_PROCESS_CACHE = MemoryCredentialCache()


def process_cache() -> MemoryCredentialCache:
    """The cache every connector of this process uses until it is given another."""
    return _PROCESS_CACHE


class CredentialStore(Protocol):
    """The state-store methods :class:`SealedCredentialCache` keeps its rows with."""

    def get_credential(self, key: str) -> tuple[str, datetime] | None: ...

    def put_credential(self, key: str, sealed: str, expires_at: datetime) -> None: ...

    def forget_credential(self, key: str) -> None: ...


def _fernet(secret: str) -> Fernet:
    material = hashlib.sha256(b"leadrelay credential cache\0" + secret.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(material))


class SealedCredentialCache:
    """A :class:`CredentialCache` in the state store, sealed with Fernet under ``secret``.

    Every process opening the same store shares the entries, so a cron of ``leadrelay sync``
    every few minutes reuses one access token for its lifetime instead of asking for a new one
    each run. A value that does not unseal (the secret changed) counts as absent. The process
    cache sits in front, so one process reads the store once per entry.
    """

    def __init__(self, store: CredentialStore, memory: MemoryCredentialCache | None = None) -> None:
        self.store = store
        self.memory = memory if memory is not None else MemoryCredentialCache()

    def get(self, key: str, *, secret: str) -> dict[str, Any] | None:
        found = self.memory.get(key, secret=secret)
        if found is not None:
            return found
        row = self.store.get_credential(key)
        if row is None:
            return None
        sealed, expires_at = row
        try:
            text = _fernet(secret).decrypt(sealed.encode("ascii"))
            value = json.loads(text)
        except (InvalidToken, ValueError):
            return None
        if not isinstance(value, dict):
            return None
        self.memory.put(key, value, secret=secret, expires_at=expires_at)
        return dict(value)

    def put(self, key: str, value: dict[str, Any], *, secret: str, expires_at: datetime) -> None:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        sealed = _fernet(secret).encrypt(text.encode("utf-8")).decode("ascii")
        self.store.put_credential(key, sealed, expires_at)
        self.memory.put(key, value, secret=secret, expires_at=expires_at)

    def forget(self, key: str) -> None:
        self.memory.forget(key)
        self.store.forget_credential(key)
