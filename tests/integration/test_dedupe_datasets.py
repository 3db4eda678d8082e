"""Dedupe is per destination dataset: two apps with overlapping event ids both reach Meta, once each.

Real broker, the emulator over sockets, `capi-stream run` as a subprocess (issue #12, defect 1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from stream.tools.samples import generate
from tests.support.harness import APPS_A, APPS_B, Scenario, expected_keys, produce_records, wait_until

pytestmark = pytest.mark.kafka


def _twins(n: int, seed: int, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`n` events of app A and, for each, app B's own event with the same event_name and event_id."""
    first = list(generate(n, seed=seed, now=int(time.time()), app_ids=APPS_A))
    for index, record in enumerate(first):
        record["consent"] = True
        record["event_id"] = f"{prefix}-{index}"
    second = [{**record, "app_id": APPS_B[0]} for record in first]
    return first, second


def test_overlapping_event_ids_of_two_datasets_are_each_delivered_once(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """B's events sharing ids with A's, acked or in flight, each reach B's dataset once; a halted A stops only A."""
    sc = scenario_factory(partitions=2, extra="[send]\ntoken_check_interval_s = 0.5\ntimeout_s = 15.0\n")
    shop, fitness = sc.dests
    now = int(time.time())
    # 1. A's events are acknowledged first, then B's twins arrive: B must not get A's SENT verdict.
    acked_a, acked_b = _twins(150, seed=61, prefix="order")
    produce_records(sc.bootstrap, sc.topic, acked_a)
    proc = sc.start()
    expected_a = expected_keys(acked_a, now, sc.routes)
    assert wait_until(lambda: expected_a <= set(sc.counts()), 60), "dataset A's events are delivered"
    produce_records(sc.bootstrap, sc.topic, acked_b)
    # 2. Twins in the same stream, interleaved: B's copy must not wait behind A's pending one.
    mixed_a, mixed_b = _twins(150, seed=62, prefix="cart")
    produce_records(sc.bootstrap, sc.topic, [r for pair in zip(mixed_a, mixed_b, strict=True) for r in pair])
    assert sc.all_committed()
    assert expected_keys(acked_b + mixed_b, now, sc.routes) <= set(sc.counts()), "B's twins reached dataset B"
    # 3. A's token expires, so A halts with its events pending; B's twins of them flow on.
    new_token = f"tok-new-{uuid.uuid4().hex}"
    sc.emulator.rotate_token(shop.dataset_id, new_token)
    halted_a, halted_b = _twins(150, seed=63, prefix="refund")
    produce_records(sc.bootstrap, sc.topic, [r for pair in zip(halted_a, halted_b, strict=True) for r in pair])
    expected_halted_b = expected_keys(halted_b, now, sc.routes)
    assert {k[0] for k in expected_halted_b} == {fitness.dataset_id}
    assert wait_until(lambda: expected_halted_b <= set(sc.counts()), 60), "B flows while A is halted"
    assert any(e.get("event") == "destination_halted" for e in proc.log_lines())
    shop.token_file.write_text(new_token + "\n")
    assert sc.all_committed()
    assert proc.stop() == 0
    records = acked_a + acked_b + mixed_a + mixed_b + halted_a + halted_b
    expected = expected_keys(records, now, sc.routes)
    assert {k[0] for k in expected} == {shop.dataset_id, fitness.dataset_id}
    assert len(expected) == 2 * len({(k[1], k[2]) for k in expected})  # every key really has a twin
    counts = sc.counts()
    assert set(counts) == expected
    assert [k for k, c in counts.items() if c != 1] == []
