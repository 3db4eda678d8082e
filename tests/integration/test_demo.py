"""The README's first command: `capi-stream demo` runs end to end and stops as soon as its work is done."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from stream.tools import demo

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_the_demo_commits_everything_and_stops_once_it_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every offset is committed, and the progress loop ends at the first line that shows it (no waiting on).

    On a broker it started a moment ago (a newcomer's first run), the demo says nothing on stderr at its
    warning level: the transient states of a fresh broker (its group coordinator loading, a topic created a
    moment ago whose partitions have no leader yet) are waited out, not reported as failures.
    """
    out = io.StringIO()
    result = demo.run_demo(300, out=out, data_dir=tmp_path / "kafka", log_format="json")
    assert result.complete, (result.committed, result.end_offsets)
    total = sum(result.end_offsets.values())
    finished_lines = [line for line in out.getvalue().splitlines() if f"committed {total:>6}/{total}" in line]
    # the loop prints a line when it sees the work finished, then stops; it never repeats that line
    assert len(finished_lines) == 1, out.getvalue()[-2000:]
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [(e["event"], e.get("message") or e.get("error")) for e in lines] == []
