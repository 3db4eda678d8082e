"""Meta's per-field normalization of user_data, one small function per field (pure).

Each normalizer takes the raw string an app sent and returns the normalized string Meta hashes (or sends
raw), or None when nothing valid remains; the field is then dropped with the reason in FIELD_REASONS.
The rules are capi-stream's policy (contract README §0): Meta's written rules, matching Meta's Python SDK
wherever the SDK follows them (§3.3), the doc-conformant value where it does not (§3.4).

Fields whose rule depends on the event (phone country code, US state names, US ZIP codes, the current
year for dates of birth) come from `field_table(country, max_year)`, built once per context and cached.
"""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from stream.contract import phones, places

FieldNormalizer = Callable[[str], "str | None"]

# Meta: "year 1900..current" for db [3.1]; the same bound holds for doby.
MIN_BIRTH_YEAR: Final = 1900

# Why a field was dropped, per field; "empty" and "invalid_type" apply to every field.
FIELD_REASONS: Final[Mapping[str, str]] = MappingProxyType({
    "em": "invalid_email", "ph": "invalid_phone", "fn": "invalid_name", "ln": "invalid_name",
    "ge": "invalid_gender", "db": "invalid_date_of_birth", "ct": "invalid_city", "st": "invalid_state",
    "zp": "invalid_zip", "country": "invalid_country", "external_id": "empty",
    "f5first": "invalid_name", "f5last": "invalid_name", "fi": "invalid_name",
    "dobd": "invalid_birth_day", "dobm": "invalid_birth_month", "doby": "invalid_birth_year",
    "client_ip_address": "invalid_ip", "fbc": "invalid_fbc", "fbp": "invalid_fbp",
    "fb_login_id": "invalid_integer_id", "lead_id": "invalid_integer_id", "madid": "zero_madid",
})  # fmt: skip
EMPTY: Final = "empty"
INVALID_TYPE: Final = "invalid_type"

# --- text helpers: ASCII takes a translate() fast path, anything else goes through NFKC first ---------
_ASCII_NON_LETTERS: Final = str.maketrans("", "", "".join(c for c in map(chr, range(128)) if not c.isalpha()))
_ASCII_NON_ALNUM: Final = str.maketrans("", "", "".join(c for c in map(chr, range(128)) if not c.isalnum()))


def _nfkc_lower(value: str) -> str:
    # NFKC first (§0): full-width and ASCII letters must hash the same; then Python's lower(), as the SDK
    return unicodedata.normalize("NFKC", value).lower()


def _letters(value: str) -> str:
    """Lowercase letters (any script, with their combining marks); everything else removed."""
    if value.isascii():
        return value.translate(_ASCII_NON_LETTERS).lower()
    return "".join(ch for ch in _nfkc_lower(value) if ch.isalpha() or unicodedata.combining(ch))


def _alnum(value: str) -> str:
    """Lowercase letters and digits (any script, with combining marks); punctuation and spaces removed."""
    if value.isascii():
        return value.translate(_ASCII_NON_ALNUM).lower()
    return "".join(ch for ch in _nfkc_lower(value) if ch.isalnum() or unicodedata.combining(ch))


# --- hashed fields -------------------------------------------------------------------------------------
_EMAIL: Final = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")


def email(value: str) -> str | None:
    """em: trim and lowercase [3.1]; one @, a dotted domain and no inner space, else invalid."""
    text = value.strip().lower() if value.isascii() else _nfkc_lower(value).strip()
    return text if _EMAIL.fullmatch(text) else None


def name(value: str) -> str | None:
    """fn/ln: lowercase, punctuation and spaces removed, Unicode NFKC [3.1][3.4] (O'Brien -> obrien)."""
    return _alnum(value) or None


def city(value: str) -> str | None:
    """ct: lowercase letters only, no punctuation, digits or spaces [3.1] (New York -> newyork)."""
    return _letters(value) or None


def country(value: str) -> str | None:
    """country: ISO 3166-1 alpha-2 lowercase from a code, alpha-3, name or alias (UK -> gb) [§0]."""
    return places.country_code(value)


_GENDERS: Final = MappingProxyType({"m": "m", "f": "f", "male": "m", "female": "f"})


def gender(value: str) -> str | None:
    """ge: m or f; male/female map to them [§0]; anything else is dropped."""
    return _GENDERS.get(_letters(value))


def external_id(value: str) -> str | None:
    """external_id: trimmed, case kept [§0] (hashed unless the destination turns hashing off)."""
    return value.strip() or None


def first5(value: str) -> str | None:
    """f5first/f5last: the first 5 characters of the normalized name [SDK]."""
    return _alnum(value)[:5] or None


def initial(value: str) -> str | None:
    """fi: the first character of the normalized first name [SDK]."""
    return _alnum(value)[:1] or None


def _two_digits(value: str, high: int) -> str | None:
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 2 and 1 <= int(text) <= high):
        return None
    return text.zfill(2)


def birth_day(value: str) -> str | None:
    """dobd: 1..31 as two digits [SDK] (1 -> 01)."""
    return _two_digits(value, 31)


def birth_month(value: str) -> str | None:
    """dobm: 1..12 as two digits [SDK] (2 -> 02)."""
    return _two_digits(value, 12)


def birth_year(value: str, max_year: int) -> str | None:
    """doby: four digits, MIN_BIRTH_YEAR..max_year [SDK][3.1]."""
    text = value.strip()
    ok = len(text) == 4 and text.isascii() and text.isdigit() and MIN_BIRTH_YEAR <= int(text) <= max_year
    return text if ok else None


_MONTHS: Final = MappingProxyType({
    **{m.lower(): i for i, m in enumerate(
        ("January", "February", "March", "April", "May", "June", "July", "August", "September",
         "October", "November", "December"), start=1)},
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9,
    "oct": 10, "nov": 11, "dec": 12,
})  # fmt: skip
_DATE_COMPACT: Final = re.compile(r"(\d{4})(\d{2})(\d{2})")
# the text is lowercased first, so an ISO time part starts with "t"
_DATE_YMD: Final = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?:[t ].*)?")
_DATE_XXY: Final = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4})")
_DATE_DAY_MONTH: Final = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\s+([a-z]+)\.?,?\s+(\d{4})")
_DATE_MONTH_DAY: Final = re.compile(r"([a-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})")


def _ymd(text: str) -> tuple[int, int, int] | None:
    if m := _DATE_COMPACT.fullmatch(text):
        return int(m[1]), int(m[2]), int(m[3])
    if m := _DATE_YMD.fullmatch(text):
        return int(m[1]), int(m[3]), int(m[4])
    if m := _DATE_XXY.fullmatch(text):
        first, second = int(m[1]), int(m[3])
        # slashes: US month/day (Meta's own example 2/16/1997) unless the first part cannot be a month;
        # dots and dashes: day.month (Europe, India) unless the second part cannot be a month
        month_first = first <= 12 if m[2] == "/" else second > 12
        return (int(m[4]), first, second) if month_first else (int(m[4]), second, first)
    if m := _DATE_DAY_MONTH.fullmatch(text):
        month = _MONTHS.get(m[2])
        return (int(m[3]), month, int(m[1])) if month else None
    if m := _DATE_MONTH_DAY.fullmatch(text):
        month = _MONTHS.get(m[1])
        return (int(m[3]), month, int(m[2])) if month else None
    return None


def date_of_birth(value: str, max_year: int) -> str | None:
    """db: YYYYMMDD from any common date form [§0] (2/16/1997, 1997-02-16, 16.02.1997, Feb 16, 1997)."""
    text = value.strip().lower() if value.isascii() else _nfkc_lower(value).strip()
    parts = _ymd(text)
    if parts is None or not MIN_BIRTH_YEAR <= parts[0] <= max_year:
        return None
    try:
        datetime.date(*parts)  # a real calendar day: no 31 April, 29 February only in leap years
    except ValueError:
        return None
    return f"{parts[0]:04d}{parts[1]:02d}{parts[2]:02d}"  # as strftime("%Y%m%d"), at half the cost


def state(value: str, country_code: str | None) -> str | None:
    """st: lowercase letters; a US state name becomes its 2-letter code [§0] (California -> ca)."""
    letters = _letters(value)
    if country_code in (None, "us"):
        return places.us_state_code(letters) or letters or None
    return letters or None


_US_ZIP: Final = re.compile(r"[0-9]{5}(?:[0-9]{4})?")


def zip_code(value: str, country_code: str | None) -> str | None:
    """zp: lowercase, no spaces or dashes; US ZIP and ZIP+4 -> the first 5 digits [§0][3.4]."""
    text = _alnum(value)
    if country_code == "us" and text[:5].isdigit() and text[:5].isascii():
        return text[:5]
    if country_code is None and _US_ZIP.fullmatch(text):  # unknown country: only the ZIP / ZIP+4 shape
        return text[:5]
    return text or None


def phone(value: str, country_code: str | None) -> str | None:
    """ph: E.164 digits without +; the country code comes from `country_code` when missing [§0]."""
    return phones.e164_digits(value, country_code.upper() if country_code else None)


# --- raw (not hashed) fields --------------------------------------------------------------------------
_IPV4: Final = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
# fullmatch of an IPv4 address exactly as ip_address returns it (no space around): valid and unchanged
PLAIN_IPV4: Final = _IPV4.fullmatch
_FB_COOKIE: Final = re.compile(r"fb\.[0-9]+\.[0-9]+\.\S+")


# hex groups of 1 to 4 digits joined by ":", with at most one "::" (the group count is checked apart)
_HEX_GROUPS: Final = r"(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*)?"
_IPV6_HEX: Final = re.compile(rf"{_HEX_GROUPS}(?:::{_HEX_GROUPS})?")
_IPV4_MAPPED: Final = [0, 0, 0, 0, 0, 0xFFFF]


def _ipv6_groups(text: str) -> list[int] | None:
    """The 8 groups of an IPv6 address written in hex groups only (no IPv4 tail, no scope), else None."""
    if not _IPV6_HEX.fullmatch(text):
        return None
    head, double, tail = text.partition("::")
    left = head.split(":") if head else []
    right = tail.split(":") if tail else []
    missing = 8 - len(left) - len(right)
    if missing < 1 if double else missing != 0:
        return None
    return [*(int(part, 16) for part in left), *([0] * missing), *(int(part, 16) for part in right)]


def _compressed_ipv6(groups: list[int]) -> str:
    """RFC 5952 text, as ipaddress writes it: lowercase, the first longest run of 2+ zero groups as ::."""
    best_start, best_length, start = 0, 0, 0
    for i, group in enumerate([*groups, 1]):  # the sentinel closes a run that reaches the end
        if group:
            if i - start > best_length:
                best_start, best_length = start, i - start
            start = i + 1
    hextets = [f"{group:x}" for group in groups]
    if best_length < 2:
        return ":".join(hextets)
    return ":".join(hextets[:best_start]) + "::" + ":".join(hextets[best_start + best_length :])


def ip_address(value: str) -> str | None:
    """client_ip_address: a valid IPv4 or IPv6 address, no spaces [3.1]; IPv6 in its compressed form.

    IPv6 written in hex groups is parsed and compressed here (a third of ipaddress's cost); every other
    form (an IPv4 tail, a scope id, an IPv4-mapped address, anything invalid) is left to ipaddress.
    """
    text = value.strip()
    if _IPV4.fullmatch(text):
        return text
    if (groups := _ipv6_groups(text)) is not None and groups[:6] != _IPV4_MAPPED:
        return _compressed_ipv6(groups)
    import ipaddress  # rare forms only

    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def fb_cookie(value: str) -> str | None:
    """fbc/fbp: `fb.{subdomain_index}.{creation_time_ms}.{value}` [3.1], kept exactly as sent."""
    text = value.strip()
    return text if _FB_COOKIE.fullmatch(text) else None


def integer_id(value: str) -> str | None:
    """fb_login_id/lead_id: digits only (Meta types them as integers) [3.1]."""
    text = value.strip()
    return text if text.isascii() and text.isdigit() else None


def advertising_id(value: str) -> str | None:
    """madid: the IDFA/GAID as sent; the all-zero id of an iOS user who denied tracking is dropped [4]."""
    text = value.strip()
    return text if text.strip("0-") else None  # nothing left once zeros and dashes go: empty or all-zero


def plain(value: str) -> str | None:
    """Any other raw key: trimmed, sent as is."""
    return value.strip() or None


RAW_NORMALIZERS: Final[Mapping[str, FieldNormalizer]] = MappingProxyType({
    "client_ip_address": ip_address, "client_user_agent": plain, "fbc": fb_cookie, "fbp": fb_cookie,
    "subscription_id": plain, "fb_login_id": integer_id, "lead_id": integer_id, "madid": advertising_id,
    "anon_id": plain, "ctwa_clid": plain, "page_id": plain, "page_scoped_user_id": plain,
    "ig_account_id": plain, "ig_sid": plain,
})  # fmt: skip
# Raw keys Meta types as integers [3.1].
INTEGER_FIELDS: Final = frozenset({"fb_login_id", "lead_id"})


@functools.lru_cache(maxsize=512)
def field_table(country_code: str | None, max_year: int) -> Mapping[str, FieldNormalizer]:
    """The hashed-field normalizers for events from `country_code` (ISO alpha-2 lower) in `max_year`.

    Cached per context, so the normalizer objects are stable keys for the hash cache.
    """
    return {  # a plain dict: read on every field of every event
        "em": email, "ph": functools.partial(phone, country_code=country_code), "fn": name, "ln": name,
        "ge": gender, "db": functools.partial(date_of_birth, max_year=max_year), "ct": city,
        "st": functools.partial(state, country_code=country_code),
        "zp": functools.partial(zip_code, country_code=country_code), "country": country,
        "external_id": external_id, "f5first": first5, "f5last": first5, "fi": initial,
        "dobd": birth_day, "dobm": birth_month, "doby": functools.partial(birth_year, max_year=max_year),
    }  # fmt: skip
