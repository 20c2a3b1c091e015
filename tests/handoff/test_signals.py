from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from leadrelay.handoff.signals import (
    HUBSPOT_FIELD_SIGNALS,
    Category,
    FieldSignal,
    Signal,
    UrlPattern,
    signals_from_fields,
    signals_from_lead,
    signals_from_url,
)
from leadrelay.model import Lead

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://acme.io/pricing", "pricing_page"),
        ("https://acme.io/en/pricing/?plan=pro#top", "pricing_page"),
        ("/demo", "demo_request"),
        ("https://acme.io/contact-sales", "demo_request"),
        ("acme.io/lp/request-demo-now", "demo_request"),
        ("https://acme.io/case-studies/globex", "case_study"),
        ("https://acme.io/case-study", "case_study"),
        ("https://acme.io/webinar/q3-launch", "webinar"),
        ("https://acme.io/blog/new-pricing-tips", "blog_post"),
        ("https://acme.io/docs/api", "docs"),
        ("https://acme.io/careers", "job_seeker"),
        ("https://acme.io/jobs/42", "job_seeker"),
    ],
)
def test_url_patterns(url: str, name: str) -> None:
    [signal] = signals_from_url(url, NOW)
    assert signal.name == name
    assert signal.at == NOW
    assert signal.source == url


@pytest.mark.parametrize("url", [None, "", "https://acme.io/", "https://acme.io/blog", "/about"])
def test_url_without_signal(url: str | None) -> None:
    assert signals_from_url(url, NOW) == []


def test_custom_url_patterns() -> None:
    patterns = [UrlPattern(name="trial", category=Category.INTENT, pattern=r"/start-trial")]
    [signal] = signals_from_url("https://acme.io/start-trial", NOW, patterns)
    assert (signal.name, signal.category) == ("trial", Category.INTENT)
    assert signals_from_url("https://acme.io/pricing", NOW, patterns) == []


def test_url_pattern_must_compile() -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        UrlPattern(name="x", category=Category.INTENT, pattern="(")


def test_signal_needs_timezone() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        Signal("pricing_page", Category.INTENT, datetime(2024, 5, 1), "test")


def test_hubspot_fields() -> None:
    record = {
        "hs_email_open": "12",
        "hs_email_last_open_date": "2024-05-09T10:00:00Z",
        "hs_email_click": "0",
        "num_conversion_events": 2,
        "recent_conversion_date": 1715170000000,
        "hs_email_optout": "true",
    }
    signals = {s.name: s for s in signals_from_fields(record, HUBSPOT_FIELD_SIGNALS, NOW)}
    assert set(signals) == {"email_open", "form_submission", "unsubscribed"}
    assert signals["email_open"].count == 12
    assert signals["email_open"].at == datetime(2024, 5, 9, 10, tzinfo=UTC)
    assert signals["form_submission"].at == datetime.fromtimestamp(1715170000, UTC)
    assert signals["unsubscribed"].at == NOW
    assert signals["email_open"].source == "crm:hs_email_open"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hs_email_open", "many", "hs_email_open: expected a count"),
        ("hs_email_open", "-1", "whole count"),
        ("hs_email_open", True, "expected a count"),
        ("hs_email_optout", "perhaps", "hs_email_optout: expected true or false"),
        ("hs_email_last_open_date", "yesterday", "hs_email_last_open_date: not a date"),
    ],
)
def test_bad_field_value_is_named(field: str, value: object, message: str) -> None:
    record: dict[str, object] = {"hs_email_open": "1", field: value}
    with pytest.raises(ValueError, match=message):
        signals_from_fields(record, HUBSPOT_FIELD_SIGNALS, NOW, system="hubspot")


def test_field_signal_rejects_unknown_key() -> None:
    with pytest.raises(ValidationError, match="colour"):
        FieldSignal.model_validate(
            {"field": "x", "name": "y", "category": "engagement", "colour": 1}
        )


def test_signals_from_lead() -> None:
    updated = NOW - timedelta(hours=3)
    lead = Lead(
        intent_signals=["demo_request", "trial", "demo_request"],
        landing_page="https://acme.io/pricing",
        updated_at={"hs": updated, "sf": updated - timedelta(days=1)},
    )
    signals = signals_from_lead(lead)
    assert [(s.name, s.category) for s in signals] == [
        ("demo_request", Category.INTENT),
        ("trial", Category.INTENT),
        ("pricing_page", Category.INTENT),
    ]
    assert {s.at for s in signals} == {updated}
