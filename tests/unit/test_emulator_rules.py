"""Meta's validation rules as the emulator applies them, one rule per row (pure, no network)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.emulator import errors, rules
from stream.emulator.samples import sample_event, sample_events, sha256
from stream.meta import (
    MAX_EVENT_AGE_S,
    MAX_FUTURE_SKEW_S,
    PHYSICAL_STORE_MAX_AGE_S,
    SUBCODE_EVENT_TOO_OLD,
    SUBCODE_INSUFFICIENT_CUSTOMER_INFO,
)

NOW = 1_790_000_000
H = sha256("someone@example.com")
Event = dict[str, Any]


def _set(path: str, value: object) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        *parents, leaf = path.split(".")
        node = event
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return apply


def _drop(path: str) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        *parents, leaf = path.split(".")
        node = event
        for part in parents:
            node = node[part]
        del node[leaf]

    return apply


def _user_data(**fields: object) -> Callable[[Event], None]:
    return _set("user_data", dict(fields))


def _extinfo_slot(slot: int, value: object) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        event["app_data"]["extinfo"][slot] = value

    return apply


MISSING = errors.SUBCODE_MISSING_FIELD
APP = errors.SUBCODE_INVALID_APP_DATA
INVALID_CASES: list[tuple[str, Callable[[Event], None], int]] = [
    ("no event_name", _drop("event_name"), MISSING),
    ("empty event_name", _set("event_name", ""), MISSING),
    ("event_name not a string", _set("event_name", 5), MISSING),
    ("no event_time", _drop("event_time"), MISSING),
    ("event_time as a string", _set("event_time", str(NOW)), MISSING),
    ("event_time a boolean", _set("event_time", True), MISSING),
    ("no action_source", _drop("action_source"), MISSING),
    ("action_source not a string", _set("action_source", ["app"]), MISSING),
    ("unknown action_source", _set("action_source", "mobile"), errors.SUBCODE_INVALID_ACTION_SOURCE),
    ("older than 7 days", _set("event_time", NOW - MAX_EVENT_AGE_S - 1), SUBCODE_EVENT_TOO_OLD),
    ("in the future", _set("event_time", NOW + MAX_FUTURE_SKEW_S + 1), errors.SUBCODE_INVALID_EVENT_TIME),
    ("milliseconds instead of seconds", _set("event_time", NOW * 1000), errors.SUBCODE_INVALID_EVENT_TIME),
    ("no user_data", _drop("user_data"), MISSING),
    ("user_data not an object", _set("user_data", [H]), MISSING),
    ("raw email", _set("user_data.em", "someone@example.com"), errors.SUBCODE_UNHASHED_FIELD),
    ("raw email in a list", _set("user_data.em", [H, "someone@example.com"]), errors.SUBCODE_UNHASHED_FIELD),
    ("upper-case hash", _set("user_data.ph", [H.upper()]), errors.SUBCODE_UNHASHED_FIELD),
    ("MD5-looking hash", _set("user_data.fn", "d41d8cd98f00b204e9800998ecf8427e"), errors.SUBCODE_UNHASHED_FIELD),
    ("65 hex characters", _set("user_data.ln", H + "a"), errors.SUBCODE_UNHASHED_FIELD),
    ("two hashes glued in one value", _set("user_data.em", [H + "\n" + H]), errors.SUBCODE_UNHASHED_FIELD),
    ("hash split over two list items", _set("user_data.em", [H[:32], H[32:] + H]), errors.SUBCODE_UNHASHED_FIELD),
    ("hashed field as a number", _set("user_data.zp", 94035), errors.SUBCODE_UNHASHED_FIELD),
    ("empty user_data", _user_data(), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("only empty values", _user_data(em=[], madid="", anon_id=None), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("only unknown keys", _user_data(shoe_size="42"), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: country and gender", _user_data(country=H, ge=H), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: db and user agent", _user_data(db=H, client_user_agent="ua"), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: fn and ge", _user_data(fn=[H], ge=[H]), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad: ln alone", _user_data(ln=H), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("too broad with an empty strong key", _user_data(ct=H, em=""), SUBCODE_INSUFFICIENT_CUSTOMER_INFO),
    ("app event without app_data", _drop("app_data"), APP),
    ("no advertiser_tracking_enabled", _drop("app_data.advertiser_tracking_enabled"), APP),
    ("advertiser_tracking_enabled 2", _set("app_data.advertiser_tracking_enabled", 2), APP),
    ("advertiser_tracking_enabled 1.0", _set("app_data.advertiser_tracking_enabled", 1.0), APP),
    ("no extinfo", _drop("app_data.extinfo"), APP),
    ("extinfo of 15 slots", _set("app_data.extinfo", ["a2"] + [""] * 14), APP),
    ("extinfo slot 0 not a2/i2", _extinfo_slot(0, "x2"), APP),
    ("extinfo slot 0 a list", _extinfo_slot(0, ["a2"]), APP),
    ("extinfo without OS version", _extinfo_slot(4, ""), APP),
    ("Purchase without custom_data", _drop("custom_data"), errors.SUBCODE_PURCHASE_VALUE),
    ("Purchase without value", _drop("custom_data.value"), errors.SUBCODE_PURCHASE_VALUE),
    ("Purchase value as a string", _set("custom_data.value", "9.99"), errors.SUBCODE_PURCHASE_VALUE),
    ("Purchase without currency", _drop("custom_data.currency"), errors.SUBCODE_PURCHASE_VALUE),
    ("Purchase with a made-up currency", _set("custom_data.currency", "XYZ"), errors.SUBCODE_PURCHASE_VALUE),
    ("website event without user agent", _set("action_source", "website"), MISSING),
]


@pytest.mark.parametrize(("case", "mutate", "subcode"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_each_rule_refuses_with_its_subcode(case: str, mutate: Callable[[Event], None], subcode: int) -> None:
    """An event breaking one rule makes the request fail with code 100 and that rule's subcode."""
    event = sample_event(0, NOW)  # index 0 is a Purchase app event
    mutate(event)
    problem = rules.validate_events([sample_event(1, NOW), event], NOW)
    assert problem is not None
    assert (problem.status, problem.code, problem.subcode) == (400, 100, subcode)
    assert rules.check_event(event, NOW) == problem


VALID_CASES: list[tuple[str, Callable[[Event], None]]] = [
    ("the sample Purchase", lambda e: None),
    ("a custom event without custom_data", lambda e: (_set("event_name", "LevelUp")(e), _drop("custom_data")(e))),
    ("7 days old exactly", _set("event_time", NOW - MAX_EVENT_AGE_S)),
    ("a few minutes ahead", _set("event_time", NOW + MAX_FUTURE_SKEW_S)),
    ("physical_store 30 days old", lambda e: (_set("action_source", "physical_store")(e),
                                               _set("event_time", NOW - 30 * 86400)(e))),
    ("float event_time", _set("event_time", NOW - 0.5)),
    ("single hashed string", _user_data(em=H)),
    ("only madid", _user_data(madid="38400000-8cf0-11bd-b23e-10b96e40000d")),
    ("only anon_id", _user_data(anon_id="install-1")),
    ("country and gender plus email", _user_data(country=H, ge=H, em=[H])),
    ("fn and ln together", _user_data(fn=H, ln=H)),
    ("extra unknown keys are ignored", _set("user_data.shoe_size", "42")),
    ("iOS extinfo", _extinfo_slot(0, "i2")),
    ("ATT flag as boolean", _set("app_data.advertiser_tracking_enabled", False)),
    ("ATT flag as string", _set("app_data.advertiser_tracking_enabled", "0")),
    ("integer value, upper-case currency", lambda e: (_set("custom_data.value", 10)(e),
                                                       _set("custom_data.currency", "EUR")(e))),
    ("website event with its fields", lambda e: (_set("action_source", "website")(e),
                                                  _set("user_data.client_user_agent", "Mozilla/5.0")(e),
                                                  _set("event_source_url", "https://example.com/x")(e))),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate"), VALID_CASES, ids=[c[0] for c in VALID_CASES])
def test_valid_events_pass(case: str, mutate: Callable[[Event], None]) -> None:
    """Events that follow every rule, in their accepted variants, raise no error."""
    event = sample_event(0, NOW)
    mutate(event)
    assert rules.check_event(event, NOW) is None
    assert rules.validate_events([event], NOW) is None


def test_physical_store_window_is_62_days() -> None:
    """physical_store events may be 62 days old, not one second more."""
    event = sample_event(1, NOW)
    event["action_source"] = "physical_store"
    event["event_time"] = NOW - PHYSICAL_STORE_MAX_AGE_S - 1
    problem = rules.validate_events([event], NOW)
    assert problem is not None
    assert problem.subcode == SUBCODE_EVENT_TOO_OLD


def test_first_invalid_event_in_order_is_reported() -> None:
    """With two bad events, the error names the rule the first one breaks."""
    events = sample_events(5, NOW)
    events[1]["action_source"] = "nowhere"
    events[3]["user_data"] = {}
    problem = rules.validate_events(events, NOW)
    assert problem is not None
    assert problem.subcode == errors.SUBCODE_INVALID_ACTION_SOURCE


def test_rejected_event_ids_refuse_the_request() -> None:
    """An event whose id is in the test hook's set is refused with the hook's subcode."""
    events = sample_events(3, NOW, prefix="x")
    assert rules.validate_events(events, NOW, frozenset({"y1"})) is None
    problem = rules.validate_events(events, NOW, frozenset({"x2"}))
    assert problem is not None
    assert problem.subcode == errors.SUBCODE_REJECTED_EVENT


READ_CASES: list[tuple[str, object, str | None]] = [
    ("missing", None, "The parameter data is required"),
    ("empty string", "", "The parameter data is required"),
    ("empty list", [], "The parameter data is required"),
    ("an object", {"event_name": "x"}, "must be an array"),
    ("bad JSON string", "[{", "must be an array"),
    ("a number inside", [1], "must be a JSON object"),
    ("a bad JSON string inside", ["{"], "must be a JSON object"),
    ("a JSON string of a list inside", ["[]"], "must be a JSON object"),
    ("1001 events", [{}] * 1001, "at most 1000"),
]


@pytest.mark.parametrize(("case", "data", "fragment"), READ_CASES, ids=[c[0] for c in READ_CASES])
def test_malformed_data_is_a_graph_parameter_error(case: str, data: object, fragment: str) -> None:
    """A malformed `data` parameter is code 100 without subcode, and the message says what is wrong."""
    result = rules.read_events(data)
    assert isinstance(result, errors.MetaError)
    assert (result.code, result.subcode, result.status) == (100, None, 400)
    assert fragment in result.message


def test_data_in_every_shape_meta_takes_reads_the_same() -> None:
    """A list of objects, a JSON string of it, and a list of JSON strings (the SDK's way) are equal."""
    events = sample_events(3, NOW)
    as_list = rules.read_events(copy.deepcopy(events))
    as_string = rules.read_events(orjson.dumps(events).decode())
    as_strings = rules.read_events([orjson.dumps(e).decode() for e in events])
    assert as_list == as_string == as_strings == events


def test_exactly_1000_events_are_taken() -> None:
    """1,000 events are within Meta's limit."""
    assert rules.read_events(sample_events(1000, NOW)) == sample_events(1000, NOW)


_KEYS = ["em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id", "madid", "anon_id",
         "client_ip_address", "client_user_agent", "fbp", "unknown"]  # fmt: skip
_VALUES = st.sampled_from([H, [H], [H, H], [], "", None, "raw@example.com", H.upper(), 7, [H, 7], {"a": 1}])
_EVENT_FIELDS = st.fixed_dictionaries({}, optional={
    "event_name": st.sampled_from(["Purchase", "MobileAppInstall", "", 3]),
    "event_time": st.sampled_from([NOW, NOW - MAX_EVENT_AGE_S - 5, NOW + 10_000, NOW - 100 * 86400, "1", 1.5e9]),
    "action_source": st.sampled_from(["app", "website", "physical_store", "other", "bad", ["app"]]),
    "user_data": st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5),
    "app_data": st.sampled_from([None, {}, {"advertiser_tracking_enabled": 1, "extinfo": ["a2"] * 16},
                                 {"advertiser_tracking_enabled": [1], "extinfo": ["i2"] * 16},
                                 {"advertiser_tracking_enabled": "1", "extinfo": [["a2"]] + ["1"] * 15}]),
    "custom_data": st.sampled_from([None, {"value": 1, "currency": "usd"}, {"value": "1", "currency": "usd"},
                                    {"value": 1.5, "currency": ["usd"]}]),
    "event_id": st.sampled_from(["a", "b", 5, ["a"]]),
    "event_source_url": st.sampled_from(["", "https://x.example"]),
})  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_EVENT_FIELDS, min_size=1, max_size=4))
def test_fast_pass_agrees_with_the_reference_rules(events: list[Event]) -> None:
    """validate_events answers exactly what check_event says of the first invalid event."""
    expected = next((p for e in events if (p := rules.check_event(e, NOW, frozenset({"b"}))) is not None), None)
    assert rules.validate_events(events, NOW, frozenset({"b"})) == expected


_OVERRIDES = st.lists(st.tuples(
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


@settings(max_examples=400, deadline=None)
@given(_OVERRIDES, st.integers(min_value=0, max_value=5))
def test_fast_pass_agrees_near_valid_events(overrides: list[tuple[str, object]], index: int) -> None:
    """Valid events with up to three fields overridden get the reference answer from validate_events."""
    events = near_valid_events(overrides, index)
    expected = next((p for e in events if (p := rules.check_event(e, NOW, frozenset({"b"}))) is not None), None)
    assert rules.validate_events(events, NOW, frozenset({"b"})) == expected
