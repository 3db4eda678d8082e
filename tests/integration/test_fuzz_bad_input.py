"""Fuzz: 2,000 malformed or hostile records among valid ones, through the running pipeline on the real broker.

Random bytes, truncated Avro, wrong schema ids, huge strings, long lists, invalid UTF-8, nulls everywhere,
tombstones and values Meta would refuse, all in the Confluent wire format through a schema registry.
Each hostile record is dead-lettered exactly once with a documented reason, the process never exits,
and every valid record around them is acknowledged by Meta (the emulator) exactly once.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from stream.avro.decode import BAD_AVRO, NOT_CONFLUENT_FRAMED, UNKNOWN_SCHEMA_ID
from stream.avro.schema import default_schema_path, load_schema
from stream.avro.wire import WireFormat, encode
from stream.tools.samples import generate
from tests.support.harness import APPS_A, APPS_B, Scenario, expected_keys, headers_of, read_topic

pytestmark = pytest.mark.kafka

HOSTILE = 2000
VALID = 1000
SEED = 1313
# every reason a dead letter can carry, written out from the README ("Dead-letter reasons" and "Rejections"),
# not read from the code under test
DOCUMENTED_REASONS = {
    BAD_AVRO, NOT_CONFLUENT_FRAMED, UNKNOWN_SCHEMA_ID, "incompatible_schema", "unusable_schema",
    "unknown_destination", "meta_rejected", "bad_record", "missing_event_name", "missing_event_time",
    "missing_action_source", "invalid_action_source", "event_too_old", "event_in_future",
    "missing_event_source_url", "missing_client_user_agent", "invalid_data_processing_options",
    "purchase_without_value", "purchase_without_currency", "invalid_currency", "app_data_missing",
    "invalid_extinfo", "no_customer_information", "customer_information_too_broad",
}
# kinds of hostile record -> the reasons each may get (None: any documented reason)
KINDS: dict[str, set[str] | None] = {
    "random_bytes": {NOT_CONFLUENT_FRAMED, UNKNOWN_SCHEMA_ID, BAD_AVRO},
    "truncated": {BAD_AVRO},
    "wrong_schema_id": {UNKNOWN_SCHEMA_ID},
    "invalid_utf8": {BAD_AVRO},
    "trailing_garbage": {BAD_AVRO},
    "tombstone": {BAD_AVRO},
    "nulls_everywhere": {"missing_event_name"},
    "huge_unknown_app": {"unknown_destination"},
    "huge_bad_action_source": {"invalid_action_source"},
    "long_invalid_lists": {"no_customer_information"},
    "long_bad_options": {"invalid_data_processing_options"},
    "far_future": {"event_in_future"},
    "ancient": {"event_too_old"},
}
HUGE_EVERY = 100  # one in this many huge-string records is 300-900 kB (the rest are 10-60 kB)


def _blank_record(app_id: str, now: int) -> dict[str, Any]:
    """A schema-valid record with every nullable field null and every required string empty."""
    schema = load_schema()
    user_fields = next(f for f in schema["fields"] if f["name"] == "user_data")["type"]["fields"]
    return {"event_name": "", "event_time": now, "event_id": None, "action_source": "app", "app_id": app_id,
            "user_data": {f["name"]: None for f in user_fields}, "custom_data": None, "app_data": None,
            "event_source_url": None, "opt_out": None, "data_processing_options": None,
            "data_processing_options_country": None, "data_processing_options_state": None,
            "original_event_data": None, "consent": None}


def _hostile(rng: random.Random, kind: str, i: int, base: dict[str, Any], schema_id: int, now: int) -> bytes | None:
    """One hostile message value of `kind` (None: a tombstone)."""
    schema = load_schema()

    def framed(record: dict[str, Any]) -> bytes:
        return encode(record, schema, WireFormat.CONFLUENT, schema_id)

    record = {**base, "event_id": f"hostile-{i}", "consent": True}
    if kind == "random_bytes":
        raw = rng.randbytes(rng.randint(0, 3000))
        return raw if not raw or raw[0] != 0 else b"\x01" + raw  # a leading 0 would be the wrong_schema_id case
    if kind == "truncated":
        whole = framed(record)
        return whole[: rng.randint(6, len(whole) - 1)]
    if kind == "wrong_schema_id":
        return encode(record, schema, WireFormat.CONFLUENT, rng.randint(1000, 2**31 - 1))
    if kind == "invalid_utf8":
        marker = "M" * 12
        whole = framed({**record, "event_name": marker})
        return whole.replace(marker.encode(), rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80"]) * 4, 1)
    if kind == "trailing_garbage":
        return framed(record) + rng.randbytes(rng.randint(1, 50))
    if kind == "tombstone":
        return None
    size = rng.randint(300_000, 900_000) if i % HUGE_EVERY == 0 else rng.randint(10_000, 60_000)
    if kind == "nulls_everywhere":
        return framed(_blank_record(base["app_id"], now))
    if kind == "huge_unknown_app":
        return framed({**record, "app_id": "a" * (size // 2), "event_id": "e" * (size // 2), "event_name": "N" * 1000})
    if kind == "huge_bad_action_source":
        return framed({**record, "action_source": "x" * size, "event_name": "Purchase" * 500})
    if kind == "long_invalid_lists":
        blank = _blank_record(base["app_id"], now)
        blank.update(event_name="Purchase", event_id=f"hostile-{i}", consent=True,
                     custom_data=base["custom_data"], app_data=base["app_data"])
        blank["user_data"] = {**blank["user_data"], "em": ["not-an-email"] * rng.randint(100, 5000),
                              "ph": ["abc"] * rng.randint(100, 2000), "ge": ["?"] * 100}
        return framed(blank)
    if kind == "long_bad_options":
        return framed({**record, "data_processing_options": ["NOT_LDU"] * rng.randint(100, 5000)})
    if kind == "far_future":
        return framed({**record, "event_time": now + rng.randint(3600, 10**9)})
    if kind == "ancient":
        return framed({**record, "event_time": rng.randint(-(2**40), now - 8 * 86400)})
    raise AssertionError(kind)


def test_two_thousand_hostile_records_are_each_dead_lettered_once_and_the_valid_ones_all_land(
    scenario_factory: Callable[..., Scenario], schema_registry_url: str, register_factory: Callable[[str], int],
) -> None:
    rng = random.Random(SEED)
    now = int(time.time())
    schema_id = register_factory(default_schema_path().read_text())
    extra = f'[decode]\nwire_format = "confluent"\nschema_registry_url = "{schema_registry_url}"\n'
    sc = scenario_factory(partitions=4, extra=extra)
    candidates = list(generate(VALID * 2, seed=SEED, now=now, app_ids=APPS_A + APPS_B))
    for r in candidates:
        r["consent"] = True
    valid_keys = expected_keys(candidates, now, sc.routes)
    valid_ids = {k[2] for k in valid_keys}
    valid = [r for r in candidates if r["event_id"] in valid_ids][:VALID]
    assert len(valid) == VALID
    kinds = list(KINDS)
    hostile_kind = {f"hostile-{i}": kinds[i % len(kinds)] for i in range(HOSTILE)}
    schema = load_schema()
    messages: list[tuple[bytes, bytes | None]] = []
    valid_iter = iter(valid)
    for i in range(HOSTILE):
        key = f"hostile-{i}"
        base = valid[rng.randrange(VALID)]
        messages.append((key.encode(), _hostile(rng, hostile_kind[key], i, base, schema_id, now)))
        if i % 2 == 1:  # a valid record after every two hostile ones
            r = next(valid_iter)
            messages.append((r["event_id"].encode(), encode(r, schema, WireFormat.CONFLUENT, schema_id)))
    producer = Producer({"bootstrap.servers": sc.bootstrap, "message.max.bytes": 1_048_000, "linger.ms": 20})
    for key, value in messages:
        producer.produce(sc.topic, key=key, value=value)
    assert producer.flush(60) == 0
    proc = sc.start()
    assert sc.all_committed(timeout=240), f"committed {sc.committed()} != end {sc.end()}"
    assert proc.alive(), "the pipeline exited"
    assert proc.stop() == 0
    events = [e.get("event") for e in proc.log_lines()]
    assert "stage_failed" not in events
    assert events.count("pipeline_started") == 1
    letters = read_topic(sc.bootstrap, sc.dlq_topic, HOSTILE, timeout=60)
    per_key = Counter(m.key().decode() for m in letters)
    assert set(per_key) == set(hostile_kind), "every hostile record is dead-lettered, and nothing else"
    assert [k for k, c in per_key.items() if c != 1] == [], "each exactly once"
    reasons: Counter[str] = Counter()
    for letter in letters:
        headers = headers_of(letter)
        key = letter.key().decode()
        reason = headers["capi.reason"]
        reasons[reason] += 1
        assert reason in DOCUMENTED_REASONS, (key, reason)
        allowed = KINDS[hostile_kind[key]]
        assert allowed is None or reason in allowed, (key, hostile_kind[key], reason)
        assert headers["capi.source_topic"] == sc.topic
    counts = sc.counts()
    assert set(counts) == {k for k in valid_keys if k[2] in {r["event_id"] for r in valid}}
    assert [k for k, c in counts.items() if c != 1] == []
    print(f"fuzz: {HOSTILE} hostile + {VALID} valid messages; dead-letter reasons {dict(reasons)}")
