"""The Zoho CRM connector (v7 REST API over httpx).

* Auth: the refresh-token grant against the data centre's accounts server; the access token
  and the ``api_domain`` the token reply names (the API root) are kept for their lifetime in
  the connector's credential cache, shared across processes when it is the state store's
  (:mod:`leadrelay.connectors.zoho.auth`).
* ``read_changes``: a keyset read over COQL in (``Modified_Time``, ``id``) order, then (when
  the mapping reads a ``Converted_Deal.<field>``) the Deals the same way, each followed back to
  the converted Lead it came from and emitted under that Lead's id with the Deal's fields, then
  the deleted Leads (``GET /Leads/deleted``); the cursor ends at the server's time minus a
  look-back.
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

import importlib.resources
import json
import re
import ssl
import threading
import time
import tomllib
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
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


def _mapping_fields() -> list[str]:
    """The Zoho field names the built-in mapping file uses (empty when there is none)."""
    try:
        resource = importlib.resources.files("leadrelay.mappings").joinpath("zoho.toml")
        data = tomllib.loads(resource.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError, OSError, tomllib.TOMLDecodeError):
        return []
    names: list[str] = []
    key = data.get("key")
    if isinstance(key, str):
        names.append(key)
    fields = data.get("fields")
    if not isinstance(fields, dict):
        return names
    for spec in fields.values():
        if isinstance(spec, str):
            names.append(spec)
        elif isinstance(spec, dict):
            if isinstance(spec.get("field"), str):
                names.append(spec["field"])
            many = spec.get("fields")
            if isinstance(many, list):
                names.extend(str(name) for name in many if isinstance(name, str))
    return names


def default_read_fields() -> tuple[str, ...]:
    """The fields read by default: those of the Zoho mapping file, else a built-in list."""
    names = _mapping_fields() or list(DEFAULT_READ_FIELDS)
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
    """

    modified: datetime | None = None
    after_id: int | None = None
    deleted_since: datetime | None = None
    deals_modified: datetime | None = None
    deals_after_id: int | None = None

    def encode(self) -> str:
        """``<modified>|<after id>|<deleted since>``, then ``|<deals modified>|<deals after
        id>`` once Deals are read; empty parts for None."""
        parts = [
            _iso(self.modified) if self.modified is not None else "",
            str(self.after_id) if self.after_id is not None else "",
            _iso(self.deleted_since) if self.deleted_since is not None else "",
        ]
        if self.deals_modified is not None or self.deals_after_id is not None:
            parts.append(_iso(self.deals_modified) if self.deals_modified is not None else "")
            parts.append(str(self.deals_after_id) if self.deals_after_id is not None else "")
        return "|".join(parts)

    @classmethod
    def decode(cls, cursor: str) -> ReadCursor:
        """The cursor ``encode`` wrote; also a cursor without the Deals parts (before Deals
        were read: they are read from the start) and a wave-1 cursor ``<time>|<id>`` (the
        newest record read), resumed from the start of its second. ValueError naming it
        otherwise."""
        parts = cursor.split("|")
        if len(parts) == 2:  # wave 1: the newest (Modified_Time, id) read
            moment = _parse_time(parts[0])
            if moment is not None:
                return cls(moment, None, moment)
        elif len(parts) in (3, 5):
            modified, after, deleted, deals_modified, deals_after = [*parts, "", ""][:5]
            time_texts = (modified, deleted, deals_modified)
            times = [_parse_time(text) if text else None for text in time_texts]
            bad_time = any(
                text and moment is None for text, moment in zip(time_texts, times, strict=True)
            )
            if not bad_time and all(not t or t.isdigit() for t in (after, deals_after)):
                return cls(
                    times[0],
                    int(after) if after else None,
                    times[1],
                    times[2],
                    int(deals_after) if deals_after else None,
                )
        raise ValueError(
            f"not a Zoho read cursor: {cursor!r} (expected '<ISO time>|<id>|<ISO time>"
            "|<ISO time>|<id>')"
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
    request, so the record is refused on its own instead.
    """
    for name, value in fields.items():
        try:
            json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            reason = "text that is not valid Unicode (a lone surrogate) cannot be sent to Zoho"
        except ValueError:
            reason = "NaN and infinity are not JSON numbers"
        except TypeError:
            reason = f"a {type(value).__name__} is not a JSON value"
        else:
            continue
        return Rejected(
            f"record {ref}, field {name}: {reason}", system=system, record=ref, field=name
        )
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
        if not _API_NAME.fullmatch(settings.module):
            raise ValueError(f"{settings.module!r} is not a Zoho module API name")
        self.module = settings.module
        if read_overlap is None:
            seconds = 2.0 if settings.read_lookback_s is None else settings.read_lookback_s
            read_overlap = timedelta(seconds=seconds)
        self.read_overlap = read_overlap
        self._unknown_fields: set[str] = set()
        self._unknown_deal_fields: set[str] = set()
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

    def read_covers(self, earlier: str | None, later: str | None) -> bool:
        """Both keyset positions (Leads, Deals) of ``later`` are finished and at or after
        ``earlier``'s, and so is its deletions watermark (see :meth:`Connector.read_covers`)."""
        if earlier is None or later is None:
            return False
        try:
            first, second = ReadCursor.decode(earlier), ReadCursor.decode(later)
        except ValueError:
            return False
        if first.after_id is not None or second.after_id is not None:
            return False
        if first.deals_after_id is not None or second.deals_after_id is not None:
            return False
        return all(
            was is None or (now is not None and now >= was)
            for was, now in (
                (first.modified, second.modified),
                (first.deleted_since, second.deleted_since),
                (first.deals_modified, second.deals_modified),
            )
        )

    def read_changes(self, cursor: str | None) -> Iterator[Page]:
        """Leads changed since ``cursor`` in (Modified_Time, id) order, 200 per page, then the
        Leads deleted since it.

        A keyset read over COQL (``order by Modified_Time asc, id asc``, each page resumed
        after the last record's (time, id)): a Lead edited while the pages are read moves to
        the end of the order, so it is read later in this run or in the next, never skipped as
        an offset page over a moving list would. Each page's cursor is that keyset position.
        The last page carries the deletions (``GET /{module}/deleted``: deleted or merged away;
        Zoho names no surviving record of a merge) when they are due
        (:meth:`~leadrelay.connectors.base.Connector.deletions_due`: the read found changes, or
        :attr:`deletions_every_s` passed since the last deletion read) and a cursor of the
        server's time of the first query minus :attr:`read_overlap`, so an idle read asks from
        a moment ago, not from the last record changed.
        """
        self.require(Capability.READ_INCREMENTAL)
        start = ReadCursor.decode(cursor) if cursor else None
        return self._read_pages(start)

    def _read_pages(self, start: ReadCursor | None) -> Iterator[Page]:
        position = start or ReadCursor()
        deleted_since = position.deleted_since
        server_time: datetime | None = None
        changed = False
        while True:
            condition = keyset_condition(position)

            def query(columns: Sequence[str], where: str = condition) -> str:
                order = ("Modified_Time asc", "id asc")
                return coql_select(columns, self.module, where, order_by=order, limit=COQL_LIMIT)

            rows, more, response = self._coql(query, f"keyset read of changed {self.module}")
            if server_time is None:
                server_time = _server_time(response)
            if not more or not rows:
                break
            moment, record_id = self._after(rows[-1], self.module)
            position = replace(position, modified=moment, after_id=record_id)
            changed = True
            yield Page(rows, position.encode())
        since = server_time - self.read_overlap
        position = replace(position, modified=since, after_id=None)
        changed = changed or bool(rows)
        if self.deal_fields:
            if rows:
                yield Page(rows, position.encode())
            position, rows, followed = yield from self._deal_pages(position)
            changed = changed or followed
        last_read = None if deleted_since is None else deleted_since.timestamp()
        if not self.deletions_due(last_read, since.timestamp(), changed=changed):
            # An idle read costs its queries: the deleted list waits for its interval.
            yield Page(rows, replace(position, deleted_since=deleted_since).encode())
            return
        deletions = self._deletions(deleted_since)
        yield Page(rows, replace(position, deleted_since=since).encode(), deletions)

    def _deal_pages(
        self, position: ReadCursor
    ) -> Generator[Page, None, tuple[ReadCursor, list[RawRecord], bool]]:
        """The converted Leads whose Deal changed since ``position``, with the Deal's fields,
        a page per COQL page of Deals but the last; returns the position after them (the
        server's time of the first query minus the look-back), the last page's records, and
        whether any page held a converted Lead (a change, for :meth:`deletions_due`).

        A Deal no converted Lead names (made by hand) is skipped.
        """
        server_time: datetime | None = None
        followed = False
        while True:
            condition = keyset_where(position.deals_modified, position.deals_after_id)

            def query(columns: Sequence[str], where: str = condition) -> str:
                order = ("Modified_Time asc", "id asc")
                return coql_select(columns, "Deals", where, order_by=order, limit=COQL_LIMIT)

            deals, more, response = self._coql(
                query,
                "keyset read of changed Deals",
                fields=(*self.deal_fields, "Modified_Time"),
                unknown=self._unknown_deal_fields,
            )
            if server_time is None:
                server_time = _server_time(response)
            rows = self._converted_leads(deals)
            followed = followed or bool(rows)
            if not more or not deals:
                since = server_time - self.read_overlap
                return replace(position, deals_modified=since, deals_after_id=None), rows, followed
            moment, record_id = self._after(deals[-1], "Deals")
            position = replace(position, deals_modified=moment, deals_after_id=record_id)
            yield Page(rows, position.encode())

    def _converted_leads(self, deals: Sequence[RawRecord]) -> list[RawRecord]:
        """The converted Leads the ``deals`` came from, each with its Deal's fields.

        Search Records over the converted Leads by ``Converted_Deal``, 10 Deals a call.
        Unverified: that Search takes ``converted=true`` and an ``equals`` criterion on the
        ``Converted_Deal`` lookup by id, as Get Records takes ``converted``.
        """
        by_id = {str(deal.get("id")): deal for deal in deals if deal.get("id") is not None}
        leads: list[RawRecord] = []
        for batch in _chunks(list(by_id), _DEALS_PER_SEARCH):
            leads.extend(
                self._search(
                    equals_any("Converted_Deal", batch),
                    f"search of converted {self.module} by Deal",
                    converted=True,
                )
            )
        return self._with_deals(leads, by_id)

    def _with_deals(
        self, leads: Sequence[RawRecord], deals: Mapping[str, RawRecord]
    ) -> list[RawRecord]:
        """The converted ``leads`` each with its Deal's fields (``Converted_Deal.<name>``) from
        ``deals`` (Deal id → Deal); every converted Lead is remembered as one."""
        rows: list[RawRecord] = []
        for lead in leads:
            deal_id = _lookup_of(lead.get("Converted_Deal"))
            if lead.get("Converted__s") or deal_id:
                self._converted.add(str(lead.get("id")))
            deal = deals.get(deal_id or "")
            if deal is None:
                rows.append(lead)
                continue
            fields = {f"{DEAL_PREFIX}{name}": deal.get(name) for name in self.deal_fields}
            rows.append({**lead, **fields, f"{DEAL_PREFIX}id": deal_id})
        return sorted(rows, key=lambda row: _id_order(row.get("id")))

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
            entries = [e for e in body.get("data") or [] if isinstance(e, dict)]
            for entry in entries:
                record_id = str(entry.get("id") or "")
                at = _parse_time(entry.get("deleted_time"))
                if record_id and (since is None or at is None or at > since):
                    found.setdefault(record_id, Deletion(record_id, None, at))
            if not entries or not (body.get("info") or {}).get("more_records"):
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
            for record in self._deals_of(records):
                found[str(record["id"])] = record
        return found

    def _deals_of(self, leads: Sequence[RawRecord]) -> list[RawRecord]:
        """``leads`` with, for the converted ones, their Deal's fields (one Get Records call
        per 100 Deals; none when no Lead is converted or no Deal field is read)."""
        deal_ids = [d for d in (_lookup_of(r.get("Converted_Deal")) for r in leads) if d]
        deals: dict[str, RawRecord] = {}
        if self.deal_fields:
            for batch in _chunks(list(dict.fromkeys(deal_ids)), self.batch_size):
                names = [n for n in self.deal_fields if n not in self._unknown_deal_fields]
                response = self._call(
                    "GET",
                    "/Deals",
                    params={"ids": ",".join(batch), "fields": ",".join(names or ["Stage"])},
                    describe=f"read of {len(batch)} Deals by id",
                )
                for deal in self._json(response).get("data") or []:
                    if isinstance(deal, dict) and deal.get("id") is not None:
                        deals[str(deal["id"])] = deal
        return self._with_deals(leads, deals)

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
