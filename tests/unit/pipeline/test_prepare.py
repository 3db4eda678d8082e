"""Preparer.prepare on generated records: each outcome equals one built the straightforward way.

The preparer builds its outcome tuples and match keys in cheaper ways than the obvious code (issue #15);
these tests hold it to the obvious code over a generated stream with every kind of outcome in it.
"""

from __future__ import annotations

import orjson

from stream.avro.schema import load_schema
from stream.avro.wire import WireFormat, encode
from stream.contract.normalize import NO_CONSENT, NormalizeSettings, normalize_event
from stream.pipeline.consistency import identity
from stream.pipeline.prepare import UNKNOWN_DESTINATION, Kind, PrepareContext, Prepared, Preparer
from stream.pipeline.quality import MATCH_KEYS, REVENUE_EVENTS, Quality, match_keys
from stream.tools.samples import generate

NOW = 1_800_000_000
APPS = ("app.shop", "app.game")
SETTINGS = NormalizeSettings(default_country=None, require_consent=True, hash_external_id=True)


def _expected(record: dict[str, object]) -> Prepared:
    """The outcome of one decoded record, written the obvious way."""
    name = record.get("event_name")
    eid = record.get("event_id")
    event_name = name if isinstance(name, str) else ""
    event_id = eid if isinstance(eid, str) else None
    if record.get("app_id") not in APPS:
        return Prepared(Kind.DEAD, event_name=event_name, event_id=event_id, reason=UNKNOWN_DESTINATION,
                        detail=f"no destination for app_id {record.get('app_id')!r}"[:200])
    outcome = normalize_event(record, NOW, SETTINGS)
    dropped = tuple((d.field, d.reason) for d in outcome.dropped)
    if outcome.event is None:
        assert outcome.rejection is not None
        kind = Kind.NO_CONSENT if outcome.rejection.reason == NO_CONSENT else Kind.DEAD
        return Prepared(kind, "main", event_name=event_name, event_id=event_id, reason=outcome.rejection.reason,
                        detail=outcome.rejection.detail, dropped=dropped)
    event = outcome.event
    user_data = event.get("user_data") or {}
    custom = event.get("custom_data") or {}
    revenue = event["event_name"] in REVENUE_EVENTS
    return Prepared(Kind.SEND, "main", body=orjson.dumps(event), event_name=event["event_name"],
                    event_id=event.get("event_id"), event_time=event["event_time"], dropped=dropped,
                    keys=tuple(k for k in MATCH_KEYS if k in user_data), revenue=revenue,
                    has_value=revenue and custom.get("value") is not None and bool(custom.get("currency")),
                    identity=identity(user_data))


def _records() -> list[dict[str, object]]:
    """A generated stream with valid events, missing consent, invalid purchases, stale events, unknown
    apps and user_data with fields taken out (other match key sets)."""
    records = list(generate(1_500, seed=3, now=NOW, app_ids=(*APPS, "app.unknown"), duplicate_rate=0.02,
                            stale_events=20, invalid_purchases=20))
    for i, record in enumerate(records):
        record["consent"] = i % 11 != 0
        user_data = record["user_data"]
        assert isinstance(user_data, dict)
        custom = record["custom_data"]
        if i % 7 == 0 and record["event_name"] == "Subscribe" and isinstance(custom, dict):
            custom["currency"] = None  # a revenue event without its value's currency
        for j, key in enumerate(MATCH_KEYS):
            if (i >> j) & 1 and i % 3 == 0:
                user_data[key] = None
    return records


def test_prepared_outcomes_equal_the_straightforward_ones() -> None:
    schema = load_schema()
    records = _records()
    values = [encode(r, schema) for r in records]
    preparer = Preparer(PrepareContext(None, WireFormat.SCHEMALESS.value, dict.fromkeys(APPS, ("main", SETTINGS))))
    prepared = [p for start in range(0, len(values), 500) for p in preparer.prepare(values[start:start + 500], NOW)]
    expected = [_expected(preparer.decoder.decode(v)) for v in values]
    assert prepared == expected
    assert all(type(p) is Prepared for p in prepared)
    kinds = {p.kind for p in prepared}
    assert kinds == {Kind.SEND, Kind.DEAD, Kind.NO_CONSENT}
    assert len({p.keys for p in prepared if p.kind is Kind.SEND}) > 10  # many match key sets were met
    assert any(p.revenue and not p.has_value for p in prepared if p.kind is Kind.SEND)


def test_quality_counts_of_a_prepared_batch_equal_counting_each_event() -> None:
    """count_many over prepared batches gives every (destination, event, key) count `valid` gives."""
    schema = load_schema()
    records = _records()
    preparer = Preparer(PrepareContext(None, WireFormat.SCHEMALESS.value, dict.fromkeys(APPS, ("main", SETTINGS))))
    values = [encode(r, schema) for r in records]
    many, one = Quality(), Quality()
    for start in range(0, len(values), 500):
        many.count_many([p for p in preparer.prepare(values[start:start + 500], NOW) if p.kind is Kind.SEND])
    for value in values:
        record = preparer.decoder.decode(value)
        if record.get("app_id") in APPS and (event := normalize_event(record, NOW, SETTINGS).event) is not None:
            one.valid("main", event)
    for counter in ("events", "with_key", "with_identifier", "revenue", "revenue_with_value"):
        assert getattr(many, counter) == getattr(one, counter), counter
    assert sum(many.events.values()) > 500
    assert 0 < sum(many.revenue_with_value.values()) < sum(many.revenue.values())


def test_match_keys_follow_the_fields_not_their_order() -> None:
    assert match_keys({"ph": 1, "em": 2, "fn": 3}) == ("em", "ph")
    assert match_keys({"em": 2, "ph": 1}) == ("em", "ph")
    assert match_keys({"fn": 1}) == ()
    assert match_keys({}) == ()
    assert match_keys({"fbp": 1, "external_id": 2, "madid": None}) == ("external_id", "madid", "fbp")
