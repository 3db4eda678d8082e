"""The dead-letter topic: the original key and bytes, with headers that say why and where from.

An event counts as finished only once the broker acknowledged its dead-letter write, so every letter
must be written, whatever happens:

- a letter too large for the producer (`message.max.bytes`) or the topic (its `max.message.bytes`) is
  written without its value (then without its key too if needed), marked `capi.omitted` and with the
  original size in `capi.original_size`; reason and source headers always stay;
- every header value is bounded (MAX_HEADER_VALUE bytes, cut on a character boundary, the cut headers
  named in `capi.truncated`), so an unbounded event_id or event_name cannot make a letter unwritable;
- a fatal error of the idempotent producer gets a new producer, and every letter not yet acknowledged
  is produced again through it;
- any other failure (topic missing, not authorised, broker down past librdkafka's retries) is retried
  with exponential backoff, logged as `dead_letter_failed` with the broker's error, counted per error
  (`capi_stream_dead_letter_failures_total`), and makes the pipeline not ready until it is written.
  The letter's partition does not commit past it meanwhile: nothing is lost.

`write` never raises for a produce error. Headers never hold the access token or a raw PII value: a
reason code, Meta's code/subcode, a short detail written by capi-stream (never the record's content),
the source position, the time, the event's name and id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream.errors import CapiStreamError
from stream.logs import kafka_config
from stream.pipeline.clientconf import probe_client
from stream.pipeline.tasks import cancel_and_wait

log = structlog.get_logger("capi_stream.dlq")

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
# what was left out of a letter too large to write whole: "value" or "value,key"
HEADER_OMITTED = "capi.omitted"
# the source message's value size in bytes (always written)
HEADER_ORIGINAL_SIZE = "capi.original_size"
# names of the headers whose value was cut to MAX_HEADER_VALUE bytes
HEADER_TRUNCATED = "capi.truncated"
# a detail is a short machine-made explanation; cut it so a header never grows with the input
MAX_DETAIL = 200
# any header value, in bytes (event ids and names come from the input and may be of any length)
MAX_HEADER_VALUE = 256
# Settings for a writer that must not lose a letter: leader ack, idempotent retries
_DEFAULTS: dict[str, Any] = {"acks": "all", "enable.idempotence": True, "linger.ms": 20}
# librdkafka's default message.max.bytes, and room for the record's framing
_DEFAULT_MAX_BYTES = 1_000_000
_FRAMING_BYTES = 512
# omit levels: 0 the whole letter, 1 without the value, 2 without value and key
_OMITTED = ("", "value", "value,key")
# new producers one letter may ask for in a row before it waits like any other failure
MAX_RENEWALS = 2
# delivery errors that mean "this letter is too large for the topic"
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})


class LetterProducer(Protocol):
    """The part of confluent_kafka's Producer the writer uses (unit tests pass a fake)."""

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                headers: list[tuple[str, str | bytes | None]] | None = None,
                on_delivery: Callable[[KafkaError | None, Message], None] | None = None) -> None: ...

    def poll(self, timeout: float) -> int: ...


def _bounded(text: str, limit: int) -> tuple[bytes, bool]:
    """UTF-8 of `text`, cut on a character boundary to at most `limit` bytes; True when it was cut."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw, False
    return raw[:limit].decode("utf-8", "ignore").encode(), True


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why one message could not be sent, and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None for a tombstone (null value): it is dead-lettered as null
    reason: str
    detail: str = ""
    code: int | None = None
    subcode: int | None = None
    event_name: str = ""
    event_id: str | None = None
    # more (name, value) headers, bounded like the others (the parking topic's destination and event time)
    extra: tuple[tuple[str, str], ...] = ()

    def headers(self, now: float, omitted: str = "") -> list[tuple[str, bytes]]:
        """Kafka headers for this letter, every value bounded; `omitted` names what the letter leaves out."""
        cut: list[str] = []

        def bounded(name: str, text: str, limit: int = MAX_HEADER_VALUE) -> tuple[str, bytes]:
            raw, was_cut = _bounded(text, limit)
            if was_cut:
                cut.append(name)
            return name, raw

        out: list[tuple[str, bytes]] = [
            bounded(HEADER_REASON, self.reason),
            bounded(HEADER_TOPIC, self.topic),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
            (HEADER_TIME, str(int(now * 1000)).encode()),
            (HEADER_ORIGINAL_SIZE, str(len(self.value) if self.value is not None else 0).encode()),
        ]
        if self.detail:
            out.append(bounded(HEADER_DETAIL, self.detail, MAX_DETAIL))
        if self.code is not None:
            out.append((HEADER_CODE, str(self.code).encode()))
        if self.subcode is not None:
            out.append((HEADER_SUBCODE, str(self.subcode).encode()))
        if self.event_name:
            out.append(bounded(HEADER_EVENT_NAME, self.event_name))
        if self.event_id:
            out.append(bounded(HEADER_EVENT_ID, self.event_id))
        out.extend(bounded(name, value) for name, value in self.extra)
        if omitted:
            out.append((HEADER_OMITTED, omitted.encode()))
        if cut:
            out.append((HEADER_TRUNCATED, ",".join(cut).encode()))
        return out


@dataclasses.dataclass(eq=False, slots=True)
class _Entry:
    """One letter on its way: how much of it to leave out, and how often it failed."""

    letter: DeadLetter
    on_done: Callable[[], None]
    omit: int = 0
    attempts: int = 0
    retry: asyncio.TimerHandle | None = None



def producer_config(bootstrap: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dead-letter producer's librdkafka settings: our defaults, then the user's passthrough."""
    return {"bootstrap.servers": bootstrap, **_DEFAULTS, **(config or {})}


def check_producer_config(bootstrap: str, config: Mapping[str, Any] | None, where: str) -> list[str]:
    """librdkafka's verdict on the dead-letter producer's settings, offline (see clientconf.probe_client)."""
    return probe_client(Producer, KafkaException, producer_config(bootstrap, config), where)

class DeadLetterWriter:
    """Produce dead letters; call `on_done` on the event loop once the broker acknowledged each."""

    def __init__(self, bootstrap: str, topic: str, config: Mapping[str, Any] | None = None, *,
                 producer_factory: Callable[[dict[str, Any]], LetterProducer] | None = None,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.topic = topic
        self._conf = producer_config(bootstrap, config)
        self._max_bytes = int(self._conf.get("message.max.bytes", _DEFAULT_MAX_BYTES)) - _FRAMING_BYTES
        self._factory: Callable[[dict[str, Any]], LetterProducer] = producer_factory or _kafka_producer
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._producer: LetterProducer | None = None
        self._generation = 0
        self._poller: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._produced: set[_Entry] = set()  # handed to the current producer, no report yet
        self.retrying: set[_Entry] = set()  # waiting for their next attempt after a failure
        self.pending = 0
        self.failures: Counter[str] = Counter()  # failed attempts by the broker's error name
        self.omitted = 0  # letters written without their value

    async def start(self) -> None:
        """Create the producer and the task that serves its delivery reports; refuses to run twice."""
        if self._producer is not None:
            raise RuntimeError("DeadLetterWriter already started")
        self._loop = asyncio.get_running_loop()
        self._producer = self._factory(kafka_config(self._conf))
        self._poller = asyncio.create_task(self._poll(), name="dlq-poll")

    async def _poll(self) -> None:
        while True:
            assert self._producer is not None
            # poll(0) runs the delivery callbacks here, on the event loop thread
            self._producer.poll(0)
            await asyncio.sleep(0.02 if self.pending else 0.2)

    def write(self, letter: DeadLetter, on_done: Callable[[], None]) -> None:
        """Queue one letter; `on_done()` runs once the broker has it. Never raises for a produce error."""
        if self._producer is None:
            raise RuntimeError("DeadLetterWriter not started")
        self.pending += 1
        entry = _Entry(letter, on_done)
        if letter.value is not None and len(letter.value) > self._max_bytes:
            entry.omit = 1  # cannot fit whatever the topic allows: do not even try
        self._produce(entry)

    def _produce(self, entry: _Entry) -> None:
        entry.retry = None
        self.retrying.discard(entry)
        if self._producer is None:  # stopped meanwhile: the letter stays unwritten, its offset uncommitted
            return
        letter = entry.letter
        renewals = 0
        while True:
            value = letter.value if entry.omit == 0 else None
            key = letter.key if entry.omit < 2 else None
            headers: list[tuple[str, str | bytes | None]] = list(letter.headers(time.time(), _OMITTED[entry.omit]))
            if entry.omit < 2 and _size(value, key, headers) > self._max_bytes:
                entry.omit += 1
                continue
            try:
                self._producer.produce(self.topic, value=value, key=key, headers=headers,
                                       on_delivery=functools.partial(self._delivered, entry, self._generation))
            except BufferError:
                self._producer.poll(0.05)  # queue full: serve reports, then retry
                continue
            except KafkaException as exc:
                err = _error_of(exc)
                if err.code() in _TOO_LARGE and entry.omit < 2:
                    entry.omit += 1
                    continue
                if (err.fatal() or err.code() == KafkaError._FATAL) and renewals < MAX_RENEWALS:
                    renewals += 1
                    self._renew(err)
                    continue
                self._failed(entry, err)
                return
            if entry.omit:
                self.omitted += 1
                log.warning("dead_letter_value_omitted", topic=letter.topic, partition=letter.partition,
                            offset=letter.offset, omitted=_OMITTED[entry.omit],
                            original_size=len(letter.value or b""))
            self._produced.add(entry)
            return

    def _delivered(self, entry: _Entry, generation: int, err: KafkaError | None, _msg: Message | None) -> None:
        if generation != self._generation:
            return  # a report of a producer replaced after a fatal error: the entry was produced again
        self._produced.discard(entry)
        if err is None:
            self.pending -= 1
            entry.on_done()
            return
        if err.code() in _TOO_LARGE and entry.omit < 2:
            entry.omit += 1  # the topic takes less than the producer: leave the value out
            self._produce(entry)
            return
        if err.fatal() or err.code() == KafkaError._FATAL:
            self._produced.add(entry)
            self._renew(err)
            return
        self._failed(entry, err)

    def _failed(self, entry: _Entry, err: KafkaError) -> None:
        """A letter the broker did not take: back off and try again, loudly."""
        entry.attempts += 1
        self.failures[err.name()] += 1
        initial, maximum = self._backoff
        delay = min(maximum, initial * 2 ** min(entry.attempts - 1, 30))
        log.error("dead_letter_failed", topic=self.topic, error=err.name(), detail=err.str()[:200],
                  attempt=entry.attempts, retry_in_s=round(delay, 3), source_topic=entry.letter.topic,
                  source_partition=entry.letter.partition, source_offset=entry.letter.offset,
                  action="check that the dead-letter topic exists, may be written and takes the letter's size")
        assert self._loop is not None
        self.retrying.add(entry)
        entry.retry = self._loop.call_later(delay, self._produce, entry)

    def _renew(self, err: KafkaError) -> None:
        """The idempotent producer hit a fatal error: replace it and produce its unacknowledged letters again."""
        old = self._producer
        self._generation += 1
        log.error("dead_letter_producer_fatal", topic=self.topic, error=err.name(), detail=err.str()[:200],
                  unacknowledged=len(self._produced))
        self.failures[err.name()] += 1
        if old is not None:
            purge = getattr(old, "purge", None)  # drop its queue: its reports are ignored from now on
            if purge is not None:
                with contextlib.suppress(Exception):
                    purge()
        self._producer = self._factory(kafka_config(self._conf))
        again, self._produced = list(self._produced), set()
        for entry in again:
            self._produce(entry)

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
        """Stop serving delivery reports and retries (idempotent). Call `flush` first to wait for acks."""
        await cancel_and_wait([self._poller])
        self._poller = None
        for entry in self.retrying:
            if entry.retry is not None:
                entry.retry.cancel()
        self.retrying.clear()
        self._producer = None


def _kafka_producer(conf: dict[str, Any]) -> LetterProducer:
    producer: LetterProducer = Producer(conf)
    return producer


def _size(value: bytes | None, key: bytes | None, headers: list[tuple[str, str | bytes | None]]) -> int:
    return len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") + 8 for k, v in headers)


def _error_of(exc: KafkaException) -> KafkaError:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return err
    return KafkaError(KafkaError._FAIL, str(exc)[:200])


class DeadLetterError(CapiStreamError):
    """The dead-letter topic cannot be written."""
