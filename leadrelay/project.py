"""The starter project ``leadrelay init DIR`` writes (DESIGN §11).

It holds a HubSpot, a Salesforce and a Zoho CRM connection, a two-way flow from HubSpot to each
CRM (delete the connection and the flow of a CRM you do not use), one web form with its
mapping, the capture service settings and the handoff defaults of the lead-handoff SOP
(DESIGN §12). Every secret is a ``${VAR}`` reference; ``.env.example`` lists every variable. The
variable names are the ones ``leadrelay sandbox --env-file .env`` writes, so the starter project
runs against the sandbox once its ``.env`` is in place; a form's secret is ``FORM_<NAME>_SECRET``,
as ``leadrelay forms add`` names it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FORM_NAME", "STARTER_ENV_VARS", "write_starter_project"]

#: The name of the starter project's web form.
FORM_NAME = "pricing-demo"

_TOML = """\
# leadrelay project configuration.
# ${VAR} is read from the environment first, then from .env next to this file;
# ${VAR:-default} falls back to the default; $$ is a literal $.
# Secrets belong in .env (see .env.example), never in this file.

[state]
# Ledger, cursors and dead letters. A relative SQLite path is resolved against this folder;
# use postgresql://USER:PASSWORD@HOST/DB when several workers share the state.
url = "sqlite:///leadrelay.db"

[connections.hubspot]
kind = "hubspot"
auth = "private_app"                      # or "oauth": client_id, client_secret, refresh_token
access_token = "${HUBSPOT_ACCESS_TOKEN}"
base_url = "${HUBSPOT_BASE_URL:-https://api.hubapi.com}"
ca_bundle = "${LEADRELAY_CA_BUNDLE:-}"    # only for a private CA (the sandbox has one)

[connections.salesforce]
kind = "salesforce"
# `leadrelay connect salesforce` writes SALESFORCE_REFRESH_TOKEN (docs/connect-salesforce.md);
# or "jwt" / "client_credentials"; "password" (username, password) only for old set-ups
auth = "refresh_token"
login_url = "${SALESFORCE_LOGIN_URL:-https://login.salesforce.com}"
instance_url = "${SALESFORCE_INSTANCE_URL:-}"
consumer_key = "${SALESFORCE_CONSUMER_KEY}"
consumer_secret = "${SALESFORCE_CONSUMER_SECRET}"
refresh_token = "${SALESFORCE_REFRESH_TOKEN}"
api_version = "59.0"
ca_bundle = "${LEADRELAY_CA_BUNDLE:-}"

[connections.zoho]
kind = "zoho"
# Your data centre's accounts server: accounts.zoho.com (US), .eu, .in, .com.au, .jp,
# accounts.zohocloud.ca; the API domain comes with the token unless you set it.
accounts_url = "${ZOHO_ACCOUNTS_URL:-https://accounts.zoho.com}"
api_domain = "${ZOHO_API_DOMAIN:-}"
client_id = "${ZOHO_CLIENT_ID}"
client_secret = "${ZOHO_CLIENT_SECRET}"
refresh_token = "${ZOHO_REFRESH_TOKEN}"
ca_bundle = "${LEADRELAY_CA_BUNDLE:-}"

[[flows]]
name = "hubspot-salesforce"
source = "hubspot"
destination = "salesforce"
two_way = true                            # sales' status, owner and rejection reason come back
schedule = "*/5 * * * *"                  # used by `leadrelay serve`; cron runs `leadrelay sync`
# Per-field overrides of the default rules (source_wins, destination_wins,
# prefer_destination_unless_blank, two_way, none):
# field_rules = { phone = "prefer_destination_unless_blank" }

[[flows]]
name = "hubspot-zoho"
source = "hubspot"
destination = "zoho"
two_way = true
schedule = "*/5 * * * *"

[forms.pricing-demo]
source = "webform"
destination = "hubspot"
mapping = "mappings/forms/pricing-demo.toml"
secret = "${FORM_PRICING_DEMO_SECRET}"    # sent by your site's form handler
honeypot = "website_url"                  # hidden field; bots fill it, people do not
default_utm = { utm_source = "website", utm_medium = "form" }

[capture]
host = "127.0.0.1"
port = 8080
# public_url = "https://leads.example.com"  # printed as the endpoint base URL

# Handoff rules (lead-handoff SOP defaults). Validated by the handoff rules when they load.
[scoring]
mql_threshold = 60

[scoring.weights]
fit = 40
intent = 40
engagement = 20

[routing]
fallback_queue = "Unassigned Leads"

[sla]
hot_hours = 1          # hot leads: first action within 1 hour
mql_hours = 24         # MQLs: accepted or rejected within 24 hours
unassigned_hours = 12  # leads without an owner are flagged after 12 hours
"""

#: Every variable the starter ``leadrelay.toml`` references, with its example value.
STARTER_ENV_VARS: dict[str, str] = {
    "HUBSPOT_ACCESS_TOKEN": "",
    "HUBSPOT_BASE_URL": "https://api.hubapi.com",
    "LEADRELAY_CA_BUNDLE": "",
    "SALESFORCE_LOGIN_URL": "https://login.salesforce.com",
    "SALESFORCE_INSTANCE_URL": "",
    "SALESFORCE_CONSUMER_KEY": "",
    "SALESFORCE_CONSUMER_SECRET": "",
    "SALESFORCE_REFRESH_TOKEN": "",
    "ZOHO_ACCOUNTS_URL": "https://accounts.zoho.com",
    "ZOHO_API_DOMAIN": "",
    "ZOHO_CLIENT_ID": "",
    "ZOHO_CLIENT_SECRET": "",
    "ZOHO_REFRESH_TOKEN": "",
    "FORM_PRICING_DEMO_SECRET": "",
}

_ENV_COMMENTS: dict[str, str] = {
    "HUBSPOT_ACCESS_TOKEN": "HubSpot private app token (pat-...)",
    "LEADRELAY_CA_BUNDLE": "CA file for a private CA; leave empty for public APIs",
    "SALESFORCE_INSTANCE_URL": "optional: the token reply names it",
    "SALESFORCE_CONSUMER_KEY": "connected app consumer key and secret",
    "SALESFORCE_REFRESH_TOKEN": "written by `leadrelay connect salesforce`",
    "ZOHO_ACCOUNTS_URL": "your data centre's accounts server (.com, .eu, .in, .com.au, .jp …)",
    "ZOHO_API_DOMAIN": "optional: the token reply names it",
    "ZOHO_CLIENT_ID": "Zoho API console client (self client): id, secret, refresh token",
    "FORM_PRICING_DEMO_SECRET": "any long random string; your form handler sends it",
}


def _env_example() -> str:
    lines = [
        "# Copy to .env and fill in. .env holds secrets: never commit it.",
        "# Variables set in the environment win over this file.",
    ]
    for name, value in STARTER_ENV_VARS.items():
        comment = _ENV_COMMENTS.get(name)
        if comment:
            lines.append(f"# {comment}")
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


_FORM_MAPPING = """\
# Mapping of the pricing-demo web form: Lead field = "form field name".
# Lead fields are those of leadrelay.model.Lead; a form field not listed here is ignored.
# utm_* parameters, click ids (gclid, fbclid, li_fat_id, msclkid), page_url and referrer are
# read by the tagging step without a mapping.

[fields]
email = "email"
first_name = "first_name"
last_name = "last_name"
company = "company"
job_title = "job_title"
phone = "phone"
country = "country"
email_opt_in = "consent"
"""

_MAPPINGS_README = """\
# Mappings

- `forms/<form>.toml` maps a form's field names to Lead fields, one file per `[forms.<form>]`.
- A file named after a connector kind (`hubspot.toml`, `salesforce.toml`, `zoho.toml`) overrides
  or extends the mapping built into leadrelay for that system: fields, picklist value maps and
  named transforms. Only what you list changes; the rest of the built-in mapping stays.
"""

_GITIGNORE_ENTRIES = (
    ".env",
    "leadrelay.db",
    "leadrelay.db-wal",
    "leadrelay.db-shm",
    "leadrelay.db-writer",
)


def _starter_files() -> dict[Path, str]:
    return {
        Path("leadrelay.toml"): _TOML,
        Path(".env.example"): _env_example(),
        Path("mappings") / "README.md": _MAPPINGS_README,
        Path("mappings") / "forms" / f"{FORM_NAME}.toml": _FORM_MAPPING,
    }


def write_starter_project(dir: Path, *, force: bool = False) -> list[Path]:
    """Write a starter project into ``dir`` (created if needed) and return the files written.

    ``.gitignore`` gains the ``.env`` and database entries it lacks; any other file that
    already exists is left alone and FileExistsError names it, before anything is written,
    unless ``force`` is true.
    """
    files = {dir / relative: text for relative, text in _starter_files().items()}
    if not force:
        existing = [path for path in files if path.exists()]
        if existing:
            names = ", ".join(str(path) for path in existing)
            raise FileExistsError(f"{names}: already exists (use --force to overwrite)")
    written: list[Path] = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    gitignore = dir / ".gitignore"
    current = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    present = {line.strip() for line in current.splitlines()}
    missing = [entry for entry in _GITIGNORE_ENTRIES if entry not in present]
    if missing:
        prefix = "" if not current or current.endswith("\n") else "\n"
        gitignore.write_text(current + prefix + "\n".join(missing) + "\n", encoding="utf-8")
        written.append(gitignore)
    return written
