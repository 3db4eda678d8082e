"""A schemaless Avro reader generated from one schema at load time, as straight-line Python (pure).

fastavro's reader walks the schema for every record: a dispatch per field, most of our ~80 fields null.
The code generated here does that walk once, when the schema is loaded: one local variable per field,
one branch per union, the record built with one dict display. It reads `bytes` by index.

It is a fast path, never the judge. It accepts only the canonical forms it is sure of (one-byte union
indexes, varints of at most 9 bytes, non-negative lengths and block counts, booleans 0/1, ints within 32
bits, no short read, no trailing byte) and raises `Unsure` for anything else; `Decoder` then reads the
value again with fastavro, whose answer (a record or an error) is the one kept. So a record it returns
equals what fastavro returns, and whatever fastavro refuses is refused (a property test holds both over
generated and corrupted records).

Schemas it does not know how to read fast (logical types, recursive or unknown named types, arrays or
maps whose items can be empty) get no generated reader: `compile_reader` returns None and fastavro reads
everything.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

Reader = Callable[[bytes, int], Any]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1


class Unsure(Exception):
    """The fast path does not decide this value; fastavro reads it again."""


class Unsupported(Exception):
    """The schema has a part the generator does not handle."""


def _varint(v: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint of 2 to 9 bytes starting at v[p] (v[p] >= 0x80): (value, next position)."""
    n = v[p] & 0x7F
    shift = 7
    p += 1
    while True:
        b = v[p]
        p += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), p
        shift += 7
        if shift > 56:  # a 10-byte varint: fastavro wraps at 64 bits; let it decide
            raise Unsure


def _count(v: bytes, p: int) -> tuple[int, int]:
    """A length or block count (>= 0) of 2 to 9 bytes at v[p]; a one-byte one here is negative."""
    if v[p] < 0x80:
        raise Unsure
    n, p = _varint(v, p)
    if n < 0:
        raise Unsure
    return n, p


_HELPERS: dict[str, Any] = {
    "Unsure": Unsure, "_varint": _varint, "_count": _count, "_BOOL": (False, True),
    "_D": struct.Struct("<d").unpack_from, "_F": struct.Struct("<f").unpack_from,
    "INT_MIN": INT_MIN, "INT_MAX": INT_MAX,
    # a one-byte length or count (even byte < 128) -> its value; -1: read it as a varint (longer or negative)
    "_LEN": tuple(b >> 1 if b < 128 and not b & 1 else -1 for b in range(256)),
}  # fmt: skip


class _Gen:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.n = 0
        self.active: set[str] = set()  # named types being generated (recursion guard)

    def var(self, stem: str = "x") -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def out(self, ind: int, line: str) -> None:
        self.lines.append("    " * ind + line)

    def const(self, value: Any) -> str:
        name = self.var("K")
        self.consts[name] = value
        return name

    # -- types -------------------------------------------------------------------------------
    def resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t not in _PRIMITIVES:
            if t not in self.named:
                raise Unsupported(f"unknown named type {t}")
            return self.named[t]
        if isinstance(t, dict) and t.get("type") in _PRIMITIVES and len(t.keys() - {"type"}) == 0:
            return t["type"]
        return t

    def min_size(self, t: Any, seen: frozenset[str] = frozenset()) -> int:
        """The fewest bytes a value of `t` takes (0 for null and records of nulls)."""
        t = self.resolve(t)
        if isinstance(t, str):
            return {"null": 0, "boolean": 1, "float": 4, "double": 8}.get(t, 1)
        if isinstance(t, list):
            return 1
        kind = t.get("type")
        if kind == "record":
            if t["name"] in seen:
                return 1
            return sum(self.min_size(f["type"], seen | {t["name"]}) for f in t["fields"])
        if kind == "fixed":
            return int(t["size"])
        return 1  # array, map, enum

    def emit(self, t: Any, target: str, ind: int) -> None:
        t = self.resolve(t)
        if isinstance(t, list):
            self.union(t, target, ind)
        elif isinstance(t, str):
            self.primitive(t, target, ind)
        elif isinstance(t, dict):
            if "logicalType" in t:
                raise Unsupported("logical types are read by fastavro")
            kind = t.get("type")
            if kind == "record":
                self.record(t, target, ind)
            elif kind == "array":
                self.array(t, target, ind)
            elif kind == "map":
                self.map(t, target, ind)
            elif kind == "enum":
                self.enum(t, target, ind)
            elif kind == "fixed":
                self.fixed(t, target, ind)
            else:
                raise Unsupported(f"type {kind!r}")
        else:
            raise Unsupported(f"type {t!r}")

    def length(self, target: str, ind: int) -> None:
        """A non-negative length or count into `target`."""
        self.out(ind, f"{target} = _LEN[v[p]]")
        self.out(ind, f"if {target} < 0:")
        self.out(ind + 1, f"{target}, p = _count(v, p)")
        self.out(ind, "else:")
        self.out(ind + 1, "p += 1")

    def primitive(self, t: str, target: str, ind: int) -> None:
        if t == "null":
            self.out(ind, f"{target} = None")
        elif t == "boolean":
            self.out(ind, f"{target} = _BOOL[v[p]]")
            self.out(ind, "p += 1")
        elif t in ("int", "long"):
            self.out(ind, f"{target} = v[p]")
            self.out(ind, f"if {target} < 128:")
            self.out(ind + 1, f"{target} = ({target} >> 1) ^ -({target} & 1)")
            self.out(ind + 1, "p += 1")
            self.out(ind, "else:")
            self.out(ind + 1, f"{target}, p = _varint(v, p)")
            if t == "int":
                self.out(ind + 1, f"if not INT_MIN <= {target} <= INT_MAX:")
                self.out(ind + 2, "raise Unsure")
        elif t in ("double", "float"):
            self.out(ind, f"{target} = {'_D' if t == 'double' else '_F'}(v, p)[0]")
            self.out(ind, f"p += {8 if t == 'double' else 4}")
        elif t in ("string", "bytes"):
            # A length past the end is not checked here: p then passes L for good, and the next read
            # (IndexError) or the final `p != L` hands the value to fastavro.
            n = self.var("n")
            self.length(n, ind)
            self.out(ind, f"{n} += p")
            self.out(ind, f"{target} = v[p:{n}]{'.decode()' if t == 'string' else ''}")
            self.out(ind, f"p = {n}")
        else:
            raise Unsupported(f"type {t!r}")

    def union(self, branches: list[Any], target: str, ind: int) -> None:
        if not branches or len(branches) > 63:
            raise Unsupported("union size")
        b = self.var("u")
        self.out(ind, f"{b} = v[p]")
        self.out(ind, "p += 1")
        for i, branch in enumerate(branches):
            self.out(ind, f"{'if' if i == 0 else 'elif'} {b} == {2 * i}:")
            self.emit(branch, target, ind + 1)
        self.out(ind, "else:")
        self.out(ind + 1, "raise Unsure")

    def record(self, t: dict[str, Any], target: str, ind: int) -> None:
        name = t.get("name", "")
        if name in self.active:
            raise Unsupported(f"recursive record {name}")
        self.active.add(name)
        values = []
        for field in t["fields"]:
            local = self.var("f")
            self.emit(field["type"], local, ind)
            values.append((field["name"], local))
        self.active.discard(name)
        body = ", ".join(f"{key!r}: {local}" for key, local in values)
        self.out(ind, f"{target} = {{{body}}}")

    def blocks(self, item_type: Any, target: str, ind: int, keyed: bool) -> None:
        if self.min_size(item_type) == 0 and not keyed:
            raise Unsupported("array items of zero bytes")
        n, i = self.var("c"), self.var("i")
        self.out(ind, f"{target} = {{}}" if keyed else f"{target} = []")
        self.length(n, ind)
        self.out(ind, f"while {n}:")
        self.out(ind + 1, f"if {n} > L - p:")  # every item takes at least one byte
        self.out(ind + 2, "raise Unsure")
        self.out(ind + 1, f"for _ in range({n}):")
        if keyed:
            key = self.var("k")
            self.primitive("string", key, ind + 2)
            self.emit(item_type, i, ind + 2)
            self.out(ind + 2, f"{target}[{key}] = {i}")
        else:
            self.emit(item_type, i, ind + 2)
            self.out(ind + 2, f"{target}.append({i})")
        self.length(n, ind + 1)

    def array(self, t: dict[str, Any], target: str, ind: int) -> None:
        self.blocks(t["items"], target, ind, keyed=False)

    def map(self, t: dict[str, Any], target: str, ind: int) -> None:
        self.blocks(t["values"], target, ind, keyed=True)

    def enum(self, t: dict[str, Any], target: str, ind: int) -> None:
        symbols = self.const(tuple(t["symbols"]))
        self.out(ind, f"{target} = v[p]")
        self.out(ind, f"if {target} & 1 or {target} >= {2 * len(t['symbols'])}:")
        self.out(ind + 1, "raise Unsure")
        self.out(ind, f"{target} = {symbols}[{target} >> 1]")
        self.out(ind, "p += 1")

    def fixed(self, t: dict[str, Any], target: str, ind: int) -> None:
        size = int(t["size"])
        self.out(ind, f"if p + {size} > L:")
        self.out(ind + 1, "raise Unsure")
        self.out(ind, f"{target} = v[p:p + {size}]")
        self.out(ind, f"p += {size}")


def reader_source(schema: Any) -> tuple[str, dict[str, Any]]:
    """The Python source of a reader for `schema` (fastavro-parsed) and the constants it needs.

    Raises Unsupported when the schema has a part the generator does not handle.
    """
    named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    gen = _Gen(named)
    gen.out(0, "def read(v, p=0):")
    gen.out(1, "L = len(v)")
    gen.emit(schema, "r", 1)
    gen.out(1, "if p != L:")
    gen.out(2, "raise Unsure")
    gen.out(1, "return r")
    return "\n".join(gen.lines) + "\n", gen.consts


def compile_reader(schema: Any) -> Reader | None:
    """A generated reader for `schema` (fastavro-parsed), or None when fastavro must read it all.

    The reader takes bytes and where the Avro body starts in them (0; 5 after a Confluent header) and
    returns the decoded value or raises (Unsure, IndexError,
    UnicodeDecodeError, struct.error, ...): any exception means "read it with fastavro".
    """
    try:
        source, consts = reader_source(schema)
    except (Unsupported, KeyError, TypeError, ValueError):
        return None
    namespace: dict[str, Any] = {**_HELPERS, **consts}
    exec(compile(source, "<avro reader>", "exec"), namespace)  # noqa: S102 - our own generated code
    reader: Reader = namespace["read"]
    return reader
