"""A real ``leadrelay serve`` process on the sandbox project: it ends with its children, on
SIGTERM and when it is killed, and no line it logs holds a secret of the project's ``.env``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from leadrelay.capture.httpworkers import MIN_LIFETIME_S
from leadrelay.capture.logs import SECRET_QUERY_PARAMS
from leadrelay.sync.state import InboxStatus
from tests.capture.sandbox_project import Project

#: How long a child may outlive ``serve`` (its grace for the pass in progress, plus start-up
#: slack on a loaded machine).
CHILD_EXIT_S = 20.0


#: Named like secrets in ``.env`` but identifiers, not secrets: Salesforce's consumer key is its
#: OAuth client id. They are still sent, and must be redacted, under secret parameter names.
PUBLIC_IDS = frozenset({"SALESFORCE_CONSUMER_KEY"})


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    logs: list[Path]

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def log_text(self) -> str:
        return "".join(path.read_text(encoding="utf-8", errors="replace") for path in self.logs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(served: Served, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            pytest.fail(f"serve exited with {served.process.returncode}:\n{served.log_text()}")
        try:
            if httpx.get(f"{served.url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        pytest.fail(f"serve did not answer within {timeout_s} s:\n{served.log_text()}")
    # The delivery worker is spawned before uvicorn starts; wait until it runs.
    while not served.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.children(), "serve started no child process"


@contextmanager
def serving(project: Project, *options: str) -> Iterator[Served]:
    """``leadrelay serve`` on the project (with ``options``), up and answering; killed after."""
    port = _free_port()
    logs = [project.folder / "serve.out", project.folder / "serve.err"]
    # A wide console: rich must not wrap a line in the middle of a value the test looks for.
    env = {**os.environ, "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
    with logs[0].open("wb") as out, logs[1].open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leadrelay",
                "serve",
                "--config",
                str(project.folder / "leadrelay.toml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *options,
            ],
            cwd=project.folder,
            env=env,
            stdout=out,
            stderr=err,
        )
    served = Served(process, f"http://127.0.0.1:{port}", logs)
    try:
        _wait_until_up(served)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


#: ``serve`` answering HTTP itself, and with two HTTP worker processes on its port.
HTTP_MODES = {"one process": (), "two HTTP workers": ("--http-workers", "2")}


@pytest.fixture(params=list(HTTP_MODES))
def served(project: Project, request: pytest.FixtureRequest) -> Iterator[Served]:
    with serving(project, *HTTP_MODES[request.param]) as running:
        yield running


@pytest.fixture
def served_by_workers(project: Project) -> Iterator[Served]:
    with serving(project, *HTTP_MODES["two HTTP workers"]) as running:
        yield running


def _gone(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still alive after waiting up to :data:`CHILD_EXIT_S`."""
    _, alive = psutil.wait_procs(processes, timeout=CHILD_EXIT_S)
    return alive


def test_sigterm_ends_serve_and_its_children_cleanly(served: Served) -> None:
    children = served.children()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(60) == 0, served.log_text()
    assert _gone(children) == []


def children_left_after_kill(served: Served) -> list[psutil.Process]:
    """SIGKILL ``serve``; its children still alive :data:`CHILD_EXIT_S` later (killed too)."""
    children = served.children()
    assert children
    served.process.kill()
    served.process.wait(30)
    alive = _gone(children)
    for process in alive:
        process.kill()
    return alive


def test_the_children_end_when_serve_is_killed(served: Served) -> None:
    assert children_left_after_kill(served) == []


def _secrets(project: Project) -> dict[str, str]:
    marks = ("SECRET", "TOKEN", "KEY", "PASSWORD")
    return {
        name: value
        for name, value in project.env.items()
        if any(mark in name for mark in marks) and len(value) >= 6
    }


def test_no_log_line_holds_a_secret(project: Project, served: Served) -> None:
    secrets = _secrets(project)
    assert {"META_VERIFY_TOKEN", "GOOGLE_ADS_KEY", "FORM_DEMO_WEBFORM_SECRET"} <= set(secrets)
    configured = (project.folder / "leadrelay.toml").read_text(encoding="utf-8")
    with httpx.Client(base_url=served.url, timeout=30) as client:
        handshake = client.get(
            "/hooks/meta",
            params={
                "hub.mode": "subscribe",
                "hub.challenge": "1158",
                "hub.verify_token": project.env["META_VERIFY_TOKEN"],
            },
        )
        assert handshake.status_code == 200
        lead = client.post(
            "/forms/demo-webform",
            data={"email": "ana@acme.io"},
            headers={"X-Leadrelay-Secret": project.env["FORM_DEMO_WEBFORM_SECRET"]},
        )
        assert lead.status_code == 202
        for name, secret in secrets.items():
            # Under each secret parameter name, percent-encoded as a client would send it.
            query = "&".join(f"{param}={quote(secret)}" for param in sorted(SECRET_QUERY_PARAMS))
            for path in ("/hooks/meta", "/hooks/google-ads", "/forms/demo-webform"):
                client.get(f"{path}?{query}")
                client.post(
                    f"{path}?{query}",
                    content=json.dumps({"google_key": secret, "email": secret}),
                    headers={"Content-Type": "application/json", "Authorization": secret},
                )
            if f"${{{name}}}" in configured and name not in PUBLIC_IDS:
                # A secret the project uses is removed even under a name that is not secret.
                client.get(f"/forms/demo-webform?utm_content={quote(secret)}")
        # Wait for the worker to deliver the lead, so its log lines are part of the run.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if project.store.inbox_counts().get(InboxStatus.DELIVERED, 0):
                break
            time.sleep(0.5)
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(60)
    text = served.log_text()
    assert "GET /hooks/meta?" in text  # the access log is in what is searched
    assert "delivered 1 captured lead" in text  # and the worker's lines
    leaked = sorted(name for name, secret in secrets.items() if secret in text)
    assert leaked == [], text


def _http_workers(served: Served) -> list[psutil.Process]:
    """The children of ``serve`` that listen on its port."""
    port = int(served.url.rpartition(":")[2])
    return [
        child
        for child in served.children()
        if any(c.laddr and c.laddr.port == port for c in child.net_connections("tcp"))
    ]


def test_http_workers_share_the_port_and_the_inbox(
    project: Project, served_by_workers: Served
) -> None:
    deadline = time.monotonic() + 60
    while len(_http_workers(served_by_workers)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_http_workers(served_by_workers)) == 2
    emails = [f"lead{n}@worker-share.io" for n in range(40)]
    secret = project.env["FORM_DEMO_WEBFORM_SECRET"]

    def post(email: str) -> int:
        # A new connection each: the kernel spreads connections over the workers.
        with httpx.Client(base_url=served_by_workers.url, timeout=30) as client:
            response = client.post(
                "/forms/demo-webform",
                data={"email": email},
                headers={"X-Leadrelay-Secret": secret},
            )
            return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, emails))
    assert statuses == [202] * len(emails)
    counts = project.store.inbox_counts()
    assert sum(counts.values()) == len(emails)


def _stored_total(url: str) -> float:
    """``leadrelay_capture_stored_total`` over every form, as one scrape (its own connection,
    so any worker may answer) reports it."""
    with httpx.Client(base_url=url, timeout=30) as client:
        text = client.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "leadrelay_capture_stored_total"
    )


def test_metrics_count_every_http_workers_submissions(
    project: Project, served_by_workers: Served
) -> None:
    deadline = time.monotonic() + 60
    while len(_http_workers(served_by_workers)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    secret = project.env["FORM_DEMO_WEBFORM_SECRET"]

    def post(email: str) -> int:
        with httpx.Client(base_url=served_by_workers.url, timeout=30) as client:
            return client.post(
                "/forms/demo-webform", data={"email": email}, headers={"X-Leadrelay-Secret": secret}
            ).status_code

    emails = [f"lead{n}@metrics-share.io" for n in range(30)]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(post, emails)) == [202] * len(emails)
    # Both workers stored some (the kernel spread the connections); each scrape sums them all.
    with ThreadPoolExecutor(4) as pool:
        totals = list(pool.map(_stored_total, [served_by_workers.url] * 12))
    assert totals == [len(emails)] * 12


def test_an_http_worker_that_dies_is_started_again(served_by_workers: Served) -> None:
    deadline = time.monotonic() + 60
    while len(_http_workers(served_by_workers)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    victim = _http_workers(served_by_workers)[0]
    # Past the start-up window in which a dying worker stops serve instead.
    time.sleep(max(0.0, MIN_LIFETIME_S + 1 - (time.time() - victim.create_time())))
    victim.kill()
    victim.wait(30)
    while time.monotonic() < deadline + 30:
        workers = _http_workers(served_by_workers)
        if len(workers) == 2 and victim.pid not in {w.pid for w in workers}:
            break
        time.sleep(0.2)
    assert len(_http_workers(served_by_workers)) == 2
    assert httpx.get(f"{served_by_workers.url}/healthz", timeout=10).status_code == 200
