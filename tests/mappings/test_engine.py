"""The mapping engine: loading, load-time errors, merging, reads, writes, check."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadrelay.connectors.base import FieldInfo, Schema
from leadrelay.mappings.engine import (
    LeadDraft,
    MappingError,
    Problem,
    build_lead,
    load_form_mapping,
    load_mapping,
)
from leadrelay.model import Lead, Owner, Stage

STAGES = "\n".join(f'{s.value} = "S_{s.value}"' for s in Stage)


def write(tmp_path: Path, text: str, name: str = "crm.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> object:
    return load_mapping(str(write(tmp_path, text)))


def load_error(tmp_path: Path, text: str) -> MappingError:
    with pytest.raises(MappingError) as info:
        load_mapping(str(write(tmp_path, text)))
    return info.value


BASIC = """
object = "Lead"
key = "Email"
[fields]
email = "Email"
last_name = { field = "LastName", default = "[not provided]" }
employees = { field = "Employees", transform = "int" }
"custom.segment" = "Segment__c"
[fields.channel]
field = "Source"
values = { paid_search = "Ads", paid_social = "Ads", offline = "Event" }
values_in = { Ads = "paid_search", Partner = "referral", "*" = "other" }
"""


@pytest.fixture
def basic(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_mapping(str(write(tmp_path, BASIC)))


# --- load-time errors ---------------------------------------------------------------------------


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[fields]\nemail = "Email"\nphone = \n')
    assert error.problems[0].line == 3
    assert "crm.toml:3" in str(error)


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ('[fields]\nemial = "Email"\n', "emial", 2),
        ('[fields]\nemail = "Email"\n  "emial"  = "Email"\n', "emial", 3),
        ('[fields]\nemail = "Email"\n\n[fields.emial]\nsystem = "Email"\n', "emial", 4),
        ('[fields]\nemail = "Email"\n[[ fields . emial ]]\nsystem = "Email"\n', "emial", 3),
        ('[fields]\nemail = "Email"\ncustom . tier = 3\n', "custom.tier", 3),
        ('[fields]\nemail = "Email"\n"custom.tier" = 3\n', "custom.tier", 3),
        ('[fields]\nemail = "Email"\nemial_x = "E"\n', "emial", None),
    ],
)
def test_a_problem_names_the_line_its_entry_is_written_on(
    text: str, field: str, line: int | None
) -> None:
    from leadrelay.mappings.engine import _line_of

    assert _line_of(text, field) == line


def test_unknown_lead_field_suggests_the_close_one(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[fields]\nemial = "Email"\n')
    problem = error.problems[0]
    assert (problem.field, problem.line) == ("emial", 2)
    assert "did you mean 'email'" in problem.reason
    assert problem.file is not None and problem.file.name == "crm.toml"


def test_two_fields_onto_one_target(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[fields]\nphone = "Phone"\nemail = "Phone"\n')
    assert "write 'Phone'" in str(error) and 'direction = "in"' in str(error)


def test_two_fields_onto_one_target_allowed_when_one_only_reads(tmp_path: Path) -> None:
    text = '[fields]\nphone = "Phone"\nemail = { field = "Phone", direction = "in" }\n'
    assert load_text(tmp_path, text) is not None


def test_stage_map_missing_a_stage(tmp_path: Path) -> None:
    text = '[fields.stage]\nfield = "Status"\nvalues = { lead = "Open", sql = "Won" }\n'
    error = load_error(tmp_path, text)
    assert "no value for mql" in str(error) and "disqualified" in str(error)


def test_stage_map_with_a_default_need_not_cover_every_stage(tmp_path: Path) -> None:
    text = (
        '[fields.stage]\nfield = "Status"\ndefault = "Open"\n'
        'values = { lead = "Open", sql = "Won" }\nvalues_in = { Open = "lead" }\n'
    )
    assert load_text(tmp_path, text) is not None


def test_stage_map_on_a_read_only_field_need_not_cover_every_stage(tmp_path: Path) -> None:
    text = '[fields.stage]\nfield = "Status"\ndirection = "in"\nvalues_in = { Open = "lead" }\n'
    assert load_text(tmp_path, text) is not None


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ('[fields.channel]\nfield = "S"\nvalues = { tv = "TV" }', "'tv' is not a channel value"),
        ('[fields.rejection_reason]\nfield = "R"\nvalues_in = { X = "spam" }', "not a rejection"),
        (f'[fields.stage]\nfield = "S"\nvalues = {{ {STAGES.replace(chr(10), ", ")}, won2 = "W" }}',
         "'won2' is not a stage value"),
    ],
)  # fmt: skip
def test_value_map_keys_outside_the_enum(tmp_path: Path, entry: str, reason: str) -> None:
    assert reason in str(load_error(tmp_path, entry))


def test_unknown_transform_names_the_known_ones(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[fields]\nemail = { field = "Email", transform = "lowr" }\n')
    assert "unknown transform 'lowr'" in str(error)
    assert "did you mean 'lower'" in str(error) and "e164" in str(error)


def test_bad_transform_args(tmp_path: Path) -> None:
    text = (
        '[fields]\nfirst_name = { field = "N", transform = "split_full_name", '
        "args = { part = 2 } }\n"
    )
    error = load_error(tmp_path, text)
    assert error.problems[0].field == "first_name"
    assert "bad args for transform 'split_full_name'" in str(error)


def test_args_with_a_transform_list_are_per_name(tmp_path: Path) -> None:
    text = (
        '[fields]\ncreated_at = { field = "C", direction = "in", transform = ["strip", "datetime"],'
        ' args = { datetime = { format = "epoch_ms" } } }\n'
    )
    mapping = load_mapping(str(write(tmp_path, text)))
    draft = mapping.to_lead({"C": " 1704067200000 "})  # type: ignore[attr-defined]
    assert draft.values["created_at"].year == 2024


def test_ambiguous_reverse_map_must_be_resolved(tmp_path: Path) -> None:
    text = '[fields.channel]\nfield = "S"\nvalues = { paid_search = "Ads", display = "Ads" }\n'
    error = load_error(tmp_path, text)
    assert "'Ads' is written for paid_search, display" in str(error)


def test_composite_value_that_nothing_reads_back(tmp_path: Path) -> None:
    text = '[fields.rejection_reason]\nfields = ["R", "S"]\nvalues.other = { S = "Closed" }\n'
    assert "values.other writes S = 'Closed'" in str(load_error(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('color = "red"\n[fields]\nemail = "E"\n', "unknown top-level key"),
        ('[fields]\nemail = { field = "E", colour = "x" }\n', "unknown key(s) colour"),
        ('[fields]\nemail = { field = "E", direction = "sideways" }\n', "direction must be"),
        ('[fields]\nemail = { fields = ["E"], field = "E" }\n', "exactly one of"),
        ('[fields]\nemail = 3\n', "must be a system field name"),
        ('[fields]\ncustom = "C"\n', "map its keys"),
        ('[fields]\n"owner.email" = "C"\n', "only custom.NAME"),
        ('[fields.stage]\nfield = "S"\ndirection = "in"\n[[fields.stage.read]]\n'
         'when = { S = "x" }\nvalue = "lead"\n', "read rules need fields"),
    ],
)  # fmt: skip
def test_other_load_errors(tmp_path: Path, text: str, reason: str) -> None:
    assert reason in str(load_error(tmp_path, text))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[fields]\nemial = "E"\nphon = "P"\n')
    assert [p.field for p in error.problems] == ["emial", "phon"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="not found"):
        load_mapping(str(tmp_path / "nope.toml"))


def test_kind_without_any_mapping(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="no mapping"):
        load_mapping("pipedrive", project_dir=tmp_path)


# --- merging ------------------------------------------------------------------------------------


def test_project_file_overrides_field_by_field(tmp_path: Path) -> None:
    write(
        tmp_path,
        '[fields]\nindustry = "Vertical__c"\nutm_term = false\n"custom.tier" = "Tier__c"\n',
        "mappings/salesforce.toml",
    )
    mapping = load_mapping("salesforce", project_dir=tmp_path)
    assert mapping.fields["industry"].system_field == "Vertical__c"
    assert "utm_term" not in mapping.fields
    assert mapping.fields["custom.tier"].system_field == "Tier__c"
    assert mapping.fields["email"].system_field == "Email"
    assert mapping.object_name == "Lead"
    assert [p.name for p in mapping.files] == ["salesforce.toml", "salesforce.toml"]


def test_flow_override_takes_the_project_files_place(tmp_path: Path) -> None:
    write(tmp_path, '[fields]\nindustry = "Vertical__c"\n', "mappings/salesforce.toml")
    flow = write(tmp_path, '[fields]\ncity = "Town__c"\n', "flows/sf.toml")
    mapping = load_mapping("salesforce", project_dir=tmp_path, override=flow)
    assert mapping.fields["city"].system_field == "Town__c"
    assert mapping.fields["industry"].system_field == "Industry"


def test_override_error_names_the_override_file(tmp_path: Path) -> None:
    write(tmp_path, '[fields]\nindustri = "X"\n', "mappings/hubspot.toml")
    with pytest.raises(MappingError) as info:
        load_mapping("hubspot", project_dir=tmp_path)
    assert info.value.problems[0].file == tmp_path / "mappings" / "hubspot.toml"


def test_override_creating_a_conflict_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, '[fields]\ncity = "Email"\n', "mappings/salesforce.toml")
    with pytest.raises(MappingError, match="write 'Email'"):
        load_mapping("salesforce", project_dir=tmp_path)


# --- reads --------------------------------------------------------------------------------------


def test_to_lead_maps_values_and_custom(basic) -> None:  # type: ignore[no-untyped-def]
    draft = basic.to_lead(
        {"Email": "ANA@Acme.io", "Employees": "1,200", "Segment__c": "smb", "Source": "Ads"},
        connection="sf",
        external_id="00Q1",
    )
    assert draft.problems == []
    assert draft.values == {
        "email": "ANA@Acme.io",
        "employees": 1200,
        "custom": {"segment": "smb"},
        "channel": "paid_search",
        "external_ids": {"sf": "00Q1"},
    }
    assert draft.record == "00Q1"


@pytest.mark.parametrize(
    ("source", "channel"),
    [("Ads", "paid_search"), ("ads", "paid_search"), ("Event", "offline"),
     ("Partner", "referral"), ("Billboard", "other")],
)  # fmt: skip
def test_value_map_reads_with_many_to_one_and_wildcard(basic, source: str, channel: str) -> None:  # type: ignore[no-untyped-def]
    assert basic.to_lead({"Source": source}).values["channel"] == channel


def test_value_outside_the_map_is_a_problem(tmp_path: Path) -> None:
    mapping = load_mapping(
        str(write(tmp_path, '[fields.channel]\nfield = "S"\nvalues = { offline = "Event" }\n'))
    )
    draft = mapping.to_lead({"S": "Radio"}, external_id="9")
    [problem] = draft.problems
    assert (problem.field, problem.system_field, problem.value) == ("channel", "S", "Radio")
    assert problem.record == "9" and "not in the value map" in problem.reason
    assert "channel" not in draft.values


def test_a_value_read_again_reads_the_same(basic) -> None:  # type: ignore[no-untyped-def]
    # The second read of a value comes from the field's memo: the same value and problem.
    for _ in range(2):
        draft = basic.to_lead({"Source": "Partner", "Employees": "many"}, external_id="9")
        assert draft.values["channel"] == "referral"
        assert [(p.field, p.value, p.record) for p in draft.problems] == [
            ("employees", "many", "9")
        ]


def test_a_number_and_a_boolean_of_equal_value_read_apart(tmp_path: Path) -> None:
    # 1 == True in Python: a memo keyed by the value alone would read True as 1.
    mapping = load_mapping(
        str(write(tmp_path, '[fields.tier]\nfield = "T"\nvalues = { hot = "1", cold = "true" }\n'))
    )
    assert [mapping.to_lead({"T": value}).values["tier"] for value in (1, True, 1.0)] == [
        "hot",
        "cold",
        "hot",
    ]


def test_a_read_of_another_field_is_not_remembered_across_records(tmp_path: Path) -> None:
    # region reads the record's country: the same state text reads apart in two countries.
    text = '[fields]\ncountry = { field = "C", transform = "country" }\n'
    text += 'region = { field = "S", transform = "region" }\n'
    mapping = load_mapping(str(write(tmp_path, text)))
    us = mapping.to_lead({"C": "US", "S": "California"}).values["region"]
    ca = mapping.to_lead({"C": "CA", "S": "California"}).values["region"]
    assert (us, ca) == ("US-CA", "California")


def test_bad_value_is_a_problem_not_an_exception(basic) -> None:  # type: ignore[no-untyped-def]
    draft = basic.to_lead({"Email": "ana@acme.io", "Employees": "many"})
    assert [(p.field, p.system_field) for p in draft.problems] == [("employees", "Employees")]
    assert draft.record == "ana@acme.io"
    lead, problems = build_lead(draft)
    # One bad optional value never holds the lead back: it is left out, its problem returned.
    assert lead is not None and lead.email == "ana@acme.io" and lead.employees is None
    assert problems == draft.problems


def test_a_value_the_lead_refuses_is_left_out_and_named(basic) -> None:  # type: ignore[no-untyped-def]
    draft = basic.to_lead({"Email": "ana@acme.io", "LastName": "Silva"})
    draft.values["phone"] = "call me maybe"
    draft.sources["phone"] = "Phone"

    lead, problems = build_lead(draft)

    assert lead is not None and lead.last_name == "Silva" and lead.phone is None
    assert [(p.field, p.system_field, p.value) for p in problems] == [
        ("phone", "Phone", "call me maybe")
    ]


def test_a_bad_email_or_a_bad_added_value_rejects_the_record(basic) -> None:  # type: ignore[no-untyped-def]
    bad_email = basic.to_lead({"Email": "not an address", "LastName": "Silva"})
    lead, problems = build_lead(bad_email)
    assert lead is None and [p.field for p in problems] == ["email"]

    fine = basic.to_lead({"Email": "ana@acme.io"})
    lead, problems = build_lead(fine, employees="lots")  # leadrelay's own value
    assert lead is None and [p.field for p in problems] == ["employees"]


def test_placeholder_default_reads_as_blank(basic) -> None:  # type: ignore[no-untyped-def]
    assert basic.to_lead({"LastName": "[not provided]"}).values["last_name"] is None


def test_absent_fields_are_left_out(basic) -> None:  # type: ignore[no-untyped-def]
    assert basic.to_lead({"Email": "a@b.io"}).values == {"email": "a@b.io"}


def test_blank_values_read_as_blank(tmp_path: Path) -> None:
    mapping = load_mapping(
        str(write(tmp_path, 'blank_values = ["-None-"]\n[fields]\nindustry = "Industry"\n'))
    )
    assert mapping.to_lead({"Industry": "-None-"}).values == {"industry": None}


def test_alternatives_first_non_blank_wins(tmp_path: Path) -> None:
    text = '[fields]\nemail = ["email", "work_email"]\n'
    mapping = load_mapping(str(write(tmp_path, text)))
    assert mapping.to_lead({"email": "", "work_email": "w@x.io"}).values["email"] == "w@x.io"
    assert mapping.to_lead({"email": "p@x.io", "work_email": "w@x.io"}).values["email"] == "p@x.io"
    assert mapping.to_system(Lead(email="p@x.io")) == {"email": "p@x.io"}


def test_an_alternative_with_read_when_is_read_only_when_the_record_meets_it(
    tmp_path: Path,
) -> None:
    text = (
        "[fields]\njob_title = [\n"
        '  { field = "Won_Title", read_when = { Won = true } },\n'
        '  { field = "Lost_Title", read_when = { Won = false, Closed = ["yes", "y"] } },\n'
        "]\n"
    )
    mapping = load_mapping(str(write(tmp_path, text)))
    both = {"Won_Title": "W", "Lost_Title": "L"}
    assert mapping.to_lead({**both, "Won": True}).values["job_title"] == "W"
    assert mapping.to_lead({**both, "Won": False, "Closed": "Y"}).values["job_title"] == "L"
    assert mapping.to_lead({**both, "Won": False, "Closed": ""}).values["job_title"] is None
    assert {"Won", "Closed"} <= mapping.system_fields()


@pytest.mark.parametrize("when", ["{}", '"Won"', "{ Won = { x = 1 } }"])
def test_a_malformed_read_when_is_a_load_error(tmp_path: Path, when: str) -> None:
    error = load_error(tmp_path, f'[fields]\njob_title = {{ field = "T", read_when = {when} }}\n')
    assert "read_when" in str(error)


def test_composite_read_rules_come_first(tmp_path: Path) -> None:
    text = (
        '[fields.stage]\nfields = ["Status", "Converted"]\n'
        f"values = {{ {STAGES.replace(chr(10), ', ')} }}\n"
        '[[fields.stage.read]]\nwhen = { Converted = true }\nvalue = "sql"\n'
    )
    mapping = load_mapping(str(write(tmp_path, text)))
    assert mapping.to_lead({"Status": "S_lead", "Converted": True}).values["stage"] == "sql"
    assert mapping.to_lead({"Status": "S_mql", "Converted": False}).values["stage"] == "mql"


def test_e164_transform_uses_the_mapped_country(tmp_path: Path) -> None:
    text = '[fields]\ncountry = "Country"\nphone = { field = "Phone", transform = "e164" }\n'
    mapping = load_mapping(str(write(tmp_path, text)))
    draft = mapping.to_lead({"Country": "United Kingdom", "Phone": "020 7946 0958"})
    assert draft.values["phone"] == "+442079460958"


# --- build_lead ---------------------------------------------------------------------------------


def test_build_lead_names_a_bad_email_and_its_system_field(basic) -> None:  # type: ignore[no-untyped-def]
    lead, problems = build_lead(basic.to_lead({"Email": "not-an-email"}, external_id="7"))
    assert lead is None
    [problem] = problems
    assert (problem.field, problem.system_field, problem.record) == ("email", "Email", "7")
    assert "not a valid email address" in problem.reason


def test_build_lead_takes_extra_fields() -> None:
    lead, problems = build_lead(
        LeadDraft(values={"email": "a@b.io", "custom": {"x": 1}}), is_test=True, custom={"y": 2}
    )
    assert problems == [] and lead is not None
    assert lead.is_test and lead.custom == {"x": 1, "y": 2}


# --- writes -------------------------------------------------------------------------------------


def test_to_system_writes_mapped_fields_with_defaults(basic) -> None:  # type: ignore[no-untyped-def]
    lead = Lead(email="a@b.io", employees=40, channel="paid_social", custom={"segment": "smb"})
    assert basic.to_system(lead) == {
        "Email": "a@b.io",
        "LastName": "[not provided]",
        "Employees": 40,
        "Segment__c": "smb",
        "Source": "Ads",
    }


def test_to_system_restricted_to_fields_and_blanks(basic) -> None:  # type: ignore[no-untyped-def]
    lead = Lead(email="a@b.io")
    assert basic.to_system(lead, fields=["email", "employees"]) == {"Email": "a@b.io"}
    assert basic.to_system(lead, fields=["employees"], include_blank=True) == {"Employees": None}


def test_to_system_rejects_unmapped_field_names(basic) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="not mapped"):
        basic.to_system(Lead(), fields=["tier"])


def test_to_system_value_without_map_entry_is_a_record_error(basic) -> None:  # type: ignore[no-untyped-def]
    lead = Lead(email="a@b.io", channel="email")
    with pytest.raises(MappingError) as info:
        basic.to_system(lead)
    [problem] = info.value.problems
    assert (problem.field, problem.system_field, problem.record) == ("channel", "Source", lead.key)
    assert "no value in the value map" in problem.reason


def test_out_only_and_in_only_fields(tmp_path: Path) -> None:
    text = (
        '[fields]\nemail = { field = "E", direction = "out" }\n'
        'company = { field = "C", direction = "in" }\n'
    )
    mapping = load_mapping(str(write(tmp_path, text)))
    assert mapping.to_lead({"E": "a@b.io", "C": "Acme"}).values == {"company": "Acme"}
    assert mapping.to_system(Lead(email="a@b.io", company="Acme")) == {"E": "a@b.io"}
    assert mapping.system_fields() == {"E", "C"}


def test_owner_both_ways(tmp_path: Path) -> None:
    mapping = load_mapping(str(write(tmp_path, '[fields]\nowner = "OwnerId"\n')))
    assert mapping.to_lead({"OwnerId": "005A"}).values["owner"] == {"id": "005A"}
    assert mapping.to_system(Lead(owner=Owner(id="005A", email="o@x.io"))) == {"OwnerId": "005A"}


# --- validate_against ---------------------------------------------------------------------------


def schema(*fields: FieldInfo) -> Schema:
    return Schema("Lead", {f.name: f for f in fields})


def info(name: str, **kw: object) -> FieldInfo:
    return FieldInfo(name=name, label=name, type="string", **kw)  # type: ignore[arg-type]


FULL = (
    info("Email"),
    info("LastName", required=True),
    info("Employees"),
    info("Segment__c"),
    info("Source", picklist_values=("Ads", "Event")),
)


def test_validate_against_a_matching_schema(basic) -> None:  # type: ignore[no-untyped-def]
    assert basic.validate_against(schema(*FULL)) == []


def test_validate_against_missing_field(basic) -> None:  # type: ignore[no-untyped-def]
    problems = basic.validate_against(schema(*FULL[:3], info("Segment_c"), FULL[4]))
    [problem] = problems
    assert (problem.field, problem.system_field) == ("custom.segment", "Segment__c")
    assert "did you mean 'Segment_c'" in problem.reason


def test_validate_against_read_only(basic) -> None:  # type: ignore[no-untyped-def]
    problems = basic.validate_against(
        schema(*FULL[:2], info("Employees", read_only=True), *FULL[3:])
    )
    assert [(p.field, p.reason) for p in problems] == [
        ("employees", "is read-only but the mapping writes it")
    ]


def test_validate_against_picklist_value_not_allowed(basic) -> None:  # type: ignore[no-untyped-def]
    problems = basic.validate_against(schema(*FULL[:4], info("Source", picklist_values=("Ads",))))
    assert [(p.field, p.value) for p in problems] == [("channel", "Event")]


def test_validate_against_required_without_mapping(basic) -> None:  # type: ignore[no-untyped-def]
    problems = basic.validate_against(schema(*FULL, info("Company", required=True)))
    assert [p.system_field for p in problems] == ["Company"]
    assert "no mapping writes it" in problems[0].reason


def test_validate_against_required_without_default(tmp_path: Path) -> None:
    mapping = load_mapping(str(write(tmp_path, 'object = "Lead"\n[fields]\ncompany = "Company"\n')))
    problems = mapping.validate_against(schema(info("Company", required=True)))
    assert [p.field for p in problems] == ["company"] and "give it a default" in problems[0].reason


def test_validate_against_other_object(basic) -> None:  # type: ignore[no-untyped-def]
    problems = basic.validate_against(Schema("Contact", {f.name: f for f in FULL}))
    assert [p.field for p in problems] == ["object"]


# --- forms --------------------------------------------------------------------------------------


def test_form_mapping_merges_over_the_source_default(tmp_path: Path) -> None:
    path = write(tmp_path, '[fields]\nemail_opt_in = "consent"\ncompany = "org"\n', "f.toml")
    mapping = load_form_mapping(path, source="webform")
    draft = mapping.to_lead(
        {"email": "a@b.io", "org": "Acme", "company": "ignored", "consent": "on"}
    )
    assert draft.values == {"email": "a@b.io", "company": "Acme", "email_opt_in": "on"}
    lead, problems = build_lead(draft)
    assert problems == [] and lead is not None and lead.email_opt_in is True


def test_form_mapping_only_reads(tmp_path: Path) -> None:
    path = write(tmp_path, '[fields]\nemail = { field = "e", direction = "out" }\n', "f.toml")
    with pytest.raises(MappingError, match="only read"):
        load_form_mapping(path, source="webform")


def test_form_mapping_rejects_object(tmp_path: Path) -> None:
    path = write(tmp_path, 'object = "Lead"\n[fields]\nemail = "e"\n', "f.toml")
    with pytest.raises(MappingError, match="unknown top-level key"):
        load_form_mapping(path, source="webform")


def test_problem_text_names_file_line_field_and_reason() -> None:
    problem = Problem("email", "bad", system_field="Email", value="x", file=Path("m.toml"), line=4)
    assert str(problem) == "m.toml:4: email (Email): bad [value 'x']"
