"""``leadrelay check``: is this project ready to run? (DESIGN §11)

Each check names what it looked at and, when it fails, the reason. A config that does not load
is a configuration error (exit 2) and is reported by :func:`leadrelay.config.load_config`
itself; everything found after that is a problem (exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from leadrelay.config import Config, ConnectionConfig
from leadrelay.connectors.base import Connector, ConnectorNotFound, connector_class
from leadrelay.connectors.customfields import CustomFieldSpec
from leadrelay.connectors.errors import ConnectorError
from leadrelay.mappings.engine import MappingError, load_form_mapping, load_mapping
from leadrelay.sync.state import StateError, open_state


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
        with open_state(config) as store:
            version = store.schema_version()
    except (StateError, OSError) as exc:
        return CheckResult(subject, False, str(exc))
    except Exception as exc:  # a database driver's own error: report it, never crash check
        return CheckResult(subject, False, f"{type(exc).__name__}: {exc}")
    return CheckResult(subject, True, f"schema version {version}")


def check_form_mappings(config: Config) -> list[CheckResult]:
    """Every form's mapping loads (merged over its source's default) without a problem."""
    results: list[CheckResult] = []
    for name, form in sorted(config.forms.items()):
        subject = f"form {name} mapping {form.mapping.name}"
        try:
            load_form_mapping(form.mapping, source=str(form.source))
        except MappingError as exc:
            results.extend(CheckResult(subject, False, str(problem)) for problem in exc.problems)
        else:
            results.append(CheckResult(subject, True, f"{form.source} -> {form.destination}"))
    return results


def check_rule_values(config: Config) -> list[CheckResult]:
    """Scoring and routing rules name canonical values (an industry rule says ``software``,
    not ``Computer Software``); each other value is a problem with the nearest canonical ones."""
    from leadrelay.handoff.rulevalues import rule_value_problems

    problems = rule_value_problems(config.scoring, config.routing)
    if not problems:
        return [CheckResult("rules", True, "scoring and routing rules name canonical values")]
    return [CheckResult("rules", False, str(problem)) for problem in problems]


def _mapping_files(config: Config, connection: str) -> list[Path | None]:
    """The mappings a connection is used with: its project mapping and every flow override."""
    overrides = {flow.mappings[connection] for flow in config.flows if connection in flow.mappings}
    return [None, *sorted(overrides)]


def check_connection(
    config: Config, name: str, settings: ConnectionConfig, *, create_fields: bool = False
) -> list[CheckResult]:
    """Credentials, instance and API budget of one connection, and its mappings vs describe().

    Every mapped field must exist, be writable when written, and every value a value map
    writes must be allowed by the live picklist; a problem names the connection, field and
    value. Nothing secret is shown: connector errors are redacted.
    """
    subject = f"connection {name} ({settings.kind})"
    try:
        connector = connector_class(settings.kind)(settings, name)
    except ConnectorNotFound as exc:
        return [CheckResult(subject, False, str(exc))]
    results: list[CheckResult] = []
    try:
        health = connector.health()
        budget = (
            f", API budget {health.budget_used:,}/{health.budget_max:,} used"
            if health.budget_used is not None and health.budget_max is not None
            else ""
        )
        detail = f"{health.instance or 'instance unknown'}{budget}"
        healthy = health.ok and health.credentials_valid
        if not healthy:
            # the system's own reason (a refused token, a wrong password, a host not found)
            reason = health.details.get("error") or (
                "credentials refused" if not health.credentials_valid else "not usable"
            )
            detail = f"{reason} ({detail})"
        results.append(CheckResult(subject, healthy, detail))
        if not (health.ok and health.credentials_valid):
            return results
        if create_fields:
            results.append(_create_fields(config, name, subject, connector))
        for override in _mapping_files(config, name):
            label = override.name if override else f"{settings.kind} mapping"
            try:
                mapping = load_mapping(settings.kind, project_dir=config.folder, override=override)
            except MappingError as exc:
                results.extend(
                    CheckResult(f"{subject} {label}", False, str(problem))
                    for problem in exc.problems
                )
                continue
            # A mapping may name fields the connection reads only for it (HubSpot's deals).
            connector.read_mapped(mapping.system_fields())
            schema = connector.describe()
            problems = mapping.validate_against(schema)
            results.extend(
                CheckResult(f"{subject} {label}", False, str(problem)) for problem in problems
            )
            if not problems:
                fields = len(mapping.system_fields())
                results.append(
                    CheckResult(
                        f"{subject} {label}",
                        True,
                        f"{fields} fields match {schema.object_name} ({len(schema.fields)} live)",
                    )
                )
    except ConnectorError as exc:
        results.append(CheckResult(subject, False, str(exc)))
    finally:
        connector.close()
    return results


def _create_fields(
    config: Config, name: str, subject: str, connector: Connector[Any]
) -> CheckResult:
    """``--create-fields``: create the custom fields leadrelay needs, through the system's API.

    HubSpot: contact properties (Properties API). Salesforce: Lead custom fields (Tooling API;
    field-level security for the integration user stays a step in Setup). Zoho: Leads fields
    (Fields API). The Salesforce and Zoho fields are those the connection's mappings name.
    """
    from leadrelay.connectors.customfields import FieldCreator, custom_field_specs
    from leadrelay.connectors.hubspot import HubSpotConnector

    label = f"{subject} create fields"
    if isinstance(connector, HubSpotConnector):
        created = connector.ensure_properties()
        detail = f"created {', '.join(created)}" if created else "every custom property exists"
        return CheckResult(label, True, detail)
    if not isinstance(connector, FieldCreator):
        return CheckResult(label, True, "this system's fields are created in its own setup")
    specs: dict[str, CustomFieldSpec] = {}
    for override in _mapping_files(config, name):
        try:
            mapping = load_mapping(connector.kind, project_dir=config.folder, override=override)
        except MappingError:
            continue  # reported by the mapping check below
        for spec in custom_field_specs(mapping):
            specs.setdefault(spec.name, spec)
    created = connector.create_fields(list(specs.values()))
    if not created:
        return CheckResult(label, True, f"every custom field exists ({len(specs)} checked)")
    detail = f"created {', '.join(created)}"
    if connector.kind == "salesforce":
        detail += (
            "; now grant the integration user read and edit on them (field-level security, "
            "in Setup or a permission set)"
        )
    return CheckResult(label, True, detail)


def run_checks(
    config: Config, *, connections: bool = True, create_fields: bool = False
) -> list[CheckResult]:
    """Every check of a loaded config, in the order they are shown."""
    results = [CheckResult(f"config {config.path.name}", True, _summary(config))]
    results.append(check_state(config))
    results.extend(check_form_mappings(config))
    results.extend(check_rule_values(config))
    if connections:
        for name, settings in sorted(config.connections.items()):
            results.extend(check_connection(config, name, settings, create_fields=create_fields))
    return results


def _summary(config: Config) -> str:
    return (
        f"{len(config.connections)} connections, {len(config.flows)} flows, "
        f"{len(config.forms)} forms"
    )


def render_checks(results: list[CheckResult]) -> Table:
    """A table of the checks: a mark, what was checked, and the detail (the reason of a ✗)."""
    table = Table(title="leadrelay check", show_lines=False)
    table.add_column("", width=1, no_wrap=True)
    table.add_column("checked", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for result in results:
        mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
        table.add_row(mark, escape(result.subject), escape(result.detail))
    return table
