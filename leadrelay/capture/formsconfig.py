"""Connecting a form: its ``[forms.NAME]`` table, a starter mapping and its secrets.

:func:`add_form` (``leadrelay forms add``) appends the table to ``leadrelay.toml`` (the file's
own text and comments are kept), writes ``mappings/forms/NAME.toml`` with the standard field
names of the source, puts new random secrets into ``.env`` (referred to as ``${VAR}``), and
re-loads the project to prove it is valid; on any failure every file is put back as it was.

Secrets leadrelay makes up (a web form's shared secret, Meta's verify token, a Google Ads lead
form key) are new per form. Secrets the ad platform issues (a Meta app secret and page token, a
LinkedIn client secret and token) are read from the variables of DESIGN §10
(``META_APP_SECRET``, ``META_ACCESS_TOKEN``, ``LINKEDIN_CLIENT_SECRET``,
``LINKEDIN_ACCESS_TOKEN``), which must be set first.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leadrelay.config import Config, ConfigError, FormSource, load_config, read_env_file
from leadrelay.mappings.engine import DEFAULTS_DIR, FORM_DEFAULTS

__all__ = [
    "ADDABLE_SOURCES",
    "AddedForm",
    "FormsConfigError",
    "add_form",
    "capture_base_url",
    "env_prefix",
    "form_endpoint",
    "starter_mapping",
]

#: The sources ``leadrelay forms add`` connects.
ADDABLE_SOURCES: tuple[str, ...] = (
    FormSource.WEBFORM.value,
    FormSource.META_LEAD_ADS.value,
    FormSource.LINKEDIN_LEAD_GEN.value,
    FormSource.GOOGLE_ADS_LEAD_FORM.value,
    FormSource.CSV.value,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

_HEADERS = {
    "webform": (
        "# Form field names → Lead fields. The fields below are read by default; add your form's\n"
        '# own names (`email = "work_email"`). utm_*, click ids (gclid, fbclid …), page_url and\n'
        "# referrer are read by the tagging step without a mapping.\n"
    ),
    "csv": (
        "# CSV column names → Lead fields. Headers spelled like Lead fields (First Name,\n"
        '# first_name) are read by default; map other columns here (`company = "Organisation"`).\n'
    ),
    "meta_lead_ads": (
        "# Meta lead form question keys (field_data names) → Lead fields. Custom questions use\n"
        '# their own keys: map them here (`"custom.budget" = "what_is_your_budget"`).\n'
    ),
    "linkedin_lead_gen": (
        "# LinkedIn answers by predefinedField (EMAIL, FIRST_NAME …) → Lead fields. Custom\n"
        "# questions are keyed by their questionId: map them here.\n"
    ),
    "google_ads_lead_form": (
        "# Google Ads lead form columns (user_column_data column_id) → Lead fields.\n"
    ),
}


class FormsConfigError(Exception):
    """The form cannot be added; the message says why (a configuration error, exit 2)."""


@dataclass(frozen=True)
class AddedForm:
    """What :func:`add_form` did.

    Attributes:
        name, source, destination: the form.
        endpoint: the URL to give the platform (None for a CSV form).
        paste: label → value to paste into the platform's settings (new secrets included: this
            is the one place they are shown).
        files: the files written or changed.
        env: the ``.env`` variables added.
    """

    name: str
    source: str
    destination: str
    endpoint: str | None
    paste: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    env: list[str] = field(default_factory=list)


def env_prefix(name: str) -> str:
    """``pricing-demo`` → ``FORM_PRICING_DEMO``: the prefix of a form's ``.env`` variables."""
    return "FORM_" + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def capture_base_url(config: Config) -> str:
    """Where the capture service is reached: ``[capture] public_url``, else its host:port."""
    if config.capture.public_url:
        return config.capture.public_url
    host = config.capture.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard is reached on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.capture.port}"


def form_endpoint(config: Config, name: str, source: str) -> str | None:
    """The endpoint URL of a form (None for sources that are not posted to)."""
    base = capture_base_url(config)
    paths = {
        "webform": f"/forms/{name}",
        "meta_lead_ads": "/hooks/meta",
        "linkedin_lead_gen": f"/hooks/linkedin?form={name}",
        "google_ads_lead_form": "/hooks/google-ads",
        "hubspot_form": "/hooks/hubspot",
    }
    path = paths.get(source)
    return base + path if path else None


def starter_mapping(source: str) -> str:
    """A form mapping file for ``source`` listing its standard field names (the defaults)."""
    default = DEFAULTS_DIR / f"{FORM_DEFAULTS[source]}.toml"
    lines = default.read_text(encoding="utf-8").splitlines()
    body = "\n".join(line for line in lines if not line.startswith("#")).strip()
    return _HEADERS.get(source, "") + "\n" + body + "\n"


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else '"' + name + '"'


def _read_env(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        return read_env_file(path)
    except ConfigError as exc:
        raise FormsConfigError(str(exc)) from None


def _token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def _plan(
    name: str, source: str, environ: Mapping[str, str], env: Mapping[str, str]
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The table's source-specific lines, new ``.env`` values, and labels to paste."""
    prefix = env_prefix(name)
    lines: list[str] = []
    new_env: dict[str, str] = {}
    paste: dict[str, str] = {}

    def known(var: str) -> bool:
        return bool(environ.get(var) or env.get(var))

    def need(*names: str) -> None:
        missing = [var for var in names if not known(var)]
        if missing:
            raise FormsConfigError(
                f"{source} needs {', '.join(missing)} in the environment or .env first "
                "(from the ad platform's app settings)"
            )

    if source == "webform":
        var = f"{prefix}_SECRET"
        new_env[var] = _token()
        lines += [
            f'secret = "${{{var}}}"',
            '# allowed_origins = ["https://www.example.com"]  # to post from a browser page',
        ]
        paste["X-Leadrelay-Secret header"] = new_env[var]
    elif source == "meta_lead_ads":
        need("META_APP_SECRET", "META_ACCESS_TOKEN")
        var = f"{prefix}_VERIFY_TOKEN"
        new_env[var] = _token()
        lines += [
            'app_secret = "${META_APP_SECRET}"',
            f'verify_token = "${{{var}}}"',
            'access_token = "${META_ACCESS_TOKEN}"',
            'graph_url = "${META_GRAPH_URL:-https://graph.facebook.com}"',
            'ca_bundle = "${LEADRELAY_CA_BUNDLE:-}"',
            "# form_ids = []  # only these lead form ids (capture default: every form of the app;"
            " reconcile reads only the forms listed)",
        ]
        paste["Verify token"] = new_env[var]
    elif source == "linkedin_lead_gen":
        need("LINKEDIN_CLIENT_SECRET", "LINKEDIN_ACCESS_TOKEN")
        lines += [
            'client_secret = "${LINKEDIN_CLIENT_SECRET}"',
            'access_token = "${LINKEDIN_ACCESS_TOKEN}"',
            'api_url = "${LINKEDIN_API_URL:-https://api.linkedin.com}"',
            'ca_bundle = "${LEADRELAY_CA_BUNDLE:-}"',
            "# form_ids = []  # only these lead gen form ids (capture default: all;"
            " reconcile reads only the forms listed)",
        ]
    elif source == "google_ads_lead_form":
        var = f"{prefix}_GOOGLE_KEY"
        new_env[var] = _token()
        lines += [
            f'google_key = "${{{var}}}"',
            "# form_ids = []  # only these lead form ids (default: all)",
        ]
        paste["Key"] = new_env[var]
    elif source != "csv":
        known_sources = ", ".join(ADDABLE_SOURCES)
        raise FormsConfigError(f"unknown source {source!r}; choose one of {known_sources}")
    return lines, new_env, paste


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # not POSIX, or not reported
        return 255


def _check_file_name(path: Path, name: str) -> None:
    """Refuse a form name whose mapping file name the file system cannot hold."""
    limit = _name_max(path.parent)
    if len(path.name.encode("utf-8")) > limit:
        longest = limit - len(path.suffix.encode("utf-8"))
        raise FormsConfigError(
            f"form name {name[:40]!r}… is {len(name)} characters; its mapping file "
            f"{path.parent.name}/{path.name[:20]}… would be longer than the file system "
            f"allows: use at most {longest} characters"
        )


def add_form(
    config_path: Path,
    name: str,
    *,
    source: str,
    destination: str,
    environ: Mapping[str, str] | None = None,
) -> AddedForm:
    """Add form ``name`` to the project at ``config_path`` (see the module docstring).

    Raises :class:`FormsConfigError` (nothing changed) when the project does not load, the name
    is taken or invalid, the destination is not a connection, a platform secret is missing, or
    the project does not load with the new form.
    """
    environ = os.environ if environ is None else environ
    if not _NAME.match(name):
        raise FormsConfigError(
            f"form name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    if source not in ADDABLE_SOURCES:
        raise FormsConfigError(
            f"unknown source {source!r}; choose one of {', '.join(ADDABLE_SOURCES)}"
        )
    try:
        config = load_config(config_path, environ=environ)
    except ConfigError as exc:
        raise FormsConfigError(str(exc)) from None
    if name in config.forms:
        raise FormsConfigError(f"form {name!r} already exists in {config_path}")
    if destination not in config.connections:
        defined = ", ".join(sorted(config.connections)) or "none"
        raise FormsConfigError(
            f"destination {destination!r} is not a connection (defined: {defined})"
        )
    folder = config.folder
    env_path = folder / ".env"
    env = _read_env(env_path)
    lines, new_env, paste = _plan(name, source, environ, env)
    clash = sorted(var for var in new_env if var in env or var in environ)
    if clash:
        raise FormsConfigError(f"{', '.join(clash)} already set: remove it or pick another name")

    mapping_rel = f"mappings/forms/{name}.toml"
    mapping_path = folder / mapping_rel
    _check_file_name(mapping_path, name)
    toml_path = config.path
    toml_before = toml_path.read_text(encoding="utf-8")
    env_before = env_path.read_text(encoding="utf-8") if env_path.is_file() else None
    mapping_created = not mapping_path.exists()
    table = [
        "",
        f"[forms.{_toml_key(name)}]",
        f'source = "{source}"',
        f'destination = "{destination}"',
        f'mapping = "{mapping_rel}"',
        *lines,
        "",
    ]
    files: list[Path] = []
    try:
        if mapping_created:
            mapping_path.parent.mkdir(parents=True, exist_ok=True)
            mapping_path.write_text(starter_mapping(source), encoding="utf-8")
            files.append(mapping_path)
        separator = "" if toml_before.endswith("\n") or not toml_before else "\n"
        toml_path.write_text(toml_before + separator + "\n".join(table), encoding="utf-8")
        files.append(toml_path)
        if new_env:
            text = env_before or ""
            if text and not text.endswith("\n"):
                text += "\n"
            text += f"# form {name} ({source})\n"
            text += "".join(f"{var}={value}\n" for var, value in new_env.items())
            env_path.write_text(text, encoding="utf-8")
            os.chmod(env_path, 0o600)
            files.append(env_path)
        reloaded = load_config(toml_path, environ=environ)
        if name not in reloaded.forms:
            raise ConfigError(toml_path, [f"forms.{name}: not found after writing it"])
    except (ConfigError, OSError) as exc:
        toml_path.write_text(toml_before, encoding="utf-8")
        if env_before is None:
            env_path.unlink(missing_ok=True)
        else:
            env_path.write_text(env_before, encoding="utf-8")
        if mapping_created:
            mapping_path.unlink(missing_ok=True)
        raise FormsConfigError(f"the project does not load with form {name!r}: {exc}") from None
    return AddedForm(
        name=name,
        source=source,
        destination=destination,
        endpoint=form_endpoint(reloaded, name, source),
        paste=paste,
        files=files,
        env=list(new_env),
    )
