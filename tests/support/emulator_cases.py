"""Event mutations for the emulator's rule table, and the hypothesis strategies near it.

One broken field per rule, the valid variants, generated near-valid events: shared by the rule tests and
the fast path's differential tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from stream.emulator import answers
from stream.emulator.samples import sample_events, sha256
from tests.support.meta_facts import (
    MAX_EVENT_AGE_S,
    MAX_FUTURE_SKEW_S,
    SUBCODE_EVENT_TOO_OLD,
    SUBCODE_INSUFFICIENT_CUSTOMER_INFO,
)

NOW = 1_790_000_000


H = sha256("someone@example.com")


Event = dict[str, Any]


def set_field(path: str, value: object) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        *parents, leaf = path.split(".")
        node = event
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return apply


def drop_field(path: str) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        *parents, leaf = path.split(".")
        node = event
        for part in parents:
            node = node[part]
        del node[leaf]

    return apply


def user_data(**fields: object) -> Callable[[Event], None]:
    return set_field("user_data", dict(fields))


def extinfo_slot(slot: int, value: object) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        event["app_data"]["extinfo"][slot] = value

    return apply


MISSING = answers.SUBCODE_MISSING_FIELD


APP = answers.SUBCODE_INVALID_APP_DATA


INVALID_CASES: list[tuple[str, Callable[[Event], None], int]] = [
    ("no event_name", drop_field("event_name"), MISSING),
    ("empty event_name", set_field("event_name", ""), MISSING),
    ("event_name not a string", set_field("event_name", 5), MISSING),
    ("no event_time", drop_field("event_time"), MISSING),
    ("event_time as a string", set_field("event_time", str(NOW)), MISSING),
    ("event_time a boolean", set_field("event_time", True), MISSING),
    ("no action_source", drop_field("action_source"), MISSING),
    ("action_source not a string", set_field("action_source", ["app"]), MISSING),
    ("unknown action_source", set_field("action_source", "mobile"), answers.SUBCODE_INVALID_ACTION_SOURCE),
    ("older than 7 days", set_field("event_time", NOW - MAX_EVENT_AGE_S - 1), SUBCODE_EVENT_TOO_OLD),
    ("in the future", set_field("event_time", NOW + MAX_FUTURE_SKEW_S + 1), answers.SUBCODE_INVALID_EVENT_TIME),
    ("milliseconds instead of seconds", set_field("event_time", NOW * 1000), answers.SUBCODE_INVALID_EVENT_TIME),
    ("no user_data", drop_field("user_data"), MISSING),
    ("user_data not an object", set_field("user_data", [H]), MISSING),
    ("raw email", set_field("user_data.em", "someone@example.com"), answers.SUBCODE_UNHASHED_FIELD),
    ("raw email in a list", set_field("user_data.em", [H, "someone@example.com"]), answers.SUBCODE_UNHASHED_FIELD),
    ("upper-case hash", set_field("user_data.ph", [H.upper()]), answers.SUBCODE_UNHASHED_FIELD),
    ("MD5-looking hash", set_field("user_data.fn", "d41d8cd98f00b204e9800998ecf8427e"), answers.SUBCODE_UNHASHED_FIELD),
    ("65 hex characters", set_field("user_data.ln", H + "a"), answers.SUBCODE_UNHASHED_FIELD),
    ("two hashes glued in one value", set_field("user_data.em", [H + "\n" + H]), answers.SUBCODE_UNHASHED_FIELD),
    ("hash split over two list items", set_field("user_data.em", [H[:32], H[32:] + H]), answers.SUBCODE_UNHASHED_FIELD),
    ("hashed field as a number", set_field("user_data.zp", 94035), answers.SUBCODE_UNHASHED_FIELD),
    ("empty user_data", user_data(), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("only empty values", user_data(em=[], madid="", anon_id=None), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("only unknown keys", user_data(shoe_size="42"), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: country and gender", user_data(country=H, ge=H), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: db and user agent", user_data(db=H, client_user_agent="ua"), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: fn and ge", user_data(fn=[H], ge=[H]), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: ln alone", user_data(ln=H), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad with an empty strong key", user_data(ct=H, em=""), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("app event without app_data", drop_field("app_data"), APP),
    ("no advertiser_tracking_enabled", drop_field("app_data.advertiser_tracking_enabled"), APP),
    ("advertiser_tracking_enabled 2", set_field("app_data.advertiser_tracking_enabled", 2), APP),
    ("advertiser_tracking_enabled 1.0", set_field("app_data.advertiser_tracking_enabled", 1.0), APP),
    ("no extinfo", drop_field("app_data.extinfo"), APP),
    ("extinfo of 15 slots", set_field("app_data.extinfo", ["a2"] + [""] * 14), APP),
    ("extinfo slot 0 not a2/i2", extinfo_slot(0, "x2"), APP),
    ("extinfo slot 0 a list", extinfo_slot(0, ["a2"]), APP),
    ("extinfo without OS version", extinfo_slot(4, ""), APP),
    ("Purchase without custom_data", drop_field("custom_data"), answers.SUBCODE_PURCHASE_VALUE),
    ("Purchase without value", drop_field("custom_data.value"), answers.SUBCODE_PURCHASE_VALUE),
    ("Purchase value as a string", set_field("custom_data.value", "9.99"), answers.SUBCODE_PURCHASE_VALUE),
    ("Purchase without currency", drop_field("custom_data.currency"), answers.SUBCODE_PURCHASE_VALUE),
    ("Purchase with a made-up currency", set_field("custom_data.currency", "XYZ"), answers.SUBCODE_PURCHASE_VALUE),
    ("website event without user agent", set_field("action_source", "website"), MISSING),
]


VALID_CASES: list[tuple[str, Callable[[Event], None]]] = [
    ("the sample Purchase", lambda e: None),
    ("a custom event without custom_data",
     lambda e: (set_field("event_name", "LevelUp")(e), drop_field("custom_data")(e))),
    ("7 days old exactly", set_field("event_time", NOW - MAX_EVENT_AGE_S)),
    ("a few minutes ahead", set_field("event_time", NOW + MAX_FUTURE_SKEW_S)),
    ("physical_store 30 days old", lambda e: (set_field("action_source", "physical_store")(e),
                                               set_field("event_time", NOW - 30 * 86400)(e))),
    ("float event_time", set_field("event_time", NOW - 0.5)),
    ("single hashed string", user_data(em=H)),
    ("only madid", user_data(madid="38400000-8cf0-11bd-b23e-10b96e40000d")),
    ("only anon_id", user_data(anon_id="install-1")),
    ("country and gender plus email", user_data(country=H, ge=H, em=[H])),
    ("fn and ln together", user_data(fn=H, ln=H)),
    ("extra unknown keys are ignored", set_field("user_data.shoe_size", "42")),
    ("iOS extinfo", extinfo_slot(0, "i2")),
    ("ATT flag as boolean", set_field("app_data.advertiser_tracking_enabled", False)),
    ("ATT flag as string", set_field("app_data.advertiser_tracking_enabled", "0")),
    ("integer value, upper-case currency", lambda e: (set_field("custom_data.value", 10)(e),
                                                       set_field("custom_data.currency", "EUR")(e))),
    ("website event with its fields", lambda e: (set_field("action_source", "website")(e),
                                                  set_field("user_data.client_user_agent", "Mozilla/5.0")(e),
                                                  set_field("event_source_url", "https://example.com/x")(e))),
]  # fmt: skip


KEYS = ["em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id", "madid", "anon_id",
         "client_ip_address", "client_user_agent", "fbp", "unknown"]  # fmt: skip


VALUES = st.sampled_from([H, [H], [H, H], [], "", None, "raw@example.com", H.upper(), 7, [H, 7], {"a": 1}])


EVENT_FIELDS = st.fixed_dictionaries({}, optional={
    "event_name": st.sampled_from(["Purchase", "MobileAppInstall", "", 3]),
    "event_time": st.sampled_from([NOW, NOW - MAX_EVENT_AGE_S - 5, NOW + 10_000, NOW - 100 * 86400, "1", 1.5e9]),
    "action_source": st.sampled_from(["app", "website", "physical_store", "other", "bad", ["app"]]),
    "user_data": st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5),
    "app_data": st.sampled_from([None, {}, {"advertiser_tracking_enabled": 1, "extinfo": ["a2"] * 16},
                                 {"advertiser_tracking_enabled": [1], "extinfo": ["i2"] * 16},
                                 {"advertiser_tracking_enabled": "1", "extinfo": [["a2"]] + ["1"] * 15}]),
    "custom_data": st.sampled_from([None, {"value": 1, "currency": "usd"}, {"value": "1", "currency": "usd"},
                                    {"value": 1.5, "currency": ["usd"]}]),
    "event_id": st.sampled_from(["a", "b", 5, ["a"]]),
    "event_source_url": st.sampled_from(["", "https://x.example"]),
})  # fmt: skip


OVERRIDES = st.lists(st.tuples(
    st.sampled_from(["event_name", "event_time", "action_source", "user_data", "app_data", "custom_data",
                     "event_id", "user_data.em", "user_data.madid", "user_data.anon_id", "user_data.ge",
                     "app_data.extinfo", "app_data.advertiser_tracking_enabled", "custom_data.value",
                     "custom_data.currency"]),
    st.sampled_from([None, "", [], {}, 0, 1, True, 1.0, "1", "a2", "b", "usd", "app", H, [H], [H, "x"],
                     NOW, NOW - MAX_EVENT_AGE_S - 1, ["a2"] * 16, ["a2", "", "", "", ""] + [""] * 11]),
), max_size=3)  # fmt: skip


def near_valid_events(overrides: list[tuple[str, object]], index: int) -> list[Event]:
    """Six valid sample events, event `index` with each `path` ("parent.leaf" or "leaf") set to a value."""
    events = sample_events(6, NOW)
    for path, value in overrides:
        parent, _, leaf = path.rpartition(".")
        node = events[index].get(parent) if parent else events[index]
        if isinstance(node, dict):
            node[leaf] = copy.deepcopy(value)
    return events
