"""The three outputs of ``leadrelay validate``: a rich table, JSON and JUnit XML (DESIGN §11).

JSON: one form prints ``{"form", "ok", "record_id", "latency_s", "checks": [{"name", "ok",
"expected", "actual"}]}``; ``--all`` prints ``{"ok", "forms": [<that object per form>]}``.

JUnit XML: a ``<testsuites>`` with one ``<testsuite>`` per form and one ``<testcase>`` per
check; a failing check carries ``<failure message="expected …, got …">``, which CI systems show
on the failed test.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from leadrelay.validation.runner import ValidationResult

__all__ = ["render_table", "to_json", "write_junit"]


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def render_table(result: ValidationResult) -> Table:
    """One form's checks: name, ok, expected, actual."""
    status = "[green]passed[/]" if result.ok else "[red]FAILED[/]"
    caption = []
    if result.record_id:
        caption.append(f"record {result.record_id}")
    if result.latency_s is not None:
        caption.append(f"arrived in {result.latency_s:.2f}s")
    if result.deleted:
        caption.append(f"deleted {len(result.deleted)} test record(s)")
    table = Table(
        title=f"validate {result.form}: {status}",
        caption=", ".join(caption) or None,
    )
    table.add_column("check", overflow="fold")
    table.add_column("ok", justify="center")
    table.add_column("expected", overflow="fold")
    table.add_column("actual", overflow="fold")
    for check in result.checks:
        mark = Text("✓", style="green") if check.ok else Text("✗", style="bold red")
        table.add_row(check.name, mark, _shown(check.expected), _shown(check.actual))
    return table


def to_json(results: Sequence[ValidationResult], *, many: bool) -> dict[str, Any]:
    """The ``--json`` document: one form's object, or ``{"ok", "forms"}`` for ``--all``."""
    if not many and len(results) == 1:
        return results[0].to_json()
    return {"ok": all(r.ok for r in results), "forms": [r.to_json() for r in results]}


def write_junit(results: Sequence[ValidationResult], path: Path) -> None:
    """Write JUnit XML: a testsuite per form, a testcase per check."""
    suites = ET.Element(
        "testsuites",
        name="leadrelay validate",
        tests=str(sum(len(r.checks) for r in results)),
        failures=str(sum(1 for r in results for c in r.checks if not c.ok)),
    )
    for result in results:
        failures = sum(1 for c in result.checks if not c.ok)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=result.form,
            tests=str(len(result.checks)),
            failures=str(failures),
            errors="0",
            time=f"{result.latency_s or 0:.3f}",
        )
        if result.record_id:
            properties = ET.SubElement(suite, "properties")
            ET.SubElement(properties, "property", name="record_id", value=result.record_id)
        if not result.checks:
            case = ET.SubElement(suite, "testcase", classname=result.form, name="run")
            ET.SubElement(case, "failure", message="no check ran")
        for check in result.checks:
            case = ET.SubElement(
                suite, "testcase", classname=f"validate.{result.form}", name=check.name
            )
            if not check.ok:
                message = f"expected {_shown(check.expected)}, got {_shown(check.actual)}"
                failure = ET.SubElement(case, "failure", message=message, type="ValidationFailure")
                failure.text = message
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
