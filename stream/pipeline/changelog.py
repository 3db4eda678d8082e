"""The dedupe changelog topic: created when missing, written with broker acks, read back on assignment.

Records and their meaning are in stream/pipeline/dedupelog.py (pure). This module is the Kafka edge: an
AdminClient that creates the topic (as many partitions as the source topic, `compact,delete` with a
retention one bucket longer than the dedupe window), an idempotent producer whose delivery reports run
on the event loop (`write` calls back once the broker has every record of a call, and re-produces a
record librdkafka gave up on, so nothing is lost), and a reader that pages one partition from its start
to the end it had when the read began, on a worker thread, handing each page to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # not re-exported in a way mypy sees
from confluent_kafka.cimpl import NewPartitions, NewTopic

from stream.errors import CapiStreamError
from stream.logs import kafka_config
from stream.pipeline.source import await_leaders

# librdkafka settings of `[kafka.consumer]` every client needs too (TLS, SASL, client id), as the tools pass them
SHARED_PREFIXES: Final = ("security.", "sasl.", "ssl.", "client.", "socket.", "broker.", "api.version")

log = structlog.get_logger("capi_stream.changelog")

TP = tuple[str, int]  # a SOURCE topic and partition: the changelog partition has the same number
# Every changelog record must survive a broker failure before the offsets it covers are committed.
_PRODUCER: Final[dict[str, Any]] = {"acks": "all", "enable.idempotence": True, "linger.ms": 5,
                                    "compression.type": "lz4"}
# A page of a restore: the loop applies one between other work, so a page holds about PAGE_BYTES (~5,000
# keys, ~5-10 ms), at most PAGE records: 5,000 per-key records, or 6 bundles of 1,000 keys (dedupelog). The
# first page asks for FIRST_PAGE records; later ones as many as PAGE_BYTES holds at the sizes seen so far.
PAGE: Final = 5000
PAGE_BYTES: Final = 96 * 1024
FIRST_PAGE: Final = 4
# librdkafka's prefetch queue of a restore reader, in KB: a few pages ahead
RESTORE_PREFETCH_KB: Final = 4096
# A restore read that makes no progress for this long starts again (the broker may be restarting).
STALL_S: Final = 30.0
ADMIN_TIMEOUT_S: Final = 30.0


class ChangelogError(CapiStreamError):
    """The changelog topic cannot be created or read; retriable (the broker may be away)."""

    retriable = True


def _admin_wait(future: Any, what: str) -> Any:
    try:
        return future.result(timeout=ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        raise ChangelogError(f"{what}: {err.str() if isinstance(err, KafkaError) else exc}") from exc
    except TimeoutError as exc:
        raise ChangelogError(f"{what}: no answer within {ADMIN_TIMEOUT_S:g} s") from exc


def _await_leaders(admin: AdminClient, name: str, partitions: int) -> None:
    """Return once topic `name` has `partitions` partitions, each with a leader; ChangelogError after
    ADMIN_TIMEOUT_S (source.await_leaders)."""
    try:
        missing = await_leaders(admin, {name: partitions}, ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        raise ChangelogError(f"changelog topic {name}: {exc}") from exc
    if missing:
        raise ChangelogError(f"changelog topic {name}: no leader for partitions {missing[name]} "
                             f"after {ADMIN_TIMEOUT_S:g} s")


def ensure_topic(admin: AdminClient, name: str, partitions: int, configs: Mapping[str, str]) -> str:
    """Create changelog topic `name` with `partitions` partitions, or grow it to that many; what was done.
    A topic it created or grew has a leader for every partition when it returns.

    An existing topic with other settings is left as it is (an operator may have tuned it) and logged.
    Blocking: call it from a thread. Raises ChangelogError.
    """
    meta = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    info = meta.topics.get(name)
    if info is None or (info.error is not None and info.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, config=dict(configs))],
                                      operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S)
        try:
            futures[name].result(timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise ChangelogError(f"create changelog topic {name}: {err}") from exc
            _await_leaders(admin, name, partitions)
            return "exists"  # another member created it meanwhile
        _await_leaders(admin, name, partitions)
        return "created"
    have = len(info.partitions)
    if have < partitions:
        futures = admin.create_partitions([NewPartitions(name, partitions)], request_timeout=ADMIN_TIMEOUT_S)
        _admin_wait(futures[name], f"grow changelog topic {name} to {partitions} partitions")
        _await_leaders(admin, name, partitions)
        return "grown"
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    described = _admin_wait(admin.describe_configs([resource])[resource], f"describe {name}")
    differs = {k: described[k].value for k, v in configs.items() if k in described and described[k].value != v}
    if differs:
        log.warning("changelog_topic_settings_differ", topic=name, found=differs,
                    wanted={k: configs[k] for k in differs})
    return "exists"


class Changelog:
    """Writes and reads the changelog topics of the source topics in `topics` (source -> changelog)."""

    def __init__(self, bootstrap: str, topics: Mapping[str, str], group: str,
                 producer: Mapping[str, Any] | None = None, client: Mapping[str, Any] | None = None) -> None:
        self.topics = dict(topics)
        self._group = group
        self._client = {**(client or {}), "bootstrap.servers": bootstrap}
        self._producer_conf = {**self._client, **_PRODUCER, **(producer or {})}
        self._producer: Producer | None = None
        self._poller: asyncio.Task[None] | None = None
        self._pending: Counter[TP] = Counter()
        self.failures = 0
        self.written = 0

    async def start(self) -> None:
        """Create the producer and the task that serves its delivery reports; refuses to run twice."""
        if self._producer is not None:
            raise RuntimeError("Changelog already started")
        self._producer = Producer(kafka_config(self._producer_conf))
        self._poller = asyncio.create_task(self._poll(), name="changelog-poll")

    async def stop(self) -> None:
        """Stop serving delivery reports (idempotent). Call `flush` first to wait for acks."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        self._producer = None

    async def _poll(self) -> None:
        while True:
            assert self._producer is not None
            self._producer.poll(0)  # delivery callbacks run here, on the event loop thread
            await asyncio.sleep(0.005 if self._pending else 0.1)

    # -- writing ---------------------------------------------------------------------------------
    def write(self, records: Iterable[tuple[TP, bytes, bytes | None]],
              on_done: Callable[[], None] | None = None) -> int:
        """Queue (source partition, record key, value or None) records; `on_done()` once the broker has all.

        Returns how many were queued; with none, `on_done` runs at once.
        """
        if self._producer is None:
            raise RuntimeError("Changelog not started")
        queued = list(records)
        left = len(queued)
        if not left:
            if on_done is not None:
                on_done()
            return 0

        def one_done() -> None:
            nonlocal left
            left -= 1
            if left == 0 and on_done is not None:
                on_done()

        for tp, key, value in queued:
            self._produce(tp, key, value, one_done)
        return len(queued)

    def _produce(self, tp: TP, key: bytes, value: bytes | None, done: Callable[[], None]) -> None:
        assert self._producer is not None
        self._pending[tp] += 1

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            self._pending[tp] -= 1
            if not self._pending[tp]:
                del self._pending[tp]
            if err is None:
                self.written += 1
                done()
                return
            self.failures += 1
            log.warning("changelog_write_failed", topic=self.topics[tp[0]], partition=tp[1], error=err.name())
            if self._producer is not None:
                self._produce(tp, key, value, done)  # librdkafka gave up on its retries: again, never drop

        while True:
            try:
                self._producer.produce(self.topics[tp[0]], key=key, value=value, partition=tp[1],
                                       on_delivery=delivered)
            except BufferError:
                self._producer.poll(0.05)  # queue full: serve reports, then retry
            else:
                return

    def holds(self, tps: Iterable[TP]) -> bool:
        """True while a record for one of `tps` waits for its broker ack."""
        return any(tp in self._pending for tp in tps)

    @property
    def pending(self) -> int:
        """Records waiting for their broker ack."""
        return sum(self._pending.values())

    async def flush(self, timeout: float) -> int:  # noqa: ASYNC109 - a bounded drain, not a cancel scope
        """Wait up to `timeout` for every queued record; return how many are still unacknowledged."""
        if self._producer is None:
            return 0
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self._producer.poll(0)
            await asyncio.sleep(0.005)
        return self.pending

    # -- topics ----------------------------------------------------------------------------------
    def ensure_topics(self, partitions: Mapping[str, int], configs: Mapping[str, str]) -> None:
        """Create or grow the changelog topic of each source topic in `partitions` (source -> count).

        Blocking: call it from a thread. Raises ChangelogError.
        """
        admin = AdminClient(kafka_config(self._client))
        for source, count in partitions.items():
            name = self.topics[source]
            try:
                done = ensure_topic(admin, name, count, configs)
            except KafkaException as exc:
                raise ChangelogError(f"changelog topic {name}: {exc}") from exc
            log.info("changelog_topic_ready", topic=name, source=source, partitions=count, action=done)

    def source_partitions(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of the source topics that exist (blocking). Raises ChangelogError."""
        admin = AdminClient(kafka_config(self._client))
        try:
            meta = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise ChangelogError(f"read metadata: {exc}") from exc
        out = {}
        for topic in topics:
            info = meta.topics.get(topic)
            if info is not None and info.error is None and info.partitions:
                out[topic] = len(info.partitions)
        return out

    # -- reading ---------------------------------------------------------------------------------
    async def read(self, tp: TP, page: Callable[[list[tuple[bytes | None, bytes | None]]], None]) -> None:
        """Read changelog partition `tp[1]` of `tp[0]`'s changelog from its start to its end at the start of
        the read, calling `page(records)` on the loop for each page of (key, value) in log order.

        Raises ChangelogError when the broker refuses the read or no progress is made for STALL_S.
        """
        topic = self.topics[tp[0]]
        consumer = await asyncio.to_thread(self._reader)
        try:
            low, high = await asyncio.to_thread(self._start, consumer, topic, tp[1])
            position = low
            last_progress = time.monotonic()
            size, seen, nbytes = FIRST_PAGE, 0, 0
            while position < high:
                messages = await asyncio.to_thread(consumer.consume, size, 0.2)
                records: list[tuple[bytes | None, bytes | None]] = []
                for message in messages:
                    err = message.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            position = high
                            continue
                        if err.fatal() or not err.retriable():
                            raise ChangelogError(f"read {topic}[{tp[1]}]: {err.str()}")
                        continue
                    offset = message.offset()
                    if offset is None or offset >= high:
                        position = high
                        continue
                    records.append((message.key(), message.value()))
                    position = offset + 1
                if records:
                    page(records)
                    last_progress = time.monotonic()
                    seen += len(records)
                    nbytes += sum(len(v) for _k, v in records if v is not None)
                    size = max(1, min(PAGE, PAGE_BYTES * seen // max(nbytes, 1)))
                elif time.monotonic() - last_progress > STALL_S:
                    raise ChangelogError(f"read {topic}[{tp[1]}]: no progress at offset {position} of {high} "
                                         f"for {STALL_S:g} s")
        finally:
            await asyncio.to_thread(consumer.close)

    def _reader(self) -> Consumer:
        # assign() only, never subscribe or commit: the group id names the reader in broker logs
        return Consumer(kafka_config({**self._client, "group.id": f"{self._group}.changelog-restore",
                                      "enable.auto.commit": False, "enable.auto.offset.store": False,
                                      "enable.partition.eof": True, "auto.offset.reset": "earliest",
                                      "fetch.wait.max.ms": 50, "isolation.level": "read_uncommitted",
                                      # a small prefetch: the restore streams pages into the store, and
                                      # librdkafka's default 64 MB queue would hold much of the partition
                                      # a second time meanwhile
                                      "queued.max.messages.kbytes": RESTORE_PREFETCH_KB}))

    @staticmethod
    def _start(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise ChangelogError(f"watermarks of {topic}[{partition}]: {exc}") from exc
        if high > low:
            consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        return int(low), int(high)
