"""``leadrelay validate FORM`` / ``leadrelay validate --all`` (DESIGN §8, §11).

Registered by :mod:`leadrelay.cli`::

    app.command("validate")(validate_command)

Exit codes: 0 when every check of every form passed, 1 when any failed, 2 on a configuration
error (no such form, config file invalid, state store unreachable).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from leadrelay.clikit import CliError, load_project_config, make_console, print_table

__all__ = ["validate_command"]

_console = make_console()


def validate_command(
    form: Annotated[
        str | None, typer.Argument(help="The form to validate (see [forms] in the config).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Validate every configured form.")] = False,
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The project file.", show_default=True)
    ] = Path("leadrelay.toml"),
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.0, help="Seconds to wait for the record to appear."),
    ] = 60.0,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the test records instead of deleting them.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write JUnit XML to this file.")
    ] = None,
) -> None:
    """Send a test lead through a form's real path and check it in the CRM.

    Pre-flight against the live schema, a synthetic lead marked as a test, submitted the way
    the form's leads arrive, polled for in the destination, read back and checked field by
    field; the test records are deleted unless --keep. Exit 0 when every check passes, 1 when
    one fails, 2 on a configuration error.
    """
    from leadrelay.validation.output import render_table, to_json, write_junit
    from leadrelay.validation.runner import (
        ValidationConfigError,
        validate_all,
        validate_form,
    )

    if (form is None) == (not every):
        raise CliError("give one FORM or --all", 2)
    loaded = load_project_config(config)
    try:
        if every:
            results = validate_all(loaded, timeout=timeout, keep=keep)
        else:
            assert form is not None
            results = [validate_form(loaded, form, timeout=timeout, keep=keep)]
    except ValidationConfigError as exc:
        raise CliError(str(exc), 2) from exc
    if junit is not None:
        write_junit(results, junit)
    if as_json:
        import json

        sys.stdout.write(json.dumps(to_json(results, many=every), indent=2, default=str) + "\n")
    else:
        for result in results:
            print_table(_console, render_table(result))
    failed = [r.form for r in results if not r.ok]
    if failed:
        raise CliError(f"validation failed: {', '.join(failed)}", 1)
