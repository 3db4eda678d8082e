"""Phone numbers to E.164 digits without `+`, the form Meta hashes (contract README §0, §3.1, §3.4).

Meta: remove symbols, letters and leading zeros, and always include the country code. The SDK never adds
a country code and keeps the trunk zero after one (`+44 020…`), so we use libphonenumber's metadata
(the `phonenumbers` package): a national number gets the country code of the event's country or the
destination's default, and `+44 (0)20…` loses its trunk zero. The full parse costs ~30-40 µs, so the
plain cases take fast paths that read the same metadata and decide as the parse does (national prefix
stripped where it strips it, possible lengths of the code's main region), in ~4 µs: `+CC…` numbers with
or without a trunk prefix, and national numbers of any region whose prefix rule does not rewrite them.
Anything else (dialling prefixes, rewrite rules that apply, Italy's kept zero) goes to the full parse;
tests/unit/test_phones.py checks the fast paths against it on generated numbers of every region.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber

# Country calling codes are prefix-free and 1-3 digits long (ITU E.164).
_CALLING_CODES: Final = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
# E.164 allows at most 15 digits; fewer than 7 is never a reachable subscriber number.
_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
# Formatting people type: spaces, dashes, dots, slashes, brackets.
_FORMATTING: Final = str.maketrans("", "", " \t\n\r\u00a0-./()[]")
# An extension is not part of the line Meta matches on; we drop it ("+1 650 555 1212 ext 9").
_EXTENSION: Final = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*[0-9]{1,6}\s*$", re.IGNORECASE)
_DIGITS_OR_PLUS: Final = re.compile(r"\+?[0-9]+")


@functools.lru_cache(maxsize=4096)
def _length_check(code: int, length: int) -> int:
    """libphonenumber's is_possible_number_with_reason for a country code and a national number length.

    Its answer depends on nothing else (the possible lengths of the code's main region), so it is
    computed once per (code, length) on a stand-in number of that length.
    """
    stand_in = PhoneNumber(country_code=code, national_number=int("9" * length))
    reason: int = phonenumbers.is_possible_number_with_reason(stand_in)
    return reason


# A complete number. libphonenumber's is_possible_number also accepts IS_POSSIBLE_LOCAL_ONLY (a number
# without its area code, `12345` in GB): Meta cannot match that to anyone, so it is no phone number (§0).
_POSSIBLE: Final = phonenumbers.ValidationResult.IS_POSSIBLE


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the fast paths need from one region's libphonenumber metadata."""

    code: int
    code_text: str
    national_prefix: re.Pattern[str] | None
    transform: bool  # the prefix pattern may rewrite the number (BR carrier codes, JP, GG)
    general: re.Pattern[str] | None
    idd: re.Pattern[str] | None
    possible: frozenset[int]  # national lengths _test_number_length calls possible (local-only excluded)


def _plan_from(md: phonenumbers.PhoneMetadata | None) -> _Plan | None:
    if md is None or md.country_code is None or md.general_desc is None:
        return None
    desc = md.general_desc
    return _Plan(
        md.country_code,
        str(md.country_code),
        re.compile(md.national_prefix_for_parsing) if md.national_prefix_for_parsing else None,
        bool(md.national_prefix_transform_rule),
        re.compile(desc.national_number_pattern) if desc.national_number_pattern else None,
        re.compile(md.international_prefix) if md.international_prefix else None,
        frozenset(desc.possible_length) - frozenset(desc.possible_length_local_only or ()),
    )


@functools.lru_cache(maxsize=512)
def _plan(region: str) -> _Plan | None:
    """A region's plan (national numbers are read with that region's metadata)."""
    return _plan_from(phonenumbers.PhoneMetadata.metadata_for_region(region))


@functools.lru_cache(maxsize=512)
def _code_plan(code: int) -> _Plan | None:
    """A calling code's plan: `+CC…` numbers are read with the metadata of the code's main region."""
    region = phonenumbers.region_code_for_country_code(code)
    return _plan_from(phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region))


def _national_part(digits: str, plan: _Plan) -> str | None:
    """The national significant number as libphonenumber's parse reads it, None to ask the full parse.

    Mirrors its national prefix step (maybe_strip_national_prefix_carrier_code, then the length test):
    the prefix is stripped unless that makes a viable number unviable, and kept when the rest is not a
    possible length. Leading zeros left stay part of the number, as the parse keeps them (Italy's
    `italian_leading_zero`), and count in its length. Returns "" when the parse would read the number
    the same way and then find its length impossible (so the answer is "not a phone number"). A prefix
    match that would rewrite the number, a stripping decision on a length that is not plainly possible
    and an all-zero number are left to the full parse (None).
    """
    national = digits
    if plan.national_prefix is not None and (m := plan.national_prefix.match(digits)):
        groups = m.groups()
        if plan.transform and (not groups or groups[-1] is not None):
            return None
        rest = digits[m.end() :]
        viable = plan.general is not None and plan.general.fullmatch(digits) is not None
        stays_viable = plan.general is not None and plan.general.fullmatch(rest) is not None
        if not viable or stays_viable:
            if len(rest) not in plan.possible:
                return None  # parse keeps or strips by a finer length test: let it decide
            national = rest
    if not national.strip("0"):
        return None
    # what is_possible_number then checks, against the possible lengths of the code's main region
    return national if _length_check(plan.code, len(national)) == _POSSIBLE else ""


def _fast_e164(text: str) -> str | None:
    """Digits of a plain `+CC…` number, "" for an unknown calling code, None to ask the full parse."""
    for size in (1, 2, 3):
        code = int(text[1 : 1 + size])
        if code in _CALLING_CODES:
            plan = _code_plan(code)
            if plan is None or (national := _national_part(text[1 + size :], plan)) is None:
                return None
            return f"{plan.code_text}{national}" if national else ""
    return ""


def _fast_national(digits: str, region: str) -> str | None:
    """E.164 digits of a national number, decided as `phonenumbers.parse` decides, in the plain cases.

    "" when the parse would read the number the same way and find it impossible. A number that may
    carry an international dialling prefix or start with the country code is left to the full parse,
    as is anything `_national_part` declines.
    """
    plan = _plan(region)
    if plan is None or digits.startswith(plan.code_text) or (plan.idd is not None and plan.idd.match(digits)):
        return None
    national = _national_part(digits, plan)
    if national is None:
        return None
    return f"{plan.code_text}{national}" if national else ""


def _parse(text: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != _POSSIBLE:
        return None  # impossible, or possible only locally (no area code)
    # the library's E.164 keeps Italy's leading zero, which is part of the number there
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def _plain(value: str) -> str:
    """`value` as libphonenumber reads it: NFKC (full-width digits and plus sign), the decimal digits of
    every script (Arabic-Indic, Persian, Devanagari, ...) as ASCII digits, and the invisible format marks
    (right-to-left marks, zero-width spaces) that text fields and copies from RTL text add, removed."""
    return "".join(
        str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii()
        else "" if unicodedata.category(ch) == "Cf" else ch
        for ch in unicodedata.normalize("NFKC", value)
    )


def without_extension(text: str) -> str:
    """`text` without a trailing extension (_EXTENSION); the regex runs only if an x, X or # is present.

    Each of its markers (ext, extension, x, #) holds one of them, and no other character matches x
    case-insensitively; the regex costs ~1 µs, a sixth of a phone number's fast path.
    """
    if "x" in text or "X" in text or "#" in text:
        return _EXTENSION.sub("", text)
    return text


def e164_digits(value: str, region: str | None) -> str | None:
    """E.164 digits without `+` for `value`, or None when it is not a complete possible phone number.

    `region` is an ISO alpha-2 code (upper case) used for numbers written without a country code; with
    None such numbers are read as already international (the SDK's reading: `1 650…` is +1 650…).
    A leading `00` is the international prefix almost everywhere and is read as `+`.
    """
    if not value.isascii():
        value = _plain(value)
    compact = without_extension(value.strip()).translate(_FORMATTING)
    if not _DIGITS_OR_PLUS.fullmatch(compact):
        return None  # letters or symbols left: Meta says remove them, so nothing reliable remains
    if compact.startswith("+00"):
        compact = "+" + compact[3:]
    elif compact.startswith("00") and not compact.startswith("000"):
        compact = "+" + compact[2:]
    if compact.startswith("+"):
        fast = _fast_e164(compact) if _E164.fullmatch(compact) else None
        return (fast or None) if fast is not None else _parse(compact, None)
    if region is not None:
        fast = _fast_national(compact, region)
        national = _parse(compact, region) if fast is None else fast or None
        if national is not None:
            return national
    # not possible as a national number: maybe the country code was written without its +
    plus = "+" + compact
    fast = _fast_e164(plus) if _E164.fullmatch(plus) else None
    return (fast or None) if fast is not None else _parse(plus, None)
