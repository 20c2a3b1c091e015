"""The Zoho CRM connector (v7 REST API over httpx).

* Auth: the refresh-token grant against the data centre's accounts server; the access token
  and the ``api_domain`` the token reply names (the API root) are kept for their lifetime in
  the connector's credential cache, shared across processes when it is the state store's
  (:mod:`leadrelay.connectors.zoho.auth`).
* ``read_changes``: one Composite API call with the first 25 of each stream: the Leads by
  keyset COQL in (``Modified_Time``, ``id``) order, the Deals (when the mapping reads a
  ``Converted_Deal.<field>``) and the Contacts the same way, each followed back to the
  converted Lead it came from and emitted under that Lead's id with the Contact's person fields
  and the Deal's fields, and the deleted Leads (``GET /Leads/deleted``); a full stream goes on
  with COQL pages of 200. An idle read is that one call. The cursor ends at the server's time
  minus a look-back.
* ``lookup``: COQL ``Email in (…)`` (one query per 100 emails), Search Records criteria for a
  single email, Get Records ``ids=`` for ids.
* ``upsert``: ``POST /Leads/upsert`` with ``duplicate_check_fields: ["Email"]``, 100 per call,
  per-record codes mapped to results; ``update`` / ``delete`` likewise by id. A converted Lead
  is never written: its write is ``unchanged`` and not sent.
* Handoff: ``create_task`` (a Tasks record related to the Lead), ``account_owners`` (every
  Account's Website and Owner), ``find_by_email`` (every Lead holding an email, duplicates too).
* API credits are counted per call (COQL by its LIMIT) in :attr:`ZohoConnector.credits_used`.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from math import isfinite
from typing import Any, ClassVar, TypeVar

import httpx

from leadrelay.config import ZohoConnection
from leadrelay.connectors.base import (
    Capability,
    Connector,
    Deletion,
    FieldInfo,
    Health,
    Page,
    RawRecord,
    Schema,
    UpsertInput,
    WriteOutcome,
    WriteResult,
    normalize_email,
)
from leadrelay.connectors.credentials import cache_key
from leadrelay.connectors.customfields import CustomFieldSpec
from leadrelay.connectors.errors import (
    AuthError,
    ConnectorError,
    Fatal,
    Rejected,
    register_secret,
)
from leadrelay.connectors.policy import (
    Classified,
    Decision,
    RateLimiter,
    ResponseInfo,
    RetryPolicy,
    classify_default,
    connector_logger,
    from_httpx,
)
from leadrelay.connectors.shipped import shipped_mapping_fields
from leadrelay.connectors.zoho.auth import ZohoTokenSource
from leadrelay.connectors.zoho.criteria import (
    MAX_SEARCH_CRITERIA,
    coql_in,
    coql_literal,
    coql_select,
    equals_any,
)
from leadrelay.connectors.zoho.fields import custom_field_body

__all__ = [
    "DEFAULT_READ_FIELDS",
    "ZohoConnector",
    "classify_zoho",
    "coql_credits",
    "default_read_fields",
]

_log = connector_logger("zoho")

T = TypeVar("T")

#: Get Records / COQL: at most 50 fields per call.
MAX_FIELDS = 50
#: Get Records: ``per_page`` maximum.
PER_PAGE = 200
#: Get Records: ``page`` reaches only the first 2,000 records; beyond them ``page_token``.
PAGE_REACH = 2000
#: Rows per COQL lookup query (LIMIT 1-200 costs 1 credit).
COQL_LIMIT = 200
#: Search Records: results reachable with ``page`` (first 2,000).
SEARCH_REACH = 2000
#: Tasks: Subject is a 255-character text field; Description a 32,000-character text area.
TASK_SUBJECT_MAX = 255
TASK_DESCRIPTION_MAX = 32000

_API_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
#: A read field ``Converted_Deal.<Deals field>``: that field of the Deal a converted Lead
#: became (Zoho's lookup-field notation), plus ``Converted_Deal.id``, the Deal's id.
DEAL_PREFIX = "Converted_Deal."
#: Fields a converted Lead is read with besides the read fields (set by Convert Lead).
_CONVERSION_FIELDS = ("Converted__s", "Converted_Deal", "Converted_Contact")
#: The per-record code of an update of a converted Lead. Unverified (crm-api-facts marks it
#: VERIFY); a Lead read or looked up as converted is not sent at all, so this only matters
#: for one converted between the lookup and the write.
CONVERTED_CODE = "CONVERTED_RECORD"
#: Search Records takes at most 10 criteria: Deals followed back to their Lead per call.
_DEALS_PER_SEARCH = MAX_SEARCH_CRITERIA
#: Records a COQL or Get Deleted Records sub-request of a Composite API call may return
#: (Composite API doc, "Allowed APIs": 25; a COQL ``limit`` above it is LIMIT_EXCEEDED).
COMPOSITE_READ_LIMIT = 25
#: How long a refused composite call is remembered before a read tries it again.
COMPOSITE_RETRY_AFTER = timedelta(days=1)
#: A converted Lead's person fields and the Contact fields that hold them after the
#: conversion (Zoho's lead conversion mapping: the Lead's Designation is the Contact's Title;
#: the other names are the same in both modules). These are the values sales edits on the
#: Contact once the Lead is converted, so they are read from there.
CONTACT_FIELD_OF_LEAD: dict[str, str] = {
    "First_Name": "First_Name",
    "Last_Name": "Last_Name",
    "Email": "Email",
    "Phone": "Phone",
    "Mobile": "Mobile",
    "Designation": "Title",
}


@dataclass(frozen=True)
class _Stream:
    """One module read by keyset: its name in a composite call and its cursor attributes."""

    name: str
    module: str
    modified_attr: str
    after_attr: str


_LEADS = _Stream("leads", "Leads", "modified", "after_id")
_DEALS = _Stream("deals", "Deals", "deals_modified", "deals_after_id")
_CONTACTS = _Stream("contacts", "Contacts", "contacts_modified", "contacts_after_id")
_STREAMS = (_LEADS, _DEALS, _CONTACTS)


@dataclass(frozen=True)
class _FirstRound:
    """What the composite call of a read answered: the server's time, the first page of
    each stream it read (rows, more follow), and the deletions when it held all of them."""

    server_time: datetime
    pages: dict[str, tuple[list[RawRecord], bool]]
    deletions: tuple[Deletion, ...] | None


def _moved(
    position: ReadCursor, stream: _Stream, moment: datetime, after_id: int | None
) -> ReadCursor:
    """``position`` with ``stream``'s keyset position set to (``moment``, ``after_id``)."""
    if stream is _LEADS:
        return replace(position, modified=moment, after_id=after_id)
    if stream is _DEALS:
        return replace(position, deals_modified=moment, deals_after_id=after_id)
    return replace(position, contacts_modified=moment, contacts_after_id=after_id)


def _sub_answer(entry: Any) -> tuple[int, dict[str, Any]] | None:
    """A composite sub-request's own status and body; None when it did not run."""
    if not isinstance(entry, dict) or entry.get("code") != "SUCCESS":
        return None
    response = (entry.get("details") or {}).get("response")
    if not isinstance(response, dict) or not isinstance(response.get("status_code"), int):
        return None
    body = response.get("body")
    return response["status_code"], body if isinstance(body, dict) else {}


def _deletions_of(
    body: Mapping[str, Any], since: datetime | None, found: dict[str, Deletion]
) -> tuple[Deletion, ...]:
    """Add the Leads a Get Deleted Records page lists as deleted after ``since`` to
    ``found`` (by id, first seen kept); return them all."""
    for entry in body.get("data") or []:
        if not isinstance(entry, dict):
            continue
        record_id = str(entry.get("id") or "")
        at = _parse_time(entry.get("deleted_time"))
        if record_id and (since is None or at is None or at > since):
            found.setdefault(record_id, Deletion(record_id, None, at))
    return tuple(found.values())


#: Fields every read asks for, whatever the mapping says.
_ALWAYS_READ = ("Email", "Last_Name", "Modified_Time")

#: Fields read when no mapping file names them.
DEFAULT_READ_FIELDS: tuple[str, ...] = (
    "Email",
    "First_Name",
    "Last_Name",
    "Company",
    "Phone",
    "Lead_Status",
    "Lead_Source",
    "Owner",
    "Modified_Time",
    "Created_Time",
    "UTM_Source",
    "UTM_Medium",
    "UTM_Campaign",
    "UTM_Term",
    "UTM_Content",
    "Rejection_Reason",
    "LeadRelay_Key",
)


def coql_credits(limit: int) -> int:
    """API credits one COQL query costs by its LIMIT (COQL-Limitations doc): 1, 2 or 3."""
    if limit <= 200:
        return 1
    return 2 if limit <= 1000 else 3


def default_read_fields() -> tuple[str, ...]:
    """The fields read by default: those of the Zoho mapping file, else a built-in list."""
    names = list(shipped_mapping_fields("zoho")) or list(DEFAULT_READ_FIELDS)
    return _field_list([*_ALWAYS_READ, *names])


def _field_list(names: Sequence[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in names:
        name = name.strip()
        bare = name.removeprefix(DEAL_PREFIX)
        if not _API_NAME.fullmatch(bare):
            raise ValueError(f"{name!r} is not a Zoho field API name")
        if name != "id":  # the record id always comes back; it is not a field to ask for
            seen.setdefault(name, None)
    if len(seen) > MAX_FIELDS:
        raise ValueError(f"Zoho reads at most {MAX_FIELDS} fields per call; {len(seen)} were given")
    return tuple(seen)


def _per_record(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("data"), list)
        and bool(data["data"])
        and all(isinstance(item, dict) and "code" in item for item in data["data"])
    )


def classify_zoho(info: ResponseInfo) -> Classified:
    """Zoho's refinement of :func:`classify_default`.

    A batch write answers 207 (mixed) or 400 (every record refused) with one result per record:
    those are handled record by record, so they count as success here. A COQL query naming a
    column the org lacks (``INVALID_QUERY`` with ``column_name``) is handed back too, so the
    connector can drop that column and ask again.
    """
    if info.status == 400:
        data = info.json()
        if _per_record(data):
            return Classified(Decision.SUCCESS, "HTTP 400 with per-record results")
        if (
            isinstance(data, dict)
            and data.get("code") == "INVALID_QUERY"
            and isinstance(data.get("details"), dict)
            and "column_name" in data["details"]
        ):
            return Classified(Decision.SUCCESS, "HTTP 400: COQL column unknown")
    return classify_default(info)


class _NoPageToken(Exception):
    """Get Records said there is more but gave no ``page_token`` after page ``page``."""

    def __init__(self, page: int, status: int) -> None:
        super().__init__(f"no next_page_token after page {page}")
        self.page = page
        self.status = status


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _field_info(raw: Mapping[str, Any]) -> FieldInfo:
    """One field of ``settings/fields`` (pick lists with their ``actual_value`` list)."""
    kind = str(raw.get("data_type") or "")
    picklist: tuple[str, ...] | None = None
    if kind in ("picklist", "multiselectpicklist"):
        picklist = tuple(
            str(option.get("actual_value"))
            for option in raw.get("pick_list_values") or []
            if isinstance(option, dict) and option.get("actual_value") is not None
        )
    name = str(raw["api_name"])
    return FieldInfo(
        name=name,
        label=str(raw.get("field_label") or raw.get("display_label") or name),
        type=kind,
        required=bool(raw.get("system_mandatory")),
        read_only=bool(raw.get("read_only") or raw.get("field_read_only")),
        unique=bool(raw.get("unique")),
        picklist_values=picklist,
        multi_select=kind == "multiselectpicklist",
    )


def _lookup_of(value: Any) -> str | None:
    """The record id a lookup value names (``{"name", "id"}`` or a bare id), else None."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    return None


def _id_order(record_id: Any) -> tuple[int, str]:
    text = str(record_id)
    return (int(text), text) if text.isdigit() else (0, text)


@dataclass(frozen=True)
class ReadCursor:
    """Where an incremental read resumes: keyset positions and the deletions watermark.

    Attributes:
        modified: read Leads whose ``Modified_Time`` is at or after this second (None: all).
        after_id: within the second ``modified``, only ids above this one (None: the whole
            second). Set while a read is under way, from the last record of a page.
        deleted_since: deletions after this time are still to be reported (None: all).
        deals_modified: ``modified`` of the Deals read (None: all).
        deals_after_id: ``after_id`` of the Deals read.
        contacts_modified: ``modified`` of the Contacts read (None: all).
        contacts_after_id: ``after_id`` of the Contacts read.
    """

    modified: datetime | None = None
    after_id: int | None = None
    deleted_since: datetime | None = None
    deals_modified: datetime | None = None
    deals_after_id: int | None = None
    contacts_modified: datetime | None = None
    contacts_after_id: int | None = None

    def encode(self) -> str:
        """``<modified>|<after id>|<deleted since>``, then ``|<deals modified>|<deals after
        id>`` once Deals are read, then ``|<contacts modified>|<contacts after id>`` once
        Contacts are read; empty parts for None."""
        parts = [
            _iso(self.modified) if self.modified is not None else "",
            str(self.after_id) if self.after_id is not None else "",
            _iso(self.deleted_since) if self.deleted_since is not None else "",
        ]
        tails = (
            (self.deals_modified, self.deals_after_id),
            (self.contacts_modified, self.contacts_after_id),
        )
        wanted: Sequence[tuple[datetime | None, int | None]]
        if self.contacts_modified is not None or self.contacts_after_id is not None:
            wanted = tails
        elif self.deals_modified is not None or self.deals_after_id is not None:
            wanted = tails[:1]
        else:
            wanted = ()
        for moment, after in wanted:
            parts.append(_iso(moment) if moment is not None else "")
            parts.append(str(after) if after is not None else "")
        return "|".join(parts)

    @classmethod
    def decode(cls, cursor: str) -> ReadCursor:
        """The cursor ``encode`` wrote; also a cursor without the Deals parts (before Deals
        were read: they are read from the start), one without the Contacts parts (before
        Contacts were followed: they are read from the Leads' position, not from the start,
        so an upgrade does not walk every Contact of the org; ``sync --full`` does) and a
        wave-1 cursor ``<time>|<id>`` (the newest record read), resumed from the start of its
        second. ValueError naming it otherwise."""
        parts = cursor.split("|")
        if len(parts) == 2:  # wave 1: the newest (Modified_Time, id) read
            moment = _parse_time(parts[0])
            if moment is not None:
                return cls(moment, None, moment, contacts_modified=moment)
        elif len(parts) in (3, 5, 7):
            padded = [*parts, "", "", "", ""][:7]
            modified, after, deleted, deals_modified, deals_after = padded[:5]
            contacts_modified, contacts_after = padded[5:]
            time_texts = (modified, deleted, deals_modified, contacts_modified)
            times = [_parse_time(text) if text else None for text in time_texts]
            bad_time = any(
                text and moment is None for text, moment in zip(time_texts, times, strict=True)
            )
            ids = (after, deals_after, contacts_after)
            if not bad_time and all(not t or t.isdigit() for t in ids):
                contacts_from = times[3] if len(parts) == 7 else times[0]
                return cls(
                    times[0],
                    int(after) if after else None,
                    times[1],
                    times[2],
                    int(deals_after) if deals_after else None,
                    contacts_from,
                    int(contacts_after) if contacts_after else None,
                )
        raise ValueError(
            f"not a Zoho read cursor: {cursor!r} (expected '<ISO time>|<id>|<ISO time>"
            "|<ISO time>|<id>|<ISO time>|<id>')"
        )


def keyset_condition(cursor: ReadCursor | None) -> str:
    """The COQL where-condition of the Leads after ``cursor`` in (Modified_Time, id) order."""
    if cursor is None:
        return keyset_where(None, None)
    return keyset_where(cursor.modified, cursor.after_id)


def keyset_where(modified: datetime | None, after_id: int | None) -> str:
    """The COQL where-condition of the records after (``modified``, ``after_id``) in
    (Modified_Time, id) order; every record for no ``modified``."""
    if modified is None:
        return "id is not null"
    second = coql_literal(_iso(modified))
    if after_id is None:
        return f"Modified_Time >= {second}"
    return f"(Modified_Time > {second}) or ((Modified_Time = {second}) and (id > {after_id}))"


def _server_time(response: httpx.Response) -> datetime:
    """When the system answered (its ``Date`` header), else this machine's clock."""
    header = response.headers.get("date")
    if header:
        try:
            moment = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(UTC)
    return datetime.now(UTC)


def unsendable(ref: str, fields: Mapping[str, Any], system: str = "zoho") -> Rejected | None:
    """Why a record cannot be sent as JSON (naming the first such field), or None.

    A lone surrogate (text that is not valid Unicode) fails UTF-8 encoding, NaN and infinity
    are not JSON numbers, and a date or set is no JSON value: each would fail the whole batch
    request, so the record is refused on its own instead. Plain text, whole numbers, finite
    numbers, flags and None (nearly every value) are settled without serializing them.
    """
    for name, value in fields.items():
        kind = type(value)
        if kind is str:
            if value.isascii():
                continue
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                reason: str | None = _UNICODE
            else:
                continue
        elif value is None or kind is int or kind is bool or (kind is float and isfinite(value)):
            continue
        else:
            reason = json_problem(value)
            if reason is None:
                continue
        return Rejected(
            f"record {ref}, field {name}: {reason}", system=system, record=ref, field=name
        )
    return None


_UNICODE = "text that is not valid Unicode (a lone surrogate) cannot be sent to Zoho"


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be sent in a JSON body as UTF-8, or None: what serializing it says."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return _UNICODE
    except ValueError:
        return "NaN and infinity are not JSON numbers"
    except TypeError:
        return f"a {type(value).__name__} is not a JSON value"
    return None


def _rejection_message(entry: Mapping[str, Any]) -> str:
    message = str(entry.get("message") or entry.get("code") or "refused")
    details = entry.get("details")
    if not isinstance(details, Mapping):
        return message
    extra = []
    for key, value in details.items():
        if key in ("json_path", "api_name"):
            continue
        if isinstance(value, Mapping) and "id" in value:
            value = value["id"]  # duplicate_record: the id of the record it collides with
        extra.append(f"{key}: {value}")
    return f"{message} ({', '.join(extra)})" if extra else message


class ZohoConnector(Connector[ZohoConnection]):
    """Zoho CRM Leads (or ``settings.module``) over the v7 REST API.

    Args:
        settings: the connection settings.
        name: the connection's name in the project.
        read_fields: the fields ``read_changes`` and ``lookup`` ask for besides Email,
            Last_Name and Modified_Time (at most 50 in all; default :func:`default_read_fields`).
        retry: the retry bounds (tests pass small waits).
        limiter: the rate limiter (default 200 calls per 10 s; Zoho limits concurrency and
            daily credits rather than a rate, so this only smooths bursts).
        sleep: how the policy waits between retries (tests).
        read_overlap: the look-back: a finished read's cursor is the server's time of its first
            query minus this, so a change committed late (or just before the query) is read
            again next time rather than missed; callers dedupe the overlap.
    """

    kind = "zoho"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.READ_INCREMENTAL,
            Capability.LOOKUP,
            Capability.UPSERT,
            Capability.UPDATE,
            Capability.DELETE,
            Capability.DESCRIBE,
        }
    )
    #: Insert / update / upsert / delete take at most 100 records per call.
    batch_size = 100
    api_version: ClassVar[str] = "v7"

    def __init__(
        self,
        settings: ZohoConnection,
        name: str,
        *,
        read_fields: Sequence[str] | None = None,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        read_overlap: timedelta | None = None,
        composite_reads: bool = True,
        follow_contacts: bool = True,
    ) -> None:
        super().__init__(settings, name)
        client_secret = settings.client_secret.get_secret_value()
        refresh_token = settings.refresh_token.get_secret_value()
        register_secret(client_secret, refresh_token)
        if settings.notify_token is not None:
            register_secret(settings.notify_token.get_secret_value())
        verify: ssl.SSLContext | bool = True
        if settings.ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_bundle))
        names = _field_list([*_ALWAYS_READ, *read_fields]) if read_fields else default_read_fields()
        #: the Leads fields read (COQL, search, Get Records)
        self.read_fields = tuple(n for n in names if not n.startswith(DEAL_PREFIX))
        #: the Deals fields a converted Lead is read with (``Converted_Deal.<name>`` in the
        #: mapping); none: Deals are not read at all
        self.deal_fields = tuple(
            n.removeprefix(DEAL_PREFIX) for n in names if n.startswith(DEAL_PREFIX)
        )
        #: whether a read starts with one Composite API call (False once Zoho refused it)
        self.composite_reads = composite_reads
        self._composite_key = cache_key(
            "zoho",
            "composite-refused",
            str(settings.accounts_url),
            settings.client_id,
            refresh_token,
        )
        #: whether converted Leads are followed to their Contact (its person fields)
        self.follow_contacts = follow_contacts
        #: the Leads person fields read and the Contacts fields that hold them once converted
        self.contact_fields = {
            lead: contact
            for lead, contact in CONTACT_FIELD_OF_LEAD.items()
            if lead in self.read_fields
        }
        if not _API_NAME.fullmatch(settings.module):
            raise ValueError(f"{settings.module!r} is not a Zoho module API name")
        self.module = settings.module
        if read_overlap is None:
            seconds = 2.0 if settings.read_lookback_s is None else settings.read_lookback_s
            read_overlap = timedelta(seconds=seconds)
        self.read_overlap = read_overlap
        self._unknown_fields: set[str] = set()
        self._unknown_deal_fields: set[str] = set()
        self._unknown_contact_fields: set[str] = set()
        #: ids of Leads seen converted (read or looked up): never written again
        self._converted: set[str] = set()
        self._credits = 0
        self._credits_lock = threading.Lock()
        self.tokens = ZohoTokenSource(
            settings.accounts_url,
            settings.client_id,
            client_secret,
            refresh_token,
            cache=lambda: self.credentials,
            verify=verify,
            timeout_s=settings.timeout_s,
            retry=retry,
            sleep=sleep,
        )
        self.limiter = limiter or RateLimiter(self.kind, max_calls=200, per_s=10.0, sleep=sleep)
        self.policy = self.call_policy(
            limiter=self.limiter, retry=retry, classify=classify_zoho, sleep=sleep
        )
        self._client = httpx.Client(
            auth=self.tokens.auth, verify=verify, timeout=settings.timeout_s
        )

    # -- plumbing -------------------------------------------------------------------------

    @property
    def credits_used(self) -> int:
        """API credits the calls of this connector cost (as Zoho charges them)."""
        with self._credits_lock:
            return self._credits

    @property
    def api_domain(self) -> str:
        """The API root: the token reply's ``api_domain``, else the configured one."""
        domain = self.tokens.api_domain or self.settings.api_domain
        if not domain:
            raise Fatal(
                "the Zoho token reply named no api_domain and the connection sets none",
                system=self.kind,
            )
        return domain

    def _url(self, path: str) -> str:
        if self.tokens.api_domain is None:
            self.tokens.token()  # the token (cached or new) names the data centre's API domain
        return f"{self.api_domain}/crm/{self.api_version}{path}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        describe: str,
        idempotent: bool = True,
        credits: int = 1,
        **kwargs: Any,
    ) -> httpx.Response:
        def send() -> httpx.Response:
            response = self._client.request(method, self._url(path), **kwargs)
            if response.status_code < 500 and response.status_code not in (401, 429):
                with self._credits_lock:
                    self._credits += credits
            return response

        return self.policy.execute(
            send, to_info=from_httpx, idempotent=idempotent, describe=describe
        )

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code in (204, 304) or not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def close(self) -> None:
        """Close the HTTP client (the shared token stays cached for other connectors)."""
        self._client.close()

    # -- read -----------------------------------------------------------------------------

    def answer_read(
        self, start: str | None, end: str, cursor: str | None, *, age_s: float
    ) -> str | None:
        """``end``, when every keyset position (Leads, Deals, Contacts) of ``cursor`` is
        finished and at or after ``start``'s, and so is its deletions watermark: every read
        reads all of them, in one Composite call (see :meth:`Connector.answer_read`)."""
        if start is None or cursor is None:
            return None
        try:
            first, second = ReadCursor.decode(start), ReadCursor.decode(cursor)
        except ValueError:
            return None
        for position in (first, second):
            if any(getattr(position, s.after_attr) is not None for s in _STREAMS):
                return None
        pairs = [
            (getattr(first, s.modified_attr), getattr(second, s.modified_attr)) for s in _STREAMS
        ]
        pairs.append((first.deleted_since, second.deleted_since))
        covered = all(was is None or (now is not None and now >= was) for was, now in pairs)
        return end if covered else None

    def read_changes(self, cursor: str | None) -> Iterator[Page]:
        """Leads changed since ``cursor`` in (Modified_Time, id) order, then the converted
        Leads whose Deal or Contact changed, then the Leads deleted since it.

        A keyset read over COQL (``order by Modified_Time asc, id asc``, each page resumed
        after the last record's (time, id)): a Lead edited while the pages are read moves to
        the end of the order, so it is read later in this run or in the next, never skipped as
        an offset page over a moving list would. Each page's cursor is that keyset position.

        The first page of every stream (Leads, Deals when the mapping reads a
        ``Converted_Deal.<field>``, Contacts, deleted Leads) comes from one Composite API call
        (``POST /__composite_requests``: one credit, at most 25 records a sub-request); a
        stream whose first page is full goes on with COQL pages of 200. An idle read is
        therefore that one call. Where the composite call is refused (an org or a grant
        without it), the streams are read with a call each and the deleted list only when
        due (:meth:`~leadrelay.connectors.base.Connector.deletions_due`).

        A changed Deal or Contact is followed back to the converted Lead it came from and
        emitted under that Lead's id: the Contact's values over the Lead's person fields
        (:data:`CONTACT_FIELD_OF_LEAD`) and the Deal's as ``Converted_Deal.<field>``. The last
        page carries the deletions (deleted or merged away; Zoho names no surviving record of
        a merge) and a cursor of the server's time of the first query minus
        :attr:`read_overlap`, so an idle read asks from a moment ago, not from the last record
        changed.
        """
        self.require(Capability.READ_INCREMENTAL)
        start = ReadCursor.decode(cursor) if cursor else None
        return self._read_pages(start)

    def _streams(self) -> list[_Stream]:
        """The keyset streams this connector reads: Leads, Deals (when Deal fields are read)
        and Contacts (when the Contacts are followed)."""
        streams = [_LEADS]
        if self.deal_fields:
            streams.append(_DEALS)
        if self.follow_contacts:
            streams.append(_CONTACTS)
        return streams

    def _read_pages(self, start: ReadCursor | None) -> Iterator[Page]:
        position = start or ReadCursor()
        if not self.follow_contacts:
            position = replace(position, contacts_modified=None, contacts_after_id=None)
        deleted_since = position.deleted_since
        composite = self.composite_reads and not self._composite_refused()
        first = self._first_round(position) if composite else None
        changed = False
        rows: list[RawRecord] = []
        since: datetime | None = None
        for stream in self._streams():
            if rows:
                yield Page(rows, position.encode())
                rows = []  # held by the caller as long as it needs it, not through this stream
            # The opening page is taken out of the first round (which lives to the end of the
            # read, for its deletions) and handed on, held by nothing here: the stream lets go
            # of it like of any other page.
            position, rows, found, ended = yield from self._stream_pages(
                stream,
                position,
                first.pages.pop(stream.name, None) if first is not None else None,
                first.server_time if first is not None else None,
            )
            changed = changed or found
            since = ended if stream is _LEADS else since
        assert since is not None  # the Leads stream always runs
        if first is not None and first.deletions is not None:
            deletions = first.deletions
        elif first is not None or self.deletions_due(
            None if deleted_since is None else deleted_since.timestamp(),
            since.timestamp(),
            changed=changed,
        ):
            deletions = self._deletions(deleted_since)
        else:
            # An idle read without the composite call: the deleted list waits its interval.
            yield Page(rows, replace(position, deleted_since=deleted_since).encode())
            return
        yield Page(rows, replace(position, deleted_since=since).encode(), deletions)

    def _stream_pages(
        self,
        stream: _Stream,
        position: ReadCursor,
        opening: tuple[list[RawRecord], bool] | None,
        server_time: datetime | None,
    ) -> Generator[Page, None, tuple[ReadCursor, list[RawRecord], bool, datetime]]:
        """The pages of one stream from ``position`` (the first one ``opening`` when the
        composite call read it), each but the last yielded; returns the position after the
        stream (the server's time of its first query minus the look-back), the last page's
        rows, whether any page held a change, and that position's time.

        Nothing of a yielded page (its rows, the answer they came in) is held here when the
        next page is asked for: the caller keeps a page as long as it needs it, and the next
        answer is parsed beside nothing of the last (the peak of a read is one page)."""
        found = False
        while True:
            if opening is not None:
                records, more = opening
                opening = None
            else:
                records, more, response = self._coql(
                    self._keyset_query(stream, position, COQL_LIMIT),
                    f"keyset read of changed {self._module_of(stream)}",
                    fields=self._stream_fields(stream),
                    unknown=self._unknown_of(stream),
                )
                server_time = server_time or _server_time(response)
                del response
            rows = self._followed(stream, records)
            found = found or bool(rows)
            if not more or not records:
                assert server_time is not None
                since = server_time - self.read_overlap
                return _moved(position, stream, since, None), rows, found, since
            moment, record_id = self._after(records[-1], self._module_of(stream))
            position = _moved(position, stream, moment, record_id)
            yield Page(rows, position.encode())
            del records, rows

    def _module_of(self, stream: _Stream) -> str:
        return self.module if stream is _LEADS else stream.module

    def _stream_fields(self, stream: _Stream) -> tuple[str, ...]:
        if stream is _LEADS:
            return self.read_fields
        if stream is _DEALS:
            return (*self.deal_fields, "Modified_Time")
        return (*self.contact_fields.values(), "Modified_Time")

    def _unknown_of(self, stream: _Stream) -> set[str]:
        if stream is _LEADS:
            return self._unknown_fields
        return self._unknown_deal_fields if stream is _DEALS else self._unknown_contact_fields

    def _keyset_query(
        self, stream: _Stream, position: ReadCursor, limit: int
    ) -> Callable[[Sequence[str]], str]:
        where = keyset_where(
            getattr(position, stream.modified_attr), getattr(position, stream.after_attr)
        )
        module = self._module_of(stream)

        def query(columns: Sequence[str]) -> str:
            order = ("Modified_Time asc", "id asc")
            return coql_select(columns, module, where, order_by=order, limit=limit)

        return query

    def _followed(self, stream: _Stream, records: list[RawRecord]) -> list[RawRecord]:
        """The rows a page of ``stream`` yields: Leads as read; Deals and Contacts followed
        back to the converted Leads they came from (one that none names is skipped)."""
        if stream is _LEADS:
            return records
        by_id = {str(r.get("id")): r for r in records if r.get("id") is not None}
        lookup = "Converted_Deal" if stream is _DEALS else "Converted_Contact"
        leads: list[RawRecord] = []
        for batch in _chunks(list(by_id), _DEALS_PER_SEARCH):
            leads.extend(
                self._search(
                    equals_any(lookup, batch),
                    f"search of converted {self.module} by {stream.module[:-1]}",
                    converted=True,
                )
            )
        if stream is _DEALS:
            return self._completed(leads, deals=by_id)
        return self._completed(leads, contacts=by_id)

    def _first_round(self, position: ReadCursor) -> _FirstRound | None:
        """The first page of every stream and the first page of deleted Leads in one Composite
        API call; None when Zoho refuses the call (it is not asked again by this connector).

        Composite API doc (v7): up to five sub-requests, one API credit when
        ``rollback_on_fail`` is false, at most 25 records from a COQL or Get Deleted Records
        sub-request (a COQL ``limit`` above 25 is refused with LIMIT_EXCEEDED).
        """
        streams = self._streams()
        base = f"/crm/{self.api_version}"
        subs: list[dict[str, Any]] = []
        for stream in streams:
            fields = [n for n in self._stream_fields(stream) if n not in self._unknown_of(stream)]
            query = self._keyset_query(stream, position, COMPOSITE_READ_LIMIT)(fields)
            subs.append(
                {
                    "sub_request_id": stream.name,
                    "method": "POST",
                    "uri": f"{base}/coql",
                    "body": {"select_query": query},
                }
            )
        deleted: dict[str, Any] = {
            "sub_request_id": "deleted",
            "method": "GET",
            "uri": f"{base}/{self.module}/deleted",
            "params": {"type": "all", "page": "1", "per_page": str(COMPOSITE_READ_LIMIT)},
        }
        if position.deleted_since is not None:
            deleted["headers"] = {"If-Modified-Since": _iso(position.deleted_since)}
        subs.append(deleted)
        try:
            response = self._call(
                "POST",
                "/__composite_requests",
                json={"__composite_requests": subs},
                describe="composite read of changes",
            )
        except ConnectorError as exc:
            if exc.status not in (400, 401, 403):
                raise
            _log.warning(
                "zoho refused the composite read (%s); reading with a call per module", exc
            )
            self.composite_reads = False
            # Remembered for a day (other processes of this grant too): a cron run does not
            # spend a refused call each time. A new grant (refresh token) tries it at once.
            self.credentials.put(
                self._composite_key,
                {"refused": exc.status},
                secret=self.settings.client_secret.get_secret_value(),
                expires_at=datetime.now(UTC) + COMPOSITE_RETRY_AFTER,
            )
            return None
        entries = self._json(response).get("__composite_requests")
        answers = entries if isinstance(entries, list) else []
        pages: dict[str, tuple[list[RawRecord], bool]] = {}
        for stream, entry in zip(streams, answers, strict=False):
            answered = _sub_answer(entry)
            if answered is None:
                continue
            status, body = answered
            if status == 204:
                pages[stream.name] = ([], False)
            elif status == 200:
                records = [r for r in body.get("data") or [] if isinstance(r, dict)]
                pages[stream.name] = (records, bool((body.get("info") or {}).get("more_records")))
            # Anything else (an unknown column, a limit): the stream is read directly.
        deletions = None
        if len(answers) > len(streams):
            deletions = self._first_deletions(answers[len(streams)], position.deleted_since)
        return _FirstRound(_server_time(response), pages, deletions)

    def _composite_refused(self) -> bool:
        """Whether Zoho refused this grant's composite call within the last day."""
        secret = self.settings.client_secret.get_secret_value()
        return self.credentials.get(self._composite_key, secret=secret) is not None

    def _first_deletions(self, entry: Any, since: datetime | None) -> tuple[Deletion, ...] | None:
        """The deletions of the composite call's deleted-Leads answer; None when that answer
        is not the whole list (more pages, or an error): then they are read directly."""
        answered = _sub_answer(entry)
        if answered is None:
            return None
        status, body = answered
        if status in (204, 304):
            return ()
        if status != 200 or (body.get("info") or {}).get("more_records"):
            return None
        return _deletions_of(body, since, {})

    def _completed(
        self,
        leads: Sequence[RawRecord],
        *,
        deals: Mapping[str, RawRecord] | None = None,
        contacts: Mapping[str, RawRecord] | None = None,
    ) -> list[RawRecord]:
        """``leads`` with, for the converted ones, their Contact's values over the Lead's
        person fields and their Deal's fields (``Converted_Deal.<name>``), sorted by id.

        Deals and Contacts not in ``deals`` / ``contacts`` are read by id (Get Records, one
        call per 100; none when no Lead is converted). Every converted Lead is remembered as
        one (never written again).
        """
        deal_ids = {d for d in (_lookup_of(r.get("Converted_Deal")) for r in leads) if d}
        contact_ids = {c for c in (_lookup_of(r.get("Converted_Contact")) for r in leads) if c}
        known_deals = dict(deals or {})
        known_contacts = dict(contacts or {})
        if self.deal_fields:
            missing = sorted(deal_ids - set(known_deals))
            known_deals.update(self._by_ids("Deals", missing, self.deal_fields, _DEALS))
        if self.follow_contacts:
            missing = sorted(contact_ids - set(known_contacts))
            names = tuple(self.contact_fields.values())
            known_contacts.update(self._by_ids("Contacts", missing, names, _CONTACTS))
        rows: list[RawRecord] = []
        for lead in leads:
            deal_id = _lookup_of(lead.get("Converted_Deal"))
            contact_id = _lookup_of(lead.get("Converted_Contact"))
            if lead.get("Converted__s") or deal_id or contact_id:
                self._converted.add(str(lead.get("id")))
            row = dict(lead)
            contact = known_contacts.get(contact_id or "") if self.follow_contacts else None
            if contact is not None:
                unknown = self._unknown_contact_fields
                for lead_field, contact_field in self.contact_fields.items():
                    if contact_field not in unknown:
                        row[lead_field] = contact.get(contact_field)
            deal = known_deals.get(deal_id or "")
            if deal is not None:
                row.update({f"{DEAL_PREFIX}{name}": deal.get(name) for name in self.deal_fields})
                row[f"{DEAL_PREFIX}id"] = deal_id
            rows.append(row)
        return sorted(rows, key=lambda row: _id_order(row.get("id")))

    def _by_ids(
        self, module: str, ids: Sequence[str], names: Sequence[str], stream: _Stream
    ) -> dict[str, RawRecord]:
        """Records of ``module`` by id (Get Records ``ids=``, 100 a call) with ``names``."""
        found: dict[str, RawRecord] = {}
        unknown = self._unknown_of(stream)
        for batch in _chunks(list(ids), self.batch_size):
            fields = [n for n in names if n not in unknown] or ["Modified_Time"]
            response = self._call(
                "GET",
                f"/{module}",
                params={"ids": ",".join(batch), "fields": ",".join(fields)},
                describe=f"read of {len(batch)} {module} by id",
            )
            for record in self._json(response).get("data") or []:
                if isinstance(record, dict) and record.get("id") is not None:
                    found[str(record["id"])] = record
        return found

    def _after(self, record: RawRecord, module: str) -> tuple[datetime, int]:
        """The keyset position after ``record`` (its Modified_Time and numeric id)."""
        moment = _parse_time(record.get("Modified_Time"))
        record_id = str(record.get("id") or "")
        if moment is None or not record_id.isdigit():
            raise Fatal(
                f"keyset read of {module}: record {record_id or '?'} has no Modified_Time "
                "or no numeric id to resume after",
                system=self.kind,
            )
        return moment, int(record_id)

    def _deletions(self, since: datetime | None) -> tuple[Deletion, ...]:
        """Leads deleted after ``since`` (all of them for None), every page."""
        headers = {"If-Modified-Since": _iso(since)} if since is not None else {}
        found: dict[str, Deletion] = {}
        page = 1
        while True:
            response = self._call(
                "GET",
                f"/{self.module}/deleted",
                params={"type": "all", "page": str(page), "per_page": str(PER_PAGE)},
                headers=headers,
                describe=f"read of deleted {self.module} (page {page})",
            )
            body = self._json(response)
            _deletions_of(body, since, found)
            if not body.get("data") or not (body.get("info") or {}).get("more_records"):
                return tuple(found.values())
            page += 1

    def _record_pages(
        self,
        module: str,
        params: Mapping[str, str],
        describe: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[list[RawRecord]]:
        """The non-empty pages Get Records lists for ``params``: ``page`` for the first 2,000
        records, then ``page_token``; :class:`_NoPageToken` when Zoho gives no token to go on."""
        page, token = 1, None
        while True:
            query = dict(params)
            if token is None:
                query["page"] = str(page)
            else:
                query["page_token"] = token
            response = self._call(
                "GET",
                f"/{module}",
                params=query,
                headers=dict(headers or {}),
                describe=f"{describe} (page {page})",
            )
            body = self._json(response)
            records = [r for r in body.get("data") or [] if isinstance(r, dict)]
            if not records:
                return
            yield records
            info = body.get("info") or {}
            if not info.get("more_records"):
                return
            page += 1
            if token is None and page * PER_PAGE <= PAGE_REACH:
                continue
            token = info.get("next_page_token")
            if not token:
                raise _NoPageToken(page - 1, response.status_code)

    # -- lookup ---------------------------------------------------------------------------

    def lookup(
        self, emails: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> dict[str, RawRecord]:
        """Leads by email (COQL, or search criteria for one email) and by id.

        Keyed by normalised email (the oldest Lead when several share one, the one upsert
        updates) or by id. One call per 100 keys.
        """
        self.require(Capability.LOOKUP)
        found: dict[str, RawRecord] = {}
        wanted: dict[str, None] = {}
        for email in emails or ():
            key = normalize_email(email)
            if not key:
                raise ValueError(f"lookup by email: {email!r} is blank")
            wanted.setdefault(key, None)
        for batch in _chunks(list(wanted), self.batch_size):
            # One email: a search criterion; more: one COQL query (fewer calls per batch).
            single = len(batch) == 1
            records = self._search_emails(batch) if single else self._coql_emails(batch)
            for record in sorted(records, key=lambda r: _id_order(r.get("id"))):
                key = normalize_email(str(record.get("Email") or ""))
                if key in wanted:
                    found.setdefault(key, record)
        unique_ids = list(dict.fromkeys(str(i) for i in ids or ()))
        for id_batch in _chunks(unique_ids, self.batch_size):
            # converted=both: a converted Lead is found (and known as one), not taken for gone.
            fields = [*self.read_fields, *_CONVERSION_FIELDS]
            response = self._call(
                "GET",
                f"/{self.module}",
                params={"ids": ",".join(id_batch), "fields": ",".join(fields), "converted": "both"},
                describe=f"lookup of {len(id_batch)} {self.module} by id",
            )
            records = [
                r
                for r in self._json(response).get("data") or []
                if isinstance(r, dict) and r.get("id") is not None
            ]
            for record in self._completed(records):
                found[str(record["id"])] = record
        return found

    def find_by_email(self, emails: Sequence[str]) -> list[RawRecord]:
        """Every Lead holding one of ``emails`` (Email equals, case-insensitive), duplicates
        included, oldest first; one Search Records call per 10 emails (and per 200 matches).

        ``lookup`` keeps the oldest Lead per email; this lists them all (e.g. to count the
        copies a form created). ValueError for a blank email.
        """
        wanted: dict[str, None] = {}
        for email in emails:
            key = normalize_email(email)
            if not key:
                raise ValueError(f"find_by_email: {email!r} is blank")
            wanted.setdefault(key, None)
        found: dict[str, RawRecord] = {}
        for batch in _chunks(list(wanted), MAX_SEARCH_CRITERIA):
            for record in self._search_emails(batch):
                found.setdefault(str(record.get("id")), record)
        return sorted(found.values(), key=lambda r: _id_order(r.get("id")))

    def _search_emails(self, emails: Sequence[str]) -> list[RawRecord]:
        """Search Records by Email (at most 10 emails), every page of matches."""
        return self._search(equals_any("Email", emails), f"search of {self.module} by email")

    def _search(self, criteria: str, describe: str, *, converted: bool = False) -> list[RawRecord]:
        """Search Records by ``criteria`` (at most 10 criteria), every page of matches; the
        converted Leads only (with their conversion fields) when ``converted``."""
        rows: list[RawRecord] = []
        page = 1
        fields = [*self.read_fields, *(_CONVERSION_FIELDS if converted else ())]
        while True:
            params = {
                "criteria": criteria,
                "fields": ",".join(fields),
                "per_page": str(PER_PAGE),
                "page": str(page),
            }
            if converted:
                params["converted"] = "true"
            response = self._call("GET", f"/{self.module}/search", params=params, describe=describe)
            body = self._json(response)
            records = [r for r in body.get("data") or [] if isinstance(r, dict)]
            rows.extend(records)
            more = bool((body.get("info") or {}).get("more_records"))
            # Search Records reaches only the first 2,000 matches.
            if not records or not more or (page + 1) * PER_PAGE > SEARCH_REACH:
                return rows
            page += 1

    def _coql_emails(self, emails: Sequence[str]) -> list[RawRecord]:
        rows: list[RawRecord] = []
        offset = 0
        while True:

            def query(columns: Sequence[str], offset: int = offset) -> str:
                where = coql_in("Email", emails)
                return coql_select(
                    columns,
                    self.module,
                    where,
                    order_by=("id asc",),
                    limit=COQL_LIMIT,
                    offset=offset,
                )

            page, more, _ = self._coql(
                query, f"COQL lookup of {len(emails)} {self.module} by email"
            )
            rows.extend(page)
            if not more:
                return rows
            offset += COQL_LIMIT

    def _coql(
        self,
        query: Callable[[Sequence[str]], str],
        describe: str,
        *,
        fields: Sequence[str] | None = None,
        unknown: set[str] | None = None,
    ) -> tuple[list[RawRecord], bool, httpx.Response]:
        """One COQL page over ``fields`` (the read fields): its rows, whether more follow, the
        response.

        A field the org lacks (not created, or removed by an admin) is dropped (remembered in
        ``unknown``) and the query asked again without it, rather than failing every read.
        """
        fields = self.read_fields if fields is None else fields
        unknown = self._unknown_fields if unknown is None else unknown
        while True:
            columns = [n for n in fields if n not in unknown]
            response = self._call(
                "POST",
                "/coql",
                json={"select_query": query(columns)},
                describe=describe,
                credits=coql_credits(COQL_LIMIT),
            )
            body = self._json(response)
            if response.status_code == 400:
                column = str((body.get("details") or {}).get("column_name") or "")
                if column not in columns or column in _ALWAYS_READ:
                    raise Fatal(
                        f"{describe} refused: {body.get('message')} (column {column!r})",
                        system=self.kind,
                        status=400,
                        code=str(body.get("code")),
                    )
                _log.warning("zoho has no field %s; reading without it (%s)", column, describe)
                unknown.add(column)
                continue
            rows = [r for r in body.get("data") or [] if isinstance(r, dict)]
            return rows, bool((body.get("info") or {}).get("more_records")), response

    # -- write ----------------------------------------------------------------------------

    def upsert(self, inputs: Sequence[UpsertInput]) -> list[WriteResult]:
        """Create or update Leads by Email, 100 per call; one result per input, in order.

        An input without an Email fails on its own (the duplicate check could not match it,
        so a retry would create a second Lead).
        """
        self.require(Capability.UPSERT)
        results: list[WriteResult | None] = [None] * len(inputs)
        sendable: list[int] = []
        for index, item in enumerate(inputs):
            if item.external_id is not None and str(item.external_id) in self._converted:
                results[index] = self._not_written(item.ref, str(item.external_id))
                continue
            email = item.fields.get("Email")
            refused = unsendable(item.ref, item.fields, self.kind)
            if refused is None and not (isinstance(email, str) and email.strip()):
                refused = Rejected(
                    "no Email: Leads are upserted by Email, so a record without one cannot be "
                    "matched",
                    system=self.kind,
                    record=item.ref,
                    field="Email",
                )
            if refused is None:
                sendable.append(index)
            else:
                results[index] = WriteResult.failed(item.ref, refused, item.external_id)
        for batch in _chunks(sendable, self.batch_size):
            data = [dict(inputs[i].fields) for i in batch]
            describe = f"upsert of {len(batch)} {self.module} by Email"
            # Upsert by Email is idempotent: sending it again after an ambiguous failure
            # updates the Lead the first attempt created.
            response = self._call(
                "POST",
                f"/{self.module}/upsert",
                json={"data": data, "duplicate_check_fields": ["Email"], "trigger": []},
                describe=describe,
            )
            entries = self._entries(response, len(batch), describe)
            for index, entry in zip(batch, entries, strict=True):
                results[index] = self._result(inputs[index].ref, entry, response)
        return [r for r in results if r is not None]

    def update(self, updates: Mapping[str, RawRecord]) -> list[WriteResult]:
        """Write fields to Leads by id, 100 per call; one result per id, in order.

        A Lead known to be converted (read or looked up as one) is not sent: Zoho keeps it
        read-only, its outcome lives in its Deal. One Zoho refuses as converted is likewise
        ``unchanged`` (and known from then on).
        """
        self.require(Capability.UPDATE)
        results: dict[str, WriteResult] = {}
        sendable: list[tuple[str, RawRecord]] = []
        for record_id, fields in updates.items():
            if str(record_id) in self._converted:
                results[record_id] = self._not_written(record_id, record_id)
                continue
            refused = unsendable(record_id, fields, self.kind)
            if refused is None:
                sendable.append((record_id, fields))
            else:
                results[record_id] = WriteResult.failed(record_id, refused, record_id)
        for batch in _chunks(sendable, self.batch_size):
            describe = f"update of {len(batch)} {self.module}"
            response = self._call(
                "PUT",
                f"/{self.module}",
                json={
                    "data": [{**fields, "id": record_id} for record_id, fields in batch],
                    "trigger": [],
                },
                describe=describe,
            )
            entries = self._entries(response, len(batch), describe)
            for (record_id, _), entry in zip(batch, entries, strict=True):
                if entry.get("code") == CONVERTED_CODE:
                    self._converted.add(str(record_id))
                    results[record_id] = self._not_written(record_id, record_id)
                else:
                    results[record_id] = self._result(record_id, entry, response)
        return [results[record_id] for record_id in updates]

    def _not_written(self, ref: str, record_id: str) -> WriteResult:
        """The result of a write to converted Lead ``record_id``: not sent, ``unchanged``."""
        _log.info("zoho %s %s is converted; not written", self.module, record_id)
        return WriteResult(ref, record_id, WriteOutcome.UNCHANGED)

    def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        """Delete Leads by id, 100 per call; an id already gone is ``unchanged``."""
        self.require(Capability.DELETE)
        results: list[WriteResult] = []
        for batch in _chunks([str(i) for i in ids], self.batch_size):
            describe = f"delete of {len(batch)} {self.module}"
            response = self._call(
                "DELETE",
                f"/{self.module}",
                params={"ids": ",".join(batch)},
                describe=describe,
            )
            entries = self._entries(response, len(batch), describe)
            for record_id, entry in zip(batch, entries, strict=True):
                details = entry.get("details")
                gone = (
                    entry.get("code") == "INVALID_DATA"
                    and isinstance(details, Mapping)
                    and str(details.get("id")) == record_id
                )
                if gone:
                    results.append(WriteResult(record_id, record_id, WriteOutcome.UNCHANGED))
                else:
                    results.append(self._result(record_id, entry, response))
        return results

    def _entries(
        self, response: httpx.Response, expected: int, describe: str
    ) -> list[Mapping[str, Any]]:
        body = self._json(response)
        data = body.get("data")
        entries = [e for e in data if isinstance(e, Mapping)] if isinstance(data, list) else []
        if len(entries) != expected:
            first = entries[0] if entries else body
            raise Rejected(
                f"{describe}: {_rejection_message(first) if first else 'no per-record results'}"
                f" ({len(entries)} results for {expected} records)",
                system=self.kind,
                status=response.status_code,
                url=str(response.request.url),
                method=response.request.method,
                code=str(first.get("code")) if first else None,
            )
        return entries

    def _result(self, ref: str, entry: Mapping[str, Any], response: httpx.Response) -> WriteResult:
        details = entry.get("details")
        details = details if isinstance(details, Mapping) else {}
        if entry.get("code") == "SUCCESS" or entry.get("status") == "success":
            record_id = details.get("id")
            outcome = (
                WriteOutcome.CREATED if entry.get("action") == "insert" else WriteOutcome.UPDATED
            )
            return WriteResult(ref, str(record_id) if record_id else None, outcome)
        field = details.get("api_name")
        error = Rejected(
            _rejection_message(entry),
            system=self.kind,
            record=ref,
            field=str(field) if field else None,
            code=str(entry.get("code")) if entry.get("code") else None,
            status=response.status_code,
            url=str(response.request.url),
            method=response.request.method,
        )
        duplicate = details.get("duplicate_record")
        existing = duplicate.get("id") if isinstance(duplicate, Mapping) else None
        return WriteResult.failed(ref, error, str(existing) if existing else None)

    # -- handoff --------------------------------------------------------------------------

    def create_task(self, record_id: str, subject: str, body: str, due: datetime) -> str:
        """Create a task on Lead ``record_id``, due on ``due``'s UTC date, high priority, not
        started, owned by the Lead's owner; return the task's id.

        Two calls: the Lead's read by id (its Owner; a Lead that does not exist is refused
        here, naming it) and ``POST /Tasks`` with ``What_Id`` = the Lead and ``$se_module``.
        When Zoho refuses the owner (e.g. a deactivated user), the task is created once more
        without one (it goes to the API user): the refusal is definite, so nothing was created.
        Not retried on an unclear failure: a second try could create a second task.
        """
        record_id = str(record_id).strip()
        if not record_id.isdigit():
            # Zoho record ids are numeric; anything else would change the request's path.
            raise Rejected(
                f"cannot create a task on {self.module} {record_id!r}: not a Zoho record id",
                system=self.kind,
                record=record_id,
            )
        response = self._call(
            "GET",
            f"/{self.module}/{record_id}",
            params={"fields": "Owner"},
            describe=f"read of {self.module} {record_id} for a task",
        )
        rows = [r for r in self._json(response).get("data") or [] if isinstance(r, dict)]
        if not rows:
            # Get Records by id: 204 (no body) when there is no such record.
            raise Rejected(
                f"cannot create a task on {self.module} {record_id}: no such record",
                system=self.kind,
                record=record_id,
                status=response.status_code,
            )
        moment = due if due.tzinfo is not None else due.replace(tzinfo=UTC)
        task: dict[str, Any] = {
            "Subject": subject[:TASK_SUBJECT_MAX],
            "Description": body[:TASK_DESCRIPTION_MAX],
            "Due_Date": moment.astimezone(UTC).date().isoformat(),
            "Status": "Not Started",
            "Priority": "High",
            "What_Id": {"id": record_id},
            "$se_module": self.module,
        }
        refused = unsendable(record_id, task, self.kind)
        if refused is not None:
            raise refused
        owner = rows[0].get("Owner")
        owner_id = owner.get("id") if isinstance(owner, Mapping) else None
        if owner_id:
            task["Owner"] = {"id": str(owner_id)}
        entry, sent = self._insert_task(task, record_id)
        details = entry.get("details")
        refused_field = details.get("api_name") if isinstance(details, Mapping) else None
        if "Owner" in task and entry.get("status") != "success" and refused_field == "Owner":
            _log.warning(
                "zoho refused owner %s for a task on %s %s; creating it without one",
                owner_id,
                self.module,
                record_id,
            )
            del task["Owner"]
            entry, sent = self._insert_task(task, record_id)
        result = self._result(record_id, entry, sent)
        if result.error is not None:
            raise result.error
        details = entry.get("details")
        task_id = details.get("id") if isinstance(details, Mapping) else None
        if not task_id:
            raise Rejected(
                f"Zoho created no task on {self.module} {record_id} (no id in the answer)",
                system=self.kind,
                record=record_id,
            )
        return str(task_id)

    def _insert_task(
        self, task: dict[str, Any], record_id: str
    ) -> tuple[Mapping[str, Any], httpx.Response]:
        describe = f"creation of a task on {self.module} {record_id}"
        response = self._call(
            "POST",
            "/Tasks",
            json={"data": [task], "trigger": []},
            describe=describe,
            idempotent=False,
        )
        return self._entries(response, 1, describe)[0], response

    def account_owners(self) -> list[tuple[str, str]]:
        """Every Account with both a Website and an Owner, as (Website exactly as Zoho holds
        it, owner id), oldest first (Created_Time, then id).

        Get Records with 200 per page: ``page`` for the first 2,000 Accounts, ``page_token``
        beyond (one call per 200 Accounts; an empty module is a bare 204).
        """
        params = {
            "fields": "Website,Owner,Created_Time",
            "per_page": str(PER_PAGE),
            "sort_by": "id",
            "sort_order": "asc",
        }
        describe = "list of Accounts"
        records: list[RawRecord] = []
        try:
            for page in self._record_pages("Accounts", params, describe):
                records.extend(page)
        except _NoPageToken as stop:
            raise Fatal(
                f"{describe}: Zoho gave no page_token, so records beyond "
                f"{stop.page * PER_PAGE} cannot be read",
                system=self.kind,
                status=stop.status,
            ) from None
        rows: list[tuple[tuple[datetime, tuple[int, str]], str, str]] = []
        for record in records:
            website = record.get("Website")
            owner = record.get("Owner")
            owner_id = owner.get("id") if isinstance(owner, Mapping) else None
            if not isinstance(website, str) or not website.strip() or not owner_id:
                continue
            created = _parse_time(record.get("Created_Time")) or datetime.max.replace(tzinfo=UTC)
            rows.append(((created, _id_order(record.get("id"))), website, str(owner_id)))
        rows.sort(key=lambda row: row[0])
        return [(website, owner_id) for _, website, owner_id in rows]

    # -- metadata -------------------------------------------------------------------------

    def describe(self) -> Schema:
        """The module's fields from ``settings/fields``.

        Pick lists carry their ``actual_value`` list. Zoho's Insert Records doc says a pick
        list also accepts a value it does not list (it is added), so the values are the
        known ones, not a hard limit of the API.
        """
        self.require(Capability.DESCRIBE)
        response = self._call(
            "GET",
            "/settings/fields",
            params={"module": self.module},
            describe=f"describe of {self.module}",
        )
        fields: dict[str, FieldInfo] = {}
        for raw in self._json(response).get("fields") or []:
            if isinstance(raw, dict) and raw.get("api_name"):
                info = _field_info(raw)
                fields[info.name] = info
        if self.deal_fields:
            fields.update(self._deal_schema())
        return Schema(self.module, fields)

    def _deal_schema(self) -> dict[str, FieldInfo]:
        """The Deals fields as read-only ``Converted_Deal.<name>`` fields of the module (and
        ``Converted_Deal.id``): what a converted Lead is read with."""
        response = self._call(
            "GET", "/settings/fields", params={"module": "Deals"}, describe="describe of Deals"
        )
        fields = {
            f"{DEAL_PREFIX}id": FieldInfo(
                name=f"{DEAL_PREFIX}id", label="Deal Id", type="bigint", read_only=True
            )
        }
        for raw in self._json(response).get("fields") or []:
            if isinstance(raw, dict) and raw.get("api_name"):
                info = _field_info(raw)
                name = f"{DEAL_PREFIX}{info.name}"
                fields[name] = replace(
                    info, name=name, label=f"Deal {info.label}", required=False, read_only=True
                )
        return fields

    def create_fields(self, specs: Sequence[CustomFieldSpec]) -> list[str]:
        """Create the custom fields of ``specs`` the module lacks; return their API names.

        One ``POST settings/fields`` a missing field (:mod:`leadrelay.connectors.zoho.fields`).
        A refusal is checked against a fresh describe: a field that exists by now (made
        meanwhile, or a duplicate label) is left as it is; any other refusal is raised.
        """
        existing = set(self.describe().fields)
        created: list[str] = []
        for spec in specs:
            if spec.name in existing:
                continue
            try:
                response = self._call(
                    "POST",
                    "/settings/fields",
                    params={"module": self.module},
                    json={"fields": [custom_field_body(spec)]},
                    describe=f"creation of custom field {self.module}.{spec.name}",
                    idempotent=False,
                )
            except Rejected:
                if spec.name in self.describe().fields:
                    continue
                raise
            [answer] = self._json(response).get("fields") or [{}]
            if not isinstance(answer, dict) or answer.get("status") != "success":
                message = answer.get("message") if isinstance(answer, dict) else None
                raise Rejected(
                    str(message or "the field was not created"),
                    system=self.kind,
                    record=spec.name,
                    code=str(answer.get("code")) if isinstance(answer, dict) else None,
                )
            created.append(spec.name)
        return created

    def users(self, kind: str = "ActiveUsers") -> list[dict[str, Any]]:
        """CRM users (``type`` = ActiveUsers, AllUsers, AdminUsers …), for owner routing."""
        users: list[dict[str, Any]] = []
        page = 1
        while True:
            response = self._call(
                "GET",
                "/users",
                params={"type": kind, "page": str(page), "per_page": str(PER_PAGE)},
                describe=f"list of {kind}",
            )
            body = self._json(response)
            users.extend(u for u in body.get("users") or [] if isinstance(u, dict))
            if not (body.get("info") or {}).get("more_records"):
                return users
            page += 1

    def health(self) -> Health:
        """One call (the first active user): credentials, the resolved API domain, budget."""
        details: dict[str, Any] = {"accounts_url": self.tokens.accounts_url}
        try:
            response = self._call(
                "GET",
                "/users",
                params={"type": "ActiveUsers", "per_page": "1"},
                describe="health check",
            )
        except AuthError as exc:
            return Health(
                ok=False,
                system=self.kind,
                instance=self.tokens.api_domain or self.settings.api_domain,
                credentials_valid=False,
                details={**details, "error": str(exc)},
            )
        except ConnectorError as exc:
            return Health(
                ok=False,
                system=self.kind,
                instance=self.tokens.api_domain or self.settings.api_domain,
                credentials_valid=self.tokens.refreshes > 0,
                details={**details, "error": str(exc)},
            )
        details["credits_used_by_this_connection"] = self.credits_used
        details["token_refreshes"] = self.tokens.refreshes
        details["users_found"] = len(self._json(response).get("users") or [])
        return Health(
            ok=True,
            system=self.kind,
            instance=self.api_domain,
            credentials_valid=True,
            budget_used=self.limiter.budget_used,
            budget_max=self.limiter.budget_max,
            details=details,
        )
