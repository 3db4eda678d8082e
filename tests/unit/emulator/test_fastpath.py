"""The acceptance fast path answers every request exactly as the exact rules do (pure, no network).

Each test sends the same requests, twice each (so dedupe is exercised), to an emulator with the fast
path and to one without, through `Emulator.handle`, and requires the same status, body (but the
fbtrace_id) and headers, then the same stats, received keys and recent events. The requests: every
case of the rule table (tests/unit/emulator/test_rules.py), every body the socket contract tests send
(tests/support/emulator_requests.py), JSON edge cases where two JSON decoders could
disagree, and generated ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, get_args
from urllib.parse import unquote_plus, urlencode

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.contract.meta import ACTION_SOURCES
from stream.emulator import Emulator, fastpath, server
from stream.emulator.samples import sample_event, sample_events
from tests.support import emulator_cases as rules_cases
from tests.support import emulator_requests as contract

NOW = rules_cases.NOW
DATASET = "1234567890"
TOKEN = "tok-1"  # noqa: S105 - a fake token for the emulator
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
Event = dict[str, Any]
# (content type, body, query string parameters)
Request = tuple[str, bytes, dict[str, str]]


def _reply(emu: Emulator, request: Request, now: float, dataset: str) -> tuple[int, Any, dict[str, str]]:
    content_type, body, query = request
    status, payload, headers = emu.handle(dataset, content_type, body, query, now)
    answer = orjson.loads(payload)
    trace = answer.pop("fbtrace_id", None) or answer.get("error", {}).pop("fbtrace_id", None)
    assert trace is not None
    assert headers["x-fb-trace-id"] == trace
    return status, answer, {k: v for k, v in headers.items() if k != "x-fb-trace-id"}


def _same_answers(
    requests: Iterable[Request],
    now: float = NOW,
    dataset: str = DATASET,
    tokens: dict[str, str] | None = None,
) -> int:
    """Send each request twice to both emulators; assert identical answers and ledgers; return how
    many the fast path took."""
    tokens = tokens if tokens is not None else {DATASET: TOKEN}
    fast, exact = Emulator(tokens=tokens), Emulator(tokens=tokens, fast_path=False)
    for request in requests:
        for _ in range(2):
            assert _reply(fast, request, now, dataset) == _reply(exact, request, now, dataset), request[1][:300]
    assert exact.fast_requests == 0
    assert fast.ledger.stats() == exact.ledger.stats()
    assert fast.ledger.received() == exact.ledger.received()
    assert fast.ledger.received(test=True) == exact.ledger.received(test=True)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # the nesting cases keep 1,000-deep values
    try:
        assert [a.to_dict() for a in fast.ledger.recent(10_000)] == [a.to_dict() for a in exact.ledger.recent(10_000)]
    finally:
        sys.setrecursionlimit(limit)
    return fast.fast_requests


def _json(events: object, **params: object) -> Request:
    return JSON, orjson.dumps({"data": events, "access_token": TOKEN, **params}), {}


def _form(events: object, **params: str) -> Request:
    data = events if isinstance(events, str) else orjson.dumps(events).decode()
    return FORM, urlencode({"data": data, "access_token": TOKEN, **params}).encode(), {}


def _both(events: list[Event]) -> list[Request]:
    return [_json(events), _form(events)]


def test_fast_sources_are_metas_but_website_and_physical_store() -> None:
    """The action sources the fast path types are Meta's, less the two with rules of their own."""
    assert set(get_args(fastpath.FastSource)) == ACTION_SOURCES - {"website", "physical_store"}


@pytest.mark.parametrize(
    "request_",
    [
        _json(sample_events(1000, NOW)),
        _form(sample_events(1000, NOW)),
        _json(sample_events(3, NOW), test_event_code="T1"),
        _form(sample_events(3, NOW), test_event_code="T1"),
        (JSON, orjson.dumps({"data": sample_events(2, NOW)}), {"access_token": TOKEN}),
        # multipart forms reach `handle` with the fields in the query and no body
        ("multipart/form-data", b"", {"data": orjson.dumps(sample_events(2, NOW)).decode(), "access_token": TOKEN}),
    ],
    ids=["json 1000", "form 1000", "json test code", "form test code", "token in query", "multipart"],
)
def test_valid_requests_of_the_usual_shapes_take_the_fast_path(request_: Request) -> None:
    """The pipeline's and the benchmark's requests are accepted by the fast path, with the same answers."""
    assert _same_answers([request_]) == 2


def _without_ids(count: int) -> list[Event]:
    events = sample_events(count, NOW)
    for event in events:
        del event["event_id"]
    return events


@pytest.mark.parametrize(
    "events",
    [_without_ids(3), sample_events(3, NOW) + sample_events(2, NOW), sample_events(3, NOW) + _without_ids(2)],
    ids=["no event ids", "ids repeated within a request", "some without ids"],
)
def test_dedupe_answers_alike(events: list[Event]) -> None:
    """Events without ids, and ids repeated in one request, are counted alike by both paths."""
    assert _same_answers(_both(events)) == 4


def _mutated(mutate: Callable[[Event], object]) -> list[Event]:
    event = sample_event(0, NOW)
    mutate(event)
    return [sample_event(1, NOW), event]


@pytest.mark.parametrize(
    ("case", "mutate"),
    [(c[0], c[1]) for c in rules_cases.INVALID_CASES] + rules_cases.VALID_CASES,
    ids=[c[0] for c in rules_cases.INVALID_CASES] + [c[0] for c in rules_cases.VALID_CASES],
)
def test_every_rule_table_case_answers_alike(case: str, mutate: Callable[[Event], object]) -> None:
    """Each invalid and valid case of the rule table, as JSON and as a form, gets the same answer."""
    _same_answers(_both(_mutated(mutate)))


def test_invalid_cases_never_take_the_fast_path() -> None:
    """No invalid case of the rule table is accepted by the fast path."""
    for _, mutate, _ in rules_cases.INVALID_CASES:
        request = _json(_mutated(mutate))
        assert fastpath.from_json(request[1], {}, NOW) is None


def _contract_requests() -> list[Request]:
    """Every events request the socket contract tests send, as `handle` receives it."""
    now_events = sample_events(5, contract.now())
    requests: list[Request] = []
    for encode in contract.ENCODINGS:
        for events in (now_events, contract.invalid_batch()):
            query, body, content_type = encode(events)
            requests.append((content_type, body, dict(p.split("=", 1) for p in query[1:].split("&") if p)))
    for rule, _, _ in contract.RULES:
        events = sample_events(4, contract.now())
        contract.break_rule(events[3], rule)
        if rule == "purchase":
            contract.break_rule(events[0], rule)
        requests.append((JSON, orjson.dumps({"data": events, "access_token": TOKEN}), {}))
    requests += [(JSON, orjson.dumps(body), {}) for _, body, _, _ in contract.REQUEST_ERRORS]
    requests += [(JSON, b"{not json", {"access_token": TOKEN}), (JSON, b"[1,2]", {"access_token": TOKEN}),
                 (FORM, b"data=%FF%FE", {"access_token": TOKEN})]  # fmt: skip
    events = sample_events(10, contract.now())
    requests += [(JSON, orjson.dumps({"data": events, "access_token": TOKEN}), {})] * 2  # the dedupe test
    return requests


def test_every_contract_test_request_answers_alike() -> None:
    """The bodies of the socket contract tests get the same answers from both paths."""
    assert _same_answers(_contract_requests(), now=contract.now()) > 0
    events = sample_events(1, contract.now())
    for dataset, token in [(DATASET, TOKEN), (DATASET, "tok-999"), ("555", TOKEN), (DATASET, "nonsense")]:
        request = (JSON, orjson.dumps({"data": events, "access_token": token}), {})
        _same_answers([request], now=contract.now(), dataset=dataset, tokens={DATASET: TOKEN, "999": "tok-999"})


H: str = sample_event(0, NOW)["user_data"]["em"][0]
_VALID = orjson.dumps({"data": sample_events(3, NOW), "access_token": TOKEN})
_EM = b'"em":' + orjson.dumps(sample_event(0, NOW)["user_data"]["em"])
# Text substituted into the valid body: where a lenient JSON decoder, or a lenient type, would differ.
_SPLICES: list[tuple[str, bytes, bytes]] = [
    ("huge integer in custom_data", b'"content_ids":["sku-1"]', b'"content_ids":[' + b"9" * 400 + b"]"),
    ("309-digit integer", b'"content_ids":["sku-1"]', b'"content_ids":[' + b"9" * 309 + b"]"),
    ("308-digit integer", b'"content_ids":["sku-1"]', b'"content_ids":[' + b"9" * 308 + b"]"),
    ("4300-digit integer", b'"content_ids":["sku-1"]', b'"content_ids":[' + b"9" * 4300 + b"]"),
    ("20-digit integer", b'"content_ids":["sku-1"]', b'"content_ids":[' + b"9" * 20 + b"]"),
    ("float overflow", b'"content_ids":["sku-1"]', b'"content_ids":[1e400]'),
    ("negative float overflow", b'"value":9.99', b'"value":-1e400'),
    ("float underflow", b'"value":9.99', b'"value":1e-400'),
    ("huge value", b'"value":9.99', b'"value":' + b"1" * 30),
    ("invalid UTF-8 in custom_data", b'"sku-1"', b'"sku-\xff"'),
    ("invalid UTF-8 in an extinfo slot", b'"Pixel 8"', b'"Pixel \xc0\xaf"'),
    ("UTF-8 surrogate in event_id", b'"e0"', b'"e\xed\xa0\x80"'),
    ("lone surrogate escape", b'"sku-1"', b'"\\ud800"'),
    ("escaped NUL", b'"sku-1"', b'"\\u0000"'),
    ("non-ASCII text", b'"sku-1"', '"sk\u00fc-\u20ac-\U0001f600"'.encode()),
    ("non-ASCII hash", H.encode(), ("\u00e9" + H[1:]).encode()),
    ("upper-case hash", H.encode(), H.upper().encode()),
    ("hash with a newline escape", H.encode(), H[:62].encode() + b"\\n"),
    ("duplicate em, raw last", _EM, _EM + b',"em":"raw@example.com"'),
    ("duplicate em, raw first", _EM, b'"em":"raw@example.com",' + _EM),
    ("duplicate em, empty last", _EM, _EM + b',"em":[]'),
    ("duplicate event_name", b'"event_name":"Purchase"', b'"event_name":"Purchase","event_name":""'),
    ("duplicate data", b'{"data":[', b'{"data":[],"data":['),
    ("duplicate access_token", b'"access_token":"tok-1"', b'"access_token":"tok-1","access_token":"x"'),
    ("null access_token", b'"access_token":"tok-1"', b'"access_token":null'),
    ("nesting 990", b'"content_ids":["sku-1"]', b'"content_ids":' + b"[" * 990 + b"]" * 990),
    ("nesting 1010", b'"content_ids":["sku-1"]', b'"content_ids":' + b"[" * 1010 + b"]" * 1010),
    ("nesting 1030", b'"content_ids":["sku-1"]', b'"content_ids":' + b"[" * 1030 + b"]" * 1030),
    ("event_time true", b'"event_time":' + str(NOW).encode(), b'"event_time":true'),
    ("event_time as float", b'"event_time":' + str(NOW).encode(), b'"event_time":' + str(NOW).encode() + b".0"),
    ("event_time huge", b'"event_time":' + str(NOW).encode(), b'"event_time":' + b"1" * 25),
    ("event_id a number", b'"event_id":"e0"', b'"event_id":7'),
    ("event_id null", b'"event_id":"e0"', b'"event_id":null'),
    ("ATT flag 1.0", b'"advertiser_tracking_enabled":1', b'"advertiser_tracking_enabled":1.0'),
    ("ATT flag true", b'"advertiser_tracking_enabled":1', b'"advertiser_tracking_enabled":true'),
    ("ATT flag -0", b'"advertiser_tracking_enabled":1', b'"advertiser_tracking_enabled":-0'),
    ("extinfo slot 4 a number", b'"14"', b"14"),
    ("unknown top-level field", b'{"data":[', b'{"partner":1,"data":['),
    ("unknown event field", b'"event_name":"Purchase"', b'"event_name":"Purchase","shoe":1'),
    ("unknown app_data field", b'"extinfo":', b'"shoe":1,"extinfo":'),
    ("trailing garbage", b'"access_token":"tok-1"}', b'"access_token":"tok-1"} x'),
    ("trailing comma", b'"sku-1"]', b'"sku-1",]'),
    ("byte order mark", b'{"data":[', b'\xef\xbb\xbf{"data":['),
    ("test_event_code a number", b'"access_token":"tok-1"', b'"access_token":"tok-1","test_event_code":5'),
    ("currency mixed case", b'"currency":"usd"', b'"currency":"Usd"'),
    ("currency unknown", b'"currency":"usd"', b'"currency":"xyz"'),
    ("value a boolean", b'"value":9.99', b'"value":true'),
    ("custom_data a list", b'{"value":9.99,"currency":"usd","content_ids":["sku-1"]}', b"[]"),
]


@pytest.mark.parametrize(("case", "old", "new"), _SPLICES, ids=[c[0] for c in _SPLICES])
def test_json_edge_cases_answer_alike(case: str, old: bytes, new: bytes) -> None:
    """Text spliced into a valid body (numbers, encodings, duplicates, depth, types) answers alike."""
    assert old in _VALID
    body = _VALID.replace(old, new, 1)
    requests: list[Request] = [(JSON, body, {})]
    data = body[len(b'{"data":') : body.rindex(b',"access_token"')] if body.startswith(b'{"data":[') else None
    if data is not None:
        # the same events as a form: percent-encoded bytes (invalid UTF-8 included)
        requests.append((FORM, b"access_token=" + TOKEN.encode() + b"&data=" + _percent(data), {}))
    _same_answers(requests)


def _percent(data: bytes) -> bytes:
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02X}" for b in data).encode()


@pytest.mark.parametrize(
    "body",
    [b"data=" + _percent(orjson.dumps(sample_events(2, NOW))).replace(b"%2C", b",", 3) + b"&access_token=tok-1",
     b"data=" + _percent(orjson.dumps(sample_events(2, NOW))) + b"%zz&access_token=tok-1",
     b"data=" + _percent(orjson.dumps(sample_events(2, NOW))).replace(b"%22", b"%2", 1) + b"&access_token=tok-1",
     b"data=" + _percent(orjson.dumps(sample_events(2, NOW))) + b"&data=%5B%5D&access_token=tok-1",
     b"data=%5B%5D&data=" + _percent(orjson.dumps(sample_events(2, NOW))) + b"&access_token=tok-1",
     b"d%61ta=" + _percent(orjson.dumps(sample_events(2, NOW))) + b"&access_token=tok-1",
     b"data=" + _percent(orjson.dumps(sample_events(2, NOW))) + b"&access_token=tok-1&test_event_code=a+b",
     b"data=" + _percent(orjson.dumps(sample_events(2, NOW)).replace(b'"r0', b'"r+0')) + b"&access_token=tok-1",
     b"data=" + _percent(orjson.dumps(sample_events(2, NOW))) + b"&access_token=tok-1&",
     b"data=" + _percent(b"\xff" + orjson.dumps(sample_events(2, NOW))) + b"&access_token=tok-1"],
    ids=["raw commas", "invalid escape", "short escape", "data twice, list last", "data twice, events last",
         "encoded name", "plus in a parameter", "plus in data", "trailing ampersand", "leading 0xff"],
)  # fmt: skip
def test_form_encoding_edge_cases_answer_alike(body: bytes) -> None:
    """Form bodies with odd encodings get the same answer from both paths."""
    _same_answers([(FORM, body, {})])


@settings(max_examples=300, deadline=None)
@given(st.lists(rules_cases.EVENT_FIELDS, min_size=1, max_size=4))
def test_generated_events_answer_alike(events: list[Event]) -> None:
    """Events of arbitrary field combinations answer alike, as JSON and as a form."""
    _same_answers(_both(events))


@settings(max_examples=300, deadline=None)
@given(rules_cases.OVERRIDES, st.integers(min_value=0, max_value=5))
def test_near_valid_events_answer_alike(overrides: list[tuple[str, object]], index: int) -> None:
    """Valid events with up to three fields overridden answer alike (most stay valid)."""
    _same_answers(_both(rules_cases.near_valid_events(overrides, index)))


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**320)
    | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES, st.sampled_from(["custom_data", "opt_out", "user_data.madid", "app_data.install_referrer"]),
       st.booleans(), st.booleans())  # fmt: skip
def test_arbitrary_json_values_answer_alike(value: object, path: str, ascii_only: bool, purchase: bool) -> None:
    """Any JSON value (big numbers, infinities, any text, lone surrogates as escapes or raw bytes) in a
    field the rules do not look into, or in custom_data, answers alike."""
    events = sample_events(2, NOW)
    event = events[0 if purchase else 1]
    parent, _, leaf = path.rpartition(".")
    (event[parent] if parent else event)[leaf] = value
    try:
        text = json.dumps({"data": events, "access_token": TOKEN}, ensure_ascii=ascii_only)
    except ValueError:  # nothing to send
        return
    body = text.encode("utf-8", "surrogatepass")  # raw lone surrogates become invalid UTF-8
    _same_answers([(JSON, body, {})])


def _reference_form_pairs(text: str, unquote: Callable[[str], str]) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=&+%20zZ\u00e9", max_size=30))
def test_form_pairs_split_like_a_partition_of_each_part(text: str) -> None:
    """The form decoder both paths share splits on & and the first =, and decodes as urllib does
    (but for invalid %-escapes, which yarl's decoder keeps as they are)."""
    pairs = server._form_pairs(text)
    assert pairs == _reference_form_pairs(text, server._unquote_plus)
    if "%" not in text:
        assert pairs == _reference_form_pairs(text, unquote_plus)
