"""The HubSpot connector: contacts through hubspot-api-client (CRM v3).

* Auth: a private-app token, or OAuth (refresh token → 30-minute access tokens, refreshed
  before they expire and once after a 401; HubSpot says a 401 is no reliable signal).
* Writes: ``batch/upsert`` by ``idProperty=email`` (emails lower-cased: HubSpot matches
  exactly), 100 per call, each input with an ``objectWriteTraceId`` so one bad record is a
  207 entry instead of failing the batch. A whole-batch 400 is narrowed down by splitting
  the batch (bounded), and a 409 ``Existing ID: N`` becomes an update of N.
* Lifecycle stage only moves forward on HubSpot: a backward write is silently ignored.
  :meth:`HubSpotConnector.force_lifecycle_stage` clears it and sets it in two requests.
* Incremental reads: search on ``lastmodifieddate`` (one sort), keyset-paged, the cursor kept a
  look-back behind the server's clock; archived contacts and merges reported as deletions (see
  :meth:`HubSpotConnector.read_changes`). A first (or ``--full``) read walks the list endpoint
  instead (100 a page under the burst limit, not search's 5 per second).
* ``describe()`` is kept in the connection's credential cache for an hour.
* Accounts: :meth:`HubSpotConnector.account_owners` reads the companies' domains and owners
  (the list endpoint, 100 per page) for routing leads to their account's owner.
* Rate limits: 190 calls per 10 s (kept honest by ``X-HubSpot-RateLimit-*``) and search's own
  5 per second.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

from leadrelay.config import HubSpotConnection
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
from leadrelay.connectors.credentials import (
    CredentialCache,
    MemoryCredentialCache,
    cache_key,
    process_cache,
)
from leadrelay.connectors.errors import AuthError, ConnectorError, Rejected, register_secret
from leadrelay.connectors.hubspot.client import (
    HubSpotApis,
    HubSpotResponse,
    classify_hubspot,
    classify_token,
    error_info,
    existing_id,
    explain,
)
from leadrelay.connectors.hubspot.deals import (
    DEAL_MODIFIED,
    choose_deal,
    epoch_ms,
    join_cursor,
    outcome_fields,
    split_cursor,
)
from leadrelay.connectors.hubspot.fields import (
    ADDITIONAL_EMAILS,
    CREATED,
    DEAL_PREFIX,
    DEAL_REQUIRED_READ,
    EMAIL,
    LAST_MODIFIED,
    LIFECYCLE_STAGE,
    MERGED_IDS,
    OWNER,
    RECORD_ID,
    REQUIRED_READ,
    PropertySpec,
    custom_property_specs,
    default_read_properties,
)
from leadrelay.connectors.policy import (
    RateLimiter,
    RefreshingAuth,
    RetryPolicy,
    connector_logger,
)

__all__ = ["HubSpotConnector", "HubSpotOwner"]

T = TypeVar("T")

_CONTACTS = "/crm/v3/objects/contacts"
_TASKS = "/crm/v3/objects/tasks"
_COMPANIES = "/crm/v3/objects/companies"
_DEALS = "/crm/v3/objects/deals"
#: The company properties :meth:`HubSpotConnector.account_owners` reads.
_COMPANY_DOMAIN, _COMPANY_WEBSITE = "domain", "website"
#: HubSpot's HUBSPOT_DEFINED association type of task → contact.
TASK_TO_CONTACT = 204
_PROPERTIES = "/crm/v3/properties/contacts"
_NO_EMAIL = "HubSpot upserts by email; the record has none"
#: Refusals that mean the kept contact properties are out of date.
_SCHEMA_ERRORS = frozenset({"PROPERTY_DOESNT_EXIST", "INVALID_OPTION", "READ_ONLY_VALUE"})

logger = connector_logger("hubspot")


@dataclass(frozen=True)
class HubSpotOwner:
    """A HubSpot user who can own contacts (``hubspot_owner_id`` takes :attr:`id`)."""

    id: str
    email: str
    name: str


@dataclass
class _Item:
    """One record of a batch write: its position, the caller's ref, the key and values."""

    index: int
    ref: str
    key: str
    properties: dict[str, Any]


@dataclass
class _Done:
    """What a batch write did to one item: written (with ``new`` for upserts) or refused."""

    record_id: str | None = None
    new: bool | None = None
    error: Rejected | None = None
    not_found: bool = False


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _chunks_by_key(items: Sequence[_Item], size: int) -> Iterator[list[_Item]]:
    """Chunks of at most ``size`` with no key twice (HubSpot refuses duplicate ids in a batch);
    a repeated key goes to a later chunk, so the later value is written last."""
    pending = list(items)
    while pending:
        chunk: list[_Item] = []
        keys: set[str] = set()
        rest: list[_Item] = []
        for item in pending:
            if len(chunk) < size and item.key not in keys:
                chunk.append(item)
                keys.add(item.key)
            else:
                rest.append(item)
        yield chunk
        pending = rest


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _value(value: Any) -> str:
    """A property value as HubSpot takes it: every value is a string (``""`` clears)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return str(int(moment.timestamp() * 1000))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return ";".join(_value(v) for v in value)
    return str(value)


def _email_in(fields: Mapping[str, Any]) -> str | None:
    raw = fields.get(EMAIL)
    if not isinstance(raw, str):
        return None
    email = normalize_email(raw)
    return email or None


def _flatten(item: Mapping[str, Any]) -> RawRecord:
    """A SimplePublicObject as a raw record: its properties, with the id always present."""
    properties = item.get("properties")
    record: RawRecord = dict(properties) if isinstance(properties, dict) else {}
    if record.get(RECORD_ID) in (None, ""):
        record[RECORD_ID] = str(item.get("id", ""))
    if record.get(LAST_MODIFIED) in (None, "") and item.get("updatedAt"):
        record[LAST_MODIFIED] = item["updatedAt"]
    return record


def _record_id(record: Mapping[str, Any]) -> int:
    raw = str(record.get(RECORD_ID) or "0")
    return int(raw) if raw.isdigit() else 0


def _order(record: Mapping[str, Any], modified: str = LAST_MODIFIED) -> tuple[int, int]:
    return epoch_ms(record.get(modified)), _record_id(record)


def _moment(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def _merged_into(record: Mapping[str, Any]) -> list[Deletion]:
    """The ids merged into ``record`` (its ``hs_merged_object_ids``), as deletions."""
    survivor = str(record.get(RECORD_ID) or "")
    at = _moment(epoch_ms(record.get(LAST_MODIFIED)))
    merged = str(record.get(MERGED_IDS) or "").split(";")
    return [Deletion(old, survivor, at) for old in merged if old.strip() and old != survivor]


def encode_cursor(
    timestamp_ms: int, last_id: int | None, archived_read_ms: int | None = None
) -> str:
    """A read position: everything changed before ``timestamp_ms`` was delivered, and at it
    every record up to ``last_id`` (None: none at it is known to be); and the server time of the
    last read of the archived list (None: never read)."""
    last = last_id if last_id is not None else ""
    return f"{timestamp_ms}:{last}:{archived_read_ms if archived_read_ms is not None else ''}"


@dataclass(frozen=True)
class ReadCursor:
    """A decoded cursor (see :func:`encode_cursor`). ``exact`` is False for a cursor written
    before the look-back moved into the cursor (two parts: the last record read), which a read
    resumes :attr:`HubSpotConnector.look_back_ms` earlier, as it was written to be."""

    timestamp_ms: int
    last_id: int | None
    archived_read_ms: int | None
    exact: bool = True


def decode_cursor(cursor: str) -> ReadCursor:
    """The position a cursor from :func:`encode_cursor` (or an earlier version) stands for."""
    parts = cursor.split(":")
    valid = (
        len(parts) in (2, 3) and parts[0].isdigit() and all(not p or p.isdigit() for p in parts[1:])
    )
    if not valid:
        raise ValueError(
            f"invalid HubSpot cursor {cursor!r}: expected "
            "'<epoch ms>:<record id or empty>:<epoch ms of the archived list read or empty>'"
        )
    numbers = [int(p) if p else None for p in parts[1:]]
    return ReadCursor(
        int(parts[0]), numbers[0], numbers[1] if len(numbers) == 2 else None, len(parts) == 3
    )


#: How a cursor inside a full read through the list begins (see :func:`encode_list_cursor`).
_LIST_CURSOR = "list:"


def encode_list_cursor(after: str, horizon_ms: int) -> str:
    """A position inside a full read through the list endpoint: the list's ``after`` to go on
    from, and the moment (epoch ms: the server time of the read's first call minus the
    look-back) the finished read's cursor will stand for."""
    return f"{_LIST_CURSOR}{after}:{horizon_ms}"


def decode_list_cursor(cursor: str) -> tuple[str, int]:
    """``(after, horizon_ms)`` of a cursor from :func:`encode_list_cursor`."""
    after, _, horizon = cursor.removeprefix(_LIST_CURSOR).rpartition(":")
    if not cursor.startswith(_LIST_CURSOR) or not after or not horizon.isdigit():
        raise ValueError(
            f"invalid HubSpot cursor {cursor!r}: expected 'list:<after>:<epoch ms>' inside a "
            "full read"
        )
    return after, int(horizon)


def _answer_part(
    first: int | None,
    last: int | None,
    mine: int | None,
    due: Callable[[int | None, int], bool],
    then_ms: int,
    now_ms: int,
) -> tuple[int | None] | None:
    """The watermark of a part read only when ``due`` (a deletion list, a search made at
    intervals) that a read holding ``mine`` would end at, given an empty read at server time
    ``then_ms`` that moved it from ``first`` to ``last``; None (not a 1-tuple) when that read
    does not answer. The empty read read the part (it was due from ``first``, None: never
    read) from no later than ``mine``: its ``last``. Otherwise the other read would read it
    only if ``mine`` is due by ``now_ms``, and else keeps ``mine``."""
    if due(first, then_ms) and (first is None or (mine is not None and mine >= first)):
        return (last,)
    if mine is not None and not due(mine, now_ms):
        return (mine,)
    return None


class HubSpotConnector(Connector[HubSpotConnection]):
    """Contacts of one HubSpot portal (see the module docstring for the API rules obeyed).

    Args:
        settings: the ``[connections.NAME]`` settings (``kind = "hubspot"``).
        name: the connection's name.
        retry: retry bounds (default :class:`RetryPolicy`); tests pass small waits.
        read_properties: the properties :meth:`read_changes` and :meth:`lookup` return
            (default: every property the shipped mapping names); the key, id and change time
            are always added. Assignable later as :attr:`read_properties`.
        token_clock: monotonic clock of the OAuth token expiry (tests).
        look_back_s: how far behind the server's time a read's cursor stays (default
            :attr:`look_back_ms`); larger when the portal's search lags more.
        read_archived: list archived contacts in :meth:`read_changes` (default); off,
            archived contacts are not reported.
        deletions_every_s: how often a read that finds no change reads the archived list
            (default: the connection's ``deletions_every_s``, else
            :data:`~leadrelay.connectors.base.DELETIONS_EVERY_S`; 0: in every read).
        deals_every_s: how often a read that finds no changed contact still searches the
            changed deals, when the mapping reads deals (default: the connection's
            ``deals_every_s``, else :attr:`deals_every_s`; 0: in every read).
    """

    kind: ClassVar[str] = "hubspot"
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
    batch_size: ClassVar[int] = 100
    #: Search page size (HubSpot's maximum is 200).
    page_size: ClassVar[int] = 200
    #: Page size of a full read through the list endpoint (``GET /crm/v3/objects/contacts``;
    #: HubSpot's maximum there is 100).
    list_page_size: ClassVar[int] = 100
    #: Count the contacts before a full read (one search with ``limit=1``: its ``total``), so
    #: its pages say how many remain (a progress bar's total and time left).
    count_full_reads: ClassVar[bool] = True
    #: How far behind the server's clock a read's cursor stays: HubSpot's search index lags
    #: writes by "several seconds" (facts §1 "Search"), so a record written this long before
    #: a read is taken to be searchable by then. Per connector: ``look_back_s``.
    look_back_ms: int = 5_000
    #: How long a ``describe()`` (the contact properties) is reused, across runs and processes.
    properties_ttl: ClassVar[timedelta] = timedelta(hours=1)
    #: Send an objectWriteTraceId with every batch input, so HubSpot answers a bad record with
    #: a 207 entry instead of failing the whole batch (facts §1 "Records, batch, upsert").
    write_trace_ids: ClassVar[bool] = True
    #: Refresh an OAuth token this long before it expires.
    refresh_margin_s: ClassVar[float] = 120.0
    #: How often a read that found no changed contact still searches the changed deals
    #: (HubSpot as the CRM). HubSpot has no search over two object types, so reading deals in
    #: every idle run would cost a second call; a won deal also stamps its contacts (their
    #: lifecycle stage, recent deal amount and close date change), a lost one does not.
    deals_every_s: float = 900.0

    def __init__(
        self,
        settings: HubSpotConnection,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        read_properties: Sequence[str] | None = None,
        token_clock: Callable[[], float] | None = None,
        look_back_s: float | None = None,
        read_archived: bool = True,
        deletions_every_s: float | None = None,
        deals_every_s: float | None = None,
    ) -> None:
        super().__init__(settings, name)
        if deals_every_s is None:
            deals_every_s = settings.deals_every_s
        if deals_every_s is not None:
            if deals_every_s < 0:
                raise ValueError(f"deals_every_s must be 0 or more seconds, got {deals_every_s}")
            self.deals_every_s = float(deals_every_s)
        if look_back_s is None:
            look_back_s = settings.read_lookback_s
        if look_back_s is not None:
            if look_back_s < 0:
                raise ValueError(f"look_back_s must be 0 or more seconds, got {look_back_s}")
            self.look_back_ms = int(look_back_s * 1000)
        #: Whether :meth:`read_changes` lists archived contacts (one call per 100 of them).
        self.read_archived = read_archived
        if deletions_every_s is not None:
            if deletions_every_s < 0:
                raise ValueError(
                    f"deletions_every_s must be 0 or more seconds, got {deletions_every_s}"
                )
            self.deletions_every_s = deletions_every_s
        register_secret(
            *(
                secret.get_secret_value()
                for secret in (
                    settings.access_token,
                    settings.client_secret,
                    settings.refresh_token,
                    settings.app_client_secret,
                )
                if secret is not None
            )
        )
        self.base_url = str(settings.base_url).rstrip("/")
        self.read_properties: list[str] = (
            list(read_properties) if read_properties is not None else default_read_properties()
        )
        self.limiter = RateLimiter("hubspot", max_calls=190, per_s=10.0)
        self.search_limiter = _shared_search_limiter(
            cache_key("hubspot", self.base_url, "search", self._cache_identity()[0])
        )
        self.policy = self.call_policy(
            limiter=self.limiter, retry=retry, classify=classify_hubspot, logger=logger
        )
        self._token_policy = self.call_policy(retry=retry, classify=classify_token, logger=logger)
        self._auth: RefreshingAuth | None = None
        token: str | None = None
        if settings.auth == "oauth":
            kwargs: dict[str, Any] = {"refresh_margin_s": self.refresh_margin_s}
            if token_clock is not None:
                kwargs["clock"] = token_clock
            self._auth = RefreshingAuth(self._fetch_token, **kwargs)
        elif settings.access_token is not None:
            token = settings.access_token.get_secret_value()
        self._apis = HubSpotApis(
            base_url=self.base_url,
            access_token=token,
            ca_bundle=settings.ca_bundle,
            timeout_s=settings.timeout_s,
        )
        self._token_in_use = token
        self._token_lock = threading.Lock()
        #: where describe() results are kept without a shared cache: this connector only
        self._own_schema_cache = MemoryCredentialCache()

    # -- auth and transport -------------------------------------------------------------

    @property
    def token_refreshes(self) -> int:
        """OAuth access tokens fetched so far (0 with a private-app token)."""
        return self._auth.refreshes if self._auth is not None else 0

    def _fetch_token(self) -> tuple[str, float]:
        settings = self.settings
        assert settings.client_secret is not None and settings.refresh_token is not None
        client_secret = settings.client_secret.get_secret_value()
        refresh_token = settings.refresh_token.get_secret_value()
        url = f"{self.base_url}/oauth/v1/token"
        tokens = self._apis.tokens
        response = self._token_policy.execute(
            lambda: self._apis.send(
                tokens.create_with_http_info,
                grant_type="refresh_token",
                client_id=settings.client_id,
                client_secret=client_secret,
                refresh_token=refresh_token,
            ),
            to_info=lambda r: r.info(url, "POST"),
            on_error=lambda e: error_info(e, url, "POST"),
            idempotent=True,
            describe="OAuth token refresh",
        )
        body = response.body if isinstance(response.body, dict) else {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(
                "the OAuth token endpoint answered without an access_token",
                system=self.kind,
                url=url,
                status=response.status,
            )
        register_secret(token)
        refresh = body.get("refresh_token")
        if isinstance(refresh, str):
            register_secret(refresh)
        expires_in = body.get("expires_in")
        return token, float(expires_in) if isinstance(expires_in, int | float) else 1800.0

    def _use_token(self, token: str) -> None:
        with self._token_lock:
            if token != self._token_in_use:
                self._apis.set_token(token)
                self._token_in_use = token

    def _prepare_auth(self) -> None:
        if self._auth is not None:
            self._use_token(self._auth.token())

    def _reauth(self) -> None:
        assert self._auth is not None
        self._use_token(self._auth.refresh_after_rejection(self._token_in_use))

    def _call(
        self,
        describe: str,
        method: str,
        path: str,
        api_method: Callable[..., Any],
        *args: Any,
        search: bool = False,
        idempotent: bool = True,
        record: str | None = None,
        **kwargs: Any,
    ) -> HubSpotResponse:
        url = f"{self.base_url}{path}"

        def attempt() -> HubSpotResponse:
            self._prepare_auth()
            return self._apis.send(api_method, *args, **kwargs)

        return self.policy.execute(
            attempt,
            to_info=lambda r: r.info(url, method),
            on_error=lambda e: error_info(e, url, method),
            idempotent=idempotent,
            reauth=self._reauth if self._auth is not None else None,
            describe=describe,
            limiter=self.search_limiter if search else None,
            record=record,
        )

    def _properties(self) -> list[str]:
        """The contact properties read (deal properties, ``deal.<name>``, are not)."""
        contact = (name for name in self.read_properties if not name.startswith(DEAL_PREFIX))
        return _unique([*REQUIRED_READ, *contact])

    def _deal_properties(self) -> list[str]:
        """The deal properties read: those :attr:`read_properties` names as ``deal.<name>``,
        with :data:`DEAL_REQUIRED_READ`; [] when it names none (deals are then never read)."""
        named = [n[len(DEAL_PREFIX) :] for n in self.read_properties if n.startswith(DEAL_PREFIX)]
        return _unique([*DEAL_REQUIRED_READ, *named]) if named else []

    def read_mapped(self, fields: Iterable[str]) -> None:
        """Read the properties a flow's mapping names too (``deal.<name>``: the contact's
        deal); the ones already read stay. A property the portal lacks is left out of the
        answers by HubSpot."""
        added = [name for name in fields if name and name not in self.read_properties]
        if added:
            self.read_properties = [*self.read_properties, *added]

    # -- reading ------------------------------------------------------------------------

    def _search(
        self, filters: list[dict[str, str]], sort: str, objects: str = "contacts"
    ) -> _Found:
        body = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": self._properties() if objects == "contacts" else self._deal_properties(),
            "limit": self.page_size,
        }
        api = self._apis.contacts_search if objects == "contacts" else self._apis.deals_search
        response = self._call(
            f"search of changed {objects}",
            "POST",
            f"{_CONTACTS if objects == 'contacts' else _DEALS}/search",
            api.do_search_with_http_info,
            body,
            search=True,
        )
        records = [_flatten(item) for item in response.items("results")]
        paging = response.body.get("paging") if isinstance(response.body, dict) else None
        more = isinstance(paging, dict) and bool(paging.get("next"))
        total = response.body.get("total") if isinstance(response.body, dict) else None
        return _Found(
            records,
            more or len(records) >= self.page_size,
            response.server_time_ms(),
            total if isinstance(total, int) else None,
        )

    def _list_page(self, after: str | None) -> HubSpotResponse:
        """One page of the contacts list (id order, archived ones left out), from ``after``."""
        query: dict[str, Any] = {
            # a page of the sync is no larger than a search's (its page size may be smaller)
            "limit": min(self.list_page_size, self.page_size),
            "properties": self._properties(),
            "archived": False,
        }
        if after:
            query["after"] = after
        return self._call(
            "list of contacts (full read)",
            "GET",
            _CONTACTS,
            self._apis.contacts_basic.get_page_with_http_info,
            **query,
        )

    def _count_contacts(self, from_id: int) -> _Found:
        """How many contacts have an id from ``from_id`` on (a search with ``limit=1``, for
        its ``total``), with the server's time of the answer."""
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": RECORD_ID, "operator": "GTE", "value": str(from_id)}]}
            ],
            "properties": [RECORD_ID],
            "limit": 1,
        }
        response = self._call(
            "count of contacts (full read)",
            "POST",
            f"{_CONTACTS}/search",
            self._apis.contacts_search.do_search_with_http_info,
            body,
            search=True,
        )
        total = response.body.get("total") if isinstance(response.body, dict) else None
        return _Found(
            [], False, response.server_time_ms(), total if isinstance(total, int) else None
        )

    def _contact_read(self, cursor: str | None) -> _Read:
        """The read of the contacts from ``cursor``: a first read (None) or one under way
        through the list goes through the list endpoint, any other searches the changes."""
        if cursor is None or cursor.startswith(_LIST_CURSOR):
            return _ListRead(self, cursor)
        return _Read(self, cursor)

    def answer_read(
        self, start: str | None, end: str, cursor: str | None, *, age_s: float
    ) -> str | None:
        """See :meth:`Connector.answer_read`. The contacts are searched in every read, so
        ``cursor``'s contacts position must be at or after ``start``'s. The archived list and
        the deals are read only when due (:meth:`_deletions_due_at`, :meth:`_deals_due_at`;
        the empty read found no change): when the empty read read one from a watermark at or
        before ``cursor``'s, its end answers for it; otherwise ``cursor``'s own watermark is
        kept, provided it is not due by now (a flow that read it longer ago reads it itself)."""
        if start is None or cursor is None:
            return None
        try:
            (first, first_deals), (last, last_deals), (mine, mine_deals) = (
                split_cursor(c) for c in (start, end, cursor)
            )
            if first is None or last is None or mine is None:
                return None
            firsts, lasts, mines = (decode_cursor(c) for c in (first, last, mine))
            deals = [
                None if c is None else decode_cursor(c)
                for c in (first_deals, last_deals, mine_deals)
            ]
        except ValueError:
            return None
        positions = [firsts, lasts, mines, *(c for c in deals if c is not None)]
        if not all(c.exact and c.last_id is None for c in positions):
            return None
        if mines.timestamp_ms < firsts.timestamp_ms:
            return None
        # The server's time of the empty read (its end stands one ms after its horizon), and now.
        then_ms = lasts.timestamp_ms - 1 + self.look_back_ms
        now_ms = then_ms + int(age_s * 1000)
        archived = _answer_part(
            firsts.archived_read_ms,
            lasts.archived_read_ms,
            mines.archived_read_ms,
            self._deletions_due_at,
            then_ms,
            now_ms,
        )
        if archived is None:
            return None
        deals_part: str | None = None
        if any(c is not None for c in deals):
            first_at, last_at, mine_at = (None if c is None else c.timestamp_ms for c in deals)
            position = _answer_part(first_at, last_at, mine_at, self._deals_due_at, then_ms, now_ms)
            if position is None or position[0] is None:
                return None
            deals_part = encode_cursor(position[0], None)
        return join_cursor(encode_cursor(lasts.timestamp_ms, None, archived[0]), deals_part)

    def _deletions_due_at(
        self, last_read_ms: int | None, now_ms: int, *, changed: bool = False
    ) -> bool:
        """Whether a read at server time ``now_ms`` reads the archived list last read at
        ``last_read_ms`` (None: never): it reads it (:attr:`read_archived`) and
        :meth:`Connector.deletions_due` says so (``changed``: that read found changes)."""
        seconds = None if last_read_ms is None else last_read_ms / 1000
        return self.read_archived and self.deletions_due(seconds, now_ms / 1000, changed=changed)

    def read_changes(self, cursor: str | None) -> Iterator[Page]:
        """Contacts changed since ``cursor``, oldest first, ``page_size`` per search, and the
        contacts archived or merged away since then (:attr:`Page.deleted`).

        Keyset reads: every page is its own search from the last (``lastmodifieddate``, id)
        read, so no query pages deep (HubSpot's 10,000-result cap is never reached: each query
        starts a new window) and a record changed during the read moves to a later page
        instead of shifting others out of reach. HubSpot applies one sort, so records sharing
        the last timestamp of a full page are read again from it and de-duplicated, and when
        one timestamp fills a whole page it is read on its own, by ``hs_object_id``
        (``lastmodifieddate EQ ts`` and ``hs_object_id GT last``), before going on with
        ``lastmodifieddate GT ts``.

        Search lags writes by seconds, so no cursor is ever later than the server's time of
        the read's first search (its ``Date``) minus :attr:`look_back_ms`: a record indexed
        late is read by the next run. A finished read's cursor is exactly that moment, so an
        idle run costs one search however long ago the last change was. The archived list is
        read when the read found changes, and otherwise once :attr:`deletions_every_s` passed
        (:meth:`~leadrelay.connectors.base.Connector.deletions_due`).

        Merges: a contact listing ids in ``hs_merged_object_ids`` reports each as a
        :class:`Deletion` merged into it, on its own page (HubSpot merges into a new record;
        both former ids point to it). Contacts archived since the archived list was last read
        (``GET …/contacts?archived=true``, by ``archivedAt``) are reported on the last page.

        A first read (``cursor`` None: a new flow or ``sync --full``) lists every contact
        through ``GET /crm/v3/objects/contacts`` instead (:attr:`list_page_size` a call, by
        id, gathered into pages of :attr:`page_size`; under the general burst limit rather
        than search's 5 per second: a 100,000-contact portal is 1,000 list calls, not 500
        searches waiting on that limit), with one search first for the count
        (:attr:`count_full_reads`: :attr:`Page.remaining`). Its pages' cursors hold the list's
        position, so a read stopped part way goes on from there; the last page's cursor is the
        server time of the read's first call minus :attr:`look_back_ms`, so a contact changed
        while the list was read is read again by the next (incremental) run: nothing is lost,
        at worst read twice.

        Deals, when :attr:`read_properties` names deal properties (``deal.<name>``): every
        contact read carries its deal's values (:meth:`_attach_deals`), and after the contacts
        the deals changed since the cursor's deal part are read the same keyset way (on
        ``hs_lastmodifieddate``); each page of them becomes a page of their contacts. The deals
        are searched when the contacts' read found changes, on a first read, and otherwise once
        :attr:`deals_every_s` passed since their last search, so an idle run costs one search;
        the deals' cursor stays where it was until then, so no deal change is skipped, only
        read later.
        """
        self.require(Capability.READ_INCREMENTAL)
        contact_cursor, deal_cursor = split_cursor(cursor)
        if not self._deal_properties():
            yield from self._contact_read(contact_cursor).pages()
            return
        position = contact_cursor
        contacts = self._contact_read(contact_cursor)
        for page in contacts.pages():
            self._attach_deals(page.records)
            position = page.cursor
            yield replace(page, cursor=join_cursor(page.cursor, deal_cursor))
        if not self._deals_due(deal_cursor, contacts):
            return
        for page in _Read(self, deal_cursor, "deals").pages():
            yield Page(
                self._contacts_of_deals(page.records),
                join_cursor(position, page.cursor),
                (),
                page.remaining,
            )

    # -- deals (HubSpot as the CRM) -------------------------------------------------------

    def _deals_due(self, deal_cursor: str | None, contacts: _Read) -> bool:
        """Whether this read searches the changed deals (see :meth:`read_changes`)."""
        if contacts.changed or deal_cursor is None:
            return True
        now = contacts.server_ms if contacts.server_ms is not None else int(time.time() * 1000)
        position = decode_cursor(deal_cursor)
        # A cursor under way stands at its own time; a finished one, one ms after its horizon.
        return self._deals_due_at(
            position.timestamp_ms + (0 if position.last_id is None else 1), now
        )

    def _deals_due_at(self, stamp_ms: int | None, now_ms: int) -> bool:
        """Whether a read finding no changed contact at server time ``now_ms`` searches the
        deals last read to the finished position ``stamp_ms`` (None: never). A finished deals
        read leaves its cursor one millisecond after the server time of its search less the
        look-back, so that time is when they were last searched."""
        if stamp_ms is None or self.deals_every_s <= 0:
            return True
        horizon = stamp_ms - 1
        return now_ms - (horizon + self.look_back_ms) >= self.deals_every_s * 1000

    def _associated(self, from_type: str, to_type: str, ids: Sequence[str]) -> dict[str, list[str]]:
        """The ids of ``to_type`` associated with each of ``ids`` (v4 batch read, 100 a call;
        HubSpot answers the ones with none as 207 ``NO_ASSOCIATIONS_FOUND`` entries)."""
        found: dict[str, list[str]] = {}
        path = f"/crm/v4/associations/{from_type}/{to_type}/batch/read"
        for chunk in _chunks(_unique(ids), self.batch_size):
            response = self._call(
                f"batch read of the {to_type} of {len(chunk)} {from_type}",
                "POST",
                path,
                self._apis.associations.get_page_with_http_info,
                from_type,
                to_type,
                {"inputs": [{"id": key} for key in chunk]},
            )
            for item in response.items("results"):
                source = item.get("from")
                targets = item.get("to")
                if not isinstance(source, dict) or not isinstance(targets, list):
                    continue
                found.setdefault(str(source.get("id")), []).extend(
                    str(t["toObjectId"])
                    for t in targets
                    if isinstance(t, dict) and t.get("toObjectId") is not None
                )
        return found

    def _batch_read(self, objects: str, ids: Iterable[str]) -> list[RawRecord]:
        """Contacts or deals by id (``batch/read``, 100 a call); archived or unknown ones are
        absent (HubSpot's 207 ``OBJECT_NOT_FOUND`` entries are not failures)."""
        contacts = objects == "contacts"
        api = self._apis.contacts_batch if contacts else self._apis.deals_batch
        found: list[RawRecord] = []
        for chunk in _chunks(_unique(ids), self.batch_size):
            body = {
                "inputs": [{"id": key} for key in chunk],
                "properties": self._properties() if contacts else self._deal_properties(),
                "propertiesWithHistory": [],
            }
            response = self._call(
                f"batch read of {len(chunk)} {objects} by id",
                "POST",
                f"{_CONTACTS if contacts else _DEALS}/batch/read",
                api.read_with_http_info,
                body,
            )
            found.extend(_flatten(item) for item in response.items("results"))
        return found

    def _read_deals(self, ids: Sequence[str]) -> dict[str, RawRecord]:
        """Deals by id; archived or unknown ones are absent."""
        return {str(r[RECORD_ID]): r for r in self._batch_read("deals", ids)}

    def _attach_deals(
        self, records: Sequence[RawRecord], known: Mapping[str, RawRecord] | None = None
    ) -> None:
        """Give each contact record its deal's values as ``deal.<name>`` (all None for a
        contact with no deal): two calls per 100 contacts, the associations and the deals
        (``known`` ones are not read again). Which deal: see
        :func:`~leadrelay.connectors.hubspot.deals.choose_deal`."""
        names = self._deal_properties()
        if not names or not records:
            return
        links = self._associated("contacts", "deals", [str(r.get(RECORD_ID)) for r in records])
        deals = dict(known or {})
        wanted = [d for found in links.values() for d in found if d not in deals]
        deals.update(self._read_deals(wanted))
        for record in records:
            linked = links.get(str(record.get(RECORD_ID)), [])
            chosen = choose_deal([deals[d] for d in linked if d in deals])
            record.update(outcome_fields(chosen, names))

    def _contacts_of_deals(self, deals: Sequence[RawRecord]) -> list[RawRecord]:
        """The contacts of changed deals, each with its deal's values (a contact's deal may
        be another of its deals: see :meth:`_attach_deals`)."""
        if not deals:
            return []
        by_deal = self._associated("deals", "contacts", [str(d.get(RECORD_ID)) for d in deals])
        contact_ids = _unique(c for found in by_deal.values() for c in found)
        found = self._read_contacts(ids=contact_ids)
        records = list({str(r[RECORD_ID]): r for r in found.values()}.values())
        self._attach_deals(records, {str(d[RECORD_ID]): d for d in deals})
        return records

    def _archived_since(self, since_ms: int | None) -> list[Deletion]:
        """Contacts archived at or after ``since_ms`` (every archived one when None), from the
        archived list (id order, 100 a page; HubSpot keeps them 90 days)."""
        deletions: list[Deletion] = []
        for item in self._list_all(
            "list of archived contacts",
            _CONTACTS,
            self._apis.contacts_basic.get_page_with_http_info,
            limit=100,
            properties=[RECORD_ID],
            archived=True,
        ):
            at = epoch_ms(item.get("archivedAt"))
            if since_ms is None or at >= since_ms:
                deletions.append(Deletion(str(item.get("id")), None, _moment(at)))
        return deletions

    def lookup(
        self, emails: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> dict[str, RawRecord]:
        """Contacts by email (``batch/read`` with ``idProperty=email``) and by id.

        Keys are lower-cased emails and record ids; not found ones are absent (HubSpot's
        207 ``OBJECT_NOT_FOUND`` entries are not failures). An id merged into another contact
        maps to that contact, whose ``hs_object_id`` differs from the key. When deals are read,
        each contact carries its deal's values (as in :meth:`read_changes`).
        """
        self.require(Capability.LOOKUP)
        found = self._read_contacts(emails, ids)
        unique = list({str(r.get(RECORD_ID)): r for r in found.values()}.values())
        self._attach_deals(unique)
        return found

    def _read_contacts(
        self, emails: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> dict[str, RawRecord]:
        """:meth:`lookup` without the deals."""
        found: dict[str, RawRecord] = {}
        wanted = _unique(normalize_email(e) for e in emails or () if e and e.strip())
        for chunk in _chunks(wanted, self.batch_size):
            body = {
                "inputs": [{"id": email} for email in chunk],
                "idProperty": EMAIL,
                "properties": self._properties(),
                "propertiesWithHistory": [],
            }
            response = self._call(
                f"batch read of {len(chunk)} contacts by email",
                "POST",
                f"{_CONTACTS}/batch/read",
                self._apis.contacts_batch.read_with_http_info,
                body,
            )
            asked = set(chunk)
            for item in response.items("results"):
                record = _flatten(item)
                # A merged record answers its other emails too (hs_additional_emails).
                emails = [
                    str(record.get(EMAIL) or ""),
                    *str(record.get(ADDITIONAL_EMAILS) or "").split(";"),
                ]
                for key in {normalize_email(e) for e in emails} & asked:
                    found[key] = record
        asked_ids = {str(i) for i in ids or ()}
        for record in self._batch_read("contacts", (str(i) for i in ids or ())):
            found[str(record[RECORD_ID])] = record
            # HubSpot answers a merged-away id with the record it was merged into.
            for merge in _merged_into(record):
                if merge.record_id in asked_ids:
                    found[merge.record_id] = record
        return found

    # -- writing ------------------------------------------------------------------------

    def _rejected(self, message: str, *, ref: str, field: str | None = None, **kw: Any) -> Rejected:
        return Rejected(message, system=self.kind, record=ref, field=field, **kw)

    def _from_error(self, entry: Mapping[str, Any], ref: str, url: str) -> Rejected:
        """A 207 ``errors`` entry as the :class:`Rejected` of one record."""
        raw = str(entry.get("message") or "HubSpot refused the record")
        message, field_name, code = explain(raw)
        context = entry.get("context")
        if field_name is None and isinstance(context, dict):
            names = context.get("propertyName")
            if isinstance(names, list) and names and isinstance(names[0], str):
                field_name = names[0]
        category = entry.get("category")
        return self._rejected(
            message,
            ref=ref,
            field=field_name,
            code=code or (category if isinstance(category, str) else None),
            url=url,
            method="POST",
        )

    def _write_batch(self, operation: str, items: list[_Item]) -> dict[int, _Done]:
        """Send ``items`` to ``batch/upsert`` or ``batch/update``; what happened to each.

        A whole-batch rejection (HubSpot may fail a batch for one bad input) is narrowed by
        sending halves, within a bound of twice the batch size in extra calls; items still
        undecided then fail with the batch's error.
        """
        done: dict[int, _Done] = {}
        for chunk in _chunks_by_key(items, self.batch_size):
            budget = [2 * len(chunk)]
            self._write_chunk(operation, chunk, done, budget)
        if any(d.error is not None and d.error.code in _SCHEMA_ERRORS for d in done.values()):
            # HubSpot's properties changed since describe() was kept: read them again next time.
            self._schema_cache.forget(self._properties_key()[0])
        return done

    def _write_chunk(
        self, operation: str, chunk: list[_Item], done: dict[int, _Done], budget: list[int]
    ) -> None:
        path = f"{_CONTACTS}/batch/{operation}"
        url = f"{self.base_url}{path}"
        inputs = []
        for item in chunk:
            entry: dict[str, Any] = {"id": item.key, "properties": item.properties}
            if operation == "upsert":
                entry["idProperty"] = EMAIL
            if self.write_trace_ids:
                entry["objectWriteTraceId"] = str(item.index)
            inputs.append(entry)
        api = self._apis.contacts_batch
        method = api.upsert_with_http_info if operation == "upsert" else api.update_with_http_info
        try:
            response = self._call(
                f"batch {operation} of {len(chunk)} contacts",
                "POST",
                path,
                method,
                {"inputs": inputs},
                record=chunk[0].ref if len(chunk) == 1 else None,
            )
        except Rejected as error:
            if len(chunk) == 1:
                item = chunk[0]
                error.record = item.ref
                done[item.index] = _Done(error=error, not_found=error.status == 404)
                return
            if budget[0] <= 0:
                for item in chunk:
                    done[item.index] = _Done(error=self._batch_error(error, item.ref))
                return
            logger.info(
                "batch %s of %d contacts refused as a whole (%s); narrowing it down",
                operation,
                len(chunk),
                error.message,
            )
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                budget[0] -= 1
                self._write_chunk(operation, part, done, budget)
            return
        self._read_results(operation, chunk, response, done, url)

    def _batch_error(self, error: Rejected, ref: str) -> Rejected:
        return self._rejected(
            error.message,
            ref=ref,
            field=error.field,
            code=error.code,
            url=error.url,
            status=error.status,
            method=error.method,
        )

    def _read_results(
        self,
        operation: str,
        chunk: list[_Item],
        response: HubSpotResponse,
        done: dict[int, _Done],
        url: str,
    ) -> None:
        by_trace = {str(item.index): item for item in chunk}
        by_key = {item.key: item for item in chunk}
        for result in response.items("results"):
            item = by_trace.get(str(result.get("objectWriteTraceId")))
            if item is None:
                properties = result.get("properties") or {}
                key = (
                    normalize_email(str(properties.get(EMAIL) or ""))
                    if operation == "upsert"
                    else str(result.get("id"))
                )
                item = by_key.get(key)
            if item is None:
                continue
            new = result.get("new")
            done[item.index] = _Done(
                record_id=str(result.get("id")), new=new if isinstance(new, bool) else None
            )
        for entry in response.items("errors"):
            context = entry.get("context") if isinstance(entry.get("context"), dict) else {}
            assert isinstance(context, dict)
            targets = [by_trace.get(str(t)) for t in context.get("objectWriteTraceId") or ()]
            targets += [by_key.get(str(k).lower()) for k in context.get("ids") or ()]
            missing = entry.get("category") == "OBJECT_NOT_FOUND"
            for item in targets:
                if item is not None and item.index not in done:
                    error = self._from_error(entry, item.ref, url)
                    done[item.index] = _Done(error=error, not_found=missing)
        for item in chunk:
            if item.index not in done:
                done[item.index] = _Done(
                    error=self._rejected(
                        f"HubSpot answered the batch {operation} without a result for this record",
                        ref=item.ref,
                        url=url,
                        status=response.status,
                    )
                )

    def upsert(self, inputs: Sequence[UpsertInput]) -> list[WriteResult]:
        """Create or update contacts by email; one result per input, in order.

        Inputs with an ``external_id`` are updated by id (falling back to the email when the
        id is gone). A 409 ``Contact already exists. Existing ID: N`` updates N instead.
        A ``lifecyclestage`` earlier than the record's is ignored by HubSpot; see
        :meth:`force_lifecycle_stage`.
        """
        self.require(Capability.UPSERT)
        results: dict[int, WriteResult] = {}
        by_email: list[_Item] = []
        by_id: list[_Item] = []
        for index, record in enumerate(inputs):
            email = _email_in(record.fields)
            properties = {k: _value(v) for k, v in record.fields.items()}
            if email is not None:
                properties[EMAIL] = email
            if record.external_id:
                by_id.append(_Item(index, record.ref, str(record.external_id), properties))
            elif email is None:
                results[index] = WriteResult.failed(
                    record.ref, self._rejected(_NO_EMAIL, ref=record.ref, field=EMAIL)
                )
            else:
                by_email.append(_Item(index, record.ref, email, properties))
        conflicts: list[_Item] = []
        for item, outcome in self._outcomes("update", by_id):
            if outcome.error is None:
                results[item.index] = WriteResult(item.ref, outcome.record_id, WriteOutcome.UPDATED)
            elif outcome.not_found and EMAIL in item.properties:
                by_email.append(
                    _Item(item.index, item.ref, item.properties[EMAIL], item.properties)
                )
            else:
                self._conflict_or_fail(item, outcome.error, conflicts, results)
        for item, outcome in self._outcomes("upsert", by_email):
            if outcome.error is None:
                created = WriteOutcome.CREATED if outcome.new else WriteOutcome.UPDATED
                results[item.index] = WriteResult(item.ref, outcome.record_id, created)
            else:
                self._conflict_or_fail(item, outcome.error, conflicts, results)
        for item, outcome in self._outcomes("update", conflicts):
            if outcome.error is None:
                results[item.index] = WriteResult(item.ref, outcome.record_id, WriteOutcome.UPDATED)
            else:
                results[item.index] = WriteResult.failed(item.ref, outcome.error)
        return [results[index] for index in range(len(inputs))]

    def _outcomes(self, operation: str, items: list[_Item]) -> list[tuple[_Item, _Done]]:
        if not items:
            return []
        done = self._write_batch(operation, items)
        return [(item, done[item.index]) for item in items]

    def _conflict_or_fail(
        self,
        item: _Item,
        error: Rejected,
        conflicts: list[_Item],
        results: dict[int, WriteResult],
    ) -> None:
        """A 409 naming the existing contact becomes an update of it; anything else fails."""
        existing = existing_id(error.message)
        if existing is not None and existing != item.key:
            logger.info(
                "record %s: contact %s already has its email; updating it", item.ref, existing
            )
            conflicts.append(_Item(item.index, item.ref, existing, item.properties))
            return
        results[item.index] = WriteResult.failed(item.ref, error)

    def update(self, updates: Mapping[str, RawRecord]) -> list[WriteResult]:
        """Write fields to contacts by record id (``batch/update``); one result per id."""
        self.require(Capability.UPDATE)
        items = [
            _Item(index, str(record_id), str(record_id), {k: _value(v) for k, v in fields.items()})
            for index, (record_id, fields) in enumerate(updates.items())
        ]
        results = []
        for item, outcome in self._outcomes("update", items):
            if outcome.error is None:
                results.append(WriteResult(item.ref, outcome.record_id, WriteOutcome.UPDATED))
            else:
                results.append(WriteResult.failed(item.ref, outcome.error, external_id=item.key))
        return results

    def force_lifecycle_stage(self, stages: Mapping[str, str]) -> list[WriteResult]:
        """Set ``lifecyclestage`` even when it moves backward; one result per record id.

        HubSpot only moves a lifecycle stage forward and silently ignores an earlier one, so
        the stage is cleared (``""``) and then set in a second, separate request (a batch's
        inputs are not ordered). Call it only when a field rule requires the backward move;
        a normal :meth:`upsert` or :meth:`update` is enough otherwise.
        """
        self.require(Capability.UPDATE)
        cleared = self.update({record_id: {LIFECYCLE_STAGE: ""} for record_id in stages})
        failed = {r.ref: r for r in cleared if not r.ok}
        wanted: dict[str, RawRecord] = {
            rid: {LIFECYCLE_STAGE: stage} for rid, stage in stages.items() if str(rid) not in failed
        }
        written = {r.ref: r for r in self.update(wanted)} if wanted else {}
        return [failed.get(str(rid)) or written[str(rid)] for rid in stages]

    def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        """Archive contacts by id (``batch/archive``; unknown ids are ignored by HubSpot)."""
        self.require(Capability.DELETE)
        keys = [str(i) for i in ids]
        for chunk in _chunks(_unique(keys), self.batch_size):
            self._call(
                f"batch archive of {len(chunk)} contacts",
                "POST",
                f"{_CONTACTS}/batch/archive",
                self._apis.contacts_batch.archive_with_http_info,
                {"inputs": [{"id": record_id} for record_id in chunk]},
            )
        return [WriteResult(key, key, WriteOutcome.UPDATED) for key in keys]

    # -- schema, properties, owners, health -----------------------------------------------

    def _cache_identity(self) -> tuple[str, str]:
        """(name part, sealing secret) of this connection's cache entries: the private-app
        token, or with OAuth the app's client secret (the access tokens change)."""
        settings = self.settings
        if settings.auth == "oauth":
            assert settings.client_secret is not None and settings.refresh_token is not None
            secret = settings.client_secret.get_secret_value()
            return settings.refresh_token.get_secret_value(), secret
        token = settings.access_token.get_secret_value() if settings.access_token else ""
        return token, token

    def _properties_key(self, objects: str = "contacts") -> tuple[str, str]:
        identity, secret = self._cache_identity()
        name = "contact" if objects == "contacts" else "deal"
        return cache_key("hubspot", self.base_url, f"{name}-properties", identity), secret

    @property
    def _schema_cache(self) -> CredentialCache:
        """The state store's cache when the connector has one (shared by every run), else this
        connector's own memory: the process-wide default would hand one command the schema
        another read before a change."""
        if self.credentials is process_cache():
            return self._own_schema_cache
        return self.credentials

    def _property_list(
        self, *, cached: bool = True, objects: str = "contacts"
    ) -> list[dict[str, Any]]:
        """The contact (or deal) property definitions; reused from :attr:`credentials` for
        :attr:`properties_ttl` unless ``cached`` is False (the read is counted in
        :attr:`api_calls` when it is made)."""
        key, secret = self._properties_key(objects)
        if cached:
            kept = self._schema_cache.get(key, secret=secret)
            if kept is not None and isinstance(kept.get("results"), list):
                return [p for p in kept["results"] if isinstance(p, dict)]
        response = self._call(
            f"list of {objects[:-1]} properties",
            "GET",
            f"/crm/v3/properties/{objects}",
            self._apis.properties.get_all_with_http_info,
            objects,
        )
        results = response.items("results")
        expires = datetime.now(UTC) + self.properties_ttl
        self._schema_cache.put(key, {"results": results}, secret=secret, expires_at=expires)
        return results

    def describe_fresh(self) -> Schema:
        """:meth:`describe` from a new read of the contact properties (the cache renewed)."""
        self._property_list(cached=False)
        if self._deal_properties():
            self._property_list(cached=False, objects="deals")
        return self.describe()

    def describe(self) -> Schema:
        """Contact properties from the Properties API.

        HubSpot requires no contact property, but this connector writes by email, so email is
        marked required (and unique: it is the upsert key). Read-only values
        (``modificationMetadata.readOnlyValue``) and calculated properties are read_only;
        enumeration options that are not hidden are the picklist values.

        When deals are read, the deal properties are fields too, as ``deal.<name>``, all read
        only (leadrelay reads a contact's deal, never writes it).
        """
        self.require(Capability.DESCRIBE)
        fields: dict[str, FieldInfo] = {}
        listed = [("", p) for p in self._property_list()]
        if self._deal_properties():
            listed += [(DEAL_PREFIX, p) for p in self._property_list(objects="deals")]
        for prefix, prop in listed:
            name = prop.get("name")
            if not isinstance(name, str) or prop.get("archived"):
                continue
            name = prefix + name
            metadata = prop.get("modificationMetadata")
            read_only = (
                bool(prefix)
                or bool(prop.get("calculated"))
                or (isinstance(metadata, dict) and bool(metadata.get("readOnlyValue")))
            )
            options = prop.get("options")
            picklist: tuple[str, ...] | None = None
            if prop.get("type") == "enumeration" and isinstance(options, list) and options:
                picklist = tuple(
                    str(o["value"])
                    for o in options
                    if isinstance(o, dict) and "value" in o and not o.get("hidden")
                )
            fields[name] = FieldInfo(
                name=name,
                label=str(prop.get("label") or name),
                type=str(prop.get("type") or "string"),
                required=name == EMAIL,
                read_only=read_only,
                unique=name == EMAIL or bool(prop.get("hasUniqueValue")),
                picklist_values=picklist,
                multi_select=prop.get("fieldType") == "checkbox",
            )
        return Schema("contacts", fields)

    def ensure_properties(self, specs: Sequence[PropertySpec] | None = None) -> list[str]:
        """Create the custom contact properties that are missing; return the names created.

        Default ``specs``: :func:`~leadrelay.connectors.hubspot.fields.custom_property_specs`
        (utm_*, the lead key, rejection reason, score, qualification reason, tier, landing
        page). One call lists the properties, then one call per missing property; one that
        appeared meanwhile (409) is left as it is.
        """
        wanted = list(specs) if specs is not None else custom_property_specs()
        existing = {p.get("name") for p in self._property_list(cached=False)}
        created = []
        for spec in wanted:
            if spec.name in existing:
                continue
            try:
                self._call(
                    f"creation of contact property {spec.name}",
                    "POST",
                    _PROPERTIES,
                    self._apis.properties.create_with_http_info,
                    "contacts",
                    spec.to_body(),
                    record=spec.name,
                )
            except Rejected as error:
                if error.status != 409:
                    raise
                continue
            created.append(spec.name)
        if created:
            # The kept definitions no longer list every property.
            self._schema_cache.forget(self._properties_key()[0])
        return created

    def _list_all(
        self, describe: str, path: str, api_method: Callable[..., Any], **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item a v3 list endpoint returns, following ``paging.next.after``."""
        after: str | None = None
        while True:
            query = dict(kwargs)
            if after:
                query["after"] = after
            response = self._call(describe, "GET", path, api_method, **query)
            yield from response.items("results")
            paging = response.body.get("paging") if isinstance(response.body, dict) else None
            following = paging.get("next") if isinstance(paging, dict) else None
            after = following.get("after") if isinstance(following, dict) else None
            if not after:
                return

    def owners(self) -> list[HubSpotOwner]:
        """Every active owner (``/crm/v3/owners``), for routing."""
        owners: list[HubSpotOwner] = []
        for item in self._list_all(
            "list of owners",
            "/crm/v3/owners/",
            self._apis.owners.get_page_with_http_info,
            limit=100,
            archived=False,
        ):
            first, last = item.get("firstName") or "", item.get("lastName") or ""
            owners.append(
                HubSpotOwner(
                    id=str(item.get("id")),
                    email=str(item.get("email") or ""),
                    name=" ".join(p for p in (first, last) if p),
                )
            )
        return owners

    def account_owners(self) -> list[tuple[str, str]]:
        """Every company with a domain (or, when its domain is empty, a website) and an owner,
        as ``(domain or website exactly as HubSpot holds it, owner id)``, oldest first.

        Pages through ``GET /crm/v3/objects/companies`` 100 at a time (the list endpoint's
        maximum) reading only ``domain``, ``website`` and ``hubspot_owner_id``; the list is in
        record-id order, so the companies are sorted by creation time (then id) afterwards.
        """
        found: list[tuple[int, int, str, str]] = []
        for item in self._list_all(
            "list of companies",
            _COMPANIES,
            self._apis.companies.get_page_with_http_info,
            limit=100,
            properties=[_COMPANY_DOMAIN, _COMPANY_WEBSITE, OWNER],
            archived=False,
        ):
            properties = item.get("properties")
            values = properties if isinstance(properties, dict) else {}
            domain = values.get(_COMPANY_DOMAIN)
            if not isinstance(domain, str) or not domain.strip():
                domain = values.get(_COMPANY_WEBSITE)
            owner = values.get(OWNER)
            if not isinstance(domain, str) or not domain.strip() or owner in (None, ""):
                continue
            created = epoch_ms(item.get("createdAt") or values.get(CREATED))
            key = str(item.get("id") or "")
            found.append((created, int(key) if key.isdigit() else 0, domain, str(owner)))
        found.sort(key=lambda row: (row[0], row[1]))
        return [(domain, owner) for _, _, domain, owner in found]

    def create_task(self, record_id: str, subject: str, body: str, due: datetime) -> str:
        """Create a task (HubSpot's default type, a to-do) on contact ``record_id``, due at
        ``due``, owned by the contact's owner when it has one; return the task's id (the
        escalation ``TaskCreator``).

        Two calls: the contact's batch read (its owner; a contact that is gone is refused here,
        naming the record) and ``POST /crm/v3/objects/tasks`` with the association to the
        contact. Not retried on an unclear failure: a second try could create a second task.
        """
        contact = self._read_contacts(ids=[record_id]).get(str(record_id))
        if contact is None:
            raise self._rejected(
                f"cannot create a task on contact {record_id}: no such contact",
                ref=str(record_id),
            )
        moment = due if due.tzinfo is not None else due.replace(tzinfo=UTC)
        properties = {
            "hs_task_subject": subject,
            "hs_task_body": body,
            # hs_timestamp is the task's due date (ISO 8601 or epoch milliseconds).
            "hs_timestamp": str(int(moment.timestamp() * 1000)),
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "HIGH",
        }
        owner = contact.get(OWNER)
        if owner not in (None, ""):
            properties[OWNER] = str(owner)
        payload = {
            "properties": properties,
            "associations": [
                {
                    "to": {"id": str(record_id)},
                    "types": [
                        {
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": TASK_TO_CONTACT,
                        }
                    ],
                }
            ],
        }
        response = self._call(
            f"creation of a task on contact {record_id}",
            "POST",
            _TASKS,
            self._apis.tasks.create_with_http_info,
            payload,
            idempotent=False,
            record=str(record_id),
        )
        task_id = response.body.get("id") if isinstance(response.body, dict) else None
        if not task_id:
            raise self._rejected(
                f"HubSpot created no task on contact {record_id} (no id in the answer)",
                ref=str(record_id),
            )
        return str(task_id)

    def health(self) -> Health:
        """One cheap call (the ``email`` property's definition): credentials, daily budget."""
        instance = urlsplit(self.base_url).netloc or self.base_url
        details: dict[str, Any] = {"auth": self.settings.auth}
        if self.settings.portal_id:
            details["portal_id"] = self.settings.portal_id
        try:
            self._call(
                "health check",
                "GET",
                f"{_PROPERTIES}/{EMAIL}",
                self._apis.properties.get_by_name_with_http_info,
                "contacts",
                EMAIL,
            )
        except AuthError as error:
            details["error"] = str(error)
            return Health(False, self.kind, instance, False, details=details)
        except ConnectorError as error:
            details["error"] = str(error)
            return Health(
                False, self.kind, instance, error.status not in (None, 401), details=details
            )
        details["rate_limit"] = f"{self.limiter.max_calls} per {self.limiter.per_s:g} s"
        return Health(
            True,
            self.kind,
            instance,
            True,
            budget_used=self.limiter.budget_used,
            budget_max=self.limiter.budget_max,
            details=details,
        )

    def __enter__(self) -> Self:
        return self

    def close(self) -> None:
        """Close the client's connection pools."""
        self._apis.close()


_ALL = sys.maxsize  # a position past every record id of its timestamp


#: Search limiters by account (a hash of base URL and credentials), shared by every connector
#: of this process: HubSpot counts 5 searches a second per account, not per client.
_SEARCH_LIMITERS: dict[str, RateLimiter] = {}
_SEARCH_LIMITERS_LOCK = threading.Lock()


def _shared_search_limiter(account: str) -> RateLimiter:
    """The search limiter of one account. It allows 4 a second where HubSpot allows 5: the
    client stamps a search when it is sent and HubSpot when it arrives, and a margin keeps
    uneven latency from turning the fifth into a 429 and a one-second wait."""
    with _SEARCH_LIMITERS_LOCK:
        found = _SEARCH_LIMITERS.get(account)
        if found is None:
            found = RateLimiter("hubspot", max_calls=4, per_s=1.0, name="search")
            _SEARCH_LIMITERS[account] = found
        return found


@dataclass
class _Found:
    """One search answer: its records, whether more follow, the server's time (epoch ms)."""

    records: list[RawRecord]
    more: bool
    server_ms: int | None
    #: How many contacts match the search (this page's included), as HubSpot reports it.
    total: int | None = None


class _Read:
    """One :meth:`HubSpotConnector.read_changes`: the keyset walk from the cursor, the horizon
    no cursor passes (the first search's server time minus the look-back), and the deletions.

    A position ``(ts, id)`` means every record up to ``lastmodifieddate`` ts and, at ts, up to
    that id was delivered; ``(ts, _ALL)`` every record at ts.
    """

    def __init__(
        self, connector: HubSpotConnector, cursor: str | None, objects: str = "contacts"
    ) -> None:
        self.connector = connector
        #: what is read: contacts, or deals (by their own change time, no archived list)
        self.objects = objects
        self.modified = LAST_MODIFIED if objects == "contacts" else DEAL_MODIFIED
        self.start: tuple[int, int] = (-1, _ALL)
        #: server time of the last archived-list read, and of this read's first search
        self.archived_read: int | None = None
        self.server_ms: int | None = None
        if cursor is not None:
            position = decode_cursor(cursor)
            stamp, last_id = position.timestamp_ms, position.last_id
            self.archived_read = position.archived_read_ms
            if not position.exact:
                stamp, last_id = max(0, stamp - connector.look_back_ms), None
            self.start = (stamp, last_id) if last_id is not None else (stamp - 1, _ALL)
        self.horizon: int | None = None
        #: whether this read delivered any record (then the archived list is read too)
        self.changed = False

    def search(self, filters: list[dict[str, str]], sort: str) -> _Found:
        found = self.connector._search(filters, sort, self.objects)
        if self.horizon is None:
            # The server's clock, as the index lag is measured on it; the local clock only
            # when the answer has no Date.
            now = found.server_ms if found.server_ms is not None else int(time.time() * 1000)
            self.server_ms = now
            self.horizon = now - self.connector.look_back_ms
        return found

    def cursor(self, position: tuple[int, int]) -> str:
        assert self.horizon is not None
        stamp, last = min(position, (self.horizon, _ALL))
        if last == _ALL:
            return encode_cursor(stamp + 1, None, self.archived_read)
        return encode_cursor(stamp, last, self.archived_read)

    def archived(self) -> list[Deletion]:
        """The contacts archived since the archived list was last read, when it is due
        (:meth:`Connector.deletions_due`: this read found changes, or the interval passed)."""
        connector, previous, now = self.connector, self.archived_read, self.server_ms
        assert now is not None
        if not connector._deletions_due_at(previous, now, changed=self.changed):
            return []
        found = connector._archived_since(
            None if previous is None else previous - connector.look_back_ms
        )
        self.archived_read = now
        return found

    def page(
        self, records: list[RawRecord], position: tuple[int, int], remaining: int | None = None
    ) -> Page:
        self.changed = self.changed or bool(records)
        merges = tuple(d for r in records for d in _merged_into(r))
        return Page(records, self.cursor(position), merges, remaining)

    def last_page(self, records: list[RawRecord]) -> Page:
        assert self.horizon is not None
        self.changed = self.changed or bool(records)
        deleted = {d.record_id: d for r in records for d in _merged_into(r)}
        for gone in self.archived() if self.objects == "contacts" else ():
            deleted.setdefault(gone.record_id, gone)
        return Page(
            records, self.cursor((self.horizon, _ALL)), tuple(deleted.values()), len(records)
        )

    def pages(self) -> Iterator[Page]:
        stamp, last_id = self.start
        if last_id != _ALL:
            yield from self.one_timestamp(stamp, set(), last_id)
        operator = "GT"
        edge: int | None = None
        seen: set[int] = set()
        while True:
            found = self.search(
                [{"propertyName": self.modified, "operator": operator, "value": str(stamp)}],
                self.modified,
            )
            records = found.records
            if not records:
                yield self.last_page([])
                return
            records.sort(key=self.order)
            first_ts, last_ts = self.order(records[0])[0], self.order(records[-1])[0]
            if found.more and first_ts == last_ts:
                # One timestamp fills the page: its records can only be told apart by id.
                yield from self.one_timestamp(last_ts, seen if edge == last_ts else set(), 0)
                operator, stamp, edge, seen = "GT", last_ts, None, set()
                continue
            fresh = [r for r in records if not (self.order(r)[0] == edge and _record_id(r) in seen)]
            if not found.more:
                yield self.last_page(fresh)
                return
            # More records may share last_ts beyond this page: read again from it.
            if edge != last_ts:
                seen = set()
            seen.update(_record_id(r) for r in records if self.order(r)[0] == last_ts)
            edge, operator, stamp = last_ts, "GTE", last_ts
            yield self.page(fresh, (last_ts - 1, _ALL), found.total)

    def one_timestamp(self, stamp: int, seen: set[int], after_id: int) -> Iterator[Page]:
        """Every record whose ``lastmodifieddate`` is ``stamp`` after ``after_id``, by id,
        skipping ``seen``."""
        while True:
            found = self.search(
                [
                    {"propertyName": self.modified, "operator": "EQ", "value": str(stamp)},
                    {"propertyName": RECORD_ID, "operator": "GT", "value": str(after_id)},
                ],
                RECORD_ID,
            )
            if not found.records:
                return
            records = sorted(found.records, key=_record_id)
            after_id = _record_id(records[-1])
            fresh = [r for r in records if _record_id(r) not in seen]
            yield self.page(fresh, (stamp, after_id))
            if not found.more:
                return

    def order(self, record: Mapping[str, Any]) -> tuple[int, int]:
        """A record's position: its change time, then its id."""
        return _order(record, self.modified)


class _ListRead(_Read):
    """A first or full read of the contacts through the list endpoint (see
    :meth:`HubSpotConnector.read_changes`): id order, 100 a page, ``paging.next.after`` to go
    on; ends at the horizon of its first call (or of the read it resumes: a
    :func:`encode_list_cursor` cursor), with the archived list on its last page as a search
    read's."""

    def __init__(self, connector: HubSpotConnector, cursor: str | None) -> None:
        super().__init__(connector, None)
        self.after: str | None = None
        if cursor is not None:
            self.after, self.horizon = decode_list_cursor(cursor)

    def started(self, server_ms: int | None) -> None:
        """Take the server's time of the read's first call (the local clock when the answer
        had no ``Date``): the horizon, unless a resumed read keeps its own."""
        if self.server_ms is not None:
            return
        self.server_ms = server_ms if server_ms is not None else int(time.time() * 1000)
        if self.horizon is None:
            self.horizon = self.server_ms - self.connector.look_back_ms

    def count(self) -> int | None:
        """How many contacts the list still holds from :attr:`after` (None: not counted)."""
        connector = self.connector
        if not connector.count_full_reads or not (self.after or "0").isdigit():
            return None
        found = connector._count_contacts(int(self.after or "0"))
        self.started(found.server_ms)
        return found.total

    def pages(self) -> Iterator[Page]:
        """Pages of :attr:`HubSpotConnector.page_size` records (the list gives
        :attr:`~HubSpotConnector.list_page_size` a call), as a search read's are: a page is
        what the sync writes in one batch (Salesforce takes 200 a call)."""
        total = self.count()
        delivered = 0
        after = self.after
        records: list[RawRecord] = []
        while True:
            response = self.connector._list_page(after)
            self.started(response.server_time_ms())
            records += [_flatten(item) for item in response.items("results")]
            paging = response.body.get("paging") if isinstance(response.body, dict) else None
            following = paging.get("next") if isinstance(paging, dict) else None
            next_after = following.get("after") if isinstance(following, dict) else None
            if not next_after:
                yield self.last_page(records)
                return
            if str(next_after) == after:
                # Going on would loop; ending here would skip the rest of the list.
                raise ConnectorError(
                    f"HubSpot's contacts list answered the position it was asked for ({after}) "
                    "as the next one",
                    system=self.connector.kind,
                    url=f"{self.connector.base_url}{_CONTACTS}",
                    method="GET",
                )
            after = str(next_after)
            if len(records) < self.connector.page_size:
                continue
            remaining = None if total is None else max(total - delivered, len(records))
            delivered += len(records)
            self.changed = True
            assert self.horizon is not None
            merges = tuple(d for r in records for d in _merged_into(r))
            yield Page(records, encode_list_cursor(after, self.horizon), merges, remaining)
            records = []
