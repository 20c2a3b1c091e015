"""The checks of a validation run (DESIGN §8 steps 1 and 5), each with expected and actual.

A check is a plain record so the three outputs (table, JSON, JUnit XML) render the same
thing. The functions here compare; they never talk to a system.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from leadrelay.mappings.engine import Problem
from leadrelay.sync.state import LedgerRow, LedgerState

__all__ = [
    "Check",
    "field_checks",
    "ledger_check",
    "one_record_check",
    "owner_check",
    "preflight_checks",
    "same_value",
    "stage_check",
]


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, and what was expected and found."""

    name: str
    ok: bool
    expected: Any
    actual: Any

    def to_json(self) -> dict[str, Any]:
        """The ``checks`` entry of ``validate --json``."""
        return {"name": self.name, "ok": self.ok, "expected": self.expected, "actual": self.actual}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def same_value(expected: Any, actual: Any) -> bool:
    """Whether the destination holds the value written: numbers by value, text exactly
    (ignoring surrounding space and, for e-mails, case), booleans as ``true`` / ``false``."""
    left, right = _number(expected), _number(actual)
    if left is not None and right is not None:
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)
    a, b = _text(expected), _text(actual)
    if "@" in a and "@" in b:
        return a.casefold() == b.casefold()
    return a == b


def preflight_checks(
    problems: Iterable[Problem], *, destination: str, object_name: str | None
) -> list[Check]:
    """One failing check per problem of the mapping against the live schema, or one passing
    check when there is none."""
    found = list(problems)
    what = f"{destination} {object_name or ''}".strip()
    if not found:
        return [
            Check("pre-flight: mapping vs live schema", True, f"{what} accepts the mapping", "ok")
        ]
    checks = []
    for problem in found:
        subject = problem.system_field or problem.field
        value = f" {problem.value!r}" if problem.value is not None else ""
        checks.append(
            Check(
                f"pre-flight: {problem.field}",
                False,
                f"{what} accepts {subject}{value}",
                str(problem),
            )
        )
    return checks


def field_checks(
    checked: Mapping[str, str], expected: Mapping[str, Any], record: Mapping[str, Any]
) -> list[Check]:
    """One check per mapped field: the value written vs the value read back."""
    checks = []
    for canonical, system_field in checked.items():
        want = expected.get(system_field)
        got = record.get(system_field)
        checks.append(
            Check(
                f"field {canonical} ({system_field})",
                same_value(want, got),
                want,
                got,
            )
        )
    return checks


def stage_check(allowed: Iterable[str], actual: str | None, system: str) -> Check:
    """The record starts in an initial stage (``lead``, or ``mql`` when scoring promotes it)."""
    wanted = sorted(set(allowed))
    return Check(
        f"initial stage ({system})",
        actual in wanted,
        " or ".join(wanted),
        actual,
    )


def owner_check(field_name: str, actual: Any) -> Check:
    """An owner was assigned (routing configured, or the form names one)."""
    return Check(
        f"owner assigned ({field_name})",
        actual not in (None, ""),
        "an owner",
        actual if actual not in (None, "") else None,
    )


def one_record_check(email: str, ids: Iterable[str]) -> Check:
    """Exactly one record holds the run's e-mail (no duplicate created)."""
    found = sorted(set(ids))
    return Check(f"exactly one record for {email}", len(found) == 1, 1, len(found))


def ledger_check(rows: Iterable[LedgerRow], destination: str, record_id: str) -> Check:
    """The ledger shows the lead written to the destination as that record, marked a test."""
    row = next((r for r in rows if r.destination == destination), None)
    expected = f"written to {destination} as {record_id}, is_test"
    if row is None:
        return Check("ledger", False, expected, f"no ledger row for {destination}")
    written = row.state in (LedgerState.WRITTEN, LedgerState.VERIFIED)
    ok = written and row.external_id == record_id and row.is_test
    actual = f"{row.state.value} to {destination} as {row.external_id or '-'}"
    actual += ", is_test" if row.is_test else ", not marked is_test"
    if row.last_error:
        actual += f" (last error: {row.last_error})"
    return Check("ledger", ok, expected, actual)
