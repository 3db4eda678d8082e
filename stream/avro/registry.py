"""Writer schemas by id from a Confluent-compatible schema registry (I/O, blocking: run it in a thread)."""

from __future__ import annotations

from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

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
        """The parsed writer schema, or None when the registry does not know `schema_id`.

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
            return None
        try:
            return fastavro.parse_schema(orjson.loads(schema.schema_str or ""))
        except (orjson.JSONDecodeError, fastavro.schema.SchemaParseException, ValueError, KeyError) as exc:
            raise RegistryUnavailable(f"schema id {schema_id} is not a valid Avro schema") from exc
