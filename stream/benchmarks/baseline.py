"""The consumer a user would write around Meta's SDK: the baseline of `capi-stream bench e2e --baseline`.

poll -> decode (fastavro) -> the SDK's objects and normalize() per event -> batches of 1,000 POSTed with
`requests` (the SDK's own HTTP library) to the same emulator -> commit after each batch. One thread,
synchronous, as in Meta's examples. Run as `python -m stream.benchmarks.baseline ARGS`; prints one JSON
line with its figures.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import fastavro
import orjson
import requests
from confluent_kafka import Consumer, TopicPartition

from stream.avro.schema import load_schema
from stream.benchmarks.sdk_baseline import sdk_event
from stream.contract.meta import MAX_EVENTS_PER_REQUEST
from stream.logs import kafka_config


def run(bootstrap: str, topic: str, group: str, url: str, token: str, total: int,
        timeout: float) -> dict[str, float]:
    """Consume `total` messages of `topic` and send them; return counts, timings and CPU seconds.

    `cpu_s` is this process's CPU time (every thread, librdkafka's included) from the first message to
    the last commit, measured as the pipeline measures its own.
    """
    schema = load_schema()
    consumer = Consumer(kafka_config({"bootstrap.servers": bootstrap, "group.id": group,
                                      "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([topic])
    session = requests.Session()
    batch: list[dict[str, object]] = []
    consumed = sent = refused = 0
    first = cpu_first = 0.0
    deadline = time.monotonic() + timeout
    last_msgs: dict[tuple[str, int], int] = {}

    def flush() -> None:
        nonlocal sent, refused, batch
        if batch:
            resp = session.post(url, data=orjson.dumps({"data": batch, "access_token": token}),
                                headers={"Content-Type": "application/json"}, timeout=30)
            if resp.ok:
                sent += len(batch)
            else:
                refused += len(batch)  # a naive loop logs and moves on: the batch is lost
            batch = []
        if last_msgs:
            consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last_msgs.items()],
                            asynchronous=False)
            last_msgs.clear()

    while consumed < total and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        if not first:
            first = time.monotonic()
            cpu_first = time.process_time()
        consumed += 1
        last_msgs[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
        try:
            record = fastavro.schemaless_reader(io.BytesIO(msg.value() or b""), schema, None)
        except Exception:  # noqa: BLE001, S112 - a naive loop skips what it cannot read
            continue
        event = sdk_event(record) if isinstance(record, dict) else None
        if event is not None:
            batch.append(event)
        if len(batch) >= MAX_EVENTS_PER_REQUEST:
            flush()
    flush()
    end = time.monotonic()
    cpu = time.process_time() - cpu_first if first else 0.0
    consumer.close()
    return {"consumed": consumed, "sent": sent, "refused": refused, "seconds": end - first if first else 0.0,
            "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    """CLI of the baseline process."""
    parser = argparse.ArgumentParser(prog="baseline")
    for name in ("--bootstrap", "--topic", "--group", "--url", "--token"):
        parser.add_argument(name, required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    result = run(args.bootstrap, args.topic, args.group, args.url, args.token, args.total, args.timeout)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
