"""When a halted destination is probed, what a probe's answer means, and how the probes back off (pure)."""

from __future__ import annotations

import pytest

from stream.pipeline.meta_client import NOT_ACKED, Action, Answer
from stream.pipeline.probing import ProbeOutcome, ProbeSchedule, probe_outcome

INITIAL = 60.0
CAP = 900.0


def schedule() -> ProbeSchedule:
    return ProbeSchedule(INITIAL, CAP)


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (Answer(Action.ACKED, 200, events_received=1), ProbeOutcome.OK),
        (Answer(Action.HALT, 400, 190, 463), ProbeOutcome.REFUSED),
        (Answer(Action.HALT, 400, 100, 33), ProbeOutcome.REFUSED),
        (Answer(Action.HALT, 403), ProbeOutcome.REFUSED),  # a WAF's page
        (Answer(Action.REJECTED, 400, 100, 2804019), ProbeOutcome.REFUSED),  # the canary event itself refused
        (Answer(Action.RETRY, 500, 1, 99, retry_class="transient"), ProbeOutcome.NO_ANSWER),
        (Answer(Action.RETRY, 400, 80004, retry_class="throttle"), ProbeOutcome.NO_ANSWER),
        (Answer(Action.RETRY, retry_class="timeout"), ProbeOutcome.NO_ANSWER),
        (Answer(Action.RETRY, 200, retry_class=NOT_ACKED), ProbeOutcome.NO_ANSWER),  # a portal's 200 page
    ],
)
def test_only_an_acknowledged_probe_counts_as_success(answer: Answer, outcome: ProbeOutcome) -> None:
    """Meta's ack resumes; a refusal keeps the halt; no answer (5xx, throttle, timeout, a 200 that is not Meta's)
    proves nothing either way."""
    assert probe_outcome(answer) is outcome


def test_nothing_is_due_before_a_halt() -> None:
    """A destination never halted is never probed."""
    s = schedule()
    assert s.due_in(1000.0) is None


def test_the_first_probe_comes_one_interval_after_the_halt() -> None:
    """Halted at t, the first probe is due at t + probe_interval_s."""
    s = schedule()
    s.halted(1000.0)
    assert s.due_in(1000.0) == INITIAL
    assert s.due_in(1000.0 + INITIAL) == 0.0


def test_failed_probes_back_off_doubling_up_to_the_cap() -> None:
    """60, 120, 240, 480, 900, 900 s between probes: a long outage costs Meta a request per cap, not a minute."""
    s = schedule()
    now = 0.0
    s.halted(now)
    gaps = []
    for _ in range(7):
        now += s.due_in(now) or 0.0
        before = now
        s.failed(now, None)
        gaps.append(s.due_in(before) or 0.0)
    assert gaps == [120.0, 240.0, 480.0, 900.0, 900.0, 900.0, 900.0]


def test_a_hint_from_meta_is_a_floor() -> None:
    """A throttled probe waits at least as long as Meta asked."""
    s = schedule()
    s.halted(0.0)
    s.failed(60.0, 1800.0)
    assert s.due_in(60.0) == 1800.0


def test_a_resume_by_probe_that_halts_again_at_once_keeps_backing_off() -> None:
    """A destination that flaps (the probe succeeds, the real traffic halts it again) is probed less and less
    often, never at the first interval again."""
    s = schedule()
    now = 0.0
    s.halted(now)
    gaps = []
    for _ in range(6):
        now += s.due_in(now) or 0.0
        s.resumed(now, by_probe=True)
        now += 1.0  # the first real batch halts it again
        s.halted(now)
        gaps.append(s.due_in(now))
    assert gaps == [120.0, 240.0, 480.0, 900.0, 900.0, 900.0]


def test_a_halt_long_after_a_resume_by_probe_starts_over() -> None:
    """A destination that flowed for the whole cap after a probe resumed it is healthy: its next halt is a
    new incident, probed after the first interval."""
    s = schedule()
    s.halted(0.0)
    s.failed(60.0, None)
    s.failed(180.0, None)
    s.resumed(420.0, by_probe=True)
    s.halted(420.0 + CAP)
    assert s.due_in(420.0 + CAP) == INITIAL


def test_an_operator_resume_starts_over() -> None:
    """A new token or a SIGHUP is an operator's action: the next halt is probed after the first interval."""
    s = schedule()
    s.halted(0.0)
    for t in (60.0, 180.0, 420.0):
        s.failed(t, None)
    s.resumed(500.0, by_probe=False)
    s.halted(501.0)
    assert s.due_in(501.0) == INITIAL


def test_nothing_is_due_while_the_destination_flows() -> None:
    """After a resume no probe is due until the next halt."""
    s = schedule()
    s.halted(0.0)
    s.resumed(60.0, by_probe=True)
    assert s.due_in(5000.0) is None


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 900.0), (-1.0, 900.0), (60.0, 30.0)])
def test_a_schedule_refuses_impossible_intervals(initial: float, cap: float) -> None:
    """The schedule needs 0 < initial <= cap (config validation says so first, with the key's name)."""
    with pytest.raises(ValueError, match="probe"):
        ProbeSchedule(initial, cap)
