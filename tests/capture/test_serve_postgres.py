"""``leadrelay serve --workers 2`` on PostgreSQL, answering HTTP itself or with two HTTP
workers: its queue workers deliver a posted lead (the stored lead queues a delivery job), and
they end with ``serve``."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from leadrelay.config import load_config
from leadrelay.sync.state import InboxStatus, open_state
from tests.capture.sandbox_project import Project
from tests.capture.test_serve import Served, _gone, children_left_after_kill, serving
from tests.postgres import fresh_schema, point_state_at

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(params=[(), ("--http-workers", "2")], ids=["one HTTP process", "two HTTP workers"])
def served(project: Project, request: pytest.FixtureRequest) -> Iterator[Served]:
    toml = project.folder / "leadrelay.toml"
    with fresh_schema() as url:
        point_state_at(toml, url)
        # Periodic deliveries once a minute: the posted lead is delivered by the job it queued.
        text = toml.read_text(encoding="utf-8")
        toml.write_text(text + "\n[worker]\ndelivery_every_s = 60\n", encoding="utf-8")
        with serving(project, "--workers", "2", *request.param) as running:
            yield running


def test_workers_of_serve_deliver_a_posted_lead_and_end_on_sigterm(
    project: Project, served: Served
) -> None:
    children = served.children()
    assert len(children) >= 2
    with httpx.Client(base_url=served.url, timeout=30) as client:
        posted = client.post(
            "/forms/demo-webform",
            data={"email": "ana@pg.io", "last_name": "Silva", "company": "Acme"},
            headers={"X-Leadrelay-Secret": project.env["FORM_DEMO_WEBFORM_SECRET"]},
        )
    assert posted.status_code == 202
    config = load_config(project.folder / "leadrelay.toml")
    assert not config.state.is_sqlite  # the queue workers' store, not the SQLite default
    with open_state(config) as store:
        deadline = time.monotonic() + 45
        while store.inbox_counts()[InboxStatus.DELIVERED] < 1:
            assert time.monotonic() < deadline, served.log_text()
            time.sleep(0.2)
    assert project.lookup("hubspot", "ana@pg.io") is not None
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(90) == 0, served.log_text()
    assert _gone(children) == []
    assert "Traceback" not in served.log_text()


def test_the_workers_end_when_serve_is_killed(served: Served) -> None:
    assert children_left_after_kill(served) == []
