"""The synthetic lead of a validation run (DESIGN §8 step 2).

One lead per run that exercises every field the form maps, with a value the destination
accepts: a field whose destination mapping has a value map gets a canonical value whose system
value is in the live picklist, a picklist field without one gets a picklist value read back
through the mapping's transforms. It is marked as a test: ``is_test``, an e-mail
``leadrelay-test+<run id>@<form.test_email_domain>`` (the capture service and the worker mark
leads under that domain as tests, so reports leave them out), and the form's UTM parameters.

:func:`build_synthetic` returns both sides of the run: the raw form fields to submit (form
field names as the form's mapping reads them) and what the destination should hold afterwards
(system field → value, as the destination mapping's ``to_system`` writes the expected Lead).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from urllib.parse import urlencode

from leadrelay.config import FormConfig, WebformConfig
from leadrelay.connectors.base import Schema
from leadrelay.mappings.engine import FieldMap, FieldSpec, Mapping, MappingError, build_lead
from leadrelay.mappings.transforms import TransformContext, is_blank
from leadrelay.model import Lead
from leadrelay.sync.tagging import apply_touch, tag_url

__all__ = [
    "ATTRIBUTION_FIELDS",
    "SyntheticError",
    "SyntheticLead",
    "build_synthetic",
    "new_run_id",
    "validation_email",
]

#: Canonical fields checked in the destination as attribution when the destination maps them.
ATTRIBUTION_FIELDS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "channel",
)

#: Fields a validation run never invents: leadrelay's own bookkeeping, set by the pipeline.
_NOT_GENERATED = frozenset(
    {
        "key",
        "email",
        "company_domain",
        "channel",
        "stage",
        "owner",
        "queue",
        "score",
        "tier",
        "rejection_reason",
        "is_test",
        "created_at",
        "assigned_at",
        "first_action_at",
        "accepted_at",
        "sla_due_at",
        "consent_at",
        "qualification_reason",
    }
)

#: Values a real form would carry, valid for the Lead's own validators (country code, E.164).
_SAMPLES: dict[str, Any] = {
    "first_name": "Vala",
    "last_name": "Tester",
    "job_title": "Head of Revenue Operations",
    "company": "LeadRelay Validation Ltd",
    "website": "https://www.example.com",
    "industry": "software",
    "employees": 120,
    "annual_revenue": 2500000.0,
    "country": "GB",
    "region": "England",
    "city": "London",
    "postal_code": "EC1A 1BB",
    "phone": "+442079460958",
    "email_opt_in": True,
    "consent_text": "I agree to be contacted about this request.",
    "landing_page": "https://www.example.com/demo",
    "referrer": "https://www.google.com/",
    "intent_signals": ["demo_request"],
}

#: The landing page a validation submission names.
_LANDING_PAGE = "https://www.example.com/leadrelay-validation"

#: UTMs used for a web form that sets no ``default_utm`` (a web form always carries some).
_FALLBACK_UTM = {"utm_source": "leadrelay", "utm_medium": "validation"}


class SyntheticError(Exception):
    """No valid synthetic lead could be built for the form; the message names the field."""


def new_run_id() -> str:
    """A short unique id for one validation run (lower-case, safe in an e-mail local part)."""
    return datetime.now(UTC).strftime("%y%m%d%H%M%S") + secrets.token_hex(3)


def validation_email(run_id: str, domain: str) -> str:
    """The run's e-mail address: ``leadrelay-test+<run id>@<domain>``."""
    return f"leadrelay-test+{run_id}@{domain.strip().lower()}"


@dataclass
class SyntheticLead:
    """One run's test lead.

    Attributes:
        run_id: the run's unique id (also in the e-mail and the test ids).
        email: the lead's e-mail, the natural key it is found by.
        fields: form field name → raw value, as the form submits them.
        utm: the UTM parameters the lead carries.
        page_url: the landing page a web form submission names (with the UTMs).
        lead: the canonical Lead the pipeline should build from the submission.
        checked: canonical field → destination system field, for the fields checked.
        expected: destination system field → the value the destination should hold.
    """

    run_id: str
    email: str
    fields: dict[str, Any]
    utm: dict[str, str]
    page_url: str | None
    lead: Lead
    checked: dict[str, str] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return value


def _form_text(value: Any) -> Any:
    """A canonical value as a form posts it (forms carry text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return _jsonable(value)


def _outbound(spec: FieldSpec, name: str, value: Any) -> Any:
    """What ``spec`` writes for canonical ``value`` (its value map, then its transforms)."""
    ctx = TransformContext(name, spec.system_field)
    if spec.values:
        target = spec.values.get(str(_jsonable(value)), spec.default)
        if isinstance(target, dict):
            target = target.get(spec.system_field)
        value = target
    for bound in reversed(spec.transforms):
        value = bound.outbound(value, ctx)
    return value


def _inbound(spec: FieldSpec, name: str, value: Any) -> Any:
    ctx = TransformContext(name, spec.system_field)
    for bound in spec.transforms:
        value = bound.inbound(value, ctx)
    return value


def _picklist_choice(fmap: FieldMap, schema: Schema, blank_values: frozenset[str]) -> Any:
    """A canonical value whose written value the live schema allows, or None when free text."""
    spec = fmap.primary
    if spec.values:
        for canonical in spec.values:
            try:
                written = _outbound(spec, fmap.name, canonical)
            except (ValueError, TypeError):
                continue
            targets = spec.values[canonical]
            if isinstance(targets, dict):
                if all(schema.allows(n, v) for n, v in targets.items() if v not in (None, "")):
                    return canonical
            elif schema.allows(spec.system_field, written):
                return canonical
        return None
    info = schema.fields.get(spec.system_field)
    if info is None or not info.picklist_values:
        return None
    for allowed in info.picklist_values:
        if allowed in blank_values:
            continue
        try:
            canonical = _inbound(spec, fmap.name, allowed)
            if is_blank(canonical) or str(_outbound(spec, fmap.name, canonical)) != allowed:
                continue
        except (ValueError, TypeError):
            continue
        return canonical
    return None


def _sample(name: str, run_id: str) -> Any:
    _, _, sub = name.partition(".")
    if sub:
        return f"test-{sub}-{run_id}"
    if name in _SAMPLES:
        return _SAMPLES[name]
    info = Lead.model_fields.get(name)
    annotation = str(info.annotation) if info is not None else "str"
    if "bool" in annotation:
        return True
    if "int" in annotation:
        return 7
    if "float" in annotation:
        return 7.0
    return f"test {name.replace('_', ' ')} {run_id}"


def _canonical_value(name: str, run_id: str, destination: Mapping, schema: Schema | None) -> Any:
    fmap = destination.fields.get(name)
    if fmap is not None and fmap.primary.writes and schema is not None:
        choice = _picklist_choice(fmap, schema, destination.blank_values)
        if choice is not None:
            return choice
    return _sample(name, run_id)


def _form_raw(fmap: FieldMap, value: Any) -> Any:
    """The raw form value the form's mapping reads as canonical ``value``."""
    spec = next((s for s in fmap.specs if s.reads), fmap.primary)
    if spec.values or spec.values_in:
        key = str(_jsonable(value))
        for raw, canonical in spec.reverse().items():
            if canonical == key:
                return raw
    ctx = TransformContext(fmap.name, spec.system_field)
    for bound in reversed(spec.transforms):
        value = bound.outbound(value, ctx)
    return _form_text(value)


def _utms(form: FormConfig, run_id: str) -> dict[str, str]:
    utm = {k: v for k, v in form.default_utm.model_dump().items() if v}
    if not utm and isinstance(form, WebformConfig):
        utm = {**_FALLBACK_UTM, "utm_campaign": f"validate-{run_id}"}
    return utm


def build_synthetic(
    form_name: str,
    form: FormConfig,
    form_mapping: Mapping,
    destination: Mapping,
    schema: Schema | None,
    *,
    run_id: str | None = None,
    extra_lead: MappingABC[str, Any] | None = None,
    click_ids: MappingABC[str, str] | None = None,
) -> SyntheticLead:
    """The synthetic lead of one run of ``form_name`` (see the module docstring).

    ``extra_lead`` holds canonical values the source adds besides the form fields (a Google
    lead's gclid, an ad form's ad account), so the expected Lead carries them too. Raises
    :class:`SyntheticError` when the lead the form's mapping reads back is not valid.
    """
    run_id = run_id or new_run_id()
    email = validation_email(run_id, form.test_email_domain)
    fields: dict[str, Any] = {}
    email_map = form_mapping.fields.get("email")
    email_name = email_map.primary.system_field if email_map is not None else "email"
    fields[email_name] = email
    for name, fmap in form_mapping.fields.items():
        if name in _NOT_GENERATED or not any(spec.reads for spec in fmap.specs):
            continue
        spec = next(s for s in fmap.specs if s.reads)
        if spec.system_field in fields:
            continue
        value = _canonical_value(name, run_id, destination, schema)
        try:
            fields[spec.system_field] = _form_raw(fmap, value)
        except (ValueError, TypeError) as exc:
            raise SyntheticError(
                f"{name} ({spec.system_field}): no form value reads as {value!r}: {exc}"
            ) from None
    utm = _utms(form, run_id)
    click_ids = dict(click_ids or {})
    query = urlencode({**utm, **click_ids})
    tagged_url = _LANDING_PAGE + (f"?{query}" if query else "")
    page_url = tagged_url if isinstance(form, WebformConfig) else None
    draft = form_mapping.to_lead(fields, external_id=f"validation {run_id}")
    lead, problems = build_lead(draft, is_test=True, **dict(extra_lead or {}))
    if lead is None or problems:
        raise SyntheticError(
            "the form's mapping does not read the synthetic lead back: "
            + "; ".join(str(p) for p in problems)
        )
    attribution = tag_url(tagged_url)
    if page_url is None:
        # Only a web form submits a landing page; an ad form's lead carries none.
        attribution = dataclasses.replace(attribution, landing_page=None)
    apply_touch(lead, attribution)
    synthetic = SyntheticLead(run_id, email, fields, utm, page_url, lead)
    checked = [n for n in form_mapping.fields if n not in _NOT_GENERATED] + ["email"]
    checked += [n for n in ATTRIBUTION_FIELDS if getattr(lead, n, None) is not None]
    checked += [f"click_ids.{k}" for k in lead.click_ids]
    for name in dict.fromkeys(checked):
        target = destination.fields.get(name)
        if target is None or not target.primary.writes or target.primary.also:
            continue
        try:
            written = destination.to_system(lead, fields=[name])
        except MappingError as exc:
            raise SyntheticError(f"the destination mapping cannot write {name}: {exc}") from None
        if target.system_field in written:
            synthetic.checked[name] = target.system_field
            synthetic.expected[target.system_field] = written[target.system_field]
    return synthetic
