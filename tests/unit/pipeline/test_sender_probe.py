"""A halted destination is probed on a schedule, and a probe Meta acknowledges resumes it (#19)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from stream.config import Destination, SendSettings
from stream.contract.meta import GRAPH_API_VERSION
from stream.pipeline.batch import Batch
from stream.pipeline.items import Item
from stream.pipeline.meta_client import NOT_ACKED, Action, Answer
from stream.pipeline.offsets import PartitionOffsets
from stream.pipeline.probing import ProbeOutcome
from stream.pipeline.sender import DestinationSender, DestinationState
from stream.pipeline.stats import Stats

TOKEN = "tok-probe-0123456789"  # noqa: S105 - a test value
BOUND_S = 10.0
ACK = Answer(Action.ACKED, 200, events_received=1)
READ_OK = Answer(Action.ACKED, 200)
DENIED = Answer(Action.HALT, 400, 100, 33)
EXPIRED = Answer(Action.HALT, 400, 190, 463)
DOWN = Answer(Action.RETRY, 503, 2, retry_class="transient")


class Graph:
    """A fake Meta for events and reads: `events` and `reads` answer in order (the last one repeats)."""

    def __init__(self, events: list[Answer], reads: list[Answer]) -> None:
        self.events = events
        self.reads = reads
        self.posts: list[dict[str, Any]] = []  # decoded bodies
        self.gets: list[tuple[str, str, str]] = []  # url, token, object id

    async def post(self, url: str, body: bytes, events: int) -> Answer:
        self.posts.append(orjson.loads(body))
        await asyncio.sleep(0)
        return self.events.pop(0) if len(self.events) > 1 else self.events[0]

    async def get(self, url: str, token: str, object_id: str) -> Answer:
        self.gets.append((url, token, object_id))
        await asyncio.sleep(0)
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]


def batch(n: int, prefix: str = "e") -> Batch:
    offsets = PartitionOffsets("t", 0)
    items = [Item("t", 0, k, None, b"v", 0, offsets, destination="shop",
                  body=orjson.dumps({"event_name": "Purchase", "event_id": f"{prefix}{k}"}),
                  event_name="Purchase", event_id=f"{prefix}{k}") for k in range(n)]  # fmt: skip
    return Batch("shop", items, 12 + sum(len(i.body) + 1 for i in items), 0.0)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition` holds."""
    async with asyncio.timeout(BOUND_S):
        while not condition():  # noqa: ASYNC110 - polls state the sender's tasks change
            await asyncio.sleep(0.001)


class Rig:
    """A sender of dataset 111 over `Graph`, its acked batches, and a wall clock the test moves."""

    def __init__(self, tmp_path: Path, graph: Graph, *, interval: float = 60.0, cap: float = 900.0,
                 code: str = "") -> None:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        self.token_file = token_file
        dest = Destination("shop", "111", ("com.example.shop",), base_url="http://meta.invalid",
                           token_file=str(token_file), test_event_code=code)
        settings = SendSettings(concurrency=1, rate_limit_rps=0, token_check_interval_s=3600,
                                probe_interval_s=interval, probe_max_interval_s=cap)
        self.now = 1_800_000_000.0
        self.acked: list[Batch] = []
        self.stats = Stats()

        async def no_backoff(_delay: float) -> None:
            await asyncio.sleep(0)

        self.sender = DestinationSender(dest, graph, settings, self.stats, self.acked.append,
                                        lambda _i, _a: None, seed=1, sleep=no_backoff, clock=lambda: self.now)

    async def halt(self) -> None:
        """Send a batch that Meta refuses for the request: the destination halts, the batch is kept."""
        self.sender.submit(batch(3))
        await until(self.sender.is_halted)


@pytest.fixture
def logs() -> Any:
    """Every log line of the test, debug included (another test may have configured an info filter)."""
    structlog.reset_defaults()
    with capture_logs() as captured:
        yield captured
    structlog.reset_defaults()


async def test_a_probe_meta_acknowledges_resumes_the_destination_and_sends_what_it_held(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """A permission re-granted: the read of the dataset succeeds, the destination resumes as after a new
    token (destination_resumed, why=probe) and the held batch reaches Meta."""
    graph = Graph([DENIED, ACK], [READ_OK])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        assert rig.sender.halt_reason == "100/33"
        assert await rig.sender.probe_halted() is ProbeOutcome.OK
        assert rig.sender.state is DestinationState.FLOWING
        await until(lambda: len(rig.acked) == 1)
    finally:
        await rig.sender.stop()
    assert graph.gets == [(f"http://meta.invalid/{GRAPH_API_VERSION}/111?fields=id", TOKEN, "111")]
    assert [e["why"] for e in logs if e["event"] == "destination_resumed"] == ["probe"]
    assert rig.sender.probes == {"ok": 1}
    assert rig.stats.events_sent == 6, "the probe is not a sent event (3 refused + 3 acked)"
    assert TOKEN not in repr(logs)


async def test_a_refused_probe_keeps_the_destination_halted(tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """The permission is still missing: the destination stays halted and nothing else is sent."""
    graph = Graph([DENIED], [DENIED])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        assert await rig.sender.probe_halted() is ProbeOutcome.REFUSED
        assert rig.sender.state is DestinationState.HALTED
    finally:
        await rig.sender.stop()
    assert len(graph.posts) == 1
    assert rig.acked == []
    assert not [e for e in logs if e["event"] == "destination_resumed"]
    assert rig.sender.probes == {"refused": 1}
    assert TOKEN not in repr(logs)


async def test_a_token_halt_with_the_same_refused_token_stays_halted(tmp_path: Path) -> None:
    """The token expired and nobody replaced it: the probe carries the same token, is refused, nothing resumes."""
    graph = Graph([EXPIRED], [EXPIRED])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        assert not rig.sender.resume(), "SIGHUP does not resume a token halt"
        assert await rig.sender.probe_halted() is ProbeOutcome.REFUSED
        assert rig.sender.is_halted()
    finally:
        await rig.sender.stop()
    assert [token for _, token, _ in graph.gets] == [TOKEN]


async def test_a_token_fixed_on_metas_side_resumes_a_token_halt(tmp_path: Path) -> None:
    """The same token works again (re-enabled on Meta's side): the probe resumes the token halt."""
    graph = Graph([EXPIRED, ACK], [READ_OK])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        assert await rig.sender.probe_halted() is ProbeOutcome.OK
        await until(lambda: len(rig.acked) == 1)
    finally:
        await rig.sender.stop()


async def test_no_answer_proves_nothing(tmp_path: Path) -> None:
    """A 503, a timeout or a portal's 200 page keeps the destination halted."""
    graph = Graph([DENIED], [DOWN, Answer(Action.RETRY, retry_class="timeout"),
                             Answer(Action.RETRY, 200, retry_class=NOT_ACKED)])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        for _ in range(3):
            assert await rig.sender.probe_halted() is ProbeOutcome.NO_ANSWER
        assert rig.sender.is_halted()
    finally:
        await rig.sender.stop()
    assert rig.sender.probes == {"no_answer": 3}


async def test_with_a_test_event_code_the_probe_is_the_canary_event(tmp_path: Path) -> None:
    """A destination with a test event code is probed with its canary event and that code (Meta counts no
    test event as real), on the events endpoint itself; no read is made."""
    graph = Graph([DENIED, DENIED, ACK], [READ_OK])
    rig = Rig(tmp_path, graph, code="TEST123")
    await rig.sender.start()
    try:
        await rig.halt()
        assert await rig.sender.probe_halted() is ProbeOutcome.REFUSED
        assert await rig.sender.probe_halted() is ProbeOutcome.OK
        await until(lambda: len(rig.acked) == 1)
    finally:
        await rig.sender.stop()
    assert graph.gets == []
    probes = graph.posts[1:3]
    assert [p["test_event_code"] for p in probes] == ["TEST123", "TEST123"]
    assert [len(p["data"]) for p in probes] == [1, 1]
    assert probes[0]["data"][0]["event_name"] == "CapiStreamCanary"
    assert probes[0]["data"][0]["event_id"] != probes[1]["data"][0]["event_id"]
    assert rig.stats.events_sent == 6, "probes are not sent events"


async def test_a_flowing_destination_is_not_probed(tmp_path: Path) -> None:
    """probe_halted does nothing unless the destination is halted."""
    graph = Graph([ACK], [READ_OK])
    rig = Rig(tmp_path, graph)
    assert await rig.sender.probe_halted() is None
    assert graph.gets == []


async def test_an_answer_for_a_token_replaced_meanwhile_is_ignored(tmp_path: Path) -> None:
    """A new token resumed the destination while the probe was out: the probe's answer changes nothing."""
    rig_holder: list[Rig] = []

    class Slow(Graph):
        async def get(self, url: str, token: str, object_id: str) -> Answer:
            rig = rig_holder[0]
            rig.token_file.write_text("tok-new-0123456789\n")
            assert rig.sender.reload_token()
            return DENIED

    graph = Slow([DENIED, ACK], [DENIED])
    rig = Rig(tmp_path, graph)
    rig_holder.append(rig)
    await rig.sender.start()
    try:
        await rig.halt()
        assert await rig.sender.probe_halted() is None
        assert rig.sender.state is DestinationState.FLOWING
    finally:
        await rig.sender.stop()
    assert rig.sender.probes == {}


async def test_the_schedule_probes_a_halted_destination_until_it_resumes(tmp_path: Path) -> None:
    """With a small interval the sender probes by itself, backing off, and resumes on the first ack."""
    graph = Graph([DENIED, ACK], [DENIED, DENIED, READ_OK])
    rig = Rig(tmp_path, graph, interval=0.01, cap=0.04)
    rig.now = 0.0

    async def tick() -> None:  # the sender's clock follows the loop's
        while True:
            rig.now = asyncio.get_running_loop().time()
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.002)
    await rig.sender.start()
    try:
        await rig.halt()
        await until(lambda: len(rig.acked) == 1)
    finally:
        await rig.sender.stop()
        ticker.cancel()
    assert len(graph.gets) == 3
    assert rig.sender.probes == {"refused": 2, "ok": 1}


async def test_a_destination_that_fails_again_at_once_is_probed_less_and_less(tmp_path: Path) -> None:
    """The read passes but events are refused (a flap): every resume by probe is followed by a halt, and the
    backoff keeps growing instead of starting over at the first interval."""
    graph = Graph([DENIED], [READ_OK])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        attempts = []
        for _ in range(4):
            rig.now += 60.0
            assert await rig.sender.probe_halted() is ProbeOutcome.OK
            await until(rig.sender.is_halted)  # the held batch is sent and refused again
            attempts.append(rig.sender.probe_schedule.delay())
    finally:
        await rig.sender.stop()
    assert attempts == [120.0, 240.0, 480.0, 900.0]


async def test_no_probes_when_the_interval_is_zero(tmp_path: Path) -> None:
    """probe_interval_s = 0: no probe task; only a new token or SIGHUP resumes."""
    graph = Graph([DENIED], [READ_OK])
    rig = Rig(tmp_path, graph, interval=0.0)
    await rig.sender.start()
    try:
        await rig.halt()
        assert rig.sender.probe_schedule is None
        assert await rig.sender.probe_halted() is None
    finally:
        await rig.sender.stop()
    assert graph.gets == []


async def test_repeated_failed_probes_log_once_per_change(tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """Ten refusals with the same answer log one probe_failed line at info (the rest at debug); a different
    answer logs again."""
    graph = Graph([DENIED], [*([DENIED] * 10), DOWN, DOWN])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        for _ in range(12):
            await rig.sender.probe_halted()
    finally:
        await rig.sender.stop()
    failed = [e for e in logs if e["event"] == "probe_failed"]
    assert [e["log_level"] for e in failed] == ["info", *["debug"] * 9, "info", "debug"]
    assert [e["outcome"] for e in failed if e["log_level"] == "info"] == ["refused", "no_answer"]
    assert all("next_probe_s" in e for e in failed)


async def test_the_first_failed_probe_of_a_new_halt_is_news_again(tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """After a resume, the next halt's first refused probe logs at info even with the same answer as before."""
    graph = Graph([DENIED], [DENIED, DENIED])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        await rig.sender.probe_halted()
        assert rig.sender.resume()  # SIGHUP: the held batch is sent and refused again
        await until(rig.sender.is_halted)
        await rig.sender.probe_halted()
    finally:
        await rig.sender.stop()
    assert [e["log_level"] for e in logs if e["event"] == "probe_failed"] == ["info", "info"]


async def test_a_probe_refused_for_another_cause_updates_the_halt(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """Halted for a permission, the token then expires: the probe's new answer becomes the halt's reason (a
    new destination_halted line), and SIGHUP no longer resumes it: it now waits for a new token."""
    graph = Graph([DENIED], [EXPIRED, EXPIRED])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        assert await rig.sender.probe_halted() is ProbeOutcome.REFUSED
        assert rig.sender.halt_reason == "190/463"
        assert not rig.sender.resume(), "a token halt waits for a new token"
        assert await rig.sender.probe_halted() is ProbeOutcome.REFUSED
    finally:
        await rig.sender.stop()
    halts = [e for e in logs if e["event"] == "destination_halted"]
    assert [(e.get("code"), e.get("subcode"), e["why"]) for e in halts] == [
        (100, 33, "request-level error"), (190, 463, "found by a probe")]
    assert rig.stats.halts == 1, "one halt, whose cause changed"


async def test_a_probe_refused_for_the_same_cause_says_nothing_new(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """A WAF's 403 page halted it and still answers the probes: one destination_halted line, not one per probe."""
    waf = Answer(Action.HALT, 403, excerpt="<html>403 Forbidden</html>")
    graph = Graph([waf], [waf])
    rig = Rig(tmp_path, graph)
    await rig.sender.start()
    try:
        await rig.halt()
        for _ in range(3):
            assert await rig.sender.probe_halted() is ProbeOutcome.REFUSED
        assert rig.sender.halt_reason == "http 403"
        assert len([e for e in logs if e["event"] == "destination_halted"]) == 1
        assert rig.sender.resume(), "SIGHUP resumes a halt for the request"
    finally:
        await rig.sender.stop()


def _sender_of(dest: Destination, graph: Graph) -> DestinationSender:
    settings = SendSettings(concurrency=1, rate_limit_rps=0, token_check_interval_s=2.0, probe_interval_s=0)

    async def no_backoff(_delay: float) -> None:
        await asyncio.sleep(0)

    return DestinationSender(dest, graph, settings, Stats(), lambda _b: None, lambda _i, _a: None, seed=1,
                             sleep=no_backoff)


async def _token_halt_action(dest: Destination, logs: list[dict[str, Any]]) -> str:
    sender = _sender_of(dest, Graph([EXPIRED], [EXPIRED]))
    await sender.start()
    try:
        sender.submit(batch(1))
        await until(sender.is_halted)
    finally:
        await sender.stop()
    (halt,) = [e for e in logs if e["event"] == "destination_halted"]
    return str(halt["action"])


async def test_a_token_halt_of_an_env_token_says_to_restart_with_the_variable(
    monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    """A token read from the environment cannot change in a running process: SIGHUP re-reads the same
    value, and the token watcher sees no change. The on-call SRE who follows the line's action must be
    told to restart the process with a new value of that variable, not to SIGHUP."""
    monkeypatch.setenv("CAPI_TEST_SHOP_TOKEN", TOKEN)
    dest = Destination("shop", "111", ("com.example.shop",), base_url="http://meta.invalid",
                       token_env="CAPI_TEST_SHOP_TOKEN")  # noqa: S106 - a variable's name
    action = await _token_halt_action(dest, logs)
    assert "CAPI_TEST_SHOP_TOKEN" in action
    assert "restart" in action
    assert "SIGHUP" not in action


async def test_a_token_halt_of_a_token_file_names_the_file_and_needs_no_signal(
    tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """A token file is watched: replacing it resumes the destination within token_check_interval_s."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    dest = Destination("shop", "111", ("com.example.shop",), base_url="http://meta.invalid",
                       token_file=str(token_file))
    action = await _token_halt_action(dest, logs)
    assert str(token_file) in action
    assert "2 s" in action
