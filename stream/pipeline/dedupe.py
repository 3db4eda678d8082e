"""Windowed dedupe store on (dataset, event_name, event_id): pure, bounded, compact.

Meta keeps the first of two events with the same (event_name, event_id) sent to one dataset only when
they arrive within 48 hours of the first one, and promises nothing for two server events, so
capi-stream dedupes itself (stream/contract/README.md §0, §1.4). Meta's dedupe is per dataset, so the
key holds the destination's dataset id: two apps with overlapping order ids that send to two datasets
are two events each. A key goes through three states:

    unknown --check()--> PENDING --confirm()--> SENT --(window over, or evicted)--> unknown
                            `------release()------> unknown

PENDING means a batch holding the event is being sent; a key becomes SENT only once Meta acknowledged
that batch, and a send that is abandoned or dead-lettered releases the key, so a failure never turns a
later copy into a silent drop.

Memory layout (the target is <= 100 bytes per SENT key at 1M keys; a `dict[int, float]` costs ~150):
the window is cut into `buckets` coarse time buckets held in a ring of `buckets + 1` slots. A dict
(split in SHARDS by the key's low bits) maps each SENT key to its slot number, a small int that CPython
shares, so a key costs its dict entry plus its own 32-byte int; each slot keeps its keys, oldest
first, in an `array('q')` (8 bytes a key) so whole buckets expire and the oldest keys are evicted
without scanning the dict. A dict never shrinks, so a shard is rebuilt once deletions (expiries,
evictions) reach a quarter of its keys; this keeps a churning store near its first-fill size (~82 B/key
at 1M instead of ~123 without), and the shards keep each rebuild's pause short.

Granularity: with `bucket_s = window_s / buckets`, a key accepted at time `t` belongs to bucket
`b = t // bucket_s` and is forgotten once `now // bucket_s >= b + buckets + 1`, that is at
`(b + 1) * bucket_s + window_s`. So a copy is recognised for at least `window_s` after the first
accept (never less than Meta's window) and is NEW again at most `window_s + bucket_s` after it (48 h
and 49 h with the defaults).

Time is a parameter (`now`, seconds; wall-clock, because the window is Meta's). The store only moves
forward: a `now` older than one already seen expires nothing and is placed in its own bucket if that
bucket is still live.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
import sys
from array import array
from typing import Final

from stream.contract import meta
from stream.errors import CapiStreamError

# Ring slots are stored as dict values; ints up to 256 are shared objects in CPython, so a slot number
# costs the key nothing. buckets + 1 slots must therefore stay <= 257.
MAX_BUCKETS: Final = 256
# 48 buckets over Meta's 48 h window: one hour of granularity, 49 arrays; finer buckets cost nothing
# per key, only per bucket.
DEFAULT_BUCKETS: Final = 48
# ~0.4 GB at the measured ~80 B/key. It holds the whole 48 h window up to ~29 events/s on average; above
# that the oldest keys are evicted, so the effective window is max_keys / rate (~2.8 min at 30k/s),
# still far longer than a redelivery after a rebalance or a restart takes.
DEFAULT_MAX_KEYS: Final = 5_000_000
# dedupe_key keeps the top 60 bits of an 8-byte digest: a 60-bit int is two 30-bit digits in CPython,
# the 32-byte int object (64 bits would need a third digit, 36 bytes), and it fits array('q').
KEY_BITS: Final = 60
_SHIFT: Final = 64 - KEY_BITS
_LOWEST: Final = -sys.float_info.max
# Below this many deletions in a shard a rebuild would save too little to be worth the copy.
REBUILD_MIN_DELETED: Final = 64
# The key -> slot map is split by the key's low bits (hash bits, so evenly) into this many dicts, so a
# rebuild or a growth of one dict stalls the caller for 1/64 of the time a single dict would (a 1M-key
# dict takes ~0.1 s to copy on the reference machine, and the caller is the pipeline's event loop).
SHARDS: Final = 64
_SHARD_MASK: Final = SHARDS - 1


class Verdict(enum.Enum):
    """What `DedupeStore.check` says about a key."""

    NEW = "new"  # not seen: send it; the key is now reserved (PENDING) by this call
    PENDING = "pending"  # its twin is in flight: do not send a second copy now
    SENT = "sent"  # Meta acknowledged a copy within the window: drop it as a duplicate


class NotPendingError(CapiStreamError, LookupError):
    """`confirm` or `release` of a key that is not PENDING (a bug in the caller's bookkeeping)."""

    reason = "not_pending"


def dedupe_key(dataset_id: str, event_name: str, event_id: str) -> int:
    """The compact 60-bit dedupe key of (dataset_id, event_name, event_id).

    The dataset id and the name are length-prefixed before the id, so ("ab", "c") and ("a", "bc") hash
    different bytes.
    BLAKE2b (unkeyed, 8-byte digest) keeps the key stable across processes and restarts, unlike
    `hash()`. Two distinct events share a key with probability about n**2 / 2**61 among n keys held:
    ~4.3e-7 at 1M keys, ~1.1e-5 at 5M (the default bound), ~4.3e-5 at 10M; a collision makes the
    later event look like a duplicate of the other.
    """
    digest = _prefixed(dataset_id, event_name).copy()
    digest.update(event_id.encode("utf-8", "surrogatepass"))
    return int.from_bytes(digest.digest(), "big") >> _SHIFT


@functools.lru_cache(maxsize=4096)
def _prefixed(dataset_id: str, event_name: str) -> hashlib.blake2b:
    """A BLAKE2b-64 state fed with the length-prefixed dataset id and event name, never updated itself: a
    key copies it and adds its event id (a stream has a few pairs: hashed once each, not per event)."""
    dataset = dataset_id.encode("utf-8", "surrogatepass")
    name = event_name.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(len(dataset).to_bytes(4, "big") + dataset + len(name).to_bytes(4, "big") + name,
                           digest_size=8)


class _Run:
    """The SENT keys of one bucket that came from one source partition, oldest first (8 bytes a key)."""

    __slots__ = ("head", "keys")

    def __init__(self) -> None:
        self.keys: array[int] = array("q")
        self.head = 0  # index of the oldest key not yet evicted


class DedupeStore:
    """Keys seen within the window: PENDING while their batch is in flight, SENT once Meta acked it.

    Each SENT key belongs to a `part`, a small int naming the source partition whose changelog records
    it (0 for a store without a changelog): `drop_part` forgets one part's keys when its partition is
    revoked. Expired and evicted keys are simply dropped: their changelog entries leave the topic by its
    retention, one bucket longer than the window (a restore holds evicted ones again, up to max_keys).

    Invariants: `len(self) <= max_keys`; every SENT key is in exactly one run (bucket, part) and in its
    shard's dict; a key is never PENDING and SENT at once; every run held by a slot is non-empty.
    Evictions drop the oldest bucket's keys first, in the order they were confirmed within a part, and
    are counted in `evictions`; keys forgotten because their window is over are counted in `expired`.
    """

    def __init__(
        self,
        window_s: float = meta.DEDUPE_WINDOW_S,
        max_keys: int = DEFAULT_MAX_KEYS,
        *,
        buckets: int = DEFAULT_BUCKETS,
    ) -> None:
        """Raise ValueError unless window_s > 0, max_keys >= 1 and 1 <= buckets <= MAX_BUCKETS."""
        if not window_s > 0:  # also refuses NaN
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        if not 1 <= buckets <= MAX_BUCKETS:
            raise ValueError(f"buckets must be in 1..{MAX_BUCKETS}, got {buckets!r}")
        self.window_s: Final = float(window_s)
        self.max_keys: Final = max_keys
        self.buckets: Final = buckets
        self.bucket_s: Final = self.window_s / buckets
        self._ring = buckets + 1
        self._shards: list[dict[int, int]] = [{} for _ in range(SHARDS)]  # key -> slot, by key & _SHARD_MASK
        self._held = 0
        self._runs: list[dict[int, _Run]] = [{} for _ in range(self._ring)]  # per slot: part -> its keys
        self._pending: dict[int, float] = {}  # key -> `now` of the accepting check()
        self._newest = 0  # newest bucket number seen (valid once _roll_at is finite)
        # A `now` below this is surely in the newest bucket, so check() skips the (slow) float division.
        self._roll_at = -math.inf
        self._evict_from = 0  # bucket number where the oldest SENT key may be
        self._evictions = 0
        self._expired = 0
        self._deleted = [0] * SHARDS  # per shard: keys deleted since it was last rebuilt

    def __len__(self) -> int:
        """Number of SENT keys held."""
        return self._held

    @property
    def pending(self) -> int:
        """Number of PENDING keys (events in flight)."""
        return len(self._pending)

    @property
    def evictions(self) -> int:
        """SENT keys dropped before their window ended because the store held max_keys."""
        return self._evictions

    @property
    def expired(self) -> int:
        """SENT keys forgotten because their window was over."""
        return self._expired

    def check(self, key: int, now: float) -> Verdict:
        """The verdict for `key` (from dedupe_key) at `now`; NEW also reserves the key (PENDING from now on).

        Expires the buckets whose window is over at `now`. Raises ValueError for a NaN or infinite `now`.
        """
        if not _LOWEST <= now < self._roll_at:  # NaN and -inf go to _advance too, which refuses them
            self._advance(now)
        if key in self._shards[key & _SHARD_MASK]:
            return Verdict.SENT
        if key in self._pending:
            return Verdict.PENDING
        self._pending[key] = now
        return Verdict.NEW

    def accepted_at(self, key: int) -> float | None:
        """The `now` of the check() that made PENDING `key` NEW (its window starts there); None if not pending."""
        return self._pending.get(key)

    def confirm(self, key: int, now: float, part: int = 0) -> bool:
        """PENDING -> SENT: Meta acknowledged the batch holding `key`, read from source partition `part`.

        The window runs from the `now` of the check() that accepted the key, not from this call. A key
        whose window is already over is forgotten at once (counted in `expired`); returns whether the
        key is now held as SENT. When the store is full the oldest SENT key is evicted first. Raises
        NotPendingError if `key` is not PENDING.
        """
        accepted = self._pending.get(key)
        if accepted is None:
            raise NotPendingError("confirm of a key that is not pending")
        newest = self._newest if _LOWEST <= now < self._roll_at else self._advance(now)
        bucket = int(accepted // self.bucket_s)
        if bucket + self.buckets < newest:
            del self._pending[key]
            self._expired += 1
            return False
        self._hold(key, bucket, part)  # first: a key outside int64 raises OverflowError and stays PENDING
        del self._pending[key]
        return True

    def restore(self, key: int, accepted: float, now: float, part: int = 0) -> bool:
        """Hold `key` as SENT with its window running from `accepted` (a changelog entry read back).

        Returns False, changing nothing, when the key is already held or pending, or when its window is
        over at `now` (the caller then tombstones the entry). Raises ValueError for a NaN or infinite
        `accepted` or `now`.
        """
        newest = self._newest if _LOWEST <= now < self._roll_at else self._advance(now)
        try:
            bucket = int(accepted // self.bucket_s)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"accepted must be a finite number of seconds, got {accepted!r}") from exc
        if bucket + self.buckets < newest or key in self._shards[key & _SHARD_MASK] or key in self._pending:
            return False
        self._hold(key, min(bucket, newest), part)
        return True

    def advance(self, now: float) -> None:
        """Expire the buckets whose window is over at `now` (check() and confirm() do it too)."""
        if not _LOWEST <= now < self._roll_at:
            self._advance(now)

    def live(self, accepted: float, now: float) -> bool:
        """Whether a key accepted at `accepted` is still inside its window at `now` (the bucket rule)."""
        return int(accepted // self.bucket_s) + self.buckets >= int(now // self.bucket_s)

    def _hold(self, key: int, bucket: int, part: int) -> None:
        if self._held >= self.max_keys:
            self._evict_oldest()
        slot = bucket % self._ring
        runs = self._runs[slot]
        run = runs.get(part)
        if run is None:
            run = runs[part] = _Run()
        run.keys.append(key)
        self._shards[key & _SHARD_MASK][key] = slot
        self._held += 1
        if bucket < self._evict_from:
            self._evict_from = bucket

    def release(self, key: int) -> None:
        """PENDING -> unknown: the send was abandoned or dead-lettered, so a later copy is NEW again.

        Raises NotPendingError if `key` is not PENDING (a SENT key is never released).
        """
        if self._pending.pop(key, None) is None:
            raise NotPendingError("release of a key that is not pending")

    def drop_part(self, part: int) -> int:
        """Forget every SENT key of `part` (its partition went to another member); returns how many.
        Their changelog entries stay for the new owner."""
        dropped = 0
        shards, deleted = self._shards, self._deleted
        for runs in self._runs:
            run = runs.pop(part, None)
            if run is None:
                continue
            keys = run.keys
            for index in range(run.head, len(keys)):
                key = keys[index]
                del shards[key & _SHARD_MASK][key]
                deleted[key & _SHARD_MASK] += 1
            dropped += len(keys) - run.head
        self._held -= dropped
        for shard in range(SHARDS):
            self._compact_if_worn(shard)
        return dropped

    def _advance(self, now: float) -> int:
        """Move the newest bucket to `now`'s and expire the buckets that left the window; the newest."""
        try:
            current = int(now // self.bucket_s)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"now must be a finite number of seconds, got {now!r}") from exc
        newest = self._newest
        if self._roll_at == -math.inf:
            newest = self._evict_from = current
        elif current <= newest:
            return newest
        first_live = current - self.buckets
        # Only buckets that were live can hold keys, so a jump of days costs at most one ring turn.
        for bucket in range(newest - self.buckets, min(newest + 1, first_live)):
            self._expire_slot(bucket % self._ring)
        for shard in range(SHARDS):
            self._compact_if_worn(shard)
        self._newest = current
        self._evict_from = max(self._evict_from, first_live)
        # The float bound of the next bucket, lowered by far more than float rounding of `//` can move it.
        roll_at = (current + 1) * self.bucket_s
        self._roll_at = roll_at - abs(roll_at) * 1e-12
        return current

    def _expire_slot(self, slot: int) -> None:
        shards, deleted = self._shards, self._deleted
        runs, self._runs[slot] = self._runs[slot], {}
        for run in runs.values():
            keys, head = run.keys, run.head
            for index in range(head, len(keys)):
                key = keys[index]
                del shards[key & _SHARD_MASK][key]
                deleted[key & _SHARD_MASK] += 1
            self._expired += len(keys) - head
            self._held -= len(keys) - head

    def _evict_oldest(self) -> None:
        """Drop the first-confirmed key of the oldest non-empty bucket (the store is full, so one exists)."""
        for bucket in range(self._evict_from, self._newest + 1):
            runs = self._runs[bucket % self._ring]
            if runs:
                part, run = next(iter(runs.items()))  # runs are never empty
                break
        else:
            raise RuntimeError("dedupe store is full but holds no key")  # unreachable while invariants hold
        keys, head = run.keys, run.head
        key = keys[head]
        shard = key & _SHARD_MASK
        del self._shards[shard][key]
        head += 1
        if head == len(keys):
            del runs[part]
        elif head * 2 >= len(keys) and head >= 1024:
            # Drop the evicted prefix now and then, so memory stays bounded by the keys held.
            del keys[:head]
            head = 0
        run.head = head
        self._evict_from = bucket
        self._evictions += 1
        self._held -= 1
        self._deleted[shard] += 1
        self._compact_if_worn(shard)

    def _compact_if_worn(self, shard: int) -> None:
        """Rebuild one shard's dict once its deletions reach a quarter of the keys it holds.

        A CPython dict never shrinks: a deleted entry keeps its slot until the table grows, and then it
        grows to ~3x the keys held, so a store whose keys expire as new ones arrive would settle ~50%
        above its first-fill size (~123 instead of ~82 B/key at 1M). A copy is sized for the keys held.
        Its cost, O(keys in the shard), is paid for by a quarter as many deletions; for that moment both
        tables of that shard exist.
        """
        deleted = self._deleted[shard]
        if deleted >= REBUILD_MIN_DELETED and deleted * 4 >= len(self._shards[shard]):
            self._shards[shard] = dict(self._shards[shard])
            self._deleted[shard] = 0
