"""Operations against the real broker and the emulator: metrics moving, health, quality, no leaks."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    APPS_B,
    Samples,
    Scenario,
    http_get,
    metric,
    produce_records,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.kafka

KNOWN_EMAILS = ["leak.canary.one@example.org", "Second.Canary@Example.net"]
KNOWN_PHONES = ["+1 (415) 555-0134", "+44 20 7946 0321"]


def _get(url: str) -> tuple[int, bytes]:
    return http_get(url)


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


_value = metric


def _canary_events(n: int) -> list[dict[str, Any]]:
    records = list(generate(n, seed=77, now=int(time.time()), app_ids=APPS_A + APPS_B, duplicate_rate=0.05))
    for i, r in enumerate(records):
        r["consent"] = True
        r["user_data"]["em"] = KNOWN_EMAILS[i % 2]
        r["user_data"]["ph"] = KNOWN_PHONES[i % 2]
    # one that dead-letters (unknown app) and one that drops a field (a bad phone), both with PII
    records.append({**records[0], "event_id": "leak-unrouted", "app_id": "com.example.nobody"})
    records.append({**records[1], "event_id": "leak-badphone",
                    "user_data": {**records[1]["user_data"], "ph": "call me maybe"}})
    return records


def test_metrics_health_and_quality_move_with_the_pipeline_and_nothing_leaks(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """Metrics count what happened, health endpoints answer, and no token or raw PII reaches logs/metrics/DLQ."""
    port = free_port()
    # a small dedupe store, so evictions happen and show in the metrics
    sc = scenario_factory(partitions=2, extra=f"[metrics]\nport = {port}\n[dedupe]\nmax_keys = 300\n")
    sc.config.write_text(sc.config.read_text().replace('level = "info"', 'level = "debug"'))
    records = _canary_events(600)
    produce_records(sc.bootstrap, sc.topic, records)
    proc = sc.start()
    base = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: _get(base + "/readyz")[0] == 200 if proc.alive() else False, 60), "never ready"
    assert sc.all_committed()
    status, health = _get(base + "/healthz")
    assert status == 200
    assert orjson.loads(health)["ok"] is True
    _, body = _get(base + "/metrics")
    metrics_text = body.decode()
    m = _samples(metrics_text)
    assert _value(m, "capi_stream_consumed_total") == len(records)
    assert _value(m, "capi_stream_events_acked_total") == sum(sc.counts().values())
    assert _value(m, "capi_stream_duplicates_total") > 0
    assert _value(m, "capi_stream_dead_lettered_total", reason="unknown_destination") == 1
    assert _value(m, "capi_stream_dropped_fields_total", field="user_data.ph", reason="invalid_phone") >= 1
    assert _value(m, "capi_stream_send_latency_seconds_count") >= 1
    assert _value(m, "capi_stream_event_freshness_at_ack_seconds_count") == _value(m, "capi_stream_events_acked_total")
    assert _value(m, "capi_stream_destination_state", destination="shop", state="flowing") == 1
    assert _value(m, "capi_stream_in_flight_events") == 0
    assert 0 < _value(m, "capi_stream_dedupe_keys") <= 300
    assert _value(m, "capi_stream_dedupe_evictions_total") > 0
    assert _value(m, "capi_stream_assigned_partitions") == 2
    assert _value(m, "capi_stream_quality_match_key_total", destination="shop", event_name="Purchase", key="em") > 0
    assert wait_until(lambda: "capi_stream_consumer_lag{" in _get(base + "/metrics")[1].decode(), 15)

    quality = subprocess.run([sys.executable, "-m", "stream", "quality", "--metrics-url", base + "/metrics"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert quality.returncode == 0, quality.stderr
    assert "shop" in quality.stdout
    assert "fitness" in quality.stdout

    # a halted destination makes the member unready and shows in the state gauge
    sc.emulator.rotate_token(sc.dests[0].dataset_id, f"tok-{uuid.uuid4().hex}")
    more = list(generate(50, seed=78, now=int(time.time()), app_ids=APPS_A))
    for r in more:
        r["consent"] = True
    produce_records(sc.bootstrap, sc.topic, more)
    assert wait_until(lambda: _get(base + "/readyz")[0] == 503, 30)
    assert orjson.loads(_get(base + "/readyz")[1])["halted"] == ["shop"]
    halted = _samples(_get(base + "/metrics")[1].decode())
    assert _value(halted, "capi_stream_destination_state", destination="shop", state="halted") == 1
    # shop's new events wait for a token: they are in flight and the oldest of them ages
    assert _value(halted, "capi_stream_in_flight_events") > 0
    assert _value(halted, "capi_stream_oldest_unacked_event_age_seconds") > 0
    final_metrics = _get(base + "/metrics")[1].decode()
    proc.stop()

    tokens = [d.token_file.read_text().strip() for d in sc.dests]
    letters = read_topic(sc.bootstrap, sc.dlq_topic, 1)
    header_text = " ".join(f"{k}={v!r}" for m in letters for k, v in (m.headers() or []))
    logs = proc.log.read_text()
    assert '"level": "debug"' in logs or '"level":"debug"' in logs  # debug really was on
    needles = [*tokens, *KNOWN_EMAILS, *(e.lower() for e in KNOWN_EMAILS), *KNOWN_PHONES,
               "4155550134", "14155550134", "442079460321", "call me maybe"]
    for haystack_name, haystack in (("logs", logs), ("metrics", metrics_text + final_metrics),
                                    ("dlq headers", header_text)):
        found = [n for n in needles if n in haystack]
        assert found == [], f"{haystack_name} leak {found}"
