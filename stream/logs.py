"""structlog set-up: JSON lines by default, console on a TTY; tokens are redacted everywhere.

Log calls name events (`batch_sent`) and pass counts, codes and ids as fields. No call passes a raw
PII value; as a second line of defence every string field is scrubbed of `access_token=...` and of the
tokens registered with `register_secret`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
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
        self._gone = False  # the pipe's reader went away: every line from then on is dropped

    def write(self, text: str) -> int:
        """Write `text`; 0 and a counted drop when the stream is gone or broken."""
        if self._gone:
            self.dropped += 1
            return 0
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._reader_gone()
            return 0
        except (OSError, ValueError):  # EBADF, a closed file, a full non-blocking pipe
            self.dropped += 1
            return 0

    def flush(self) -> None:
        """Flush, dropping what cannot be written."""
        if self._gone:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()
        except (OSError, ValueError):
            self.dropped += 1

    def _reader_gone(self) -> None:
        """The pipe's reader is gone for good: its file descriptor now writes to /dev/null. What the stream
        still buffers would fail again at the interpreter's exit, which then exits 120 instead of the
        pipeline's own code (a buffered stderr: PYTHONUNBUFFERED unset, as for any user)."""
        self.dropped += 1
        self._gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)

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
    threading.excepthook = _thread_failed
    logging.captureWarnings(True)  # Python's warnings (a coroutine never awaited) as events too
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _StdlibToStructlog)]
    root.addHandler(_StdlibToStructlog())
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])


# librdkafka repeats a failing connection's error at every reconnect (every second or so per broker);
# one line per facility and interval, with the count of the repeats it stands for, is enough to act on.
REPEAT_INTERVAL_S = 30.0
# Broker answers that mean "not ready yet, ask again", which librdkafka retries on its own: a broker that
# just started loads its group and transaction coordinators and elects the leaders of new partitions. A
# line naming one is info for TRANSIENT_GRACE_S after that kind of line (facility, client) first appeared,
# then at its own level: a condition that lasts is no longer a start-up state.
TRANSIENT_ANSWERS = ("Coordinator load in progress", "Coordinator not available", "Not coordinator",
                     "Leader not available", "Not leader for partition", "Not leader or follower")
TRANSIENT_GRACE_S = 30.0


def _level_name(level: int) -> str:
    if level >= logging.ERROR:
        return "error"
    if level >= logging.WARNING:
        return "warning"
    if level >= logging.INFO:
        return "info"
    return "debug"


class RepeatLimiter:
    """Lets the first of a kind of line through, then one per `interval_s` with how many it stood for.

    `admit(key)` returns None to suppress, else the number of suppressed repeats since the last line
    passed (0 for a first one). Thread-safe: librdkafka's lines arrive on whichever thread polls.
    """

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Any = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, ...], float] = {}
        self._suppressed: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        """The limiter's clock."""
        return float(self._clock())

    def admit(self, key: tuple[str, ...]) -> int | None:
        """None: a repeat inside the interval (counted); else the repeats it now reports."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)

    def pending(self) -> dict[tuple[str, ...], int]:
        """Suppressed repeats not yet reported, and forget them (for a final line at close)."""
        with self._lock:
            out, self._suppressed = self._suppressed, {}
            return out


class KafkaLogger:
    """confluent-kafka's `logger`: librdkafka's own lines (`%3|...|FAIL|...`) as structlog events.

    confluent-kafka calls `log(level, "%s [%s] %s", facility, client, message)` from the thread that
    polls the client. Each line becomes a `librdkafka` event at its level with the facility, client and
    message as fields; repeats of one (level, facility, client) are rate-limited (RepeatLimiter). A
    warning that names a transient broker answer (TRANSIENT_ANSWERS) is info during its grace period.
    """

    def __init__(self, limiter: RepeatLimiter | None = None) -> None:
        self.limiter = limiter or RepeatLimiter()
        self._log = structlog.get_logger("capi_stream.librdkafka")
        self._transient_since: dict[tuple[str, str], float] = {}

    def _transient(self, facility: str, client: str, message: str) -> bool:
        """True while a line naming a transient broker answer is inside its kind's grace period."""
        if not any(answer in message for answer in TRANSIENT_ANSWERS):
            return False
        now = self.limiter.now()
        return now - self._transient_since.setdefault((facility, client), now) < TRANSIENT_GRACE_S

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """One librdkafka line (logging.Logger.log's signature)."""
        try:
            facility, client, message = (str(a) for a in args) if len(args) == 3 else ("", "", fmt % args)
        except (TypeError, ValueError):
            facility, client, message = "", "", str(fmt)
        if level >= logging.WARNING and self._transient(facility, client, message):
            level = logging.INFO
        name = _level_name(level)
        repeats = self.limiter.admit(("librdkafka", name, facility, client))
        if repeats is None:
            return
        fields: dict[str, Any] = {"facility": facility, "client": client, "message": message[:500]}
        if repeats:
            fields["repeated"] = repeats
            fields["interval_s"] = self.limiter.interval_s
        with contextlib.suppress(Exception):  # logging never raises into librdkafka's callback
            getattr(self._log, name)("librdkafka", **fields)

    def flush(self) -> None:
        """Report repeats suppressed since their last line (at a client's close)."""
        for key, count in self.limiter.pending().items():
            if len(key) == 4 and key[0] == "librdkafka":
                _, name, facility, client = key
                fields = {"facility": facility, "client": client}
            else:  # another kind of line that shares the limiter (the consumer's error_cb)
                name, fields = "warning", {"kind": ":".join(key)}
            with contextlib.suppress(Exception):
                getattr(self._log, name)("librdkafka_repeats", repeated=count, **fields)


KAFKA_LOGGER = KafkaLogger()


def kafka_config(conf: dict[str, Any]) -> dict[str, Any]:
    """`conf` with librdkafka's lines routed through structlog (every client capi-stream creates)."""
    return {**conf, "logger": KAFKA_LOGGER}


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A thread died of an exception: one structlog error event with the traceback, not raw text."""
    if args.exc_type is SystemExit:
        return
    with contextlib.suppress(Exception):
        structlog.get_logger("capi_stream").error(
            "thread_failed", thread=args.thread.name if args.thread else "?",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


class _StdlibToStructlog(logging.Handler):
    """Lines of the standard `logging` module (asyncio, aiohttp) as structlog events, never raw text."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = record.exc_info[1]
            getattr(structlog.get_logger(record.name), _level_name(record.levelno))(record.getMessage(), **fields)
        except Exception:  # noqa: BLE001 - a log line must never raise into the caller
            self.handleError(record)
