"""Meta's validation of a Conversions API request, as a pure function of the body and `now`.

`read_events` turns the `data` parameter (a JSON array, a JSON string holding one, or a list of JSON
strings as Meta's SDK sends it) into event dicts; `validate_events` checks each event in one pass and
returns the first violation as Meta's error, or None. One invalid event refuses the whole request, as
at Meta [1.3]. The checks, in order, per event (stream/contract/README.md):

| rule | answer |
|---|---|
| event_name, event_time, action_source, user_data present and typed | 100 / SUBCODE_MISSING_FIELD |
| action_source one of Meta's values [2] | 100 / SUBCODE_INVALID_ACTION_SOURCE |
| event_time at most 7 days old (62 for physical_store) [1.3] | 100 / 2804003 |
| event_time not in the future (beyond MAX_FUTURE_SKEW_S) | 100 / SUBCODE_INVALID_EVENT_TIME |
| hashed user_data fields are lowercase SHA-256 hex [3.1] | 100 / SUBCODE_UNHASHED_FIELD |
| a customer-information key, not only a too-broad set [3.1] | 100 / 2804050 |
| app events: app_data.advertiser_tracking_enabled, 16-slot extinfo, a2/i2, OS version [4] |
|   100 / SUBCODE_INVALID_APP_DATA |
| website events: client_user_agent and event_source_url [2] | 100 / SUBCODE_MISSING_FIELD |
| Purchase: numeric custom_data.value and ISO 4217 currency [5] | 100 / SUBCODE_PURCHASE_VALUE |
| event_id not in the `reject_event_ids` test hook | 100 / SUBCODE_REJECTED_EVENT |

Speed matters (the emulator must never be the bottleneck of our benchmarks): the hot path is one loop
over events and one over user_data keys, with frozensets and a compiled pattern built at import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
import pycountry

from stream.emulator import answers
from stream.emulator.answers import ErrorAnswer
from stream.emulator.facts import (
    ACTION_SOURCES,
    EXTINFO_LENGTH,
    EXTINFO_OS_VERSION_SLOT,
    EXTINFO_VERSIONS,
    HASH_RECOMMENDED_FIELDS,
    MAX_EVENT_AGE_S,
    MAX_EVENTS_PER_REQUEST,
    MAX_FUTURE_SKEW_S,
    MUST_HASH_FIELDS,
    PHYSICAL_STORE_MAX_AGE_S,
    RAW_FIELDS,
    TOO_BROAD_KEY_SETS,
    is_too_broad,
)

Event = dict[str, Any]

_SHA256: Final = re.compile(r"[0-9a-f]{64}")
# SHA-256 digests one per line (the hashed values of an event, joined by newlines).
_SHA256_LINES: Final = re.compile(r"[0-9a-f]{64}(?:\n[0-9a-f]{64})*").fullmatch
# user_data key -> how `check_event` checks it.
_HASHED: Final = "hashed"
_RAW: Final = "raw"
_KIND: Final = {**dict.fromkeys(RAW_FIELDS, _RAW), **dict.fromkeys(MUST_HASH_FIELDS, _HASHED),
                **dict.fromkeys(HASH_RECOMMENDED_FIELDS, _RAW)}
_RAW_FIELDS: Final = frozenset(RAW_FIELDS) | HASH_RECOMMENDED_FIELDS
# Every key of every too-broad set: a key outside it makes the set broad enough, so the subset tests
# run only for events that carry nothing but these keys (here and in `fastpath`).
BROAD_KEYS: Final = frozenset().union(*TOO_BROAD_KEY_SETS)
# ISO 4217 codes, lower case (a Purchase's currency is compared case-insensitively).
CURRENCIES: Final = frozenset(c.alpha_3.lower() for c in pycountry.currencies)
_PURCHASE: Final = "Purchase"
# JSON booleans and 0/1 (as numbers or strings) are what Meta's pages and SDK send for the ATT flag [4].
_ATE_VALUES: Final = frozenset({"0", "1"})
# The fast pass takes only the common, unambiguous shapes; anything else goes to `check_event`
# (physical_store and website events included: they have rules of their own).
_FAST_SOURCES: Final = ACTION_SOURCES - {"physical_store", "website"}
_FAST_ATE: Final = (0, 1, True, False, "0", "1")
_FAST_EXTINFO_VERSIONS: Final = tuple(EXTINFO_VERSIONS)


def _missing(name: str) -> ErrorAnswer:
    return answers.invalid_event(
        answers.SUBCODE_MISSING_FIELD, "Missing Required Parameter",
        f"The parameter {name} is required for this event and is missing or has the wrong type.",
    )  # fmt: skip


_MISSING: Final = {name: _missing(name) for name in (
    "event_name", "event_time", "action_source", "user_data", "client_user_agent", "event_source_url",
)}  # fmt: skip
_INVALID_ACTION_SOURCE: Final = answers.invalid_event(
    answers.SUBCODE_INVALID_ACTION_SOURCE, "Invalid Action Source",
    "The action_source must be one of: " + ", ".join(sorted(ACTION_SOURCES)) + ".",
)  # fmt: skip
_TOO_OLD: Final = answers.event_too_old()
_FUTURE: Final = answers.invalid_event(
    answers.SUBCODE_INVALID_EVENT_TIME, "Event Timestamp In The Future",
    "The event_time must be a Unix timestamp in seconds that is not in the future.",
)  # fmt: skip
_INSUFFICIENT: Final = answers.insufficient_customer_info()
_APP_DATA: Final = answers.invalid_event(
    answers.SUBCODE_INVALID_APP_DATA, "Invalid App Data",
    "App events need app_data with advertiser_tracking_enabled (0 or 1) and extinfo: 16 strings whose "
    "first is a2 (Android) or i2 (iOS) and whose fifth is the OS version.",
)  # fmt: skip
_PURCHASE_VALUE: Final = answers.invalid_event(
    answers.SUBCODE_PURCHASE_VALUE, "Missing Value Or Currency",
    "Purchase events need custom_data.value (a number) and custom_data.currency (an ISO 4217 code).",
)  # fmt: skip
_REJECTED: Final = answers.invalid_event(
    answers.SUBCODE_REJECTED_EVENT, "Event Rejected",
    "This event was rejected (the emulator was asked to reject its event_id).",
)  # fmt: skip
_NOT_A_LIST: Final = answers.invalid_parameter("param data must be an array of events")
_NOT_AN_OBJECT: Final = answers.invalid_parameter("each element of param data must be a JSON object")
_MISSING_DATA: Final = answers.invalid_parameter("The parameter data is required")


def _unhashed(field: str) -> ErrorAnswer:
    return answers.invalid_event(
        answers.SUBCODE_UNHASHED_FIELD, "Unhashed Customer Information",
        f"The user_data parameter {field} must be hashed with SHA-256 (64 lowercase hex characters).",
    )  # fmt: skip


_UNHASHED: Final = {field: _unhashed(field) for field in MUST_HASH_FIELDS}


def read_events(data: object) -> list[Event] | ErrorAnswer:
    """The events of a request's `data` parameter, or Meta's error for a malformed one.

    Accepts a list of event objects, a JSON string holding such a list (form-encoded requests), and
    list elements that are JSON strings (Meta's SDK encodes each event so). Checks the 1,000 limit.
    """
    if data is None or data == "":
        return _MISSING_DATA
    if isinstance(data, str | bytes):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _NOT_A_LIST
    if not isinstance(data, list) or not data:
        return _NOT_A_LIST if data != [] else _MISSING_DATA
    if len(data) > MAX_EVENTS_PER_REQUEST:
        return answers.too_many_events(len(data))
    events: list[Event] = data
    for i, event in enumerate(events):
        if type(event) is dict:
            continue
        if isinstance(event, str):
            try:
                decoded = orjson.loads(event)
            except orjson.JSONDecodeError:
                return _NOT_AN_OBJECT
            if type(decoded) is dict:
                events[i] = decoded
                continue
        return _NOT_AN_OBJECT
    return events


def _check_user_data(user_data: Mapping[str, Any]) -> ErrorAnswer | None:
    present = []
    for key, value in user_data.items():
        kind = _KIND.get(key)
        if kind is None or value is None or value == "" or value == []:
            continue
        if kind is _HASHED:
            values = value if type(value) is list else [value]
            if any(type(v) is not str or _SHA256.fullmatch(v) is None for v in values):
                return _UNHASHED[key]
        present.append(key)
    if not present or is_too_broad(frozenset(present)):
        return _INSUFFICIENT
    return None


def _check_app_data(app_data: object) -> ErrorAnswer | None:
    if type(app_data) is not dict:
        return _APP_DATA
    ate = app_data.get("advertiser_tracking_enabled")
    if not ((type(ate) in (bool, int) and ate in (0, 1)) or (type(ate) is str and ate in _ATE_VALUES)):
        return _APP_DATA
    extinfo = app_data.get("extinfo")
    if (
        type(extinfo) is not list
        or len(extinfo) != EXTINFO_LENGTH
        or type(extinfo[0]) is not str
        or extinfo[0] not in EXTINFO_VERSIONS
        or not extinfo[EXTINFO_OS_VERSION_SLOT]
    ):
        return _APP_DATA
    return None


def _check_purchase(custom_data: object) -> ErrorAnswer | None:
    if type(custom_data) is not dict:
        return _PURCHASE_VALUE
    value = custom_data.get("value")
    currency = custom_data.get("currency")
    if type(value) not in (int, float) or type(currency) is not str or currency.lower() not in CURRENCIES:
        return _PURCHASE_VALUE
    return None


def _event_id(event: Event) -> str | None:
    event_id = event.get("event_id")
    return event_id if type(event_id) is str else None


def check_event(event: Event, now: float, rejected_ids: frozenset[str] = frozenset()) -> ErrorAnswer | None:
    """Meta's error for one event, or None: the rules of the module table, in order (the reference).

    `validate_events` gives the same answers faster; tests hold the two together.
    """
    name = event.get("event_name")
    if type(name) is not str or not name:
        return _MISSING["event_name"]
    event_time: Any = event.get("event_time")
    if type(event_time) not in (int, float):
        return _MISSING["event_time"]
    source = event.get("action_source")
    if type(source) is not str:
        return _MISSING["action_source"]
    if source not in ACTION_SOURCES:
        return _INVALID_ACTION_SOURCE
    max_age = PHYSICAL_STORE_MAX_AGE_S if source == "physical_store" else MAX_EVENT_AGE_S
    if event_time < now - max_age:
        return _TOO_OLD
    if event_time > now + MAX_FUTURE_SKEW_S:
        return _FUTURE
    user_data = event.get("user_data")
    if type(user_data) is not dict:
        return _MISSING["user_data"]
    problem = _check_user_data(user_data)
    if problem is None and source == "app":
        problem = _check_app_data(event.get("app_data"))
    if problem is None and source == "website":
        if not user_data.get("client_user_agent"):
            return _MISSING["client_user_agent"]
        if not event.get("event_source_url"):
            return _MISSING["event_source_url"]
    if problem is None and name == _PURCHASE:
        problem = _check_purchase(event.get("custom_data"))
    if problem is None and rejected_ids and _event_id(event) in rejected_ids:
        return _REJECTED
    return problem


def validate_events(
    events: list[Event], now: float, rejected_ids: frozenset[str] = frozenset()
) -> ErrorAnswer | None:
    """Meta's error for the first invalid event of `events`, or None when every event is valid.

    `now` is the current Unix time in seconds; `rejected_ids` are event ids the test hook refuses.
    A fast pass answers "all valid" for the common case; when it has any doubt, `check_event` runs
    over the events in order and names the first problem.
    """
    if _all_valid(events, now, rejected_ids):
        return None
    for event in events:
        problem = check_event(event, now, rejected_ids)
        if problem is not None:
            return problem
    return None


def _all_valid(events: list[Event], now: float, rejected_ids: frozenset[str]) -> bool:
    """True only when every event passes `check_event`; False means "look closer", not "invalid".

    One loop over events and one over user_data keys with everything inlined (subscripts and `in`
    tests, no method calls where avoidable); the SHA-256 test of all hashed values of the request is
    one pattern match over them joined by newlines, which holds only when each value is exactly 64
    lowercase hex characters (the length test rules out a value holding a newline).
    """
    oldest = now - MAX_EVENT_AGE_S
    newest = now + MAX_FUTURE_SKEW_S
    hashed: list[str] = []
    hashed_fields = MUST_HASH_FIELDS
    raw_fields = _RAW_FIELDS
    broad_keys = BROAD_KEYS
    try:
        for event in events:
            name = event["event_name"]
            event_time: Any = event["event_time"]
            source = event["action_source"]
            user_data = event["user_data"]
            # Type tests are left to the operations where they can be: a non-number event_time fails
            # the comparison (TypeError; a bool is far below `oldest`), a non-object user_data has
            # no .items(), an unhashable action_source fails the set test; all land in the except.
            if type(name) is not str or not name or not oldest <= event_time <= newest or source not in _FAST_SOURCES:
                return False
            strong = False
            for key, value in user_data.items():
                if key in hashed_fields:
                    if type(value) is list:
                        if not value:
                            continue
                        hashed += value
                    elif type(value) is str:
                        hashed.append(value)
                    elif value is None:
                        continue
                    else:
                        return False
                elif key not in raw_fields or not value:
                    continue
                if not strong and key not in broad_keys:
                    strong = True
            if not strong:  # only keys of too-broad sets, or none: let check_event decide
                return False
            if source == "app":
                app_data = event["app_data"]
                ate = app_data["advertiser_tracking_enabled"]
                extinfo = app_data["extinfo"]
                if (
                    type(ate) not in (int, bool, str)
                    or ate not in _FAST_ATE
                    or len(extinfo) != EXTINFO_LENGTH  # a 16-character string fails the slot-0 test
                    or extinfo[0] not in _FAST_EXTINFO_VERSIONS
                    or not extinfo[EXTINFO_OS_VERSION_SLOT]
                ):
                    return False
            if name == _PURCHASE:
                custom_data = event["custom_data"]
                currency = custom_data["currency"]
                if (
                    type(custom_data["value"]) not in (int, float)
                    or type(currency) is not str
                    or currency.lower() not in CURRENCIES
                ):
                    return False
            if rejected_ids and _event_id(event) in rejected_ids:
                return False
    except (KeyError, TypeError, AttributeError):  # a missing field or a value of the wrong type
        return False
    if not hashed:
        return True
    try:
        joined = "\n".join(hashed)
    except TypeError:
        return False
    return len(joined) == 65 * len(hashed) - 1 and _SHA256_LINES(joined) is not None
