"""Meta's error bodies as the emulator writes them, and the purity of its decision modules."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

from stream.emulator import answers

PURE_MODULES = ["answers", "fastpath", "rules", "faults", "state", "tokens", "page", "samples"]
IO_IMPORTS = {"asyncio", "aiohttp", "socket", "threading", "confluent_kafka", "structlog"}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_decision_modules_do_no_io(module: str) -> None:
    """The pure emulator modules import no asyncio, aiohttp, sockets, threads or loggers."""
    path = Path(answers.__file__).with_name(f"{module}.py")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & IO_IMPORTS


def test_validation_error_has_every_capi_field() -> None:
    """A CAPI validation error carries message, type, code, subcode, is_transient, user texts, trace."""
    body = orjson.loads(answers.event_too_old().encode("Atrace"))
    assert body == {"error": {
        "message": "Invalid parameter", "type": "OAuthException", "code": 100, "error_subcode": 2804003,
        "is_transient": False, "error_user_title": "Event Timestamp Too Old",
        "error_user_msg": body["error"]["error_user_msg"], "fbtrace_id": "Atrace",
    }}  # fmt: skip
    assert "7 days" in body["error"]["error_user_msg"]


def test_keys_meta_leaves_out_are_left_out() -> None:
    """Errors Meta sends without subcode or user texts have none here either."""
    body = orjson.loads(answers.invalid_token().encode("A1"))["error"]
    assert set(body) == {"message", "type", "code", "is_transient", "fbtrace_id"}
    assert answers.invalid_token().key == "190"


@pytest.mark.parametrize(
    ("error", "status", "key", "transient"),
    [
        (answers.server_error(), 500, "1/99", True),
        (answers.service_unavailable(), 503, "2", True),
        (answers.missing_token(), 400, "104", False),
        (answers.expired_token(0, 60), 400, "190/463", False),
        (answers.unknown_object("42"), 400, "100/33", False),
        (answers.too_many_events(1001), 400, "100", False),
        (answers.insufficient_customer_info(), 400, "100/2804050", False),
    ],
)
def test_status_key_and_transience(error: answers.ErrorAnswer, status: int, key: str, transient: bool) -> None:
    """Each answer has Meta's HTTP status, code/subcode and is_transient."""
    assert (error.status, error.key, error.is_transient) == (status, key, transient)


@pytest.mark.parametrize(
    ("code", "subcode", "header"),
    [(4, None, "X-App-Usage"), (17, 2446079, "X-App-Usage"), (613, 1487742, "X-Ad-Account-Usage"),
     (80004, 2446079, "X-Business-Use-Case-Usage")],
)  # fmt: skip
def test_throttles_carry_their_usage_header(code: int, subcode: int | None, header: str) -> None:
    """Each throttle answer is transient, has Meta's code/subcode and its usage header as JSON."""
    error = answers.throttled(code, "42", regain_minutes=5)
    assert (error.code, error.subcode, error.is_transient, error.status) == (code, subcode, True, 400)
    usage = orjson.loads(error.headers[header])
    if header == "X-Business-Use-Case-Usage":
        assert usage["42"][0]["estimated_time_to_regain_access"] == 5
    assert usage


def test_expired_token_message_names_both_times() -> None:
    """The expiry message says when the session expired and what time it is, in UTC."""
    message = answers.expired_token(0, 86400).message
    assert "Thursday, 01-Jan-70 00:00:00 UTC" in message
    assert "Friday, 02-Jan-70" in message
