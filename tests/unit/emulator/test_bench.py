"""`capi-stream bench emulator` runs end to end on a tiny load (figures are never asserted)."""

from __future__ import annotations

import pytest

from stream.cli import main


def test_core_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """The in-process measurement accepts every generated request and prints one line per figure."""
    assert main(["bench", "emulator", "--requests", "3", "--events", "10", "--rounds", "1", "--no-http"]) == 0
    out = capsys.readouterr().out
    assert "core json: best" in out
    assert "core form: best" in out
    assert "exact rules only, json: best" in out
    assert "orjson.loads alone" in out


@pytest.mark.parametrize("flag", [["--requests", "2"], ["--events", "1001"], ["--rounds", "0"]])
def test_bad_options_exit_2(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Out-of-range options are a usage error."""
    assert main(["bench", "emulator", "--no-http", *flag]) == 2
    assert "are needed" in capsys.readouterr().err
