"""Requests for the emulator's contract: the encodings, one broken event per validation rule, request-level
errors. Shared by the socket contract tests and the fast path's differential tests."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import orjson

from stream.emulator import answers
from stream.emulator.samples import sample_events, sha256
from tests.support.meta_facts import MAX_EVENT_AGE_S

DATASET = "1234567890"
TOKEN = "tok-1"  # noqa: S105 - a fake token for the local emulator
Event = dict[str, Any]

def now() -> int:
    """The wall clock in whole seconds, as event_time carries it."""
    return int(time.time())


def as_json(events: list[Event]) -> tuple[str, bytes, str]:
    return "", orjson.dumps({"data": events, "access_token": TOKEN, "test_event_code": "T1"}), "application/json"


def as_form(events: list[Event]) -> tuple[str, bytes, str]:
    body = {"data": orjson.dumps(events).decode(), "access_token": TOKEN, "test_event_code": "T1"}
    return "", urlencode(body).encode(), "application/x-www-form-urlencoded"


def as_form_token_in_query(events: list[Event]) -> tuple[str, bytes, str]:
    body = urlencode({"data": orjson.dumps(events).decode(), "test_event_code": "T1"})
    return f"?access_token={TOKEN}", body.encode(), "application/x-www-form-urlencoded"


def as_json_strings(events: list[Event]) -> tuple[str, bytes, str]:
    # Meta's SDK encodes each event as a JSON string inside `data`.
    body = {"data": [orjson.dumps(e).decode() for e in events], "test_event_code": "T1"}
    return f"?access_token={TOKEN}", orjson.dumps(body), "application/json"


ENCODINGS = [as_json, as_form, as_form_token_in_query, as_json_strings]


def invalid_batch() -> list[Event]:
    events = sample_events(3, now())
    events[1]["user_data"]["em"] = ["someone@example.com"]
    return events


H = sha256("x")


def break_rule(event: Event, rule: str) -> None:
    if rule == "missing_field":
        del event["event_name"]
    elif rule == "action_source":
        event["action_source"] = "mobile"
    elif rule == "too_old":
        event["event_time"] = now() - MAX_EVENT_AGE_S - 60
    elif rule == "future":
        event["event_time"] = now() + 3600
    elif rule == "unhashed":
        event["user_data"]["em"] = "raw@example.com"
    elif rule == "no_customer_info":
        event["user_data"] = {}
    elif rule == "too_broad":
        event["user_data"] = {"country": H, "ge": H}
    elif rule == "app_data":
        event["app_data"]["extinfo"][0] = "w1"
    elif rule == "purchase":
        del event["custom_data"]["currency"]
    elif rule == "website":
        event["action_source"] = "website"


RULES = [
    ("missing_field", answers.SUBCODE_MISSING_FIELD, "Missing Required Parameter"),
    ("action_source", answers.SUBCODE_INVALID_ACTION_SOURCE, "Invalid Action Source"),
    ("too_old", 2804003, "Event Timestamp Too Old"),
    ("future", answers.SUBCODE_INVALID_EVENT_TIME, "Event Timestamp In The Future"),
    ("unhashed", answers.SUBCODE_UNHASHED_FIELD, "Unhashed Customer Information"),
    ("no_customer_info", 2804050, "Insufficient Customer Information Parameters"),
    ("too_broad", 2804050, "Insufficient Customer Information Parameters"),
    ("app_data", answers.SUBCODE_INVALID_APP_DATA, "Invalid App Data"),
    ("purchase", answers.SUBCODE_PURCHASE_VALUE, "Missing Value Or Currency"),
    ("website", answers.SUBCODE_MISSING_FIELD, "Missing Required Parameter"),
]



REQUEST_ERRORS = [
    ("no data", {"access_token": TOKEN}, "100", "The parameter data is required"),
    ("data not a list", {"data": {"a": 1}, "access_token": TOKEN}, "100", "must be an array"),
    ("1001 events", {"data": sample_events(1001, int(time.time())), "access_token": TOKEN}, "100", "at most 1000"),
    ("no token", {"data": sample_events(1, int(time.time()))}, "104", "access token is required"),
    ("test_event_code not a string", {"data": [], "access_token": TOKEN, "test_event_code": 5}, "100", "string"),
]
