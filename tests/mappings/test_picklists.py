"""Standard pick lists: the taxonomy data, the picklist / country / region transforms, and the
default mappings reading and writing each system's own values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from leadrelay.handoff.scoring import ScoringConfig, score
from leadrelay.mappings.engine import (
    Mapping,
    MappingError,
    build_lead,
    load_form_mapping,
    load_mapping,
)
from leadrelay.mappings.transforms import TransformArgsError, TransformContext, bind
from leadrelay.model import Industry, Lead, Salutation
from leadrelay.sandbox.salesforce.schema import INDUSTRIES as SALESFORCE_INDUSTRIES
from leadrelay.sandbox.salesforce.schema import LEAD_SOURCES as SALESFORCE_LEAD_SOURCES
from leadrelay.sandbox.zoho.schema import INDUSTRY_VALUES as ZOHO_INDUSTRIES
from leadrelay.sandbox.zoho.schema import LEAD_SOURCE_VALUES as ZOHO_LEAD_SOURCES
from leadrelay.taxonomy import LISTS, fold, standard_list

NOW = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
ENUMS = {"industry": Industry, "salutation": Salutation}

#: Zoho's default Industry values that name a company size, not an industry.
ZOHO_NOT_INDUSTRIES = {"-None-", "Large Enterprise", "Small/Medium Enterprise"}


# --- the data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LISTS)
def test_the_data_holds_exactly_the_enums_values(name: str) -> None:
    assert standard_list(name).values == tuple(m.value for m in ENUMS[name])


def test_no_spelling_reads_as_two_industries_in_two_systems() -> None:
    readings: dict[str, set[str]] = {}
    for values in standard_list("industry").systems.values():
        for spelling, canonical in values.read.items():
            readings.setdefault(spelling, set()).add(canonical)
    assert {s: c for s, c in readings.items() if len(c) > 1} == {}


@pytest.mark.parametrize(
    ("system", "values"),
    [
        ("salesforce", SALESFORCE_INDUSTRIES),
        ("zoho", tuple(v for v in ZOHO_INDUSTRIES if v not in ZOHO_NOT_INDUSTRIES)),
    ],
)
def test_every_standard_value_of_the_crm_reads_as_an_industry(
    system: str, values: tuple[str, ...]
) -> None:
    industries = standard_list("industry")
    assert [v for v in values if industries.canonical(v, system) is None] == []


@pytest.mark.parametrize(
    ("system", "allowed"), [("salesforce", SALESFORCE_INDUSTRIES), ("zoho", ZOHO_INDUSTRIES)]
)
def test_every_written_value_is_in_the_crms_picklist(system: str, allowed: tuple[str, ...]) -> None:
    written = set(standard_list("industry").systems[system].write.values())
    assert written - set(allowed) == set()


@pytest.mark.parametrize(
    ("text", "system", "expected"),
    [
        ("COMPUTER_SOFTWARE", "hubspot", "software"),
        ("Computer Software", "hubspot", "software"),
        ("  technology ", "hubspot", "software"),  # Salesforce's spelling in free text
        ("Technology", "salesforce", "software"),
        ("ASP (Application Service Provider)", "zoho", "software"),
        ("Software Development", "linkedin", "software"),
        ("IT Services and IT Consulting", "linkedin", "it_services"),
        ("Hospital & Health Care", None, "healthcare"),
        ("Banking", "zoho", "banking"),  # not Zoho's value, but everyone's spelling
        ("Large Enterprise", "zoho", None),
        ("Widgets", None, None),
    ],
)
def test_a_value_reads_by_its_systems_table_then_every_spelling(
    text: str, system: str | None, expected: str | None
) -> None:
    assert standard_list("industry").canonical(text, system) == expected


# --- transforms ---------------------------------------------------------------------------------


def test_picklist_args_name_a_system_of_the_list() -> None:
    with pytest.raises(TransformArgsError, match="known: hubspot, linkedin, salesforce, zoho"):
        bind("picklist", {"list": "industry", "system": "pipedrive"})


@pytest.mark.parametrize(
    ("transform", "args", "canonical", "country", "written"),
    [
        ("country", {}, "DE", None, "DE"),
        ("country", {"write": "name"}, "DE", None, "Germany"),
        ("country", {"write": "name"}, "KR", None, "South Korea"),
        ("region", {"write": "code"}, "US-CA", "US", "CA"),
        ("region", {"write": "name"}, "US-CA", "US", "California"),
        ("region", {"write": "name"}, "Greater London", "GB", "Greater London"),
    ],
)
def test_geo_transforms_write_codes_or_names(
    transform: str, args: dict[str, str], canonical: str, country: str | None, written: str
) -> None:
    ctx = TransformContext("x", "X", lambda name: country if name == "country" else None)
    assert bind(transform, args).outbound(canonical, ctx) == written


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [("California", "US", "US-CA"), ("ON", "Canada", "CA-ON"), ("Bayern", "DE", "DE-BY")],
)
def test_region_reads_as_iso_3166_2_within_the_records_country(
    raw: str, country: str, expected: str
) -> None:
    ctx = TransformContext("region", "State", lambda name: country if name == "country" else None)
    assert bind("region").inbound(raw, ctx) == expected


# --- the default mappings -----------------------------------------------------------------------


INDUSTRY_RECORDS: list[tuple[str, dict[str, Any]]] = [
    ("hubspot", {"email": "a@x.io", "industry": "COMPUTER_SOFTWARE"}),
    ("salesforce", {"Email": "a@x.io", "Industry": "Technology"}),
    ("zoho", {"Email": "a@x.io", "Industry": "Non-management ISV"}),
]

FORM_RECORDS: list[tuple[str, dict[str, Any]]] = [
    ("linkedin_lead_gen", {"EMAIL": "a@x.io", "INDUSTRY": "Software Development"}),
    ("webform", {"email": "a@x.io", "industry": "SaaS"}),
]


def _mapping(kind: str) -> Mapping:
    if kind in ("linkedin_lead_gen", "webform"):
        from leadrelay.mappings.engine import DEFAULTS_DIR

        return load_form_mapping(DEFAULTS_DIR / f"{kind}.toml", source=kind)
    return load_mapping(kind)


def _lead(kind: str, raw: dict[str, Any]) -> tuple[Lead, list[Any]]:
    draft = _mapping(kind).to_lead(raw)
    lead, problems = build_lead(draft)
    assert lead is not None, problems
    return lead, draft.notes


@pytest.mark.parametrize(("kind", "raw"), INDUSTRY_RECORDS + FORM_RECORDS)
def test_target_industries_match_leads_from_every_system(kind: str, raw: dict[str, Any]) -> None:
    lead, _notes = _lead(kind, raw)
    config = ScoringConfig.model_validate({"lists": {"target_industries": ["software"]}})
    assert lead.industry is Industry.SOFTWARE
    assert "target industry +10" in score(lead, [], NOW, config).reasons


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("hubspot", "industry", "COMPUTER_SOFTWARE"),
        ("salesforce", "Industry", "Technology"),
        ("zoho", "Industry", "ASP (Application Service Provider)"),
    ],
)
def test_a_canonical_industry_is_written_as_each_systems_value(
    kind: str, field: str, value: str
) -> None:
    lead = Lead(email="a@x.io", industry="software")
    assert load_mapping(kind).to_system(lead)[field] == value


def test_an_industry_the_system_has_no_value_for_is_left_out_as_a_problem_of_that_field() -> None:
    lead = Lead(email="a@x.io", last_name="Lee", industry="banking")
    record, problems = load_mapping("zoho").to_system_partial(lead)
    assert "Industry" not in record
    assert record["Last_Name"] == "Lee"
    [problem] = problems
    assert (problem.field, problem.system_field) == ("industry", "Industry")
    assert "zoho has no industry value for 'banking'" in problem.reason


@pytest.mark.parametrize(
    ("kind", "raw", "kept"),
    [
        ("salesforce", {"Email": "a@x.io", "Industry": "Widgets"}, "Widgets"),
        ("zoho", {"Email": "a@x.io", "Industry": "Large Enterprise"}, "Large Enterprise"),
        ("webform", {"email": "a@x.io", "industry": "Space mining"}, "Space mining"),
    ],
)
def test_an_unmapped_value_is_kept_in_custom_and_noted_and_the_lead_still_maps(
    kind: str, raw: dict[str, Any], kept: str
) -> None:
    lead, notes = _lead(kind, raw)
    assert lead.industry is None
    assert lead.custom["industry_raw"] == kept
    [note] = notes
    assert (note.field, note.value) == ("industry", kept)
    assert "kept verbatim in custom.industry_raw" in note.reason


def test_a_region_name_is_written_as_the_salesforce_state_code() -> None:
    lead = Lead(email="a@x.io", country="United States", region="California")
    assert lead.region == "US-CA"
    record = load_mapping("salesforce").to_system(lead)
    assert (record["Country"], record["State"]) == ("US", "CA")


@pytest.mark.parametrize("kind", ["hubspot", "zoho"])
def test_a_region_is_written_by_name_where_the_system_holds_names(kind: str) -> None:
    lead = Lead(email="a@x.io", country="US", region="ca")
    field = "state" if kind == "hubspot" else "State"
    assert load_mapping(kind).to_system(lead)[field] == "California"


@pytest.mark.parametrize(("spelling", "expected"), [("Mrs", "mrs"), ("Dr.", "dr"), ("Herr", "mr")])
def test_salutations_read_as_canonical_values(spelling: str, expected: str) -> None:
    assert standard_list("salutation").canonical(spelling) == expected
    assert fold(spelling) in standard_list("salutation").aliases


@pytest.mark.parametrize(
    ("answer", "employees"), [("51-200", 51), ("SIZE_1001_TO_5000", 1001), ("10,001+", 10001)]
)
def test_linkedin_company_size_reads_as_the_ranges_lower_bound(answer: str, employees: int) -> None:
    lead, _notes = _lead("linkedin_lead_gen", {"EMAIL": "a@x.io", "COMPANY_SIZE": answer})
    assert lead.employees == employees


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("salesforce", SALESFORCE_LEAD_SOURCES),
        ("zoho", tuple(v for v in ZOHO_LEAD_SOURCES if v != "-None-")),
    ],
)
def test_every_standard_lead_source_reads_as_a_channel_by_name(
    kind: str, values: tuple[str, ...]
) -> None:
    # Lead source's canonical enum is the channel; each default value has its own entry (not
    # only the "*" catch-all).
    reverse = load_mapping(kind).fields["channel"].primary.reverse()
    assert [v for v in values if v not in reverse] == []


def test_a_projects_own_industry_map_keeps_what_it_does_not_cover(tmp_path: Any) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "zoho.toml").write_text(
        '[fields.industry]\nfield = "Industry"\nvalues = { banking = "Banking" }\n'
    )
    mapping = load_mapping("zoho", project_dir=tmp_path)
    assert mapping.to_system(Lead(email="a@x.io", industry="banking"))["Industry"] == "Banking"
    draft = mapping.to_lead({"Email": "a@x.io", "Industry": "Fishing"})
    lead, problems = build_lead(draft)
    assert lead is not None and problems == []
    assert lead.custom == {"industry_raw": "Fishing"}
    assert [note.field for note in draft.notes] == ["industry"]


def test_a_projects_industry_map_must_use_canonical_values(tmp_path: Any) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "zoho.toml").write_text(
        '[fields.industry]\nfield = "Industry"\nvalues = { Banking = "Banking" }\n'
    )
    with pytest.raises(MappingError, match="values key 'Banking' is not a industry value"):
        load_mapping("zoho", project_dir=tmp_path)
