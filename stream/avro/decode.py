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

from stream.avro.generated import Reader, compile_reader
from stream.avro.wire import HEADER_SIZE, WireFormat, split_confluent
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
        if not value:
            raise DecodeError(BAD_AVRO, "empty message value")
        if self.wire_format is WireFormat.SCHEMALESS:
            if self._fast is not None and (record := _fast_read(self._fast, value, 0)) is not None:
                return record
            return _read(value, self.reader, None)
        framed = split_confluent(value)
        if framed is None:
            raise DecodeError(NOT_CONFLUENT_FRAMED, "value does not start with magic byte 0 and a schema id")
        schema_id, payload = framed
        if schema_id not in self._writers:
            raise DecodeError(UNKNOWN_SCHEMA_ID, f"schema id {schema_id} was not looked up")
        writer = self._writers[schema_id]
        if writer is None:
            raise DecodeError(UNKNOWN_SCHEMA_ID, f"the schema registry has no schema id {schema_id}")
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
    # corrupt input makes fastavro raise many kinds of errors (EOF, unicode, index, overflow, memory)
    except Exception as exc:
        raise DecodeError(BAD_AVRO, f"{type(exc).__name__}: {str(exc)[:160]}") from exc
    if buf.tell() != len(payload):
        raise DecodeError(BAD_AVRO, f"{len(payload) - buf.tell()} trailing bytes after the record")
    if not isinstance(record, dict):
        raise DecodeError(BAD_AVRO, "the schema does not describe a record")
    return record
