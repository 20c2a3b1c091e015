"""Countries (ISO 3166-1 alpha-2) and regions (ISO 3166-2), by ``pycountry``'s data.

A country is read from its alpha-2 or alpha-3 code, its name, official or common name, or one
of the everyday names ``pycountry`` does not hold (:data:`COUNTRY_ALIASES`: "USA", "UK",
"England", "Deutschland" …). A region (state, province, Land …) is read, within its country,
from its ISO 3166-2 code (``US-CA``), the code's second part (``CA``) or its name
(``California``), and is held as the ISO 3166-2 code.
"""

from __future__ import annotations

from functools import cache

import pycountry

from leadrelay.taxonomy import fold

__all__ = [
    "COUNTRY_ALIASES",
    "country_code",
    "country_name",
    "region_code",
    "region_name",
]

#: Everyday country names and codes that are not ISO names (folded → alpha-2).
COUNTRY_ALIASES: dict[str, str] = {
    "usa": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "america": "US",
    "united states of america": "US",
    "uk": "GB",
    "u.k.": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "deutschland": "DE",
    "españa": "ES",
    "italia": "IT",
    "the netherlands": "NL",
    "holland": "NL",
    "schweiz": "CH",
    "suisse": "CH",
    "österreich": "AT",
    "czech republic": "CZ",
    "méxico": "MX",
    "brasil": "BR",
    "south korea": "KR",
    "korea": "KR",
    "russia": "RU",
    "uae": "AE",
    "vietnam": "VN",
    "taiwan": "TW",
    "iran": "IR",
    "bolivia": "BO",
    "venezuela": "VE",
    "tanzania": "TZ",
    "syria": "SY",
    "laos": "LA",
    "moldova": "MD",
    "ivory coast": "CI",
}


@cache
def _countries() -> dict[str, str]:
    table: dict[str, str] = {}
    for country in pycountry.countries:
        code = str(country.alpha_2)
        names: list[object] = [code, country.alpha_3, country.name]
        names += [getattr(country, "official_name", None), getattr(country, "common_name", None)]
        for name in names:
            if name:
                table.setdefault(fold(str(name)), code)
    for alias, code in COUNTRY_ALIASES.items():
        table.setdefault(fold(alias), code)
    return table


def country_code(text: str) -> str | None:
    """The ISO 3166-1 alpha-2 code of a country code or name; None when it names no country."""
    return _countries().get(fold(text))


def country_name(code: str) -> str | None:
    """The usual English name of an alpha-2 code (``US`` → ``United States``), or None."""
    return _country_names().get(code.upper())


@cache
def _country_names() -> dict[str, str]:
    return {
        str(c.alpha_2): str(getattr(c, "common_name", None) or c.name) for c in pycountry.countries
    }


@cache
def _regions(country: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for code, name in _region_names().items():
        if code.partition("-")[0] == country:
            for spelling in (code, code.partition("-")[2], name):
                table.setdefault(fold(spelling), code)
    return table


def region_code(country: str | None, text: str) -> str | None:
    """The ISO 3166-2 code of a region of ``country`` (alpha-2), or None when not one of its
    subdivisions (or the country is unknown)."""
    key = fold(text)
    if country is None:
        prefix = key.partition("-")[0].upper()
        if len(prefix) != 2:
            return None
        country = prefix
    table = _regions(country.upper())
    return table.get(key)


def region_name(code: str) -> str | None:
    """The name of an ISO 3166-2 code (``US-CA`` → ``California``), or None."""
    return _region_names().get(code.upper())


@cache
def _region_names() -> dict[str, str]:
    return {str(region.code): str(region.name) for region in pycountry.subdivisions}
