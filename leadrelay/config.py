"""The project configuration: ``leadrelay.toml`` plus the environment (DESIGN §11).

:func:`load_config` reads the TOML file, replaces ``${VAR}`` references from the process
environment first and then the ``.env`` file next to the config, and validates the result into a
:class:`Config`. Every problem becomes one line of a :class:`ConfigError` naming the file, the key
path and the reason; all problems are listed at once.

Interpolation, in any string value:

* ``${VAR}`` — the variable's value; an unset or empty variable is an error naming it.
* ``${VAR:-default}`` — the default when the variable is unset or empty. A value that is nothing
  but a reference resolving to an empty string (``"${HUBSPOT_PORTAL_ID:-}"``) counts as absent,
  so the key's own default applies.
* ``$$`` — a literal ``$``. Any other ``$`` is kept as it is.

The ``.env`` file is read without shell interpolation (a ``$`` in a secret stays a ``$``) and is
never written into ``os.environ``.

Secrets (tokens, passwords, client and app secrets, verify tokens, Google keys, webhook secrets,
private keys) are held as :class:`pydantic.SecretStr`; they never appear in a repr, a str or an
error message. Relative paths (mapping files, CA bundles, key files, a SQLite database) are
resolved against the config file's folder, so a cron job run from anywhere finds them.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import ssl
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv.parser import parse_stream
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from leadrelay.handoff.recycle import RecycleConfig
from leadrelay.handoff.report_settings import ReportConfig
from leadrelay.handoff.routing import RoutingConfig
from leadrelay.handoff.scoring import ScoringConfig
from leadrelay.model import Lead, Stage

__all__ = [
    "BUILTIN_CONNECTION_KINDS",
    "CaptureConfig",
    "Config",
    "ConfigError",
    "ConnectionConfig",
    "CronSchedule",
    "CsvFormConfig",
    "FieldRule",
    "FlowConfig",
    "FormConfig",
    "FormSource",
    "GoogleAdsFormConfig",
    "HubSpotConnection",
    "HubSpotFormConfig",
    "LinkedInFormConfig",
    "MetaFormConfig",
    "PluginConnection",
    "SalesforceConnection",
    "ScheduleConfig",
    "StateConfig",
    "UtmDefaults",
    "WebformConfig",
    "WorkerConfig",
    "ZohoConnection",
    "load_config",
    "registered_connector_kinds",
]

#: The entry-point group third-party connectors register under (DESIGN §5).
CONNECTOR_ENTRY_POINT_GROUP = "leadrelay.connectors"

#: Connection kinds built into leadrelay; their names are fixed by DESIGN §5.
BUILTIN_CONNECTION_KINDS: tuple[str, ...] = ("hubspot", "salesforce", "zoho")

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit"


class ConfigError(Exception):
    """The configuration cannot be used. ``str()`` is one line per problem, each naming the file.

    Attributes:
        file: the file at fault (the config file, or the ``.env`` file it reads).
        problems: one entry per problem, ``key.path: reason`` (without the file name).
    """

    def __init__(self, file: str | Path, problems: list[str]) -> None:
        self.file = Path(file)
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.file}: {problem}" for problem in self.problems)


# --------------------------------------------------------------------------------------------
# shared field types


def _config_folder(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, dict) else {}
    folder = context.get("folder")
    return Path(folder) if folder is not None else Path.cwd()


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    path = value.expanduser()
    if not path.is_absolute():
        path = _config_folder(info) / path
    return path


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    path = _resolve_path(value, info)
    if not path.is_file():
        raise PydanticCustomError("file_not_found", "file not found: {path}", {"path": str(path)})
    return path


def _ca_file(value: Path, info: ValidationInfo) -> Path:
    """A CA bundle every connector can load: read and parsed here, once, for all of them."""
    path = _existing_file(value, info)
    try:
        # A bare client context: a default one also loads the system's CA store first
        # (~30 ms per connection, on every start-up), which says nothing about this file.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise PydanticCustomError(
            "bad_ca_bundle",
            "cannot be read as a PEM CA bundle: {path} ({reason})",
            {"path": str(path), "reason": str(reason)},
        ) from None
    return path


def _non_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise PydanticCustomError("empty_secret", "is empty")
    return value


def _non_empty_text(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_text", "is empty")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PydanticCustomError("not_a_url", "must be an http(s) URL with a host")
    return value.strip().rstrip("/")


#: A secret: held as SecretStr, never empty, never shown.
Secret = Annotated[SecretStr, AfterValidator(_non_empty_secret)]
#: A path resolved against the config folder that must name an existing file.
ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
#: A file of PEM CA certificates that loads (TLS verification of a connection).
CaBundle = Annotated[Path, AfterValidator(_ca_file)]
#: A non-blank string.
Text = Annotated[str, AfterValidator(_non_empty_text)]
#: An http(s) URL, trailing slash removed.
HttpUrl = Annotated[str, AfterValidator(_http_url)]
#: A connection, form or flow name: safe in URLs, file names and the state store.
Name = Annotated[str, Field(pattern=_NAME_PATTERN)]


class _Section(BaseModel):
    """Base of every config table: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# [state] and [capture]


_SQLITE_URL = re.compile(r"^(?P<scheme>sqlite(?:\+\w+)?)://(?P<rest>.*)$")


class StateConfig(_Section):
    """``[state]``: where leadrelay keeps its ledger, cursors and dead letters (DESIGN §7).

    Keys:
        url: SQLAlchemy URL; ``sqlite:///leadrelay.db`` by default. A relative SQLite path is
            resolved against the config folder. ``postgresql://…`` for several workers. The URL
            may hold a password, so it is left out of the repr; use :attr:`display_url` to show it.
        retention_days: how long run events, settled dead letters and fixed field problems
            are kept for ``leadrelay trace`` (90 by default); ``leadrelay trace --prune`` drops
            older ones (``leadrelay/trace.py``).
        pool_size: database connections each process keeps open (default 5); on PostgreSQL,
            ``pool_size`` × processes must stay below the server's ``max_connections``.
        lease_s: seconds a claim (inbox batch, sync lock, queued job) lives without a
            heartbeat (default 30); a process that dies loses its work to another this long
            after its last heartbeat, and a live one renews every third of it.
    """

    url: str = Field(default="sqlite:///leadrelay.db", repr=False, validate_default=True)
    retention_days: int = Field(default=90, ge=1, le=3650)
    pool_size: int = Field(default=5, ge=1, le=100)
    lease_s: float = Field(default=30.0, ge=3, le=3600)

    @field_validator("url")
    @classmethod
    def _resolve_sqlite(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        match = _SQLITE_URL.match(value)
        if match is None:
            scheme = value.partition("://")[0].partition("+")[0]
            if "://" not in value or scheme not in ("postgresql", "postgres"):
                raise PydanticCustomError(
                    "unsupported_database",
                    "unsupported database URL: use sqlite:///FILE or postgresql://HOST/DB",
                )
            return value
        rest = match["rest"]
        if not rest.startswith("/"):
            raise PydanticCustomError(
                "unsupported_database", "a SQLite URL is sqlite:///FILE (three slashes)"
            )
        path, sep, query = rest[1:].partition("?")
        if path in ("", ":memory:") or path.startswith("file:"):
            return value
        resolved = _resolve_path(Path(path), info)
        return f"{match['scheme']}:///{resolved.as_posix()}{sep}{query}"

    @property
    def display_url(self) -> str:
        """The URL with any password replaced by ``***``, safe to print."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))

    @property
    def is_sqlite(self) -> bool:
        """Whether the store is a SQLite file (one worker) rather than PostgreSQL."""
        return _SQLITE_URL.match(self.url) is not None


class ScheduleConfig(_Section):
    """``[schedule]``: how flows' ``schedule`` expressions are read (DESIGN §7).

    Keys:
        timezone: IANA zone the cron expressions are read in (default ``UTC``), the same on
            every host whatever its local time.
    """

    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PydanticCustomError(
                "unknown_timezone",
                "unknown time zone '{zone}': use an IANA name such as UTC or Europe/Berlin",
                {"zone": value},
            ) from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The zone as a :class:`~zoneinfo.ZoneInfo`."""
        return ZoneInfo(self.timezone)


class WorkerConfig(_Section):
    """``[worker]``: ``leadrelay worker`` processes sharing a PostgreSQL job queue.

    Keys:
        concurrency: jobs one worker runs at once (default 1).
        delivery_every_s: seconds between the inbox delivery jobs the workers queue (default
            10; the capture service also queues one when it stored leads): a divisor of 60
            (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or whole minutes (60, 120 … 3600).
        split_pages: a flow run by a worker whose read yields more than this many pages is
            split into one part job per page, shared by the workers (default 10; 0 never
            splits).
    """

    concurrency: int = Field(default=1, ge=1, le=32)
    delivery_every_s: int = Field(default=10, ge=1, le=3600)
    split_pages: int = Field(default=10, ge=0)

    @field_validator("delivery_every_s")
    @classmethod
    def _on_the_clock(cls, value: int) -> int:
        # Deliveries are queued at fixed seconds of the clock (a cron with seconds), the same
        # on every host, so the interval must divide a minute or be whole minutes.
        if (value < 60 and 60 % value) or (value >= 60 and value % 60):
            raise PydanticCustomError(
                "uneven_interval",
                "{value} s does not divide a minute: use 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30 "
                "seconds, or whole minutes",
                {"value": value},
            )
        return value


class CaptureConfig(_Section):
    """``[capture]``: the webhook service of ``leadrelay serve`` (DESIGN §9).

    Keys:
        host: interface to listen on (default ``127.0.0.1``; ``0.0.0.0`` behind a proxy).
        port: TCP port (default 8080).
        public_url: the URL the outside world reaches the service at, used to print endpoint
            URLs (``https://leads.example.com``); optional.
        worker_interval_s: seconds between delivery passes of the sync worker (default 5).
        max_body_bytes: default request-body limit for every form (default 65536).
    """

    host: Text = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: HttpUrl | None = None
    worker_interval_s: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=65536, gt=0)


# --------------------------------------------------------------------------------------------
# [connections.NAME]


class _ConnectionBase(_Section):
    """Keys every built-in connection has: ``kind``, ``ca_bundle``, ``timeout_s`` and
    ``read_lookback_s`` (seconds an incremental read reaches back before the server time of the
    previous read, for records committed or indexed late; default: the connector's own —
    HubSpot 5, Salesforce 5, Zoho 2)."""

    ca_bundle: CaBundle | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    read_lookback_s: float | None = Field(default=None, ge=0, le=3600)
    #: How often a read that finds no change also reads the system's list of deleted records
    #: (HubSpot's archived contacts, Zoho's deleted records: one more call, as neither system
    #: has a call that answers both). A read that finds changes, a first read and a flow with
    #: ``on_delete = "propagate"`` always read it; 0 reads it in every run. Salesforce reads
    #: deletions in its one ``queryAll`` and ignores this. Default: 3600.
    deletions_every_s: float | None = Field(default=None, ge=0)


class HubSpotConnection(_ConnectionBase):
    """``kind = "hubspot"``: a HubSpot portal (CRM v3 API).

    Keys:
        auth: ``private_app`` (default; needs ``access_token``) or ``oauth`` (needs
            ``client_id``, ``client_secret``, ``refresh_token``). Never guessed.
        access_token: private-app token (secret).
        client_id, client_secret, refresh_token: OAuth app credentials (secrets).
        base_url: API root, default ``https://api.hubapi.com`` (the sandbox serves under
            ``/hubspot``).
        portal_id: the portal (hub) id, optional.
        app_client_secret: the public app's client secret that signs webhooks (signature v3);
            optional, defaults to ``client_secret`` with OAuth (see :attr:`signing_secret`).
        ca_bundle, timeout_s, read_lookback_s, deletions_every_s: as every connection.
        deals_every_s: with a mapping that reads deals (HubSpot as the CRM), how often a read
            that finds no changed contact still searches the changed deals (seconds; default
            900; 0: every read).
    """

    kind: Literal["hubspot"]
    auth: Literal["private_app", "oauth"] = "private_app"
    access_token: Secret | None = None
    client_id: Text | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    base_url: HttpUrl = "https://api.hubapi.com"
    portal_id: Text | None = None
    app_client_secret: Secret | None = None
    deals_every_s: float | None = Field(default=None, ge=0)

    _required: ClassVar[dict[str, tuple[str, ...]]] = {
        "private_app": ("access_token",),
        "oauth": ("client_id", "client_secret", "refresh_token"),
    }

    @model_validator(mode="after")
    def _auth_keys(self) -> HubSpotConnection:
        _require_for_mode(self, "auth", self.auth, self._required[self.auth])
        return self

    @property
    def signing_secret(self) -> SecretStr | None:
        """The secret that verifies HubSpot webhook signatures, when one is configured."""
        if self.app_client_secret is not None:
            return self.app_client_secret
        return self.client_secret if self.auth == "oauth" else None


class SalesforceConnection(_ConnectionBase):
    """``kind = "salesforce"``: a Salesforce org (REST API; Bulk API 2.0 for backfills).

    Keys:
        auth: explicit, never guessed — ``password`` (needs ``username``, ``password``,
            ``consumer_key``, ``consumer_secret``; ``security_token`` optional), ``jwt`` (needs
            ``username``, ``consumer_key`` and ``private_key_file`` or ``private_key``), or
            ``client_credentials`` (needs ``consumer_key``, ``consumer_secret`` and a My Domain
            ``login_url``), or ``refresh_token`` (needs ``consumer_key`` and ``refresh_token``,
            from the web-server flow of ``leadrelay connect salesforce``; ``consumer_secret``
            unless the connected app does not require it for refresh).
        instance_url: the org's URL; optional, the token reply names it.
        login_url: token server, default ``https://login.salesforce.com``.
        username, password, security_token, consumer_key, consumer_secret: credentials (the
            password, security token and consumer secret are secrets).
        private_key_file: PEM file for JWT bearer auth (relative to the config folder).
        private_key: the PEM text itself, e.g. from the environment (secret).
        refresh_token: the OAuth refresh token for ``auth = "refresh_token"`` (secret).
        api_version: REST API version, default ``59.0``.
        external_id_field: Lead field to upsert by (``Email__c`` …); without it leadrelay does a
            batch lookup by email first.
        bulk_threshold: record count from which Bulk API 2.0 is used (default 10000).
        allow_duplicate_save: send the duplicate-rule header that saves despite duplicate-rule
            alerts (default false).
        ca_bundle, timeout_s: as every connection.
    """

    kind: Literal["salesforce"]
    auth: Literal["password", "jwt", "client_credentials", "refresh_token"]
    instance_url: HttpUrl | None = None
    login_url: HttpUrl = "https://login.salesforce.com"
    username: Text | None = None
    password: Secret | None = None
    security_token: SecretStr | None = None
    consumer_key: Text | None = None
    consumer_secret: Secret | None = None
    private_key_file: ExistingFile | None = None
    private_key: Secret | None = None
    refresh_token: Secret | None = None
    api_version: Annotated[str, Field(pattern=r"^\d{2,3}\.0$")] = "59.0"
    external_id_field: Text | None = None
    bulk_threshold: int = Field(default=10000, gt=0)
    allow_duplicate_save: bool = False

    _required: ClassVar[dict[str, tuple[str, ...]]] = {
        "password": ("username", "password", "consumer_key", "consumer_secret"),
        "jwt": ("username", "consumer_key"),
        "client_credentials": ("consumer_key", "consumer_secret"),
        "refresh_token": ("consumer_key", "refresh_token"),
    }

    @model_validator(mode="after")
    def _auth_keys(self) -> SalesforceConnection:
        _require_for_mode(self, "auth", self.auth, self._required[self.auth])
        if self.auth == "jwt" and (self.private_key_file is None) == (self.private_key is None):
            raise PydanticCustomError(
                "auth_keys", "auth 'jwt' needs exactly one of private_key_file or private_key"
            )
        host = urlsplit(self.login_url).hostname or ""
        if self.auth == "client_credentials" and host in (
            "login.salesforce.com",
            "test.salesforce.com",
        ):
            # Client-credentials flow is refused by login/test: it needs the org's My Domain.
            raise PydanticCustomError(
                "auth_keys",
                "auth 'client_credentials' needs login_url set to the org's My Domain "
                "(https://NAME.my.salesforce.com), not {host}",
                {"host": host},
            )
        return self


class ZohoConnection(_ConnectionBase):
    """``kind = "zoho"``: a Zoho CRM org (v7 API, OAuth refresh-token grant).

    Keys:
        client_id, client_secret, refresh_token: the self-client or server app credentials
            (the secret and the refresh token are secrets).
        accounts_url: the data centre's accounts server, default ``https://accounts.zoho.com``
            (``.eu``, ``.in``, ``.com.au``, ``.jp``, ``zohocloud.ca`` …).
        api_domain: the API root; optional, taken from the token reply.
        module: the CRM module leads are written to, default ``Leads``.
        notify_token: the token Zoho echoes in notification callbacks (secret), optional.
        ca_bundle, timeout_s: as every connection.
    """

    kind: Literal["zoho"]
    client_id: Text
    client_secret: Secret
    refresh_token: Secret
    accounts_url: HttpUrl = "https://accounts.zoho.com"
    api_domain: HttpUrl | None = None
    module: Text = "Leads"
    notify_token: Secret | None = None


def registered_connector_kinds() -> frozenset[str]:
    """Names of connectors registered by other packages under ``leadrelay.connectors``.

    Only the names are read; no plugin is imported to validate a config.
    """
    return frozenset(ep.name for ep in entry_points(group=CONNECTOR_ENTRY_POINT_GROUP))


class PluginConnection(_Section):
    """A connection of a kind registered by a third-party package (entry point group
    ``leadrelay.connectors``). Every key except ``kind`` is kept, unvalidated, in
    :attr:`options` for the plugin to check; it is left out of the repr as it may hold secrets.
    """

    kind: str
    options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _collect_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" not in data:
            return {
                "kind": data.get("kind"),
                "options": {k: v for k, v in data.items() if k != "kind"},
            }
        return data

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        registered = registered_connector_kinds()
        if value in registered:
            return value
        known = sorted(set(BUILTIN_CONNECTION_KINDS) | registered)
        close = difflib.get_close_matches(value, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PydanticCustomError(
            "unknown_kind",
            "unknown connection kind '{kind}' (known: {known}){hint}",
            {"kind": value, "known": ", ".join(known), "hint": hint},
        )


def _connection_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        kind = getattr(value, "kind", None)
    elif isinstance(value, dict):
        kind = value.get("kind")
    else:
        return None
    if not isinstance(kind, str):
        return None
    return kind if kind in BUILTIN_CONNECTION_KINDS else "plugin"


#: One ``[connections.NAME]`` table, chosen by its ``kind``.
ConnectionConfig = Annotated[
    Annotated[HubSpotConnection, Tag("hubspot")]
    | Annotated[SalesforceConnection, Tag("salesforce")]
    | Annotated[ZohoConnection, Tag("zoho")]
    | Annotated[PluginConnection, Tag("plugin")],
    Discriminator(
        _connection_tag,
        custom_error_type="missing_kind",
        custom_error_message=(
            "needs a table with a 'kind' key (hubspot, salesforce, zoho or a plugin kind)"
        ),
    ),
]


def _require_for_mode(model: BaseModel, mode_key: str, mode: str, keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if getattr(model, key) is None]
    if missing:
        raise PydanticCustomError(
            "auth_keys",
            "{mode_key} '{mode}' needs {missing}",
            {"mode_key": mode_key, "mode": mode, "missing": ", ".join(missing)},
        )


# --------------------------------------------------------------------------------------------
# [[flows]]


class FieldRule(StrEnum):
    """Who wins a canonical field on a flow (DESIGN §7.3)."""

    SOURCE_WINS = "source_wins"
    DESTINATION_WINS = "destination_wins"
    PREFER_DESTINATION_UNLESS_BLANK = "prefer_destination_unless_blank"
    TWO_WAY = "two_way"
    NONE = "none"


_CRON_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_CRON_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {
        name: number
        for number, name in enumerate(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
            start=1,
        )
    },
    {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
)
_CRON_MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class CronSchedule:
    """A parsed five-field cron expression (minute hour day-of-month month day-of-week).

    Supports ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists, month and
    weekday names (``jan``, ``mon``), ``7`` for Sunday and the ``@hourly``-style macros. As in
    cron, when both day fields are restricted a day matches either of them.
    """

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse ``expression``; ValueError names the field and the reason when it is invalid."""
        text = " ".join(expression.split())
        fields = _CRON_MACROS.get(text.lower(), text).split(" ")
        if len(fields) != 5:
            raise ValueError(
                f"cron schedule needs 5 fields (minute hour day month weekday), got {len(fields)}"
            )
        sets = [_parse_cron_field(field, index) for index, field in enumerate(fields)]
        weekdays = frozenset(0 if day == 7 else day for day in sets[4])
        return cls(
            expression=text,
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=weekdays,
            days_restricted=not fields[2].startswith("*"),
            weekdays_restricted=not fields[4].startswith("*"),
        )

    def _day_matches(self, moment: datetime) -> bool:
        if moment.month not in self.months:
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires in the minute of ``moment``."""
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and self._day_matches(moment)
        )

    def next_after(self, moment: datetime) -> datetime | None:
        """The first minute strictly after ``moment`` the schedule fires in (same tzinfo), or
        None when it never fires within five years (e.g. ``0 0 30 2 *``)."""
        start = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(5 * 366 + 1):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        return None


def _parse_cron_field(field: str, index: int) -> frozenset[int]:
    name, low, high = _CRON_FIELDS[index]
    names = _CRON_NAMES[index]

    def number(text: str) -> int:
        value = names.get(text.lower()) if names else None
        if value is None:
            if not text.isdigit():
                raise ValueError(f"cron {name} field: {text!r} is not a number")
            value = int(text)
        if not low <= value <= high:
            raise ValueError(f"cron {name} field: {value} is outside {low}-{high}")
        return value

    values: set[int] = set()
    for part in field.split(","):
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"cron {name} field: step {step_text!r} is not a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            start_text, _, end_text = body.partition("-")
            first, last = number(start_text), number(end_text)
            if first > last:
                raise ValueError(f"cron {name} field: range {body!r} runs backwards")
        else:
            first = number(body)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _cron(value: str) -> str:
    try:
        return CronSchedule.parse(value).expression
    except ValueError as exc:
        raise PydanticCustomError("cron", "{reason}", {"reason": str(exc)}) from None


_CANONICAL_FIELDS = frozenset(Lead.model_fields)


class FlowConfig(_Section):
    """One ``[[flows]]`` entry: a sync between two connections.

    Keys:
        name: unique flow name (used by ``leadrelay sync NAME`` and in the state store).
        source, destination: connection names; they must differ and be defined.
        two_way: also carry the fields the destination owns back to the source (default false).
        schedule: five-field cron expression for ``leadrelay serve``; optional.
        include_stages: only leads in these canonical stages are synced; optional (all).
        field_rules: canonical field (a Lead field, or ``custom.NAME``) → rule, overriding the
            defaults of DESIGN §7.3.
        batch_size: records per write batch; optional (each API's maximum).
        mappings: connection name (the flow's source or destination) → mapping file that
            replaces that connection's project mapping for this flow (relative to the config
            folder).
        on_delete: what a record deleted on one side does to its linked record on the other:
            ``keep`` (default: left alone; the link is tombstoned and leadrelay never
            re-creates the deleted record) or ``propagate`` (the other record is deleted too).
        scoring_authority: ``"leadrelay"`` or ``"source"``: whose verdict qualifies this
            flow's leads, over ``[scoring] authority``; optional.
    """

    name: Name
    source: Name
    destination: Name
    two_way: bool = False
    schedule: Annotated[str, AfterValidator(_cron)] | None = None
    include_stages: list[Stage] | None = None
    field_rules: dict[str, FieldRule] = Field(default_factory=dict)
    batch_size: int | None = Field(default=None, gt=0)
    mappings: dict[str, ExistingFile] = Field(default_factory=dict)
    on_delete: Literal["keep", "propagate"] = "keep"
    scoring_authority: Literal["leadrelay", "source"] | None = None

    @field_validator("field_rules")
    @classmethod
    def _canonical_fields(cls, rules: dict[str, FieldRule]) -> dict[str, FieldRule]:
        for field in rules:
            custom = field.startswith("custom.") and len(field) > len("custom.")
            if field not in _CANONICAL_FIELDS and not custom:
                close = difflib.get_close_matches(field, sorted(_CANONICAL_FIELDS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PydanticCustomError(
                    "unknown_field",
                    "'{field}' is not a Lead field (nor custom.NAME){hint}",
                    {"field": field, "hint": hint},
                )
        return rules

    @model_validator(mode="after")
    def _distinct_ends(self) -> FlowConfig:
        if self.source == self.destination:
            raise PydanticCustomError(
                "same_connection", "source and destination are both '{name}'", {"name": self.source}
            )
        for connection in self.mappings:
            if connection not in (self.source, self.destination):
                raise PydanticCustomError(
                    "mapping_connection",
                    "mappings.{name} names neither the flow's source nor its destination",
                    {"name": connection},
                )
        return self

    @property
    def cron(self) -> CronSchedule | None:
        """The parsed schedule, or None when the flow runs only on demand."""
        return CronSchedule.parse(self.schedule) if self.schedule else None


# --------------------------------------------------------------------------------------------
# [forms.NAME]


class FormSource(StrEnum):
    """Where a form's leads come from (DESIGN §5 built-in sources)."""

    WEBFORM = "webform"
    META_LEAD_ADS = "meta_lead_ads"
    LINKEDIN_LEAD_GEN = "linkedin_lead_gen"
    GOOGLE_ADS_LEAD_FORM = "google_ads_lead_form"
    CSV = "csv"
    HUBSPOT_FORM = "hubspot_form"


class UtmDefaults(_Section):
    """UTM values a form's leads get when the submission carries none."""

    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    utm_term: Text | None = None
    utm_content: Text | None = None


class _FormBase(_Section):
    """Keys every form has.

    Keys:
        source: the kind of form (see :class:`FormSource`).
        destination: the connection its leads are delivered to.
        mapping: the form's mapping file (form field names → Lead fields), relative to the
            config folder; it must exist.
        default_utm: ``{utm_source = "…", …}`` used when a submission has none.
        owner: owner id or email every lead of this form is assigned to (bypasses routing).
        queue: queue every lead of this form is assigned to (bypasses routing).
        test_email_domain: e-mail domain of the synthetic leads of ``leadrelay validate``;
            leads under it are marked ``is_test`` (default ``example.com``).
        max_body_bytes: request-body limit; default from ``[capture]``.
    """

    destination: Name
    mapping: ExistingFile
    default_utm: UtmDefaults = Field(default_factory=UtmDefaults)
    owner: Text | None = None
    queue: Text | None = None
    test_email_domain: Text = "example.com"
    max_body_bytes: int | None = Field(default=None, gt=0)


class WebformConfig(_FormBase):
    """``source = "webform"``: an HTML form posting to ``POST /forms/{name}``.

    Keys (besides those of every form):
        secret: shared token a server-side form handler sends (``X-Leadrelay-Secret``).
        hmac_secret: key of a hex HMAC-SHA256 of the raw body (``X-Leadrelay-Signature``).
        allowed_origins: browser origins allowed to post directly (``https://www.example.com``).
        honeypot: a hidden field name; a submission that fills it is dropped as spam.
    At least one of ``secret``, ``hmac_secret`` or ``allowed_origins`` is required: an endpoint
    open to anyone would take in anything.
    """

    source: Literal["webform"]
    secret: Secret | None = None
    hmac_secret: Secret | None = None
    allowed_origins: list[HttpUrl] = Field(default_factory=list)
    honeypot: Text | None = None

    @model_validator(mode="after")
    def _some_protection(self) -> WebformConfig:
        if self.secret is None and self.hmac_secret is None and not self.allowed_origins:
            raise PydanticCustomError(
                "open_form",
                "a webform needs secret, hmac_secret or allowed_origins "
                "(an open endpoint would accept anything)",
            )
        return self


class MetaFormConfig(_FormBase):
    """``source = "meta_lead_ads"``: Facebook / Instagram lead ads via ``/hooks/meta``.

    Keys (besides those of every form):
        app_secret: the Meta app secret that signs ``X-Hub-Signature-256`` (secret, required).
        verify_token: the subscription handshake token (secret, required).
        access_token: a page access token with ``leads_retrieval`` to read the lead (secret,
            required: the webhook carries only ids).
        page_id: only leads of this page; optional.
        form_ids: only these lead form ids; optional (all).
        ad_account: ad account id recorded on the lead; optional.
        graph_url: Graph API root, default ``https://graph.facebook.com``.
        api_version: Graph API version, default ``v21.0``.
        ca_bundle: CA file for the Graph API connection; optional.
    """

    source: Literal["meta_lead_ads"]
    app_secret: Secret
    verify_token: Secret
    access_token: Secret
    page_id: Text | None = None
    form_ids: list[Text] = Field(default_factory=list)
    ad_account: Text | None = None
    graph_url: HttpUrl = "https://graph.facebook.com"
    api_version: Annotated[str, Field(pattern=r"^v\d+\.\d+$")] = "v21.0"
    ca_bundle: CaBundle | None = None


class LinkedInFormConfig(_FormBase):
    """``source = "linkedin_lead_gen"``: LinkedIn Lead Gen Forms via ``/hooks/linkedin``.

    Keys (besides those of every form):
        client_secret: the app's client secret that signs ``X-LI-Signature`` and the challenge
            (secret, required).
        access_token: token with ``r_marketing_leadgen_automation`` to read the lead form
            response (secret, required: the notification carries only its URN).
        ad_account: sponsored account id; optional.
        form_ids: only these lead gen form ids; optional (all).
        api_url: API root, default ``https://api.linkedin.com``.
        api_version: the ``LinkedIn-Version`` header (``YYYYMM``), default ``202410``.
        ca_bundle: CA file for the API connection; optional.
    """

    source: Literal["linkedin_lead_gen"]
    client_secret: Secret
    access_token: Secret
    ad_account: Text | None = None
    form_ids: list[Text] = Field(default_factory=list)
    api_url: HttpUrl = "https://api.linkedin.com"
    api_version: Annotated[str, Field(pattern=r"^\d{6}$")] = "202410"
    ca_bundle: CaBundle | None = None


class GoogleAdsFormConfig(_FormBase):
    """``source = "google_ads_lead_form"``: Google Ads lead form webhook ``/hooks/google-ads``.

    Keys (besides those of every form):
        google_key: the key set in the lead form's webhook settings; Google sends it in the
            body instead of a signature (secret, required).
        form_ids: only these lead form ids; optional (all).
        ad_account: customer id recorded on the lead; optional.
    """

    source: Literal["google_ads_lead_form"]
    google_key: Secret
    form_ids: list[Text] = Field(default_factory=list)
    ad_account: Text | None = None


class CsvFormConfig(_FormBase):
    """``source = "csv"``: a list imported from a file (event lists, purchased lists).

    Keys (besides those of every form):
        delimiter: one character, default ``,``.
        encoding: file encoding, default ``utf-8-sig`` (a BOM is skipped).
    """

    source: Literal["csv"]
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    encoding: Text = "utf-8-sig"


class HubSpotFormConfig(_FormBase):
    """``source = "hubspot_form"``: HubSpot form submissions notified to ``/hooks/hubspot``.

    Keys (besides those of every form):
        connection: a hubspot connection whose ``app_client_secret`` (or OAuth client secret)
            verifies the v3 signature; or
        client_secret: the signing secret itself (secret). One of the two is required.
        form_ids: only these HubSpot form GUIDs; optional (all).
    """

    source: Literal["hubspot_form"]
    connection: Name | None = None
    client_secret: Secret | None = None
    form_ids: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _signing_key(self) -> HubSpotFormConfig:
        if (self.connection is None) == (self.client_secret is None):
            raise PydanticCustomError(
                "signing_key",
                "a hubspot_form needs exactly one of connection or client_secret "
                "(to verify the webhook signature)",
            )
        return self


def _form_tag(value: Any) -> str | None:
    source = value.get("source") if isinstance(value, dict) else getattr(value, "source", None)
    return str(source) if isinstance(source, str) else None


#: One ``[forms.NAME]`` table, chosen by its ``source``.
FormConfig = Annotated[
    Annotated[WebformConfig, Tag("webform")]
    | Annotated[MetaFormConfig, Tag("meta_lead_ads")]
    | Annotated[LinkedInFormConfig, Tag("linkedin_lead_gen")]
    | Annotated[GoogleAdsFormConfig, Tag("google_ads_lead_form")]
    | Annotated[CsvFormConfig, Tag("csv")]
    | Annotated[HubSpotFormConfig, Tag("hubspot_form")],
    Discriminator(
        _form_tag,
        custom_error_type="missing_source",
        custom_error_message="needs a table with a 'source' key ("
        + ", ".join(s.value for s in FormSource)
        + ")",
    ),
]


# --------------------------------------------------------------------------------------------
# the whole file


class ReconcileConfig(_Section):
    """``[reconcile]``: re-reading the ad platforms' own lists of leads (``leadrelay reconcile``).

    Keys:
        schedule: a cron expression; ``leadrelay serve`` runs reconcile on it. None (default):
            only on demand.
        forms: the Meta / LinkedIn forms to reconcile; empty (default): every one.
        lookback_days: how far back a run reads when ``--since`` is not given (default 7).
    """

    schedule: Annotated[str, AfterValidator(_cron)] | None = None
    forms: list[Name] = Field(default_factory=list)
    lookback_days: int = Field(default=7, ge=1, le=365)


class Config(_Section):
    """A validated ``leadrelay.toml``.

    Keys:
        state: :class:`StateConfig` (``[state]``).
        connections: name → :data:`ConnectionConfig` (``[connections.NAME]``).
        flows: list of :class:`FlowConfig` (``[[flows]]``).
        forms: name → :data:`FormConfig` (``[forms.NAME]``).
        capture: :class:`CaptureConfig` (``[capture]``).
        reconcile: :class:`ReconcileConfig` (``[reconcile]``).
        schedule: :class:`ScheduleConfig` (``[schedule]``).
        worker: :class:`WorkerConfig` (``[worker]``).
        scoring, routing, recycle: the handoff rules of DESIGN §12
            (:class:`~leadrelay.handoff.scoring.ScoringConfig`,
            :class:`~leadrelay.handoff.routing.RoutingConfig`,
            :class:`~leadrelay.handoff.recycle.RecycleConfig`).
        report: the report's goals and score bands
            (:class:`~leadrelay.handoff.report_settings.ReportConfig`, ``[report]``).
        sla: the SLA clocks, validated by :func:`leadrelay.handoff.sla.load_sla_config`
            (which reads this config, so it cannot be typed here without an import cycle).
    """

    state: StateConfig = Field(default_factory=StateConfig)
    connections: dict[Name, ConnectionConfig] = Field(default_factory=dict)
    flows: list[FlowConfig] = Field(default_factory=list)
    forms: dict[Name, FormConfig] = Field(default_factory=dict)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    recycle: RecycleConfig = Field(default_factory=RecycleConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    sla: dict[str, Any] = Field(default_factory=dict)

    _path: Path = PrivateAttr(default_factory=lambda: Path.cwd() / "leadrelay.toml")

    @model_validator(mode="before")
    @classmethod
    def _state_default(cls, data: Any) -> Any:
        # Validate the default [state] too, so its SQLite path is resolved against the folder.
        if isinstance(data, dict) and "state" not in data:
            return {**data, "state": {}}
        return data

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Config:
        context = info.context if isinstance(info.context, dict) else {}
        if context.get("path") is not None:
            self._path = Path(context["path"])
        problems: list[str] = []
        defined = ", ".join(sorted(self.connections)) or "none"
        seen: set[str] = set()
        for flow in self.flows:
            where = f"flows.{flow.name}"
            if flow.name in seen:
                problems.append(f"{where}.name: another flow has the name {flow.name!r}")
            seen.add(flow.name)
            for end in ("source", "destination"):
                name = getattr(flow, end)
                if name not in self.connections:
                    problems.append(
                        f"{where}.{end}: connection {name!r} is not defined (defined: {defined})"
                    )
        for form_name, form in self.forms.items():
            where = f"forms.{form_name}"
            if form.destination not in self.connections:
                problems.append(
                    f"{where}.destination: connection {form.destination!r} is not defined "
                    f"(defined: {defined})"
                )
            if isinstance(form, HubSpotFormConfig) and form.connection is not None:
                target = self.connections.get(form.connection)
                if not isinstance(target, HubSpotConnection):
                    problems.append(
                        f"{where}.connection: {form.connection!r} is not a hubspot connection"
                    )
                elif target.signing_secret is None:
                    problems.append(
                        f"{where}.connection: connection {form.connection!r} has no "
                        "app_client_secret to verify webhook signatures"
                    )
        if problems:
            raise PydanticCustomError(
                "config_references", "{problems}", {"problems": "\n".join(problems)}
            )
        return self

    @property
    def path(self) -> Path:
        """The absolute path of the file this config was read from."""
        return self._path

    @property
    def folder(self) -> Path:
        """The folder relative paths in the config are resolved against."""
        return self._path.parent

    def connection(self, name: str) -> ConnectionConfig:
        """The connection called ``name``; KeyError naming it and the defined ones otherwise."""
        try:
            return self.connections[name]
        except KeyError:
            defined = ", ".join(sorted(self.connections)) or "none"
            raise KeyError(f"connection {name!r} is not defined (defined: {defined})") from None

    def flow(self, name: str) -> FlowConfig:
        """The flow called ``name``; KeyError naming it and the defined ones otherwise."""
        for flow in self.flows:
            if flow.name == name:
                return flow
        defined = ", ".join(flow.name for flow in self.flows) or "none"
        raise KeyError(f"flow {name!r} is not defined (defined: {defined})")

    def form(self, name: str) -> FormConfig:
        """The form called ``name``; KeyError naming it and the defined ones otherwise."""
        try:
            return self.forms[name]
        except KeyError:
            defined = ", ".join(sorted(self.forms)) or "none"
            raise KeyError(f"form {name!r} is not defined (defined: {defined})") from None


# --------------------------------------------------------------------------------------------
# loading


_TOML_POSITION = re.compile(r"^(?P<msg>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_REFERENCE = re.compile(r"\$(?:\$|\{(?P<body>[^}]*)\})")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` pairs of a ``.env`` file, without shell interpolation.

    Raises ConfigError naming the file and the line of a statement that cannot be parsed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, ["not UTF-8 text"]) from None
    values: dict[str, str] = {}
    problems: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            problems.append(f"line {binding.original.line}: not a KEY=value statement")
        elif binding.key is not None:
            values[binding.key] = binding.value or ""
    if problems:
        raise ConfigError(path, problems)
    return values


class _Interpolator:
    def __init__(self, lookups: tuple[Mapping[str, str], ...]) -> None:
        self._lookups = lookups
        self.problems: list[str] = []

    def _lookup(self, name: str) -> str | None:
        for source in self._lookups:
            value = source.get(name)
            if value:
                return value
        return None

    def value(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return self.text(value, where)
        if isinstance(value, dict):
            result: dict[str, Any] = {}
            for key, item in value.items():
                resolved = self.value(item, f"{where}.{key}" if where else key)
                if resolved is not _ABSENT:
                    result[key] = resolved
            return result
        if isinstance(value, list):
            items = [self.value(item, f"{where}[{index}]") for index, item in enumerate(value)]
            return [item for item in items if item is not _ABSENT]
        return value

    def text(self, text: str, where: str) -> Any:
        if "$" not in text:
            return text
        failed = False
        references = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal failed, references
            body = match["body"]
            if body is None:
                return "$"
            references += 1
            name, sep, default = body.partition(":-")
            if not _VAR_NAME.match(name):
                self.problems.append(f"{where}: ${{{body}}} is not a ${{VAR}} reference")
                failed = True
                return ""
            found = self._lookup(name)
            if found is not None:
                return found
            if sep:
                return default
            self.problems.append(
                f"{where}: variable {name} is not set (or empty) in the environment or .env"
            )
            failed = True
            return ""

        result = _REFERENCE.sub(replace, text)
        unclosed = _REFERENCE.sub("", text)
        if "${" in unclosed:
            self.problems.append(f"{where}: '${{' without a closing '}}'")
            failed = True
        if failed:
            return ""
        if result == "" and references == 1 and _REFERENCE.fullmatch(text):
            return _ABSENT
        return result


_ABSENT = object()


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    items = list(loc)
    if len(items) >= 3 and items[0] in ("connections", "forms"):
        del items[2]  # the union tag pydantic inserts for the chosen kind / source
    node: Any = data
    for index, item in enumerate(items):
        if isinstance(item, int):
            name = None
            if index == 1 and items[0] == "flows" and isinstance(node, list):
                entry = node[item] if item < len(node) else None
                name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name:
                parts.append(f".{name}")
            else:
                parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
        if isinstance(node, dict):
            node = node.get(item)
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
        else:
            node = None
    return "".join(parts).lstrip(".")


def _all_keys() -> list[str]:
    keys: set[str] = set()
    for model in (
        Config,
        StateConfig,
        CaptureConfig,
        ReconcileConfig,
        HubSpotConnection,
        SalesforceConnection,
        ZohoConnection,
        FlowConfig,
        UtmDefaults,
        WebformConfig,
        MetaFormConfig,
        LinkedInFormConfig,
        GoogleAdsFormConfig,
        CsvFormConfig,
        HubSpotFormConfig,
        ScoringConfig,
        RoutingConfig,
        RecycleConfig,
    ):
        keys.update(model.model_fields)
    return sorted(keys)


def _problems(error: ValidationError, data: Any) -> Iterator[str]:
    for item in error.errors(include_input=False, include_url=False):
        where = _location(item["loc"], data)
        kind = item["type"]
        ctx = item.get("ctx") or {}
        if kind == "config_references":
            yield from str(ctx["problems"]).splitlines()
            continue
        if kind == "extra_forbidden":
            key = str(item["loc"][-1])
            close = difflib.get_close_matches(key, _all_keys(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key{hint}"
        elif kind == "missing":
            message = "field required"
        elif kind == "string_pattern_mismatch" and ctx.get("pattern") == _NAME_PATTERN:
            message = f"a name may hold only {_NAME_RULE}"
        else:
            message = item["msg"].removeprefix("Value error, ")
            message = message[:1].lower() + message[1:]
        yield f"{where}: {message}" if where else message


def parse_config(
    data: dict[str, Any], path: Path, environ: Mapping[str, str], env: Mapping[str, str]
) -> Config:
    """Interpolate and validate an already parsed TOML document read from ``path``.

    ``environ`` wins over ``env`` (the ``.env`` values). Raises ConfigError listing every
    problem.
    """
    interpolator = _Interpolator((environ, env))
    resolved = interpolator.value(data, "")
    if interpolator.problems:
        raise ConfigError(path, interpolator.problems)
    try:
        return Config.model_validate(resolved, context={"folder": path.parent, "path": path})
    except ValidationError as exc:
        problems = list(_problems(exc, resolved))
        # The cross-references are checked after every field is valid; list them now too, so
        # one `leadrelay check` shows every problem at once.
        problems += [p for p in _dangling_references(resolved) if p not in problems]
        raise ConfigError(path, problems) from None


def _dangling_references(data: Any) -> Iterator[str]:
    """Flows and forms naming a connection the raw document does not define (the same words
    as ``Config._references``), read from the document before it is valid."""
    if not isinstance(data, dict):
        return
    connections = data.get("connections")
    names = set(connections) if isinstance(connections, dict) else set()
    defined = ", ".join(sorted(names)) or "none"
    flows = data.get("flows")
    for flow in flows if isinstance(flows, list) else []:
        if not isinstance(flow, dict):
            continue
        for end in ("source", "destination"):
            name = flow.get(end)
            if isinstance(name, str) and name not in names:
                yield (
                    f"flows.{flow.get('name')}.{end}: connection {name!r} is not defined "
                    f"(defined: {defined})"
                )
    forms = data.get("forms")
    for form_name, form in forms.items() if isinstance(forms, dict) else []:
        target = form.get("destination") if isinstance(form, dict) else None
        if isinstance(target, str) and target not in names:
            yield (
                f"forms.{form_name}.destination: connection {target!r} is not defined "
                f"(defined: {defined})"
            )


def load_config(
    path: str | Path = "leadrelay.toml",
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = None,
) -> Config:
    """Read, interpolate and validate a ``leadrelay.toml``.

    Args:
        path: the config file; relative paths in it are resolved against its folder.
        environ: the process environment to read ``${VAR}`` from (default ``os.environ``).
        env_file: the dotenv file read after ``environ``; default ``.env`` next to the config
            (skipped when absent; an explicit file must exist).

    Raises:
        ConfigError: naming the file and, per problem, the key path and the reason.
    """
    display = Path(path)
    file = display.expanduser().absolute()
    if not file.is_file():
        hint = "run `leadrelay init` to write a starter project" if not file.exists() else ""
        reason = "no such config file" if not file.exists() else "not a file"
        raise ConfigError(display, [f"{reason}{'; ' + hint if hint else ''}"])
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.match(message)
        if match:
            message = f"line {match['line']}, column {match['col']}: {match['msg']}"
        raise ConfigError(display, [f"invalid TOML: {message}"]) from None
    except OSError as exc:
        raise ConfigError(display, [f"cannot read: {exc.strerror or exc}"]) from None
    env: dict[str, str] = {}
    if env_file is not None:
        dotenv = Path(env_file).expanduser()
        if not dotenv.is_file():
            raise ConfigError(dotenv, ["no such env file"])
        env = read_env_file(dotenv)
    elif (file.parent / ".env").is_file():
        env = read_env_file(file.parent / ".env")
    try:
        return parse_config(data, file, os.environ if environ is None else environ, env)
    except ConfigError as exc:
        raise ConfigError(display, exc.problems) from None
