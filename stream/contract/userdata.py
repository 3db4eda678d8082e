"""user_data: apply the field table to every key, hash, dedupe and sort (pure).

Hashed keys leave as SHA-256 lowercase hex. The list keys Meta documents as "string or list" (em, ph,
fn, ..., external_id) always leave as a sorted, deduplicated JSON array, even for one value, so payloads
are stable (contract README §0). The SDK-only keys f5first, f5last, fi, dobd, dobm, doby leave as one hashed
string: Meta's parameter pages do not list them and the SDK, their only definition, sends single strings,
and a type Meta does not expect would get the whole batch of up to 1,000 events rejected.

A value that is 64 hex characters after trim is taken as an SHA-256 already and only lowercased
(never hashed twice); any other value is normalized, and dropped with a reason if nothing valid remains.
Real streams repeat a person's values on every event of that person, so three bounded LRU caches keep
the work once per value: a person's identifiers together (all keys but the IP address), each hashed
value on (normalizer, raw value) as the key leaves it (digest, or one-value list), and IP addresses
other than plain IPv4 (an IPv6 check costs ~4 µs). A hit skips normalization (a phone parse costs
~40 µs) and SHA-256. The other raw keys (a trim, a regex) and plain IPv4 addresses (one regex match)
cost less than a cache lookup, and their values are often unique per event (anon_id, madid, the
address): caching them only churned the cache. A fourth keeps one shared one-value list per digest
(fewer objects for the garbage collector).
`set_hash_cache_size(0)` turns them all off, with identical results.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, cast

from stream.contract import fields, meta
from stream.contract.fields import EMPTY, FIELD_REASONS, INTEGER_FIELDS, INVALID_TYPE, RAW_NORMALIZERS
from stream.contract.results import Dropped

# Enough for the distinct values of ~10,000 people seen recently (about 10 keys each); ~200 bytes per
# entry, so ~20 MB at most. The cache keeps hashes of personal data in process memory only.
DEFAULT_HASH_CACHE_SIZE: Final = 100_000
# The identifiers of ~10,000 recently seen people, one entry each (~2 KB: raw values and output).
DEFAULT_GROUP_CACHE_SIZE: Final = 10_000
UNKNOWN_FIELD: Final = "unknown_field"
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
# None, "" and [] are "no value": the schema's absent optional, or how apps write "unknown".
_PRESENT: Final = operator.itemgetter(1)
_LIST, _SCALAR, _RAW = "list", "scalar", "raw"
HASHED_KEYS: Final = meta.HASHED_LIST_FIELDS + meta.HASHED_SCALAR_FIELDS
RAW_KEYS: Final = tuple(RAW_NORMALIZERS)
_KNOWN_KEYS: Final = frozenset(HASHED_KEYS + RAW_KEYS)
# Keys that change from event to event of one person (the address follows the network); the other keys
# are a person's identifiers and are normalized and cached together.
_IP_KEY: Final = "client_ip_address"
VOLATILE_KEYS: Final = (_IP_KEY,)
_IP: Final = RAW_NORMALIZERS[_IP_KEY]
# An IPv4 address as sent, no space around it, is valid and leaves unchanged (fields.ip_address): one C
# call, no cache. Per-event addresses would only churn an LRU cache, and a miss costs more than the check.
_PLAIN_IPV4: Final = fields.PLAIN_IPV4
PERSON_KEYS: Final = HASHED_KEYS + tuple(k for k in RAW_KEYS if k not in VOLATILE_KEYS)
# The last PERSON_KEYS, which the Avro UserData record lacks (a JSON record may still send them).
_NOT_IN_AVRO: Final = ("ig_account_id", "ig_sid")
# A decoded Avro record has exactly these keys: the IP address, then the person's keys in PERSON_KEYS
# order. One C call reads them all. Any other key set (a JSON record, a changed schema) raises KeyError
# or fails the length check and takes the general path, so these keys decide speed, never results.
_AVRO_KEYS: Final = (_IP_KEY, *PERSON_KEYS[: -len(_NOT_IN_AVRO)])
_read_avro_keys: Final = operator.itemgetter(*_AVRO_KEYS)
_NO_TABLE: Final[Mapping[str, fields.FieldNormalizer]] = {}  # raw keys need no field table
_KINDS: Final = {
    **dict.fromkeys(meta.HASHED_LIST_FIELDS, _LIST),
    **dict.fromkeys(meta.HASHED_SCALAR_FIELDS, _SCALAR),
    **dict.fromkeys(RAW_NORMALIZERS, _RAW),
}


def hash_value(normalizer: fields.FieldNormalizer, value: str) -> str | None:
    """SHA-256 hex of `normalizer(value)`, the lowercased value if it is a hash already, None if invalid."""
    text = value.strip()
    if len(text) == 64 and _SHA256_HEX.fullmatch(text):
        return text.lower()
    normalized = normalizer(value)
    return None if normalized is None else hashlib.sha256(normalized.encode()).hexdigest()


def raw_value(normalizer: fields.FieldNormalizer, value: str) -> str | None:
    """`normalizer(value)` for an IP address that is not plain IPv4 (cached: an IPv6 check costs ~4 µs)."""
    return normalizer(value)


def hashed_item(normalizer: fields.FieldNormalizer, value: str, listed: bool) -> list[str] | str | None:
    """What a hashed key leaves as: the digest (hash_value), in its shared one-value list when `listed`.

    Cached on (normalizer, value, listed): a list key's hit is one lookup, not a digest and then a list.
    """
    digest = hash_value(normalizer, value)
    return _single(digest) if listed and digest is not None else digest


def single_list(digest: str) -> list[str]:
    """The one-value list a hashed list field leaves as; cached, so people who share a value share it.

    Every list kept in the person cache is an object the garbage collector walks on each full
    collection; shared lists keep that count at one per distinct value instead of one per person.
    """
    return [digest]


_Cached = Callable[[fields.FieldNormalizer, str], "str | None"]
_Hashed = Callable[[fields.FieldNormalizer, str, bool], "list[str] | str | None"]
_hash: _Hashed = functools.lru_cache(maxsize=DEFAULT_HASH_CACHE_SIZE)(hashed_item)
_raw_value: _Cached = functools.lru_cache(maxsize=DEFAULT_HASH_CACHE_SIZE // 4)(raw_value)
_single: Callable[[str], list[str]] = functools.lru_cache(maxsize=DEFAULT_HASH_CACHE_SIZE)(single_list)


def set_hash_cache_size(maxsize: int) -> None:
    """Use fresh LRU caches (hashes and lists: `maxsize` entries, raw keys: a quarter); 0 turns them off."""
    global _hash, _raw_value, _group, _single  # one process-wide cache each, swapped as a whole
    _single = functools.lru_cache(maxsize=maxsize)(single_list) if maxsize > 0 else single_list
    _group = functools.lru_cache(maxsize=max(1, maxsize // 10))(person_group) if maxsize > 0 else person_group
    _hash = functools.lru_cache(maxsize=maxsize)(hashed_item) if maxsize > 0 else hashed_item
    _raw_value = functools.lru_cache(maxsize=max(1, maxsize // 4))(raw_value) if maxsize > 0 else raw_value


def hash_cache_stats() -> dict[str, tuple[int, int]]:
    """(hits, misses) of each cache (person groups, field hashes, raw keys); empty when caching is off."""
    stats = {}
    for name, cache in (("groups", _group), ("hashes", _hash), ("raw", _raw_value)):
        if (info := getattr(cache, "cache_info", None)) is not None:
            stats[name] = (info().hits, info().misses)
    return stats


def _reason(key: str, value: str) -> str:
    return FIELD_REASONS.get(key, EMPTY) if value.strip() else EMPTY


def _hashed_list(key: str, value: Any, normalize: fields.FieldNormalizer, dropped: list[Dropped]) -> list[str] | None:
    if not isinstance(value, list | tuple):
        dropped.append(Dropped(f"user_data.{key}", INVALID_TYPE))
        return None
    digests = set()
    for item in value:
        digest = cast("str | None", _hash(normalize, item, False)) if type(item) is str else None
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


def _other(
    key: str, value: Any, table: Mapping[str, fields.FieldNormalizer], hash_external_id: bool, dropped: list[Dropped]
) -> Any:
    """The slow path: lists, non-string values, unhashed external_id, unknown keys."""
    kind = _KINDS.get(key)
    if kind is _LIST:
        if key == "external_id" and not hash_external_id:
            return _raw_list(key, value, dropped)
        return _hashed_list(key, value, table[key], dropped)
    if kind is _RAW and type(value) is int and key in INTEGER_FIELDS:
        return value if value >= 0 else dropped.append(Dropped(f"user_data.{key}", "invalid_integer_id"))
    dropped.append(Dropped(f"user_data.{key}", INVALID_TYPE if kind is not None else UNKNOWN_FIELD))
    return None


def _normalize_items(
    items: Iterable[tuple[str, Any]],
    table: Mapping[str, fields.FieldNormalizer],
    hash_external_id: bool,
    dropped: list[Dropped],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hashed, raw = _hash, _raw_value
    for key, value in filter(_PRESENT, items):
        if type(value) is str:
            kind = _KINDS.get(key)
            # hot path: one string per key, usually a cache hit
            if kind is _LIST and (hash_external_id or key != "external_id"):
                if (listed := hashed(table[key], value, True)) is not None:
                    out[key] = listed
                    continue
            elif kind is _RAW:
                normalizer = RAW_NORMALIZERS[key]
                # only the IP address check is worth a cache; the others cost less than a lookup
                if (text := raw(normalizer, value) if normalizer is _IP else normalizer(value)) is not None:
                    out[key] = int(text) if key in INTEGER_FIELDS else text
                    continue
            elif kind is _SCALAR:
                if (digest := hashed(table[key], value, False)) is not None:
                    out[key] = digest
                    continue
            elif kind is None:
                dropped.append(Dropped(f"user_data.{key}", UNKNOWN_FIELD))
                continue
            else:
                if (result := _raw_list(key, value, dropped)) is not None:
                    out[key] = result
                continue
            dropped.append(Dropped(f"user_data.{key}", _reason(key, value)))
        elif (result := _other(key, value, table, hash_external_id, dropped)) is not None:
            out[key] = result
    return out


def event_country(value: Any, default: str | None) -> str | None:
    """The event's own country (first valid user_data.country value) else `default`, ISO alpha-2 lower."""
    for item in (value,) if type(value) is str else value if isinstance(value, list | tuple) else ():
        if type(item) is str and (code := fields.country(item)):
            return code
    return default.lower() if default else None


_COUNTRY_AT: Final = PERSON_KEYS.index("country")


def person_group(
    default_country: str | None, max_year: int, hash_external_id: bool, values: tuple[Any, ...]
) -> tuple[dict[str, Any], tuple[Dropped, ...]]:
    """The identifiers of one person (values in PERSON_KEYS order): their output and their drops.

    `values` may stop early: the keys left over are absent (an Avro record has no _NOT_IN_AVRO keys).
    The person's country value is among them, so the event's country (event_country) is found here,
    once per person, and selects the field table.
    """
    dropped: list[Dropped] = []
    country = event_country(values[_COUNTRY_AT] if len(values) > _COUNTRY_AT else None, default_country)
    table = fields.field_table(country, max_year)
    out = _normalize_items(zip(PERSON_KEYS, values, strict=False), table, hash_external_id, dropped)
    return out, tuple(dropped)


_group: Callable[..., tuple[dict[str, Any], tuple[Dropped, ...]]] = functools.lru_cache(
    maxsize=DEFAULT_GROUP_CACHE_SIZE
)(person_group)


def normalize_user_data(
    user_data: Mapping[str, Any],
    *,
    default_country: str | None,
    max_year: int,
    hash_external_id: bool,
    dropped: list[Dropped],
) -> dict[str, Any]:
    """Meta's user_data object for `user_data` (raw or pre-hashed values); drops are appended to `dropped`.

    The event's country (its own user_data.country, else the destination's `default_country`, ISO
    alpha-2) and `max_year` select the field table (fields.field_table). None, "" and [] count as
    absent; an unknown key is dropped with `unknown_field`. Never raises on any value. A person's keys
    (all but the IP address, VOLATILE_KEYS) are cached together, as they repeat on every event of that
    person, so their lists may be shared between outcomes: treat the result as read-only.
    """
    try:
        values = _read_avro_keys(user_data)
        avro = len(user_data) == len(_AVRO_KEYS)  # exactly the Avro keys: none unknown, none missing
    except KeyError:
        avro = False
    if avro:
        person, ip = values[1:], values[0]
    else:
        person, ip = tuple(map(user_data.get, PERSON_KEYS)), user_data.get(_IP_KEY)
    try:
        shared, group_dropped = _group(default_country, max_year, hash_external_id, person)
    except TypeError:  # a list value (several emails...) cannot be a cache key: compute it directly
        shared, group_dropped = person_group(default_country, max_year, hash_external_id, person)
    if group_dropped:
        dropped.extend(group_dropped)
    out = dict(shared)
    if ip:
        if type(ip) is str and _PLAIN_IPV4(ip):
            out[_IP_KEY] = ip
        elif type(ip) is str and (text := _raw_value(_IP, ip)) is not None:
            out[_IP_KEY] = text
        else:
            out.update(_normalize_items(((_IP_KEY, ip),), _NO_TABLE, hash_external_id, dropped))
    if not avro and not _KNOWN_KEYS.issuperset(user_data):
        unknown = [k for k in user_data if k not in _KNOWN_KEYS and user_data[k] is not None]
        dropped.extend(Dropped(f"user_data.{k}", UNKNOWN_FIELD) for k in unknown)
    return out
