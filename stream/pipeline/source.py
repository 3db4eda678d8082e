"""The Kafka consumer: one dedicated thread owns it; batches go to the event loop, offsets come back.

librdkafka consumers are not safe to call from several threads, so every consumer call (consume, pause,
resume, store_offsets, commit, close) and every rebalance callback runs on the source thread. The event
loop talks to it through a command queue; rebalance callbacks block that thread on a coroutine of the
pipeline (`on_revoked` drains the revoked partitions under a deadline and returns what to store).

Offsets: `enable.auto.offset.store=false`, so only offsets the pipeline stores (finished events) are
committed, by librdkafka's auto-commit, in a revoke (librdkafka commits stored offsets of revoked
partitions) and at close.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, overload

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from stream.config import KafkaSettings, PipelineSettings
from stream.logs import KAFKA_LOGGER, kafka_config
from stream.pipeline.clientconf import probe_client

log = structlog.get_logger("capi_stream.source")

# Settings we rely on for at-least-once; the user's passthrough may not change them.
_FORCED: dict[str, Any] = {"enable.auto.offset.store": False, "enable.auto.commit": True}
_DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "enable.partition.eof": False,
    # a fetch waits for 64 KiB or 50 ms: librdkafka's "answer at the first byte" makes many small fetches
    # and consumed batches at moderate rates (~40% more CPU per event at 2,000 events/s, `bench e2e`)
    "fetch.min.bytes": 65536,
    "fetch.wait.max.ms": 50,
    "session.timeout.ms": 45000,
    # librdkafka statistics feed the consumer-lag metric
    "statistics.interval.ms": 5000,
    # prefetch bound: librdkafka's 64 MB default is more than a pipeline that waits for Meta needs
    "queued.max.messages.kbytes": 16384,
    # 256 KiB per partition and fetch (default 1 MiB): partitions interleave in each consumed batch, so
    # one partition's backlog does not hold back the commits (and lengthen the replay) of the others
    "max.partition.fetch.bytes": 262144,
}
# Consumed batches handed to the event loop and not yet taken up by it: above this many messages the
# source stops calling consume() until the loop catches up (librdkafka keeps prefetching, bounded by
# queued.max.messages.kbytes). Pausing instead would purge the prefetch queue at every turn.
HANDOFF_BATCHES = 4
# how long the source waits between looks while the loop catches up; short, so rebalances are served
HANDOFF_WAIT_S = 0.002
# A loop that takes nothing for longer than this (a schema registry outage, a stage waiting on
# something) would keep consume() uncalled past max.poll.interval.ms, and librdkafka would leave the
# group: a rebalance, and the churn again at every rejoin. So then the source pauses the assignment and
# keeps calling consume(), which fetches nothing new but keeps the member alive; it resumes when the loop
# catches up. A quarter of max.poll.interval.ms, at most STALL_MAX_S.
STALL_MAX_S = 10.0
_MAX_POLL_DEFAULT_MS = 300_000
# consume() waits until it has a full batch or this long: short, so a trickle is not held back (it was a
# third of the latency at 1,000 events/s with 0.1 s) and commands, pause and stop are served promptly
_POLL_S = 0.025

TP = tuple[str, int]


class ConsumerLike(Protocol):
    """The part of confluent_kafka's Consumer the source uses (unit tests pass a fake)."""

    def subscribe(self, topics: list[str], on_assign: Any = ..., on_revoke: Any = ..., on_lost: Any = ...) -> None: ...

    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Message]: ...

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def store_offsets(self, *, offsets: list[TopicPartition]) -> None: ...

    @overload
    def commit(self, *, asynchronous: Literal[False]) -> list[TopicPartition]: ...

    @overload
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]: ...

    def close(self) -> None: ...


class SourceHandler(Protocol):
    """What the pipeline provides to the source (called on the event loop)."""

    def on_messages(self, messages: list[Message], generation: int, handed_at: float) -> None: ...

    async def on_assigned(self, partitions: list[TP], generation: int) -> None: ...

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, int]: ...

    async def on_lost(self, partitions: list[TP]) -> None: ...


def consumer_config(kafka: KafkaSettings, pipeline: PipelineSettings) -> dict[str, Any]:
    """The librdkafka consumer settings: our defaults, then the user's passthrough, then what we force."""
    conf = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        "auto.commit.interval.ms": pipeline.commit_interval_ms,
        **_DEFAULTS,
        **kafka.consumer,
        **_FORCED,
    }
    return conf


def check_consumer_config(kafka: KafkaSettings, pipeline: PipelineSettings, where: str) -> list[str]:
    """librdkafka's verdict on the consumer settings, offline: ConfigError for a bad key or value,
    the warnings about ignored settings otherwise (see clientconf.probe_client)."""
    return probe_client(Consumer, KafkaException, consumer_config(kafka, pipeline), where)


class KafkaSource:
    """Consume `topics` in a group on a thread of its own, feeding `handler` on `loop`."""

    def __init__(self, kafka: KafkaSettings, pipeline: PipelineSettings, handler: SourceHandler,
                 on_error: Callable[[BaseException], None] | None = None,
                 consumer_factory: Callable[[dict[str, Any]], ConsumerLike] | None = None) -> None:
        self._kafka = kafka
        self._consumer_factory = consumer_factory or Consumer  # unit tests pass a fake's factory
        self._conf = consumer_config(kafka, pipeline)
        self._handler = handler
        self._revoke_timeout = pipeline.revoke_timeout_s
        self._on_error = on_error
        self._commands: queue.SimpleQueue[Callable[[ConsumerLike], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: ConsumerLike | None = None
        self.want_paused = False  # the whole assignment (in-flight bound, draining)
        self.paused = False
        # partitions that hold their bound of offsets and wait for their commit point to move
        self.want_paused_partitions: frozenset[TP] = frozenset()
        self.paused_partitions: frozenset[TP] = frozenset()
        self._close_deadline: float | None = None
        self._handed = 0  # messages handed to the loop (source thread)
        self._taken = 0  # messages the pipeline took up (event loop)
        self._handoff_limit = HANDOFF_BATCHES * kafka.consume_batch_size
        max_poll_s = int(self._conf.get("max.poll.interval.ms", _MAX_POLL_DEFAULT_MS)) / 1000
        self._stall_s = min(STALL_MAX_S, max_poll_s / 4)
        self._behind_since: float | None = None
        self.stalled = False  # paused because the loop takes nothing (see STALL_MAX_S)
        self.generation = 0
        self._pause_generation = 0
        self.assignment: set[TP] = set()
        self._held: set[TP] = set()  # paused until the pipeline releases them (source thread only)
        self.last_error: str = ""
        self.last_error_at = 0.0
        self.lag: dict[TP, int] = {}
        # (low watermark, high watermark, committed offset or -1) per assigned partition, and the
        # time.monotonic() of the statistics they come from (0: none yet)
        self.bounds: dict[TP, tuple[int, int, int]] = {}
        self.bounds_at = 0.0
        self.final_commit_ok: bool | None = None
        # from librdkafka's statistics: assigned partitions whose stored offset is not committed yet, and
        # when that was reported (wall clock; 0: never)
        self.uncommitted_partitions = 0
        self.stats_at = 0.0

    async def start(self) -> None:
        """Create the consumer, subscribe and start the source thread; refuses to run twice."""
        if self._thread is not None:
            raise RuntimeError("KafkaSource already started")
        self._loop = asyncio.get_running_loop()
        self._consumer = self._consumer_factory(
            kafka_config({**self._conf, "error_cb": self._error_cb, "stats_cb": self._stats_cb}))
        self._consumer.subscribe(list(self._kafka.topics), on_assign=self._assign_cb,
                                 on_revoke=self._revoke_cb, on_lost=self._lost_cb)
        self._thread = threading.Thread(target=self._run, name="kafka-source", daemon=True)
        self._thread.start()

    async def stop(self, final: Mapping[TP, int] | None = None, deadline: float | None = None) -> None:
        """Stop consuming, store `final` offsets, commit synchronously and close (idempotent).

        `deadline` (time.monotonic()): the close, its revoke callback included, is given up then; the
        thread is a daemon and whatever it had not committed is read again by the next owner.
        """
        if self._thread is None:
            return
        if final:
            self.store(final)
        self._close_deadline = deadline
        self._stop.set()
        thread, self._thread = self._thread, None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            log.error("consumer_close_timeout", seconds=round(timeout or 0.0, 1))

    async def __aenter__(self) -> KafkaSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- called from the event loop -------------------------------------------------------------
    def taken(self, count: int) -> None:
        """The pipeline took up `count` handed messages (processed or dropped); called on the loop."""
        self._taken += count

    def store(self, offsets: Mapping[TP, int]) -> None:
        """Store commit points (next offset to read) for assigned partitions; thread-safe."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if tps:
            self._commands.put(lambda c: _store(c, tps))

    def hold(self, tps: list[TP]) -> None:
        """Keep `tps` paused, whatever backpressure says, until `release` (a restore reads their state)."""
        if tps:
            self._commands.put(lambda c: self._hold(c, tps))

    def release(self, tps: list[TP]) -> None:
        """End a `hold`: the partitions flow again unless the whole source is paused."""
        if tps:
            self._commands.put(lambda c: self._release(c, tps))

    def _hold(self, consumer: ConsumerLike, tps: list[TP]) -> None:
        self._held.update(tps)
        assigned = [TopicPartition(t, p) for t, p in tps if (t, p) in self.assignment]
        if assigned:
            consumer.pause(assigned)

    def _release(self, consumer: ConsumerLike, tps: list[TP]) -> None:
        self._held.difference_update(tps)
        assigned = [TopicPartition(t, p) for t, p in tps
                    if (t, p) in self.assignment and (t, p) not in self.paused_partitions]
        if assigned and not self.paused:
            consumer.resume(assigned)

    # -- the source thread ---------------------------------------------------------------------
    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assert self._loop is not None
        try:
            while not self._stop.is_set():
                self._serve_commands(consumer)
                self._apply_pause(consumer)
                if self._handed - self._taken >= self._handoff_limit:
                    if not self._stalled_now(consumer):
                        time.sleep(HANDOFF_WAIT_S)  # the loop is behind: let it catch up first
                        continue
                    # stalled: partitions paused; consume() only keeps the member in the group (and
                    # serves rebalances); a partition assigned meanwhile may still hand a few messages
                elif self._behind_since is not None:
                    self._behind_since = None
                    if self.stalled:
                        self.stalled = False
                        log.info("pipeline_caught_up")
                        self._apply_pause(consumer)
                messages = consumer.consume(self._kafka.consume_batch_size, timeout=_POLL_S)
                if not messages:
                    continue
                good = [m for m in messages if not self._is_error(m)]
                if good:
                    self._handed += len(good)
                    self._loop.call_soon_threadsafe(self._handler.on_messages, good, self.generation, time.time())
        except Exception as exc:  # noqa: BLE001 - the thread must report any failure, not die silently
            log.error("source_failed", error=type(exc).__name__, detail=str(exc)[:200])
            if self._on_error is not None:
                self._loop.call_soon_threadsafe(self._on_error, exc)
        finally:
            self._serve_commands(consumer)
            self._close(consumer)

    def _close(self, consumer: ConsumerLike) -> None:
        try:
            consumer.commit(asynchronous=False)
            self.final_commit_ok = True
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            # _NO_OFFSET: nothing stored since the last commit; that is a success
            self.final_commit_ok = isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET
            if not self.final_commit_ok:
                log.warning("final_commit_failed", error=str(err))
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()
        KAFKA_LOGGER.flush()

    def _serve_commands(self, consumer: ConsumerLike) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command(consumer)

    def _stalled_now(self, consumer: ConsumerLike) -> bool:
        """True once the loop has been behind for longer than the stall time; pauses the assignment then."""
        now = time.monotonic()
        if self._behind_since is None:
            self._behind_since = now
        if now - self._behind_since < self._stall_s:
            return False
        if not self.stalled:
            self.stalled = True
            log.warning("pipeline_stalled", seconds=round(now - self._behind_since, 1),
                        action="partitions paused; the consumer keeps polling so the member stays in the group")
            self._apply_pause(consumer)
        return True

    def _apply_pause(self, consumer: ConsumerLike) -> None:
        """Make the current assignment match `want_paused` (or a stall) and `want_paused_partitions`.

        Also after every rebalance: librdkafka keeps a partition's pause flag across losing and regaining
        it, so a partition revoked while paused and assigned back after a resume would stay paused
        forever if only state changes were applied.
        """
        desired = self.want_paused or self.stalled
        held = self.want_paused_partitions
        if desired == self.paused and held == self.paused_partitions and self._pause_generation == self.generation:
            return
        parts = consumer.assignment()
        if desired:
            consumer.pause(parts)
        else:
            # partitions held for a restore stay paused too (librdkafka may carry a resumed flag over)
            stop = [p for p in parts if (p.topic, p.partition) in held or (p.topic, p.partition) in self._held]
            go = [p for p in parts if (p.topic, p.partition) not in held and (p.topic, p.partition) not in self._held]
            if stop:
                consumer.pause(stop)
            if go:
                consumer.resume(go)
        changed = desired != self.paused
        newly_held = len(held - self.paused_partitions)
        released = len(self.paused_partitions - held)
        self.paused = desired
        self.paused_partitions = held
        self._pause_generation = self.generation
        if changed:
            log.info("partitions_paused" if self.paused else "partitions_resumed", partitions=len(parts))
        if newly_held or released:
            log.info("partitions_held", held=len(held), newly_held=newly_held, released=released,
                     why="offsets held up to pipeline.max_held_per_partition behind an unfinished one")

    def _is_error(self, message: Message) -> bool:
        err = message.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            self.last_error = err.name()
            topic = message.topic() or ""
            repeats = KAFKA_LOGGER.limiter.admit(("consume_error", err.name(), topic))
            if repeats is not None or err.fatal():
                # the topic and librdkafka's words: 'UNKNOWN_TOPIC_OR_PART' alone does not say which topic
                log.warning("consume_error", error=err.name(), fatal=err.fatal(), topic=topic or None,
                            detail=err.str()[:300], **({"repeated": repeats} if repeats else {}))
            if err.fatal() and self._on_error is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_error, KafkaException(err))
        return True

    def _stats_cb(self, text: str) -> None:
        try:
            doc = orjson.loads(text)
            parts = [
                ((topic, int(p)), part)
                for topic, tdoc in doc.get("topics", {}).items()
                for p, part in tdoc.get("partitions", {}).items()
                if int(p) >= 0 and (topic, int(p)) in self.assignment
            ]
            lag = {tp: part["consumer_lag"] for tp, part in parts if part.get("consumer_lag", -1) >= 0}
            bounds = {tp: (int(part.get("lo_offset", -1)), int(part["hi_offset"]),
                           int(part.get("committed_offset", -1)))
                      for tp, part in parts if part.get("hi_offset", -1) >= 0}
            # a stored offset (>= 0) above the committed one: the next commit has not taken it yet
            uncommitted = sum(1 for _, part in parts
                              if part.get("stored_offset", -1) >= 0
                              and part["stored_offset"] > part.get("committed_offset", -1))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return
        self.lag = lag
        self.uncommitted_partitions = uncommitted
        self.stats_at = time.time()
        self.bounds = bounds
        self.bounds_at = time.monotonic()

    def _error_cb(self, err: KafkaError) -> None:
        self.last_error_at = time.time()
        self.last_error = err.name()
        # librdkafka reports a down broker at every reconnect: one line per interval, with the count
        repeats = KAFKA_LOGGER.limiter.admit(("kafka_error", err.name()))
        if repeats is not None:
            log.warning("kafka_error", error=err.name(), detail=err.str()[:200],
                        **({"repeated": repeats} if repeats else {}))

    # rebalance callbacks: they run inside consume() on the source thread
    def _assign_cb(self, consumer: ConsumerLike, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        tps = [(p.topic, p.partition) for p in partitions]
        self.assignment.update(tps)
        self._call(self._handler.on_assigned(tps, self.generation), timeout=30)
        # the pause state of the new assignment is applied on the next loop turn (_apply_pause)
        log.info("partitions_assigned", partitions=len(tps), generation=self.generation, group=self._kafka.group_id)

    def _revoke_cb(self, consumer: ConsumerLike, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        tps = [(p.topic, p.partition) for p in partitions]
        timeout = self._revoke_timeout + 10
        if self._close_deadline is not None:  # consumer.close() runs this: the shutdown deadline bounds it
            timeout = min(timeout, max(0.0, self._close_deadline - time.monotonic()))
        offsets = self._call(self._handler.on_revoked(tps), timeout=timeout) or {}
        committed = False
        if offsets:
            points = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            _store(consumer, points)
            # Commit now, while this member still owns them: a stored offset waits for the next auto-commit,
            # which never comes for a partition that moved on, and its new owner would read (and send)
            # everything since the last commit again.
            try:
                consumer.commit(offsets=points, asynchronous=False)
                committed = True
            except KafkaException as exc:
                log.warning("revoke_commit_failed", error=str(exc.args[0]) if exc.args else "")
        self.assignment.difference_update(tps)
        self._held.difference_update(tps)
        log.info("partitions_revoked", partitions=len(tps), stored=len(offsets), committed=committed)

    def _lost_cb(self, consumer: ConsumerLike, partitions: list[TopicPartition]) -> None:
        self.generation += 1
        tps = [(p.topic, p.partition) for p in partitions]
        self._call(self._handler.on_lost(tps), timeout=30)
        self.assignment.difference_update(tps)
        self._held.difference_update(tps)
        log.warning("partitions_lost", partitions=len(tps))

    def _call(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            log.error("rebalance_callback_timeout", seconds=timeout)
            return None


def _store(consumer: ConsumerLike, tps: list[TopicPartition]) -> None:
    try:
        consumer.store_offsets(offsets=tps)
    except KafkaException as exc:
        # _STATE: the partition is no longer assigned (a late ack after a revoke): the new owner re-reads
        log.debug("store_offsets_refused", error=str(exc.args[0]) if exc.args else "")


# how long topic metadata and creation may take before ensure_topics gives up (and says so)
TOPIC_TIMEOUT_S = 15.0


# How often topics just created are looked up until each of their partitions has a leader.
LEADER_POLL_S = 0.1


def await_leaders(admin: Any, topics: Mapping[str, int], timeout_s: float) -> dict[str, list[int]]:
    """Wait until each of `topics` (name -> partitions) has that many partitions, each with a leader: a
    broker creates a topic before it elects its leaders, and a read meanwhile fails with 'Unknown partition'
    or 'Not leader'. Blocking; returns, per topic, the partitions still without a leader after `timeout_s`
    (empty: all ready). Raises KafkaException when the metadata cannot be read."""
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(timeout=timeout_s)
        missing = {}
        for name, count in topics.items():
            info = meta.topics.get(name)
            found = {} if info is None or info.error is not None else info.partitions
            lacking = [p for p in range(count) if p not in found or found[p].leader < 0]
            if lacking:
                missing[name] = lacking
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(LEADER_POLL_S)


def ensure_topics(conf: Mapping[str, Any], topics: list[str], like: str,
                  admin_factory: Callable[[dict[str, Any]], Any] = AdminClient) -> dict[str, str]:
    """Create those of `topics` that are missing, with as many partitions as topic `like` (1 when it is
    missing too), and wait for their leaders; blocking. Returns topic -> error for each one that could not
    be created or has partitions without a leader after TOPIC_TIMEOUT_S."""
    admin = admin_factory(kafka_config(dict(conf)))
    try:
        meta = admin.list_topics(timeout=TOPIC_TIMEOUT_S)
    except KafkaException as exc:
        return {t: str(exc.args[0] if exc.args else exc) for t in topics}
    source = meta.topics.get(like)
    count = len(source.partitions) if source is not None and source.error is None and source.partitions else 1
    missing = [t for t in topics if t not in meta.topics or meta.topics[t].error is not None]
    if not missing:
        return {}
    futures = admin.create_topics([NewTopic(t, num_partitions=count, replication_factor=-1) for t in missing],
                                  operation_timeout=TOPIC_TIMEOUT_S, request_timeout=TOPIC_TIMEOUT_S)
    errors = {}
    for topic, future in futures.items():
        try:
            future.result(timeout=TOPIC_TIMEOUT_S)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                errors[topic] = str(err)
        except Exception as exc:  # noqa: BLE001 - a timeout or anything else: report it, never raise
            errors[topic] = f"{type(exc).__name__}: {exc}"
    try:
        lacking = await_leaders(admin, {t: count for t in missing if t not in errors}, TOPIC_TIMEOUT_S)
    except KafkaException as exc:
        lacking = {}
        errors.update({t: str(exc.args[0] if exc.args else exc) for t in missing if t not in errors})
    for topic, partitions in lacking.items():
        errors[topic] = f"no leader for partitions {partitions} after {TOPIC_TIMEOUT_S:g} s"
    return errors
