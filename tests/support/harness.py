"""Helpers for pipeline tests: a config per test, the processor as a subprocess, and the oracles.

The processor runs exactly as users run it (`python -m stream run --config F`), against the real broker
and the emulator over sockets; the oracles read the emulator's ledger and the group's committed offsets.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from stream.avro.schema import load_schema
from stream.emulator import EmulatorThread
from stream.tools import admin
from stream.tools.produce import produce_lines
from tests.support.meta_facts import MAX_EVENT_AGE_S, MAX_FUTURE_SKEW_S

Key = tuple[str, str, str]  # dataset, event_name, event_id
APPS_A = ["com.example.shop", "com.example.game"]
APPS_B = ["com.example.fitness"]
DRAIN_S = 120.0


@dataclasses.dataclass
class Dest:
    """A destination in a test config."""

    name: str
    dataset_id: str
    app_ids: list[str]
    token_file: Path
    default_country: str = "US"
    base_url: str = ""  # empty: the scenario's emulator


def write_config(path: Path, *, bootstrap: str, topic: str, group: str, dlq_topic: str, emulator_url: str,
                 dests: list[Dest], extra: str = "") -> Path:
    """Write a TOML config for one test and return its path."""
    lines = [
        "[kafka]",
        f'bootstrap_servers = "{bootstrap}"',
        f'topics = ["{topic}"]',
        f'group_id = "{group}"',
        f'dlq_topic = "{dlq_topic}"',
        "",
        "[logging]",
        'format = "json"',
        'level = "info"',
        "",
    ]
    for d in dests:
        lines += [
            f"[destinations.{d.name}]",
            f'dataset_id = "{d.dataset_id}"',
            f"app_ids = {orjson.dumps(d.app_ids).decode()}",
            f'token_file = "{d.token_file}"',
            f'default_country = "{d.default_country}"',
            f'base_url = "{d.base_url or emulator_url}"',
            "",
        ]
    if "[send]" not in extra:
        # a loaded 2-core machine can make the in-process emulator slower than Meta's 1.5 s timeout; a
        # retry after a timeout may then deliver twice (at-least-once), which the exactly-once oracles of
        # most tests would flag. Tests about timeouts set their own [send] section.
        lines += ["[send]", "timeout_s = 15.0", ""]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class PipelineProcess:
    """`capi-stream run` as a child process with its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PipelineProcess:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream", "run", "--config", str(self.config)],
                                     stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        out.close()
        return self

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the drain; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB; 0 once it has exited."""
        assert self.proc is not None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def logged(self, event: str) -> bool:
        """True once the process wrote a log line with this event name."""
        return any(e.get("event") == event for e in self.log_lines())

    def log_lines(self) -> list[dict[str, Any]]:
        """The structured log lines written so far."""
        out = []
        for line in self.log.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out


def produce_records(bootstrap: str, topic: str, records: Iterable[Mapping[str, Any]]) -> int:
    """Publish records as schemaless Avro keyed by event_id; returns how many were delivered."""
    report = produce_lines((orjson.dumps(r).decode() for r in records), topic=topic, bootstrap=bootstrap,
                           schema=load_schema())
    assert not report.skipped, report.skipped
    assert not report.delivery_errors, report.delivery_errors
    return report.produced


def produce_raw(bootstrap: str, topic: str, values: Iterable[tuple[bytes | None, bytes]]) -> None:
    """Publish raw (key, value) pairs, e.g. malformed bytes."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in values:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High watermarks per partition."""
    return admin.end_offsets(bootstrap, topic, range(partitions))


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets per partition (-1 when none)."""
    return admin.committed_offsets(bootstrap, group, topic, range(partitions))


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll `condition` until it holds or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def read_topic(bootstrap: str, topic: str, want: int, timeout: float = 30) -> list[Any]:
    """Read `want` messages from the start of `topic` (fewer if the timeout passes)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(100, timeout=0.5) if m.error() is None)
        # a short extra read shows messages beyond what was expected
        got.extend(m for m in consumer.consume(100, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    return got


def never_written(bootstrap: str, topic: str, partitions: int = 1) -> bool:
    """True when nothing was ever written to `topic`: every partition's high watermark is still 0. Exact and
    at once, where reading the topic sees nothing both when it is empty and when its reader has not joined yet."""
    return all(end == 0 for end in end_offsets(bootstrap, topic, partitions).values())


def headers_of(message: Any) -> dict[str, str]:
    """A Kafka message's headers as str -> str."""
    return {k: v.decode() for k, v in (message.headers() or [])}


# ISO 4217 codes the generated and hand-made records use (tools/samples.CURRENCIES), written out here
ISO_CURRENCIES = frozenset({"USD", "EUR", "GBP", "BRL", "INR", "JPY", "MXN", "PLN", "KRW", "CAD", "AUD"})


def deliverable(record: Mapping[str, Any], now: int) -> bool:
    """True when Meta must receive `record` once it is routed: the documented rules, written out here
    (never computed with the pipeline's normalizer, so a wrongly dropped event fails the oracle).

    - consent is not false (unknown counts as given: no test destination requires consent) [README];
    - event_name and event_id are non-empty text [1.3];
    - event_time is at most 7 days old and at most 5 minutes ahead of `now` [1.3];
    - action_source is one Meta knows [1.3];
    - a Purchase carries a value and an ISO 4217 currency [5].
    """
    if record.get("consent") is False:
        return False
    name, event_id = record.get("event_name"), record.get("event_id")
    if not (isinstance(name, str) and name.strip() and isinstance(event_id, str) and event_id.strip()):
        return False
    event_time = record.get("event_time")
    if not isinstance(event_time, int) or not now - MAX_EVENT_AGE_S <= event_time <= now + MAX_FUTURE_SKEW_S:
        return False
    if record.get("action_source") not in ("app", "website", "email", "phone_call", "chat", "physical_store",
                                           "system_generated", "business_messaging", "other"):
        return False
    if name == "Purchase":
        custom = record.get("custom_data") or {}
        currency = custom.get("currency")
        if custom.get("value") is None or not isinstance(currency, str) or currency.upper() not in ISO_CURRENCIES:
            return False
    return True


def consenting(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records, each marked as carrying consent: every valid one must then reach Meta."""
    marked = list(records)
    for record in marked:
        record["consent"] = True
    return marked


def expected_keys(records: Iterable[Mapping[str, Any]], now: int, routes: Mapping[str, tuple[str, str]]) -> set[Key]:
    """(dataset, event_name, event_id) of the records the pipeline must deliver: routed and `deliverable`.

    `routes` maps app_id -> (dataset_id, default_country).
    """
    keys: set[Key] = set()
    for record in records:
        route = routes.get(record["app_id"])
        if route is not None and deliverable(record, now):
            keys.add((route[0], record["event_name"], record["event_id"]))
    return keys


def accepted_counts(received: list[dict[str, Any]]) -> Counter[Key]:
    """The emulator's ledger as a Counter of keys."""
    return Counter({(r["dataset_id"], r["event_name"], r["event_id"]): r["count"] for r in received})


@dataclasses.dataclass
class Scenario:
    """One test's topic, group, destinations, emulator and processes."""

    bootstrap: str
    topic: str
    dlq_topic: str
    group: str
    partitions: int
    dests: list[Dest]
    emulator: EmulatorThread
    config: Path
    tmp: Path
    processes: list[PipelineProcess] = dataclasses.field(default_factory=list)

    @property
    def routes(self) -> dict[str, tuple[str, str]]:
        return {app: (d.dataset_id, d.default_country) for d in self.dests for app in d.app_ids}

    @property
    def datasets(self) -> dict[str, str]:
        """app_id -> the dataset_id of its destination."""
        return {app: d.dataset_id for d in self.dests for app in d.app_ids}

    def start(self) -> PipelineProcess:
        proc = PipelineProcess(self.config, self.tmp / f"run-{len(self.processes)}.log").start()
        self.processes.append(proc)
        return proc

    def start_member(self, metrics_port: int) -> PipelineProcess:
        """Another process of the group with its own /metrics port (members of one group need one each)."""
        config = self.tmp / f"member-{len(self.processes)}.toml"
        config.write_text(self.config.read_text() + f"\n[metrics]\nport = {metrics_port}\n")
        proc = PipelineProcess(config, self.tmp / f"run-{len(self.processes)}.log").start()
        self.processes.append(proc)
        return proc

    def rewrite_config(self, extra: str) -> None:
        """Write the config again from the scenario's destinations (after changing one) and `extra`."""
        write_config(self.config, bootstrap=self.bootstrap, topic=self.topic, group=self.group,
                     dlq_topic=self.dlq_topic, emulator_url=self.emulator.url, dests=self.dests, extra=extra)

    def end(self) -> dict[int, int]:
        return end_offsets(self.bootstrap, self.topic, self.partitions)

    def committed(self) -> dict[int, int]:
        return committed(self.bootstrap, self.group, self.topic, self.partitions)

    def all_committed(self, timeout: float = DRAIN_S) -> bool:
        end = self.end()
        return wait_until(lambda: self.committed() == end, timeout, interval=0.5)

    def counts(self) -> Any:
        return accepted_counts(self.emulator.received())


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing listens yet or no answer came within 5 s (a busy
    2-core machine can starve a process that long; callers poll again)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own loopback endpoint
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return 0, b""


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """The pipeline's /metrics as {(sample name, sorted labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Pool(Sequence[dict[str, Any]]):
    """`size` records from `records`, made only as far as they are read: a publisher that runs while members
    come and go publishes a part of its pool, and making 50,000 records up front took longer than the
    membership changes they feed. Reads from one thread at a time (the publisher's, then the test's)."""

    def __init__(self, records: Iterator[dict[str, Any]], size: int) -> None:
        self._records = records
        self._size = size
        self._made: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: Any) -> Any:
        stop = index.indices(self._size)[1] if isinstance(index, slice) else range(self._size)[index] + 1
        while len(self._made) < stop:
            self._made.append(next(self._records))
        return self._made[index]


class Publisher(threading.Thread):
    """Publishes `records` in chunks at about `rate` events/s until told to stop or out of records."""

    def __init__(self, sc: Scenario, records: Sequence[dict[str, Any]], rate: int, start: int = 0,
                 chunk: int = 250) -> None:
        super().__init__(daemon=True)
        self.chunk = chunk
        self.sc = sc
        self.records = records
        self.rate = rate
        self.start_at = self.produced = start
        self.halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.halt.is_set() and self.produced < len(self.records):
            chunk = self.records[self.produced:self.produced + self.chunk]
            self.produced += produce_records(self.sc.bootstrap, self.sc.topic, chunk)
            ahead = (self.produced - self.start_at) / self.rate - (time.monotonic() - started)
            if ahead > 0:
                self.halt.wait(ahead)
