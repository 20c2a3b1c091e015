"""HubSpot's forms submission API (v3, legacy) for the sandbox: one seeded form.

``POST /submissions/v3/integration/secure/submit/{portalId}/{formGuid}`` (Bearer token) and
``POST /submissions/v3/integration/submit/{portalId}/{formGuid}`` (no auth) take
``{fields: [{objectTypeId: "0-1", name, value}], submittedAt, context}`` and create or update the
contact with the submitted e-mail (facts §1 "Forms and webhooks"). Errors answer in the forms
API's own dialect: ``{"status": "error", "message": "The request is not valid", "correlationId",
"errors": [{"message": "Error in 'fields.NAME'. …", "errorType"}]}``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from leadrelay.sandbox.hubspot.errors import correlation_id, unstorable_text
from leadrelay.sandbox.hubspot.schema import SANDBOX_HUB_ID
from leadrelay.sandbox.hubspot.store import ContactStore

#: the sandbox account's portal id (the hub id every token of the sandbox belongs to)
SANDBOX_PORTAL_ID = str(SANDBOX_HUB_ID)
#: GUID of the one form seeded in the sandbox account
SANDBOX_FORM_GUID = "7c3e9a51-2d84-4b6f-a0e1-5f9d8c2b4a63"
#: the message HubSpot answers a form without a configured thank-you text with
DEFAULT_INLINE_MESSAGE = "Thanks for submitting the form."

# Unauthenticated submissions are limited to 50 per 10 s; authenticated ones to 100 / 150 / 200
# per 10 s by tier, 150 for a Professional account (facts §1 "Forms and webhooks").
UNAUTHENTICATED_LIMIT = 50
AUTHENTICATED_LIMIT = 150
LIMIT_WINDOW_S = 10.0
#: the submission API takes up to 1,000 field values per request (v3 submit reference)
MAX_FIELDS = 1000
#: submittedAt may backdate a submission by at most a month (v3 submit reference)
MAX_BACKDATE_MS = 31 * 86_400_000

#: contact object type id; form fields of the seeded form are all contact properties
CONTACT_OBJECT_TYPE = "0-1"

# Schema check codes (leadrelay.sandbox.hubspot.schema) → the forms API's errorType. Only
# INVALID_EMAIL's message is seen in public client code; the other messages are unverified.
_ERROR_TYPES = {
    "INVALID_EMAIL": ("INVALID_EMAIL", "Invalid email address"),
    "INVALID_OPTION": ("VALUE_NOT_IN_FIELD_DEFINITION", "Value is not one of the field's options"),
    "INVALID_DECIMAL": ("INVALID_NUMBER", "Value is not a valid number"),
    # Seen in a public client's captured error body for a read-only property (3rd-party).
    "READ_ONLY_VALUE": ("INVALID_PROPERTY", "Property is read only"),
}

_SOCIAL_NETWORKS = frozenset(
    {"facebook", "instagram", "linkedin", "twitter", "x", "youtube", "tiktok", "pinterest"}
)


@dataclass(frozen=True)
class Form:
    """A HubSpot form: its contact fields and what a submission does."""

    guid: str
    name: str
    fields: tuple[str, ...]
    required: tuple[str, ...] = ("email",)
    #: the form's "set contact lifecycle stage" option ("" for none); it only moves forward
    lifecycle_stage: str = "lead"
    inline_message: str = DEFAULT_INLINE_MESSAGE
    redirect_uri: str | None = None


def seeded_forms() -> dict[str, Form]:
    """The forms of a fresh sandbox account, by GUID."""
    contact_fields = (
        "email",
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "company",
        "jobtitle",
        "website",
        "industry",
        "annualrevenue",
        "numemployees",
        "city",
        "state",
        "zip",
        "country",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
    )
    form = Form(SANDBOX_FORM_GUID, "Contact us (sandbox)", contact_fields)
    return {form.guid: form}


class FormError(Exception):
    """A refused submission: the HTTP status and the forms API's body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _invalid(errors: list[dict[str, str]]) -> FormError:
    return FormError(
        400,
        {
            "status": "error",
            "message": "The request is not valid",
            "correlationId": correlation_id(),
            "errors": errors,
        },
    )


def _error(error_type: str, message: str) -> dict[str, str]:
    return {"message": message, "errorType": error_type}


def not_found(portal_id: str, form_guid: str) -> FormError:
    """404 for an unknown portal or form (HubSpot's error shape; wording unverified)."""
    body = {
        "status": "error",
        "message": f"Form {form_guid} was not found in portal {portal_id}",
        "correlationId": correlation_id(),
        "category": "OBJECT_NOT_FOUND",
    }
    return FormError(404, body)


class SubmissionLimits:
    """Rolling 10-second windows of the forms API: per token, and one for unauthenticated."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.windows: dict[str | None, deque[float]] = {}

    def take(self, token: str | None) -> bool:
        """Count one submission (``token`` None: unauthenticated); False when over the limit."""
        limit = UNAUTHENTICATED_LIMIT if token is None else AUTHENTICATED_LIMIT
        now = time.monotonic()
        with self.lock:
            window = self.windows.setdefault(token, deque())
            while window and now - window[0] >= LIMIT_WINDOW_S:
                window.popleft()
            if len(window) >= limit:
                return False
            window.append(now)
            return True


def _field_label(item: dict[str, Any]) -> str:
    name = str(item.get("name"))
    object_type = item.get("objectTypeId", CONTACT_OBJECT_TYPE)
    # Fields of other objects are named "{objectTypeId}/{name}" in HubSpot's messages.
    return name if object_type == CONTACT_OBJECT_TYPE else f"{object_type}/{name}"


def _submitted_at(raw: Any, now_ms: int) -> list[dict[str, str]]:
    if raw is None:
        return []
    text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not text.isdigit():
        return [_error("INVALID_METADATA", "Error in 'submittedAt'. Not a millisecond timestamp")]
    if now_ms - int(text) > MAX_BACKDATE_MS:
        return [_error("INVALID_METADATA", "Error in 'submittedAt'. More than a month in the past")]
    return []


def original_source(page_uri: Any) -> str:
    """``hs_analytics_source`` of a contact a submission creates, from ``context.pageUri``.

    HubSpot attributes the visitor's tracked session (``hutk``); the sandbox tracks no visits,
    so it classifies the page URI's query by HubSpot's UTM rules (facts §1 "Enumerations"):
    social network + social medium → organic social, ``gclid`` → paid search, a paid medium on
    a social network → paid social. No page at all is an offline source.
    """
    if not isinstance(page_uri, str) or not page_uri.strip():
        return "OFFLINE"
    query = {k: v[0].lower() for k, v in parse_qs(urlsplit(page_uri).query).items()}
    medium = query.get("utm_medium", "")
    source = query.get("utm_source", "")
    paid = any(word in medium for word in ("paid", "ppc", "cpc"))
    if source in _SOCIAL_NETWORKS or medium == "paidsocial":
        return "PAID_SOCIAL" if paid or medium == "paidsocial" else "SOCIAL_MEDIA"
    if "gclid" in query or paid:
        return "PAID_SEARCH"
    if medium == "email":
        return "EMAIL_MARKETING"
    if any(name.startswith("utm_") for name in query):
        return "OTHER_CAMPAIGNS"
    return "DIRECT_TRAFFIC"


def _values(form: Form, store: ContactStore, body: Any, *, secure: bool) -> dict[str, str]:
    """The submission's contact property values, validated against the form and the schema."""
    if not isinstance(body, dict) or not isinstance(body.get("fields"), list):
        raise _invalid([_error("INVALID_METADATA", "Error in 'fields'. A list is required")])
    items: list[Any] = body["fields"]
    if len(items) > MAX_FIELDS:
        message = f"Error in 'fields'. At most {MAX_FIELDS} values may be submitted"
        raise _invalid([_error("MAX_NUMBER_OF_SUBMITTED_VALUES_EXCEEDED", message)])
    errors = _submitted_at(body.get("submittedAt"), store.now_ms())
    raw: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            errors.append(_error("INVALID_METADATA", "Error in 'fields'. Each needs a name"))
            continue
        label = _field_label(item)
        # The unauthenticated endpoint takes only the form's own fields; the authenticated one
        # any contact property (legacy submit docs). A deleted property drops off its forms.
        on_form = label in form.fields or (secure and "/" not in label)
        if not on_form or not store.schema.exists(label):
            # The errorType is HubSpot's (legacy submit docs); the message is as seen in public
            # client code.
            message = f"Error in 'fields.{label}'. Field '{label}' was not in the form definition"
            errors.append(_error("FIELD_NOT_IN_FORM_DEFINITION", message))
            continue
        raw[label] = item.get("value")
    clean, problems = store.schema.normalise(raw)
    for problem in problems:
        error_type, text = _ERROR_TYPES.get(
            problem["error"], ("INVALID_METADATA", problem["message"])
        )
        errors.append(_error(error_type, f"Error in 'fields.{problem['name']}'. {text}"))
    for name in form.required:
        if (
            name in form.fields
            and not clean.get(name)
            and name not in {p["name"] for p in problems}
        ):
            message = f"Error in 'fields.{name}'. Required field '{name}' is missing"
            errors.append(_error("REQUIRED_FIELD", message))
    if errors:
        raise _invalid(errors)
    # A blank form field leaves the property as it is; a form never clears a value.
    return {name: value for name, value in clean.items() if value != ""}


def submit(
    forms: dict[str, Form],
    store: ContactStore,
    portal_id: str,
    form_guid: str,
    body: Any,
    *,
    secure: bool,
) -> dict[str, str]:
    """Apply one submission; the success body (``inlineMessage`` or ``redirectUri``).

    Raises :class:`FormError`. Runs under the emulator's lock.
    """
    form = forms.get(form_guid)
    if portal_id != SANDBOX_PORTAL_ID or form is None:
        raise not_found(portal_id, form_guid)
    problem = unstorable_text(body)
    if problem is not None:
        # Refused before anything is read from it, so no stored value or answer carries it.
        raise _invalid([_error("INVALID_METADATA", f"Error in the submission: {problem}")])
    values = _values(form, store, body, secure=secure)
    if form.lifecycle_stage and store.schema.stage_rank(form.lifecycle_stage) is not None:
        values["lifecyclestage"] = form.lifecycle_stage
    email = values.get("email")
    existing = store.by_email.get(email) if email else None
    if existing is not None:
        # The forward-only lifecycle rule of ContactStore.apply covers the form's stage too.
        store.apply(store.contacts[existing], values)
    else:
        context = body.get("context") if isinstance(body.get("context"), dict) else {}
        source = {"hs_analytics_source": original_source(context.get("pageUri"))}
        attributed, problems = store.schema.normalise(source)
        if not problems and "hs_analytics_source" not in values:
            values.update(attributed)
        store.insert(values)
    if form.redirect_uri:
        return {"redirectUri": form.redirect_uri}
    return {"inlineMessage": form.inline_message}
