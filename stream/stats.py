"""Counters the pipeline keeps while it runs (pure); the demo summary and the metrics read them."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

# Latency samples kept for percentiles; past this a seeded reservoir keeps a uniform sample
MAX_LATENCY_SAMPLES = 200_000


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

    @property
    def finished_without_send(self) -> int:
        """Events finished by a duplicate drop, a missing consent or a dead letter."""
        return self.duplicates + self.no_consent + sum(self.dead_lettered.values())
