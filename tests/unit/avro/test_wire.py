"""Avro encoding of records and the Confluent framing."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from stream.avro.schema import load_schema
from stream.avro.wire import WireFormat, confluent_header, encode, split_confluent, unknown_fields
from stream.errors import EncodeError

MINIMAL: dict[str, Any] = {"event_name": "Purchase", "event_time": 1_790_000_000, "app_id": "a", "user_data": {}}


def test_minimal_record_round_trips_with_defaults() -> None:
    """A record with only the required fields encodes, and decoding fills every optional with its default."""
    schema = load_schema()
    value = encode(MINIMAL, schema)
    back = fastavro.schemaless_reader(io.BytesIO(value), schema, None)
    assert back["event_name"] == "Purchase"
    assert back["action_source"] == "app"
    assert back["event_id"] is None
    assert back["user_data"]["em"] is None
    assert back["consent"] is None


@pytest.mark.parametrize("em", ["a@b.com", ["a@b.com", "c@d.com"], None])
def test_multi_valued_user_data_takes_one_value_or_a_list(em: Any) -> None:
    """user_data.em accepts one string, a list of strings, or null, and decodes back unchanged."""
    schema = load_schema()
    record = {**MINIMAL, "user_data": {"em": em}}
    back = fastavro.schemaless_reader(io.BytesIO(encode(record, schema)), schema, None)
    assert back["user_data"]["em"] == em


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**MINIMAL, "event_time": "soon"}, "event_time"),
        ({k: v for k, v in MINIMAL.items() if k != "event_name"}, "event_name"),
        ({**MINIMAL, "user_data": {"emm": "x"}}, "unknown field user_data.emm"),
        ({**MINIMAL, "surprise": 1}, "unknown field surprise"),
        ({**MINIMAL, "custom_data": {"contents": [{"id": "sku", "qty": 1}]}}, "custom_data.contents[0].qty"),
    ],
)
def test_records_that_do_not_fit_raise_encode_error_naming_the_field(record: dict[str, Any], message: str) -> None:
    """A wrong type, a missing required field or an unknown key raises EncodeError that names it."""
    with pytest.raises(EncodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        encode(record, load_schema())


def test_confluent_framing_round_trips() -> None:
    """A Confluent-framed value starts with 0x00 and the big-endian schema id, then the schemaless body."""
    schema = load_schema()
    value = encode(MINIMAL, schema, WireFormat.CONFLUENT, schema_id=258)
    assert value[:5] == b"\x00\x00\x00\x01\x02"
    framed = split_confluent(value)
    assert framed is not None
    schema_id, body = framed
    assert schema_id == 258
    assert bytes(body) == encode(MINIMAL, schema)


@pytest.mark.parametrize("value", [b"", b"\x00\x00", b"\x01\x00\x00\x00\x01abc"])
def test_split_confluent_refuses_unframed_values(value: bytes) -> None:
    """Too short values and values without the magic byte are not Confluent-framed."""
    assert split_confluent(value) is None


def test_confluent_needs_a_schema_id_in_range() -> None:
    """The Confluent framing refuses a missing or out-of-range schema id."""
    with pytest.raises(EncodeError):
        encode(MINIMAL, load_schema(), WireFormat.CONFLUENT, schema_id=None)
    with pytest.raises(EncodeError):
        confluent_header(2**32)


def test_unknown_fields_walks_nested_records_and_arrays() -> None:
    """unknown_fields reports dotted paths in nested records and list items, and nothing for a clean record."""
    schema = load_schema()
    assert unknown_fields(MINIMAL, schema) == []
    dirty = {**MINIMAL, "app_data": {"extinfo": ["a2"], "bogus": 1}, "original_event_data": {"x": 1}}
    assert unknown_fields(dirty, schema) == ["app_data.bogus", "original_event_data.x"]
