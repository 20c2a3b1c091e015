"""The contract test suite every connector passes against the sandbox.

A connector's test module subclasses :class:`ConnectorContract` (pytest collects it through the
``Test`` subclass only) and supplies a ``connector`` fixture plus a few facts about its system::

    class TestZohoContract(ConnectorContract):
        email_field = "Email"

        @pytest.fixture
        def connector(self, sandbox: dict[str, str]) -> Iterator[ZohoConnector]:
            settings = ZohoConnection(kind="zoho", client_id=sandbox["ZOHO_CLIENT_ID"], ...)
            with ZohoConnector(settings, "zoho") as connector:
                yield connector

        def new_record(self, email: str) -> RawRecord:
            return {"Email": email, "Last_Name": "Silva", "Company": "Acme"}

        def changed_fields(self) -> RawRecord:
            return {"Last_Name": "Souza"}

        def invalid_value(self) -> tuple[str, Any]:
            return "Lead_Status", "Not a status"

        def record_id(self, record: RawRecord) -> str:
            return str(record["id"])

        def modified_at(self, record: RawRecord) -> datetime:
            return datetime.fromisoformat(record["Modified_Time"])

The ``sandbox`` fixture here starts one sandbox per test class and yields its environment
(``LEADRELAY_CA_BUNDLE``, ``HUBSPOT_BASE_URL`` …, DESIGN §10); a subclass may override it
(class scope: declare it ``@pytest.fixture(scope="class")`` over ``@classmethod``).
Tests of a capability the connector does not declare are skipped, and undeclared methods must
raise :class:`UnsupportedCapability`.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest

from leadrelay.connectors.base import (
    CAPABILITY_METHODS,
    Capability,
    Connector,
    RawRecord,
    UpsertInput,
    WriteOutcome,
    normalize_email,
)
from leadrelay.connectors.errors import Rejected, UnsupportedCapability

#: More pages than any contract test writes; reaching it means a paginator loops.
MAX_PAGES = 500

_CALL_ARGS: dict[str, tuple[Any, ...]] = {
    "read_changes": (None,),
    "lookup": (["nobody@example.com"],),
    "upsert": ([],),
    "update": ({},),
    "delete": ([],),
    "describe": (),
}


def unique_email(label: str = "lead") -> str:
    """An email no other test uses (tests share one sandbox)."""
    return f"contract-{label}-{uuid.uuid4().hex[:12]}@example.com"


def read_all(connector: Connector[Any], cursor: str | None) -> tuple[list[RawRecord], str | None]:
    """Every record ``read_changes(cursor)`` yields, and the last cursor it gave."""
    records: list[RawRecord] = []
    last = cursor
    for pages, page in enumerate(connector.read_changes(cursor), start=1):
        assert pages <= MAX_PAGES, f"read_changes gave more than {MAX_PAGES} pages: it loops"
        records.extend(page.records)
        if page.cursor is not None:
            last = page.cursor
    return records, last


class ConnectorContract(ABC):
    """Behaviour every connector must show against the sandbox (DESIGN §5, §7)."""

    #: The system's email field (``email``, ``Email``).
    email_field: ClassVar[str]
    #: How far a cursor may overlap the previous read (equal timestamps, clock skew).
    overlap: ClassVar[timedelta] = timedelta(seconds=5)

    @abstractmethod
    def new_record(self, email: str) -> RawRecord:
        """A record the system accepts on create, with ``email`` in :attr:`email_field`."""

    @abstractmethod
    def changed_fields(self) -> RawRecord:
        """Fields to write with ``update``; read back they must equal these values."""

    @abstractmethod
    def invalid_value(self) -> tuple[str, Any]:
        """A field and a value the system refuses (e.g. not in its picklist)."""

    @abstractmethod
    def record_id(self, record: RawRecord) -> str:
        """The system id of a record returned by ``lookup`` or ``read_changes``."""

    @abstractmethod
    def modified_at(self, record: RawRecord) -> datetime:
        """When the system last modified ``record``."""

    # -- fixtures -------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def sandbox(cls) -> Iterator[dict[str, str]]:
        """A running sandbox's environment (one sandbox per test class)."""
        from leadrelay.sandbox.server import SandboxServer

        with SandboxServer() as server:
            yield server.env()

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def needs(connector: Connector[Any], *capabilities: Capability) -> None:
        """Skip the test unless the connector declares every one of ``capabilities``."""
        missing = [c.value for c in capabilities if not connector.supports(c)]
        if missing:
            pytest.skip(f"{connector.kind} does not declare {', '.join(missing)}")

    def email_of(self, record: RawRecord) -> str:
        """The normalised email of a raw record."""
        return normalize_email(str(record[self.email_field]))

    def write(self, connector: Connector[Any], *emails: str) -> list[str]:
        """Upsert one new record per email; return their system ids."""
        results = connector.upsert(
            [UpsertInput(ref=email, fields=self.new_record(email)) for email in emails]
        )
        assert [r.outcome for r in results] == [WriteOutcome.CREATED] * len(emails), results
        ids = [r.external_id for r in results]
        assert all(ids), results
        return [str(i) for i in ids]

    # -- capabilities ---------------------------------------------------------------------

    def test_kind_and_capabilities_are_declared(self, connector: Connector[Any]) -> None:
        assert connector.kind and connector.capabilities
        assert all(isinstance(c, Capability) for c in connector.capabilities)

    def test_undeclared_methods_raise_unsupported(self, connector: Connector[Any]) -> None:
        for capability, method in CAPABILITY_METHODS.items():
            if connector.supports(capability):
                continue
            with pytest.raises(UnsupportedCapability):
                result = getattr(connector, method)(*_CALL_ARGS[method])
                if method == "read_changes":
                    list(result)

    def test_health_is_ok(self, connector: Connector[Any]) -> None:
        health = connector.health()
        assert (health.ok, health.credentials_valid, health.system) == (
            True,
            True,
            connector.kind,
        )

    # -- upsert ---------------------------------------------------------------------------

    def test_upsert_creates_then_updates(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT)
        email = unique_email()
        first = connector.upsert([UpsertInput(email, self.new_record(email))])
        again = connector.upsert(
            [UpsertInput(email, self.new_record(email) | self.changed_fields())]
        )
        assert [first[0].outcome, again[0].outcome] == [WriteOutcome.CREATED, WriteOutcome.UPDATED]
        assert first[0].external_id and first[0].external_id == again[0].external_id

    def test_upsert_returns_one_result_per_input_in_order(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT)
        refs = [f"lead-{n}" for n in range(3)]
        inputs = [UpsertInput(ref, self.new_record(unique_email(ref))) for ref in refs]
        results = connector.upsert(inputs)
        assert [r.ref for r in results] == refs
        assert all(r.outcome is WriteOutcome.CREATED for r in results), results

    def test_upsert_splits_more_than_one_batch(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT)
        count = connector.batch_size + 1
        inputs = [UpsertInput(str(n), self.new_record(unique_email(f"b{n}"))) for n in range(count)]
        results = connector.upsert(inputs)
        assert [r.ref for r in results] == [str(n) for n in range(count)]
        assert all(r.ok for r in results), [r for r in results if not r.ok][:3]

    def test_upsert_is_idempotent(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT, Capability.LOOKUP)
        email = unique_email()
        record = UpsertInput(email, self.new_record(email))
        connector.upsert([record])
        second = connector.upsert([record])
        assert second[0].outcome in (WriteOutcome.UPDATED, WriteOutcome.UNCHANGED)
        found = connector.lookup(emails=[email])
        assert list(found) == [normalize_email(email)]

    def test_a_refused_value_fails_only_its_record(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT)
        good, bad = unique_email("good"), unique_email("bad")
        field, value = self.invalid_value()
        results = connector.upsert(
            [
                UpsertInput("good", self.new_record(good)),
                UpsertInput("bad", self.new_record(bad) | {field: value}),
            ]
        )
        assert [r.ref for r in results] == ["good", "bad"]
        assert results[0].outcome is WriteOutcome.CREATED, results[0]
        error = results[1].error
        assert results[1].outcome is WriteOutcome.FAILED and isinstance(error, Rejected)
        assert error.field == field and error.message and error.system == connector.kind

    # -- lookup ---------------------------------------------------------------------------

    def test_lookup_is_one_call_per_batch(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT, Capability.LOOKUP)
        emails = [unique_email(f"l{n}") for n in range(min(3, connector.batch_size))]
        self.write(connector, *emails)
        connector.health()  # any token refresh happens before counting
        before = connector.api_calls
        found = connector.lookup(emails=[e.upper() for e in emails])
        assert connector.api_calls - before == 1
        assert sorted(found) == sorted(normalize_email(e) for e in emails)
        assert all(self.email_of(found[key]) == key for key in found)

    def test_lookup_of_unknown_emails_returns_nothing(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.LOOKUP)
        assert connector.lookup(emails=[unique_email("nobody"), unique_email("none")]) == {}

    def test_lookup_by_id(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT, Capability.LOOKUP)
        [record_id] = self.write(connector, unique_email())
        found = connector.lookup(ids=[record_id])
        assert list(found) == [record_id]
        assert self.record_id(found[record_id]) == record_id

    # -- read_changes ---------------------------------------------------------------------

    def test_read_changes_includes_a_written_record(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT, Capability.READ_INCREMENTAL)
        email = unique_email()
        self.write(connector, email)
        records, cursor = read_all(connector, None)
        assert normalize_email(email) in {self.email_of(r) for r in records}
        assert cursor is not None

    def test_cursor_does_not_replay_beyond_the_overlap(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT, Capability.READ_INCREMENTAL)
        self.write(connector, unique_email())
        first, cursor = read_all(connector, None)
        newest = max(self.modified_at(r) for r in first)
        seen = {self.record_id(r) for r in first}
        later_email = unique_email("later")
        self.write(connector, later_email)
        second, _ = read_all(connector, cursor)
        assert normalize_email(later_email) in {self.email_of(r) for r in second}
        replayed = [r for r in second if self.record_id(r) in seen]
        assert all(self.modified_at(r) >= newest - self.overlap for r in replayed), replayed

    # -- update, delete, describe ---------------------------------------------------------

    def test_update_writes_fields(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT, Capability.UPDATE, Capability.LOOKUP)
        [record_id] = self.write(connector, unique_email())
        changes = self.changed_fields()
        results = connector.update({record_id: changes})
        assert [(r.ref, r.outcome) for r in results] == [(record_id, WriteOutcome.UPDATED)]
        found = connector.lookup(ids=[record_id])[record_id]
        assert {k: found.get(k) for k in changes} == changes

    def test_delete_removes(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.UPSERT, Capability.DELETE, Capability.LOOKUP)
        email = unique_email()
        [record_id] = self.write(connector, email)
        results = connector.delete([record_id])
        assert [(r.ref, r.ok) for r in results] == [(record_id, True)]
        assert connector.lookup(emails=[email]) == {}

    def test_describe_lists_required_fields_and_picklists(self, connector: Connector[Any]) -> None:
        self.needs(connector, Capability.DESCRIBE)
        schema = connector.describe()
        assert schema.has(self.email_field)
        assert schema.required and schema.picklists
        field, value = self.invalid_value()
        if schema.field(field).picklist_values is not None:
            assert not schema.allows(field, value)
