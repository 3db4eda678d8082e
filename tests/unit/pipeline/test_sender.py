"""DestinationSender against a fake Meta (the `Poster` Protocol): acks, retries, throttling, halts, splits."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from stream.config import Destination, SendSettings
from stream.pipeline.batch import Batch
from stream.pipeline.items import Item
from stream.pipeline.meta_client import Action, Answer, classify
from stream.pipeline.offsets import PartitionOffsets
from stream.pipeline.sender import FAILING_AFTER, DestinationSender, DestinationState, backoff_delay
from stream.pipeline.stats import Stats

TOKEN = "tok-first-0123456789"  # noqa: S105 - a test value
# every wait in these tests is bounded: a sender that never finishes fails the test, it does not hang it
BOUND_S = 10.0

ACK = Answer(Action.ACKED, 200, events_received=1)
REFUSED = Answer(Action.REJECTED, 400, 100, 2804019, title="Invalid parameter")
TOKEN_EXPIRED = Answer(Action.HALT, 400, 190, 463)


def transient() -> Answer:
    return Answer(Action.RETRY, 500, retry_class="transient")


def throttled(hint: float | None) -> Answer:
    return Answer(Action.RETRY, 400, 80004, retry_class="throttle", retry_after=hint)


class FakeMeta:
    """A Poster whose answer to each request is decided by `answer(event_ids, token)`; it records every request."""

    def __init__(self, answer: Callable[[list[str], str], Answer]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, list[str], str]] = []  # url, event ids, token
        self.posted = asyncio.Event()

    async def post(self, url: str, body: bytes, events: int) -> Answer:
        doc = orjson.loads(body)
        ids = [e["event_id"] for e in doc["data"]]
        self.requests.append((url, ids, doc["access_token"]))
        self.posted.set()
        await asyncio.sleep(0)
        return self.answer(ids, doc["access_token"])


class Scripted:
    """Answers in order from a list, then acks everything."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)

    def __call__(self, _ids: list[str], _token: str) -> Answer:
        return self.answers.pop(0) if self.answers else ACK


class Outcomes:
    """What the sender called back: acked batches and refused items."""

    def __init__(self) -> None:
        self.acked: list[Batch] = []
        self.rejected: list[tuple[Item, Answer]] = []

    def on_acked(self, batch: Batch) -> None:
        self.acked.append(batch)

    def on_rejected(self, item: Item, answer: Answer) -> None:
        self.rejected.append((item, answer))

    def acked_ids(self) -> Counter[str]:
        return Counter(i.event_id for b in self.acked for i in b.items if i.event_id)


class Sleeps:
    """The sender's backoff sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def make_batch(n: int, partition: int = 0, prefix: str = "e") -> Batch:
    offsets = PartitionOffsets("t", partition)
    items = []
    for k in range(n):
        event_id = f"{prefix}{k}"
        body = orjson.dumps({"event_name": "Purchase", "event_id": event_id})
        items.append(
            Item(
                "t",
                partition,
                k,
                None,
                b"v",
                0,
                offsets,
                destination="shop",
                body=body,
                event_name="Purchase",
                event_id=event_id,
            )
        )
    return Batch("shop", items, 12 + sum(len(i.body) + 1 for i in items), 0.0)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


SenderFactory = Callable[..., tuple[DestinationSender, Outcomes, Sleeps, Stats]]


@pytest.fixture
def sender_factory(token_file: Path) -> SenderFactory:
    """A sender of one destination over a fake Meta, with no rate limit and a recording sleep."""

    def make(
        meta: FakeMeta,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        settings: SendSettings | None = None,
    ) -> tuple[DestinationSender, Outcomes, Sleeps, Stats]:
        dest = Destination(
            "shop", "111", ("com.example.shop",), base_url="http://meta.invalid", token_file=str(token_file)
        )
        settings = settings or SendSettings(
            concurrency=1, rate_limit_rps=0, backoff_initial_s=0.2, backoff_max_s=30.0, token_check_interval_s=3600
        )
        outcomes, sleeps, stats = Outcomes(), Sleeps(), Stats()
        sender = DestinationSender(
            dest, meta, settings, stats, outcomes.on_acked, outcomes.on_rejected, seed=1, sleep=sleep or sleeps
        )
        return sender, outcomes, sleeps, stats

    return make


def state_watching(
    sender_factory: SenderFactory, meta: FakeMeta, hold: asyncio.Event | None = None
) -> tuple[DestinationSender, Outcomes, list[DestinationState]]:
    """A sender whose backoff sleep records its state (the state right after each answer that made it wait),
    then returns at once, or once `hold` is set."""
    seen: list[DestinationState] = []

    async def watching_sleep(_delay: float) -> None:
        seen.append(sender.state)
        if hold is None:
            await asyncio.sleep(0)
        else:
            await hold.wait()

    sender, outcomes, _sleeps, _stats = sender_factory(meta, sleep=watching_sleep)
    return sender, outcomes, seen


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition` holds."""
    async with asyncio.timeout(BOUND_S):
        while not condition():  # noqa: ASYNC110 - polls state the sender's tasks change
            await asyncio.sleep(0.001)


async def idle(sender: DestinationSender) -> None:
    async with asyncio.timeout(BOUND_S):
        await sender.wait_idle()


async def states_through_one_batch(
    sender_factory: SenderFactory, meta: FakeMeta
) -> tuple[DestinationSender, Outcomes, list[DestinationState]]:
    """One batch through a state-watching sender until it is idle and stopped."""
    sender, outcomes, seen = state_watching(sender_factory, meta)
    await sender.start()
    sender.submit(make_batch(1))
    await idle(sender)
    await sender.stop()
    return sender, outcomes, seen


class TestAck:
    """A batch Meta acknowledges is reported once, with every item, and nothing else happens."""

    async def test_an_acked_batch_is_reported_once(self, sender_factory: SenderFactory) -> None:
        """One request, one on_acked with the same batch, the token in the body, the events URL."""
        meta = FakeMeta(Scripted())
        sender, outcomes, sleeps, stats = sender_factory(meta)
        await sender.start()
        batch = make_batch(3)
        sender.submit(batch)
        await idle(sender)
        await sender.stop()
        assert outcomes.acked == [batch]
        assert outcomes.rejected == []
        assert meta.requests == [("http://meta.invalid/v26.0/111/events", ["e0", "e1", "e2"], TOKEN)]
        assert sleeps.delays == []
        assert (stats.batches_sent, stats.events_sent) == (1, 3)
        assert sender.inflight_events == sender.queued_events == 0


class TestRetry:
    """Transient trouble is retried with growing backoff until Meta acknowledges; nothing is dropped."""

    async def test_transient_answers_are_retried_until_acked(self, sender_factory: SenderFactory) -> None:
        """Three 500s then an ack: four requests of the same events, one ack, no rejection."""
        meta = FakeMeta(Scripted(transient(), transient(), transient()))
        sender, outcomes, sleeps, stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(2))
        await idle(sender)
        await sender.stop()
        assert [ids for _, ids, _ in meta.requests] == [["e0", "e1"]] * 4
        assert outcomes.acked_ids() == Counter({"e0": 1, "e1": 1})
        assert outcomes.rejected == []
        assert stats.retries["transient"] == 3
        assert len(sleeps.delays) == 3

    async def test_backoff_grows_between_retries(self, sender_factory: SenderFactory) -> None:
        """Each wait lies in [d/2, d] for d = initial * 2**attempt, so the waits grow."""
        meta = FakeMeta(Scripted(*(transient() for _ in range(5))))
        sender, _outcomes, sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(1))
        await idle(sender)
        await sender.stop()
        assert len(sleeps.delays) == 5
        for attempt, delay in enumerate(sleeps.delays):
            full = 0.2 * 2**attempt
            assert full / 2 <= delay <= full, (attempt, delay)

    async def test_a_never_ending_outage_is_retried_not_dropped(self, sender_factory: SenderFactory) -> None:
        """Under a persistent 500 the batch stays in flight: neither acked nor dead-lettered."""
        meta = FakeMeta(lambda _ids, _token: transient())
        sender, outcomes, sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(2))
        await until(lambda: len(sleeps.delays) >= 20)
        assert (outcomes.acked, outcomes.rejected) == ([], [])
        assert sender.inflight_events == 2
        await sender.stop()


class TestNotAnAck:
    """A 2xx is an ack only when Meta says it received every event of the request."""

    async def test_a_short_events_received_is_retried_not_acked(self, sender_factory: SenderFactory) -> None:
        """200 {"events_received": 2} for 3 events, then a full count: one ack, after a retry."""
        bodies = iter([b'{"events_received": 2}', b'{"events_received": 3}'])
        meta = FakeMeta(lambda ids, _token: classify(200, next(bodies), {}, len(ids)))
        sender, outcomes, sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(3))
        await idle(sender)
        await sender.stop()
        assert len(meta.requests) == 2
        assert len(sleeps.delays) == 1
        assert outcomes.acked_ids() == Counter({"e0": 1, "e1": 1, "e2": 1})
        assert outcomes.rejected == []


class TestThrottle:
    """Throttling marks the destination throttled and waits at least as long as Meta's hint."""

    async def test_the_hint_is_a_floor_for_the_wait(self, sender_factory: SenderFactory) -> None:
        """A throttle answer with a 42 s hint waits >= 42 s (backoff alone would be < 0.2 s)."""
        meta = FakeMeta(Scripted(throttled(42.0)))
        sender, outcomes, sleeps, stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(1))
        await idle(sender)
        await sender.stop()
        assert sleeps.delays == [pytest.approx(42.0)]
        assert stats.retries["throttle"] == 1
        assert len(outcomes.acked) == 1

    async def test_throttled_state_shows_while_waiting_and_clears_on_ack(self, sender_factory: SenderFactory) -> None:
        """While the throttle wait runs the state is THROTTLED; the next ack makes it FLOWING again."""
        release = asyncio.Event()
        meta = FakeMeta(Scripted(throttled(None)))
        sender, outcomes, seen = state_watching(sender_factory, meta, hold=release)
        await sender.start()
        sender.submit(make_batch(1))
        await until(lambda: bool(seen))
        assert seen == [DestinationState.THROTTLED]
        release.set()
        await idle(sender)
        await sender.stop()
        assert sender.state is DestinationState.FLOWING
        assert len(outcomes.acked) == 1

    async def test_a_throttle_without_a_hint_backs_off_longer_than_a_server_error(
        self, sender_factory: SenderFactory
    ) -> None:
        """With the default settings a 5xx is first retried within 0.1 s (Meta's transient errors pass
        quickly, and each retried event carries the wait in its latency), a throttle answer without a hint
        only after >= 0.5 s (send.throttle_backoff_initial_s 1 s, jittered): hammering a rate limit
        prolongs it. Both grow from there."""
        defaults = SendSettings(concurrency=1, rate_limit_rps=0, token_check_interval_s=3600)
        for answers, low, high in (((transient(), transient()), 0.05, 0.1),
                                   ((throttled(None), throttled(None)), 0.5, 1.0)):
            meta = FakeMeta(Scripted(*answers))
            sender, outcomes, sleeps, _stats = sender_factory(meta, settings=defaults)
            await sender.start()
            sender.submit(make_batch(1))
            await idle(sender)
            await sender.stop()
            assert len(outcomes.acked) == 1
            first, second = sleeps.delays
            assert low <= first <= high, (answers[0].retry_class, sleeps.delays)
            assert 2 * low <= second <= 2 * high, (answers[0].retry_class, sleeps.delays)

    @pytest.mark.parametrize(
        ("attempt", "hint", "low", "high"),
        [(0, None, 0.1, 0.2), (3, None, 0.8, 1.6), (20, None, 15.0, 30.0), (0, 90.0, 90.0, 90.0), (3, 1.0, 0.8, 1.6)],
    )
    def test_backoff_delay_table(self, attempt: int, hint: float | None, low: float, high: float) -> None:
        """backoff_delay: full jitter in [d/2, d], d capped at the maximum, a hint as a floor."""
        delays = [backoff_delay(attempt, 0.2, 30.0, hint, random.Random(seed)) for seed in range(200)]
        assert all(low <= delay <= high for delay in delays)
        if hint is None:  # the jitter really spans [d/2, d]: some waits near each end
            assert min(delays) <= low + (high - low) * 0.05
            assert max(delays) >= high - (high - low) * 0.05


class TestHaltAndResume:
    """A token error halts the destination (nothing sent, nothing dropped) until the token changes."""

    async def test_token_error_halts_and_a_new_token_resumes(
        self, sender_factory: SenderFactory, token_file: Path
    ) -> None:
        """After 190/463 no request is made; a new token file + reload resumes and the held batches land once."""
        new_token = "tok-second-9876543210"  # noqa: S105 - a test value
        meta = FakeMeta(lambda _ids, token: TOKEN_EXPIRED if token == TOKEN else ACK)
        sender, outcomes, sleeps, stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(2, prefix="a"))
        await until(lambda: sender.state is DestinationState.HALTED)
        assert sender.halt_reason == "190/463"
        assert stats.halts == 1
        sender.submit(make_batch(2, prefix="b"))
        # a tick of the loop: a halted sender must not post the new batch
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(meta.requests) == 1
        assert sender.queued_events == 4
        assert outcomes.acked == []
        assert sender.reload_token() is False  # same token: stays halted
        assert sender.state is DestinationState.HALTED
        token_file.write_text(new_token + "\n")  # noqa: ASYNC240 - a tiny test file
        assert sender.reload_token() is True
        assert sender.state is DestinationState.FLOWING
        await idle(sender)
        await sender.stop()
        assert outcomes.acked_ids() == Counter({"a0": 1, "a1": 1, "b0": 1, "b1": 1})
        assert [token for _, _, token in meta.requests[1:]] == [new_token, new_token]
        assert outcomes.rejected == []
        assert sleeps.delays == []

    async def test_an_unreadable_token_keeps_the_old_one(self, sender_factory: SenderFactory, token_file: Path) -> None:
        """A token file that vanished does not resume a halted destination nor replace the token."""
        meta = FakeMeta(lambda _ids, _token: TOKEN_EXPIRED)
        sender, _outcomes, _sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(1))
        await until(lambda: sender.state is DestinationState.HALTED)
        token_file.unlink()  # noqa: ASYNC240 - a tiny test file
        assert sender.reload_token() is False
        assert sender.state is DestinationState.HALTED
        await sender.stop()


class TestSplit:
    """Meta refuses a whole request for one bad event: the sender splits until the bad event is alone."""

    @staticmethod
    def refuse(bad: set[str]) -> Callable[[list[str], str], Answer]:
        return lambda ids, _token: REFUSED if bad & set(ids) else ACK

    async def test_one_bad_event_in_a_thousand(self, sender_factory: SenderFactory) -> None:
        """One refused event of 1,000: one rejection (that event), 999 acks once each, about log2(1000) splits."""
        meta = FakeMeta(self.refuse({"e617"}))
        sender, outcomes, _sleeps, stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(1000))
        await idle(sender)
        await sender.stop()
        assert [(item.event_id, answer) for item, answer in outcomes.rejected] == [("e617", REFUSED)]
        acked = outcomes.acked_ids()
        assert set(acked.values()) == {1}
        assert set(acked) == {f"e{k}" for k in range(1000)} - {"e617"}
        assert math.floor(math.log2(1000)) <= stats.splits <= math.ceil(math.log2(1000))
        # each split sends its two halves once: the first request plus two per split
        assert len(meta.requests) == 1 + 2 * stats.splits

    async def test_two_bad_events_are_each_rejected_alone(self, sender_factory: SenderFactory) -> None:
        """Two refused events in different halves: two rejections, every other event acked once."""
        meta = FakeMeta(self.refuse({"e3", "e60"}))
        sender, outcomes, _sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(64))
        await idle(sender)
        await sender.stop()
        assert sorted(item.event_id or "" for item, _ in outcomes.rejected) == ["e3", "e60"]
        assert outcomes.acked_ids() == Counter({f"e{k}": 1 for k in range(64) if k not in (3, 60)})

    async def test_split_halves_go_before_batches_queued_later(self, sender_factory: SenderFactory) -> None:
        """The halves of a refused batch are sent before a batch queued after it (they are older events)."""
        meta = FakeMeta(self.refuse({"a1"}))
        sender, outcomes, _sleeps, _stats = sender_factory(meta)
        sender.submit(make_batch(4, prefix="a"))
        sender.submit(make_batch(2, prefix="b"))
        await sender.start()
        await idle(sender)
        await sender.stop()
        order = [ids for _, ids, _ in meta.requests]
        assert order[0] == ["a0", "a1", "a2", "a3"]
        assert order[-1] == ["b0", "b1"]
        assert [item.event_id for item, _ in outcomes.rejected] == ["a1"]

    async def test_a_single_refused_event_is_rejected_without_a_split(self, sender_factory: SenderFactory) -> None:
        """A one-event batch Meta refuses is rejected as it is: no split, one request."""
        meta = FakeMeta(self.refuse({"e0"}))
        sender, outcomes, _sleeps, stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(1))
        await idle(sender)
        await sender.stop()
        assert [item.event_id for item, _ in outcomes.rejected] == ["e0"]
        assert (stats.splits, len(meta.requests)) == (0, 1)


class TestRevoke:
    """take_partitions gives back the queued items of revoked partitions and keeps the rest."""

    async def test_queued_items_of_revoked_partitions_come_back(self, sender_factory: SenderFactory) -> None:
        """While the destination is halted, a revoke takes partition 1's queued items and leaves partition 0's."""
        meta = FakeMeta(lambda _ids, _token: TOKEN_EXPIRED)
        sender, _outcomes, _sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(2, partition=0, prefix="p0-"))
        await until(lambda: sender.state is DestinationState.HALTED)
        sender.submit(make_batch(3, partition=1, prefix="p1-"))
        taken = sender.take_partitions({("t", 1)})
        assert [i.event_id for i in taken] == ["p1-0", "p1-1", "p1-2"]
        assert sorted(i.event_id or "" for i in sender.items()) == ["p0-0", "p0-1"]
        assert not sender.inflight_holds({("t", 1)})
        await sender.stop()


    async def test_a_mixed_batch_keeps_the_other_partitions_items_and_their_size(
        self, sender_factory: SenderFactory, token_file: Path
    ) -> None:
        """A queued batch with items of two partitions keeps partition 0's items (with their size and
        attempts) when partition 1 is revoked; after the resume exactly those are sent and acked."""
        new_token = "tok-third-5555555555"  # noqa: S105 - a test value
        meta = FakeMeta(lambda _ids, token: TOKEN_EXPIRED if token == TOKEN else ACK)
        sender, outcomes, _sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(1, partition=0, prefix="first-"))
        await until(lambda: sender.state is DestinationState.HALTED)
        a, b = make_batch(2, partition=0, prefix="p0-"), make_batch(2, partition=1, prefix="p1-")
        mixed = Batch("shop", [a.items[0], b.items[0], a.items[1], b.items[1]], 0, 5.0, attempts=3)
        sender.submit(mixed)
        taken = sender.take_partitions({("t", 1)})
        assert [i.event_id for i in taken] == ["p1-0", "p1-1"]
        assert sender.queued_events == 3
        token_file.write_text(new_token + "\n")  # noqa: ASYNC240 - a tiny test file
        assert sender.reload_token() is True
        await idle(sender)
        await sender.stop()
        kept = next(batch for batch in outcomes.acked if batch.items[0].event_id == "p0-0")
        assert [i.event_id for i in kept.items] == ["p0-0", "p0-1"]
        assert (kept.destination, kept.opened_at, kept.attempts) == ("shop", 5.0, 3)
        assert kept.nbytes == 12 + sum(len(i.body) + 1 for i in kept.items)
        assert [ids for _, ids, _ in meta.requests][-1] == ["p0-0", "p0-1"]

    async def test_inflight_holds_names_only_the_partitions_in_flight(self, sender_factory: SenderFactory) -> None:
        """While a request for partition 0 is unanswered, partition 0 is held in flight and partition 1 is not."""
        release = asyncio.Event()

        class HeldMeta(FakeMeta):
            async def post(self, url: str, body: bytes, events: int) -> Answer:
                await release.wait()
                return await super().post(url, body, events)

        meta = HeldMeta(Scripted())
        sender, outcomes, _sleeps, _stats = sender_factory(meta)
        await sender.start()
        sender.submit(make_batch(2, partition=0))
        await until(lambda: sender.inflight_events == 2)
        assert sender.inflight_holds({("t", 0)})
        assert not sender.inflight_holds({("t", 1)})
        release.set()
        await idle(sender)
        await sender.stop()
        assert not sender.inflight_holds({("t", 0)})
        assert len(outcomes.acked) == 1


class TestFailing:
    """A destination whose every request fails shows `failing`, not `flowing`, until an ack gets through."""

    async def test_persistent_5xx_makes_the_destination_failing(self, sender_factory: SenderFactory) -> None:
        """After FAILING_AFTER failed requests in a row the state is FAILING; nothing is dropped meanwhile."""
        meta = FakeMeta(lambda _ids, _token: transient())
        sender, outcomes, seen = state_watching(sender_factory, meta)  # seen: the state after each failure
        await sender.start()
        sender.submit(make_batch(2))
        await until(lambda: len(seen) >= FAILING_AFTER + 3)
        assert sender.inflight_events == 2
        await sender.stop()
        assert seen[:FAILING_AFTER - 1] == [DestinationState.FLOWING] * (FAILING_AFTER - 1)
        assert set(seen[FAILING_AFTER - 1:]) == {DestinationState.FAILING}
        assert (outcomes.acked, outcomes.rejected) == ([], [])

    async def test_an_ack_after_failures_makes_it_flowing_again(self, sender_factory: SenderFactory) -> None:
        """FAILING_AFTER + 2 failures, then an ack: the state returns to FLOWING and the batch is acked once."""
        meta = FakeMeta(Scripted(*(transient() for _ in range(FAILING_AFTER + 2))))
        sender, outcomes, seen = await states_through_one_batch(sender_factory, meta)
        assert DestinationState.FAILING in seen
        assert sender.state is DestinationState.FLOWING
        assert len(outcomes.acked) == 1

    async def test_throttling_is_not_failing(self, sender_factory: SenderFactory) -> None:
        """Throttle answers, however many, show THROTTLED: Meta is answering, just asking us to slow down."""
        meta = FakeMeta(Scripted(*(throttled(0.01) for _ in range(FAILING_AFTER * 2))))
        _sender, outcomes, seen = await states_through_one_batch(sender_factory, meta)
        assert set(seen) == {DestinationState.THROTTLED}
        assert len(outcomes.acked) == 1


class TestFreeSlot:
    """has_free_slot: a batch handed over now would be sent at once (the runner's idle linger reads it)."""

    async def test_a_slot_is_free_only_while_flowing_with_nothing_queued_and_a_request_slot_left(
            self, sender_factory: SenderFactory) -> None:
        """Concurrency 1: free before the first request; not while it is in flight, nor with a batch
        queued behind it, nor while throttled; free again once acked, and the hook hears of the slot."""
        release = asyncio.Event()
        meta = FakeMeta(Scripted(throttled(None)))
        sender, outcomes, seen = state_watching(sender_factory, meta, hold=release)
        freed: list[bool] = []
        sender.on_slot_free = lambda: freed.append(sender.has_free_slot())
        assert sender.has_free_slot()
        await sender.start()
        sender.submit(make_batch(1))
        sender.submit(make_batch(1, prefix="f"))
        assert not sender.has_free_slot()  # queued
        await until(lambda: bool(seen))  # the first request was throttled; its slot is held for the wait
        assert sender.state is DestinationState.THROTTLED
        assert not sender.has_free_slot()
        release.set()
        await idle(sender)
        await sender.stop()
        assert len(outcomes.acked) == 2
        assert sender.has_free_slot()
        # told after each request gave its slot back: the first time f was still queued for it
        assert freed == [False, True]
