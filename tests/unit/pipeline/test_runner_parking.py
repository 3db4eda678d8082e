"""The runner's parking bookkeeping (issue #19): what happens to events read back from a parking topic.

The pipeline is built from a real config over fakes (tests/support/fakes.py): the dead-letter and
parking writers produce into a FakeProducer; nothing here opens a socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, TopicPartition

from stream.config import load
from stream.pipeline import dedupelog
from stream.pipeline.deadletters import HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC
from stream.pipeline.items import Item
from stream.pipeline.metrics import parking_families
from stream.pipeline.parking import HEADER_EVENT_TIME, Mode, TopicView
from stream.pipeline.parkwatch import ParkingWatch, watch_config
from stream.pipeline.runner import Pipeline
from tests.support.fakes import FakeConsumer, FakeProducer, fakes_config

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


class _Part:
    def __init__(self, topic: str, partition: int, offset: int, headers: list[tuple[str, bytes]]) -> None:
        self._at = (topic, partition, offset)
        self._headers = headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._at[0]

    def partition(self) -> int:
        return self._at[1]

    def offset(self) -> int:
        return self._at[2]

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


class FakeWatchConsumer:
    """A broker's parking topics as the watch sees them: partitions with (low, high) watermarks, the
    parking group's committed offsets and the event time of each record; records every read."""

    def __init__(self, topics: dict[str, dict[int, tuple[int, int]]], committed: dict[tuple[str, int], int],
                 times: dict[tuple[str, int, int], int]) -> None:
        self.topics = topics
        self.done = committed
        self.times = times
        self.assigned: list[tuple[str, int, int]] = []
        self.reads: list[tuple[str, int, int]] = []
        self.commits = 0
        self.closed = False

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        from types import SimpleNamespace

        found = {t: SimpleNamespace(error=None, partitions=dict.fromkeys(parts)) for t, parts in self.topics.items()}
        return SimpleNamespace(topics=found)

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1,
                              cached: bool = False) -> tuple[int, int]:
        assert cached is False, "a paused partition's cached end is the stale one"
        return self.topics[partition.topic][partition.partition]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, self.done.get((p.topic, p.partition), OFFSET_INVALID))
                for p in partitions]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(p.topic, p.partition, p.offset) for p in partitions]

    def unassign(self) -> None:
        self.assigned = []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        out = []
        for topic, partition, offset in self.assigned:
            # the first record at or after the offset (records below the low watermark are gone)
            at = max(offset, self.topics[topic][partition][0])
            if (topic, partition, at) in self.times:
                self.reads.append((topic, partition, at))
                header = (HEADER_EVENT_TIME, str(self.times[topic, partition, at]).encode())
                out.append(_Part(topic, partition, at, [header]))
        self.assigned = []
        return out

    def close(self) -> None:
        self.closed = True


def test_the_watch_counts_what_waits_in_the_whole_topic_and_reads_only_the_first_waiting_records() -> None:
    """Lag is the high watermark less the parking group's committed offset over every partition (from
    the low watermark when none, or when it is below); the oldest is the oldest event time of the first
    waiting record of each partition; a look reads one record per partition, and only when that first
    record changed since the last look."""
    topic = "g.b.parking"
    fake = FakeWatchConsumer({topic: {0: (0, 10), 1: (5, 8), 2: (0, 4)}}, {(topic, 0): 6, (topic, 2): 4},
                             {(topic, 0, 6): 1_000, (topic, 1, 5): 900, (topic, 0, 7): 2_000})
    watch = ParkingWatch({"bootstrap.servers": "x"}, "g.parking", {"b": topic}, consumer_factory=lambda _c: fake,
                         monotonic=lambda: 50.0)
    view = watch.look()["b"]
    assert (view.lag, view.oldest_event_time, view.at) == (4 + 3, 900, 50.0)
    assert sorted(fake.reads) == [(topic, 0, 6), (topic, 1, 5)]
    assert watch.look()["b"].lag == 7
    assert len(fake.reads) == 2, "the first waiting records did not change: nothing read again"
    fake.done[(topic, 1)] = 8  # partition 1 drained, partition 0 moved on by one
    fake.done[(topic, 0)] = 7
    view = watch.look()["b"]
    assert (view.lag, view.oldest_event_time) == (3, 2_000)
    assert fake.reads[2:] == [(topic, 0, 7)]
    assert fake.commits == 0
    watch.close()
    assert fake.closed
    assert watch.look() == {}


def test_the_watch_config_never_joins_or_commits_for_the_parking_group() -> None:
    conf = watch_config({"bootstrap.servers": "x", "enable.auto.commit": True}, "g.parking")
    assert conf["group.id"] == "g.parking"
    assert conf["enable.auto.commit"] is False
    assert conf["allow.auto.create.topics"] is False


def _watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeWatchConsumer) -> Pipeline:
    monkeypatch.setenv("TOK_A", "token-a")
    monkeypatch.setenv("TOK_B", "token-b")
    path = tmp_path / "c.toml"
    path.write_text(fakes_config(TOPIC, send="park_after_s = 1"))
    return Pipeline(load(path), clock=lambda: WALL, producer_factory=lambda _conf: FakeProducer(),
                    consumer_factory=lambda _conf: FakeConsumer(), watch_consumer_factory=lambda _c: fake)


def test_a_fresh_process_reports_what_waits_in_the_parking_topic(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after a start (nothing parked or drained by this process, no parking partition assigned or
    fetched), the parking lag and the oldest parked event's age come from the parking topic itself."""
    fake = FakeWatchConsumer({}, {}, {})
    p = _watched(tmp_path, monkeypatch, fake)
    topic = p.parking_topics["b"]
    fake.topics = {topic: {0: (0, 30), 1: (0, 12)}, p.parking_topics["a"]: {0: (0, 0), 1: (0, 0)}}
    fake.done = {(topic, 0): 20}
    fake.times = {(topic, 0, 20): int(WALL) - 5 * 86400, (topic, 1, 0): int(WALL) - 3600}
    assert p.parking_watch is not None
    p._parking_views = p.parking_watch.look()
    rows = {name: (lag, oldest) for name, _parked, _drained, lag, oldest in p.parking_rows()}
    assert rows == {"a": (0, 0), "b": (10 + 12, int(WALL) - 5 * 86400)}
    ages = {s.labels["destination"]: s.value for fam in parking_families(p.parking_rows(), WALL)
            for s in fam.samples if s.name == "capi_stream_parked_oldest_event_age_seconds"}
    assert ages == {"a": 0.0, "b": 5 * 86400.0}


def test_the_oldest_is_never_younger_than_what_this_process_parked(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWatchConsumer({}, {}, {})
    p = _watched(tmp_path, monkeypatch, fake)
    p.parking["b"].count_parked(int(WALL) - 100)
    p._parking_views = {"b": TopicView(5, int(WALL) - 50, 1.0)}
    assert {n: o for n, _, _, _, o in p.parking_rows()}["b"] == int(WALL) - 100
    p._parking_views = {"b": TopicView(5, int(WALL) - 500, 1.0)}
    assert {n: o for n, _, _, _, o in p.parking_rows()}["b"] == int(WALL) - 500


class FakeChangelog:
    """The changelog as the runner uses it: records every write, acknowledges it at once."""

    def __init__(self) -> None:
        self.records: list[tuple[tuple[str, int], bytes, bytes | None]] = []
        self.topics = {TOPIC: f"{TOPIC}.dedupe-changelog"}
        self.held: list[Any] = []  # acks withheld while `hold` is set
        self.hold = False

    def write(self, records: Any, on_done: Any = None) -> int:
        queued = list(records)
        self.records += queued
        if on_done is not None:
            (self.held.append if self.hold else lambda f: f())(on_done)
        return len(queued)

    def holds(self, _tps: Any) -> bool:
        return False


def _member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, owns: int) -> tuple[Pipeline, FakeChangelog]:
    """One member of a group of two, with the changelog on (a fake), owning source partition `owns`."""
    monkeypatch.setenv("TOK_A", "token-a")
    monkeypatch.setenv("TOK_B", "token-b")
    path = tmp_path / f"{name}.toml"
    path.write_text(fakes_config(TOPIC, send="park_after_s = 1").replace("changelog = false", "changelog = true"))
    p = Pipeline(load(path), clock=lambda: WALL, producer_factory=lambda _conf: FakeProducer(),
                 consumer_factory=lambda _conf: FakeConsumer())
    changelog = FakeChangelog()
    p.changelog = changelog  # type: ignore[assignment]
    p._owned.add((TOPIC, owns))
    p._part((TOPIC, owns))
    return p, changelog


def _send_drained(p: Pipeline, item: Item) -> bool:
    """Admit a drained copy; if it was batched (not a duplicate), Meta acknowledges its batch. True: sent."""
    p._admit(item, WALL)
    batches = p.batcher.flush()
    for batch in batches:
        p._acked(batch)
    return bool(batches)


def _live(p: Pipeline, partition: int, offset: int, event_id: str) -> Item:
    part = p.tracker.get(TOPIC, partition) or p.tracker.assign(TOPIC, partition)
    part.received(offset)
    p._unfinished += 1
    return Item(TOPIC, partition, offset, b"k", b"value", 0, part, destination="b", body=b"{}",
                event_name="Purchase", event_id=event_id, event_time=int(WALL))


def test_a_drained_event_whose_source_partition_another_member_owns_is_sent_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Member 2 (owner of source partition 1) drains a parked event of source partition 0, which member 1
    owns. Its key is held by member 2 under partition 0 and written to partition 0's changelog: a second
    parked copy drained by member 2 later is a duplicate, and so is a live copy on partition 0 once its
    owner (member 1 after a rebalance, or any new owner) has restored that changelog partition."""
    m1, _ = _member(tmp_path, monkeypatch, "m1", owns=0)
    m2, changelog2 = _member(tmp_path, monkeypatch, "m2", owns=1)
    assert _send_drained(m2, _drained(m2, 3, (TOPIC, 0, 5), event_id="e1")), "the first copy is sent"
    assert not _send_drained(m2, _drained(m2, 4, (TOPIC, 0, 9), event_id="e1")), "a second parked copy is not"
    assert m2.stats.duplicates == 1
    assert m2.tracker.get(m2.parking_topics["b"], 0).commit_point == 5  # type: ignore[union-attr]
    written = [(tp, key, value) for tp, key, value in changelog2.records if tp == (TOPIC, 0)]
    assert len(written) == 1, "the key went to the changelog partition of its source partition"
    # member 1 (re)assigned partition 0 restores its changelog partition, then reads a live copy of e1
    restore = dedupelog.Restore(m1.dedupe, m1._part((TOPIC, 0)), WALL)
    restore.apply([(key, value) for _tp, key, value in written])
    assert restore.keys == 1
    m1._admit(_live(m1, 0, 20, "e1"), WALL)
    assert m1.stats.duplicates == 1
    assert list(m1.batcher.items()) == []


async def test_a_copy_of_an_event_already_sent_is_not_parked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The member that parks an event owns its source partition, and so its keys: a copy of an event
    already acknowledged is a duplicate there, never parked (a member that does not own that partition
    would drain and send it again); a new event is parked holding no key."""
    m1, _ = _member(tmp_path, monkeypatch, "m1", owns=0)
    parker = m1._parkers["b"]
    await parker.start()
    try:
        assert _send_drained(m1, _live(m1, 0, 1, "e1"))
        m1.parking["b"].mode = Mode.PARKED
        m1._admit(_live(m1, 0, 2, "e1"), WALL)
        assert m1.stats.duplicates == 1
        m1._admit(_live(m1, 0, 3, "e2"), WALL)
        await parker.flush(1.0)
        assert [m["headers"][HEADER_OFFSET] for m in m1._parkers["b"]._producer.produced] == [b"3"]  # type: ignore[union-attr]
        assert m1.dedupe.pending == 0, "a parked copy holds no key"
        assert m1.tracker.get(TOPIC, 0).commit_point == 4  # type: ignore[union-attr]
    finally:
        await parker.stop()


def test_a_revoke_of_a_parking_partition_waits_for_the_changelog_records_of_its_drained_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drained event finishes once its key is on the broker; until then a revoke of its parking
    partition holds (else its offset is left uncommitted and the next reader sends it again)."""
    m2, changelog = _member(tmp_path, monkeypatch, "m2", owns=1)
    parking = (m2.parking_topics["b"], 0)
    changelog.hold = True
    assert _send_drained(m2, _drained(m2, 3, (TOPIC, 0, 5), event_id="e1"))
    assert m2._revoke_holds({parking})
    assert not m2._revoke_holds({(TOPIC, 0)})
    changelog.held.pop()()
    assert not m2._revoke_holds({parking})
    assert m2.tracker.get(*parking).commit_point == 4  # type: ignore[union-attr]


async def test_one_failed_look_at_the_parking_topics_is_info_and_failures_in_a_row_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A look that fails once (a parking topic created a moment ago whose leader the broker is still
    electing: every fresh demo logged it as a warning) is info, the next look tries again; looks that keep
    failing are a warning, with how many in a row."""
    import asyncio

    from confluent_kafka import KafkaError, KafkaException
    from structlog.testing import capture_logs

    from stream.pipeline import runner

    monkeypatch.setattr(runner, "PARKING_LOOK_S", 0.0)
    p = _watched(tmp_path, monkeypatch, FakeWatchConsumer({}, {}, {}))
    assert p.parking_watch is not None
    script = ["fail", "ok", "fail", "fail", "fail", "ok"]
    done = asyncio.Event()

    def look() -> dict[str, TopicView]:
        if not script:
            done.set()
            return {}
        if script.pop(0) == "fail":
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, "Not leader for partition"))
        return {}

    monkeypatch.setattr(p.parking_watch, "look", look)
    with capture_logs() as logged:
        task = asyncio.create_task(p._watch_parking())
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
    got = [(e["log_level"], e["failures"]) for e in logged if e["event"] == "parking_look_failed"]
    assert got == [("info", 1), ("info", 1), ("warning", 2), ("warning", 3)]
