"""The same work done with Meta's Python SDK (facebook-business), as a user of the SDK would write it.

The documented way: `UserData`, `CustomData` (with `Content`), `AppData` (with `ExtendedDeviceInfo`) and
`Event(action_source=ActionSource.APP)` objects, then `Event.normalize()` (what `EventRequest` sends;
`Event.to_dict()` in facebook-business 26.0.3 fails on a missing import). The SDK raises on the first
bad value (a phone in national format, "UK", "Male"), which would lose the event, so a careful user then
redoes user_data one field at a time with `Normalize.normalize_field` and keeps the good values; we do
the same. The SDK has no default country for phones, no consent, time-window or Purchase checks: it
does less work than our stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.app_data import AppData
from facebook_business.adobjects.serverside.content import Content
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.extended_device_info import ExtendedDeviceInfo
from facebook_business.adobjects.serverside.gender import Gender
from facebook_business.adobjects.serverside.normalize import Normalize
from facebook_business.adobjects.serverside.user_data import UserData

_HASHED_LISTS = ("em", "ph", "fn", "ln", "db", "ct", "st", "zp", "country")
_HASHED_SCALARS = ("f5first", "f5last", "fi", "dobd", "dobm", "doby")
_RAW = (
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
    "madid",
    "anon_id",
    "ctwa_clid",
    "page_id",
)
_EXTINFO_ARGS = (
    "ext_info_version",
    "app_package_name",
    "short_version",
    "long_version",
    "os_version",
    "device_model_name",
    "locale",
    "timezone_abbreviation",
    "carrier",
    "screen_width",
    "screen_height",
    "screen_density",
    "cpu_core_count",
    "total_disk_space_gb",
    "free_disk_space_gb",
    "device_time_zone",
)


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
        with contextlib.suppress(ValueError):  # only the Gender enum (m/f) is accepted by UserData
            out["ge"] = [Normalize.normalize_field("ge", Gender(gender.strip().lower()).value)]
    if (ids := user.get("external_id")) is not None:
        out["external_id"] = list(set([ids] if isinstance(ids, str) else ids))
    for field in _HASHED_SCALARS:
        if (value := user.get(field)) is not None:
            with contextlib.suppress(TypeError, ValueError):
                out[field] = Normalize.normalize_field(field, value)
    for field in _RAW:
        if (value := user.get(field)) is not None:
            out[field] = value
    return out


def _custom_object(custom: Mapping[str, Any]) -> CustomData:
    contents = [
        Content(
            product_id=c["id"],
            quantity=c.get("quantity"),
            item_price=c.get("item_price"),
            title=c.get("title"),
            brand=c.get("brand"),
            category=c.get("category"),
        )
        for c in custom.get("contents") or ()
    ]
    return CustomData(
        value=custom.get("value"),
        currency=custom.get("currency"),
        content_ids=custom.get("content_ids"),
        contents=contents or None,
        content_type=custom.get("content_type"),
        order_id=custom.get("order_id"),
        content_name=custom.get("content_name"),
        status=custom.get("status"),
    )


def _app_object(app: Mapping[str, Any]) -> AppData:
    slots = list(app.get("extinfo") or ())
    info = ExtendedDeviceInfo(**dict(zip(_EXTINFO_ARGS, slots, strict=False)))
    return AppData(
        advertiser_tracking_enabled=app.get("advertiser_tracking_enabled"),
        application_tracking_enabled=app.get("application_tracking_enabled"),
        extinfo=info,
    )


def _listed(value: Any) -> list[str] | None:
    return None if value is None else [value] if isinstance(value, str) else list(value)


def _user_object(user: Mapping[str, Any]) -> UserData:
    genders = _listed(user.get("ge"))
    return UserData(
        emails=_listed(user.get("em")),
        phones=_listed(user.get("ph")),
        first_names=_listed(user.get("fn")),
        last_names=_listed(user.get("ln")),
        dates_of_birth=_listed(user.get("db")),
        cities=_listed(user.get("ct")),
        states=_listed(user.get("st")),
        zip_codes=_listed(user.get("zp")),
        country_codes=_listed(user.get("country")),
        external_ids=_listed(user.get("external_id")),
        genders=[Gender(g.strip().lower()) for g in genders] if genders else None,
        client_ip_address=user.get("client_ip_address"),
        client_user_agent=user.get("client_user_agent"),
        fbc=user.get("fbc"),
        fbp=user.get("fbp"),
        subscription_id=user.get("subscription_id"),
        fb_login_id=user.get("fb_login_id"),
        lead_id=user.get("lead_id"),
        madid=user.get("madid"),
        anon_id=user.get("anon_id"),
        ctwa_clid=user.get("ctwa_clid"),
        page_id=user.get("page_id"),
        f5first=user.get("f5first"),
        f5last=user.get("f5last"),
        fi=user.get("fi"),
        dobd=user.get("dobd"),
        dobm=user.get("dobm"),
        doby=user.get("doby"),
    )


def sdk_event(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The server event the SDK would produce for `record`, or None where a user would give up."""
    if record.get("consent") is False:
        return None
    try:
        source = ActionSource(record.get("action_source") or "app")
    except ValueError:
        return None
    user = record.get("user_data") or {}
    custom = record.get("custom_data")
    app = record.get("app_data")
    event = Event(
        event_name=record["event_name"],
        event_time=record["event_time"],
        event_id=record.get("event_id"),
        action_source=source,
    )
    if custom:
        event.custom_data = _custom_object(custom)
    if app:
        event.app_data = _app_object(app)
    try:
        event.user_data = _user_object(user)
        normalized: dict[str, Any] = event.normalize()
    except (TypeError, ValueError):
        event.user_data = UserData()
        normalized = event.normalize()
        normalized["user_data"] = _user_data(user)
    return normalized
