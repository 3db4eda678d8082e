"""The signal-quality report on a known event mix."""

from __future__ import annotations

from stream.commands.quality import parse
from stream.quality import Quality, rows, table


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
