"""What ``leadrelay serve`` logs, with secrets out of every line.

A platform may put a secret in the query string of the request it sends (Meta's handshake
carries ``hub.verify_token``; a misconfigured Google Ads webhook may carry ``google_key``), and
uvicorn's access log prints each request's path and query. :func:`uvicorn_log_config` is
uvicorn's own logging set-up with a filter on each handler: an access line shows the values of
secret query parameters (:data:`SECRET_QUERY_PARAMS`) as ``***``, and every line, access or
not, has the project's secrets (:func:`register_config_secrets`) and every token shape removed
(:func:`~leadrelay.connectors.errors.redact`).
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, SecretStr
from uvicorn.config import LOGGING_CONFIG

from leadrelay.childproc import share_secrets
from leadrelay.config import Config
from leadrelay.connectors.errors import (
    REDACTED,
    SECRET_QUERY_KEYS,
    RedactingFilter,
    redact,
    register_secret,
)

__all__ = [
    "SECRET_QUERY_PARAMS",
    "AccessLogFilter",
    "ServeLogFilter",
    "redact_target",
    "register_config_secrets",
    "uvicorn_log_config",
]

#: Query parameters whose values never reach a log line: the connectors' secret keys and what
#: the capture endpoints are sent (Meta's ``hub.verify_token``, Google's ``google_key``).
#: ``challengeCode`` and ``hub.challenge`` are not secret.
SECRET_QUERY_PARAMS: frozenset[str] = SECRET_QUERY_KEYS | {
    "hub.verify_token",
    "google_key",
    "access_token",
    "key",
    "signature",
}


def redact_target(target: str) -> str:
    """A request target (path and query) with the values of secret parameters as ``***``.

    A parameter name is compared decoded (``hub%2Everify_token`` is ``hub.verify_token``).
    """
    path, mark, query = target.partition("?")
    if mark:
        parts = []
        for part in query.split("&"):
            name, equals, _ = part.partition("=")
            if equals and unquote_plus(name).strip().lower() in SECRET_QUERY_PARAMS:
                part = f"{name}={REDACTED}"
            parts.append(part)
        target = f"{path}?{'&'.join(parts)}"
    return redact(target)


class AccessLogFilter(logging.Filter):
    """uvicorn's access log (``uvicorn.access``) with secrets out of the request line.

    The access formatter reads the record's arguments (client, method, target, HTTP version,
    status), so they are rewritten in place rather than merged into the message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, target, version, status = args
            record.args = (
                redact(str(client)),
                redact(str(method)),
                redact_target(str(target)),
                version,
                status,
            )
        return True


class ServeLogFilter(RedactingFilter):
    """:class:`~leadrelay.connectors.errors.RedactingFilter` for uvicorn's other lines, which
    also drops uvicorn's colour copy of the message (it would bypass the redaction)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        record.__dict__.pop("color_message", None)
        return super().filter(record)


def _secret_values(value: object) -> list[str]:
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return [
            secret
            for name in type(value).model_fields
            for secret in _secret_values(getattr(value, name))
        ]
    if isinstance(value, dict):
        return [secret for item in value.values() for secret in _secret_values(item)]
    if isinstance(value, list | tuple):
        return [secret for item in value for secret in _secret_values(item)]
    return []


def register_config_secrets(config: Config) -> None:
    """Register every secret of the project's connections and forms for redaction, here and
    in the child processes ``serve`` starts afterwards."""
    values = [*_secret_values(config.connections), *_secret_values(config.forms)]
    register_secret(*values)
    share_secrets(*values)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with :class:`ServeLogFilter` on its error
    handler and :class:`AccessLogFilter` on its access handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "redact": {"()": ServeLogFilter},
        "redact_access": {"()": AccessLogFilter},
    }
    config["handlers"]["default"]["filters"] = ["redact"]
    config["handlers"]["access"]["filters"] = ["redact_access"]
    return config
