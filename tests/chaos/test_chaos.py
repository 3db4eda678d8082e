"""Chaos: the pipeline is SIGKILLed at seeded points and restarted, its broker restarts once on the same
data, Meta answers with 500s, timeouts and throttling, and a token expires and is rotated; still no valid
event is lost, repeats happen only among events in flight at a kill, every bad record is dead-lettered
once with its reason, and the group's offsets end at the end of the topic.

Short version (CI, about 2 minutes on 2 cores): `pytest tests/chaos`. Long version: raise the knobs,
e.g. `CAPI_STREAM_CHAOS_ROUNDS=12 CAPI_STREAM_CHAOS_EVENTS=60000 CAPI_STREAM_CHAOS_SEED=3 pytest tests/chaos`.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from stream.pipeline.deadletters import HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON
from stream.tools.kafka import LocalKafka, free_port
from stream.tools.samples import generate
from tests.support.chaos_oracle import (
    Key,
    Position,
    Snapshot,
    commit_problems,
    delivery_problems,
    letter_problems,
    offset_problems,
    repeat_problems,
    repeat_report,
)
from tests.support.harness import (
    APPS_A,
    APPS_B,
    PipelineProcess,
    Scenario,
    end_offsets,
    expected_keys,
    headers_of,
    metric,
    produce_raw,
    produce_records,
    read_topic,
    scrape,
    wait_until,
)

ROUNDS_ENV = "CAPI_STREAM_CHAOS_ROUNDS"
EVENTS_ENV = "CAPI_STREAM_CHAOS_EVENTS"
SEED_ENV = "CAPI_STREAM_CHAOS_SEED"
# Three kills, 6,000 events: every kind of fault at least once in about 2 minutes on the 2-core machine,
# where one broker restart alone takes 20-35 s.
DEFAULT_ROUNDS = 3
DEFAULT_EVENTS = 6000
# The short version ends in about 2 minutes: 10 minutes means a hang, which then fails with a traceback.
SHORT_TIMEOUT_S = 600


def _timeout_s() -> float:
    """The per-test timeout: the short version's, grown in proportion to a long version's rounds and events."""
    try:
        rounds = int(os.environ.get(ROUNDS_ENV, "").strip() or DEFAULT_ROUNDS)
        events = int(os.environ.get(EVENTS_ENV, "").strip() or DEFAULT_EVENTS)
    except ValueError:
        return SHORT_TIMEOUT_S  # the test itself reports the bad knob by name
    return SHORT_TIMEOUT_S * max(1.0, rounds / DEFAULT_ROUNDS, events / DEFAULT_EVENTS)


pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(_timeout_s())]
DEFAULT_SEED = 7
PARTITIONS = 4
# Every wait is generous: nothing here is timed, the waits only bound a hung run.
WAIT_S = 120.0
# After a SIGKILL, let a request or dead letter it cut short land (or not) before the ledgers are read.
SETTLE_S = 0.5
# Steps happen between these shares of the valid events accepted, so each one cuts a stream in flight.
FIRST_STEP, LAST_STEP = 0.05, 0.85
# Once shop is halted, the snapshot waits for a librdkafka statistics report made after the halt that
# says every stored offset is committed (capi_stream_uncommitted_partitions 0): a wrong store made before
# the halt was looked at has then been committed and shows in the snapshot. Reports come every 5 s.
# Small batches, a request rate limit and a small in-flight bound stretch the run over the steps (about
# 500 events/s per destination at most), and keep the consumer fetching throughout, across the broker
# restart. A 6 s session lets the group drop a killed member quickly (librdkafka's default is 45 s).
# The client timeout is shorter than the emulator's held "timeout" requests, which never land, so a
# timed-out request is never also accepted: every repeat must come from a kill.
EXTRA_CONFIG = """
[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[pipeline]
max_in_flight_events = 1000

[batch]
max_events = 50
linger_ms = 100

[send]
timeout_s = 2.0
concurrency = 2
rate_limit_rps = 10
backoff_initial_s = 0.05
backoff_max_s = 0.5
token_check_interval_s = 0.5
# No parking here: this scenario's oracle reads a committed offset as Meta's ack, which holds only while a
# halted or throttled destination keeps its events in memory. Parking (a commit once the event is in the
# parking topic) has its own chaos scenario, test_parked_destination.py.
park_after_s = 0
"""
FAULTS: dict[str, Any] = {"http_500": 0.06, "http_503": 0.03, "throttle": 0.06, "timeout": 0.04, "reset": 0.02,
                          "timeout_hold_s": 3.0}
BAD_REASONS = {"malformed": "bad_avro", "stale": "event_too_old", "purchase": "purchase_without_value",
               "app": "unknown_destination"}  # fmt: skip


def knob(name: str, default: int, least: int) -> int:
    """An integer setting from the environment, at least `least`; a bad value fails with its name."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        pytest.fail(f"{name}={raw!r}: an integer is needed", pytrace=False)
    if value < least:
        pytest.fail(f"{name}={value}: at least {least} is needed", pytrace=False)
    return value


@dataclasses.dataclass(frozen=True)
class Step:
    """One fault, applied once `at` of the valid events have been accepted."""

    at: float
    kind: str  # kill | broker | token


def chaos_plan(rounds: int, rng: random.Random) -> list[Step]:
    """`rounds` kills, one broker restart and one token rotation, at seeded points in seeded order."""
    kinds = ["kill"] * rounds + ["broker", "token"]
    rng.shuffle(kinds)
    points = sorted(rng.uniform(FIRST_STEP, LAST_STEP) for _ in kinds)
    return [Step(round(at, 3), kind) for at, kind in zip(points, kinds, strict=True)]


def bad_records(group: int, template: dict[str, Any], now: int) -> dict[str, dict[str, Any]]:
    """A stale event, an invalid Purchase and an unknown app, keyed by their event ids."""
    stale = {**template, "event_id": f"bad-stale-{group}", "event_time": now - 8 * 86400, "consent": True}
    purchase = {**template, "event_id": f"bad-purchase-{group}", "event_name": "Purchase", "consent": True,
                "custom_data": {**(template["custom_data"] or {}), "value": None, "currency": "USD"}}
    app = {**template, "event_id": f"bad-app-{group}", "app_id": "com.example.nobody", "consent": True}
    return {r["event_id"]: r for r in (stale, purchase, app)}


@dataclasses.dataclass
class Workload:
    """What was produced: the valid stream (with duplicates) and the bad records, keyed by message key."""

    records: list[dict[str, Any]]
    bad: dict[str, str]  # message key -> the reason its dead letter must carry
    produced: int


def produce_workload(sc: Scenario, events: int, groups: int, seed: int, now: int) -> Workload:
    """Produce `events` generated events in `groups` chunks, each chunk followed by one bad record of each kind."""
    records = list(generate(events, seed=seed, now=now, app_ids=APPS_A + APPS_B, duplicate_rate=0.05))
    bad: dict[str, str] = {}
    produced = 0
    size = -(-events // groups)
    for group in range(groups):
        produced += produce_records(sc.bootstrap, sc.topic, records[group * size:(group + 1) * size])
        key = f"bad-malformed-{group}"
        produce_raw(sc.bootstrap, sc.topic, [(key.encode(), b"\x02\xff\xfe not avro at all " + key.encode())])
        bad[key] = BAD_REASONS["malformed"]
        others = bad_records(group, records[group], now)
        produced += 1 + produce_records(sc.bootstrap, sc.topic, others.values())
        bad.update({k: BAD_REASONS[k.split("-")[1]] for k in others})
    return Workload(records, bad, produced)


def letters_now(sc: Scenario) -> list[tuple[Position, str]]:
    """Every dead letter so far as (source position, reason)."""
    total = end_offsets(sc.bootstrap, sc.dlq_topic, 1)[0]
    # the pipeline may still be writing letters: this snapshot is the topic below the end offset read above
    read = read_topic(sc.bootstrap, sc.dlq_topic, total, timeout=60) if total else []
    letters = [m for m in read if m.offset() < total]
    assert len(letters) == total, f"read {len(letters)} of the {total} dead letters"
    out = []
    for message in letters:
        headers = headers_of(message)
        out.append(((int(headers[HEADER_PARTITION]), int(headers[HEADER_OFFSET])), headers[HEADER_REASON]))
    return out


class Chaos:
    """Drives one run: the pipeline process, the steps, and a snapshot after each kill."""

    def __init__(self, sc: Scenario, broker: LocalKafka, expected: set[Key], rng: random.Random,
                 metrics_port: int) -> None:
        self.sc = sc
        self.metrics_port = metrics_port
        self.broker = broker
        self.expected = expected
        self.rng = rng
        self.snapshots: list[Snapshot] = []
        self.kills = 0
        self.proc: PipelineProcess = sc.start()

    def progress(self) -> float:
        """Share of the valid events accepted at least once."""
        return len(self.expected & set(self.sc.counts())) / len(self.expected)

    def await_(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for `condition`; fail with the pipeline's last log events if it died or time ran out."""
        ok = wait_until(lambda: not self.proc.alive() or condition(), WAIT_S)
        if not self.proc.alive():
            assert self.proc.proc is not None
            pytest.fail(f"the pipeline exited with {self.proc.proc.returncode} while waiting for {what}; "
                        f"its last log events: {self.tail()}", pytrace=False)
        assert ok, (f"waited {WAIT_S:.0f}s for {what}: progress {self.progress():.1%}, committed "
                    f"{self.sc.committed()}, end {self.sc.end()}; last log events: {self.tail()}")

    def tail(self, n: int = 12) -> list[str]:
        """The pipeline's last log events (names and reasons only; logs never hold tokens or raw PII)."""
        return [" ".join(str(e.get(k)) for k in ("event", "destination", "error", "reason") if e.get(k))
                for e in self.proc.log_lines()[-n:]]

    def snapshot(self, label: str, kill: bool, loss: bool = False) -> Snapshot:
        """Committed offsets first, then the ledgers: whatever was committed was done before they were read."""
        committed = {p: max(o, 0) for p, o in self.sc.committed().items()}
        letters = Counter(pos for pos, _ in letters_now(self.sc))
        snap = Snapshot(label, kill, committed, dict(self.sc.counts()), dict(letters), loss)
        self.snapshots.append(snap)
        return snap

    def story(self) -> str:
        """One line per snapshot: what was committed, accepted and dead-lettered at that instant."""
        end = self.sc.end()
        return "\n".join(
            f"  [{s.label}] committed {sum(s.committed.values())}/{sum(end.values())} {dict(s.committed)}, "
            f"accepted {len(s.accepted)} events {sum(s.accepted.values())} times, {sum(s.letters.values())} letters"
            for s in self.snapshots
        )

    def logged(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.proc.log_lines())

    def committed_total(self) -> int:
        return sum(max(o, 0) for o in self.sc.committed().values())

    def apply(self, step: Step) -> None:
        """Wait until `step.at` of the valid events are accepted and the group committed something since the
        last snapshot (so the step hits a working pipeline, and a pipeline that stopped committing after a
        restart fails here), then apply the step after a seeded pause."""
        since = sum(self.snapshots[-1].committed.values()) if self.snapshots else 0
        total = sum(self.sc.end().values())

        def ready() -> bool:
            committed = self.committed_total()
            return self.progress() >= step.at and (committed > since or committed >= total)

        self.await_(ready, f"{step.at:.0%} of the valid events accepted and a commit past {since} offsets")
        time.sleep(self.rng.uniform(0.0, 0.5))
        getattr(self, f"step_{step.kind}")()

    def step_kill(self) -> None:
        """SIGKILL the pipeline, snapshot, and start a new process in the same group."""
        self.kills += 1
        share = self.progress()
        self.proc.kill()
        time.sleep(SETTLE_S)
        self.snapshot(f"kill {self.kills} at {share:.0%} accepted", kill=True)
        self.proc = self.sc.start()

    def step_broker(self) -> None:
        """Stop the broker under the running pipeline, keep it down a moment, start it on the same data.

        The outage outlasts the 6 s session, so the pipeline loses its partitions and reads them again
        from the committed offsets once the broker is back; the next step waits for a new commit.
        """
        self.snapshot("before the broker restart", kill=False, loss=True)
        self.broker.stop()
        time.sleep(self.rng.uniform(1.0, 3.0))
        self.broker.start()

    def step_token(self) -> None:
        """Meta expires the shop token; once shop halts, the new token goes into its token file."""
        shop = self.sc.dests[0]
        new_token = f"tok-rotated-{uuid.uuid4().hex}"
        self.sc.emulator.rotate_token(shop.dataset_id, new_token)
        self.await_(lambda: self.logged("destination_halted"), "shop to halt on its expired token")
        halted_at = time.time()

        def all_stored_committed() -> bool:
            m = scrape(self.metrics_port)
            return (metric(m, "capi_stream_kafka_stats_timestamp_seconds") > halted_at
                    and metric(m, "capi_stream_uncommitted_partitions") == 0
                    and metric(m, "capi_stream_assigned_partitions") > 0)

        self.await_(all_stored_committed, "librdkafka to report every stored offset committed after the halt")
        self.snapshot("shop halted on the expired token", kill=False)
        shop.token_file.write_text(new_token + "\n")
        self.await_(lambda: self.logged("destination_resumed"), "shop to resume with the new token")


def test_kills_a_broker_restart_faults_and_a_token_rotation_lose_nothing(
    scenario_factory: Callable[..., Scenario], chaos_broker: LocalKafka,
) -> None:
    """Under seeded SIGKILLs, a broker restart, Meta faults and a token rotation: no loss, repeats only in flight."""
    rounds = knob(ROUNDS_ENV, DEFAULT_ROUNDS, least=1)
    events = knob(EVENTS_ENV, DEFAULT_EVENTS, least=200)
    seed = knob(SEED_ENV, DEFAULT_SEED, least=0)
    rng = random.Random(seed)
    plan = chaos_plan(rounds, rng)
    context = f"seed {seed}, rounds {rounds}, events {events}, plan {[(s.kind, s.at) for s in plan]}"

    metrics_port = free_port()
    sc = scenario_factory(partitions=PARTITIONS, extra=f"{EXTRA_CONFIG}\n[metrics]\nport = {metrics_port}\n",
                          faults={**FAULTS, "seed": seed})
    now = int(time.time())
    work = produce_workload(sc, events, groups=rounds + 2, seed=seed, now=now)
    assert len({r["event_id"] for r in work.records}) < len(work.records), "the stream must carry duplicates"
    expected = expected_keys(work.records, now, sc.routes)
    source = read_topic(sc.bootstrap, sc.topic, work.produced, timeout=120)
    assert len(source) == work.produced, f"read back {len(source)} of {work.produced} produced messages"
    positions: dict[str, list[Position]] = {}
    bad: dict[Position, str] = {}
    for message in source:
        key = message.key().decode()
        if key in work.bad:
            bad[(message.partition(), message.offset())] = work.bad[key]
        else:
            positions.setdefault(key, []).append((message.partition(), message.offset()))

    chaos = Chaos(sc, chaos_broker, expected, rng, metrics_port)
    for step in plan:
        chaos.apply(step)
    end = sc.end()
    chaos.await_(lambda: sc.committed() == end, "every partition committed to its end")
    # a kill can be the last step, and the committed offsets can be at their end already: a SIGTERM before
    # the new process has installed its handlers ends it by default (-15), which would say nothing of its drain
    chaos.await_(lambda: chaos.logged("pipeline_started"), "the last pipeline process to start")
    assert chaos.proc.stop() == 0, f"the last pipeline process did not drain cleanly: {chaos.tail()}"

    counts = sc.counts()
    letters = letters_now(sc)
    problems = [
        *delivery_problems(expected, counts, positions),
        *commit_problems(chaos.snapshots, expected, positions, bad),
        *repeat_problems(chaos.snapshots, counts, positions),
        *letter_problems(chaos.snapshots, bad, letters),
        *offset_problems(sc.committed(), end),
    ]
    assert not problems, f"{context}\n{chaos.story()}\n" + "\n".join(problems)

    # the chaos was real: every fault kind struck, the token expired and came back, the kills cut work
    faults = sc.emulator.stats()["faults"]
    assert all(faults.get(kind, 0) > 0 for kind in ("http_500", "throttle", "timeout")), f"faults {faults}"
    kills = [s for s in chaos.snapshots if s.kill]
    assert len(kills) == rounds
    assert all(any(s.committed[p] < end[p] for p in end) for s in kills), "each kill must cut a stream in flight"
    repeats = sum(c - 1 for c in counts.values())
    print(f"chaos: {context}; {len(expected)} valid events, {len(bad)} bad records, {repeats} repeats "
          f"after {rounds} kills, faults {faults}\n{chaos.story()}\n"
          f"chaos: {repeat_report(expected, counts, bad, letters)}")
