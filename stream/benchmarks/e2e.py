"""`capi-stream bench e2e`: the pipeline draining a topic with commit-after-ack, against the real local
broker and the emulator (in a process of its own), optionally side by side with the SDK baseline.

Figures: events/s (first consume -> last ack, and wall time until every offset is committed), events
per CPU second of each contender (its process from the first message to the last ack; with workers, the
main process and the workers apart), latency from Kafka append to Meta's ack (p50/p99/max) and the part
of it capi-stream adds (append -> ack minus the time its requests waited for Meta's answers) with its
parts for every 8th acked event (stats.PARTS: append->loop, wait+prepare, batch fill, request slot,
retries), peak RSS.
`--latency-ms LO,HI` and `--http-500 P` make the emulator answer like Meta (a few hundred ms per request,
some HTTP 500s) for both contenders. `--rate R` offers a fixed load instead and reports the latency
percentiles at that load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from stream.avro.schema import load_schema
from stream.avro.wire import encode
from stream.emulator.flags import latency_range, probability
from stream.errors import UsageError
from stream.logs import kafka_config
from stream.pipeline.stats import PART_STRIDE
from stream.tools.admin import committed_offsets, end_offsets
from stream.tools.javaservice import free_port, port_in_use
from stream.tools.kafka import LocalKafka, default_data_dir
from stream.tools.produce import ensure_topic
from stream.tools.samples import generate

# the parts of the added latency (stats.PARTS) as the table names them
PART_LABELS = {"kafka": "append->loop", "prepare": "wait+prepare", "batch": "batch fill", "slot": "request slot",
               "retry": "retries"}
TOKEN = "bench-token-0123456789"  # noqa: S105 - the emulator accepts any token
APPS = ("com.example.shop", "com.example.game", "com.example.fitness")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bench e2e`."""
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--instances", type=int, default=1, help="pipeline processes in one group")
    parser.add_argument("--baseline", action="store_true", help="also run the SDK consumer loop on the same data")
    parser.add_argument("--rate", type=float, default=0.0, help="offer this many events/s instead of a backlog")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of offered load with --rate")
    parser.add_argument("--bootstrap", default=None, help="use this broker (default: start a local one)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=0, help="pipeline.workers of each pipeline process")
    parser.add_argument("--linger-ms", type=int, default=None, help="batch.linger_ms (default: the config default)")
    parser.add_argument("--idle-linger-ms", type=int, default=None,
                        help="batch.idle_linger_ms (default: the config default)")
    parser.add_argument("--concurrency", type=int, default=None, help="send.concurrency (default: the config default)")
    parser.add_argument("--latency-ms", type=latency_range, default=None, metavar="LO,HI",
                        help="the emulator holds each request LO..HI ms, like Meta (e.g. 300,700)")
    parser.add_argument("--http-500", type=probability, default=0.0, metavar="P",
                        help="share of requests the emulator answers with HTTP 500 (e.g. 0.01)")


@contextlib.contextmanager
def _broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap or (bootstrap := os.environ.get("CAPI_STREAM_BOOTSTRAP")):
        yield bootstrap
        return
    broker = LocalKafka(data_dir=default_data_dir().parent / "bench-kafka")
    running = broker.status()
    address, started = broker.start(port=None if running.running else free_port())
    try:
        yield address
    finally:
        if started:
            broker.stop()


def emulator_args(latency_ms: list[float] | None, http_500: float, seed: int) -> list[str]:
    """The emulator's fault options for a Meta-like run."""
    out = ["--seed", str(seed)]
    if latency_ms is not None:
        out += ["--latency-ms", f"{latency_ms[0]:g},{latency_ms[1]:g}"]
    if http_500:
        out += ["--http-500", f"{http_500:g}"]
    return out


@contextlib.contextmanager
def _emulator(faults: list[str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream", "emulator", "--port", str(port), *faults],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not port_in_use(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise UsageError("the emulator did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _values(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    schema = load_schema()
    out = []
    for record in generate(n, seed=seed, now=int(time.time()), app_ids=APPS, duplicate_rate=0.01):
        record["consent"] = True
        out.append((record["event_id"].encode(), encode(record, schema)))
    return out


def _produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], rate: float = 0.0) -> None:
    producer = Producer(kafka_config({"bootstrap.servers": bootstrap, "linger.ms": 5 if rate else 50, "acks": "all",
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000}))
    start = time.monotonic()
    for i, (key, value) in enumerate(values):
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        if rate:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
    producer.flush(120)


def _proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a live process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return cpu, int(hwm.split()[1]) / 1024


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (the worker processes of a pipeline)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def _children_cpu(pid: int) -> float:
    """CPU seconds of the live children of `pid` over their lifetimes (start-up included)."""
    total = 0.0
    for child in _children(pid):
        with contextlib.suppress(OSError, StopIteration):
            total += _proc_figures(child)[0]
    return total


def per_cpu_second(events: int, cpu_s: float) -> float:
    """Events per CPU second (0 when nothing was measured)."""
    return events / cpu_s if cpu_s > 0 else 0.0


def _config(tmp: Path, bootstrap: str, topic: str, group: str, url: str, workers: int,
            linger_ms: int | None = None, concurrency: int | None = None, idle_linger_ms: int | None = None) -> Path:
    path = tmp / f"{group}.toml"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
dlq_topic = "{topic}.dlq"
[batch]
{"" if linger_ms is None else f"linger_ms = {linger_ms}"}
{"" if idle_linger_ms is None else f"idle_linger_ms = {idle_linger_ms}"}
[send]
{"" if concurrency is None else f"concurrency = {concurrency}"}
[pipeline]
workers = {workers}
[logging]
level = "warning"
format = "json"
[destinations.main]
dataset_id = "1111111111"
app_ids = {list(APPS)!r}
token_env = "CAPI_STREAM_BENCH_TOKEN"
base_url = "{url}"
""".replace("'", '"'))
    return path


def _run_pipelines(tmp: Path, config: Path, instances: int, bootstrap: str, group: str, topic: str,
                   partitions: int, until: dict[int, int], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "CAPI_STREAM_BENCH_TOKEN": TOKEN}
    procs = []
    started = time.monotonic()
    for i in range(instances):
        penv = {**env, "CAPI_STREAM_STATS_FILE": str(tmp / f"{group}-{i}.json")}
        procs.append(subprocess.Popen([sys.executable, "-m", "stream", "run", "--config", str(config)], env=penv,
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / f"{group}-{i}.log", "wb")))  # noqa: SIM115
    done = False
    figures: list[tuple[float, float]] = []
    worker_cpu = 0.0
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        if committed_offsets(bootstrap, group, topic, range(partitions)) == until:
            done = True
            break
        if any(p.poll() is not None for p in procs):
            break
    wall = time.monotonic() - started
    for p in procs:
        if p.poll() is None:
            figures.append(_proc_figures(p.pid))
            worker_cpu += _children_cpu(p.pid)
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)
    stats = [orjson.loads((tmp / f"{group}-{i}.json").read_bytes()) for i in range(instances)
             if (tmp / f"{group}-{i}.json").exists()]
    first = min((s["first_consumed_at"] for s in stats if s["first_consumed_at"]), default=0.0)
    last = max((s["last_acked_at"] for s in stats), default=0.0)
    consumed = sum(s["consumed"] for s in stats)
    main_cpu = sum(s.get("cpu_s") or 0.0 for s in stats)
    batches = sum(s.get("batches_acked") or 0 for s in stats)
    acked = sum(s["acked"] for s in stats)
    return {
        "complete": done, "wall_s": wall, "consumed": consumed, "acked": sum(s["acked"] for s in stats),
        "span_s": last - first if first else 0.0,
        "events_per_s": consumed / (last - first) if last > first else 0.0,
        "p50_ms": max((s["p50_ms"] or 0) for s in stats) if stats else None,
        "p99_ms": max((s["p99_ms"] or 0) for s in stats) if stats else None,
        "max_ms": max((s["max_ms"] or 0) for s in stats) if stats else None,
        "added_p50_ms": max((s.get("added_p50_ms") or 0) for s in stats) if stats else None,
        "added_p99_ms": max((s.get("added_p99_ms") or 0) for s in stats) if stats else None,
        "added_max_ms": max((s.get("added_max_ms") or 0) for s in stats) if stats else None,
        # the parts of one process's added latency (with several instances they differ per process)
        "added_parts": stats[0].get("added_parts") or {} if len(stats) == 1 else {},
        "cpu_s": sum(f[0] for f in figures), "peak_rss_mib": max((f[1] for f in figures), default=0.0),
        "main_cpu_s": main_cpu, "worker_cpu_s": worker_cpu,
        "events_per_cpu_s": per_cpu_second(consumed, main_cpu + worker_cpu),
        "main_us_per_event": main_cpu / consumed * 1e6 if consumed else 0.0,
        "events_per_request": acked / batches if batches else 0.0,
    }


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print a table and a JSON line."""
    if args.events < 1 or args.partitions < 1 or args.instances < 1:
        raise UsageError("--events, --partitions and --instances must be at least 1")
    if any(v is not None and v < 0 for v in (args.linger_ms, args.idle_linger_ms)) or \
            (args.concurrency is not None and args.concurrency < 1):
        raise UsageError("--linger-ms and --idle-linger-ms must be >= 0 and --concurrency at least 1")
    faults = emulator_args(args.latency_ms, args.http_500, args.seed)
    with tempfile.TemporaryDirectory(prefix="capi-bench-") as tmpdir, _broker(args.bootstrap) as bootstrap, \
            _emulator(faults) as url:
        tmp = Path(tmpdir)
        topic = f"bench.{uuid.uuid4().hex[:8]}"
        ensure_topic(bootstrap, topic, args.partitions)
        result: dict[str, Any] = {"events": args.events, "partitions": args.partitions,
                                  "instances": args.instances, "workers": args.workers, "cores": os.cpu_count(),
                                  "latency_ms": args.latency_ms, "http_500": args.http_500,
                                  "linger_ms": args.linger_ms, "idle_linger_ms": args.idle_linger_ms,
                                  "concurrency": args.concurrency}
        group = f"bench-{uuid.uuid4().hex[:8]}"
        config = _config(tmp, bootstrap, topic, group, url, args.workers, args.linger_ms, args.concurrency,
                         args.idle_linger_ms)
        if args.rate:
            n = int(args.rate * args.duration)
            values = _values(n, args.seed)
            feeder = threading.Thread(target=_produce, args=(bootstrap, topic, values, args.rate), daemon=True)
            env = {**os.environ, "CAPI_STREAM_BENCH_TOKEN": TOKEN, "CAPI_STREAM_STATS_FILE": str(tmp / "rate.json")}
            proc = subprocess.Popen([sys.executable, "-m", "stream", "run", "--config", str(config)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(5)  # join the group before the load starts
            feeder.start()
            feeder.join()
            end = end_offsets(bootstrap, topic, range(args.partitions))
            deadline = time.monotonic() + 120
            parts = range(args.partitions)
            while committed_offsets(bootstrap, group, topic, parts) != end and time.monotonic() < deadline:
                time.sleep(0.5)
            cpu, rss = _proc_figures(proc.pid)
            worker_cpu = _children_cpu(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            stats = orjson.loads((tmp / "rate.json").read_bytes())
            result.update(rate=args.rate, offered=n, acked=stats["acked"], p50_ms=stats["p50_ms"],
                          p99_ms=stats["p99_ms"], max_ms=stats["max_ms"], added_p50_ms=stats["added_p50_ms"],
                          added_p99_ms=stats["added_p99_ms"], added_max_ms=stats["added_max_ms"],
                          added_parts=stats.get("added_parts") or {}, cpu_s=cpu,
                          peak_rss_mib=rss, main_cpu_s=stats["cpu_s"], worker_cpu_s=worker_cpu,
                          events_per_cpu_s=per_cpu_second(stats["consumed"], stats["cpu_s"] + worker_cpu),
                          main_us_per_event=stats["cpu_s"] / stats["consumed"] * 1e6 if stats["consumed"] else 0.0,
                          events_per_request=stats["acked"] / stats["batches_acked"] if stats["batches_acked"] else 0.0)
            _print(result)
            return 0
        t0 = time.monotonic()
        values = _values(args.events, args.seed)
        _produce(bootstrap, topic, values)
        end = end_offsets(bootstrap, topic, range(args.partitions))
        result["produce_s"] = time.monotonic() - t0
        result["pipeline"] = _run_pipelines(tmp, config, args.instances, bootstrap, group, topic, args.partitions,
                                            end, timeout=max(120.0, args.events / 1000))
        if args.baseline:
            base = subprocess.run(
                [sys.executable, "-m", "stream.benchmarks.baseline", "--bootstrap", bootstrap, "--topic", topic,
                 "--group", f"baseline-{uuid.uuid4().hex[:8]}", "--url", f"{url}/v26.0/1111111111/events",
                 "--token", TOKEN, "--total", str(sum(end.values())), "--timeout", "1800"],
                capture_output=True, text=True, check=False)
            if base.returncode != 0:
                raise UsageError(f"the baseline failed: {base.stderr.strip()[-300:]}")
            b = orjson.loads(base.stdout.strip().splitlines()[-1])
            b["events_per_s"] = b["consumed"] / b["seconds"] if b["seconds"] else 0.0
            b["events_per_cpu_s"] = per_cpu_second(b["consumed"], b.get("cpu_s", 0.0))
            result["baseline"] = b
            ours = result["pipeline"]["events_per_s"]
            result["ratio"] = ours / b["events_per_s"] if b["events_per_s"] else None
            ours_cpu = result["pipeline"]["events_per_cpu_s"]
            result["cpu_ratio"] = ours_cpu / b["events_per_cpu_s"] if b["events_per_cpu_s"] else None
        _print(result)
    return 0 if result.get("pipeline", {}).get("complete", True) else 1


def _ms(value: float | None) -> str:
    return f"{value or 0:,.0f} ms"


def _print(result: dict[str, Any]) -> None:
    print("\n".join(table(result)))
    print(orjson.dumps(result).decode())


def table(result: dict[str, Any]) -> list[str]:
    """The human-readable lines of a result."""
    p = result.get("pipeline", result)
    meta = "answers at once"
    if result.get("latency_ms"):
        lo, hi = result["latency_ms"]
        meta = f"holds each request {lo:g}-{hi:g} ms"
    if result.get("http_500"):
        meta += f", HTTP 500 for {result['http_500']:.1%} of requests"
    lines = [f"events {result.get('offered', result['events'])}, partitions {result['partitions']}, "
             f"instances {result['instances']}, workers {result['workers']}, cores {result['cores']}; "
             f"the emulator {meta}"]
    if "rate" in result:
        lines.append(f"offered {result['rate']:,.0f} events/s: acked {result['acked']}")
    else:
        lines.append(f"capi-stream: {p['events_per_s']:,.0f} events/s (first consume -> last ack), "
                     f"all committed after {p['wall_s']:.1f}s wall, complete={p['complete']}")
    cpu = f"{p['events_per_cpu_s']:,.0f} events per CPU second; main process {p['main_us_per_event']:,.0f} us/event"
    if result["workers"]:
        cpu += f" (ceiling of one process ~{1e6 / p['main_us_per_event']:,.0f} events/s), " \
               f"workers {p['worker_cpu_s']:.1f} CPU s (their start-up included)" if p["main_us_per_event"] else ""
    lines.append(f"capi-stream CPU: {cpu}; {p['events_per_request']:,.0f} events per request")
    lines.append(f"latency append->ack: p50 {_ms(p['p50_ms'])}, p99 {_ms(p['p99_ms'])}, max {_ms(p['max_ms'])}; "
                 f"added by capi-stream (minus Meta's request time): p50 {_ms(p['added_p50_ms'])}, "
                 f"p99 {_ms(p['added_p99_ms'])}, max {_ms(p['added_max_ms'])}")
    if parts := p.get("added_parts"):
        lines.append("added latency by part, ms p50 / p99 / mean of the slowest 1% (every "
                     f"{PART_STRIDE}th acked event): " + ", ".join(
                         f"{PART_LABELS[name]} {v['p50_ms']:,.0f} / {v['p99_ms']:,.0f} / "
                         f"{v['slowest_1pct_mean_ms']:,.0f}"
                         for name, v in parts.items() if name in PART_LABELS))
    lines.append(f"process lifetime CPU {p['cpu_s']:.1f} s; peak RSS {p['peak_rss_mib']:.0f} MiB")
    if "baseline" in result:
        b = result["baseline"]
        lines.append(f"SDK loop: {b['events_per_s']:,.0f} events/s ({b['consumed']:,} in {b['seconds']:.1f}s, "
                     f"{b['refused']:,} refused and lost), {b['events_per_cpu_s']:,.0f} events per CPU second")
        cpu_ratio = f"{result['cpu_ratio']:.2f}x" if result.get("cpu_ratio") else "-"
        ratio = f"{result['ratio']:.2f}x" if result.get("ratio") else "-"
        lines.append(f"capi-stream / SDK loop: {ratio} events/s, {cpu_ratio} events per CPU second")
    return lines
