"""Counters the pipeline keeps while it runs (pure); the demo summary and the metrics read them."""

from __future__ import annotations

import bisect
import dataclasses
import random
from collections import Counter

# Latency samples kept for percentiles; past this a seeded reservoir keeps a uniform sample
MAX_LATENCY_SAMPLES = 200_000


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

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs including +Inf, as Prometheus wants them."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


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
    send_latency: Histogram = dataclasses.field(default_factory=lambda: Histogram(SEND_LATENCY_BOUNDS))
    freshness: Histogram = dataclasses.field(default_factory=lambda: Histogram(FRESHNESS_BOUNDS))
    first_consumed_at: float = 0.0
    last_acked_at: float = 0.0
    _latencies_ms: list[float] = dataclasses.field(default_factory=list)
    _latency_seen: int = 0
    _rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(7))  # noqa: S311

    def latency(self, ms: float) -> None:
        """Record one append -> ack latency."""
        self._latency_seen += 1
        if len(self._latencies_ms) < MAX_LATENCY_SAMPLES:
            self._latencies_ms.append(ms)
            return
        slot = self._rng.randrange(self._latency_seen)
        if slot < MAX_LATENCY_SAMPLES:
            self._latencies_ms[slot] = ms

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100) of recorded latencies in ms, or None when there are none."""
        if not self._latencies_ms:
            return None
        data = sorted(self._latencies_ms)
        index = min(len(data) - 1, max(0, round(q / 100 * (len(data) - 1))))
        return data[index]

    def summary(self) -> dict[str, float | int | None]:
        """The figures a benchmark reads after a run (JSON-friendly)."""
        span = self.last_acked_at - self.first_consumed_at if self.last_acked_at else 0.0
        return {
            "consumed": self.consumed, "acked": self.events_acked, "batches_acked": self.batches_acked,
            "duplicates": self.duplicates, "dead_lettered": sum(self.dead_lettered.values()),
            "retries": sum(self.retries.values()), "first_consumed_at": self.first_consumed_at,
            "last_acked_at": self.last_acked_at, "span_s": span,
            "p50_ms": self.percentile(50), "p99_ms": self.percentile(99), "max_ms": self.percentile(100),
        }  # fmt: skip

    @property
    def finished_without_send(self) -> int:
        """Events finished by a duplicate drop, a missing consent or a dead letter."""
        return self.duplicates + self.no_consent + sum(self.dead_lettered.values())
