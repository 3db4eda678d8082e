"""Parking: a halted destination's events wait in a Kafka topic of their own, not in memory (pure).

Every source partition carries events of every destination, so a destination that cannot send (a token
or permission error) would hold its events in memory until the in-flight bound pauses the partitions
for everybody. Instead, once it has been halted for `send.park_after_s` (or holds more than
`send.park_share` of the in-flight bound), the destination is PARKED: its held events and every new one
are written, as the original record bytes with headers saying where they came from and why, to its
parking topic; each counts as finished for its source partition once the broker has acknowledged that
write, so the source partitions commit past it and the other destinations flow on.

The same consumer (same group) is subscribed to the parking topics. A parked destination's parking
partitions are paused; when it resumes (a new token, SIGHUP) it is DRAINING: its parking partitions are
consumed through the same pipeline (decode, route, dedupe, batch, classification), their offsets are
committed after Meta's ack like any source offset, and an event that passed Meta's 7-day limit
meanwhile is dead-lettered by normalization (event_too_old). Draining ends when the committed offsets
of the destination's parking partitions reach their end; the destination is LIVE again.

This module holds the decisions (when to park, when to drain, when to pause the parking partitions)
and the record format; the runner does the I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping

from stream.pipeline.deadletters import HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC, DeadLetter

HEADER_DESTINATION = "capi.destination"
HEADER_EVENT_TIME = "capi.event_time"
# where a dead letter of an event read back from a parking topic was parked (its capi.source_* headers
# name the position it was first consumed at, as for any other letter)
HEADER_PARKING_TOPIC = "capi.parking_topic"
HEADER_PARKING_PARTITION = "capi.parking_partition"
HEADER_PARKING_OFFSET = "capi.parking_offset"

# why an event was parked (the `capi.reason` header)
REASON_HALTED = "destination_halted"  # halted for send.park_after_s
REASON_HELD_SHARE = "held_share"  # held more than send.park_share of the in-flight bound
REASON_HALTED_DRAINING = "halted_while_draining"  # halted again while its parking topic was drained
# the drain of the parking partitions pauses while the destination holds this share of its park limit,
# and resumes below RESUME_SHARE of it: the drain never fills memory on its own
DRAIN_PAUSE_SHARE = 0.5
DRAIN_RESUME_SHARE = 0.25


class Mode(enum.StrEnum):
    """Where a destination's events go."""

    LIVE = "live"  # to Meta
    PARKED = "parked"  # to the parking topic; parking partitions paused
    DRAINING = "draining"  # to Meta, and its parking partitions are consumed


class Change(enum.StrEnum):
    """A transition the runner acts on and logs."""

    PARK = "parking_started"
    DRAIN = "draining_started"  # after "parking_ended" when it was parked
    LIVE = "draining_finished"


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where a parked record was first consumed."""

    topic: str
    partition: int
    offset: int


def park_reason(*, halted_for: float | None, held: int, park_after_s: float, share_limit: float,
                struggling: bool) -> str | None:
    """Why a LIVE destination is to be parked now, or None.

    `halted_for`: seconds it has been halted (None: not halted); `held`: its events in memory;
    `share_limit`: send.park_share x pipeline.max_in_flight_events; `struggling`: it is halted, failing or
    throttled. Only a struggling destination is parked for what it holds: a flowing one holding most of the
    bound is the busiest, not the broken one, and parking it would only add a round trip through Kafka.
    park_after_s <= 0: never.
    """
    if park_after_s <= 0:
        return None
    if halted_for is not None and halted_for >= park_after_s:
        return REASON_HALTED
    if struggling and held > share_limit:
        return REASON_HELD_SHARE
    return None


def parked_record(origin: Origin, key: bytes | None, value: bytes | None, destination: str, reason: str, *,
                  event_time: int = 0, event_name: str = "", event_id: str | None = None) -> DeadLetter:
    """The parking-topic record of one event: its original key and bytes, and headers with its origin
    (`capi.source_topic/partition/offset`), `capi.destination`, `capi.reason` and `capi.event_time`."""
    extra = [(HEADER_DESTINATION, destination)]
    if event_time:
        extra.append((HEADER_EVENT_TIME, str(event_time)))
    return DeadLetter(origin.topic, origin.partition, origin.offset, key, value, reason,
                      event_name=event_name, event_id=event_id, extra=tuple(extra))


def drained_letter_extra(topic: str, partition: int, offset: int) -> tuple[tuple[str, str], ...]:
    """The headers a dead letter of a drained event carries beside its origin: where it was parked."""
    return ((HEADER_PARKING_TOPIC, topic), (HEADER_PARKING_PARTITION, str(partition)),
            (HEADER_PARKING_OFFSET, str(offset)))


def origin_of(headers: Iterable[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None,
              ) -> Origin | None:
    """The origin written in a parked record's headers; None when they do not say (not a parked record)."""
    found: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name in (HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET) and value is not None:
            found[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        return Origin(found[HEADER_TOPIC], int(found[HEADER_PARTITION]), int(found[HEADER_OFFSET]))
    except (KeyError, ValueError):
        return None


def log_lag(bounds: Mapping[tuple[str, int], tuple[int, int, int]], topic: str) -> tuple[int, int]:
    """(records not yet committed, partitions) over the assigned partitions of `topic`.

    `bounds`: (topic, partition) -> (low, high watermark, committed offset or -1 when none). With no
    committed offset, everything from the low watermark on is still to be read.
    """
    lag = 0
    parts = 0
    for (t, _p), (low, high, committed) in bounds.items():
        if t != topic:
            continue
        parts += 1
        start = committed if committed >= 0 else low
        lag += max(0, high - max(start, low))
    return lag, parts


@dataclasses.dataclass(frozen=True, slots=True)
class TopicView:
    """What waits in one parking topic, read from the broker (parkwatch.py), whatever this member is
    assigned or has paused: records the parking group has not committed, and the event time of the
    oldest of the first uncommitted records of its partitions (0: none waiting, or none said)."""

    lag: int
    oldest_event_time: int
    at: float  # time.monotonic() of the look


def waiting_from(bounds: Mapping[int, tuple[int, int]], committed: Mapping[int, int | None]) -> dict[int, int]:
    """partition -> offset of its first record not committed by the parking group, for the partitions
    that have records waiting. `bounds`: partition -> (low, high watermark); `committed`: partition ->
    the group's committed offset (None or < 0: none, so everything from the low watermark waits)."""
    out = {}
    for p, (low, high) in bounds.items():
        done = committed.get(p)
        start = max(low, done if done is not None and done >= 0 else low)
        if start < high:
            out[p] = start
    return out


def topic_lag(bounds: Mapping[int, tuple[int, int]], committed: Mapping[int, int | None]) -> int:
    """Records of the topic the parking group has not committed (see waiting_from)."""
    return sum(bounds[p][1] - start for p, start in waiting_from(bounds, committed).items())


def event_time_of(headers: Iterable[tuple[str, bytes | str | None]] | None) -> int:
    """The `capi.event_time` header of a parked record (0: absent or not a number)."""
    for name, value in headers or ():
        if name == HEADER_EVENT_TIME and value is not None:
            try:
                return int(value.decode("ascii", "replace") if isinstance(value, bytes) else value)
            except ValueError:
                return 0
    return 0


def oldest_of(*times: int) -> int:
    """The oldest of event times, 0 meaning unknown (0 when all are)."""
    known = [t for t in times if t > 0]
    return min(known) if known else 0


@dataclasses.dataclass
class Parking:
    """One destination's parking state machine; times are monotonic seconds, passed in."""

    destination: str
    topic: str
    park_after_s: float
    share_limit: float
    mode: Mode = Mode.LIVE
    reason: str = ""
    halted_since: float | None = None
    since: float = 0.0  # when the current mode began
    parked: int = 0  # events written to the parking topic (acknowledged by the broker)
    drained: int = 0  # events read back from the parking topic and finished
    oldest_event_time: int = 0  # event_time of the oldest event parked since the last drain ended (0: none)
    drain_paused: bool = False
    # DRAINING with parked records to read back (entered by a transition, or records were read back);
    # False for the quiet DRAINING a run starts in until its statistics show the parking topic's end
    backlog: bool = False

    @property
    def enabled(self) -> bool:
        return self.park_after_s > 0

    def step(self, now: float, *, halted: bool, held: int, idle: bool, lag: int | None,
             lag_at: float, struggling: bool = False) -> Change | None:
        """Advance on the destination's current state; return the transition made, if any.

        `struggling`: failing or throttled (a halted destination is struggling too);
        `held`: its events in memory; `idle`: its sender has nothing queued or in flight; `lag`: records
        of its parking partitions (assigned here) not committed yet, as the consumer's statistics of
        time `lag_at` say (None: unknown).
        """
        if halted:
            if self.halted_since is None:
                self.halted_since = now
        else:
            self.halted_since = None
        if not self.enabled:
            return None
        fresh = lag is not None and lag_at > self.since
        if self.mode is Mode.LIVE:
            reason = park_reason(halted_for=None if self.halted_since is None else now - self.halted_since,
                                 held=held, park_after_s=self.park_after_s, share_limit=self.share_limit,
                                 struggling=struggling or halted)
            if reason is not None:
                return self._enter(Mode.PARKED, now, reason)
            if fresh and lag:
                return self._enter(Mode.DRAINING, now, "")  # parked by an earlier run or another member
            return None
        if self.mode is Mode.PARKED:
            # a halted destination drains as soon as it resumes; one parked for what it held (halted or
            # not) waits park_after_s first, so that a burst does not flip it between parking and draining
            waited = self.reason != REASON_HELD_SHARE or now - self.since >= self.park_after_s
            if not halted and idle and waited:
                return self._enter(Mode.DRAINING, now, "")
            return None
        # DRAINING: a halt parks again at once when records are being read back (else it waits
        # park_after_s, as when live); what the drain holds is bounded by pausing the parking partitions
        # (partitions_paused), never by parking again what was just read back
        if halted and self.backlog:
            return self._enter(Mode.PARKED, now, REASON_HALTED_DRAINING)
        if halted and self.halted_since is not None and now - self.halted_since >= self.park_after_s:
            return self._enter(Mode.PARKED, now, REASON_HALTED)
        if fresh and lag == 0:
            self.oldest_event_time = 0
            self.backlog = False
            return self._enter(Mode.LIVE, now, "")
        return None

    def _enter(self, mode: Mode, now: float, reason: str) -> Change:
        self.mode = mode
        self.reason = reason
        self.since = now
        self.drain_paused = False
        self.backlog = mode is Mode.DRAINING
        return {Mode.PARKED: Change.PARK, Mode.DRAINING: Change.DRAIN, Mode.LIVE: Change.LIVE}[mode]

    def partitions_paused(self, held: int) -> bool:
        """Whether its parking partitions are to be paused now: while parked, and while a drain holds
        DRAIN_PAUSE_SHARE of the park limit (until it is back under DRAIN_RESUME_SHARE)."""
        if not self.enabled:
            return False
        if self.mode is Mode.PARKED:
            return True
        limit = self.share_limit * (DRAIN_RESUME_SHARE if self.drain_paused else DRAIN_PAUSE_SHARE)
        self.drain_paused = held >= limit
        return self.drain_paused

    def count_parked(self, event_time: int) -> None:
        """One event's parking write was acknowledged."""
        self.parked += 1
        if event_time and (not self.oldest_event_time or event_time < self.oldest_event_time):
            self.oldest_event_time = event_time
