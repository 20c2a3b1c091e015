"""``leadrelay check``: is this project ready to run? (DESIGN §11)

Each check names what it looked at and, when it fails, the reason. A config that does not load
is a configuration error (exit 2) and is reported by :func:`leadrelay.config.load_config`
itself; everything found after that is a problem (exit 1).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from rich.table import Table

from leadrelay.config import Config
from leadrelay.sync.state import StateError, StateStore


@dataclass(frozen=True)
class CheckResult:
    """One thing checked: what (``subject``), whether it is fine, and why not."""

    subject: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        """JSON-ready form for ``check --json``."""
        return {"subject": self.subject, "ok": self.ok, "detail": self.detail}


def check_state(config: Config) -> CheckResult:
    """The state store opens (creating its schema when new) and reports its schema version."""
    subject = f"state {config.state.display_url}"
    try:
        with StateStore(config.state.url) as store:
            version = store.schema_version()
    except (StateError, OSError) as exc:
        return CheckResult(subject, False, str(exc))
    except Exception as exc:  # a database driver's own error: report it, never crash check
        return CheckResult(subject, False, f"{type(exc).__name__}: {exc}")
    return CheckResult(subject, True, f"schema version {version}")


def check_form_mappings(config: Config) -> list[CheckResult]:
    """Every form's mapping file is readable TOML."""
    results = []
    for name, form in sorted(config.forms.items()):
        subject = f"form {name} mapping {form.mapping.name}"
        try:
            with form.mapping.open("rb") as handle:
                tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            results.append(CheckResult(subject, False, f"{form.mapping}: {exc}"))
        else:
            results.append(CheckResult(subject, True, f"{form.source} -> {form.destination}"))
    return results


def run_checks(config: Config) -> list[CheckResult]:
    """Every check of a loaded config, in the order they are shown."""
    results = [CheckResult(f"config {config.path.name}", True, _summary(config))]
    results.append(check_state(config))
    results.extend(check_form_mappings(config))
    return results


def _summary(config: Config) -> str:
    return (
        f"{len(config.connections)} connections, {len(config.flows)} flows, "
        f"{len(config.forms)} forms"
    )


def render_checks(results: list[CheckResult]) -> Table:
    """A table of the checks: a mark, what was checked, and the detail."""
    table = Table(title="leadrelay check", show_lines=False)
    table.add_column("", width=2)
    table.add_column("checked")
    table.add_column("detail", overflow="fold")
    for result in results:
        mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
        table.add_row(mark, result.subject, result.detail)
    return table
