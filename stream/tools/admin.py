"""Kafka I/O for the replay and dead-letter tools: AdminClient look-ups and resets, bounded reads, copies.

Blocking calls, made from the CLI (no event loop here). Every call has a timeout; a broker that does not
answer becomes AdminError (retriable, exit 1), a bad name from the operator (unknown topic, active group)
becomes a UsageError subclass (exit 2). Verified on the local Kafka 4.1 broker: `describe_consumer_groups`
reports STABLE with its members while a consumer is subscribed and EMPTY (no members) after it closed,
DEAD for a group that never existed; `alter_consumer_group_offsets` on an active group does not raise but
returns UNKNOWN_MEMBER_ID on each partition, so both are checked.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Final

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # OffsetSpec is re-exported without __all__
    AdminClient,
    OffsetSpec,
)

from stream.avro.decode import DecodeError, Decoder
from stream.errors import CapiStreamError, UsageError
from stream.logs import kafka_config
from stream.tools.dlq import RawMessage
from stream.tools.replay import LogBounds, Sample, SampleSet

# A local or same-region broker answers admin requests in milliseconds; 15 s covers a slow controller
# without leaving an operator staring at a hung command.
TIMEOUT_S: Final = 15.0
# A coordinator that is loading its groups (after a restart) answers again within a second or two
COORDINATOR_RETRY_S: Final = 0.5
_COORDINATOR_BUSY = frozenset({KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                               KafkaError.NOT_COORDINATOR})
# A whole read (one sample run, or one topic for `dlq show`) gives up after this long without progress.
IDLE_READ_S: Final = 10.0
# Messages per consume() call: amortises the call, bounded memory.
READ_BATCH: Final = 500
# Group states in which nobody consumes, so offsets may be moved (any other state has or gains members).
INACTIVE_STATES: Final = frozenset({ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD})
# librdkafka settings of a `[kafka.consumer]` table that every client needs too (TLS, SASL, client id).
SHARED_PREFIXES: Final = ("security.", "sasl.", "ssl.", "client.", "socket.", "broker.", "api.version")
# An offset of "none" in librdkafka: the group has no committed offset for the partition.
_NO_OFFSET = 0


class AdminError(CapiStreamError):
    """The broker did not answer or refused a request for a reason outside the operator's input."""

    retriable = True


class UnknownTopicError(UsageError):
    """The topic does not exist on the broker."""


class GroupActiveError(UsageError):
    """The consumer group has active members; offsets can only move while it is empty."""


def client_config(bootstrap: str, passthrough: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings for a tool client: the bootstrap plus the shared security/client settings."""
    conf = {k: v for k, v in (passthrough or {}).items() if k.startswith(SHARED_PREFIXES)}
    return {**conf, "bootstrap.servers": bootstrap}


def _wait(future: Any, what: str) -> Any:
    try:
        return future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError._TIMED_OUT:
            # librdkafka's own "Local: Timed out" says nothing of where: say it like a Python timeout
            raise AdminError(f"{what}: no answer from the broker within {TIMEOUT_S:g} s") from exc
        raise AdminError(f"{what}: {error.str() if isinstance(error, KafkaError) else exc}") from exc
    except TimeoutError as exc:
        raise AdminError(f"{what}: no answer from the broker within {TIMEOUT_S:g} s") from exc


@dataclasses.dataclass(frozen=True)
class MemberView:
    """One member of a consumer group, as the coordinator describes it."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class GroupView:
    """A consumer group's state and members."""

    group: str
    state: str
    members: tuple[MemberView, ...]


class Admin:
    """The AdminClient calls replay and the dead-letter tools need."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._conf = dict(conf)
        self._client = AdminClient(kafka_config(self._conf))

    @property
    def conf(self) -> dict[str, Any]:
        """The client settings, for consumers and producers made alongside."""
        return dict(self._conf)

    def partitions(self, topic: str) -> list[int]:
        """The partition ids of `topic`. UnknownTopicError when it does not exist, AdminError when the
        broker does not answer."""
        try:
            # all topics, not just `topic`: a metadata request naming a topic can make a broker with
            # auto.create.topics.enable create it, and a typo must never create a topic
            meta = self._client.list_topics(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise AdminError(f"cannot read metadata of {topic} from {self._conf['bootstrap.servers']}: "
                             f"{exc.args[0].str() if exc.args else exc}") from exc
        info = meta.topics.get(topic)
        if info is None or (info.error is not None and info.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise UnknownTopicError(f"topic {topic} does not exist on {self._conf['bootstrap.servers']}")
        if info.error is not None:
            raise AdminError(f"metadata of {topic}: {info.error.str()}")
        return sorted(info.partitions)

    def _list_offsets(self, topic: str, specs: Mapping[int, Any]) -> dict[int, int]:
        if not specs:
            return {}
        futures = self._client.list_offsets({TopicPartition(topic, p): spec for p, spec in specs.items()},
                                            request_timeout=TIMEOUT_S)
        return {tp.partition: int(_wait(f, f"list offsets of {topic}").offset) for tp, f in futures.items()}

    def watermarks(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Per partition (first offset in the log, log end offset)."""
        earliest, latest = OffsetSpec.earliest(), OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped
        low = self._list_offsets(topic, dict.fromkeys(partitions, earliest))
        high = self._list_offsets(topic, dict.fromkeys(partitions, latest))
        return {p: (low[p], high[p]) for p in partitions}

    def offsets_for_time(self, topic: str, partitions: Sequence[int], timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after `timestamp_ms` (-1: none)."""
        return self._list_offsets(topic, {p: OffsetSpec.for_timestamp(timestamp_ms) for p in partitions})

    def committed(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """The group's committed offsets (the next to read); None where it has none.

        A coordinator still loading its groups (just after a broker restart) is asked again until
        TIMEOUT_S has passed, then AdminError.
        """
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            futures = self._client.list_consumer_group_offsets([request], request_timeout=TIMEOUT_S)
            try:
                answer = futures[group].result(timeout=max(0.1, deadline - time.monotonic()))
                break
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if time.monotonic() < deadline and isinstance(err, KafkaError) and (
                        err.retriable() or err.code() in _COORDINATOR_BUSY):
                    time.sleep(COORDINATOR_RETRY_S)
                    continue
                raise AdminError(f"committed offsets of group {group}: {err.str() if err else exc}") from exc
            except TimeoutError as exc:
                raise AdminError(f"committed offsets of group {group}: no answer from the broker within "
                                 f"{TIMEOUT_S:g} s") from exc
        return {tp.partition: (tp.offset if tp.offset >= _NO_OFFSET else None) for tp in answer.topic_partitions}

    def group_state(self, group: str) -> tuple[str, int]:
        """(state name, number of members) of a consumer group."""
        futures = self._client.describe_consumer_groups([group], request_timeout=TIMEOUT_S)
        desc = _wait(futures[group], f"describe group {group}")
        return desc.state.name, len(desc.members)

    def describe_group(self, group: str) -> GroupView:
        """The group's state and its members with their assigned partitions."""
        futures = self._client.describe_consumer_groups([group], request_timeout=TIMEOUT_S)
        desc = _wait(futures[group], f"describe group {group}")
        members = []
        for m in desc.members:
            parts = m.assignment.topic_partitions if m.assignment is not None else []
            members.append(MemberView(m.member_id, m.client_id, str(m.host).lstrip("/"),
                                      tuple(sorted((tp.topic, tp.partition) for tp in parts))))
        return GroupView(group, desc.state.name, tuple(members))

    def ensure_inactive(self, group: str) -> None:
        """GroupActiveError when the group has members or is rebalancing."""
        state, members = self.group_state(group)
        if members or state not in {s.name for s in INACTIVE_STATES}:
            raise GroupActiveError(f"group {group} is active ({state}, {members} member(s)): stop every "
                                   "consumer of the group, then run the replay again")

    def alter(self, group: str, topic: str, offsets: Mapping[int, int]) -> dict[int, int]:
        """Set the group's committed offsets; returns what the broker stored. GroupActiveError when a
        member joined meanwhile (the broker then refuses every partition)."""
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])
        futures = self._client.alter_consumer_group_offsets([request], request_timeout=TIMEOUT_S)
        answer = _wait(futures[group], f"reset offsets of group {group}")
        errors = [tp for tp in answer.topic_partitions if tp.error is not None]
        if any(tp.error.code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS)
               for tp in errors):
            raise GroupActiveError(f"group {group} became active during the reset; the broker refused it")
        if errors:
            raise AdminError(f"reset offsets of group {group}: " + ", ".join(
                f"partition {tp.partition}: {tp.error.str()}" for tp in errors))
        return {tp.partition: tp.offset for tp in answer.topic_partitions}

    def truncate(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Delete every record of `partitions` of `topic` (up to each log end); the new log starts, per
        partition. A topic that does not exist holds nothing to delete: {}."""
        try:
            parts = self.partitions(topic)
        except UnknownTopicError:
            return {}
        wanted = [p for p in partitions if p in parts]
        marks = self.watermarks(topic, wanted)
        request = [TopicPartition(topic, p, high) for p, (low, high) in marks.items() if high > low]
        if not request:
            return {}
        futures = self._client.delete_records(request, request_timeout=TIMEOUT_S, operation_timeout=TIMEOUT_S)
        return {tp.partition: int(_wait(f, f"delete records of {topic}").low_watermark) for tp, f in futures.items()}

    def partition_offsets(self, group: str, topic: str) -> list[LogBounds]:
        """Log bounds and committed offsets of every partition of `topic` for `group`."""
        parts = self.partitions(topic)
        marks = self.watermarks(topic, parts)
        committed = self.committed(group, topic, parts)
        return [LogBounds(p, marks[p][0], marks[p][1], committed.get(p)) for p in parts]


def _reader(conf: Mapping[str, Any]) -> Any:
    # a throwaway group that never commits: reading must not touch any real group's offsets
    return Consumer(kafka_config({
        **conf, "group.id": f"capi-stream-tool-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
        "enable.auto.offset.store": False, "enable.partition.eof": True, "auto.offset.reset": "earliest",
        # short fetch waits: a tool reads bounded ranges and should not idle at their ends
        "fetch.wait.max.ms": 50,
    }))


def _timestamp(message: Any) -> int | None:
    kind, ms = message.timestamp()
    return None if kind == 0 else int(ms)  # 0: TIMESTAMP_NOT_AVAILABLE


def read_range(consumer: Any, topic: str, partition: int, start: int, end: int) -> tuple[list[Any], bool]:
    """Messages with offsets in [start, end) of one partition, and whether the read reached `end`."""
    consumer.assign([TopicPartition(topic, partition, start)])
    got: list[Any] = []
    last_progress = time.monotonic()
    position = start
    try:
        while time.monotonic() - last_progress < IDLE_READ_S:
            # consume() waits until it has this many messages or the timeout passes: ask for no more
            # than the range still holds, so the last batch of a run returns as soon as it arrived
            batch = consumer.consume(max(1, min(READ_BATCH, end - position)), timeout=0.5)
            for message in batch:
                err = message.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return got, True
                    raise AdminError(f"read {topic}[{partition}]: {err.str()}")
                if message.offset() >= end:
                    return got, True
                got.append(message)
                position = message.offset() + 1
                if message.offset() == end - 1:
                    return got, True
            if batch:
                last_progress = time.monotonic()
        return got, False
    finally:
        consumer.unassign()


def read_samples(conf: Mapping[str, Any], topic: str, ranges: Mapping[int, Sequence[tuple[int, int]]],
                 event_time: Callable[[bytes | None], int | None]) -> dict[int, SampleSet]:
    """Read each partition's sample ranges and note every message's timestamp and event_time."""
    if not ranges:
        return {}
    consumer = _reader(conf)
    out: dict[int, SampleSet] = {}
    try:
        for partition, runs in ranges.items():
            samples: list[Sample] = []
            complete = len(runs) == 1
            for start, end in runs:
                messages, reached = read_range(consumer, topic, partition, start, end)
                complete = complete and reached
                samples += [Sample(m.offset(), _timestamp(m), event_time(m.value())) for m in messages]
            out[partition] = SampleSet(tuple(samples), complete)
    finally:
        consumer.close()
    return out


def event_time_reader(decoder: Decoder,
                      lookup: Callable[[int], Any] | None = None) -> Callable[[bytes | None], int | None]:
    """A function from a message value to its event_time (None when it does not decode).

    With the Confluent wire format `lookup` fetches writer schemas by id (stream.avro.registry).
    """

    def event_time(value: bytes | None) -> int | None:
        if value and lookup is not None:
            for schema_id in decoder.missing_schema_ids([value]):
                decoder.add_writer_schema(schema_id, lookup(schema_id))
        try:
            record = decoder.decode(value)
        except DecodeError:
            return None
        when = record.get("event_time")
        return when if isinstance(when, int) and not isinstance(when, bool) else None

    return event_time


def iter_topic(conf: Mapping[str, Any], topic: str, partitions: Sequence[int],
               marks: Mapping[int, tuple[int, int]]) -> Generator[RawMessage, None, None]:
    """Every message of `topic` up to the log ends in `marks` (taken before the read), partition by
    partition, in offset order. Messages written during the read are not included."""
    consumer = _reader(conf)
    try:
        for partition in partitions:
            low, high = marks[partition]
            if high <= low:
                continue
            start = low
            while start < high:
                messages, reached = read_range(consumer, topic, partition, start, high)
                for m in messages:
                    yield RawMessage(m.partition(), m.offset(), m.key(), m.value(), m.headers() or [],
                                     _timestamp(m))
                if reached:
                    break
                if not messages:
                    raise AdminError(f"read {topic}[{partition}]: no progress at offset {start} "
                                     f"within {IDLE_READ_S:g} s")
                start = messages[-1].offset() + 1
    finally:
        consumer.close()


class Copier:
    """Produce messages unchanged (key, value, headers) to one topic; `close` waits for every ack."""

    def __init__(self, conf: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        # acks=all and idempotence: a redriven letter must land once and must not be lost
        self._producer = Producer(kafka_config({**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 20}))
        self.failures: list[str] = []
        self.sent = 0

    def _delivered(self, err: KafkaError | None, _message: Any) -> None:
        if err is not None:
            self.failures.append(err.str())
        else:
            self.sent += 1

    def send(self, message: RawMessage) -> None:
        """Queue one copy; waits for room when librdkafka's queue is full."""
        while True:
            try:
                self._producer.produce(self.topic, key=message.key, value=message.value,
                                       headers=list(message.headers), on_delivery=self._delivered)
            except BufferError:
                self._producer.poll(0.1)
            else:
                self._producer.poll(0)  # serve delivery reports as we go
                return

    def close(self) -> None:
        """Wait for every delivery report; AdminError when some copies were not acknowledged."""
        left = self._producer.flush(TIMEOUT_S * 2)
        if left or self.failures:
            raise AdminError(f"{left + len(self.failures)} cop(ies) to {self.topic} not acknowledged"
                             + (f": {self.failures[0]}" if self.failures else ""))


def end_offsets(bootstrap: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The log end offset of each partition (what a fully committed group has committed)."""
    marks = Admin(client_config(bootstrap)).watermarks(topic, partitions)
    return {p: high for p, (_low, high) in marks.items()}


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The group's committed offset of each partition; -1 where it has committed nothing."""
    committed = Admin(client_config(bootstrap)).committed(group, topic, partitions)
    return {p: (-1 if committed.get(p) is None else int(committed[p] or 0)) for p in partitions}
