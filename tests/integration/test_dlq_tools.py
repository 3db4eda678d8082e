"""`capi-stream dlq show|redrive` against the real broker, and the row and filter rules behind them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from stream.cli import main
from stream.errors import UsageError
from stream.pipeline.deadletters import HEADER_EVENT_ID, HEADER_REASON, DeadLetter
from stream.tools import dlq as dlqtools
from stream.tools.dlq import RawMessage
from tests.support.harness import headers_of, read_topic

EMAIL = "jane.doe.secret@example.com"
PHONE = "+16505551234"
KEY = b"user-4711-private-key"
# The original value carries personal data in clear (as apps publish it); tools must never print it.
VALUE = b"\x02" + f"{EMAIL}|{PHONE}".encode()
NOW = 1_795_860_000.0


def letters() -> list[DeadLetter]:
    """Six letters: three reasons, Meta codes on some, a decode failure without event name."""
    out = [DeadLetter("conversions", i % 2, 100 + i, KEY, VALUE, "event_too_old",
                      f"event_time is {700_000 + i} s old, Meta accepts 604800 s",
                      event_name="Purchase", event_id=f"ev-old-{i}") for i in range(3)]
    out.append(DeadLetter("conversions", 1, 7, KEY, VALUE, "meta_rejected", "Invalid parameter", code=100,
                          subcode=2804050, event_name="AddToCart", event_id="ev-meta-1"))
    out.append(DeadLetter("conversions", 0, 9, KEY, VALUE, "meta_rejected", "Invalid parameter", code=100,
                          event_name="AddToCart", event_id="ev-meta-2"))
    out.append(DeadLetter("conversions", 0, 3, None, b"\xff\xfe", "bad_avro", "value is not Avro"))
    return out


def write_letters(bootstrap: str, topic: str, items: list[DeadLetter]) -> None:
    """Produce letters as stream/dlq.py writes them, to partition 0 in order."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for letter in items:
        producer.produce(topic, key=letter.key, value=letter.value, headers=letter.headers(NOW), partition=0)
    assert producer.flush(30) == 0


def dlq(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `capi-stream dlq ARGV` in-process; returns (exit code, stdout, stderr)."""
    code = main(["dlq", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def dead_letters(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> str:
    """A dead-letter topic holding `letters()`."""
    topic = topic_factory(partitions=2, prefix="dlq")
    write_letters(kafka_bootstrap, topic, letters())
    return topic


# ---- rows and filters (no broker) ----------------------------------------------------------------------


def _raw(letter: DeadLetter, offset: int = 0) -> RawMessage:
    return RawMessage(0, offset, letter.key, letter.value, letter.headers(NOW))


def test_row_reads_every_header() -> None:
    """A row carries reason, code/subcode, source position, time, event name and id, and the value's size."""
    row = dlqtools.letter_row(_raw(letters()[3], offset=5))
    assert (row.partition, row.offset, row.reason, row.code_text) == (0, 5, "meta_rejected", "100/2804050")
    assert (row.source, row.time_ms, row.event_name, row.event_id) == ("conversions[1]@7", NOW * 1000, "AddToCart",
                                                                       "ev-meta-1")
    assert row.value_bytes == len(VALUE)


def test_row_of_a_foreign_message_has_dashes() -> None:
    """A message without capi headers (or with garbled numbers) gives `-` fields, never an error."""
    row = dlqtools.letter_row(RawMessage(1, 2, b"k", b"v", [("capi.source_offset", b"x1"), ("other", None)]))
    assert (row.reason, row.code_text, row.source, row.time_ms) == ("-", "-", "-[-]@-", None)
    assert "-" in dlqtools.format_rows([row])[1]


def test_table_never_holds_key_or_value() -> None:
    """The table and the JSON rows show headers only: no key, no value bytes, decoded or not."""
    rows = [dlqtools.letter_row(_raw(letter, i)) for i, letter in enumerate(letters())]
    text = "\n".join(dlqtools.format_rows(rows)) + "".join(orjson.dumps(dlqtools.row_dict(r)).decode() for r in rows)
    for secret in (EMAIL, PHONE, KEY.decode(), "jane"):
        assert secret not in text
    assert "2026-11-28T10:00:00Z" in text


@pytest.mark.parametrize(("flags", "expected"), [
    (None, frozenset()),
    (["event_too_old"], frozenset({"event_too_old"})),
    (["event_too_old,bad_avro", "meta_rejected"], frozenset({"event_too_old", "bad_avro", "meta_rejected"})),
])  # fmt: skip
def test_reason_flag(flags: list[str] | None, expected: frozenset[str]) -> None:
    """--reason may repeat and may hold a comma list; none means every reason."""
    assert dlqtools.reasons_flag(flags) == expected


def test_empty_reason_flag_is_refused() -> None:
    """`--reason ''` is a usage error, not a filter that matches nothing."""
    with pytest.raises(UsageError, match="--reason"):
        dlqtools.reasons_flag([" , "])


def test_show_stops_at_the_limit() -> None:
    """show keeps the first `limit` matching letters and stops reading there."""
    consumed: list[int] = []

    def source() -> Any:
        for i, letter in enumerate(letters()):
            consumed.append(i)
            yield _raw(letter, i)

    result = dlqtools.show(source(), {"event_too_old", "meta_rejected"}, limit=4)
    assert [r.offset for r in result.rows] == [0, 1, 2, 3]
    assert result.limit_reached
    assert consumed == [0, 1, 2, 3]


def test_redrive_counts_and_sends_selected_letters_unchanged() -> None:
    """redrive hands the selected letters to `send` as they are; without `send` it only counts."""
    raws = [_raw(letter, i) for i, letter in enumerate(letters())]
    sent: list[RawMessage] = []
    counts = dlqtools.redrive(raws, {"meta_rejected"}, sent.append)
    assert counts == {"meta_rejected": 2}
    assert sent == raws[3:5]
    assert dlqtools.redrive(raws, frozenset(), None) == {"event_too_old": 3, "meta_rejected": 2, "bad_avro": 1}


def test_redrive_never_copies_a_letter_written_without_its_value() -> None:
    """A letter too large to keep its value cannot be sent back (it would be a tombstone): counted apart."""
    whole = _raw(DeadLetter("events", 0, 7, b"k1", b"v", "meta_rejected"), 0)
    cut = DeadLetter("events", 0, 8, b"k2", b"x" * 10, "meta_rejected")
    omitted = RawMessage(0, 1, cut.key, None, cut.headers(NOW, omitted="value"))
    sent: list[RawMessage] = []
    counts = dlqtools.redrive([whole, omitted], frozenset(), sent.append)
    assert sent == [whole]
    assert counts == {"meta_rejected": 1, f"meta_rejected {dlqtools.NOT_COPIED}": 1}


# ---- against the broker ----------------------------------------------------------------------------------


@pytest.mark.kafka
def test_show_lists_letters_without_their_bytes(kafka_bootstrap: str, dead_letters: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """show prints one row per letter with reason, code, source, time, event name and id, and no PII."""
    code, out, _ = dlq(capsys, "show", "--dlq-topic", dead_letters, "--bootstrap", kafka_bootstrap)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:7] == ["dlq", "time", "reason", "code", "source", "event_name", "event_id"]
    assert len(lines) == 1 + 6 + 1
    assert "meta_rejected" in lines[4]
    assert "100/2804050" in lines[4]
    assert "conversions[1]@7" in lines[4]
    assert "ev-meta-1" in lines[4]
    assert "2026-11-28T10:00:00Z" in lines[4]
    assert lines[-1] == f"6 of 6 letter(s) in {dead_letters}"
    for secret in (EMAIL, PHONE, KEY.decode()):
        assert secret not in out


@pytest.mark.kafka
def test_show_filters_and_limits(kafka_bootstrap: str, dead_letters: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--reason keeps only that reason; --limit stops early and says more may follow; JSON has every field."""
    code, out, err = dlq(capsys, "show", "--dlq-topic", dead_letters, "--bootstrap", kafka_bootstrap,
                         "--reason", "event_too_old", "--limit", "2", "--format", "json")
    assert code == 0
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [r["event_id"] for r in rows] == ["ev-old-0", "ev-old-1"]
    assert {r["reason"] for r in rows} == {"event_too_old"}
    assert rows[0]["source"] == "conversions[0]@100"
    assert rows[0]["detail"].startswith("event_time is 700000 s old")
    assert "limit reached" in err


@pytest.mark.kafka
def test_show_uses_the_config(kafka_bootstrap: str, dead_letters: str, tmp_path: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """With --config the dead-letter topic and the bootstrap come from the file."""
    config = tmp_path / "c.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ndlq_topic = "{dead_letters}"\n')
    code, out, _ = dlq(capsys, "show", "--config", str(config), "--reason", "bad_avro")
    assert code == 0
    assert out.splitlines()[-1] == f"1 of 6 letter(s) in {dead_letters} with reason bad_avro"


@pytest.mark.kafka
def test_redrive_dry_run_copies_nothing(kafka_bootstrap: str, dead_letters: str, topic_factory: Callable[..., str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Without --execute, redrive counts by reason and the destination stays empty."""
    dest = topic_factory(partitions=2)
    code, out, _ = dlq(capsys, "redrive", "--dlq-topic", dead_letters, "--to", dest, "--bootstrap", kafka_bootstrap)
    assert code == 0
    assert out.strip() == (f"would copy 6 letter(s) from {dead_letters} to {dest}: bad_avro 1, event_too_old 3, "
                           "meta_rejected 2 (dry run; --execute to copy)")
    assert read_topic(kafka_bootstrap, dest, want=0, timeout=2) == []


@pytest.mark.kafka
def test_redrive_execute_copies_selected_letters_unchanged(kafka_bootstrap: str, dead_letters: str,
                                                           topic_factory: Callable[..., str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--execute --reason copies exactly those letters with their key, value and headers intact."""
    dest = topic_factory(partitions=2)
    started = time.time()
    code, out, _ = dlq(capsys, "redrive", "--dlq-topic", dead_letters, "--to", dest, "--reason", "event_too_old",
                       "--bootstrap", kafka_bootstrap, "--execute")
    assert code == 0
    assert out.strip() == f"copied 3 letter(s) from {dead_letters} to {dest}: event_too_old 3"
    copies = read_topic(kafka_bootstrap, dest, want=3)
    assert len(copies) == 3
    originals = {letter.event_id: letter for letter in letters()}
    for message in copies:
        headers = headers_of(message)
        original = originals[headers[HEADER_EVENT_ID]]
        assert headers[HEADER_REASON] == "event_too_old"
        assert (message.key(), message.value()) == (original.key, original.value)
        assert headers == {k: v.decode() for k, v in original.headers(NOW)}  # capi.time is kept, not renewed
        assert message.timestamp()[1] >= int(started * 1000) - 1000


@pytest.mark.kafka
@pytest.mark.parametrize(("argv", "message"), [
    (["redrive", "--dlq-topic", "{dlq}", "--to", "{dlq}"], "is the dead-letter topic itself"),
    (["redrive", "--dlq-topic", "{dlq}", "--to", "missing-{dlq}"], "does not exist"),
    # a missing destination stays an error even when the dead-letter topic is missing too
    (["redrive", "--dlq-topic", "missing-{dlq}", "--to", "missing-{dlq}-to"], "topic missing-{dlq}-to does not exist"),
    (["show", "--dlq-topic", "{dlq}", "--limit", "-1"], "--limit"),
    (["show", "--dlq-topic", "{dlq}", "--reason", ","], "--reason"),
    (["show"], "--dlq-topic"),
    (["show", "--dlq-topic", "{dlq}", "--reason", "event_to_old"], "--reason event_to_old: unknown reason code"),
    (["redrive", "--dlq-topic", "{dlq}", "--to", "x", "--reason", "meta_rejected,bogus"], "--reason bogus"),
])  # fmt: skip
def test_bad_input_exits_2(kafka_bootstrap: str, dead_letters: str, capsys: pytest.CaptureFixture[str],
                           argv: list[str], message: str) -> None:
    """Same source and destination, unknown topics and bad flags: one clear line on stderr, exit 2."""
    args = [a.replace("{dlq}", dead_letters) for a in argv]
    code, out, err = dlq(capsys, *args, "--bootstrap", kafka_bootstrap)
    assert code == 2
    assert out == ""
    assert message.replace("{dlq}", dead_letters) in err


# ---- a dead-letter topic that does not exist yet: nothing has been dead-lettered -------------------------


@pytest.mark.kafka
def test_show_of_a_missing_topic_is_an_empty_listing(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh deployment has no dead-letter topic until the first letter: show says so in one line, exit 0."""
    topic = f"dlq-never-written-{uuid.uuid4().hex[:8]}"
    code, out, err = dlq(capsys, "show", "--dlq-topic", topic, "--bootstrap", kafka_bootstrap)
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    assert out.strip() == dlqtools.missing_topic_line(topic, "--dlq-topic")
    assert f"topic {topic} does not exist" in out
    assert "nothing has been dead-lettered" in out
    assert "check --dlq-topic for a typo" in out


@pytest.mark.kafka
def test_show_of_a_missing_topic_in_json_lists_nothing(kafka_bootstrap: str, tmp_path: Any,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--format json: no row on stdout (the empty listing), the line on stderr naming the config's key."""
    topic = f"dlq-never-written-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "c.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ndlq_topic = "{topic}"\n')
    code, out, err = dlq(capsys, "show", "--config", str(config), "--format", "json")
    assert (code, out) == (0, "")
    assert err.strip() == dlqtools.missing_topic_line(topic, f"kafka.dlq_topic in {config}")
    assert f"topic {topic} does not exist" in err
    assert "kafka.dlq_topic" in err


@pytest.mark.kafka
@pytest.mark.parametrize("execute", [False, True])
def test_redrive_from_a_missing_topic_has_nothing_to_do(kafka_bootstrap: str, topic_factory: Callable[..., str],
                                                        capsys: pytest.CaptureFixture[str], execute: bool) -> None:
    """Redrive from a dead-letter topic that does not exist: one line, exit 0, the destination untouched."""
    topic = f"dlq-never-written-{uuid.uuid4().hex[:8]}"
    dest = topic_factory(partitions=1)
    code, out, err = dlq(capsys, "redrive", "--dlq-topic", topic, "--to", dest, "--bootstrap", kafka_bootstrap,
                         *(["--execute"] if execute else []))
    assert (code, err) == (0, "")
    assert out.strip() == dlqtools.missing_topic_line(topic, "--dlq-topic")
    assert out.count("\n") == 1
    assert read_topic(kafka_bootstrap, dest, want=0, timeout=1) == []


def test_redrive_needs_a_destination(capsys: pytest.CaptureFixture[str]) -> None:
    """`dlq redrive` without --to is an argument error (exit 2) before any broker call."""
    with pytest.raises(SystemExit) as exc:
        main(["dlq", "redrive", "--dlq-topic", "x"])
    assert exc.value.code == 2
    assert "--to" in capsys.readouterr().err
