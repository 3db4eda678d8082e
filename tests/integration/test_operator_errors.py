"""Operator mistakes seen in the trial get one line on stderr and the right exit code, never a traceback.

Exit 2: bad usage or config (a port taken, a librdkafka key, a page that is not /metrics). Exit 1: the
command was right but the world was not (an unreachable broker), within a bounded time in every command.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import APPS_A, Scenario

pytestmark = pytest.mark.kafka

CLI = [sys.executable, "-m", "stream"]
# the longest any command may take to say the broker is unreachable (admin requests give up after 15 s)
UNREACHABLE_WITHIN_S = 45.0


def one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The single error line of a failed command (asserting there is exactly one and no traceback)."""
    assert done.returncode == code, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("capi-stream: error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_run_with_its_metrics_port_taken_says_so_in_one_line(scenario_factory: Callable[..., Scenario],
                                                             taken_port: int) -> None:
    """`run` and `check-config` refuse a metrics port in use with exit 2 and the key's name."""
    sc = scenario_factory(partitions=1, extra=f"[metrics]\nport = {taken_port}\n")
    for command in ("run", "check-config"):
        done = subprocess.run([*CLI, command, "--config", str(sc.config)], capture_output=True, text=True,
                              timeout=60, check=False)
        line = one_line(done, 2)
        assert "metrics.port" in line
        assert str(taken_port) in line


def test_run_with_a_bad_librdkafka_key_says_so_in_one_line(scenario_factory: Callable[..., Scenario]) -> None:
    """A misspelt consumer setting stops `run` at once with exit 2, naming the key and the table."""
    sc = scenario_factory(partitions=1, extra='[kafka.consumer]\n"sesion.timeout.ms" = 30000\n')
    done = subprocess.run([*CLI, "run", "--config", str(sc.config)], capture_output=True, text=True,
                          timeout=60, check=False)
    line = one_line(done, 2)
    assert '"sesion.timeout.ms"' in line
    assert "[kafka.consumer]" in line


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><html><body>Grafana</body></html>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


def test_quality_pointed_at_a_page_that_is_not_prometheus_text() -> None:
    """`quality --metrics-url` at an HTML page: exit 2, one line that says what the page is not."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dashboard"
        done = subprocess.run([*CLI, "quality", "--metrics-url", url], capture_output=True, text=True,
                              timeout=60, check=False)
    finally:
        server.shutdown()
    line = one_line(done, 2)
    assert "no capi_stream_ metrics" in line
    assert "<!doctype html>" in line


def test_an_unreachable_broker_is_exit_1_and_one_line_in_every_kafka_command(tmp_path: Path) -> None:
    """produce, status, dlq show and replay against a port with no broker: exit 1, one line, bounded time."""
    bootstrap = f"127.0.0.1:{free_port()}"
    config = tmp_path / "capi.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{bootstrap}"\ntopics = ["t"]\ngroup_id = "g"\n'
                      'dlq_topic = "t.dlq"\n')
    events = tmp_path / "events.jsonl"
    record = next(iter(generate(1, seed=1, now=int(time.time()), app_ids=APPS_A, duplicate_rate=0)))
    events.write_bytes(orjson.dumps(record) + b"\n")
    commands = {
        "produce": ["produce", "--topic", "t", "--bootstrap", bootstrap, "--timeout", "5", str(events)],
        "status": ["status", "--config", str(config)],
        "dlq show": ["dlq", "show", "--config", str(config)],
        "replay": ["replay", "--config", str(config), "--to-earliest"],
    }
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_STREAM_")}
    procs = {name: subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
             for name, argv in commands.items()}
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, UNREACHABLE_WITHIN_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{name} did not give up on an unreachable broker within {UNREACHABLE_WITHIN_S} s")
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    for name, done in results.items():
        line = one_line(done, 1)
        assert bootstrap in line or "broker" in line, (name, line)
