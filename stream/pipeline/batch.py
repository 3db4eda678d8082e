"""Per-destination batches by count, bytes and age (pure).

Each batch knows the items (and so the partition offsets) it covers. Event bodies are serialized once
when they enter a batch, so the request body is a join of bytes, never a second JSON encoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable

import orjson

from stream.pipeline.items import Item

# `{"data":[` ... `]}` around the comma-joined events
_ENVELOPE_BYTES = 12


@dataclasses.dataclass(slots=True, eq=False)
class Batch:
    """Events for one destination, sent in one request."""

    destination: str
    items: list[Item]
    nbytes: int
    opened_at: float
    attempts: int = 0
    # seconds spent waiting for Meta's answers to this batch's requests so far (every attempt)
    meta_s: float = 0.0
    # the batcher's clock when the batch closed, and when its first request started (0: not yet)
    closed_at: float = 0.0
    sent_at: float = 0.0

    def body(self, access_token: str, test_event_code: str = "") -> bytes:
        """The JSON request body: `{"data": [...], "access_token": ..., "test_event_code": ...}`."""
        bodies = b",".join([i.body for i in self.items])  # a list: join builds one from a generator anyway
        parts = [b'{"data":[', bodies, b'],"access_token":', orjson.dumps(access_token)]
        if test_event_code:
            parts += [b',"test_event_code":', orjson.dumps(test_event_code)]
        parts.append(b"}")
        return b"".join(parts)

    def retain(self, items: list[Item]) -> None:
        """Keep only `items`, a subset of this batch's (the others were given up)."""
        self.items = items
        self.nbytes = _size(items)

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, to isolate the events Meta refuses (Meta rejects a whole request for one)."""
        mid = len(self.items) // 2
        left, right = self.items[:mid], self.items[mid:]
        return (
            Batch(self.destination, left, _size(left), self.opened_at, meta_s=self.meta_s,
                  closed_at=self.closed_at, sent_at=self.sent_at),
            Batch(self.destination, right, _size(right), self.opened_at, meta_s=self.meta_s,
                  closed_at=self.closed_at, sent_at=self.sent_at),
        )


def _size(items: Iterable[Item]) -> int:
    return _ENVELOPE_BYTES + sum(len(i.body) + 1 for i in items)


class Batcher:
    """Open batches, one per destination; a batch closes when full (count or bytes) or lingered.

    A batch lingers `linger_s`, or only `idle_linger_s` (at most `linger_s`) when the caller says its
    destination is idle: nothing more is waiting to be read and a request slot is free, so waiting longer
    would add latency and save nothing.
    """

    def __init__(self, max_events: int, max_bytes: int, linger_s: float, idle_linger_s: float | None = None) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self.idle_linger_s = linger_s if idle_linger_s is None else min(idle_linger_s, linger_s)
        self._open: dict[str, Batch] = {}

    def add(self, item: Item, now: float) -> list[Batch]:
        """Put an item in its destination's open batch; return the batches that closed because full.

        A batch that would pass max_bytes with this item closes first, and the item opens the next one.
        """
        size = len(item.body) + 1
        closed: list[Batch] = []
        batch = self._open.get(item.destination)
        if batch is not None and batch.nbytes + size > self.max_bytes:
            closed.append(self._close(item.destination, now))
            batch = None
        if batch is None:
            batch = Batch(item.destination, [], _ENVELOPE_BYTES, now)
            self._open[item.destination] = batch
        batch.items.append(item)
        batch.nbytes += size
        if len(batch.items) >= self.max_events:
            closed.append(self._close(item.destination, now))
        return closed

    def _close(self, destination: str, now: float) -> Batch:
        batch = self._open.pop(destination)
        batch.closed_at = now
        return batch

    def due(self, now: float, idle: Container[str] = ()) -> list[Batch]:
        """Close and return the batches that have waited `linger_s`, or `idle_linger_s` for the
        destinations in `idle`."""
        ready = [d for d, b in self._open.items() if now - b.opened_at >= self._linger(d, idle)]
        return [self._close(d, now) for d in ready]

    def next_due(self, idle: Container[str] = ()) -> float | None:
        """When the first open batch will be due (`idle` as for due()), or None when nothing is open."""
        if not self._open:
            return None
        return min(b.opened_at + self._linger(d, idle) for d, b in self._open.items())

    def _linger(self, destination: str, idle: Container[str]) -> float:
        return self.idle_linger_s if destination in idle else self.linger_s

    def flush(self) -> list[Batch]:
        """Close and return every open batch (shutdown)."""
        out = list(self._open.values())
        self._open.clear()
        return out

    def close_holding(self, tps: set[tuple[str, int]], destinations: set[str]) -> list[Batch]:
        """Close and return the open batches of `destinations` that hold an item of one of `tps`."""
        ready = [d for d, b in self._open.items()
                 if d in destinations and any((i.topic, i.partition) in tps for i in b.items)]
        return [self._open.pop(d) for d in ready]

    def remove_partitions(self, tps: set[tuple[str, int]]) -> list[Item]:
        """Take the items of revoked partitions out of the open batches (they will not be sent)."""
        removed: list[Item] = []
        for dest, batch in list(self._open.items()):
            keep = [i for i in batch.items if (i.topic, i.partition) not in tps]
            if len(keep) != len(batch.items):
                removed.extend(i for i in batch.items if (i.topic, i.partition) in tps)
                if keep:
                    self._open[dest] = Batch(dest, keep, _size(keep), batch.opened_at)
                else:
                    del self._open[dest]
        return removed

    def remove_destination(self, destination: str) -> list[Item]:
        """Take the open batch of `destination` out and return its items (the destination is being parked)."""
        batch = self._open.pop(destination, None)
        return batch.items if batch is not None else []

    def items(self) -> list[Item]:
        """Every item waiting in an open batch."""
        return [i for b in self._open.values() for i in b.items]

    @property
    def open_events(self) -> int:
        """Events waiting in open batches."""
        return sum(len(b.items) for b in self._open.values())
