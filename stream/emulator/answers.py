"""Meta's error answers as values: HTTP status, Graph error body and headers (pure).

Each function builds one answer Meta gives (stream/contract/README.md §6). Keys Meta leaves out of
an error (`error_subcode`, `error_user_title`, `error_user_msg`) are left out here too, so a client
that needs them finds out against the emulator and not in production.

Where Meta's subcode for a rule is undocumented (doc §5, §6.2, §9) the emulator picks one from
Meta's 2804xxx validation family; those constants say "emulator's choice". A sender must classify
any 100/2804xxx as "this request holds an invalid event", never by the exact number.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from stream.emulator.facts import (
    CODE_INVALID_PARAMETER,
    CODE_TOKEN_INVALID,
    MAX_EVENTS_PER_REQUEST,
    SUBCODE_EVENT_TOO_OLD,
    SUBCODE_INSUFFICIENT_CUSTOMER_INFO,
    SUBCODE_OBJECT_NOT_FOUND,
    SUBCODE_TOKEN_EXPIRED,
)

# Graph answers OAuth, parameter, permission and (as far as public reports show) throttling errors with
# HTTP 400, server trouble with 5xx [6.1].
HTTP_BAD_REQUEST: Final = 400
HTTP_SERVER_ERROR: Final = 500
HTTP_UNAVAILABLE: Final = 503

# Graph's "An access token is required" code [Graph error handling guide].
CODE_TOKEN_MISSING: Final = 104
# Graph's "Unknown path components" code for a path it does not route.
CODE_UNKNOWN_PATH: Final = 2500
# Temporary server trouble: code 1 ("unknown error", commonly with subcode 99), code 2 (service) [6.2].
CODE_UNKNOWN_ERROR: Final = 1
SUBCODE_UNKNOWN_ERROR: Final = 99
CODE_SERVICE_UNAVAILABLE: Final = 2

# --- CAPI validation subcodes that Meta does not document: the emulator's choice (README lists them). ---
# Emulator's choice: a required event field (event_name, event_time, action_source, user_data, and for
# website events client_user_agent / event_source_url) is missing or has the wrong type.
SUBCODE_MISSING_FIELD: Final = 2804001
# Emulator's choice: action_source is not one of Meta's values.
SUBCODE_INVALID_ACTION_SOURCE: Final = 2804002
# Emulator's choice: event_time is not a number of seconds or lies in the future (beyond our skew).
SUBCODE_INVALID_EVENT_TIME: Final = 2804004
# Emulator's choice: an app event lacks app_data.advertiser_tracking_enabled or a valid 16-slot extinfo.
SUBCODE_INVALID_APP_DATA: Final = 2804007
# Emulator's choice: a user_data field Meta wants hashed is not a lowercase SHA-256 (64 hex) value.
SUBCODE_UNHASHED_FIELD: Final = 2804008
# Emulator's choice: an event was rejected by the `reject_event_ids` test hook.
SUBCODE_REJECTED_EVENT: Final = 2804017
# Emulator's choice: a Purchase lacks a numeric custom_data.value or an ISO 4217 currency. Third-party
# fixtures attach this meaning (among others) to 2804019; Meta documents none [5].
SUBCODE_PURCHASE_VALUE: Final = 2804019

# Meta documents these two and we have real bodies for them [6.2]; re-exported for one import site.
__all__ = [
    "SUBCODE_EVENT_TOO_OLD",
    "SUBCODE_INSUFFICIENT_CUSTOMER_INFO",
    "ErrorAnswer",
]

_OAUTH: Final = "OAuthException"
_GRAPH_METHOD: Final = "GraphMethodException"


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """One error answer: the HTTP status, the fields of `{"error": {...}}` and extra headers."""

    status: int
    code: int
    message: str
    type: str = _OAUTH
    subcode: int | None = None
    is_transient: bool = False
    user_title: str | None = None
    user_msg: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """"code/subcode" (or "code" when Meta sends no subcode), the key of the error statistics."""
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        """The JSON body Meta sends, with the given trace id."""
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.is_transient
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = fbtrace_id
        return {"error": error}

    def encode(self, fbtrace_id: str) -> bytes:
        """`body()` as JSON bytes."""
        return orjson.dumps(self.body(fbtrace_id))


def invalid_event(subcode: int, title: str, msg: str) -> ErrorAnswer:
    """A CAPI validation error: the whole request is refused (100 / 2804xxx, HTTP 400, not transient)."""
    return ErrorAnswer(
        status=HTTP_BAD_REQUEST, code=CODE_INVALID_PARAMETER, message="Invalid parameter",
        subcode=subcode, user_title=title, user_msg=msg,
    )  # fmt: skip


def event_too_old() -> ErrorAnswer:
    """Meta's real answer to an event older than 7 days (100 / 2804003) [1.3]."""
    return invalid_event(
        SUBCODE_EVENT_TOO_OLD,
        "Event Timestamp Too Old",
        "The timestamp for this event is too far in the past. Events need to be sent from your server "
        "within 7 days of when they occurred. Enter a timestamp that has occurred within the last 7 days.",
    )


def insufficient_customer_info() -> ErrorAnswer:
    """No customer-information key, or only a "too broad" set of them (100 / 2804050) [3.1]."""
    return invalid_event(
        SUBCODE_INSUFFICIENT_CUSTOMER_INFO,
        "Insufficient Customer Information Parameters",
        "The event has no customer information parameters or only a combination that is too broad to "
        "match (for example only country and gender). Add more customer information parameters.",
    )


def invalid_parameter(message: str) -> ErrorAnswer:
    """A Graph-level parameter error on the request itself (code 100, no subcode)."""
    return ErrorAnswer(status=HTTP_BAD_REQUEST, code=CODE_INVALID_PARAMETER, message=f"(#100) {message}")


def too_many_events(count: int) -> ErrorAnswer:
    """`data` holds more events than Meta takes in one request [1.3]."""
    return invalid_parameter(
        f"param data must be an array with at most {MAX_EVENTS_PER_REQUEST} elements, got {count}"
    )


def missing_token() -> ErrorAnswer:
    """No access_token in the query string, form or JSON body."""
    return ErrorAnswer(
        status=HTTP_BAD_REQUEST, code=CODE_TOKEN_MISSING,
        message="An access token is required to request this resource.",
    )  # fmt: skip


def invalid_token() -> ErrorAnswer:
    """A token Meta cannot parse or does not know (190, no subcode)."""
    return ErrorAnswer(
        status=HTTP_BAD_REQUEST, code=CODE_TOKEN_INVALID,
        message="Invalid OAuth access token - Cannot parse access token",
        headers={"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token"'},
    )  # fmt: skip


def _graph_time(epoch_s: float) -> str:
    return time.strftime("%A, %d-%b-%y %H:%M:%S UTC", time.gmtime(epoch_s))


def expired_token(expired_at: float, now: float) -> ErrorAnswer:
    """A token whose session has expired (190 / 463); `expired_at` and `now` are Unix seconds."""
    message = (
        f"Error validating access token: Session has expired on {_graph_time(expired_at)}. "
        f"The current time is {_graph_time(now)}."
    )
    return ErrorAnswer(
        status=HTTP_BAD_REQUEST, code=CODE_TOKEN_INVALID, subcode=SUBCODE_TOKEN_EXPIRED, message=message,
        headers={"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token" "Session has expired"'},
    )  # fmt: skip


def unknown_object(dataset_id: str, method: str = "post") -> ErrorAnswer:
    """A dataset that does not exist or the token may not use (100 / 33) [6.2]; Meta names the request's
    method ("Unsupported post request." to events, "Unsupported get request." to a read)."""
    return ErrorAnswer(
        status=HTTP_BAD_REQUEST, code=CODE_INVALID_PARAMETER, subcode=SUBCODE_OBJECT_NOT_FOUND,
        type=_GRAPH_METHOD,
        message=(
            f"Unsupported {method} request. Object with ID '{dataset_id}' does not exist, cannot be loaded "
            "due to missing permissions, or does not support this operation. Please read the Graph API "
            "documentation at https://developers.facebook.com/docs/graph-api"
        ),
    )  # fmt: skip


def unknown_path(path: str) -> ErrorAnswer:
    """A path Graph does not route (for example a malformed version)."""
    return ErrorAnswer(status=HTTP_BAD_REQUEST, code=CODE_UNKNOWN_PATH, message=f"Unknown path components: {path}")


def server_error() -> ErrorAnswer:
    """Meta's generic 500: code 1 / 99, transient."""
    return ErrorAnswer(
        status=HTTP_SERVER_ERROR, code=CODE_UNKNOWN_ERROR, subcode=SUBCODE_UNKNOWN_ERROR,
        message="An unknown error occurred", is_transient=True,
    )  # fmt: skip


def service_unavailable() -> ErrorAnswer:
    """Meta's temporary downtime: code 2, HTTP 503, transient."""
    return ErrorAnswer(
        status=HTTP_UNAVAILABLE, code=CODE_SERVICE_UNAVAILABLE,
        message="An unexpected error has occurred. Please retry your request later.", is_transient=True,
    )  # fmt: skip


# Throttle answers cycle through these codes in turn [6.2][7]: app limit, user limit, ad-account limit,
# business-use-case (ads management) limit.
THROTTLE_SEQUENCE: Final = (4, 17, 613, 80004)
_THROTTLE_FACTS: Final[Mapping[int, tuple[int | None, str, str]]] = {
    4: (None, "(#4) Application request limit reached", "X-App-Usage"),
    17: (2446079, "(#17) User request limit reached", "X-App-Usage"),
    613: (1487742, "(#613) There have been too many calls from this ad-account. Please wait a bit and try again.",
          "X-Ad-Account-Usage"),
    80004: (2446079, "(#80004) There have been too many calls to this ad-account. Wait a bit and try again. "
            "For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
            "X-Business-Use-Case-Usage"),
}  # fmt: skip


def throttled(code: int, dataset_id: str, regain_minutes: int) -> ErrorAnswer:
    """One of Meta's rate-limit answers with the usage header Meta sends along (transient).

    `regain_minutes` goes into `estimated_time_to_regain_access` (minutes, as Meta reports it) and
    `reset_time_duration` (seconds) of the usage headers.
    """
    subcode, message, header = _THROTTLE_FACTS[code]
    usage: dict[str, Any]
    if header == "X-App-Usage":
        usage = {"call_count": 100, "total_cputime": 100, "total_time": 100}
    elif header == "X-Ad-Account-Usage":
        usage = {"acc_id_util_pct": 100, "reset_time_duration": regain_minutes * 60,
                 "ads_api_access_tier": "standard_access"}  # fmt: skip
    else:
        usage = {dataset_id: [{
            "type": "ads_management", "call_count": 100, "total_cputime": 100, "total_time": 100,
            "estimated_time_to_regain_access": regain_minutes, "ads_api_access_tier": "standard_access",
        }]}  # fmt: skip
    return ErrorAnswer(
        status=HTTP_BAD_REQUEST, code=code, subcode=subcode, message=message, is_transient=True,
        headers={header: orjson.dumps(usage).decode()},
    )  # fmt: skip
