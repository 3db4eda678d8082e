"""`capi-stream demo`: the whole job on an embedded default, in one command.

Starts the local Kafka broker and the CAPI emulator, creates a topic, produces a few thousand realistic
events (with duplicates, a stale one, an invalid Purchase, an unknown app and a malformed message), runs
the pipeline until every offset is committed, prints a summary, and stops what it started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import Producer

from stream import config as config_mod
from stream.avro.schema import load_schema
from stream.emulator import EmulatorThread
from stream.logs import configure, kafka_config
from stream.pipeline.runner import Pipeline
from stream.tools.admin import committed_offsets, end_offsets
from stream.tools.javaservice import free_port
from stream.tools.kafka import LocalKafka, default_data_dir
from stream.tools.produce import ensure_topic, produce_lines
from stream.tools.samples import generate

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
TOKEN_ENV = "CAPI_STREAM_DEMO_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEMO_TOKEN = "demo-token-" + "x" * 16
PARTITIONS = 4
TIMEOUT_S = 180.0


@dataclasses.dataclass
class DemoResult:
    """What the demo produced and what the pipeline did with it."""

    produced: int
    committed: dict[tuple[str, int], int]
    end_offsets: dict[tuple[str, int], int]
    pipeline: Pipeline
    seconds: float
    emulator_stats: dict[str, Any]

    @property
    def complete(self) -> bool:
        return self.committed == self.end_offsets


def _demo_settings(bootstrap: str, emulator_url: str, topic: str) -> config_mod.Settings:
    base = config_mod.load(DEMO_CONFIG, env={})
    dests = tuple(dataclasses.replace(d, base_url=emulator_url) for d in base.destinations)
    kafka = dataclasses.replace(base.kafka, bootstrap_servers=bootstrap, topics=(topic,),
                                group_id=f"capi-stream-demo-{uuid.uuid4().hex[:8]}", dlq_topic=f"{topic}.dlq")
    return dataclasses.replace(base, kafka=kafka, destinations=dests)


def _records(n: int, now: int, app_ids: tuple[str, ...]) -> list[bytes]:
    import orjson

    lines = [orjson.dumps(r) for r in generate(n, seed=2026, now=now, app_ids=app_ids, duplicate_rate=0.03,
                                               stale_events=1, invalid_purchases=1)]
    unknown = orjson.loads(lines[0])
    unknown.update(app_id="com.example.unrouted", event_id="unrouted-1")
    lines.append(orjson.dumps(unknown))
    return lines


async def _run_pipeline(settings: config_mod.Settings, end: dict[tuple[str, int], int], out: TextIO) -> Pipeline:
    pipeline = Pipeline(settings)
    await pipeline.start()
    deadline = time.monotonic() + TIMEOUT_S
    total = sum(end.values())
    tty = out.isatty()
    last_line = 0.0
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            # the demo's own topic only: the tracker also holds the destinations' parking partitions
            points = {(p.topic, p.partition): p.commit_point for p in pipeline.tracker.partitions()
                      if (p.topic, p.partition) in end}
            done = sum(v or 0 for v in points.values())
            s = pipeline.stats
            line = (f"  consumed {s.consumed:>6}/{total}  acked {s.events_acked:>6}  "
                    f"dead-lettered {sum(s.dead_lettered.values()):>3}  committed {done:>6}/{total}")
            finished = points == end and pipeline.unfinished == 0
            if tty:
                out.write("\r" + line)
            elif finished or time.monotonic() - last_line >= 2.0:
                out.write(line + "\n")
                last_line = time.monotonic()
            out.flush()
            if finished:
                break
        if tty:
            out.write("\n")
    finally:
        await pipeline.drain()
    return pipeline


def run_demo(events: int, out: TextIO = sys.stdout, data_dir: Path | None = None,
             log_level: str | None = None, log_format: str | None = None) -> DemoResult:
    """Run the demo end to end and return what happened (raises CapiStreamError on trouble)."""
    configure(level=log_level or "warning", fmt=log_format or ("console" if out.isatty() else "json"),
              stream=sys.stderr)
    broker = LocalKafka(data_dir=data_dir or default_data_dir().parent / "demo-kafka")
    status = broker.status()
    started_broker = not status.running
    out.write("starting local Kafka (the first run fetches the broker jars with Maven)...\n")
    out.flush()
    bootstrap, _ = broker.start(port=None if status.running else free_port())
    os.environ[TOKEN_ENV] = DEMO_TOKEN
    try:
        with EmulatorThread() as emulator:
            topic = f"demo.conversions.{uuid.uuid4().hex[:8]}"
            settings = _demo_settings(bootstrap, emulator.url, topic)
            out.write(f"kafka {bootstrap}, emulator {emulator.url}, topic {topic}\n")
            ensure_topic(bootstrap, topic, PARTITIONS)
            ensure_topic(bootstrap, settings.kafka.dlq_topic, 1)
            app_ids = tuple(a for d in settings.destinations for a in d.app_ids)
            lines = _records(events, int(time.time()), app_ids)
            report = produce_lines((line.decode() for line in lines), topic=topic, bootstrap=bootstrap,
                                   schema=load_schema())
            producer = Producer(kafka_config({"bootstrap.servers": bootstrap}))
            producer.produce(topic, value=b"\x00\xffnot avro at all", key=b"malformed-1")
            producer.flush(10)
            del producer  # close it now: it must not outlive the broker it talks to
            produced = report.produced + 1
            out.write(f"produced {produced} events ({len(report.skipped)} lines skipped)\n")
            end = {(topic, p): o for p, o in end_offsets(bootstrap, topic, range(PARTITIONS)).items()}
            started = time.monotonic()
            pipeline = asyncio.run(_run_pipeline(settings, end, out))
            seconds = time.monotonic() - started
            committed = {(topic, p): o for p, o in
                         committed_offsets(bootstrap, settings.kafka.group_id, topic, range(PARTITIONS)).items()}
            return DemoResult(produced, committed, end, pipeline, seconds, emulator.stats())
    finally:
        if started_broker:
            broker.stop()


def summary(result: DemoResult) -> str:
    """The demo's summary table."""
    s = result.pipeline.stats
    p50, p99 = s.percentile(50), s.percentile(99)
    rows: list[tuple[str, str]] = [
        ("events produced", str(result.produced)),
        ("consumed", str(s.consumed)),
        ("sent to Meta (emulator)", str(s.events_sent)),
        ("acknowledged", str(s.events_acked)),
        ("duplicates dropped", str(s.duplicates)),
        ("dropped, no consent", str(s.no_consent)),
        *[(f"dead-lettered: {reason}", str(n)) for reason, n in sorted(s.dead_lettered.items())],
        ("batches acknowledged", str(s.batches_acked)),
        ("retries", str(sum(s.retries.values()))),
        ("events/s (consumed)", f"{s.consumed / result.seconds:,.0f}" if result.seconds else "-"),
        ("latency append->ack p50", f"{p50:,.0f} ms" if p50 is not None else "-"),
        ("latency append->ack p99", f"{p99:,.0f} ms" if p99 is not None else "-"),
        ("emulator: events accepted", str(result.emulator_stats.get("events_received", "?"))),
        ("offsets committed", "all, at the end offsets" if result.complete else
         f"INCOMPLETE {result.committed} != {result.end_offsets}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def main(events: int) -> int:
    """CLI entry: run, print the summary, exit 0 only when every offset was committed."""
    result = run_demo(events)
    print("\nsummary")
    print(summary(result))
    from stream.pipeline.quality import destination_rows, rows, table

    quality = result.pipeline.quality
    print("\nsignal quality (per destination and event)")
    print(table(rows(quality), quality.targets, destination_rows(quality)))
    return 0 if result.complete else 1
