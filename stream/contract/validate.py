"""Event-level rules: reject an event only where Meta would reject it (pure).

Meta refuses a whole request of up to 1,000 events when one is invalid (contract README §1.3, §6.3), so an
event that would be refused is stopped here with a reason code from REJECTION_REASONS and goes to the
dead-letter topic; the rest of its batch is safe. `no_consent` is different: such an event is dropped
silently and kept nowhere. A bad *field* is not a rejection: it is dropped and counted (fields.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from stream.contract import meta
from stream.contract.results import NO_CONSENT, Rejection

PURCHASE: Final = "Purchase"
_BROAD_KEYS: Final = frozenset().union(*meta.TOO_BROAD_KEY_SETS)
# LDU is the only data processing option Meta defines [2].
DATA_PROCESSING_OPTIONS: Final = frozenset({"LDU"})


def consent(value: Any, *, required: bool) -> Rejection | None:
    """Reject unless consent is true, or unknown (None) while the destination does not require it."""
    if value is True or (value is None and not required):
        return None
    return Rejection(NO_CONSENT, "consent unknown" if value is None else "consent not given")


def event_name(value: Any) -> str | Rejection:
    """The trimmed event name, or a rejection when it is missing."""
    if type(value) is str and (name := value.strip()):
        return name
    return Rejection("missing_event_name", "event_name must be a non-empty string")


def event_time(value: Any) -> int | Rejection:
    """Integer Unix seconds (an integral float from JSON is accepted), or a rejection."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return Rejection("missing_event_time", "event_time must be integer Unix seconds")


def action_source(value: Any) -> str | Rejection:
    """One of Meta's action sources (case and spaces forgiven: "App " is app), or a rejection."""
    if value is None or (type(value) is str and not value.strip()):
        return Rejection("missing_action_source", "action_source is required")
    if type(value) is str and (source := value.strip().lower()) in meta.ACTION_SOURCES:
        return source
    return Rejection("invalid_action_source", f"action_source must be one of {sorted(meta.ACTION_SOURCES)}")


def time_window(time: int, source: str, now: int) -> Rejection | None:
    """Reject events Meta would refuse for their age (7 days, 62 for physical_store) or future time."""
    max_age = meta.PHYSICAL_STORE_MAX_AGE_S if source == "physical_store" else meta.MAX_EVENT_AGE_S
    if now - time > max_age:
        return Rejection("event_too_old", f"event_time is {now - time} s old, Meta accepts {max_age} s")
    if time - now > meta.MAX_FUTURE_SKEW_S:
        return Rejection("event_in_future", f"event_time is {time - now} s ahead of now")
    return None


def data_processing(options: Any, country: Any, state: Any) -> Rejection | None:
    """LDU options must be known values, and a country code needs a state code [2]."""
    if options is not None and (
        not isinstance(options, list | tuple)
        or not all(type(o) is str and o in DATA_PROCESSING_OPTIONS for o in options)
    ):
        return Rejection("invalid_data_processing_options", 'options must be [] or ["LDU"]')
    for value in (country, state):
        if value is not None and type(value) is not int:
            return Rejection("invalid_data_processing_options", "country and state must be integers")
    if (country is None) != (state is None):
        return Rejection("invalid_data_processing_options", "country and state go together")
    return None


def website(user_data: Mapping[str, Any], source_url: Any) -> Rejection | None:
    """Website events need event_source_url and client_user_agent [2]."""
    if not (type(source_url) is str and source_url.strip()):
        return Rejection("missing_event_source_url", "website events need event_source_url")
    if "client_user_agent" not in user_data:
        return Rejection("missing_client_user_agent", "website events need client_user_agent")
    return None


def customer_information(user_data: Mapping[str, Any]) -> Rejection | None:
    """At least one valid key, and not only one of Meta's too-broad sets [3.1] (100 / 2804050)."""
    if not user_data:
        return Rejection("no_customer_information", "no valid user_data key")
    if not user_data.keys() <= _BROAD_KEYS:
        return None  # a key outside every too-broad set (em, ph, madid, ...) makes the set specific enough
    keys = frozenset(user_data)
    if meta.is_too_broad(keys):
        return Rejection("customer_information_too_broad", f"only {sorted(keys)}")
    return None


def purchase(name: str, custom_data: Mapping[str, Any] | None) -> Rejection | None:
    """Purchase needs a value and a currency [5]."""
    if name != PURCHASE:
        return None
    if custom_data is None or "value" not in custom_data:
        return Rejection("purchase_without_value", "Purchase needs custom_data.value")
    if "currency" not in custom_data:
        return Rejection("purchase_without_currency", "Purchase needs custom_data.currency")
    return None
