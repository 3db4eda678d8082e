"""What the contract stage returns: an `Outcome` per record, with the `Rejection` that stops an event and
the `Dropped` fields it lost on the way (pure). `REJECTION_REASONS` is the fixed set of reason codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

NO_CONSENT: Final = "no_consent"
BAD_RECORD: Final = "bad_record"

# The fixed set of reasons, each with the rule that gives it (the README lists the same table).
REJECTION_REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        NO_CONSENT: "consent is false, or unknown while the destination requires consent; never sent or kept",
        BAD_RECORD: "the input is not JSON or does not fit the Avro schema (CLI and decoder)",
        "missing_event_name": "event_name absent or empty",
        "missing_event_time": "event_time absent or not an integer number of Unix seconds",
        "missing_action_source": "action_source null or empty",
        "invalid_action_source": "action_source not one of Meta's values (app, website, ...)",
        "event_too_old": "event_time older than 7 days (62 for physical_store)",
        "event_in_future": "event_time more than MAX_FUTURE_SKEW_S ahead of now",
        "missing_event_source_url": "website event without event_source_url",
        "missing_client_user_agent": "website event without a client_user_agent",
        "invalid_data_processing_options": "an option other than LDU, or a country without a state",
        "purchase_without_value": "Purchase without a numeric custom_data.value",
        "purchase_without_currency": "Purchase without custom_data.currency",
        "invalid_currency": "custom_data.currency is not an ISO 4217 code",
        "app_data_missing": "app event without app_data, advertiser_tracking_enabled or extinfo",
        "invalid_extinfo": "extinfo longer than 16, slot 0 not a2/i2, slot 4 (OS version) empty",
        "no_customer_information": "no valid user_data key left after normalization",
        "customer_information_too_broad": "only one of Meta's too-broad key sets (e.g. fn + ge)",
    }
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event is not sent: `reason` is a key of REJECTION_REASONS, `detail` says which value."""

    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")


@dataclass(frozen=True, slots=True)
class Dropped:
    """A field (or one value of a list field) left out of the event, and why (e.g. invalid_phone)."""

    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """Exactly one of `event` (ready for the request's `data` array) and `rejection` is set."""

    event: dict[str, Any] | None
    rejection: Rejection | None
    dropped: tuple[Dropped, ...]


_new: Final = object.__new__
_set_event: Final = vars(Outcome)["event"].__set__  # the slot's descriptor
_set_rejection: Final = vars(Outcome)["rejection"].__set__  # the slot's descriptor
_set_dropped: Final = vars(Outcome)["dropped"].__set__  # the slot's descriptor


def outcome(event: dict[str, Any] | None, rejection: Rejection | None, dropped: tuple[Dropped, ...]) -> Outcome:
    """`Outcome(event, rejection, dropped)` at a third of the cost (~0.25 µs instead of ~0.8, once per event).

    A frozen dataclass's __init__ sets each slot through object.__setattr__; the slot descriptors set
    them directly. Outcome has no __post_init__, so the object is the same.
    """
    made: Outcome = _new(Outcome)
    _set_event(made, event)
    _set_rejection(made, rejection)
    _set_dropped(made, dropped)
    return made
