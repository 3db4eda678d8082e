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


def test_a_batch_of_latencies_is_kept_as_one_by_one() -> None:
    """The per-batch calls the runner makes on an ack give the figures the per-event ones give."""
    rng = __import__("random").Random(3)
    batches = [[rng.uniform(0, 5_000) for _ in range(rng.randrange(1, 900))] for _ in range(400)]
    one, many = Stats(), Stats()
    one._latencies.size = many._latencies.size = one._added.size = many._added.size = 50_000
    for batch in batches:
        meta_ms = rng.uniform(0, 700)
        for ms in batch:
            one.latency(ms, meta_ms)
        many.latencies(batch, meta_ms)
    assert one._latencies.values == many._latencies.values  # same seeded reservoir, past its size too
    assert one._added.values == many._added.values
    assert many._latencies.seen == sum(map(len, batches)) > 50_000
    for q in (50, 99, 100):
        assert one.percentile(q) == many.percentile(q)
        assert one.added_percentile(q) == many.added_percentile(q)


def test_histogram_observe_many_counts_as_observe() -> None:
    values = [0.0, 0.01, 0.011, 0.3, 2.5, 9.9, 10.0, 11.0, 1e9]
    one, many = Stats().send_latency, Stats().send_latency
    for value in values:
        one.observe(value)
    many.observe_many(values)
    assert one.counts == many.counts
    assert one.total == many.total


def test_the_parts_of_the_added_latency_sum_to_it_and_name_what_the_slowest_waited_for() -> None:
    """Each sampled event's parts (kafka, prepare, batch, slot, retry) add up to append -> ack minus Meta's
    time; the tail figures are the means over the events at or above the added p99."""
    stats = Stats()
    assert stats.parts_summary() == {}
    # 99 quick events: appended at 10.0, handed 10.01, applied 10.02; batch closed 10.05, sent 10.06,
    # acked 10.56 after 0.5 s with Meta
    stats.added_parts([(10.0, 10.01, 10.02)] * 99, closed=10.05, sent=10.06, acked=10.56, meta_s=0.5)
    # one slow event: its batch waited 0.2 s for a slot and 0.3 s of backoff on top of Meta's 0.5 s
    stats.added_parts([(20.0, 20.01, 20.02)], closed=20.05, sent=20.25, acked=21.05, meta_s=0.5)
    parts = stats.parts_summary()
    assert list(parts) == ["kafka", "prepare", "batch", "slot", "retry"]
    assert round(parts["kafka"]["p50_ms"]) == 10
    assert round(parts["batch"]["p99_ms"]) == 30
    assert round(parts["slot"]["p50_ms"]) == 10
    assert round(parts["slot"]["slowest_1pct_mean_ms"]) == 200
    assert round(parts["retry"]["slowest_1pct_mean_ms"]) == 300
    assert round(parts["retry"]["p50_ms"]) == 0
    for added, *rest in stats._parts.values:
        assert round(added, 6) == round(sum(rest), 6)
    assert stats.summary()["part_samples"] == 100
