"""The dead-letter writer with a fake producer: every letter is written, whatever produce() does.

A letter too large for the producer or the topic keeps its reason and source headers and omits the
value (marked, with the original size); header values are bounded; a fatal error of the idempotent
producer gets a new producer; a delivery that keeps failing backs off, is logged and counted, and
leaves nothing pending once the broker takes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import structlog
from confluent_kafka import KafkaError, KafkaException

from stream.pipeline.deadletters import (
    HEADER_EVENT_ID,
    HEADER_OMITTED,
    HEADER_ORIGINAL_SIZE,
    HEADER_REASON,
    HEADER_TRUNCATED,
    MAX_HEADER_VALUE,
    DeadLetter,
    DeadLetterWriter,
)

BOUND_S = 10.0


class FakeMessage:
    def __init__(self, value: bytes | None, key: bytes | None, headers: list[tuple[str, Any]]) -> None:
        self._value, self._key, self._headers = value, key, headers

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, Any]]:
        return self._headers


class FakeProducer:
    """Behaves as librdkafka's producer does for the cases under test.

    - produce() raises MSG_SIZE_TOO_LARGE above `max_bytes` (key + value + headers), as librdkafka does
      synchronously above message.max.bytes;
    - `broker_limit`: the topic refuses bigger messages in the delivery report;
    - `refuse`: the next N deliveries fail with that error (e.g. TOPIC_AUTHORIZATION_FAILED);
    - `fatal_on_produce`: produce() raises a fatal error (the idempotent producer is dead).
    """

    instances: ClassVar[list[FakeProducer]] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.max_bytes = int(conf.get("message.max.bytes", 1_000_000))
        self.broker_limit: int | None = None
        self.refuse: list[int] = []
        self.fatal_on_produce = False
        self.reports: list[tuple[Callable[..., None], KafkaError | None, FakeMessage]] = []
        self.written: list[FakeMessage] = []
        self.purged = False
        FakeProducer.instances.append(self)

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                headers: list[tuple[str, Any]] | None = None, on_delivery: Callable[..., None] | None = None) -> None:
        if self.fatal_on_produce:
            raise KafkaException(KafkaError(KafkaError._FATAL, "idempotent producer fenced", fatal=True))
        headers = headers or []
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
        if size > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large"))
        msg = FakeMessage(value, key, headers)
        err = None
        if self.broker_limit is not None and size > self.broker_limit:
            err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
        elif self.refuse:
            err = KafkaError(self.refuse.pop(0), "Broker: refused")
        assert on_delivery is not None
        self.reports.append((on_delivery, err, msg))

    def poll(self, _timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for callback, err, msg in reports:
            if err is None:
                self.written.append(msg)
            callback(err, msg)
        return len(reports)

    def purge(self, *_args: Any, **_kw: Any) -> None:
        self.purged = True
        self.reports = []

    def flush(self, _timeout: float = 0) -> int:
        return 0


@pytest.fixture(autouse=True)
def _fresh() -> None:
    FakeProducer.instances = []


def _letter(value: bytes | None = b"v", **kw: Any) -> DeadLetter:
    base: dict[str, Any] = {"topic": "src", "partition": 3, "offset": 42, "key": b"k", "value": value,
                            "reason": "meta_rejected", "detail": "refused by Meta", "code": 100, "subcode": 2804017}
    return DeadLetter(**{**base, **kw})


async def _writer(**conf: Any) -> DeadLetterWriter:
    writer = DeadLetterWriter("127.0.0.1:1", "dlq", conf, producer_factory=FakeProducer, backoff_initial_s=0.01,
                              backoff_max_s=0.05)
    await writer.start()
    return writer


async def _written(writer: DeadLetterWriter, done: list[int], want: int) -> None:
    async with asyncio.timeout(BOUND_S):
        while len(done) < want or writer.pending:  # noqa: ASYNC110 - the writer has no event to wait on
            await asyncio.sleep(0.005)


def _headers(msg: FakeMessage) -> dict[str, bytes]:
    return dict(msg.headers())


async def test_a_letter_too_large_for_the_producer_omits_the_value_and_keeps_its_reason() -> None:
    """A source message just under the broker's 1 MB plus headers does not fit: the value goes, the rest stays."""
    writer = await _writer()
    done: list[int] = []
    big = b"x" * 999_990
    writer.write(_letter(big), lambda: done.append(1))  # must not raise
    await _written(writer, done, 1)
    await writer.stop()
    [msg] = FakeProducer.instances[0].written
    h = _headers(msg)
    assert msg.value() is None
    assert h[HEADER_OMITTED] == b"value"
    assert h[HEADER_ORIGINAL_SIZE] == str(len(big)).encode()
    assert h[HEADER_REASON] == b"meta_rejected"
    assert (h["capi.source_topic"], h["capi.source_partition"], h["capi.source_offset"]) == (b"src", b"3", b"42")
    assert msg.key() == b"k"


async def test_a_letter_the_topic_refuses_as_too_large_is_written_without_its_value() -> None:
    """The topic's max.message.bytes is below ours: the broker's refusal makes the writer drop the value."""
    writer = await _writer()
    FakeProducer.instances[0].broker_limit = 5_000
    done: list[int] = []
    writer.write(_letter(b"y" * 20_000), lambda: done.append(1))
    await _written(writer, done, 1)
    await writer.stop()
    [msg] = FakeProducer.instances[0].written
    assert msg.value() is None
    assert _headers(msg)[HEADER_OMITTED] == b"value"
    assert done == [1]


async def test_header_values_are_bounded_and_marked_when_cut() -> None:
    """An event_id of 300 kB is cut to MAX_HEADER_VALUE bytes and the cut is named in capi.truncated."""
    writer = await _writer()
    done: list[int] = []
    writer.write(_letter(event_id="é" * 150_000, event_name="N" * 100_000, detail="d" * 5000), lambda: done.append(1))
    await _written(writer, done, 1)
    await writer.stop()
    [msg] = FakeProducer.instances[0].written
    h = _headers(msg)
    assert all(len(v) <= MAX_HEADER_VALUE for v in h.values())
    h[HEADER_EVENT_ID].decode()  # still valid UTF-8 after the cut
    assert set(h[HEADER_TRUNCATED].decode().split(",")) == {"capi.event_id", "capi.event_name", "capi.detail"}
    assert msg.value() == b"v"  # the value fits, so it is kept whole


async def test_a_tombstone_stays_a_tombstone() -> None:
    """A null value is dead-lettered as null, not as an empty value."""
    writer = await _writer()
    done: list[int] = []
    writer.write(_letter(None, reason="bad_avro"), lambda: done.append(1))
    await _written(writer, done, 1)
    await writer.stop()
    [msg] = FakeProducer.instances[0].written
    assert msg.value() is None
    assert HEADER_OMITTED not in _headers(msg)


async def test_a_fatal_producer_error_gets_a_new_producer_and_loses_nothing() -> None:
    """The idempotent producer's fatal error: the writer builds a new one and writes every letter through it."""
    writer = await _writer()
    first = FakeProducer.instances[0]
    done: list[int] = []
    writer.write(_letter(offset=1), lambda: done.append(1))  # queued, not yet reported
    first.fatal_on_produce = True
    writer.write(_letter(offset=2), lambda: done.append(2))  # produce() raises a fatal error
    await _written(writer, done, 2)
    await writer.stop()
    assert len(FakeProducer.instances) == 2
    assert first.purged
    offsets = sorted(_headers(m)["capi.source_offset"] for m in FakeProducer.instances[1].written)
    assert offsets == [b"1", b"2"]
    assert sorted(done) == [1, 2]


async def test_a_delivery_that_keeps_failing_backs_off_is_logged_and_counted_until_it_succeeds() -> None:
    """Topic not authorised, five times: retried with growing waits, dead_letter_failed logged, metrics counted."""
    writer = await _writer()
    producer = FakeProducer.instances[0]
    producer.refuse = [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 5
    done: list[int] = []
    with structlog.testing.capture_logs() as logs:
        writer.write(_letter(), lambda: done.append(1))
        async with asyncio.timeout(BOUND_S):
            while not writer.retrying:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        assert writer.pending == 1
        await _written(writer, done, 1)
    await writer.stop()
    failed = [e for e in logs if e["event"] == "dead_letter_failed"]
    assert len(failed) == 5
    assert {e["error"] for e in failed} == {"TOPIC_AUTHORIZATION_FAILED"}
    delays = [e["retry_in_s"] for e in failed]
    assert delays == sorted(delays)  # backs off
    assert delays[-1] > delays[0]
    assert writer.failures == {"TOPIC_AUTHORIZATION_FAILED": 5}
    assert not writer.retrying
    assert done == [1]
    assert len(producer.written) == 1


async def test_write_never_raises_for_a_produce_error() -> None:
    """An unexpected produce() error becomes a retried failure, never an exception in the caller's stage."""
    writer = await _writer()
    producer = FakeProducer.instances[0]
    calls = {"n": 0}
    original = producer.produce

    def flaky(*args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC, "Unknown topic"))
        original(*args, **kw)

    producer.produce = flaky  # type: ignore[method-assign]
    done: list[int] = []
    writer.write(_letter(), lambda: done.append(1))
    await _written(writer, done, 1)
    await writer.stop()
    assert writer.failures == {"_UNKNOWN_TOPIC": 1}
    assert done == [1]
