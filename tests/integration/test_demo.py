"""The README's first command: `capi-stream demo` runs end to end and stops as soon as its work is done."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from stream.tools import demo

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_the_demo_commits_everything_and_stops_once_it_has(tmp_path: Path) -> None:
    """Every offset is committed, and the progress loop ends at the first line that shows it (no waiting on)."""
    out = io.StringIO()
    result = demo.run_demo(300, out=out, data_dir=tmp_path / "kafka")
    assert result.complete, (result.committed, result.end_offsets)
    total = sum(result.end_offsets.values())
    finished_lines = [line for line in out.getvalue().splitlines() if f"committed {total:>6}/{total}" in line]
    # the loop prints a line when it sees the work finished, then stops; it never repeats that line
    assert len(finished_lines) == 1, out.getvalue()[-2000:]
