"""The credential cache: tokens kept sealed in the state store, shared across processes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from leadrelay.connectors.credentials import (
    MemoryCredentialCache,
    SealedCredentialCache,
    cache_key,
)
from leadrelay.sync.state import StateStore

TOKEN = "00Dxx!AQ-very-secret-access-token"


def _later(minutes: int = 30) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def test_a_token_put_by_one_process_is_read_by_another(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    key = cache_key("zoho", "https://accounts.example", "client-id", "refresh-token")
    with StateStore(url) as first:
        SealedCredentialCache(first).put(
            key, {"access_token": TOKEN}, secret="client-secret", expires_at=_later()
        )
    with StateStore(url) as second:
        found = SealedCredentialCache(second).get(key, secret="client-secret")
    assert found == {"access_token": TOKEN}


def test_the_database_holds_neither_the_token_nor_the_key_parts(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    key = cache_key("salesforce", "refresh-token-value")
    with StateStore(f"sqlite:///{path}") as store:
        SealedCredentialCache(store).put(
            key, {"access_token": TOKEN}, secret="client-secret", expires_at=_later()
        )
    rows = sqlite3.connect(path).execute("select key, sealed from credentials").fetchall()
    assert len(rows) == 1
    text = repr(rows)
    assert TOKEN not in text
    assert "refresh-token-value" not in text
    assert "client-secret" not in text


def test_another_secret_does_not_unseal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore(url) as store:
        SealedCredentialCache(store).put(
            "k", {"access_token": TOKEN}, secret="old-secret", expires_at=_later()
        )
        assert SealedCredentialCache(store).get("k", secret="new-secret") is None


def test_an_expired_entry_is_absent() -> None:
    with StateStore("sqlite:///:memory:") as store:
        cache = SealedCredentialCache(store)
        cache.put("k", {"a": 1}, secret="s", expires_at=datetime.now(UTC) - timedelta(seconds=1))
        assert SealedCredentialCache(store).get("k", secret="s") is None
    memory = MemoryCredentialCache()
    memory.put("k", {"a": 1}, secret="s", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert memory.get("k", secret="s") is None


def test_forget_drops_it_everywhere() -> None:
    with StateStore("sqlite:///:memory:") as store:
        cache = SealedCredentialCache(store)
        cache.put("k", {"a": 1}, secret="s", expires_at=_later())
        cache.forget("k")
        assert cache.get("k", secret="s") is None
        assert SealedCredentialCache(store).get("k", secret="s") is None
