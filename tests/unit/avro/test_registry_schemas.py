"""A registry schema fastavro cannot use is a fact about its records (unusable_schema), not an outage."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.avro.decode import UNUSABLE_SCHEMA, DecodeError, Decoder, UnusableSchema
from stream.avro.registry import RegistryLookup, RegistryUnavailable
from stream.avro.schema import default_schema_path, load_schema
from stream.avro.wire import WireFormat, encode
from stream.tools.devregistry import DevRegistry

# a schema that names a type the registry serves only as a reference: fastavro cannot parse it alone
WITH_REFERENCE: dict[str, Any] = {"type": "record", "name": "Order", "namespace": "com.example",
                                  "fields": [{"name": "customer", "type": "com.example.Customer"}]}


@pytest.mark.parametrize(
    "schema_text",
    [
        orjson.dumps(WITH_REFERENCE).decode(),  # an unknown named type (schema references)
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}',
        '{"type": "record", "fields": []}',  # no name
        '"not a schema at all"',
        "{not json",
    ],
)
def test_a_schema_fastavro_cannot_parse_is_unusable_not_an_outage(schema_text: str) -> None:
    """The lookup answers UnusableSchema with a reason; it does not raise RegistryUnavailable (retried forever)."""
    with DevRegistry() as registry:
        schema_id = registry.register(schema_text)
        answer = RegistryLookup(registry.url).writer_schema(schema_id)
    assert isinstance(answer, UnusableSchema)
    assert answer.detail


def test_the_decoder_dead_letters_records_of_an_unusable_schema() -> None:
    """Records framed with an unusable schema's id get DecodeError(unusable_schema), naming the id."""
    decoder = Decoder(load_schema(), WireFormat.CONFLUENT)
    decoder.add_writer_schema(7, UnusableSchema("Unknown type: com.example.Customer"))
    record = {"event_name": "Purchase", "event_time": 1, "app_id": "a", "user_data": {}}
    value = encode(record, load_schema(), WireFormat.CONFLUENT, 7)
    assert decoder.missing_schema_ids([value]) == set()  # looked up: never asked again
    with pytest.raises(DecodeError) as caught:
        decoder.decode(value)
    assert caught.value.reason == UNUSABLE_SCHEMA
    assert "7" in caught.value.detail


def test_a_registry_that_cannot_answer_is_still_an_outage() -> None:
    """A registry down (nothing listens, or 5xx) raises RegistryUnavailable: retried, records kept."""
    with DevRegistry() as registry:
        schema_id = registry.register(default_schema_path().read_text())
        registry.unavailable = True
        with pytest.raises(RegistryUnavailable):
            RegistryLookup(registry.url).writer_schema(schema_id)
        registry.unavailable = False
        assert RegistryLookup(registry.url).writer_schema(schema_id) is not None
