"""Bad records and bad answers against the real broker and the emulator (issue #13).

Every bad input gets a clear outcome: dead-lettered with its reason (the partition moves on), or held
with a loud signal while the cause lasts, and never a crash loop, a stall or a lost event.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from stream.avro.schema import default_schema_path, load_schema
from stream.avro.wire import WireFormat, encode
from stream.tools.devregistry import DevRegistry
from stream.tools.kafka import free_port
from stream.tools.produce import ensure_topic
from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    Scenario,
    expected_keys,
    headers_of,
    http_get,
    metric,
    never_written,
    read_topic,
    scrape,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.kafka

# the broker's default message.max.bytes is 1,048,588: these records are just under it
NEAR_LIMIT = 1_030_000
# Tests that hold an offset commit stored offsets every 100 ms (the default is 1 s) and look HOLD_S after
# the cause, so a wrong commit has had five chances to happen (it had one, or one and a half, before)
FAST_COMMITS = "[pipeline]\ncommit_interval_ms = 100\n"
HOLD_S = 0.5


def _good(n: int, seed: int) -> list[dict[str, Any]]:
    records = list(generate(n, seed=seed, now=int(time.time()), app_ids=APPS_A))
    for r in records:
        r["consent"] = True
    return records


def _publish(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes | None]]) -> None:
    """Publish (key, value) pairs in order, up to the broker's own message size limit (not a producer's default)."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 1_048_000, "linger.ms": 5})
    for key, value in values:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def _avro(records: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    schema = load_schema()
    return [(r["event_id"].encode(), encode(r, schema)) for r in records]


def _no_restart(proc: Any) -> None:
    assert proc.alive(), "the pipeline process exited"
    failures = [e for e in proc.log_lines() if e.get("event") in ("stage_failed", "pipeline_failed")]
    assert failures == []


def test_a_record_just_under_the_broker_limit_that_meta_refuses_is_dead_lettered_and_the_partition_moves_on(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """1 MB records (one Meta refuses, one undecodable) and a tombstone: dead-lettered, the process never dies."""
    sc = scenario_factory(partitions=1)
    good = _good(30, seed=61)
    huge = {**good[0], "event_id": "huge-refused-1",
            "user_data": {**good[0]["user_data"], "em": "huge.person@example.com", "fn": "!" * NEAR_LIMIT}}
    [(huge_key, huge_value)] = _avro([huge])
    assert huge_value is not None
    assert 1_000_000 < len(huge_value) < 1_048_000  # more than a default producer takes, less than the broker
    garbage = bytes([0x02, 0xFF]) + b"\xfe" * NEAR_LIMIT
    sc.emulator.set_faults({"reject_event_ids": ["huge-refused-1"]})
    _publish(sc.bootstrap, sc.topic, [*_avro(good[:10]), (huge_key, huge_value), *_avro(good[10:20]),
                                      (b"huge-garbage-1", garbage), (b"tombstone-1", None), *_avro(good[20:])])
    proc = sc.start()
    assert sc.all_committed(timeout=90), f"committed {sc.committed()} != end {sc.end()}"
    _no_restart(proc)
    assert proc.stop() == 0
    letters = {m.key().decode(): m for m in read_topic(sc.bootstrap, sc.dlq_topic, 3)}
    assert sorted(letters) == ["huge-garbage-1", "huge-refused-1", "tombstone-1"]  # each exactly once
    refused = headers_of(letters["huge-refused-1"])
    assert refused["capi.reason"] == "meta_rejected"
    assert refused["capi.meta_code"] == "100"
    assert refused["capi.omitted"] == "value"
    assert refused["capi.original_size"] == str(len(huge_value))
    assert (refused["capi.source_topic"], refused["capi.source_partition"]) == (sc.topic, "0")
    assert letters["huge-refused-1"].value() is None
    garbage_headers = headers_of(letters["huge-garbage-1"])
    assert (garbage_headers["capi.reason"], garbage_headers["capi.omitted"]) == ("bad_avro", "value")
    assert garbage_headers["capi.original_size"] == str(len(garbage))
    # what is wrong, in schema terms: the field, not the decoder's raw text nor the value's bytes
    assert garbage_headers["capi.detail"].startswith("field event_name: a string that is not valid UTF-8")
    assert set(sc.counts()) == expected_keys(good, int(time.time()), sc.routes)


def test_a_tombstone_is_dead_lettered_as_a_tombstone(scenario_factory: Callable[..., Scenario]) -> None:
    """A null value is dead-lettered with a null value (not an empty one), with its reason."""
    sc = scenario_factory(partitions=1)
    good = _good(5, seed=62)
    _publish(sc.bootstrap, sc.topic, [*_avro(good[:2]), (b"tombstone-2", None), *_avro(good[2:])])
    proc = sc.start()
    assert sc.all_committed(timeout=60)
    assert proc.stop() == 0
    [letter] = read_topic(sc.bootstrap, sc.dlq_topic, 1)
    assert letter.key() == b"tombstone-2"
    assert letter.value() is None
    assert headers_of(letter)["capi.reason"] == "bad_avro"
    assert headers_of(letter)["capi.detail"] == "tombstone (null value): a delete marker, not a record"


def test_a_dead_letter_topic_that_cannot_be_written_is_loud_and_holds_the_offset_until_it_can(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """The DLQ topic is missing (no auto-create): dead_letter_failed, a metric, /readyz 503, no commit past it."""
    port = free_port()
    sc = scenario_factory(partitions=1)
    missing = f"dlq-missing-{uuid.uuid4().hex[:10]}"
    write_config(sc.config, bootstrap=sc.bootstrap, topic=sc.topic, group=sc.group, dlq_topic=missing,
                 emulator_url=sc.emulator.url, dests=sc.dests,
                 extra=f'[metrics]\nport = {port}\n[kafka.producer]\n"allow.auto.create.topics" = false\n'
                       f'"message.timeout.ms" = 1500\n{FAST_COMMITS}')
    good = _good(10, seed=63)
    _publish(sc.bootstrap, sc.topic, [*_avro(good[:5]), (b"bad-1", b"\x02\xff not avro"), *_avro(good[5:])])
    proc = sc.start()
    assert wait_until(lambda: any(e.get("event") == "dead_letter_failed" for e in proc.log_lines()), 60)
    failed = next(e for e in proc.log_lines() if e.get("event") == "dead_letter_failed")
    assert failed["topic"] == missing
    assert failed["error"]  # the broker's error name
    status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    assert status == 503
    assert orjson.loads(body)["dead_letters_failing"] == 1
    assert metric(scrape(port), "capi_stream_dead_letter_failures_total", error=failed["error"]) >= 1
    assert wait_until(lambda: set(sc.counts()) == expected_keys(good, int(time.time()), sc.routes), 60)
    time.sleep(HOLD_S)  # let a wrong commit happen before looking: several commit intervals
    assert sc.committed()[0] <= 5, "committed past the letter the broker has not taken"
    ensure_topic(sc.bootstrap, missing, 1)
    assert sc.all_committed(timeout=90)
    assert wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30)
    _no_restart(proc)
    assert proc.stop() == 0
    [letter] = read_topic(sc.bootstrap, missing, 1)
    assert letter.key() == b"bad-1"
    assert headers_of(letter)["capi.reason"] == "bad_avro"


def test_a_registry_outage_longer_than_max_poll_interval_gives_no_rebalance_and_loses_nothing(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """Registry down for 1.5x max.poll.interval.ms: the member stays in the group, then every record lands once.

    And a schema the registry serves but fastavro cannot parse dead-letters its records (unusable_schema)
    instead of blocking every partition as an outage would.
    """
    with DevRegistry() as registry:
        schema_id = registry.register(default_schema_path().read_text())
        broken_id = registry.register({"type": "record", "name": "Order", "namespace": "com.example",
                                       "fields": [{"name": "customer", "type": "com.example.Customer"}]})
        extra = (f'[decode]\nwire_format = "confluent"\nschema_registry_url = "{registry.url}"\n'
                 '[kafka.consumer]\n"session.timeout.ms" = 6000\n"max.poll.interval.ms" = 6000\n')
        sc = scenario_factory(partitions=2, extra=extra)
        # small consumed batches, so the backlog is more than the source hands to a loop that waits
        sc.config.write_text(sc.config.read_text().replace("[kafka]\n", "[kafka]\nconsume_batch_size = 20\n", 1))
        records = _good(400, seed=64)
        schema = load_schema()
        values: list[tuple[bytes | None, bytes | None]] = [
            (r["event_id"].encode(), encode(r, schema, WireFormat.CONFLUENT, schema_id)) for r in records]
        values.insert(200, (b"broken-schema-1", encode(records[0], schema, WireFormat.CONFLUENT, broken_id)))
        registry.unavailable = True
        _publish(sc.bootstrap, sc.topic, values)
        proc = sc.start()
        assert wait_until(lambda: any(e.get("event") == "schema_registry_unavailable" for e in proc.log_lines()),
                          60)
        # half as long again as max.poll.interval.ms with the registry down, from its first refused lookup
        # (the pipeline's loop waits from then on; the warning comes after the client's own retries)
        assert registry.first_refused_at is not None
        time.sleep(max(0.0, registry.first_refused_at + 9 - time.monotonic()))
        assert sc.counts() == {}  # nothing could be decoded meanwhile
        _no_restart(proc)
        registry.unavailable = False
        assert sc.all_committed(timeout=90), f"committed {sc.committed()} != end {sc.end()}"
        _no_restart(proc)
        assert proc.stop() == 0
    events = [e.get("event") for e in proc.log_lines()]
    # the source consumer's assignments (the parking topics' reader has a group of its own)
    assigned = [e for e in proc.log_lines() if e.get("event") == "partitions_assigned" and e.get("group") == sc.group]
    assert len(assigned) == 1, "the member was evicted and joined again"
    assert "partitions_lost" not in events
    assert "partitions_revoked" not in events[: events.index("stop_requested")]
    assert not [e for e in proc.log_lines() if "MAX_POLL" in str(e.get("error", ""))]
    counts = sc.counts()
    assert set(counts) == expected_keys(records, int(time.time()), sc.routes)
    assert [k for k, c in counts.items() if c != 1] == []
    [letter] = read_topic(sc.bootstrap, sc.dlq_topic, 1)
    assert letter.key() == b"broken-schema-1"
    assert headers_of(letter)["capi.reason"] == "unusable_schema"


NOT_META_ANSWERS = ["ok_empty", "ok_html", "no_content", "bad_version", "waf_403"]


def test_answers_that_are_not_an_ack_or_are_about_the_request_commit_nothing_and_dead_letter_nothing(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """The emulator answers 200 empty, 200 HTML, 204, 400/2500 and a 403 HTML page, one kind at a time.

    Each: the destination halts (after repeated non-acks, or at once for a request-level error), nothing
    is committed past an event Meta did not acknowledge, nothing is dead-lettered; a SIGHUP after the
    cause is gone resumes it and every event then lands exactly once.
    """
    port = free_port()
    extra = (f"[metrics]\nport = {port}\n[send]\ntimeout_s = 15.0\nbackoff_initial_s = 0.02\nbackoff_max_s = 0.1\n"
             f"rate_limit_rps = 0\ntoken_check_interval_s = 3600\n{FAST_COMMITS}")
    sc = scenario_factory(partitions=1, extra=extra)
    now = int(time.time())
    first = _good(10, seed=70)
    _publish(sc.bootstrap, sc.topic, _avro(first))
    proc = sc.start()
    assert sc.all_committed(timeout=60)
    delivered = expected_keys(first, now, sc.routes)
    assert set(sc.counts()) == delivered
    for phase, fault in enumerate(NOT_META_ANSWERS, start=1):
        records = _good(10, seed=70 + phase)
        halts_before = sum(e.get("event") == "destination_halted" for e in proc.log_lines())
        held = sc.committed()[0]
        sc.emulator.set_faults({fault: 1.0})
        _publish(sc.bootstrap, sc.topic, _avro(records))
        assert wait_until(lambda: sum(e.get("event") == "destination_halted" for e in proc.log_lines())
                          > halts_before, 60), fault  # noqa: B023 - read in this iteration only
        time.sleep(HOLD_S)  # let a wrong commit happen before looking: several commit intervals
        assert sc.committed()[0] == held, f"{fault}: committed past events Meta did not acknowledge"
        assert set(sc.counts()) == delivered, fault  # the emulator recorded nothing
        assert never_written(sc.bootstrap, sc.dlq_topic), f"{fault}: dead-lettered"
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503, fault
        assert orjson.loads(body)["halted"], fault
        halt = [e for e in proc.log_lines() if e.get("event") == "destination_halted"][-1]
        assert halt.get("status") or halt.get("code"), halt  # the answer is in the log
        sc.emulator.set_faults({})
        proc.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        assert sc.all_committed(timeout=60), f"{fault}: not resumed"
        delivered |= expected_keys(records, now, sc.routes)
        assert set(sc.counts()) == delivered, fault
    _no_restart(proc)
    assert proc.stop() == 0
    counts = sc.counts()
    assert [k for k, c in counts.items() if c != 1] == []
    assert never_written(sc.bootstrap, sc.dlq_topic)
    not_acked = [e for e in proc.log_lines() if e.get("event") == "batch_retry" and e.get("retry_class") == "not_acked"]
    assert not_acked, "the 2xx answers without an ack were retried first"
