"""Pure stages import no I/O library and read no clock (STYLE.md habit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAM = Path(__file__).resolve().parents[2] / "stream"
PURE = ["records", "offsets", "batch", "decode", "normalize", "fields", "userdata", "validate", "appdata",
        "customdata", "phones", "places", "dedupe", "quality", "consistency", "stats", "wire", "meta", "errors"]
FORBIDDEN_IMPORTS = ("asyncio", "aiohttp", "confluent_kafka", "socket", "subprocess", "threading")
CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("datetime", "now"),
               ("datetime", "utcnow"), ("date", "today")}


def _tree(name: str) -> ast.Module:
    return ast.parse((STREAM / f"{name}.py").read_text())


@pytest.mark.parametrize("name", [n for n in PURE if (STREAM / f"{n}.py").is_file()])
def test_pure_module_imports_no_io_library(name: str) -> None:
    """The module imports none of asyncio, aiohttp, confluent_kafka, socket, subprocess, threading."""
    imported = []
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    bad = [m for m in imported if m.split(".")[0] in FORBIDDEN_IMPORTS]
    assert bad == []


@pytest.mark.parametrize("name", [n for n in PURE if (STREAM / f"{n}.py").is_file()])
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


def test_the_purity_list_names_real_modules() -> None:
    """Every module the purity tests check exists, so the list cannot silently rot."""
    assert [n for n in PURE if not (STREAM / f"{n}.py").is_file()] == []
