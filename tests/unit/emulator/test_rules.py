"""Meta's validation rules as the emulator applies them, one rule per row (pure, no network)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.contract.meta import (
    PHYSICAL_STORE_MAX_AGE_S,
    SUBCODE_EVENT_TOO_OLD,
)
from stream.emulator import answers, rules
from stream.emulator.samples import sample_event, sample_events
from tests.support.emulator_cases import (
    EVENT_FIELDS,
    INVALID_CASES,
    NOW,
    OVERRIDES,
    VALID_CASES,
    Event,
    near_valid_events,
)


@pytest.mark.parametrize(("case", "mutate", "subcode"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_each_rule_refuses_with_its_subcode(case: str, mutate: Callable[[Event], None], subcode: int) -> None:
    """An event breaking one rule makes the request fail with code 100 and that rule's subcode."""
    event = sample_event(0, NOW)  # index 0 is a Purchase app event
    mutate(event)
    problem = rules.validate_events([sample_event(1, NOW), event], NOW)
    assert problem is not None
    assert (problem.status, problem.code, problem.subcode) == (400, 100, subcode)
    assert rules.check_event(event, NOW) == problem




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
    assert problem.subcode == answers.SUBCODE_INVALID_ACTION_SOURCE


def test_rejected_event_ids_refuse_the_request() -> None:
    """An event whose id is in the test hook's set is refused with the hook's subcode."""
    events = sample_events(3, NOW, prefix="x")
    assert rules.validate_events(events, NOW, frozenset({"y1"})) is None
    problem = rules.validate_events(events, NOW, frozenset({"x2"}))
    assert problem is not None
    assert problem.subcode == answers.SUBCODE_REJECTED_EVENT


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
    assert isinstance(result, answers.ErrorAnswer)
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




@settings(max_examples=400, deadline=None)
@given(st.lists(EVENT_FIELDS, min_size=1, max_size=4))
def test_fast_pass_agrees_with_the_reference_rules(events: list[Event]) -> None:
    """validate_events answers exactly what check_event says of the first invalid event."""
    expected = next((p for e in events if (p := rules.check_event(e, NOW, frozenset({"b"}))) is not None), None)
    assert rules.validate_events(events, NOW, frozenset({"b"})) == expected






@settings(max_examples=400, deadline=None)
@given(OVERRIDES, st.integers(min_value=0, max_value=5))
def test_fast_pass_agrees_near_valid_events(overrides: list[tuple[str, object]], index: int) -> None:
    """Valid events with up to three fields overridden get the reference answer from validate_events."""
    events = near_valid_events(overrides, index)
    expected = next((p for e in events if (p := rules.check_event(e, NOW, frozenset({"b"}))) is not None), None)
    assert rules.validate_events(events, NOW, frozenset({"b"})) == expected
