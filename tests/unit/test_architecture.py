"""The tree tells the architecture: pure layers stay pure, layers import only downwards, no import cycles."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

STREAM = Path(__file__).resolve().parents[2] / "stream"

# Packages whose every module is pure, and the pipeline's modules that are pure. The I/O edges are named
# (not the pure ones), so a new module in these packages is held to purity unless it says otherwise here.
PURE_PACKAGES = ("contract", "avro", "pipeline")
IO_EDGES = {
    "avro.registry",  # fetches writer schemas over HTTP
    "pipeline.source",  # the confluent-kafka consumer and its thread
    "pipeline.deadletters",  # the confluent-kafka producer
    "pipeline.changelog",  # the dedupe changelog topic: confluent-kafka admin, producer and restore reads
    "pipeline.parkwatch",  # what waits in the parking topics: a confluent-kafka consumer that never joins
    "pipeline.meta_client",  # the aiohttp client
    "pipeline.sender",  # asyncio tasks per destination
    "pipeline.canary",  # an asyncio task per destination sending canary events on a schedule
    "pipeline.runner",  # wires the stages: tasks, clock, signals
    "pipeline.metrics",  # the HTTP metrics server
    "pipeline.tasks",  # owning asyncio tasks
    "pipeline.prepare",  # runs in worker processes (concurrent.futures)
}
FORBIDDEN_IMPORTS = ("asyncio", "aiohttp", "confluent_kafka", "socket", "subprocess", "threading", "concurrent")
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("datetime", "now"),
               ("datetime", "utcnow"), ("date", "today")}  # fmt: skip

# The layers, lowest first: a module may import from its own package and from lower ranks only.
RANK = {
    "errors": 0, "logs": 0,
    "contract": 1, "avro": 1,
    "config": 2,
    "pipeline": 3, "emulator": 3,
    "tools": 4,
    "benchmarks": 5,
    "commands": 6,
    "cli": 7, "__main__": 8, "__init__": 0,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name under `stream` ("pipeline.runner", "cli", ...)."""
    found = {}
    for path in STREAM.rglob("*.py"):
        parts = path.relative_to(STREAM).with_suffix("").parts
        found[".".join(parts)] = path
    return found


@functools.cache
def _tree(name: str) -> ast.Module:
    return ast.parse(_modules()[name].read_text(encoding="utf-8"))


def _imports(name: str) -> list[tuple[str, int]]:
    """Every module the given one imports anywhere (top level, functions, TYPE_CHECKING), with line numbers."""
    modules = _modules()
    package = name.rsplit(".", 1)[0] if "." in name else ""
    found = []
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join(["stream", *anchor, *([base] if base else [])])
            # `from stream.pipeline import runner` imports the module stream.pipeline.runner; the package
            # itself counts only when a name is taken from its __init__
            subs = [f"{base}.{a.name}".removeprefix("stream.") for a in node.names]
            found += [(f"stream.{s}", node.lineno) for s in subs if s in modules]
            if not all(s in modules for s in subs):
                found.append((base, node.lineno))
    return found


def _internal(name: str) -> set[str]:
    """The `stream` modules the given one imports (as dotted names under stream), packages as their __init__."""
    modules = _modules()
    out = set()
    for target, _ in _imports(name):
        if target == "stream" or not target.startswith("stream."):
            continue
        short = target.removeprefix("stream.")
        if short in modules:
            out.add(short)
        elif f"{short}.__init__" in modules:
            out.add(f"{short}.__init__")
    out.discard(name)
    return out


def _pure_modules() -> list[str]:
    return [*sorted(n for n in _modules() if n.split(".")[0] in PURE_PACKAGES and n not in IO_EDGES), "errors"]


@pytest.mark.parametrize("name", _pure_modules())
def test_pure_module_imports_no_io_library(name: str) -> None:
    """The module imports none of asyncio, aiohttp, confluent_kafka, socket, subprocess, threading."""
    bad = [f"{m} line {n}" for m, n in _imports(name) if m.split(".")[0] in FORBIDDEN_IMPORTS]
    assert bad == []


# Stores whose every method takes `now`: they may not even import a clock module.
NO_CLOCK_MODULES = ("pipeline.dedupe", "pipeline.dedupelog")


@pytest.mark.parametrize("name", NO_CLOCK_MODULES)
def test_clockless_stores_import_no_clock_module(name: str) -> None:
    """The dedupe store and its changelog records import neither time nor datetime: time is a parameter."""
    imported = [m for m, _ in _imports(name)]
    assert imported, "the import walk sees the module's real imports"
    assert sorted({m.split(".")[0] for m in imported} & {"time", "datetime"}) == []


@pytest.mark.parametrize("name", _pure_modules())
def test_pure_module_reads_no_clock(name: str) -> None:
    """The module never calls time.time(), monotonic(), datetime.now() and the like: now is a parameter."""
    calls = []
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            owner_name = getattr(owner, "id", None) or getattr(owner, "attr", "")
            if (owner_name, node.func.attr) in CLOCK_CALLS:
                calls.append(f"{owner_name}.{node.func.attr} line {node.lineno}")
    assert calls == []


def test_the_io_edges_name_real_modules() -> None:
    """Every module named as an I/O edge exists, so the exemption list cannot silently rot."""
    assert sorted(IO_EDGES - set(_modules())) == []


def test_every_top_level_name_has_a_rank() -> None:
    """Each package and top-level module of `stream` sits in a layer, so a new one must be placed."""
    assert sorted({n.split(".")[0] for n in _modules()} - set(RANK)) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_go_down_the_layers(name: str) -> None:
    """A module imports from its own package and from lower layers only (contract and avro from nothing above)."""
    own = name.split(".")[0]
    upward = []
    for target in sorted(_internal(name)):
        other = target.split(".")[0]
        if other != own and RANK[other] >= RANK[own] and other not in ("__init__",):
            upward.append(target)
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    """No chain of imports (including TYPE_CHECKING and function-level ones) leads a module back to itself."""
    graph = {name: _internal(name) for name in _modules()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == []
