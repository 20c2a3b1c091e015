"""The project ``leadrelay sandbox --init DIR`` writes: every connection wired to the sandbox.

The sandbox's settings go into ``DIR/.env`` (the ``KEY=value`` lines of DESIGN §10); the
``leadrelay.toml`` refers to them as ``${VAR}`` exactly as a real project refers to its secrets,
so the same file works against real accounts once ``.env`` holds real values.
"""

from __future__ import annotations

import secrets
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
portal_id = "${HUBSPOT_PORTAL_ID}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"

[connections.salesforce]
kind = "salesforce"
# The refresh token of the web-server flow (`leadrelay connect salesforce` writes it to .env).
auth = "refresh_token"
# The sandbox serves the OAuth token endpoint on the instance itself.
login_url = "${SALESFORCE_INSTANCE_URL}"
consumer_key = "${SALESFORCE_CONSUMER_KEY}"
consumer_secret = "${SALESFORCE_CONSUMER_SECRET}"
refresh_token = "${SALESFORCE_REFRESH_TOKEN}"
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

# Handoff rules (the lead-handoff SOP): fit 40 / intent 40 / engagement 20, MQL at 60.
[scoring]
mql_threshold = 60

# Every lead gets an owner from the destination CRM's own users: the existing account's
# owner, enterprise accounts to the sales managers, everyone else round robin. Owners are
# named by e-mail; a name the destination does not know is skipped, so one rule serves the
# sandbox's Salesforce (@leadrelay.sandbox) and Zoho (@sandbox.example) users.
[routing]
fallback_queue = "Unassigned Leads"

[[routing.rules]]
kind = "account_owner"

[[routing.rules]]
kind = "segment"
name = "enterprise"
employees_min = 1000
owners = ["dana.kowalski@leadrelay.sandbox", "dana.kowalski@sandbox.example"]

[[routing.rules]]
kind = "round_robin"
name = "inbound"

# The API users own no leads by round robin; Ana takes two turns in three.
[routing.owners."integration@leadrelay.sandbox"]
weight = 0

[routing.owners."ada.okafor@sandbox.example"]
weight = 0

[routing.owners."ana.silva@leadrelay.sandbox"]
weight = 2

[sla]
hot_hours = 1
mql_hours = 24
unassigned_hours = 12
"""

_DEMO_FORMS = """
# Demo forms, taken in by `leadrelay serve` and delivered to the CRMs. Their secrets are in .env.
# demo-webform takes Lead field names (email, first_name, last_name, company, phone, job_title …)
# plus utm_*, click ids (gclid, fbclid …), page_url and referrer: post it from curl with the
# X-Leadrelay-Secret header, or from a page served at an allowed origin.
[forms.demo-webform]
source = "webform"
destination = "hubspot"
mapping = "mappings/forms/demo-webform.toml"
secret = "${FORM_DEMO_WEBFORM_SECRET}"
allowed_origins = ["http://127.0.0.1:8000", "http://localhost:8000"]

# Meta lead ads: /hooks/meta, signed with META_APP_SECRET; answers read from the sandbox's
# Graph API (create a lead with POST /__sandbox__/leads/meta, then send the notification).
[forms.demo-meta]
source = "meta_lead_ads"
destination = "hubspot"
mapping = "mappings/forms/demo-meta.toml"
app_secret = "${META_APP_SECRET}"
verify_token = "${META_VERIFY_TOKEN}"
access_token = "${META_ACCESS_TOKEN}"
graph_url = "${META_GRAPH_URL}"
ca_bundle = "${LEADRELAY_CA_BUNDLE}"
# capture takes leads of these forms only; reconcile reads their lead lists
form_ids = ["4242"]
default_utm = { utm_source = "facebook", utm_medium = "paid_social", utm_campaign = "demo-meta" }

# Google Ads lead form webhook: /hooks/google-ads with GOOGLE_ADS_KEY as google_key.
[forms.demo-google]
source = "google_ads_lead_form"
destination = "zoho"
mapping = "mappings/forms/demo-google.toml"
google_key = "${GOOGLE_ADS_KEY}"
default_utm = { utm_source = "google", utm_medium = "cpc", utm_campaign = "demo-google" }
"""

#: The demo forms' secrets in .env: new random values, kept across sandbox runs. A web form's
#: secret is FORM_<NAME>_SECRET, as ``leadrelay forms add`` names it.
DEMO_SECRETS: tuple[str, ...] = (
    "FORM_DEMO_WEBFORM_SECRET",
    "META_APP_SECRET",
    "META_VERIFY_TOKEN",
    "GOOGLE_ADS_KEY",
    "LINKEDIN_CLIENT_SECRET",
)

#: The demo forms and their sources (each gets a starter mapping in mappings/forms/).
DEMO_FORMS: dict[str, str] = {
    "demo-webform": "webform",
    "demo-meta": "meta_lead_ads",
    "demo-google": "google_ads_lead_form",
}

_MAPPINGS_README = """\
Project mapping overrides. A file named after a connector kind (hubspot.toml, salesforce.toml,
zoho.toml) is merged field by field over leadrelay's default mapping for that kind; forms keep
their own mappings under forms/.
"""


def write_sandbox_project(directory: Path, env: Mapping[str, str]) -> list[Path]:
    """Write ``leadrelay.toml``, ``.env`` and ``mappings/`` into ``directory``.

    ``env`` is the running sandbox's :meth:`SandboxServer.env`. In an existing ``.env`` the
    sandbox's variables are replaced (they belong to the previous sandbox run) and every other
    line is kept (a form's secret ``forms add`` wrote, a variable the user added); an existing
    ``leadrelay.toml`` is kept, so a project the user edited is never overwritten.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    env = dict(env)
    # .env is read from wherever the project runs: a relative CA path would break there.
    if env.get("LEADRELAY_CA_BUNDLE"):
        env["LEADRELAY_CA_BUNDLE"] = str(Path(env["LEADRELAY_CA_BUNDLE"]).resolve())
    toml_path = directory / "leadrelay.toml"
    if not toml_path.exists():
        toml_path.write_text(_TOML + _DEMO_FORMS, encoding="utf-8")
        written.append(toml_path)
    env_path = directory / ".env"
    values = {**_previous_env(env_path), **env}
    values.update(_demo_secrets(env_path))
    kept_toml = toml_path.read_text(encoding="utf-8")
    for old, new in _RENAMED_SECRETS.items():
        if f"${{{old}}}" in kept_toml:  # a project written before the rename still names it
            values[old] = values[new]
    env_path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), "utf-8")
    env_path.chmod(0o600)
    written.append(env_path)
    mappings = directory / "mappings"
    (mappings / "forms").mkdir(parents=True, exist_ok=True)
    readme = mappings / "README.md"
    if not readme.exists():
        readme.write_text(_MAPPINGS_README, encoding="utf-8")
        written.append(readme)
    from leadrelay.capture.formsconfig import starter_mapping

    for form, source in DEMO_FORMS.items():
        form_mapping = mappings / "forms" / f"{form}.toml"
        if not form_mapping.exists():
            form_mapping.write_text(starter_mapping(source), encoding="utf-8")
            written.append(form_mapping)
    return written


def set_aside_state(directory: Path) -> Path | None:
    """Move the state database of a project's previous sandbox run aside, and say where.

    Every sandbox starts empty and hands out the same record ids again, so links, cursors and
    fingerprints kept from an earlier run would point at records that are not there (or at
    other people's): a sync would skip leads it takes for known. The SQLite file the project's
    ``[state] url`` names (with its ``-wal`` / ``-shm`` companions) becomes
    ``<name>.before-<UTC time>``; nothing is deleted. None when there was none (or the state is
    not a SQLite file of this project: a PostgreSQL database is left alone).
    """
    from pydantic import ValidationError

    from leadrelay.config import StateConfig

    toml_path = directory / "leadrelay.toml"
    try:
        with toml_path.open("rb") as handle:
            table = tomllib.load(handle).get("state") or {}
        # The project's own reading of [state] url: relative to the project, ~ expanded.
        state = StateConfig.model_validate(table, context={"folder": directory})
    except (OSError, tomllib.TOMLDecodeError, ValidationError):
        return None
    if not state.is_sqlite or "${" in state.url:
        return None
    database = Path(state.url.partition(":///")[2].partition("?")[0])
    if not database.is_file():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = database.with_name(f"{database.name}.before-{stamp}")
    for suffix in ("-wal", "-shm"):
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            companion.rename(kept.with_name(kept.name + suffix))
    database.rename(kept)
    return kept


def _previous_env(env_path: Path) -> dict[str, str]:
    """The variables of an existing ``.env`` (none when it is missing or unreadable)."""
    if not env_path.is_file():
        return {}
    from leadrelay.config import ConfigError, read_env_file

    try:
        return read_env_file(env_path)
    except ConfigError:
        return {}


def _demo_secrets(env_path: Path) -> dict[str, str]:
    """The demo forms' secrets: those of the previous ``.env`` (so a platform's test tool
    set up with them keeps working), new random ones for the others."""
    previous = _previous_env(env_path)
    for old, new in _RENAMED_SECRETS.items():
        previous.setdefault(new, previous.get(old, ""))
    return {name: previous.get(name) or secrets.token_urlsafe(24) for name in DEMO_SECRETS}


#: Secrets an older sandbox project named otherwise: old name -> new name.
_RENAMED_SECRETS = {"DEMO_WEBFORM_SECRET": "FORM_DEMO_WEBFORM_SECRET"}

_SEED_PEOPLE = (
    ("Maya", "Lindqvist", "Northwind Traders", "northwind.example", "VP Marketing"),
    ("Tomás", "Ferreira", "Contoso Retail", "contoso.example", "Head of Sales Operations"),
    ("Aiko", "Tanaka", "Fabrikam Logistics", "fabrikam.example", "Operations Manager"),
    ("Kwame", "Mensah", "Tailspin Toys", "tailspin.example", "Founder"),
    ("Léa", "Dubois", "Wide World Importers", "wideworld.example", "Procurement Lead"),
    ("Jonas", "Becker", "Adventure Works", "adventure-works.example", "CTO"),
    ("Priya", "Raman", "Litware Analytics", "litware.example", "Data Engineer"),
    ("Sofia", "Rossi", "Proseware", "proseware.example", "Marketing Coordinator"),
)
_SEED_SOURCES = (
    ("google", "cpc", "spring-search"),
    ("linkedin", "paid_social", "abm-q2"),
    ("newsletter", "email", "may-digest"),
    ("webinar", "event", "pipeline-clinic"),
)


def seed_leads(env: Mapping[str, str], count: int) -> list[str]:
    """Create ``count`` example contacts in the sandbox's HubSpot, as marketing's forms would
    have, so that a first ``leadrelay sync`` has leads to move; returns their e-mails.

    ``env`` is the running sandbox's :meth:`SandboxServer.env`. The contacts are written
    through HubSpot's batch create API with the sandbox's private-app token.
    """
    import ssl

    import httpx

    inputs: list[dict[str, Any]] = []
    for index in range(count):
        first, last, company, domain, title = _SEED_PEOPLE[index % len(_SEED_PEOPLE)]
        source, medium, campaign = _SEED_SOURCES[index % len(_SEED_SOURCES)]
        round_ = index // len(_SEED_PEOPLE)
        local = f"{first}.{last}".lower().replace("á", "a").replace("é", "e")
        email = f"{local}{round_ or ''}@{domain}"
        inputs.append(
            {
                "properties": {
                    "email": email,
                    "firstname": first,
                    "lastname": last,
                    "company": company,
                    "jobtitle": title,
                    "website": f"https://{domain}",
                    "lifecyclestage": "lead",
                    "utm_source": source,
                    "utm_medium": medium,
                    "utm_campaign": campaign,
                }
            }
        )
    created: list[str] = []
    with httpx.Client(
        base_url=env["HUBSPOT_BASE_URL"],
        headers={"Authorization": f"Bearer {env['HUBSPOT_ACCESS_TOKEN']}"},
        verify=ssl.create_default_context(cafile=env["LEADRELAY_CA_BUNDLE"]),
        trust_env=False,
        timeout=30,
    ) as client:
        for start in range(0, len(inputs), 100):  # HubSpot's batch limit
            batch = inputs[start : start + 100]
            response = client.post("/crm/v3/objects/contacts/batch/create", json={"inputs": batch})
            response.raise_for_status()
            created.extend(str(item["properties"]["email"]) for item in batch)
    return created
