"""The dedupe changelog's records and the restore of one partition from them (pure).

The dedupe window lives in memory (stream/dedupe.py) and every change that matters after a crash or a
rebalance is also written to a compacted changelog topic, partitioned like the source topic, so that the
state of source partition p is in changelog partition p and whoever owns p reads it back (the design of
Kafka Streams' and quix-streams' state stores). A record per fact, keyed so compaction keeps the latest:

    key  b"k" + 8-byte dedupe key     value  b"\\x01" + 8-byte ms   Meta acknowledged the key; its window
                                                                     runs from that time
    key  b"d" + 8-byte source offset   value  b"\\x01" + 8-byte ms   the message at that offset was
                                        + 8-byte fingerprint         dead-lettered (broker-acked) then;
                                                                     the fingerprint of its value tells
                                                                     it from another message at that
                                                                     offset (a topic created again)
    either key with a null value (a tombstone)                        the entry's window is over

Times are wall-clock milliseconds (the window is Meta's). An entry whose window is over is tombstoned by
the member that owns the partition, when its store expires it or when a restore reads it; the topic's
retention (one bucket longer than the window) removes whatever a crash left untombstoned.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Final

from stream.pipeline.dedupe import DedupeStore

KIND_KEY: Final = b"k"
KIND_DEAD: Final = b"d"
# The value's first byte: a reader skips (and counts) values of a version it does not know, so a later
# format can be rolled out while older members still run.
VERSION: Final = 1
_VERSION_BYTE: Final = VERSION.to_bytes(1, "big")
_VALUE_SIZE: Final = 9
_DEAD_VALUE_SIZE: Final = 17  # the time, then the fingerprint of the dead-lettered message's value
_KEY_SIZE: Final = 9


class Kind(enum.Enum):
    """What a changelog record is about."""

    KEY = "key"  # a dedupe key Meta acknowledged
    DEAD = "dead"  # a source offset that was dead-lettered


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One changelog record read back; `at` is None for a tombstone."""

    kind: Kind
    ident: int  # the dedupe key, or the source offset
    at: float | None  # seconds
    check: int | None = None  # a dead letter's fingerprint of the message value


def _ident(kind: bytes, ident: int) -> bytes:
    return kind + ident.to_bytes(8, "big", signed=True)


def _time(at: float) -> bytes:
    return VERSION.to_bytes(1, "big") + round(at * 1000).to_bytes(8, "big", signed=True)


def key_record(key: int, accepted: float) -> tuple[bytes, bytes]:
    """(record key, value) saying `key` was acknowledged with its window running from `accepted`."""
    return _ident(KIND_KEY, key), _time(accepted)


def fingerprint(value: bytes | None) -> int:
    """A stable 64-bit fingerprint of a message value (BLAKE2b-64), to recognise the same message again."""
    return int.from_bytes(hashlib.blake2b(value or b"", digest_size=8).digest(), "big", signed=True)


def dead_record(offset: int, at: float, value: bytes | None) -> tuple[bytes, bytes]:
    """(record key, value) saying the source message at `offset`, whose value is `value`, was dead-lettered
    at `at`."""
    return _ident(KIND_DEAD, offset), _time(at) + fingerprint(value).to_bytes(8, "big", signed=True)


def dead_letter_seen(dead: Mapping[int, tuple[float, int | None]], offset: int, value: bytes | None) -> bool:
    """True when the message at `offset` with `value` is the one the changelog says was dead-lettered.

    A different message at that offset (the topic was deleted and created again), or a record without a
    fingerprint, is not: it is processed again, never dropped on the strength of another message's record.
    """
    seen = dead.get(offset)
    return seen is not None and seen[1] is not None and seen[1] == fingerprint(value)


def key_tombstone(key: int) -> bytes:
    """The record key whose null value removes `key`'s entry."""
    return _ident(KIND_KEY, key)


def dead_tombstone(offset: int) -> bytes:
    """The record key whose null value removes `offset`'s dead-letter entry."""
    return _ident(KIND_DEAD, offset)


def parse(key: bytes | None, value: bytes | None) -> Entry | None:
    """The entry of one record, or None for a record this version does not understand."""
    if key is None or len(key) != _KEY_SIZE:
        return None
    kind = Kind.KEY if key[:1] == KIND_KEY else Kind.DEAD if key[:1] == KIND_DEAD else None
    if kind is None:
        return None
    ident = int.from_bytes(key[1:], "big", signed=True)
    if value is None:
        return Entry(kind, ident, None)
    if value[:1] != _VERSION_BYTE:
        return None
    if len(value) == _VALUE_SIZE:
        return Entry(kind, ident, int.from_bytes(value[1:], "big", signed=True) / 1000)
    if kind is Kind.DEAD and len(value) == _DEAD_VALUE_SIZE:
        return Entry(kind, ident, int.from_bytes(value[1:9], "big", signed=True) / 1000,
                     int.from_bytes(value[9:], "big", signed=True))
    return None


def retention_ms(store: DedupeStore) -> int:
    """The changelog's retention: one bucket longer than the window, the longest a key is held."""
    return math.ceil((store.window_s + store.bucket_s) * 1000)


@dataclasses.dataclass
class Restore:
    """Applies one changelog partition, record by record in log order, to the store and the dead-letter set.

    Keys inside their window go into `store` under `part`; dead-lettered offsets inside the window into
    `dead` (offset -> (time, fingerprint)). Entries whose window is over, and not superseded later in the log, are
    collected to be tombstoned. Nothing is held but what the store keeps and the expired identifiers.
    """

    store: DedupeStore
    part: int
    now: float
    dead: dict[int, tuple[float, int | None]] = dataclasses.field(default_factory=dict)
    expired_keys: set[int] = dataclasses.field(default_factory=set)
    expired_dead: set[int] = dataclasses.field(default_factory=set)
    records: int = 0
    nbytes: int = 0
    keys: int = 0
    unknown: int = 0

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Apply records (key, value) in log order."""
        store, now, part, dead = self.store, self.now, self.part, self.dead
        for key, value in records:
            self.records += 1
            self.nbytes += len(key or b"") + len(value or b"")
            entry = parse(key, value)
            if entry is None:
                self.unknown += 1
                continue
            if entry.kind is Kind.KEY:
                if entry.at is None:
                    self.expired_keys.discard(entry.ident)  # already tombstoned
                elif store.live(entry.at, now):
                    self.expired_keys.discard(entry.ident)
                    self.keys += store.restore(entry.ident, entry.at, now, part)
                else:
                    self.expired_keys.add(entry.ident)
            elif entry.at is None:
                self.expired_dead.discard(entry.ident)
                dead.pop(entry.ident, None)
            elif store.live(entry.at, now):
                self.expired_dead.discard(entry.ident)
                dead[entry.ident] = (entry.at, entry.check)
            else:
                self.expired_dead.add(entry.ident)
                dead.pop(entry.ident, None)

    def tombstones(self) -> list[bytes]:
        """Record keys of the entries read whose window is over: write each with a null value."""
        return [key_tombstone(k) for k in self.expired_keys] + [dead_tombstone(o) for o in self.expired_dead]
