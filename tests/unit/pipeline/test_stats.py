"""Run figures the benchmarks read: latency percentiles, the latency capi-stream adds, CPU per run."""

from __future__ import annotations

import time

from stream.pipeline.stats import Reservoir, Stats


def test_added_latency_is_append_to_ack_minus_the_time_meta_held_the_requests() -> None:
    stats = Stats()
    for ms, meta_ms in ((900.0, 600.0), (400.0, 350.0), (1_000.0, 400.0)):
        stats.latency(ms, meta_ms)
    assert stats.percentile(0) == 400.0
    assert stats.percentile(100) == 1_000.0
    assert stats.added_percentile(0) == 50.0
    assert stats.added_percentile(50) == 300.0
    assert stats.added_percentile(100) == 600.0
    summary = stats.summary()
    assert (summary["added_p50_ms"], summary["added_max_ms"]) == (300.0, 600.0)


def test_cpu_seconds_run_from_the_first_consume_to_the_last_ack() -> None:
    stats = Stats()
    assert stats.summary()["cpu_s"] == 0.0  # nothing acked: no figure
    stats.consumed_first(100.0)
    first_cpu = stats.cpu_at_first_consume
    end = time.process_time() + 0.05
    while time.process_time() < end:  # burn a little CPU between the two marks
        pass
    stats.consumed_first(200.0)  # only the first call counts
    assert (stats.first_consumed_at, stats.cpu_at_first_consume) == (100.0, first_cpu)
    stats.batch_acked(101.0)
    summary = stats.summary()
    assert summary["last_acked_at"] == 101.0
    assert isinstance(summary["cpu_s"], float)
    assert summary["cpu_s"] >= 0.05


def test_reservoir_keeps_a_bounded_uniform_sample() -> None:
    sample = Reservoir(size=100)
    for value in range(10_000):
        sample.add(float(value))
    assert sample.seen == 10_000
    assert len(sample.values) == 100
    assert len(set(sample.values)) == 100
    assert max(sample.values) > 5_000  # late values get their chance, not only the first 100
    assert Reservoir().percentile(50) is None
