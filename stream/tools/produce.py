"""`capi-stream produce`: JSON lines in, Avro records out to a Kafka topic.

The data platform uses it to try the pipeline, the tests and the demo use it to publish events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from stream.avro.wire import WireFormat, encode
from stream.errors import BrokerError, EncodeError
from stream.logs import kafka_config

# Producer settings for a tool that must not lose a line: wait for the leader and retry idempotently.
_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 20,
    "compression.type": "lz4",
}
TOPIC_TIMEOUT_S = 30.0


@dataclasses.dataclass
class ProduceReport:
    """What a produce run did: records delivered and lines skipped with their reason."""

    produced: int = 0
    skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    delivery_errors: list[str] = dataclasses.field(default_factory=list)


def parse_line(line: str, schema: Any, key_field: str | None, wire_format: WireFormat,
               schema_id: int | None) -> tuple[bytes | None, bytes]:
    """Turn one JSON line into (key, Avro value). Raises EncodeError with a reason when it does not fit."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EncodeError(f"not JSON: {exc.msg}") from exc
    if not isinstance(record, Mapping):
        raise EncodeError(f"expected a JSON object, got {type(record).__name__}")
    value = encode(record, schema, wire_format, schema_id)
    key = record.get(key_field) if key_field else None
    return (str(key).encode() if key is not None else None), value


def ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create `topic` with `partitions` partitions unless it exists. Raises BrokerError on failure."""
    admin = AdminClient(kafka_config({"bootstrap.servers": bootstrap}))
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=TOPIC_TIMEOUT_S, request_timeout=TOPIC_TIMEOUT_S)
    try:
        futures[topic].result(timeout=TOPIC_TIMEOUT_S)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        raise BrokerError(f"cannot create topic {topic} at {bootstrap}: {err}") from exc


def produce_lines(
    lines: Iterable[str],
    *,
    topic: str,
    bootstrap: str,
    schema: Any,
    key_field: str | None = "event_id",
    wire_format: WireFormat = WireFormat.SCHEMALESS,
    schema_id: int | None = None,
    partitions: int | None = None,
    producer_config: Mapping[str, Any] | None = None,
    timeout_s: float = TOPIC_TIMEOUT_S,
) -> ProduceReport:
    """Encode every JSON line and publish it; skip (and report) the lines that do not fit the schema.

    Blank lines are ignored. Line numbers in the report start at 1. Returns after every record was
    acknowledged by the broker or failed delivery.
    """
    if partitions:
        ensure_topic(bootstrap, topic, partitions)
    report = ProduceReport()

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            report.delivery_errors.append(str(err))
        else:
            report.produced += 1

    producer = Producer(kafka_config({"bootstrap.servers": bootstrap, **_PRODUCER_DEFAULTS, **(producer_config or {})}))
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            key, value = parse_line(line, schema, key_field, wire_format, schema_id)
        except EncodeError as exc:
            report.skipped.append((lineno, str(exc)))
            continue
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: serve delivery reports, then try again
            except KafkaException as exc:
                # refused before it was sent, a record above the producer's message.max.bytes: this
                # line alone; the lines before it are still delivered by the flush below
                err = exc.args[0] if exc.args else None
                reason = err.str() if isinstance(err, KafkaError) else str(exc)
                report.skipped.append((lineno, f"not produced: {reason} ({len(value):,} bytes)"))
                break
        producer.poll(0)
    remaining = producer.flush(timeout_s)
    if remaining:
        raise BrokerError(f"{remaining} records not delivered to {topic} at {bootstrap} within {timeout_s:g} s "
                          "(is the broker up? see the librdkafka log lines above)")
    return report
