"""The synthetic lead: a test, valid for the destination's live picklists, every field used."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadrelay.config import Config, parse_config
from leadrelay.connectors.base import FieldInfo, Schema
from leadrelay.mappings.engine import load_form_mapping, load_mapping
from leadrelay.validation.synthetic import (
    SyntheticError,
    SyntheticLead,
    build_synthetic,
    validation_email,
)


def make_config(tmp_path: Path, form_mapping: str, utm: str = "") -> Config:
    mapping = tmp_path / "form.toml"
    mapping.write_text(form_mapping, encoding="utf-8")
    data = {
        "connections": {
            "sf": {
                "kind": "salesforce",
                "auth": "password",
                "instance_url": "https://example.my.salesforce.com",
                "login_url": "https://login.salesforce.com",
                "username": "u",
                "password": "p",
                "consumer_key": "k",
                "consumer_secret": "s",
            }
        },
        "forms": {
            "web": {
                "source": "webform",
                "destination": "sf",
                "mapping": str(mapping),
                "secret": "x",
                "test_email_domain": "Tests.Example.org",
            }
        },
    }
    if utm:
        data["forms"]["web"]["default_utm"] = {"utm_source": utm, "utm_medium": "email"}
    return parse_config(data, tmp_path / "leadrelay.toml", {}, {})


def schema(**picklists: tuple[str, ...]) -> Schema:
    mapping = load_mapping("salesforce")
    names = mapping.system_fields()
    fields = {
        name: FieldInfo(
            name,
            name,
            "picklist" if name in picklists else "string",
            picklist_values=picklists.get(name),
        )
        for name in names
    }
    return Schema("Lead", fields)


def build(
    tmp_path: Path, form_mapping: str = "[fields]\n", utm: str = "", **picklists: tuple[str, ...]
) -> SyntheticLead:
    config = make_config(tmp_path, form_mapping, utm)
    form = config.forms["web"]
    return build_synthetic(
        "web",
        form,
        load_form_mapping(form.mapping, source="webform"),
        load_mapping("salesforce"),
        schema(**picklists),
        run_id="run42",
    )


def test_email_is_under_the_test_domain_with_the_run_id() -> None:
    assert (
        validation_email("abc123", "Tests.Example.org") == "leadrelay-test+abc123@tests.example.org"
    )


def test_lead_is_marked_as_a_test(tmp_path: Path) -> None:
    synthetic = build(tmp_path)

    assert synthetic.lead.is_test
    assert synthetic.fields["email"] == "leadrelay-test+run42@tests.example.org"


def test_every_mapped_form_field_gets_a_value(tmp_path: Path) -> None:
    synthetic = build(tmp_path, '[fields]\ncustom.segment = "segment"\n')

    mapping = load_form_mapping(
        make_config(tmp_path, '[fields]\ncustom.segment = "segment"\n').forms["web"].mapping,
        source="webform",
    )
    primary = {fmap.specs[0].system_field for fmap in mapping.fields.values()}
    assert primary <= set(synthetic.fields)
    assert synthetic.lead.custom["segment"] == "test-segment-run42"


def test_picklist_value_comes_from_the_live_schema(tmp_path: Path) -> None:
    synthetic = build(tmp_path, Industry=("Banking", "Energy"))

    assert synthetic.expected["Industry"] == "Banking"


def test_form_utms_are_carried(tmp_path: Path) -> None:
    synthetic = build(tmp_path, utm="newsletter")

    assert synthetic.utm == {"utm_source": "newsletter", "utm_medium": "email"}
    assert synthetic.lead.channel is not None
    assert synthetic.lead.channel.value == "email"
    assert synthetic.page_url is not None and "utm_source=newsletter" in synthetic.page_url


def test_expected_values_follow_the_destination_value_maps(tmp_path: Path) -> None:
    synthetic = build(tmp_path, utm="newsletter")

    assert synthetic.checked["channel"] == "LeadSource"
    assert synthetic.expected["LeadSource"] == "Web"


def test_form_value_map_reads_back(tmp_path: Path) -> None:
    form_mapping = '[fields.industry]\nfield = "sector"\nvalues_in = { "fin" = "banking" }\n'

    synthetic = build(tmp_path, form_mapping, Industry=("Banking",))

    assert synthetic.fields["sector"] == "fin"
    assert synthetic.lead.industry == "banking"


def test_form_that_cannot_read_its_own_lead_is_refused(tmp_path: Path) -> None:
    # a transform the synthetic value cannot pass through: email read as a number
    form_mapping = '[fields]\nemail = { field = "mail", transform = "int" }\n'

    with pytest.raises(SyntheticError, match="email"):
        build(tmp_path, form_mapping)
