"""Meta's answers at the edges of each rule (stream/contract/README.md §6.2, §6.4), written out as a table:
which status and code retry, halt or split, and what an answer carries (its status, the count Meta
received, a wait hint only when the request is retried)."""

from __future__ import annotations

import orjson
import pytest

from stream.pipeline.meta_client import Action, classify


def graph_error(**fields: object) -> bytes:
    return orjson.dumps({"error": {"message": "anything", **fields}})


@pytest.mark.parametrize(
    ("status", "body", "action", "retry_class"),
    [
        (500, graph_error(code=999), Action.RETRY, "transient"),  # 5xx: temporary
        (499, graph_error(code=999), Action.HALT, ""),  # a 4xx not listed: about the request
        (408, graph_error(), Action.RETRY, "transient"),  # a timeout without a code
        (409, graph_error(), Action.HALT, ""),  # another 4xx without a code
        (429, graph_error(code=999), Action.RETRY, "throttle"),  # HTTP's own throttle
        (430, graph_error(code=999), Action.HALT, ""),
        (400, graph_error(code=2), Action.RETRY, "transient"),  # code 2: service trouble
        (400, graph_error(code=999, is_transient=True), Action.RETRY, "transient"),
        (400, graph_error(code=100, error_subcode=2804019), Action.REJECTED, ""),  # about an event: split
        (400, graph_error(code=100, error_subcode=33), Action.HALT, ""),  # no dataset: about the request
        (300, b'{"events_received": 1}', Action.RETRY, "not_acked"),  # not a 2xx: never an ack
        (200, b'{"events_received": 1}', Action.ACKED, ""),
    ],
)
def test_the_rule_edges(status: int, body: bytes, action: Action, retry_class: str) -> None:
    """Each answer gets the action the policy table gives it, and keeps its HTTP status."""
    answer = classify(status, body, {}, 1)
    assert (answer.action, answer.retry_class) == (action, retry_class)
    assert answer.status == status


def test_a_short_count_is_kept_on_the_retried_answer() -> None:
    """A 2xx that counts fewer events than were sent is retried and says how many Meta counted (0 if none)."""
    short = classify(200, b'{"events_received": 2}', {}, 3)
    assert (short.action, short.retry_class, short.events_received) == (Action.RETRY, "not_acked", 2)
    assert classify(200, b"{}", {}, 3).events_received == 0
    assert classify(200, b'{"events_received": "3"}', {}, 3).events_received == 0


@pytest.mark.parametrize(
    ("status", "body", "hint"),
    [
        (429, graph_error(code=999), 7.0),  # retried: the hint is kept
        (503, b"<html>busy</html>", 7.0),  # retried, not Graph's page: the hint is kept
        (400, graph_error(code=190, error_subcode=463), None),  # halted: no wait applies
        (404, b"<html>no</html>", None),  # halted, not Graph's page
    ],
)
def test_a_wait_hint_only_on_retried_answers(status: int, body: bytes, hint: float | None) -> None:
    """Retry-After is read for answers that are retried, and left out of the others."""
    assert classify(status, body, {"Retry-After": "7"}, 1).retry_after == hint
