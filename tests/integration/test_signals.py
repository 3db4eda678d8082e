"""Signals to `capi-stream run` as a subprocess: SIGTERM drains and exits within the deadline, a second
signal exits at once with 130, SIGHUP reloads the token, a failed stage exits 1 and commits nothing unfinished.
(SIGTERM with stderr on a closed pipe: tests/integration/test_stopping.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    APPS_B,
    PipelineProcess,
    Scenario,
    expected_keys,
    produce_records,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.kafka

DEADLINE_S = 8.0
# the drain's deadline plus the interpreter's exit, on a busy 2-core machine
EXIT_WITHIN_S = DEADLINE_S + 15.0
# "at once": far below the deadline a second signal cuts short
AT_ONCE_S = 5.0


def _records(n: int, seed: int, apps: list[str]) -> list[dict[str, object]]:
    records = list(generate(n, seed=seed, now=int(time.time()), app_ids=apps))
    for r in records:
        r["consent"] = True
    return records


def _events(proc: PipelineProcess, name: str) -> list[dict[str, object]]:
    return [e for e in proc.log_lines() if e.get("event") == name]


def _wait_exit(proc: PipelineProcess, within: float) -> tuple[int, float]:
    """(exit code, seconds it took) or a failure naming the bound."""
    assert proc.proc is not None
    started = time.monotonic()
    try:
        code = proc.proc.wait(within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {within} s after the signal")
    return code, time.monotonic() - started


def _positions(sc: Scenario, want: int) -> dict[str, tuple[int, int]]:
    return {m.key().decode(): (m.partition(), m.offset()) for m in read_topic(sc.bootstrap, sc.topic, want) if m.key()}


def test_sigterm_drains_what_is_in_flight_and_exits_within_the_deadline(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """SIGTERM while events are on their way (Meta slow): exit 0 within the deadline, and every committed
    event was acknowledged by Meta before the commit."""
    sc = scenario_factory(partitions=2, extra=f"[pipeline]\nshutdown_deadline_s = {DEADLINE_S}\n"
                                              "[batch]\nmax_events = 50\n[send]\nrate_limit_rps = 10\n")  # fmt: skip
    sc.emulator.set_faults({"latency_ms": [100, 300]})
    records = _records(1500, seed=81, apps=APPS_A + APPS_B)
    produce_records(sc.bootstrap, sc.topic, records)
    proc = sc.start()
    expected = {k[2] for k in expected_keys(records, int(time.time()), sc.routes)}
    assert wait_until(lambda: sum(sc.counts().values()) >= 100, 60), "nothing was delivered"
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert len(sc.counts()) < len(expected), "the signal must come while events are still on their way"
    code, _took = _wait_exit(proc, EXIT_WITHIN_S)
    assert code == 0
    assert len(_events(proc, "pipeline_stopped")) == 1
    committed = sc.committed()
    accepted = {k[2] for k in sc.counts()}
    positions = _positions(sc, len(records))
    done = [i for i, (p, o) in positions.items() if o < committed[p]]
    assert done, "the drain committed what it finished"
    assert [i for i in done if i in expected and i not in accepted] == [], "committed before Meta acknowledged"


def test_a_second_signal_exits_at_once_with_130(scenario_factory: Callable[..., Scenario]) -> None:
    """While a drain waits for a Meta that answers only 503, a second SIGTERM ends the process with 130 at once."""
    sc = scenario_factory(partitions=1, extra="[pipeline]\nshutdown_deadline_s = 120\n")
    sc.emulator.set_faults({"http_503": 1.0})
    produce_records(sc.bootstrap, sc.topic, _records(20, seed=82, apps=APPS_A))
    proc = sc.start()
    assert wait_until(lambda: bool(_events(proc, "batch_retry")), 60), "no request was ever retried"
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: bool(_events(proc, "stop_requested")), 30), "the first signal was not taken"
    assert proc.proc.poll() is None, "the drain must still be waiting for Meta"
    proc.proc.send_signal(signal.SIGTERM)
    code, took = _wait_exit(proc, AT_ONCE_S)
    assert code == 130
    assert took < AT_ONCE_S
    assert sc.committed() == {0: -1}, "nothing was acknowledged, so nothing may be committed"


def test_sighup_reloads_the_token_of_a_halted_destination(scenario_factory: Callable[..., Scenario]) -> None:
    """A token rotated at Meta halts shop; the new token in its file is read on SIGHUP (no watcher) and shop
    delivers everything it held."""
    sc = scenario_factory(partitions=1, extra="[send]\ntoken_check_interval_s = 3600\ntimeout_s = 15.0\n")
    shop = sc.dests[0]
    new_token = f"tok-hup-{uuid.uuid4().hex}"
    sc.emulator.rotate_token(shop.dataset_id, new_token)
    records = _records(100, seed=83, apps=APPS_A)
    produce_records(sc.bootstrap, sc.topic, records)
    proc = sc.start()
    assert wait_until(lambda: bool(_events(proc, "destination_halted")), 60), "shop never halted"
    shop.token_file.write_text(new_token + "\n")
    assert sc.committed() == {0: -1}
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGHUP)
    assert sc.all_committed(), "shop did not resume after SIGHUP"
    assert _events(proc, "token_replaced")
    assert set(sc.counts()) == expected_keys(records, int(time.time()), sc.routes)
    assert proc.stop() == 0


def _worker_pids(pid: int) -> list[int]:
    """The pipeline's prepare workers: its children started by multiprocessing's spawn."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]


def test_a_failed_stage_exits_1_and_commits_nothing_unfinished(scenario_factory: Callable[..., Scenario]) -> None:
    """A prepare worker killed (as an OOM kill would) fails its stage: exit 1, and the events it held stay
    uncommitted for the next owner."""
    sc = scenario_factory(partitions=1, extra="[pipeline]\nworkers = 1\n")
    first = _records(50, seed=84, apps=APPS_A)
    produce_records(sc.bootstrap, sc.topic, first)
    proc = sc.start()
    assert sc.all_committed(), "the first events were never delivered"
    assert proc.proc is not None
    (worker,) = _worker_pids(proc.proc.pid)
    os.kill(worker, signal.SIGKILL)
    produce_records(sc.bootstrap, sc.topic, _records(50, seed=85, apps=APPS_A))
    code, _took = _wait_exit(proc, 60)
    assert code == 1
    failed = _events(proc, "stage_failed")
    assert failed, "the failure must be logged"
    assert sc.committed() == {0: 50}, "only the first, acknowledged events may be committed"
