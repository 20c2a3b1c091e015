"""Turn each source's stored notification into the submitted form fields.

The capture endpoints store what arrives before answering (DESIGN §7.1). Meta and LinkedIn
notifications carry only ids, so their answers are fetched here, in the delivery step, from the
platforms' APIs: an outage of those APIs delays a lead but never loses it.

Field names are kept as each platform names them, for the form's mapping to translate:

* web forms: the posted field names (``email``, ``first_name`` …);
* Meta: the ``field_data`` names (``email``, ``full_name``, custom question keys);
* LinkedIn: the question's ``predefinedField`` (``EMAIL``, ``FIRST_NAME``, ``COMPANY_NAME`` …),
  else its ``name``, else its ``questionId``;
* Google Ads: the ``column_id`` (``EMAIL``, ``FULL_NAME`` …), else the ``column_name``;
* HubSpot: the event's ``propertyName`` → ``propertyValue``.

:func:`submission_fields` adds, without overwriting an answer, the source ids that are Lead
fields: ``form_id``, ``ad_id``, ``campaign_id``, ``ad_account``, ``gclid``, ``page_url``,
``referrer``, ``created_time`` and ``is_test``.

Fetch errors are :class:`FetchError`: they name the source and the lead id, never the token,
and say whether a later attempt may succeed (connection errors, timeouts, 429, 5xx) or not.
Each fetch is one attempt; the delivery worker owns retries and backoff.

For ``leadrelay reconcile``, :func:`list_meta_leads` and :func:`list_linkedin_responses` read a
form's own list of leads from the platform (Meta's bulk read ``/{form_id}/leads``, LinkedIn's
``leadFormResponses`` owner finder), page by page: the leads a lost notification never brought.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from leadrelay.capture.text import find_bad_text
from leadrelay.config import (
    Config,
    FormConfig,
    GoogleAdsFormConfig,
    HubSpotFormConfig,
    LinkedInFormConfig,
    MetaFormConfig,
    WebformConfig,
)
from leadrelay.connectors.policy import parse_retry_after
from leadrelay.sync.state import InboxItem

__all__ = [
    "META_LEAD_FIELDS",
    "FetchError",
    "Fetchers",
    "fetch_linkedin_lead",
    "fetch_linkedin_response",
    "fetch_meta_lead",
    "fetch_meta_record",
    "flatten_meta_field_data",
    "google_fields",
    "linkedin_owner_urn",
    "linkedin_response_id",
    "list_linkedin_responses",
    "list_meta_leads",
    "submission_fields",
]

#: The fields asked of the Graph API lead node (facts §4).
META_LEAD_FIELDS = "created_time,id,ad_id,form_id,campaign_id,field_data,is_organic,platform"

_TIMEOUT_S = 30.0


class FetchError(Exception):
    """A lead's answers could not be fetched from its platform.

    Attributes:
        source: the form source (``meta_lead_ads``, ``linkedin_lead_gen`` …).
        lead_id: the platform's id of the lead (not personal data, not a secret).
        retryable: whether a later attempt may succeed.
        status: the HTTP status, when the platform answered.
        retry_after: seconds the platform asked to wait (``Retry-After``), when it did.
    """

    def __init__(
        self,
        source: str,
        lead_id: str,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.source = source
        self.lead_id = lead_id
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{source} lead {lead_id}: {reason}")


def _client(ca_bundle: Path | None) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(ca_bundle))
    return httpx.Client(verify=verify, timeout=_TIMEOUT_S, follow_redirects=False)


def _platform_error(response: httpx.Response) -> tuple[str, bool]:
    """The platform's own message, and whether it marks the error transient.

    Graph API errors are ``{"error": {"message", "code", "is_transient"}}``; LinkedIn's are
    ``{"status", "code", "message"}``.
    """
    try:
        body = response.json()
    except ValueError:
        return "", False
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:200], error.get("is_transient") is True
        if isinstance(body.get("message"), str):
            return str(body["message"])[:200], False
    return "", False


def _get_json(
    client: httpx.Client,
    url: str,
    *,
    source: str,
    lead_id: str,
    what: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    try:
        response = client.get(url, params=params, headers=headers)
    except httpx.TimeoutException:
        raise FetchError(source, lead_id, f"timed out reading the {what}", retryable=True) from None
    except httpx.TransportError as exc:
        # The request object holds the URL and headers (the token); only the class is shown.
        raise FetchError(
            source,
            lead_id,
            f"could not reach the API for the {what} ({type(exc).__name__})",
            retryable=True,
        ) from None
    status = response.status_code
    if status >= 300:
        message, transient = _platform_error(response)
        for value in (headers or {}).values():
            secret = value.removeprefix("Bearer ")
            if len(secret) >= 8:
                message = message.replace(secret, "***")
        detail = f"{what}: HTTP {status}" + (f" ({message})" if message else "")
        retryable = transient or status == 429 or status >= 500
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if retryable else None
        raise FetchError(
            source, lead_id, detail, retryable=retryable, status=status, retry_after=retry_after
        )
    try:
        body = response.json()
    except ValueError:
        raise FetchError(
            source, lead_id, f"{what}: the API answered with non-JSON", retryable=True
        ) from None
    if not isinstance(body, dict):
        raise FetchError(source, lead_id, f"{what}: expected a JSON object", retryable=False)
    return body


# -- Meta ------------------------------------------------------------------------------------


def flatten_meta_field_data(field_data: object) -> dict[str, str]:
    """``[{"name": "email", "values": ["a@b.com"]}, …]`` → ``{"email": "a@b.com", …}``.

    Values are always arrays (facts §4): one value is kept as is, several (a multiple-choice
    question) are joined with ``;``.
    """
    if not isinstance(field_data, list):
        raise ValueError("field_data is not a list")
    fields: dict[str, str] = {}
    for entry in field_data:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError("a field_data entry has no name")
        values = entry.get("values", [])
        if not isinstance(values, list):
            values = [values]
        fields[entry["name"]] = ";".join(str(value) for value in values if value is not None)
    return fields


def fetch_meta_record(
    form: MetaFormConfig, leadgen_id: str, *, client: httpx.Client | None = None
) -> dict[str, Any]:
    """The Graph API lead node ``GET {graph_url}/{api_version}/{leadgen_id}`` as JSON.

    The page access token goes in the ``Authorization`` header, never the URL, so it cannot
    end up in a log line of a proxy.
    """
    url = f"{form.graph_url}/{form.api_version}/{quote(leadgen_id, safe='')}"
    headers = {"Authorization": f"Bearer {form.access_token.get_secret_value()}"}
    params = {"fields": META_LEAD_FIELDS}
    if client is not None:
        return _get_json(
            client,
            url,
            source="meta_lead_ads",
            lead_id=leadgen_id,
            what="lead",
            params=params,
            headers=headers,
        )
    with _client(form.ca_bundle) as own:
        return _get_json(
            own,
            url,
            source="meta_lead_ads",
            lead_id=leadgen_id,
            what="lead",
            params=params,
            headers=headers,
        )


def fetch_meta_lead(
    form: MetaFormConfig, leadgen_id: str, *, client: httpx.Client | None = None
) -> dict[str, str]:
    """The answers of a Meta lead, by field name (see :func:`flatten_meta_field_data`)."""
    record = fetch_meta_record(form, leadgen_id, client=client)
    try:
        return flatten_meta_field_data(record.get("field_data", []))
    except ValueError as exc:
        raise FetchError("meta_lead_ads", leadgen_id, str(exc), retryable=False) from None


#: The fields asked of each lead of a form's list: ids and times, no answers (the delivery
#: step fetches those by id, as after a notification).
META_LIST_FIELDS = "id,created_time,form_id,ad_id,adset_id,campaign_id,is_organic,platform"
_META_PAGE = 100


def list_meta_leads(
    form: MetaFormConfig,
    form_id: str,
    *,
    since: datetime | None = None,
    client: httpx.Client | None = None,
) -> Iterator[dict[str, Any]]:
    """Every lead of a Meta lead form (created after ``since``), newest first.

    Reads the bulk-read edge ``GET {graph_url}/{api_version}/{form_id}/leads`` with the
    ``time_created`` filter and follows the ``after`` cursor until Graph gives no ``next``
    page. The token goes in the header; the ``next`` URL (which may carry it) is never used.
    Raises :class:`FetchError` naming the form.
    """
    url = f"{form.graph_url}/{form.api_version}/{quote(form_id, safe='')}/leads"
    headers = {"Authorization": f"Bearer {form.access_token.get_secret_value()}"}
    params = {"fields": META_LIST_FIELDS, "limit": str(_META_PAGE)}
    if since is not None:
        params["filtering"] = json.dumps(
            [{"field": "time_created", "operator": "GREATER_THAN", "value": int(since.timestamp())}]
        )
    with _client(form.ca_bundle) if client is None else nullcontext(client) as http:
        while True:
            body = _get_json(
                http,
                url,
                source="meta_lead_ads",
                lead_id=f"form {form_id}",
                what="form's leads",
                params=params,
                headers=headers,
            )
            data = body.get("data")
            if not isinstance(data, list):
                raise FetchError(
                    "meta_lead_ads",
                    f"form {form_id}",
                    "form's leads: the answer has no data list",
                    retryable=False,
                )
            yield from (lead for lead in data if isinstance(lead, dict))
            paging = body.get("paging")
            cursors = paging.get("cursors") if isinstance(paging, dict) else None
            after = cursors.get("after") if isinstance(cursors, dict) else None
            if not data or not isinstance(paging, dict) or not paging.get("next") or not after:
                return
            params = {**params, "after": str(after)}


# -- LinkedIn --------------------------------------------------------------------------------


def linkedin_response_id(urn: str) -> str:
    """``urn:li:leadGenFormResponse:X`` → ``X`` (a bare id is returned as is)."""
    prefix = "urn:li:leadGenFormResponse:"
    return urn[len(prefix) :] if urn.startswith(prefix) else urn


def _linkedin_form_id(urn: str) -> str | None:
    """``urn:li:versionedLeadGenForm:(urn:li:leadGenForm:N,1)`` or ``urn:li:leadGenForm:N`` → N."""
    marker = "urn:li:leadGenForm:"
    start = urn.find(marker)
    if start < 0:
        return None
    rest = urn[start + len(marker) :]
    end = len(rest)
    for stop in (",", ")"):
        index = rest.find(stop)
        if index >= 0:
            end = min(end, index)
    return rest[:end] or None


def _linkedin_rest(form: LinkedInFormConfig) -> str:
    """The ``/rest`` root: ``api_url`` may be the host (``https://api.linkedin.com``) or, as the
    sandbox's ``LINKEDIN_API_URL``, already end in ``/rest``."""
    return form.api_url if form.api_url.endswith("/rest") else f"{form.api_url}/rest"


def _linkedin_headers(form: LinkedInFormConfig) -> dict[str, str]:
    # LinkedIn's versioned /rest API needs both headers (facts §4).
    return {
        "Authorization": f"Bearer {form.access_token.get_secret_value()}",
        "LinkedIn-Version": form.api_version,
        "X-Restli-Protocol-Version": "2.0.0",
    }


_FORM_CACHE: dict[tuple[str, str], list[dict[str, Any]]] = {}
_FORM_CACHE_LOCK = threading.Lock()
_FORM_CACHE_SIZE = 256


def _linkedin_questions(
    client: httpx.Client, form: LinkedInFormConfig, versioned_urn: str, response_id: str
) -> list[dict[str, Any]]:
    form_id = _linkedin_form_id(versioned_urn)
    if form_id is None:
        raise FetchError(
            "linkedin_lead_gen",
            response_id,
            "the response names no lead form (versionedLeadGenFormUrn)",
            retryable=False,
        )
    # A versioned form never changes, so its questions can be kept.
    cache_key = (form.api_url, versioned_urn)
    with _FORM_CACHE_LOCK:
        cached = _FORM_CACHE.get(cache_key)
    if cached is not None:
        return cached
    body = _get_json(
        client,
        f"{_linkedin_rest(form)}/leadForms/{quote(form_id, safe='')}",
        source="linkedin_lead_gen",
        lead_id=response_id,
        what=f"lead form {form_id}",
        headers=_linkedin_headers(form),
    )
    content = body.get("content")
    questions = content.get("questions") if isinstance(content, dict) else None
    if not isinstance(questions, list):
        raise FetchError(
            "linkedin_lead_gen",
            response_id,
            f"lead form {form_id} has no content.questions",
            retryable=False,
        )
    found = [question for question in questions if isinstance(question, dict)]
    with _FORM_CACHE_LOCK:
        if len(_FORM_CACHE) >= _FORM_CACHE_SIZE:
            _FORM_CACHE.clear()
        _FORM_CACHE[cache_key] = found
    return found


def _question_name(question: Mapping[str, Any]) -> str:
    for key in ("predefinedField", "name", "questionId"):
        value = question.get(key)
        if isinstance(value, str | int) and str(value):
            return str(value)
    return ""


def _choice_texts(question: Mapping[str, Any]) -> dict[str, str]:
    details = question.get("questionDetails")
    if not isinstance(details, dict):
        return {}
    choice = details.get("multipleChoiceQuestionDetails")
    options = choice.get("options") if isinstance(choice, dict) else None
    texts: dict[str, str] = {}
    for option in options if isinstance(options, list) else []:
        if isinstance(option, dict) and "id" in option:
            texts[str(option["id"])] = str(option.get("text", option["id"]))
    return texts


def _answer_text(details: object, choices: Mapping[str, str]) -> str | None:
    if not isinstance(details, dict):
        return None
    text = details.get("textQuestionAnswer")
    if isinstance(text, dict) and "answer" in text:
        return str(text["answer"])
    choice = details.get("multipleChoiceAnswer")
    if isinstance(choice, dict):
        options = choice.get("options", [])
        if not isinstance(options, list):
            options = [options]
        return ";".join(choices.get(str(option), str(option)) for option in options)
    return None


@dataclass(frozen=True)
class _LinkedInResponse:
    record: dict[str, Any]
    fields: dict[str, str]


def _fetch_linkedin(
    client: httpx.Client, form: LinkedInFormConfig, response_urn: str
) -> _LinkedInResponse:
    response_id = linkedin_response_id(response_urn)
    record = _get_json(
        client,
        f"{_linkedin_rest(form)}/leadFormResponses/{quote(response_id, safe='')}",
        source="linkedin_lead_gen",
        lead_id=response_id,
        what="lead form response",
        headers=_linkedin_headers(form),
    )
    form_urn = record.get("versionedLeadGenFormUrn") or record.get("leadGenForm")
    questions = _linkedin_questions(client, form, str(form_urn or ""), response_id)
    by_id = {str(question.get("questionId")): question for question in questions}
    answers = (record.get("formResponse") or {}).get("answers")
    if not isinstance(answers, list):
        raise FetchError(
            "linkedin_lead_gen",
            response_id,
            "the response has no formResponse.answers",
            retryable=False,
        )
    fields: dict[str, str] = {}
    for answer in answers:
        if not isinstance(answer, dict):
            continue
        question_id = str(answer.get("questionId"))
        question = by_id.get(question_id, {"questionId": question_id})
        text = _answer_text(answer.get("answerDetails"), _choice_texts(question))
        if text is not None:
            fields[_question_name(question)] = text
    return _LinkedInResponse(record, fields)


def fetch_linkedin_response(
    form: LinkedInFormConfig, response_urn: str, *, client: httpx.Client | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The lead form response record and its answers by field name.

    Reads ``GET {api_url}/rest/leadFormResponses/{id}`` and the form's questions from
    ``GET {api_url}/rest/leadForms/{formId}`` (``api_url`` may
    already end in ``/rest``) to name each answer by its ``predefinedField``.
    """
    if client is not None:
        found = _fetch_linkedin(client, form, response_urn)
    else:
        with _client(form.ca_bundle) as own:
            found = _fetch_linkedin(own, form, response_urn)
    return found.record, found.fields


def fetch_linkedin_lead(
    form: LinkedInFormConfig, response_urn: str, *, client: httpx.Client | None = None
) -> dict[str, str]:
    """The answers of a LinkedIn lead form response, by predefined field name."""
    return fetch_linkedin_response(form, response_urn, client=client)[1]


_LINKEDIN_PAGE = 100


def linkedin_owner_urn(ad_account: str) -> str:
    """A form's ``ad_account`` (``N`` or ``urn:li:sponsoredAccount:N``) as the owner URN."""
    text = ad_account.strip()
    return text if text.startswith("urn:li:") else f"urn:li:sponsoredAccount:{text}"


def list_linkedin_responses(
    form: LinkedInFormConfig,
    form_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    client: httpx.Client | None = None,
) -> Iterator[dict[str, Any]]:
    """Every response to a LinkedIn lead form (submitted in ``[since, until or now]``; all
    of them without ``since``), newest first.

    Reads the owner finder ``GET {api_url}/rest/leadFormResponses?q=owner&owner=
    (sponsoredAccount:URN)&leadType=(leadType:SPONSORED)&submittedAtTimeRange=(start:ms,end:ms)``
    with offset paging, keeping the responses to ``form_id`` (any version of the form). The
    owner is the form's ``ad_account``. Raises :class:`FetchError` naming the form.
    """
    if not form.ad_account:
        raise FetchError(
            "linkedin_lead_gen",
            f"form {form_id}",
            "ad_account (the sponsored account that owns the form) is needed to list its leads",
            retryable=False,
        )
    owner_urn = linkedin_owner_urn(form.ad_account)
    kind = "organization" if owner_urn.startswith("urn:li:organization:") else "sponsoredAccount"
    owner = quote(owner_urn, safe="")
    window = ""
    if since is not None:
        # LinkedIn's examples give both ends of the range: up to now unless told otherwise.
        end = until if until is not None else datetime.now(UTC)
        window = (
            f"&submittedAtTimeRange=(start:{int(since.timestamp() * 1000)},"
            f"end:{int(end.timestamp() * 1000)})"
        )
    wanted = str(form_id).rsplit(":", 1)[-1]
    start = 0
    with _client(form.ca_bundle) if client is None else nullcontext(client) as http:
        while True:
            # Rest.li 2.0 query syntax: the parentheses and colons are the syntax, the URN
            # inside is percent-encoded; httpx keeps an already-encoded query as it is.
            url = (
                f"{_linkedin_rest(form)}/leadFormResponses?q=owner&owner=({kind}:{owner})"
                f"&leadType=(leadType:SPONSORED){window}&start={start}&count={_LINKEDIN_PAGE}"
            )
            body = _get_json(
                http,
                url,
                source="linkedin_lead_gen",
                lead_id=f"form {form_id}",
                what="form's responses",
                headers=_linkedin_headers(form),
            )
            elements = body.get("elements")
            if not isinstance(elements, list):
                raise FetchError(
                    "linkedin_lead_gen",
                    f"form {form_id}",
                    "form's responses: the answer has no elements list",
                    retryable=False,
                )
            for element in elements:
                if not isinstance(element, dict):
                    continue
                urn = str(
                    element.get("versionedLeadGenFormUrn") or element.get("leadGenForm") or ""
                )
                if _linkedin_form_id(urn) == wanted:
                    yield element
            paging = body.get("paging")
            total = paging.get("total") if isinstance(paging, dict) else None
            start += len(elements)
            if not elements or not isinstance(total, int) or start >= total:
                return


# -- Google Ads ------------------------------------------------------------------------------


def google_fields(user_column_data: object) -> dict[str, str]:
    """``user_column_data`` → ``{column_id (or column_name): string_value}``."""
    fields: dict[str, str] = {}
    if not isinstance(user_column_data, list):
        return fields
    for column in user_column_data:
        if not isinstance(column, dict):
            continue
        name = column.get("column_id") or column.get("column_name")
        if name is None or str(name) == "":
            continue
        value = column.get("string_value")
        fields[str(name)] = "" if value is None else str(value)
    return fields


# -- any source ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetchers:
    """The functions that fetch ad-platform answers; tests and the worker may swap them."""

    meta: Callable[[MetaFormConfig, str], dict[str, Any]] = field(
        default=lambda form, leadgen_id: fetch_meta_record(form, leadgen_id)
    )
    linkedin: Callable[[LinkedInFormConfig, str], tuple[dict[str, Any], dict[str, str]]] = field(
        default=lambda form, urn: fetch_linkedin_response(form, urn)
    )


_DEFAULT_FETCHERS = Fetchers()


def _set_ids(fields: dict[str, Any], ids: Mapping[str, Any]) -> None:
    for key, value in ids.items():
        if value is not None and value != "" and key not in fields:
            fields[key] = value if isinstance(value, bool) else str(value)


def _form_of(item: InboxItem, config: Config) -> FormConfig:
    form = config.forms.get(item.form)
    if form is None:
        raise FetchError(
            item.source,
            item.dedupe_key,
            f"form {item.form!r} is no longer in the configuration",
            retryable=False,
        )
    return form


def submission_fields(
    item: InboxItem, config: Config, *, fetchers: Fetchers | None = None
) -> dict[str, Any]:
    """The form-field dict of a stored submission, fetching the answers when the source
    notifies only ids (Meta, LinkedIn). Raises :class:`FetchError` (not retryable for a field
    holding a NUL or a lone surrogate)."""
    fetch = fetchers or _DEFAULT_FETCHERS
    form = _form_of(item, config)
    payload = item.payload
    fields: dict[str, Any]
    if isinstance(form, WebformConfig):
        raw = payload.get("fields")
        fields = dict(raw) if isinstance(raw, dict) else {}
        _set_ids(fields, {"page_url": payload.get("page_url"), "referrer": payload.get("referrer")})
    elif isinstance(form, MetaFormConfig):
        leadgen_id = str(payload.get("leadgen_id", ""))
        record = fetch.meta(form, leadgen_id)
        try:
            fields = dict(flatten_meta_field_data(record.get("field_data", [])))
        except ValueError as exc:
            raise FetchError("meta_lead_ads", leadgen_id, str(exc), retryable=False) from None
        _set_ids(
            fields,
            {
                "form_id": record.get("form_id") or payload.get("form_id"),
                "ad_id": record.get("ad_id") or payload.get("ad_id"),
                "campaign_id": record.get("campaign_id"),
                "ad_account": form.ad_account,
                "created_time": record.get("created_time") or payload.get("created_time"),
            },
        )
    elif isinstance(form, LinkedInFormConfig):
        urn = str(payload.get("leadGenFormResponse", ""))
        record, answers = fetch.linkedin(form, urn)
        fields = dict(answers)
        _set_ids(
            fields,
            {
                "form_id": payload.get("form_id"),
                "ad_account": form.ad_account,
                "created_time": record.get("submittedAt"),
                "is_test": bool(record.get("testLead", False)) or item.is_test,
            },
        )
    elif isinstance(form, GoogleAdsFormConfig):
        fields = google_fields(payload.get("user_column_data"))
        _set_ids(
            fields,
            {
                "form_id": payload.get("form_id"),
                "campaign_id": payload.get("campaign_id"),
                "ad_id": payload.get("creative_id"),
                "gclid": payload.get("gcl_id"),
                "ad_account": form.ad_account,
                "is_test": item.is_test,
            },
        )
    elif isinstance(form, HubSpotFormConfig):
        fields = {}
        name = payload.get("propertyName")
        if isinstance(name, str) and name:
            fields[name] = payload.get("propertyValue")
        _set_ids(fields, {"hubspot_object_id": payload.get("objectId")})
    else:
        raise FetchError(
            item.source,
            item.dedupe_key,
            f"form {item.form!r} has source {form.source!r}, which the capture service "
            "does not store",
            retryable=False,
        )
    # A platform's answer (or an item stored before the door refused it) may hold a NUL or a
    # lone surrogate, which no CRM request can carry: the lead fails alone, naming the field.
    bad = find_bad_text(fields)
    if bad is not None:
        raise FetchError(item.source, item.dedupe_key, str(bad), retryable=False)
    return fields
