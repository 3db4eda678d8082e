"""app_data: 0/1 flags and the 16-string extinfo Meta requires for app events (pure).

Meta requires `advertiser_tracking_enabled` and `extinfo` for action_source=app; extinfo is a positional
array of 16 strings, "" for unknown, slot 0 `a2` (Android) or `i2` (iOS), slot 4 the OS version
(contract README §4). The SDK sends booleans and nulls and ints for screen sizes; the docs say 0/1 flags and
strings, so that is what we send.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Any, Final

from stream.contract import meta
from stream.contract.results import Dropped, Rejection

_ONLY_STR: Final = {str}
_FLAGS: Final = ("advertiser_tracking_enabled", "application_tracking_enabled")
_STRINGS: Final = ("campaign_ids", "install_referrer", "installer_package", "vendor_id", "windows_attribution_id")


def flag(value: Any) -> int | None:
    """A boolean (or 0/1 from JSON) as Meta's 0/1; None for anything else."""
    if value is True or value is False or (type(value) is int and value in (0, 1)):
        return int(value)
    return None


def extinfo(value: Any) -> list[str] | Rejection:
    """The 16 extinfo strings ("" for unknown), or a rejection naming what is wrong."""
    if not isinstance(value, list | tuple):
        return Rejection("app_data_missing", "app_data.extinfo is required for app events")
    if len(value) == meta.EXTINFO_LENGTH and set(map(type, value)) == _ONLY_STR:
        slots = list(value)  # the usual shape: 16 strings already
    else:
        slots_or_rejection = _slots(value)
        if isinstance(slots_or_rejection, Rejection):
            return slots_or_rejection
        slots = slots_or_rejection
    if slots[0] not in meta.EXTINFO_VERSIONS:
        slots[0] = slots[0].strip().lower()
        if slots[0] not in meta.EXTINFO_VERSIONS:
            return Rejection("invalid_extinfo", "extinfo slot 0 must be a2 (Android) or i2 (iOS)")
    if not slots[meta.EXTINFO_OS_VERSION_SLOT].strip():
        return Rejection("invalid_extinfo", "extinfo slot 4 (OS version) is required")
    return slots


def _slots(value: list[Any] | tuple[Any, ...]) -> list[str] | Rejection:
    if len(value) > meta.EXTINFO_LENGTH:
        return Rejection("invalid_extinfo", f"extinfo has {len(value)} slots, Meta defines 16")
    slots: list[str] = []
    for item in value:
        if item is None:
            slots.append("")
        elif type(item) is str:
            slots.append(item.strip())
        elif type(item) in (int, float):
            slots.append(str(item))  # screen sizes, cores, storage: the docs list strings
        else:
            return Rejection("invalid_extinfo", "extinfo slots must be strings")
    slots.extend([""] * (meta.EXTINFO_LENGTH - len(slots)))
    return slots


AppDataResult = dict[str, Any] | Rejection | None


def normalize_app_data(app_data: Any, *, required: bool, dropped: list[Dropped]) -> AppDataResult:
    """Meta's app_data for an event; `required` for action_source=app (missing parts reject the event).

    For other action sources a bad app_data is dropped (and counted) instead, since Meta ignores it.
    A device sends the same app_data on every event, so app_data without url schemes is cached, keyed
    by its values and extinfo slots with their types (True, 1 and 1.0 differ, so do "1" and 1); the
    cached dict is shared between outcomes: treat it as read-only.
    """
    if type(app_data) is dict and type(info := app_data.get("extinfo")) is list and app_data.get("url_schemes") is None:
        try:
            values = _read_cache_keys(app_data)
        except KeyError:  # a JSON record may omit keys; a decoded Avro record has all of them
            values = tuple(map(app_data.get, _CACHE_KEYS))
        try:
            result, drops = _cached(required, *values, *info)
        except TypeError:  # an unhashable value where a flag, string or slot belongs
            result, drops = _app_data(app_data, required)
    else:
        result, drops = _app_data(app_data, required)
    if drops:
        dropped.extend(drops)
    out: AppDataResult = result
    return out


_CACHE_KEYS: Final = (*_FLAGS, *_STRINGS)
_read_cache_keys: Final = operator.itemgetter(*_CACHE_KEYS)


# Devices (app, OS version, model, locale...) seen recently; an entry is ~1 KB.
DEFAULT_CACHE_SIZE: Final = 4096


def _from_key(required: bool, *values: Any) -> tuple[AppDataResult, tuple[Dropped, ...]]:
    """The app_data of a cache key: the _CACHE_KEYS values, then the extinfo slots."""
    keyed, info = values[: len(_CACHE_KEYS)], values[len(_CACHE_KEYS) :]
    return _app_data({**dict(zip(_CACHE_KEYS, keyed, strict=True)), "extinfo": list(info)}, required)


# typed: True and 1 give the same flag, 1.0 does not; "1" and 1 in a slot differ too
_cached: Any = functools.lru_cache(maxsize=DEFAULT_CACHE_SIZE, typed=True)(_from_key)


def set_cache_size(maxsize: int) -> None:
    """Use a fresh app_data cache of `maxsize` entries; 0 turns it off (same results, for benchmarks)."""
    global _cached  # one process-wide cache, swapped as a whole
    _cached = functools.lru_cache(maxsize=maxsize, typed=True)(_from_key) if maxsize > 0 else _from_key


def _app_data(app_data: Any, required: bool) -> tuple[AppDataResult, tuple[Dropped, ...]]:
    dropped: list[Dropped] = []
    return _build(app_data, required, dropped), tuple(dropped)


def _build(app_data: Any, required: bool, dropped: list[Dropped]) -> AppDataResult:
    if type(app_data) is not dict and not isinstance(app_data, Mapping):
        if app_data is not None:
            dropped.append(Dropped("app_data", "invalid_type"))
        return Rejection("app_data_missing", "app events need app_data") if required else None
    out: dict[str, Any] = {}
    for key in _FLAGS:
        if (raw := app_data.get(key)) is not None:
            if (bit := flag(raw)) is None:
                dropped.append(Dropped(f"app_data.{key}", "invalid_type"))
            else:
                out[key] = bit
    if required and "advertiser_tracking_enabled" not in out:
        return Rejection("app_data_missing", "app_data.advertiser_tracking_enabled is required")
    info = extinfo(app_data.get("extinfo"))
    if isinstance(info, Rejection):
        if required:
            return info
        if app_data.get("extinfo") is not None:
            dropped.append(Dropped("app_data.extinfo", info.reason))
    else:
        out["extinfo"] = info
    for key in _STRINGS:
        raw = app_data.get(key)
        if type(raw) is str and raw.strip():
            out[key] = raw.strip()
        elif raw is not None:
            dropped.append(Dropped(f"app_data.{key}", "empty" if type(raw) is str else "invalid_type"))
    schemes = app_data.get("url_schemes")
    if isinstance(schemes, list | tuple) and all(type(s) is str for s in schemes):
        if schemes:
            out["url_schemes"] = list(schemes)
    elif schemes is not None:
        dropped.append(Dropped("app_data.url_schemes", "invalid_type"))
    return out or None
