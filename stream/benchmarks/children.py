"""What the memory benchmarks share: sizes from an option, one measurement per fresh interpreter, RSS.

A benchmark module measures each size in a child (`python -m stream.benchmarks.NAME MODE SIZE SEED ...`) so
one run's freed memory cannot flatter the next; the child prints its answer as one JSON object.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from stream.errors import UsageError


def parse_sizes(text: str, option: str, minimum: int) -> list[int]:
    """`"1000000,10_000_000"` -> [1000000, 10000000]; UsageError naming `option` for anything but integers
    of at least `minimum`."""
    sizes = []
    for part in text.split(","):
        try:
            size = int(part.strip())
        except ValueError:
            raise UsageError(f"{option}: {part.strip()!r} is not an integer") from None
        if size < minimum:
            raise UsageError(f"{option}: sizes must be at least {minimum}, got {size}")
        sizes.append(size)
    return sizes


def run_child(name: str, mode: str, size: int, seed: int, *extra: str) -> dict[str, Any]:
    """Run one measurement of `stream.benchmarks.<name>` in a fresh interpreter and return its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", f"stream.benchmarks.{name}", mode, str(size), str(seed), *extra],
        capture_output=True, check=False, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench {name} child ({mode}, {size}) failed: {done.stderr.decode()[-2000:]}")
    answer: dict[str, Any] = orjson.loads(done.stdout)
    return answer


def answer_child(argv: list[str], measures: Mapping[str, Callable[[int, int], dict[str, Any]]]) -> None:
    """The child's side: `MODE SIZE SEED` -> the JSON answer of measures[MODE](size, seed) on stdout."""
    mode, size, seed = argv[0], int(argv[1]), int(argv[2])
    sys.stdout.buffer.write(orjson.dumps(measures[mode](size, seed)))


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None elsewhere."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None
