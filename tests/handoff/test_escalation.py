from __future__ import annotations

import base64
import json
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import SecretStr

from leadrelay.handoff.escalation import (
    CrmTaskChannel,
    EmailChannel,
    Escalator,
    InMemorySentLog,
    InMemoryTaskCreator,
    JsonFileSentLog,
    SlackChannel,
    build_escalator,
    redact_url,
)
from leadrelay.handoff.sla import (
    ClockKind,
    EmailSettings,
    EscalationSettings,
    SlackSettings,
    SlaStatus,
    evaluate,
)
from leadrelay.model import Lead, Tier

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=3)
PASSWORD = "smtp-pa55-do-not-log"
WEBHOOK_TOKEN = "XyZsecretTOKEN123"


# ---------------------------------------------------------------------------------------------
# a tiny SMTP server: EHLO/HELO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    tls_sessions: int = 0
    accept_password: str | None = None
    tls_context: ssl.SSLContext | None = None


class SmtpHandler(socketserver.BaseRequestHandler):
    server: SmtpServer

    def handle(self) -> None:
        self.sock: socket.socket = self.request
        self.reader = self.sock.makefile("rb")
        try:
            self._session(self.server.mailbox)
        finally:
            self.reader.close()
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock.close()

    def _session(self, box: Mailbox) -> None:
        def say(line: str) -> None:
            self.sock.sendall(line.encode() + b"\r\n")

        say("220 test ESMTP")
        sender, recipients = "", []
        while True:
            raw = self.reader.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                extensions = ["AUTH PLAIN"]
                if box.tls_context is not None and not isinstance(self.sock, ssl.SSLSocket):
                    extensions.append("STARTTLS")
                say("250-test")
                for ext in extensions[:-1]:
                    say(f"250-{ext}")
                say(f"250 {extensions[-1]}")
            elif verb == "HELO" or verb in ("RSET", "NOOP"):
                say("250 ok")
            elif verb == "STARTTLS" and box.tls_context is not None:
                say("220 go ahead")
                self.reader.close()
                self.sock = box.tls_context.wrap_socket(self.sock, server_side=True)
                self.reader = self.sock.makefile("rb")
                box.tls_sessions += 1
            elif verb == "AUTH":
                _, user, password = base64.b64decode(line.split()[2]).decode().split("\0")
                box.logins.append((user, password))
                if password == box.accept_password:
                    say("235 accepted")
                else:
                    say("535 5.7.8 bad credentials")
            elif verb == "MAIL":
                sender = line.split(":", 1)[1].strip().strip("<>")
                say("250 ok")
            elif verb == "RCPT":
                recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                say("250 ok")
            elif verb == "DATA":
                say("354 end with .")
                data = b""
                while (chunk := self.reader.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                box.messages.append(message_from_bytes(data, policy=policy.default))
                box.envelopes.append((sender, recipients))
                sender, recipients = "", []
                say("250 queued")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("502 not implemented")


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(("127.0.0.1", 0), SmtpHandler)
        self.mailbox = mailbox


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpServer, Mailbox]]:
    box = Mailbox(accept_password=PASSWORD)
    server = SmtpServer(box)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server, box
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def email_settings(server: SmtpServer, **overrides: Any) -> EmailSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.server_address[1],
        "starttls": False,
        "from_addr": "alerts@example.com",
        "to": ["ops@example.com", "lead@example.com"],
    }
    values.update(overrides)
    return EmailSettings.model_validate(values)


# ---------------------------------------------------------------------------------------------
# a local HTTP receiver standing in for a Slack incoming webhook


@dataclass
class Inbox:
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200


class WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self.server.inbox.posts.append((self.path, body))
        status = self.server.inbox.status
        reply = b"ok" if status == 200 else b"invalid_payload"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return


class WebhookServer(HTTPServer):
    def __init__(self, inbox: Inbox) -> None:
        super().__init__(("127.0.0.1", 0), WebhookHandler)
        self.inbox = inbox


@pytest.fixture
def webhook() -> Iterator[tuple[str, Inbox]]:
    inbox = Inbox()
    server = WebhookServer(inbox)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/{WEBHOOK_TOKEN}"
    try:
        yield url, inbox
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---------------------------------------------------------------------------------------------
# breaches


def hot_lead(key: str = "ld_hot", **fields: Any) -> Lead:
    values: dict[str, Any] = {
        "key": key,
        "created_at": T0,
        "email": "jane@acme.io",
        "first_name": "Jane",
        "last_name": "Doe",
        "company": "Acme",
        "tier": Tier.HOT,
        "external_ids": {"hs": "501"},
        "form_id": "pricing",
    }
    values.update(fields)
    return Lead.model_validate(values)


def open_breaches(*leads: Lead) -> list[SlaStatus]:
    return [s for s in evaluate(leads, NOW) if s.kind is ClockKind.HOT and s.open_breach]


def test_breach_emails_through_smtp(smtp: tuple[SmtpServer, Mailbox]) -> None:
    server, box = smtp
    lead = hot_lead()
    outcome = Escalator([EmailChannel(email_settings(server))]).escalate(
        open_breaches(lead), [lead], NOW
    )
    assert outcome.ok and len(outcome.sent) == 1
    (message,) = box.messages
    assert "SLA breach (hot)" in message["Subject"]
    assert "Jane Doe" in message["Subject"]
    assert "2 h overdue" in message["Subject"]
    assert "ld_hot" in message.get_content()
    assert box.envelopes == [("alerts@example.com", ["ops@example.com", "lead@example.com"])]


def test_email_over_starttls_logs_in(
    smtp: tuple[SmtpServer, Mailbox], caplog: pytest.LogCaptureFixture
) -> None:
    server, box = smtp
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    box.tls_context = server_context
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    settings = email_settings(
        server, starttls=True, username="alerts", password=SecretStr(PASSWORD)
    )
    lead = hot_lead()
    with caplog.at_level(logging.DEBUG):
        outcome = Escalator([EmailChannel(settings, tls_context=client_context)]).escalate(
            open_breaches(lead), [lead], NOW
        )
    assert outcome.ok
    assert box.tls_sessions == 1
    assert box.logins == [("alerts", PASSWORD)]
    assert len(box.messages) == 1
    assert PASSWORD not in caplog.text


def test_refused_login_names_no_password(
    smtp: tuple[SmtpServer, Mailbox], caplog: pytest.LogCaptureFixture
) -> None:
    server, box = smtp
    box.accept_password = "something-else"
    settings = email_settings(server, username="alerts", password=SecretStr(PASSWORD))
    lead = hot_lead()
    with caplog.at_level(logging.DEBUG):
        outcome = Escalator([EmailChannel(settings)]).escalate(open_breaches(lead), [lead], NOW)
    (failure,) = outcome.failed
    assert failure.error is not None and "refused the login" in failure.error
    assert PASSWORD not in failure.error
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(settings)
    assert box.messages == []


def test_breach_posts_to_slack_webhook(webhook: tuple[str, Inbox]) -> None:
    url, inbox = webhook
    lead = hot_lead()
    channel = SlackChannel(SlackSettings(webhook_url=SecretStr(url)))
    outcome = Escalator([channel]).escalate(open_breaches(lead), [lead], NOW)
    assert outcome.ok
    ((path, body),) = inbox.posts
    assert path.endswith(WEBHOOK_TOKEN)
    assert set(body) == {"text"}
    assert "Jane Doe" in body["text"] and "first action" in body["text"]


def test_slack_failure_never_shows_the_webhook_url(
    webhook: tuple[str, Inbox], caplog: pytest.LogCaptureFixture
) -> None:
    url, inbox = webhook
    inbox.status = 400
    lead = hot_lead()
    channel = SlackChannel(SlackSettings(webhook_url=SecretStr(url)))
    with caplog.at_level(logging.DEBUG):
        outcome = Escalator([channel]).escalate(open_breaches(lead), [lead], NOW)
    (failure,) = outcome.failed
    assert failure.error is not None and "400" in failure.error
    assert "invalid_payload" in failure.error
    assert WEBHOOK_TOKEN not in failure.error
    assert WEBHOOK_TOKEN not in caplog.text


def test_unreachable_slack_is_a_failure_without_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T/B/{WEBHOOK_TOKEN}"
    lead = hot_lead()
    channel = SlackChannel(SlackSettings(webhook_url=SecretStr(url), timeout_s=2))
    outcome = Escalator([channel]).escalate(open_breaches(lead), [lead], NOW)
    (failure,) = outcome.failed
    assert failure.error is not None and "ConnectError" in failure.error
    assert WEBHOOK_TOKEN not in failure.error


def test_redact_url_keeps_host_only() -> None:
    assert redact_url(f"https://hooks.slack.com/services/T/B/{WEBHOOK_TOKEN}") == (
        "https://hooks.slack.com/***"
    )


def test_crm_task_on_the_record() -> None:
    creator = InMemoryTaskCreator()
    lead = hot_lead()
    outcome = Escalator([CrmTaskChannel(creator, "hs")]).escalate(open_breaches(lead), [lead], NOW)
    assert outcome.ok
    (task,) = creator.tasks
    assert task.record_id == "501"
    assert task.due == NOW
    assert "SLA breach (hot)" in task.subject


def test_crm_task_needs_a_linked_record() -> None:
    lead = hot_lead(external_ids={})
    outcome = Escalator([CrmTaskChannel(InMemoryTaskCreator(), "hs")]).escalate(
        open_breaches(lead), [lead], NOW
    )
    (failure,) = outcome.failed
    assert failure.error == "lead ld_hot has no record in connection 'hs'"


def test_a_breach_escalates_once(
    smtp: tuple[SmtpServer, Mailbox], webhook: tuple[str, Inbox]
) -> None:
    server, box = smtp
    url, inbox = webhook
    creator = InMemoryTaskCreator()
    escalator = build_escalator(
        EscalationSettings(
            email=email_settings(server), slack=SlackSettings(webhook_url=SecretStr(url))
        ),
        task_creator=creator,
        crm_connection="hs",
    )
    lead = hot_lead()
    first = escalator.escalate(open_breaches(lead), [lead], NOW)
    second = escalator.escalate(open_breaches(lead), [lead], NOW + timedelta(hours=1))
    assert len(first.sent) == 3
    assert second.sent == [] and len(second.already_sent) == 3
    assert (len(box.messages), len(inbox.posts), len(creator.tasks)) == (1, 1, 1)


def test_a_failed_channel_is_retried_without_repeating_the_others(
    webhook: tuple[str, Inbox],
) -> None:
    url, inbox = webhook
    inbox.status = 500
    creator = InMemoryTaskCreator()
    escalator = Escalator(
        [CrmTaskChannel(creator, "hs"), SlackChannel(SlackSettings(webhook_url=SecretStr(url)))]
    )
    lead = hot_lead()
    first = escalator.escalate(open_breaches(lead), [lead], NOW)
    inbox.status = 200
    second = escalator.escalate(open_breaches(lead), [lead], NOW)
    assert [d.channel for d in first.failed] == ["slack"]
    assert [d.channel for d in second.sent] == ["slack"]
    assert len(creator.tasks) == 1
    assert len(inbox.posts) == 2


def test_only_open_breaches_escalate() -> None:
    creator = InMemoryTaskCreator()
    acted_late = hot_lead("ld_late", first_action_at=T0 + timedelta(hours=2))
    fresh = hot_lead("ld_fresh", created_at=NOW - timedelta(minutes=5))
    test_lead = hot_lead("ld_test", is_test=True)
    as_live = test_lead.model_copy(update={"is_test": False})
    statuses = evaluate([acted_late, fresh, as_live], NOW)
    outcome = Escalator([CrmTaskChannel(creator, "hs")]).escalate(
        statuses, [acted_late, fresh, test_lead], NOW
    )
    assert outcome.sent == [] and outcome.failed == []
    assert creator.tasks == []


def test_json_sent_log_survives_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "state" / "escalations.json"
    JsonFileSentLog(path).mark_sent("ld_1", ClockKind.MQL, "slack", NOW)
    reopened = JsonFileSentLog(path)
    assert reopened.was_sent("ld_1", ClockKind.MQL, "slack")
    assert not reopened.was_sent("ld_1", ClockKind.MQL, "email")
    assert not reopened.was_sent("ld_1", ClockKind.HOT, "slack")


def test_in_memory_sent_log() -> None:
    log = InMemorySentLog()
    log.mark_sent("ld_1", ClockKind.HOT, "email", NOW)
    assert log.was_sent("ld_1", ClockKind.HOT, "email")
    assert not log.was_sent("ld_2", ClockKind.HOT, "email")


def test_channel_names_must_differ() -> None:
    creator = InMemoryTaskCreator()
    with pytest.raises(ValueError, match="distinct"):
        Escalator([CrmTaskChannel(creator, "hs"), CrmTaskChannel(creator, "hs")])
