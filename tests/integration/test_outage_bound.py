"""One destination answers 500 for a long stretch while the other flows on the same partitions (issue #12,
defects 4 and 5).

Real broker, two emulators over sockets (fitness's answers 500 to everything until it recovers), `capi-stream
run` as a subprocess. Fitness's oldest event holds each partition's commit point, so the offsets behind it
pile up: the process must hold at most `max_held_per_partition` of them per partition (plus what was
already consumed when the pause took effect), pause those partitions, resume them once fitness recovers,
and lose nothing. Fitness events that reach their delivery deadline (event_time + 7 days - margin)
during the outage are dead-lettered with reason delivery_deadline, and their partitions move on.

The oracle is independent of the pipeline's code: every generated record carries consent and is valid.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from stream.emulator import EmulatorThread
from stream.pipeline.deadletters import HEADER_EVENT_ID, HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON
from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    APPS_B,
    Scenario,
    consenting,
    end_offsets,
    headers_of,
    metric,
    produce_records,
    read_topic,
    scrape,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 2
EVENTS = 6000
BOUND = 1000  # pipeline.max_held_per_partition
CONSUME_BATCH = 100  # kafka.consume_batch_size
# Past the bound before the pause takes effect: the rest of the batch that crossed it (< 1 batch) and what
# the source had handed to the event loop but the loop had not applied yet (< HANDOFF_BATCHES + 1 = 5)
SLACK = 6 * CONSUME_BATCH
MARGIN_S = 3600  # send.deadline_margin_s (the default)
SEVEN_DAYS = 7 * 24 * 3600  # Meta refuses events older than this (written out, not imported)
DEADLINE_IN_S = 15  # the first fitness events reach their deadline this long after they are made
DEADLINE_EVENTS = 20
WAIT_S = 120.0
EXTRA = f"""
[pipeline]
max_in_flight_events = 20000
max_held_per_partition = {BOUND}

[batch]
max_events = 100
linger_ms = 50

[send]
timeout_s = 15.0
backoff_initial_s = 0.05
backoff_max_s = 0.5
deadline_margin_s = {MARGIN_S}.0
"""


def test_a_long_500_outage_of_one_destination_holds_memory_pauses_resumes_and_loses_nothing(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """Fitness answers 500 while shop flows: bounded held offsets, pause, deadline letters, resume, no loss."""
    sc = scenario_factory(partitions=PARTITIONS, extra=EXTRA)
    shop, fitness = sc.dests
    broken = EmulatorThread(tokens={fitness.dataset_id: fitness.token_file.read_text().strip()}).start()
    try:
        broken.set_faults({"http_500": 1.0})
        fitness.base_url = broken.url
        sc.rewrite_config(EXTRA)
        text = sc.config.read_text()
        sc.config.write_text(text.replace("[kafka]\n", f"[kafka]\nconsume_batch_size = {CONSUME_BATCH}\n", 1))
        now = int(time.time())
        doomed = consenting(generate(DEADLINE_EVENTS, seed=41, now=now, app_ids=APPS_B))
        for index, record in enumerate(doomed):
            record["event_id"] = f"doomed-{index}"
            record["event_time"] = now - SEVEN_DAYS + MARGIN_S + DEADLINE_IN_S
        records = consenting(generate(EVENTS, seed=42, now=now, app_ids=APPS_A + APPS_B))
        # the doomed events come first, so they hold the commit points until their deadline
        assert produce_records(sc.bootstrap, sc.topic, doomed) == DEADLINE_EVENTS
        assert produce_records(sc.bootstrap, sc.topic, records) == EVENTS
        dataset = sc.datasets
        expected = {(dataset[r["app_id"]], r["event_name"], r["event_id"]) for r in records}
        expected_shop = {k for k in expected if k[0] == shop.dataset_id}

        port = free_port()
        proc = sc.start_member(port)
        held: list[float] = []
        paused: list[float] = []

        def watch() -> dict[str, float]:
            samples = scrape(port)
            if ("capi_stream_held_offsets_max", ()) not in samples:
                return {}
            held.append(metric(samples, "capi_stream_held_offsets_max"))
            paused.append(metric(samples, "capi_stream_paused_partitions"))
            return {"held": held[-1], "paused": paused[-1]}

        # 1. fitness fails, shop flows until each partition holds its bound behind fitness's oldest event
        assert wait_until(lambda: watch().get("paused") == PARTITIONS, WAIT_S), (
            f"both partitions must pause at their bound: held {held[-5:]}, paused {paused[-5:]}"
        )
        assert sc.counts(), "shop flows meanwhile"
        assert not set(sc.counts()) >= expected_shop, "the pause must come before shop's events are all sent"

        # 2. the doomed events reach their deadline: dead-lettered, and their partitions move on
        def doomed_letters() -> list[dict[str, str]]:
            watch()
            total = end_offsets(sc.bootstrap, sc.dlq_topic, 1)[0]
            if total < DEADLINE_EVENTS:
                return []
            return [headers_of(m) for m in read_topic(sc.bootstrap, sc.dlq_topic, total, timeout=30)]

        assert wait_until(lambda: len(doomed_letters()) >= DEADLINE_EVENTS, WAIT_S), (
            "the doomed events must be dead-lettered at their deadline"
        )
        letters = doomed_letters()
        assert Counter(h[HEADER_REASON] for h in letters) == {"delivery_deadline": DEADLINE_EVENTS}
        assert sorted(h[HEADER_EVENT_ID] for h in letters) == sorted(r["event_id"] for r in doomed)
        last_doomed = {p: max(int(h[HEADER_OFFSET]) for h in letters if int(h[HEADER_PARTITION]) == p)
                       for p in {int(h[HEADER_PARTITION]) for h in letters}}
        assert wait_until(lambda: all(sc.committed()[p] > o for p, o in last_doomed.items()), WAIT_S), (
            f"the partitions move on past their doomed events {last_doomed}: committed {sc.committed()}"
        )
        assert watch().get("paused") == PARTITIONS, "fitness's fresh events still hold the partitions"

        # 3. fitness recovers: the partitions resume and everything is delivered
        broken.set_faults({})
        assert sc.all_committed(), f"committed {sc.committed()} != end {sc.end()}"
        assert wait_until(lambda: watch().get("paused") == 0, 30), "the partitions must resume"
        peak_rss = proc.peak_rss_mb()
        assert proc.stop() == 0

        assert max(held) <= BOUND + SLACK, f"held offsets reached {max(held)} (bound {BOUND} + {SLACK})"
        assert max(held) >= BOUND, "the bound must have been reached"
        counts = sc.counts() + Counter({(r["dataset_id"], r["event_name"], r["event_id"]): r["count"]
                                        for r in broken.received()})
        assert set(counts) == expected, f"lost: {sorted(expected - set(counts))[:3]}"
        assert [k for k, c in counts.items() if c != 1] == []
        print(f"outage: {EVENTS} events + {DEADLINE_EVENTS} past their deadline, held offsets peak {max(held):.0f} "
              f"(bound {BOUND}), paused both partitions, {DEADLINE_EVENTS} delivery_deadline letters, 0 lost, "
              f"0 repeats, peak RSS {peak_rss:.0f} MB")
    finally:
        broken.stop()
