"""Chaos with a destination halted for longer than send.park_after_s (#19).

The fitness destination's token expires and stays wrong for much longer than `park_after_s` while both
destinations' events keep arriving on shared partitions, with Meta faults (500s, throttling, timeouts)
and duplicates in the stream. The pipeline is SIGKILLed once while fitness is parked and once while it
drains. Still: the source partitions commit to their end while fitness is parked, every valid event of
both destinations is accepted by Meta, and the group's offsets of the source and of the parking topic
end at their ends. Repeats (events accepted more than once) are counted and reported. While parked,
fitness is probed every fraction of a second; the probes carry the same refused token, so none
resumes it before its token file is fixed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from stream.config import parking_topic_name
from stream.tools.kafka import LocalKafka
from stream.tools.samples import generate
from tests.support.chaos_oracle import delivery_problems, offset_problems
from tests.support.harness import (
    APPS_A,
    APPS_B,
    PipelineProcess,
    Scenario,
    committed,
    end_offsets,
    expected_keys,
    produce_records,
    read_topic,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

PARTITIONS = 4
EVENTS = 4000
WAIT_S = 120.0
SEED = 11
EXTRA_CONFIG = """
[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000
"statistics.interval.ms" = 500

[pipeline]
max_in_flight_events = 500

[batch]
max_events = 50
linger_ms = 100

[send]
timeout_s = 2.0
concurrency = 2
rate_limit_rps = 10
backoff_initial_s = 0.05
backoff_max_s = 0.5
token_check_interval_s = 0.5
park_after_s = 1.0
# the halted destination is probed (with the same, still refused token) under the same faults
probe_interval_s = 0.3
probe_max_interval_s = 1.0
"""
FAULTS = {"http_500": 0.05, "throttle": 0.05, "timeout": 0.03, "timeout_hold_s": 3.0}


def _logged(proc: PipelineProcess, event: str, count: int = 1) -> bool:
    return sum(1 for e in proc.log_lines() if e.get("event") == event) >= count


def test_a_destination_halted_longer_than_park_after_s_under_kills_and_faults(
    scenario_factory: Callable[..., Scenario], chaos_broker: LocalKafka,
) -> None:
    """fitness halted for many times park_after_s, a SIGKILL while it is parked and one while it drains:
    no valid event lost, both topics committed to their ends."""
    sc = scenario_factory(partitions=PARTITIONS, extra=EXTRA_CONFIG, faults={**FAULTS, "seed": SEED})
    fitness = sc.dests[1]
    parking = parking_topic_name("{group}.{destination}.parking", sc.group, fitness.name)
    parking_group = f"{sc.group}.parking"  # the group that reads the parking topics back
    now = int(time.time())
    records = list(generate(EVENTS, seed=SEED, now=now, app_ids=APPS_A + APPS_B, duplicate_rate=0.05))
    expected = expected_keys(records, now, sc.routes)
    positions: dict[str, list[tuple[int, int]]] = {}
    half = len(records) // 2
    produce_records(sc.bootstrap, sc.topic, records[:half])
    proc = sc.start()
    assert wait_until(lambda: len(expected & set(sc.counts())) > len(expected) // 10, WAIT_S)

    # fitness's token expires; it halts, and is parked after park_after_s while events keep coming
    token = f"tok-rotated-{uuid.uuid4().hex}"
    sc.emulator.rotate_token(fitness.dataset_id, token)
    produce_records(sc.bootstrap, sc.topic, records[half:])
    assert wait_until(lambda: _logged(proc, "parking_started"), WAIT_S), "fitness parked"
    assert wait_until(lambda: sum(end_offsets(sc.bootstrap, parking, PARTITIONS).values()) > 0, WAIT_S)
    assert wait_until(lambda: _logged(proc, "probe_failed"), WAIT_S), "the halted destination is probed"
    first = proc
    proc.kill()  # SIGKILL while parked
    proc = sc.start()
    assert sc.all_committed(WAIT_S), "the source commits to its end while fitness is parked"

    resumed = [e for p in (first, proc) for e in p.log_lines() if e.get("event") == "destination_resumed"]
    assert resumed == [], "a probe with the same refused token resumes nothing"
    # the token file is fixed: fitness drains; SIGKILL in the middle of the drain
    fitness.token_file.write_text(token + "\n")
    assert wait_until(lambda: _logged(proc, "draining_started"), WAIT_S)
    assert wait_until(lambda: sum(max(o, 0) for o in committed(sc.bootstrap, parking_group, parking,
                                                                 PARTITIONS).values()) > 0, WAIT_S)
    drained_at_kill = committed(sc.bootstrap, parking_group, parking, PARTITIONS)
    proc.kill()  # SIGKILL while draining
    proc = sc.start()
    assert wait_until(lambda: expected <= set(sc.counts()), WAIT_S), "every valid event accepted"
    parked_end = end_offsets(sc.bootstrap, parking, PARTITIONS)
    assert wait_until(lambda: committed(sc.bootstrap, parking_group, parking, PARTITIONS) == parked_end
                      or all(parked_end[p] == 0 for p in parked_end), WAIT_S), "the parking topic drained"
    assert sc.all_committed(WAIT_S)
    assert proc.stop() == 0

    source = read_topic(sc.bootstrap, sc.topic, sum(sc.end().values()), timeout=60)
    for message in source:
        positions.setdefault(message.key().decode(), []).append((message.partition(), message.offset()))
    counts = sc.counts()
    problems = [*delivery_problems(expected, counts, positions), *offset_problems(sc.committed(), sc.end())]
    assert not problems, "\n".join(problems)
    repeats = sum(c - 1 for c in counts.values())
    print(f"parked chaos: {len(expected)} valid events, parked records {sum(parked_end.values())}, "
          f"parking committed at the drain kill {drained_at_kill}, {repeats} repeats after 2 kills, "
          f"faults {sc.emulator.stats()['faults']}")
