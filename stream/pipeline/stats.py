"""Counters the pipeline keeps while it runs (pure); the demo summary and the metrics read them."""

from __future__ import annotations

import bisect
import dataclasses
import random
import time
from collections import Counter
from typing import Generic, TypeVar

# Latency samples kept for percentiles; past this a seeded reservoir keeps a uniform sample
MAX_LATENCY_SAMPLES = 200_000
# The parts of the added latency are recorded for every PART_STRIDE-th event of each acknowledged batch
# (a sample: a tuple per event would cost CPU per event), at most this many
PART_STRIDE = 8
MAX_PART_SAMPLES = 50_000
# What the latency capi-stream adds is made of, in order (each in ms; they sum to the added latency):
#   kafka    the message's timestamp -> the consumer thread handed its consumed batch to the loop (the
#            producer's own delay when the timestamp is its CreateTime, the broker, the fetch wait, consume())
#   prepare  handed -> applied: waiting for the loop, then decode/normalize of the consumed batch it came in
#   batch    applied -> its batch closed (full, or batch.linger_ms after it opened)
#   slot     closed -> its first request started (the sender's queue: request slots, the rate limit)
#   retry    first request started -> acknowledged, less Meta's time on every attempt (backoff, splits)
PARTS = ("kafka", "prepare", "batch", "slot", "retry")


# Meta answers in < 600 ms typically and we time out at 1.5 s by default
SEND_LATENCY_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0)
# event_time -> ack: Meta wants events within an hour; it refuses them after 7 days
FRESHNESS_BOUNDS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 3 * 86400.0, 6 * 86400.0)


@dataclasses.dataclass
class Histogram:
    """Fixed-bucket counts for a Prometheus histogram (cumulative on export)."""

    bounds: tuple[float, ...]
    counts: list[int] = dataclasses.field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: list[float]) -> None:
        """Count several observations (an acknowledged batch) in one call."""
        counts, bounds, where = self.counts, self.bounds, bisect.bisect_left
        for value in values:
            counts[where(bounds, value)] += 1
        self.total += sum(values)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs including +Inf, as Prometheus wants them."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


T = TypeVar("T", float, tuple[float, ...])


@dataclasses.dataclass
class Reservoir(Generic[T]):
    """A uniform sample of at most `size` values (seeded), for percentiles."""

    size: int = MAX_LATENCY_SAMPLES
    values: list[T] = dataclasses.field(default_factory=list)
    seen: int = 0
    _rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(7))  # noqa: S311

    def add(self, value: T) -> None:
        """Keep `value` (or, once full, give it its fair chance to replace a kept one)."""
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def add_many(self, values: list[T]) -> None:
        """Keep each of `values` as `add` would (one list extend while there is room)."""
        if len(self.values) + len(values) <= self.size:
            self.values.extend(values)
            self.seen += len(values)
            return
        for value in values:
            self.add(value)

    def percentile(self, q: float) -> T | None:
        """The q-th percentile (0..100) of the kept values, or None when there are none."""
        if not self.values:
            return None
        data = sorted(self.values)
        index = min(len(data) - 1, max(0, round(q / 100 * (len(data) - 1))))
        return data[index]


@dataclasses.dataclass
class Stats:
    """What happened to the events, by stage."""

    consumed: int = 0
    decode_failures: int = 0
    rejected: Counter[str] = dataclasses.field(default_factory=Counter)
    dropped_fields: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)
    duplicates: int = 0
    no_consent: int = 0
    batches_sent: int = 0
    events_sent: int = 0
    events_acked: int = 0
    batches_acked: int = 0
    retries: Counter[str] = dataclasses.field(default_factory=Counter)
    dead_lettered: Counter[str] = dataclasses.field(default_factory=Counter)
    splits: int = 0
    halts: int = 0
    # the dedupe changelog: partitions restored, their records, bytes and seconds, and messages not
    # dead-lettered again because the changelog says they were
    restores: int = 0
    restore_records: int = 0
    restore_bytes: int = 0
    restore_seconds: float = 0.0
    restore_failures: int = 0
    dead_letters_skipped: int = 0
    send_latency: Histogram = dataclasses.field(default_factory=lambda: Histogram(SEND_LATENCY_BOUNDS))
    freshness: Histogram = dataclasses.field(default_factory=lambda: Histogram(FRESHNESS_BOUNDS))
    first_consumed_at: float = 0.0
    last_acked_at: float = 0.0
    # CPU seconds of this process (every thread) when the first message was consumed / the last ack came
    cpu_at_first_consume: float = 0.0
    cpu_at_last_ack: float = 0.0
    _latencies: Reservoir[float] = dataclasses.field(default_factory=Reservoir)
    # append -> ack minus the time Meta spent on the event's requests: what capi-stream itself adds
    _added: Reservoir[float] = dataclasses.field(default_factory=Reservoir)
    # (added, *PARTS) in ms for a sample of the acknowledged events (see PARTS)
    _parts: Reservoir[tuple[float, ...]] = dataclasses.field(
        default_factory=lambda: Reservoir[tuple[float, ...]](size=MAX_PART_SAMPLES))

    def consumed_first(self, now: float) -> None:
        """Mark the first consumed message (once)."""
        if not self.first_consumed_at:
            self.first_consumed_at = now
            self.cpu_at_first_consume = time.process_time()

    def batch_acked(self, now: float) -> None:
        """Mark an acknowledged batch's time (figures per run, read per batch, not per event)."""
        self.last_acked_at = now
        self.cpu_at_last_ack = time.process_time()

    def latency(self, ms: float, meta_ms: float = 0.0) -> None:
        """Record one append -> ack latency, of which `meta_ms` was spent in Meta's requests."""
        self._latencies.add(ms)
        self._added.add(ms - meta_ms)

    def latencies(self, ms: list[float], meta_ms: float) -> None:
        """Record the append -> ack latencies of one acknowledged batch, which waited `meta_ms` for Meta."""
        self._latencies.add_many(ms)
        self._added.add_many([m - meta_ms for m in ms])

    def added_parts(self, times: list[tuple[float, float, float]], closed: float, sent: float, acked: float,
                    meta_s: float) -> None:
        """Record the parts of the added latency (PARTS) of sampled events of one acknowledged batch.

        `times`: (append, handed to the loop, applied) of each sampled event; `closed`: when its batch
        closed, `sent`: when its first request started, `acked`: now; all wall-clock seconds. `meta_s`:
        the time the batch's requests waited for Meta's answers, every attempt.
        """
        retry = (acked - sent - meta_s) * 1000
        slot = (sent - closed) * 1000
        self._parts.add_many([((acked - append - meta_s) * 1000, (handed - append) * 1000,
                               (applied - handed) * 1000, (closed - applied) * 1000, slot, retry)
                              for append, handed, applied in times])

    def parts_summary(self) -> dict[str, dict[str, float]]:
        """Per part of the added latency: its p50 and p99 over the sample, and its mean over the slowest 1%
        of the sampled events by added latency (at least one: what they waited for); empty without samples."""
        sample = self._parts.values
        if not sample:
            return {}
        out: dict[str, dict[str, float]] = {}
        tail = sorted(sample, reverse=True)[:max(1, len(sample) // 100)]
        for index, name in enumerate(PARTS, start=1):
            values = sorted(s[index] for s in sample)
            out[name] = {"p50_ms": values[round(0.5 * (len(values) - 1))],
                         "p99_ms": values[round(0.99 * (len(values) - 1))],
                         "slowest_1pct_mean_ms": sum(s[index] for s in tail) / len(tail)}
        return out

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100) of recorded append -> ack latencies in ms, or None."""
        return self._latencies.percentile(q)

    def added_percentile(self, q: float) -> float | None:
        """The q-th percentile of the latency capi-stream adds to Meta's (append -> ack minus requests)."""
        return self._added.percentile(q)

    def summary(self) -> dict[str, object]:
        """The figures a benchmark reads after a run (JSON-friendly)."""
        span = self.last_acked_at - self.first_consumed_at if self.last_acked_at else 0.0
        return {
            "consumed": self.consumed, "acked": self.events_acked, "batches_acked": self.batches_acked,
            "duplicates": self.duplicates, "dead_lettered": sum(self.dead_lettered.values()),
            "retries": sum(self.retries.values()), "first_consumed_at": self.first_consumed_at,
            "last_acked_at": self.last_acked_at, "span_s": span,
            "p50_ms": self.percentile(50), "p99_ms": self.percentile(99), "max_ms": self.percentile(100),
            "added_p50_ms": self.added_percentile(50), "added_p99_ms": self.added_percentile(99),
            "added_max_ms": self.added_percentile(100), "added_parts": self.parts_summary(),
            "part_samples": self._parts.seen,
            "cpu_s": max(0.0, self.cpu_at_last_ack - self.cpu_at_first_consume) if self.last_acked_at else 0.0,
        }  # fmt: skip

    @property
    def finished_without_send(self) -> int:
        """Events finished by a duplicate drop, a missing consent or a dead letter."""
        return self.duplicates + self.no_consent + sum(self.dead_lettered.values())
