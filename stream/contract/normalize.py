"""The normalize stage: one conversion record in, one Meta server event or one rejection out (pure).

    record (decoded Avro dict, or JSON dict that omits keys)
      -> consent -> envelope (name, time, action source, window, LDU)
      -> user_data (fields.py table, userdata.py hashing) -> customer-information rules
      -> custom_data (customdata.py) -> app_data (appdata.py) -> Meta server event

Rules follow contract README §0. The current time is the `now` parameter; nothing here reads a clock or
does I/O. `app_id` and `consent` are ours and never reach Meta.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from stream.contract import appdata, meta, userdata, validate
from stream.contract.customdata import normalize_custom_data
from stream.contract.results import BAD_RECORD, NO_CONSENT, REJECTION_REASONS, Dropped, Outcome, Rejection, outcome
from stream.contract.userdata import normalize_user_data

__all__ = [
    "BAD_RECORD", "NO_CONSENT", "REJECTION_REASONS", "Dropped", "NormalizeSettings", "Outcome",
    "Rejection", "cache_stats", "normalize_event", "set_cache_size",
]  # fmt: skip

_ORIGINAL_EVENT_KEYS: Final = ("event_name", "event_time", "order_id", "event_id")


@dataclass(frozen=True, slots=True)
class NormalizeSettings:
    """Per-destination choices: the phone default country, consent policy and external_id hashing."""

    default_country: str | None = None  # ISO alpha-2, used for phones without country code
    require_consent: bool = False  # consent None counts as no consent when True
    hash_external_id: bool = True  # §0: external_id hashed after trim by default


def set_cache_size(maxsize: int) -> None:
    """Fresh caches for the stage (`maxsize` hashed values; the others in proportion); 0 turns them off.

    The caches only save work: outcomes are the same with any size. Benchmarks and tests use this.
    """
    userdata.set_hash_cache_size(maxsize)
    appdata.set_cache_size(maxsize // 25 if maxsize > 0 else 0)


def cache_stats() -> dict[str, tuple[int, int]]:
    """(hits, misses) per cache of the stage; empty when caching is off."""
    stats = userdata.hash_cache_stats()
    if (info := getattr(appdata._cached, "cache_info", None)) is not None:
        stats["app_data"] = (info().hits, info().misses)
    return stats


@functools.lru_cache(maxsize=64)
def _year(day: int) -> int:
    return datetime.datetime.fromtimestamp(day * 86400, tz=datetime.UTC).year


def _rejected(reason: Rejection, dropped: list[Dropped]) -> Outcome:
    return outcome(None, reason, tuple(dropped))


def _original_event(value: Any, dropped: list[Dropped]) -> dict[str, Any] | None:
    """{event_name, event_time, order_id, event_id} of the event this one follows up [2]."""
    if not isinstance(value, Mapping):
        dropped.append(Dropped("original_event_data", "invalid_type"))
        return None
    out: dict[str, Any] = {}
    for key in _ORIGINAL_EVENT_KEYS:
        item = value.get(key)
        if (type(item) is int) if key == "event_time" else (type(item) is str and item.strip()):
            out[key] = item
        elif item is not None:
            dropped.append(Dropped(f"original_event_data.{key}", "invalid_type"))
    return out or None


def _id(value: Any, dropped: list[Dropped]) -> str | None:
    if type(value) is int:
        return str(value)
    if type(value) is str and (text := value.strip()):
        return text
    if value is not None:
        dropped.append(Dropped("event_id", "empty" if type(value) is str else "invalid_type"))
    return None


def _envelope(record: Mapping[str, Any], now: int, settings: NormalizeSettings) -> tuple[str, int, str] | Rejection:
    """(event_name, event_time, action_source) or the first rule broken; the common case skips the calls."""
    consent = record.get("consent")
    if consent is not True and (refused := validate.consent(consent, required=settings.require_consent)):
        return refused
    name = record.get("event_name")
    if type(name) is not str or name != name.strip() or not name:
        name = validate.event_name(name)
        if isinstance(name, Rejection):
            return name
    time = record.get("event_time")
    if type(time) is not int:
        time = validate.event_time(time)
        if isinstance(time, Rejection):
            return time
    source = record.get("action_source", "app")
    if source != "app":
        source = validate.action_source(source)
        if isinstance(source, Rejection):
            return source
    # within 7 days and the skew every source is fine; only then does the source-specific rule matter
    if not now - meta.MAX_EVENT_AGE_S <= time <= now + meta.MAX_FUTURE_SKEW_S and (
        problem := validate.time_window(time, source, now)
    ):
        return problem
    options = record.get("data_processing_options")
    country, state = record.get("data_processing_options_country"), record.get("data_processing_options_state")
    if (options is not None or country is not None or state is not None) and (
        problem := validate.data_processing(options, country, state)
    ):
        return problem
    return name, time, source


def normalize_event(record: Mapping[str, Any], now: int, settings: NormalizeSettings) -> Outcome:
    """Normalize, hash and validate one record against Meta's contract, as of Unix time `now`.

    Returns an Outcome: the Meta server event, or a Rejection whose reason is in REJECTION_REASONS
    (NO_CONSENT events are to be dropped silently, never dead-lettered), plus every dropped field.
    Never raises for any content of `record`.
    """
    dropped: list[Dropped] = []
    envelope = _envelope(record, now, settings)
    if isinstance(envelope, Rejection):
        return _rejected(envelope, dropped)
    name, time, source = envelope

    raw_user = record.get("user_data")
    if type(raw_user) is not dict and not isinstance(raw_user, Mapping):
        if raw_user is not None:
            dropped.append(Dropped("user_data", "invalid_type"))
        raw_user = {}
    user_data = normalize_user_data(
        raw_user,
        default_country=settings.default_country,
        max_year=_year(now // 86400),
        hash_external_id=settings.hash_external_id,
        dropped=dropped,
    )
    problem = validate.customer_information(user_data)
    if problem is None and source == "website":
        problem = validate.website(user_data, record.get("event_source_url"))
    if problem is not None:
        return _rejected(problem, dropped)

    custom_data = normalize_custom_data(record.get("custom_data"), dropped)
    if isinstance(custom_data, Rejection):
        return _rejected(custom_data, dropped)
    if (problem := validate.purchase(name, custom_data)) is not None:
        return _rejected(problem, dropped)
    app_data = appdata.normalize_app_data(record.get("app_data"), required=source == "app", dropped=dropped)
    if isinstance(app_data, Rejection):
        return _rejected(app_data, dropped)

    event: dict[str, Any] = {"event_name": name, "event_time": time}
    if (event_id := record.get("event_id")) is not None and (event_id := _id(event_id, dropped)) is not None:
        event["event_id"] = event_id
    event["action_source"] = source
    if type(url := record.get("event_source_url")) is str and url.strip():
        event["event_source_url"] = url.strip()
    if type(opt_out := record.get("opt_out")) is bool:
        event["opt_out"] = opt_out
    event["user_data"] = user_data
    if custom_data is not None:
        event["custom_data"] = custom_data
    if app_data is not None:
        event["app_data"] = app_data
    if (options := record.get("data_processing_options")) is not None:
        event["data_processing_options"] = list(options)
        for key in ("data_processing_options_country", "data_processing_options_state"):
            if (code := record.get(key)) is not None:
                event[key] = code
    if (original := record.get("original_event_data")) is not None and (original := _original_event(original, dropped)):
        event["original_event_data"] = original
    return outcome(event, None, tuple(dropped))
