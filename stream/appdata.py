"""app_data: 0/1 flags and the 16-string extinfo Meta requires for app events (pure).

Meta requires `advertiser_tracking_enabled` and `extinfo` for action_source=app; extinfo is a positional
array of 16 strings, "" for unknown, slot 0 `a2` (Android) or `i2` (iOS), slot 4 the OS version
(meta-capi.md §4). The SDK sends booleans and nulls and ints for screen sizes; the docs say 0/1 flags and
strings, so that is what we send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from stream import meta
from stream.userdata import Dropped
from stream.validate import Rejection

_ONLY_STR: Final = {str}
_FLAGS: Final = ("advertiser_tracking_enabled", "application_tracking_enabled")
_STRINGS: Final = ("campaign_ids", "install_referrer", "installer_package", "vendor_id",
                   "windows_attribution_id")


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


def normalize_app_data(
    app_data: Any, *, required: bool, dropped: list[Dropped]
) -> dict[str, Any] | Rejection | None:
    """Meta's app_data for an event; `required` for action_source=app (missing parts reject the event).

    For other action sources a bad app_data is dropped (and counted) instead, since Meta ignores it.
    """
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
