"""user_data: apply the field table to every key, hash, dedupe and sort (pure).

Hashed keys leave as SHA-256 lowercase hex. The list keys Meta documents as "string or list" (em, ph,
fn, ..., external_id) always leave as a sorted, deduplicated JSON array, even for one value, so payloads
are stable (meta-capi.md §0). The SDK-only keys f5first, f5last, fi, dobd, dobm, doby leave as one hashed
string: Meta's parameter pages do not list them and the SDK, their only definition, sends single strings,
and a type Meta does not expect would get the whole batch of up to 1,000 events rejected.

A value that is 64 hex characters after trim is taken as an SHA-256 already and only lowercased
(never hashed twice); any other value is normalized, and dropped with a reason if nothing valid remains.
Hashes are cached on (normalizer, raw value) in a bounded LRU: real streams repeat a person's values on
every event, and a hit skips normalization (a phone parse costs ~40 µs) and SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from stream import fields, meta
from stream.fields import EMPTY, FIELD_REASONS, INTEGER_FIELDS, INVALID_TYPE, RAW_NORMALIZERS

# Enough for the distinct values of ~10,000 people seen recently (about 10 keys each); ~200 bytes per
# entry, so ~20 MB at most. The cache keeps hashes of personal data in process memory only.
DEFAULT_HASH_CACHE_SIZE: Final = 100_000
UNKNOWN_FIELD: Final = "unknown_field"
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_LIST, _SCALAR, _RAW = "list", "scalar", "raw"
_KINDS: Final = {
    **dict.fromkeys(meta.HASHED_LIST_FIELDS, _LIST), **dict.fromkeys(meta.HASHED_SCALAR_FIELDS, _SCALAR),
    **dict.fromkeys(RAW_NORMALIZERS, _RAW),
}


@dataclass(frozen=True, slots=True)
class Dropped:
    """A field (or one value of a list field) left out of the event, and why (e.g. invalid_phone)."""

    field: str
    reason: str


def hash_value(normalizer: fields.FieldNormalizer, value: str) -> str | None:
    """SHA-256 hex of `normalizer(value)`, the lowercased value if it is a hash already, None if invalid."""
    text = value.strip()
    if len(text) == 64 and _SHA256_HEX.fullmatch(text):
        return text.lower()
    normalized = normalizer(value)
    return None if normalized is None else hashlib.sha256(normalized.encode()).hexdigest()


_hash: Callable[[fields.FieldNormalizer, str], str | None] = functools.lru_cache(
    maxsize=DEFAULT_HASH_CACHE_SIZE)(hash_value)


def set_hash_cache_size(maxsize: int) -> None:
    """Use a fresh LRU hash cache of `maxsize` entries; 0 turns caching off (for benchmarks and tests)."""
    global _hash  # one process-wide cache, swapped as a whole
    _hash = functools.lru_cache(maxsize=maxsize)(hash_value) if maxsize > 0 else hash_value


def hash_cache_stats() -> tuple[int, int]:
    """(hits, misses) of the current hash cache; (0, 0) when caching is off."""
    info = getattr(_hash, "cache_info", None)
    if info is None:
        return (0, 0)
    stats = info()
    return (stats.hits, stats.misses)


def _reason(key: str, value: str) -> str:
    return FIELD_REASONS.get(key, EMPTY) if value.strip() else EMPTY


def _hashed_list(key: str, value: Any, normalize: fields.FieldNormalizer,
                 dropped: list[Dropped]) -> list[str] | None:
    if type(value) is str:
        digest = _hash(normalize, value)
        if digest is None:
            dropped.append(Dropped(f"user_data.{key}", _reason(key, value)))
            return None
        return [digest]
    if not isinstance(value, list | tuple):
        dropped.append(Dropped(f"user_data.{key}", INVALID_TYPE))
        return None
    digests = set()
    for item in value:
        digest = _hash(normalize, item) if type(item) is str else None
        if digest is None:
            reason = _reason(key, item) if type(item) is str else INVALID_TYPE
            dropped.append(Dropped(f"user_data.{key}", reason))
        else:
            digests.add(digest)
    return sorted(digests) or None


def _raw_list(key: str, value: Any, dropped: list[Dropped]) -> list[str] | None:
    items = [value] if type(value) is str else value if isinstance(value, list | tuple) else None
    if items is None:
        dropped.append(Dropped(f"user_data.{key}", INVALID_TYPE))
        return None
    kept = set()
    for item in items:
        text = fields.external_id(item) if type(item) is str else None
        if text is None:
            dropped.append(Dropped(f"user_data.{key}", EMPTY if type(item) is str else INVALID_TYPE))
        else:
            kept.add(text)
    return sorted(kept) or None


def _raw(key: str, value: Any, dropped: list[Dropped]) -> str | int | None:
    if type(value) is int and key in INTEGER_FIELDS:
        value = str(value)  # JSON input may carry the id as a number already
    if type(value) is not str:
        dropped.append(Dropped(f"user_data.{key}", INVALID_TYPE))
        return None
    text = RAW_NORMALIZERS[key](value)
    if text is None:
        dropped.append(Dropped(f"user_data.{key}", _reason(key, value)))
        return None
    return int(text) if key in INTEGER_FIELDS else text


def normalize_user_data(user_data: Mapping[str, Any], table: Mapping[str, fields.FieldNormalizer], *,
                        hash_external_id: bool, dropped: list[Dropped]) -> dict[str, Any]:
    """Meta's user_data object for `user_data` (raw or pre-hashed values); drops are appended to `dropped`.

    `table` comes from `fields.field_table(country, max_year)`. Absent (None) keys are skipped; an
    unknown key is dropped with `unknown_field`. Never raises on any value.
    """
    out: dict[str, Any] = {}
    cached = _hash
    for key, value in user_data.items():
        if value is None:
            continue
        result: Any
        kind = _KINDS.get(key)
        if kind is _LIST and type(value) is str and (key != "external_id" or hash_external_id):
            # hot path: one string for a hashed list key, usually a cache hit
            if (digest := cached(table[key], value)) is not None:
                out[key] = [digest]
            else:
                dropped.append(Dropped(f"user_data.{key}", _reason(key, value)))
            continue
        if kind is _LIST:
            if key == "external_id" and not hash_external_id:
                result = _raw_list(key, value, dropped)
            else:
                result = _hashed_list(key, value, table[key], dropped)
        elif kind is _SCALAR:
            result = _hash(table[key], value) if type(value) is str else None
            if result is None:
                reason = _reason(key, value) if type(value) is str else INVALID_TYPE
                dropped.append(Dropped(f"user_data.{key}", reason))
        elif kind is _RAW:
            result = _raw(key, value, dropped)
        else:
            dropped.append(Dropped(f"user_data.{key}", UNKNOWN_FIELD))
            continue
        if result is not None:
            out[key] = result
    return out
