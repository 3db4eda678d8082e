"""Facts of Meta's Conversions API contract that several stages share (pure constants).

Source: stream/contract/README.md (sections in brackets). The normalizer, the sender and the
emulator all read these names, so a change of Meta's rules is made in one place.
"""

from __future__ import annotations

from typing import Final

# Newest Graph API version on 2026-09-12 (facebook-business 26.0.3 pins the same) [7].
GRAPH_API_VERSION: Final = "v26.0"
GRAPH_BASE_URL: Final = "https://graph.facebook.com"

# Meta refuses a request with more than 1,000 events in `data` [1.3].
MAX_EVENTS_PER_REQUEST: Final = 1000
# Meta rejects the whole request when one event is older than 7 days [1.3]; physical_store has 62 days.
MAX_EVENT_AGE_S: Final = 7 * 24 * 3600
PHYSICAL_STORE_MAX_AGE_S: Final = 62 * 24 * 3600
# No documented tolerance for future timestamps; ours: clocks of phones drift, a few minutes is plenty [1.3].
MAX_FUTURE_SKEW_S: Final = 300
# Meta dedupes (event_name, event_id) seen within 48 hours of the first one [1.4].
DEDUPE_WINDOW_S: Final = 48 * 3600
# Meta's troubleshooting page recommends a 1,500 ms request timeout; most answers come in < 600 ms [1.3].
RECOMMENDED_TIMEOUT_S: Final = 1.5

ACTION_SOURCES: Final = frozenset({
    "email", "website", "app", "phone_call", "chat", "physical_store",
    "system_generated", "business_messaging", "other",
})  # fmt: skip

# user_data keys Meta wants SHA-256 hashed; the first group may hold several values [3.1].
HASHED_LIST_FIELDS: Final = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
# Hashed single-value keys the SDK models (not on the current CIP page) [3.1].
HASHED_SCALAR_FIELDS: Final = ("f5first", "f5last", "fi", "dobd", "dobm", "doby")
HASHED_FIELDS: Final = frozenset(HASHED_LIST_FIELDS + HASHED_SCALAR_FIELDS)
# Hashing is only recommended for these: Meta accepts them raw too (the SDK sends external_id raw) [3.1].
HASH_RECOMMENDED_FIELDS: Final = frozenset({"external_id"})
# Keys Meta refuses unhashed (a raw email is an error).
MUST_HASH_FIELDS: Final = HASHED_FIELDS - HASH_RECOMMENDED_FIELDS
# user_data keys sent as plain values ("do not hash") [3.1].
RAW_FIELDS: Final = (
    "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id", "fb_login_id",
    "lead_id", "madid", "anon_id", "ctwa_clid", "page_id", "page_scoped_user_id",
    "ig_account_id", "ig_sid",
)  # fmt: skip
CUSTOMER_INFORMATION_FIELDS: Final = HASHED_FIELDS | frozenset(RAW_FIELDS)

# Since v13.0 an event is invalid when its only customer-information keys are one of these sets or a
# subset of one (baseline matching validity) [3.1]; Meta answers 100 / 2804050.
TOO_BROAD_KEY_SETS: Final = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)

# app_data.extinfo is a 16-slot positional array; slot 0 is a2 (Android) or i2 (iOS), slot 4 the OS
# version [4].
EXTINFO_LENGTH: Final = 16
EXTINFO_VERSIONS: Final = frozenset({"a2", "i2"})
EXTINFO_OS_VERSION_SLOT: Final = 4

# Error codes and subcodes a sender must tell apart [6.2].
CODE_INVALID_PARAMETER: Final = 100
SUBCODE_EVENT_TOO_OLD: Final = 2804003
SUBCODE_INSUFFICIENT_CUSTOMER_INFO: Final = 2804050
SUBCODE_OBJECT_NOT_FOUND: Final = 33
CODE_TOKEN_INVALID: Final = 190
SUBCODE_TOKEN_EXPIRED: Final = 463
CODE_SESSION_EXPIRED: Final = 102
TOKEN_ERROR_CODES: Final = frozenset({CODE_TOKEN_INVALID, CODE_SESSION_EXPIRED})
# Throttling: app limit, user limit, page limit, ad-account limit, application limit [6.2].
THROTTLE_CODES: Final = frozenset({4, 17, 32, 341, 613})
# Business-use-case throttles 80000..80014 [6.2].
BUC_THROTTLE_CODES: Final = frozenset(range(80000, 80015))
# Temporary server-side trouble: unknown, service [6.2].
TRANSIENT_CODES: Final = frozenset({1, 2})
# Permission and capability errors: retrying the same request cannot help [6.2].
PERMISSION_CODES: Final = frozenset({3, 10, *range(200, 300)})
# A retired or unknown API version (12), an unknown path (2500), an unknown object alias (803) [6.4].
VERSION_OR_PATH_CODES: Final = frozenset({12, 2500, 803})
# Errors about the request, never about one of its events: halt the destination, do not split [6.4].
REQUEST_ERROR_CODES: Final = TOKEN_ERROR_CODES | PERMISSION_CODES | VERSION_OR_PATH_CODES
# CAPI's event-validation subcodes of code 100 (2804003 too old, 2804050 customer info, ...) [6.2].
EVENT_SUBCODES: Final = range(2804000, 2805000)


def is_event_subcode(subcode: int | None) -> bool:
    """True for a subcode Meta ties to an event's content (the 2804xxx family) [6.4]."""
    return subcode is not None and subcode in EVENT_SUBCODES


def is_too_broad(keys: frozenset[str] | set[str]) -> bool:
    """True when `keys` (the user_data keys present) are one of Meta's too-broad sets or a subset."""
    return any(keys <= broad for broad in TOO_BROAD_KEY_SETS)
