"""structlog set-up: logs never show an access token or raw PII, through every renderer, whatever carries it;
a dead log sink never raises into the caller."""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from stream import logs
from stream.config import Destination

RENDERERS = ["json", "console"]
EMAIL = "Mary.Smith+app7@Example.COM"
PHONE = "+1 415-555-0134"


def fresh_token() -> str:
    """A token no earlier test registered, so each test proves its own path."""
    return f"EAAB{uuid.uuid4().hex}{uuid.uuid4().hex}"


@pytest.fixture
def capture() -> Iterator[Callable[[str], tuple[structlog.typing.FilteringBoundLogger, io.StringIO]]]:
    """configure() the process logging into a buffer with the named renderer; reset afterwards."""

    def configure(fmt: str) -> tuple[structlog.typing.FilteringBoundLogger, io.StringIO]:
        out = io.StringIO()
        logs.configure(level="debug", fmt=fmt, stream=out)
        return structlog.get_logger("capi_stream.test"), out

    yield configure
    structlog.reset_defaults()


def fail(exc: Exception) -> None:
    """Raise `exc` from a frame of its own, so the traceback has a frame to show."""
    raise exc


def written(out: io.StringIO) -> str:
    text = out.getvalue()
    assert text, "the call must have logged something"
    return text


@pytest.mark.parametrize("fmt", RENDERERS)
class TestToken:
    """The access token is replaced by [REDACTED] wherever it sits in an event."""

    def test_a_registered_token_in_a_field(self, capture: Callable[..., tuple], fmt: str) -> None:
        """A registered token inside a plain string field is redacted."""
        token = fresh_token()
        logs.register_secret(token)
        log, out = capture(fmt)
        log.warning("meta_answer", detail=f"request with {token} refused")
        assert token not in written(out)
        assert logs.REDACTED in written(out)

    def test_a_registered_token_in_the_event_name(self, capture: Callable[..., tuple], fmt: str) -> None:
        """Even the event name (a string a careless call could build) is redacted."""
        token = fresh_token()
        logs.register_secret(token)
        log, out = capture(fmt)
        log.info(f"sent with {token}")  # noqa: G004 - the careless call this test is about
        assert token not in written(out)

    def test_an_unregistered_token_after_access_token(self, capture: Callable[..., tuple], fmt: str) -> None:
        """A token never registered is still redacted after `access_token=` and `"access_token":"`."""
        first, second = fresh_token(), fresh_token()
        log, out = capture(fmt)
        log.info("url", url=f"https://graph.example/v26.0/1/events?access_token={first}&x=1")
        log.info("body", body=f'{{"data":[],"access_token":"{second}"}}')
        text = written(out)
        assert first not in text
        assert second not in text
        assert text.count(logs.REDACTED) == 2

    def test_a_token_in_an_exception_message_with_traceback(self, capture: Callable[..., tuple], fmt: str) -> None:
        """log.exception renders the traceback; a request body in the exception's message is redacted."""
        token = fresh_token()
        logs.register_secret(token)
        log, out = capture(fmt)
        try:
            fail(RuntimeError(f'POST failed: {{"data":[{{}}],"access_token":"{token}"}}'))
        except RuntimeError:
            log.exception("stage_failed")
        text = written(out)
        assert "RuntimeError" in text  # the traceback really was rendered
        assert token not in text

    def test_a_token_in_an_exception_passed_as_a_field(self, capture: Callable[..., tuple], fmt: str) -> None:
        """An exception object as a field value is rendered as text without the token."""
        token = fresh_token()
        logs.register_secret(token)
        log, out = capture(fmt)
        log.error("send_failed", error=ValueError(f"bad token {token}"))
        text = written(out)
        assert "ValueError" in text
        assert token not in text

    def test_a_token_cut_off_by_truncation(self, capture: Callable[..., tuple], fmt: str) -> None:
        """`detail=str(exc)[:200]` may end inside the token: the cut-off start of the token is redacted too."""
        token = fresh_token()
        logs.register_secret(token)
        log, out = capture(fmt)
        message = "x" * 180 + token
        log.error("stage_failed", detail=message[:200])
        assert token[:20] not in written(out)

    def test_a_token_inside_containers_and_bytes(self, capture: Callable[..., tuple], fmt: str) -> None:
        """Nested dicts, lists, tuples and bytes are walked; none shows the token."""
        token = fresh_token()
        logs.register_secret(token)
        log, out = capture(fmt)
        log.info("nested", extra={"answer": {"echo": token}}, items=[1, ("a", token)], body=token.encode())
        text = written(out)
        assert token not in text
        assert text.count(logs.REDACTED) >= 3

    def test_a_reloaded_token_is_redacted_without_registering_it(
        self, capture: Callable[..., tuple], fmt: str, tmp_path: Path
    ) -> None:
        """Reading a token (at start or on a reload after rotation) is enough to keep it out of the logs."""
        token_file = tmp_path / "token"
        dest = Destination("shop", "111", ("a",), token_file=str(token_file))
        for _ in range(2):  # the first token, then the rotated one
            token = fresh_token()
            token_file.write_text(token + "\n")
            assert dest.read_token() == token
            log, out = capture(fmt)
            log.error("send_failed", detail=f"echo {token}")
            assert token not in written(out)


@pytest.mark.parametrize("fmt", RENDERERS)
class TestPii:
    """E-mail addresses and international phone numbers never reach the logs, even inside an exception."""

    def test_pii_in_fields(self, capture: Callable[..., tuple], fmt: str) -> None:
        """A field that quotes a record's e-mail or phone is redacted to [PII]."""
        log, out = capture(fmt)
        log.warning("decode_failed", detail=f"cannot parse {EMAIL!r} or {PHONE!r}")
        text = written(out)
        for needle in (EMAIL, EMAIL.lower(), PHONE, "415-555-0134"):
            assert needle not in text
        assert logs.PII_REDACTED in text

    def test_pii_in_an_exception(self, capture: Callable[..., tuple], fmt: str) -> None:
        """An exception whose message carries a raw e-mail and phone is rendered without them."""
        log, out = capture(fmt)
        try:
            fail(ValueError(f"user_data em={EMAIL} ph=0044 20 7946 0321"))
        except ValueError as exc:
            log.exception("stage_failed", error=exc)
        text = written(out)
        assert "ValueError" in text
        for needle in (EMAIL, "20 7946 0321"):
            assert needle not in text

    def test_operational_values_are_kept(self, capture: Callable[..., tuple], fmt: str) -> None:
        """Dataset ids, offsets, codes, versions and IPs of brokers stay readable (they are not PII)."""
        log, out = capture(fmt)
        log.info("batch", dataset_id="123456789012345", halt="190/463", version="v26.0", broker="127.0.0.1:19092",
                 offset=1234567)  # fmt: skip
        text = written(out)
        for needle in ("123456789012345", "190/463", "v26.0", "127.0.0.1:19092", "1234567"):
            assert needle in text


def test_json_is_the_default_off_a_tty(capture: Callable[..., tuple]) -> None:
    """`auto` writes one JSON object per line when the stream is not a terminal, with event and level."""
    log, out = capture("auto")
    log.info("pipeline_started", destinations=2)
    line = orjson.loads(written(out).splitlines()[0])
    assert (line["event"], line["level"], line["destinations"]) == ("pipeline_started", "info", 2)


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
    stream = _json_logs()
    stream.close()
    structlog.get_logger("test").error("after_close")
    assert logs.dropped_lines() >= 1


def test_lines_still_reach_a_healthy_stream_as_json() -> None:
    """The safe sink writes one JSON line per event with its level."""
    stream = _json_logs()
    structlog.get_logger("test").info("hello", n=1)
    line = orjson.loads(stream.getvalue().splitlines()[0])
    assert (line["event"], line["level"], line["n"]) == ("hello", "info", 1)


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]

def _json_logs(level: str = "info") -> io.StringIO:
    """JSON logging at `level` into a fresh in-memory stream, which is returned."""
    stream = io.StringIO()
    logs.configure(level, "json", stream)
    return stream


def _kafka_logger(clock: FakeClock | None = None, level: str = "info") -> tuple[logs.KafkaLogger, io.StringIO]:
    """The librdkafka logger over a 30 s repeat limiter on `clock`, logging JSON into the returned stream."""
    stream = _json_logs(level)
    return logs.KafkaLogger(logs.RepeatLimiter(30.0, clock or FakeClock())), stream


def _rdkafka(kafka: logs.KafkaLogger, level: int, facility: str, client: str, message: str) -> None:
    """A line as confluent-kafka hands it to its logger: `FAC [client] message` through a %-format."""
    kafka.log(level, "%s [%s] %s", facility, client, message)



def test_librdkafka_lines_become_structlog_events_with_a_level() -> None:
    """confluent-kafka's logger call turns into one JSON `librdkafka` event with level, facility and client."""
    kafka, stream = _kafka_logger(level="debug")
    _rdkafka(kafka, 40, "FAIL", "rdkafka#consumer-1", "[thrd:x]: Connect to ipv4#127.0.0.1:1 failed")
    _rdkafka(kafka, 30, "GETPID", "rdkafka#consumer-1", "Failed to get PID")
    _rdkafka(kafka, 20, "CONFWARN", "rdkafka#producer-2", "Configuration property x is ignored")
    got = [(x["event"], x["level"], x["facility"], x["client"]) for x in _lines(stream)]
    assert got == [("librdkafka", "error", "FAIL", "rdkafka#consumer-1"),
                   ("librdkafka", "warning", "GETPID", "rdkafka#consumer-1"),
                   ("librdkafka", "info", "CONFWARN", "rdkafka#producer-2")]


def test_a_fresh_broker_s_transient_answers_are_info_while_they_last_briefly() -> None:
    """librdkafka retrying a broker's 'not ready yet' answer (a fresh broker loading its coordinators) is info,
    not a warning a newcomer reads as a failure; the same condition past its grace period is at its own level,
    and a real failure (a refused connection) always is."""
    clock = FakeClock()
    kafka, stream = _kafka_logger(clock)
    loading = ("[thrd:main]: Failed to acquire idempotence PID from broker 127.0.0.1:9092/1: "
               "Broker: Coordinator load in progress: retrying")
    _rdkafka(kafka, 30, "GETPID", "rdkafka#producer-5", loading)
    _rdkafka(kafka, 40, "FAIL", "rdkafka#producer-5", "[thrd:x]: Connect to 127.0.0.1:1 failed: Connection refused")
    clock.now += logs.TRANSIENT_GRACE_S + 1.0
    _rdkafka(kafka, 30, "GETPID", "rdkafka#producer-5", loading)
    got = [(x["level"], x["facility"]) for x in _lines(stream)]
    assert got == [("info", "GETPID"), ("error", "FAIL"), ("warning", "GETPID")]


def test_repeated_connection_errors_are_one_line_per_interval_with_a_count() -> None:
    """Ten FAIL lines within the interval log once; the next after the interval reports the nine repeats."""
    clock = FakeClock()
    kafka, stream = _kafka_logger(clock)
    for _ in range(10):
        _rdkafka(kafka, 40, "FAIL", "rdkafka#consumer-1", "Connect failed: Connection refused")
        clock.now += 1.0
    assert len(_lines(stream)) == 1
    clock.now += 25.0
    _rdkafka(kafka, 40, "FAIL", "rdkafka#consumer-1", "Connect failed: Connection refused")
    lines = _lines(stream)
    assert len(lines) == 2
    assert lines[1]["repeated"] == 9
    assert "repeated" not in lines[0]


def test_repeats_not_yet_reported_are_flushed_with_their_count() -> None:
    """At a client's close, repeats swallowed since the last line are reported in one line."""
    kafka, stream = _kafka_logger()
    for _ in range(4):
        _rdkafka(kafka, 30, "REQTMOUT", "rdkafka#producer-1", "Timed out 1 in-flight request")
    kafka.flush()
    lines = _lines(stream)
    assert [(x["event"], x.get("repeated")) for x in lines] == [("librdkafka", None), ("librdkafka_repeats", 3)]


def test_a_different_facility_is_not_suppressed_by_another_s_repeats() -> None:
    """Rate limiting is per (level, facility, client): a new kind of line always gets through."""
    kafka, stream = _kafka_logger()
    _rdkafka(kafka, 40, "FAIL", "c1", "a")
    _rdkafka(kafka, 40, "FAIL", "c1", "a")
    _rdkafka(kafka, 40, "FAIL", "c2", "a")
    _rdkafka(kafka, 30, "REQTMOUT", "c1", "b")
    got = [(x["facility"], x["client"]) for x in _lines(stream)]
    assert got == [("FAIL", "c1"), ("FAIL", "c2"), ("REQTMOUT", "c1")]


def test_standard_logging_lines_go_through_structlog() -> None:
    """A line of the stdlib `logging` module (asyncio, aiohttp) comes out as a JSON structlog event."""
    import logging

    stream = _json_logs()
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    line = _lines(stream)[-1]
    assert (line["event"], line["level"], line["logger"]) == ("Task exception was never retrieved", "error", "asyncio")


def test_every_kafka_client_config_gets_the_structlog_logger() -> None:
    """kafka_config adds the shared librdkafka logger and keeps the caller's settings."""
    conf = logs.kafka_config({"bootstrap.servers": "x:1"})
    assert conf == {"bootstrap.servers": "x:1", "logger": logs.KAFKA_LOGGER}


def test_flush_reports_repeats_of_other_kinds_sharing_the_limiter() -> None:
    """Repeats counted for the consumer's error callback (a two-part key) are flushed, not crashed on."""
    stream = _json_logs()
    limiter = logs.RepeatLimiter(30.0, FakeClock())
    kafka = logs.KafkaLogger(limiter)
    for _ in range(3):
        limiter.admit(("kafka_error", "_TRANSPORT"))
    kafka.flush()
    line = _lines(stream)[-1]
    assert (line["event"], line["repeated"], line["kind"]) == ("librdkafka_repeats", 2, "kafka_error:_TRANSPORT")


def test_an_exception_that_kills_a_thread_is_a_structlog_event() -> None:
    """A thread dying of an exception logs `thread_failed` as JSON instead of a raw traceback on stderr."""
    import threading

    stream = _json_logs()

    def boom() -> None:
        raise RuntimeError("broken")

    thread = threading.Thread(target=boom, name="worker-x")
    thread.start()
    thread.join()
    line = _lines(stream)[-1]
    assert (line["event"], line["level"], line["thread"]) == ("thread_failed", "error", "worker-x")
    assert "RuntimeError: broken" in line["exception"]


def test_a_sink_whose_pipe_reader_is_gone_writes_to_devnull_from_then_on() -> None:
    """Once the reader of stderr's pipe is gone, the descriptor writes to /dev/null: what the stream still
    buffers cannot fail at the interpreter's exit (which would exit 120 instead of the pipeline's code)."""
    import io
    import os

    from stream.logs import SafeSink

    read_end, write_end = os.pipe()
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w")), encoding="utf-8")
    os.close(read_end)
    sink = SafeSink(stream)
    try:
        sink.write("a line\n")
        sink.flush()  # EPIPE: counted, and the descriptor now goes to /dev/null
        assert sink.dropped == 1
        assert os.path.samestat(os.fstat(write_end), os.stat(os.devnull))
        sink.write("more\n")  # still a line nobody reads: counted
        sink.flush()
        stream.flush()  # what an exit does: no error now
        assert sink.dropped == 2
    finally:
        stream.close()
