"""The dedupe window survives crashes and rebalances through its changelog topic (issue #14).

Real broker, the emulator over sockets, `capi-stream run` as subprocesses. Each test keeps the group's
offsets uncommitted where it matters (a long commit interval), so the restarted or new member reads the
acknowledged events again and only the restored changelog can tell it they were sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from stream import config
from stream.pipeline import dedupelog
from stream.pipeline.changelog import Changelog
from stream.pipeline.dedupe import DedupeStore, dedupe_key
from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    APPS_B,
    Scenario,
    end_offsets,
    expected_keys,
    headers_of,
    produce_raw,
    produce_records,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.kafka

# Offsets stay uncommitted while the test looks (librdkafka commits stored offsets this often)
NO_COMMIT = "[pipeline]\ncommit_interval_ms = 600000\n"
HOUR = 3600.0
# the group gives a SIGKILLed member's partitions to the restarted one after this long (default 45 s)
SHORT_SESSION = '[kafka.consumer]\n"session.timeout.ms" = 6000\n"heartbeat.interval.ms" = 1000\n'


def _commit_again(sc: Scenario) -> None:
    """Processes started from now on commit every second again."""
    sc.config.write_text(sc.config.read_text().replace(NO_COMMIT, ""))


def _events(n: int, seed: int, apps: list[str]) -> list[dict[str, Any]]:
    records = list(generate(n, seed=seed, now=int(time.time()), app_ids=apps))
    for record in records:
        record["consent"] = True
    return records


def _changelog_topic(sc: Scenario) -> str:
    return config.changelog_topic(config.load(sc.config), sc.topic)


def _changelog_records(sc: Scenario) -> int:
    """Records written to the scenario's changelog topic so far (0 while it does not exist)."""
    try:
        return sum(end_offsets(sc.bootstrap, _changelog_topic(sc), sc.partitions).values())
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def _changelog_entries(sc: Scenario) -> tuple[int, int]:
    """(acknowledged keys, dead-letter entries) in the scenario's changelog, tombstones left out."""
    records = _changelog_records(sc)
    keys = dead = 0
    for m in read_topic(sc.bootstrap, _changelog_topic(sc), records, timeout=10) if records else []:
        kind = m.key()[:1]
        if m.value() is None:
            continue
        if kind == dedupelog.KIND_BUNDLE:
            keys += len(dedupelog.parse_bundle(m.value()) or ())
        elif kind == dedupelog.KIND_KEY:
            keys += 1
        elif kind == dedupelog.KIND_DEAD:
            dead += 1
    return keys, dead


def _log_events(proc: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in proc.log_lines() if e.get("event") == name]


def test_sigkill_after_acks_then_restart_sends_no_acknowledged_event_again(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """(a) Every event Meta acknowledged before a SIGKILL is dropped as a duplicate after the restart."""
    sc = scenario_factory(partitions=4, extra=SHORT_SESSION + NO_COMMIT)
    records = _events(1200, seed=71, apps=APPS_A + APPS_B)
    produce_records(sc.bootstrap, sc.topic, records)
    expected = expected_keys(records, int(time.time()), sc.routes)
    first = sc.start()
    assert wait_until(lambda: set(sc.counts()) == expected, 90), "the first member delivers everything"
    assert wait_until(lambda: _changelog_entries(sc)[0] >= len(expected), 30), "every key reached the changelog"
    # one record per source partition of an acknowledged batch, not one per key
    assert _changelog_records(sc) < len(expected) / 2
    assert max(sc.committed().values()) < 0, "nothing committed: the restart reads every event again"
    first.kill()
    _commit_again(sc)
    second = sc.start()
    assert sc.all_committed()
    assert second.stop() == 0
    counts = sc.counts()
    assert set(counts) == expected
    assert [k for k, c in counts.items() if c != 1] == []
    restored = _log_events(second, "dedupe_restored")
    assert sum(e["keys"] for e in restored) == len(expected)


def test_a_partition_moved_by_a_rebalance_keeps_its_window(scenario_factory: Callable[..., Scenario]) -> None:
    """(b) Twins of events the first member acknowledged are dropped by the member their partition moved to."""
    sc = scenario_factory(partitions=4)
    records = _events(800, seed=72, apps=APPS_A + APPS_B)
    produce_records(sc.bootstrap, sc.topic, records)
    expected = expected_keys(records, int(time.time()), sc.routes)
    first = sc.start()
    assert wait_until(lambda: set(sc.counts()) == expected, 90)
    assert wait_until(lambda: _changelog_entries(sc)[0] >= len(expected), 30)
    second = sc.start()
    assert wait_until(lambda: any(e.get("partitions", 0) > 0 for e in _log_events(second, "partitions_assigned")),
                      90), "the second member is given partitions"
    produce_records(sc.bootstrap, sc.topic, records)  # every event again, on its own partition
    assert sc.all_committed()
    assert second.stop() == 0
    assert first.stop() == 0
    counts = sc.counts()
    assert set(counts) == expected
    assert [k for k, c in counts.items() if c != 1] == []
    assert sum(e["keys"] for e in _log_events(second, "dedupe_restored")) > 0


def test_dead_letters_are_not_written_twice_after_a_crash(scenario_factory: Callable[..., Scenario]) -> None:
    """(c) Records dead-lettered before a SIGKILL are not dead-lettered again when the restart reads them."""
    sc = scenario_factory(partitions=2, extra=SHORT_SESSION + NO_COMMIT)
    good = _events(200, seed=73, apps=APPS_A)
    bad = [(f"bad-{i}".encode(), b"\x02\xff\xfe not avro " + str(i).encode()) for i in range(12)]
    produce_records(sc.bootstrap, sc.topic, good[:100])
    produce_raw(sc.bootstrap, sc.topic, bad)
    produce_records(sc.bootstrap, sc.topic, good[100:])
    expected = expected_keys(good, int(time.time()), sc.routes)
    first = sc.start()
    assert wait_until(lambda: set(sc.counts()) == expected, 90)
    assert wait_until(lambda: end_offsets(sc.bootstrap, sc.dlq_topic, 1)[0] == len(bad), 30)
    assert wait_until(lambda: _changelog_entries(sc) == (len(expected), len(bad)), 30)
    first.kill()
    _commit_again(sc)
    second = sc.start()
    assert sc.all_committed()
    assert second.stop() == 0
    letters = read_topic(sc.bootstrap, sc.dlq_topic, len(bad))
    assert sorted(m.key() for m in letters) == sorted(k for k, _ in bad)  # each exactly once
    assert all(headers_of(m)["capi.reason"] == "bad_avro" for m in letters)
    assert [k for k, c in sc.counts().items() if c != 1] == []


def test_expired_entries_are_tombstoned_and_48_hours_of_keys_survive_a_restart(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """(d) Keys acked 47 h before the start are still duplicates; keys acked 50 h before are sent, and tombstoned."""
    sc = scenario_factory(partitions=2)
    records = _events(200, seed=74, apps=APPS_A + APPS_B)
    produce_records(sc.bootstrap, sc.topic, records)
    now = time.time()
    keys = sorted(expected_keys(records, int(now), sc.routes))
    held, expired = set(keys[: len(keys) // 2]), set(keys[len(keys) // 2:])
    partition_of = {m.key().decode(): m.partition() for m in read_topic(sc.bootstrap, sc.topic, len(records))}
    # what a previous member wrote: half the keys acknowledged 47 h ago, half 50 h ago
    settings = config.load(sc.config)
    topic = _changelog_topic(sc)
    writer = Changelog(sc.bootstrap, {sc.topic: topic}, sc.group)
    store = DedupeStore(settings.dedupe.window_s)
    writer.ensure_topics({sc.topic: sc.partitions}, {"cleanup.policy": "compact,delete",
                                                     "retention.ms": str(dedupelog.retention_ms(store))})
    producer = Producer({"bootstrap.servers": sc.bootstrap})
    ids: dict[bytes, tuple[str, str, str]] = {}
    for key in sorted(held | expired):
        at = now - (47 if key in held else 50) * HOUR
        record_key, value = dedupelog.key_record(dedupe_key(*key), at)
        ids[record_key] = key
        producer.produce(topic, key=record_key, value=value, partition=partition_of[key[2]])
    assert producer.flush(30) == 0
    proc = sc.start()
    assert sc.all_committed()
    # the old entries, a tombstone for each expired one, and the re-sent keys' bundles
    assert wait_until(lambda: _changelog_entries(sc)[0] >= len(keys) + len(expired), 30), "tombstones and new entries"
    assert proc.stop() == 0
    assert set(sc.counts()) == expired, "47 h old keys are held as sent; 50 h old keys are sent again"
    log = read_topic(sc.bootstrap, topic, _changelog_records(sc))
    tombstoned = {ids[m.key()] for m in log if m.value() is None}
    assert tombstoned == expired
    by_key = {dedupe_key(*key): key for key in keys}
    fresh = {by_key[ident] for m in log if m.key()[:1] == dedupelog.KIND_BUNDLE and m.value() is not None
             for ident, at in dedupelog.parse_bundle(m.value()) or () if at > now - HOUR}
    assert fresh == expired, "the re-sent keys have entries of their own again"
    # a restart restores the 47 h old entries and the new ones: every copy is a duplicate now
    produce_records(sc.bootstrap, sc.topic, records)
    again = sc.start()
    assert sc.all_committed()
    assert again.stop() == 0
    assert [k for k, c in sc.counts().items() if c != 1] == []
    assert set(sc.counts()) == expired
