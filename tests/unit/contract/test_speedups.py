"""The stage's fast paths give exactly the outcomes of its general paths (speed only, never results)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.avro.schema import load_schema
from stream.contract import appdata, fields, userdata
from stream.contract.normalize import NormalizeSettings, normalize_event
from stream.contract.results import Dropped, Outcome, Rejection, outcome

NOW = 1_790_000_000
CFG = NormalizeSettings(default_country="US")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record_fields(name: str) -> list[str]:
    field = next(f for f in load_schema()["fields"] if f["name"] == name)
    types = field["type"] if isinstance(field["type"], list) else [field["type"]]
    record = next(t for t in types if isinstance(t, dict))
    return [f["name"] for f in record["fields"]]


USER_DATA_KEYS = _record_fields("user_data")
TEXT = st.sampled_from(["", " ", "Ann", "ann@example.com", "+44 20 7946 0958", "2001:db8::1", "10.0.0.1", "0"])
VALUES = st.one_of(st.none(), TEXT, st.text(max_size=12), st.integers(-2, 2), st.lists(TEXT, max_size=2))


def _event(user_data: dict[str, Any]) -> dict[str, Any]:
    return {"event_name": "Lead", "event_time": NOW - 60, "action_source": "website", "user_data": user_data,
            "event_source_url": "https://example.com", "consent": True}  # fmt: skip


def test_avro_user_data_keys_are_the_fast_path_keys() -> None:
    """A decoded Avro user_data (every schema key) is read in one call: the fast path knows those keys."""
    assert sorted(userdata._AVRO_KEYS) == sorted(USER_DATA_KEYS)


@settings(max_examples=200, deadline=None, database=None)
@given(
    sparse=st.dictionaries(st.sampled_from(USER_DATA_KEYS), VALUES, max_size=8),
    extra=st.sampled_from([{}, {"x": "1"}, {"ig_sid": "7"}]),
)
def test_avro_shaped_user_data_matches_the_sparse_json_shape(sparse: dict[str, Any], extra: dict[str, Any]) -> None:
    """Every schema key present (None when unset, as Avro decodes) gives the outcome of the keys omitted."""
    full = dict.fromkeys(USER_DATA_KEYS) | sparse
    assert normalize_event(_event(full), NOW, CFG) == normalize_event(_event(sparse), NOW, CFG)
    assert normalize_event(_event(full | extra), NOW, CFG) == normalize_event(_event(sparse | extra), NOW, CFG)


def _phone_hash(user_data: dict[str, Any], default_country: str | None) -> list[str] | None:
    outcome = normalize_event(_event(user_data), NOW, NormalizeSettings(default_country=default_country))
    assert outcome.event is not None
    sent: list[str] | None = outcome.event["user_data"].get("ph")
    return sent


def test_event_country_is_found_inside_the_person_cache() -> None:
    """The event's own country, else the destination's default, picks the phone's country on every hit."""
    national = {"ph": "020 7946 0958", "client_user_agent": "ua", "em": "a@example.com"}
    london = [sha("442079460958")]
    for _ in range(3):  # the first pass fills the person cache, the others hit it
        assert _phone_hash(national | {"country": "United Kingdom"}, "US") == london
        assert _phone_hash(national | {"country": ["xx", "gb"]}, None) == london
        assert _phone_hash(national, "GB") == london
        assert _phone_hash(national, "US") != london


EXTINFO = [
    "a2",
    "com.example",
    "1.0",
    "1",
    "14",
    "Pixel",
    "en_US",
    "UTC",
    "",
    "1080",
    "2400",
    "2.75",
    "8",
    "128",
    "64",
    "",
]
ALIKE = [1, 1.0, True, "1", " 1"]  # equal, or alike once printed, yet each normalizes differently


def _variants() -> list[dict[str, Any]]:
    apps = [{"advertiser_tracking_enabled": flag, "extinfo": EXTINFO} for flag in ALIKE]
    apps += [{"advertiser_tracking_enabled": True, "extinfo": [*EXTINFO[:9], slot, *EXTINFO[10:]]} for slot in ALIKE]
    apps += [{"advertiser_tracking_enabled": True, "extinfo": EXTINFO, "vendor_id": value} for value in ALIKE]
    return apps


def test_app_data_cache_tells_equal_values_of_different_types_apart() -> None:
    """True, 1, 1.0 and "1" are equal or alike as keys, yet each app_data gets its own uncached outcome."""
    apps = _variants()
    want = [appdata._app_data(app, True) for app in apps]
    assert len({repr(w) for w in want}) > len(ALIKE)  # the variants really do normalize differently
    appdata.set_cache_size(appdata.DEFAULT_CACHE_SIZE)
    got = []
    for app in apps:  # in one cache: earlier app_data fill it for later ones
        dropped: list[Dropped] = []
        result = appdata.normalize_app_data(app, required=True, dropped=dropped)
        got.append((result, tuple(dropped)))
    assert got == want


@settings(max_examples=300, deadline=None, database=None)
@given(
    day=st.dates(datetime.date(1900, 1, 1), datetime.date(2026, 12, 31)),
    form=st.sampled_from(["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d", "%b %d, %Y"]),
)
def test_date_of_birth_formats_as_strftime(day: datetime.date, form: str) -> None:
    """db leaves as strftime("%Y%m%d") of the date, in every accepted input form."""
    value = day.strftime(form)
    assert fields.date_of_birth(value, 2026) == day.strftime("%Y%m%d")


def _ipaddress_form(text: str) -> str | None:
    try:
        return str(ipaddress.IPv6Address(text.strip())) if not fields._IPV4.fullmatch(text.strip()) else text.strip()
    except ValueError:
        return None


@st.composite
def ipv6_texts(draw: st.DrawFn) -> str:
    """IPv6 addresses written every way: runs of zeros, leading zeros, any case, :: anywhere it fits."""
    groups = draw(
        st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xDB8]) | st.integers(0, 0xFFFF), min_size=8, max_size=8)
    )
    parts = [draw(st.sampled_from(["{:x}", "{:X}", "{:04x}", "{:01x}"])).format(g) for g in groups]
    start = draw(st.integers(0, 8))
    end = draw(st.integers(start, 8))
    if end - start >= 1 and all(g == 0 for g in groups[start:end]) and draw(st.booleans()):
        return ":".join(parts[:start]) + "::" + ":".join(parts[end:])
    return ":".join(parts)


@settings(max_examples=500, deadline=None, database=None)
@given(text=ipv6_texts() | st.text(st.sampled_from("0123456789abcdefABCDEF:.%"), max_size=41))
def test_ip_address_writes_ipv6_as_ipaddress_does(text: str) -> None:
    """client_ip_address accepts exactly what ipaddress accepts and writes it in ipaddress's form."""
    assert fields.ip_address(text) == _ipaddress_form(text)


@pytest.mark.parametrize(
    "text", ["::ffff:1.2.3.4", "::1.2.3.4", "::ffff:102:304", "::ffff:0:0", "fe80::1%eth0", "64:ff9b::1.2.3.4", "::"]
)
def test_ip_address_leaves_mapped_embedded_and_scoped_forms_to_ipaddress(text: str) -> None:
    """IPv4-mapped, IPv4-embedded and scoped addresses come out exactly as ipaddress writes them."""
    assert fields.ip_address(text) == str(ipaddress.IPv6Address(text))


IPV4_TEXTS = st.lists(
    st.sampled_from(["0", "1", "9", "10", "01", "99", "100", "199", "249", "250", "255", "256", "300", "1000", ""]),
    min_size=3,
    max_size=5,
).map(".".join) | st.text(st.sampled_from("0123456789. \t:a"), max_size=18)


@settings(max_examples=500, deadline=None, database=None)
@given(text=IPV4_TEXTS, spaces=st.sampled_from(["", " ", "\t"]))
def test_plain_ipv4_check_agrees_with_ip_address(text: str, spaces: str) -> None:
    """An address PLAIN_IPV4 accepts is one ip_address keeps unchanged; user_data takes it without the cache."""
    value = spaces + text
    if fields.PLAIN_IPV4(value):
        assert fields.ip_address(value) == value
    user = {"client_ip_address": value, "external_id": "x"}
    dropped: list[Dropped] = []
    got = userdata.normalize_user_data(
        user, default_country=None, max_year=2026, hash_external_id=True, dropped=dropped
    )
    want = fields.ip_address(value)
    assert got.get("client_ip_address") == want
    reason = None if want is not None or not value else "invalid_ip" if value.strip() else "empty"
    assert dropped == ([Dropped("user_data.client_ip_address", reason)] if reason else [])


def _advertising_id_by_set(value: str) -> str | None:
    """The first definition of madid: dropped when empty or made of zeros and dashes only."""
    text = value.strip()
    return None if not text or set(text) <= set("0-") else text


@settings(max_examples=500, deadline=None, database=None)
@given(text=st.text(st.sampled_from("0-0- \tA1f"), max_size=40) | st.uuids().map(str))
def test_advertising_id_keeps_what_the_set_test_keeps(text: str) -> None:
    """madid's strip test drops exactly the empty and all-zero ids the set test dropped."""
    assert fields.advertising_id(text) == _advertising_id_by_set(text)


@settings(max_examples=300, deadline=None, database=None)
@given(
    field=st.sampled_from(["em", "ph", "fn", "ct", "zp", "external_id", "f5first", "dobd", "doby"]),
    value=TEXT | st.text(max_size=12),
    listed_first=st.booleans(),
)
def test_hash_cache_keeps_lists_and_digests_apart(field: str, value: str, listed_first: bool) -> None:
    """One cache serves list keys (the one-value list) and scalar keys (the digest), never one for the other."""
    userdata.set_hash_cache_size(userdata.DEFAULT_HASH_CACHE_SIZE)
    try:
        normalizer = fields.field_table("us", 2026)[field]
        digest = userdata.hash_value(normalizer, value)
        for listed in (listed_first, not listed_first, listed_first):  # the second and third calls are hits
            got = userdata._hash(normalizer, value, listed)
            assert got == (None if digest is None else [digest] if listed else digest)
    finally:
        userdata.set_hash_cache_size(userdata.DEFAULT_HASH_CACHE_SIZE)


@pytest.mark.parametrize(
    "args",
    [
        ({"event_name": "Lead"}, None, ()),
        (None, Rejection("bad_record", "x"), (Dropped("user_data.em", "invalid_email"),)),
        (None, None, ()),
    ],
)
def test_outcome_builds_what_the_dataclass_builds(args: tuple[Any, ...]) -> None:
    """results.outcome sets every field of Outcome, as Outcome(...) does (a new field would fail here)."""
    fast, slow = outcome(*args), Outcome(*args)
    assert type(fast) is Outcome
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert [getattr(fast, f.name) for f in dataclasses.fields(Outcome)] == list(args)
