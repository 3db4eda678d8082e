"""The acceptance fast path: decode and validate a common, valid request in C, or say "look closer" (pure).

`from_json` (a JSON body) and `from_params` (form fields, whose `data` is a JSON array string) answer
a `FastRequest` only when the request is one that `rules.read_events` + `rules.validate_events`
accept as well; None means "not sure", never "invalid": the caller then runs the exact rules, which
name Meta's error. So the answer to a request never depends on which path took it (status and body,
but the fbtrace_id), which tests/unit/test_emulator_fastpath.py checks on every contract-test body
and on generated ones.

How: msgspec decodes the body straight into typed Structs (C code, no dict per object) whose types
encode the per-field rules of the common shapes: a non-empty event_name, a numeric event_time, an
action_source other than website / physical_store (they have rules of their own), hashed user_data
values of 64 characters, app_data with an ATT flag of 0/1 and a 16-slot extinfo whose slot 0 is
a2/i2 and slot 4 a non-empty string. What types cannot say runs over whole columns, with iteration
in C (`map`, `astuple`, `zip`, `compress`, set tests) and no Python loop per event: the time window
(min and max), lowercase hex (one `bytes.translate` over all hashed values joined), a
customer-information key outside every too-broad set, app_data on app events, value and currency on
Purchases.

Why the fast path is never more lenient than the exact one, rule by rule:
- every Struct forbids unknown fields and types each known one (`Any` where the exact rules do not
  look), so msgspec decodes every byte of the body and never just skips over a value; its decoder
  refuses what orjson refuses (invalid UTF-8, lone surrogates, NaN, 1e400, nesting beyond 997 < 1024),
  but for integer literals of 309 to 4299 digits, which orjson refuses (they overflow a double) and
  msgspec takes: `_has_huge_number` sends any body with a run of 309 digits to the exact path;
- each type is a subset of what the exact rule takes (an extinfo slot 4 of 14 or a hashed "" are
  valid for Meta but go to the exact path);
- a field named twice keeps its last value in both decoders;
- the `reject_event_ids` test hook is not looked at: the server skips the fast path while it is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain, compress
from operator import attrgetter, itemgetter, methodcaller, not_
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec.structs import astuple

from stream.emulator.facts import (
    CUSTOMER_INFORMATION_FIELDS,
    HASH_RECOMMENDED_FIELDS,
    MAX_EVENT_AGE_S,
    MAX_EVENTS_PER_REQUEST,
    MAX_FUTURE_SKEW_S,
    MUST_HASH_FIELDS,
    RAW_FIELDS,
)
from stream.emulator.rules import BROAD_KEYS, CURRENCIES

# A SHA-256 digest has 64 characters; that they are lowercase hex is checked over all of them at once.
_Digest = Annotated[str, msgspec.Meta(min_length=64, max_length=64)]
_Hashed = _Digest | list[_Digest] | None
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

# user_data: the must-hash keys typed, the others (raw, or hashing only recommended) taken as they are.
# The must-hash keys come first, so the first fields of `astuple(user_data)` are their values.
_HASHED: Final = tuple(sorted(MUST_HASH_FIELDS))
UserData: Final = msgspec.defstruct(
    "UserData",
    [(key, _Hashed, None) for key in _HASHED]
    + [(key, Any, None) for key in sorted(HASH_RECOMMENDED_FIELDS | set(RAW_FIELDS))],
    forbid_unknown_fields=True,
    gc=False,
)

# Slot 0 a2 (Android) or i2 (iOS), slot 4 the OS version, 16 slots [4].
_Extinfo = tuple[
    Literal["a2", "i2"], Any, Any, Any, _NonEmpty, Any, Any, Any, Any, Any, Any, Any, Any, Any, Any, Any
]


class AppData(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """app_data with the fields Meta's SDK sends; the first two are the ones Meta requires [4]."""

    advertiser_tracking_enabled: bool | Literal[0, 1] | Literal["0", "1"]
    extinfo: _Extinfo
    application_tracking_enabled: Any = None
    campaign_ids: Any = None
    consider_views: Any = None
    include_dwell_data: Any = None
    include_video_data: Any = None
    install_referrer: Any = None
    installer_package: Any = None
    receipt_data: Any = None
    url_schemes: Any = None
    windows_attribution_id: Any = None


# ACTION_SOURCES but website and physical_store (tests hold the two lists together).
FastSource = Literal["app", "business_messaging", "chat", "email", "other", "phone_call", "system_generated"]


class Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A server event with the fields of contract README §2; user_data is `UserData`.

    The first seven fields are the ones `_checked` reads, in its order.
    """

    event_name: _NonEmpty
    event_time: int | float
    action_source: FastSource
    user_data: UserData  # type: ignore[valid-type]  # a class built by msgspec.defstruct
    event_id: str | None = None
    app_data: AppData | None = None
    custom_data: Any = None
    event_source_url: Any = None
    opt_out: Any = None
    data_processing_options: Any = None
    data_processing_options_country: Any = None
    data_processing_options_state: Any = None
    referrer_url: Any = None
    original_event_data: Any = None
    customer_segmentation: Any = None
    messaging_channel: Any = None
    attribution_data: Any = None
    advanced_measurement_table: Any = None


_Events = Annotated[list[Event], msgspec.Meta(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]


class Body(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A JSON request body: `data` and the top-level parameters of contract README §1.2."""

    data: _Events
    access_token: Any = msgspec.UNSET
    test_event_code: Any = msgspec.UNSET
    partner_agent: Any = None
    namespace_id: Any = None
    upload_id: Any = None
    upload_tag: Any = None
    upload_source: Any = None
    platforms: Any = None
    progress: Any = None
    trace: Any = None


_BODY: Final = msgspec.json.Decoder(Body)
# msgspec.DecodeError and ValidationError, UnicodeDecodeError (all ValueErrors), and RecursionError for
# nesting deeper than msgspec's limit (997, below orjson's 1024).
_NOT_SURE: Final = (ValueError, RecursionError)
_EVENTS: Final = msgspec.json.Decoder(_Events)

# Customer-information keys in no too-broad set: one of them, present, makes an event's set valid.
_STRONG: Final = tuple(sorted(CUSTOMER_INFORMATION_FIELDS - BROAD_KEYS))
_strong_values: Final = attrgetter(*_STRONG)
# the must-hash values of a user_data tuple (`astuple` copies the slots: faster than 16 getattrs)
_hashed_values: Final = itemgetter(slice(0, len(_HASHED)))
# Most events carry an email; only those without one have all their strong keys read.
_em: Final = itemgetter(_HASHED.index("em"))
# The fields the checks read (Event's first seven), fetched in one pass over the events (their Structs
# are spread over memory: each pass is cache misses; `astuple` copies the slots) and made columns.
_columns: Final = itemgetter(slice(0, 7))
_get_value: Final = methodcaller("get", "value")
_get_currency: Final = methodcaller("get", "currency")
_DICT: Final = frozenset({dict})
_NUMBER: Final = frozenset({int, float})
_STR: Final = frozenset({str})
_HEX: Final = b"0123456789abcdef"
# orjson refuses a number that overflows a double (an integer of 309 or more digits); msgspec takes
# integers up to 4,299 digits. A run of this many digits anywhere sends the body to the exact path.
_HUGE_DIGITS: Final = 309
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
# Such a run covers at least 309 // 20 = 15 consecutive multiples of 20, so every 20th byte shows 15
# digits in a row: a cheap sieve (1/20 of the body) before the exact scan, which it rarely needs.
_SIEVE_STRIDE: Final = 20


@dataclass(frozen=True, slots=True)
class FastRequest:
    """A request the exact rules accept too: its parameters and what the ledger needs of each event."""

    access_token: object
    test_event_code: object
    names: list[str]
    ids: list[str | None]
    raw: bytes | str  # the JSON body, or the `data` text of a form: what Ledger keeps


def from_json(body: bytes, query: Mapping[str, str], now: float) -> FastRequest | None:
    """The request of a JSON `body` (parameters overlaid on `query`), or None: ask the exact rules."""
    if _has_huge_number(body):
        return None
    try:
        decoded = _BODY.decode(body)
    except _NOT_SURE:
        return None
    token = decoded.access_token
    code = decoded.test_event_code
    return _checked(
        decoded.data,
        query.get("access_token") if token is msgspec.UNSET else token,
        query.get("test_event_code") if code is msgspec.UNSET else code,
        body,
        now,
    )


def from_params(params: Mapping[str, Any], now: float) -> FastRequest | None:
    """The request of form fields (`data` a JSON array string), or None: ask the exact rules."""
    data = params.get("data")
    if type(data) is not str or _has_huge_number(data):
        return None
    try:
        # msgspec reads a str through its UTF-8 form: no copy for ASCII text; a lone surrogate, which
        # orjson refuses as well, raises UnicodeEncodeError
        events = _EVENTS.decode(data)
    except _NOT_SURE:
        return None
    return _checked(events, params.get("access_token"), params.get("test_event_code"), data, now)


def _has_huge_number(text: bytes | str) -> bool:
    """True when `text` holds a run of _HUGE_DIGITS digits (in a number or a string: we do not care)."""
    sieve = text[::_SIEVE_STRIDE]
    if b"0" * (_HUGE_DIGITS // _SIEVE_STRIDE) not in _as_bytes(sieve).translate(_DIGITS_TO_ZERO):
        return False
    return b"0" * _HUGE_DIGITS in _as_bytes(text).translate(_DIGITS_TO_ZERO)


def _as_bytes(text: bytes | str) -> bytes:
    # surrogatepass: a lone surrogate is no digit and must not raise here
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")


def _checked(events: list[Event], token: object, code: object, raw: bytes | str, now: float) -> FastRequest | None:
    """`events` as a FastRequest when the rules types cannot express hold for every one, else None."""
    names, times, sources, users, ids, apps, customs = zip(*map(_columns, map(astuple, events)), strict=True)
    if min(times) < now - MAX_EVENT_AGE_S or max(times) > now + MAX_FUTURE_SKEW_S:
        return None
    hashed = list(map(_hashed_values, map(astuple, users)))  # per event, its must-hash values in _HASHED order
    # every event has a customer-information key outside the too-broad sets (truthy: present, and
    # for a hashed key a 64-character value, checked below)
    emails = list(map(_em, hashed))
    if not all(emails) and not all(map(any, map(_strong_values, compress(users, map(not_, emails))))):
        return None
    # every hashed value is lowercase hex: "".join of a value is the value itself, of a list its items;
    # deleting the hex digits leaves nothing (a non-ASCII character leaves its UTF-8 bytes)
    digests = "".join(map("".join, filter(None, chain.from_iterable(hashed))))
    if digests.encode().translate(None, _HEX):
        return None
    if None in compress(apps, map("app".__eq__, sources)):  # app events need app_data
        return None
    # Purchases: custom_data an object, its value a number, its currency an ISO 4217 code
    purchases = list(compress(customs, map("Purchase".__eq__, names)))
    if purchases:
        if not _DICT.issuperset(map(type, purchases)) or not _NUMBER.issuperset(map(type, map(_get_value, purchases))):
            return None
        currencies = list(map(_get_currency, purchases))
        if not _STR.issuperset(map(type, currencies)) or not CURRENCIES.issuperset(map(str.lower, currencies)):
            return None
    return FastRequest(token, code, list(names), list(ids), raw)
