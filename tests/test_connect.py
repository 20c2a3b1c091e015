"""``leadrelay connect``: Salesforce's web-server flow with PKCE end to end against the sandbox,
and the Zoho self-client grant-code exchange against Zoho's documented reply (respx)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import requests
import respx

from leadrelay.config import SalesforceConnection, read_env_file
from leadrelay.connect import ConnectError, connect_salesforce
from leadrelay.connectors.salesforce import SalesforceConnector
from leadrelay.sandbox.salesforce import (
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SalesforceEmulator,
)
from leadrelay.sandbox.server import SandboxServer
from tests.test_cli import run

EXISTING = "# the project's settings\nHUBSPOT_ACCESS_TOKEN=pat-keep-me\nEMPTY=\n"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[SalesforceEmulator]) as running:
        yield running


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(EXISTING, encoding="utf-8")
    return path


def follow(url: str) -> None:
    """A browser: follow the authorize URL through its redirect to the loopback callback."""
    response = requests.get(url, timeout=10, verify=os.environ["LEADRELAY_TEST_CA"])
    response.raise_for_status()


@pytest.fixture
def browser(server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADRELAY_TEST_CA", str(server.ca_bundle))


def connect(server: SandboxServer, env_file: Path, **overrides: object) -> dict[str, str]:
    options: dict[str, object] = {
        "client_id": SANDBOX_CONSUMER_KEY,
        "client_secret": SANDBOX_CONSUMER_SECRET,
        "login_url": server.url,
        "env_file": env_file,
        "port": 0,
        "ca_bundle": str(server.ca_bundle),
        "timeout_s": 10.0,
        "browse": follow,
        "show": lambda _: None,
    }
    options.update(overrides)
    return connect_salesforce(**options)  # type: ignore[arg-type]


# --- Salesforce ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("browser")
def test_the_web_server_flow_writes_a_working_refresh_token(
    server: SandboxServer, env_file: Path
) -> None:
    written = connect(server, env_file)
    assert written == {
        "SALESFORCE_REFRESH_TOKEN": "(secret)",
        "SALESFORCE_INSTANCE_URL": server.url,
    }
    values = read_env_file(env_file)
    assert values["HUBSPOT_ACCESS_TOKEN"] == "pat-keep-me"
    assert env_file.read_text(encoding="utf-8").startswith(EXISTING)
    settings = SalesforceConnection.model_validate(
        {
            "kind": "salesforce",
            "auth": "refresh_token",
            "login_url": server.url,
            "consumer_key": SANDBOX_CONSUMER_KEY,
            "consumer_secret": SANDBOX_CONSUMER_SECRET,
            "refresh_token": values["SALESFORCE_REFRESH_TOKEN"],
            "ca_bundle": str(server.ca_bundle),
        }
    )
    with SalesforceConnector(settings, "sf") as connector:
        assert connector.describe().has("Company")
        assert connector.instance_url == values["SALESFORCE_INSTANCE_URL"]


@pytest.mark.usefixtures("browser")
def test_a_second_connect_replaces_the_token_in_place(
    server: SandboxServer, env_file: Path
) -> None:
    connect(server, env_file)
    first = read_env_file(env_file)["SALESFORCE_REFRESH_TOKEN"]
    connect(server, env_file)
    lines = env_file.read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("SALESFORCE_REFRESH_TOKEN=") for line in lines) == 1
    assert read_env_file(env_file)["SALESFORCE_REFRESH_TOKEN"] != first


def _callback(url: str, **changes: str) -> str:
    """The authorize redirect (not followed), its query changed by ``changes``."""
    answer = requests.get(
        url, timeout=10, allow_redirects=False, verify=os.environ["LEADRELAY_TEST_CA"]
    )
    parts = urlsplit(answer.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


@pytest.mark.usefixtures("browser")
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"state": "forged"}, "state does not match"),
        ({"error": "access_denied", "error_description": "end-user denied authorization"},
         "refused the authorization: access_denied (end-user denied authorization)"),
        ({"code": "aPrxforged"}, "code exchange was refused: invalid_grant"),
    ],
)  # fmt: skip
def test_a_bad_redirect_writes_nothing(
    server: SandboxServer, env_file: Path, changes: dict[str, str], message: str
) -> None:
    def tamper(url: str) -> None:
        requests.get(_callback(url, **changes), timeout=10).raise_for_status()

    with pytest.raises(ConnectError, match=re.escape(message)):
        connect(server, env_file, browse=tamper)
    assert env_file.read_text(encoding="utf-8") == EXISTING


@pytest.mark.usefixtures("browser")
def test_a_wrong_client_secret_is_refused_at_the_exchange(
    server: SandboxServer, env_file: Path
) -> None:
    with pytest.raises(ConnectError, match="invalid_client"):
        connect(server, env_file, client_secret="wrong-secret")
    assert env_file.read_text(encoding="utf-8") == EXISTING


def test_no_authorization_in_time_is_an_error(server: SandboxServer, env_file: Path) -> None:
    with pytest.raises(ConnectError, match="no authorization arrived"):
        connect(server, env_file, browse=None, timeout_s=0.2)


def test_the_command_opens_a_browser_and_exits_0(server: SandboxServer, tmp_path: Path) -> None:
    """The real command in its own process; the "browser" (the BROWSER variable Python's
    webbrowser honours) is a script that follows the URL like a browser would."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        EXISTING
        + f"SALESFORCE_CONSUMER_KEY={SANDBOX_CONSUMER_KEY}\n"
        + f"SALESFORCE_CONSUMER_SECRET={SANDBOX_CONSUMER_SECRET}\n"
        + f"SALESFORCE_LOGIN_URL={server.url}\n"
        + f"LEADRELAY_CA_BUNDLE={server.ca_bundle}\n",
        encoding="utf-8",
    )
    fake_browser = tmp_path / "browser.py"
    fake_browser.write_text(
        textwrap.dedent(
            f"""
            import sys, requests
            requests.get(sys.argv[1], timeout=10, verify={str(server.ca_bundle)!r})
            """
        ),
        encoding="utf-8",
    )
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SALESFORCE_", "LEADRELAY_"))
    }
    environ["BROWSER"] = f"{sys.executable} {fake_browser} %s"
    done = subprocess.run(
        [sys.executable, "-m", "leadrelay", "connect", "salesforce", "--open-browser",
         "--port", "0", "--timeout", "30", "--env-file", str(env_file)],
        env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "services/oauth2/authorize?" in done.stdout
    assert "wrote SALESFORCE_REFRESH_TOKEN, SALESFORCE_INSTANCE_URL" in done.stdout
    values = read_env_file(env_file)
    assert values["SALESFORCE_REFRESH_TOKEN"] not in done.stdout + done.stderr
    assert values["HUBSPOT_ACCESS_TOKEN"] == "pat-keep-me"


def test_connect_salesforce_without_a_client_id_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SALESFORCE_CONSUMER_KEY", raising=False)
    code, _, err = run(
        ["connect", "salesforce", "--env-file", str(tmp_path / ".env"), "--port", "0"], capsys
    )
    assert code == 2
    assert "--client-id" in err


# --- Zoho ----------------------------------------------------------------------------------------

ZOHO_REPLY = {
    "access_token": "1000.access.token",
    "refresh_token": "1000.refresh.secret",
    "scope": "ZohoCRM.modules.ALL",
    "api_domain": "https://www.zohoapis.eu",
    "token_type": "Bearer",
    "expires_in": 3600,
}


def zoho(argv: list[str], env_file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, out, err = run(
        ["connect", "zoho", "--client-id", "1000.CLIENT", "--client-secret", "zsecret",
         "--env-file", str(env_file), *argv],
        capsys,
    )  # fmt: skip
    return code, out + err


@pytest.mark.parametrize(
    ("argv", "server"),
    [
        (["--dc", "eu"], "https://accounts.zoho.eu"),
        (["--accounts-url", "https://accounts.zoho.com.au/"], "https://accounts.zoho.com.au"),
        ([], "https://accounts.zoho.com"),
    ],
)
def test_zoho_grant_code_is_exchanged_at_the_data_centre(
    env_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str], server: str
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{server}/oauth/v2/token").mock(
            return_value=httpx.Response(200, json=ZOHO_REPLY)
        )
        code, output = zoho(["--grant-code", "1000.grant.code", *argv], env_file, capsys)
    assert code == 0, output
    form = parse_qs(route.calls.last.request.content.decode())
    assert form == {
        "grant_type": ["authorization_code"],
        "client_id": ["1000.CLIENT"],
        "client_secret": ["zsecret"],
        "code": ["1000.grant.code"],
    }
    values = read_env_file(env_file)
    assert values["ZOHO_REFRESH_TOKEN"] == "1000.refresh.secret"
    assert values["ZOHO_API_DOMAIN"] == "https://www.zohoapis.eu"
    assert values["ZOHO_ACCOUNTS_URL"] == server
    assert values["HUBSPOT_ACCESS_TOKEN"] == "pat-keep-me"
    assert "1000.refresh.secret" not in output


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (httpx.Response(200, json={"error": "invalid_code"}), "refused: invalid_code"),
        (httpx.Response(200, json={"access_token": "1000.a", "api_domain": "x"}),
         "no refresh token"),
        (httpx.Response(200, json={"access_token": "1000.a", "refresh_token": "1000.r"}),
         "no api_domain"),
    ],
)  # fmt: skip
def test_zoho_refusals_are_exit_2_and_write_nothing(
    env_file: Path, capsys: pytest.CaptureFixture[str], reply: httpx.Response, message: str
) -> None:
    with respx.mock() as mock:
        mock.post("https://accounts.zoho.com/oauth/v2/token").mock(return_value=reply)
        code, output = zoho(["--grant-code", "1000.used"], env_file, capsys)
    assert code == 2
    assert message in output
    assert env_file.read_text(encoding="utf-8") == EXISTING


@pytest.mark.parametrize(
    "argv",
    [["--dc", "mars"], ["--dc", "eu", "--accounts-url", "https://accounts.zoho.eu"]],
)
def test_zoho_bad_options_are_exit_2(
    env_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with respx.mock(assert_all_called=False):
        code, _ = zoho(["--grant-code", "1000.code", *argv], env_file, capsys)
    assert code == 2
