"""The runner's parking bookkeeping (issue #19): what happens to events read back from a parking topic.

The pipeline is built from a real config over fakes (tests/support/fakes.py): the dead-letter and
parking writers produce into a FakeProducer; nothing here opens a socket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import load
from stream.pipeline.deadletters import HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC
from stream.pipeline.items import Item
from stream.pipeline.runner import Pipeline
from tests.support.fakes import FakeProducer, fakes_config

TOPIC = "t"
WALL = 1_800_000_000.0


def _pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, FakeProducer]:
    monkeypatch.setenv("TOK_A", "token-a")
    monkeypatch.setenv("TOK_B", "token-b")
    path = tmp_path / "c.toml"
    path.write_text(fakes_config(TOPIC, send="park_after_s = 1"))
    producer = FakeProducer()
    return Pipeline(load(path), clock=lambda: WALL, producer_factory=lambda _conf: producer), producer


def _drained(p: Pipeline, offset: int, origin: tuple[str, int, int], event_id: str = "e1") -> Item:
    """An event of destination b read back from b's parking topic (partition 0) at `offset`."""
    topic = p.parking_topics["b"]
    part = p.tracker.get(topic, 0) or p.tracker.assign(topic, 0)
    part.received(offset)
    p._unfinished += 1
    return Item(topic, 0, offset, b"k", b"value", 0, part, destination="b", body=b"{}", event_name="Purchase",
                event_id=event_id, event_time=int(WALL), origin=origin)


async def test_a_dead_letter_of_a_drained_event_names_its_original_source(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The letter's source headers are the topic/partition/offset the event was first consumed at (what
    `dlq show` prints and where `dlq redrive` belongs), not its place in the parking topic; the parking
    position is kept beside it; the parking partition's offset still finishes on the letter's ack."""
    p, producer = _pipeline(tmp_path, monkeypatch)
    await p.dlq.start()
    try:
        item = _drained(p, 7, (TOPIC, 1, 42))
        p._dead_letter(item, "event_too_old", "older than 7 days")
        (letter,) = [m for m in producer.produced if m["topic"] == p.settings.kafka.dlq_topic]
        headers = {k: v.decode() for k, v in letter["headers"].items()}
        assert (headers[HEADER_TOPIC], headers[HEADER_PARTITION], headers[HEADER_OFFSET]) == (TOPIC, "1", "42")
        assert (headers["capi.parking_topic"], headers["capi.parking_partition"], headers["capi.parking_offset"]) \
            == (p.parking_topics["b"], "0", "7")
        assert letter["value"] == b"value"
        assert letter["key"] == b"k"
        producer.poll(0)
        assert p.tracker.get(p.parking_topics["b"], 0).commit_point == 8  # type: ignore[union-attr]
    finally:
        await p.dlq.stop()
