"""A broker outage seen by `run`, `produce` and `demo`: every line on stderr is a structlog event.

librdkafka prints `%3|...|FAIL|...` lines of its own on stderr unless it is given a logger. This test runs
the three commands against a broker of its own (the shared one is never stopped), stops that broker for
10 seconds while they work, and reads everything they wrote.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

from stream.emulator import EmulatorThread
from stream.errors import CapiStreamError
from stream.logs import REPEAT_INTERVAL_S
from stream.tools.kafka import LocalKafka, free_port
from stream.tools.produce import ensure_topic
from stream.tools.samples import generate
from tests.support.harness import APPS_A, Dest, committed, end_offsets, wait_until, write_config
from tests.support.kafka import BROKER
from tests.support.missing import unavailable

pytestmark = pytest.mark.kafka

OUTAGE_S = 10.0
RAW_LIBRDKAFKA = re.compile(r"^%\d\|\d+\.\d+\|")
CLI = [sys.executable, "-m", "stream", "--log-format", "json"]


def _non_structlog_lines(text: str) -> list[str]:
    """Lines that are not one JSON object with an event and a level."""
    bad = []
    for line in text.splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad.append(line)
            continue
        if not isinstance(doc, dict) or "event" not in doc or "level" not in doc:
            bad.append(line)
    return bad


def _events(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


class LineReader(threading.Thread):
    """Collects a child's stdout lines as they come."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line.decode(errors="replace"))


def test_run_produce_and_demo_print_only_structlog_lines_through_a_broker_outage(tmp_path: Path) -> None:
    """Stopping the broker for 10 s makes librdkafka complain; all of it reaches stderr as JSON events."""
    state = tmp_path / "state"
    broker = LocalKafka(data_dir=state / "capi-stream" / "demo-kafka")  # the demo finds and reuses it
    port = free_port()
    try:
        bootstrap, _ = broker.start(port=port)
    except CapiStreamError as exc:
        unavailable(BROKER, str(exc))
    procs: list[subprocess.Popen[bytes]] = []
    emulator = None
    try:
        topic, dlq = f"t-{uuid.uuid4().hex[:10]}", f"dlq-{uuid.uuid4().hex[:10]}"
        ensure_topic(bootstrap, topic, 2)
        ensure_topic(bootstrap, dlq, 1)
        token = f"tok-{uuid.uuid4().hex}"
        (tmp_path / "shop.token").write_text(token)
        emulator = EmulatorThread(tokens={"111": token}).start()
        group = f"g-{uuid.uuid4().hex[:10]}"
        config = write_config(tmp_path / "capi.toml", bootstrap=bootstrap, topic=topic, group=group, dlq_topic=dlq,
                              emulator_url=emulator.url, dests=[Dest("shop", "111", APPS_A, tmp_path / "shop.token")])
        files: dict[str, tuple[Path, Path]] = {n: (tmp_path / f"{n}.out", tmp_path / f"{n}.err")
                                               for n in ("run", "produce", "demo")}

        def spawn(name: str, args: list[str], stdout: Any = None, env: dict[str, str] | None = None,
                  ) -> subprocess.Popen[bytes]:
            out, err = files[name]
            with out.open("wb") as o, err.open("wb") as e:
                proc = subprocess.Popen([*CLI, *args], stdout=stdout or o, stderr=e, env=env or {**os.environ})
            procs.append(proc)
            return proc

        run = spawn("run", ["run", "--config", str(config)])
        assigned = wait_until(lambda: b"partitions_assigned" in files["run"][1].read_bytes(), 60)
        assert assigned, "run never got partitions"
        demo = spawn("demo", ["demo", "--events", "2000"], stdout=subprocess.PIPE,
                     env={**os.environ, "XDG_STATE_HOME": str(state)})
        assert demo.stdout is not None
        reader = LineReader(demo.stdout)
        reader.start()
        assert wait_until(lambda: any(x.startswith("  consumed") for x in reader.lines) or demo.poll() is not None,
                          120), "the demo never reached its pipeline"
        # hold the demo still while the broker goes, so its pipeline meets the outage whatever its speed
        demo.send_signal(signal.SIGSTOP)
        try:
            assert broker.stop(), "the test's broker did not stop"
        finally:
            demo.send_signal(signal.SIGCONT)
        down_at = time.monotonic()
        time.sleep(OUTAGE_S / 2)
        records = tmp_path / "events.jsonl"
        now = int(time.time())
        records.write_bytes(b"\n".join(orjson.dumps(r) for r in generate(50, seed=3, now=now, app_ids=APPS_A,
                                                                          duplicate_rate=0)) + b"\n")
        produce = spawn("produce", ["produce", "--topic", topic, "--bootstrap", bootstrap, "--timeout", "180",
                                      str(records)])
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        broker.start(port=port)

        assert produce.wait(200) == 0, files["produce"][1].read_text()
        assert demo.wait(240) == 0, "".join(reader.lines)[-2000:]
        reader.join(10)
        end = end_offsets(bootstrap, topic, 2)
        assert sum(end.values()) == 50
        assert wait_until(lambda: committed(bootstrap, group, topic, 2) == end, 120), "run never committed all"
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0
        (tmp_path / "demo.out").write_text("".join(reader.lines))

        for name, (out, err) in files.items():
            assert _non_structlog_lines(err.read_text()) == [], f"{name} wrote lines that are not structlog's"
            raw = [line for line in out.read_text().splitlines() if RAW_LIBRDKAFKA.match(line)]
            assert raw == [], f"{name} printed raw librdkafka lines on stdout"
        # the outage was seen, and came through structlog: librdkafka's own lines, rate-limited
        run_events = _events(files["run"][1].read_text())
        kafka_lines = [e for e in run_events if e["event"] == "librdkafka"]
        assert kafka_lines, [e["event"] for e in run_events]
        assert all(e["level"] in ("debug", "info", "warning", "error") for e in kafka_lines)
        per_kind = Counter((e["level"], e["facility"], e["client"]) for e in kafka_lines)
        seconds = time.monotonic() - down_at
        assert max(per_kind.values()) <= seconds / REPEAT_INTERVAL_S + 2, per_kind
        demo_events = _events(files["demo"][1].read_text())
        assert any(e["event"] in ("librdkafka", "kafka_error") for e in demo_events), \
            [e["event"] for e in demo_events]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if emulator is not None:
            emulator.stop()
        broker.stop()
