"""Writer schemas by id from a Confluent-compatible schema registry (I/O, blocking: run it in a thread).

Two different failures: the registry cannot answer (RegistryUnavailable: an outage, worth retrying; the
records wait), or it answers with a schema fastavro cannot use (UnusableSchema: references, an unknown
named type, not Avro; a fact about those records, which are dead-lettered as `unusable_schema`).
"""

from __future__ import annotations

from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from stream.avro.decode import UnusableSchema
from stream.errors import CapiStreamError

HTTP_NOT_FOUND = 404
# A registry outage is usually a restart or a failover: asking again every few seconds finds it back soon
# without flooding it.
RETRY_AFTER_S = 2.0


class RegistryUnavailable(CapiStreamError):
    """The registry could not be asked (network, 5xx); the lookup is worth retrying after `retry_after`."""

    retriable = True
    retry_after = RETRY_AFTER_S


class RegistryLookup:
    """Fetch and parse Avro writer schemas by id; the client caches what it fetched."""

    def __init__(self, url: str) -> None:
        self._client = SchemaRegistryClient({"url": url})

    def writer_schema(self, schema_id: int) -> Any | None:
        """The parsed writer schema, None when the registry does not know `schema_id`, or UnusableSchema.

        Raises RegistryUnavailable when the registry cannot answer.
        """
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == HTTP_NOT_FOUND:
                return None
            raise RegistryUnavailable(f"schema registry error for id {schema_id}: {exc.http_status_code}") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"schema registry unreachable: {type(exc).__name__}") from exc
        if schema.schema_type not in (None, "AVRO"):
            return UnusableSchema(f"a {schema.schema_type} schema, not Avro")
        if getattr(schema, "references", None):
            return UnusableSchema("it has schema references, which capi-stream cannot resolve")
        try:
            return fastavro.parse_schema(orjson.loads(schema.schema_str or ""))
        # fastavro raises several kinds of errors for schemas it cannot read (unknown type, no name, ...)
        except Exception as exc:  # noqa: BLE001 - every parse failure is a fact about this schema
            return UnusableSchema(f"fastavro cannot parse it: {type(exc).__name__}: {str(exc)[:120]}")
