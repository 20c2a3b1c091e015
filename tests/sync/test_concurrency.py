"""Two ``leadrelay sync`` processes at once, on SQLite and on PostgreSQL (DESIGN §7).

Flows that share a source (hubspot-salesforce and hubspot-zoho) meet the same HubSpot contacts
at the same time: both runs must end ok, with every lead once in each CRM and one lead key per
person (race-free identity), never a LinkConflictError.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import StateStore
from tests.postgres import fresh_schema
from tests.sync.test_scenarios import Project, admin, emails_in, hubspot_contacts

LEADS = 150


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    with fresh_schema() as url:
        yield url


def _sync(project: Project, flow: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "leadrelay", "sync", flow, "--json", "--config", "leadrelay.toml"],
        cwd=project.folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_flows_sharing_a_source_sync_at_once_without_conflict(
    sandbox: SandboxServer, tmp_path: Path, state_url: str
) -> None:
    admin(sandbox, "reset", {})
    project = Project(tmp_path, sandbox)
    toml = project.folder / "leadrelay.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            'url = "sqlite:///leadrelay.db"', f'url = "{state_url}"'
        ),
        encoding="utf-8",
    )
    with ExitStack() as stack:
        stack.callback(project.pool.close)
        hubspot_contacts(project, LEADS)
        runs = [_sync(project, "hubspot-salesforce"), _sync(project, "hubspot-zoho")]
        outputs = [run.communicate(timeout=600) for run in runs]
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, (out, err)
            assert "LinkConflictError" not in err
        emails = [f"lead{n}@acme{n}.io" for n in range(LEADS)]
        for crm in ("salesforce", "zoho"):
            assert set(emails_in(project, crm, emails)) == set(emails), crm
        with StateStore(state_url) as store:
            keys = store.find_keys_by_emails(emails)
            hub_ids = [r["hs_object_id"] for r in emails_in(project, "hubspot", emails).values()]
            linked = store.keys_for_many("hubspot", hub_ids)
        assert len(set(keys.values())) == LEADS
        assert set(linked.values()) == set(keys.values())
