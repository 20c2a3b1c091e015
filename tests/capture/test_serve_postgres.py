"""``leadrelay serve --workers 2`` on PostgreSQL: its queue workers deliver a posted lead
(the stored lead queues a delivery job), and they end with ``serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from leadrelay.config import load_config
from leadrelay.sync.state import InboxStatus, open_state
from tests.capture.sandbox_project import Project
from tests.capture.test_serve import Served, _free_port, _gone, _wait_until_up
from tests.postgres import fresh_schema

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def served(project: Project) -> Iterator[Served]:
    toml = project.folder / "leadrelay.toml"
    with fresh_schema() as url:
        text = toml.read_text(encoding="utf-8")
        # Periodic deliveries once a minute: the posted lead is delivered by the job it queued.
        text = text.replace('url = "sqlite:///leadrelay.db"', f'url = "{url}"')
        toml.write_text(text + "\n[worker]\ndelivery_every_s = 60\n", encoding="utf-8")
        port = _free_port()
        logs = [project.folder / "serve.out", project.folder / "serve.err"]
        env = {**os.environ, "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
        with logs[0].open("wb") as out, logs[1].open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "leadrelay",
                    "serve",
                    "--workers",
                    "2",
                    "--config",
                    str(toml),
                    "--port",
                    str(port),
                ],
                cwd=project.folder,
                env=env,
                stdout=out,
                stderr=err,
            )
        running = Served(process, f"http://127.0.0.1:{port}", logs)
        try:
            _wait_until_up(running)
            yield running
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def test_workers_of_serve_deliver_a_posted_lead_and_end_on_sigterm(
    project: Project, served: Served
) -> None:
    children = served.children()
    assert len(children) >= 2
    with httpx.Client(base_url=served.url, timeout=30) as client:
        posted = client.post(
            "/forms/demo-webform",
            data={"email": "ana@pg.io", "last_name": "Silva", "company": "Acme"},
            headers={"X-Leadrelay-Secret": project.env["DEMO_WEBFORM_SECRET"]},
        )
    assert posted.status_code == 202
    config = load_config(project.folder / "leadrelay.toml")
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
    children = served.children()
    assert children
    served.process.kill()
    served.process.wait(30)
    alive = _gone(children)
    for process in alive:
        process.kill()
    assert alive == []
