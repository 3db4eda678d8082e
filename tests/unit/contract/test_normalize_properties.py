"""Properties of the normalize stage, and a differential test against Meta's SDK where §3.4 finds no fault."""

from __future__ import annotations

import datetime
import re
import unicodedata
from typing import Any

import phonenumbers
import pycountry
import pytest
from facebook_business.adobjects.serverside.normalize import Normalize
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stream.contract import fields, meta, userdata
from stream.contract.customdata import currency
from stream.contract.normalize import REJECTION_REASONS, NormalizeSettings, normalize_event, set_cache_size
from stream.contract.places import US_STATES

NOW = 1_790_000_000
YEAR = 2026
HEX64 = re.compile(r"[0-9a-f]{64}")
SPACES = st.sampled_from(["", " ", "  ", "\t", " \n"])
TABLE = fields.field_table(None, YEAR)


def ours(field: str, value: str) -> str | None:
    return userdata.hash_value(TABLE[field], value)


def sdk(field: str, value: str) -> str | None:
    """The SDK's hash, or None where it raises (it refuses the value)."""
    try:
        result: str | None = Normalize.normalize_field(field, value)
    except (TypeError, ValueError):
        return None
    return result


def padded(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(SPACES, inner, SPACES).map("".join)


def _stable_letter(ch: str) -> bool:
    # letters that NFKC leaves alone and that lowercase to letters or combining marks: there Meta's rule
    # (lowercase, no punctuation) and the SDK's (lowercase) agree, so any difference would be our bug
    lowered = ch.lower()
    return (
        unicodedata.normalize("NFKC", ch) == ch
        and unicodedata.normalize("NFKC", lowered) == lowered
        and all(c.isalpha() or unicodedata.combining(c) for c in lowered)
    )


LETTERS = st.characters(categories=("Lu", "Ll", "Lo")).filter(_stable_letter)
WORDS = st.text(LETTERS, min_size=1, max_size=12)
ASCII_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LOCAL = st.text(st.sampled_from(ASCII_ALNUM + "._+-"), min_size=1, max_size=15)
LABEL = st.text(st.sampled_from(ASCII_ALNUM + "-"), min_size=1, max_size=10)
TLD = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=2, max_size=6)
EMAILS = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}", LOCAL, st.lists(LABEL, min_size=1, max_size=3), TLD
)
REGIONS = [
    "US",
    "GB",
    "DE",
    "FR",
    "BR",
    "IN",
    "JP",
    "MX",
    "ES",
    "IT",
    "PL",
    "KR",
    "NG",
    "ID",
    "CA",
    "AU",
    "NL",
    "SE",
    "ZA",
    "AR",
]


@st.composite
def international_phones(draw: st.DrawFn) -> str:
    """Valid mobile numbers written internationally (+CC, no trunk zero), as the SDK expects them."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    national = str(example.national_number)
    tail = draw(st.integers(0, 9999))
    number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail:04d}")
    style = draw(st.sampled_from([phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL]))
    text = phonenumbers.format_number(number, style)
    return draw(st.sampled_from([text, "00" + text[1:].replace(" ", "")]))


def _mixed_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def country_codes(draw: st.DrawFn) -> str:
    code = draw(st.sampled_from(sorted(c.alpha_2 for c in pycountry.countries)))
    text = _mixed_case(draw, code.lower())
    return draw(st.sampled_from([text, f"{text[0]}.{text[1]}.", f"{text[0]} {text[1]}"]))


@st.composite
def places_text(draw: st.DrawFn) -> str:
    """City or state text: letters with the separators the SDK removes (spaces, digits, . - ( ))."""
    parts = draw(
        st.lists(st.tuples(WORDS, st.sampled_from([" ", ".", "-", "(", ")", "1", "42 "])), min_size=1, max_size=3)
    )
    return "".join(w + s for w, s in parts)


ZIPS = st.text(st.sampled_from(ASCII_ALNUM + " "), min_size=1, max_size=10)
DATES = st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(YEAR, 12, 31)).map(
    lambda d: d.strftime("%Y%m%d")
)

# field -> inputs on which §3.4 documents no divergence between Meta's rules and the SDK.
AGREEING_INPUTS: dict[str, st.SearchStrategy[str]] = {
    "em": padded(EMAILS),
    "ph": padded(international_phones()),
    "fn": padded(WORDS),
    "ln": padded(WORDS),
    "f5first": padded(WORDS),
    "f5last": padded(WORDS),
    "fi": padded(WORDS),
    "ge": padded(st.sampled_from(["m", "f", "M", "F"])),
    "ct": padded(places_text()),
    "st": padded(places_text()),
    "zp": padded(ZIPS),
    "country": padded(country_codes()),
    "db": padded(DATES),
    "dobd": padded(st.integers(0, 99).map(str) | st.integers(1, 9).map(lambda d: f"0{d}")),
    "dobm": padded(st.integers(0, 99).map(str) | st.integers(1, 9).map(lambda d: f"0{d}")),
    "doby": padded(st.integers(1900, YEAR).map(str)),
}


def _not_documented_divergence(field: str, value: str) -> bool:
    text = value.strip().lower()
    if not text:
        return False  # the SDK hashes "" for a blank value (see test_blank_values_are_dropped_not_hashed)
    if re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{64}", text):
        return False  # already-hashed row of §3.4
    if field == "st":  # US state names -> codes (§3.4 st row)
        letters = "".join(c for c in text if c.isalpha())
        return letters not in US_STATES or US_STATES[letters] == letters
    if field == "zp":  # US ZIP+4 without dash -> 5 digits (§3.4 zp row)
        return not re.fullmatch(r"[0-9]{9}", text.replace(" ", ""))
    return True


@pytest.mark.parametrize("field", sorted(AGREEING_INPUTS))
def test_agrees_with_sdk_where_sdk_follows_meta(field: str) -> None:
    """Where §3.4 documents no SDK divergence, our hash equals Normalize.normalize_field's (or both refuse)."""

    @settings(max_examples=80, deadline=None, database=None)
    @given(value=AGREEING_INPUTS[field])
    def check(value: str) -> None:
        assume(_not_documented_divergence(field, value))
        assert ours(field, value) == sdk(field, value)

    check()


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("field", ["fn", "ln", "ct", "st", "zp", "external_id"])
def test_blank_values_are_dropped_not_hashed(field: str) -> None:
    """A blank value is dropped; the SDK sends SHA-256 of the empty string (a divergence §3.4 misses)."""
    assert ours(field, "   ") is None
    if field != "external_id":  # the SDK sends external_id unhashed
        assert sdk(field, "   ") == EMPTY_SHA256


@settings(max_examples=150, deadline=None, database=None)
@given(
    code=padded(st.sampled_from(sorted(c.alpha_3 for c in pycountry.currencies))).map(str.lower)
    | st.sampled_from(sorted(c.alpha_3 for c in pycountry.currencies))
)
def test_currency_agrees_with_sdk(code: str) -> None:
    """ISO 4217 codes in any case leave lowercase, as the SDK sends them."""
    assert currency(code) == Normalize.normalize_field_skip_hashing("currency", code)


@settings(max_examples=200, deadline=None, database=None)
@given(field=st.sampled_from(sorted(TABLE)), value=st.text(), country=st.sampled_from([None, "us", "gb", "jp"]))
def test_field_never_raises_and_hashes_are_hex(field: str, value: str, country: str | None) -> None:
    """Any unicode in any hashed field gives a 64 lowercase hex hash or a drop, never an exception."""
    digest = userdata.hash_value(fields.field_table(country, YEAR)[field], value)
    assert digest is None or HEX64.fullmatch(digest)


@settings(max_examples=150, deadline=None, database=None)
@given(field=st.sampled_from(sorted(fields.RAW_NORMALIZERS)), value=st.text())
def test_raw_field_never_raises(field: str, value: str) -> None:
    """Any unicode in a raw key gives a trimmed string or a drop."""
    result = fields.RAW_NORMALIZERS[field](value)
    assert result is None or (result == result.strip() and result)


SCALARS = st.one_of(st.none(), st.text(max_size=30), st.integers(), st.floats(), st.booleans())
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2))
USER_KEYS = st.sampled_from([*userdata.HASHED_KEYS, *userdata.RAW_KEYS, "email", ""])


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """Records shaped like the schema but with anything in the values, including wrong types."""
    return {
        "event_name": draw(st.sampled_from(["Purchase", "MobileAppInstall", "Lead", ""]) | SCALARS),
        "event_time": draw(st.integers(NOW - 9 * 86400, NOW + 900) | SCALARS),
        "event_id": draw(SCALARS),
        "action_source": draw(st.sampled_from(sorted(meta.ACTION_SOURCES)) | SCALARS),
        "consent": draw(st.sampled_from([True, None, False]) | SCALARS),
        "user_data": draw(st.dictionaries(USER_KEYS, VALUES, max_size=8) | SCALARS),
        "custom_data": draw(
            st.dictionaries(
                st.sampled_from(
                    [
                        "value",
                        "currency",
                        "contents",
                        "content_ids",
                        "success",
                        "custom_properties",
                        "num_items",
                        "level",
                        "x",
                    ]
                ),
                VALUES,
                max_size=4,
            )
            | SCALARS
        ),
        "app_data": draw(
            st.fixed_dictionaries(
                {"advertiser_tracking_enabled": SCALARS, "extinfo": st.lists(SCALARS, max_size=18) | SCALARS}
            )
            | SCALARS
        ),
        "data_processing_options": draw(st.sampled_from([None, [], ["LDU"]]) | VALUES),
        "original_event_data": draw(VALUES),
    }


def _hashed_values(event: dict[str, Any], hash_external_id: bool) -> list[str]:
    user = event["user_data"]
    out: list[str] = []
    for key in meta.HASHED_LIST_FIELDS:
        if key in user and (key != "external_id" or hash_external_id):
            assert isinstance(user[key], list)
            assert user[key] == sorted(set(user[key]))
            out.extend(user[key])
    out.extend(user[key] for key in meta.HASHED_SCALAR_FIELDS if key in user)
    return out


@settings(max_examples=150, deadline=None, database=None)
@given(record=records(), require_consent=st.booleans(), hash_external_id=st.booleans())
def test_event_never_raises_and_is_well_formed(
    record: dict[str, Any], require_consent: bool, hash_external_id: bool
) -> None:
    """Any record gives exactly one of an event (hashed keys as sorted 64-hex) or a documented rejection."""
    cfg = NormalizeSettings(default_country="US", require_consent=require_consent, hash_external_id=hash_external_id)
    outcome = normalize_event(record, NOW, cfg)
    assert (outcome.event is None) != (outcome.rejection is None)
    if outcome.rejection is not None:
        assert outcome.rejection.reason in REJECTION_REASONS
        return
    assert outcome.event is not None
    assert all(HEX64.fullmatch(h) for h in _hashed_values(outcome.event, hash_external_id))
    assert not {"app_id", "consent"} & set(outcome.event)
    extinfo = outcome.event.get("app_data", {}).get("extinfo")
    assert extinfo is None or (len(extinfo) == meta.EXTINFO_LENGTH and all(isinstance(s, str) for s in extinfo))


@settings(max_examples=150, deadline=None, database=None)
@given(
    field=st.sampled_from(sorted(meta.HASHED_FIELDS)),
    digest=st.text("0123456789abcdefABCDEF", min_size=64, max_size=64),
    pad=SPACES,
)
def test_prehashed_values_pass_through(field: str, digest: str, pad: str) -> None:
    """A 64-hex value in any hashed key is sent as it is, lowercased, never hashed again."""
    user = {field: pad + digest + pad, "anon_id": "XZ1"}
    record = {"event_name": "Lead", "event_time": NOW, "action_source": "other", "user_data": user}
    outcome = normalize_event(record, NOW, NormalizeSettings())
    assert outcome.event is not None, outcome.rejection
    sent = outcome.event["user_data"][field]
    assert sent == ([digest.lower()] if field in meta.HASHED_LIST_FIELDS else digest.lower())


@settings(max_examples=100, deadline=None, database=None)
@given(record=records())
def test_output_is_deterministic_with_or_without_caches(record: dict[str, Any]) -> None:
    """The same record gives the same outcome twice, from a warm cache, and with caching off."""
    cfg = NormalizeSettings(default_country="GB")
    first = normalize_event(record, NOW, cfg)
    assert normalize_event(record, NOW, cfg) == first
    set_cache_size(0)
    try:
        assert normalize_event(record, NOW, cfg) == first
    finally:
        set_cache_size(userdata.DEFAULT_HASH_CACHE_SIZE)
