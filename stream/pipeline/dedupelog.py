"""The dedupe changelog's records and the restore of one partition from them (pure).

The dedupe window lives in memory (stream/dedupe.py) and every change that matters after a crash or a
rebalance is also written to a changelog topic, partitioned like the source topic, so that the state of
source partition p is in changelog partition p and whoever owns p reads it back (the design of Kafka
Streams' and quix-streams' state stores). The records:

    key  b"b" + 8 random bytes         value  b"\\x01" + n x (8-byte     Meta acknowledged these keys of
                                        dedupe key, 8-byte ms)      the partition (one acked batch);
                                                                    each key's window runs from its time
    key  b"d" + 8-byte source offset   value  b"\\x01" + 8-byte ms   the message at that offset was
                                        + 8-byte fingerprint         dead-lettered (broker-acked) then;
                                                                     the fingerprint of its value tells
                                                                     it from another message at that
                                                                     offset (a topic created again)
    key  b"k" + 8-byte dedupe key      value  b"\\x01" + 8-byte ms   one acknowledged key: the format
                                                                     before bundles, still read back
    any key with a null value (a tombstone)                           the entry's window is over

One bundle per source partition of an acknowledged batch, not one record per key: a produce call and a
delivery report cost a few µs each on the event loop, per event that was a tenth of the pipeline's CPU,
and a restore reads a few large records instead of one per key. A bundle's id is random, so compaction
never merges two; it leaves the topic by retention (one bucket longer than the window, counted from
the record's time, which is after every key's own time), or by a tombstone once a restore finds all
its keys expired. Times are wall-clock milliseconds (the window is Meta's). Dead-letter entries are
tombstoned by the member that owns the partition when their window is over; old per-key entries by a
restore that finds them expired, else by retention.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from stream.pipeline.dedupe import DedupeStore

KIND_KEY: Final = b"k"
KIND_DEAD: Final = b"d"
KIND_BUNDLE: Final = b"b"
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


def bundle_record(entries: Sequence[tuple[int, float]]) -> tuple[bytes, bytes]:
    """(record key, value) saying each (dedupe key, accepted) of `entries` was acknowledged, its window
    running from its accepted time. The record key is random: no other bundle shares it."""
    flat: list[int] = []
    for key, accepted in entries:
        flat += (key, round(accepted * 1000))
    return KIND_BUNDLE + os.urandom(8), _VERSION_BYTE + struct.pack(f">{len(flat)}q", *flat)


def parse_bundle(value: bytes) -> list[tuple[int, float]] | None:
    """The (dedupe key, accepted) pairs of a bundle's value, or None for a value this version does not
    understand (another version byte, a length that is not whole pairs)."""
    if value[:1] != _VERSION_BYTE or (len(value) - 1) % 16:
        return None
    flat = struct.unpack_from(f">{(len(value) - 1) // 8}q", value, 1)
    return [(flat[i], flat[i + 1] / 1000) for i in range(0, len(flat), 2)]


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
    expired_bundles: set[bytes] = dataclasses.field(default_factory=set)  # record keys
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
            if key is not None and key[:1] == KIND_BUNDLE and len(key) == _KEY_SIZE:
                self._bundle(key, value)
                continue
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

    def _bundle(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.expired_bundles.discard(key)  # already tombstoned
            return
        entries = parse_bundle(value)
        if entries is None:
            self.unknown += 1
            return
        store, now, part = self.store, self.now, self.part
        live = False
        for ident, at in entries:
            if store.live(at, now):
                live = True
                self.keys += store.restore(ident, at, now, part)
        if not live:
            self.expired_bundles.add(key)

    def tombstones(self) -> list[bytes]:
        """Record keys of the entries read whose window is over: write each with a null value."""
        return ([key_tombstone(k) for k in self.expired_keys] + [dead_tombstone(o) for o in self.expired_dead]
                + sorted(self.expired_bundles))
