"""structlog set-up: a dead log sink never raises into the caller."""

from __future__ import annotations

import contextlib
import io
import os

import orjson
import structlog

from stream import logs


def test_a_log_call_on_a_closed_pipe_does_not_raise_and_is_counted() -> None:
    """Writing a log line after the reader of stderr went away drops the line instead of raising EPIPE."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    os.close(read_end)
    logs.configure("info", "json", stream)
    log = structlog.get_logger("test")
    log.info("first")
    log.warning("second", n=2)
    assert logs.dropped_lines() >= 2
    with contextlib.suppress(BrokenPipeError):
        stream.close()  # its buffer cannot be flushed either


def test_a_log_call_on_a_closed_file_object_does_not_raise() -> None:
    """A stream closed under the logger (ValueError on write) is a dropped line too."""
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    stream.close()
    structlog.get_logger("test").error("after_close")
    assert logs.dropped_lines() >= 1


def test_lines_still_reach_a_healthy_stream_as_json() -> None:
    """The safe sink writes one JSON line per event with its level."""
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    structlog.get_logger("test").info("hello", n=1)
    line = orjson.loads(stream.getvalue().splitlines()[0])
    assert (line["event"], line["level"], line["n"]) == ("hello", "info", 1)
