"""The pure parts of `capi-stream status`: finding members' metrics, reading them, the text view."""

from __future__ import annotations

from stream.pipeline.metrics import metrics_client_id
from stream.tools.admin import GroupView, MemberView, UnknownTopicError
from stream.tools.status import (
    MemberMetrics,
    PartitionRow,
    StatusReport,
    gather,
    metrics_url,
    parse_metrics,
    render,
)

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


class FakeAdmin:
    """The admin calls `gather` makes, over fixed answers: topic -> partitions' (low, high), and
    (group, topic) -> committed offsets; a group not described is empty."""

    def __init__(self, marks: dict[str, dict[int, tuple[int, int]]],
                 committed: dict[tuple[str, str], dict[int, int | None]], groups: dict[str, GroupView]) -> None:
        self.marks = marks
        self.done = committed
        self.groups = groups

    def describe_group(self, group: str) -> GroupView:
        return self.groups.get(group, GroupView(group, "EMPTY", ()))

    def partitions(self, topic: str) -> list[int]:
        if topic not in self.marks:
            raise UnknownTopicError(f"topic {topic} does not exist")
        return sorted(self.marks[topic])

    def watermarks(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        return {p: self.marks[topic][p] for p in partitions}

    def committed(self, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
        got = self.done.get((group, topic), {})
        return {p: got.get(p) for p in partitions}


def test_status_shows_the_parking_group_and_the_destinations_with_events_waiting() -> None:
    """Beside the source group, the parking group's committed offsets and lag per parking partition (and
    its owner), and each destination whose parking topic holds events, with the state its members report;
    a parking topic not created yet is no error."""
    member = MemberView("m-1", "capi-stream-metrics-9464", "10.0.0.7", (("g.fit.parking", 0), ("g.fit.parking", 1)))
    admin = FakeAdmin({"t": {0: (0, 9)}, "g.fit.parking": {0: (0, 30), 1: (4, 12)}},
                      {("g", "t"): {0: 9}, ("g.parking", "g.fit.parking"): {0: 20}},
                      {"g": GroupView("g", "STABLE", ()), "g.parking": GroupView("g.parking", "STABLE", (member,))})
    fit = MemberMetrics("u", destinations={"fit": "parked", "shop": "flowing"})
    report = gather(admin, "g", ["t"], parking={"fit": "g.fit.parking", "shop": "g.shop.parking"},
                    parking_group="g.parking", fetch=lambda _u: fit, extra_urls=["u"])
    assert [(r.topic, r.partition, r.committed, r.end, r.lag, r.owner) for r in report.parking_partitions] == [
        ("g.fit.parking", 0, 20, 30, 10, "capi-stream-metrics-9464"),
        ("g.fit.parking", 1, None, 12, 8, "capi-stream-metrics-9464")]
    assert report.waiting == {"fit": 18}
    text = render(report)
    assert "parking group g.parking: STABLE, 1 member(s), total lag 18" in text
    assert "  g.fit.parking                   0         20         30       10  capi-stream-metrics-9464" in text
    assert "parked destination fit: 18 event(s) waiting in g.fit.parking (state: parked)" in text
    assert "shop" not in text.split("parking group")[1].split("metrics u")[0]
    doc = report.to_dict()
    assert doc["parking"]["group"] == "g.parking"
    assert doc["parking"]["waiting"] == {"fit": 18}
    assert doc["parking"]["total_lag"] == 18


PARKED_METRICS = """\
# TYPE capi_stream_destination_state gauge
capi_stream_destination_state{destination="fit",state="parked"} 1.0
# TYPE capi_stream_in_flight_events gauge
capi_stream_in_flight_events 0.0
# TYPE capi_stream_oldest_unacked_event_age_seconds gauge
capi_stream_oldest_unacked_event_age_seconds 0.0
# TYPE capi_stream_parked_oldest_event_age_seconds gauge
capi_stream_parked_oldest_event_age_seconds{destination="fit"} 400000.0
capi_stream_parked_oldest_event_age_seconds{destination="shop"} 0.0
"""


def test_status_shows_the_age_of_parked_events_against_the_cliff() -> None:
    """Parked events are unacknowledged too: a destination parked for days holds nothing in memory (oldest
    unacked: none), yet its oldest parked event nears Meta's 7 days. The parked line gives that age and the
    cliff line warns about it, as the alerts do (they watch both gauges)."""
    admin = FakeAdmin({"t": {0: (0, 9)}, "g.fit.parking": {0: (0, 30)}},
                      {("g", "t"): {0: 9}, ("g.parking", "g.fit.parking"): {0: 20}},
                      {"g": GroupView("g", "STABLE", ()), "g.parking": GroupView("g.parking", "STABLE", ())})
    member = parse_metrics("u", PARKED_METRICS)
    assert member.parked_oldest_age_s == {"fit": 400000.0, "shop": 0.0}
    report = gather(admin, "g", ["t"], parking={"fit": "g.fit.parking"}, parking_group="g.parking",
                    fetch=lambda _u: member, extra_urls=["u"])
    text = render(report)
    assert "parked destination fit: 10 event(s) waiting in g.fit.parking (state: parked); oldest 4d 15h old" in text
    assert "WARNING: oldest unacknowledged event is 4d 15h old (parked, fit); Meta refuses it in 2d 8h" in text
    assert report.to_dict()["oldest_unacked_age_s"] == 400000.0
