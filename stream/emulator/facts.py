"""Meta's Conversions API rules as the emulator knows them, written out here on purpose.

The emulator stands in for Meta, so it must not share the pipeline's constants (`stream.contract.meta`):
a wrong value there (a 6-day age limit, a field left out of the hashed set) would then be wrong in the
emulator too and no integration or chaos test could see it. Each value comes from Meta's documentation
(`stream/contract/README.md`, section in brackets), not from the pipeline; a test keeps the emulator from
importing `stream.contract` or `stream.pipeline`.
"""

from __future__ import annotations

from typing import Final

# A request may carry at most 1,000 events in `data` [1.3].
MAX_EVENTS_PER_REQUEST: Final = 1000
# An event older than 7 days makes Meta refuse the whole request [1.3]; physical_store events: 62 days.
MAX_EVENT_AGE_S: Final = 604_800
PHYSICAL_STORE_MAX_AGE_S: Final = 5_356_800
# Meta documents no tolerance for future times; the emulator allows 5 minutes of clock drift [1.3].
MAX_FUTURE_SKEW_S: Final = 300
# Meta keeps the first of two events with one (event_name, event_id) seen within 48 hours [1.4].
DEDUPE_WINDOW_S: Final = 172_800

ACTION_SOURCES: Final = frozenset({
    "email", "website", "app", "phone_call", "chat", "physical_store",
    "system_generated", "business_messaging", "other",
})  # fmt: skip

# Customer information parameters [3.1]: hashed (SHA-256 of the normalized value) ...
_HASHED: Final = frozenset({
    "em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id",
    "f5first", "f5last", "fi", "dobd", "dobm", "doby",
})  # fmt: skip
# ... of which Meta only recommends hashing external_id and takes it raw as well ...
HASH_RECOMMENDED_FIELDS: Final = frozenset({"external_id"})
MUST_HASH_FIELDS: Final = _HASHED - HASH_RECOMMENDED_FIELDS
# ... and the ones sent as they are ("do not hash").
RAW_FIELDS: Final = (
    "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id", "fb_login_id",
    "lead_id", "madid", "anon_id", "ctwa_clid", "page_id", "page_scoped_user_id",
    "ig_account_id", "ig_sid",
)  # fmt: skip
CUSTOMER_INFORMATION_FIELDS: Final = _HASHED | frozenset(RAW_FIELDS)

# Since v13.0 an event whose customer information is only one of these sets, or part of one, is refused
# as too broad (100 / 2804050) [3.1].
TOO_BROAD_KEY_SETS: Final = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)

# app_data.extinfo: 16 positional slots; slot 0 says a2 (Android) or i2 (iOS), slot 4 is the OS version [4].
EXTINFO_LENGTH: Final = 16
EXTINFO_VERSIONS: Final = frozenset({"a2", "i2"})
EXTINFO_OS_VERSION_SLOT: Final = 4

# The codes and subcodes of Meta's answers [6.2].
CODE_INVALID_PARAMETER: Final = 100
SUBCODE_EVENT_TOO_OLD: Final = 2804003
SUBCODE_INSUFFICIENT_CUSTOMER_INFO: Final = 2804050
SUBCODE_OBJECT_NOT_FOUND: Final = 33
CODE_TOKEN_INVALID: Final = 190
SUBCODE_TOKEN_EXPIRED: Final = 463


def is_too_broad(keys: frozenset[str] | set[str]) -> bool:
    """True when the customer-information keys present are one of the too-broad sets or a subset of one."""
    return any(keys <= broad for broad in TOO_BROAD_KEY_SETS)
