"""Parking's pure parts: when to park, when to drain, when to pause the parking partitions, the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import load, parking_group, parking_topic_name, parking_topics
from stream.errors import ConfigError
from stream.pipeline.parking import (
    REASON_HALTED,
    REASON_HALTED_DRAINING,
    REASON_HELD_SHARE,
    Change,
    Mode,
    Origin,
    Parking,
    log_lag,
    origin_of,
    park_reason,
    parked_record,
)


def _parking(park_after_s: float = 10.0, share_limit: float = 100.0) -> Parking:
    return Parking("b", "g.b.parking", park_after_s, share_limit)


class TestParkReason:
    def test_halted_long_enough_parks(self) -> None:
        reason = park_reason(halted_for=10.0, held=0, park_after_s=10.0, share_limit=100, struggling=True)
        assert reason == REASON_HALTED

    def test_halted_not_long_enough_does_not(self) -> None:
        assert park_reason(halted_for=9.9, held=0, park_after_s=10.0, share_limit=100, struggling=True) is None

    def test_holding_more_than_the_share_parks_a_struggling_destination_even_when_not_halted(self) -> None:
        assert park_reason(halted_for=None, held=101, park_after_s=10.0, share_limit=100,
                           struggling=True) == REASON_HELD_SHARE
        assert park_reason(halted_for=None, held=100, park_after_s=10.0, share_limit=100, struggling=True) is None

    def test_a_flowing_destination_is_never_parked_for_what_it_holds(self) -> None:
        """Under backpressure the busiest healthy destination holds most of the bound: that is load, not a fault."""
        assert park_reason(halted_for=None, held=10**6, park_after_s=10.0, share_limit=100, struggling=False) is None
        p = _parking(park_after_s=10.0, share_limit=100)
        assert p.step(0.0, halted=False, held=10**6, idle=False, lag=None, lag_at=0.0) is None
        assert p.step(1.0, halted=False, struggling=True, held=101, idle=False, lag=None, lag_at=0.0) is Change.PARK

    def test_zero_disables_parking(self) -> None:
        assert park_reason(halted_for=1e9, held=10**9, park_after_s=0, share_limit=100, struggling=True) is None


class TestStateMachine:
    def test_halted_destination_parks_after_park_after_s_then_drains_on_resume_then_goes_live(self) -> None:
        p = _parking()
        assert p.step(0.0, halted=True, held=50, idle=False, lag=None, lag_at=0.0) is None
        assert p.step(9.0, halted=True, held=50, idle=False, lag=None, lag_at=0.0) is None
        assert p.step(10.0, halted=True, held=50, idle=False, lag=None, lag_at=0.0) is Change.PARK
        assert (p.mode, p.reason) == (Mode.PARKED, REASON_HALTED)
        # still halted: stays parked whatever it holds
        assert p.step(50.0, halted=True, held=0, idle=True, lag=500, lag_at=49.0) is None
        # resumed (a new token): drains at once
        assert p.step(51.0, halted=False, held=0, idle=True, lag=500, lag_at=49.0) is Change.DRAIN
        assert p.mode is Mode.DRAINING
        # a lag of 0 from statistics older than the drain does not end it
        assert p.step(52.0, halted=False, held=0, idle=True, lag=0, lag_at=50.0) is None
        assert p.step(53.0, halted=False, held=10, idle=False, lag=20, lag_at=52.5) is None
        assert p.step(54.0, halted=False, held=0, idle=True, lag=0, lag_at=53.5) is Change.LIVE
        assert p.mode is Mode.LIVE

    def test_a_halt_while_draining_parks_again_at_once(self) -> None:
        p = _parking()
        p.step(0.0, halted=True, held=0, idle=True, lag=None, lag_at=0.0)
        p.step(10.0, halted=True, held=0, idle=True, lag=None, lag_at=0.0)
        p.step(11.0, halted=False, held=0, idle=True, lag=5, lag_at=0.0)
        assert p.mode is Mode.DRAINING
        assert p.step(11.5, halted=True, held=5, idle=False, lag=5, lag_at=11.2) is Change.PARK
        assert (p.mode, p.reason) == (Mode.PARKED, REASON_HALTED_DRAINING)

    def test_the_quiet_drain_a_run_starts_in_waits_park_after_s_on_a_halt(self) -> None:
        """Nothing read back yet: a halt right after the start parks after park_after_s, as when live."""
        p = Parking("b", "g.b.parking", 10.0, 100.0, mode=Mode.DRAINING)
        assert p.step(1.0, halted=True, held=5, idle=False, lag=None, lag_at=0.0) is None
        assert p.step(10.9, halted=True, held=5, idle=False, lag=None, lag_at=0.0) is None
        assert p.step(11.0, halted=True, held=5, idle=False, lag=None, lag_at=0.0) is Change.PARK
        assert p.reason == REASON_HALTED

    def test_a_drain_with_records_read_back_parks_at_once_on_a_halt(self) -> None:
        p = Parking("b", "g.b.parking", 10.0, 100.0, mode=Mode.DRAINING)
        p.backlog = True
        assert p.step(1.0, halted=True, held=5, idle=False, lag=None, lag_at=0.0) is Change.PARK
        assert p.reason == REASON_HALTED_DRAINING

    def test_a_drain_is_never_parked_again_for_what_it_holds(self) -> None:
        """What the drain reads back is bounded by pausing the parking partitions, not by parking it again."""
        p = _parking(share_limit=100)
        p.mode = Mode.DRAINING
        assert p.step(1.0, halted=False, held=1000, idle=False, lag=5000, lag_at=0.5) is None
        assert p.mode is Mode.DRAINING

    def test_parked_for_its_share_waits_park_after_s_before_draining(self) -> None:
        p = _parking(park_after_s=10.0, share_limit=100)
        assert p.step(0.0, halted=False, struggling=True, held=101, idle=False, lag=None, lag_at=0.0) is Change.PARK
        assert p.reason == REASON_HELD_SHARE
        assert p.step(5.0, halted=False, held=0, idle=True, lag=None, lag_at=0.0) is None
        assert p.step(10.0, halted=False, held=0, idle=True, lag=None, lag_at=0.0) is Change.DRAIN

    def test_parked_waits_until_its_sender_gave_everything_back(self) -> None:
        p = _parking()
        p.step(0.0, halted=True, held=0, idle=True, lag=None, lag_at=0.0)
        p.step(10.0, halted=True, held=0, idle=True, lag=None, lag_at=0.0)
        assert p.step(11.0, halted=False, held=3, idle=False, lag=None, lag_at=0.0) is None
        assert p.mode is Mode.PARKED

    def test_a_live_destination_with_parked_records_left_by_an_earlier_run_drains(self) -> None:
        p = _parking()
        assert p.step(1.0, halted=False, held=0, idle=True, lag=0, lag_at=0.5) is None
        assert p.step(2.0, halted=False, held=0, idle=True, lag=40, lag_at=1.5) is Change.DRAIN

    def test_parking_off_never_changes_mode_but_tracks_the_halt(self) -> None:
        p = _parking(park_after_s=0)
        assert p.step(0.0, halted=True, held=10**6, idle=False, lag=10, lag_at=1.0) is None
        assert p.step(1e6, halted=True, held=10**6, idle=False, lag=10, lag_at=1.0) is None
        assert p.mode is Mode.LIVE
        assert not p.partitions_paused(10**6)

    def test_parking_partitions_paused_while_parked_and_while_a_drain_holds_half_the_limit(self) -> None:
        p = _parking(share_limit=100)
        assert not p.partitions_paused(0)
        p.mode = Mode.PARKED
        assert p.partitions_paused(0)
        p.mode = Mode.DRAINING
        assert not p.partitions_paused(49)
        assert p.partitions_paused(50)
        assert p.partitions_paused(30)  # hysteresis: resumes below a quarter
        assert not p.partitions_paused(24)

    def test_oldest_parked_event_is_tracked_and_forgotten_when_the_drain_ends(self) -> None:
        p = _parking()
        p.count_parked(2000)
        p.count_parked(1000)
        p.count_parked(0)  # no event_time: does not count as the oldest
        assert (p.parked, p.oldest_event_time) == (3, 1000)
        p.mode = Mode.DRAINING
        p.step(1.0, halted=False, held=0, idle=True, lag=0, lag_at=0.5)
        assert (p.mode, p.oldest_event_time) == (Mode.LIVE, 0)


class TestRecord:
    def test_parked_record_keeps_the_bytes_and_says_where_from_and_why(self) -> None:
        record = parked_record(Origin("events", 3, 42), b"k", b"\x00avro", "fitness", REASON_HALTED,
                               event_time=1700000000, event_name="Purchase", event_id="o-1")
        assert (record.key, record.value) == (b"k", b"\x00avro")
        headers = dict(record.headers(now=1.0))
        assert headers["capi.source_topic"] == b"events"
        assert headers["capi.source_partition"] == b"3"
        assert headers["capi.source_offset"] == b"42"
        assert headers["capi.destination"] == b"fitness"
        assert headers["capi.reason"] == REASON_HALTED.encode()
        assert headers["capi.event_time"] == b"1700000000"

    def test_origin_round_trips_through_the_headers(self) -> None:
        record = parked_record(Origin("events", 3, 42), None, b"v", "fitness", REASON_HALTED)
        assert origin_of(record.headers(now=1.0)) == Origin("events", 3, 42)
        assert origin_of(dict(record.headers(now=1.0))) == Origin("events", 3, 42)

    def test_records_without_an_origin_have_none(self) -> None:
        assert origin_of(None) is None
        assert origin_of([("capi.source_topic", b"events")]) is None
        assert origin_of([("capi.source_topic", b"t"), ("capi.source_partition", b"x"),
                          ("capi.source_offset", b"1")]) is None


class TestLag:
    def test_lag_sums_the_topics_assigned_partitions(self) -> None:
        bounds = {("p", 0): (0, 10, 4), ("p", 1): (5, 8, -1), ("q", 0): (0, 100, 0)}
        assert log_lag(bounds, "p") == (6 + 3, 2)
        assert log_lag(bounds, "r") == (0, 0)

    def test_committed_below_the_low_watermark_counts_from_it(self) -> None:
        assert log_lag({("p", 0): (50, 60, 10)}, "p") == (10, 1)


class TestConfig:
    def test_topic_name_from_group_and_destination(self) -> None:
        assert parking_topic_name("{group}.{destination}.parking", "my group", "fit/ness") == \
            "my_group.fit_ness.parking"
        with pytest.raises(ValueError, match="only"):
            parking_topic_name("{grp}", "g", "d")
        with pytest.raises(ValueError, match="legal"):
            parking_topic_name("x" * 250 + "{destination}", "g", "d")

    def test_park_settings_are_checked(self, tmp_path: Path) -> None:
        def conf(text: str) -> str:
            path = tmp_path / "c.toml"
            path.write_text(text + '\n[destinations.a]\ndataset_id = "1"\napp_ids = ["x"]\ntoken_env = "T"\n'
                            '[destinations.b]\ndataset_id = "2"\napp_ids = ["y"]\ntoken_env = "T"\n')
            return str(path)

        settings = load(conf(""), env={})
        assert parking_topics(settings) == {"a": "capi-stream.a.parking", "b": "capi-stream.b.parking"}
        assert parking_group(settings) == "capi-stream.parking"
        assert parking_topics(load(conf("[send]\npark_after_s = 0"), env={})) == {}
        with pytest.raises(ConfigError, match=r"send\.park_after_s"):
            load(conf("[send]\npark_after_s = -1"), env={})
        with pytest.raises(ConfigError, match=r"send\.park_share"):
            load(conf("[send]\npark_share = 0"), env={})
        with pytest.raises(ConfigError, match="must contain"):
            load(conf('[kafka]\nparking_topic = "{group}.parked"'), env={})
        with pytest.raises(ConfigError, match="source, dead-letter"):
            load(conf('[kafka]\ntopics = ["capi-stream.a.parking"]'), env={})
