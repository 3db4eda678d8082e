"""Chaos: members join and leave a group while events flow, and one member is SIGKILLed (issue #12).

Three processes in turn: A starts; B joins; A is SIGKILLed (the group drops it after its 6 s session and
B takes its partitions from the last commits); C joins; B leaves with SIGTERM; C ends the run. The apps
publish throughout, with 5% duplicate event ids (twins, on the same partition). The chaos oracle then
requires: no valid event lost, nothing committed before it was acknowledged, repeats only among events
in flight at the kill or twins read by a new owner after a handoff (each member has its own dedupe
store), and every partition committed to its end. It reports how many events were sent more than once,
and why.

The apps publish a backlog, then RATE events/s until the last change settled (at most POOL events).
Knobs: CAPI_STREAM_REBALANCE_CHAOS_POOL (default 30,000) and CAPI_STREAM_CHAOS_SEED.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.chaos_oracle import (
    Key,
    Position,
    Snapshot,
    commit_problems,
    delivery_problems,
    offset_problems,
    repeat_problems,
    repeat_reasons,
)
from tests.support.harness import (
    APPS_A,
    APPS_B,
    PipelineProcess,
    Publisher,
    Scenario,
    consenting,
    metric,
    produce_records,
    read_topic,
    scrape,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

POOL_ENV = "CAPI_STREAM_REBALANCE_CHAOS_POOL"
SEED_ENV = "CAPI_STREAM_CHAOS_SEED"
DEFAULT_POOL = 30_000
PARTITIONS = 4
RATE = 400  # events/s published while the members come and go
BACKLOG = 3000  # published before the first member starts
WAIT_S = 120.0
SETTLE_S = 0.5  # after the SIGKILL, let a request it cut short land (or not) before the ledgers are read
EXTRA = """
[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[pipeline]
max_in_flight_events = 2000

[batch]
max_events = 100
linger_ms = 50

[send]
timeout_s = 15.0
rate_limit_rps = 20
"""


class Group:
    """The members of the run, their metrics ports and the oracle's snapshots."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.members: dict[str, PipelineProcess] = {}
        self.ports: dict[str, int] = {}
        self.snapshots: list[Snapshot] = []
        self.peak_rss: dict[str, float] = {}

    def owned(self, name: str) -> float:
        samples = scrape(self.ports[name])
        return metric(samples, "capi_stream_assigned_partitions")

    def settle(self, what: str) -> None:
        """Wait until the live members own every partition between them, each some."""
        live = [n for n, m in self.members.items() if m.alive()]

        def settled() -> bool:
            shares = [self.owned(n) for n in live]
            return sum(shares) == PARTITIONS and all(shares)

        assert wait_until(settled, WAIT_S), f"the group did not settle after {what}: {[self.owned(n) for n in live]}"

    def start(self, name: str) -> None:
        self.ports[name] = free_port()
        self.members[name] = self.sc.start_member(self.ports[name])

    def join(self, name: str) -> None:
        """Once more events flow, member `name` joins; snapshot once the group settled (a handoff)."""
        self.flowing(f"{name} joins")
        self.start(name)
        self.settle(f"{name} joined")
        self.snapshot(f"{name} joined", handoff=True)

    def snapshot(self, label: str, *, kill: bool = False, handoff: bool = False) -> None:
        """Committed offsets first, then the ledger: whatever was committed was done before it was read."""
        committed = {p: max(o, 0) for p, o in self.sc.committed().items()}
        self.snapshots.append(Snapshot(label, kill, committed, dict(self.sc.counts()), {}, handoff=handoff))

    def flowing(self, what: str) -> None:
        """Wait until more events are accepted, so the next change strikes a stream in flight."""
        floor = len(self.sc.counts())
        assert wait_until(lambda: len(self.sc.counts()) >= floor + 200, WAIT_S), f"events flow before {what}"


def test_members_joining_leaving_and_a_sigkill_under_load_lose_nothing(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """Joins, a graceful leave and a SIGKILL while events flow: nothing lost, every repeat explained."""
    pool = int(os.environ.get(POOL_ENV) or DEFAULT_POOL)
    seed = int(os.environ.get(SEED_ENV) or 7)
    sc = scenario_factory(partitions=PARTITIONS, extra=EXTRA, faults={"latency_ms": [20, 120], "seed": seed})
    records = consenting(generate(pool, seed=seed, now=int(time.time()), app_ids=APPS_A + APPS_B, duplicate_rate=0.05))
    dataset = sc.datasets
    backlog = produce_records(sc.bootstrap, sc.topic, records[:BACKLOG])
    publisher = Publisher(sc, records, RATE, start=backlog)
    publisher.start()
    group = Group(sc)
    try:
        group.start("A")
        group.settle("A started")
        group.join("B")
        group.flowing("A is killed")
        group.peak_rss["A"] = group.members["A"].peak_rss_mb()
        group.members["A"].kill()
        time.sleep(SETTLE_S)
        group.snapshot("SIGKILL of A", kill=True)
        group.settle("A was killed")  # B owns everything once A's session expired
        group.join("C")
        group.flowing("B leaves")
        group.peak_rss["B"] = group.members["B"].peak_rss_mb()
        assert group.members["B"].stop() == 0, f"B did not drain cleanly: {group.members['B'].log_lines()[-5:]}"
        group.settle("B left")
        group.snapshot("B left", handoff=True)
        assert publisher.is_alive() or len(sc.counts()) < publisher.produced, "the changes must strike a flow"
    finally:
        publisher.halt.set()
        publisher.join(WAIT_S)
    published = records[:publisher.produced]
    expected: set[Key] = {(dataset[r["app_id"]], r["event_name"], r["event_id"]) for r in published}
    assert len(expected) < len(published), "the stream must carry twins"
    source = read_topic(sc.bootstrap, sc.topic, publisher.produced, timeout=WAIT_S)
    assert len(source) == publisher.produced
    positions: dict[str, list[Position]] = {}
    for message in source:
        positions.setdefault(message.key().decode(), []).append((message.partition(), message.offset()))

    end = sc.end()
    assert wait_until(lambda: sc.committed() == end, WAIT_S), f"committed {sc.committed()} != end {end}"
    group.peak_rss["C"] = group.members["C"].peak_rss_mb()
    assert group.members["C"].stop() == 0

    counts = sc.counts()
    problems = [
        *delivery_problems(expected, counts, positions),
        *commit_problems(group.snapshots, expected, positions, {}),
        *repeat_problems(group.snapshots, counts, positions),
        *offset_problems(sc.committed(), end),
    ]
    reasons = repeat_reasons(group.snapshots, counts, positions)
    assert not problems, "\n".join(problems)
    assert reasons["unexplained"] == 0
    (kill,) = [s for s in group.snapshots if s.kill]
    assert any(kill.committed[p] < end[p] for p in end), "the kill must cut a stream in flight"
    repeats = sum(c - 1 for c in counts.values())
    print(f"rebalance chaos: {publisher.produced} events ({len(expected)} distinct), 3 members (2 joins, 1 leave, "
          f"1 SIGKILL), 0 lost, {repeats} sent more than once: {dict(reasons)}; peak RSS "
          f"{ {n: round(r) for n, r in group.peak_rss.items()} } MB")
