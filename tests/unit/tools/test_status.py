"""The pure parts of `capi-stream status`: finding members' metrics, reading them, the text view."""

from __future__ import annotations

from stream.pipeline.metrics import metrics_client_id
from stream.tools.admin import GroupView, MemberView
from stream.tools.status import MemberMetrics, PartitionRow, StatusReport, metrics_url, parse_metrics, render

METRICS = """\
# TYPE capi_stream_destination_state gauge
capi_stream_destination_state{destination="shop",state="flowing"} 0.0
capi_stream_destination_state{destination="shop",state="failing"} 1.0
capi_stream_destination_state{destination="fit",state="flowing"} 1.0
# TYPE capi_stream_in_flight_events gauge
capi_stream_in_flight_events 42.0
# TYPE capi_stream_oldest_unacked_event_age_seconds gauge
capi_stream_oldest_unacked_event_age_seconds 400000.0
"""


def test_a_member_advertising_its_metrics_port_is_found_by_its_client_id() -> None:
    """The client id the pipeline sets round-trips to the member's /metrics URL; other ids give none."""
    assert metrics_url("10.0.0.7", metrics_client_id(9464)) == "http://10.0.0.7:9464/metrics"
    assert metrics_url("10.0.0.7", "rdkafka") is None
    assert metrics_url("", metrics_client_id(9464)) is None


def test_metrics_text_gives_states_in_flight_and_oldest_age() -> None:
    """Only the state at 1 counts; gauges are read by name."""
    m = parse_metrics("u", METRICS)
    assert m.destinations == {"shop": "failing", "fit": "flowing"}
    assert (m.in_flight, m.oldest_unacked_age_s) == (42.0, 400000.0)


def test_render_warns_when_the_oldest_event_nears_the_cliff() -> None:
    """Past half of Meta's 7 days the line starts with WARNING and says how long is left."""
    group = GroupView("g", "STABLE", (MemberView("m-1", "capi-stream-metrics-9464", "10.0.0.7", (("t", 0),)),))
    report = StatusReport(group, (PartitionRow("t", 0, 5, 9, 4, "capi-stream-metrics-9464"),),
                          (parse_metrics("http://10.0.0.7:9464/metrics", METRICS),))
    text = render(report)
    assert "group g: STABLE, 1 member(s), total lag 4" in text
    assert "destinations fit=flowing, shop=failing; in flight 42" in text
    assert "WARNING: oldest unacknowledged event is 4d 15h old; Meta refuses it in 2d 8h" in text


def test_an_unreachable_member_is_reported_not_raised() -> None:
    """A member whose metrics cannot be read shows the reason; the rest of the view still prints."""
    group = GroupView("g", "STABLE", ())
    text = render(StatusReport(group, (), (MemberMetrics("http://x:1/metrics", error="unreachable: refused"),)))
    assert "metrics http://x:1/metrics: unreachable: refused" in text
