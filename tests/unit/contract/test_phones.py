"""Phone numbers: the fast paths give exactly what libphonenumber's full parse gives."""

from __future__ import annotations

import re
import sys

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.contract import phones

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
TYPES = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
]


@st.composite
def national_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(digits as people type them nationally, region): real numbering plans, random subscriber digits."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES)))
    if example is None:
        digits = draw(st.text("0123456789", min_size=4, max_size=14))
        return digits, region
    national = str(example.national_number)
    keep = draw(st.integers(1, len(national)))
    tail = draw(st.text("0123456789", min_size=len(national) - keep, max_size=len(national) - keep + 1))
    number = phonenumbers.PhoneNumber(
        country_code=example.country_code,
        national_number=int(national[:keep] + tail),
        italian_leading_zero=example.italian_leading_zero,
    )
    text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return "".join(ch for ch in text if ch.isdigit()), region


@settings(max_examples=400, deadline=None, database=None)
@given(case=national_numbers())
def test_fast_national_path_agrees_with_full_parse(case: tuple[str, str]) -> None:
    """Whenever the national fast path answers, the full parse gives the same E.164 digits."""
    digits, region = case
    fast = phones._fast_national(digits, region)
    if fast is not None:
        assert (fast or None) == phones._parse(digits, region)  # "" is the parse's "not possible"


@settings(max_examples=600, deadline=None, database=None)
@given(digits=st.text("0123456789", min_size=1, max_size=16))
def test_fast_e164_path_agrees_with_full_parse(digits: str) -> None:
    """A `+digits` number gets the same answer from the fast path as from the full parse."""
    text = "+" + digits
    fast = phones._fast_e164(text) if phones._E164.fullmatch(text) else None
    if fast is not None:
        assert (fast or None) == phones._parse(text, None)


@pytest.mark.parametrize(
    ("digits", "region"),
    [
        ("07400123456", "GB"),
        ("0612345678", "FR"),
        ("6505551212", "US"),
        ("01020000000", "KR"),
        ("0412345678", "AU"),
        ("01512345678", "DE"),
    ],
)
def test_fast_national_path_takes_common_numbers(digits: str, region: str) -> None:
    """Typical mobile numbers of common countries do not need the full parse."""
    assert phones._fast_national(digits, region) == phones._parse(digits, region)
    assert phones._fast_national(digits, region) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+784776848648", "74776848648"),  # +7 8…: Russia's trunk prefix 8 after the country code
        ("+115912738758", "15912738758"),  # +1 1…: the NANP prefix 1
        ("+4402079460958", "442079460958"),  # +44 (0)20…: the trunk zero people write in brackets
        ("+49015123454991", "4915123454991"),  # +49 (0)151…
    ],
)
def test_fast_e164_path_strips_national_prefixes_as_libphonenumber(text: str, expected: str) -> None:
    """+CC then a national prefix: the fast path strips it exactly where the full parse does."""
    assert phones._parse(text, None) == expected
    assert phones._fast_e164(text) == expected


@st.composite
def international_with_trunk(draw: st.DrawFn) -> str:
    """`+CC` + the national prefix + a real national number: how people write `+44 (0)20…`."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES)))
    md = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if example is None or md is None:
        return "+" + draw(st.text("0123456789", min_size=7, max_size=15))
    national = str(example.national_number)
    keep = draw(st.integers(1, len(national)))
    tail = draw(st.text("0123456789", min_size=len(national) - keep, max_size=len(national) - keep + 1))
    prefix = draw(st.sampled_from([md.national_prefix or "", "0", "1", "8", ""]))
    return f"+{example.country_code}{prefix}{national[:keep]}{tail}"


@settings(max_examples=600, deadline=None, database=None)
@given(text=international_with_trunk())
def test_fast_e164_path_agrees_with_full_parse_on_trunk_prefixes(text: str) -> None:
    """`+CC` numbers with a trunk prefix written in: the fast path, when it answers, equals the full parse."""
    fast = phones._fast_e164(text) if phones._E164.fullmatch(text) else None
    if fast is not None:
        assert (fast or None) == phones._parse(text, None)


@pytest.mark.parametrize(
    ("digits", "region", "expected"),
    [
        ("11961234567", "BR", "5511961234567"),  # a region with prefix rewrite rules, no prefix written
        ("5061234567", "CA", "15061234567"),  # +1 shared with the US: CA's own prefix rules, US lengths
        ("09012345767", "JP", "819012345767"),  # JP's trunk zero (JP has rewrite rules too)
    ],
)
def test_fast_national_path_takes_rewrite_and_shared_code_regions(digits: str, region: str, expected: str) -> None:
    """Regions with rewrite rules or a shared calling code take the fast path when no rewrite applies."""
    assert phones._parse(digits, region) == expected
    assert phones._fast_national(digits, region) == expected


@pytest.mark.parametrize(
    ("digits", "region"),
    [
        ("0211961234567", "BR"),  # a carrier code selected: the rewrite rule applies, full parse
        ("16505551212", "US"),  # starts with the country code: full parse decides
        ("01144207946095", "US"),  # international dialling prefix 011
    ],
)
def test_fast_national_path_defers_hard_cases(digits: str, region: str) -> None:
    """Numbers whose reading needs libphonenumber's full rules are left to it."""
    assert phones._fast_national(digits, region) is None


def _full_parse_only(value: str, region: str | None) -> str | None:
    """e164_digits' reading with every fast path taken out: the reference the fast paths must equal."""
    compact = phones._EXTENSION.sub("", value.strip()).translate(phones._FORMATTING)
    if not phones._DIGITS_OR_PLUS.fullmatch(compact):
        return None
    if compact.startswith("+00"):
        compact = "+" + compact[3:]
    elif compact.startswith("00") and not compact.startswith("000"):
        compact = "+" + compact[2:]
    if compact.startswith("+"):
        return phones._parse(compact, None)
    if region is not None and (national := phones._parse(compact, region)) is not None:
        return national
    return phones._parse("+" + compact, None)


@settings(max_examples=600, deadline=None, database=None)
@given(
    case=national_numbers(),
    written=st.sampled_from(["{}", "+{}", "00{}", "0{}", "({}", "+0{}", "{} ext 12"]),
    with_region=st.booleans(),
)
def test_e164_digits_equals_the_full_parse_reading(case: tuple[str, str], written: str, with_region: bool) -> None:
    """Whatever path a number takes, e164_digits answers what the full parse alone would answer."""
    digits, region = case
    value = written.format(digits)
    assert phones.e164_digits(value, region if with_region else None) == _full_parse_only(
        value, region if with_region else None
    )


@pytest.mark.parametrize(
    ("text", "region"),
    [("+1 (0)2015551584", "US"), ("+52 (0)2221232620", "MX"), ("+1 (0)5062344555", None)],
)
def test_impossible_numbers_are_decided_without_the_full_parse(
    text: str, region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number the fast paths read fully and find impossible is refused without the ~40 µs parse."""
    assert _full_parse_only(text, region) is None

    def no_parse(text: str, region: str | None) -> str | None:
        raise AssertionError(f"full parse called for {text!r}")

    monkeypatch.setattr(phones, "_parse", no_parse)
    assert phones.e164_digits(text, region) is None


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("12345", "GB"),  # no area code: libphonenumber calls it possible only locally
        ("555 1212", "US"),  # a 7-digit NANP number without its area code
    ],
)
def test_numbers_possible_only_locally_are_not_phone_numbers(value: str, region: str) -> None:
    """A number without its area code cannot be matched by Meta: dropped (invalid_phone), never hashed and sent."""
    number = phonenumbers.parse(value, region)
    assert phonenumbers.is_possible_number_with_reason(number) == phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY
    assert phones.e164_digits(value, region) is None
    assert phones._parse(value, region) is None
    assert not phones._fast_national(value.replace(" ", ""), region)  # "" or None: never a number


def test_a_local_only_phone_is_dropped_from_the_event() -> None:
    """At the event level the phone goes with reason invalid_phone and the rest of the event is sent."""
    from stream.contract.normalize import NormalizeSettings, normalize_event

    record = {"event_name": "Purchase", "event_time": 1_700_000_000, "event_id": "e1", "action_source": "app",
              "app_id": "a", "user_data": {"em": "x@y.z", "ph": "12345"},
              "custom_data": {"value": 1.0, "currency": "GBP"},
              "app_data": {"advertiser_tracking_enabled": True,
                           "extinfo": ["a2", "", "", "", "14", "", "", "", "", "", "", "", "", "", "", ""]}}
    outcome = normalize_event(record, 1_700_000_100, NormalizeSettings(default_country="GB"))
    assert outcome.event is not None
    assert "ph" not in outcome.event["user_data"]
    assert ("user_data.ph", "invalid_phone") in [(d.field, d.reason) for d in outcome.dropped]


def _in_script(text: str, zero: int) -> str:
    """`text` with its ASCII digits written in the script whose digit zero is code point `zero`."""
    return text.translate({ord("0") + d: zero + d for d in range(10)})


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        (_in_script("+20 100 123 4567", 0x0660), None, "201001234567"),  # Arabic-Indic (an Arabic keyboard)
        (_in_script("0912 345 6789", 0x06F0), "IR", "989123456789"),  # Persian digits, national form
        (_in_script("+91 98765 43210", 0x0966), None, "919876543210"),  # Devanagari digits
        ("\u200f+966 50 123 4567\u200f", None, "966501234567"),  # right-to-left marks an RTL text field adds
        ("\u202a+1 650 555 1212\u202c", "US", "16505551212"),  # an embedding a copy from RTL text carries
        ("+1 650 555 1212\u200b", "US", "16505551212"),  # a zero-width space from a web form
    ],
)
def test_digits_of_any_script_and_invisible_marks_read_as_libphonenumber_reads_them(
        value: str, region: str | None, expected: str) -> None:
    """libphonenumber reads every script's decimal digits and ignores invisible format characters; so must
    we (the pre-check refused them as 'letters or symbols', dropping the phone as invalid_phone)."""
    number = phonenumbers.parse(value, region)
    assert f"{number.country_code}{number.national_number}" == expected  # the library's own reading
    assert phones.e164_digits(value, region) == expected


@settings(max_examples=500, deadline=None, database=None)
@given(
    text=st.text(st.sampled_from("0123456789 +-()xX#etnsiETNSIo."), max_size=24)
    | st.builds(
        "{} {}{}".format,
        st.sampled_from(["+1 650 555 1212", "020 7946 0958", "", "x"]),
        st.sampled_from(["ext", "Ext.", "EXTENSION", "x", "X", "#", "ex", "extn", ""]),
        st.sampled_from(["9", " 12", "1234567", "", "a"]),
    )
)
def test_extension_check_skips_only_texts_the_regex_leaves(text: str) -> None:
    """without_extension gives what the extension regex gives, with or without its x/X/# check."""
    assert phones.without_extension(text) == phones._EXTENSION.sub("", text)


def test_only_x_and_capital_x_match_x_ignoring_case() -> None:
    """The x/X/# check relies on this: no other character (Kelvin-sign-like folding) is an x to the regex."""
    x = re.compile("x", re.IGNORECASE)
    assert [c for c in map(chr, range(sys.maxunicode + 1)) if x.fullmatch(c)] == ["X", "x"]
