"""Stopping never depends on logging, and a drain that runs out of time says what it left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import APPS_A, Scenario, http_get, produce_records, wait_until

pytestmark = pytest.mark.kafka

DEADLINE_S = 3.0
# the drain's deadline plus the consumer's close and the interpreter's exit, on a busy 2-core machine
EXIT_WITHIN_S = DEADLINE_S + 25.0


def test_sigterm_stops_the_pipeline_when_stderr_is_a_closed_pipe(scenario_factory: Callable[..., Scenario]) -> None:
    """With the log sink gone (stderr's reader closed), SIGTERM still drains and exits, /healthz or not."""
    port = free_port()
    sc = scenario_factory(partitions=1, extra=f"[metrics]\nport = {port}\n[pipeline]\n"
                                              f"shutdown_deadline_s = {DEADLINE_S}\n")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "stream", "run", "--config", str(sc.config)],
                            stdout=subprocess.DEVNULL, stderr=write_end,
                            # stderr buffered as for a user (PYTHONUNBUFFERED hid an exit 120 at shutdown)
                            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    os.close(write_end)
    try:
        ready = wait_until(lambda: proc.poll() is None and http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60)
        assert ready, "the pipeline never became ready"
        os.close(read_end)  # the log shipper went away: every write to stderr now fails with EPIPE
        read_end = -1
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM ignored with stderr closed: still running {EXIT_WITHIN_S} s later")
        assert code == 0
    finally:
        if read_end >= 0:
            os.close(read_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_drain_out_of_time_warns_how_many_events_it_left(scenario_factory: Callable[..., Scenario]) -> None:
    """When Meta answers nothing but 503 and the deadline passes, the stop warns with the unfinished count."""
    sc = scenario_factory(partitions=1, extra=f"[pipeline]\nshutdown_deadline_s = {DEADLINE_S}\n")
    sc.emulator.set_faults({"http_503": 1.0})
    records = list(generate(20, seed=5, now=int(time.time()), app_ids=APPS_A, duplicate_rate=0))
    produce_records(sc.bootstrap, sc.topic, records)
    proc = sc.start()
    assert wait_until(lambda: any(x.get("event") == "batch_retry" for x in proc.log_lines()), 60), \
        "no retry was ever logged"
    assert proc.stop(EXIT_WITHIN_S) == 0
    lines = proc.log_lines()
    warned = [x for x in lines if x.get("event") == "drain_incomplete"]
    assert len(warned) == 1, [x.get("event") for x in lines]
    assert warned[0]["level"] == "warning"
    assert warned[0]["unfinished"] == 20
    assert warned[0]["deadline_s"] == DEADLINE_S
    # the last line agrees: the events given up (read again by the next owner), not the 0 left after the
    # revoke dropped them, which read as "everything finished" on the line an SRE checks last
    (stopped,) = [x for x in lines if x.get("event") == "pipeline_stopped"]
    assert stopped["unfinished"] == 20
    assert sc.committed() == {0: -1}, "nothing was acknowledged, so nothing may be committed"
