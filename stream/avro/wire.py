"""Avro bytes on the wire: schemaless records and the Confluent framing (pure).

Confluent wire format: byte 0 is the magic 0x00, bytes 1..4 the schema id (unsigned 32-bit big
endian), then the Avro binary of the record with no container header.
"""

from __future__ import annotations

import enum
import io
import struct
from collections.abc import Mapping
from typing import Any

import fastavro
from fastavro.validation import ValidationError, validate

from stream.errors import EncodeError

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size


class WireFormat(enum.StrEnum):
    """How a record's Avro bytes are framed in a Kafka message value."""

    SCHEMALESS = "schemaless"
    CONFLUENT = "confluent"


def confluent_header(schema_id: int) -> bytes:
    """The 5-byte Confluent prefix for `schema_id`."""
    if not 0 <= schema_id < 2**32:
        raise EncodeError(f"schema id {schema_id} is outside 0..2^32-1")
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def split_confluent(value: bytes) -> tuple[int, memoryview] | None:
    """Return (schema id, Avro payload) of a Confluent-framed value, or None when it is not framed."""
    if len(value) < HEADER_SIZE or value[0] != MAGIC_BYTE:
        return None
    _, schema_id = _HEADER.unpack_from(value)
    return schema_id, memoryview(value)[HEADER_SIZE:]


def unknown_fields(record: Any, schema: Any, path: str = "") -> list[str]:
    """Dotted paths of keys in `record` that the record schema does not define (recursively).

    fastavro silently ignores extra keys; a typo in a field name would then lose data without a word.
    """
    found: list[str] = []
    if isinstance(schema, list):
        for branch in schema:
            if isinstance(branch, dict) and branch.get("type") == "record" and isinstance(record, Mapping):
                found.extend(unknown_fields(record, branch, path))
                break
            if isinstance(branch, dict) and branch.get("type") == "array" and isinstance(record, list):
                found.extend(unknown_fields(record, branch, path))
                break
        return found
    if not isinstance(schema, dict):
        return found
    kind = schema.get("type")
    if kind == "record" and isinstance(record, Mapping):
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        for key, val in record.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in fields:
                found.append(where)
            elif val is not None:
                found.extend(unknown_fields(val, fields[key], where))
    elif kind == "array" and isinstance(record, list):
        for i, item in enumerate(record):
            found.extend(unknown_fields(item, schema["items"], f"{path}[{i}]"))
    elif isinstance(kind, dict | list):
        found.extend(unknown_fields(record, kind, path))
    return found


def encode(
    record: Mapping[str, Any],
    schema: Any,
    wire_format: WireFormat = WireFormat.SCHEMALESS,
    schema_id: int | None = None,
) -> bytes:
    """Validate `record` against the parsed `schema` and return its Kafka message value.

    Raises EncodeError naming the offending field when the record does not fit the schema.
    """
    extra = unknown_fields(record, schema)
    if extra:
        raise EncodeError(f"unknown field {', '.join(extra)}")
    buf = io.BytesIO()
    if wire_format is WireFormat.CONFLUENT:
        if schema_id is None:
            raise EncodeError("the confluent wire format needs a schema id")
        buf.write(confluent_header(schema_id))
    # fastavro's validator is ~4x slower than its writer: write first, and only when the writer refuses (or
    # might have coerced a wrong type) ask the validator for a message that names the field
    try:
        validate_first = False
        fastavro.schemaless_writer(buf, schema, dict(record))
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        validate_first = True
    if validate_first or not _types_plausible(record):
        try:
            validate(record, schema, raise_errors=True)
        except ValidationError as exc:
            raise EncodeError(_validation_message(exc)) from exc
        if validate_first:
            raise EncodeError("record does not fit the schema")
    return buf.getvalue()


def _types_plausible(record: Mapping[str, Any]) -> bool:
    """Cheap guard for the writer's lenient coercions of the top-level scalars (e.g. a float event_time)."""
    event_time = record.get("event_time")
    return type(event_time) is int and isinstance(record.get("event_name"), str)


def _validation_message(exc: ValidationError) -> str:
    errors = [str(e) for e in exc.errors] if getattr(exc, "errors", None) else [str(exc)]
    first = errors[0].strip().strip("[]").strip().strip('"')
    return first.replace("io.capistream.ConversionEvent.", "") or "record does not fit the schema"
