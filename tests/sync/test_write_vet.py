"""LeadWriter.vet: the values it passes without a check are those the check would pass."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.connectors.base import FieldInfo, Schema
from leadrelay.mappings.engine import Problem, load_mapping
from leadrelay.sync.write import LeadWriter, Vetted


class _Destination:
    batch_size = 200


SCHEMA = Schema(
    "Lead",
    {
        "Email": FieldInfo("Email", "Email", "email", required=True),
        "LastName": FieldInfo("LastName", "Last Name", "string", required=True),
        "Company": FieldInfo("Company", "Company", "string", required=True),
        "Title": FieldInfo("Title", "Title", "string"),
        "NumberOfEmployees": FieldInfo("NumberOfEmployees", "Employees", "int"),
        "Status": FieldInfo(
            "Status", "Status", "picklist", required=True, picklist_values=("Open", "MQL")
        ),
        "Lead_Tier__c": FieldInfo("Lead_Tier__c", "Tier", "picklist", picklist_values=()),
        "Country": FieldInfo("Country", "Country", "string", read_only=True),
        "LeadRelay_Key__c": FieldInfo("LeadRelay_Key__c", "Key", "string", unique=True),
    },
)
#: Written by the mapping; City is not in the schema.
SYSTEM_FIELDS = [*SCHEMA.fields, "City"]

values = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["", " ", "Open", "MQL", "a\x00b", "\ud800", "é", "Acme"]),
    st.integers(-3, 3),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.sampled_from(["Open", "x"]), max_size=2),
)


MAPPING = load_mapping("salesforce")


def _writer() -> LeadWriter:
    return LeadWriter(_Destination(), MAPPING, schema=lambda: SCHEMA)  # type: ignore[arg-type]


def _checked_one_by_one(writer: LeadWriter, fields: dict[str, Any], creating: bool) -> Vetted:
    """What vet gives when every value goes through the writer's full check."""
    vetted = Vetted(dict(fields))
    for system_field, value in fields.items():
        reason = writer._allowed(system_field, value)
        if reason is not None:
            writer._refuse(
                vetted,
                name=writer.canonical_of(system_field),
                system_field=system_field,
                value=value,
                reason=reason,
                record="k",
            )
    if creating:
        for system_field in SCHEMA.required:
            name = writer.canonical_of(system_field)
            info = SCHEMA.fields[system_field]
            value = vetted.fields.get(system_field)
            if info.read_only or name is None:
                continue
            if value is None or (isinstance(value, str) and not value.strip()):
                vetted.fatal.append(
                    Problem(
                        name,
                        f"Lead.{system_field} is required: no value and no default in the mapping",
                        system_field=system_field,
                        record="k",
                    )
                )
    return vetted


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(SYSTEM_FIELDS), values, max_size=len(SYSTEM_FIELDS)),
    creating=st.booleans(),
)
def test_vet_finds_what_checking_every_value_finds(fields: dict[str, Any], creating: bool) -> None:
    writer = _writer()
    vetted = writer.vet("k", dict(fields), creating=creating)
    expected = _checked_one_by_one(_writer(), fields, creating)
    assert vetted.fields == expected.fields
    assert vetted.problems == expected.problems
    assert vetted.fatal == expected.fatal
