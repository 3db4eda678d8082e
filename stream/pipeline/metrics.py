"""Prometheus metrics and health endpoints, read from the pipeline's state at scrape time.

Nothing on the hot path touches prometheus-client: the pipeline keeps plain counters (stats.py,
quality.py) and a collector turns them into metric families when Prometheus scrapes `/metrics`.
`/healthz`: the process and its event loop are alive. `/readyz`: partitions assigned, the broker
reachable, no destination halted or failing, no dead letter failing (the body names them and every
destination's state). Labels hold names, codes and reasons only: never a value or a token.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator, Mapping, Set
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.errors import ConfigError
from stream.logs import dropped_lines
from stream.pipeline.quality import MATCH_KEYS, Quality
from stream.pipeline.sender import DestinationState
from stream.pipeline.stats import Histogram, Stats
from stream.pipeline.tasks import cancel_and_wait

if TYPE_CHECKING:
    from stream.pipeline.canary import Canary

PREFIX = "capi_stream_"
# the loop beats once a second; three missed beats and /healthz fails
HEARTBEAT_S = 1.0
STUCK_AFTER_S = 5.0
# a broker error younger than this makes /readyz fail
BROKER_ERROR_WINDOW_S = 30.0
BROKER_DOWN_ERRORS = frozenset({"_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE"})


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _labelled(kind: type, name: str, doc: str, labels: list[str], rows: dict[tuple[str, ...], float]) -> Metric:
    family: Metric = kind(PREFIX + name, doc, labels=labels)
    for key, value in sorted(rows.items()):
        family.add_metric(list(key), value)  # type: ignore[attr-defined]
    return family


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(PREFIX + name, doc, buckets=hist.cumulative(), sum_value=hist.total)


class SourceView(Protocol):
    """What the metrics read of the Kafka source."""

    @property
    def lag(self) -> Mapping[tuple[str, int], int]: ...
    @property
    def assignment(self) -> set[tuple[str, int]]: ...
    @property
    def paused(self) -> bool: ...
    @property
    def paused_partitions(self) -> frozenset[tuple[str, int]]: ...
    @property
    def last_error(self) -> str: ...
    @property
    def last_error_at(self) -> float: ...
    @property
    def uncommitted_partitions(self) -> int: ...
    @property
    def stats_at(self) -> float: ...


class DedupeView(Protocol):
    """What the metrics read of the dedupe store."""

    def __len__(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def evictions(self) -> int: ...


class DeadLettersView(Protocol):
    """What the metrics read of the dead-letter writer."""

    @property
    def pending(self) -> int: ...
    @property
    def omitted(self) -> int: ...
    @property
    def failures(self) -> Mapping[str, int]: ...
    @property
    def retrying(self) -> Set[Any]: ...


class PipelineView(Protocol):
    """What the metrics server reads of the running pipeline (the runner's `Pipeline` is one)."""

    @property
    def stats(self) -> Stats: ...
    @property
    def quality(self) -> Quality: ...
    @property
    def source(self) -> SourceView: ...
    @property
    def dedupe(self) -> DedupeView: ...
    @property
    def dlq(self) -> DeadLettersView: ...
    @property
    def unfinished(self) -> int: ...
    @property
    def restoring(self) -> int: ...
    @property
    def max_held_offsets(self) -> int: ...
    def clock(self) -> float: ...
    def oldest_unacked_event_time(self) -> int | None: ...
    def destination_states(self) -> Mapping[str, DestinationState]: ...
    def parking_rows(self) -> list[tuple[str, int, int, int, int]]: ...
    def probe_outcomes(self) -> Mapping[tuple[str, str], int]: ...
    @property
    def canaries(self) -> Mapping[str, Canary]: ...


def check_port_free(host: str, port: int) -> None:
    """ConfigError when `port` on `host` cannot be bound now (taken by another process, or no such address).

    Bound as aiohttp binds (SO_REUSEADDR), so a port in TIME_WAIT passes and a listening one does not.
    """
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"metrics.port: {host}:{port} is not free: {exc.strerror} (another process has "
                              "it? pick another port, or 0 for no metrics server)") from exc


def metrics_client_id(port: int) -> str:
    """The consumer client id of a member serving /metrics on `port`: `capi-stream status` reads it from
    the group's description to find the member's metrics (tools.status.metrics_url)."""
    return f"capi-stream-metrics-{port}"


class PipelineCollector(Collector):
    """Turns the pipeline's counters into Prometheus metric families on each scrape."""

    def __init__(self, pipeline: PipelineView) -> None:
        self.p = pipeline

    def collect(self) -> Iterator[Metric]:
        p, s, q = self.p, self.p.stats, self.p.quality
        yield _counter("consumed", "Kafka messages consumed", s.consumed)
        yield _counter("decode_failures", "messages whose value could not be decoded", s.decode_failures)
        yield _labelled(CounterMetricFamily, "dropped_fields", "fields dropped by normalization",
                        ["field", "reason"], dict(s.dropped_fields.items()))
        yield _labelled(CounterMetricFamily, "rejected", "events rejected by validation (incl. no_consent)",
                        ["reason"], {(k,): v for k, v in s.rejected.items()})
        yield _counter("duplicates", "duplicates not sent again", s.duplicates)
        yield _counter("batches_sent", "requests sent to Meta (retries included)", s.batches_sent)
        yield _counter("events_sent", "events sent to Meta (retries included)", s.events_sent)
        yield _counter("batches_acked", "requests Meta acknowledged", s.batches_acked)
        yield _counter("events_acked", "events Meta acknowledged", s.events_acked)
        yield _counter("batch_splits", "rejected batches split to isolate refused events", s.splits)
        yield _labelled(CounterMetricFamily, "retries", "retried requests by class", ["class"],
                        {(k,): v for k, v in s.retries.items()})
        yield _labelled(CounterMetricFamily, "dead_lettered", "events written to the dead-letter topic",
                        ["reason"], {(k,): v for k, v in s.dead_lettered.items()})
        yield _labelled(CounterMetricFamily, "dead_letter_failures", "dead-letter writes the broker did not take",
                        ["error"], {(k,): v for k, v in p.dlq.failures.items()})
        yield _counter("dead_letters_value_omitted", "dead letters too large to write whole, written without value",
                       p.dlq.omitted)
        yield GaugeMetricFamily(PREFIX + "dead_letters_pending", "dead letters not yet acknowledged by the broker",
                                value=p.dlq.pending)
        yield GaugeMetricFamily(PREFIX + "in_flight_events", "consumed events not finished yet", value=p.unfinished)
        yield _histogram("send_latency_seconds", "time of one request to Meta", s.send_latency)
        yield _histogram("event_freshness_at_ack_seconds", "ack time minus event_time", s.freshness)
        yield _labelled(GaugeMetricFamily, "consumer_lag", "messages behind the end of the partition",
                        ["topic", "partition"], {(t, str(pt)): v for (t, pt), v in p.source.lag.items()})
        oldest = p.oldest_unacked_event_time()
        yield GaugeMetricFamily(PREFIX + "oldest_unacked_event_age_seconds",
                                "age of the oldest unacknowledged event (Meta refuses events older than 7 days)",
                                value=max(0.0, p.clock() - oldest) if oldest else 0.0)
        yield _counter("log_lines_dropped", "log lines the log sink could not take (its reader went away)",
                       dropped_lines())
        yield GaugeMetricFamily(PREFIX + "dedupe_keys", "keys in the dedupe store", value=len(p.dedupe))
        yield GaugeMetricFamily(PREFIX + "dedupe_pending_keys", "keys of events being sent", value=p.dedupe.pending)
        yield _counter("dedupe_evictions", "dedupe keys dropped because the store was full", p.dedupe.evictions)
        yield _counter("dedupe_restores", "partitions whose dedupe state was read back from the changelog", s.restores)
        yield _counter("dedupe_restore_seconds", "seconds spent reading changelog partitions back", s.restore_seconds)
        yield _counter("dedupe_restore_records", "changelog records read back", s.restore_records)
        yield GaugeMetricFamily(PREFIX + "dedupe_restoring_partitions", "partitions paused until their restore ends",
                                value=p.restoring)
        yield _counter("dead_letters_skipped", "messages not dead-lettered again: the changelog says they were",
                       s.dead_letters_skipped)
        yield GaugeMetricFamily(PREFIX + "paused_partitions", "partitions paused for backpressure",
                                value=len(p.source.assignment if p.source.paused else p.source.paused_partitions))
        yield GaugeMetricFamily(PREFIX + "held_offsets_max",
                                "most offsets one partition holds until it can commit (max_held_per_partition)",
                                value=p.max_held_offsets)
        yield GaugeMetricFamily(PREFIX + "uncommitted_partitions",
                                "assigned partitions whose stored offset the group has not committed yet "
                                "(librdkafka statistics)", value=p.source.uncommitted_partitions)
        yield GaugeMetricFamily(PREFIX + "kafka_stats_timestamp_seconds",
                                "when librdkafka last reported its statistics (Unix time)", value=p.source.stats_at)
        yield GaugeMetricFamily(PREFIX + "assigned_partitions", "partitions assigned to this member",
                                value=len(p.source.assignment))
        states = GaugeMetricFamily(PREFIX + "destination_state", "1 for the destination's current state",
                                   labels=["destination", "state"])
        for name, state in sorted(p.destination_states().items()):
            for candidate in DestinationState:
                states.add_metric([name, candidate.value], 1.0 if state == candidate else 0.0)
        yield states
        yield from parking_families(p.parking_rows(), p.clock())
        yield _labelled(CounterMetricFamily, "probes",
                        "probes of a halted destination by outcome: ok (it resumed), refused (still halted: token, "
                        "permission or request), no_answer (5xx, throttled, timeout, not Meta's answer)",
                        ["destination", "outcome"], dict(p.probe_outcomes().items()))
        yield _labelled(CounterMetricFamily, "quality_events", "valid events (duplicates included)",
                        ["destination", "event_name"], dict(q.events.items()))
        yield _labelled(CounterMetricFamily, "quality_match_key", "valid events carrying a match key",
                        ["destination", "event_name", "key"],
                        {k: v for k, v in q.with_key.items() if k[2] in MATCH_KEYS})
        yield _labelled(CounterMetricFamily, "quality_with_identifier", "valid events with at least one match key",
                        ["destination", "event_name"], dict(q.with_identifier.items()))
        yield _labelled(CounterMetricFamily, "quality_revenue_events", "valid revenue events",
                        ["destination", "event_name"], dict(q.revenue.items()))
        yield _labelled(CounterMetricFamily, "quality_revenue_with_value", "revenue events with value and currency",
                        ["destination", "event_name"], dict(q.revenue_with_value.items()))
        yield _labelled(CounterMetricFamily, "quality_rejected", "events rejected by validation",
                        ["destination", "event_name"], dict(q.rejected.items()))
        yield _labelled(CounterMetricFamily, "quality_duplicates", "duplicates not sent again",
                        ["destination", "event_name"], dict(q.duplicates.items()))
        yield from quality_families(q)
        yield from canary_families(p.canaries)


def parking_families(rows: list[tuple[str, int, int, int, int]], now: float) -> Iterator[Metric]:
    """Per destination with parking on: parked and drained events, the parking lag, the oldest parked event."""
    yield _labelled(CounterMetricFamily, "parked_events", "events written to the destination's parking topic",
                    ["destination"], {(n,): parked for n, parked, _, _, _ in rows})
    yield _labelled(CounterMetricFamily, "drained_events",
                    "events read back from the parking topic and finished (acknowledged or dead-lettered)",
                    ["destination"], {(n,): drained for n, _, drained, _, _ in rows})
    yield _labelled(GaugeMetricFamily, "parking_lag",
                    "records waiting in the destination's parking topic: not committed by the parking group, "
                    "every partition (asked of the broker; every member reports the same)",
                    ["destination"], {(n,): lag for n, _, _, lag, _ in rows})
    yield _labelled(GaugeMetricFamily, "parked_oldest_event_age_seconds",
                    "age of the oldest event waiting in the destination's parking topic (the first uncommitted "
                    "record of each partition, or an older one this process parked since its last drain ended; "
                    "Meta refuses events older than 7 days = 604800 s; 0: none)",
                    ["destination"], {(n,): max(0.0, now - oldest) if oldest else 0.0 for n, _, _, _, oldest in rows})


def canary_families(canaries: Mapping[str, Canary]) -> Iterator[Metric]:
    """The outcome of each destination's canary (only destinations with canary_interval_s > 0)."""
    states = {name: c.state for name, c in canaries.items()}
    yield _labelled(GaugeMetricFamily, "canary_last_success_timestamp_seconds",
                    "when the destination's canary event was last acknowledged (0: never)", ["destination"],
                    {(n,): s.last_success_at for n, s in states.items()})
    yield _labelled(GaugeMetricFamily, "canary_last_error_timestamp_seconds",
                    "when the destination's canary last failed (0: never)", ["destination"],
                    {(n,): s.last_error_at for n, s in states.items()})
    yield _labelled(GaugeMetricFamily, "canary_last_error_code",
                    "Meta's error code of the last failed canary (else its HTTP status; 0: no answer or none)",
                    ["destination"], {(n,): s.last_error_code for n, s in states.items()})
    yield _labelled(CounterMetricFamily, "canary_runs",
                    "canary runs by outcome: ok, halt, retry, rejected, skipped, error", ["destination", "outcome"],
                    {(n, outcome): v for n, s in states.items() for outcome, v in s.runs.items()})


def quality_families(q: Quality) -> Iterator[Metric]:
    """User consistency, latency against the threshold, and the targets (counts only, never a value)."""
    yield _labelled(CounterMetricFamily, "quality_meta_rejected", "valid events Meta refused on their own",
                    ["destination", "event_name"], dict(q.meta_rejected.items()))
    yield _labelled(CounterMetricFamily, "quality_identity_checked",
                    "valid events whose external_id was already seen with an em or ph",
                    ["destination", "event_name"], dict(q.identity_checked.items()))
    yield _labelled(CounterMetricFamily, "quality_identity_inconsistent",
                    "valid events whose external_id came with another em or ph than remembered",
                    ["destination", "event_name"], dict(q.identity_inconsistent.items()))
    yield _labelled(CounterMetricFamily, "quality_identity_ids", "external_ids first seen (within the window)",
                    ["destination"], {(k,): v for k, v in q.ids.items()})
    yield _labelled(CounterMetricFamily, "quality_identity_inconsistent_ids",
                    "external_ids seen with a second em or ph", ["destination"],
                    {(k,): v for k, v in q.ids_inconsistent.items()})
    yield _labelled(GaugeMetricFamily, "quality_identity_tracked_ids", "external_ids the consistency tracker holds",
                    ["destination"], {(k,): len(t) for k, t in q.trackers.items()})
    yield _labelled(CounterMetricFamily, "quality_identity_evictions",
                    "external_ids forgotten because the tracker was full (quality.consistency_max_ids)",
                    ["destination"], {(k,): t.evictions for k, t in q.trackers.items()})
    yield _labelled(CounterMetricFamily, "quality_acked", "events Meta acknowledged",
                    ["destination", "event_name"], dict(q.acked.items()))
    yield _labelled(CounterMetricFamily, "quality_acked_on_time",
                    "events acknowledged within quality.latency_threshold_s of their Kafka append time",
                    ["destination", "event_name"], dict(q.acked_on_time.items()))
    t = q.targets
    yield _labelled(GaugeMetricFamily, "quality_target", "signal-quality targets ([quality] in the config)",
                    ["target"], {("identifier_share",): t.identifier_share,
                                 ("revenue_value_share",): t.revenue_value_share,
                                 ("acceptance_rate",): t.acceptance_rate,
                                 ("user_consistency",): t.user_consistency})
    yield GaugeMetricFamily(PREFIX + "quality_latency_threshold_seconds",
                            "an event acked within this long of its Kafka append time is on time",
                            value=t.latency_threshold_s)


class MetricsServer:
    """`/metrics`, `/healthz` and `/readyz` on the pipeline's own event loop."""

    def __init__(self, pipeline: PipelineView, host: str, port: int) -> None:
        self.pipeline = pipeline
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(pipeline))
        self._runner: web.AppRunner | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self.last_beat = time.monotonic()

    async def start(self) -> None:
        """Bind and serve; refuses to run twice."""
        if self._runner is not None:
            raise RuntimeError("metrics server already started")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"metrics.port: cannot serve /metrics on {self.host}:{self.port}: {exc.strerror} "
                              "(another process has the port? pick another, or 0 for none)") from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._beat_task = asyncio.create_task(self._beat(), name="heartbeat")

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        await cancel_and_wait([self._beat_task])
        self._beat_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _beat(self) -> None:
        while True:
            self.last_beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8")

    async def _healthz(self, _request: web.Request) -> web.Response:
        stuck = time.monotonic() - self.last_beat > STUCK_AFTER_S
        return web.json_response({"ok": not stuck}, status=503 if stuck else 200)

    def readiness(self) -> dict[str, object]:
        """Why the member is or is not ready."""
        p = self.pipeline
        broker_error = (p.source.last_error in BROKER_DOWN_ERRORS
                        and time.time() - p.source.last_error_at < BROKER_ERROR_WINDOW_S)
        states = p.destination_states()
        halted = sorted(n for n, st in states.items() if st in (DestinationState.HALTED, DestinationState.PARKED))
        failing = sorted(n for n, st in states.items() if st == DestinationState.FAILING)
        return {"assigned": bool(p.source.assignment), "broker_reachable": not broker_error, "halted": halted,
                "failing": failing, "dead_letters_failing": len(p.dlq.retrying),
                "destinations": {n: str(st) for n, st in p.destination_states().items()}}

    async def _readyz(self, _request: web.Request) -> web.Response:
        why = self.readiness()
        ok = (bool(why["assigned"]) and bool(why["broker_reachable"]) and not why["halted"]
              and not why["failing"] and not why["dead_letters_failing"])
        return web.json_response({"ok": ok, **why}, status=200 if ok else 503)
