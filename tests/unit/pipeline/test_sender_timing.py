"""The sender counts the time each batch waited for Meta, over every attempt (the bench's added latency)."""

from __future__ import annotations

import asyncio

import pytest

from stream.config import Destination, SendSettings
from stream.pipeline.batch import Batch
from stream.pipeline.items import Item
from stream.pipeline.meta_client import Action, Answer
from stream.pipeline.sender import DestinationSender
from stream.pipeline.stats import Stats


class SlowMeta:
    """A MetaClient fake: each answer comes after `hold_s`; the answers are given in order."""

    def __init__(self, answers: list[Answer], hold_s: float) -> None:
        self.answers = answers
        self.hold_s = hold_s
        self.posts = 0

    async def post(self, url: str, body: bytes, events: int) -> Answer:
        self.posts += 1
        await asyncio.sleep(self.hold_s)
        return self.answers.pop(0)


async def test_meta_time_sums_every_attempt_of_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPI_STREAM_TEST_TOKEN_T", "tok-0123456789")
    dest = Destination("d", "123", ("app",), base_url="http://127.0.0.1:1", token_env="CAPI_STREAM_TEST_TOKEN_T")  # noqa: S106
    client = SlowMeta([Answer(Action.RETRY, 500, retry_class="transient"), Answer(Action.ACKED, 200)], 0.05)
    acked: list[Batch] = []
    sender = DestinationSender(dest, client, SendSettings(backoff_initial_s=0.01, rate_limit_rps=0), Stats(),  # type: ignore[arg-type]
                               acked.append, lambda item, answer: None, seed=1)
    await sender.start()
    try:
        batch = Batch("d", [Item("t", 0, 0, None, b"v", 0, None, body=b"{}")], 15, 0.0)  # type: ignore[arg-type]
        sender.submit(batch)
        await asyncio.wait_for(sender.wait_idle(), 5)
    finally:
        await sender.stop()
    assert client.posts == 2
    assert acked == [batch]
    assert batch.meta_s >= 0.1  # both requests' holds (0.05 s each), not only the last one


def test_split_halves_carry_the_time_already_spent_at_meta() -> None:
    items = [Item("t", 0, i, None, b"v", 0, None, body=b"{}") for i in range(4)]  # type: ignore[arg-type]
    batch = Batch("d", items, 100, 0.0, meta_s=0.4)
    left, right = batch.split()
    assert (left.meta_s, right.meta_s) == (0.4, 0.4)
