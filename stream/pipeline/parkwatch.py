"""What waits in each parking topic, asked of the broker (I/O edge; the arithmetic is in parking.py).

The parking consumer's statistics cannot say it: a parked destination's parking partitions are paused,
and librdkafka refreshes a partition's end offset only while it fetches, so the lag it reports stays
at the value of the pause; after a restart, or on a member that is not assigned a parking partition,
it says nothing at all. So every PARKING_LOOK_S the runner asks the broker, from a client that never
joins a group and never commits, for each parking topic: the partitions' watermarks, the offsets the
parking group `{group}.parking` committed, and the `capi.event_time` header of the first uncommitted
record of each partition that has records waiting (one record per partition, read only when that
first record changed since the last look: cheap and bounded, never a scan). Every member reports the
same whole-topic numbers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from stream.logs import kafka_config
from stream.pipeline.parking import TopicView, event_time_of, oldest_of, topic_lag, waiting_from

# how long one broker call of a look may take; a look gives up (and keeps the last view) past it
CALL_TIMEOUT_S = 5.0
# how long a look waits for the first waiting records of the partitions it reads
READ_TIMEOUT_S = 3.0


class WatchConsumer(Protocol):
    """The part of confluent_kafka's Consumer a look uses (unit tests pass a fake)."""

    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = ...,
                              cached: bool = ...) -> tuple[int, int]: ...

    def committed(self, partitions: list[TopicPartition], timeout: float = ...) -> list[TopicPartition]: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def unassign(self) -> None: ...

    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Any]: ...

    def close(self) -> None: ...


def watch_config(conf: Mapping[str, Any], group: str) -> dict[str, Any]:
    """A consumer in the parking group that never joins it (no subscribe), never commits, and never has a
    topic created by asking for its metadata (a parking topic gets its partition count from the runner)."""
    return {**conf, "group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "enable.partition.eof": False, "auto.offset.reset": "earliest", "allow.auto.create.topics": False}


class ParkingWatch:
    """Looks at the parking topics (blocking calls: the runner runs `look` on a thread, one at a time)."""

    def __init__(self, conf: Mapping[str, Any], group: str, topics: Mapping[str, str],
                 consumer_factory: Callable[[dict[str, Any]], WatchConsumer] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`conf`: bootstrap and shared client settings; `topics`: destination -> its parking topic."""
        self._conf = watch_config(conf, group)
        self._topics = dict(topics)
        self._factory: Callable[[dict[str, Any]], WatchConsumer] = consumer_factory or Consumer
        self._monotonic = monotonic
        self._consumer: WatchConsumer | None = None
        self._lock = threading.Lock()
        self._closed = False
        # (topic, partition) -> (offset of its first waiting record, that record's event_time)
        self._heads: dict[tuple[str, int], tuple[int, int]] = {}

    def look(self) -> dict[str, TopicView]:
        """destination -> what waits in its parking topic now. KafkaException when the broker does not
        answer (the caller keeps its last view)."""
        with self._lock:
            if self._closed:
                return {}
            if self._consumer is None:
                self._consumer = self._factory(kafka_config(dict(self._conf)))
            consumer = self._consumer
            waiting: dict[str, tuple[int, dict[int, int]]] = {}
            for name, topic in self._topics.items():
                meta = consumer.list_topics(topic, timeout=CALL_TIMEOUT_S).topics.get(topic)
                if meta is None or meta.error is not None or not meta.partitions:
                    waiting[name] = (0, {})  # not created yet: nothing parked
                    continue
                parts = sorted(meta.partitions)
                bounds = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=CALL_TIMEOUT_S,
                                                            cached=False) for p in parts}
                done = {tp.partition: (tp.offset if tp.offset != OFFSET_INVALID else None)
                        for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=CALL_TIMEOUT_S)
                        if tp.error is None}
                waiting[name] = (topic_lag(bounds, done), waiting_from(bounds, done))
            self._read_heads(consumer, {(self._topics[n], p): o for n, (_, w) in waiting.items() for p, o in w.items()})
            now = self._monotonic()
            return {name: TopicView(lag, oldest_of(*(self._heads[(self._topics[name], p)][1] for p in heads
                                                     if (self._topics[name], p) in self._heads)), now)
                    for name, (lag, heads) in waiting.items()}

    def _read_heads(self, consumer: WatchConsumer, heads: Mapping[tuple[str, int], int]) -> None:
        """Learn the event time of each first waiting record not known yet (the first record at or after
        its offset: the low watermark may have passed it meanwhile)."""
        self._heads = {tp: known for tp, known in self._heads.items() if heads.get(tp) == known[0]}
        wanted = {tp: offset for tp, offset in heads.items() if tp not in self._heads}
        if not wanted:
            return
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in wanted.items()])
        try:
            deadline = self._monotonic() + READ_TIMEOUT_S
            while wanted and self._monotonic() < deadline:
                for msg in consumer.consume(len(wanted), timeout=0.2):
                    if msg.error() is not None:
                        continue
                    tp = (msg.topic(), msg.partition())
                    if tp in wanted and msg.offset() >= wanted[tp]:
                        self._heads[tp] = (wanted.pop(tp), event_time_of(msg.headers()))
        finally:
            consumer.unassign()

    def close(self) -> None:
        """Close the client (after the look in progress, if any); later looks answer nothing."""
        with self._lock:
            self._closed = True
            if self._consumer is not None:
                consumer, self._consumer = self._consumer, None
                with contextlib.suppress(KafkaException, RuntimeError):
                    consumer.close()
