"""The pipeline: wires source -> decode -> normalize -> dedupe -> batch -> send -> commit, and owns the
clock, the tasks, the signals and the shutdown deadline.

Every consumed message is finished exactly once — acknowledged by Meta, dropped (duplicate, no
consent) or dead-lettered (acknowledged by the broker) — and only finished offsets are committed, per
partition, up to the first unfinished one. Pure stages run inline on the event loop; I/O stays in
source (Kafka consumer thread), sender/sink (aiohttp) and dlq (Kafka producer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import multiprocessing
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from confluent_kafka import KafkaException, Message

from stream.avro.registry import RegistryLookup
from stream.avro.wire import WireFormat
from stream.config import Destination, KafkaSettings, Settings, changelog_topic, parking_group, parking_topics
from stream.contract.normalize import NormalizeSettings
from stream.errors import CapiStreamError
from stream.pipeline import dedupelog
from stream.pipeline.batch import Batch, Batcher
from stream.pipeline.canary import Canary
from stream.pipeline.changelog import SHARED_PREFIXES, TP, Changelog
from stream.pipeline.consistency import Identity
from stream.pipeline.deadletters import DeadLetter, DeadLetterWriter, LetterProducer, check_producer_config
from stream.pipeline.dedupe import DedupeStore, NotPendingError, Verdict, dedupe_key
from stream.pipeline.items import Item, TopicPartition
from stream.pipeline.meta_client import Answer, MetaClient
from stream.pipeline.metrics import MetricsServer, metrics_client_id
from stream.pipeline.offsets import OffsetTracker, PartitionOffsets
from stream.pipeline.parking import (
    Change,
    Mode,
    Origin,
    Parking,
    TopicView,
    drained_letter_extra,
    log_lag,
    oldest_of,
    origin_of,
    parked_record,
)
from stream.pipeline.parkwatch import ParkingWatch, WatchConsumer
from stream.pipeline.prepare import Kind, PrepareContext, Prepared, Preparer, init_worker, prepare_in_worker
from stream.pipeline.progress import Progress, Snapshot
from stream.pipeline.quality import Quality
from stream.pipeline.sender import DestinationSender, DestinationState, Poster
from stream.pipeline.source import ConsumerLike, KafkaSource, check_consumer_config, ensure_topics
from stream.pipeline.stats import PART_STRIDE, Stats
from stream.pipeline.tasks import cancel_and_wait

log = structlog.get_logger("capi_stream.runner")

META_REJECTED = "meta_rejected"
# not acknowledged by Meta before event_time + 7 days - send.deadline_margin_s: Meta would refuse it
DELIVERY_DEADLINE = "delivery_deadline"
# resume consuming once in-flight events fall below this share of the bound
RESUME_FRACTION = 0.5
# how often the linger timer looks for due batches (it wakes earlier for a batch due before that), and
# the shortest wait between two looks
TICK_S = 0.02
MIN_TICK_S = 0.002
# Of the shutdown deadline, this much (at most a third of it) is kept for closing the consumer (its
# revoke callback, the final commit, leaving the group) after waiting for acks and dead letters.
CLOSE_RESERVE_S = 5.0
# the event loop allocates an Item, a few tuples and dicts per event and almost no cycles
GC_GEN0_THRESHOLD = 50_000
# how often the heartbeat looks at lag and in-flight counts (librdkafka reports lag every 5 s)
PROGRESS_TICK_S = 1.0
# benchmarks read the run's figures from this file, written at shutdown
STATS_FILE_ENV = "CAPI_STREAM_STATS_FILE"
# how often expired changelog entries are tombstoned: expiry is by one-hour buckets, so a second is plenty
TOMBSTONE_EVERY_S = 1.0
# a restore that failed (broker away) is tried again after this long; its partition stays held meanwhile
RESTORE_RETRY_S = 2.0
# The first retry of a failed restore: a moment for a new topic's leader to answer (metadata names it first)
RESTORE_FIRST_RETRY_S = 0.5
# librdkafka's statistics.interval.ms default here (source._DEFAULTS): a parking lag is trusted for
# the end of a drain only from statistics taken this long after the drain began
_STATS_INTERVAL_MS = 5000
# how often the parking topics' lag and oldest waiting event are asked of the broker (parkwatch.py)
PARKING_LOOK_S = 5.0


# creates missing topics: (client config, topics, topic whose partition count to copy) -> topic -> error
TopicCreator = Callable[[Mapping[str, Any], list[str], str], dict[str, str]]


def _no_topics(_conf: Mapping[str, Any], _topics: list[str], _like: str) -> dict[str, str]:
    return {}


class MetaSession(Poster, Protocol):
    """The Meta client as the pipeline holds it (`MetaClient`): a Poster with a lifecycle."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _norm_settings(d: Destination) -> NormalizeSettings:
    return NormalizeSettings(default_country=d.default_country or None, require_consent=d.require_consent,
                             hash_external_id=d.hash_external_id)


def quality_for(settings: Settings) -> Quality:
    """The signal-quality counters with the config's targets, window and tracker bound."""
    q = settings.quality
    return Quality(window_s=settings.dedupe.window_s, max_ids=q.consistency_max_ids, targets=q)


def consumer_settings(settings: Settings) -> KafkaSettings:
    """The Kafka settings the source runs with: a member with a metrics port advertises it in its client
    id, so `capi-stream status` finds its /metrics from the group's description."""
    kafka = settings.kafka
    if settings.metrics.port and "client.id" not in kafka.consumer:
        kafka = dataclasses.replace(kafka, consumer={"client.id": metrics_client_id(settings.metrics.port),
                                                     **kafka.consumer})
    return kafka


def check_kafka_clients(settings: Settings) -> list[str]:
    """librdkafka's verdict on the consumer and dead-letter producer settings, offline: ConfigError
    naming the table and key it refuses, else its warnings about ignored settings."""
    src = settings.source
    return [*check_consumer_config(consumer_settings(settings), settings.pipeline, f"{src}: [kafka.consumer]"),
            *check_producer_config(settings.kafka.bootstrap_servers, settings.kafka.producer,
                                   f"{src}: [kafka.producer]")]


class Pipeline:
    """One capi-stream process: consume in the group, send to Meta, commit after the acks."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, *, client: MetaSession | None = None,
                 consumer_factory: Callable[[dict[str, Any]], ConsumerLike] | None = None,
                 producer_factory: Callable[[dict[str, Any]], LetterProducer] | None = None,
                 topic_creator: TopicCreator | None = None,
                 watch_consumer_factory: Callable[[dict[str, Any]], WatchConsumer] | None = None) -> None:
        """`clock`: wall-clock seconds, for event times and Meta's windows only; `monotonic`: for timers.

        `client`, `consumer_factory` and `producer_factory` replace the I/O edges (the aiohttp session,
        confluent_kafka's consumer and producer) in unit tests; by default the real ones are used.
        `topic_creator` creates the missing parking topics (source.ensure_topics by default; with a fake
        consumer, none is created unless one is given). `watch_consumer_factory`: the client that looks
        at the parking topics (parkwatch.py; with a fake consumer, none looks unless one is given).
        """
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.stats = Stats()
        self.quality = quality_for(settings)
        self.tracker = OffsetTracker()
        self._assigned_gen: dict[TopicPartition, int] = {}
        wire = WireFormat(settings.decode.wire_format)
        self._prep_ctx = PrepareContext(
            schema_path=settings.decode.schema_path or None, wire_format=wire.value,
            routes={app: (d.name, _norm_settings(d)) for d in settings.destinations for app in d.app_ids},
        )  # fmt: skip
        self.preparer = Preparer(self._prep_ctx)
        self._registry = RegistryLookup(settings.decode.schema_registry_url) if wire is WireFormat.CONFLUENT else None
        # replaced, never changed in place: worker mode pickles it on the executor's thread
        self._writer_schemas: Mapping[int, Any] = {}
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._prepared: asyncio.Queue[tuple[asyncio.Future[list[Prepared]], list[Message], int, float]] = asyncio.Queue(
            maxsize=max(2, settings.pipeline.workers * 2))
        self.changelog: Changelog | None = None
        if settings.dedupe.changelog:
            self.changelog = Changelog(
                settings.kafka.bootstrap_servers, {t: changelog_topic(settings, t) for t in settings.kafka.topics},
                settings.kafka.group_id, settings.kafka.producer,
                {k: v for k, v in settings.kafka.consumer.items() if k.startswith(SHARED_PREFIXES)})
        self.dedupe = DedupeStore(window_s=settings.dedupe.window_s, max_keys=settings.dedupe.max_keys)
        # With a changelog, each assigned partition's keys are held under a number of their own ("part"),
        # restored from its changelog partition on assignment and dropped from memory on revoke.
        self._parts: dict[TP, int] = {}
        self._restoring: dict[TP, list[tuple[Message, Prepared, int]]] = {}
        self._restores: dict[TP, asyncio.Task[None]] = {}
        self._changelog_topics: asyncio.Task[None] | None = None  # creating the changelog topics at start
        # offsets the changelog says were dead-lettered -> (time, fingerprint of the message value)
        self._dead: dict[TP, dict[int, tuple[float, int | None]]] = {}
        # assigned partitions until their revoke ends: their acks and dead letters still go to the changelog
        self._owned: set[TP] = set()
        self._tombstoned_at = 0.0
        # Meta dedupes per dataset, so the dedupe key holds the destination's dataset id (two destinations
        # that send to one dataset share its keys)
        self._datasets = {d.name: d.dataset_id for d in settings.destinations}
        self.batcher = Batcher(settings.batch.max_events, settings.batch.max_bytes, settings.batch.linger_ms / 1000,
                               settings.batch.idle_linger_ms / 1000)
        # the last consumed batch was full: more is waiting in Kafka, so open batches fill (batch.linger_ms)
        self._backlog = False
        self._waiters: dict[int, list[Item]] = defaultdict(list)
        self.client: MetaSession = client or MetaClient(settings.send.timeout_s,
                                                        pool_size=max(10, settings.send.concurrency * 4))
        self.senders = {
            d.name: DestinationSender(d, self.client, settings.send, self.stats, self._acked, self._rejected,
                                      on_expired=self._expired, on_failure=self._fail, clock=clock)
            for d in settings.destinations
        }
        for sender in self.senders.values():
            sender.on_slot_free = self._close_due  # a batch that waited for a free slot leaves at once
        self.canaries = {d.name: Canary(d, self.senders[d.name], self.senders[d.name].is_halted, clock)
                         for d in settings.destinations if d.canary_interval_s > 0}
        self.dlq = DeadLetterWriter(settings.kafka.bootstrap_servers, settings.kafka.dlq_topic,
                                    settings.kafka.producer, producer_factory=producer_factory)
        # Parking (parking.py): each destination's parking topic, its state and its writer
        self.parking_topics = parking_topics(settings)
        self._parked_dest = {topic: name for name, topic in self.parking_topics.items()}
        share_limit = settings.send.park_share * settings.pipeline.max_in_flight_events
        # Each destination starts as draining: records an earlier run (or another member) parked are read
        # back at once, and a destination still broken parks them again at its first halt, never holding
        # park_after_s worth of them; the first statistics showing its parking partitions at their end
        # make it live.
        self.parking = {name: Parking(name, topic, settings.send.park_after_s, share_limit, mode=Mode.DRAINING)
                        for name, topic in self.parking_topics.items()}
        self._drain_announced: set[str] = set()
        self._park_queue: defaultdict[str, list[Item]] = defaultdict(list)  # waiting for the pause (_park)
        self._parkers = {name: DeadLetterWriter(settings.kafka.bootstrap_servers, topic, settings.kafka.producer,
                                                producer_factory=producer_factory)
                         for name, topic in self.parking_topics.items()}
        # parking writes (by source partition) and changelog records of drained events (by parking
        # partition) not acknowledged yet: a revoke of those partitions waits for them
        self._parking_writes: Counter[TopicPartition] = Counter()
        self._paused_parking: frozenset[str] = frozenset()  # parking topics whose partitions are paused
        stats_ms = int(settings.kafka.consumer.get("statistics.interval.ms", _STATS_INTERVAL_MS))
        self._stats_settle_s = max(0.0, stats_ms / 1000)
        self._topic_creator = topic_creator or (ensure_topics if consumer_factory is None else _no_topics)
        kafka = consumer_settings(settings)
        self.source = KafkaSource(kafka, settings.pipeline, self, on_error=self._fail,
                                  consumer_factory=consumer_factory)
        # The parking topics are read back by a consumer of their own, in a group of its own
        # (config.parking_group), on the same handler: their partitions never unbalance the source
        # topics' assignment. Unit tests with a fake consumer run without it (nothing is read back).
        self.parking_source: KafkaSource | None = None
        if self.parking_topics and consumer_factory is None:
            parking_kafka = dataclasses.replace(kafka, topics=tuple(self.parking_topics.values()),
                                                group_id=parking_group(settings))
            self.parking_source = KafkaSource(parking_kafka, settings.pipeline, self, on_error=self._fail)
        # what waits in each parking topic, asked of the broker every PARKING_LOOK_S (the statistics of a
        # paused parking partition are stale, and a member not assigned one has none)
        self.parking_watch: ParkingWatch | None = None
        if self.parking_topics and (consumer_factory is None or watch_consumer_factory is not None):
            conf = {**{k: v for k, v in settings.kafka.consumer.items() if k.startswith(SHARED_PREFIXES)},
                    "bootstrap.servers": settings.kafka.bootstrap_servers}
            self.parking_watch = ParkingWatch(conf, parking_group(settings), self.parking_topics,
                                              consumer_factory=watch_consumer_factory)
        self._parking_views: dict[str, TopicView] = {}
        self._inbox: asyncio.Queue[tuple[list[Message], int, float]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._failure: BaseException | None = None
        self._draining = False
        self._deadline: float | None = None  # time.monotonic() by which the drain must end
        self._unfinished = 0  # unfinished offsets of active trackers (what the in-flight gauge shows)
        self._letters: Counter[TopicPartition] = Counter()  # dead letters not acknowledged yet
        self._started = False
        self.metrics: MetricsServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every component and task; refuses to run twice."""
        if self._started:
            raise RuntimeError("pipeline already started")
        self._started = True
        # Objects alive at start-up (modules, schemas, caches) never need collecting; and the pipeline
        # allocates few cycles, so collections can be rarer than the default every 700 allocations.
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        if self.settings.pipeline.workers:
            # spawn, not fork: this process already runs librdkafka and aiohttp threads
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.settings.pipeline.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker, initargs=(self._prep_ctx,))
        await self.client.start()
        await self.dlq.start()
        if self.changelog is not None:
            await self.changelog.start()
        for parker in self._parkers.values():
            await parker.start()
        await self._ensure_parking_topics()
        for sender in self.senders.values():
            await sender.start()
        for canary in self.canaries.values():
            await canary.start()
        self._tasks = [
            asyncio.create_task(self._process(), name="process"),
            asyncio.create_task(self._apply(), name="apply"),
            asyncio.create_task(self._tick(), name="linger"),
            asyncio.create_task(self._heartbeat(), name="progress"),
        ]
        if self.changelog is not None:
            # in the background: a broker that is slow to answer must not hold up the start (or a stop);
            # a restore that finds its changelog topic missing creates it itself
            self._changelog_topics = asyncio.create_task(self._ensure_changelog_topics(), name="changelog-topics")
            self._tasks.append(self._changelog_topics)
        if self.parking_watch is not None:
            self._tasks.append(asyncio.create_task(self._watch_parking(), name="parking-watch"))
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        if self.settings.metrics.port:
            self.metrics = MetricsServer(self, self.settings.metrics.host, self.settings.metrics.port)
            await self.metrics.start()
        await self.source.start()
        if self.parking_source is not None:
            await self.parking_source.start()
        log.info("pipeline_started", topics=list(self.settings.kafka.topics), group=self.settings.kafka.group_id,
                 destinations=len(self.senders))

    def progress_snapshot(self) -> Snapshot:
        """Counts and states for the heartbeat line."""
        return Snapshot(consumed=self.stats.consumed, acked=self.stats.events_acked,
                        dead_lettered=sum(self.stats.dead_lettered.values()), in_flight=self._unfinished,
                        lag=dict(self.source.lag), assigned=len(self.source.assignment),
                        destinations={n: str(st) for n, st in self.destination_states().items()})

    async def _heartbeat(self) -> None:
        """Log `progress` every logging.progress_interval_s and `caught_up` when the lag reaches 0."""
        progress = Progress(self.settings.logging.progress_interval_s, time.monotonic())
        while True:
            await asyncio.sleep(PROGRESS_TICK_S)
            for line in progress.tick(self.progress_snapshot(), time.monotonic()):
                getattr(log, line.level)(line.event, **line.fields)

    def request_stop(self) -> None:
        """Ask the pipeline to drain and stop (what SIGTERM/SIGINT do)."""
        self._stop.set()

    async def run_until_stopped(self, install_signals: bool = True) -> int:
        """Start, run until a stop is requested or a stage fails, drain, and return an exit code."""
        loop = asyncio.get_running_loop()
        if install_signals:
            self._install_signals(loop)
        await self.start()
        await self._stop.wait()
        await self.drain()
        if self._failure is not None:
            log.error("pipeline_failed", error=type(self._failure).__name__, detail=str(self._failure)[:200])
            return 1
        return 0

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_stop(signame: str) -> None:
            # the stop comes first: nothing after it (a log write to a dead pipe) may keep it from happening
            if self._stop.is_set():
                with contextlib.suppress(Exception):
                    log.warning("second_signal_exit_now", signal=signame)
                os._exit(130)
            self._stop.set()
            with contextlib.suppress(Exception):
                log.info("stop_requested", signal=signame)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tokens)

    def reload_tokens(self) -> None:
        """Re-read every destination's token now, and resume destinations halted for another cause (SIGHUP)."""
        log.info("reload_tokens")
        for sender in self.senders.values():
            if not sender.reload_token():
                sender.resume()

    async def drain(self) -> None:
        """Stop consuming, flush open batches, await acks and dead letters, commit, close; one deadline.

        Acks and dead letters are awaited until the deadline less a reserve for closing the consumer,
        whose revoke callback is bounded by the same deadline; the whole drain ends by the deadline.
        """
        limit = self.settings.pipeline.shutdown_deadline_s
        end = time.monotonic() + limit
        deadline = end - min(CLOSE_RESERVE_S, limit / 3)
        self._deadline = deadline
        self._draining = True
        for source in self._sources():
            source.want_paused = True
        for canary in self.canaries.values():
            await canary.stop()
        for batch in self.batcher.flush():
            self._submit(batch)
        for name in list(self._park_queue):
            self._flush_park_queue(name, force=True)
        flowing = [s for s in self.senders.values() if s.state is not DestinationState.HALTED]
        waits = [asyncio.create_task(s.wait_idle()) for s in flowing]
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, deadline - time.monotonic()))
        for w in waits:
            w.cancel()
        await self.dlq.flush(max(0.0, deadline - time.monotonic()))
        if self.changelog is not None:
            # acked events and dead letters finish once their changelog records are on the broker
            await self.changelog.flush(max(0.0, deadline - time.monotonic()))
        for parker in self._parkers.values():
            await parker.flush(max(0.0, deadline - time.monotonic()))
        if self._unfinished > 0:
            # what the next owner of these partitions reads again (nothing unfinished gets committed)
            log.warning("drain_incomplete", unfinished=self._unfinished,
                        deadline_s=self.settings.pipeline.shutdown_deadline_s,
                        queued={n: s.queued_events + s.inflight_events for n, s in self.senders.items()
                                if s.queued_events or s.inflight_events},
                        dead_letters_pending=self.dlq.pending,
                        halted=sorted(n for n, s in self.senders.items() if s.state is DestinationState.HALTED))
        given_up = self._unfinished  # the revoke below drops them: the next owner reads them again
        final = self.tracker.changed()
        await self.source.stop({tp: o for tp, o in final.items() if tp[0] not in self._parked_dest}, deadline=end)
        if self.parking_source is not None:
            await self.parking_source.stop({tp: o for tp, o in final.items() if tp[0] in self._parked_dest},
                                           deadline=end)
        await cancel_and_wait(self._tasks)
        if self.parking_watch is not None:
            await asyncio.to_thread(self.parking_watch.close)  # after the look in progress, if any
        for sender in self.senders.values():
            await sender.stop()
        await cancel_and_wait(list(self._restores.values()))
        await self.dlq.stop()
        if self.changelog is not None:
            await self.changelog.stop()
        for parker in self._parkers.values():
            await parker.stop()
        await self.client.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.metrics is not None:
            await self.metrics.stop()
        log.info("pipeline_stopped", consumed=self.stats.consumed, acked=self.stats.events_acked,
                 unfinished=given_up, final_commit=self.source.final_commit_ok)
        if stats_file := os.environ.get(STATS_FILE_ENV):
            Path(stats_file).write_bytes(orjson.dumps(self.stats.summary()))  # noqa: ASYNC240 - once, at exit

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)

    @property
    def failure(self) -> BaseException | None:
        """The error of the stage that failed, if one did."""
        return self._failure

    @property
    def stop_requested(self) -> bool:
        """True once a stop was asked for (a signal, request_stop or a failed stage)."""
        return self._stop.is_set()

    def _fail(self, exc: BaseException) -> None:
        """A stage failed: stop the pipeline with a clear error (nothing unfinished gets committed)."""
        self._stop.set()
        if self._failure is None:
            self._failure = exc
            log.error("stage_failed", error=type(exc).__name__, detail=str(exc)[:200])

    # -- SourceHandler ---------------------------------------------------------------------------
    def on_messages(self, messages: list[Message], generation: int, handed_at: float) -> None:
        """Called on the loop by the source thread with a consumed batch, handed over at `handed_at` (wall)."""
        self._inbox.put_nowait((messages, generation, handed_at))

    async def on_assigned(self, partitions: list[TopicPartition], generation: int) -> None:
        for topic, partition in partitions:
            self.tracker.assign(topic, partition)
            self._assigned_gen[(topic, partition)] = generation
        # parking partitions have no changelog: what they hold is deduped under its source partition
        restorable = [tp for tp in partitions if tp[0] not in self._parked_dest]
        if self.changelog is not None and restorable:
            # nothing of these partitions is processed before their changelog partitions were read to
            # the end; the others keep flowing meanwhile
            self.source.hold(list(restorable))
            self._owned.update(restorable)
            for tp in restorable:
                self._restoring[tp] = []
                task = self._restores[tp] = asyncio.create_task(self._restore(tp), name=f"restore-{tp[0]}-{tp[1]}")
                task.add_done_callback(self._task_done)  # an unexpected error stops the pipeline, never silently
        self._after_change()  # a parked destination's parking partitions are paused from the start

    async def on_revoked(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Stop taking the partitions' messages, send (bounded) what is batched or queued for them, and
        return the commit points to store.

        What is already batched is sent rather than given up: an event given up leaves a hole below the
        events of its partition acked after it (by another destination, or in a later batch), and the
        next owner would send all of those again. Halted destinations cannot send: their share is given
        up at once. At `revoke_timeout_s` (or the shutdown deadline) whatever is still queued is given up.
        """
        tps = set(partitions)
        self._stop_restores(tps)
        # Forget the partitions first: from now on their messages still in the apply stage are skipped,
        # and their events neither count as in flight nor get re-admitted. Batches sent meanwhile finish
        # into the trackers kept here, whose commit points are what is stored.
        parts = self._forget(partitions)
        sending = {n for n, s in self.senders.items() if s.state is not DestinationState.HALTED}
        for batch in self.batcher.close_holding(tps, sending):
            self.senders[batch.destination].submit(batch)
        self._abandon(self.batcher.remove_partitions(tps))
        # events of parked destinations waiting for the parking partitions' pause are written now: the
        # revoke below waits for their acks like for batches in flight
        for name in list(self._park_queue):
            self._flush_park_queue(name, force=True)
        deadline = time.monotonic() + self.settings.pipeline.revoke_timeout_s
        if self._deadline is not None:  # the revoke of consumer.close() in a drain: one deadline for all
            deadline = min(deadline, self._deadline)
        while True:
            for sender in self.senders.values():
                if sender.state is DestinationState.HALTED:
                    self._abandon(sender.take_partitions(tps))
            if not self._revoke_holds(tps) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        for sender in self.senders.values():
            self._abandon(sender.take_partitions(tps))
        if self._revoke_holds(tps):
            log.warning("revoke_wait_expired", partitions=len(tps),
                        detail="batches or dead letters still in flight; the next owner reads them again")
        offsets = {(p.topic, p.partition): p.commit_point for p in parts if p.commit_point is not None}
        self._drop_waiters(tps)
        self._forget_partitions(tps)
        return offsets

    async def on_lost(self, partitions: list[TopicPartition]) -> None:
        """The partitions belong to someone else already: commit nothing for them, forget their work."""
        tps = set(partitions)
        self._stop_restores(tps)
        self._forget(partitions)  # first, so that releasing their keys re-admits none of their twins
        self._forget_partitions(tps)
        self._abandon(self.batcher.remove_partitions(tps))
        self._unqueue_parking(tps)
        for sender in self.senders.values():
            self._abandon(sender.take_partitions(tps))
        self._drop_waiters(tps)

    def _forget(self, partitions: list[TopicPartition]) -> list[PartitionOffsets]:
        """Drop the trackers of revoked or lost partitions (they go inactive) and their in-flight count."""
        parts = []
        for tp in partitions:
            part = self.tracker.drop(*tp)
            self._assigned_gen.pop(tp, None)
            if part is not None:
                self._unfinished -= part.unfinished
                parts.append(part)
        return parts

    def _revoke_holds(self, tps: set[TopicPartition]) -> bool:
        """True while a queued or in-flight batch, an unacknowledged dead letter, changelog record or parking
        write holds one of `tps`."""
        return (any(s.holds(tps) for s in self.senders.values()) or self._dlq_holds(tps)
                or (self.changelog is not None and self.changelog.holds(tps))
                or any(self._parking_writes[tp] for tp in tps if tp in self._parking_writes))

    def _dlq_holds(self, tps: set[TopicPartition]) -> bool:
        letters = self._letters
        return any(letters[tp] for tp in tps if tp in letters)

    # -- processing ------------------------------------------------------------------------------
    async def _process(self) -> None:
        """Hand each consumed batch to the preparer (inline or a worker), in consumption order."""
        loop = asyncio.get_running_loop()
        while True:
            messages, generation, handed_at = await self._inbox.get()
            self.stats.consumed_first(self.clock())  # before the first batch is prepared: its CPU counts
            if self._draining:
                self._source_for(messages[0].topic()).taken(len(messages))
                continue  # not received, so never committed: the next owner reads them again
            if self._registry is not None:
                await self._fetch_schemas(messages)
            values = [m.value() for m in messages]
            now = int(self.clock())
            future: asyncio.Future[list[Prepared]]
            if self._pool is None:
                future = loop.create_future()
                future.set_result(self.preparer.prepare(values, now))
            else:
                future = loop.run_in_executor(self._pool, prepare_in_worker, values, now, self.worker_schemas())
            await self._prepared.put((future, messages, generation, handed_at))

    async def _apply(self) -> None:
        """Apply prepared batches in order: track offsets, dead-letter, dedupe, batch."""
        while True:
            future, messages, generation, handed_at = await self._prepared.get()
            try:
                prepared = await future
            finally:
                self._source_for(messages[0].topic()).taken(len(messages))
            if self._draining:
                continue
            self._backlog = len(messages) >= self.settings.kafka.consume_batch_size
            self._handle(messages, generation, prepared, handed_at)
            self._after_change()

    async def _fetch_schemas(self, messages: list[Message]) -> None:
        assert self._registry is not None
        for schema_id in self.preparer.decoder.missing_schema_ids([m.value() or b"" for m in messages]):
            while True:
                try:
                    schema = await asyncio.to_thread(self._registry.writer_schema, schema_id)
                    break
                except CapiStreamError as exc:
                    if not exc.retriable:
                        raise
                    log.warning("schema_registry_unavailable", schema_id=schema_id, error=str(exc))
                    await asyncio.sleep(exc.retry_after or 0.0)
            self.add_writer_schema(schema_id, schema)

    def worker_schemas(self) -> Mapping[int, Any]:
        """The writer schemas for a worker call; never changed after it is handed out."""
        return self._writer_schemas

    def add_writer_schema(self, schema_id: int, schema: Any) -> None:
        """Learn a writer schema: a new mapping, so one already handed to a worker stays as it was."""
        self._writer_schemas = {**self._writer_schemas, schema_id: schema}
        self.preparer.add_writer_schemas({schema_id: schema})

    def _handle(self, messages: list[Message], generation: int, prepared: list[Prepared],
                handed_at: float = 0.0) -> None:
        """Track, dead-letter, dedupe and batch one prepared consumed batch; `handed_at`: when the source
        handed it over (wall clock; 0: not known, the event is left out of the added latency's parts).

        The loop runs for every consumed event, so what it calls is looked up once per batch. Whether a
        partition's messages are taken (assigned in this generation, tracker active) is decided once per
        partition and batch: only the rebalance callbacks change it, and they never run inside this loop.
        """
        now = self.clock()
        sent: list[Prepared] = []  # valid events, counted for signal quality once per batch
        identities: list[tuple[str, str, Identity]] = []  # their identities, checked once per batch
        dropped_all: list[tuple[str, str]] = []  # (field, reason) of every field dropped, counted once
        taken: dict[TopicPartition, PartitionOffsets | None] = {}  # per partition: its tracker, None: skip
        tracker_get = self.tracker.get
        assigned_gen = self._assigned_gen
        restoring = self._restoring
        dead_letters = self._dead
        parked_dest = self._parked_dest
        parking = self.parking
        # destinations whose events go to their parking topic: only the tick changes a parking mode
        parked_now = {name for name in parking if self._parked(name)} if parking else ()
        stats = self.stats
        admit = self._admit
        send, no_consent = Kind.SEND, Kind.NO_CONSENT
        for msg, prep in zip(messages, prepared, strict=True):
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None
            assert partition is not None
            assert offset is not None
            tp = (topic, partition)
            try:
                part = taken[tp]
            except KeyError:
                part = tracker_get(topic, partition)
                if part is not None and (not part.active or assigned_gen.get(tp, 1 << 62) > generation):
                    part = None
                taken[tp] = part
            if part is None:
                continue  # consumed before a revoke of this partition: the owner reads it again
            waiting = restoring.get(tp)
            if waiting is not None:
                waiting.append((msg, prep, generation))  # handled once the partition's state is restored
                continue
            part.received(offset)
            self._unfinished += 1
            stats.consumed += 1
            (kind, destination, body, event_name, event_id, event_time, reason, detail, decode_failed, dropped,
             _keys, _revenue, _has_value, ident) = prep
            parked = kind is send and destination in parked_now
            if kind is send:  # parked: no body kept, the parking topic gets the message's value
                item = Item(topic, partition, offset, msg.key(), msg.value(), msg.timestamp()[1], part, destination,
                            b"" if parked else body, event_name, event_id, event_time, None, None, handed_at, now)
            else:
                item = Item(topic, partition, offset, msg.key(), msg.value(), msg.timestamp()[1], part,
                            handed_at=handed_at, applied_at=now)
            dead = dead_letters.get(tp)
            if dead and dedupelog.dead_letter_seen(dead, offset, item.value):
                # dead-lettered before a crash or a rebalance (the changelog says so): not a second time
                stats.dead_letters_skipped += 1
                self._finish(item)
                continue
            if topic in parked_dest:
                parking[parked_dest[topic]].backlog = True
                origin = origin_of(msg.headers())
                item.origin = (origin.topic, origin.partition, origin.offset) if origin else (topic, partition, offset)
            if dropped:
                dropped_all.extend(dropped)
            if kind is send:
                if parked:
                    admit(item, now, True)  # deduped, then parked; counted for signal quality once read back
                    continue
                sent.append(prep)
                if ident is not None:
                    identities.append((destination, event_name, ident))
                admit(item, now, False)
            elif kind is no_consent:
                stats.rejected[reason] += 1
                stats.no_consent += 1
                self._finish(item)  # never sent, never kept
            else:
                if decode_failed:
                    stats.decode_failures += 1
                elif destination:
                    stats.rejected[reason] += 1
                    self.quality.invalid(destination, event_name or "?")
                self._dead_letter(item, reason, detail, event_name=event_name, event_id=event_id)
        if dropped_all:
            stats.dropped_fields.update(dropped_all)
        self.quality.count_many(sent)
        self.quality.identities(identities, now)

    def _admit(self, item: Item, now: float, parked: bool | None = None) -> None:
        """Dedupe on (dataset, event_name, event_id), then batch.

        A duplicate of an event acked for the same dataset is finished; of an in-flight one, held.
        An event of a parked destination goes to its parking topic once deduped here, where the keys of
        its source partition are (a copy already sent is not parked to be sent again); a parked copy
        holds no key. `parked`: whether the destination is parked, when the caller knows.
        """
        if parked is None:
            parked = self._parked(item.destination)
        if item.event_id:
            key = dedupe_key(self._datasets[item.destination], item.event_name, item.event_id)
            verdict = self.dedupe.check(key, now)
            if verdict is Verdict.SENT:
                self.stats.duplicates += 1
                self.quality.duplicate(item.destination, item.event_name)
                self._finish(item)
                return
            if verdict is Verdict.PENDING:
                self._waiters[key].append(item)
                return
            if parked:
                self.dedupe.release(key)  # NEW reserved it: nobody holds the key of a parked copy
            else:
                item.dedupe_key = key
        if parked:
            self._park(item)
            return
        for batch in self.batcher.add(item, self.monotonic()):
            self._submit(batch)

    def _submit(self, batch: Batch) -> None:
        """Hand a closed batch to its sender, or to the parking topic while its destination is parked."""
        if self._parked(batch.destination):
            for item in batch.items:
                self._unpend(item)
                self._park(item)
            return
        self.senders[batch.destination].submit(batch)

    def _idle_destinations(self) -> set[str]:
        """Destinations whose open batch may leave after batch.idle_linger_ms: the consumer has caught up
        (its last batch was not full) and the destination has a free request slot."""
        if self._backlog:
            return set()
        return {name for name, sender in self.senders.items() if sender.has_free_slot()}

    def _close_due(self) -> None:
        """Hand the batches that are due to their senders (the tick, and a sender whose slot was freed)."""
        for batch in self.batcher.due(self.monotonic(), self._idle_destinations()):
            self._submit(batch)

    def _tick_wait(self) -> float:
        """Until the next batch is due, at most TICK_S (the tick's other duties), at least MIN_TICK_S."""
        due = self.batcher.next_due(self._idle_destinations())
        if due is None:
            return TICK_S
        return min(TICK_S, max(MIN_TICK_S, due - self.monotonic()))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_wait())
            now = self.clock()
            self._close_due()
            if self.changelog is not None and abs(now - self._tombstoned_at) >= TOMBSTONE_EVERY_S:
                self._tombstoned_at = now
                self._tombstone_expired(now)
            if self.parking:
                self._step_parking()
            self._after_change()

    # -- parking ---------------------------------------------------------------------------------
    async def _ensure_parking_topics(self) -> None:
        """Create the parking topics that are missing, with as many partitions as the first source topic."""
        if not self.parking_topics:
            return
        kafka = self.settings.kafka
        conf = {**{k: v for k, v in kafka.consumer.items() if k.startswith(SHARED_PREFIXES)},
                "bootstrap.servers": kafka.bootstrap_servers}
        errors = await asyncio.to_thread(self._topic_creator, conf, list(self.parking_topics.values()), kafka.topics[0])
        for topic, error in errors.items():
            # parking writes are retried (and hold their offsets) until the topic can be written
            log.warning("parking_topic_not_created", topic=topic, error=error[:200])

    async def _watch_parking(self) -> None:
        """Every PARKING_LOOK_S, ask the broker what waits in each parking topic (parkwatch.py)."""
        assert self.parking_watch is not None
        watch = self.parking_watch
        failures = 0  # looks failed in a row
        while True:
            try:
                self._parking_views = await asyncio.to_thread(watch.look)
                failures = 0
            except KafkaException as exc:
                # the last view stays (it says when it was taken); the next look tries again. One failed
                # look is a passing state (a topic created a moment ago, a leader moving): info; looks
                # failing in a row are a warning
                failures += 1
                getattr(log, "info" if failures == 1 else "warning")(
                    "parking_look_failed", error=str(exc.args[0] if exc.args else exc)[:200], failures=failures)
            await asyncio.sleep(PARKING_LOOK_S)

    def _parked(self, destination: str) -> bool:
        park = self.parking.get(destination)
        return park is not None and park.mode is Mode.PARKED

    def _unpend(self, item: Item) -> None:
        """The item leaves for the parking topic: its dedupe key is pending no more (a held twin follows it)."""
        key = item.dedupe_key
        if key is not None:
            item.dedupe_key = None
            self._release(key)

    def _park(self, item: Item) -> None:
        """Write the item's original record to its destination's parking topic; it finishes on the ack.

        Until the consumer has paused the destination's parking partitions (assigned here), the item waits
        in memory: a record written before would be read straight back and parked a second time.
        """
        if not self._parking_paused(item.destination):
            self._park_queue[item.destination].append(item)
            return
        self._write_parked(item)

    def _parking_paused(self, name: str) -> bool:
        if self._draining:
            return True  # nothing is consumed any more
        topic = self.parking_topics[name]
        if self.parking_source is None:
            return True  # nothing reads the parking topics back here
        paused = self.parking_source.paused_partitions
        return all(tp in paused for tp, _ in self.tracker.items() if tp[0] == topic)

    def _flush_park_queue(self, name: str, force: bool = False) -> None:
        queue = self._park_queue.get(name)
        if queue and (force or self._parking_paused(name)):
            del self._park_queue[name]
            for item in queue:
                self._write_parked(item)

    def _unqueue_parking(self, tps: set[TopicPartition]) -> None:
        """Revoked or lost partitions: their items waiting to be parked are read again by the next owner."""
        for name, queue in list(self._park_queue.items()):
            self._park_queue[name] = [i for i in queue if i.tp not in tps]

    def _write_parked(self, item: Item) -> None:
        park = self.parking[item.destination]
        origin = Origin(*item.origin) if item.origin else Origin(item.topic, item.partition, item.offset)
        record = parked_record(origin, item.key, item.value, item.destination, park.reason,
                               event_time=item.event_time, event_name=item.event_name,
                               event_id=item.event_id if isinstance(item.event_id, str) else None)
        tp = item.tp
        self._parking_writes[tp] += 1

        def done() -> None:
            self._parking_writes[tp] -= 1
            if not self._parking_writes[tp]:
                del self._parking_writes[tp]
            park.count_parked(item.event_time)
            self._finish(item)
            self._after_change()

        self._parkers[item.destination].write(record, done)

    def _park_held(self, name: str) -> None:
        """Move what a parked destination holds in memory (open batch, sender queue) to its parking topic."""
        items = self.batcher.remove_destination(name) + self.senders[name].take_queued()
        for item in items:
            self._unpend(item)
            self._park(item)

    def _step_parking(self) -> None:
        """Advance each destination's parking state; park, drain and pause its parking partitions."""
        now = self.monotonic()
        paused = set()
        for name, park in self.parking.items():
            sender = self.senders[name]
            held = sender.queued_events + sender.inflight_events
            reader = self.parking_source
            lag, _parts = log_lag(reader.bounds if reader else {}, park.topic)
            stats_at = reader.bounds_at if reader else now
            lag_at = stats_at - self._stats_settle_s if stats_at else 0.0
            was = park.mode
            since = park.since
            change = park.step(now, halted=sender.is_halted(), held=held, idle=held == 0, lag=lag, lag_at=lag_at,
                               struggling=sender.state is not DestinationState.FLOWING)
            if change is Change.PARK:
                log.warning("parking_started", destination=name, reason=park.reason, topic=park.topic, held=held,
                            action="the destination's events go to its parking topic and are sent once it "
                                   "resumes (replace the token, or fix the cause and SIGHUP)")
            elif change is Change.DRAIN:
                if was is Mode.PARKED:
                    log.warning("parking_ended", destination=name, parked=park.parked,
                                seconds=round(now - since, 1))
                log.info("draining_started", destination=name, topic=park.topic, lag=lag)
                self._drain_announced.add(name)
            elif change is Change.LIVE and (name in self._drain_announced or park.drained):
                self._drain_announced.discard(name)
                log.info("draining_finished", destination=name, drained=park.drained, seconds=round(now - since, 1))
            elif (change is None and park.mode is Mode.DRAINING and lag and lag_at > park.since
                  and name not in self._drain_announced):
                # records parked by an earlier run or another member, found at start or on assignment
                log.info("draining_started", destination=name, topic=park.topic, lag=lag)
                self._drain_announced.add(name)
                park.backlog = True
            if park.mode is Mode.PARKED:
                self._park_held(name)  # batches a halted sender gave back, an open batch
            self._flush_park_queue(name, force=park.mode is not Mode.PARKED)
            if park.partitions_paused(held):
                paused.add(park.topic)
        self._paused_parking = frozenset(paused)

    def _after_change(self) -> None:
        """Store moved commit points and apply backpressure: on unfinished events for the whole
        assignment, and on the offsets each partition holds for that partition alone."""
        changed = self.tracker.changed()
        reader = self.parking_source
        if changed:
            if reader is None:
                self.source.store(changed)
            else:
                parked = self._parked_dest
                if main := {tp: o for tp, o in changed.items() if tp[0] not in parked}:
                    self.source.store(main)
                if back := {tp: o for tp, o in changed.items() if tp[0] in parked}:
                    reader.store(back)
        bound = self.settings.pipeline.max_in_flight_events
        if not self.source.want_paused and self._unfinished >= bound:
            self.source.want_paused = True
        elif self.source.want_paused and not self._draining and self._unfinished < bound * RESUME_FRACTION:
            self.source.want_paused = False
        held_bound = self.settings.pipeline.max_held_per_partition
        was = self.source.want_paused_partitions
        if reader is not None:
            reader.want_paused = self.source.want_paused  # the memory bound holds for both
            was = was | reader.want_paused_partitions
        parking = self._paused_parking
        held = frozenset(
            tp for tp, part in self.tracker.items()
            if part.in_flight >= (held_bound * RESUME_FRACTION if tp in was else held_bound) or tp[0] in parking
        )
        if reader is None:
            if held != was:
                self.source.want_paused_partitions = held
            return
        main_held = frozenset(tp for tp in held if tp[0] not in self._parked_dest)
        if main_held != self.source.want_paused_partitions:
            self.source.want_paused_partitions = main_held
        if (back_held := held - main_held) != reader.want_paused_partitions:
            reader.want_paused_partitions = back_held

    # -- outcomes --------------------------------------------------------------------------------
    def _finish(self, item: Item) -> None:
        if item.offsets.active:  # an inactive tracker's events were taken out of the count when it went
            self._unfinished -= 1
        item.finish()

    def _acked(self, batch: Batch) -> None:
        """Meta acknowledged the batch: its keys are SENT; its events finish once the changelog has them."""
        now = self.clock()
        now_ms = now * 1000
        self.stats.batches_acked += 1
        self.stats.events_acked += len(batch.items)
        self.stats.batch_acked(now)
        items = batch.items
        # figures per batch: one call each, the loops inside them
        latencies = [now_ms - item.append_ms for item in items]
        self.stats.latencies(latencies, batch.meta_s * 1000)
        if batch.closed_at and batch.sent_at:
            # the batch's times are on the monotonic clock; the items' on the wall clock
            shift = now - self.monotonic()
            self.stats.added_parts([(item.append_ms / 1000, item.handed_at, item.applied_at)
                                    for item in items[::PART_STRIDE] if item.handed_at],
                                   batch.closed_at + shift, batch.sent_at + shift, now, batch.meta_s)
        self.quality.acknowledged_batch(batch.destination, [item.event_name for item in items],
                                        [ms / 1000 for ms in latencies])
        self.stats.freshness.observe_many([now - item.event_time for item in items])
        acked: dict[TP, list[tuple[int, float]]] = {}  # source partition -> (key, accepted) for its changelog
        park = self.parking.get(batch.destination)
        if park is not None:
            park.drained += sum(1 for item in items if item.origin is not None)
        changelog, owned, parts, waiters = self.changelog, self._owned, self._parts, self._waiters
        pending_since, confirm = self.dedupe.accepted_at, self._confirm
        for item in items:
            key = item.dedupe_key
            if key is None:
                continue
            # an event read back from a parking topic is deduped under the partition it came from
            origin = item.origin
            tp = (item.topic, item.partition) if origin is None else (origin[0], origin[1])
            if changelog is None:
                confirm(item, key, now, 0)
            elif tp in owned:
                accepted = pending_since(key)
                if confirm(item, key, now, parts[tp]) and accepted is not None:
                    if (entries := acked.get(tp)) is None:
                        entries = acked[tp] = []
                    entries.append((key, accepted))
            elif origin is not None and tp[0] in changelog.topics:
                # read back from a parking topic, of a source partition another member owns: its key
                # is held here under that partition (a later parked copy drained here is a duplicate)
                # and written to that partition's changelog, which its owner restores on assignment
                accepted = pending_since(key)
                if confirm(item, key, now, self._part(tp)) and accepted is not None:
                    acked.setdefault(tp, []).append((key, accepted))
            else:
                # its partition went to another member, whose store it must not shadow here
                with contextlib.suppress(NotPendingError):
                    self.dedupe.release(key)
            if waiters and key in waiters:
                for twin in waiters.pop(key):
                    self.stats.duplicates += 1
                    self.quality.duplicate(twin.destination, twin.event_name)
                    self._finish(twin)
        # one record per source partition of the batch (dedupelog: a bundle), not one per key
        records = [(tp, *dedupelog.bundle_record(entries)) for tp, entries in acked.items()]
        if self.changelog is None or not records:
            self._finish_all(items)
        else:
            # the offsets of acked events are stored for commit only once the broker has their keys: a
            # crash before that re-sends at most these events, never one whose key was restorable
            drained = Counter(item.tp for item in items if item.origin is not None)
            self._parking_writes.update(drained)

            def written() -> None:
                for tp, count in drained.items():
                    self._parking_writes[tp] -= count
                    if not self._parking_writes[tp]:
                        del self._parking_writes[tp]
                self._finish_all(items)

            self.changelog.write(records, written)

    def _confirm(self, item: Item, key: int, now: float, part: int) -> bool:
        try:
            return self.dedupe.confirm(key, now, part)
        except NotPendingError:
            # released meanwhile (abandoned in a revoke): Meta has it anyway; never stop the pipeline
            log.warning("dedupe_confirm_not_pending", destination=item.destination)
            return False

    def _finish_all(self, items: list[Item]) -> None:
        """`_finish` for each item (inlined: an acknowledged batch finishes up to 1,000), then the backpressure."""
        unfinished = self._unfinished
        for item in items:
            offsets = item.offsets
            if offsets.active:
                unfinished -= 1
            offsets.finish(item.offset)
        self._unfinished = unfinished
        self._after_change()

    def _rejected(self, item: Item, answer: Answer) -> None:
        """Meta refuses this event on its own: dead-letter it with Meta's code and subcode."""
        self.quality.refused_by_meta(item.destination, item.event_name)
        self._dead_letter(item, META_REJECTED, answer.title or "refused by Meta", code=answer.code,
                          subcode=answer.subcode, event_name=item.event_name, event_id=item.event_id)

    def _expired(self, item: Item) -> None:
        """The sender gave up on this event at its deadline: dead-letter it so its partition moves on."""
        self._dead_letter(item, DELIVERY_DEADLINE, "not acknowledged by Meta before event_time + 7 days less "
                          "send.deadline_margin_s", event_name=item.event_name, event_id=item.event_id)

    def _dead_letter(self, item: Item, reason: str, detail: str, *, code: int | None = None,
                     subcode: int | None = None, event_name: str = "", event_id: Any = None) -> None:
        self.stats.dead_lettered[reason] += 1
        # an event read back from a parking topic names the position it was first consumed at (what `dlq
        # show` prints and `dlq redrive` goes back to), and where it was parked beside it
        topic, partition, offset = item.origin or (item.topic, item.partition, item.offset)
        extra = drained_letter_extra(item.topic, item.partition, item.offset) if item.origin else ()
        letter = DeadLetter(topic, partition, offset, item.key, item.value, reason, detail,
                            code, subcode, event_name if isinstance(event_name, str) else "",
                            event_id if isinstance(event_id, str) else None, extra=extra)
        log.info("dead_lettered", reason=reason, topic=topic, partition=partition, offset=offset,
                 code=code, subcode=subcode, **({"parked_at": f"{item.topic}[{item.partition}]@{item.offset}"}
                                                if item.origin else {}))

        tp = item.tp
        self._letters[tp] += 1

        def done() -> None:
            self._letters[tp] -= 1
            if not self._letters[tp]:
                del self._letters[tp]
            if item.dedupe_key is not None:
                self._release(item.dedupe_key)
            if item.origin is not None and item.destination in self.parking:
                self.parking[item.destination].drained += 1
            self._finish(item)
            self._after_change()

        def recorded() -> None:
            # the letter is on the broker: record its offset, so a re-read after a crash or a rebalance
            # does not write it a second time; the offset is stored for commit once both are acked
            if self.changelog is None or item.tp not in self._owned:
                done()
                return
            at = self.clock()
            dead = self._dead.setdefault(item.tp, {})
            dead[item.offset] = (at, dedupelog.fingerprint(item.value))
            self.changelog.write([(item.tp, *dedupelog.dead_record(item.offset, at, item.value))], done)

        self.dlq.write(letter, recorded)

    def _release(self, key: int) -> None:
        """A pending event will not be acked by us: forget it, and let one held twin take its place."""
        self.dedupe.release(key)
        twins = [t for t in self._waiters.pop(key, ()) if t.offsets.active]
        now = self.clock()  # wall clock: the dedupe window is Meta's
        for twin in twins:
            self._admit(twin, now)

    def _abandon(self, items: list[Item]) -> None:
        for item in items:
            if item.dedupe_key is not None:
                self._release(item.dedupe_key)

    def _drop_waiters(self, tps: set[TopicPartition]) -> None:
        for key in list(self._waiters):
            kept = [t for t in self._waiters[key] if t.tp not in tps]
            if kept:
                self._waiters[key] = kept
            else:
                del self._waiters[key]

    # -- the dedupe changelog ----------------------------------------------------------------------
    async def _ensure_changelog_topics(self) -> None:
        """Create the changelog topics of the source topics that exist (the others on their assignment)."""
        assert self.changelog is not None
        changelog = self.changelog
        try:
            counts = await asyncio.to_thread(changelog.source_partitions, self.settings.kafka.topics)
            await asyncio.to_thread(changelog.ensure_topics, counts, self._changelog_configs())
        except CapiStreamError as exc:
            # the broker may be starting: the restores of assigned partitions create what is missing
            log.warning("changelog_topics_not_ready", error=str(exc)[:200])

    def _changelog_configs(self) -> dict[str, str]:
        bucket_ms = max(1000, round(self.dedupe.bucket_s * 1000))
        return {
            # compaction keeps the latest record of each key; delete removes what outlived the window
            # (an entry a crash left untombstoned), and lets --forget-dedupe truncate the topic
            "cleanup.policy": "compact,delete",
            "retention.ms": str(dedupelog.retention_ms(self.dedupe)),
            # segments roll once a bucket, so compaction and retention act on closed segments in time
            "segment.ms": str(bucket_ms),
            # a tombstone stays a bucket, long enough for a restore that is reading past it
            "delete.retention.ms": str(bucket_ms),
            "min.compaction.lag.ms": "0",
        }

    def _part(self, tp: TP) -> int:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = len(self._parts)
        return part

    async def _restore(self, tp: TP) -> None:
        """Read `tp`'s changelog partition to its end into the store, then let the partition flow."""
        assert self.changelog is not None
        changelog = self.changelog
        part = self._part(tp)
        attempt = 0
        if self._changelog_topics is not None:
            # the start creates the changelog topics and waits for their leaders: a read meanwhile fails
            await asyncio.wait([self._changelog_topics])
        while True:
            started = time.monotonic()
            restore = dedupelog.Restore(self.dedupe, part, self.clock())
            try:
                if attempt:
                    counts = await asyncio.to_thread(changelog.source_partitions, [tp[0]])
                    await asyncio.to_thread(changelog.ensure_topics, counts, self._changelog_configs())
                await changelog.read(tp, restore.apply)
                break
            except CapiStreamError as exc:
                attempt += 1
                self.stats.restore_failures += 1
                self.dedupe.drop_part(part)
                # a first failure is retried at once after creating what is missing (a source topic that
                # appeared after the start has no changelog topic yet; a topic created a moment ago whose
                # leader does not answer yet): info; a second one is a warning
                getattr(log, "info" if attempt == 1 else "warning")(
                    "dedupe_restore_failed", topic=tp[0], partition=tp[1], attempt=attempt, error=str(exc)[:200])
                # the next attempt creates the topic if it is missing; the first one comes soon
                await asyncio.sleep(RESTORE_FIRST_RETRY_S if attempt == 1 else RESTORE_RETRY_S)
        seconds = time.monotonic() - started
        self._dead[tp] = restore.dead
        tombstones = restore.tombstones()
        changelog.write([(tp, key, None) for key in tombstones])
        self.stats.restores += 1
        self.stats.restore_records += restore.records
        self.stats.restore_bytes += restore.nbytes
        self.stats.restore_seconds += seconds
        log.info("dedupe_restored", topic=tp[0], partition=tp[1], entries=restore.records, bytes=restore.nbytes,
                 keys=restore.keys, dead_letters=len(restore.dead), tombstoned=len(tombstones),
                 unknown=restore.unknown, seconds=round(seconds, 3))
        self._restores.pop(tp, None)
        waiting = self._restoring.pop(tp, [])
        self.source.release([tp])
        for msg, prep, generation in waiting:
            self._handle([msg], generation, [prep])
        self._after_change()

    def _stop_restores(self, tps: set[TP]) -> None:
        for tp in tps:
            task = self._restores.pop(tp, None)
            if task is not None:
                task.cancel()
            self._restoring.pop(tp, None)

    def _forget_partitions(self, tps: set[TP]) -> None:
        """Drop the revoked or lost partitions' keys and dead letters from memory: their new owner restores them."""
        if self.changelog is None:
            return
        for tp in tps:
            self._owned.discard(tp)
            part = self._parts.get(tp)
            if part is not None:
                self.dedupe.drop_part(part)
            self._dead.pop(tp, None)

    def _tombstone_expired(self, now: float) -> None:
        """Tombstone the dead-letter entries whose window is over. Acknowledged keys need none: their bundles
        leave the changelog by retention (dedupelog)."""
        assert self.changelog is not None
        self.dedupe.advance(now)
        records: list[tuple[TP, bytes, bytes | None]] = []
        for tp, dead in self._dead.items():
            gone = [offset for offset, (at, _check) in dead.items() if not self.dedupe.live(at, now)]
            for offset in gone:
                del dead[offset]
            records.extend((tp, dedupelog.dead_tombstone(offset), None) for offset in gone)
        if records:
            self.changelog.write(records)

    # -- views -----------------------------------------------------------------------------------
    @property
    def restoring(self) -> int:
        """Assigned partitions whose changelog is still being read (their messages wait)."""
        return len(self._restoring)

    @property
    def unfinished(self) -> int:
        """Consumed events of assigned partitions not finished yet."""
        return self._unfinished

    @property
    def max_held_offsets(self) -> int:
        """The most offsets one assigned partition holds until it can commit (see max_held_per_partition)."""
        return max((part.in_flight for part in self.tracker.partitions()), default=0)

    def oldest_unacked_event_time(self) -> int | None:
        """event_time of the oldest event consumed but not yet acknowledged (Meta refuses it after 7 days)."""
        times = [i.event_time for i in self.batcher.items() if i.event_time]
        for sender in self.senders.values():
            times.extend(i.event_time for i in sender.items() if i.event_time)
        for twins in self._waiters.values():
            times.extend(t.event_time for t in twins if t.event_time)
        return min(times) if times else None

    def destination_states(self) -> dict[str, DestinationState]:
        """Each destination's current state, by name: the sender's, or parked / draining (parking.py)."""
        out = {}
        for name, sender in self.senders.items():
            park = self.parking.get(name)
            state = sender.state
            if park is not None and park.mode is Mode.PARKED:
                state = DestinationState.PARKED
            elif (park is not None and park.mode is Mode.DRAINING and park.backlog
                  and state is not DestinationState.HALTED):
                state = DestinationState.DRAINING
            out[name] = state
        return out

    def parking_rows(self) -> list[tuple[str, int, int, int, int]]:
        """Per destination with parking: (name, parked events, drained events, parking lag, oldest parked
        event_time or 0).

        Lag and oldest come from the broker's answer about the whole parking topic (parkwatch.py: every
        record the parking group has not committed, the event time of the first waiting record of each
        partition), so they hold while the partitions are paused, after a restart and on every member;
        until the first answer, the lag of the parking partitions assigned here. The oldest is also never
        younger than the oldest event this process parked since its last drain ended.
        """
        bounds = self.parking_source.bounds if self.parking_source is not None else {}
        rows = []
        for name, park in self.parking.items():
            view = self._parking_views.get(name)
            lag = view.lag if view is not None else log_lag(bounds, park.topic)[0]
            oldest = oldest_of(park.oldest_event_time, view.oldest_event_time if view is not None else 0)
            rows.append((name, park.parked, park.drained, lag, oldest))
        return rows

    def probe_outcomes(self) -> dict[tuple[str, str], int]:
        """(destination, outcome) -> probes of the halted destination with that outcome (sender.probe_halted)."""
        return {(name, outcome): count for name, sender in self.senders.items()
                for outcome, count in sender.probes.items()}

    def _sources(self) -> list[KafkaSource]:
        return [self.source] if self.parking_source is None else [self.source, self.parking_source]

    def _source_for(self, topic: str | None) -> KafkaSource:
        """The consumer that reads `topic`: the parking reader for parking topics, else the source."""
        if self.parking_source is not None and topic in self._parked_dest:
            return self.parking_source
        return self.source
