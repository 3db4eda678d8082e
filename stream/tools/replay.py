"""Replay by resetting a consumer group's offsets: parse the target, plan per partition, count (pure).

A replay moves the group's committed offset of each partition of one topic back (or forward) to a
target; the pipeline, started again, re-reads from there. Before anything moves, the plan tells the
operator what the reset costs, per partition:

* `re_read`: committed offset - target, the messages already processed that will be read again (an
  upper bound: compaction and transaction markers leave gaps in offsets);
* `older_than_max_age`: of those, how many carry an `event_time` more than 7 days before `now`. Meta
  rejects those (`meta.MAX_EVENT_AGE_S`), so they end in the dead-letter topic, not at Meta. Counted on
  the decoded `event_time`, not on the Kafka timestamp, because Meta judges `event_time` and apps publish
  events they buffered offline: an event can be days older than its Kafka message;
* `in_dedupe_window`: of those, how many were written to Kafka less than the dedupe window ago. Counted
  on the Kafka message timestamp, because both windows (ours and Meta's 48 h) run from when an event was
  first received, which is about when it was written, not from `event_time`. These events were most
  likely delivered already; capi-stream's dedupe store lives in memory and starts empty after the
  restart a reset needs, so only Meta's own (unpromised) event_id dedupe stands between them and a
  double count.

The ages come from reading the re-read range. Up to `sample_limit` messages per partition are read, in
`SAMPLE_CHUNKS` evenly spaced runs; a range that fits is read whole and counted exactly, a larger one
is estimated by scaling the sample (the plan says which). This module does no I/O and never reads the
clock: offsets, samples and `now` are parameters; stream/admin.py fetches them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from stream.contract import meta
from stream.errors import UsageError

# Spread a sample over this many runs: enough to see a gradient of ages across a long range, few enough
# that each run is a cheap sequential read (every run costs one seek and one fetch).
SAMPLE_CHUNKS: Final = 10
# Per partition: 10,000 messages decode in well under a second, and a 1% error on a count is plenty for
# deciding whether a replay is safe.
DEFAULT_SAMPLE_LIMIT: Final = 10_000

_DURATION = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TargetKind(enum.StrEnum):
    """The four ways to name the target offsets."""

    DATETIME = "datetime"
    DURATION = "duration"
    EARLIEST = "earliest"
    OFFSETS = "offsets"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where to move the group: a time (ms), the earliest offsets, or explicit offsets per partition."""

    kind: TargetKind
    timestamp_ms: int | None = None
    offsets: Mapping[int, int] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """One human line, e.g. `to 2026-11-28T10:00:00Z`."""
        if self.timestamp_ms is not None:
            return f"to {iso_ms(self.timestamp_ms)}"
        if self.kind == TargetKind.EARLIEST:
            return "to earliest"
        return "to " + ",".join(f"{p}:{o}" for p, o in sorted(self.offsets.items()))


@dataclasses.dataclass(frozen=True, slots=True)
class LogBounds:
    """What the broker knows about one partition: its log bounds and the group's committed offset."""

    partition: int
    low: int  # first offset still in the log
    high: int  # the next offset to be written (log end)
    committed: int | None  # the next offset the group reads; None when the group has committed none


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One message read from a re-read range: its Kafka timestamp and, when it decodes, its event_time."""

    offset: int
    timestamp_ms: int | None
    event_time_s: int | None  # None: the value does not decode (it will be dead-lettered again)


@dataclasses.dataclass(frozen=True, slots=True)
class SampleSet:
    """The messages read from one partition's re-read range; `complete` when the whole range was read."""

    samples: tuple[Sample, ...] = ()
    complete: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionPlan:
    """The reset of one partition and what it costs."""

    partition: int
    current: int | None
    target: int
    clamped: bool  # the requested offset lay outside [low, high] and was moved to the nearest bound
    re_read: int
    skipped: int  # messages jumped over by a forward reset (never processed)
    backlog: int  # messages the group reads after the reset (high - target)
    older_than_max_age: int
    in_dedupe_window: int
    undecodable: int
    sampled: int
    exact: bool  # the whole re-read range was read; False: the three counts above are scaled estimates

    @property
    def counted(self) -> bool:
        """False when messages are re-read but none could be read to count their ages."""
        return self.re_read == 0 or self.sampled > 0

    @property
    def moves(self) -> bool:
        """True when the reset changes this partition's committed offset."""
        return self.current != self.target


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The per-partition plan of one replay, and the facts it was computed with."""

    group: str
    topic: str
    target: Target
    now_s: float
    dedupe_window_s: float
    max_age_s: float
    partitions: tuple[PartitionPlan, ...]
    # the group's dedupe changelog topic ("" when the pipeline keeps its window in memory only), and
    # whether the replay clears it for the partitions it moves (--forget-dedupe)
    changelog_topic: str = ""
    forget_dedupe: bool = False

    def total(self, field: str) -> int:
        """Sum of an int field over partitions."""
        return sum(int(getattr(p, field)) for p in self.partitions)

    @property
    def exact(self) -> bool:
        """True when every partition's counts are exact."""
        return all(p.exact for p in self.partitions)


# ---- parsing the CLI's target flags -----------------------------------------------------------------


def parse_duration(text: str) -> int:
    """Seconds in `6h`, `90m`, `2d`, `1h30m` or `1w`. Raises UsageError for anything else or zero."""
    compact = text.strip().replace(" ", "")
    pieces = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in pieces).lower() != compact.lower():
        raise UsageError(f"--by-duration {text!r} is not a duration such as 6h, 90m, 2d or 1h30m")
    seconds = sum(int(n) * _UNIT_S[u.lower()] for n, u in pieces)
    if seconds <= 0:
        raise UsageError(f"--by-duration {text!r} must be longer than zero")
    return seconds


def parse_datetime(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 time; a time without a zone is UTC. Raises UsageError."""
    raw = text.strip()
    try:
        moment = dt.datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError as exc:
        raise UsageError(f"--to-datetime {text!r} is not an ISO 8601 time such as 2026-11-28T10:00:00Z") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def parse_offsets(text: str) -> dict[int, int]:
    """`0:120,3:5` -> {0: 120, 3: 5}. Raises UsageError on a malformed pair, a negative or a repeat."""
    out: dict[int, int] = {}
    for pair in text.split(","):
        part, sep, offset = pair.strip().partition(":")
        if not sep or not part.strip().isdigit() or not offset.strip().isdigit():
            raise UsageError(f"--to-offset {text!r}: {pair.strip()!r} is not PARTITION:OFFSET "
                             "(non-negative integers, e.g. 0:120,1:98)")
        p = int(part)
        if p in out:
            raise UsageError(f"--to-offset {text!r} names partition {p} twice")
        out[p] = int(offset)
    return out


def target_from_flags(*, to_datetime: str | None, by_duration: str | None, to_earliest: bool,
                      to_offset: str | None, now_s: float) -> Target:
    """The Target named by exactly one of the four flags (UsageError when none or several are given)."""
    given = [name for name, value in (("--to-datetime", to_datetime), ("--by-duration", by_duration),
                                      ("--to-earliest", to_earliest), ("--to-offset", to_offset)) if value]
    if len(given) != 1:
        raise UsageError("name exactly one target: --to-datetime, --by-duration, --to-earliest or --to-offset"
                         + (f" (got {', '.join(given)})" if given else ""))
    if to_datetime:
        return Target(TargetKind.DATETIME, timestamp_ms=parse_datetime(to_datetime))
    if by_duration:
        return Target(TargetKind.DURATION, timestamp_ms=int((now_s - parse_duration(by_duration)) * 1000))
    if to_earliest:
        return Target(TargetKind.EARLIEST)
    return Target(TargetKind.OFFSETS, offsets=parse_offsets(to_offset or ""))


# ---- planning -----------------------------------------------------------------------------------------


def check_partitions(target: Target, partitions: Iterable[int], topic: str) -> None:
    """UsageError when --to-offset names a partition the topic does not have."""
    known = set(partitions)
    unknown = sorted(set(target.offsets) - known)
    if unknown:
        raise UsageError(f"--to-offset names partition(s) {unknown} but topic {topic} has partitions "
                         f"0..{max(known) if known else -1}")


def resolve(target: Target, offsets: LogBounds, found: int | None) -> tuple[int, bool] | None:
    """The target offset of one partition and whether it was clamped; None when the partition stays.

    `found` is the broker's answer for a time target: the first offset whose timestamp is at or after
    the time, or None/-1 when no message is that new (then the target is the log end: nothing to replay).
    """
    if target.kind == TargetKind.EARLIEST:
        return offsets.low, False
    if target.kind == TargetKind.OFFSETS:
        if offsets.partition not in target.offsets:
            return None
        wanted = target.offsets[offsets.partition]
        clamped = min(max(wanted, offsets.low), offsets.high)
        return clamped, clamped != wanted
    if found is None or found < 0:
        return offsets.high, False
    return min(max(found, offsets.low), offsets.high), False


def sample_ranges(start: int, end: int, limit: int, chunks: int = SAMPLE_CHUNKS) -> list[tuple[int, int]]:
    """Half-open offset ranges to read from [start, end): the whole range if it holds at most `limit`
    offsets, else `chunks` evenly spaced runs that together hold `limit` offsets (in order, disjoint)."""
    size = end - start
    if size <= 0 or limit <= 0:
        return []
    if size <= limit:
        return [(start, end)]
    chunks = max(1, min(chunks, limit))
    run = limit // chunks
    stride = size // chunks
    return [(start + i * stride, start + i * stride + run) for i in range(chunks)]


def _scale(count: int, sampled: int, population: int) -> int:
    return round(count * population / sampled) if sampled else 0


def plan_partition(offsets: LogBounds, target: int, clamped: bool, read: SampleSet, *,
                   now_s: float, dedupe_window_s: float, max_age_s: float) -> PartitionPlan:
    """Count what resetting one partition to `target` re-reads.

    `read` holds messages read from [target, committed); they decide the age counts, scaled up to
    `re_read` when they do not cover the whole range. A group without a committed offset starts at the
    log start (auto.offset.reset=earliest), so for it nothing is re-read.
    """
    current = offsets.committed
    start_from = offsets.low if current is None else current
    re_read = max(0, start_from - target) if current is not None else 0
    skipped = max(0, target - start_from)
    in_range = [s for s in read.samples if target <= s.offset < start_from] if re_read else []
    old_cut = now_s - max_age_s
    window_cut_ms = (now_s - dedupe_window_s) * 1000
    old = sum(1 for s in in_range if s.event_time_s is not None and s.event_time_s < old_cut)
    recent = sum(1 for s in in_range if s.timestamp_ms is not None and s.timestamp_ms >= window_cut_ms)
    bad = sum(1 for s in in_range if s.event_time_s is None)
    sampled = len(in_range)
    # a complete read counts every message (offsets may have gaps); otherwise scale the sample up
    exact = re_read == 0 or read.complete
    population = sampled if exact else re_read
    return PartitionPlan(
        partition=offsets.partition, current=current, target=target, clamped=clamped, re_read=re_read,
        skipped=skipped, backlog=max(0, offsets.high - target),
        older_than_max_age=_scale(old, sampled, population), in_dedupe_window=_scale(recent, sampled, population),
        undecodable=_scale(bad, sampled, population), sampled=sampled, exact=exact,
    )


def build_plan(*, group: str, topic: str, target: Target, partitions: Sequence[LogBounds],
               found: Mapping[int, int], samples: Mapping[int, SampleSet], now_s: float,
               dedupe_window_s: float = float(meta.DEDUPE_WINDOW_S),
               max_age_s: float = float(meta.MAX_EVENT_AGE_S), changelog_topic: str = "",
               forget_dedupe: bool = False) -> Plan:
    """The plan for every partition the target touches, in partition order.

    `found` holds the broker's offset for a time target per partition; `samples` the messages read from
    each partition's re-read range (see `sample_ranges`).
    """
    check_partitions(target, (p.partition for p in partitions), topic)
    plans = []
    for offsets in sorted(partitions, key=lambda p: p.partition):
        resolved = resolve(target, offsets, found.get(offsets.partition))
        if resolved is None:
            continue
        plans.append(plan_partition(offsets, resolved[0], resolved[1], samples.get(offsets.partition, SampleSet()),
                                    now_s=now_s, dedupe_window_s=dedupe_window_s, max_age_s=max_age_s))
    return Plan(group, topic, target, now_s, dedupe_window_s, max_age_s, tuple(plans), changelog_topic,
                forget_dedupe)


def ranges_to_read(target: Target, partitions: Sequence[LogBounds], found: Mapping[int, int],
                   limit: int) -> dict[int, list[tuple[int, int]]]:
    """Per partition, the offset ranges to sample from its re-read range [target, committed).

    A partition whose list is one range equal to the whole re-read range is read completely.
    """
    out: dict[int, list[tuple[int, int]]] = {}
    for offsets in partitions:
        resolved = resolve(target, offsets, found.get(offsets.partition))
        if resolved is None or offsets.committed is None or offsets.committed <= resolved[0]:
            continue
        out[offsets.partition] = sample_ranges(resolved[0], offsets.committed, limit)
    return out


# ---- output ---------------------------------------------------------------------------------------------


def iso_ms(ms: float) -> str:
    """UTC ISO 8601 time of epoch milliseconds, to the second."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(seconds: float) -> str:
    return f"{seconds / 86400:g} d" if seconds % 86400 == 0 else f"{seconds / 3600:g} h"


def format_plan(plan: Plan, *, executed: bool = False) -> list[str]:
    """The plan as text lines: a header, one row per partition, a total and what the counts mean."""
    verb = "reset" if executed else "would reset (dry run; --execute to apply)"
    lines = [f"group {plan.group} topic {plan.topic}: {verb} {plan.target.describe()}"]
    cols = ("partition", "current", "target", "re-read", f"older {_hours(plan.max_age_s)}",
            f"in dedupe {_hours(plan.dedupe_window_s)}", "undecodable", "backlog", "sampled")
    rows = [cols]
    for p in plan.partitions:
        est = "" if p.exact else "~"
        ages = ((f"{est}{p.older_than_max_age}", f"{est}{p.in_dedupe_window}", f"{est}{p.undecodable}")
                if p.counted else ("?", "?", "?"))
        rows.append((str(p.partition), "none" if p.current is None else str(p.current),
                     f"{p.target}{' (clamped)' if p.clamped else ''}", str(p.re_read), *ages,
                     str(p.backlog), str(p.sampled)))
    est = "" if plan.exact else "~"
    rows.append(("total", "", "", str(plan.total("re_read")), f"{est}{plan.total('older_than_max_age')}",
                 f"{est}{plan.total('in_dedupe_window')}", f"{est}{plan.total('undecodable')}",
                 str(plan.total("backlog")), str(plan.total("sampled"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    skipped = plan.total("skipped")
    if skipped:
        lines.append(f"forward reset: {skipped} message(s) will be skipped and never sent")
    if not plan.exact:
        lines.append("~ estimated from an evenly spaced sample of the re-read range (see --sample)")
    if not all(p.counted for p in plan.partitions):
        lines.append("? no message of the re-read range could be read in time: ages unknown, totals exclude them")
    lines.append(f"older: event_time more than {_hours(plan.max_age_s)} before now; Meta rejects these, "
                 "so they go to the dead-letter topic")
    lines.append(dedupe_note(plan, executed=executed))
    return lines


def dedupe_note(plan: Plan, *, executed: bool = False) -> str:
    """What becomes of the re-read events still inside the dedupe window."""
    head = f"in dedupe: written to Kafka less than {_hours(plan.dedupe_window_s)} ago, so most likely sent already; "
    if not plan.changelog_topic:
        return head + ("the restarted pipeline's dedupe store is empty (dedupe.changelog = false), Meta may count "
                       "them twice")
    if plan.forget_dedupe:
        done = "cleared" if executed else "--execute clears"
        return head + (f"{done} their window in the changelog {plan.changelog_topic} (--forget-dedupe), so they "
                       "are sent to Meta again and bad records dead-lettered again")
    return head + (f"they will be deduped against the changelog {plan.changelog_topic} and not sent again (nor "
                   "dead-lettered again); add --forget-dedupe to re-send them on purpose")


def plan_dict(plan: Plan) -> dict[str, object]:
    """The plan as a JSON-ready dict (for `--format json`)."""
    return {
        "group": plan.group, "topic": plan.topic, "target": plan.target.describe(), "now": plan.now_s,
        "dedupe_window_s": plan.dedupe_window_s, "max_age_s": plan.max_age_s, "exact": plan.exact,
        "changelog_topic": plan.changelog_topic or None, "forget_dedupe": plan.forget_dedupe,
        "partitions": [dataclasses.asdict(p) for p in plan.partitions],
        "totals": {f: plan.total(f) for f in ("re_read", "skipped", "backlog", "older_than_max_age",
                                              "in_dedupe_window", "undecodable", "sampled")},
    }
