"""The sender's reading of answers that are not acks and of request-level errors (a fake Meta client).

Nothing counts as acknowledged that Meta did not acknowledge, nothing is split or dead-lettered for an
error about the request, and repeated 2xx answers without an ack halt the destination.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.config import Destination, SendSettings
from stream.pipeline.batch import Batch
from stream.pipeline.items import Item
from stream.pipeline.meta_client import Answer, classify
from stream.pipeline.offsets import PartitionOffsets
from stream.pipeline.sender import NOT_ACKED_HALT_AFTER, DestinationSender, DestinationState
from stream.pipeline.stats import Stats


class ScriptedMeta:
    """Answers each POST with the next (status, body) of a script, classified as the real client does."""

    def __init__(self, answers: Iterator[tuple[int, bytes]]) -> None:
        self._answers = answers
        self.posts = 0

    async def post(self, url: str, body: bytes, events: int) -> Answer:
        self.posts += 1
        status, payload = next(self._answers)
        return classify(status, payload, {}, events)


def _batch(n: int) -> Batch:
    offsets = PartitionOffsets("t", 0)
    items = []
    for i in range(n):
        offsets.received(i)
        items.append(Item("t", 0, i, None, b"v", 0, offsets, destination="d", body=orjson.dumps({"event_id": str(i)})))
    return Batch("d", items, 100, 0.0)


async def _poll(condition: Callable[[], object], tries: int) -> None:
    """Look every 5 ms, at most `tries` times, until `condition` holds; the caller asserts what it needs."""
    for _ in range(tries):
        if condition():
            break
        await asyncio.sleep(0.005)


async def _run(tmp_path: Path, answers: Iterator[tuple[int, bytes]], events: int = 4) -> dict[str, Any]:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    dest = Destination("d", "123", ("app",), base_url="http://127.0.0.1:9", token_file=str(token))
    settings = SendSettings(backoff_initial_s=0.001, backoff_max_s=0.002, rate_limit_rps=0,
                            token_check_interval_s=3600)
    acked: list[Batch] = []
    rejected: list[Item] = []
    client = ScriptedMeta(answers)
    sender = DestinationSender(dest, client, settings, Stats(), acked.append,  # type: ignore[arg-type]
                               lambda item, _a: rejected.append(item), seed=1)
    await sender.start()
    sender.submit(_batch(events))
    await _poll(lambda: sender.state is DestinationState.HALTED or acked, 500)
    state = sender.state
    queued = sender.queued_events
    await sender.stop()
    return {"state": state, "acked": acked, "rejected": rejected, "posts": client.posts, "queued": queued,
            "reason": sender.halt_reason}


def _forever(answer: tuple[int, bytes]) -> Iterator[tuple[int, bytes]]:
    while True:
        yield answer


HTML = b"<html><body><h1>Welcome</h1></body></html>"


# A 2xx that is not an ack is retried, and halts the destination after NOT_ACKED_HALT_AFTER in a row; a
# request-level error (a retired version, a WAF page) halts it at once. Neither splits or dead-letters.
NOT_ACKED = [(200, b""), (200, HTML), (204, b""), (200, b'{"events_received": 1}')]
REQUEST_LEVEL = [
    (400, orjson.dumps({"error": {"message": "Unknown path components: /v9.0/123/events", "type":
                                  "OAuthException", "code": 2500, "fbtrace_id": "T"}})),
    (400, orjson.dumps({"error": {"message": "API version retired", "code": 12}})),
    (403, b"<html><title>403 Forbidden</title>blocked by the firewall</html>"),
    (404, b"Not Found"),
]


@pytest.mark.parametrize(
    ("answer", "posts"),
    [(answer, NOT_ACKED_HALT_AFTER) for answer in NOT_ACKED] + [(answer, 1) for answer in REQUEST_LEVEL],
    ids=["200-empty", "200-html", "204", "200-short-count", "2500", "12", "403-html", "404"],
)
async def test_halting_answers_halt_the_destination_with_the_batch_kept(
    tmp_path: Path, answer: tuple[int, bytes], posts: int
) -> None:
    """Halted after `posts` requests: nothing acked, nothing split or dead-lettered, the batch back in the queue."""
    out = await _run(tmp_path, _forever(answer))
    assert out["acked"] == []
    assert out["rejected"] == []
    assert out["state"] is DestinationState.HALTED
    assert out["posts"] == posts
    assert out["queued"] == 4  # the batch is back in the queue, unacknowledged


async def test_an_ack_after_a_few_non_acks_finishes_the_batch(tmp_path: Path) -> None:
    """Fewer than NOT_ACKED_HALT_AFTER non-acks then a real ack: the batch is acknowledged once."""
    script = iter([(200, b"")] * (NOT_ACKED_HALT_AFTER - 1) + [(200, b'{"events_received": 4}')])
    out = await _run(tmp_path, script)
    assert out["state"] is DestinationState.FLOWING
    assert [len(b.items) for b in out["acked"]] == [4]
    assert out["posts"] == NOT_ACKED_HALT_AFTER


async def test_a_halt_for_the_request_resumes_on_resume_and_a_token_halt_does_not(tmp_path: Path) -> None:
    """SIGHUP (resume) restarts a destination halted by a proxy page; a token halt waits for a new token."""
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    dest = Destination("d", "123", ("app",), token_file=str(token))
    settings = SendSettings(backoff_initial_s=0.001, rate_limit_rps=0, token_check_interval_s=3600)
    answers = iter([(403, HTML), (200, b'{"events_received": 2}')])
    acked: list[Batch] = []
    sender = DestinationSender(dest, ScriptedMeta(answers), settings, Stats(), acked.append,  # type: ignore[arg-type]
                               lambda *_: None)
    await sender.start()
    sender.submit(_batch(2))
    await _poll(lambda: sender.state is DestinationState.HALTED, 200)
    assert sender.state is DestinationState.HALTED
    assert sender.resume()
    await _poll(lambda: acked, 200)
    await sender.stop()
    assert [len(b.items) for b in acked] == [2]

    token_error = orjson.dumps({"error": {"message": "expired", "code": 190, "error_subcode": 463}})
    sender = DestinationSender(dest, ScriptedMeta(_forever((400, token_error))), settings, Stats(),
                               lambda _b: None, lambda *_: None)  # type: ignore[arg-type]
    await sender.start()
    sender.submit(_batch(2))
    await _poll(lambda: sender.state is DestinationState.HALTED, 200)
    assert sender.state is DestinationState.HALTED
    assert not sender.resume()
    assert sender.state is DestinationState.HALTED
    await sender.stop()
