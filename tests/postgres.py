"""A real PostgreSQL for the tests that run the state store on it (DESIGN §7).

``.ci/run`` starts Debian's PostgreSQL and sets ``LEADRELAY_TEST_POSTGRES_URL``; elsewhere the
PostgreSQL tests are skipped, unless ``LEADRELAY_REQUIRE_POSTGRES`` is set (then they fail, so
CI cannot pass without them). Each test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

ENV = "LEADRELAY_TEST_POSTGRES_URL"


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
