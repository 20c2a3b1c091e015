"""A model-based test of two-way sync on the sandbox (issue 12): random operations on HubSpot,
Salesforce and Zoho through their APIs, interleaved with syncs (some killed halfway), checked
against a small reference model after each quiet sync (see :mod:`tests.sync.sync_model`).

A bounded run is part of ``make test``; ``make soak`` runs the same machine for minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from leadrelay.sandbox.server import SandboxServer
from tests.sync.sync_model import TwoWaySyncMachine

#: Small enough for every ``make test``: a few short stories of a handful of leads.
BOUNDED = settings(
    max_examples=6,
    stateful_step_count=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


def test_two_way_sync_matches_the_reference_model(sandbox: SandboxServer, tmp_path: Path) -> None:
    class Machine(TwoWaySyncMachine):
        pass

    Machine.sandbox = sandbox
    Machine.workdir = tmp_path
    run_state_machine_as_test(Machine, settings=BOUNDED)
