"""A captured lead built through the row fast path is the Lead validation builds, problems too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from leadrelay.capture.worker import _build_lead, _lead_extras, attribution_of
from leadrelay.config import WebformConfig
from leadrelay.mappings.engine import DEFAULTS_DIR, build_lead, load_form_mapping
from leadrelay.model import fast_lead
from leadrelay.sync.state import InboxItem, InboxStatus
from leadrelay.sync.tagging import classify_channel

#: The default web-form mapping (form fields named like Lead fields), as a form's own.
WEBFORM_MAPPING = load_form_mapping(DEFAULTS_DIR / "webform.toml", source="webform")
RECEIVED = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _form(owner: str | None = None, queue: str | None = None) -> WebformConfig:
    return WebformConfig.model_validate(
        {
            "source": "webform",
            "destination": "hs",
            "mapping": DEFAULTS_DIR / "webform.toml",
            "secret": "s3cret",
            "owner": owner,
            "queue": queue,
        }
    )


def _item(fields: dict[str, Any], is_test: bool = False) -> InboxItem:
    return InboxItem(
        key="ld_0123456789abcdef0123456789",
        form="web",
        source="webform",
        payload={"fields": fields},
        dedupe_key="d",
        is_test=is_test,
        received_at=RECEIVED,
        status=InboxStatus.PENDING,
        attempts=0,
        last_error=None,
        delivered_at=None,
        claim_token=None,
        claimed_at=None,
    )


def _both(
    fields: dict[str, Any], form: WebformConfig, is_test: bool = False
) -> tuple[tuple[Any, Any], tuple[Any, Any], dict[str, Any]]:
    draft = WEBFORM_MAPPING.to_lead(fields)
    draft.record = "ld_0123456789abcdef0123456789"
    extras = _lead_extras(_item(fields, is_test), form, fields, attribution_of(fields, form))
    return _build_lead(draft, dict(extras)), build_lead(draft, **extras), extras


_TEXT = st.text(st.sampled_from("Aé z\t.-"), max_size=6)
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "email": st.sampled_from(
        ["ana@acme.io", " Ana.Silva@Acme.IO ", "bo@gmail.com", "jörg@bücher.de", "not an email", ""]
    ),
    "phone": st.sampled_from(["+1 415 555 2671", "(415) 555-2671", "030 1234567", "12", ""]),
    "country": st.sampled_from(["US", "Germany", "Narnia", ""]),
    "first_name": _TEXT,
    "last_name": _TEXT,
    "full_name": st.sampled_from(["Ana Silva", "Bo", ""]),
    "company": _TEXT,
    "job_title": _TEXT,
    "website": st.sampled_from(["https://www.Acme.io/x", "acme", ""]),
    "city": _TEXT,
    "page_url": st.sampled_from(
        ["https://www.acme.io/demo?utm_source=google&utm_medium=cpc&gclid=G", "https://acme.io/"]
    ),
    "referrer": st.sampled_from(["https://www.linkedin.com/", ""]),
    "utm_campaign": _TEXT,
    "fbclid": st.sampled_from(["F1", ""]),
    "form_id": st.sampled_from(["f-1", " f 2 "]),
    "is_test": st.booleans(),
}
#: Fields whose values the row fast path leaves to validation (numbers, pick lists, flags).
_OTHER_FIELDS = st.sampled_from(
    [
        ("employees", "12"),
        ("employees", "lots"),
        ("industry", "Software"),
        ("industry", "Basket weaving"),
        ("email_opt_in", "yes"),
        ("email_opt_in", "maybe"),
    ]
)


@st.composite
def _submissions(draw: st.DrawFn) -> dict[str, Any]:
    fields = {name: draw(values) for name, values in _FIELDS.items() if draw(st.booleans())}
    if draw(st.sampled_from([False] * 5 + [True])):
        name, value = draw(_OTHER_FIELDS)
        fields[name] = value
    return fields


@settings(max_examples=400, derandomize=True)
@given(
    fields=_submissions(),
    owner=st.sampled_from([None, "005x"]),
    queue=st.sampled_from([None, " Inbound  EMEA "]),
    is_test=st.booleans(),
)
@example(
    fields={"email": "ana@acme.io", "first_name": "Ana"}, owner=None, queue=None, is_test=False
)
def test_a_captured_lead_is_the_one_validation_builds_with_the_same_problems(
    fields: dict[str, Any], owner: str | None, queue: str | None, is_test: bool
) -> None:
    (fast, fast_problems), (full, full_problems), _ = _both(fields, _form(owner, queue), is_test)
    assert fast_problems == full_problems
    assert (fast is None) == (full is None)
    if fast is not None and full is not None:
        assert fast.model_dump() == full.model_dump()
        assert fast.model_fields_set == full.model_fields_set


@given(fields=_submissions(), with_defaults=st.booleans())
def test_a_submissions_channel_is_that_of_its_attribution(
    fields: dict[str, Any], with_defaults: bool
) -> None:
    form = _form()
    if with_defaults:
        form = form.model_copy(
            update={"default_utm": form.default_utm.model_copy(update={"utm_source": "fb"})}
        )
    found = attribution_of(fields, form)
    # a UTM or click-id field wins over the page URL's
    if (fields.get("utm_campaign") or "").strip():
        assert found.utm_campaign == fields["utm_campaign"].strip()
    if fields.get("fbclid"):
        assert found.click_ids["fbclid"] == fields["fbclid"]
    assert (found.channel, found.channel_rule) == classify_channel(
        utm_source=found.utm_source,
        utm_medium=found.utm_medium,
        utm_campaign=found.utm_campaign,
        click_ids=found.click_ids,
        referrer=found.referrer,
        landing_page=found.landing_page,
    )


def test_a_plain_submission_takes_the_row_fast_path() -> None:
    fields = {
        "email": "bench1@load1.io",
        "first_name": "Bench",
        "last_name": "L1",
        "company": "Load 1",
        "page_url": "https://www.example.org/demo?utm_source=bench&utm_campaign=c1",
    }
    form = _form(owner="005x", queue="Inbound")
    draft = WEBFORM_MAPPING.to_lead(fields)
    extras = _lead_extras(_item(fields), form, fields, attribution_of(fields, form))
    lead = fast_lead(draft.values, extras)
    assert lead is not None
    assert (lead.key, lead.created_at, lead.utm_source, lead.company_domain) == (
        "ld_0123456789abcdef0123456789",
        RECEIVED,
        "bench",
        "load1.io",
    )


def test_a_bad_optional_value_is_left_out_and_named() -> None:
    (fast, problems), (full, _), _ = _both({"email": "ana@acme.io", "phone": "12"}, _form())
    assert fast is not None and full is not None
    assert fast.phone is None and fast == full
    assert [(p.field, p.system_field) for p in problems] == [("phone", "phone")]
