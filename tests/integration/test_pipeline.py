"""The pipeline end to end: real broker, the emulator over sockets, `capi-stream run` as a subprocess."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from stream.avro.schema import default_schema_path
from stream.avro.wire import WireFormat, encode
from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import (
    APPS_A,
    APPS_B,
    Key,
    PipelineProcess,
    Pool,
    Publisher,
    Scenario,
    expected_keys,
    headers_of,
    metric,
    never_written,
    produce_raw,
    produce_records,
    read_topic,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.kafka

# A member that dies or leaves is noticed after its session: 6 s (the broker's minimum) instead of librdkafka's
# 45 s, with a heartbeat every second so the members learn of a rebalance quickly
SHORT_SESSION = '[kafka.consumer]\n"session.timeout.ms" = 6000\n"heartbeat.interval.ms" = 1000\n'
# the join/leave test: a backlog, then the apps publish at JOIN_RATE events/s until the second member left
JOIN_BACKLOG = 2000
JOIN_RATE = 1000
JOIN_POOL = 60_000

def _events(n: int, seed: int, apps: list[str], **knobs: Any) -> list[dict[str, Any]]:
    return list(generate(n, seed=seed, now=int(time.time()), app_ids=apps, **knobs))


def _offsets_by_id(scenario: Scenario, want: int) -> dict[str, tuple[int, int]]:
    """event_id (the message key) -> (partition, offset) for every message of the source topic."""
    return {m.key().decode(): (m.partition(), m.offset())
            for m in read_topic(scenario.bootstrap, scenario.topic, want) if m.key()}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_meta_receives_the_documented_normalized_hashes_for_a_fixed_record(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """A fixed record reaches Meta as Meta's rules ask: each value normalized as written out here, hashed.

    The expectations are the documented normal forms (stream/contract/README.md §3.1, §3.4), typed in
    by hand: a dropped or wrongly normalized field fails here even if the normalizer agrees with itself.
    """
    sc = scenario_factory(partitions=1)
    now = int(time.time())
    template = next(r for r in _events(50, seed=61, apps=APPS_A) if r["event_name"] == "Purchase")
    user = dict.fromkeys(template["user_data"])
    user.update(em=" Mary.Smith@Example.COM ", ph="+1 (415) 555-0134", fn="Mary", ln="O'Brien", ct="New York",
                st="CA", zp="94035-1234", country="US", ge="Female", db="1990-02-14",
                client_ip_address="203.0.113.7", client_user_agent="Dalvik/2.1.0 (Linux; U; Android 14)")
    record = {**template, "event_id": "fixed-vector-1", "event_time": now - 60, "consent": True,
              "app_id": APPS_A[0], "user_data": user,
              "custom_data": {**template["custom_data"], "value": 12.5, "currency": "USD"}}  # fmt: skip
    produce_records(sc.bootstrap, sc.topic, [record])
    proc = sc.start()
    assert sc.all_committed()
    proc.stop()
    received = [a.event for a in sc.emulator.call(lambda emu: emu.ledger.recent(10))]
    assert [e["event_id"] for e in received] == ["fixed-vector-1"]
    event = received[0]
    assert (event["event_name"], event["event_time"], event["action_source"]) == ("Purchase", now - 60, "app")
    assert "app_id" not in event
    assert "consent" not in event  # ours, never Meta's
    want = {
        "em": "mary.smith@example.com", "ph": "14155550134", "fn": "mary", "ln": "obrien", "ct": "newyork",
        "st": "ca", "zp": "94035", "country": "us", "ge": "f", "db": "19900214",
    }  # fmt: skip
    got = event["user_data"]
    for key, normal in want.items():
        assert got[key] in (_sha256(normal), [_sha256(normal)]), f"user_data.{key}"
    assert got["client_ip_address"] == "203.0.113.7"
    assert got["client_user_agent"] == "Dalvik/2.1.0 (Linux; U; Android 14)"
    assert event["custom_data"]["value"] == 12.5
    assert event["custom_data"]["currency"].lower() == "usd"


def test_ten_thousand_events_each_valid_one_accepted_exactly_once(scenario_factory: Callable[..., Scenario]) -> None:
    """10,000 events over 4 partitions: every valid event is accepted once, duplicates once, offsets at the end."""
    sc = scenario_factory(partitions=4)
    records = _events(10_000, seed=11, apps=APPS_A + APPS_B, duplicate_rate=0.05)
    assert len({r["event_id"] for r in records}) < len(records)  # the stream really carries duplicates
    assert produce_records(sc.bootstrap, sc.topic, records) == 10_000
    expected = expected_keys(records, int(time.time()), sc.routes)
    proc = sc.start()
    assert sc.all_committed(), f"committed {sc.committed()} != end {sc.end()}"
    assert proc.stop() == 0
    counts = sc.counts()
    assert set(counts) == expected
    assert [k for k, c in counts.items() if c != 1] == []
    assert never_written(sc.bootstrap, sc.dlq_topic)


def test_bad_records_are_dead_lettered_with_their_reason_and_do_not_block(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """Malformed bytes, a stale event, an invalid Purchase and an unknown app go to the DLQ; the rest flows."""
    sc = scenario_factory(partitions=1)
    now = int(time.time())
    good = _events(40, seed=5, apps=APPS_A, people=10)
    for r in good:
        r["consent"] = True
    stale = {**good[0], "event_id": "stale-1", "event_time": now - 8 * 86400}
    bad_purchase = {**good[1], "event_id": "bad-purchase-1", "event_name": "Purchase",
                    "custom_data": {**(good[1]["custom_data"] or {}), "value": None, "currency": "USD"}}
    unknown_app = {**good[2], "event_id": "unknown-app-1", "app_id": "com.example.nobody"}
    produce_records(sc.bootstrap, sc.topic, good[:10])
    produce_raw(sc.bootstrap, sc.topic, [(b"malformed-1", b"\x02\xff\xfe definitely not avro")])
    produce_records(sc.bootstrap, sc.topic, [*good[10:20], stale, bad_purchase, unknown_app, *good[20:]])
    proc = sc.start()
    assert sc.all_committed()
    proc.stop()
    letters = read_topic(sc.bootstrap, sc.dlq_topic, 4)
    by_key = {m.key().decode(): headers_of(m) for m in letters}
    assert {k: h["capi.reason"] for k, h in by_key.items()} == {
        "malformed-1": "bad_avro", "stale-1": "event_too_old",
        "bad-purchase-1": "purchase_without_value", "unknown-app-1": "unknown_destination",
    }  # fmt: skip
    assert len(letters) == 4  # each exactly once
    source = {m.key().decode(): m for m in read_topic(sc.bootstrap, sc.topic, 44)}
    for letter in letters:
        original = source[letter.key().decode()]
        assert letter.value() == original.value()  # the original bytes, untouched
        assert headers_of(letter)["capi.source_offset"] == str(original.offset())
        assert headers_of(letter)["capi.source_topic"] == sc.topic
    assert set(sc.counts()) == expected_keys(good, now, sc.routes)


def test_confluent_wire_format_resolves_ids_and_dead_letters_unknown_ones(
    scenario_factory: Callable[..., Scenario], schema_registry_url: str, register_factory: Callable[[str], int],
) -> None:
    """Confluent-framed records decode through a real registry (Apicurio); an unknown schema id and unframed
    bytes go to the DLQ."""
    schema_id = register_factory(default_schema_path().read_text())
    sc = scenario_factory(partitions=2, extra=f'[decode]\nwire_format = "confluent"\n'
                                              f'schema_registry_url = "{schema_registry_url}"\n')
    from stream.avro.schema import load_schema

    records = _events(30, seed=9, apps=APPS_A)
    for r in records:
        r["consent"] = True
    values = [(r["event_id"].encode(), encode(r, load_schema(), WireFormat.CONFLUENT, schema_id)) for r in records]
    bad_id = encode(records[0], load_schema(), WireFormat.CONFLUENT, 999_999)
    values += [(b"unknown-id-1", bad_id), (b"unframed-1", encode(records[1], load_schema()))]
    produce_raw(sc.bootstrap, sc.topic, values)
    proc = sc.start()
    assert sc.all_committed()
    proc.stop()
    reasons = {m.key().decode(): headers_of(m)["capi.reason"] for m in read_topic(sc.bootstrap, sc.dlq_topic, 2)}
    assert reasons == {"unknown-id-1": "unknown_schema_id", "unframed-1": "not_confluent_framed"}
    assert set(sc.counts()) == expected_keys(records, int(time.time()), sc.routes)


def test_an_event_meta_refuses_is_isolated_and_dead_lettered_alone(scenario_factory: Callable[..., Scenario]) -> None:
    """When Meta refuses one event of a batch, only that event is dead-lettered, with Meta's code; the rest land."""
    port = free_port()
    sc = scenario_factory(partitions=2, extra=f"[metrics]\nport = {port}\n")
    records = _events(300, seed=3, apps=APPS_A)
    for r in records:
        r["consent"] = True
    expected = expected_keys(records, int(time.time()), sc.routes)
    victim = sorted(k[2] for k in expected)[7]
    sc.emulator.set_faults({"reject_event_ids": [victim]})
    produce_records(sc.bootstrap, sc.topic, records)
    proc = sc.start()
    assert sc.all_committed()
    m = scrape(port)
    proc.stop()
    assert metric(m, "capi_stream_batch_splits_total") >= 1
    assert metric(m, "capi_stream_dead_lettered_total", reason="meta_rejected") == 1
    letters = read_topic(sc.bootstrap, sc.dlq_topic, 1)
    assert [m.key().decode() for m in letters] == [victim]
    headers = headers_of(letters[0])
    assert headers["capi.reason"] == "meta_rejected"
    assert headers["capi.meta_code"] == "100"
    assert "capi.meta_subcode" in headers
    assert set(sc.counts()) == {k for k in expected if k[2] != victim}


def test_faults_cause_retries_but_no_dead_letter_and_no_loss(scenario_factory: Callable[..., Scenario]) -> None:
    """With 500s, 503s, timeouts, resets and throttling injected, every event lands and nothing is dead-lettered."""
    port = free_port()
    extra = (f"[metrics]\nport = {port}\n"
             "[send]\ntimeout_s = 1.0\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.5\nrate_limit_rps = 0\n")
    sc = scenario_factory(partitions=4, extra=extra)
    sc.emulator.set_faults({"http_500": 0.1, "http_503": 0.1, "throttle": 0.15, "timeout": 0.05, "reset": 0.05,
                            "seed": 42, "timeout_hold_s": 2.5})
    records = _events(3000, seed=21, apps=APPS_A + APPS_B)
    produce_records(sc.bootstrap, sc.topic, records)
    expected = expected_keys(records, int(time.time()), sc.routes)
    proc = sc.start()
    assert sc.all_committed()
    m = scrape(port)
    proc.stop()
    stats = sc.emulator.stats()
    assert sum(stats["faults"].values()) > 0
    # each kind of fault the emulator injected shows as retries of its class in the metrics
    classes = {"http_500": "transient", "http_503": "transient", "throttle": "throttle", "timeout": "timeout",
               "reset": "connection"}
    injected = [kind for kind, count in stats["faults"].items() if count and kind in classes]
    assert injected, stats["faults"]
    for kind in injected:
        if kind in classes:
            assert metric(m, "capi_stream_retries_total", **{"class": classes[kind]}) > 0, kind
    retries = [line for line in proc.log_lines() if line.get("event") == "batch_retry"]
    assert retries, "the faults must have caused retries"
    assert never_written(sc.bootstrap, sc.dlq_topic)
    counts = sc.counts()
    assert set(counts) == expected  # nothing lost; a timed-out request may have landed before its retry


def test_expired_token_halts_one_destination_without_committing_then_catches_up(
    scenario_factory: Callable[..., Scenario],
) -> None:
    """A token error halts only its destination and holds its offsets, up to the final commit of a stop;
    with the new token the next process delivers what was held."""
    extra = "[send]\ntoken_check_interval_s = 0.5\ntimeout_s = 15.0\n"
    sc = scenario_factory(partitions=2, extra=extra)
    shop, fitness = sc.dests
    first = _events(400, seed=31, apps=APPS_A + APPS_B)
    second = _events(400, seed=32, apps=APPS_A + APPS_B)
    for r in first + second:
        r["consent"] = True
    now = int(time.time())
    produce_records(sc.bootstrap, sc.topic, first)
    proc = sc.start()
    assert sc.all_committed()
    # Meta expires shop's token: the old one now gets 190/463
    new_token = f"tok-new-{uuid.uuid4().hex}"
    sc.emulator.rotate_token(shop.dataset_id, new_token)
    produce_records(sc.bootstrap, sc.topic, second)
    expected_second = expected_keys(second, now, sc.routes)
    fitness_second = {k for k in expected_second if k[0] == fitness.dataset_id}
    assert wait_until(lambda: fitness_second <= set(sc.counts()), 60), "the other destination kept flowing"
    assert wait_until(lambda: any(e.get("event") == "destination_halted" for e in proc.log_lines()), 30)
    # The stop's synchronous final commit is the last commit this process makes: once it has exited, any
    # wrong commit has happened (no sleep needed to give it a chance).
    assert proc.stop() == 0
    assert any(e.get("event") == "drain_incomplete" for e in proc.log_lines()), "shop's events were held"
    offsets = _offsets_by_id(sc, 800)
    accepted = set(sc.counts())
    shop_waiting = [offsets[k[2]] for k in expected_second if k[0] == shop.dataset_id and k not in accepted]
    assert shop_waiting, "shop's events must be waiting for the token"
    held = sc.committed()
    for partition, offset in shop_waiting:
        assert held[partition] <= offset, f"committed {held[partition]} past unacked offset {offset}"
    shop.token_file.write_text(new_token + "\n")
    sc.start()
    assert sc.all_committed()
    counts = sc.counts()
    assert set(counts) == expected_keys(first, now, sc.routes) | expected_second


def _midstream(
    scenario_factory: Callable[..., Scenario], extra: str, *, events: int, seed: int, accepted: int
) -> tuple[Scenario, set[Key], PipelineProcess]:
    """A 4-partition scenario with `events` of both apps published and one member started, returned once Meta
    accepted `accepted` of them; with the keys the pipeline must deliver in the end."""
    sc = scenario_factory(partitions=4, extra=extra)
    records = _events(events, seed=seed, apps=APPS_A + APPS_B)
    produce_records(sc.bootstrap, sc.topic, records)
    expected = expected_keys(records, int(time.time()), sc.routes)
    first = sc.start()
    assert wait_until(lambda: sum(sc.counts().values()) >= accepted, 60)
    return sc, expected, first


def test_sigkill_mid_stream_then_restart_loses_nothing(scenario_factory: Callable[..., Scenario]) -> None:
    """After SIGKILL and a restart every event is accepted; only events past the committed offsets repeat."""
    extra = (f"{SHORT_SESSION}[send]\nconcurrency = 2\nrate_limit_rps = 40\ntimeout_s = 15.0\n"
             "[batch]\nmax_events = 200\n")
    sc, expected, first = _midstream(scenario_factory, extra, events=6000, seed=41, accepted=1500)
    first.kill()
    at_kill = sc.committed()
    assert sum(max(o, 0) for o in at_kill.values()) < sum(sc.end().values()), "the kill must be mid-stream"
    second = sc.start()
    assert sc.all_committed()
    second.stop()
    counts = sc.counts()
    assert set(counts) == expected
    offsets = _offsets_by_id(sc, 6000)
    repeats = [k for k, c in counts.items() if c > 1]
    for key in repeats:
        partition, offset = offsets[key[2]]
        assert offset >= at_kill[partition], f"{key} repeated although committed before the kill"


def test_a_second_instance_joins_and_leaves_without_loss(scenario_factory: Callable[..., Scenario]) -> None:
    """A member joining and leaving mid-stream causes no loss and no repeat outside in-flight batches.

    The apps publish until the second member has left, so its join and its leave both meet events in flight;
    it must own partitions and have sent events of its own before it leaves."""
    # without the dedupe changelog the next owner of a partition would send again whatever the revoke did not
    # store: the repeats below are the revoke's own doing (the changelog's handoff has its own tests)
    extra = (f"{SHORT_SESSION}[send]\nrate_limit_rps = 20\ntimeout_s = 15.0\n[batch]\nmax_events = 100\n"
             "[dedupe]\nchangelog = false\n")
    sc = scenario_factory(partitions=4, extra=extra)
    records = Pool(generate(JOIN_POOL, seed=51, now=int(time.time()), app_ids=APPS_A + APPS_B, people=2000), JOIN_POOL)
    backlog = produce_records(sc.bootstrap, sc.topic, records[:JOIN_BACKLOG])
    publisher = Publisher(sc, records, JOIN_RATE, start=backlog)
    publisher.start()
    try:
        first = sc.start()
        assert wait_until(lambda: sum(sc.counts().values()) >= 1000, 60)
        port = free_port()
        second = sc.start_member(port)
        assert wait_until(lambda: any(e.get("event") == "partitions_assigned" and e.get("group") == sc.group
                                      and e.get("partitions", 0) > 0 for e in second.log_lines()), 60), (
            "the second member never owned a partition")
        assert wait_until(lambda: metric(scrape(port), "capi_stream_events_acked_total") > 0, 60), (
            "the second member sent nothing of its partitions")
        assert publisher.is_alive(), "the second member must leave while events flow"
        assert second.stop() == 0
    finally:
        publisher.halt.set()
        publisher.join(60)
    expected = expected_keys(records[:publisher.produced], int(time.time()), sc.routes)
    assert sc.all_committed()
    first.stop()
    counts = sc.counts()
    assert set(counts) == expected
    repeats = [k for k, c in counts.items() if c > 1]
    # A revoke waits for the batches in flight and stores (and commits) what they finished, so the next
    # owner re-reads nothing Meta acknowledged: no repeats. Only a revoke whose wait expired (logged as
    # revoke_wait_expired) leaves batches in flight, at most one 100-event batch per partition it held.
    expired = [e for p in sc.processes for e in p.log_lines() if e.get("event") == "revoke_wait_expired"]
    allowed = sum(e.get("partitions", 0) for e in expired) * 100
    assert len(repeats) <= allowed, f"{len(repeats)} repeats, {len(expired)} expired revoke waits"
