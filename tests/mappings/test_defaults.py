"""The default mapping files shipped in leadrelay/mappings/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from leadrelay.mappings.engine import (
    Mapping,
    build_lead,
    iter_default_kinds,
    load_form_mapping,
    load_mapping,
)
from leadrelay.model import Channel, Lead, Owner, RejectionReason, Stage

KINDS = ["hubspot", "salesforce", "zoho"]

#: Documented lossy maps: canonical field → values that do not come back as written.
LOSSY: dict[str, dict[str, Any]] = {
    "hubspot": {"employees": 25},  # 30 → "25-50" → 25
    "salesforce": {"channel": Channel.OTHER},  # paid_search → "Web" → other
    "zoho": {},
}


def full_lead() -> Lead:
    return Lead(
        email="ana@acme.io",
        phone="+442079460958",
        first_name="Ana",
        last_name="Silva",
        job_title="CTO",
        company="Acme",
        website="https://acme.io",
        industry="Technology",
        employees=30,
        annual_revenue=5_000_000.0,
        country="GB",
        region="London",
        city="London",
        postal_code="EC1A 1BB",
        channel=Channel.PAID_SEARCH,
        utm_source="google",
        utm_medium="cpc",
        utm_campaign="q1",
        utm_term="crm",
        utm_content="ad1",
        score=72.5,
        stage=Stage.SAL,
        rejection_reason=RejectionReason.TIMING,
        owner=Owner(id="42"),
        email_opt_in=True,
    )


def round_trip(mapping: Mapping, lead: Lead) -> Lead:
    draft = mapping.to_lead(mapping.to_system(lead))
    back, problems = build_lead(draft)
    assert problems == []
    assert back is not None
    return back


def test_every_default_kind_is_shipped() -> None:
    assert sorted(iter_default_kinds()) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_of_a_full_lead(kind: str) -> None:
    mapping = load_mapping(kind)
    lead = full_lead()
    back = round_trip(mapping, lead)
    for name in mapping.fields:
        expected = LOSSY[kind].get(name, getattr(lead, name))
        assert getattr(back, name) == expected, name


@pytest.mark.parametrize("kind", KINDS)
def test_maps_the_utms_owner_key_and_score(kind: str) -> None:
    mapping = load_mapping(kind)
    wanted = {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "owner",
              "key", "score", "stage", "rejection_reason", "channel"}  # fmt: skip
    assert wanted <= set(mapping.fields)


# HubSpot and Zoho hold every stage; a Salesforce Lead ends at conversion (documented lossy).
STAGE_BACK = {
    "hubspot": {s: s for s in Stage},
    "zoho": {**{s: s for s in Stage}, Stage.OPPORTUNITY: Stage.SQL, Stage.WON: Stage.SQL,
             Stage.LOST: Stage.DISQUALIFIED},
    "salesforce": {**{s: s for s in Stage}, Stage.MQL: Stage.LEAD, Stage.RECYCLED: Stage.LEAD,
                   Stage.OPPORTUNITY: Stage.SQL, Stage.WON: Stage.SQL,
                   Stage.LOST: Stage.DISQUALIFIED},
}  # fmt: skip


@pytest.mark.parametrize(("kind", "stage"), [(k, s) for k in KINDS for s in Stage])
def test_stage_round_trip(kind: str, stage: Stage) -> None:
    back = round_trip(load_mapping(kind), Lead(email="a@b.io", last_name="B", stage=stage))
    assert back.stage == STAGE_BACK[kind][stage]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reason", list(RejectionReason))
def test_rejection_reason_round_trip(kind: str, reason: RejectionReason) -> None:
    lead = Lead(email="a@b.io", stage=Stage.DISQUALIFIED, rejection_reason=reason)
    assert round_trip(load_mapping(kind), lead).rejection_reason == reason


@pytest.mark.parametrize(
    ("raw", "stage"),
    [
        ({"lifecyclestage": "lead", "hs_lead_status": "UNQUALIFIED"}, "disqualified"),
        ({"lifecyclestage": "marketingqualifiedlead", "hs_lead_status": "UNQUALIFIED"},
         "disqualified"),
        ({"lifecyclestage": "opportunity", "hs_lead_status": "UNQUALIFIED"}, "lost"),
        ({"lifecyclestage": "customer", "hs_lead_status": "UNQUALIFIED"}, "won"),
        ({"lifecyclestage": "evangelist"}, "won"),
        ({"lifecyclestage": "marketingqualifiedlead", "hs_lead_status": "ATTEMPTED_TO_CONTACT"},
         "sal"),
        ({"lifecyclestage": "marketingqualifiedlead", "hs_lead_status": "OPEN"}, "mql"),
        ({"lifecyclestage": "salesqualifiedlead", "hs_lead_status": ""}, "sql"),
        ({"lifecyclestage": "subscriber"}, "lead"),
        ({"hs_lead_status": "BAD_TIMING", "lifecyclestage": "marketingqualifiedlead"}, "recycled"),
    ],
)  # fmt: skip
def test_hubspot_composite_stage_reads(raw: dict[str, Any], stage: str) -> None:
    assert load_mapping("hubspot").to_lead(raw).values["stage"] == stage


def test_hubspot_custom_lifecycle_stage_is_a_problem() -> None:
    draft = load_mapping("hubspot").to_lead({"lifecyclestage": "1234567", "email": "a@b.io"})
    [problem] = draft.problems
    assert (problem.field, problem.system_field, problem.value) == (
        "stage", "lifecyclestage", "1234567"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "stage"),
    [
        ({"Status": "Open - Not Contacted", "IsConverted": True}, "sql"),
        ({"Status": "Closed - Converted", "IsConverted": False}, "sql"),
        ({"Status": "Working - Contacted", "IsConverted": False}, "sal"),
        ({"Status": "Closed - Not Converted", "IsConverted": False}, "disqualified"),
        ({"Status": "Nurturing", "IsConverted": False}, "recycled"),
    ],
)
def test_salesforce_stage_reads(raw: dict[str, Any], stage: str) -> None:
    assert load_mapping("salesforce").to_lead(raw).values["stage"] == stage


def test_salesforce_writes_placeholders_for_required_fields() -> None:
    out = load_mapping("salesforce").to_system(Lead(email="a@b.io"))
    assert out["LastName"] == "[not provided]" and out["Company"] == "[not provided]"
    back, _ = build_lead(load_mapping("salesforce").to_lead(out))
    assert back is not None and back.last_name is None and back.company is None


def test_salesforce_does_not_write_is_converted() -> None:
    out = load_mapping("salesforce").to_system(Lead(stage=Stage.SQL))
    assert "IsConverted" not in out and out["Status"] == "Closed - Converted"


@pytest.mark.parametrize(
    ("status", "reason"),
    [("Junk Lead", "invalid_contact"), ("Not Qualified", "bad_fit"), ("Lost Lead", "no_need")],
)
def test_zoho_disqualifying_status_gives_stage_and_reason(status: str, reason: str) -> None:
    draft = load_mapping("zoho").to_lead({"Lead_Status": status, "Rejection_Reason": "-None-"})
    assert draft.values["stage"] == "disqualified"
    assert draft.values["rejection_reason"] == reason


def test_zoho_explicit_rejection_reason_wins_over_the_status() -> None:
    draft = load_mapping("zoho").to_lead(
        {"Lead_Status": "Junk Lead", "Rejection_Reason": "Competitor"}
    )
    assert draft.values["rejection_reason"] == "competitor"


def test_zoho_owner_lookup_both_ways() -> None:
    mapping = load_mapping("zoho")
    raw = {"Owner": {"id": "9", "name": "Bo Li", "email": "bo@x.io"}}
    assert mapping.to_lead(raw).values["owner"] == {"id": "9", "name": "Bo Li", "email": "bo@x.io"}
    assert mapping.to_system(Lead(owner=Owner(id="9")), fields=["owner"]) == {"Owner": {"id": "9"}}


def test_zoho_email_opt_out_is_inverted() -> None:
    mapping = load_mapping("zoho")
    assert mapping.to_system(Lead(email_opt_in=False), fields=["email_opt_in"]) == {
        "Email_Opt_Out": True
    }


@pytest.mark.parametrize(
    ("source", "value", "channel"),
    [("PAID_SOCIAL", "PAID_SOCIAL", "paid_social"), ("OFFLINE", "OFFLINE", "offline")],
)
def test_hubspot_channel_uses_the_source_property(source: str, value: str, channel: str) -> None:
    mapping = load_mapping("hubspot")
    assert mapping.to_lead({"hs_analytics_source": source}).values["channel"] == Channel(channel)
    assert mapping.to_system(Lead(channel=channel), fields=["channel"]) == {
        "hs_analytics_source": value
    }


# --- forms --------------------------------------------------------------------------------------

FORM_RECORDS: dict[str, dict[str, Any]] = {
    "webform": {"email": "ana@acme.io", "full_name": "Ana Silva", "company": "Acme",
                "job_title": "CTO", "phone": "+442079460958", "country": "GB"},
    "meta_lead_ads": {"email": "ana@acme.io", "full_name": "Ana Silva", "company_name": "Acme",
                      "job_title": "CTO", "phone_number": "+442079460958", "country": "GB"},
    "linkedin_lead_gen": {"EMAIL": "ana@acme.io", "FIRST_NAME": "Ana", "LAST_NAME": "Silva",
                          "COMPANY_NAME": "Acme", "JOB_TITLE": "CTO",
                          "PHONE_NUMBER": "+442079460958", "COUNTRY": "GB"},
    "google_ads_lead_form": {"WORK_EMAIL": "ana@acme.io", "FULL_NAME": "Ana Silva",
                             "COMPANY_NAME": "Acme", "JOB_TITLE": "CTO",
                             "PHONE_NUMBER": "+442079460958", "COUNTRY": "GB"},
}  # fmt: skip


@pytest.mark.parametrize("source", sorted(FORM_RECORDS))
def test_form_defaults_read_the_standard_questions(source: str, tmp_path: Path) -> None:
    path = tmp_path / "form.toml"
    path.write_text('[fields]\n"custom.budget" = "budget"\n', encoding="utf-8")
    mapping = load_form_mapping(path, source=source)
    lead, problems = build_lead(mapping.to_lead({**FORM_RECORDS[source], "budget": "10k"}))
    assert problems == [] and lead is not None
    assert (lead.email, lead.first_name, lead.last_name, lead.company, lead.job_title) == (
        "ana@acme.io", "Ana", "Silva", "Acme", "CTO"
    )  # fmt: skip
    assert (lead.phone, lead.country, lead.custom) == ("+442079460958", "GB", {"budget": "10k"})
    assert mapping.to_system(lead) == {}


def test_starter_form_mapping_loads(tmp_path: Path) -> None:
    path = tmp_path / "pricing-demo.toml"
    path.write_text(
        '[fields]\nemail = "email"\nfirst_name = "first_name"\nemail_opt_in = "consent"\n',
        encoding="utf-8",
    )
    mapping = load_form_mapping(path, source="webform")
    lead, problems = build_lead(mapping.to_lead({"email": "a@b.io", "consent": "on"}))
    assert problems == [] and lead is not None and lead.email_opt_in is True
