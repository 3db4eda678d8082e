"""`capi-stream bench stages`: CPU µs per event of each stage of preparation, A/B in one process.

The same records as `bench e2e` (sample events, 1% duplicates, consent given), Avro-encoded, go through
the stages as `stream.pipeline.prepare` runs them (batches of 1,000, collector paused within a batch):

- decode with fastavro alone (the reader before #15) and with the generated reader in front (now);
- normalize (route + `normalize_event`) on the decoded records;
- prepare: decode, route, normalize, serialize and the outcome tuple, as the pipeline calls it, once
  with each decoder;
- the runner's work on the event loop after preparation, through a real Pipeline whose source and senders
  are stand-ins that only collect (no broker, no HTTP; the dedupe changelog off): apply (`_handle`: offsets,
  signal quality, dedupe, batching) and ack (each closed batch's request body and `_acked`: dedupe confirm,
  latency and quality figures, offsets finished).

Contenders run in alternating rounds in this one process, so the machine's busy spells hit them alike;
each figure is the median of the rounds with the range. CPU time of this process, not wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Message

from stream.avro.decode import Decoder
from stream.avro.schema import load_schema
from stream.avro.wire import WireFormat, encode
from stream.config import Settings, load
from stream.contract.normalize import NormalizeSettings, normalize_event
from stream.errors import UsageError
from stream.pipeline.batch import Batch
from stream.pipeline.prepare import PrepareContext, Prepared, Preparer
from stream.pipeline.runner import Pipeline
from stream.tools.samples import generate

APPS = ("com.example.shop", "com.example.game", "com.example.fitness")
BATCH = 1_000
PARTITIONS = 8
TOPIC = "events"
TOKEN_ENV = "CAPI_STREAM_BENCH_TOKEN"  # noqa: S105 - the name of a variable, read from the mapping below
RUNNER_TOML = f"""
[kafka]
bootstrap_servers = "127.0.0.1:1"
topics = ["{TOPIC}"]
[dedupe]
changelog = false
[destinations.main]
dataset_id = "1111111111"
app_ids = [{", ".join(f'"{a}"' for a in APPS)}]
token_env = "{TOKEN_ENV}"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bench stages`."""
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)


def _batched(work: Callable[[Any], Any], items: Sequence[Any]) -> Callable[[], list[Any]]:
    def run() -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(items), BATCH):
            gc.disable()
            try:
                out.extend([work(x) for x in items[start:start + BATCH]])
            finally:
                gc.enable()
        return out

    return run


def _cpu(work: Callable[[], Any]) -> float:
    gc.collect()
    start = time.process_time()
    work()
    return time.process_time() - start


class _Collector:
    """Stands in for the source and the senders: keeps the closed batches, stores nothing."""

    want_paused = False
    want_paused_partitions: frozenset[tuple[str, int]] = frozenset()

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def submit(self, batch: Batch, front: bool = False) -> None:
        self.batches.append(batch)

    def has_free_slot(self) -> bool:
        return False

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        pass

    def taken(self, count: int) -> None:
        pass


class _Runner:
    """A fresh Pipeline per round, fed the prepared batches; apply() then ack() are timed apart."""

    def __init__(self, settings: Settings, messages: list[Message], prepared: list[list[Prepared]]) -> None:
        self.settings, self.messages, self.prepared = settings, messages, prepared
        self.pipeline: Pipeline | None = None
        self.collector = _Collector()

    def fresh(self) -> None:
        self.collector = _Collector()
        pipeline = Pipeline(self.settings)
        pipeline.source = self.collector  # type: ignore[assignment]  # stand-ins: see _Collector
        pipeline.senders = dict.fromkeys(pipeline.senders, self.collector)  # type: ignore[arg-type]
        asyncio.run(pipeline.on_assigned([(TOPIC, p) for p in range(PARTITIONS)], 1))
        self.pipeline = pipeline

    def apply(self) -> None:
        assert self.pipeline is not None
        handed = time.time()
        for index, prepared in enumerate(self.prepared):
            self.pipeline._handle(self.messages[index * BATCH:(index + 1) * BATCH], 1, prepared, handed)

    def check(self) -> None:
        """The last round's pipeline took every event and finished it (acked, or dropped as a duplicate)."""
        assert self.pipeline is not None
        stats = self.pipeline.stats
        if stats.consumed != len(self.messages) or self.pipeline.unfinished or not stats.events_acked:
            raise RuntimeError(f"the runner stage consumed {stats.consumed} of {len(self.messages)} events, "
                               f"acked {stats.events_acked}, left {self.pipeline.unfinished} unfinished")

    def ack(self) -> None:
        assert self.pipeline is not None
        for batch in [*self.collector.batches, *self.pipeline.batcher.flush()]:
            batch.sent_at = batch.closed_at or batch.opened_at
            batch.body("token")
            self.pipeline._acked(batch)


def _runner(values: list[bytes], preparer: Preparer, now: int) -> _Runner:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "capi.toml"
        path.write_text(RUNNER_TOML)
        settings = load(path, env={TOKEN_ENV: "bench"})
    append_ms = int(time.time() * 1000)
    messages = [Message(topic=TOPIC, partition=i % PARTITIONS, offset=i // PARTITIONS, key=b"%d" % i, value=v,
                        timestamp=(1, append_ms)) for i, v in enumerate(values)]
    prepared = [preparer.prepare(values[i:i + BATCH], now) for i in range(0, len(values), BATCH)]
    return _Runner(settings, messages, prepared)


def _cpu_paused(work: Callable[[], Any]) -> float:
    """CPU of `work` with the cyclic collector paused for the whole pass (the runner's stages allocate no
    cycles; a collection would time this process's heap, not the stage)."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        work()
        return time.process_time() - start
    finally:
        gc.enable()


def run(args: argparse.Namespace) -> int:
    """Time every stage, contenders interleaved; print a table and a JSON line."""
    if args.events < 1 or args.rounds < 1:
        raise UsageError("--events and --rounds must be at least 1")
    schema = load_schema()
    now = int(time.time())
    records = list(generate(args.events, seed=args.seed, now=now, app_ids=APPS, duplicate_rate=0.01))
    for record in records:
        record["consent"] = True
    values = [encode(r, schema) for r in records]
    settings = NormalizeSettings(default_country=None, require_consent=False, hash_external_id=True)
    ctx = PrepareContext(schema_path=None, wire_format=WireFormat.SCHEMALESS.value,
                         routes=dict.fromkeys(APPS, ("main", settings)))
    generated = Preparer(ctx)
    fastavro_only = Preparer(ctx)
    fastavro_only.decoder = Decoder(schema, WireFormat.SCHEMALESS, generated=False)
    decoded = [generated.decoder.decode(v) for v in values]

    def normalize(record: dict[str, Any]) -> Any:
        return normalize_event(record, now, settings)

    contenders: dict[str, Callable[[], Any]] = {
        "decode: fastavro": _batched(fastavro_only.decoder.decode, values),
        "decode: generated reader": _batched(generated.decoder.decode, values),
        "normalize": _batched(normalize, decoded),
        "serialize (orjson.dumps of the event)": _batched(orjson.dumps, [o.event for o in
                                                                         map(normalize, decoded) if o.event]),
        "prepare, fastavro": lambda: [fastavro_only.prepare(values[i:i + BATCH], now)
                                      for i in range(0, len(values), BATCH)],
        "prepare, generated reader": lambda: [generated.prepare(values[i:i + BATCH], now)
                                              for i in range(0, len(values), BATCH)],
    }
    runner = _runner(values, generated, now)
    staged = {"runner: apply (_handle)": runner.apply, "runner: ack (request body, _acked)": runner.ack}
    samples: dict[str, list[float]] = {name: [] for name in (*contenders, *staged)}
    for work in contenders.values():  # warm the caches once, untimed
        work()
    for round_ in range(args.rounds + 1):
        for name, work in contenders.items():
            if round_:
                samples[name].append(_cpu(work) / len(values) * 1e6)
        runner.fresh()  # apply needs a fresh pipeline (else every event is a duplicate), ack the applied one
        for name, work in staged.items():
            cpu = _cpu_paused(work)
            if round_:  # the first round warms the caches
                samples[name].append(cpu / len(values) * 1e6)
    runner.check()
    result = {name: {"median_us": statistics.median(s), "min_us": min(s), "max_us": max(s)}
              for name, s in samples.items()}
    print(f"{args.events} events, {args.rounds} rounds interleaved; CPU µs per event, median (range)")
    for name, figures in result.items():
        print(f"  {name:40s} {figures['median_us']:7.1f}  ({figures['min_us']:.1f}-{figures['max_us']:.1f})")
    print(orjson.dumps({"events": args.events, "rounds": args.rounds, "stages": result}).decode())
    return 0
