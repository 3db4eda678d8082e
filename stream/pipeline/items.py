"""Small value types that travel between the stages (pure)."""

from __future__ import annotations

import dataclasses

from stream.pipeline.offsets import PartitionOffsets

TopicPartition = tuple[str, int]


@dataclasses.dataclass(slots=True)
class Item:
    """One consumed Kafka message on its way to Meta (or to the dead-letter topic).

    `offsets` is the tracker of the partition generation that consumed it: finishing an item of a
    partition that was revoked since then touches only that stale tracker, never the new owner's.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None for a tombstone (a null value)
    append_ms: int
    offsets: PartitionOffsets
    destination: str = ""
    body: bytes = b""  # the Meta server event as JSON
    event_name: str = ""
    event_id: str | None = None
    event_time: int = 0
    dedupe_key: int | None = None
    # (topic, partition, offset) where a record read back from a parking topic was first consumed
    origin: tuple[str, int, int] | None = None
    # wall-clock seconds when the consumer thread handed its consumed batch to the loop, and when the
    # loop applied it (prepared, tracked, admitted): the parts of the added latency (stats.PARTS)
    handed_at: float = 0.0
    applied_at: float = 0.0

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    def finish(self) -> bool:
        """Mark this message finished in its partition's tracker; True if the commit point moved."""
        return self.offsets.finish(self.offset)
