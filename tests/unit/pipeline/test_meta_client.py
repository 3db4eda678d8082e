"""Classifying Meta's answers by status, code, subcode and is_transient, never by text."""

from __future__ import annotations

import random

import orjson
import pytest

from stream.pipeline.meta_client import Action, classify, classify_read, dataset_url, describe, retry_after_hint
from stream.pipeline.sender import backoff_delay


def _error(code: int, subcode: int | None = None, transient: bool = False, message: str = "x") -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "OAuthException", "code": code,
                                   "error_subcode": subcode, "is_transient": transient, "fbtrace_id": "T"}})


@pytest.mark.parametrize(
    ("status", "body", "action", "retry_class"),
    [
        (200, b'{"events_received": 3, "messages": [], "fbtrace_id": "A"}', Action.ACKED, ""),
        (400, _error(190, 463), Action.HALT, ""),
        (400, _error(102), Action.HALT, ""),
        (400, _error(100, 33), Action.HALT, ""),
        (403, _error(10), Action.HALT, ""),
        (400, _error(200), Action.HALT, ""),
        (400, _error(4), Action.RETRY, "throttle"),
        (400, _error(17, 2446079), Action.RETRY, "throttle"),
        (400, _error(613, 1487742), Action.RETRY, "throttle"),
        (400, _error(80004), Action.RETRY, "throttle"),
        (429, b"", Action.RETRY, "throttle"),
        (500, _error(1, transient=True), Action.RETRY, "transient"),
        (503, b"<html>down</html>", Action.RETRY, "transient"),
        (400, _error(2), Action.RETRY, "transient"),
        (400, _error(100, 2804050, transient=True), Action.RETRY, "transient"),
        (400, _error(100, 2804003), Action.REJECTED, ""),
        (400, _error(100, 2804050), Action.REJECTED, ""),
        (400, _error(100, 2804999), Action.REJECTED, ""),
        # request-level errors: the request, not an event, is wrong; splitting would dead-letter everything
        (400, _error(100), Action.HALT, ""),
        (400, _error(2500), Action.HALT, ""),
        (400, _error(12), Action.HALT, ""),
        (400, _error(803), Action.HALT, ""),
        (400, _error(368), Action.HALT, ""),
        (400, _error(100, 1234), Action.HALT, ""),
        (404, b"Not Found", Action.HALT, ""),
        (403, b"<html><body>Request blocked by the web application firewall</body></html>", Action.HALT, ""),
        (400, b"", Action.HALT, ""),
        (408, b"", Action.RETRY, "transient"),
    ],
)
def test_answers_are_classified_by_codes(status: int, body: bytes, action: Action, retry_class: str) -> None:
    """Each (status, code/subcode, is_transient) combination maps to one action."""
    answer = classify(status, body, {}, sent=3)
    assert answer.action is action
    assert answer.retry_class == retry_class


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b""),  # empty body
        (200, b"<html><body>Welcome to the hotel wifi</body></html>"),  # a captive portal or proxy page
        (204, b""),  # no content
        (200, b'{"events_received": 2, "messages": []}'),  # fewer events than were sent
        (200, b'{"events_received": "3"}'),  # not a number
        (200, b'{"messages": []}'),  # no count at all
        (200, b"[3]"),  # JSON, but not Meta's object
        (201, b"null"),
    ],
)
def test_a_2xx_without_a_matching_events_received_is_not_an_ack(status: int, body: bytes) -> None:
    """Only a JSON body whose events_received equals the events sent acknowledges them; the rest is retried."""
    answer = classify(status, body, {}, sent=3)
    assert answer.action is Action.RETRY
    assert answer.retry_class == "not_acked"


def test_an_ack_counts_exactly_the_events_sent() -> None:
    """events_received equal to the events sent is the one acknowledgement."""
    answer = classify(200, b'{"events_received": 3, "messages": [], "fbtrace_id": "A"}', {}, sent=3)
    assert (answer.action, answer.events_received, answer.fbtrace_id) == (Action.ACKED, 3, "A")


def test_a_halt_keeps_an_excerpt_of_a_page_that_is_not_meta_json() -> None:
    """What a proxy answered goes to the log (bounded, one line), so an operator sees who answered."""
    page = b"<html>\n<title>403 Forbidden</title>\n" + b"x" * 5000 + b"</html>"
    answer = classify(403, page, {}, sent=3)
    assert answer.action is Action.HALT
    assert answer.excerpt.startswith("<html> <title>403 Forbidden</title>")
    assert len(answer.excerpt) <= 200
    assert describe(answer, secret="")["excerpt"] == answer.excerpt


def test_describe_never_shows_the_token() -> None:
    """An answer that echoes the token (a proxy's error page might) is logged with the token masked."""
    answer = classify(404, b"<html>no route for access_token=SECRET123 here</html>", {}, sent=1)
    token = "SECRET123"  # noqa: S105 - a test value
    assert token not in str(describe(answer, token))


def test_the_message_text_never_changes_the_classification() -> None:
    """A localised or alarming message does not change what a code means."""
    a = classify(400, _error(100, 2804003, message="Événement trop ancien"), {}, sent=3)
    b = classify(400, _error(100, 2804003, message="token expired, retry later"), {}, sent=3)
    assert a.action is b.action is Action.REJECTED
    assert (a.code, a.subcode) == (100, 2804003)


def test_rate_limit_hints_are_read_from_headers() -> None:
    """Retry-After seconds and the BUC header's minutes become a retry delay floor."""
    assert retry_after_hint({"Retry-After": "7"}) == 7.0
    buc = orjson.dumps({"123": [{"type": "ads_management", "estimated_time_to_regain_access": 2}]}).decode()
    assert retry_after_hint({"X-Business-Use-Case-Usage": buc}) == 120.0
    assert retry_after_hint({}) is None
    assert classify(400, _error(80004), {"X-Business-Use-Case-Usage": buc}, sent=1).retry_after == 120.0


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    """Delays double per attempt within [d/2, d], stop at the cap, and respect Meta's hint."""
    rng = random.Random(1)
    for attempt, base in ((0, 0.2), (1, 0.4), (3, 1.6), (20, 30.0)):
        delay = backoff_delay(attempt, 0.2, 30.0, None, rng)
        assert base / 2 <= delay <= base
    assert backoff_delay(0, 0.2, 30.0, 60.0, rng) == 60.0


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (200, b'{"id": "123456"}', Action.ACKED),
        (200, b'{"id": "999"}', Action.RETRY),  # another object: not the dataset asked for
        (200, b"", Action.RETRY),
        (200, b"<html>Sign in to the network</html>", Action.RETRY),  # a captive portal's 200
        (204, b"", Action.RETRY),
        (400, _error(190, 463), Action.HALT),
        (400, _error(100, 33), Action.HALT),
        (403, _error(200), Action.HALT),
        (400, _error(2500), Action.HALT),
        (403, b"<html>403 Forbidden</html>", Action.HALT),  # a WAF's page
        (500, _error(1, 99, transient=True), Action.RETRY),
        (400, _error(80004), Action.RETRY),
    ],
)
def test_a_read_of_the_dataset_is_acked_only_by_its_own_id(status: int, body: bytes, action: Action) -> None:
    """The probe's GET /{version}/{dataset_id}?fields=id succeeds only with Meta's JSON naming that dataset;
    an error is classified exactly like an answer to POST events."""
    answer = classify_read(status, body, {}, "123456")
    assert answer.action is action
    if action is Action.HALT and body.startswith(b"{"):
        assert answer == classify(status, body, {}, 1)


def test_the_dataset_url_carries_no_token() -> None:
    """The read's URL names the version, the dataset and the one field; the token goes in a header."""
    assert dataset_url("https://graph.facebook.com/", "v26.0", "123") == "https://graph.facebook.com/v26.0/123?fields=id"
