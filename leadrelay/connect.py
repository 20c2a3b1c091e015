"""``leadrelay connect``: obtain a CRM's refresh token once and keep it in the project's ``.env``.

- ``leadrelay connect salesforce`` runs the OAuth 2.0 web-server flow with PKCE (RFC 7636, S256)
  on a loopback redirect: a one-shot HTTP server on ``http://127.0.0.1:PORT/callback`` receives
  the authorization code (its ``state`` checked), the code is exchanged with the verifier, and
  ``SALESFORCE_REFRESH_TOKEN`` and ``SALESFORCE_INSTANCE_URL`` are written to ``.env``.
- ``leadrelay connect zoho --grant-code CODE`` exchanges a self-client grant code at the data
  centre's accounts server and writes ``ZOHO_REFRESH_TOKEN``, ``ZOHO_API_DOMAIN`` (the data
  centre's API root, from the token reply) and ``ZOHO_ACCOUNTS_URL``.

Other lines of ``.env`` are kept as they are (python-dotenv's ``set_key``). No token, code or
verifier is ever printed. Exit 0 when the token is written, 2 when it cannot be obtained.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import os
import secrets
import ssl
import threading
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import typer
from dotenv import set_key

from leadrelay.clikit import CliError
from leadrelay.connectors.errors import register_secret

__all__ = [
    "SALESFORCE_LOGIN_URL",
    "ZOHO_ACCOUNTS",
    "ConnectError",
    "LoopbackReceiver",
    "Pkce",
    "connect_app",
    "connect_salesforce",
    "connect_zoho",
    "write_env",
]

SALESFORCE_LOGIN_URL = "https://login.salesforce.com"
#: The port of the default redirect ``http://127.0.0.1:1717/callback`` (the connected app must
#: list the exact callback URL).
DEFAULT_PORT = 1717
CALLBACK_PATH = "/callback"
#: Zoho's data centres and their accounts servers (Zoho CRM "Multi DC" docs).
ZOHO_ACCOUNTS = {
    "com": "https://accounts.zoho.com",
    "eu": "https://accounts.zoho.eu",
    "in": "https://accounts.zoho.in",
    "com.au": "https://accounts.zoho.com.au",
    "jp": "https://accounts.zoho.jp",
    "uk": "https://accounts.zoho.uk",
    "ca": "https://accounts.zohocloud.ca",
    "sa": "https://accounts.zoho.sa",
    "com.cn": "https://accounts.zoho.com.cn",
}


class ConnectError(Exception):
    """The token could not be obtained (exit 2); the message names why, without secrets."""


@dataclass(frozen=True)
class Pkce:
    """A PKCE pair: the secret ``verifier`` and its S256 ``challenge``."""

    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        """A fresh pair; the verifier is 86 URL-safe characters (RFC 7636 allows 43-128)."""
        verifier = secrets.token_urlsafe(64)
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


class LoopbackReceiver:
    """A one-shot HTTP server on ``127.0.0.1`` that takes the authorization redirect.

    It answers the first request to :data:`CALLBACK_PATH` with a short page, keeps its query
    parameters, and stops; anything else gets a 404.
    """

    def __init__(self, port: int = DEFAULT_PORT) -> None:
        self.params: dict[str, str] | None = None
        self._done = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != CALLBACK_PATH or receiver._done.is_set():
                    self.send_error(404)
                    return
                query = parse_qs(parts.query, keep_blank_values=True)
                receiver.params = {key: values[0] for key, values in query.items()}
                failed = "error" in receiver.params
                page = (
                    "leadrelay could not connect: the authorization was refused."
                    if failed
                    else "leadrelay received the authorization. You can close this window."
                )
                body = f"<!doctype html><title>leadrelay</title><p>{page}</p>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                receiver._done.set()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the redirect's query holds the one-time code."""

        try:
            self._server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise ConnectError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
        self.port = int(self._server.server_address[1])
        self.redirect_uri = f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"
        self._thread = threading.Thread(target=self._serve, name="connect-callback", daemon=True)

    def _serve(self) -> None:
        while not self._done.is_set():
            self._server.handle_request()

    def __enter__(self) -> LoopbackReceiver:
        self._server.timeout = 0.2
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=2)
        self._server.server_close()

    def wait(self, timeout_s: float) -> dict[str, str]:
        """The redirect's query parameters; :class:`ConnectError` after ``timeout_s``."""
        if not self._done.wait(timeout_s) or self.params is None:
            raise ConnectError(
                f"no authorization arrived at {self.redirect_uri} in {timeout_s:g} s"
            )
        return self.params


def write_env(path: Path, values: Mapping[str, str]) -> None:
    """Set ``values`` in the dotenv file ``path`` (created, owner-only, when missing), keeping
    every other line as it is."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
    for key, value in values.items():
        set_key(path, key, value, quote_mode="never")


def _client(ca_bundle: str | None, timeout_s: float) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if ca_bundle:
        verify = ssl.create_default_context(cafile=ca_bundle)
    return httpx.Client(verify=verify, timeout=timeout_s, trust_env=False)


def _exchange(
    url: str, form: Mapping[str, str], *, what: str, no_refresh: str, ca_bundle: str | None
) -> tuple[dict[str, Any], str]:
    """POST a code exchange to ``url``; the JSON reply and its refresh token.

    Raises :class:`ConnectError` with the server's own error (``no_refresh`` when the reply
    holds no refresh token).
    """
    with _client(ca_bundle, 30.0) as http:
        try:
            response = http.post(url, data=dict(form))
        except httpx.HTTPError as exc:
            raise ConnectError(f"cannot reach {url}: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ConnectError(f"{what}: HTTP {response.status_code}, not a JSON token reply")
    if "error" in body or response.status_code >= 400:
        error = body.get("error") or f"HTTP {response.status_code}"
        detail = body.get("error_description")
        raise ConnectError(f"{what} was refused: {error}" + (f" ({detail})" if detail else ""))
    refresh = body.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise ConnectError(no_refresh)
    register_secret(refresh)
    return body, refresh


def connect_salesforce(
    *,
    client_id: str,
    client_secret: str | None,
    login_url: str,
    env_file: Path,
    port: int = DEFAULT_PORT,
    ca_bundle: str | None = None,
    timeout_s: float = 300.0,
    browse: Callable[[str], object] | None = None,
    show: Callable[[str], None] = print,
) -> dict[str, str]:
    """The web-server flow with PKCE; returns what was written to ``env_file`` (no secrets).

    ``browse`` is handed the authorize URL (a browser, or a test's client); the URL is shown
    with ``show`` in any case.
    """
    pkce = Pkce.new()
    state = secrets.token_urlsafe(24)
    base = login_url.rstrip("/")
    with LoopbackReceiver(port) as receiver:
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": receiver.redirect_uri,
            "scope": "api refresh_token",
            "state": state,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
        }
        url = f"{base}/services/oauth2/authorize?{urlencode(query)}"
        show(f"Open this URL to let leadrelay use your Salesforce org:\n{url}")
        if browse is not None:
            browse(url)
        params = receiver.wait(timeout_s)
    if "error" in params:
        detail = params.get("error_description")
        raise ConnectError(
            f"Salesforce refused the authorization: {params['error']}"
            + (f" ({detail})" if detail else "")
        )
    if not hmac.compare_digest(params.get("state", ""), state):
        raise ConnectError("the redirect's state does not match this request's; nothing written")
    code = params.get("code")
    if not code:
        raise ConnectError("the redirect carried no authorization code")
    register_secret(code, pkce.verifier, client_secret)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client_id,
        "redirect_uri": receiver.redirect_uri,
        "code_verifier": pkce.verifier,
    }
    if client_secret:
        form["client_secret"] = client_secret
    body, refresh = _exchange(
        f"{base}/services/oauth2/token",
        form,
        what="the Salesforce code exchange",
        no_refresh="Salesforce issued no refresh token: add the 'refresh_token, offline_access' "
        "scope to the connected app",
        ca_bundle=ca_bundle,
    )
    instance = body.get("instance_url")
    values = {"SALESFORCE_REFRESH_TOKEN": refresh}
    if isinstance(instance, str) and instance:
        values["SALESFORCE_INSTANCE_URL"] = instance
    write_env(env_file, values)
    return {k: ("(secret)" if k.endswith("TOKEN") else v) for k, v in values.items()}


def connect_zoho(
    *,
    client_id: str,
    client_secret: str,
    grant_code: str,
    accounts_url: str,
    env_file: Path,
    ca_bundle: str | None = None,
) -> dict[str, str]:
    """Exchange a self-client grant code; returns what was written (no secrets).

    Zoho answers token errors with HTTP 200 and an ``error`` key (``invalid_code`` for a code
    that is expired, used, or from another data centre).
    """
    register_secret(grant_code, client_secret)
    base = accounts_url.rstrip("/")
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "client_secret": client_secret,
        "code": grant_code,
    }
    body, refresh = _exchange(
        f"{base}/oauth/v2/token",
        form,
        what=f"the Zoho grant-code exchange at {base}",
        no_refresh="Zoho issued no refresh token: generate the grant code with offline access "
        "(a self-client grant code always has it)",
        ca_bundle=ca_bundle,
    )
    api_domain = body.get("api_domain")
    if not isinstance(api_domain, str) or not api_domain:
        raise ConnectError("Zoho's token reply named no api_domain (the data centre's API root)")
    values = {
        "ZOHO_REFRESH_TOKEN": refresh,
        "ZOHO_API_DOMAIN": api_domain,
        "ZOHO_ACCOUNTS_URL": base,
    }
    write_env(env_file, values)
    return {k: ("(secret)" if k.endswith("TOKEN") else v) for k, v in values.items()}


# --- the commands ---------------------------------------------------------------------------

connect_app = typer.Typer(
    help="Connect a CRM once: obtain its refresh token and write it to the project's .env.",
    no_args_is_help=True,
)


def _setting(option: str | None, name: str, env: Mapping[str, str]) -> str | None:
    """An option's value, else ``name`` from the environment, else from the env file."""
    return option or os.environ.get(name) or env.get(name) or None


def _env_values(env_file: Path) -> dict[str, str]:
    if not env_file.is_file():
        return {}
    from leadrelay.config import ConfigError, read_env_file

    try:
        return read_env_file(env_file)
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from exc


def _report(written: Mapping[str, str], env_file: Path) -> None:
    typer.echo(f"wrote {', '.join(written)} to {env_file}")


EnvFileOption = Annotated[
    Path, typer.Option("--env-file", help="The dotenv file to write (other lines are kept).")
]
CaOption = Annotated[
    str | None,
    typer.Option(
        "--ca-bundle", help="CA file to trust (default: LEADRELAY_CA_BUNDLE, else the system's)."
    ),
]


@connect_app.command("salesforce")
def salesforce_command(
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id", help="The connected app's consumer key (SALESFORCE_CONSUMER_KEY)."
        ),
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            "--client-secret",
            help="The consumer secret (SALESFORCE_CONSUMER_SECRET); optional with PKCE when "
            "the app does not require it.",
        ),
    ] = None,
    login_url: Annotated[
        str | None,
        typer.Option(
            "--login-url",
            help="login.salesforce.com, test.salesforce.com or the org's My Domain "
            "(SALESFORCE_LOGIN_URL).",
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            "--port", help="Loopback port of the redirect http://127.0.0.1:PORT/callback."
        ),
    ] = DEFAULT_PORT,
    open_browser: Annotated[
        bool, typer.Option("--open-browser", help="Open the authorize URL in a browser.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the authorization.")
    ] = 300.0,
    env_file: EnvFileOption = Path(".env"),
    ca_bundle: CaOption = None,
) -> None:
    """Run Salesforce's web-server flow with PKCE and write SALESFORCE_REFRESH_TOKEN."""
    env = _env_values(env_file)
    key = _setting(client_id, "SALESFORCE_CONSUMER_KEY", env)
    if key is None:
        raise CliError(
            "connect salesforce needs the connected app's consumer key: --client-id or "
            "SALESFORCE_CONSUMER_KEY",
            exit_code=2,
        )

    def browse(url: str) -> None:
        if not webbrowser.open(url):
            typer.echo("No browser is available here: open the URL above yourself.")

    try:
        written = connect_salesforce(
            client_id=key,
            client_secret=_setting(client_secret, "SALESFORCE_CONSUMER_SECRET", env),
            login_url=_setting(login_url, "SALESFORCE_LOGIN_URL", env) or SALESFORCE_LOGIN_URL,
            env_file=env_file,
            port=port,
            ca_bundle=_setting(ca_bundle, "LEADRELAY_CA_BUNDLE", env),
            timeout_s=timeout,
            browse=browse if open_browser else None,
            show=typer.echo,
        )
    except ConnectError as exc:
        raise CliError(str(exc), exit_code=2) from None
    _report(written, env_file)


@connect_app.command("zoho")
def zoho_command(
    grant_code: Annotated[
        str,
        typer.Option(
            "--grant-code",
            help="A Zoho self-client grant code (API console > Self Client > Generate Code).",
        ),
    ],
    dc: Annotated[
        str | None,
        typer.Option("--dc", help=f"The data centre: {', '.join(ZOHO_ACCOUNTS)} (default com)."),
    ] = None,
    accounts_url: Annotated[
        str | None,
        typer.Option("--accounts-url", help="The accounts server itself (ZOHO_ACCOUNTS_URL)."),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="The self-client's id (ZOHO_CLIENT_ID).")
    ] = None,
    client_secret: Annotated[
        str | None,
        typer.Option("--client-secret", help="The self-client's secret (ZOHO_CLIENT_SECRET)."),
    ] = None,
    env_file: EnvFileOption = Path(".env"),
    ca_bundle: CaOption = None,
) -> None:
    """Exchange a Zoho self-client grant code and write ZOHO_REFRESH_TOKEN and ZOHO_API_DOMAIN."""
    env = _env_values(env_file)
    if dc is not None and accounts_url is not None:
        raise CliError("give --dc or --accounts-url, not both", exit_code=2)
    if dc is not None and dc not in ZOHO_ACCOUNTS:
        raise CliError(
            f"--dc {dc!r} is not a Zoho data centre; one of: {', '.join(ZOHO_ACCOUNTS)}",
            exit_code=2,
        )
    server = ZOHO_ACCOUNTS[dc] if dc is not None else None
    server = server or _setting(accounts_url, "ZOHO_ACCOUNTS_URL", env) or ZOHO_ACCOUNTS["com"]
    ident = _setting(client_id, "ZOHO_CLIENT_ID", env)
    secret = _setting(client_secret, "ZOHO_CLIENT_SECRET", env)
    missing = [
        name
        for name, value in (
            ("--client-id / ZOHO_CLIENT_ID", ident),
            ("--client-secret / ZOHO_CLIENT_SECRET", secret),
        )
        if value is None
    ]
    if missing:
        raise CliError(f"connect zoho needs {' and '.join(missing)}", exit_code=2)
    assert ident is not None and secret is not None
    try:
        written = connect_zoho(
            client_id=ident,
            client_secret=secret,
            grant_code=grant_code,
            accounts_url=server,
            env_file=env_file,
            ca_bundle=_setting(ca_bundle, "LEADRELAY_CA_BUNDLE", env),
        )
    except ConnectError as exc:
        raise CliError(str(exc), exit_code=2) from None
    _report(written, env_file)
