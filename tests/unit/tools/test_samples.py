"""The sample generator: seeded, schema-valid, realistic, with its knobs doing what they say."""

from __future__ import annotations

import collections
import io

import fastavro
import pytest
from fastavro.validation import validate

from stream.avro.schema import load_schema
from stream.tools.samples import DEFAULT_APP_IDS, generate

NOW = 1_790_000_000


def test_same_seed_same_events() -> None:
    """A seed and a time give the same stream every run; another seed gives another."""
    assert list(generate(50, seed=7, now=NOW)) == list(generate(50, seed=7, now=NOW))
    assert list(generate(50, seed=7, now=NOW)) != list(generate(50, seed=8, now=NOW))


def test_records_fit_the_avro_schema() -> None:
    """Every record validates against schemas/conversion_event.avsc and round-trips through Avro."""
    schema = load_schema()
    for record in generate(200, seed=1, now=NOW, duplicate_rate=0.1, stale_events=3, invalid_purchases=3):
        assert validate(record, schema, raise_errors=True)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
        buffer.seek(0)
        assert fastavro.schemaless_reader(buffer, schema, schema) == record


def test_realistic_mix() -> None:
    """Installs, purchases and subscriptions all occur, from the given apps, within 24 h before now."""
    records = list(generate(1000, seed=2, now=NOW, app_ids=("a.b",)))
    names = collections.Counter(r["event_name"] for r in records)
    assert {"MobileAppInstall", "Purchase", "Subscribe", "StartTrial", "CompleteRegistration"} <= set(names)
    assert {r["app_id"] for r in records} == {"a.b"}
    assert all(NOW - 86400 < r["event_time"] <= NOW for r in records)
    phones = {r["user_data"]["ph"] for r in records if r["user_data"]["ph"]}
    assert any(p.startswith("+") for p in phones)
    assert any(not p.startswith(("+", "00")) for p in phones)  # national formats too
    assert all(r["action_source"] == "app" and len(r["app_data"]["extinfo"]) == 16 for r in records)


def test_people_repeat_across_events() -> None:
    """With the default pool of one person per 4 events, a person's email appears on several events."""
    emails = collections.Counter(r["user_data"]["em"] for r in generate(400, seed=3, now=NOW) if r["user_data"]["em"])
    assert max(emails.values()) > 1


@pytest.mark.parametrize("n", [0, 1, 5])
def test_counts(n: int) -> None:
    """Exactly n records, with the default app ids."""
    records = list(generate(n, seed=4, now=NOW))
    assert len(records) == n
    assert all(r["app_id"] in DEFAULT_APP_IDS for r in records)


def test_knobs() -> None:
    """Stale events are older than 7 days, invalid purchases lack a value, duplicates repeat an event_id."""
    records = list(generate(300, seed=5, now=NOW, duplicate_rate=0.2, stale_events=4, invalid_purchases=3))
    assert sum(r["event_time"] < NOW - 7 * 86400 for r in records) >= 4
    invalid = [r for r in records if r["event_name"] == "Purchase" and r["custom_data"]["value"] is None]
    assert len({r["event_id"] for r in invalid}) == 3
    ids = collections.Counter(r["event_id"] for r in records)
    assert sum(c - 1 for c in ids.values()) > 20
