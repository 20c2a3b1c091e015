"""A real PostgreSQL for the tests that run the state store on it (DESIGN §7).

``.ci/run`` starts Debian's PostgreSQL and sets ``LEADRELAY_TEST_POSTGRES_URL``; elsewhere the
PostgreSQL tests are skipped, unless ``LEADRELAY_REQUIRE_POSTGRES`` is set (then they fail, so
CI cannot pass without them). Each test gets a schema of its own, dropped afterwards.

A test module about state runs on both backends with ``pytestmark = BOTH_BACKENDS``: its
project fixtures ask :func:`state_backend` which one, and :func:`state_url` /
:func:`point_state_at` give them the store for it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

ENV = "LEADRELAY_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")
#: A module's (or test's) mark: its tests whose fixtures build a state store run on SQLite
#: and on PostgreSQL (``tests/conftest.py`` parametrizes :func:`state_backend`).
BOTH_BACKENDS = pytest.mark.both_backends
_STATE_URL = re.compile(r'(?m)^(\[state\]\s*\n(?:[^\[\n].*\n|\n)*?)url = "[^"]*"$')


def postgres_url() -> str:
    """The test server's URL, or skip (fail when PostgreSQL is required)."""
    url = os.environ.get(ENV)
    if not url:
        if os.environ.get("LEADRELAY_REQUIRE_POSTGRES"):
            pytest.fail(f"LEADRELAY_REQUIRE_POSTGRES is set but {ENV} is not")
        pytest.skip(f"no PostgreSQL: set {ENV} (CI starts one)")
    return url


def _server() -> sa.URL:
    return sa.make_url(postgres_url()).set(drivername="postgresql+psycopg")


def _scoped(url: sa.URL, schema: str) -> str:
    scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False)


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A state-store URL whose tables live in a new, empty schema of the test server."""
    url = _server()
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield _scoped(url, schema)
    finally:
        _drop(admin, schema)
        admin.dispose()


def _drop(admin: sa.Engine, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


#: Schemas a test used and that were emptied after it, for the next test: creating the
#: store's tables costs far more than emptying them (dropped when the session ends).
_POOL: list[str] = []


@contextmanager
def pooled_schema() -> Iterator[str]:
    """Like :func:`fresh_schema`, but reusing a schema an earlier test left, emptied (its
    tables kept, their rows gone and their ids restarted)."""
    url = _server()
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if _POOL:
        schema = _POOL.pop()
    else:
        schema = f"t_{secrets.token_hex(6)}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield _scoped(url, schema)
    finally:
        try:
            _empty(admin, schema)
            _POOL.append(schema)
        except sa.exc.DBAPIError:  # still in use (a connection the test left open): drop it
            _drop(admin, schema)
        finally:
            admin.dispose()


def _empty(admin: sa.Engine, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
        tables = conn.scalars(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"),
            {"schema": schema},
        ).all()
        emptied = [t for t in tables if t != "meta"]
        if emptied:
            names = ", ".join(f'"{schema}"."{t}"' for t in emptied)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        if "meta" in tables:
            conn.exec_driver_sql(f"DELETE FROM \"{schema}\".meta WHERE key <> 'schema_version'")


def drop_pooled_schemas() -> None:
    """Drop the schemas kept for reuse (at the end of the test session)."""
    if not _POOL:
        return
    admin = sa.create_engine(_server(), poolclass=sa.pool.NullPool)
    try:
        while _POOL:
            _drop(admin, _POOL.pop())
    finally:
        admin.dispose()


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """The state store's backend for this test: SQLite unless the module marks itself with
    :data:`BOTH_BACKENDS`."""
    return str(getattr(request, "param", "sqlite"))


@contextmanager
def state_url(backend: str, folder: Path, name: str = "state.db") -> Iterator[str]:
    """A state-store URL on ``backend``: a SQLite file in ``folder``, or an empty schema."""
    if backend == "postgresql":
        with pooled_schema() as url:
            yield url
    else:
        yield f"sqlite:///{folder / name}"


def point_state_at(config_file: Path, url: str) -> None:
    """Rewrite the ``[state] url`` of a ``leadrelay.toml`` (it must have one) to ``url``."""
    text = config_file.read_text(encoding="utf-8")
    changed, count = _STATE_URL.subn(lambda m: f'{m[1]}url = "{url}"', text, count=1)
    if count != 1:
        raise ValueError(f"{config_file.name}: no [state] url to point elsewhere")
    config_file.write_text(changed, encoding="utf-8")
