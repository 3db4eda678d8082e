"""The heartbeat an operator reads in the logs: one `progress` line per interval, `caught_up` when lag is 0.

Pure: the pipeline hands a `Snapshot` and the time to `Progress.tick`, which says which lines are due.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What the pipeline did so far and where it stands now."""

    consumed: int
    acked: int
    dead_lettered: int
    in_flight: int
    # messages behind the partitions' ends, per (topic, partition); empty until librdkafka reports it
    lag: Mapping[tuple[str, int], int]
    destinations: Mapping[str, str]
    assigned: int


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One log event to write: its name, level and fields."""

    event: str
    level: str
    fields: dict[str, Any]


class Progress:
    """Decides the heartbeat lines: `progress` every `interval_s`, `caught_up` once per catch-up.

    Caught up means every assigned partition reported lag 0 and nothing consumed is unfinished; after
    lag appears again, the next catch-up is reported again (`behind` is logged when it does).
    """

    def __init__(self, interval_s: float, now: float) -> None:
        self.interval_s = interval_s
        self._next = now + interval_s if interval_s > 0 else float("inf")
        self._last: Snapshot | None = None
        self._last_at = now
        self.caught_up = False

    def tick(self, snap: Snapshot, now: float) -> list[Line]:
        """The lines due at `now` for `snap` (often none)."""
        lines: list[Line] = []
        total_lag = sum(snap.lag.values())
        known = bool(snap.lag) and len(snap.lag) >= snap.assigned > 0
        if known and total_lag == 0 and snap.in_flight == 0:
            if not self.caught_up:
                self.caught_up = True
                lines.append(Line("caught_up", "info", {"consumed": snap.consumed, "acked": snap.acked,
                                                        "partitions": snap.assigned}))
        elif self.caught_up and known and total_lag > 0:
            self.caught_up = False
            lines.append(Line("behind", "info", {"lag": total_lag}))
        if now >= self._next:
            lines.append(self._progress(snap, now, total_lag))
            self._next = now + self.interval_s
        return lines

    def _progress(self, snap: Snapshot, now: float, total_lag: int) -> Line:
        elapsed = max(now - self._last_at, 1e-9)
        before = self._last
        fields: dict[str, Any] = {
            "consumed": snap.consumed,
            "acked": snap.acked,
            "dead_lettered": snap.dead_lettered,
            "in_flight": snap.in_flight,
            "lag": total_lag if snap.lag else None,
            "partitions": snap.assigned,
            "destinations": dict(snap.destinations),
            "acked_per_s": round((snap.acked - (before.acked if before else 0)) / elapsed, 1),
            "caught_up": self.caught_up,
        }
        self._last, self._last_at = snap, now
        not_flowing = any(state != "flowing" for state in snap.destinations.values())
        return Line("progress", "warning" if not_flowing else "info", fields)
