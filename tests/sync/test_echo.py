"""The write-back pass's echo check: a record read back as this run wrote it is known for an
echo without mapping it, and nothing else is (an edit landing between the write and the read
is still carried back)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from leadrelay.config import FlowConfig
from leadrelay.mappings.engine import Mapping, load_mapping
from leadrelay.sync import engine as engine_module
from leadrelay.sync.engine import FlowStats, SyncEngine, fingerprint
from leadrelay.sync.state import StateStore
from tests.sync.fake_crm import FakeCrm, FakeHub, FakeSystem

MAPPINGS = {kind: load_mapping(kind) for kind in ("hubspot", "salesforce", "zoho")}


def _project_mapping() -> Mapping:
    """Salesforce's mapping with a default read for a blank title and a nested custom field."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mappings" / "salesforce.toml"
        path.parent.mkdir()
        path.write_text(
            "[fields]\n"
            'job_title = { field = "Title", transform = "default", args = { value = "n/a" } }\n'
            '"custom.tier" = "Tier__c"\n',
            encoding="utf-8",
        )
        return load_mapping("salesforce", project_dir=Path(folder))


#: What the exactness test maps: the connectors' own mappings and a project's.
EVERY_MAPPING = {**MAPPINGS, "project": _project_mapping()}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        yield opened


@pytest.fixture
def hub() -> FakeSystem:
    return FakeSystem("hs", "email", "contacts", set(MAPPINGS["hubspot"].system_fields()))


@pytest.fixture
def crm() -> FakeSystem:
    fields = set(MAPPINGS["salesforce"].system_fields())
    return FakeSystem("00Q", "Email", "Lead", fields, required={"LastName", "Company"})


def _sync(store: StateStore, hub: FakeSystem, crm: FakeSystem) -> FlowStats:
    engine = SyncEngine(
        store,
        FlowConfig(name="hs-sf", source="hs", destination="sf", two_way=True),
        source=FakeHub(None, "hs", hub),
        destination=FakeCrm(None, "sf", crm),
        source_mapping=MAPPINGS["hubspot"],
        destination_mapping=MAPPINGS["salesforce"],
    )
    return engine.run()


def _contact(n: int) -> dict[str, Any]:
    return {
        "email": f"lead{n}@acme{n}.io",
        "firstname": f"Ann{n}",
        "lastname": f"Lee{n}",
        "company": f"Acme {n}",
        "phone": f"+1415555{n:04d}",
        "lifecyclestage": "marketingqualifiedlead",
        "hs_lead_status": "NEW",
    }


def _edit_before_the_write_back(
    monkeypatch: pytest.MonkeyPatch, crm: FakeSystem, values: dict[str, Any]
) -> None:
    """Sales changes every CRM record just before the write-back pass first reads the CRM."""
    read = FakeCrm.read_changes
    edited: list[bool] = []

    def read_after_an_edit(self: FakeCrm, cursor: str | None) -> Iterator[Any]:
        if not edited and crm.records:
            edited.append(True)
            for crm_id in list(crm.records):
                crm.put(values, crm_id)
        yield from read(self, cursor)

    monkeypatch.setattr(FakeCrm, "read_changes", read_after_an_edit)


def _echo_verdicts(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    verdicts: list[bool] = []
    reads_as = engine_module._reads_as

    def told(*args: Any) -> bool:
        verdicts.append(reads_as(*args))
        return verdicts[-1]

    monkeypatch.setattr(engine_module, "_reads_as", told)
    return verdicts


def test_records_read_back_as_written_are_echoes_told_without_mapping(
    monkeypatch: pytest.MonkeyPatch, store: StateStore, hub: FakeSystem, crm: FakeSystem
) -> None:
    verdicts = _echo_verdicts(monkeypatch)
    for n in range(12):
        hub.put(_contact(n))
    stats = _sync(store, hub, crm)
    assert (stats.created, stats.written_back, stats.unchanged) == (12, 0, 12)
    assert verdicts == [True] * 12


def test_a_rejection_set_between_the_write_and_its_read_back_is_written_back(
    monkeypatch: pytest.MonkeyPatch, store: StateStore, hub: FakeSystem, crm: FakeSystem
) -> None:
    verdicts = _echo_verdicts(monkeypatch)
    hub_id = hub.put(_contact(1))
    _edit_before_the_write_back(
        monkeypatch, crm, {"Status": "Closed - Not Converted", "Rejection_Reason__c": "Bad Fit"}
    )
    stats = _sync(store, hub, crm)
    assert (stats.created, stats.written_back) == (1, 1)
    assert verdicts == [False]
    assert hub.records[hub_id]["hs_lead_status"] == "UNQUALIFIED"
    assert hub.records[hub_id]["rejection_reason"] == "bad_fit"


def test_a_value_changed_by_sales_between_the_write_and_its_read_back_is_written_back(
    monkeypatch: pytest.MonkeyPatch, store: StateStore, hub: FakeSystem, crm: FakeSystem
) -> None:
    hub_id = hub.put(_contact(1))
    _edit_before_the_write_back(monkeypatch, crm, {"Phone": "+14155550999"})
    stats = _sync(store, hub, crm)
    assert (stats.created, stats.written_back) == (1, 1)
    assert hub.records[hub_id]["phone"] == "+14155550999"


def test_a_value_cleared_by_sales_between_the_write_and_its_read_back_is_read_as_news(
    monkeypatch: pytest.MonkeyPatch, store: StateStore, hub: FakeSystem, crm: FakeSystem
) -> None:
    verdicts = _echo_verdicts(monkeypatch)
    hub.put(_contact(1))
    _edit_before_the_write_back(monkeypatch, crm, {"FirstName": None})
    forward: list[str] = []
    reads_as = engine_module._reads_as

    def told(raw: Any, *args: Any) -> bool:
        forward.append(store.get_fingerprints("hs-sf/sf", [raw["id"]])[raw["id"]])
        return reads_as(raw, *args)

    monkeypatch.setattr(engine_module, "_reads_as", told)
    _sync(store, hub, crm)
    assert verdicts == [False]
    [crm_id] = crm.records
    # Read as news: its fingerprint is now of what sales left, not of what was written.
    assert store.get_fingerprints("hs-sf/sf", [crm_id])[crm_id] != forward[0]


# -- exactness: told without mapping == told by mapping ---------------------------------------

#: Values that move mappings: value-map and read-rule values, blanks, numbers of every type
#: (0, 0.0, -0.0 and False read apart), Zoho's placeholder.
VALUES = st.sampled_from(
    [
        None,
        "",
        " ",
        "-None-",
        "true",
        "false",
        True,
        False,
        0,
        1,
        0.0,
        -0.0,
        1.0,
        "Open - Not Contacted",
        "Closed - Not Converted",
        "Closed - Converted",
        "NEW",
        "UNQUALIFIED",
        "marketingqualifiedlead",
        "customer",
        "Web",
        "Bad Fit",
        "US",
        "GB",
        "+14155550100",
        "02079460000",
        "a@b.io",
        "2026-01-01T00:00:00Z",
        "51-200",
    ]
)


def _fingerprint_of(mapping: Mapping, raw: dict[str, Any], fields: list[str]) -> str:
    draft = mapping.to_lead(raw, connection="c", external_id="r1", only=frozenset(fields))
    return fingerprint(draft.values, fields)


def _fields_of(mapping: Mapping) -> list[str]:
    """The mapping's fields a fingerprint may hold (no head of a nested field)."""
    heads = {name.partition(".")[0] for name in mapping.fields if "." in name}
    return sorted(name for name in mapping.fields if name not in heads)


@st.composite
def written_and_read(
    draw: st.DrawFn,
) -> tuple[str, list[str], dict[str, Any], dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(EVERY_MAPPING)))
    every = _fields_of(EVERY_MAPPING[kind])
    fields = sorted(draw(st.sets(st.sampled_from(every), min_size=1)))
    keys = sorted(EVERY_MAPPING[kind].read_keys)
    written = draw(st.dictionaries(st.sampled_from(keys), VALUES, max_size=12))
    read = dict(written)
    # what the system adds (defaults, None for what it does not hold) or changes
    read.update(draw(st.dictionaries(st.sampled_from(keys), VALUES, max_size=6)))
    if written:
        # a value the write left changed to another (a number's sign or type included)
        read[draw(st.sampled_from(sorted(written)))] = draw(VALUES)
    for name in draw(st.lists(st.sampled_from(keys), max_size=3)):
        read.pop(name, None)
    read.update(dict.fromkeys(draw(st.lists(st.sampled_from(keys), max_size=12))))
    read["not_read_by_the_mapping"] = draw(VALUES)
    return kind, fields, written, read


@settings(max_examples=400, deadline=None)
@given(written_and_read())
# a region reads a number as its text, so -0.0 is not 0.0 there
@example(("salesforce", ["region"], {"State": 0.0}, {"State": -0.0}))
# a region reads through the country, which this fingerprint leaves out
@example(
    (
        "salesforce",
        ["region"],
        {"State": "California", "Country": "US"},
        {"State": "California", "Country": "GB"},
    )
)
# a value no standard-list map covers is kept in custom.<field>_raw, which this one holds
@example(
    (
        "salesforce",
        ["custom.industry_raw"],
        {"Industry": "Banking"},
        {"Industry": "Not An Industry"},
    )
)
def test_an_echo_told_without_mapping_maps_to_the_same_fingerprint(
    case: tuple[str, list[str], dict[str, Any], dict[str, Any]],
) -> None:
    kind, fields, written, read = case
    mapping = EVERY_MAPPING[kind]
    if engine_module._reads_as(read, written, mapping, frozenset(fields)):
        assert _fingerprint_of(mapping, read, fields) == _fingerprint_of(mapping, written, fields)


@pytest.mark.parametrize("kind", sorted(MAPPINGS))
def test_none_where_nothing_was_written_reads_as_written(kind: str) -> None:
    mapping = MAPPINGS[kind]
    written = dict.fromkeys(sorted(mapping.read_keys)[:3], "x")
    read = {**written, **dict.fromkeys(mapping.none_reads_absent - written.keys())}
    assert engine_module._reads_as(read, written, mapping, frozenset(_fields_of(mapping)))


def test_a_none_read_through_a_default_is_not_nothing() -> None:
    mapping = EVERY_MAPPING["project"]
    assert "Title" in mapping.read_keys - mapping.none_reads_absent
    assert not engine_module._reads_as(
        {"Email": "a@b.io", "Title": None}, {"Email": "a@b.io"}, mapping, {"job_title"}
    )
