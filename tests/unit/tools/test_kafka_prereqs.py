"""`capi-stream kafka up` names a missing prerequisite in one line and exits 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "stream", "kafka", "up"]


def _path_with(tmp_path: Path, tools: list[str]) -> str:
    """A PATH holding only the named tools (as links), so the others look missing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed here")
        (bindir / tool).symlink_to(found)
    return str(bindir)


def _run(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "CAPI_STREAM_CACHE_DIR": str(tmp_path / "empty-cache")}
    return subprocess.run([*CLI, "--data-dir", str(tmp_path / "home"), "--port", "1"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_missing_mvn_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    """With java but no mvn on PATH and no cached jars, `up` says mvn is missing and exits 2."""
    proc = _run(tmp_path, _path_with(tmp_path, ["java"]))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "mvn not found" in lines[0]


def test_missing_java_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    """With neither java nor mvn on PATH, `up` says java is missing and exits 2."""
    proc = _run(tmp_path, _path_with(tmp_path, []))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "java not found" in lines[0]
