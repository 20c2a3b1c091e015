"""Three processes on one PostgreSQL store share HubSpot's search limit (5 a second per
account): together they never go over it, so the sandbox, which counts every account's searches
in a rolling second and answers the sixth with 429, refuses none of them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from leadrelay.connectors.hubspot.connector import HubSpotConnector
from leadrelay.sync.engine import ConnectorPool
from tests.capture.sandbox_project import Project
from tests.postgres import BACKENDS

PROCESSES = 3
READS = 5
#: One process: open the project's store and connectors, say so, wait for the go, then read
#: HubSpot's changes (one search each on an empty portal) ``READS`` times.
READER = """
import sys
from leadrelay.config import load_config
from leadrelay.sync.engine import ConnectorPool
from leadrelay.sync.state import StateStore

config = load_config("leadrelay.toml")
with StateStore(config.state.url) as store, ConnectorPool(config, store=store) as pool:
    hubspot = pool.get("hubspot")
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(int(sys.argv[1])):
        list(hubspot.read_changes(None))
"""


@pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)
def test_processes_on_one_store_stay_together_under_the_search_limit(project: Project) -> None:
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(READS)],
            cwd=project.folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for reader in readers:  # all connected before any searches
            assert reader.stdout is not None and reader.stdout.readline() == "ready\n"
        for reader in readers:
            assert reader.stdin is not None
            reader.stdin.write("go\n")
            reader.stdin.flush()
        errors = [reader.communicate(timeout=120)[1] for reader in readers]
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()
    assert [reader.returncode for reader in readers] == [0] * PROCESSES, errors
    stats = project.sandbox.sandbox.stats
    searches = sum(n for route, n in stats.by_route.items() if route.endswith("/search"))
    assert (searches, stats.status.get("429", 0)) == (PROCESSES * READS, 0)


@pytest.mark.parametrize("state_backend", BACKENDS, indirect=True)
def test_a_pool_shares_its_limits_on_postgresql_until_it_is_closed(
    project: Project, state_backend: str
) -> None:
    pool = ConnectorPool(project.config, store=project.store)
    hubspot = pool.get("hubspot")
    assert isinstance(hubspot, HubSpotConnector)
    limiters = (hubspot.limiter, hubspot.search_limiter)
    assert [limiter.shared for limiter in limiters] == [state_backend == "postgresql"] * 2
    pool.close()
    # HubSpot's search limiter is the process's: it must not keep using a closed store.
    assert [limiter.shared for limiter in limiters] == [False, False]
