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


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A state-store URL whose tables live in a new, empty schema of the test server."""
    url = sa.make_url(postgres_url()).set(drivername="postgresql+psycopg")
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """The state store's backend for this test: SQLite unless the module marks itself with
    :data:`BOTH_BACKENDS`."""
    return str(getattr(request, "param", "sqlite"))


@contextmanager
def state_url(backend: str, folder: Path, name: str = "state.db") -> Iterator[str]:
    """A state-store URL on ``backend``: a SQLite file in ``folder``, or a fresh schema."""
    if backend == "postgresql":
        with fresh_schema() as url:
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
