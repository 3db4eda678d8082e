"""Why a value is not a record of a schema, in an operator's words (pure).

fastavro's exceptions on corrupt input ("IndexError: string index out of range", "EOFError", a
MemoryError for a huge length) say where fastavro tripped, not what is wrong with the record, and read
like a bug in capi-stream. `diagnose` walks the writer schema over the bytes once more, only for values
fastavro refused, and names the first problem with the field where it sits: the value ends inside a
field (truncated), a union branch or enum symbol that does not exist, a negative length, a string that
is not UTF-8. The text holds schema facts (field names, counts, byte positions), never the record's
content: the values hold personal data. Map keys are record content too, so a map entry is `field[]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

# a 64-bit zig-zag varint takes at most 10 bytes
_MAX_VARINT: Final = 10


class Problem(Exception):
    """What is wrong with the value, as the operator's text."""


class _GiveUp(Exception):
    """The walker does not know this schema or went on too long: no diagnosis."""


class _Walk:
    def __init__(self, value: bytes | memoryview, named: Mapping[str, Any]) -> None:
        self.v = bytes(value)
        self.p = 0
        self.named = named
        self.steps = 4 * len(self.v) + 1000  # null items cost no byte: bound the walk, never loop on a count

    def truncated(self, path: str) -> Problem:
        return Problem(f"truncated record: the value ends inside field {path or '(record)'} "
                       f"({len(self.v)} bytes)")

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _GiveUp

    def byte(self, path: str) -> int:
        if self.p >= len(self.v):
            raise self.truncated(path)
        b = self.v[self.p]
        self.p += 1
        return b

    def long(self, path: str) -> int:
        n = shift = 0
        for _ in range(_MAX_VARINT):
            b = self.byte(path)
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return (n >> 1) ^ -(n & 1)
            shift += 7
        raise Problem(f"field {path}: a number longer than 10 bytes (corrupt, or not written with this schema)")

    def take(self, n: int, path: str) -> bytes:
        if n < 0:
            raise Problem(f"field {path}: negative length {n} (corrupt, or not written with this schema)")
        if self.p + n > len(self.v):
            raise self.truncated(path)
        out = self.v[self.p:self.p + n]
        self.p += n
        return out

    def walk(self, t: Any, path: str) -> None:
        self.step()
        if isinstance(t, str):
            if t in self.named:
                self.walk(self.named[t], path)
            else:
                self.primitive(t, path)
            return
        if isinstance(t, list):
            branch = self.long(path)
            if not 0 <= branch < len(t):
                raise Problem(f"field {path}: union branch {branch} does not exist (the schema has "
                              f"{len(t)}; corrupt, or not written with this schema)")
            self.walk(t[branch], path)
            return
        if not isinstance(t, dict):
            raise _GiveUp
        kind = t.get("type")
        if kind == "record":
            for field in t["fields"]:
                self.walk(field["type"], f"{path}.{field['name']}" if path else field["name"])
        elif kind == "enum":
            index = self.long(path)
            if not 0 <= index < len(t["symbols"]):
                raise Problem(f"field {path}: enum symbol {index} does not exist (the schema has "
                              f"{len(t['symbols'])}; corrupt, or not written with this schema)")
        elif kind == "fixed":
            self.take(int(t["size"]), path)
        elif kind in ("array", "map"):
            self.blocks(t, path, keyed=kind == "map")
        elif isinstance(kind, str | list | dict):
            self.walk(kind, path)  # {"type": "string"}, logical types: the underlying type
        else:
            raise _GiveUp

    def blocks(self, t: dict[str, Any], path: str, keyed: bool) -> None:
        item_type = t["values"] if keyed else t["items"]
        index = 0
        while count := self.long(path):
            if count < 0:  # a negative count is followed by the block's size in bytes
                count = -count
                self.long(path)
            for _ in range(count):
                self.step()
                if keyed:
                    self.string(f"{path}[]")
                self.walk(item_type, f"{path}[]" if keyed else f"{path}[{index}]")
                index += 1

    def string(self, path: str) -> None:
        raw = self.take(self.long(path), path)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(f"field {path}: a string that is not valid UTF-8") from None

    def primitive(self, t: str, path: str) -> None:
        if t == "null":
            return
        if t == "boolean":
            self.byte(path)
        elif t in ("int", "long"):
            self.long(path)
        elif t in ("float", "double"):
            self.take(4 if t == "float" else 8, path)
        elif t == "bytes":
            self.take(self.long(path), path)
        elif t == "string":
            self.string(path)
        else:
            raise _GiveUp


def diagnose(value: bytes | memoryview, schema: Any) -> str | None:
    """What is wrong with `value` as the Avro binary of `schema` (fastavro-parsed), or None when the
    walk finds nothing wrong or cannot tell (an unknown type)."""
    named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    walk = _Walk(value, named)
    try:
        walk.walk(schema, "")
    except Problem as problem:
        return str(problem)
    except (_GiveUp, KeyError, TypeError, ValueError, RecursionError):
        return None
    if walk.p != len(walk.v):
        return trailing(len(walk.v) - walk.p)
    return None


def trailing(extra: int) -> str:
    """The text for bytes left over after a complete record."""
    return (f"{extra} byte(s) left after the end of the record (not one record of this schema, "
            "or written with another schema)")
