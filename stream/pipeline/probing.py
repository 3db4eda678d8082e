"""Probing a halted destination: when to try again, and what a probe's answer means (pure).

A halted destination sends nothing until its token changes or an operator sends SIGHUP. Many halts end
without either: a permission re-granted in Business Manager, a token re-enabled on Meta's side, a proxy
that stopped answering 403. So while a destination is halted, its sender sends one probe request every
`send.probe_interval_s` (sender.py says which request), and a probe Meta acknowledges resumes it like a
new token does.

The probes back off: each failed probe doubles the wait, up to `send.probe_max_interval_s`, so an
outage of days costs Meta one request per cap. A destination that a probe resumed and that halts again
before it has flowed for the cap is flapping (the probe passed, the real requests do not): its next
probe waits longer again, never the first interval. Only a destination that flowed for the whole cap,
or an operator's resume (a new token, SIGHUP), starts the schedule over.

Times are seconds of one clock the caller owns; nothing here reads it.
"""

from __future__ import annotations

import enum

from stream.pipeline.meta_client import Action, Answer

# doubling more often than this cannot matter (2**30 x any interval is far past any cap)
_MAX_DOUBLINGS = 30


class ProbeOutcome(enum.StrEnum):
    """What one probe said (the `outcome` label of capi_stream_probes_total)."""

    OK = "ok"  # Meta acknowledged it: the destination resumes
    REFUSED = "refused"  # the same kind of answer that halted it: token, permission, request, or the event
    NO_ANSWER = "no_answer"  # 5xx, throttled, timeout, reset, a 2xx that is not Meta's: proves nothing


def probe_outcome(answer: Answer) -> ProbeOutcome:
    """Classify a probe's answer: only Meta's ack is a success."""
    if answer.action is Action.ACKED:
        return ProbeOutcome.OK
    if answer.action is Action.RETRY:
        return ProbeOutcome.NO_ANSWER
    return ProbeOutcome.REFUSED


class ProbeSchedule:
    """When the next probe of one destination is due.

    `initial_s`: the wait after a halt and the first step of the backoff; `max_s`: the cap, and how long a
    destination resumed by a probe must flow before its next halt counts as a new one.
    """

    def __init__(self, initial_s: float, max_s: float) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"probe intervals need 0 < initial <= max, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0  # failed probes and flaps since the schedule last started over
        self._next_at: float | None = None  # None: not halted
        self._resumed_by_probe_at: float | None = None

    def delay(self) -> float:
        """The wait for the current attempt: initial x 2**attempt, at most the cap."""
        return float(min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, _MAX_DOUBLINGS)))

    def halted(self, now: float) -> None:
        """The destination halted at `now`: a flap after a resume by probe backs off further, else start over."""
        resumed = self._resumed_by_probe_at
        self._resumed_by_probe_at = None
        if resumed is not None and now - resumed < self.max_s:
            self.attempt += 1
        else:
            self.attempt = 0
        self._next_at = now + self.delay()

    def failed(self, now: float, hint: float | None) -> None:
        """A probe at `now` did not succeed: wait twice as long (at least Meta's `hint`, when it gave one)."""
        self.attempt += 1
        self._next_at = now + max(self.delay(), hint or 0.0)

    def resumed(self, now: float, *, by_probe: bool) -> None:
        """The destination resumed at `now`; an operator's resume (not `by_probe`) starts the schedule over."""
        self._next_at = None
        if by_probe:
            self._resumed_by_probe_at = now
        else:
            self._resumed_by_probe_at = None
            self.attempt = 0

    def due_in(self, now: float) -> float | None:
        """Seconds until the next probe (0: due now), or None while the destination is not halted."""
        if self._next_at is None:
            return None
        return max(0.0, self._next_at - now)
