"""The emulator's contract over a real socket: Meta's endpoint, its errors, dedupe, faults, inspection.

Every test runs an emulator on 127.0.0.1 (no Kafka). Faults are seeded, so their order is exact;
hold-type faults use a short client timeout against a long hold, never a timed assert.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import pytest

from stream.emulator import Emulator, EmulatorError, EmulatorThread, answers
from stream.emulator.samples import sample_events
from tests.support.emulator_requests import (
    DATASET,
    ENCODINGS,
    REQUEST_ERRORS,
    RULES,
    TOKEN,
    Event,
    as_json,
    break_rule,
    invalid_batch,
    now,
)
from tests.support.meta_facts import GRAPH_API_VERSION

if TYPE_CHECKING:
    from tests.support.emulator import EmulatorFactory




def _post_sync(url: str, body: bytes) -> tuple[int, Any]:
    """POST JSON with the standard library (for synchronous tests)."""
    address, path = url.removeprefix("http://").split("/", 1)
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", "/" + path, body=body, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, orjson.loads(answer.read())
    finally:
        connection.close()



def _events_url(emu: Emulator, dataset: str = DATASET, version: str = GRAPH_API_VERSION) -> str:
    return f"{emu.url}/{version}/{dataset}/events"


async def _post_json(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any, Any]:
    async with http.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as r:
        return r.status, orjson.loads(await r.read()), r.headers


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200
        return orjson.loads(await r.read())


# --- request encodings -----------------------------------------------------------------------------



async def _send(http: aiohttp.ClientSession, emu: Emulator, encode: Callable[..., Any], events: list[Event]) -> Any:
    query, body, content_type = encode(events)
    async with http.post(_events_url(emu) + query, data=body, headers={"Content-Type": content_type}) as r:
        payload = orjson.loads(await r.read())
        payload.get("error", {}).pop("fbtrace_id", None)
        payload.pop("fbtrace_id", None)
        return r.status, payload



@pytest.mark.parametrize("encode", ENCODINGS, ids=[e.__name__ for e in ENCODINGS])
async def test_every_encoding_gives_the_same_result(
    encode: Callable[..., Any], emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    """JSON, form-encoded, token in the query and SDK-style JSON strings accept and refuse alike."""
    reference = await emulator_factory(tokens={DATASET: TOKEN})
    other = await emulator_factory(tokens={DATASET: TOKEN})
    good = sample_events(5, now())
    assert await _send(http, reference, as_json, good) == (200, {"events_received": 5, "messages": []})
    assert await _send(http, other, encode, good) == (200, {"events_received": 5, "messages": []})
    assert other.ledger.received(test=True) == reference.ledger.received(test=True)
    assert len(other.ledger.received(test=True)) == 5
    assert [a.event for a in other.ledger.recent(5)] == [a.event for a in reference.ledger.recent(5)]
    assert other.ledger.recent(1)[0].test_event_code == "T1"
    refused = await _send(http, reference, as_json, invalid_batch())
    assert refused[0] == 400
    assert await _send(http, other, encode, invalid_batch()) == refused


async def test_multipart_form_is_read_too(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A multipart/form-data body with a `data` field is accepted like the url-encoded one."""
    form = aiohttp.FormData({"data": orjson.dumps(sample_events(2, now())).decode(), "access_token": TOKEN})
    async with http.post(_events_url(emulator), data=form) as r:
        assert r.status == 200
        assert (await r.json())["events_received"] == 2


async def test_success_body_and_trace_header(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A valid request answers 200 with Meta's success body and the trace id also in a header."""
    status, body, headers = await _post_json(http, _events_url(emulator),
                                             {"data": sample_events(3, now()), "access_token": TOKEN})  # fmt: skip
    assert status == 200
    assert set(body) == {"events_received", "messages", "fbtrace_id"}
    assert body["events_received"] == 3
    assert body["messages"] == []
    assert body["fbtrace_id"].startswith("A")
    assert headers["x-fb-trace-id"] == body["fbtrace_id"]


# --- each validation rule and its error body -------------------------------------------------------

@pytest.mark.parametrize(("rule", "subcode", "title"), RULES, ids=[r[0] for r in RULES])
async def test_each_rule_answers_metas_error_and_refuses_the_whole_request(
    rule: str, subcode: int, title: str, emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """One bad event among good ones: HTTP 400, Meta's full error body, and no event recorded."""
    events = sample_events(4, now())
    break_rule(events[3], rule)  # index 3 is a MobileAppInstall; 0 is a Purchase
    if rule == "purchase":
        break_rule(events[0], rule)
    status, body, headers = await _post_json(http, _events_url(emulator), {"data": events, "access_token": TOKEN})
    assert status == 400
    error = body["error"]
    assert error == {"message": "Invalid parameter", "type": "OAuthException", "code": 100, "error_subcode": subcode,
                     "is_transient": False, "error_user_title": title, "error_user_msg": error["error_user_msg"],
                     "fbtrace_id": headers["x-fb-trace-id"]}  # fmt: skip
    assert error["error_user_msg"]
    stats = emulator.ledger.stats()
    assert stats["events_received"] == 0
    assert emulator.ledger.received() == []
    assert stats["errors"] == {f"100/{subcode}": 1}



@pytest.mark.parametrize(("case", "body", "key", "fragment"), REQUEST_ERRORS, ids=[c[0] for c in REQUEST_ERRORS])
async def test_request_level_errors(
    case: str, body: dict[str, Any], key: str, fragment: str, emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Malformed requests get Graph's parameter or token error, without subcode, HTTP 400."""
    status, answer, _ = await _post_json(http, _events_url(emulator), body)
    assert status == 400
    assert str(answer["error"]["code"]) == key
    assert "error_subcode" not in answer["error"]
    assert fragment in answer["error"]["message"]
    assert emulator.ledger.stats()["errors"] == {key: 1}


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [(b"{not json", "application/json", "neither JSON"), (b"[1,2]", "application/json", "must be an object"),
     (b"data=%FF%FE", "application/x-www-form-urlencoded", "must be an array")],
)  # fmt: skip
async def test_unreadable_bodies_are_parameter_errors(
    body: bytes, content_type: str, fragment: str, emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A body that is not JSON, not an object, or holds no readable data is a code 100 error."""
    async with http.post(_events_url(emulator) + f"?access_token={TOKEN}", data=body,
                         headers={"Content-Type": content_type}) as r:  # fmt: skip
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["code"] == 100
    assert fragment in error["message"]


async def test_paths_graph_does_not_route(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A malformed version or an unknown path answers Graph's 'Unknown path components' (2500)."""
    status, body, _ = await _post_json(http, _events_url(emulator, version="26"), {"access_token": TOKEN})
    assert status == 400
    assert body["error"]["code"] == answers.CODE_UNKNOWN_PATH
    async with http.get(f"{emulator.url}/v26.0/{DATASET}/nothing") as r:
        assert r.status == 400
        assert (await r.json())["error"]["message"] == f"Unknown path components: /v26.0/{DATASET}/nothing"


# --- tokens ----------------------------------------------------------------------------------------


async def test_token_answers(emulator_factory: EmulatorFactory, http: aiohttp.ClientSession) -> None:
    """Configured tokens: wrong dataset 100/33, unknown token 190, rotated-out token 190/463."""
    emu = await emulator_factory(tokens={DATASET: TOKEN, "999": "tok-999"})
    events = sample_events(1, now())

    async def key(dataset: str, token: str) -> tuple[int, str]:
        url = _events_url(emu, dataset)
        status, body, headers = await _post_json(http, url, {"data": events, "access_token": token})
        if status == 200:
            return status, "ok"
        error = body["error"]
        assert token not in orjson.dumps(body).decode()
        assert token not in str(dict(headers))
        return status, f"{error['code']}/{error.get('error_subcode', '-')}/{error['type']}"

    assert await key(DATASET, TOKEN) == (200, "ok")
    assert await key(DATASET, "tok-999") == (400, "100/33/GraphMethodException")
    assert await key("555", TOKEN) == (400, "100/33/GraphMethodException")
    assert await key(DATASET, "nonsense") == (400, "190/-/OAuthException")
    async with http.post(f"{emu.url}/_emulator/tokens", json={"dataset_id": DATASET, "token": "tok-new"}) as r:
        assert r.status == 200
        assert "tok-new" not in await r.text()
    assert await key(DATASET, TOKEN) == (400, "190/463/OAuthException")
    assert await key(DATASET, "tok-new") == (200, "ok")
    assert emu.ledger.stats()["errors"] == {"100/33": 2, "190": 1, "190/463": 1}


def _read_url(emu: Emulator, dataset: str = DATASET, version: str = GRAPH_API_VERSION) -> str:
    return f"{emu.url}/{version}/{dataset}?fields=id"


async def _read(http: aiohttp.ClientSession, url: str, token: str | None, how: str = "bearer") -> str:
    """GET a dataset as capi-stream's probe does; "200:<id>" or "<status>:<code>/<subcode>/<type>"."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None and how == "bearer" else {}
    if token is not None and how == "query":
        url += f"&access_token={token}"
    async with http.get(url, headers=headers) as r:
        text = await r.text()
        assert token is None or token not in text, "the token is never in an answer"
        body = orjson.loads(text)
        if r.status == 200:
            assert set(body) == {"id"}
            return f"200:{body['id']}"
        error = body["error"]
        assert error["fbtrace_id"] == r.headers["x-fb-trace-id"]
        return f"{r.status}:{error['code']}/{error.get('error_subcode', '-')}/{error['type']}"


async def test_a_read_of_the_dataset_answers_with_the_token_checks_of_events(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    """GET /{version}/{dataset_id}?fields=id (capi-stream's probe): the dataset's id for its token, in the
    Authorization header or the query; the same errors as POST events otherwise; no event is recorded."""
    emu = await emulator_factory(tokens={DATASET: TOKEN, "999": "tok-999"})
    assert await _read(http, _read_url(emu), TOKEN) == f"200:{DATASET}"
    assert await _read(http, _read_url(emu), TOKEN, how="query") == f"200:{DATASET}"
    assert await _read(http, _read_url(emu), "tok-999") == "400:100/33/GraphMethodException"
    assert await _read(http, _read_url(emu, "555"), TOKEN) == "400:100/33/GraphMethodException"
    assert await _read(http, _read_url(emu), "nonsense") == "400:190/-/OAuthException"
    assert await _read(http, _read_url(emu), None) == f"400:{answers.CODE_TOKEN_MISSING}/-/OAuthException"
    assert (await _read(http, _read_url(emu, version="26.0"), TOKEN)).startswith(f"400:{answers.CODE_UNKNOWN_PATH}/")
    emu.rotate_token(DATASET, "tok-new")
    assert await _read(http, _read_url(emu), TOKEN) == "400:190/463/OAuthException"
    assert await _read(http, _read_url(emu), "tok-new") == f"200:{DATASET}"
    stats = emu.ledger.stats()
    assert (stats["requests"], stats["events_received"], stats["test_events_received"]) == (0, 0, 0)
    assert stats["reads"] == 9


async def test_a_read_says_get_where_events_say_post(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    """Meta's 100/33 message names the request's method ("Unsupported get request.")."""
    emu = await emulator_factory(tokens={DATASET: TOKEN})
    async with http.get(_read_url(emu, "555"), headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert (await r.json())["error"]["message"].startswith("Unsupported get request. Object with ID '555'")


async def test_denied_datasets_refuse_events_and_reads_until_lifted(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A permission revoked on demand (fault denied_datasets) answers 100/33 to events and reads of those
    datasets only; lifting it (a permission re-granted in Business Manager) lets both through again."""
    await _set_faults(http, emulator, {"denied_datasets": [DATASET]})
    assert await _outcome(http, emulator) == "400:100/33"
    assert await _read(http, _read_url(emulator), TOKEN) == "400:100/33/GraphMethodException"
    assert await _read(http, _read_url(emulator, "555"), TOKEN) == "200:555"
    await _set_faults(http, emulator, {})
    assert await _outcome(http, emulator) == "200"
    assert await _read(http, _read_url(emulator), TOKEN) == f"200:{DATASET}"


async def test_token_expired_refuses_reads_too(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """The token_expired fault answers 190/463 to a read as to events."""
    await _set_faults(http, emulator, {"token_expired": True})
    assert await _read(http, _read_url(emulator), TOKEN) == "400:190/463/OAuthException"


@pytest.mark.parametrize("body", [b"{}", b'{"dataset_id": "1"}', b'{"dataset_id": "", "token": "t"}', b"[", b"[]"])
async def test_bad_token_rotation_bodies_are_refused(
    body: bytes, emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A rotation body without a dataset id and a token is refused with a clear message."""
    async with http.post(f"{emulator.url}/_emulator/tokens", data=body) as r:
        assert r.status == 400
        assert (await r.json())["error"]


# --- dedupe ----------------------------------------------------------------------------------------


async def test_resent_events_are_counted_as_duplicates(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Sending the same events twice: both accepted (Meta counts them), the second time as duplicates."""
    events = sample_events(10, now())
    for _ in range(2):
        status, body, _ = await _post_json(http, _events_url(emulator), {"data": events, "access_token": TOKEN})
        assert (status, body["events_received"]) == (200, 10)
    stats = await _get(http, f"{emulator.url}/_emulator/stats")
    assert (stats["events_received"], stats["duplicates"], stats["distinct_keys"]) == (20, 10, 10)
    received = (await _get(http, f"{emulator.url}/_emulator/received"))["received"]
    assert sorted(r["count"] for r in received) == [2] * 10


# --- faults ----------------------------------------------------------------------------------------


async def _set_faults(http: aiohttp.ClientSession, emu: Emulator, body: dict[str, Any]) -> Any:
    async with http.post(f"{emu.url}/_emulator/faults", json=body) as r:
        assert r.status == 200
        return await r.json()


async def _outcome(http: aiohttp.ClientSession, emu: Emulator, timeout: float = 10.0) -> str:  # noqa: ASYNC109 - the client's timeout is what the test varies
    body = orjson.dumps({"data": sample_events(2, now()), "access_token": TOKEN})
    try:
        async with http.post(_events_url(emu), data=body, headers={"Content-Type": "application/json"},
                             timeout=aiohttp.ClientTimeout(total=timeout)) as r:  # fmt: skip
            payload = orjson.loads(await r.read())
            if r.status == 200:
                return "200"
            error = payload["error"]
            return f"{r.status}:{error['code']}/{error.get('error_subcode', '-')}"
    except TimeoutError:
        return "timeout"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "dropped"


@pytest.mark.parametrize(
    ("faults", "outcome"),
    [({"http_500": 1.0}, "500:1/99"), ({"http_503": 1.0}, "503:2/-"), ({"reset": 1.0}, "dropped"),
     ({"timeout": 1.0, "timeout_hold_s": 0.05}, "dropped"), ({"token_expired": True}, "400:190/463")],
)  # fmt: skip
async def test_each_fault_answers_as_meta_fails(
    faults: dict[str, Any], outcome: str, emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Each fault at probability 1 gives its failure, is counted, and records no event."""
    await _set_faults(http, emulator, faults)
    assert [await _outcome(http, emulator) for _ in range(3)] == [outcome] * 3
    stats = emulator.ledger.stats()
    kind = next(k for k in faults if k != "timeout_hold_s")
    assert stats["faults"] == {kind: 3}
    assert stats["events_received"] == 0
    assert stats["errors"] == {}


async def test_fault_bodies_are_metas(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """The 500 and 503 bodies carry Meta's fields and say the error is transient."""
    await _set_faults(http, emulator, {"http_500": 1.0})
    status, body, _ = await _post_json(http, _events_url(emulator), {"access_token": TOKEN})
    assert status == 500
    assert body["error"]["is_transient"] is True
    assert set(body["error"]) == {"message", "type", "code", "error_subcode", "is_transient", "fbtrace_id"}


async def test_timeout_holds_past_the_client_timeout(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A timeout fault with the default hold outlasts a short client timeout; stop() releases it."""
    await _set_faults(http, emulator, {"timeout": 1.0})
    assert await _outcome(http, emulator, timeout=0.3) == "timeout"
    assert emulator.faults.timeout_hold_s == 60.0


async def test_latency_delays_answers(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """With a latency far above the client's timeout the client times out; without it, it succeeds."""
    await _set_faults(http, emulator, {"latency_ms": [60_000, 60_000]})
    assert await _outcome(http, emulator, timeout=0.3) == "timeout"
    await _set_faults(http, emulator, {"latency_ms": [0, 1]})
    assert await _outcome(http, emulator) == "200"


async def test_throttles_rotate_through_codes_with_headers(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Throttle faults answer 4, 17, 613, 80004 in turn, transient, with Meta's usage headers."""
    await _set_faults(http, emulator, {"throttle": 1.0, "throttle_regain_minutes": 2})
    seen = []
    for header in ("X-App-Usage", "X-App-Usage", "X-Ad-Account-Usage", "X-Business-Use-Case-Usage"):
        status, body, headers = await _post_json(http, _events_url(emulator), {"access_token": TOKEN})
        assert status == 400
        assert body["error"]["is_transient"] is True
        assert orjson.loads(headers[header])
        seen.append((body["error"]["code"], body["error"].get("error_subcode")))
    assert seen == [(4, None), (17, 2446079), (613, 1487742), (80004, 2446079)]
    assert orjson.loads(headers["X-Business-Use-Case-Usage"])[DATASET][0]["estimated_time_to_regain_access"] == 2


async def test_token_expired_lasts_until_turned_off(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """token_expired answers 190/463 to every request until the faults are replaced."""
    await _set_faults(http, emulator, {"token_expired": True})
    assert await _outcome(http, emulator) == "400:190/463"
    await _set_faults(http, emulator, {})
    assert await _outcome(http, emulator) == "200"


async def test_reject_event_ids_refuses_whole_requests(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A request holding a rejected event id is refused as invalid; the others are accepted."""
    await _set_faults(http, emulator, {"reject_event_ids": ["bad-1"]})
    good = sample_events(3, now(), prefix="ok-")
    bad = sample_events(3, now(), prefix="bad-")
    status, body, _ = await _post_json(http, _events_url(emulator), {"data": good + bad, "access_token": TOKEN})
    assert status == 400
    assert (body["error"]["code"], body["error"]["error_subcode"]) == (100, answers.SUBCODE_REJECTED_EVENT)
    status, _, _ = await _post_json(http, _events_url(emulator), {"data": good, "access_token": TOKEN})
    assert status == 200
    assert {r["event_id"] for r in emulator.ledger.received()} == {"ok-0", "ok-1", "ok-2"}


async def test_seeded_faults_repeat_exactly(emulator_factory: EmulatorFactory, http: aiohttp.ClientSession) -> None:
    """Two emulators with the same seed fail the same requests in the same way."""
    faults = {"http_500": 0.15, "http_503": 0.15, "throttle": 0.2, "reset": 0.1, "seed": 1234}
    runs = []
    for _ in range(2):
        emu = await emulator_factory()
        await _set_faults(http, emu, faults)
        runs.append([await _outcome(http, emu) for _ in range(30)])
    assert runs[0] == runs[1]
    assert {"200", "500:1/99", "503:2/-", "dropped"} <= set(runs[0])
    assert any(o.startswith("400:") for o in runs[0])


async def test_faults_endpoint_round_trips_and_refuses_bad_bodies(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """GET shows the faults in force; a bad body is refused with the key named and changes nothing."""
    answer = await _set_faults(http, emulator, {"http_503": 0.25, "seed": 9})
    assert answer == await _get(http, f"{emulator.url}/_emulator/faults")
    assert answer["http_503"] == 0.25
    assert answer["seed"] == 9
    for body, fragment in ((b'{"http_503": 2}', "http_503"), (b"{oops", "not JSON"), (b"[1]", "JSON object"),
                           (b'{"explode": 1}', "explode")):  # fmt: skip
        async with http.post(f"{emulator.url}/_emulator/faults", data=body) as r:
            assert r.status == 400
            assert fragment in (await r.json())["error"]
    assert (await _get(http, f"{emulator.url}/_emulator/faults")) == answer


# --- inspection ------------------------------------------------------------------------------------


async def test_inspection_endpoints(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """stats, received (with a dataset filter), events?limit, reset and the page tell what happened."""
    await _post_json(http, _events_url(emulator), {"data": sample_events(3, now(), prefix="a"), "access_token": TOKEN})
    await _post_json(http, _events_url(emulator, "777"), {"data": sample_events(2, now(), prefix="b"),
                                                          "access_token": TOKEN})  # fmt: skip
    await _post_json(http, _events_url(emulator), {"access_token": TOKEN})
    stats = await _get(http, f"{emulator.url}/_emulator/stats")
    assert stats == {"requests": 3, "accepted_requests": 2, "reads": 0, "events_received": 5, "distinct_keys": 5,
                     "duplicates": 0, "errors": {"100": 1}, "faults": {},
                     "events_by_dataset": {DATASET: 3, "777": 2}, "test_events_received": 0,
                     "test_events_by_dataset": {}}  # fmt: skip
    only = (await _get(http, f"{emulator.url}/_emulator/received?dataset_id=777"))["received"]
    assert only == [{"dataset_id": "777", "event_name": n, "event_id": i, "count": 1}
                    for n, i in (("Purchase", "b0"), ("MobileAppInstall", "b1"))]  # fmt: skip
    recent = (await _get(http, f"{emulator.url}/_emulator/events?limit=2"))["events"]
    assert [e["event"]["event_id"] for e in recent] == ["b1", "b0"]
    assert recent[0]["dataset_id"] == "777"
    assert len((await _get(http, f"{emulator.url}/_emulator/events"))["events"]) == 5
    async with http.get(f"{emulator.url}/_emulator/events?limit=x") as r:
        assert r.status == 400
    async with http.get(f"{emulator.url}/") as r:
        page = await r.text()
        assert r.status == 200
        assert r.content_type == "text/html"
    assert 'http-equiv="refresh"' in page
    assert "events_received" in page
    assert "b1" in page
    async with http.post(f"{emulator.url}/_emulator/reset") as r:
        assert r.status == 200
    assert (await _get(http, f"{emulator.url}/_emulator/stats"))["events_received"] == 0
    assert (await _get(http, f"{emulator.url}/_emulator/received"))["received"] == []


async def test_page_escapes_event_values(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Values shown on the page are HTML-escaped."""
    events = sample_events(1, now(), prefix="<script>x</script>")
    await _post_json(http, _events_url(emulator), {"data": events, "access_token": TOKEN})
    async with http.get(f"{emulator.url}/") as r:
        page = await r.text()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


# --- lifecycle -------------------------------------------------------------------------------------


async def test_lifecycle() -> None:
    """start refuses to run twice, stop is idempotent, the URL exists only after start, async with works."""
    emu = Emulator()
    with pytest.raises(EmulatorError):
        _ = emu.url
    async with emu:
        assert emu.url.startswith("http://127.0.0.1:")
        with pytest.raises(EmulatorError, match="twice"):
            await emu.start()
    await emu.stop()
    await Emulator().stop()


async def test_stop_releases_held_requests(emulator_factory: EmulatorFactory, http: aiohttp.ClientSession) -> None:
    """A request held by a timeout fault ends when the emulator stops, not after the hold."""
    emu = await emulator_factory(faults=None)
    await _set_faults(http, emu, {"timeout": 1.0, "timeout_hold_s": 3600})
    held = asyncio.create_task(_outcome(http, emu, timeout=120))
    async with asyncio.timeout(30):  # a regression fails here instead of hanging the run
        while emu.ledger.stats()["faults"].get("timeout") != 1:  # noqa: ASYNC110 - polling the emulator's counter
            await asyncio.sleep(0.01)
    await emu.stop()
    assert await held == "dropped"


async def test_port_in_use_is_an_os_error(emulator: Emulator) -> None:
    """A second emulator on a taken port fails to start with OSError."""
    with pytest.raises(OSError, match="address"):
        await Emulator(port=emulator.port).start()


def test_thread_runs_the_emulator_for_synchronous_code() -> None:
    """EmulatorThread serves from a background thread and its helpers reach the emulator."""
    with EmulatorThread(tokens={DATASET: TOKEN}) as emu:
        body = orjson.dumps({"data": sample_events(2, int(time.time())), "access_token": TOKEN})
        status, answer = _post_sync(f"{emu.url}/v26.0/{DATASET}/events", body)
        assert (status, answer["events_received"]) == (200, 2)
        assert emu.stats()["events_received"] == 2
        assert len(emu.received()) == 2
        emu.set_faults({"http_503": 1.0})
        emu.rotate_token(DATASET, "tok-2")
        emu.reset()
        assert emu.stats()["events_received"] == 0
    with pytest.raises(EmulatorError):
        _ = emu.url


def test_thread_reports_start_failures() -> None:
    """A thread whose emulator cannot bind raises the OSError in the caller."""
    with EmulatorThread() as first, pytest.raises(OSError, match="address"):
        EmulatorThread(port=int(first.url.rsplit(":", 1)[1])).start()


# --- the command -----------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "stream", "emulator", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _url_of(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for _ in range(20):
        line = proc.stdout.readline().strip()
        if line.startswith("http://") or not line:
            return line
    return ""


def test_command_serves_until_sigterm() -> None:
    """`capi-stream emulator --port 0 --token ...` prints its URL, serves, and exits 0 on SIGTERM."""
    proc = _cli("--port", "0", "--token", f"{DATASET}=SECRET-T", "--http-503", "0", "--seed", "3")
    try:
        url = _url_of(proc)
        assert url.startswith("http://127.0.0.1:")
        body = orjson.dumps({"data": sample_events(1, int(time.time())), "access_token": "SECRET-T"})
        assert _post_sync(f"{url}/v26.0/{DATASET}/events", body)[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "SECRET-T" not in out + err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--token", "no-equals-SECRET"], "DATASET_ID=TOKEN"), (["--http-500", "2"], "between 0 and 1"),
     (["--reset", "0.7", "--http-500", "0.7"], "add up to"), (["--latency-ms", "5"], "LO,HI"),
     (["--keep-events", "-1"], "keep-events")],
)  # fmt: skip
def test_command_refuses_bad_flags(args: list[str], fragment: str) -> None:
    """Bad flags exit 2 with a message that says what is wrong and never echoes a token."""
    proc = _cli("--port", "0", *args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert fragment in err
    assert "SECRET" not in err


def test_command_on_a_taken_port_exits_2(emulator_thread: EmulatorThread) -> None:
    """A port already in use is a usage error with the address in the message."""
    port = emulator_thread.url.rsplit(":", 1)[1]
    proc = _cli("--port", port)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in err


def test_token_flags_parse_to_a_mapping() -> None:
    """--token pairs become a dataset -> token mapping; none means open mode; a token may hold '='."""
    from stream.commands.emulator import parse_tokens

    assert parse_tokens([]) is None
    assert parse_tokens(["1=a", "2=b=c"]) == {"1": "a", "2": "b=c"}


def test_http_benchmark_runs_against_a_child_emulator() -> None:
    """The end-to-end measurement starts the command, sends every request and reports figures."""
    from stream.benchmarks.emulator import _bodies, measure_http

    bodies, _ = _bodies(4, 10, now())
    figures = measure_http(bodies, 10, concurrency=2)
    assert figures["requests"] == 2
    assert figures["events"] == 20
