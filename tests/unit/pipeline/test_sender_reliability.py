"""The sender on the failure paths of issue #12: retries end at each event's own deadline, and a send task
that dies is reported instead of losing its batch silently. Meta is a fake client; nothing opens a socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.config import Destination, SendSettings, load
from stream.contract import meta
from stream.pipeline.batch import Batch
from stream.pipeline.items import Item
from stream.pipeline.meta_client import Action, Answer
from stream.pipeline.offsets import PartitionOffsets
from stream.pipeline.runner import Pipeline
from stream.pipeline.sender import DestinationSender, delivery_deadline
from stream.pipeline.stats import Stats

NOW = 1_800_000_000.0
SOON_S = 3.0
SERVER_ERROR = Answer(Action.RETRY, status=500, code=2, retry_class="transient")
FAST = SendSettings(backoff_initial_s=0.001, backoff_max_s=0.002, rate_limit_rps=0, deadline_margin_s=600)


class ClockedErrors:
    """Meta answering 500 to everything; each request takes `step_s` of the fake wall clock."""

    def __init__(self, clock: list[float], step_s: float) -> None:
        self.clock = clock
        self.step_s = step_s
        self.bodies: list[bytes] = []

    async def post(self, url: str, body: bytes, events: int = 0) -> Answer:
        self.bodies.append(body)
        self.clock[0] += self.step_s
        return SERVER_ERROR


class Exploding:
    """A client whose call fails in a way nobody planned for."""

    async def post(self, url: str, body: bytes, events: int = 0) -> Answer:
        raise RuntimeError("unexpected")


def item(offset: int, event_time: int) -> Item:
    return Item("t", 0, offset, None, b"", 0, PartitionOffsets("t", 0), destination="a",
                body=b'{"event_id":"e%d"}' % offset, event_name="Purchase", event_id=f"e{offset}",
                event_time=event_time)


def dest() -> Destination:
    return Destination(name="a", dataset_id="111", app_ids=("app.a",), token_env="TOK_A")  # noqa: S106 - the name of a variable


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SOON_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {SOON_S}s"
        await asyncio.sleep(0.002)


def test_the_deadline_is_meta_s_seven_days_after_the_event_less_the_margin() -> None:
    """delivery_deadline: event_time + 7 days - margin, in wall-clock seconds."""
    assert meta.MAX_EVENT_AGE_S == 7 * 86400
    assert delivery_deadline(1_000_000, margin_s=600) == 1_000_000 + 7 * 86400 - 600


async def test_a_retried_event_is_given_up_at_its_deadline_and_the_rest_retried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a persistent 500 the event whose deadline passes is handed back as expired; the other is retried."""
    monkeypatch.setenv("TOK_A", "token-a")
    clock = [NOW]
    client = ClockedErrors(clock, step_s=10.0)
    expired: list[Item] = []
    sent_at_expiry: list[int] = []

    def on_expired(it: Item) -> None:
        expired.append(it)
        sent_at_expiry.append(len(client.bodies))

    old = item(0, event_time=int(NOW) - meta.MAX_EVENT_AGE_S + 600 + 25)  # deadline 25 s from now
    fresh = item(1, event_time=int(NOW) - 60)
    sender = DestinationSender(dest(), client, FAST, Stats(), on_acked=lambda b: None,  # type: ignore[arg-type]
                               on_rejected=lambda i, a: None, on_expired=on_expired, clock=lambda: clock[0])
    await sender.start()
    try:
        sender.submit(Batch("a", [old, fresh], 100, 0.0))
        await until(lambda: bool(expired), "the old event expiring")
        await until(lambda: len(client.bodies) >= sent_at_expiry[0] + 3, "the fresh event being retried on")
    finally:
        await sender.stop()
    assert expired == [old]
    # requests at +0, +10 and +20 s carry it; the attempt at +30 s (deadline +25 s) gives it up
    assert sent_at_expiry == [3]
    assert all(b'"e0"' in body for body in client.bodies[:3])
    assert all(b'"e0"' not in body and b'"e1"' in body for body in client.bodies[3:])


async def test_an_event_already_past_its_deadline_is_never_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued event whose deadline passed while its destination was halted is expired before sending."""
    monkeypatch.setenv("TOK_A", "token-a")
    clock = [NOW]
    client = ClockedErrors(clock, step_s=0.0)
    expired: list[Item] = []
    stale = item(0, event_time=int(NOW) - meta.MAX_EVENT_AGE_S)
    sender = DestinationSender(dest(), client, FAST, Stats(), on_acked=lambda b: None,  # type: ignore[arg-type]
                               on_rejected=lambda i, a: None, on_expired=expired.append, clock=lambda: clock[0])
    await sender.start()
    try:
        sender.submit(Batch("a", [stale], 50, 0.0))
        await until(lambda: bool(expired), "the stale event expiring")
        await asyncio.wait_for(sender.wait_idle(), SOON_S)
    finally:
        await sender.stop()
    assert client.bodies == []


async def test_a_send_task_that_dies_is_reported_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception in a send task reaches on_failure; the batch is not acknowledged."""
    monkeypatch.setenv("TOK_A", "token-a")
    failures: list[BaseException] = []
    acked: list[Batch] = []
    sender = DestinationSender(dest(), Exploding(), FAST, Stats(), on_acked=acked.append,  # type: ignore[arg-type]
                               on_rejected=lambda i, a: None, on_failure=failures.append)
    await sender.start()
    try:
        sender.submit(Batch("a", [item(0, int(NOW))], 50, 0.0))
        await until(lambda: bool(failures), "the failure being reported")
    finally:
        await sender.stop()
    assert isinstance(failures[0], RuntimeError)
    assert acked == []


async def test_the_pipeline_stops_with_an_error_when_a_send_task_dies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline owns its senders' tasks: one dying sets the failure and asks the pipeline to stop."""
    monkeypatch.setenv("TOK_A", "token-a")
    path = tmp_path / "capi.toml"
    path.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n'
                    '[destinations.a]\ndataset_id = "111"\napp_ids = ["app.a"]\ntoken_env = "TOK_A"\n')
    pipeline = Pipeline(load(path, env={}))
    sender = pipeline.senders["a"]
    await sender.start()  # its Meta client was never started: the first post raises
    try:
        sender.submit(Batch("a", [item(0, int(NOW))], 50, 0.0))
        await until(lambda: pipeline.failure is not None, "the pipeline noticing the dead task")
    finally:
        await sender.stop()
    assert isinstance(pipeline.failure, RuntimeError)
    assert pipeline.stop_requested
