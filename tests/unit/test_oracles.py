"""The oracles are independent of the code under test: the integration and chaos tests state what Meta
must receive from fixed vectors and rules written out in the tests, and the emulator keeps its own copy of
Meta's rules. A test that computed its expectation with the pipeline's normalizer, or an emulator that read
the pipeline's constants, would agree with any mistake of theirs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# where the integration and chaos oracles live: their tests and the shared harness they use
ORACLE_DIRS = [ROOT / "tests" / "integration", ROOT / "tests" / "chaos", ROOT / "tests" / "support"]
EMULATOR = ROOT / "stream" / "emulator"
# the packages whose code the oracles check: Meta's rules as the pipeline implements them, and the stages
FORBIDDEN_FOR_ORACLES = ("stream.contract",)
FORBIDDEN_FOR_EMULATOR = ("stream.contract", "stream.pipeline", "stream.avro")


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports (top level, in functions, `from stream import x` as stream.x), with lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in paths
        for module, line in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]


def violations_in(path: Path) -> list[str]:
    return [m for m, _ in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_FOR_ORACLES)]


def python_files(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py"))


def test_integration_and_chaos_oracles_import_nothing_from_the_contract() -> None:
    """No integration or chaos test, and no harness module they use, imports stream.contract."""
    files = python_files(*ORACLE_DIRS)
    assert len(files) > 10, "the oracle directories moved: update ORACLE_DIRS"
    assert violations(files, FORBIDDEN_FOR_ORACLES) == []


def test_the_emulator_imports_neither_the_contract_nor_the_pipeline() -> None:
    """The emulator's modules import no pipeline constant or stage: Meta's rules are its own (facts.py)."""
    files = python_files(EMULATOR)
    assert any(p.name == "facts.py" for p in files)
    assert violations(files, FORBIDDEN_FOR_EMULATOR) == []


def test_loading_the_emulator_loads_no_pipeline_module() -> None:
    """Importing stream.emulator (and what it imports, transitively) loads nothing of contract or pipeline."""
    code = (
        "import sys, stream.emulator, stream.emulator.fastpath, stream.emulator.rules; "
        "print(sorted(m for m in sys.modules if m.startswith(('stream.contract', 'stream.pipeline', 'stream.avro'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("from stream.contract.normalize import normalize_event\n", True),
        ("from stream.contract import meta\n", True),
        ("import stream.contract.validate as v\n", True),
        ("from stream import contract\n", True),
        ("def f():\n    from stream.contract.meta import MAX_EVENT_AGE_S\n", True),
        ("from stream.tools.samples import generate\n", False),
        ("from stream.contractor import x\n", False),
    ],
)
def test_the_rule_sees_every_form_of_import(tmp_path: Path, source: str, forbidden: bool) -> None:
    """The check catches each way of importing the contract, and nothing else."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert bool(violations_in(probe)) is forbidden, source
