"""structlog set-up: JSON lines by default, console on a TTY; tokens are redacted everywhere.

Log calls name events (`batch_sent`) and pass counts, codes and ids as fields. No call passes a raw
PII value; as a second line of defence every string field is scrubbed of `access_token=...` and of the
tokens registered with `register_secret`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_TOKEN_PARAM = re.compile(r"(access_token[\"']?\s*[=:]\s*[\"']?)[^\"'&\s,}]+", re.IGNORECASE)
# Raw PII a message could carry (an exception that quotes a record's value): e-mail addresses and phone
# numbers written with their country code. Names, cities and the like cannot be told from other words;
# log calls never pass them (counts and codes only), and these patterns are the second line of defence.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w.])(?:\+|00)\d[\d ().-]{5,}\d")
# A field cut to a length before it was logged may end inside a secret: a tail of this many characters
# or more that starts a secret is redacted too.
MIN_SECRET_TAIL = 4
_SECRETS: set[str] = set()
REDACTED = "[REDACTED]"
PII_REDACTED = "[PII]"


def register_secret(value: str) -> None:
    """Never print `value` (an access token) in any log field from now on."""
    if len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """`text` with access_token values, registered secrets (whole, or cut off at the end), e-mail
    addresses and international phone numbers replaced."""
    text = _TOKEN_PARAM.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
        for size in range(min(len(secret) - 1, len(text)), MIN_SECRET_TAIL - 1, -1):
            if text.endswith(secret[:size]):
                text = text[:-size] + REDACTED
                break
    text = _EMAIL.sub(PII_REDACTED, text)
    return _PHONE.sub(PII_REDACTED, text)


def _scrub(value: Any) -> Any:
    """`value` with every string inside it redacted (containers walked, bytes and exceptions as text)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact(str(value))  # anything else is rendered as text by the renderers anyway


def _redact_processor(_logger: Any, _name: str, event: MutableMapping[str, Any],
                      ) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if key != "timestamp":
            event[key] = _scrub(value)
    return event


def _dumps(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


_SINK: SafeSink | None = None


def dropped_lines() -> int:
    """Log lines the configured sink could not write (its reader went away, say)."""
    return _SINK.dropped if _SINK is not None else 0


class SafeSink:
    """A text stream whose failed writes are counted and dropped, never raised.

    A log shipper that restarts closes our stderr pipe; every write then fails with EPIPE. Logging must
    never stop the pipeline, nor keep it from stopping: the failure is swallowed and counted.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.dropped = 0

    def write(self, text: str) -> int:
        """Write `text`; 0 and a counted drop when the stream is gone or broken."""
        try:
            return int(self._stream.write(text))
        except (OSError, ValueError):  # EPIPE, EBADF, a closed file, a full non-blocking pipe
            self.dropped += 1
            return 0

    def flush(self) -> None:
        """Flush, dropping what cannot be written."""
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self.dropped += 1

    def isatty(self) -> bool:
        """Whether the underlying stream is a terminal (False when that cannot be told)."""
        try:
            return bool(self._stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False


class SafeLogger:
    """structlog's logger: one rendered line per call to a `SafeSink` (never raises on a dead sink)."""

    def __init__(self, sink: SafeSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        """Write one line."""
        with self._lock:
            self._sink.write(message + "\n")
            self._sink.flush()

    log = debug = info = warn = warning = msg
    err = error = critical = exception = fatal = failure = msg


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Set up structlog for the process: `fmt` json, console or auto (console when stderr is a TTY).

    Log writes never raise: a closed or broken stream drops lines instead (see SafeSink).
    """
    global _SINK
    out = _SINK = SafeSink(stream or sys.stderr)
    logger = SafeLogger(out)
    use_console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer() if use_console
                     else structlog.processors.JSONRenderer(serializer=_dumps))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_args: logger,
        cache_logger_on_first_use=False,
    )
