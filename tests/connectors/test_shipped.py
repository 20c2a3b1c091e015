"""The connectors' reading of the mapping files leadrelay ships (leadrelay.connectors.shipped)."""

from __future__ import annotations

import pytest

from leadrelay.connectors.shipped import entry_system_fields, shipped_mapping_fields
from leadrelay.mappings.engine import load_mapping


@pytest.mark.parametrize("kind", ["hubspot", "salesforce", "zoho"])
def test_every_field_the_shipped_mapping_reads_or_writes_is_named(kind: str) -> None:
    # The mapping engine's own list is what the connectors must read by default.
    assert set(shipped_mapping_fields(kind)) == load_mapping(kind).system_fields()


def test_an_array_entry_names_each_alternative_and_its_read_when_fields() -> None:
    entry = [
        {"field": "Win__c", "read_when": {"IsWon": "true"}},
        {"fields": ["Loss__c", "Other__c"], "read_when": {"IsClosed": "true", "IsWon": "false"}},
        "Plain__c",
    ]
    assert entry_system_fields(entry) == [
        "Win__c",
        "IsWon",
        "Loss__c",
        "Other__c",
        "IsClosed",
        "IsWon",
        "Plain__c",
    ]


def test_a_kind_without_a_shipped_mapping_names_nothing() -> None:
    assert shipped_mapping_fields("no-such-kind") == ()
