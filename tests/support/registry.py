"""A real schema registry for the Confluent wire format (a pytest plugin, loaded by tests/conftest.py).

Apicurio Registry 3.3.3, run by the project's own launcher (`capi-stream registry up`), serves the
Confluent-compatible API the pipeline reads. It comes from $CAPI_STREAM_REGISTRY_URL (set by .ci/run) or
is started here once per session in a temporary home. When none can be had the tests fail in CI and skip
elsewhere. `stream.tools.devregistry` stays for tests that must inject registry faults (an outage).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from stream.errors import CapiStreamError
from stream.tools.kafka import free_port
from stream.tools.registry import LocalRegistry, register_schema
from tests.support.missing import unavailable

REGISTRY_ENV = "CAPI_STREAM_REGISTRY_URL"


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Confluent-compatible URL of a running Apicurio Registry (decode.schema_registry_url)."""
    if url := os.environ.get(REGISTRY_ENV):
        yield url
        return
    registry = LocalRegistry(data_dir=tmp_path_factory.mktemp("registry"))
    try:
        url, _ = registry.start(port=free_port())
    except CapiStreamError as exc:
        unavailable("schema registry", str(exc))
    yield url
    registry.stop()


@pytest.fixture
def register_factory(schema_registry_url: str) -> Callable[[str], int]:
    """Register an Avro schema (JSON text) under a fresh subject; returns the id the registry gave it."""
    return lambda schema: register_schema(schema_registry_url, f"capi-test-{uuid.uuid4().hex[:12]}-value", schema)
