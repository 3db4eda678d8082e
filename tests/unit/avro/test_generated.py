"""The generated Avro reader returns exactly what fastavro returns, and refuses exactly what it refuses.

Records are generated from the schema itself (every field, every union branch), written by fastavro,
then read by two Decoders: one with the generated reader in front, one with fastavro alone. Corrupted
values (flipped, truncated, spliced, extended) must get the same record or the same dead-letter reason
and detail from both.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.avro.decode import BAD_AVRO, DecodeError, Decoder
from stream.avro.generated import Unsure, compile_reader, reader_source
from stream.avro.schema import load_schema
from stream.avro.wire import WireFormat, encode
from stream.tools.samples import generate

SCHEMA = load_schema()
NAMED = SCHEMA["__named_schemas"]
FAST = Decoder(SCHEMA, WireFormat.SCHEMALESS)
SLOW = Decoder(SCHEMA, WireFormat.SCHEMALESS, generated=False)

_INT = st.integers(-(1 << 31), (1 << 31) - 1)
_LONG = st.one_of(st.integers(-300, 300), st.integers(-(1 << 63), (1 << 63) - 1))


def values_of(t: Any) -> st.SearchStrategy[Any]:
    """Values that fit Avro type `t` of a fastavro-parsed schema (every branch, every field)."""
    if isinstance(t, list):
        return st.one_of(*(values_of(b) for b in t))
    if isinstance(t, str):
        if t in NAMED:
            return values_of(NAMED[t])
        return {
            "null": st.none(), "boolean": st.booleans(), "int": _INT, "long": _LONG,
            "double": st.floats(allow_nan=True, allow_infinity=True), "string": st.text(max_size=40),
            "bytes": st.binary(max_size=40), "float": st.floats(width=32),
        }[t]  # fmt: skip
    kind = t["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: values_of(f["type"]) for f in t["fields"]})
    if kind == "array":
        return st.lists(values_of(t["items"]), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), values_of(t["values"]), max_size=4)
    return values_of(kind)


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types (True is not 1, NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


def outcome(decoder: Decoder, value: bytes) -> tuple[str, Any]:
    try:
        return "record", decoder.decode(value)
    except DecodeError as exc:
        return exc.reason, exc.detail


def assert_same_outcome(value: bytes) -> None:
    fast, slow = outcome(FAST, value), outcome(SLOW, value)
    assert fast[0] == slow[0]
    assert same(fast[1], slow[1]) if fast[0] == "record" else fast[1] == slow[1]


def _write(record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


_PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROFILE
@given(values_of(SCHEMA))
def test_generated_records_read_as_fastavro_reads_them(record: dict[str, Any]) -> None:
    value = _write(record)
    fast, slow = FAST.decode(value), SLOW.decode(value)
    assert same(fast, slow)
    assert same(fast, fastavro.schemaless_reader(io.BytesIO(value), SCHEMA, None))


@_PROFILE
@given(values_of(SCHEMA), st.data())
def test_corrupted_records_get_the_same_record_or_the_same_dead_letter(record: dict[str, Any],
                                                                       data: st.DataObject) -> None:
    value = bytearray(_write(record))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append"]))
        at = data.draw(st.integers(0, max(0, len(value) - 1)))
        if op == "flip" and value:
            value[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and value:
            value[at] = data.draw(st.sampled_from([0, 1, 2, 4, 6, 0x7F, 0x80, 0x81, 0xFF]))
        elif op == "truncate":
            del value[at:]
        elif op == "insert":
            value[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del value[at:at + data.draw(st.integers(1, 4))]
        elif op == "append":
            value += data.draw(st.binary(min_size=1, max_size=4))
    assert_same_outcome(bytes(value))


def test_the_sample_records_take_the_fast_path() -> None:
    """Every record the generator writes is read without asking fastavro (else the speed-up is lost)."""
    read = compile_reader(SCHEMA)
    assert read is not None
    records = list(generate(500, seed=11, now=int(time.time()), app_ids=("a", "b"), duplicate_rate=0.05))
    for record in records:
        value = encode(record, SCHEMA)
        assert same(read(value, 0), fastavro.schemaless_reader(io.BytesIO(value), SCHEMA, None))


# The smallest record: event_name "A", event_time 1, event_id null, action_source "app", app_id "a", then
# one null byte per nullable field (user_data's, custom_data, app_data, ..., consent last).
MINIMAL = _write({"event_name": "A", "event_time": 1, "event_id": None, "action_source": "app", "app_id": "a",
                  "user_data": {}})
assert MINIMAL.startswith(b"\x02A\x02\x00\x06app\x02a\x00")


@pytest.mark.parametrize(("value", "fast_path"), [
    pytest.param(MINIMAL, True, id="canonical"),
    pytest.param(b"\x82\x00A" + MINIMAL[2:], True, id="two-byte string length"),
    pytest.param(MINIMAL[:3] + b"\x80\x00" + MINIMAL[4:], False, id="two-byte union index"),
    pytest.param(MINIMAL[:-1] + b"\x02\x02", False, id="boolean byte 2 (true for fastavro)"),
    pytest.param(MINIMAL[:-1] + b"\x02\x01", True, id="boolean true"),
    pytest.param(b"\x01" + MINIMAL[1:], False, id="negative string length"),
    pytest.param(MINIMAL[:3] + b"\x7e" + MINIMAL[4:], False, id="union index out of range"),
    pytest.param(MINIMAL[:2] + b"\xff" * 10 + b"\x01" + MINIMAL[3:], False, id="11-byte varint"),
])
def test_forms_left_to_fastavro_get_its_answer(value: bytes, fast_path: bool) -> None:
    read = compile_reader(SCHEMA)
    assert read is not None
    if fast_path:
        assert same(read(value, 0), fastavro.schemaless_reader(io.BytesIO(value), SCHEMA, None))
    else:
        with pytest.raises((Unsure, IndexError)):
            read(value, 0)
    assert_same_outcome(value)


def test_fastavro_refusals_stay_refusals() -> None:
    value = _write(next(iter(generate(1, seed=2, now=int(time.time()), app_ids=("a",), duplicate_rate=0))))
    for bad in (value[:-1], value + b"\x00", b"\x02\xff", value[:3]):
        fast = outcome(FAST, bad)
        assert fast[0] == BAD_AVRO
        assert fast == outcome(SLOW, bad)


def test_confluent_values_with_our_schema_take_the_generated_reader() -> None:
    decoder = Decoder(SCHEMA, WireFormat.CONFLUENT)
    decoder.add_writer_schema(7, load_schema())
    assert decoder._fast_writers.get(7) is not None
    record = next(iter(generate(1, seed=3, now=int(time.time()), app_ids=("a",), duplicate_rate=0)))
    value = b"\x00\x00\x00\x00\x07" + _write(record)
    assert same(decoder.decode(value), SLOW.decode(_write(record)))
    with pytest.raises(DecodeError) as exc:
        decoder.decode(value + b"\x00")
    assert exc.value.reason == BAD_AVRO


def test_schemas_it_cannot_read_fast_are_left_to_fastavro() -> None:
    dated = fastavro.parse_schema({"type": "record", "name": "T", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]})
    assert compile_reader(dated) is None
    nulls = fastavro.parse_schema({"type": "record", "name": "N", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "null"}}]})
    assert compile_reader(nulls) is None
    source, _ = reader_source(SCHEMA)
    assert "def read(v, p=0):" in source
