"""The Avro contract in schemas/conversion_event.avsc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.avro.schema import default_schema_path, load_schema
from stream.contract import meta
from stream.errors import SchemaError

RAW = orjson.loads(Path(default_schema_path()).read_bytes())


def _records(node: Any) -> list[dict[str, Any]]:
    """Every record schema nested anywhere in `node`."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "record":
            found.append(node)
        for value in node.values():
            found.extend(_records(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_records(value))
    return found


def test_every_field_has_a_doc() -> None:
    """Every field of every record in the contract carries a non-empty doc."""
    missing = [f"{r['name']}.{f['name']}" for r in _records(RAW) for f in r["fields"] if not f.get("doc")]
    assert missing == []


def test_optional_fields_default_to_null_so_the_schema_can_evolve() -> None:
    """Every nullable field has default null, and only the routing and event essentials are required."""
    required = []
    for record in _records(RAW):
        for field in record["fields"]:
            ftype = field["type"]
            if isinstance(ftype, list) and "null" in ftype:
                assert ftype[0] == "null"
                assert "default" in field, field["name"]
                assert field["default"] is None, field["name"]
            elif "default" not in field:
                required.append(f"{record['name']}.{field['name']}")
    assert sorted(required) == sorted([
        "ConversionEvent.event_name", "ConversionEvent.event_time", "ConversionEvent.app_id",
        "ConversionEvent.user_data", "Content.id",
    ])  # fmt: skip


def test_user_data_has_every_customer_information_key_meta_defines() -> None:
    """user_data holds a field for each hashed key and each raw key Meta names (but Instagram-only ones)."""
    user_data = next(r for r in _records(RAW) if r["name"] == "UserData")
    names = {f["name"] for f in user_data["fields"]}
    expected = meta.HASHED_FIELDS | (set(meta.RAW_FIELDS) - {"ig_account_id", "ig_sid"})
    assert expected <= names


def test_a_broken_schema_file_raises_schema_error(tmp_path: Path) -> None:
    """A schema file that is not JSON or not Avro gives SchemaError naming the file."""
    bad = tmp_path / "bad.avsc"
    bad.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(SchemaError, match=r"bad\.avsc"):
        load_schema(str(bad))
    with pytest.raises(SchemaError, match="cannot read"):
        load_schema(str(tmp_path / "absent.avsc"))
