"""Standard pick lists: canonical values and each built-in system's own values (DESIGN §4).

A standard list (``industry``, ``salutation``) is a TOML file next to this module:

``[canonical]``
    every canonical value with its ``label`` (the values of the list's enum in
    :mod:`leadrelay.model`).
``[aliases]``
    common free-text spellings → canonical value, read for every system.
``[systems.<system>.read]``
    the system's value (or label) → canonical value: every standard value of the system's list.
``[systems.<system>.write]``
    canonical value → the system value written. A canonical value missing here has no value in
    the system's standard list and is not written.

Reading a value (:meth:`StandardList.canonical`) tries the system's own table, then every
canonical value and label, the aliases and every other system's values, each ignoring case and
surrounding blanks: a HubSpot contact whose free-text industry is Salesforce's ``Technology``
still reads as ``software``. A value nothing covers reads as None; the mapping engine keeps it
verbatim in ``custom`` and reports it (:class:`leadrelay.mappings.transforms.UnmappedValue`).

Countries (ISO 3166-1 alpha-2) and regions (ISO 3166-2) come from ``pycountry``:
:mod:`leadrelay.taxonomy.geo`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from rapidfuzz import fuzz, process

__all__ = ["LISTS", "StandardList", "SystemValues", "fold", "standard_list"]

#: The standard lists held as data in this package.
LISTS: tuple[str, ...] = ("industry", "salutation")

_DIR = Path(__file__).resolve().parent


def fold(text: str) -> str:
    """The form values are compared in: blanks folded, case ignored."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class SystemValues:
    """One system's values of a standard list.

    Attributes:
        read: folded system value → canonical value.
        write: canonical value → the system value written.
    """

    read: Mapping[str, str]
    write: Mapping[str, str]


class StandardListError(ValueError):
    """A standard list's data file is inconsistent (a packaging error, found by the tests)."""


@dataclass(frozen=True)
class StandardList:
    """A standard list: canonical values, labels, aliases and every system's values."""

    name: str
    labels: Mapping[str, str]
    systems: Mapping[str, SystemValues]
    aliases: Mapping[str, str]

    @property
    def values(self) -> tuple[str, ...]:
        """The canonical values, in the file's order."""
        return tuple(self.labels)

    def canonical(self, value: str, system: str | None = None) -> str | None:
        """The canonical value a system value (or a canonical value, label or alias) reads as."""
        key = fold(value)
        if not key:
            return None
        own = self.systems.get(system) if system else None
        if own is not None and key in own.read:
            return own.read[key]
        return self.aliases.get(key)

    def system_value(self, canonical: str, system: str) -> str | None:
        """What ``system`` holds for a canonical value; None when its list has no such value."""
        values = self.systems.get(system)
        return None if values is None else values.write.get(canonical)

    def nearest(self, value: str, limit: int = 3) -> list[str]:
        """The canonical values closest to ``value``: what it reads as first, then by spelling."""
        found: list[str] = []
        direct = self.canonical(value)
        if direct is not None:
            found.append(direct)
        choices = {**{v: v for v in self.values}, **self.aliases}
        for text, _score, _index in process.extract(
            fold(value), list(choices), scorer=fuzz.WRatio, limit=limit * 3
        ):
            target = choices[text]
            if target not in found:
                found.append(target)
        return found[:limit]


def _table(data: object, where: str) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise StandardListError(f"{where} must be a table of strings")
    return dict(data)


def _add(target: dict[str, str], key: str, value: str, where: str) -> None:
    folded = fold(key)
    known = target.get(folded)
    if known is not None and known != value:
        raise StandardListError(f"{where}: {key!r} reads as both {known} and {value}")
    target[folded] = value


@cache
def standard_list(name: str) -> StandardList:
    """The standard list ``name`` (one of :data:`LISTS`), loaded once.

    Raises :class:`StandardListError` when the data names a value outside the list or reads one
    spelling as two values; KeyError for an unknown list.
    """
    if name not in LISTS:
        raise KeyError(name)
    path = _DIR / f"{name}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    labels: dict[str, str] = {}
    for value, info in data["canonical"].items():
        labels[value] = str(info["label"]) if isinstance(info, dict) else str(info)
    aliases: dict[str, str] = {}
    for value, label in labels.items():
        _add(aliases, value, value, f"{path.name} [canonical]")
        _add(aliases, label, value, f"{path.name} [canonical]")
    for alias, value in _table(data.get("aliases"), "[aliases]").items():
        _add(aliases, alias, value, f"{path.name} [aliases]")
    systems: dict[str, SystemValues] = {}
    for system, tables in data.get("systems", {}).items():
        where = f"{path.name} [systems.{system}]"
        read: dict[str, str] = {}
        for system_value, value in _table(tables.get("read"), f"{where}.read").items():
            _add(read, system_value, value, f"{where}.read")
        write = _table(tables.get("write"), f"{where}.write")
        for canonical, system_value in write.items():
            if canonical not in labels:
                raise StandardListError(f"{where}.write: {canonical!r} is not a {name} value")
            # a lossy write (automotive -> Manufacturing) reads back as the read table says
            read.setdefault(fold(system_value), canonical)
        systems[system] = SystemValues(read=read, write=write)
    for system, values in systems.items():
        for system_value, value in values.read.items():
            if value not in labels:
                raise StandardListError(
                    f"{path.name} [systems.{system}.read]: {system_value!r} reads as "
                    f"{value!r}, not a {name} value"
                )
            # Another system's value reads the same everywhere, unless a list disagrees:
            # then the first system's reading stands and the system's own table decides.
            aliases.setdefault(system_value, value)
    return StandardList(name=name, labels=labels, systems=systems, aliases=aliases)
