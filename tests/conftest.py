"""Fixtures and hooks every test package may use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import BACKENDS, drop_pooled_schemas, state_backend

__all__ = ["state_backend"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run the test's state store on SQLite and on PostgreSQL"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``both_backends`` whose fixtures ask for the backend runs on each."""
    marked = metafunc.definition.get_closest_marker("both_backends") is not None
    if marked and "state_backend" in metafunc.fixturenames:
        metafunc.parametrize("state_backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session", autouse=True)
def _pooled_schemas() -> Iterator[None]:
    """The PostgreSQL schemas kept for reuse between tests go when the session ends."""
    yield
    drop_pooled_schemas()
