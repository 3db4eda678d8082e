"""Dead-letter details of values that are not records: what is wrong, in an operator's words.

The detail is read by an operator in `dlq show`: it names the problem and the field, never fastavro's
raw exception text (which reads like a bug in capi-stream) and never the record's content (personal data).
"""

from __future__ import annotations

import io
import re
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.avro.decode import BAD_AVRO, NOT_CONFLUENT_FRAMED, UNKNOWN_SCHEMA_ID, DecodeError, Decoder
from stream.avro.schema import load_schema
from stream.avro.wire import WireFormat

SCHEMA = load_schema()
EMAIL = "jane.doe.secret@example.com"
DECODERS = [Decoder(SCHEMA, WireFormat.SCHEMALESS), Decoder(SCHEMA, WireFormat.SCHEMALESS, generated=False)]
# fastavro's own words on corrupt input: none may reach an operator as the whole explanation
RAW_EXCEPTION_TEXT = re.compile(r"out of range|unpack requires|codec can't decode|Error:|cannot fit")


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {f["name"]: None for f in SCHEMA["fields"]}
    base.update(event_name="Purchase", event_time=1_790_000_000, event_id="o-1", action_source="app",
                app_id="app-1", user_data={f["name"]: None for f in _user_data_fields()})
    base["user_data"]["em"] = EMAIL
    base.update(changes)
    return base


def _user_data_fields() -> list[dict[str, Any]]:
    field = next(f for f in SCHEMA["fields"] if f["name"] == "user_data")
    t = field["type"]
    t = next(b for b in t if b != "null") if isinstance(t, list) else t
    t = SCHEMA["__named_schemas"][t] if isinstance(t, str) else t
    return list(t["fields"])


def write(rec: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, rec)
    return out.getvalue()


def detail_of(value: bytes | None, decoder: Decoder | None = None) -> tuple[str, str]:
    with pytest.raises(DecodeError) as exc:
        (decoder or DECODERS[0]).decode(value)
    return exc.value.reason, exc.value.detail


def assert_operator_words(detail: str) -> None:
    assert not RAW_EXCEPTION_TEXT.search(detail), detail
    assert EMAIL not in detail
    assert "jane" not in detail


@pytest.mark.parametrize("decoder", DECODERS, ids=["generated", "fastavro"])
def test_a_truncated_record_names_the_field_it_ends_in(decoder: Decoder) -> None:
    value = write(record())
    cut = value.index(EMAIL.encode()) + 5  # inside user_data.em: the value ends in the middle of the email
    reason, detail = detail_of(value[:cut], decoder)
    assert reason == BAD_AVRO
    assert detail.startswith("truncated record: the value ends inside field user_data.em")
    assert_operator_words(detail)


def test_a_record_cut_between_fields_names_the_next_field() -> None:
    value = write(record())
    cut = value.index(b"o-1") + 3  # right after event_id: action_source is missing
    assert detail_of(value[:cut])[1].startswith("truncated record: the value ends inside field action_source")


def test_a_string_that_is_not_utf8_names_its_field() -> None:
    value = bytearray(write(record()))
    at = value.index(EMAIL.encode())
    value[at] = 0xFF
    reason, detail = detail_of(bytes(value))
    assert reason == BAD_AVRO
    assert detail.startswith("field user_data.em: a string that is not valid UTF-8")
    assert_operator_words(detail)


def test_a_union_branch_that_does_not_exist_names_its_field() -> None:
    value = write(record())
    at = value.index(b"app-1") + len(b"app-1")  # user_data.em's branch byte (user_data follows app_id)
    assert value[at] == 2  # branch 1: a string
    bad = value[:at] + b"\x08" + value[at + 1:]  # branch 4 of a 3-branch union
    reason, detail = detail_of(bad)
    assert reason == BAD_AVRO
    assert detail.startswith("field user_data.em: union branch 4 does not exist (the schema has 3")
    assert_operator_words(detail)


def test_bytes_after_the_record_are_counted() -> None:
    reason, detail = detail_of(write(record()) + b"\x00\x00")
    assert reason == BAD_AVRO
    assert detail.startswith("2 byte(s) left after the end of the record")


def test_a_tombstone_and_an_empty_value_read_differently() -> None:
    assert detail_of(None) == (BAD_AVRO, "tombstone (null value): a delete marker, not a record")
    assert detail_of(b"") == (BAD_AVRO, "empty value (0 bytes)")


def test_the_decoder_exception_type_stays_for_debugging() -> None:
    value = write(record())
    detail = detail_of(value[: value.index(EMAIL.encode()) + 5], DECODERS[1])[1]
    assert re.search(r"\[decoder: [A-Za-z]+(Error|Exception)\]$", detail), detail


def test_a_value_that_is_not_confluent_framed_shows_its_first_byte() -> None:
    decoder = Decoder(SCHEMA, WireFormat.CONFLUENT)
    assert detail_of(b'{"event_name": "x"}', decoder) == (
        NOT_CONFLUENT_FRAMED, "not the Confluent wire format: first byte 0x7b, expected magic byte 0x00")
    assert detail_of(b"\x00\x01", decoder) == (
        NOT_CONFLUENT_FRAMED, "not the Confluent wire format: 2 bytes, shorter than its 5-byte header")


def test_an_unknown_schema_id_is_named() -> None:
    decoder = Decoder(SCHEMA, WireFormat.CONFLUENT)
    decoder.add_writer_schema(42, None)
    reason, detail = detail_of(b"\x00\x00\x00\x00\x2a" + write(record()), decoder)
    assert (reason, detail) == (UNKNOWN_SCHEMA_ID, "unknown schema id 42: the schema registry has no such id")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_corruption_shows_raw_exception_text_or_content(data: st.DataObject) -> None:
    """Whatever is cut, flipped or inserted, the detail is in operator words and holds no content."""
    value = bytearray(write(record()))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, max(0, len(value) - 1)))
        op = data.draw(st.sampled_from(["truncate", "set", "insert"]))
        if op == "truncate":
            del value[at:]
        elif op == "set" and value:
            value[at] = data.draw(st.integers(0, 255))
        else:
            value[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    try:
        DECODERS[1].decode(bytes(value))
    except DecodeError as exc:
        assert_operator_words(exc.detail)
