"""Phone numbers to E.164 digits without `+`, the form Meta hashes (meta-capi.md §0, §3.1, §3.4).

Meta: remove symbols, letters and leading zeros, and always include the country code. The SDK never adds
a country code and keeps the trunk zero after one (`+44 020…`), so we use libphonenumber's metadata
(the `phonenumbers` package): a national number gets the country code of the event's country or the
destination's default, and `+44 (0)20…` loses its trunk zero. A number already written as `+` and
digits with no trunk zero takes a fast path that skips the full parse (~40 µs) for a length check.
"""

from __future__ import annotations

import re
import unicodedata
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


def _fast_e164(text: str) -> str | None:
    """Digits of a `+CC…` number whose national part has no trunk zero, if its length is possible."""
    for size in (1, 2, 3):
        code = int(text[1 : 1 + size])
        if code in _CALLING_CODES:
            national = text[1 + size :]
            if national.startswith("0"):
                return None  # maybe a trunk zero (or Italy's kept zero): let the library decide
            number = PhoneNumber(country_code=code, national_number=int(national))
            return text[1:] if phonenumbers.is_possible_number(number) else ""
    return ""


def _parse(text: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    # the library's E.164 keeps Italy's leading zero, which is part of the number there
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def e164_digits(value: str, region: str | None) -> str | None:
    """E.164 digits without `+` for `value`, or None when it is not a possible phone number.

    `region` is an ISO alpha-2 code (upper case) used for numbers written without a country code; with
    None such numbers are read as already international (the SDK's reading: `1 650…` is +1 650…).
    A leading `00` is the international prefix almost everywhere and is read as `+`.
    """
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value)  # full-width digits and plus sign
    text = _EXTENSION.sub("", value.strip())
    compact = text.translate(_FORMATTING)
    if _E164.fullmatch(compact):
        fast = _fast_e164(compact)
        if fast is not None:
            return fast or None
    if not _DIGITS_OR_PLUS.fullmatch(compact):
        return None  # letters or symbols left: Meta says remove them, so nothing reliable remains
    if compact.startswith("+00"):
        compact = "+" + compact[3:]
    elif compact.startswith("00") and not compact.startswith("000"):
        compact = "+" + compact[2:]
    if compact.startswith("+"):
        return _parse(compact, None)
    if region is not None:
        national = _parse(compact, region)
        if national is not None:
            return national
    return _parse("+" + compact, None)
