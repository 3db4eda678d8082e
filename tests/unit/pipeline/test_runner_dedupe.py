"""The runner's admission: events are deduped per destination dataset, as Meta dedupes them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stream import config
from stream.pipeline.dedupe import Verdict, dedupe_key
from stream.pipeline.items import Item
from stream.pipeline.runner import Pipeline

NOW = 1_800_000_000.0


@pytest.fixture
def pipeline_factory(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Pipeline]:
    """A Pipeline (never started: no broker, no sockets) with destinations shop (111) and fitness (222)."""
    monkeypatch.setenv("CAPI_TEST_TOKEN", "token")

    def make(datasets: tuple[str, str] = ("111", "222")) -> Pipeline:
        raw = {"dedupe": {"changelog": False}, "destinations": {
            "shop": {"dataset_id": datasets[0], "app_ids": ["com.example.shop"], "token_env": "CAPI_TEST_TOKEN"},
            "fitness": {"dataset_id": datasets[1], "app_ids": ["com.example.fitness"],
                        "token_env": "CAPI_TEST_TOKEN"},
        }}  # fmt: skip
        return Pipeline(config._build(raw, "test"), clock=lambda: NOW)

    return make


def _item(pipeline: Pipeline, destination: str, offset: int, event_id: str = "1001") -> Item:
    """A consumed, prepared Purchase for `destination` at `offset` of partition 0."""
    part = pipeline.tracker.get("t", 0) or pipeline.tracker.assign("t", 0)
    part.received(offset)
    pipeline._unfinished += 1
    return Item("t", 0, offset, None, b"", 0, part, destination=destination, body=b"{}", event_name="Purchase",
                event_id=event_id, event_time=int(NOW))


def _batched(pipeline: Pipeline) -> list[tuple[str, int]]:
    return [(i.destination, i.offset) for i in pipeline.batcher.items()]


def _admit_after_shop_acked(pipeline: Pipeline, destination: str) -> None:
    """shop's Purchase 1001 (offset 0) batched and acked, then `destination`'s own Purchase 1001 at offset 1."""
    pipeline._admit(_item(pipeline, "shop", 0), NOW)
    (batch,) = pipeline.batcher.flush()
    pipeline._acked(batch)
    pipeline._admit(_item(pipeline, destination, 1), NOW)


def test_key_includes_the_dataset() -> None:
    """The same (event_name, event_id) for two datasets gives two keys; the same dataset gives one."""
    assert dedupe_key("111", "Purchase", "1001") != dedupe_key("222", "Purchase", "1001")
    assert dedupe_key("111", "Purchase", "1001") == dedupe_key("111", "Purchase", "1001")


def test_twin_for_another_dataset_is_sent_after_the_first_was_acked(pipeline_factory: Callable[..., Pipeline]) -> None:
    """Dataset A's Purchase 1001 was acked; dataset B's own Purchase 1001 is still batched, not dropped."""
    p = pipeline_factory()
    _admit_after_shop_acked(p, "fitness")
    assert _batched(p) == [("fitness", 1)]
    assert p.stats.duplicates == 0


def test_twin_for_another_dataset_is_not_held_behind_a_pending_one(pipeline_factory: Callable[..., Pipeline]) -> None:
    """While A's 1001 is in flight (or its destination halted), B's 1001 is batched, not held as its twin."""
    p = pipeline_factory()
    p._admit(_item(p, "shop", 0), NOW)
    p._admit(_item(p, "fitness", 1), NOW)
    assert sorted(_batched(p)) == [("fitness", 1), ("shop", 0)]
    assert not p._waiters


def test_duplicate_within_one_dataset_is_still_dropped(pipeline_factory: Callable[..., Pipeline]) -> None:
    """A second copy for the same dataset is a duplicate once the first was acked."""
    p = pipeline_factory()
    _admit_after_shop_acked(p, "shop")
    assert _batched(p) == []
    assert p.stats.duplicates == 1
    assert p.dedupe.check(dedupe_key("111", "Purchase", "1001"), NOW) is Verdict.SENT


def test_two_destinations_of_one_dataset_share_the_key(pipeline_factory: Callable[..., Pipeline]) -> None:
    """Meta dedupes per dataset, so two destinations that send to the same dataset dedupe together."""
    p = pipeline_factory(datasets=("111", "111"))
    _admit_after_shop_acked(p, "fitness")
    assert _batched(p) == []
    assert p.stats.duplicates == 1
