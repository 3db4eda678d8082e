"""The same work done with Meta's Python SDK (facebook-business), as a user of the SDK would write it.

Per hashed field `Normalize.normalize_field` in try/except (the SDK raises on the first bad value of a
list, so a user who wants to keep the event checks values one by one), hashes deduplicated with set()
as `UserData.normalize` does, raw keys copied, `CustomData`/`Content`/`AppData`/`ExtendedDeviceInfo`
objects built and normalized, the action source checked through the `ActionSource` enum.
`Event.to_dict()` in facebook-business 26.0.3 fails on a missing import, so the event dict is assembled
here. The SDK has no default country for phones, no consent, no time-window or Purchase checks: it does
less work than our stage, which makes the ratio conservative.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.app_data import AppData
from facebook_business.adobjects.serverside.content import Content
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.extended_device_info import ExtendedDeviceInfo
from facebook_business.adobjects.serverside.gender import Gender
from facebook_business.adobjects.serverside.normalize import Normalize

_HASHED_LISTS = ("em", "ph", "fn", "ln", "db", "ct", "st", "zp", "country")
_HASHED_SCALARS = ("f5first", "f5last", "fi", "dobd", "dobm", "doby")
_RAW = ("client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id", "fb_login_id",
        "lead_id", "madid", "anon_id", "ctwa_clid", "page_id")
_EXTINFO_ARGS = ("ext_info_version", "app_package_name", "short_version", "long_version", "os_version",
                 "device_model_name", "locale", "timezone_abbreviation", "carrier", "screen_width",
                 "screen_height", "screen_density", "cpu_core_count", "total_disk_space_gb",
                 "free_disk_space_gb", "device_time_zone")


def _hash_all(field: str, value: Any) -> list[str] | None:
    hashes = set()
    for item in [value] if isinstance(value, str) else value:
        try:
            digest = Normalize.normalize_field(field, item)
        except (TypeError, ValueError):
            continue
        if digest:
            hashes.add(digest)
    return list(hashes) or None


def _user_data(user: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in _HASHED_LISTS:
        if (value := user.get(field)) is not None and (hashes := _hash_all(field, value)):
            out[field] = hashes
    if (gender := user.get("ge")) is not None:
        try:
            out["ge"] = [Normalize.normalize_field("ge", Gender(gender.strip().lower()).value)]
        except ValueError:
            pass  # only the Gender enum (m/f) is accepted by UserData
    if (ids := user.get("external_id")) is not None:
        out["external_id"] = list(set([ids] if isinstance(ids, str) else ids))
    for field in _HASHED_SCALARS:
        if (value := user.get(field)) is not None:
            try:
                out[field] = Normalize.normalize_field(field, value)
            except (TypeError, ValueError):
                pass
    for field in _RAW:
        if (value := user.get(field)) is not None:
            out[field] = value
    return out


def _custom_data(custom: Mapping[str, Any]) -> dict[str, Any] | None:
    contents = [Content(product_id=c["id"], quantity=c.get("quantity"), item_price=c.get("item_price"),
                        title=c.get("title"), brand=c.get("brand"), category=c.get("category"))
                for c in custom.get("contents") or ()]
    try:
        data = CustomData(value=custom.get("value"), currency=custom.get("currency"),
                          content_ids=custom.get("content_ids"), contents=contents or None,
                          content_type=custom.get("content_type"), order_id=custom.get("order_id"),
                          content_name=custom.get("content_name"), status=custom.get("status"))
        normalized: dict[str, Any] = data.normalize()
    except (TypeError, ValueError):
        return None
    return normalized


def _app_data(app: Mapping[str, Any]) -> dict[str, Any]:
    slots = list(app.get("extinfo") or ())
    info = ExtendedDeviceInfo(**dict(zip(_EXTINFO_ARGS, slots, strict=False)))
    data = AppData(advertiser_tracking_enabled=app.get("advertiser_tracking_enabled"),
                   application_tracking_enabled=app.get("application_tracking_enabled"), extinfo=info)
    normalized: dict[str, Any] = data.normalize()
    return normalized


def sdk_event(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The server event the SDK would produce for `record`, or None where a user would give up."""
    if record.get("consent") is False:
        return None
    try:
        source = ActionSource(record.get("action_source") or "app").value
    except ValueError:
        return None
    event: dict[str, Any] = {"event_name": record["event_name"], "event_time": record["event_time"],
                             "action_source": source, "user_data": _user_data(record.get("user_data") or {})}
    if record.get("event_id") is not None:
        event["event_id"] = record["event_id"]
    if record.get("custom_data") and (custom := _custom_data(record["custom_data"])):
        event["custom_data"] = custom
    if record.get("app_data"):
        event["app_data"] = _app_data(record["app_data"])
    return event
