"""Per-destination batches by count, bytes and linger."""

from __future__ import annotations

import orjson

from stream.pipeline.batch import Batch, Batcher
from stream.pipeline.items import Item
from stream.pipeline.offsets import PartitionOffsets


def _item(dest: str, n: int, size: int = 20, partition: int = 0) -> Item:
    body = orjson.dumps({"event_name": "Purchase", "event_id": f"e{n}", "pad": "x" * size})
    return Item("t", partition, n, None, b"v", 0, PartitionOffsets("t", partition), destination=dest, body=body)


def test_a_batch_closes_at_max_events() -> None:
    """The item that fills a batch closes it; the next item opens a new one."""
    batcher = Batcher(max_events=3, max_bytes=10_000, linger_s=5)
    assert batcher.add(_item("a", 0), 0) == []
    assert batcher.add(_item("a", 1), 0) == []
    closed = batcher.add(_item("a", 2), 0)
    assert [len(b.items) for b in closed] == [3]
    assert batcher.open_events == 0


def test_a_batch_closes_before_passing_max_bytes() -> None:
    """An item that would push the batch past max_bytes closes it and opens the next batch."""
    batcher = Batcher(max_events=1000, max_bytes=200, linger_s=5)
    batcher.add(_item("a", 0, size=60), 0)
    closed = batcher.add(_item("a", 1, size=60), 0)
    assert [len(b.items) for b in closed] == [1]
    assert closed[0].nbytes <= 200
    assert batcher.open_events == 1


def test_destinations_batch_separately_and_linger_closes_old_batches() -> None:
    """Each destination has its own batch; due() returns those older than linger."""
    batcher = Batcher(max_events=10, max_bytes=10_000, linger_s=1.0)
    batcher.add(_item("a", 0), 0.0)
    batcher.add(_item("b", 1), 0.5)
    assert batcher.next_due() == 1.0
    assert [b.destination for b in batcher.due(1.0)] == ["a"]
    assert [b.destination for b in batcher.due(1.5)] == ["b"]


def test_body_is_the_joined_events_with_token_and_test_code() -> None:
    """The request body parses as Meta's JSON shape with every event in order."""
    batcher = Batcher(max_events=2, max_bytes=10_000, linger_s=5)
    batcher.add(_item("a", 0), 0)
    (batch,) = batcher.add(_item("a", 1), 0)
    doc = orjson.loads(batch.body("tok", "TEST123"))
    assert [e["event_id"] for e in doc["data"]] == ["e0", "e1"]
    assert doc["access_token"] == "tok"  # noqa: S105 - a test value
    assert doc["test_event_code"] == "TEST123"
    assert "test_event_code" not in orjson.loads(batch.body("tok"))


def test_split_halves_keep_every_item_once() -> None:
    """split() gives two halves whose items together are the batch's, in order."""
    batcher = Batcher(max_events=5, max_bytes=10_000, linger_s=5)
    for n in range(4):
        batcher.add(_item("a", n), 0)
    (batch,) = batcher.add(_item("a", 4), 0)
    left, right = batch.split()
    assert [i.offset for i in left.items] + [i.offset for i in right.items] == [0, 1, 2, 3, 4]
    assert (len(left.items), len(right.items)) == (2, 3)  # both smaller than the batch, so splitting ends


def test_split_halves_measure_their_own_items() -> None:
    """Each half's size is what the batcher measures for a batch of exactly its items, not the parent's."""
    items = [_item("a", n, size=10 * (n + 1)) for n in range(5)]
    batch = _batch_of(items)
    left, right = batch.split()
    assert left.nbytes == _batch_of(items[:2]).nbytes
    assert right.nbytes == _batch_of(items[2:]).nbytes
    assert left.nbytes < batch.nbytes
    assert right.nbytes < batch.nbytes


def _batch_of(items: list[Item]) -> Batch:
    """The batch the batcher closes when exactly `items` fill it."""
    batcher = Batcher(max_events=len(items), max_bytes=1_000_000, linger_s=5)
    closed = [b for i in items for b in batcher.add(i, 0)]
    assert len(closed) == 1
    return closed[0]


def test_remove_partitions_takes_out_only_revoked_items() -> None:
    """Items of revoked partitions leave the open batches; the others stay."""
    batcher = Batcher(max_events=10, max_bytes=10_000, linger_s=5)
    batcher.add(_item("a", 0, partition=0), 0)
    batcher.add(_item("a", 1, partition=1), 0)
    removed = batcher.remove_partitions({("t", 1)})
    assert [i.offset for i in removed] == [1]
    assert [i.offset for i in batcher.items()] == [0]


def test_split_halves_keep_the_destination_and_the_opening_time() -> None:
    """Both halves belong to the batch's destination and keep its opening time (linger and age read it)."""
    items = [_item("shop", n) for n in range(4)]
    batch = Batch("shop", items, _batch_of(items).nbytes, opened_at=123.5)
    for half in batch.split():
        assert half.destination == "shop"
        assert half.opened_at == 123.5


def test_retain_measures_what_is_kept() -> None:
    """retain keeps the given items and their size, the size the batcher gives a batch of exactly them."""
    items = [_item("a", n, size=10 * (n + 1)) for n in range(5)]
    batch = _batch_of(items)
    batch.retain(items[1:3])
    assert [i.offset for i in batch.items] == [1, 2]
    assert batch.nbytes == _batch_of(items[1:3]).nbytes


def test_a_batch_may_fill_max_bytes_exactly() -> None:
    """An item that brings the batch to exactly max_bytes joins it; one byte more closes it first."""
    first, second = _item("a", 0, size=40), _item("a", 1, size=40)
    exact = _batch_of([first, second]).nbytes
    batcher = Batcher(max_events=10, max_bytes=exact, linger_s=5)
    assert batcher.add(first, 0) == []
    assert batcher.add(second, 0) == []
    assert batcher.open_events == 2
    tight = Batcher(max_events=10, max_bytes=exact - 1, linger_s=5)
    tight.add(first, 0)
    assert [len(b.items) for b in tight.add(second, 0)] == [1]


def test_a_batch_knows_when_it_closed_and_its_halves_keep_it() -> None:
    """closed_at is the batcher's clock at the close (full, or lingered): the added latency's parts read it."""
    batcher = Batcher(max_events=2, max_bytes=10_000, linger_s=1.0)
    batcher.add(_item("a", 0), 0.0)
    (full,) = batcher.add(_item("a", 1), 0.4)
    assert full.closed_at == 0.4
    batcher.add(_item("b", 2), 1.0)
    (due,) = batcher.due(2.5)
    assert due.closed_at == 2.5
    full.sent_at = 0.7
    assert all((h.closed_at, h.sent_at) == (0.4, 0.7) for h in full.split())


def test_an_idle_destination_lingers_only_idle_linger() -> None:
    """Destinations the caller names idle close after idle_linger_s, the others after linger_s; next_due
    says the same."""
    batcher = Batcher(max_events=10, max_bytes=10_000, linger_s=0.2, idle_linger_s=0.05)
    batcher.add(_item("a", 0), 0.0)
    batcher.add(_item("b", 1), 0.0)
    assert batcher.next_due() == 0.2
    assert batcher.next_due(idle={"b"}) == 0.05
    assert batcher.due(0.06) == []
    assert [b.destination for b in batcher.due(0.06, idle={"b"})] == ["b"]
    assert batcher.due(0.19, idle={"b"}) == []
    assert [b.destination for b in batcher.due(0.2)] == ["a"]


def test_the_idle_linger_is_at_most_the_linger() -> None:
    """An idle linger longer than the linger counts as the linger (an old config's short linger stays true)."""
    assert Batcher(max_events=10, max_bytes=10_000, linger_s=0.01, idle_linger_s=0.05).idle_linger_s == 0.01
    assert Batcher(max_events=10, max_bytes=10_000, linger_s=0.2).idle_linger_s == 0.2
