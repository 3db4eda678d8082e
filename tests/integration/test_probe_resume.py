"""A halted, parked destination resumes by itself on a probe Meta acknowledges (#19): nobody touches its
token file or sends SIGHUP.

Real broker, the emulator over sockets, `capi-stream run` as a subprocess. Two datasets share every
partition; B's permission is revoked at the emulator (fault denied_datasets: 100 / 33 to a valid
token), so B halts and is parked while A flows. Then the permission is re-granted (the fault lifted):
the next probe (a read of B's dataset, it has no test event code) is acknowledged, B resumes and its
parking topic drains. Times are scaled down: park_after_s = 1 s, probes every 0.3 s up to 0.6 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stream.config import parking_topic_name
from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    APPS_B,
    PipelineProcess,
    Scenario,
    committed,
    end_offsets,
    expected_keys,
    http_get,
    metric,
    produce_records,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 2
BOUND = 600  # pipeline.max_in_flight_events: B's parked events are more than this


def _config(port: int) -> str:
    return (
        "[pipeline]\n"
        f"max_in_flight_events = {BOUND}\n"
        "[send]\n"
        "park_after_s = 1.0\n"
        "probe_interval_s = 0.3\n"
        "probe_max_interval_s = 0.6\n"
        "timeout_s = 15.0\n"
        "[kafka.consumer]\n"
        '"statistics.interval.ms" = 500\n'
        "[metrics]\n"
        f"port = {port}\n"
    )


def _events(n: int, apps: list[str], seed: int, prefix: str, now: int) -> list[dict[str, Any]]:
    records = list(generate(n, seed=seed, now=now, app_ids=apps))
    for index, record in enumerate(records):
        record["consent"] = True
        record["event_id"] = f"{prefix}-{index}"
    return records


def _logged(proc: PipelineProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in proc.log_lines() if e.get("event") == name]


def _drained(sc: Scenario, topic: str) -> bool:
    end = end_offsets(sc.bootstrap, topic, PARTITIONS)
    got = committed(sc.bootstrap, f"{sc.group}.parking", topic, PARTITIONS)
    return all(got.get(p, -1) == end[p] or (end[p] == 0 and got.get(p, -1) in (-1, 0)) for p in end)


def test_a_permission_regranted_resumes_a_parked_destination_by_probe(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """B halted by a revoked permission is parked while A flows; once the permission is back, a probe
    resumes B without its token file or SIGHUP: every parked B event reaches Meta once, and the parking
    topic commits to its end."""
    port = free_port()
    sc = scenario_factory(partitions=PARTITIONS, extra=_config(port))
    shop, fitness = sc.dests
    token_before = (fitness.token_file.read_text(), fitness.token_file.stat().st_mtime_ns)
    now = int(time.time())
    proc = sc.start()
    warm = _events(20, APPS_A, 1, "warm-a", now) + _events(20, APPS_B, 2, "warm-b", now)
    produce_records(sc.bootstrap, sc.topic, warm)
    assert sc.all_committed(60)
    sc.emulator.set_faults({"denied_datasets": [fitness.dataset_id]})  # B's permission revoked
    a_records: list[dict[str, Any]] = []
    b_records: list[dict[str, Any]] = []
    for wave in range(3):
        a = _events(50, APPS_A, 100 + wave, f"a{wave}", now)
        b = _events(300, APPS_B, 200 + wave, f"b{wave}", now)
        a_records += a
        b_records += b
        produce_records(sc.bootstrap, sc.topic, [r for pair in zip(a, b[:50], strict=True) for r in pair] + b[50:])
        want = expected_keys(a, now, sc.routes)
        assert wait_until(lambda want=want: want <= set(sc.counts()), 60, interval=0.05), f"A's wave {wave} acked"
    parking = parking_topic_name("{group}.{destination}.parking", sc.group, fitness.name)
    assert sc.all_committed(60), "the source partitions commit past B's parked events"
    assert wait_until(lambda: sum(end_offsets(sc.bootstrap, parking, PARTITIONS).values()) == len(b_records), 30)
    expected_b = expected_keys(b_records, now, sc.routes)
    assert not expected_b & set(sc.counts()), "B's permission is revoked: nothing of it reached Meta"
    assert wait_until(lambda: metric(scrape(port), "capi_stream_probes_total", destination=fitness.name,
                                      outcome="refused") >= 2, 30), "B is probed while halted, and refused"
    samples = scrape(port)
    assert metric(samples, "capi_stream_destination_state", destination=fitness.name, state="parked") == 1
    assert metric(samples, "capi_stream_probes_total", destination=fitness.name, outcome="ok") == 0
    assert not _logged(proc, "destination_resumed")
    status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    assert (status, orjson.loads(body)["halted"]) == (503, [fitness.name])
    # the permission is re-granted in Business Manager: no token file change, no SIGHUP
    regranted = time.monotonic()
    sc.emulator.set_faults({})
    assert wait_until(lambda: expected_b <= set(sc.counts()), 60, interval=0.1), "every parked B event reaches Meta"
    drain_s = time.monotonic() - regranted
    assert wait_until(lambda: _drained(sc, parking), 60), "the parking topic's offsets commit to its end"
    assert wait_until(lambda: bool(_logged(proc, "draining_finished")), 30)
    resumed = _logged(proc, "destination_resumed")
    assert [(e["destination"], e["why"]) for e in resumed] == [(fitness.name, "probe")]
    assert not _logged(proc, "token_replaced")
    assert not _logged(proc, "reload_tokens"), "no SIGHUP"
    samples = scrape(port)
    assert metric(samples, "capi_stream_probes_total", destination=fitness.name, outcome="ok") == 1
    assert metric(samples, "capi_stream_probes_total", destination=shop.name, outcome="refused") == 0
    assert metric(samples, "capi_stream_destination_state", destination=fitness.name, state="flowing") == 1
    assert wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30), "ready again"
    stats = sc.emulator.stats()
    assert stats["reads"] >= 3, "the probes are reads of the dataset"
    assert stats["test_events_received"] == 0, "no probe is an event"
    assert proc.stop() == 0
    counts = sc.counts()
    assert set(counts) == expected_keys(warm + a_records + b_records, now, sc.routes)
    assert {k: c for k, c in counts.items() if c != 1} == {}, "each event reaches Meta once"
    assert (fitness.token_file.read_text(), fitness.token_file.stat().st_mtime_ns) == token_before
    log_text = "\n".join(str(e) for e in proc.log_lines())
    for dest in sc.dests:
        assert dest.token_file.read_text().strip() not in log_text
    refused = metric(samples, "capi_stream_probes_total", destination=fitness.name, outcome="refused")
    print(f"\nPROBE FIGURES: B parked={len(b_records)}; probes refused={refused:.0f} ok=1; "
          f"re-grant to last B event at Meta={drain_s:.2f}s; duplicates={sum(c - 1 for c in counts.values())}")
