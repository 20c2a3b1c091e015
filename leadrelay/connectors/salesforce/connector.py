"""The Salesforce connector: Leads through simple-salesforce, collections, SOQL and Bulk API 2.0.

How it talks to the org (crm-api-facts §2):

* **Auth** — leadrelay fetches the OAuth token itself (:mod:`.auth`) and hands it to
  simple-salesforce as ``session_id``, so the client never logs in on its own. The session
  (access token and instance URL) and the Lead ``describe()`` are kept in the connector's
  :attr:`~leadrelay.connectors.base.Connector.credentials` (sealed in the state store when the
  pool has one), so the next run or process reuses them: a read makes no token call and no
  describe; ``describe()`` itself asks only whether the metadata changed (``If-Modified-Since``,
  304 when not).
  On ``INVALID_SESSION_ID`` (401) the cached session is dropped, the token re-fetched and the
  client rebuilt at most once per call; a second 401 is an
  :class:`~leadrelay.connectors.errors.AuthError`.
* **read_changes** — keyset pages over ``queryAll``: ``SELECT … FROM Lead WHERE
  SystemModstamp >= <second of the cursor> ORDER BY SystemModstamp, Id``, then ``queryMore``
  (up to 2,000 per page); rows at or before the cursor's ``(SystemModstamp, Id)`` are dropped.
  A query locator is a snapshot, so a record edited while the pages are read gets a newer
  SystemModstamp and is read by the next run, never skipped. Deleted rows (``IsDeleted``; a
  merge loser has ``MasterRecordId``) become the page's ``deleted``. Each page's cursor is the
  ``(SystemModstamp, Id)`` of its last row; the last page's is at most the server time of the
  read (its ``Date`` header) minus ``read_lookback_s``, so an idle run reads nothing new and a
  record committed late, stamped a moment before the read, is still read.
* **The outcome and the person of a converted Lead** (docs/outcome.md) — every Lead read
  selects ``ConvertedOpportunity.*`` and ``ConvertedContact.*`` (flattened into the record as
  ``ConvertedOpportunity.StageName`` …; blank without that parent). A later change of the
  Opportunity or the Contact does not stamp the Lead, so the same Composite call (one API
  request) also asks for the converted Leads whose Opportunity changed (``… WHERE IsConverted =
  true AND ConvertedOpportunity.SystemModstamp >= … ORDER BY ConvertedOpportunity.SystemModstamp,
  Id``) and those whose Contact changed (the same on ``ConvertedContact``), their pages following
  the Leads' with the same keyset rules; a Lead is given once per read. The record id stays the
  Lead Id, and the Contact's person fields stand for the Lead's frozen ones
  (:data:`CONTACT_OVERLAY`). The cursor is ``<stamp>|<id>`` of the Leads, then of the
  Opportunity read, then of the Contact read (:func:`split_cursor`).
* **Converted Leads are never written** — Salesforce refuses them
  (``CANNOT_UPDATE_CONVERTED_LEAD``). A Lead read as converted gets no write (its result is
  unchanged), and the refusal of one not read yet counts as unchanged too, never as a failure.
* **lookup** — ``Email IN (…)`` on Lead, split so each query fits the GET URL (:mod:`.soql`);
  the emails with no Lead are then looked up on Contact. A Contact match is returned with
  ``record["attributes"]["type"] == "Contact"``: the person is an existing customer.
* **upsert** — with ``external_id_field``: ``PATCH composite/sobjects/Lead/<field>`` (200 per
  call, results carry ``created``). Without: a batch lookup by email, then ``POST`` (creates) and
  ``PATCH`` (updates) of ``composite/sobjects``, ``allOrNone=false``. A create that failed
  ambiguously (reset, 5xx) is resolved by a lookup before it is sent again, never duplicated.
  An email that belongs to a Contact (or to a converted Lead) is not written: its result fails
  with code ``EXISTING_CONTACT`` naming the Contact. Above ``bulk_threshold`` inputs, Bulk API
  2.0 ingest jobs are used (:mod:`.bulk`).
* **Duplicate rules** — ``DUPLICATES_DETECTED`` becomes a failed result with the rule's own
  message, unless ``allow_duplicate_save`` sends ``Sforce-Duplicate-Rule-Header:
  allowSave=true``.
* **Handoff** — ``create_task`` reads the Lead's/Contact's OwnerId, then ``POST
  sobjects/Task`` (never resent after an unclear failure); ``account_owners`` is one SOQL query
  over Account with its ``queryMore`` pages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode

import requests
from simple_salesforce.api import Salesforce

from leadrelay.config import SalesforceConnection
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
    Retryable,
    register_secret,
)
from leadrelay.connectors.policy import RateLimiter, ResponseInfo, RetryPolicy, from_requests
from leadrelay.connectors.salesforce import bulk
from leadrelay.connectors.salesforce.auth import Token, fetch_token
from leadrelay.connectors.salesforce.fields import DUPLICATE_CODE, TOOLING_PATH, custom_field_body
from leadrelay.connectors.salesforce.results import (
    CONVERTED_LEAD,
    SYSTEM,
    customer_result,
    is_customer,
)
from leadrelay.connectors.salesforce.soql import datetime_literal, in_batches
from leadrelay.connectors.shipped import shipped_mapping_fields

__all__ = [
    "CONTACT_FIELDS",
    "CONTACT_OVERLAY",
    "CONVERTED_CONTACT_FIELDS",
    "DEFAULT_READ_FIELDS",
    "OPPORTUNITY_FIELDS",
    "SalesforceConnector",
]

T = TypeVar("T")
#: A keyset position: a SystemModstamp and the Id of the Lead read at it.
Position = tuple[datetime, str]

#: Composite sObject collections take at most 200 records per call.
COLLECTION_LIMIT = 200
#: Fields read from Lead when neither ``read_fields`` nor the mapping file says otherwise.
DEFAULT_READ_FIELDS: tuple[str, ...] = (
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "Company",
    "Title",
    "Phone",
    "Status",
    "LeadSource",
    "OwnerId",
    "IsConverted",
    "ConvertedContactId",
    "ConvertedAccountId",
    "SystemModstamp",
    "LastModifiedDate",
    "CreatedDate",
    "UTM_Source__c",
    "UTM_Medium__c",
    "UTM_Campaign__c",
    "UTM_Term__c",
    "UTM_Content__c",
    "Rejection_Reason__c",
    "LeadRelay_Key__c",
)
#: Fields read from a Contact found by email (an existing customer).
CONTACT_FIELDS: tuple[str, ...] = (
    "Id",
    "Email",
    "FirstName",
    "LastName",
    "AccountId",
    "OwnerId",
    "SystemModstamp",
)
#: The relationship of a converted Lead's Opportunity. Its fields are read with the Lead's
#: (``ConvertedOpportunity.StageName``) and flattened into the Lead's record under those names.
OPPORTUNITY = "ConvertedOpportunity"
#: Opportunity fields read on every Lead when the org lets the integration user see them.
OPPORTUNITY_FIELDS: tuple[str, ...] = tuple(
    f"{OPPORTUNITY}.{name}"
    for name in ("Id", "StageName", "IsClosed", "IsWon", "Amount", "CloseDate", "SystemModstamp")
)
#: The relationship of a converted Lead's Contact: after the conversion the person's details
#: live there, and a change of the Contact does not stamp the Lead.
CONVERTED_CONTACT = "ConvertedContact"
#: Lead field -> the Contact field that holds the same detail after a conversion (the standard
#: lead field mapping of a conversion: City becomes MailingCity …). For a converted Lead the
#: Contact's value stands for the Lead's frozen one, under the Lead's field name.
CONTACT_OVERLAY: dict[str, str] = {
    "Email": "Email",
    "FirstName": "FirstName",
    "LastName": "LastName",
    "Title": "Title",
    "Phone": "Phone",
    "MobilePhone": "MobilePhone",
    "Street": "MailingStreet",
    "City": "MailingCity",
    "State": "MailingState",
    "PostalCode": "MailingPostalCode",
    "Country": "MailingCountry",
}
#: Contact fields read on every Lead when the org lets the integration user see them.
CONVERTED_CONTACT_FIELDS: tuple[str, ...] = tuple(
    f"{CONVERTED_CONTACT}.{name}"
    for name in dict.fromkeys(("Id", "SystemModstamp", *CONTACT_OVERLAY.values()))
)
#: The parents followed by their own SystemModstamp, in the order their reads are paged.
_FOLLOWED = (OPPORTUNITY, CONVERTED_CONTACT)
#: The fields the connector itself needs on every Lead it reads.
_REQUIRED_READ = ("Id", "Email", "SystemModstamp", "IsConverted", "ConvertedContactId")
_CONTACT_PREFIX = "003"
_USER_PREFIX = "005"
#: The objects a Task's WhoId may name, by key prefix.
_TASK_PARENTS = {"00Q": "Lead", _CONTACT_PREFIX: "Contact"}
#: Task.Subject and Task.Description lengths (describe: 255 and 32,000 characters).
TASK_SUBJECT_MAX = 255
TASK_DESCRIPTION_MAX = 32_000
#: Query operations per Composite call (Salesforce allows at most 5).
COMPOSITE_QUERIES = 5
#: How long a cached session is reused: Salesforce's default session timeout is 2 hours (an
#: org may set it shorter; a refused session is dropped and renewed at once).
SESSION_TTL = timedelta(minutes=110)
#: Fields read_changes adds to tell deleted and merged Leads apart.
_DELETION_FIELDS = ("IsDeleted", "MasterRecordId")
#: Error codes meaning the org's schema changed under a cached describe.
_SCHEMA_CODES = frozenset(
    {"INVALID_FIELD", "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"}
)


def encode_cursor(record: Mapping[str, Any]) -> str:
    """The cursor after ``record``: its SystemModstamp and Id, ``<stamp>|<id>``."""
    return f"{record['SystemModstamp']}|{record['Id']}"


def split_cursor(
    cursor: str | None,
) -> tuple[Position | None, Position | None, Position | None]:
    """The Lead, Opportunity and Contact positions of a :meth:`read_changes` cursor.

    ``<stamp>|<id>`` (the Lead read alone), ``…|<stamp>|<id>`` with the Opportunity
    SystemModstamp and Lead Id of the last converted Lead read for its outcome, and
    ``…|<stamp>|<id>`` again for its Contact (a position not reached yet is ``|``). The shorter
    forms of earlier versions are read as they were: the positions they lack are None (that
    read starts over once).

    Raises:
        ValueError: the cursor is not one of this connector's.
    """
    return (None, None, None) if cursor is None else _split(cursor)


def _split(cursor: str) -> tuple[Position, Position | None, Position | None]:
    parts = cursor.split("|")
    if len(parts) not in (2, 4, 6) or not parts[0]:
        raise ValueError(f"not a Salesforce cursor: {cursor!r}")
    lead = _position(cursor, parts[:2])
    followed = [
        None if parts[n : n + 2] == ["", ""] else _position(cursor, parts[n : n + 2])
        for n in range(2, len(parts), 2)
    ]
    followed += [None] * (2 - len(followed))
    return lead, followed[0], followed[1]


def _position(cursor: str, parts: Sequence[str]) -> Position:
    try:
        return parse_stamp(parts[0]), parts[1]
    except ValueError:
        raise ValueError(f"not a Salesforce cursor: {cursor!r}") from None


def join_cursor(lead: Position | None, *followed: Position | None) -> str | None:
    """The cursor of :func:`split_cursor`'s positions (None before anything was read)."""
    if lead is None:
        return None
    texts = [f"{format_stamp(lead[0])}|{lead[1]}"]
    texts += ["|" if at is None else f"{format_stamp(at[0])}|{at[1]}" for at in followed]
    while len(texts) > 1 and texts[-1] == "|":
        texts.pop()
    return "|".join(texts)


def format_stamp(value: datetime) -> str:
    """An aware datetime as Salesforce writes it: ``2024-05-01T09:30:00.000+0000``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def decode_cursor(cursor: str) -> Position:
    """The Lead SystemModstamp and Id of a cursor made by :func:`encode_cursor` or
    :meth:`SalesforceConnector.read_changes` (see :func:`split_cursor`).

    Raises:
        ValueError: the cursor is not one of this connector's.
    """
    return _split(cursor)[0]


def parse_stamp(value: str) -> datetime:
    """A Salesforce datetime (``2024-05-01T09:30:00.000+0000``) as an aware datetime."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _record_type(record_id: str) -> str:
    return "Contact" if record_id.startswith(_CONTACT_PREFIX) else "Lead"


def _clean(record: Mapping[str, Any]) -> RawRecord:
    """A query row with its ``attributes`` kept to the type (the URL is not needed), and a
    parent record of a relationship path flattened: ``{"ConvertedOpportunity": {"StageName":
    …}}`` becomes ``"ConvertedOpportunity.StageName"``; a null parent (Opportunity, Contact)
    is left out (see :func:`_with_paths`)."""
    out: RawRecord = {}
    for key, value in record.items():
        if key == "attributes" and isinstance(value, Mapping):
            out[key] = {"type": value.get("type")}
        elif isinstance(value, Mapping) and "attributes" in value:
            for name, inner in value.items():
                if name != "attributes":
                    out[f"{key}.{name}"] = inner
        elif not (value is None and key in _FOLLOWED):
            out[key] = value
    return out


def _with_paths(row: RawRecord, fields: Sequence[str]) -> RawRecord:
    """``row`` with every relationship path of ``fields`` present: blank when the Lead has no
    such parent (not converted, or converted without an Opportunity)."""
    for name in fields:
        if "." in name:
            row.setdefault(name, None)
    return row


def _overlay_contact(row: RawRecord) -> RawRecord:
    """A converted Lead's row with its Contact's current details in the Lead's own fields.

    The Lead is frozen at its conversion; the person's later changes are made on the Contact.
    Each Lead field of :data:`CONTACT_OVERLAY` the row holds takes the value of the Contact
    field read with it (``ConvertedContact.MailingCity`` for ``City``), blank included: the
    Contact stands for the Lead. A Contact field the org hides from the integration user is
    not read, and its Lead field keeps the Lead's value. The ``ConvertedContact.*`` fields stay
    in the row too, so a mapping may name them."""
    if not row.get("IsConverted") or not row.get(f"{CONVERTED_CONTACT}.Id"):
        return row
    for lead_field, contact_field in CONTACT_OVERLAY.items():
        path = f"{CONVERTED_CONTACT}.{contact_field}"
        if lead_field in row and path in row:
            row[lead_field] = row[path]
    return row


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def save_error(ref: str, errors: Any, *, status: int | None = None) -> Rejected:
    """The :class:`Rejected` of one failed SaveResult (``errors`` of a collection result).

    ``DUPLICATES_DETECTED`` carries the duplicate rule's own message (the key is spelt
    ``duplicateResut`` in real responses; both spellings are read — crm-api-facts §2).
    """
    first = errors[0] if isinstance(errors, list) and errors else {}
    if not isinstance(first, Mapping):
        first = {}
    code = str(first.get("statusCode") or first.get("errorCode") or "") or None
    message = str(first.get("message") or "the record was refused")
    fields = first.get("fields")
    field = (
        fields[0] if isinstance(fields, list) and fields and isinstance(fields[0], str) else None
    )
    if code == "DUPLICATES_DETECTED":
        duplicate = first.get("duplicateResut") or first.get("duplicateResult")
        if isinstance(duplicate, Mapping):
            rule = duplicate.get("duplicateRule")
            rule_message = duplicate.get("errorMessage") or message
            message = f"{rule_message} (duplicate rule {rule})" if rule else str(rule_message)
    return Rejected(message, system=SYSTEM, record=ref, field=field, code=code, status=status)


class SalesforceConnector(Connector[SalesforceConnection]):
    """Leads in a Salesforce org (REST API through simple-salesforce; Bulk API 2.0).

    Args:
        settings: the ``[connections.NAME]`` table (``kind = "salesforce"``).
        name: the connection's name.
        retry: the retry bounds (default :class:`RetryPolicy`).
        sleep: how to wait between retries and bulk polls (tests pass a fast one).
        read_fields: the Lead fields ``read_changes`` and ``lookup`` return; default: the fields
            of the built-in mapping plus :data:`DEFAULT_READ_FIELDS`, keeping those the org's
            ``describe`` has.
        overlap: how far the last cursor of a read stays before the server time of that read
            (records committed late with an earlier SystemModstamp); default: the connection's
            ``read_lookback_s``.
        check_contacts: look emails up on Contact too, and refuse to create a Lead for an
            existing Contact (default True).
        bulk_poll_s, bulk_timeout_s: first poll interval and the longest wait for a Bulk job.
    """

    kind: ClassVar[str] = "salesforce"
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
    batch_size: ClassVar[int] = COLLECTION_LIMIT

    #: Seconds a lookup answer may be reused by the next upsert of the same emails.
    lookup_memo_s: ClassVar[float] = 10.0

    def __init__(
        self,
        settings: SalesforceConnection,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        read_fields: Sequence[str] | None = None,
        overlap: timedelta | None = None,
        check_contacts: bool = True,
        bulk_poll_s: float = 1.0,
        bulk_timeout_s: float = 3600.0,
    ) -> None:
        super().__init__(settings, name)
        self.session = requests.Session()
        if settings.ca_bundle is not None:
            self.session.verify = str(settings.ca_bundle)
            # requests lets REQUESTS_CA_BUNDLE override Session.verify unless trust_env is off;
            # a connection that names its CA bundle means that bundle.
            self.session.trust_env = False
        # Salesforce has no per-second limit for REST calls, only the org's 24 h budget
        # (Sforce-Limit-Info, fed to the limiter after each call) and 25 concurrent long ones.
        self.limiter = RateLimiter(SYSTEM, max_calls=100, per_s=1.0, sleep=sleep)
        self.policy = self.call_policy(limiter=self.limiter, retry=retry, sleep=sleep)
        self._sleep = sleep
        self.read_fields: list[str] | None = list(read_fields) if read_fields else None
        self.overlap = (
            overlap
            if overlap is not None
            else timedelta(
                seconds=5.0 if settings.read_lookback_s is None else settings.read_lookback_s
            )
        )
        self.check_contacts = check_contacts
        self.bulk_poll_s = bulk_poll_s
        self.bulk_timeout_s = bulk_timeout_s
        self._lock = threading.RLock()
        self._token: Token | None = None
        self._sf: Any = None
        self._fields: list[str] | None = None
        self._schema: Schema | None = None
        self.token_requests = 0
        # Ids of Leads read as converted: never written again (Salesforce refuses them).
        self._converted: set[str] = set()
        # Email -> (when, the Lead/Contact found or None): the answer of a lookup, reused by an
        # upsert of the same emails moments later instead of asking Salesforce again.
        self._lookup_memo: dict[str, tuple[float, RawRecord | None]] = {}
        # The server time of the last response on this thread (its Date header, less the time
        # the answer took), for the cursor of an incremental read.
        self._server_time = threading.local()
        self.session.hooks["response"].append(self._note_server_time)

    # -- session ----------------------------------------------------------------------------

    def _note_server_time(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        header = response.headers.get("Date")
        try:
            when = parsedate_to_datetime(header) if header else None
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            self._server_time.value = when - response.elapsed

    def _cache_secret(self) -> str:
        """What the cached session and describe are sealed with: a secret of the connection."""
        for value in (
            self.settings.consumer_secret,
            self.settings.refresh_token,
            self.settings.private_key,
            self.settings.password,
        ):
            if value is not None:
                return str(value.get_secret_value())
        return str(self.settings.consumer_key or self.settings.login_url)

    def _session_key(self) -> str:
        """The cache entry of this connection's session: its auth server, app and grant."""
        grant = self.settings.refresh_token
        return cache_key(
            SYSTEM,
            "session",
            self.settings.auth,
            str(self.settings.login_url),
            str(self.settings.consumer_key or ""),
            str(self.settings.username or ""),
            grant.get_secret_value() if grant is not None else "",
        )

    def _describe_key(self) -> str:
        """The cache entry of the Lead describe, tied to the session it was read with."""
        return cache_key(SYSTEM, "describe", "Lead", self.settings.api_version, self._session_key())

    def _login(self, *, fresh: bool = False) -> None:
        key, secret = self._session_key(), self._cache_secret()
        cached = None if fresh else self.credentials.get(key, secret=secret)
        if cached and isinstance(cached.get("access_token"), str) and cached.get("instance_url"):
            token = Token(str(cached["access_token"]), str(cached["instance_url"]))
        else:
            token = fetch_token(self.settings, self.session, self.policy)
            self.token_requests += 1
            self.credentials.put(
                key,
                {"access_token": token.access_token, "instance_url": token.instance_url},
                secret=secret,
                expires_at=datetime.now(UTC) + SESSION_TTL,
            )
        register_secret(token.access_token)
        self._token = token
        self._sf = Salesforce(
            instance_url=token.instance_url,
            session_id=token.access_token,
            session=self.session,
            version=self.settings.api_version,
            # Plain dicts, not simple-salesforce's default OrderedDict: a page of 2,000 Leads
            # parses into some 150,000 objects, and an OrderedDict is about twice a dict.
            object_pairs_hook=dict,
        )

    def client(self) -> Any:
        """The simple-salesforce client, logging in first when there is no session yet."""
        with self._lock:
            if self._sf is None:
                self._login()
            return self._sf

    def _reauth(self) -> None:
        """Salesforce refused the session (401): drop the cached one and log in anew."""
        with self._lock:
            self.credentials.forget(self._session_key())
            self._sf = None
            self._login(fresh=True)

    @property
    def instance_url(self) -> str | None:
        """The org's instance URL, once logged in."""
        return self._token.instance_url if self._token is not None else None

    @property
    def access_token(self) -> str | None:
        """The current access token (a secret; for Bulk requests and tests)."""
        return self._token.access_token if self._token is not None else None

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """``(used, max)`` of the org's 24 h API budget from the last ``Sforce-Limit-Info``."""
        sf = self._sf
        usage = getattr(sf, "api_usage", None) if sf is not None else None
        found = usage.get("api-usage") if isinstance(usage, Mapping) else None
        if found is None:
            return None
        return int(found.used), int(found.total)

    def call(
        self,
        send: Callable[[Any], T],
        *,
        describe: str,
        idempotent: bool,
        record: str | None = None,
        to_info: Callable[[T], ResponseInfo] | None = None,
    ) -> T:
        """Run ``send(client)`` under the call policy (re-auth once on INVALID_SESSION_ID);
        ``to_info`` reads a plain requests response (simple-salesforce raises instead)."""
        self.client()
        try:
            return self.policy.execute(
                lambda: send(self.client()),
                to_info=to_info,
                idempotent=idempotent,
                reauth=self._reauth,
                describe=describe,
                record=record,
            )
        finally:
            usage = self.api_usage
            if usage is not None:
                self.limiter.observe({"Sforce-Limit-Info": f"api-usage={usage[0]}/{usage[1]}"})

    def restful(
        self,
        path: str,
        *,
        method: str = "GET",
        describe: str,
        idempotent: bool,
        **kwargs: Any,
    ) -> Any:
        """``client.restful(path, …)`` under :meth:`call`, with the connection's timeout."""
        kwargs.setdefault("timeout", self.settings.timeout_s)
        return self.call(
            lambda sf: sf.restful(path, method=method, **kwargs),
            describe=describe,
            idempotent=idempotent,
        )

    def _write_headers(self) -> dict[str, str]:
        if self.settings.allow_duplicate_save:
            return {"Sforce-Duplicate-Rule-Header": "allowSave=true"}
        return {}

    # -- queries ----------------------------------------------------------------------------

    def query_pages(self, soql: str, *, describe: str) -> Iterator[list[RawRecord]]:
        """The pages of ``soql``: ``query`` then ``queryMore`` until done."""
        timeout = self.settings.timeout_s
        result = self.call(
            lambda sf: sf.query(soql, timeout=timeout), describe=describe, idempotent=True
        )
        yield from self._pages_from(result, describe)

    def _pages_from(self, result: Mapping[str, Any], describe: str) -> Iterator[list[RawRecord]]:
        """The rows of a query's first answer, then of each ``queryMore`` page until done."""
        for rows, _more in self._marked_pages(result, describe):
            yield rows

    def _marked_pages(
        self, result: Mapping[str, Any], describe: str
    ) -> Iterator[tuple[list[RawRecord], bool]]:
        """:meth:`_pages_from`, each page with whether another follows (the answer's ``done``
        says so): the next page is asked for only once this one was taken, so one page of
        rows is held at a time. The parsed answer is let go as soon as its rows are cleaned,
        and those rows before the next page is asked for: a page's answer (every row twice,
        relationship parents and ``attributes`` included) is never alive beside the next."""
        timeout = self.settings.timeout_s
        while True:
            next_url = result.get("nextRecordsUrl")
            more = not result.get("done", True) and bool(next_url)
            rows = [_clean(r) for r in result.get("records", [])]
            del result
            yield rows, more
            del rows
            if not more:
                return
            result = self.call(
                _query_more(str(next_url), timeout),
                describe=f"{describe} (next page)",
                idempotent=True,
            )

    def query(self, soql: str, *, describe: str) -> list[RawRecord]:
        """Every row of ``soql``."""
        return [row for page in self.query_pages(soql, describe=describe) for row in page]

    def query_many(self, soqls: Sequence[str], *, describe: str) -> list[list[RawRecord]]:
        """Every row of each query, in order. Several queries travel together in Composite
        calls of up to :data:`COMPOSITE_QUERIES` (Salesforce counts a Composite call as one API
        request); a query's further pages are read with ``queryMore``. A query Salesforce
        refuses raises :class:`Fatal` with its own message."""
        if len(soqls) <= 1:
            return [self.query(text, describe=describe) for text in soqls]
        timeout = self.settings.timeout_s
        version = self.settings.api_version
        results: list[list[RawRecord]] = []
        for chunk in _chunks(list(soqls), COMPOSITE_QUERIES):
            body = {
                "allOrNone": False,
                "compositeRequest": [
                    {
                        "method": "GET",
                        "url": f"/services/data/v{version}/query?{urlencode({'q': text})}",
                        "referenceId": f"q{n}",
                    }
                    for n, text in enumerate(chunk)
                ],
            }
            answer = self.call(
                lambda sf, body=body: sf.restful(  # type: ignore[misc]
                    "composite", method="POST", json=body, timeout=timeout
                ),
                describe=f"{describe} ({len(chunk)} queries in one composite call)",
                idempotent=True,
            )
            parts = answer.get("compositeResponse") if isinstance(answer, Mapping) else None
            if not isinstance(parts, list) or len(parts) != len(chunk):
                raise Fatal(
                    f"{describe}: the composite answer has no result per query", system=SYSTEM
                )
            for part in parts:
                results.append(self._composite_rows(part, describe))
        return results

    def _composite_rows(self, part: Any, describe: str) -> list[RawRecord]:
        result = _query_answer(part, describe)
        return [row for page in self._pages_from(result, describe) for row in page]

    @staticmethod
    def _in_queries(
        sobject: str, fields: Sequence[str], column: str, values: Sequence[str]
    ) -> list[tuple[str, list[str]]]:
        """``SELECT fields FROM sobject WHERE column IN (values)`` split into URL-sized
        queries, each with the values it holds."""
        # Object and field names come from code and describe(); values are quoted literals.
        template = f"SELECT {', '.join(fields)} FROM {sobject} WHERE {column} IN ({{values}})"  # noqa: S608
        return in_batches(template, values)

    def _query_in(
        self, sobject: str, fields: Sequence[str], column: str, values: Sequence[str]
    ) -> list[RawRecord]:
        rows: list[RawRecord] = []
        for soql, batch in self._in_queries(sobject, fields, column, values):
            rows.extend(self.query(soql, describe=f"look up {len(batch)} {sobject} by {column}"))
        return rows

    def lead_fields(self) -> list[str]:
        """The Lead fields this connector reads (see ``read_fields``)."""
        with self._lock:
            if self._fields is not None:
                return self._fields
            if self.read_fields is not None:
                wanted = list(dict.fromkeys([*_REQUIRED_READ, *self.read_fields]))
                self._fields = wanted
                return wanted
        schema = self._known_schema()
        candidates = [
            *_REQUIRED_READ,
            *DEFAULT_READ_FIELDS,
            *OPPORTUNITY_FIELDS,
            *CONVERTED_CONTACT_FIELDS,
            *shipped_mapping_fields("salesforce"),
        ]
        fields = [name for name in dict.fromkeys(candidates) if schema.has(name)]
        # A Contact field is read for the Lead field it stands for, when that one is read (or
        # when the mapping names it itself).
        named = set(shipped_mapping_fields("salesforce"))
        standing = {
            f"{CONVERTED_CONTACT}.{contact}"
            for lead, contact in CONTACT_OVERLAY.items()
            if lead in fields
        }
        fields = [
            name
            for name in fields
            if not name.startswith(f"{CONVERTED_CONTACT}.")
            or name in standing
            or name in named
            or name in (f"{CONVERTED_CONTACT}.Id", f"{CONVERTED_CONTACT}.SystemModstamp")
        ]
        with self._lock:
            self._fields = fields
        return fields

    # -- read_changes -----------------------------------------------------------------------

    def read_changes(self, cursor: str | None) -> Iterator[Page]:
        """Leads changed, deleted or merged away since ``cursor``, oldest first, one page per
        query batch (≤ 2,000); see the module docstring. A read whose query names a field the
        org no longer has reads the describe again and runs once more."""
        try:
            yield from self._read_changes(cursor)
        except ConnectorError as exc:
            if exc.code != "INVALID_FIELD" or self.read_fields is not None:
                raise
            self.schema_changed()
            yield from self._read_changes(cursor)

    def _read_changes(self, cursor: str | None) -> Iterator[Page]:
        fields = list(dict.fromkeys([*self.lead_fields(), *_DELETION_FIELDS]))
        after, *followed_after = split_cursor(cursor)
        where = ""
        if after is not None:
            # SOQL datetime literals are whole seconds: read from the cursor's second and drop
            # the rows at or before the cursor itself.
            where = f" WHERE SystemModstamp >= {datetime_literal(after[0])}"
        soql = f"SELECT {', '.join(fields)} FROM Lead{where} ORDER BY SystemModstamp, Id"  # noqa: S608
        describe = "read changed and deleted Leads"
        # The parents whose own changes are followed (those the org lets the user read).
        follows = [n for n, parent in enumerate(_FOLLOWED) if f"{parent}.SystemModstamp" in fields]
        self._server_time.value = None
        if follows:
            first, *answers = self._read_together(
                soql,
                [self._followed_query(_FOLLOWED[n], fields, followed_after[n]) for n in follows],
                describe,
            )
        else:
            timeout = self.settings.timeout_s
            first = self.call(
                lambda sf: sf.query(soql, include_deleted=True, timeout=timeout),
                describe=describe,
                idempotent=True,
            )
            answers = []
        started: datetime | None = self._server_time.value
        remaining = _total(first)
        for answer in answers:
            total = _total(answer)
            remaining = None if remaining is None or total is None else remaining + total
        # Each followed position: where its read resumes. A followed read with no rows (an
        # idle run) ends with the Leads'; the others are paged after the Leads.
        positions: list[Position | None] = list(followed_after)
        pending: list[tuple[int, Mapping[str, Any]]] = []
        for n, answer in zip(follows, answers, strict=True):
            stamp = f"{_FOLLOWED[n]}.SystemModstamp"
            if answer.get("records"):
                pending.append((n, answer))
                continue
            for _, resume in self._keyset(answer, followed_after[n], started, stamp, ""):
                positions[n] = resume
        # The pending answers are held by ``pending`` alone, each let go once it is paged.
        answers, answer = [], {}
        lead_end = after
        # The converted Leads this read gave, so that a followed read does not give one twice.
        # Only converted ones: a followed read lists converted Leads alone, and a Lead's
        # conversion is final, so a row the Lead read gave unconverted is never in it. An
        # ordinary sync's pages hold no converted Lead, so nothing is kept across its pages.
        read_ids: set[str] = set()
        leads = self._keyset(first, after, started, "SystemModstamp", describe)
        del first  # the first answer is the pages' to let go of (see _marked_pages)
        for page, resume in leads:
            lead_end = resume
            if pending:
                read_ids.update(str(row["Id"]) for row in page.records if row.get("IsConverted"))
            last = not pending and page.cursor == ""
            if page.records or page.deleted or last:
                yield Page(page.records, join_cursor(resume, *positions), page.deleted, remaining)
            if remaining is not None:
                remaining = max(0, remaining - len(page.records) - len(page.deleted))
        while pending:
            n, answer = pending.pop(0)
            final = not pending
            parent = _FOLLOWED[n]
            what = "outcome" if parent == OPPORTUNITY else "Contact"
            describe = f"read the {what} of converted Leads"
            stamp = f"{parent}.SystemModstamp"
            followed = self._keyset(answer, followed_after[n], started, stamp, describe)
            del answer
            for page, resume in followed:
                # A Lead this read already gave (its own row carries its Opportunity and
                # Contact, read in the same call) is not given twice.
                fresh = [row for row in page.records if str(row.get("Id")) not in read_ids]
                read_ids.update(str(row.get("Id")) for row in fresh)
                positions[n] = resume
                if fresh or (final and page.cursor == ""):
                    yield Page(fresh, join_cursor(lead_end, *positions), (), remaining)
                if remaining is not None:
                    remaining = max(0, remaining - len(page.records))

    def _seen(self, row: RawRecord) -> RawRecord:
        """A Lead row as returned: every relationship path present, a converted Lead's person
        fields from its Contact (:func:`_overlay_contact`); a converted Lead is remembered so
        that no write is sent to it."""
        if row.get("IsConverted") and row.get("Id"):
            with self._lock:
                self._converted.add(str(row["Id"]))
        return _with_paths(_overlay_contact(row), self.lead_fields())

    def _followed_query(self, parent: str, fields: Sequence[str], after: Position | None) -> str:
        """The converted Leads whose ``parent`` (Opportunity or Contact) changed since
        ``after``, in the order of the parent's SystemModstamp (a parent field: one query, no
        semi-join); all converted Leads with that parent when there is no position yet."""
        wanted = [name for name in fields if name not in _DELETION_FIELDS]
        stamp = f"{parent}.SystemModstamp"
        where = (
            f"{parent}Id != null" if after is None else f"{stamp} >= {datetime_literal(after[0])}"
        )
        return (
            f"SELECT {', '.join(wanted)} FROM Lead WHERE IsConverted = true AND {where} "  # noqa: S608
            f"ORDER BY {stamp}, Id"
        )

    def _read_together(
        self, lead_soql: str, followed_soqls: Sequence[str], describe: str
    ) -> list[Mapping[str, Any]]:
        """The first answers of the Lead read (``queryAll``: deleted Leads too) and of each
        followed read, in one Composite call (one API request: an idle run costs what it did
        before the Opportunity and the Contact were followed)."""
        version = self.settings.api_version
        queries = [("leads", "queryAll", lead_soql)]
        queries += [(f"followed{n}", "query", text) for n, text in enumerate(followed_soqls)]
        body = {
            "allOrNone": False,
            "compositeRequest": [
                {
                    "method": "GET",
                    "url": f"/services/data/v{version}/{endpoint}?{urlencode({'q': text})}",
                    "referenceId": ref,
                }
                for ref, endpoint, text in queries
            ],
        }
        timeout = self.settings.timeout_s
        answer = self.call(
            lambda sf: sf.restful("composite", method="POST", json=body, timeout=timeout),
            describe=f"{describe} and the outcome and Contact of converted Leads",
            idempotent=True,
        )
        parts = answer.get("compositeResponse") if isinstance(answer, Mapping) else None
        if not isinstance(parts, list) or len(parts) != len(queries):
            raise Fatal(f"{describe}: the composite answer has no result per query", system=SYSTEM)
        return [_query_answer(part, describe) for part in parts]

    def _keyset(
        self,
        first: Mapping[str, Any],
        after: Position | None,
        started: datetime | None,
        stamp: str,
        describe: str,
    ) -> Iterator[tuple[Page, Position | None]]:
        """The pages of a read ordered by ``stamp`` then Id, each with the position to resume
        from; rows at or before ``after`` are dropped. The last page's cursor is ``""`` (its
        position: at most the server time of the read minus the look-back)."""
        last: Position | None = None
        pages = self._marked_pages(first, describe)
        del first  # the first answer is the pages' to let go of (see _marked_pages)
        for rows, more in pages:
            records: list[RawRecord] = []
            deleted: list[Deletion] = []
            for row in rows:
                position = (parse_stamp(str(row[stamp])), str(row["Id"]))
                if after is not None and position <= after:
                    continue
                last = position
                if row.get("IsDeleted"):
                    master = row.get("MasterRecordId")
                    deleted.append(
                        Deletion(str(row["Id"]), str(master) if master else None, position[0])
                    )
                    continue
                record = {k: v for k, v in row.items() if k not in _DELETION_FIELDS}
                records.append(self._seen(record))
            del rows  # only the page's records are held while the next page is read
            resume = last
            if not more and started is not None:
                # The end of the read: no later than the server time of the read minus the
                # look-back, and never before where this read began.
                floor = (started - self.overlap, "")
                resume = floor if last is None else min(last, floor)
            if after is not None:
                resume = after if resume is None else max(resume, after)
            yield Page(records, None if more else "", tuple(deleted), None), resume

    # -- lookup -----------------------------------------------------------------------------

    def lookup(
        self, emails: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> dict[str, RawRecord]:
        """Leads (and Contacts) by email or id, keyed by normalised email or by id.

        One query per batch of emails (as many as fit one query URL), never one per lead. Emails
        with no Lead are looked up on Contact when ``check_contacts`` is on; such a record has
        ``attributes.type == "Contact"``. When several Leads share an email, an unconverted one
        wins, then the most recently modified.
        """
        found: dict[str, RawRecord] = {}
        if emails:
            found.update(self._find_by_email([normalize_email(e) for e in emails if e.strip()]))
        if ids:
            wanted = list(dict.fromkeys(i for i in ids if i))
            leads = [i for i in wanted if _record_type(i) == "Lead"]
            contacts = [i for i in wanted if _record_type(i) == "Contact"]
            rows = self._query_in("Lead", self.lead_fields(), "Id", leads) if leads else []
            rows = [self._seen(row) for row in rows]
            if contacts:
                rows += self._query_in("Contact", CONTACT_FIELDS, "Id", contacts)
            by_id = {str(row["Id"]): row for row in rows}
            for asked in wanted:
                # 15- and 18-character ids name the same record; key by what was asked.
                row = by_id.get(asked) or next(
                    (r for rid, r in by_id.items() if rid[:15] == asked[:15]), None
                )
                if row is not None:
                    found[asked] = row
        return found

    def _find_by_email(self, emails: Sequence[str], *, reuse: bool = False) -> dict[str, RawRecord]:
        """Leads (else Contacts) by normalised email; ``reuse`` takes fresh memo answers.

        Every answer is remembered for :attr:`lookup_memo_s` seconds. The sync engine looks a
        batch up (to identify its leads) right before it upserts the same batch, so the upsert
        reuses those answers instead of querying twice. The window is short on purpose: it is
        no wider than the time between the engine's decision and the write.
        """
        unique = list(dict.fromkeys(e for e in emails if e))
        if not unique:
            return {}
        found: dict[str, RawRecord] = {}
        now = time.monotonic()
        if reuse:
            fresh = [
                email
                for email in unique
                if email in self._lookup_memo
                and now - self._lookup_memo[email][0] <= self.lookup_memo_s
            ]
            for email in fresh:
                row = self._lookup_memo[email][1]
                if row is not None:
                    found[email] = row
            asked = set(fresh)
            unique = [email for email in unique if email not in asked]
            if not unique:
                return found
        queried = self._query_emails(unique)
        found.update(queried)
        self._remember(unique, queried, now)
        return found

    def _remember(self, emails: Sequence[str], found: Mapping[str, RawRecord], now: float) -> None:
        with self._lock:
            if len(self._lookup_memo) > 10 * COLLECTION_LIMIT:
                # Keep memory flat on long runs: answers older than the window are useless.
                self._lookup_memo = {
                    email: entry
                    for email, entry in self._lookup_memo.items()
                    if now - entry[0] <= self.lookup_memo_s
                }
            for email in emails:
                self._lookup_memo[email] = (now, found.get(email))

    def _query_emails(self, unique: Sequence[str]) -> dict[str, RawRecord]:
        """Leads by e-mail, and Contacts for e-mails no Lead holds: the Lead and Contact queries
        go out together (one Composite call), not one after the other."""
        lead_soqls = [
            text for text, _ in self._in_queries("Lead", self.lead_fields(), "Email", unique)
        ]
        contact_soqls: list[str] = []
        if self.check_contacts:
            contact_soqls = [
                text for text, _ in self._in_queries("Contact", CONTACT_FIELDS, "Email", unique)
            ]
        answers = self.query_many(
            [*lead_soqls, *contact_soqls], describe=f"look up {len(unique)} e-mails"
        )
        found: dict[str, RawRecord] = {}
        for rows in answers[: len(lead_soqls)]:
            for row in rows:
                # Keyed by the Lead's own e-mail, the one asked for (a converted Lead's row
                # carries its Contact's, which may have changed since).
                key = normalize_email(str(row.get("Email") or ""))
                row = self._seen(row)
                if key and (key not in found or _better(row, found[key])):
                    found[key] = row
        leads = set(found)
        for rows in answers[len(lead_soqls) :]:
            for row in rows:
                key = normalize_email(str(row.get("Email") or ""))
                if key and key not in leads and key not in found:
                    found[key] = row
        return found

    # -- upsert -----------------------------------------------------------------------------

    def upsert(self, inputs: Sequence[UpsertInput]) -> list[WriteResult]:
        """Create or update Leads; one result per input, in order (see the module docstring)."""
        items = list(inputs)
        for item in items:
            if not isinstance(item.fields, Mapping):
                raise TypeError(f"upsert input {item.ref!r}: fields must be a mapping")
        if not items:
            return []
        if len(items) > self.settings.bulk_threshold:
            return bulk.upsert(self, items)
        return self._upsert_rest(items)

    def _upsert_rest(self, items: list[UpsertInput]) -> list[WriteResult]:
        """The REST path of :meth:`upsert`: composite calls of 200."""
        if self.settings.external_id_field:
            return self._upsert_by_external_id(items)
        return self._upsert_by_lookup(items)

    @property
    def bulk_threshold(self) -> int | None:
        """An ``upsert`` of more inputs than this runs as Bulk API 2.0 jobs (``bulk_threshold``
        of the connection)."""
        return self.settings.bulk_threshold

    def _external_value(self, item: UpsertInput) -> str:
        ext = str(self.settings.external_id_field)
        value = item.fields.get(ext)
        return str(value) if value not in (None, "") else item.ref

    def _upsert_by_external_id(self, items: list[UpsertInput]) -> list[WriteResult]:
        ext = str(self.settings.external_id_field)
        results: list[WriteResult | None] = [None] * len(items)
        customers = self._existing_customers(items)
        queue = []
        for index, item in enumerate(items):
            contact = customers.get(index)
            if contact is not None:
                results[index] = customer_result(item, contact)
            else:
                queue.append(index)
        for chunk in _distinct_chunks(queue, lambda i: self._external_value(items[i]).lower()):
            records = [
                {
                    "attributes": {"type": "Lead"},
                    **{k: v for k, v in items[i].fields.items() if k not in ("Id", ext)},
                    ext: self._external_value(items[i]),
                }
                for i in chunk
            ]
            answers = self.restful(
                f"composite/sobjects/Lead/{ext}",
                method="PATCH",
                json={"allOrNone": False, "records": records},
                headers=self._write_headers(),
                describe=f"upsert {len(records)} Leads by {ext}",
                idempotent=True,  # by external id: sending twice writes the same record
            )
            checked = _answers(answers, len(chunk))
            self._watch(checked)
            for i, answer in zip(chunk, checked, strict=True):
                ref = items[i].ref
                if answer.get("success"):
                    outcome = (
                        WriteOutcome.CREATED if answer.get("created") else WriteOutcome.UPDATED
                    )
                    results[i] = WriteResult(ref, answer.get("id"), outcome)
                elif self._refused_as_converted(str(answer.get("id") or ref), answer):
                    results[i] = WriteResult(ref, answer.get("id"), WriteOutcome.UNCHANGED)
                else:
                    results[i] = WriteResult.failed(ref, save_error(ref, answer.get("errors")))
        return _complete(results)

    def _existing_customers(self, items: Sequence[UpsertInput]) -> dict[int, RawRecord]:
        """Input index → the Contact (or converted Lead) its email belongs to."""
        if not self.check_contacts:
            return {}
        emails = {
            i: normalize_email(str(it.fields.get("Email") or "")) for i, it in enumerate(items)
        }
        wanted = list(dict.fromkeys(e for e in emails.values() if e))
        if not wanted:
            return {}
        contacts: dict[str, RawRecord] = {}
        for row in self._query_in("Contact", CONTACT_FIELDS, "Email", wanted):
            contacts.setdefault(normalize_email(str(row.get("Email") or "")), row)
        return {i: contacts[e] for i, e in emails.items() if e in contacts}

    def _upsert_by_lookup(self, items: list[UpsertInput]) -> list[WriteResult]:
        results: list[WriteResult | None] = [None] * len(items)
        emails: dict[int, str] = {}
        known: list[int] = []
        for index, item in enumerate(items):
            if item.external_id:
                known.append(index)
                continue
            email = normalize_email(str(item.fields.get("Email") or ""))
            if not email:
                results[index] = WriteResult.failed(
                    item.ref,
                    Rejected(
                        "the record has no Email to find its Lead by (and no Salesforce id)",
                        system=SYSTEM,
                        record=item.ref,
                        field="Email",
                    ),
                )
                continue
            emails[index] = email
        if known:
            self._update_items(items, [(i, str(items[i].external_id)) for i in known], results)
        # One lookup for the whole call, in query-sized batches (or the answers of a lookup of
        # the same emails moments ago); a Lead created below is added to it, so a later input
        # with the same email updates it.
        found = self._find_by_email(list(emails.values()), reuse=True)
        # A batch never holds one email twice: the second waits until the first is created.
        for chunk in _distinct_chunks(list(emails), lambda i: emails[i]):
            updates: list[tuple[int, str]] = []
            creates: list[int] = []
            for index in chunk:
                row = found.get(emails[index])
                if row is None:
                    creates.append(index)
                elif is_customer(row):
                    results[index] = customer_result(items[index], row)
                else:
                    updates.append((index, str(row["Id"])))
            if updates:
                self._update_items(items, updates, results)
            if creates:
                self._create_items(items, creates, {i: emails[i] for i in creates}, results)
                for index in creates:
                    done = results[index]
                    if done is not None and done.ok and done.external_id:
                        found[emails[index]] = {
                            "attributes": {"type": "Lead"},
                            "Id": done.external_id,
                            "Email": emails[index],
                        }
                        self._remember([emails[index]], found, time.monotonic())
        return _complete(results)

    def _update_items(
        self,
        items: Sequence[UpsertInput],
        targets: list[tuple[int, str]],
        results: list[WriteResult | None],
    ) -> None:
        sendable: list[tuple[int, str]] = []
        for i, record_id in targets:
            if self._is_converted(record_id):
                results[i] = WriteResult(items[i].ref, record_id, WriteOutcome.UNCHANGED)
            else:
                sendable.append((i, record_id))
        for chunk in _chunks(sendable, COLLECTION_LIMIT):
            records = [
                {
                    "attributes": {"type": _record_type(record_id)},
                    **{k: v for k, v in items[i].fields.items() if k != "Id"},
                    "Id": record_id,
                }
                for i, record_id in chunk
            ]
            answers = self._collection("PATCH", records, f"update {len(records)} Leads")
            for (i, record_id), answer in zip(chunk, answers, strict=True):
                ref = items[i].ref
                if answer.get("success"):
                    results[i] = WriteResult(
                        ref, answer.get("id") or record_id, WriteOutcome.UPDATED
                    )
                elif self._refused_as_converted(record_id, answer):
                    results[i] = WriteResult(ref, record_id, WriteOutcome.UNCHANGED)
                else:
                    error = save_error(ref, answer.get("errors"))
                    results[i] = WriteResult.failed(ref, error, record_id)

    def _collection(self, method: str, records: list[RawRecord], describe: str) -> list[Any]:
        answers = self.restful(
            "composite/sobjects",
            method=method,
            json={"allOrNone": False, "records": records},
            headers=self._write_headers(),
            describe=describe,
            idempotent=method != "POST",
        )
        results = _answers(answers, len(records))
        self._watch(results)
        return results

    def _create_items(
        self,
        items: Sequence[UpsertInput],
        indexes: list[int],
        emails: Mapping[int, str],
        results: list[WriteResult | None],
    ) -> None:
        pending = list(indexes)
        attempts = 0
        while pending:
            attempts += 1
            records = [{"attributes": {"type": "Lead"}, **items[i].fields} for i in pending]
            try:
                answers = self._collection("POST", records, f"create {len(records)} Leads")
            except Retryable:
                # The creates may have been applied (reset, 5xx): find them before resending.
                if attempts >= self.policy.retry.max_attempts:
                    raise
                self._sleep(self.policy.retry.backoff(attempts))
                found = self._find_by_email([emails[i] for i in pending])
                still: list[int] = []
                for index in pending:
                    row = found.get(emails[index])
                    if row is None:
                        still.append(index)
                    elif is_customer(row):
                        results[index] = customer_result(items[index], row)
                    else:
                        ref = items[index].ref
                        results[index] = WriteResult(ref, str(row["Id"]), WriteOutcome.CREATED)
                pending = still
                continue
            for index, answer in zip(pending, answers, strict=True):
                ref = items[index].ref
                if answer.get("success"):
                    results[index] = WriteResult(ref, answer.get("id"), WriteOutcome.CREATED)
                else:
                    results[index] = WriteResult.failed(ref, save_error(ref, answer.get("errors")))
            pending = []

    # -- update, delete ---------------------------------------------------------------------

    def update(self, updates: Mapping[str, RawRecord]) -> list[WriteResult]:
        """Write fields to records by id (Lead, or Contact for ``003…`` ids); one per id."""
        targets = [(i, d) for i, d in updates.items() if not self._is_converted(i)]
        unchanged = {i: WriteResult(i, i, WriteOutcome.UNCHANGED) for i in updates}
        results: list[WriteResult] = []
        for chunk in _chunks(targets, COLLECTION_LIMIT):
            records = [
                {
                    "attributes": {"type": _record_type(record_id)},
                    **{k: v for k, v in fields.items() if k != "Id"},
                    "Id": record_id,
                }
                for record_id, fields in chunk
            ]
            answers = self._collection("PATCH", records, f"update {len(records)} records")
            for (record_id, _), answer in zip(chunk, answers, strict=True):
                if answer.get("success"):
                    results.append(WriteResult(record_id, record_id, WriteOutcome.UPDATED))
                elif self._refused_as_converted(record_id, answer):
                    results.append(unchanged[record_id])
                else:
                    error = save_error(record_id, answer.get("errors"))
                    results.append(WriteResult.failed(record_id, error, record_id))
        done = {result.ref: result for result in results}
        return [done.get(record_id, unchanged[record_id]) for record_id in updates]

    def _is_converted(self, record_id: str) -> bool:
        """True for a Lead this connector has read as converted (by its 15 or 18 characters)."""
        with self._lock:
            return record_id in self._converted or any(
                known[:15] == record_id[:15] for known in self._converted if len(record_id) == 15
            )

    def _refused_as_converted(self, record_id: str, answer: Mapping[str, Any]) -> bool:
        """True when Salesforce refused the write because the Lead is converted: the write is
        not due (a converted Lead is never written), so it is no failure either."""
        errors = answer.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if not isinstance(first, Mapping) or first.get("statusCode") != CONVERTED_LEAD:
            return False
        with self._lock:
            self._converted.add(record_id)
        return True

    def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        """Delete records by id (``DELETE composite/sobjects?ids=…``); one result per id.

        A record that is already deleted counts as done (a retried delete is harmless).
        """
        with self._lock:
            self._lookup_memo.clear()
        results: list[WriteResult] = []
        for chunk in _chunks(list(ids), COLLECTION_LIMIT):
            answers = _answers(
                self.restful(
                    "composite/sobjects",
                    method="DELETE",
                    params={"ids": ",".join(chunk), "allOrNone": "false"},
                    describe=f"delete {len(chunk)} records",
                    idempotent=True,
                ),
                len(chunk),
            )
            for record_id, answer in zip(chunk, answers, strict=True):
                errors = answer.get("errors") or []
                code = (
                    errors[0].get("statusCode") if errors and isinstance(errors[0], dict) else None
                )
                if answer.get("success"):
                    results.append(WriteResult(record_id, record_id, WriteOutcome.UPDATED))
                elif code == "ENTITY_IS_DELETED":
                    results.append(WriteResult(record_id, record_id, WriteOutcome.UNCHANGED))
                else:
                    error = save_error(record_id, errors)
                    results.append(WriteResult.failed(record_id, error, record_id))
        return results

    # -- describe, health, users ------------------------------------------------------------

    def describe(self) -> Schema:
        """The Lead object's schema: picklists hold active values only; a field is required
        when it is not nillable, createable and not defaulted on create.

        The describe is kept in :attr:`credentials` (shared by the next runs and processes) for
        :data:`SESSION_TTL`. While one is kept, this asks Salesforce only whether the Lead's
        metadata changed since (``If-Modified-Since``; an unchanged schema answers 304 with no
        body), so a mapping check sees a removed field or picklist value at once."""
        key, secret = self._describe_key(), self._cache_secret()
        cached = self.credentials.get(key, secret=secret) or {}
        specs, since = cached.get("fields"), cached.get("read_at")
        opportunity, contact = cached.get("opportunity"), cached.get("contact")
        if not isinstance(specs, list) or not isinstance(since, str):
            specs, since = None, None
        response = self._describe_request(since)
        if (
            response.status_code != 304
            or specs is None
            or not isinstance(opportunity, list)
            or not isinstance(contact, list)
        ):
            try:
                body = response.json()
            except ValueError:
                body = None
            raw = body.get("fields") if isinstance(body, Mapping) else None
            if not isinstance(raw, list):
                raise Fatal("describe Lead: the answer holds no fields", system=SYSTEM)
            specs = [{k: spec.get(k) for k in _DESCRIBE_KEYS} for spec in raw]
            opportunity, contact = self._describe_parents()
            self.credentials.put(
                key,
                {
                    "fields": specs,
                    "opportunity": opportunity,
                    "contact": contact,
                    "read_at": response.headers.get("Date") or "",
                },
                secret=secret,
                expires_at=datetime.now(UTC) + SESSION_TTL,
            )
        schema = _schema(specs, opportunity, contact)
        self._schema = schema
        return schema

    def _describe_request(self, since: str | None) -> requests.Response:
        """``GET sobjects/Lead/describe``, conditional on ``since`` (an HTTP-date)."""
        timeout = self.settings.timeout_s

        def send(sf: Any) -> requests.Response:
            headers = dict(sf.headers)
            if since:
                headers["If-Modified-Since"] = since
            url = f"{sf.base_url}sobjects/Lead/describe"
            return self.session.get(url, headers=headers, timeout=timeout)

        return self.call(send, describe="describe Lead", idempotent=True, to_info=from_requests)

    def _describe_parents(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The Opportunity and Contact fields (a converted Lead's parents) the integration user
        may read, describe's, asked when the Lead's describe changed: both in one Composite
        call. An object the org hides from the user (403 / 404) has none."""
        version = self.settings.api_version
        body = {
            "allOrNone": False,
            "compositeRequest": [
                {
                    "method": "GET",
                    "url": f"/services/data/v{version}/sobjects/{sobject}/describe",
                    "referenceId": sobject,
                }
                for sobject in ("Opportunity", "Contact")
            ],
        }
        timeout = self.settings.timeout_s
        answer = self.call(
            lambda sf: sf.restful("composite", method="POST", json=body, timeout=timeout),
            describe="describe Opportunity and Contact",
            idempotent=True,
        )
        parts = answer.get("compositeResponse") if isinstance(answer, Mapping) else None
        if not isinstance(parts, list) or len(parts) != 2:
            raise Fatal("describe Opportunity and Contact: no answer per object", system=SYSTEM)
        opportunity, contact = (_described_fields(part) for part in parts)
        return opportunity, contact

    def _known_schema(self) -> Schema:
        """The kept describe without asking Salesforce (what a read needs), else
        :meth:`describe`."""
        cached = self.credentials.get(self._describe_key(), secret=self._cache_secret())
        specs = cached.get("fields") if cached else None
        opportunity = cached.get("opportunity") if cached else None
        contact = cached.get("contact") if cached else None
        if isinstance(specs, list) and isinstance(opportunity, list) and isinstance(contact, list):
            return _schema(specs, opportunity, contact)
        return self.describe()

    def schema_changed(self) -> None:
        """Forget the cached describe and read fields: Salesforce refused one of them."""
        self.credentials.forget(self._describe_key())
        with self._lock:
            self._schema = None
            if self.read_fields is None:
                self._fields = None

    def _watch(self, answers: Sequence[Mapping[str, Any]]) -> None:
        """Drop the cached schema when a save result refuses a field or picklist value."""
        for answer in answers:
            errors = answer.get("errors")
            for error in errors if isinstance(errors, list) else []:
                if isinstance(error, Mapping) and error.get("statusCode") in _SCHEMA_CODES:
                    self.schema_changed()
                    return

    def health(self) -> Health:
        """One call to ``limits/``: credentials, the instance and the 24 h API budget."""
        try:
            limits = self.restful("limits/", describe="read org limits", idempotent=True)
        except AuthError as exc:
            return Health(False, SYSTEM, self.instance_url, False, details={"error": str(exc)})
        except ConnectorError as exc:
            valid = self._token is not None
            return Health(False, SYSTEM, self.instance_url, valid, details={"error": str(exc)})
        daily = limits.get("DailyApiRequests", {}) if isinstance(limits, Mapping) else {}
        maximum = daily.get("Max")
        remaining = daily.get("Remaining")
        used = (
            maximum - remaining if isinstance(maximum, int) and isinstance(remaining, int) else None
        )
        details: dict[str, Any] = {
            "api_version": self.settings.api_version,
            "auth": self.settings.auth,
        }
        usage = self.api_usage
        if usage is not None:
            details["sforce_limit_info"] = f"api-usage={usage[0]}/{usage[1]}"
        return Health(
            ok=True,
            system=SYSTEM,
            instance=self.instance_url,
            credentials_valid=True,
            budget_used=used,
            budget_max=maximum if isinstance(maximum, int) else None,
            details=details,
        )

    def users(self) -> list[RawRecord]:
        """Active users (Id, Email, Name), for owner routing."""
        return self.query(
            "SELECT Id, Email, Name FROM User WHERE IsActive = true ORDER BY Name",
            describe="list active users",
        )

    def account_owners(self) -> list[tuple[str, str]]:
        """Every Account with both a Website and an owner, as ``(Website, OwnerId)``, oldest
        first: one SOQL query and its ``queryMore`` pages (up to 2,000 rows each, the most a
        REST query page holds). The Website is returned as the org holds it; the caller
        normalizes the domain."""
        soql = "SELECT Website, OwnerId FROM Account WHERE Website != null ORDER BY CreatedDate, Id"
        owners: list[tuple[str, str]] = []
        for page in self.query_pages(soql, describe="list accounts with a website"):
            for row in page:
                website, owner = row.get("Website"), row.get("OwnerId")
                if website and owner:
                    owners.append((str(website), str(owner)))
        return owners

    def create_task(self, record_id: str, subject: str, body: str, due: datetime) -> str:
        """Create a Task on the Lead (``00Q…``) or Contact (``003…``) ``record_id``, due at
        ``due`` (UTC when naive), high priority, not started, with a reminder at ``due``;
        return the Task's id.

        Two calls: a query for the record's OwnerId (a record that does not exist, or is
        deleted, is refused here naming it) and ``POST sobjects/Task``. The Task is assigned
        to the record's owner only when that is a User (``005…``): a queue (``00G…``) cannot
        own a Task, so the Task then goes to the API user. Should the owner be an inactive
        user (INACTIVE_OWNER_OR_USER, a clear refusal: nothing was created), the Task is sent
        once more without an owner. Not retried on an unclear failure: a second try could
        create a second Task.
        """
        ref = str(record_id)
        sobject = _TASK_PARENTS.get(ref[:3])
        if sobject is None or len(ref) not in (15, 18) or not ref.isalnum() or not ref.isascii():
            raise Rejected(
                f"cannot create a task on {ref!r}: not a Salesforce Lead (00Q…) or Contact "
                "(003…) id",
                system=SYSTEM,
                record=ref,
                field="WhoId",
            )
        rows = self._query_in(sobject, ("Id", "OwnerId"), "Id", [ref])
        if not rows:
            raise Rejected(
                f"cannot create a task on {sobject} {ref}: no such {sobject}",
                system=SYSTEM,
                record=ref,
                field="WhoId",
            )
        moment = (due if due.tzinfo is not None else due.replace(tzinfo=UTC)).astimezone(UTC)
        fields: dict[str, Any] = {
            "WhoId": str(rows[0]["Id"]),
            "Subject": subject[:TASK_SUBJECT_MAX],
            "Description": body[:TASK_DESCRIPTION_MAX],
            # ActivityDate is a date-only field (the due day in UTC); the reminder carries
            # the exact moment.
            "ActivityDate": moment.date().isoformat(),
            "Status": "Not Started",
            "Priority": "High",
            "IsReminderSet": True,
            "ReminderDateTime": moment.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{moment.microsecond // 1000:03d}Z",
        }
        owner = str(rows[0].get("OwnerId") or "")
        if owner.startswith(_USER_PREFIX):
            fields["OwnerId"] = owner
        try:
            return self._post_task(fields, ref, sobject)
        except Rejected as exc:
            if exc.code != "INACTIVE_OWNER_OR_USER" or "OwnerId" not in fields:
                raise
        del fields["OwnerId"]
        return self._post_task(fields, ref, sobject)

    def _post_task(self, fields: Mapping[str, Any], ref: str, sobject: str) -> str:
        timeout = self.settings.timeout_s
        answer = self.call(
            lambda sf: sf.restful("sobjects/Task", method="POST", json=fields, timeout=timeout),
            describe=f"creation of a task on {sobject} {ref}",
            idempotent=False,
            record=ref,
        )
        task_id = answer.get("id") if isinstance(answer, Mapping) else None
        if not task_id:
            raise Rejected(
                f"Salesforce created no task on {sobject} {ref} (no id in the answer)",
                system=SYSTEM,
                record=ref,
            )
        return str(task_id)

    def lead_statuses(self) -> list[RawRecord]:
        """The org's Lead Status values with which of them count as converted."""
        return self.query(
            "SELECT Id, MasterLabel, ApiName, SortOrder, IsDefault, IsConverted FROM LeadStatus "
            "ORDER BY SortOrder",
            describe="list lead statuses",
        )

    def create_fields(self, specs: Sequence[CustomFieldSpec]) -> list[str]:
        """Create the custom Lead fields of ``specs`` that describe() lacks; return their names.

        One Tooling API ``CustomField`` create a missing field
        (:mod:`leadrelay.connectors.salesforce.fields`); one that appeared meanwhile
        (DUPLICATE_DEVELOPER_NAME) is left as it is. A custom field of the converted
        Opportunity (``ConvertedOpportunity.Loss_Reason__c``) is created on Opportunity; a
        standard field (``ConvertedOpportunity.StageName``) cannot be, and is left to the
        mapping check. Field-level security is not set: an admin grants the integration user's
        profile access to the new fields in Setup.
        """
        existing = {name.lower() for name in self.describe().fields}
        created: list[str] = []
        for spec in specs:
            relationship, _, name = spec.name.rpartition(".")
            sobject = {"": "Lead", OPPORTUNITY: "Opportunity"}.get(relationship)
            if spec.name.lower() in existing or sobject is None or not name.endswith("__c"):
                continue
            try:
                self.restful(
                    TOOLING_PATH,
                    method="POST",
                    json=custom_field_body(replace(spec, name=name), sobject),
                    describe=f"creation of custom field {sobject}.{name}",
                    idempotent=False,
                )
            except Rejected as error:
                if error.code != DUPLICATE_CODE:
                    raise
                continue
            created.append(spec.name)
        if created:
            self.schema_changed()
        return created

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


# -- helpers ----------------------------------------------------------------------------------


#: The keys of a describe field the connector keeps (in the cache) and reads.
_DESCRIBE_KEYS = (
    "name",
    "label",
    "type",
    "nillable",
    "createable",
    "updateable",
    "defaultedOnCreate",
    "unique",
    "externalId",
    "picklistValues",
)


def _schema(
    specs: Sequence[Any], opportunity: Sequence[Any] = (), contact: Sequence[Any] = ()
) -> Schema:
    """The Lead :class:`Schema` of describe's ``fields`` (the :data:`_DESCRIBE_KEYS` of each),
    with the converted Opportunity's and Contact's fields as read-only
    ``ConvertedOpportunity.<name>`` and ``ConvertedContact.<name>``."""
    fields: dict[str, FieldInfo] = {}
    related = [
        {**spec, "name": f"{parent}.{spec['name']}", "createable": False, "updateable": False}
        for parent, parent_specs in ((OPPORTUNITY, opportunity), (CONVERTED_CONTACT, contact))
        for spec in parent_specs
        if isinstance(spec, Mapping) and spec.get("name")
    ]
    for spec in [*specs, *related]:
        if not isinstance(spec, Mapping) or not spec.get("name"):
            continue
        kind = str(spec.get("type") or "")
        picklist = None
        if kind in ("picklist", "multipicklist"):
            picklist = tuple(
                str(p["value"])
                for p in spec.get("picklistValues") or []
                if isinstance(p, Mapping) and p.get("active", True)
            )
        createable = bool(spec.get("createable"))
        fields[str(spec["name"])] = FieldInfo(
            name=str(spec["name"]),
            label=str(spec.get("label") or spec["name"]),
            type=kind,
            required=not spec.get("nillable", True)
            and createable
            and not spec.get("defaultedOnCreate", False),
            read_only=not createable and not spec.get("updateable", False),
            unique=bool(spec.get("unique")) or bool(spec.get("externalId")),
            picklist_values=picklist,
            multi_select=kind == "multipicklist",
        )
    return Schema("Lead", fields)


def _query_more(url: str, timeout: float) -> Callable[[Any], Any]:
    def send(sf: Any) -> Any:
        return sf.query_more(url, identifier_is_url=True, timeout=timeout)

    return send


def _query_answer(part: Any, describe: str) -> Mapping[str, Any]:
    """The query result of one Composite subrequest; a refused query raises :class:`Fatal` with
    Salesforce's own message and code."""
    status = part.get("httpStatusCode") if isinstance(part, Mapping) else None
    result = part.get("body") if isinstance(part, Mapping) else None
    if status != 200 or not isinstance(result, Mapping):
        errors = result if isinstance(result, list) else []
        first = errors[0] if errors and isinstance(errors[0], Mapping) else {}
        raise Fatal(
            f"{describe}: {first.get('message') or 'the query was refused'}",
            system=SYSTEM,
            status=status if isinstance(status, int) else None,
            code=str(first.get("errorCode") or "") or None,
        )
    return result


def _described_fields(part: Any) -> list[dict[str, Any]]:
    """The fields of one describe subrequest of a Composite call (the :data:`_DESCRIBE_KEYS` of
    each): none when the object is hidden from the user (403 / 404); another refusal raises
    :class:`Fatal` with Salesforce's own message."""
    status = part.get("httpStatusCode") if isinstance(part, Mapping) else None
    body = part.get("body") if isinstance(part, Mapping) else None
    if status in (403, 404):
        return []
    if status != 200 or not isinstance(body, Mapping):
        errors = body if isinstance(body, list) else []
        first = errors[0] if errors and isinstance(errors[0], Mapping) else {}
        raise Fatal(
            f"describe: {first.get('message') or 'the describe was refused'}",
            system=SYSTEM,
            status=status if isinstance(status, int) else None,
            code=str(first.get("errorCode") or "") or None,
        )
    raw = body.get("fields")
    if not isinstance(raw, list):
        return []
    return [{k: spec.get(k) for k in _DESCRIBE_KEYS} for spec in raw if isinstance(spec, Mapping)]


def _total(answer: Mapping[str, Any]) -> int | None:
    size = answer.get("totalSize")
    return size if isinstance(size, int) else None


def _better(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` is the Lead to key an email by rather than ``current``."""
    if bool(candidate.get("IsConverted")) != bool(current.get("IsConverted")):
        return not candidate.get("IsConverted")
    return str(candidate.get("SystemModstamp") or "") > str(current.get("SystemModstamp") or "")


def _distinct_chunks(indexes: list[int], key: Callable[[int], str]) -> Iterator[list[int]]:
    """Chunks of at most 200 indexes in order, none holding the same key twice."""
    chunk: list[int] = []
    seen: set[str] = set()
    for index in indexes:
        value = key(index)
        if len(chunk) >= COLLECTION_LIMIT or value in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(index)
        seen.add(value)
    if chunk:
        yield chunk


def _answers(answers: Any, expected: int) -> list[dict[str, Any]]:
    if not isinstance(answers, list) or len(answers) != expected:
        raise Fatal(
            f"expected {expected} save results from Salesforce, got {answers!r:.200}",
            system=SYSTEM,
        )
    return [a if isinstance(a, dict) else {} for a in answers]


def _complete(results: list[WriteResult | None]) -> list[WriteResult]:
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise AssertionError(f"no write result for inputs {missing[:5]}")
    return [r for r in results if r is not None]
