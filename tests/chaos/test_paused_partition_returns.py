"""A partition that is paused for backpressure when it leaves the pipeline must flow again when it comes back.

librdkafka keeps a partition's pause across losing and regaining it. A source that paused "the current
assignment" and later resumed "the current assignment" left a partition paused forever when it was taken
away in between (a member joined the group, or the broker restarted and the session timed out) and then
returned: nothing from it was consumed or committed again, and the process looked healthy. The chaos
suite found this at its broker restart; this test reproduces it in about 20 s with a member joining.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer

from stream.tools.samples import generate
from tests.support.harness import APPS_A, APPS_B, Scenario, expected_keys, produce_records, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Slow sending (2 requests/s of 50 events) behind a small in-flight bound keeps the pipeline paused
# nearly all the time (2 s paused for each brief resume), so the partitions are paused when the other
# member takes them.
EXTRA_CONFIG = """
[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[pipeline]
max_in_flight_events = 200

[batch]
max_events = 50

[send]
rate_limit_rps = 2
"""
WAIT_S = 90.0


def test_partitions_paused_when_revoked_flow_again_when_reassigned(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """A member joins (taking paused partitions) and leaves again: every event is still accepted and committed."""
    sc = scenario_factory(partitions=4, extra=EXTRA_CONFIG)
    now = int(time.time())
    records = list(generate(1500, seed=5, now=now, app_ids=APPS_A + APPS_B))
    produce_records(sc.bootstrap, sc.topic, records)
    expected = expected_keys(records, now, sc.routes)
    proc = sc.start()
    assert wait_until(lambda: any(e.get("event") == "partitions_paused" for e in proc.log_lines()), WAIT_S)

    # another member of the group takes some partitions from the paused pipeline, then leaves
    other = Consumer({"bootstrap.servers": sc.bootstrap, "group.id": sc.group, "enable.auto.commit": False,
                      "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 6000,
                      "client.id": f"intruder-{uuid.uuid4().hex[:6]}"})
    other.subscribe([sc.topic])
    try:
        assert wait_until(lambda: other.poll(0.2) is not None or bool(other.assignment()), WAIT_S, interval=0)
    finally:
        other.close()  # its partitions go back to the pipeline

    assert sc.all_committed(WAIT_S), (
        f"committed {sc.committed()} != end {sc.end()} after the other member left; "
        f"{len(expected - set(sc.counts()))} of {len(expected)} valid events never accepted"
    )
    assert proc.stop() == 0
    assert set(sc.counts()) == expected
