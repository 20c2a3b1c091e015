"""The mapping files leadrelay ships (``leadrelay/mappings/<kind>.toml``), as connectors read them.

A connector reads the fields its shipped mapping names by default. The mapping engine knows the
files' full meaning but sits a layer above the connectors, so this reads only the names: the
key, each ``[fields]`` entry's ``field`` / ``fields`` (every alternative of an array) and the
fields its ``read_when`` conditions test. One parse per kind and process: the files are part of
the installed package.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from functools import cache
from typing import Any

__all__ = ["entry_system_fields", "shipped_mapping", "shipped_mapping_fields"]


@cache
def shipped_mapping(kind: str) -> dict[str, Any]:
    """The parsed ``mappings/<kind>.toml`` ({} when it cannot be read: the mapping engine reports
    its problems). Shared: read it, do not change it."""
    try:
        text = importlib.resources.files("leadrelay.mappings").joinpath(f"{kind}.toml")
        data = tomllib.loads(text.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return data


def entry_system_fields(entry: Any) -> list[str]:
    """The system fields one ``[fields]`` entry names, its primary field first: a name, a
    table's ``field`` or ``fields`` and its ``read_when`` fields, or those of each alternative
    of an array in order."""
    names: list[str] = []
    for value in entry if isinstance(entry, list) else [entry]:
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, dict):
            if isinstance(value.get("field"), str):
                names.append(value["field"])
            listed = value.get("fields")
            if isinstance(listed, list):
                names.extend(v for v in listed if isinstance(v, str))
            when = value.get("read_when")
            if isinstance(when, dict):
                names.extend(k for k in when if isinstance(k, str))
    return names


@cache
def shipped_mapping_fields(kind: str) -> tuple[str, ...]:
    """Every system field the shipped mapping of ``kind`` names: its key, then each entry's
    (:func:`entry_system_fields`); empty when the file cannot be read."""
    data = shipped_mapping(kind)
    key = data.get("key")
    names = [key] if isinstance(key, str) else []
    fields = data.get("fields")
    for entry in fields.values() if isinstance(fields, dict) else ():
        names.extend(entry_system_fields(entry))
    return tuple(names)
