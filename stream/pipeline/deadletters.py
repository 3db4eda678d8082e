"""The dead-letter topic: the original key and bytes, with headers that say why and where from.

An event counts as finished only once the broker acknowledged its dead-letter write. Headers never hold
the access token or a raw PII value: a reason code, Meta's code/subcode, a short detail written by
capi-stream (never the record's content), the source position and the time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from stream.errors import CapiStreamError
from stream.logs import kafka_config
from stream.pipeline.tasks import cancel_and_wait

HEADER_REASON = "capi.reason"
HEADER_CODE = "capi.meta_code"
HEADER_SUBCODE = "capi.meta_subcode"
HEADER_DETAIL = "capi.detail"
HEADER_TOPIC = "capi.source_topic"
HEADER_PARTITION = "capi.source_partition"
HEADER_OFFSET = "capi.source_offset"
HEADER_TIME = "capi.time"
HEADER_EVENT_NAME = "capi.event_name"
HEADER_EVENT_ID = "capi.event_id"
# a detail is a short machine-made explanation; cut it so a header never grows with the input
MAX_DETAIL = 200
# Settings for a writer that must not lose a letter: leader ack, idempotent retries
_DEFAULTS: dict[str, Any] = {"acks": "all", "enable.idempotence": True, "linger.ms": 20}


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why one message could not be sent, and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str = ""
    code: int | None = None
    subcode: int | None = None
    event_name: str = ""
    event_id: str | None = None

    def headers(self, now: float) -> list[tuple[str, str | bytes | None]]:
        """Kafka headers for this letter."""
        out: list[tuple[str, str | bytes | None]] = [
            (HEADER_REASON, self.reason.encode()),
            (HEADER_TOPIC, self.topic.encode()),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
            (HEADER_TIME, str(int(now * 1000)).encode()),
        ]
        if self.detail:
            out.append((HEADER_DETAIL, self.detail[:MAX_DETAIL].encode()))
        if self.code is not None:
            out.append((HEADER_CODE, str(self.code).encode()))
        if self.subcode is not None:
            out.append((HEADER_SUBCODE, str(self.subcode).encode()))
        if self.event_name:
            out.append((HEADER_EVENT_NAME, self.event_name.encode()))
        if self.event_id:
            out.append((HEADER_EVENT_ID, self.event_id.encode()))
        return out


class LetterProducer(Protocol):
    """The part of confluent_kafka's Producer the writer uses (unit tests pass a fake)."""

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                headers: list[tuple[str, str | bytes | None]] | None = None,
                on_delivery: Callable[[KafkaError | None, Message], None] | None = None) -> None: ...

    def poll(self, timeout: float) -> int: ...


class DeadLetterWriter:
    """Produce dead letters; call `on_done` on the event loop once the broker acknowledged each.

    A failed delivery is produced again (after librdkafka's own retries gave up) so nothing is lost.
    """

    def __init__(self, bootstrap: str, topic: str, config: Mapping[str, Any] | None = None,
                 producer_factory: Callable[[dict[str, Any]], LetterProducer] | None = None) -> None:
        self.topic = topic
        self._conf = {"bootstrap.servers": bootstrap, **_DEFAULTS, **(config or {})}
        self._producer_factory = producer_factory or Producer  # unit tests pass a fake's factory
        self._producer: LetterProducer | None = None
        self._poller: asyncio.Task[None] | None = None
        self.pending = 0
        self.failures = 0

    async def start(self) -> None:
        """Create the producer and the task that serves its delivery reports; refuses to run twice."""
        if self._producer is not None:
            raise RuntimeError("DeadLetterWriter already started")
        self._producer = self._producer_factory(kafka_config(self._conf))
        self._poller = asyncio.create_task(self._poll(), name="dlq-poll")

    async def _poll(self) -> None:
        while True:
            assert self._producer is not None
            # poll(0) runs the delivery callbacks here, on the event loop thread
            self._producer.poll(0)
            await asyncio.sleep(0.02 if self.pending else 0.2)

    def write(self, letter: DeadLetter, on_done: Callable[[], None]) -> None:
        """Queue one letter; `on_done()` runs once the broker has it."""
        if self._producer is None:
            raise RuntimeError("DeadLetterWriter not started")

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.pending -= 1
                on_done()
                return
            self.failures += 1
            self.pending -= 1
            self.write(letter, on_done)  # librdkafka gave up on its retries: try again, never drop

        self.pending += 1
        while True:
            try:
                self._producer.produce(self.topic, value=letter.value, key=letter.key,
                                       headers=letter.headers(time.time()), on_delivery=delivered)
            except BufferError:
                self._producer.poll(0.05)  # queue full: serve reports, then retry
            else:
                return

    async def flush(self, timeout: float) -> int:  # noqa: ASYNC109 - a bounded drain, not a cancel scope
        """Wait up to `timeout` for every queued letter; return how many are still undelivered."""
        if self._producer is None:
            return 0
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self._producer.poll(0)
            await asyncio.sleep(0.02)
        return self.pending

    async def stop(self) -> None:
        """Stop serving delivery reports (idempotent). Call `flush` first to wait for acks."""
        await cancel_and_wait([self._poller])
        self._poller = None
        self._producer = None


class DeadLetterError(CapiStreamError):
    """The dead-letter topic cannot be written."""
