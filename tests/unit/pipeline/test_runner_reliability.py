"""The runner's bookkeeping on the failure paths of issue #12: revokes under load, lost partitions, a
partition that cannot commit, the shutdown deadline, the linger clock and dead letters in a revoke.

The pipeline is built from a real config; its source, dead-letter writer and senders are replaced by
small fakes that record what the runner asks of them, and batches are acknowledged through the same
callback a sender calls. Nothing here opens a socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from stream.config import Settings, load
from stream.pipeline.batch import Batch
from stream.pipeline.deadletters import DeadLetter
from stream.pipeline.items import Item
from stream.pipeline.prepare import Kind, Prepared
from stream.pipeline.runner import Pipeline
from stream.pipeline.sender import DestinationState
from tests.support.fakes import fakes_config

TP = tuple[str, int]
TOPIC = "t"
P0: TP = (TOPIC, 0)
P1: TP = (TOPIC, 1)
WALL = 1_800_000_000.0
# bounds on waits for something that must happen; a correct runner needs a few milliseconds
SOON_S = 3.0


class FakeSource:
    """What the runner asks of the source: stored offsets and the pause wishes."""

    def __init__(self, handler: Pipeline) -> None:
        self.handler = handler
        self.want_paused = False
        self.want_paused_partitions: frozenset[TP] = frozenset()
        self.stored: dict[TP, int] = {}
        self.assignment: set[TP] = set()
        self.final: dict[TP, int] | None = None
        self.final_commit_ok: bool | None = None
        self.revoked_at_close: dict[TP, int] = {}

    def store(self, offsets: dict[TP, int]) -> None:
        self.stored.update(offsets)

    def taken(self, count: int) -> None:
        pass

    async def stop(self, final: dict[TP, int] | None = None, deadline: float | None = None) -> None:
        """Like consumer.close(): the revoke callback runs for the whole assignment."""
        self.final = dict(final or {})
        self.revoked_at_close = await self.handler.on_revoked(sorted(self.assignment))
        self.final_commit_ok = True


class FakeSender:
    """A destination that holds what it is given until the test sends or acknowledges it."""

    def __init__(self) -> None:
        self.queue: list[Batch] = []
        self.inflight: list[Batch] = []
        self.state = DestinationState.FLOWING
        self.idle = asyncio.Event()
        self.idle.set()

    def submit(self, batch: Batch, front: bool = False) -> None:
        self.queue.append(batch)
        self.idle.clear()

    def has_free_slot(self) -> bool:
        return self.state is DestinationState.FLOWING and not self.queue

    def send_all(self) -> list[Batch]:
        """Move every queued batch in flight (as the sender's dispatch loop does)."""
        self.inflight.extend(self.queue)
        self.queue.clear()
        return list(self.inflight)

    def done(self, batch: Batch) -> None:
        self.inflight.remove(batch)
        if not self.queue and not self.inflight:
            self.idle.set()

    def take_partitions(self, tps: set[TP]) -> list[Item]:
        removed = [i for b in self.queue for i in b.items if i.tp in tps]
        for b in self.queue:
            b.items = [i for i in b.items if i.tp not in tps]
        self.queue = [b for b in self.queue if b.items]
        return removed

    def inflight_holds(self, tps: set[TP]) -> bool:
        return any(i.tp in tps for b in self.inflight for i in b.items)

    def holds(self, tps: set[TP]) -> bool:
        return any(i.tp in tps for b in (*self.queue, *self.inflight) for i in b.items)

    def items(self) -> list[Item]:
        return [i for b in (*self.queue, *self.inflight) for i in b.items]

    @property
    def queued_events(self) -> int:
        return sum(len(b.items) for b in self.queue)

    @property
    def inflight_events(self) -> int:
        return sum(len(b.items) for b in self.inflight)

    async def wait_idle(self) -> None:
        await self.idle.wait()

    async def stop(self) -> None:
        pass


class FakeDeadLetters:
    """Letters the broker has not acknowledged yet, delivered when the test says so."""

    def __init__(self) -> None:
        self.waiting: list[tuple[DeadLetter, Callable[[], None]]] = []
        self.delivered: list[DeadLetter] = []

    @property
    def pending(self) -> int:
        return len(self.waiting)

    def write(self, letter: DeadLetter, on_done: Callable[[], None]) -> None:
        self.waiting.append((letter, on_done))

    def deliver_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for letter, on_done in waiting:
            self.delivered.append(letter)
            on_done()

    async def flush(self, timeout: float) -> int:  # noqa: ASYNC109 - the writer's own signature
        return self.pending

    async def stop(self) -> None:
        pass


def settings(tmp_path: Path, pipeline: str = "", batch: str = "max_events = 1000\nlinger_ms = 200") -> Settings:
    """Two destinations (app.a -> a, app.b -> b), one source topic, the given [pipeline] and [batch], the
    dedupe window in memory only."""
    path = tmp_path / "capi.toml"
    path.write_text(fakes_config(TOPIC, pipeline=pipeline, batch=batch))
    return load(path, env={})


class Rig:
    """A pipeline with fakes around it, and helpers that feed it consumed messages."""

    def __init__(self, st: Settings, clock: Callable[[], float] = lambda: WALL, **kwargs: Any) -> None:
        self.p = Pipeline(st, clock=clock, **kwargs)
        self.source = FakeSource(self.p)
        self.dlq = FakeDeadLetters()
        self.senders = {name: FakeSender() for name in self.p.senders}
        self.p.source = self.source  # type: ignore[assignment]
        self.p.dlq = self.dlq  # type: ignore[assignment]
        self.p.senders = self.senders  # type: ignore[assignment]

    async def assign(self, *tps: TP, generation: int = 1) -> None:
        self.source.assignment.update(tps)
        await self.p.on_assigned(list(tps), generation)

    def consume(self, tp: TP, offsets: Iterable[int], kind: Kind = Kind.SEND, destination: str = "a",
                event_id: Callable[[int], str] = lambda o: f"e{o}", generation: int = 1) -> None:
        """Hand consumed messages to the runner as the apply stage does after preparing them."""
        messages, prepared = [], []
        for offset in offsets:
            messages.append(Message(topic=tp[0], partition=tp[1], offset=offset, key=b"k", value=b"v"))
            if kind is Kind.SEND:
                prepared.append(Prepared(Kind.SEND, destination, b'{"e":1}', "Purchase", event_id(offset),
                                         int(WALL) - 60))
            elif kind is Kind.NO_CONSENT:
                prepared.append(Prepared(Kind.NO_CONSENT, destination, reason="no_consent"))
            else:
                prepared.append(Prepared(Kind.DEAD, destination, reason="bad", detail="bad"))
        self.p._handle(messages, generation, prepared)
        self.p._after_change()

    def flush(self) -> None:
        """Close the open batches into their senders (as the linger timer does)."""
        for batch in self.p.batcher.flush():
            self.senders[batch.destination].submit(batch)

    def ack(self, batch: Batch) -> None:
        """Meta acknowledged `batch`: the sender calls the runner back, then lets it go."""
        self.p._acked(batch)
        self.senders[batch.destination].done(batch)

    def true_unfinished(self) -> int:
        """What the in-flight gauge must say: unfinished offsets of the partitions still assigned."""
        return sum(part.unfinished for part in self.p.tracker.partitions())


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for `condition`; fail saying `what` did not happen."""
    deadline = time.monotonic() + SOON_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {SOON_S}s"
        await asyncio.sleep(0.005)


# -- defect 2: the in-flight count across a revoke under load ---------------------------------------

async def test_messages_applied_during_a_revoke_neither_count_in_flight_nor_get_sent(tmp_path: Path) -> None:
    """A revoke waiting for an in-flight batch leaves the gauge at 0 and sends nothing consumed before it."""
    rig = Rig(settings(tmp_path, pipeline="max_in_flight_events = 10"))
    await rig.assign(P0)
    rig.consume(P0, range(5))
    rig.flush()
    (batch,) = rig.senders["a"].send_all()
    revoke = asyncio.create_task(rig.p.on_revoked([P0]))
    await until(lambda: rig.p.unfinished == 0, "the revoke taking the partition's events out of the count")
    # the apply stage still holds messages of P0 consumed before the revoke (generation 1)
    rig.consume(P0, range(5, 11))
    assert rig.p.batcher.items() == [], "a message of a revoked partition was batched"
    rig.ack(batch)
    stored = await asyncio.wait_for(revoke, SOON_S)
    assert stored == {P0: 5}
    assert rig.p.unfinished == 0
    assert not rig.source.want_paused, "a leaked in-flight count keeps the source paused"
    assert all(not s.queue and not s.inflight for s in rig.senders.values())


async def test_in_flight_count_stays_true_through_repeated_revokes_under_load(tmp_path: Path) -> None:
    """Ten revoke/assign rounds with messages applied mid-revoke: the count equals the trackers' truth."""
    rig = Rig(settings(tmp_path, pipeline="max_in_flight_events = 10"))
    offset = 0
    for generation in range(1, 21, 2):
        await rig.assign(P0, P1, generation=generation)
        rig.consume(P0, range(offset, offset + 3), generation=generation)
        rig.consume(P1, range(offset, offset + 3), generation=generation)
        rig.flush()
        batches = rig.senders["a"].send_all()
        revoke = asyncio.create_task(rig.p.on_revoked([P0]))
        await until(lambda: not rig.p.tracker.get(*P0) or not rig.p.tracker.get(*P0).active, "the revoke")  # type: ignore[union-attr]
        rig.consume(P0, range(offset + 3, offset + 6), generation=generation)
        for batch in batches:
            rig.ack(batch)
        await asyncio.wait_for(revoke, SOON_S)
        assert rig.p.unfinished == rig.true_unfinished() == 0
        await rig.p.on_revoked([P1])
        offset += 6
    assert rig.p.unfinished == 0
    assert not rig.source.want_paused


async def test_a_revoke_sends_what_is_batched_for_the_partition_instead_of_giving_it_up(tmp_path: Path) -> None:
    """Events batched or queued for a revoked partition are sent and committed, not re-read and resent."""
    rig = Rig(settings(tmp_path))
    await rig.assign(P0, P1)
    rig.consume(P0, range(3), destination="a")
    rig.flush()  # queued in a's sender, not in flight yet
    rig.consume(P0, range(3, 5), destination="b")  # still in b's open batch
    rig.consume(P1, range(2), destination="b")
    revoke = asyncio.create_task(rig.p.on_revoked([P0]))
    await until(lambda: bool(rig.senders["b"].queue), "b's open batch being closed and sent")
    assert not revoke.done()
    for sender in rig.senders.values():
        for batch in sender.send_all():
            rig.ack(batch)
    assert await asyncio.wait_for(revoke, SOON_S) == {P0: 5}
    assert rig.p.unfinished == 0 == rig.true_unfinished()


async def test_a_revoke_gives_up_what_a_halted_destination_holds(tmp_path: Path) -> None:
    """A halted destination cannot send: its share of the revoked partition is given up at once."""
    rig = Rig(settings(tmp_path, pipeline="revoke_timeout_s = 30.0"))
    await rig.assign(P0)
    rig.consume(P0, range(2), destination="a")
    rig.flush()
    rig.senders["a"].state = DestinationState.HALTED
    assert await asyncio.wait_for(rig.p.on_revoked([P0]), SOON_S) == {}
    assert rig.senders["a"].queue == []
    assert rig.p.dedupe.pending == 0


# -- defect 3: a lost partition's held twins --------------------------------------------------------

async def test_losing_a_partition_does_not_readmit_its_held_twins(tmp_path: Path) -> None:
    """on_lost releases the pending key without sending the lost partition's waiting twin."""
    rig = Rig(settings(tmp_path))
    await rig.assign(P0, P1)
    rig.consume(P0, [0], event_id=lambda _o: "1001")
    rig.consume(P0, [1], event_id=lambda _o: "1001")  # its twin waits for the first one's ack
    assert len(rig.p.batcher.items()) == 1
    await rig.p.on_lost([P0])
    assert rig.p.batcher.items() == [], "the lost partition's twin was admitted again"
    assert all(not s.items() for s in rig.senders.values())
    assert rig.p.dedupe.pending == 0
    assert rig.p.unfinished == 0


async def test_a_lost_partition_leaves_twins_of_other_partitions_to_be_sent(tmp_path: Path) -> None:
    """A twin waiting on another (still assigned) partition takes the lost event's place."""
    rig = Rig(settings(tmp_path))
    await rig.assign(P0, P1)
    rig.consume(P0, [0], event_id=lambda _o: "1001")
    rig.consume(P1, [0], event_id=lambda _o: "1001")
    await rig.p.on_lost([P0])
    assert [i.tp for i in rig.p.batcher.items()] == [P1]
    assert rig.p.unfinished == 1 == rig.true_unfinished()


# -- defect 4: what the process holds per partition ---------------------------------------------------

async def test_a_partition_holding_its_bound_pauses_alone_and_resumes_once_it_commits(tmp_path: Path) -> None:
    """Finished offsets behind one unfinished offset count against the per-partition bound."""
    rig = Rig(settings(tmp_path, pipeline="max_in_flight_events = 1000\nmax_held_per_partition = 10"))
    await rig.assign(P0, P1)
    rig.consume(P0, [0])  # stays unfinished: its batch is retried for as long as Meta answers 500
    rig.consume(P0, range(1, 12), kind=Kind.NO_CONSENT)  # finished at once, but behind offset 0
    rig.consume(P1, range(12), kind=Kind.NO_CONSENT)
    assert rig.p.unfinished == 1
    assert rig.source.want_paused_partitions == {P0}
    assert not rig.source.want_paused, "the other partitions keep flowing"
    rig.flush()
    (batch,) = rig.senders["a"].send_all()
    rig.ack(batch)
    assert rig.source.want_paused_partitions == frozenset()
    assert rig.source.stored[P0] == 12


async def test_held_offsets_are_reported_per_partition(tmp_path: Path) -> None:
    """The largest number of offsets one partition holds is what the memory bound applies to."""
    rig = Rig(settings(tmp_path, pipeline="max_held_per_partition = 100"))
    await rig.assign(P0, P1)
    rig.consume(P0, [0])
    rig.consume(P0, range(1, 7), kind=Kind.NO_CONSENT)
    rig.consume(P1, range(3), kind=Kind.NO_CONSENT)
    assert rig.p.max_held_offsets == 7


# -- defect 7: one shutdown deadline ------------------------------------------------------------------

async def test_the_revoke_at_close_waits_no_longer_than_the_shutdown_deadline(tmp_path: Path) -> None:
    """A batch that never comes back cannot stretch the drain past shutdown_deadline_s (revoke_timeout_s is 30)."""
    rig = Rig(settings(tmp_path, pipeline="revoke_timeout_s = 30.0\nshutdown_deadline_s = 1.0"))
    await rig.assign(P0)
    rig.consume(P0, range(3))
    rig.flush()
    rig.senders["a"].send_all()  # in flight, never answered
    started = time.monotonic()
    await asyncio.wait_for(rig.p.drain(), 1.0 + SOON_S)
    assert time.monotonic() - started <= 1.0 + 0.5
    assert rig.source.revoked_at_close == {}, "nothing unfinished may be committed"


# -- defect 8: the linger clock, commit points and dead letters in a revoke ----------------------------

async def test_linger_runs_on_the_monotonic_clock_when_the_wall_clock_steps_back(tmp_path: Path) -> None:
    """An open batch is sent after linger_ms of monotonic time even if the wall clock jumps an hour back."""
    wall = [WALL]
    mono = [100.0]
    rig = Rig(settings(tmp_path), clock=lambda: wall[0], monotonic=lambda: mono[0])
    await rig.assign(P0)
    rig.consume(P0, [0])
    wall[0] -= 3600
    mono[0] += 0.25
    tick = asyncio.create_task(rig.p._tick())
    try:
        await until(lambda: bool(rig.senders["a"].queue), "the lingered batch being sent")
    finally:
        tick.cancel()


async def test_revoking_a_partition_does_not_wait_for_another_partitions_dead_letter(tmp_path: Path) -> None:
    """A letter of P0 the broker has not acknowledged yet does not hold a revoke of P1."""
    rig = Rig(settings(tmp_path, pipeline="revoke_timeout_s = 30.0"))
    await rig.assign(P0, P1)
    rig.consume(P0, [0], kind=Kind.DEAD)
    rig.consume(P1, [0], kind=Kind.NO_CONSENT)
    assert rig.dlq.pending == 1
    stored = await asyncio.wait_for(rig.p.on_revoked([P1]), SOON_S)
    assert stored == {P1: 1}


async def test_revoking_a_partition_waits_for_its_own_dead_letter(tmp_path: Path) -> None:
    """A letter of the revoked partition is waited for, so its offset is committed past it."""
    rig = Rig(settings(tmp_path, pipeline="revoke_timeout_s = 30.0"))
    await rig.assign(P0)
    rig.consume(P0, [0], kind=Kind.DEAD)
    revoke = asyncio.create_task(rig.p.on_revoked([P0]))
    await asyncio.sleep(0.05)
    assert not revoke.done()
    rig.dlq.deliver_all()
    assert await asyncio.wait_for(revoke, SOON_S) == {P0: 1}


def test_the_schemas_handed_to_a_worker_never_change_afterwards(tmp_path: Path) -> None:
    """Worker mode pickles the writer schemas on another thread: a later lookup must not mutate them."""
    rig = Rig(settings(tmp_path, pipeline="workers = 1"))
    handed = rig.p.worker_schemas()
    rig.p.add_writer_schema(7, {"type": "record", "name": "x", "fields": []})
    assert 7 not in handed
    assert 7 in rig.p.worker_schemas()


@pytest.fixture(autouse=True)
def _tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOK_A", "token-a")
    monkeypatch.setenv("TOK_B", "token-b")
