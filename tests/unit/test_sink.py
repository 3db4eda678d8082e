"""Classifying Meta's answers by status, code, subcode and is_transient, never by text."""

from __future__ import annotations

import random

import orjson
import pytest

from stream.sender import backoff_delay
from stream.sink import Verdict, classify, retry_after_hint


def _error(code: int, subcode: int | None = None, transient: bool = False, message: str = "x") -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "OAuthException", "code": code,
                                   "error_subcode": subcode, "is_transient": transient, "fbtrace_id": "T"}})


@pytest.mark.parametrize(
    ("status", "body", "verdict", "retry_class"),
    [
        (200, b'{"events_received": 3, "messages": [], "fbtrace_id": "A"}', Verdict.ACKED, ""),
        (400, _error(190, 463), Verdict.HALT, ""),
        (400, _error(102), Verdict.HALT, ""),
        (400, _error(100, 33), Verdict.HALT, ""),
        (403, _error(10), Verdict.HALT, ""),
        (400, _error(200), Verdict.HALT, ""),
        (400, _error(4), Verdict.RETRY, "throttle"),
        (400, _error(17, 2446079), Verdict.RETRY, "throttle"),
        (400, _error(613, 1487742), Verdict.RETRY, "throttle"),
        (400, _error(80004), Verdict.RETRY, "throttle"),
        (429, b"", Verdict.RETRY, "throttle"),
        (500, _error(1, transient=True), Verdict.RETRY, "transient"),
        (503, b"<html>down</html>", Verdict.RETRY, "transient"),
        (400, _error(2), Verdict.RETRY, "transient"),
        (400, _error(100, 2804050, transient=True), Verdict.RETRY, "transient"),
        (400, _error(100, 2804003), Verdict.REJECTED, ""),
        (400, _error(100, 2804050), Verdict.REJECTED, ""),
        (400, _error(100), Verdict.REJECTED, ""),
    ],
)
def test_answers_are_classified_by_codes(status: int, body: bytes, verdict: Verdict, retry_class: str) -> None:
    """Each (status, code/subcode, is_transient) combination maps to one action."""
    answer = classify(status, body, {})
    assert answer.verdict is verdict
    assert answer.retry_class == retry_class


def test_the_message_text_never_changes_the_classification() -> None:
    """A localised or alarming message does not change what a code means."""
    a = classify(400, _error(100, 2804003, message="Événement trop ancien"), {})
    b = classify(400, _error(100, 2804003, message="token expired, retry later"), {})
    assert a.verdict is b.verdict is Verdict.REJECTED
    assert (a.code, a.subcode) == (100, 2804003)


def test_rate_limit_hints_are_read_from_headers() -> None:
    """Retry-After seconds and the BUC header's minutes become a retry delay floor."""
    assert retry_after_hint({"Retry-After": "7"}) == 7.0
    buc = orjson.dumps({"123": [{"type": "ads_management", "estimated_time_to_regain_access": 2}]}).decode()
    assert retry_after_hint({"X-Business-Use-Case-Usage": buc}) == 120.0
    assert retry_after_hint({}) is None
    assert classify(400, _error(80004), {"X-Business-Use-Case-Usage": buc}).retry_after == 120.0


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    """Delays double per attempt within [d/2, d], stop at the cap, and respect Meta's hint."""
    rng = random.Random(1)
    for attempt, base in ((0, 0.2), (1, 0.4), (3, 1.6), (20, 30.0)):
        delay = backoff_delay(attempt, 0.2, 30.0, None, rng)
        assert base / 2 <= delay <= base
    assert backoff_delay(0, 0.2, 30.0, 60.0, rng) == 60.0
