"""Signal quality over the real broker and the emulator: user consistency and the 5-second target."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import APPS_A, APPS_B, Scenario, http_get, metric, produce_records, scrape, wait_until

pytestmark = pytest.mark.kafka

SHOP_IDS = 100  # 10 of them switch email halfway
FITNESS_IDS = 40  # none switches


def _records(now: int) -> list[dict[str, Any]]:
    """Two events per external_id, one per half of the stream; in the second half 10% of shop's ids switch."""
    base = list(generate(2 * (SHOP_IDS + FITNESS_IDS), seed=18, now=now, app_ids=APPS_A))
    people = [(APPS_A[i % 2], f"shop-user-{i}", i % 10 == 0) for i in range(SHOP_IDS)]
    people += [(APPS_B[0], f"fit-user-{i}", False) for i in range(FITNESS_IDS)]
    out = []
    for half in (0, 1):
        for i, (app, uid, switches) in enumerate(people):
            record = base[half * len(people) + i]
            email = f"{uid}.{'new' if half and switches else 'old'}@example.com"
            record.update(app_id=app, consent=True, event_id=f"{uid}-{half}")
            record["user_data"].update(external_id=uid, em=email, ph=None)
            out.append(record)
    return out


def test_ten_percent_of_ids_switching_email_show_as_ten_percent_inconsistency(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """shop, where 10% of the external_ids switch email halfway, is 90% consistent; fitness is 100%; no value leaks."""
    port = free_port()
    sc = scenario_factory(partitions=2, extra=f"[metrics]\nport = {port}\n")
    records = _records(int(time.time()))
    produce_records(sc.bootstrap, sc.topic, records)
    sc.start()
    assert sc.all_committed()
    m = scrape(port)
    ids = {d: metric(m, "capi_stream_quality_identity_ids_total", destination=d) for d in ("shop", "fitness")}
    bad = {d: metric(m, "capi_stream_quality_identity_inconsistent_ids_total", destination=d)
           for d in ("shop", "fitness")}
    assert ids == {"shop": SHOP_IDS, "fitness": FITNESS_IDS}
    assert bad == {"shop": SHOP_IDS // 10, "fitness": 0}
    checked = sum(v for (name, labels), v in m.items() if name == "capi_stream_quality_identity_checked_total"
                  and ("destination", "shop") in labels)
    assert checked == SHOP_IDS  # the second event of each id is compared with the first
    assert metric(m, "capi_stream_quality_identity_tracked_ids", destination="shop") == SHOP_IDS
    assert metric(m, "capi_stream_quality_target", target="user_consistency") == 0.95

    url = f"http://127.0.0.1:{port}/metrics"
    quality = subprocess.run([sys.executable, "-m", "stream", "quality", "--metrics-url", url],
                             capture_output=True, text=True, timeout=30, check=False)
    assert quality.returncode == 0, quality.stderr
    worst = quality.stdout.split("worst first")[1]
    assert "destination shop: 90.0% of 100 external_ids consistent (10 seen with a second em or ph)" in worst
    assert "fitness" not in worst

    # only counts leave the process: no email, external_id or hash of them in the metrics or the logs
    text = http_get(url)[1].decode() + "".join(p.log.read_text() for p in sc.processes)
    for uid in ("shop-user-0", "fit-user-1"):
        for value in (uid, f"{uid}.old@example.com", f"{uid}.new@example.com"):
            assert value not in text
            assert hashlib.sha256(value.encode()).hexdigest() not in text
            assert hashlib.sha256(value.encode()).hexdigest()[:8] not in text


def test_the_five_second_share_drops_when_meta_answers_after_six_seconds(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """Events acked at once are all on time; once the emulator answers after 6 s, none of the new ones is."""
    port = free_port()
    sc = scenario_factory(partitions=1, extra=f"[metrics]\nport = {port}\n[batch]\nlinger_ms = 20\n")
    now = int(time.time())
    proc = sc.start()
    # the clock runs from the Kafka append: produce only once the member consumes
    assert wait_until(lambda: proc.alive() and http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60)
    fast = [dict(r, app_id=APPS_A[0], consent=True) for r in generate(20, seed=5, now=now, app_ids=APPS_A)]
    sc.emulator.set_faults({"reject_event_ids": [fast[0]["event_id"]]})  # Meta refuses one event on its own
    produce_records(sc.bootstrap, sc.topic, fast)
    assert sc.all_committed()
    refused = [v for (n, _), v in scrape(port).items() if n == "capi_stream_quality_meta_rejected_total"]
    assert refused == [1.0]

    def shares() -> tuple[float, float]:
        m = scrape(port)
        acked = sum(v for (n, lb), v in m.items() if n == "capi_stream_quality_acked_total")
        on_time = sum(v for (n, lb), v in m.items() if n == "capi_stream_quality_acked_on_time_total")
        return acked, on_time

    first = shares()
    assert first[0] == first[1] > 0
    sc.emulator.set_faults({"latency_ms": [6000, 6000]})
    slow = [dict(r, app_id=APPS_A[0], consent=True, event_id=f"slow-{i}")
            for i, r in enumerate(generate(10, seed=6, now=now, app_ids=APPS_A))]
    produce_records(sc.bootstrap, sc.topic, slow)
    assert wait_until(lambda: shares()[0] >= first[0] + len(slow), 60)
    acked, on_time = shares()
    assert on_time == first[1]  # every slow event was late
    assert on_time / acked < 1.0
    assert metric(scrape(port), "capi_stream_quality_latency_threshold_seconds") == 5.0


def test_a_canary_finds_an_expired_token_before_any_real_event_and_resumes_on_a_new_one(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """With no real traffic, shop's canary meets an expired token: shop halts, /readyz fails; a new token
    file resumes it; the emulator counts the canary only as test events, and real events apart."""
    port = free_port()
    sc = scenario_factory(partitions=1, extra=f"[metrics]\nport = {port}\n[send]\ntoken_check_interval_s = 0.5\n"
                                              "timeout_s = 15.0\n")
    # a code for canary requests only, so shop's real events stay real and the ledger tells them apart
    sc.config.write_text(sc.config.read_text().replace(
        "[destinations.shop]\n", '[destinations.shop]\ncanary_interval_s = 1.0\ncanary_test_event_code = "T18"\n'))
    shop = sc.dests[0]
    new_token = "tok-shop-rotated-0123456789"  # noqa: S105 - a test value
    sc.emulator.rotate_token(shop.dataset_id, new_token)  # the token in shop's file has expired
    proc = sc.start()
    base = f"http://127.0.0.1:{port}"

    def ready() -> tuple[int, dict[str, Any]]:
        status, body = http_get(base + "/readyz")
        return status, (orjson.loads(body) if body else {})

    assert wait_until(lambda: proc.alive() and ready()[1].get("halted") == ["shop"], 60), ready()
    assert ready()[0] == 503
    m = scrape(port)
    assert metric(m, "capi_stream_canary_last_error_code", destination="shop") == 190
    assert metric(m, "capi_stream_canary_runs_total", destination="shop", outcome="halt") == 1
    assert metric(m, "capi_stream_destination_state", destination="shop", state="halted") == 1
    canary_labels = {labels for name, labels in m if name.startswith("capi_stream_canary")}
    assert not any(("destination", "fitness") in labels for labels in canary_labels)  # fitness has no canary
    events = [line.get("event") for line in proc.log_lines()]
    assert "canary_failed" in events
    assert "destination_halted" in events
    assert sc.emulator.stats()["events_received"] == 0

    shop.token_file.write_text(new_token + "\n")
    assert wait_until(lambda: ready()[0] == 200, 30), ready()
    assert wait_until(lambda: metric(scrape(port), "capi_stream_canary_last_success_timestamp_seconds",
                                     destination="shop") > 0, 30)
    real = [dict(r, app_id=APPS_A[0], consent=True, event_id=f"real-{i}")
            for i, r in enumerate(generate(5, seed=9, now=int(time.time()), app_ids=APPS_A))]
    produce_records(sc.bootstrap, sc.topic, real)
    assert sc.all_committed(60)
    assert sorted(sc.counts().items()) == [((shop.dataset_id, r["event_name"], r["event_id"]), 1)
                                           for r in sorted(real, key=lambda r: (r["event_name"], r["event_id"]))]
    stats = sc.emulator.stats()
    assert stats["events_received"] == len(real)
    test_events = sc.emulator.received(test=True)
    assert test_events
    assert {(e["dataset_id"], e["event_name"]) for e in test_events} == {(shop.dataset_id, "CapiStreamCanary")}
    assert stats["test_events_by_dataset"] == {shop.dataset_id: sum(e["count"] for e in test_events)}
