"""DeadLetterWriter against a fake producer (the `LetterProducer` Protocol): a letter is done only once the
broker has it, and a failed delivery is written again, never dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError

from stream.pipeline.deadletters import (
    HEADER_CODE,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    DeadLetter,
    DeadLetterWriter,
)
from tests.support.fakes import FakeProducer

BOUND_S = 10.0
LETTER = DeadLetter("events", 3, 41, b"order-1", b"\x00avro", "meta_rejected", "Invalid parameter", 100, 2804019,
                    "Purchase", "order-1")  # fmt: skip


@pytest.fixture
def writer_factory() -> Callable[[FakeProducer], DeadLetterWriter]:
    def make(producer: FakeProducer) -> DeadLetterWriter:
        def factory(conf: dict[str, Any]) -> FakeProducer:
            producer.conf = conf
            return producer

        return DeadLetterWriter("127.0.0.1:1", "capi-dlq", {"linger.ms": 5}, producer_factory=factory)

    return make


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND_S):
        while not condition():  # noqa: ASYNC110 - polls state the writer's poll task changes
            await asyncio.sleep(0.005)


async def test_a_delivered_letter_is_done_once_with_its_headers(
    writer_factory: Callable[[FakeProducer], DeadLetterWriter],
) -> None:
    """on_done runs once, after the delivery report; the message keeps the key and bytes and says why."""
    producer = FakeProducer()
    writer = writer_factory(producer)
    await writer.start()
    done: list[int] = []
    writer.write(LETTER, lambda: done.append(1))
    assert done == []  # produced is not delivered
    assert writer.pending == 1
    await until(lambda: bool(done))
    await writer.stop()
    assert done == [1]
    assert writer.pending == 0
    assert sum(writer.failures.values()) == 0
    (message,) = producer.produced
    assert (message["topic"], message["key"], message["value"]) == ("capi-dlq", b"order-1", b"\x00avro")
    headers = message["headers"]
    assert headers[HEADER_REASON] == b"meta_rejected"
    assert (headers[HEADER_TOPIC], headers[HEADER_PARTITION], headers[HEADER_OFFSET]) == (b"events", b"3", b"41")
    assert headers[HEADER_CODE] == b"100"
    assert producer.conf["acks"] == "all"
    assert producer.conf["enable.idempotence"] is True
    assert producer.conf["linger.ms"] == 5  # the user's producer settings win over our defaults


async def test_a_failed_delivery_is_written_again_and_done_only_when_delivered(
    writer_factory: Callable[[FakeProducer], DeadLetterWriter],
) -> None:
    """Two failed deliveries: the letter is produced three times, on_done runs once, after the third."""
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    producer = FakeProducer(outcomes=[timed_out, timed_out])
    writer = writer_factory(producer)
    await writer.start()
    done: list[int] = []
    writer.write(LETTER, lambda: done.append(len(producer.produced)))
    await until(lambda: bool(done))
    await writer.stop()
    assert done == [3]
    assert len(producer.produced) == 3
    assert {m["value"] for m in producer.produced} == {b"\x00avro"}
    assert writer.failures == {"_MSG_TIMED_OUT": 2}  # counted by the broker's error name
    assert writer.pending == 0


async def test_a_full_queue_is_served_then_the_letter_produced(
    writer_factory: Callable[[FakeProducer], DeadLetterWriter],
) -> None:
    """BufferError (queue full) makes the writer serve delivery reports and produce again; nothing is lost."""
    producer = FakeProducer(full=2)
    writer = writer_factory(producer)
    await writer.start()
    done: list[int] = []
    writer.write(LETTER, lambda: done.append(1))
    assert producer.polls >= 2
    await until(lambda: bool(done))
    await writer.stop()
    assert len(producer.produced) == 1
    assert done == [1]


async def test_flush_waits_for_the_broker_and_reports_what_is_left(
    writer_factory: Callable[[FakeProducer], DeadLetterWriter],
) -> None:
    """flush returns 0 once every letter is delivered; a letter never delivered is counted as left."""
    producer = FakeProducer()
    writer = writer_factory(producer)
    await writer.start()
    for _ in range(3):
        writer.write(LETTER, lambda: None)
    assert await writer.flush(BOUND_S) == 0
    await writer.stop()

    stuck = FakeProducer(outcomes=[KafkaError(KafkaError._MSG_TIMED_OUT)] * 10_000)
    writer = writer_factory(stuck)
    await writer.start()
    writer.write(LETTER, lambda: None)
    assert await writer.flush(0.1) == 1
    await writer.stop()


async def test_lifecycle(writer_factory: Callable[[FakeProducer], DeadLetterWriter]) -> None:
    """write before start is refused, start refuses to run twice, stop is idempotent."""
    writer = writer_factory(FakeProducer())
    with pytest.raises(RuntimeError, match="not started"):
        writer.write(LETTER, lambda: None)
    await writer.start()
    with pytest.raises(RuntimeError, match="already started"):
        await writer.start()
    await writer.stop()
    await writer.stop()
