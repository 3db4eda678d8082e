"""`capi-stream bench stages` times every stage, the runner's apply and ack included, on real work."""

from __future__ import annotations

import orjson
import pytest

from stream.cli import main


def test_stages_report_the_runner_apply_and_ack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "stages", "--events", "1200", "--rounds", "1"]) == 0
    result = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stages = result["stages"]
    for name in ("prepare, generated reader", "runner: apply (_handle)", "runner: ack (request body, _acked)"):
        assert stages[name]["median_us"] > 0, name
