"""What the pipeline tells an operator while it runs: progress lines, caught_up, a failing destination."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest

from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import APPS_A, APPS_B, Scenario, http_get, metric, produce_records, scrape, wait_until

pytestmark = pytest.mark.kafka


def _readyz(port: int) -> tuple[int, dict[str, object]]:
    status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    return status, (orjson.loads(body) if body else {})


def test_a_destination_answering_only_503_is_failing_then_flows_and_the_pipeline_catches_up(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """503 on every request: `failing` in /readyz, the metric and the progress line; then it recovers."""
    port = free_port()
    sc = scenario_factory(partitions=2, extra=f"[metrics]\nport = {port}\n"
                                              "[send]\ntimeout_s = 15.0\nbackoff_max_s = 1.0\n")
    sc.config.write_text(sc.config.read_text().replace('level = "info"', 'level = "info"\nprogress_interval_s = 1.0'))
    sc.emulator.set_faults({"http_503": 1.0})
    records = list(generate(40, seed=11, now=int(time.time()), app_ids=APPS_A + APPS_B, duplicate_rate=0))
    for r in records:
        r["consent"] = True
    produce_records(sc.bootstrap, sc.topic, records)
    proc = sc.start()

    def failing() -> bool:
        status, body = _readyz(port)
        return status == 503 and body.get("failing") == ["fitness", "shop"]

    assert wait_until(failing, 90), f"never failing: {_readyz(port)}"
    _status, body = _readyz(port)
    assert body["destinations"] == {"shop": "failing", "fitness": "failing"}
    assert body["ok"] is False
    samples = scrape(port)
    assert metric(samples, "capi_stream_destination_state", destination="shop", state="failing") == 1.0
    assert metric(samples, "capi_stream_destination_state", destination="shop", state="flowing") == 0.0
    assert wait_until(lambda: any(x.get("event") == "progress" and "failing" in x["destinations"].values()
                                  for x in proc.log_lines()), 30), "no progress line showed the failing state"
    assert any(x.get("event") == "destination_failing" and x["level"] == "error" for x in proc.log_lines())

    sc.emulator.set_faults({})
    assert sc.all_committed(), "the pipeline never caught up once Meta answered again"
    assert wait_until(lambda: _readyz(port)[0] == 200, 60), f"never ready again: {_readyz(port)}"
    assert _readyz(port)[1]["destinations"] == {"shop": "flowing", "fitness": "flowing"}
    assert wait_until(lambda: any(x.get("event") == "caught_up" for x in proc.log_lines()), 30), \
        "no caught_up line although the lag reached 0"
    assert proc.stop() == 0
    lines = proc.log_lines()
    progress = [x for x in lines if x.get("event") == "progress"]
    assert progress, "no progress line at all"
    last = progress[-1]
    assert {"consumed", "acked", "in_flight", "lag", "destinations", "acked_per_s"} <= set(last)
    assert last["consumed"] == len(records)
    assert last["acked"] == len(records)
    recovered = {x["destination"] for x in lines if x.get("event") == "destination_recovered"}
    assert recovered == {"shop", "fitness"}
