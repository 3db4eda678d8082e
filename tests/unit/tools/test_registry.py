"""The local Apicurio Registry launcher: Java discovery and the commands that need no running registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream.errors import UsageError
from stream.tools import registry


def test_find_java_returns_a_java_of_at_least_the_minimum() -> None:
    """On this machine kind a Java 21+ sits beside the default Java 17; find_java picks one that qualifies."""
    try:
        java = registry.find_java()
    except UsageError as exc:
        pytest.skip(f"no Java 21+ here: {exc}")
    version = registry.java_version(java)
    assert version is not None
    assert version >= registry.MIN_JAVA


def test_find_java_says_what_is_missing_when_nothing_is_new_enough() -> None:
    """Asking for a Java no machine has gives a UsageError naming the version and what was found."""
    with pytest.raises(UsageError, match=r"needs Java 999 or newer; found .*\(\d+\)"):
        registry.find_java(minimum=999)


def test_status_and_down_of_an_empty_home_say_which_directory(tmp_path: Path) -> None:
    """`registry status|down` on a home with no registry say so and name the directory they looked at."""
    home = tmp_path / "reg"
    status = subprocess.run([sys.executable, "-m", "stream", "registry", "status", "--data-dir", str(home)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 1
    assert status.stdout.strip() == f"registry not running ({home})"
    down = subprocess.run([sys.executable, "-m", "stream", "registry", "down", "--data-dir", str(home)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0
    assert f"registry was not running ({home})" in down.stderr
