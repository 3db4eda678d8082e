"""Valid Conversions API events as the pipeline sends them, for tests, the benchmark and the demo (pure)."""

from __future__ import annotations

import hashlib
from typing import Any, Final

# A filled extinfo of an Android device: slot 0 a2, slot 4 the OS version [4].
SAMPLE_EXTINFO: Final = (
    "a2", "com.example.app", "1.0", "1.0.0", "14", "Pixel 8", "en_US", "UTC", "carrier",
    "1080", "2400", "2.5", "8", "128", "64", "Europe/Berlin",
)  # fmt: skip


def sha256(text: str) -> str:
    """Lowercase hex SHA-256 of `text`, as Meta wants hashed user_data."""
    return hashlib.sha256(text.encode()).hexdigest()


_POOL: Final = tuple(sha256(f"user-{i}@example.com") for i in range(64))


def sample_event(i: int, now: int, prefix: str = "e") -> dict[str, Any]:
    """A valid app event, unique by `prefix` and `i`: every third a Purchase, else a MobileAppInstall.

    `now` is Unix seconds; the event is at most an hour old.
    """
    purchase = i % 3 == 0
    event: dict[str, Any] = {
        "event_name": "Purchase" if purchase else "MobileAppInstall",
        "event_time": now - (i % 3600),
        "event_id": f"{prefix}{i}",
        "action_source": "app",
        "user_data": {
            "em": [_POOL[i % 64]], "ph": [_POOL[(i + 1) % 64]], "external_id": [_POOL[(i + 2) % 64]],
            "country": [_POOL[(i + 3) % 64]], "client_ip_address": "203.0.113.7",
            "anon_id": f"anon-{i}", "madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
        },
        "app_data": {"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1,
                     "extinfo": list(SAMPLE_EXTINFO)},
    }  # fmt: skip
    if purchase:
        event["custom_data"] = {"value": 9.99, "currency": "usd", "content_ids": ["sku-1"]}
    return event


def sample_events(count: int, now: int, prefix: str = "e") -> list[dict[str, Any]]:
    """`count` valid events with event ids `prefix`0 .. `prefix`count-1."""
    return [sample_event(i, now, prefix) for i in range(count)]
