"""Tests for the connector contract, its data types and the registry (connectors/base.py)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from leadrelay.connectors import base
from leadrelay.connectors.base import (
    Capability,
    Connector,
    ConnectorNotFound,
    FieldInfo,
    Health,
    LookupKey,
    LookupKind,
    Page,
    RawRecord,
    Schema,
    UpsertInput,
    WriteOutcome,
    WriteResult,
    available_kinds,
    connector_class,
    normalize_email,
    register,
)
from leadrelay.connectors.errors import Rejected, UnsupportedCapability
from leadrelay.connectors.policy import ManualClock, ResponseInfo


class ReadOnlyConnector(Connector[dict[str, str]]):
    """A connector that only reads and looks up, from memory."""

    kind = "memory"
    capabilities = frozenset({Capability.READ_INCREMENTAL, Capability.LOOKUP})
    batch_size = 2

    def __init__(self, settings: dict[str, str], name: str) -> None:
        super().__init__(settings, name)
        self.closed = False
        self.records = [{"email": "ana@example.com", "id": "1"}]

    def read_changes(self, cursor: str | None) -> Iterator[Page]:
        yield Page(self.records, "1")

    def lookup(
        self, emails: Sequence[str] | None = None, ids: Sequence[str] | None = None
    ) -> dict[str, RawRecord]:
        wanted = {normalize_email(e) for e in emails or ()}
        return {r["email"]: r for r in self.records if r["email"] in wanted}

    def health(self) -> Health:
        return Health(ok=True, system=self.kind, instance=None, credentials_valid=True)

    def close(self) -> None:
        self.closed = True


class NotAConnector:
    kind = "nope"


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_registered", {})
    monkeypatch.setattr(base, "_loaded", {})


@pytest.fixture
def connector() -> ReadOnlyConnector:
    return ReadOnlyConnector({}, "crm")


def fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, entries: Mapping[str, str]
) -> list[dict[str, Any]]:
    asked: list[dict[str, Any]] = []

    def entry_points(**kwargs: Any) -> list[importlib.metadata.EntryPoint]:
        asked.append(kwargs)
        return [
            importlib.metadata.EntryPoint(name=name, value=value, group=kwargs["group"])
            for name, value in entries.items()
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return asked


# --------------------------------------------------------------------------------------------
# Capabilities and the contract


def test_capabilities_are_strings() -> None:
    assert [c.value for c in Capability] == [
        "read_incremental",
        "lookup",
        "upsert",
        "update",
        "delete",
        "describe",
        "capture",
    ]
    assert Capability("upsert") == "upsert"


def test_require_names_the_connection_and_what_it_supports(connector: ReadOnlyConnector) -> None:
    with pytest.raises(UnsupportedCapability, match=r"'crm' \(memory\) cannot upsert"):
        connector.require(Capability.UPSERT)


def test_require_passes_for_a_declared_capability(connector: ReadOnlyConnector) -> None:
    connector.require(Capability.LOOKUP)
    assert connector.supports(Capability.LOOKUP)


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("upsert", ([UpsertInput("k", {"email": "a@b.c"})],)),
        ("update", ({"1": {"x": 1}},)),
        ("delete", (["1"],)),
        ("describe", ()),
    ],
)
def test_undeclared_methods_raise_unsupported(
    connector: ReadOnlyConnector, method: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(UnsupportedCapability):
        getattr(connector, method)(*args)


def test_declaring_a_capability_without_its_method_is_refused() -> None:
    class Liar(ReadOnlyConnector):
        kind = "liar"
        capabilities = frozenset({Capability.UPSERT})

    with pytest.raises(TypeError, match="declares upsert"):
        Liar({}, "x")


def test_a_connector_must_name_its_kind() -> None:
    class Nameless(ReadOnlyConnector):
        kind = ""

    with pytest.raises(TypeError, match="must set kind"):
        Nameless({}, "x")


def test_api_calls_are_counted_by_its_policy(connector: ReadOnlyConnector) -> None:
    clock = ManualClock()
    policy = connector.call_policy(sleep=clock.sleep, clock=clock.now)
    answers = iter([ResponseInfo(status=503), ResponseInfo(status=200)])
    policy.execute(lambda: next(answers), to_info=lambda r: r, idempotent=True, describe="read")
    assert connector.api_calls == 2


def test_context_manager_closes(connector: ReadOnlyConnector) -> None:
    with connector as entered:
        assert entered is connector
    assert connector.closed


# --------------------------------------------------------------------------------------------
# Data types


@pytest.mark.parametrize(
    ("outcome", "error"),
    [(WriteOutcome.FAILED, None), (WriteOutcome.CREATED, Rejected("bad", system="zoho"))],
)
def test_write_result_error_matches_outcome(outcome: WriteOutcome, error: Rejected | None) -> None:
    with pytest.raises(ValueError, match="lead-1"):
        WriteResult("lead-1", None, outcome, error)


def test_failed_write_result_carries_the_rejection() -> None:
    error = Rejected("required field not found", system="zoho", field="Last_Name")
    result = WriteResult.failed("lead-1", error)
    assert (result.ok, result.outcome, result.error) == (False, WriteOutcome.FAILED, error)


def test_lookup_key_normalises_email() -> None:
    assert LookupKey.by_email("  Ana@Example.COM ") == LookupKey(
        LookupKind.EMAIL, "ana@example.com"
    )


@pytest.mark.parametrize("factory", [LookupKey.by_email, LookupKey.by_id])
def test_lookup_key_refuses_blank(factory: Any) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        factory(" " if factory is LookupKey.by_email else "")


SCHEMA = Schema(
    "Lead",
    {
        "LastName": FieldInfo("LastName", "Last Name", "string", required=True),
        "Status": FieldInfo(
            "Status", "Status", "picklist", picklist_values=("Open", "Working", "Closed")
        ),
        "Interests": FieldInfo(
            "Interests", "Interests", "multipicklist", picklist_values=("a", "b"), multi_select=True
        ),
        "Id": FieldInfo("Id", "Record ID", "id", read_only=True, unique=True),
        "Notes": FieldInfo("Notes", "Notes", "textarea"),
    },
)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("Status", "Open", True),
        ("Status", "Archived", False),
        ("Status", None, True),
        ("LastName", "", False),
        ("LastName", "Silva", True),
        ("Interests", "a;b", True),
        ("Interests", "a;c", False),
        ("Interests", ["a", "b"], True),
        ("Id", "00Q1", False),
        ("Notes", "anything", True),
        ("Missing", "x", False),
    ],
)
def test_schema_allows(name: str, value: Any, allowed: bool) -> None:
    assert SCHEMA.allows(name, value) is allowed


def test_schema_field_names_the_object_when_missing() -> None:
    with pytest.raises(KeyError, match="Lead has no field 'Email'"):
        SCHEMA.field("Email")


def test_schema_lists_required_fields_and_picklists() -> None:
    assert SCHEMA.required == ("LastName",)
    assert SCHEMA.picklists == {"Status": ("Open", "Working", "Closed"), "Interests": ("a", "b")}


# --------------------------------------------------------------------------------------------
# Registry


def test_registered_kind_is_found() -> None:
    register("memory", ReadOnlyConnector)
    assert connector_class("memory") is ReadOnlyConnector
    assert "memory" in available_kinds()


def test_register_refuses_a_non_connector() -> None:
    with pytest.raises(TypeError, match="not a Connector subclass"):
        register("nope", NotAConnector)  # type: ignore[arg-type]


def test_builtin_is_imported_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        base.BUILTIN_CONNECTORS, "memory", "tests.connectors.test_base:ReadOnlyConnector"
    )
    assert connector_class("memory") is ReadOnlyConnector


def test_missing_builtin_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        base.BUILTIN_CONNECTORS, "ghost", "leadrelay.connectors.ghost_system:GhostConnector"
    )
    register("memory", ReadOnlyConnector)
    with pytest.raises(ConnectorNotFound) as caught:
        connector_class("ghost")
    assert str(caught.value).startswith("connector kind 'ghost' is not installed; known: ")
    assert "memory" in str(caught.value)


def test_unknown_kind_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, {"acme": "tests.connectors.test_base:ReadOnlyConnector"})
    with pytest.raises(ConnectorNotFound, match=r"'pipedrive' is not installed; known: .*acme"):
        connector_class("pipedrive")


def test_entry_point_kind_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_entry_points(monkeypatch, {"acme": "tests.connectors.test_base:ReadOnlyConnector"})
    assert connector_class("acme") is ReadOnlyConnector
    assert asked[0] == {"group": "leadrelay.connectors"}
    assert "acme" in available_kinds()


def test_entry_point_that_is_not_a_connector_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, {"nope": "tests.connectors.test_base:NotAConnector"})
    with pytest.raises(TypeError, match=r"entry point .* is not a Connector subclass"):
        connector_class("nope")


def test_builtin_without_its_class_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        base.BUILTIN_CONNECTORS, "broken", "tests.connectors.test_base:DoesNotExist"
    )
    with pytest.raises(ConnectorNotFound, match="has no DoesNotExist"):
        connector_class("broken")
