"""Country, US-state and currency look-ups built once from pycountry (pure, no hand-written ISO tables).

Meta wants `country` as ISO 3166-1 alpha-2, US `st` as the 2-letter code and `currency` as ISO 4217
(contract README §0, §3.1, §5). Apps send names, aliases and codes in any case; these tables map the
letters-only, lowercased, accent-free spelling of every form pycountry knows to the code.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Final

import pycountry

# Common names pycountry does not carry (its `common_name` covers only a few). Each maps to ISO alpha-2;
# UK is the usual non-ISO code for GB, and the home nations are how British users fill a country box.
COUNTRY_ALIASES: Final[dict[str, str]] = {
    "uk": "gb", "greatbritain": "gb", "britain": "gb", "england": "gb", "scotland": "gb", "wales": "gb",
    "northernireland": "gb", "unitedstates": "us", "america": "us", "russia": "ru", "czechia": "cz",
    "czechrepublic": "cz", "holland": "nl", "thenetherlands": "nl", "turkey": "tr", "southkorea": "kr",
    "korea": "kr", "northkorea": "kp", "ivorycoast": "ci", "vatican": "va", "macau": "mo",
    "hongkong": "hk", "palestine": "ps", "uae": "ae", "brunei": "bn", "capeverde": "cv",
    "eswatini": "sz", "swaziland": "sz", "burma": "mm", "micronesia": "fm", "stlucia": "lc",
}  # fmt: skip


def letters_key(text: str) -> str:
    """Lowercase letters of `text` with accents removed: the spelling-insensitive key of a place name."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if ch.isalpha() and not unicodedata.combining(ch))


def _country_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2.lower()
        for attr in ("name", "official_name", "common_name", "alpha_3"):
            name = getattr(country, attr, None)
            if name:
                table.setdefault(letters_key(name), code)
    # alpha-2 codes win over any name that happens to spell two letters
    for country in pycountry.countries:
        table[country.alpha_2.lower()] = country.alpha_2.lower()
    for alias, code in COUNTRY_ALIASES.items():
        table.setdefault(alias, code)
    return table


def _us_state_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for sub in pycountry.subdivisions.get(country_code="US"):  # type: ignore[no-untyped-call]
        code = sub.code.split("-", 1)[1].lower()
        table[letters_key(sub.name)] = code
        table[code] = code
    return table


COUNTRIES: Final = _country_table()
US_STATES: Final = _us_state_table()
CURRENCIES: Final = frozenset(c.alpha_3.lower() for c in pycountry.currencies)


@functools.lru_cache(maxsize=1024)  # every event asks for its country; apps write it a few ways
def country_code(text: str) -> str | None:
    """ISO alpha-2 (lowercase) for a code, alpha-3, name or common alias; None if unknown."""
    return COUNTRIES.get(text.lower()) or COUNTRIES.get(letters_key(text))


def iso_country(text: str) -> str | None:
    """`text` as an upper-case ISO 3166-1 alpha-2 code if it is exactly one (any case), else None."""
    code = text.strip().lower()
    return code.upper() if len(code) == 2 and COUNTRIES.get(code) == code else None


def us_state_code(letters: str) -> str | None:
    """2-letter code (lowercase) for a US state name or code given as lowercase letters; None if not one."""
    return US_STATES.get(letters)
