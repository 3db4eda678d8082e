"""The signal-quality report on a known event mix."""

from __future__ import annotations

import hashlib
from pathlib import Path

from stream.commands.quality import parse
from stream.pipeline.consistency import identity
from stream.pipeline.quality import Quality, Targets, destination_rows, rows, table, worst


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _event(name: str, user_data: dict[str, object], custom: dict[str, object] | None = None) -> dict[str, object]:
    return {"event_name": name, "user_data": user_data, "custom_data": custom}


def test_known_mix_gives_known_shares() -> None:
    """Four purchases, one without currency and one without identifiers, give exact shares and rates."""
    q = Quality()
    q.valid("shop", _event("Purchase", {"em": ["h"], "madid": "m"}, {"value": 1.0, "currency": "usd"}))
    q.valid("shop", _event("Purchase", {"em": ["h"]}, {"value": 2.0, "currency": "usd"}))
    q.valid("shop", _event("Purchase", {"ph": ["h"]}, {"value": 3.0}))
    q.valid("shop", _event("Purchase", {"ge": ["h"], "ct": ["c"]}, {"value": 4.0, "currency": "usd"}))
    q.invalid("shop", "Purchase")
    q.duplicate("shop", "Purchase")
    (row,) = rows(q)
    assert row.events == 4
    assert row.key_share["em"] == 0.5
    assert row.key_share["madid"] == 0.25
    assert row.identifier_share == 0.75
    assert row.revenue_share == 0.75
    assert row.validation_rate == 0.8
    assert row.dedupe_rate == 0.25
    text = table(rows(q))
    assert "Purchase" in text
    assert "75%" in text


def test_non_revenue_events_have_no_value_share() -> None:
    """An install carries no value expectation: its value share is shown as '-'."""
    q = Quality()
    q.valid("games", _event("MobileAppInstall", {"anon_id": "a"}))
    (row,) = rows(q)
    assert row.revenue_share is None
    assert row.key_share["anon_id"] == 1.0


def test_the_quality_command_rebuilds_counters_from_metrics_text() -> None:
    """Parsing Prometheus text gives back the counters the pipeline exported."""
    text = "\n".join([
        "# TYPE capi_stream_quality_events counter",
        'capi_stream_quality_events_total{destination="shop",event_name="Purchase"} 10.0',
        "# TYPE capi_stream_quality_match_key counter",
        'capi_stream_quality_match_key_total{destination="shop",event_name="Purchase",key="em"} 4.0',
        "# TYPE capi_stream_quality_with_identifier counter",
        'capi_stream_quality_with_identifier_total{destination="shop",event_name="Purchase"} 9.0',
        "",
    ])  # fmt: skip
    (row,) = rows(parse(text))
    assert row.events == 10
    assert row.key_share["em"] == 0.4
    assert row.identifier_share == 0.9


def test_consistency_and_latency_columns_from_known_counts() -> None:
    """Ten ids of which one switches email, and four acks of which three within 5 s, give exact shares."""
    from stream.pipeline.consistency import identity

    q = Quality()
    for i in range(10):
        ident = identity({"external_id": [_h(f"user-{i}")], "em": [_h(f"user-{i}@example.com")]})
        assert ident is not None
        q.identity("shop", "Purchase", ident, 1_800_000_000.0)
        if i == 0:
            ident = (ident[0], ident[1] + 1, ident[2])
        q.identity("shop", "Purchase", ident, 1_800_000_001.0)
    for seconds in (0.2, 4.9, 5.0, 6.0):
        q.acknowledged("shop", "Purchase", seconds)
    (row,) = rows(q)
    assert row.consistency == 0.9
    assert row.on_time_share == 0.75
    (dest,) = destination_rows(q)
    assert (dest.ids, dest.ids_inconsistent, dest.consistency, dest.on_time_share) == (10, 1, 0.9, 0.75)
    assert worst([row], [dest]) == [
        "destination shop: 90.0% of 10 external_ids consistent (1 seen with a second em or ph)",
        "event shop/Purchase: 90.0% of repeat-id events consistent",
    ]
    text = table([row], Targets(user_consistency=0.97, latency_threshold_s=2.5), [dest])
    assert "consistent ids 97%" in text
    assert "<=2.5s" in text
    assert "90.0%" in text


def test_clean_destinations_are_not_listed_as_worst() -> None:
    """A destination whose ids never changed email has 100% consistency and no line in the worst list."""
    from stream.pipeline.consistency import identity

    q = Quality()
    ident = identity({"external_id": ["u1"], "em": [_h("a@example.com")]})
    assert ident is not None
    q.identity("fit", "Purchase", ident, 1.0)
    q.identity("fit", "Purchase", ident, 2.0)
    assert worst(rows(q), destination_rows(q)) == []
    assert destination_rows(q)[0].consistency == 1.0


def test_latency_threshold_comes_from_the_targets() -> None:
    """With a 1 s threshold a 2 s ack is late; with the default 5 s it is on time."""
    strict = Quality(targets=Targets(latency_threshold_s=1.0))
    default = Quality()
    for q in (strict, default):
        q.acknowledged("shop", "Purchase", 2.0)
    assert rows(strict)[0].on_time_share == 0.0
    assert rows(default)[0].on_time_share == 1.0


def test_the_quality_command_reads_consistency_latency_and_targets_back() -> None:
    """Parsing the metrics the collector exports gives back every new counter and the targets."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    from stream.pipeline.consistency import identity
    from stream.pipeline.metrics import quality_families

    q = Quality(targets=Targets(user_consistency=0.8, latency_threshold_s=3.0))
    a = identity({"external_id": ["u1"], "em": [_h("a@example.com")]})
    b = identity({"external_id": ["u1"], "em": [_h("b@example.com")]})
    assert a is not None
    assert b is not None
    q.identity("shop", "Purchase", a, 1.0)
    q.identity("shop", "Purchase", b, 2.0)
    q.acknowledged("shop", "Purchase", 1.0)
    q.acknowledged("shop", "Purchase", 4.0)

    class Only(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            yield from quality_families(q)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Only())
    back = parse(generate_latest(registry).decode())
    assert (back.ids, back.ids_inconsistent) == (q.ids, q.ids_inconsistent)
    assert (back.identity_checked, back.identity_inconsistent) == (q.identity_checked, q.identity_inconsistent)
    assert (back.acked, back.acked_on_time) == (q.acked, q.acked_on_time)
    assert back.targets == q.targets
    assert back.evictions == {"shop": 0}


def test_the_targets_are_the_config_s_quality_table() -> None:
    """One source of truth: the report's targets are the [quality] table's type, so its defaults cannot drift
    from the config's; the defaults are the figures the README documents."""
    from stream.config import QualitySettings

    assert Targets() == QualitySettings()
    assert Quality().targets == QualitySettings()
    assert Quality().max_ids == QualitySettings().consistency_max_ids
    s = QualitySettings()
    assert (s.identifier_share, s.revenue_value_share, s.acceptance_rate, s.user_consistency,
            s.latency_threshold_s) == (0.95, 0.90, 0.99, 0.95, 5.0)


def test_the_runner_builds_the_counters_from_the_quality_table(tmp_path: Path) -> None:
    """[quality] targets, the tracker bound and the dedupe window reach the counters the pipeline keeps."""
    from stream import config
    from stream.pipeline.runner import quality_for

    path = tmp_path / "c.toml"
    path.write_text("[quality]\nidentifier_share = 0.9\nrevenue_value_share = 0.8\nacceptance_rate = 0.97\n"
                    "user_consistency = 0.85\nlatency_threshold_s = 2.0\nconsistency_max_ids = 3\n"
                    "[dedupe]\nwindow_s = 600\n")
    q = quality_for(config.load(path, env={}))
    assert q.targets == Targets(0.9, 0.8, 0.97, 0.85, 2.0, 3)
    assert (q.max_ids, q.window_s) == (3, 600.0)
    for uid in ("a", "b", "c", "d"):
        ident = identity({"external_id": [uid], "em": [_h(uid)]})
        assert ident is not None
        q.identity("shop", "Purchase", ident, 1.0)
    assert (len(q.trackers["shop"]), q.tracker_evictions("shop")) == (3, 1)


def test_events_meta_refuses_lower_the_acceptance_rate() -> None:
    """Ten valid events, one refused by our validation and one by Meta, give 9 accepted of 11 seen."""
    q = Quality()
    for _ in range(10):
        q.valid("shop", _event("Purchase", {"em": ["h"]}, {"value": 1.0, "currency": "usd"}))
    q.invalid("shop", "Purchase")
    q.refused_by_meta("shop", "Purchase")
    (row,) = rows(q)
    assert row.validation_rate == 9 / 11
    text = "\n".join([
        "# TYPE capi_stream_quality_events counter",
        'capi_stream_quality_events_total{destination="shop",event_name="Purchase"} 10.0',
        "# TYPE capi_stream_quality_rejected counter",
        'capi_stream_quality_rejected_total{destination="shop",event_name="Purchase"} 1.0',
        "# TYPE capi_stream_quality_meta_rejected counter",
        'capi_stream_quality_meta_rejected_total{destination="shop",event_name="Purchase"} 1.0',
        "",
    ])  # fmt: skip
    assert rows(parse(text))[0].validation_rate == 9 / 11


def test_an_acknowledged_batch_counts_as_its_events_one_by_one() -> None:
    names = ["Purchase", "AppInstall", "Purchase", "Subscribe", "Purchase"]
    seconds = [0.5, 4.99, 5.0, 5.01, 60.0]
    one, many = Quality(), Quality()
    for name, s in zip(names, seconds, strict=True):
        one.acknowledged("main", name, s)
    many.acknowledged_batch("main", names, seconds)
    assert many.acked == one.acked
    assert many.acked_on_time == one.acked_on_time
    assert many.acked[("main", "Purchase")] == 3
    assert many.acked_on_time[("main", "Purchase")] == 2  # within the default 5 s threshold


def test_a_batch_of_valid_events_counts_as_one_by_one() -> None:
    from stream.pipeline.prepare import Kind, Prepared

    sent = [
        Prepared(Kind.SEND, "main", event_name="Purchase", keys=("em", "ph"), revenue=True, has_value=True),
        Prepared(Kind.SEND, "main", event_name="Purchase", keys=(), revenue=True, has_value=False),
        Prepared(Kind.SEND, "other", event_name="AppInstall", keys=("madid",)),
        Prepared(Kind.SEND, "main", event_name="Subscribe", keys=("em",), revenue=True, has_value=True),
    ]
    one, many = Quality(), Quality()
    for p in sent:
        one.count(p.destination, p.event_name, p.keys, p.revenue, p.has_value)
    many.count_many(sent)
    for counter in ("events", "with_key", "with_identifier", "revenue", "revenue_with_value"):
        assert getattr(many, counter) == getattr(one, counter), counter
    assert many.with_key[("main", "Purchase", "ph")] == 1
    assert many.revenue_with_value[("main", "Purchase")] == 1
    many.count_many([])
    assert many.events == one.events
