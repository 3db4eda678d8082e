"""The Avro contract: where `conversion_event.avsc` lives and how it is parsed (pure, cached)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import fastavro
import orjson

from stream.errors import SchemaError

SCHEMA_FILE = "conversion_event.avsc"

# The repo's top-level schemas/ is the source of truth; stream/avro/data/ holds a link to it so that an
# installed wheel carries the same file.
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_FILE,
    Path(__file__).resolve().parent / "data" / SCHEMA_FILE,
)


def default_schema_path() -> Path:
    """Return the path of the bundled conversion event schema; raise SchemaError if it is missing."""
    for path in _CANDIDATES:
        if path.is_file():
            return path
    raise SchemaError(f"{SCHEMA_FILE} not found (looked in {', '.join(str(p) for p in _CANDIDATES)})")


@functools.lru_cache(maxsize=16)
def load_schema(path: str | None = None) -> dict[str, Any]:
    """Load and parse an Avro schema file (the bundled one when `path` is None).

    Returns fastavro's parsed schema, ready for schemaless reads and writes. Raises SchemaError with
    the file name when the file is missing or not a valid Avro schema.
    """
    file = Path(path) if path else default_schema_path()
    try:
        raw = orjson.loads(file.read_bytes())
        parsed = fastavro.parse_schema(raw)
    except OSError as exc:
        raise SchemaError(f"cannot read schema {file}: {exc.strerror}") from exc
    except (orjson.JSONDecodeError, fastavro.schema.SchemaParseException, fastavro.schema.UnknownType,
            KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"invalid Avro schema {file}: {exc}") from exc
    if not isinstance(parsed, dict):
        raise SchemaError(f"{file} is not an Avro record schema")
    return parsed
