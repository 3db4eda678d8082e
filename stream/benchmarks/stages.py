"""`capi-stream bench stages`: CPU µs per event of each stage of preparation, A/B in one process.

The same records as `bench e2e` (sample events, 1% duplicates, consent given), Avro-encoded, go through
the stages as `stream.pipeline.prepare` runs them (batches of 1,000, collector paused within a batch):

- decode with fastavro alone (the reader before #15) and with the generated reader in front (now);
- normalize (route + `normalize_event`) on the decoded records;
- prepare: decode, route, normalize, serialize and the outcome tuple, as the pipeline calls it, once
  with each decoder.

Contenders run in alternating rounds in this one process, so the machine's busy spells hit them alike;
each figure is the median of the rounds with the range. CPU time of this process, not wall time.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from stream.avro.decode import Decoder
from stream.avro.schema import load_schema
from stream.avro.wire import WireFormat, encode
from stream.contract.normalize import NormalizeSettings, normalize_event
from stream.errors import UsageError
from stream.pipeline.prepare import PrepareContext, Preparer
from stream.tools.samples import generate

APPS = ("com.example.shop", "com.example.game", "com.example.fitness")
BATCH = 1_000


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
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for work in contenders.values():  # warm the caches once, untimed
        work()
    for _ in range(args.rounds):
        for name, work in contenders.items():
            samples[name].append(_cpu(work) / len(values) * 1e6)
    result = {name: {"median_us": statistics.median(s), "min_us": min(s), "max_us": max(s)}
              for name, s in samples.items()}
    print(f"{args.events} events, {args.rounds} rounds interleaved; CPU µs per event, median (range)")
    for name, figures in result.items():
        print(f"  {name:40s} {figures['median_us']:7.1f}  ({figures['min_us']:.1f}-{figures['max_us']:.1f})")
    print(orjson.dumps({"events": args.events, "rounds": args.rounds, "stages": result}).decode())
    return 0
