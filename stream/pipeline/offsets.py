"""Per-partition commit points: the highest offset below which every message is finished, + 1 (pure).

A message is finished when Meta acknowledged the batch that holds it, when it was dropped as a duplicate
or for lack of consent, or when its dead-letter write was acknowledged. Batches finish out of order, so
the commit point only moves over a contiguous run of finished offsets. Offsets may have gaps
(transaction markers, compaction): only offsets actually received are tracked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class PartitionOffsets:
    """Received and finished offsets of one partition, for one assignment generation."""

    __slots__ = ("_done", "_queue", "active", "commit_point", "partition", "received", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._queue: deque[int] = deque()
        self._done: set[int] = set()
        self.commit_point: int | None = None  # next offset to read; None until something finished
        self.active = True  # False once revoked or lost: finishing then changes nothing that is committed
        # received(offset): record a consumed offset; offsets arrive in increasing order within a partition.
        # The queue's own append (called for every consumed message: no Python frame in between)
        self.received: Callable[[int], None] = self._queue.append

    def finish(self, offset: int) -> bool:
        """Mark `offset` finished. Returns True when the head of the queue moved (the commit point may
        then have moved; it never goes below a point already reached in this generation)."""
        queue = self._queue
        if queue and queue[0] == offset:
            last = queue.popleft()
            done = self._done
            while queue and queue[0] in done:
                last = queue.popleft()
                done.discard(last)
            point = queue[0] if queue else last + 1
            # offsets read again after a reset (auto.offset.reset, a seek) never lower the point reached
            if self.commit_point is None or point > self.commit_point:
                self.commit_point = point
            return True
        self._done.add(offset)
        return False

    @property
    def in_flight(self) -> int:
        """Consumed offsets not yet committable (finished ones behind an unfinished one count)."""
        return len(self._queue)

    @property
    def unfinished(self) -> int:
        """Consumed offsets of this generation not finished yet."""
        return len(self._queue) - len(self._done)

    @property
    def oldest_unfinished(self) -> int | None:
        """The offset the commit point waits for, or None when all received offsets are finished."""
        return self._queue[0] if self._queue else None


class OffsetTracker:
    """The trackers of the currently assigned partitions, and which commit points changed."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], PartitionOffsets] = {}
        self._stored: dict[tuple[str, int], int] = {}

    def assign(self, topic: str, partition: int) -> PartitionOffsets:
        """Start a fresh generation for a newly assigned partition (the old one, if any, goes inactive)."""
        self.drop(topic, partition)
        part = PartitionOffsets(topic, partition)
        self._parts[(topic, partition)] = part
        return part

    def get(self, topic: str, partition: int) -> PartitionOffsets | None:
        """The current generation's tracker, or None if the partition is not assigned."""
        return self._parts.get((topic, partition))

    def drop(self, topic: str, partition: int) -> PartitionOffsets | None:
        """Forget a partition (revoked or lost); its tracker goes inactive and is returned."""
        part = self._parts.pop((topic, partition), None)
        self._stored.pop((topic, partition), None)
        if part is not None:
            part.active = False
        return part

    def changed(self) -> dict[tuple[str, int], int]:
        """Commit points that moved since the last call (to be stored as consumer offsets)."""
        out: dict[tuple[str, int], int] = {}
        for tp, part in self._parts.items():
            point = part.commit_point
            if point is not None and self._stored.get(tp) != point:
                out[tp] = point
                self._stored[tp] = point
        return out

    def items(self) -> list[tuple[tuple[str, int], PartitionOffsets]]:
        """(topic, partition) and tracker of each assigned partition."""
        return list(self._parts.items())

    def partitions(self) -> list[PartitionOffsets]:
        """Trackers of all assigned partitions."""
        return list(self._parts.values())

    @property
    def in_flight(self) -> int:
        """Consumed messages of assigned partitions not yet committable."""
        return sum(p.in_flight for p in self._parts.values())
