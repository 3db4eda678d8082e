"""The heartbeat: a progress line per interval, caught_up once per catch-up."""

from __future__ import annotations

from stream.pipeline.progress import Progress, Snapshot


def snap(consumed: int = 10, acked: int = 10, in_flight: int = 0, lag: dict[tuple[str, int], int] | None = None,
         states: dict[str, str] | None = None, assigned: int = 2) -> Snapshot:
    return Snapshot(consumed=consumed, acked=acked, dead_lettered=0, in_flight=in_flight,
                    lag={("t", 0): 0, ("t", 1): 0} if lag is None else lag,
                    destinations=states or {"shop": "flowing"}, assigned=assigned)


def test_one_progress_line_per_interval() -> None:
    """Ticks every second with a 30 s interval give progress lines at 30 s and 60 s only."""
    progress = Progress(30.0, now=0.0)
    events = [(t, line.event) for t in range(1, 61) for line in progress.tick(snap(lag={("t", 0): 5}), float(t))]
    assert [(t, e) for t, e in events if e == "progress"] == [(30, "progress"), (60, "progress")]


def test_progress_carries_counts_lag_states_and_rate() -> None:
    """The line has consumed, acked, in flight, total lag, per-destination state and the ack rate."""
    progress = Progress(10.0, now=0.0)
    progress.tick(snap(consumed=0, acked=0, lag={("t", 0): 3}), 1.0)
    [line] = progress.tick(snap(consumed=500, acked=400, in_flight=100, lag={("t", 0): 7, ("t", 1): 3},
                                states={"shop": "failing", "fit": "flowing"}), 10.0)
    assert line.event == "progress"
    assert line.level == "warning", "a destination that is not flowing makes the line a warning"
    f = line.fields
    assert (f["consumed"], f["acked"], f["in_flight"], f["lag"]) == (500, 400, 100, 10)
    assert f["destinations"] == {"shop": "failing", "fit": "flowing"}
    assert f["acked_per_s"] == 40.0


def test_caught_up_is_logged_once_when_lag_reaches_zero() -> None:
    """Lag falling to 0 with nothing in flight logs caught_up once; it repeats only after falling behind."""
    progress = Progress(0, now=0.0)
    assert progress.tick(snap(lag={("t", 0): 4, ("t", 1): 0}), 1.0) == []
    assert [x.event for x in progress.tick(snap(), 2.0)] == ["caught_up"]
    assert progress.tick(snap(), 3.0) == []
    assert [x.event for x in progress.tick(snap(lag={("t", 0): 9, ("t", 1): 0}), 4.0)] == ["behind"]
    assert [x.event for x in progress.tick(snap(), 5.0)] == ["caught_up"]


def test_not_caught_up_while_events_are_in_flight_or_lag_is_unknown() -> None:
    """Lag 0 with unacked events, or lag not yet reported for every partition, is not caught up."""
    progress = Progress(0, now=0.0)
    assert progress.tick(snap(in_flight=3), 1.0) == []
    assert progress.tick(snap(lag={("t", 0): 0}, assigned=2), 2.0) == []
    assert progress.tick(snap(lag={}, assigned=0), 3.0) == []


def test_interval_zero_means_no_progress_lines() -> None:
    """progress_interval_s = 0 turns the periodic line off (caught_up still comes)."""
    progress = Progress(0, now=0.0)
    assert [x.event for t in range(1, 100) for x in progress.tick(snap(lag={("t", 0): 1}), float(t))] == []
