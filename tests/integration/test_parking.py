"""One broken dataset never stalls the others: its events are parked in Kafka while it is halted (#19).

Real broker, the emulator over sockets, `capi-stream run` as a subprocess. Two datasets share every
partition; the in-flight bound is small, so without parking dataset B's held events would pause the
partitions for dataset A within a few hundred events. Times are scaled down: park_after_s = 1 s.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stream.config import parking_topic_name
from stream.pipeline.deadletters import HEADER_REASON
from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    APPS_B,
    PipelineProcess,
    Scenario,
    committed,
    end_offsets,
    expected_keys,
    headers_of,
    metric,
    produce_records,
    read_topic,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 2
BOUND = 600  # pipeline.max_in_flight_events: B's events while halted are several times this


def _config(port: int, *, park_after_s: float = 1.0, extra: str = "") -> str:
    return (
        "[pipeline]\n"
        f"max_in_flight_events = {BOUND}\n"
        "[send]\n"
        f"park_after_s = {park_after_s}\n"
        "token_check_interval_s = 0.3\n"
        "timeout_s = 15.0\n"
        f"{extra}"
        "[kafka.consumer]\n"
        '"statistics.interval.ms" = 500\n'
        # a SIGKILLed member leaves the group after 6 s, not librdkafka's 45 s
        '"session.timeout.ms" = 6000\n'
        '"heartbeat.interval.ms" = 1000\n'
        "[metrics]\n"
        f"port = {port}\n"
    )


def _events(n: int, apps: list[str], seed: int, prefix: str, now: int | None = None) -> list[dict[str, Any]]:
    records = list(generate(n, seed=seed, now=now or int(time.time()), app_ids=apps))
    for index, record in enumerate(records):
        record["consent"] = True
        record["event_id"] = f"{prefix}-{index}"
    return records


def _parking_topic(sc: Scenario, destination: str) -> str:
    return parking_topic_name("{group}.{destination}.parking", sc.group, destination)


def _parking_end(sc: Scenario, topic: str) -> dict[int, int]:
    return end_offsets(sc.bootstrap, topic, PARTITIONS)


def _parking_drained(sc: Scenario, topic: str) -> bool:
    end = _parking_end(sc, topic)
    got = committed(sc.bootstrap, f"{sc.group}.parking", topic, PARTITIONS)
    return all(got.get(p, -1) == end[p] or (end[p] == 0 and got.get(p, -1) in (-1, 0)) for p in end)


def _events_of(proc: PipelineProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in proc.log_lines() if e.get("event") == name]


def _break_b(sc: Scenario) -> str:
    """Rotate B's token at the emulator (B's requests now fail with a token error); return the new one."""
    fitness = sc.dests[1]
    token = f"tok-new-{uuid.uuid4().hex}"
    sc.emulator.rotate_token(fitness.dataset_id, token)
    return token


def test_a_flows_while_b_is_parked_and_b_drains_once_its_token_is_fixed(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """A is acknowledged wave after wave and the source commits to its end while B is parked; after B's
    token file is fixed every parked B event reaches Meta once and the parking topic commits to its end."""
    port = free_port()
    sc = scenario_factory(partitions=PARTITIONS, extra=_config(port))
    shop, fitness = sc.dests
    now = int(time.time())
    proc = sc.start()
    # normal latency first: both datasets flow
    warm = _events(50, APPS_A, 1, "warm-a") + _events(50, APPS_B, 2, "warm-b")
    produce_records(sc.bootstrap, sc.topic, warm)
    assert sc.all_committed(60)
    baseline = []
    for wave in range(3):
        a = _events(60, APPS_A, 50 + wave, f"base{wave}")
        warm += a
        sent = time.monotonic()
        produce_records(sc.bootstrap, sc.topic, a)
        want = expected_keys(a, now, sc.routes)
        assert wait_until(lambda want=want: want <= set(sc.counts()), 60, interval=0.05)
        baseline.append(time.monotonic() - sent)
    new_token = _break_b(sc)
    probe = _events(5, APPS_B, 3, "probe-b")
    produce_records(sc.bootstrap, sc.topic, probe)
    assert wait_until(lambda: bool(_events_of(proc, "destination_halted")), 30)
    # parked for being halted park_after_s, holding only the 5 probe events: the waves below would
    # otherwise pass send.park_share of the bound first on a fast machine (parked for held_share)
    assert wait_until(lambda: bool(_events_of(proc, "parking_started")), 30)
    # B is broken: waves of A and B on the same partitions; B alone is several times the in-flight bound
    waves = 8
    a_records: list[dict[str, Any]] = []
    b_records: list[dict[str, Any]] = probe
    latencies = []
    for wave in range(waves):
        a = _events(60, APPS_A, 100 + wave, f"a{wave}")
        b = _events(200, APPS_B, 200 + wave, f"b{wave}")
        a_records += a
        b_records += b
        sent = time.monotonic()
        # with copies of B events acknowledged before B broke: duplicates, dropped, never parked
        again = warm[50 + 5 * wave:55 + 5 * wave]
        produce_records(sc.bootstrap, sc.topic,
                        [r for pair in zip(a, b[:60], strict=True) for r in pair] + b[60:] + again)
        want = expected_keys(a, now, sc.routes)
        assert wait_until(lambda want=want: want <= set(sc.counts()), 60, interval=0.05), f"A's wave {wave} acked"
        latencies.append(time.monotonic() - sent)
    # every source offset is committed although B has not sent one of its events
    assert sc.all_committed(60), "the source partitions commit past B's parked events"
    expected_b = expected_keys(b_records, now, sc.routes)
    assert not {k for k in sc.counts() if k in expected_b}, "B's token is wrong: nothing of it reached Meta"
    parking = _parking_topic(sc, fitness.name)
    parked = sum(_parking_end(sc, parking).values())
    assert parked == len(b_records), "each B event of the broken period is parked exactly once, no copy of one sent"
    samples = scrape(port)
    assert metric(samples, "capi_stream_destination_state", destination=fitness.name, state="parked") == 1
    assert metric(samples, "capi_stream_destination_state", destination=shop.name, state="flowing") == 1
    assert metric(samples, "capi_stream_parked_events_total", destination=fitness.name) == parked
    assert metric(samples, "capi_stream_parked_oldest_event_age_seconds", destination=fitness.name) > 0
    # the parking partitions are paused while B is parked: the lag still counts every record waiting
    assert wait_until(lambda: metric(scrape(port), "capi_stream_parking_lag", destination=fitness.name) == parked,
                      15), metric(scrape(port), "capi_stream_parking_lag", destination=fitness.name)
    status = subprocess.run([sys.executable, "-m", "stream", "status", "--config", str(sc.config), "--format", "json"],
                            capture_output=True, text=True, timeout=60, check=False)
    report = orjson.loads(status.stdout)
    assert [m["destinations"].get(fitness.name) for m in report["metrics"]] == ["parked"], status.stdout[-2000:]
    # and the parking group: every parked B event waits in B's parking topic, nothing in A's
    assert report["parking"]["group"] == f"{sc.group}.parking"
    assert report["parking"]["waiting"] == {fitness.name: parked}, status.stdout[-2000:]
    assert {r["topic"] for r in report["parking"]["partitions"]} <= {parking, _parking_topic(sc, shop.name)}
    started = _events_of(proc, "parking_started")
    assert [e["destination"] for e in started] == [fitness.name]
    assert started[0]["reason"] == "destination_halted"
    parked_records = read_topic(sc.bootstrap, parking, 1, timeout=10)
    headers = headers_of(parked_records[0])
    assert headers["capi.destination"] == fitness.name
    assert headers["capi.source_topic"] == sc.topic
    assert headers[HEADER_REASON] == "destination_halted"
    # B's token file is fixed: the parked events are drained through the same pipeline
    fixed = time.monotonic()
    fitness.token_file.write_text(new_token + "\n")
    assert wait_until(lambda: expected_b <= set(sc.counts()), 120, interval=0.1), "every parked B event reaches Meta"
    drain_s = time.monotonic() - fixed
    assert wait_until(lambda: _parking_drained(sc, parking), 60), "the parking topic's offsets commit to its end"
    assert wait_until(lambda: bool(_events_of(proc, "draining_finished")), 30)
    assert [e["destination"] for e in _events_of(proc, "parking_ended")] == [fitness.name]
    assert [e["destination"] for e in _events_of(proc, "draining_started")] == [fitness.name]
    samples = scrape(port)
    assert metric(samples, "capi_stream_destination_state", destination=fitness.name, state="flowing") == 1
    assert metric(samples, "capi_stream_drained_events_total", destination=fitness.name) == parked
    assert proc.stop() == 0
    counts = sc.counts()
    expected = expected_keys(warm + a_records + b_records, now, sc.routes)
    assert set(counts) == expected
    duplicates = {k: c for k, c in counts.items() if c != 1}
    assert duplicates == {}
    latencies.sort()
    print(f"\nPARKING FIGURES: A wave latency before B broke max={max(baseline):.2f}s; "
          f"p50={latencies[len(latencies) // 2]:.2f}s "
          f"max={latencies[-1]:.2f}s over {waves} waves while B parked; B parked={parked}; "
          f"drain={drain_s:.2f}s; duplicates={sum(c - 1 for c in counts.values())}")


def test_without_parking_a_halted_b_stalls_a(scenario_factory: Callable[..., Scenario]) -> None:
    """The same traffic with park_after_s = 0 (today's behaviour): B's held events reach the in-flight
    bound and the partitions pause for A too. This is the failure parking removes."""
    port = free_port()
    sc = scenario_factory(partitions=PARTITIONS, extra=_config(port, park_after_s=0))
    now = int(time.time())
    sc.start()
    _break_b(sc)
    b = _events(BOUND + 200, APPS_B, 300, "b")
    produce_records(sc.bootstrap, sc.topic, b)
    assert wait_until(lambda: metric(scrape(port), "capi_stream_paused_partitions") > 0, 30)
    a = _events(60, APPS_A, 301, "a")
    produce_records(sc.bootstrap, sc.topic, a)
    want = expected_keys(a, now, sc.routes)
    time.sleep(3)
    assert not want <= set(sc.counts()), "A waits behind B's held events without parking"


def _park_b(sc: Scenario, proc: PipelineProcess) -> tuple[str, list[dict[str, Any]]]:
    """Break B's token and wait until B is halted; returns B's new token and the probe events."""
    token = _break_b(sc)
    probe = _events(5, APPS_B, 3, "probe-b")
    produce_records(sc.bootstrap, sc.topic, probe)
    assert wait_until(lambda: bool(_events_of(proc, "destination_halted")), 30)
    return token, probe


def _nothing_lost(sc: Scenario, records: list[dict[str, Any]], now: int, parking: str) -> int:
    """Every expected key reached Meta, the source and the parking topic committed to their ends;
    returns how many acceptances were duplicates."""
    expected = expected_keys(records, now, sc.routes)
    assert wait_until(lambda: expected <= set(sc.counts()), 120, interval=0.2), "nothing lost"
    assert sc.all_committed(60)
    assert wait_until(lambda: _parking_drained(sc, parking), 60)
    counts = sc.counts()
    assert set(counts) == expected
    return sum(c - 1 for c in counts.values())


def test_a_sigkill_while_b_is_parked_loses_nothing(scenario_factory: Callable[..., Scenario]) -> None:
    """Killed while B's events are being parked (and A's sent); the restart, still with B's old token,
    parks what it reads back again; once the token is fixed every event of both reached Meta."""
    port = free_port()
    sc = scenario_factory(partitions=PARTITIONS, extra=_config(port))
    fitness = sc.dests[1]
    now = int(time.time())
    proc = sc.start()
    token, records = _park_b(sc, proc)
    parking = _parking_topic(sc, fitness.name)
    for wave in range(4):
        records += _events(300, APPS_B, 400 + wave, f"kb{wave}") + _events(50, APPS_A, 500 + wave, f"ka{wave}")
    produce_records(sc.bootstrap, sc.topic, records[5:])
    assert wait_until(lambda: sum(_parking_end(sc, parking).values()) > 0, 30, interval=0.05)
    proc.kill()
    proc = sc.start()
    assert wait_until(lambda: bool(_events_of(proc, "parking_started")), 60), "B is parked again after the restart"
    assert sc.all_committed(60), "the source commits past B's events after the restart too"
    # after the restart the metrics say what waits in the parking topic, from the topic itself
    waiting = lambda: sum(_parking_end(sc, parking).values()) - sum(  # noqa: E731
        max(0, o) for o in committed(sc.bootstrap, f"{sc.group}.parking", parking, PARTITIONS).values())
    assert wait_until(lambda: metric(scrape(port), "capi_stream_parking_lag", destination=fitness.name)
                      == waiting() > 0, 20)
    age = metric(scrape(port), "capi_stream_parked_oldest_event_age_seconds", destination=fitness.name)
    first = min(r["event_time"] for r in records if r["app_id"] in APPS_B)
    assert 0 < age <= time.time() - first + 1, age
    fitness.token_file.write_text(token + "\n")
    duplicates = _nothing_lost(sc, records, now, parking)
    assert proc.stop() == 0
    print(f"\nPARKING KILL WHILE PARKED: events={len(records)} duplicates={duplicates}")


def test_a_sigkill_while_b_is_draining_loses_nothing(scenario_factory: Callable[..., Scenario]) -> None:
    """Killed while B's parked events are being sent (a slow drain: 50 events a request, 5 requests/s);
    the restart drains the rest from the parking topic's committed offsets."""
    extra = "rate_limit_rps = 5.0\n[batch]\nmax_events = 50\n"
    sc = scenario_factory(partitions=PARTITIONS, extra=_config(free_port(), extra=extra))
    fitness = sc.dests[1]
    now = int(time.time())
    proc = sc.start()
    token, records = _park_b(sc, proc)
    parking = _parking_topic(sc, fitness.name)
    b = _events(1000, APPS_B, 600, "db")
    records += b + _events(50, APPS_A, 601, "da")
    produce_records(sc.bootstrap, sc.topic, records[5:])
    assert wait_until(lambda: sum(_parking_end(sc, parking).values()) >= len(b), 60)
    assert sc.all_committed(60)
    fitness.token_file.write_text(token + "\n")
    expected_b = expected_keys(b, now, sc.routes)
    assert wait_until(lambda: len(expected_b & set(sc.counts())) >= 100, 60, interval=0.05)
    assert not expected_b <= set(sc.counts()), "killed while draining"
    proc.kill()
    proc = sc.start()
    duplicates = _nothing_lost(sc, records, now, parking)
    assert proc.stop() == 0
    print(f"\nPARKING KILL WHILE DRAINING: events={len(records)} duplicates={duplicates}")


def test_a_parked_event_past_metas_7_days_is_dead_lettered(scenario_factory: Callable[..., Scenario]) -> None:
    """Events parked a few seconds before their event_time reaches Meta's 7 days are dead-lettered as
    event_too_old when drained after it; the fresh ones parked with them reach Meta."""
    sc = scenario_factory(partitions=PARTITIONS, extra=_config(free_port(), extra="deadline_margin_s = 0.0\n"))
    fitness = sc.dests[1]
    proc = sc.start()
    token, probe = _park_b(sc, proc)
    assert wait_until(lambda: bool(_events_of(proc, "parking_started")), 30)
    parking = _parking_topic(sc, fitness.name)
    now = int(time.time())
    cliff_in = 8
    old = _events(20, APPS_B, 700, "old", now=now)
    for record in old:
        record["event_time"] = now - 7 * 24 * 3600 + cliff_in
    fresh = _events(20, APPS_B, 701, "fresh")
    produce_records(sc.bootstrap, sc.topic, old + fresh)
    assert wait_until(lambda: sum(_parking_end(sc, parking).values()) >= len(probe) + 40, 30, interval=0.05)
    assert time.time() < now + cliff_in, "parked before the cliff"
    assert wait_until(lambda: time.time() > now + cliff_in + 1, cliff_in + 5)
    fitness.token_file.write_text(token + "\n")
    assert wait_until(lambda: _parking_drained(sc, parking), 60)
    letters = read_topic(sc.bootstrap, sc.dlq_topic, len(old), timeout=30)
    reasons = sorted(headers_of(m)[HEADER_REASON] for m in letters)
    assert reasons == ["event_too_old"] * len(old)
    # each letter names the source position it was first consumed at (its bytes are that record's),
    # and where it was parked beside it
    source = {(m.partition(), m.offset()): m.value()
              for m in read_topic(sc.bootstrap, sc.topic, sum(sc.end().values()))}
    for letter in letters:
        h = headers_of(letter)
        assert h["capi.source_topic"] == sc.topic
        assert h["capi.parking_topic"] == parking
        assert source[(int(h["capi.source_partition"]), int(h["capi.source_offset"]))] == letter.value()
    drained_at = int(time.time())
    counts = sc.counts()
    assert expected_keys(fresh + probe, drained_at, sc.routes) == set(counts)
    # `dlq show` lists them from the source topic; `dlq redrive --to` the source topic sends them back
    # through the pipeline, which dead-letters them again at their new source positions
    shown = _cli(sc, "dlq", "show", "--format", "json")
    assert {orjson.loads(line)["source_topic"] for line in shown.splitlines()} == {sc.topic}
    end = sum(sc.end().values())
    _cli(sc, "dlq", "redrive", "--to", sc.topic, "--execute")
    assert wait_until(lambda: sum(sc.end().values()) == end + len(old), 30)
    every = read_topic(sc.bootstrap, sc.dlq_topic, 2 * len(old), timeout=30)
    again = [headers_of(m) for m in every if "capi.parking_topic" not in headers_of(m)]
    assert len(again) == len(old), "redriven from the source topic: dead-lettered there, never parked"
    assert {h["capi.source_topic"] for h in again} == {sc.topic}
    assert sorted(h[HEADER_REASON] for h in again) == ["event_too_old"] * len(old)
    assert proc.stop() == 0


def _cli(sc: Scenario, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "stream", *args, "--config", str(sc.config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
