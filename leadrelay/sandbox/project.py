"""The project ``leadrelay sandbox --init DIR`` writes: every connection wired to the sandbox.

The sandbox's settings go into ``DIR/.env`` (the ``KEY=value`` lines of DESIGN §10); the
``leadrelay.toml`` refers to them as ``${VAR}`` exactly as a real project refers to its secrets,
so the same file works against real accounts once ``.env`` holds real values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

_TOML = """\
# A leadrelay project wired to the local sandbox (`leadrelay sandbox --init`).
# Every ${VAR} comes from .env, which the sandbox wrote; point it at real accounts to go live.

[state]
url = "sqlite:///leadrelay.db"

[connections.hubspot]
kind = "hubspot"
auth = "private_app"
access_token = "${HUBSPOT_ACCESS_TOKEN}"
base_url = "${HUBSPOT_BASE_URL}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"

[connections.salesforce]
kind = "salesforce"
auth = "password"
# The sandbox serves the OAuth token endpoint on the instance itself.
login_url = "${SALESFORCE_INSTANCE_URL}"
instance_url = "${SALESFORCE_INSTANCE_URL}"
username = "${SALESFORCE_USERNAME}"
password = "${SALESFORCE_PASSWORD}"
consumer_key = "${SALESFORCE_CONSUMER_KEY}"
consumer_secret = "${SALESFORCE_CONSUMER_SECRET}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"

[connections.zoho]
kind = "zoho"
accounts_url = "${ZOHO_ACCOUNTS_URL}"
api_domain = "${ZOHO_API_DOMAIN}"
client_id = "${ZOHO_CLIENT_ID}"
client_secret = "${ZOHO_CLIENT_SECRET}"
refresh_token = "${ZOHO_REFRESH_TOKEN}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"

# Two-way flows: marketing (HubSpot) is the source, the CRM the destination. Attribution,
# score and consent go to sales; stage after SAL, owner and rejection reason come back.
[[flows]]
name = "hubspot-salesforce"
source = "hubspot"
destination = "salesforce"
two_way = true
schedule = "*/5 * * * *"

[[flows]]
name = "hubspot-zoho"
source = "hubspot"
destination = "zoho"
two_way = true
schedule = "*/5 * * * *"

[capture]
host = "127.0.0.1"
port = 8080
"""

_MAPPINGS_README = """\
Project mapping overrides. A file named after a connector kind (hubspot.toml, salesforce.toml,
zoho.toml) is merged field by field over leadrelay's default mapping for that kind; forms keep
their own mappings under forms/.
"""


def write_sandbox_project(directory: Path, env: Mapping[str, str]) -> list[Path]:
    """Write ``leadrelay.toml``, ``.env`` and ``mappings/`` into ``directory``.

    ``env`` is the running sandbox's :meth:`SandboxServer.env`. An existing ``.env`` is
    replaced (it belongs to the previous sandbox run); an existing ``leadrelay.toml`` is kept,
    so a project the user edited is never overwritten.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    toml_path = directory / "leadrelay.toml"
    if not toml_path.exists():
        toml_path.write_text(_TOML, encoding="utf-8")
        written.append(toml_path)
    env_path = directory / ".env"
    env_path.write_text("".join(f"{key}={value}\n" for key, value in env.items()), "utf-8")
    written.append(env_path)
    mappings = directory / "mappings"
    (mappings / "forms").mkdir(parents=True, exist_ok=True)
    readme = mappings / "README.md"
    if not readme.exists():
        readme.write_text(_MAPPINGS_README, encoding="utf-8")
        written.append(readme)
    return written
