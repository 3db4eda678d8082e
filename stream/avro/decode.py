"""Avro message values to records: schemaless, or the Confluent wire format resolved by schema id (pure).

Writer schemas for the Confluent format are looked up by the runner (I/O, through the registry client)
and handed in with `add_writer_schema`; decoding itself never does I/O.

Values written with our reader schema (schemaless, or a registry schema equal to it) are read first by a
reader generated from the schema (`stream.avro.generated`, about 2.5x faster than fastavro on our record); a
value it is not sure of is read again by fastavro, whose answer is final.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import fastavro

from stream.avro.diagnose import diagnose, trailing
from stream.avro.generated import Reader, compile_reader
from stream.avro.wire import HEADER_SIZE, MAGIC_BYTE, WireFormat, split_confluent
from stream.errors import CapiStreamError

# Dead-letter reason codes of this stage
BAD_AVRO = "bad_avro"
NOT_CONFLUENT_FRAMED = "not_confluent_framed"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
INCOMPATIBLE_SCHEMA = "incompatible_schema"
UNUSABLE_SCHEMA = "unusable_schema"


@dataclasses.dataclass(frozen=True, slots=True)
class UnusableSchema:
    """A registry's schema for an id that fastavro cannot read records with; `detail` says why."""

    detail: str


class DecodeError(CapiStreamError):
    """A message value that cannot become a record; `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Decoder:
    """Decode values written with `wire_format`, resolving writer schemas to our reader schema."""

    def __init__(self, reader_schema: Any, wire_format: WireFormat, generated: bool = True) -> None:
        self.reader = reader_schema
        self.wire_format = wire_format
        # schema id -> parsed writer schema, or None when the registry does not know the id
        self._writers: dict[int, Any] = {}
        # the generated reader of our schema (None: fastavro reads everything)
        is_record = isinstance(reader_schema, dict) and reader_schema.get("type") == "record"
        self._fast: Reader | None = compile_reader(reader_schema) if generated and is_record else None
        # schema id -> the generated reader, for writer schemas equal to ours
        self._fast_writers: dict[int, Reader] = {}

    def add_writer_schema(self, schema_id: int, schema: Any | None) -> None:
        """Cache the parsed writer schema of `schema_id` (None: the registry has no such id; or UnusableSchema)."""
        self._writers[schema_id] = schema
        if self._fast is not None and schema is not None and schema == self.reader:
            self._fast_writers[schema_id] = self._fast

    def missing_schema_ids(self, values: list[bytes]) -> set[int]:
        """Schema ids among Confluent-framed `values` whose writer schema is not cached yet."""
        if self.wire_format is not WireFormat.CONFLUENT:
            return set()
        ids = set()
        for value in values:
            framed = split_confluent(value)
            if framed is not None and framed[0] not in self._writers:
                ids.add(framed[0])
        return ids

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """The record in `value`. Raises DecodeError with a reason code when it cannot be read."""
        if value is None:
            raise DecodeError(BAD_AVRO, "tombstone (null value): a delete marker, not a record")
        if not value:
            raise DecodeError(BAD_AVRO, "empty value (0 bytes)")
        if self.wire_format is WireFormat.SCHEMALESS:
            if self._fast is not None and (record := _fast_read(self._fast, value, 0)) is not None:
                return record
            return _read(value, self.reader, None)
        framed = split_confluent(value)
        if framed is None:
            raise DecodeError(NOT_CONFLUENT_FRAMED, _not_framed(value))
        schema_id, payload = framed
        if schema_id not in self._writers:
            raise DecodeError(UNKNOWN_SCHEMA_ID, f"schema id {schema_id} was not looked up")
        writer = self._writers[schema_id]
        if writer is None:
            raise DecodeError(UNKNOWN_SCHEMA_ID, f"unknown schema id {schema_id}: the schema registry has no such id")
        if isinstance(writer, UnusableSchema):
            raise DecodeError(UNUSABLE_SCHEMA, f"schema id {schema_id}: {writer.detail}")
        fast = self._fast_writers.get(schema_id)
        if fast is not None and (record := _fast_read(fast, value, HEADER_SIZE)) is not None:
            return record
        return _read(payload, writer, None if writer is self.reader else self.reader)


def _fast_read(reader: Reader, value: bytes, start: int) -> dict[str, Any] | None:
    """The generated reader's record, or None when it is not sure (any exception): fastavro decides."""
    try:
        record: dict[str, Any] = reader(value, start)
    except Exception:  # noqa: BLE001 - Unsure, IndexError, UnicodeDecodeError, struct.error...
        return None
    return record


def _read(payload: bytes | memoryview, writer: Any, reader: Any | None) -> dict[str, Any]:
    buf = io.BytesIO(payload)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except fastavro.read.SchemaResolutionError as exc:
        raise DecodeError(INCOMPATIBLE_SCHEMA, str(exc)[:200]) from exc
    # corrupt input makes fastavro raise many kinds of errors (EOF, unicode, index, overflow, memory) whose
    # text says where fastavro tripped, not what is wrong: walk the writer schema again to say that (the
    # exception's type name stays for debugging; its text never, it can quote the record's content)
    except Exception as exc:
        what = diagnose(payload, writer) or "not readable with the schema (corrupt, or written with another schema)"
        raise DecodeError(BAD_AVRO, f"{what} [decoder: {type(exc).__name__}]") from exc
    if buf.tell() != len(payload):
        raise DecodeError(BAD_AVRO, trailing(len(payload) - buf.tell()))
    if not isinstance(record, dict):
        raise DecodeError(BAD_AVRO, "the schema does not describe a record")
    return record


def _not_framed(value: bytes) -> str:
    """Why `value` is not in the Confluent wire format: too short, or its first byte (never more of it)."""
    if len(value) < HEADER_SIZE:
        return f"not the Confluent wire format: {len(value)} bytes, shorter than its {HEADER_SIZE}-byte header"
    return f"not the Confluent wire format: first byte 0x{value[0]:02x}, expected magic byte 0x{MAGIC_BYTE:02x}"
