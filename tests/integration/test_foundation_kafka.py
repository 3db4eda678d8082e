"""The local broker and `capi-stream produce` against a real Kafka broker over sockets."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fastavro
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from stream.avro.schema import load_schema
from stream.tools.kafka import LocalKafka, free_port

pytestmark = pytest.mark.kafka

CLI = [sys.executable, "-m", "stream"]


def _record(i: int, now: int) -> dict[str, object]:
    return {
        "event_name": "Purchase", "event_time": now, "event_id": f"ev-{i}", "app_id": "app.demo",
        "user_data": {"em": f"user{i}@example.com"},
        "custom_data": {"value": float(i), "currency": "USD"},
    }  # fmt: skip


def _consume(bootstrap: str, group: str, topic: str, want: int, timeout: float = 30.0) -> list:  # type: ignore[type-arg]
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for msg in consumer.consume(100, timeout=0.5):
            assert msg.error() is None, msg.error()
            got.append(msg)
    return [consumer, got]


def test_produce_consume_commit_and_resume(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str], tmp_path: Path
) -> None:
    """Records produced by the CLI decode with the schema, and a new group member resumes after the commit."""
    topic = topic_factory(partitions=3)
    group = group_factory()
    now = int(time.time())
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(b"\n".join(orjson.dumps(_record(i, now)) for i in range(30)) + b"\n")
    proc = subprocess.run([*CLI, "produce", "--topic", topic, "--bootstrap", kafka_bootstrap, str(lines)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "produced 30 records" in proc.stdout

    schema = load_schema()
    consumer, first = _consume(kafka_bootstrap, group, topic, want=30)
    assert len(first) == 30
    decoded = {fastavro.schemaless_reader(io.BytesIO(m.value()), schema, None)["event_id"] for m in first}
    assert decoded == {f"ev-{i}" for i in range(30)}
    assert all(m.key() == fastavro.schemaless_reader(io.BytesIO(m.value()), schema, None)["event_id"].encode()
               for m in first)

    # commit a point in the middle of each partition: the next member must start exactly there
    by_partition: dict[int, list[int]] = {}
    for m in first:
        by_partition.setdefault(m.partition(), []).append(m.offset())
    commit_at = {p: sorted(offs)[len(offs) // 2] for p, offs in by_partition.items()}
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in commit_at.items()], asynchronous=False)
    consumer.close()

    want_rest = sum(len([o for o in offs if o >= commit_at[p]]) for p, offs in by_partition.items())
    consumer2, rest = _consume(kafka_bootstrap, group, topic, want=want_rest)
    consumer2.close()
    assert len(rest) == want_rest
    for p in by_partition:
        offsets = sorted(m.offset() for m in rest if m.partition() == p)
        assert offsets[0] == commit_at[p], f"partition {p} resumed at {offsets[0]}, committed {commit_at[p]}"
        assert offsets == sorted(o for o in by_partition[p] if o >= commit_at[p])


def test_produce_reports_malformed_lines_with_their_number(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """A line that is not JSON (or not UTF-8), does not fit the schema or is larger than the producer may
    send is skipped, named by line number, and exit is 1; the lines around it are delivered (an oversized
    line aborted the whole run with 'Unable to produce message', and the lines queued before it were never
    delivered; a line that is not UTF-8 ended it with a traceback)."""
    topic = topic_factory(partitions=1)
    now = int(time.time())
    lines = tmp_path / "mixed.jsonl"
    lines.write_text("\n".join([
        orjson.dumps(_record(1, now)).decode(),
        "{not json",
        orjson.dumps({**_record(3, now), "event_time": "yesterday"}).decode(),
        orjson.dumps(_record(4, now)).decode(),
        orjson.dumps({**_record(5, now), "event_source_url": "https://x.example/" + "a" * 1_100_000}).decode(),
        orjson.dumps(_record(6, now)).decode(),
    ]) + "\n")  # fmt: skip
    with lines.open("ab") as f:  # and a line that is not UTF-8 (it ended the run with a traceback)
        f.write(b'{"event_name": "Purchase\xff"}\n')
    proc = subprocess.run([*CLI, "produce", "--topic", topic, "--bootstrap", kafka_bootstrap, str(lines)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    events = [orjson.loads(line) for line in proc.stderr.splitlines()]
    skipped = {e["line"]: e["reason"] for e in events if e["event"] == "line_skipped"}
    assert sorted(skipped) == [2, 3, 5, 7], proc.stderr[-2000:]
    assert skipped[2].startswith("not JSON")
    assert skipped[3].startswith("event_time")
    assert "too large" in skipped[5]
    assert skipped[7].startswith("not JSON")
    assert all(e["level"] == "warning" for e in events if e["event"] == "line_skipped")
    assert "produced 3 records" in proc.stdout
    consumer, got = _consume(kafka_bootstrap, "g-malformed-" + topic, topic, want=3, timeout=15)
    consumer.close()
    assert sorted(m.offset() for m in got) == [0, 1, 2]


def test_confluent_wire_format_has_magic_byte_and_schema_id(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """--wire-format confluent frames each value as 0x00, the 4-byte schema id, then the Avro body."""
    topic = topic_factory(partitions=1)
    lines = tmp_path / "one.jsonl"
    lines.write_bytes(orjson.dumps(_record(7, int(time.time()))) + b"\n")
    proc = subprocess.run([*CLI, "produce", "--topic", topic, "--bootstrap", kafka_bootstrap,
                           "--wire-format", "confluent", "--schema-id", "42", str(lines)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    consumer, got = _consume(kafka_bootstrap, "g-wire-" + topic, topic, want=1, timeout=15)
    consumer.close()
    value = got[0].value()
    assert value[:5] == b"\x00\x00\x00\x00\x2a"
    assert fastavro.schemaless_reader(io.BytesIO(value[5:]), load_schema(), None)["event_id"] == "ev-7"


@pytest.mark.slow
def test_kafka_up_twice_is_harmless_and_down_leaves_no_java(tmp_path: Path, kafka_bootstrap: str) -> None:
    """`kafka up` on a running broker exits 0 and says so; `down` stops it and no java process is left."""
    home = tmp_path / "broker"
    port = str(free_port())
    base = [*CLI, "kafka"]
    up = subprocess.run([*base, "up", "--data-dir", str(home), "--port", port],
                        capture_output=True, text=True, timeout=180, check=False)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"127.0.0.1:{port}"
    pid = LocalKafka(data_dir=home).pid()
    assert pid is not None
    again = subprocess.run([*base, "up", "--data-dir", str(home)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0
    assert "already running" in again.stderr
    assert LocalKafka(data_dir=home).pid() == pid
    status = subprocess.run([*base, "status", "--data-dir", str(home)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert status.returncode == 0
    assert f"127.0.0.1:{port}" in status.stdout
    down = subprocess.run([*base, "down", "--data-dir", str(home)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert down.returncode == 0
    assert not Path(f"/proc/{pid}").exists() or b"kafka.Kafka" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert not [line for line in ps.stdout.splitlines() if str(home) in line and "java" in line]
    after = subprocess.run([*base, "status", "--data-dir", str(home)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert after.returncode == 1
    assert "not running" in after.stdout
    assert os.environ.get("CAPI_STREAM_BOOTSTRAP") != f"127.0.0.1:{port}"
