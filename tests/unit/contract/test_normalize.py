"""The normalize stage as a specification: one record in, one Meta event or one rejection out."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from stream.contract import meta
from stream.contract.normalize import (
    NO_CONSENT,
    REJECTION_REASONS,
    Dropped,
    NormalizeSettings,
    Outcome,
    Rejection,
    normalize_event,
)
from stream.tools.samples import generate

NOW = 1_790_000_000
DEFAULTS = NormalizeSettings()
HEX64 = re.compile(r"[0-9a-f]{64}")
EXTINFO = [
    "a2",
    "com.example.app",
    "1.0",
    "1",
    "14",
    "Pixel 8",
    "en_US",
    "PST",
    "",
    "1080",
    "2400",
    "2.75",
    "8",
    "128",
    "64",
    "America/Los_Angeles",
]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def record_factory() -> Callable[..., dict[str, Any]]:
    """A valid JSON-style app Purchase; keyword arguments replace top-level keys."""

    def make(**overrides: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event_name": "Purchase",
            "event_time": NOW - 60,
            "event_id": "order-1",
            "action_source": "app",
            "app_id": "com.example.app",
            "consent": True,
            "user_data": {
                "em": "John_Smith@gmail.com",
                "ph": "+1 (650) 555-1212",
                "madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
                "client_ip_address": "203.0.113.9",
            },
            "custom_data": {"value": 9.99, "currency": "USD"},
            "app_data": {"advertiser_tracking_enabled": True, "extinfo": list(EXTINFO)},
        }
        record.update(overrides)
        return record

    return make


def accepted(outcome: Outcome) -> dict[str, Any]:
    assert outcome.rejection is None, outcome.rejection
    assert outcome.event is not None
    return outcome.event


def rejected(outcome: Outcome) -> str:
    assert outcome.event is None
    assert outcome.rejection is not None
    return outcome.rejection.reason


def test_valid_purchase_becomes_meta_event(record_factory: Callable[..., dict[str, Any]]) -> None:
    """A valid record becomes Meta's server event: hashed arrays, raw strings, 0/1 flags, 16 extinfo slots."""
    event = accepted(normalize_event(record_factory(), NOW, DEFAULTS))
    assert event == {
        "event_name": "Purchase",
        "event_time": NOW - 60,
        "event_id": "order-1",
        "action_source": "app",
        "user_data": {
            "em": ["62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"],
            "ph": ["e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"],
            "madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
            "client_ip_address": "203.0.113.9",
        },
        "custom_data": {"value": 9.99, "currency": "usd"},
        "app_data": {"advertiser_tracking_enabled": 1, "extinfo": EXTINFO},
    }


def test_app_id_and_consent_never_reach_meta(record_factory: Callable[..., dict[str, Any]]) -> None:
    """app_id and consent are ours: routing and policy, not Meta fields."""
    event = accepted(normalize_event(record_factory(), NOW, DEFAULTS))
    assert "app_id" not in event
    assert "consent" not in event


def test_avro_shaped_record_with_every_key(record_factory: Callable[..., dict[str, Any]]) -> None:
    """A decoded Avro record (every key present, None for absent) gives the same event as sparse JSON."""
    sparse = record_factory()
    full = next(generate(1, seed=3, now=NOW))
    for key, value in sparse.items():
        if isinstance(value, dict):
            full[key] = {**dict.fromkeys(full[key] or {}), **value}
        else:
            full[key] = value
    assert normalize_event(full, NOW, DEFAULTS) == normalize_event(sparse, NOW, DEFAULTS)


def test_lists_are_normalized_deduplicated_and_sorted(record_factory: Callable[..., dict[str, Any]]) -> None:
    """Several values of a key leave as one sorted array without duplicates; bad ones are dropped."""
    user = {"em": [" A@B.co ", "a@b.co", "c@d.org", "nope"], "country": "US"}
    outcome = normalize_event(record_factory(user_data=user), NOW, DEFAULTS)
    assert accepted(outcome)["user_data"]["em"] == sorted({sha("a@b.co"), sha("c@d.org")})
    assert outcome.dropped == (Dropped("user_data.em", "invalid_email"),)


def test_hashed_scalars_leave_as_single_hash(record_factory: Callable[..., dict[str, Any]]) -> None:
    """f5first, fi, dobd... are single hashed strings, as the SDK (their only definition) sends them."""
    user = {"em": "a@b.co", "f5first": "Christopher", "fi": "Zoë", "dobd": "1", "doby": "1997"}
    data = accepted(normalize_event(record_factory(user_data=user), NOW, DEFAULTS))["user_data"]
    assert data["f5first"] == sha("chris")
    assert data["fi"] == sha("z")
    assert data["dobd"] == sha("01")
    assert data["doby"] == sha("1997")


def test_event_country_sets_phone_country_code(record_factory: Callable[..., dict[str, Any]]) -> None:
    """A national phone number takes the event's country code, else the destination's default."""
    user = {"ph": "07400 123456", "country": "United Kingdom"}
    data = accepted(normalize_event(record_factory(user_data=user), NOW, DEFAULTS))["user_data"]
    assert data["ph"] == [sha("447400123456")]
    assert data["country"] == [sha("gb")]
    us = NormalizeSettings(default_country="US")
    data = accepted(normalize_event(record_factory(user_data={"ph": "(650) 555-1212"}), NOW, us))["user_data"]
    assert data["ph"] == [sha("16505551212")]


def test_external_id_hashing_is_configurable(record_factory: Callable[..., dict[str, Any]]) -> None:
    """external_id is hashed after trim (case kept) by default, and sent trimmed when hashing is off."""
    user = {"external_id": [" User-7 ", "User-7"]}
    hashed = accepted(normalize_event(record_factory(user_data=user), NOW, DEFAULTS))["user_data"]
    assert hashed["external_id"] == [sha("User-7")]
    plain = NormalizeSettings(hash_external_id=False)
    raw = accepted(normalize_event(record_factory(user_data=user), NOW, plain))["user_data"]
    assert raw["external_id"] == ["User-7"]


def test_integer_ids_are_sent_as_integers(record_factory: Callable[..., dict[str, Any]]) -> None:
    """fb_login_id and lead_id are typed integers at Meta."""
    user = {"em": "a@b.co", "fb_login_id": "1234567", "lead_id": 42}
    data = accepted(normalize_event(record_factory(user_data=user), NOW, DEFAULTS))["user_data"]
    assert data["fb_login_id"] == 1234567
    assert data["lead_id"] == 42


def test_extinfo_is_padded_to_16_strings(record_factory: Callable[..., dict[str, Any]]) -> None:
    """Short extinfo is padded with "", numbers and nulls become strings, slot 0 is lowercased."""
    app = {
        "advertiser_tracking_enabled": False,
        "application_tracking_enabled": True,
        "extinfo": ["I2", "com.x", None, "1", "17.4", "iPhone", "en_US", "PST", "", 1170, 2532],
    }
    data = accepted(normalize_event(record_factory(app_data=app), NOW, DEFAULTS))["app_data"]
    assert data["advertiser_tracking_enabled"] == 0
    assert data["application_tracking_enabled"] == 1
    assert data["extinfo"] == [
        "i2",
        "com.x",
        "",
        "1",
        "17.4",
        "iPhone",
        "en_US",
        "PST",
        "",
        "1170",
        "2532",
        "",
        "",
        "",
        "",
        "",
    ]
    assert all(isinstance(slot, str) for slot in data["extinfo"])


def test_custom_data_keeps_known_keys_and_custom_properties(record_factory: Callable[..., dict[str, Any]]) -> None:
    """Numbers stay numbers, contents keep their ids, custom properties become plain keys, success is 0/1."""
    custom = {
        "value": "142.52",
        "currency": "eur",
        "contents": [{"id": "sku-1", "quantity": 2, "item_price": 71.26}],
        "content_ids": ["sku-1"],
        "success": True,
        "custom_properties": {"plan": "gold", "value": "x"},
    }
    outcome = normalize_event(record_factory(custom_data=custom), NOW, DEFAULTS)
    assert accepted(outcome)["custom_data"] == {
        "value": 142.52,
        "currency": "eur",
        "contents": [{"id": "sku-1", "quantity": 2, "item_price": 71.26}],
        "content_ids": ["sku-1"],
        "success": 1,
        "plan": "gold",
    }
    assert Dropped("custom_data.custom_properties.value", "reserved_key") in outcome.dropped


def test_optional_envelope_keys(record_factory: Callable[..., dict[str, Any]]) -> None:
    """LDU, opt_out and original_event_data pass through; absent ones are not sent at all."""
    record = record_factory(
        data_processing_options=["LDU"],
        data_processing_options_country=1,
        data_processing_options_state=1000,
        opt_out=True,
        original_event_data={"event_name": "StartTrial", "event_time": NOW - 999, "order_id": None, "event_id": "t-1"},
    )
    event = accepted(normalize_event(record, NOW, DEFAULTS))
    assert event["data_processing_options"] == ["LDU"]
    assert (event["data_processing_options_country"], event["data_processing_options_state"]) == (1, 1000)
    assert event["opt_out"] is True
    assert event["original_event_data"] == {"event_name": "StartTrial", "event_time": NOW - 999, "event_id": "t-1"}
    plain = accepted(normalize_event(record_factory(), NOW, DEFAULTS))
    assert not {"data_processing_options", "opt_out", "original_event_data", "event_source_url"} & set(plain)


def test_action_source_case_is_forgiven(record_factory: Callable[..., dict[str, Any]]) -> None:
    """`App ` is Meta's `app`: only the spelling of a known value is fixed, nothing is guessed."""
    assert accepted(normalize_event(record_factory(action_source=" App "), NOW, DEFAULTS))["action_source"] == "app"


def test_missing_action_source_key_defaults_to_app(record_factory: Callable[..., dict[str, Any]]) -> None:
    """A JSON record without action_source gets the schema's default, app."""
    record = record_factory()
    del record["action_source"]
    assert accepted(normalize_event(record, NOW, DEFAULTS))["action_source"] == "app"


# Each rejection reason and a record that gives it (the record factory's keyword arguments).
REJECTIONS: list[tuple[str, dict[str, Any], NormalizeSettings]] = [
    (NO_CONSENT, {"consent": False}, DEFAULTS),
    (NO_CONSENT, {"consent": None}, NormalizeSettings(require_consent=True)),
    ("missing_event_name", {"event_name": "  "}, DEFAULTS),
    ("missing_event_time", {"event_time": "yesterday"}, DEFAULTS),
    ("missing_action_source", {"action_source": None}, DEFAULTS),
    ("invalid_action_source", {"action_source": "mobile"}, DEFAULTS),
    ("event_too_old", {"event_time": NOW - meta.MAX_EVENT_AGE_S - 1}, DEFAULTS),
    ("event_in_future", {"event_time": NOW + meta.MAX_FUTURE_SKEW_S + 1}, DEFAULTS),
    ("missing_event_source_url", {"action_source": "website", "app_data": None}, DEFAULTS),
    ("missing_client_user_agent", {"action_source": "website", "event_source_url": "https://x.example/"}, DEFAULTS),
    ("invalid_data_processing_options", {"data_processing_options": ["GDPR"]}, DEFAULTS),
    (
        "invalid_data_processing_options",
        {"data_processing_options": ["LDU"], "data_processing_options_country": 1},
        DEFAULTS,
    ),
    ("purchase_without_value", {"custom_data": {"currency": "USD"}}, DEFAULTS),
    ("purchase_without_value", {"custom_data": None}, DEFAULTS),
    ("purchase_without_currency", {"custom_data": {"value": 1.0}}, DEFAULTS),
    ("invalid_currency", {"custom_data": {"value": 1.0, "currency": "DOLLARS"}}, DEFAULTS),
    ("invalid_currency", {"event_name": "Subscribe", "custom_data": {"currency": "XYZ"}}, DEFAULTS),
    ("app_data_missing", {"app_data": None}, DEFAULTS),
    ("app_data_missing", {"app_data": {"extinfo": EXTINFO}}, DEFAULTS),
    ("app_data_missing", {"app_data": {"advertiser_tracking_enabled": True}}, DEFAULTS),
    ("invalid_extinfo", {"app_data": {"advertiser_tracking_enabled": True, "extinfo": ["w1", *EXTINFO[1:]]}}, DEFAULTS),
    ("invalid_extinfo", {"app_data": {"advertiser_tracking_enabled": True, "extinfo": [*EXTINFO[:4], ""]}}, DEFAULTS),
    ("invalid_extinfo", {"app_data": {"advertiser_tracking_enabled": True, "extinfo": [*EXTINFO, "x"]}}, DEFAULTS),
    ("no_customer_information", {"user_data": {}}, DEFAULTS),
    ("no_customer_information", {"user_data": {"em": "not-an-email", "madid": "0000-0000"}}, DEFAULTS),
    ("customer_information_too_broad", {"user_data": {"fn": "Mary", "ge": "f"}}, DEFAULTS),
    ("customer_information_too_broad", {"user_data": {"ct": "Paris", "country": "FR", "zp": "75001"}}, DEFAULTS),
]


@pytest.mark.parametrize(("reason", "overrides", "settings"), REJECTIONS)
def test_rejection_reasons(
    reason: str, overrides: dict[str, Any], settings: NormalizeSettings, record_factory: Callable[..., dict[str, Any]]
) -> None:
    """An event Meta would refuse is rejected with its documented reason code, and nothing is sent."""
    outcome = normalize_event(record_factory(**overrides), NOW, settings)
    assert rejected(outcome) == reason


def test_every_rejection_reason_is_specified() -> None:
    """The table above covers every documented reason the stage can give (bad_record is the CLI's)."""
    assert {r for r, _, _ in REJECTIONS} == set(REJECTION_REASONS) - {"bad_record"}


def test_physical_store_events_have_62_days(record_factory: Callable[..., dict[str, Any]]) -> None:
    """Offline events may be 62 days old; app events only 7."""
    old = NOW - 30 * 86400
    store = record_factory(action_source="physical_store", event_time=old, app_data=None)
    assert accepted(normalize_event(store, NOW, DEFAULTS))["action_source"] == "physical_store"
    assert rejected(normalize_event(record_factory(event_time=old), NOW, DEFAULTS)) == "event_too_old"


def test_consent_is_checked_before_anything_else(record_factory: Callable[..., dict[str, Any]]) -> None:
    """An event without consent is no_consent even when it is also invalid, so it is never dead-lettered."""
    outcome = normalize_event(record_factory(consent=False, event_name=None, user_data={}), NOW, DEFAULTS)
    assert rejected(outcome) == NO_CONSENT


def test_unknown_consent_is_sent_by_default(record_factory: Callable[..., dict[str, Any]]) -> None:
    """consent None means unknown: sent unless the destination requires consent."""
    assert accepted(normalize_event(record_factory(consent=None), NOW, DEFAULTS))


def test_rejection_reason_must_be_documented() -> None:
    """A Rejection cannot carry a reason outside REJECTION_REASONS."""
    with pytest.raises(ValueError, match="unknown rejection reason"):
        Rejection("because", "no")


# Each drop reason: (user_data or other overrides, the Dropped expected among outcome.dropped).
DROPS: list[tuple[dict[str, Any], Dropped]] = [
    ({"user_data": {"em": "x@y.z", "ph": "12345"}}, Dropped("user_data.ph", "invalid_phone")),
    ({"user_data": {"em": "x@y", "anon_id": "XZ1"}}, Dropped("user_data.em", "invalid_email")),
    ({"user_data": {"em": "x@y.z", "fn": "!!!"}}, Dropped("user_data.fn", "invalid_name")),
    ({"user_data": {"em": "x@y.z", "ge": "other"}}, Dropped("user_data.ge", "invalid_gender")),
    ({"user_data": {"em": "x@y.z", "db": "31/31/1990"}}, Dropped("user_data.db", "invalid_date_of_birth")),
    ({"user_data": {"em": "x@y.z", "ct": "75001"}}, Dropped("user_data.ct", "invalid_city")),
    ({"user_data": {"em": "x@y.z", "st": "--"}}, Dropped("user_data.st", "invalid_state")),
    ({"user_data": {"em": "x@y.z", "zp": "  -  "}}, Dropped("user_data.zp", "invalid_zip")),
    ({"user_data": {"em": "x@y.z", "country": "Narnia"}}, Dropped("user_data.country", "invalid_country")),
    ({"user_data": {"em": "x@y.z", "dobd": "40"}}, Dropped("user_data.dobd", "invalid_birth_day")),
    ({"user_data": {"em": "x@y.z", "dobm": "0"}}, Dropped("user_data.dobm", "invalid_birth_month")),
    ({"user_data": {"em": "x@y.z", "doby": "3000"}}, Dropped("user_data.doby", "invalid_birth_year")),
    (
        {"user_data": {"em": "x@y.z", "client_ip_address": "1.2.3"}},
        Dropped("user_data.client_ip_address", "invalid_ip"),
    ),
    ({"user_data": {"em": "x@y.z", "fbc": "abc"}}, Dropped("user_data.fbc", "invalid_fbc")),
    ({"user_data": {"em": "x@y.z", "fbp": "fb.1"}}, Dropped("user_data.fbp", "invalid_fbp")),
    ({"user_data": {"em": "x@y.z", "lead_id": "L-1"}}, Dropped("user_data.lead_id", "invalid_integer_id")),
    (
        {"user_data": {"em": "x@y.z", "madid": "00000000-0000-0000-0000-000000000000"}},
        Dropped("user_data.madid", "zero_madid"),
    ),
    ({"user_data": {"em": "x@y.z", "fn": "   "}}, Dropped("user_data.fn", "empty")),
    ({"user_data": {"em": "x@y.z", "ph": 6505551212}}, Dropped("user_data.ph", "invalid_type")),
    ({"user_data": {"em": "x@y.z", "email": "x@y.z"}}, Dropped("user_data.email", "unknown_field")),
    (
        {"custom_data": {"value": 1.0, "currency": "USD", "num_items": "two"}},
        Dropped("custom_data.num_items", "invalid_number"),
    ),
    (
        {"custom_data": {"value": 1.0, "currency": "USD", "delivery_category": "drone"}},
        Dropped("custom_data.delivery_category", "invalid_delivery_category"),
    ),
    (
        {"custom_data": {"value": 1.0, "currency": "USD", "contents": [{"quantity": 1}]}},
        Dropped("custom_data.contents", "missing_content_id"),
    ),
    (
        {"custom_data": {"value": 1.0, "currency": "USD", "custom_properties": {"currency": "x"}}},
        Dropped("custom_data.custom_properties.currency", "reserved_key"),
    ),
    ({"event_id": 3.5}, Dropped("event_id", "invalid_type")),
]


@pytest.mark.parametrize(("overrides", "drop"), DROPS)
def test_drop_reasons(overrides: dict[str, Any], drop: Dropped, record_factory: Callable[..., dict[str, Any]]) -> None:
    """A bad field is dropped with its reason and the event still goes out without it."""
    outcome = normalize_event(record_factory(**overrides), NOW, DEFAULTS)
    event = accepted(outcome)
    assert drop in outcome.dropped
    section, _, key = drop.field.partition(".")
    if key and section in event:
        assert key not in event[section]


def test_empty_strings_count_as_absent(record_factory: Callable[..., dict[str, Any]]) -> None:
    """Apps write "" for unknown: such keys are absent, neither sent nor counted as dropped."""
    outcome = normalize_event(record_factory(user_data={"em": "x@y.z", "ph": "", "fn": []}), NOW, DEFAULTS)
    assert set(accepted(outcome)["user_data"]) == {"em"}
    assert outcome.dropped == ()


def test_samples_normalize_cleanly() -> None:
    """The generated sample stream produces only its designed rejections, and valid hashed output."""
    records = list(generate(300, seed=5, now=NOW, stale_events=2, invalid_purchases=2))
    outcomes = [normalize_event(r, NOW, NormalizeSettings(default_country="US")) for r in records]
    reasons = {o.rejection.reason for o in outcomes if o.rejection is not None}
    assert reasons <= {NO_CONSENT, "event_too_old", "purchase_without_value"}
    assert sum(o.rejection is not None and o.rejection.reason == "event_too_old" for o in outcomes) == 2
    for outcome in outcomes:
        if outcome.event is not None:
            for key in meta.HASHED_LIST_FIELDS:
                assert all(HEX64.fullmatch(h) for h in outcome.event["user_data"].get(key, []))
