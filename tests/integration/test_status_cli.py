"""`capi-stream status --config F` against a live group on the real broker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import APPS_A, Scenario, http_get, produce_records, wait_until

pytestmark = pytest.mark.kafka

CLI = [sys.executable, "-m", "stream"]


def _status(config: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "status", "--config", config, *extra], capture_output=True, text=True,
                          timeout=90, check=False)


def test_status_shows_members_lag_destination_states_and_the_oldest_unacked_event(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """While Meta answers 503, status shows the member and its partitions, lag 0 at the broker but events
    in flight, the destination failing and the age of the oldest unacknowledged event."""
    port = free_port()
    sc = scenario_factory(partitions=2, extra=f"[metrics]\nport = {port}\n")
    sc.emulator.set_faults({"http_503": 1.0})
    now = int(time.time())
    records = list(generate(30, seed=4, now=now, app_ids=APPS_A, duplicate_rate=0))
    for r in records:
        r["consent"] = True
        r["event_time"] = now - 3 * 3600  # three hours old: the cliff is 7 days away
    produce_records(sc.bootstrap, sc.topic, records)
    proc = sc.start()
    assert wait_until(lambda: b'"shop": "failing"' in http_get(f"http://127.0.0.1:{port}/readyz")[1]
                      or b'"shop":"failing"' in http_get(f"http://127.0.0.1:{port}/readyz")[1], 90)

    done = _status(str(sc.config), "--format", "json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = orjson.loads(done.stdout)
    assert doc["group"] == sc.group
    assert doc["state"] == "STABLE"
    [member] = doc["members"]
    assert sorted(map(tuple, member["partitions"])) == [(sc.topic, 0), (sc.topic, 1)]
    assert member["client_id"] == f"capi-stream-metrics-{port}"
    rows = {r["partition"]: r for r in doc["partitions"]}
    assert sum(r["end"] for r in rows.values()) == len(records)
    # nothing acknowledged, so nothing committed: the whole topic is lag
    assert doc["total_lag"] == len(records)
    assert {r["owner"] for r in rows.values()} == {member["client_id"]}
    [metrics] = doc["metrics"]
    assert metrics["error"] == ""
    assert metrics["url"] == f"http://127.0.0.1:{port}/metrics"
    assert metrics["destinations"]["shop"] == "failing"
    assert metrics["in_flight"] == len(records)
    assert 3 * 3600 <= doc["oldest_unacked_age_s"] < 4 * 3600
    assert doc["cliff_s"] == 7 * 86400

    table = _status(str(sc.config))
    assert table.returncode == 0, table.stderr
    assert f"group {sc.group}: STABLE, 1 member(s), total lag {len(records)}" in table.stdout
    assert "shop=failing" in table.stdout
    assert "oldest unacknowledged event is 3h" in table.stdout

    sc.emulator.set_faults({})
    assert sc.all_committed()
    after = orjson.loads(_status(str(sc.config), "--format", "json").stdout)
    assert after["total_lag"] == 0
    assert after["metrics"][0]["destinations"]["shop"] == "flowing"
    assert proc.stop() == 0


def test_status_of_a_stopped_group_still_shows_its_committed_offsets(scenario_factory: Callable[..., Scenario],
                                                                      ) -> None:
    """With no member running, the group is EMPTY and every partition shows its lag; no metrics to read."""
    sc = scenario_factory(partitions=1)
    produce_records(sc.bootstrap, sc.topic, list(generate(5, seed=2, now=int(time.time()), app_ids=APPS_A,
                                                          duplicate_rate=0)))
    done = _status(str(sc.config))
    assert done.returncode == 0, done.stderr
    assert "total lag 5" in done.stdout
    assert "no member advertises a metrics port" in done.stdout
