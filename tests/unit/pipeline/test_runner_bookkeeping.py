"""The runner's bookkeeping with every real stage (source thread, prepare, dedupe, batcher, senders, dead
letters) and fakes only at the I/O edges, through the Pipeline's own seams: each consumed offset is finished
exactly once (acked, duplicate, held twin, dead letter), only finished offsets are stored, revokes and lost
partitions leave nothing counted in flight."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from stream.avro.schema import load_schema
from stream.avro.wire import encode
from stream.config import load
from stream.pipeline.meta_client import Action, Answer
from stream.pipeline.runner import Pipeline
from stream.tools.samples import generate
from tests.support.fakes import DATASET_A, DATASET_B, FakeConsumer, FakeMeta, FakeProducer, ack, fakes_config

TOPIC = "events"
P0, P1 = (TOPIC, 0), (TOPIC, 1)
BOUND_S = 10.0
NOW = int(time.time())
REFUSED = Answer(Action.REJECTED, 400, 100, 2804019, title="Invalid parameter")


def _template() -> dict[str, Any]:
    """A valid, consented Purchase record (the schema's shape) to copy events from."""
    record = next(r for r in generate(200, seed=5, now=NOW, app_ids=["app.a"]) if r["event_name"] == "Purchase")
    return {**record, "consent": True}


TEMPLATE = _template()
SCHEMA = load_schema()


def value(event_id: str, event_name: str = "Purchase", app: str = "app.a") -> bytes:
    """The Avro bytes of a valid event with this id and name for this app."""
    return encode({**TEMPLATE, "event_id": event_id, "event_name": event_name, "app_id": app}, SCHEMA)


class Rig:
    """A started pipeline over a fake consumer, producer and Meta; helpers feed and observe it."""

    def __init__(self, pipeline: Pipeline, consumer: FakeConsumer, producer: FakeProducer, meta: FakeMeta) -> None:
        self.p, self.consumer, self.producer, self.meta = pipeline, consumer, producer, meta
        self.offsets: dict[tuple[str, int], int] = {}

    def assign(self, *tps: tuple[str, int]) -> None:
        self.consumer.script.put(("assign", list(tps)))

    def consume(self, tp: tuple[str, int], *values: bytes) -> list[int]:
        """Messages with the next offsets of `tp`; returns their offsets."""
        start = self.offsets.get(tp, 0)
        messages = [Message(topic=tp[0], partition=tp[1], offset=start + k, key=b"k", value=v, timestamp=(1, NOW))
                    for k, v in enumerate(values)]  # fmt: skip
        self.offsets[tp] = start + len(values)
        self.consumer.script.put(("messages", messages))
        return [m.offset() for m in messages]

    def stored(self, tp: tuple[str, int]) -> int | None:
        """The last offset stored for `tp` (what librdkafka would commit)."""
        points = [s[tp] for s in self.consumer.stored if tp in s]
        return points[-1] if points else None

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait (bounded) for something observable; a runner that never gets there fails, saying what."""
        try:
            async with asyncio.timeout(BOUND_S):
                while not condition():  # noqa: ASYNC110 - polls state several tasks and a thread change
                    await asyncio.sleep(0.005)
        except TimeoutError:
            pytest.fail(
                f"{what}: not within {BOUND_S} s (in flight {self.p.unfinished}, stored {self.consumer.stored})"
            )


@pytest.fixture
async def rig_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """Start pipelines with destinations a (app.a -> 111) and b (app.b -> 222); drain them at the end."""
    monkeypatch.setenv("TOK_A", "token-a-0123456789")
    monkeypatch.setenv("TOK_B", "token-b-0123456789")
    started: list[Pipeline] = []
    thresholds = gc.get_threshold()

    async def make(meta: FakeMeta | None = None, revoke_timeout_s: float = 5.0, batch: str = "linger_ms = 10",
                   send: str = "", consume_batch_size: int | None = None) -> Rig:
        path = tmp_path / f"capi-{len(started)}.toml"
        path.write_text(fakes_config(
            TOPIC,
            pipeline=f"revoke_timeout_s = {revoke_timeout_s}\nshutdown_deadline_s = 5.0",
            batch=batch,
            send=f"rate_limit_rps = 0\nbackoff_initial_s = 0.01\ntoken_check_interval_s = 3600\n{send}",
        ))
        settings = load(path, env={})
        if consume_batch_size is not None:
            settings = dataclasses.replace(
                settings, kafka=dataclasses.replace(settings.kafka, consume_batch_size=consume_batch_size))
        consumer, producer, meta = FakeConsumer(), FakeProducer(), meta or FakeMeta()
        pipe = Pipeline(settings, client=meta, consumer_factory=lambda _conf: consumer,
                        producer_factory=lambda _conf: producer)  # fmt: skip
        await pipe.start()
        started.append(pipe)
        return Rig(pipe, consumer, producer, meta)

    yield make
    for pipe in started:
        pipe.request_stop()
        await pipe.drain()
    gc.unfreeze()  # Pipeline.start froze the test process's objects and raised the thresholds
    gc.set_threshold(*thresholds)


async def _twin_behind_its_first_copy(rig_factory: Callable[..., Any], meta: FakeMeta) -> Rig:
    """A rig whose Meta holds its answers, with e1 sent on P0 and then its twin consumed behind it."""
    meta.gate.clear()
    rig: Rig = await rig_factory(meta)
    rig.assign(P0)
    rig.consume(P0, value("e1"))
    await rig.until(lambda: bool(meta.requests), "the first copy's request")
    rig.consume(P0, value("e1"))
    await rig.until(lambda: rig.p.stats.consumed == 2, "the twin consumed")
    return rig


async def _three_requests_held(rig_factory: Callable[..., Any]) -> tuple[FakeMeta, Rig]:
    """A rig on P0 and P1 whose Meta holds its answers, with e0 and e1 (P0) and f0 (P1) sent and unanswered."""
    meta = FakeMeta()
    meta.gate.clear()
    rig: Rig = await rig_factory(meta)
    rig.assign(P0, P1)
    rig.consume(P0, value("e0"), value("e1"))
    rig.consume(P1, value("f0"))
    await rig.until(lambda: len(meta.sent()) == 3, "the requests")
    return meta, rig


class TestAck:
    """Acknowledged events are finished and their offsets stored."""

    async def test_acked_events_are_finished_and_stored(self, rig_factory: Callable[..., Any]) -> None:
        """Three events, one request, one ack: stored offset 3, nothing in flight."""
        rig = await rig_factory()
        rig.assign(P0)
        rig.consume(P0, value("e0"), value("e1"), value("e2"))
        await rig.until(lambda: rig.stored(P0) == 3, "commit point after the ack")
        assert rig.meta.requests == [(DATASET_A, ["e0", "e1", "e2"])]
        assert rig.p.unfinished == 0
        assert rig.p.stats.events_acked == 3

    async def test_an_acked_batch_records_the_parts_of_its_added_latency(self, rig_factory: Callable[..., Any]) -> None:
        """Every 8th event of an acknowledged batch (the first among them) gives its parts, in order."""
        rig = await rig_factory()
        rig.assign(P0)
        rig.consume(P0, *(value(f"e{i}") for i in range(9)))
        await rig.until(lambda: rig.stored(P0) == 9, "commit point after the ack")
        samples = rig.p.stats._parts.values
        assert len(samples) == 2  # events 0 and 8 of the one batch
        for added, kafka, prepare, batch, slot, retry in samples:
            # appended at NOW (whole seconds) by the fake; handed over, applied, closed, sent in this order
            assert kafka > -1_000
            assert min(prepare, batch, slot, retry) >= 0
            assert abs(added - (kafka + prepare + batch + slot + retry)) < 0.01  # ms, wall-clock float error

    async def test_nothing_is_stored_before_meta_answers(self, rig_factory: Callable[..., Any]) -> None:
        """While the request is held, the events count in flight and no offset is stored."""
        meta = FakeMeta()
        meta.gate.clear()
        rig = await rig_factory(meta)
        rig.assign(P0)
        rig.consume(P0, value("e0"), value("e1"))
        await rig.until(lambda: bool(meta.requests), "the request")
        assert rig.p.unfinished == 2
        assert rig.stored(P0) is None
        meta.gate.set()
        await rig.until(lambda: rig.stored(P0) == 2, "commit point after the ack")
        assert rig.p.unfinished == 0


class TestDuplicates:
    """Copies of an event are sent once per (dataset, event_name, event_id), and finished."""

    async def test_a_copy_of_an_acked_event_is_finished_without_a_request(
        self, rig_factory: Callable[..., Any]
    ) -> None:
        """e1 acked, then e1 again: no second request, the copy's offset is stored, a duplicate counted."""
        rig = await rig_factory()
        rig.assign(P0)
        rig.consume(P0, value("e1"))
        await rig.until(lambda: rig.stored(P0) == 1, "the first copy acked")
        rig.consume(P0, value("e1"))
        await rig.until(lambda: rig.stored(P0) == 2, "the second copy finished")
        assert rig.meta.sent() == ["e1"]
        assert rig.p.stats.duplicates == 1
        assert rig.p.unfinished == 0

    async def test_same_id_with_another_name_or_dataset_is_not_a_duplicate(
        self, rig_factory: Callable[..., Any]
    ) -> None:
        """Meta dedupes on (dataset, event_name, event_id): another name or another dataset is sent too."""
        rig = await rig_factory()
        rig.assign(P0)
        rig.consume(P0, value("o-1"))
        await rig.until(lambda: rig.stored(P0) == 1, "the Purchase acked")
        rig.consume(P0, value("o-1", event_name="AddToCart"), value("o-1", app="app.b"))
        await rig.until(lambda: rig.stored(P0) == 3, "both other events acked")
        assert sorted(rig.meta.requests) == [(DATASET_A, ["o-1"]), (DATASET_A, ["o-1"]), (DATASET_B, ["o-1"])]
        assert rig.p.stats.duplicates == 0
        assert rig.p.unfinished == 0

    async def test_a_twin_of_an_in_flight_event_is_held_then_finished_by_its_ack(
        self, rig_factory: Callable[..., Any]
    ) -> None:
        """While e1 is in flight its twin waits (not sent, in flight); the ack finishes both."""
        meta = FakeMeta()
        rig = await _twin_behind_its_first_copy(rig_factory, meta)
        assert rig.p.unfinished == 2
        assert rig.stored(P0) is None
        meta.gate.set()
        await rig.until(lambda: rig.stored(P0) == 2, "both finished")
        assert meta.sent() == ["e1"]
        assert rig.p.stats.duplicates == 1
        assert rig.p.unfinished == 0

    async def test_a_held_twin_takes_the_place_of_a_refused_event(self, rig_factory: Callable[..., Any]) -> None:
        """Meta refuses the first copy (dead-lettered); the held twin is then sent and acked."""
        answers = iter([REFUSED])
        meta = FakeMeta(lambda dataset, ids, events: next(answers, None) or ack(dataset, ids, events))
        rig = await _twin_behind_its_first_copy(rig_factory, meta)
        meta.gate.set()
        await rig.until(lambda: rig.stored(P0) == 2, "both finished")
        assert meta.sent() == ["e1", "e1"]
        (letter,) = rig.producer.produced
        assert letter["headers"]["capi.reason"] == b"meta_rejected"
        assert letter["headers"]["capi.source_offset"] == b"0"
        assert rig.p.stats.events_acked == 1
        assert rig.p.unfinished == 0


class TestDeadLetters:
    """A bad record is finished only once the broker has its dead letter; it never blocks the others."""

    async def test_the_offset_waits_for_the_dead_letter_delivery(self, rig_factory: Callable[..., Any]) -> None:
        """Offsets stop below an undelivered dead letter; its delivery moves them to the end."""
        rig = await rig_factory()
        rig.producer.held = True
        rig.assign(P0)
        rig.consume(P0, value("e0"), b"\x02\xff not avro", value("e2"))
        await rig.until(lambda: rig.p.stats.events_acked == 2, "the good events acked")
        await rig.until(lambda: rig.stored(P0) == 1, "the commit point up to the dead letter")
        assert rig.p.unfinished == 1
        assert len(rig.producer.produced) == 1
        rig.producer.held = False
        await rig.until(lambda: rig.stored(P0) == 3, "the commit point past the delivered letter")
        assert rig.p.unfinished == 0
        headers = rig.producer.produced[0]["headers"]
        assert (headers["capi.source_offset"], headers["capi.source_partition"]) == (b"1", b"0")


class TestRebalance:
    """Revokes store only finished work and wait (bounded) for batches in flight; lost partitions store nothing."""

    async def test_a_revoke_waits_for_the_batch_in_flight(self, rig_factory: Callable[..., Any]) -> None:
        """The revoke holds until Meta acks the batch in flight, then stores the partition's end."""
        meta, rig = await _three_requests_held(rig_factory)
        rig.consumer.script.put(("revoke", [P0]))
        await rig.until(lambda: rig.p.unfinished == 1, "the revoked partition out of the in-flight count")
        assert rig.stored(P0) is None
        meta.gate.set()
        await rig.until(lambda: rig.stored(P0) == 2, "the revoke storing the acked batch's end")
        await rig.until(lambda: rig.stored(P1) == 1, "the other partition's ack")
        assert rig.p.unfinished == 0

    async def test_a_revoke_that_times_out_stores_only_finished_offsets(self, rig_factory: Callable[..., Any]) -> None:
        """e0 acked, e1 held past the revoke timeout: only offset 1 is stored, and the late ack stores nothing."""
        meta = FakeMeta()
        rig = await rig_factory(meta, revoke_timeout_s=0.2)
        rig.assign(P0, P1)
        rig.consume(P0, value("e0"))
        await rig.until(lambda: rig.stored(P0) == 1, "e0 acked")
        meta.gate.clear()
        rig.consume(P0, value("e1"))
        await rig.until(lambda: meta.sent() == ["e0", "e1"], "e1's request")
        rig.consumer.script.put(("revoke", [P0]))
        await rig.until(lambda: rig.consumer.assigned == {P1}, "the revoke to give up waiting")
        assert rig.stored(P0) == 1
        assert rig.p.unfinished == 0
        meta.gate.set()
        await rig.until(lambda: rig.p.stats.events_acked == 2, "the late ack")
        # a later event on another partition: once its offset is stored, a wrong store of P0 would be too
        rig.consume(P1, value("marker"))
        await rig.until(lambda: rig.stored(P1) == 1, "the marker acked")
        assert rig.stored(P0) == 1, "an ack after the revoke stored an offset of a partition we no longer own"
        assert rig.p.unfinished == 0

    async def test_a_lost_partition_stores_nothing_and_forgets_its_work(self, rig_factory: Callable[..., Any]) -> None:
        """A lost partition's batch in flight neither counts nor stores when it is acked later."""
        meta, rig = await _three_requests_held(rig_factory)
        assert rig.p.unfinished == 3
        rig.consumer.script.put(("lost", [P0]))
        await rig.until(lambda: rig.p.unfinished == 1, "the lost partition out of the in-flight count")
        meta.gate.set()
        await rig.until(lambda: rig.stored(P1) == 1, "the other partition's ack")  # after P0's ack, same request
        await rig.until(lambda: rig.p.stats.events_acked == 3, "every ack processed")
        assert rig.stored(P0) is None
        assert rig.p.unfinished == 0


class TestLinger:
    """An open batch waits batch.linger_ms to fill while there is a backlog or its destination's request
    slots are busy, and only batch.idle_linger_ms when the consumer has caught up and a slot is free."""

    async def test_caught_up_with_a_free_slot_a_batch_leaves_after_the_idle_linger(
            self, rig_factory: Callable[..., Any]) -> None:
        """A consumed batch smaller than kafka.consume_batch_size: the consumer has caught up; with a
        one-hour linger and no idle linger the event is sent at once all the same."""
        rig = await rig_factory(batch="linger_ms = 3600000\nidle_linger_ms = 0", consume_batch_size=4)
        rig.assign(P0)
        rig.consume(P0, value("e0"), value("e1"))
        await rig.until(lambda: rig.stored(P0) == 2, "sent and acked without waiting the linger")
        assert rig.meta.requests == [(DATASET_A, ["e0", "e1"])]

    async def test_behind_a_full_consumed_batch_a_batch_waits_for_the_linger(
            self, rig_factory: Callable[..., Any]) -> None:
        """A full consumed batch: more is waiting in Kafka, so no destination counts as idle and the open
        batch (2 of 1,000 events) waits for the one-hour linger; the next, partial batch lets it go."""
        rig = await rig_factory(batch="linger_ms = 3600000\nidle_linger_ms = 0", consume_batch_size=2)
        rig.assign(P0)
        rig.consume(P0, value("e0"), value("e1"))
        await rig.until(lambda: rig.p.stats.consumed == 2, "the full batch applied")
        assert rig.p._idle_destinations() == set()
        assert rig.p.batcher.open_events == 2
        assert rig.meta.requests == []
        rig.consume(P0, value("e2"))
        await rig.until(lambda: rig.stored(P0) == 3, "the open batch sent once the consumer caught up")
        assert rig.meta.sent() == ["e0", "e1", "e2"]

    async def test_a_batch_waiting_for_a_slot_leaves_when_one_is_freed(self, rig_factory: Callable[..., Any]) -> None:
        """One slot, held by e0's request: e1's batch is not idle (no free slot) and would wait the hour;
        the ack of e0 frees the slot and e1 leaves at once."""
        meta = FakeMeta()
        meta.gate.clear()
        rig = await rig_factory(meta, batch="linger_ms = 3600000\nidle_linger_ms = 0", send="concurrency = 1",
                                consume_batch_size=4)
        rig.assign(P0)
        rig.consume(P0, value("e0"))
        await rig.until(lambda: bool(meta.requests), "e0's request")
        rig.consume(P0, value("e1"))
        await rig.until(lambda: rig.p.stats.consumed == 2, "e1 applied")
        assert rig.p._idle_destinations() == {"b"}  # a's one slot is busy
        assert rig.p.batcher.open_events == 1
        meta.gate.set()
        await rig.until(lambda: rig.stored(P0) == 2, "e1 sent once e0's slot was freed")
        assert meta.requests == [(DATASET_A, ["e0"]), (DATASET_A, ["e1"])]
