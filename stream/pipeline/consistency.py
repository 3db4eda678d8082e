"""User consistency: does an external_id always come with the same email and phone? (pure)

An inconsistent identity (one external_id sent with two emails) confuses Meta's matching, so capi-stream
remembers, per destination, compact fingerprints of the em and ph hashes seen with each external_id
(the hashed values as sent) within the dedupe window, and counts an event as inconsistent when its
external_id arrives with an em or ph different from the ones remembered.

Memory is bounded: at most `max_ids` external_ids per tracker, least recently seen evicted first (and
counted). An entry is one OrderedDict slot keyed by a 60-bit fingerprint of the external_id, valued by
one int packing the em and ph fingerprints (32 bits each), the last-seen time and a flag
(`capi-stream bench consistency` measures the bytes per id). Nothing here keeps a value or a hash: the
fingerprints are prefixes too short to look anything up with, and only counts leave this module.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

# 32-bit em/ph fingerprints: two different values collide once in 4 billion comparisons
# 60-bit external_id keys: a 32-byte int in CPython (64 bits would take 36), and 1M ids collide with
# a chance of about 1 in 2 million
ID_BITS = 60
_VALUE_BITS = 32
_VALUE_MASK = (1 << _VALUE_BITS) - 1
_PH_SHIFT = 0
_EM_SHIFT = _VALUE_BITS
# last-seen time in whole seconds, then the flag that the id was already counted inconsistent
_TIME_SHIFT = 2 * _VALUE_BITS
_TIME_BITS = 40
_FLAG = 1 << (_TIME_SHIFT + _TIME_BITS)
_TIME_MASK = (1 << _TIME_BITS) - 1

Identity = tuple[int, int, int]  # external_id fingerprint (60 bits), em fingerprint, ph fingerprint (0: none)


def _one(value: str, bits: int) -> int:
    """A `bits`-wide fingerprint of one value: the prefix of a SHA-256 hex digest, else of a BLAKE2b one."""
    if len(value) == 64:
        try:
            return int(value[: bits // 4], 16)
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big") >> (64 - bits)


def fingerprint(values: object, bits: int = _VALUE_BITS) -> int:
    """A fingerprint of a user_data field (a str or a list of them, as sent); 0 when it holds none.

    Several values give one fingerprint of the set (order does not matter). Never 0 for a value.
    """
    if type(values) is list and len(values) == 1:
        # the usual shape: one SHA-256 hex digest in a list; its prefix is the fingerprint
        value = values[0]
        if type(value) is str and len(value) == 64:
            try:
                return int(value[: bits // 4], 16) or 1
            except ValueError:
                pass
    if isinstance(values, str):
        return _one(values, bits) or 1
    if not isinstance(values, Sequence) or not values:
        return 0
    fp = 0
    for value in set(values):
        if isinstance(value, str):
            fp ^= _one(value, bits)
    return fp or 1


def identity(user_data: object) -> Identity | None:
    """The (external_id, em, ph) fingerprints of a normalized user_data, or None without an external_id."""
    if type(user_data) is not dict:
        return None
    external = user_data.get("external_id")
    if external is None:
        return None
    key = fingerprint(external, ID_BITS)
    if not key:
        return None
    return key, fingerprint(user_data.get("em")), fingerprint(user_data.get("ph"))


class Outcome(enum.IntEnum):
    """What one event said about its external_id."""

    UNCHECKED = 0  # no em and no ph to compare
    NEW = 1  # first time the id is seen (within the window): remembered
    CONSISTENT = 2  # same em and ph as remembered (or only fields not seen before)
    INCONSISTENT = 3  # an em or ph different from the one remembered; the id was already counted
    FIRST_INCONSISTENT = 4  # the same, and the first time for this id: count the id


class ConsistencyTracker:
    """External_id -> the em and ph fingerprints seen with it, LRU-bounded, entries expiring after `window_s`."""

    def __init__(self, window_s: float, max_ids: int) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.window_s = window_s
        self.max_ids = max_ids
        self._ids: OrderedDict[int, int] = OrderedDict()
        self._expired_at = -1  # the last second expiry ran for: once a second is enough
        self.evictions = 0  # dropped because the tracker was full (their history is forgotten)
        self.expired = 0  # dropped because not seen within the window

    def __len__(self) -> int:
        return len(self._ids)

    def observe(self, ident: Identity, now: float) -> Outcome:
        """Compare an event's em and ph with those remembered for its external_id, then remember them."""
        external, em, ph = ident
        if not em and not ph:
            return Outcome.UNCHECKED
        seconds = int(now) & _TIME_MASK
        if seconds != self._expired_at:
            self._expired_at = seconds
            self._expire(seconds)
        ids = self._ids
        packed = ids.get(external)
        if packed is None:
            if len(ids) >= self.max_ids:
                ids.popitem(last=False)
                self.evictions += 1
            ids[external] = (em << _EM_SHIFT) | (ph << _PH_SHIFT) | (seconds << _TIME_SHIFT)
            return Outcome.NEW
        ids.move_to_end(external)
        old_em = (packed >> _EM_SHIFT) & _VALUE_MASK
        old_ph = (packed >> _PH_SHIFT) & _VALUE_MASK
        flagged = packed & _FLAG
        conflict = (em and old_em and em != old_em) or (ph and old_ph and ph != old_ph)
        # the first values seen stay the reference; a field seen for the first time is added
        ids[external] = (((old_em or em) << _EM_SHIFT) | ((old_ph or ph) << _PH_SHIFT) | (seconds << _TIME_SHIFT)
                         | (_FLAG if flagged or conflict else 0))
        if not conflict:
            return Outcome.CONSISTENT
        return Outcome.INCONSISTENT if flagged else Outcome.FIRST_INCONSISTENT

    def _expire(self, seconds: int) -> None:
        """Forget the least recently seen ids older than the window (the front of the LRU order)."""
        ids = self._ids
        horizon = seconds - self.window_s
        while ids:
            first = next(iter(ids))
            if (ids[first] >> _TIME_SHIFT) & _TIME_MASK >= horizon:
                return
            del ids[first]
            self.expired += 1
