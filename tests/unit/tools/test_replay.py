"""Replay planning (stream/replay.py): target flags, per-partition targets, sampling and the counts."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from stream.contract import meta
from stream.errors import UsageError
from stream.tools import replay
from stream.tools.replay import LogBounds, Sample, SampleSet, Target, TargetKind

NOW = 1_800_000_000.0  # a fixed "now", seconds
DAY = 86_400
WINDOW = float(meta.DEDUPE_WINDOW_S)
MAX_AGE = float(meta.MAX_EVENT_AGE_S)


def test_replay_module_is_pure() -> None:
    """stream/replay.py imports no Kafka client, no asyncio, no clock and no logger."""
    path = Path(replay.__file__)
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"confluent_kafka", "asyncio", "time", "socket", "threading", "structlog", "logging"}


# ---- flags -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("6h", 6 * 3600), ("90m", 5400), ("1h30m", 5400), ("2d", 2 * DAY), ("1w", 7 * DAY), ("45s", 45),
    (" 6H ", 6 * 3600), ("1d 12h", 36 * 3600),
])  # fmt: skip
def test_parse_duration_accepts(text: str, seconds: int) -> None:
    """A duration is one or more number-unit pairs in s, m, h, d or w."""
    assert replay.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "0h", "-1h", "6h junk", "1.5h", "h6"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything else, and a zero duration, is a usage error naming the flag."""
    with pytest.raises(UsageError, match="--by-duration"):
        replay.parse_duration(text)


@pytest.mark.parametrize(("text", "ms"), [
    ("2026-11-28T10:00:00Z", 1_795_860_000_000),
    ("2026-11-28T10:00:00", 1_795_860_000_000),  # no zone: UTC
    ("2026-11-28T12:00:00+02:00", 1_795_860_000_000),
    ("2026-11-28 10:00:00.500Z", 1_795_860_000_500),
    ("2026-11-28", 1_795_824_000_000),
])  # fmt: skip
def test_parse_datetime(text: str, ms: int) -> None:
    """ISO 8601 times become epoch milliseconds; a time without a zone is read as UTC."""
    assert replay.parse_datetime(text) == ms


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", "", "28/11/2026"])
def test_parse_datetime_rejects(text: str) -> None:
    """A time that is not ISO 8601 is a usage error naming the flag."""
    with pytest.raises(UsageError, match="--to-datetime"):
        replay.parse_datetime(text)


def test_parse_offsets() -> None:
    """`P:O,P:O` becomes a partition -> offset mapping."""
    assert replay.parse_offsets("0:120, 3:5") == {0: 120, 3: 5}


@pytest.mark.parametrize(("text", "why"), [
    ("0", "PARTITION:OFFSET"), ("0:-1", "PARTITION:OFFSET"), ("a:1", "PARTITION:OFFSET"), ("", "PARTITION:OFFSET"),
    ("0:1,", "PARTITION:OFFSET"), ("0:1,0:2", "twice"),
])  # fmt: skip
def test_parse_offsets_rejects(text: str, why: str) -> None:
    """Malformed pairs, negative offsets and a partition named twice are usage errors."""
    with pytest.raises(UsageError, match=why):
        replay.parse_offsets(text)


@pytest.mark.parametrize("flags", [
    {},
    {"to_earliest": True, "by_duration": "6h"},
    {"to_datetime": "2026-11-28T10:00:00Z", "to_offset": "0:1"},
])  # fmt: skip
def test_target_needs_exactly_one_flag(flags: dict[str, object]) -> None:
    """None or several of the four target flags is a usage error."""
    args = {"to_datetime": None, "by_duration": None, "to_earliest": False, "to_offset": None, **flags}
    with pytest.raises(UsageError, match="exactly one target"):
        replay.target_from_flags(now_s=NOW, **args)  # type: ignore[arg-type]


def test_by_duration_counts_back_from_now() -> None:
    """--by-duration 6h targets the time six hours before `now`."""
    target = replay.target_from_flags(to_datetime=None, by_duration="6h", to_earliest=False, to_offset=None,
                                      now_s=NOW)
    assert target.timestamp_ms == int((NOW - 6 * 3600) * 1000)


# ---- per-partition targets --------------------------------------------------------------------------------

P = LogBounds(partition=0, low=100, high=500, committed=400)


@pytest.mark.parametrize(("target", "found", "expected"), [
    (Target(TargetKind.EARLIEST), None, (100, False)),
    (Target(TargetKind.OFFSETS, offsets={0: 250}), None, (250, False)),
    (Target(TargetKind.OFFSETS, offsets={0: 5}), None, (100, True)),  # below the log start
    (Target(TargetKind.OFFSETS, offsets={0: 9000}), None, (500, True)),  # past the log end
    (Target(TargetKind.OFFSETS, offsets={1: 5}), None, None),  # partition not named: stays
    (Target(TargetKind.DATETIME, timestamp_ms=1), 300, (300, False)),
    (Target(TargetKind.DATETIME, timestamp_ms=1), -1, (500, False)),  # nothing that new: the log end
    (Target(TargetKind.DURATION, timestamp_ms=1), None, (500, False)),
])  # fmt: skip
def test_resolve(target: Target, found: int | None, expected: tuple[int, bool] | None) -> None:
    """Each kind of target gives an offset within [low, high], or leaves an unnamed partition alone."""
    assert replay.resolve(target, P, found) == expected


def test_unknown_partition_is_a_usage_error() -> None:
    """--to-offset naming a partition the topic lacks is refused with the topic's partitions."""
    with pytest.raises(UsageError, match=r"partition\(s\) \[4\].*0\.\.1"):
        replay.check_partitions(Target(TargetKind.OFFSETS, offsets={0: 1, 4: 1}), [0, 1], "t")


# ---- sampling ---------------------------------------------------------------------------------------------


def test_small_range_is_read_whole() -> None:
    """A range that fits the limit is one run: every message is counted."""
    assert replay.sample_ranges(10, 60, limit=100) == [(10, 60)]


@pytest.mark.parametrize(("start", "end", "limit"), [(0, 1_000_000, 10_000), (5, 1005, 100), (0, 11, 10), (0, 50, 3)])
def test_large_range_is_sampled_evenly(start: int, end: int, limit: int) -> None:
    """A larger range becomes evenly spaced, ordered, disjoint runs inside it holding at most `limit`."""
    runs = replay.sample_ranges(start, end, limit)
    assert 1 <= len(runs) <= replay.SAMPLE_CHUNKS
    assert sum(b - a for a, b in runs) <= limit
    assert all(start <= a < b <= end for a, b in runs)
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(runs))
    assert runs[0][0] == start
    assert runs[-1][0] >= start + (end - start) // 2  # the sample reaches the newer half, not only the head


@pytest.mark.parametrize(("start", "end", "limit"), [(5, 5, 10), (9, 5, 10), (0, 100, 0)])
def test_nothing_to_sample(start: int, end: int, limit: int) -> None:
    """An empty range or a zero limit reads nothing."""
    assert replay.sample_ranges(start, end, limit) == []


def test_ranges_to_read_cover_only_the_re_read_part() -> None:
    """Only partitions that move back are read, from the target up to the committed offset."""
    parts = [LogBounds(0, 0, 100, 80), LogBounds(1, 0, 100, 10), LogBounds(2, 0, 100, None)]
    ranges = replay.ranges_to_read(Target(TargetKind.OFFSETS, offsets={0: 50, 1: 60, 2: 0}), parts, {}, limit=1000)
    assert ranges == {0: [(50, 80)]}


# ---- counting ---------------------------------------------------------------------------------------------


def _sample(offset: int, *, written_ago_s: float, event_age_s: float | None) -> Sample:
    return Sample(offset, int((NOW - written_ago_s) * 1000),
                  None if event_age_s is None else int(NOW - event_age_s))


def _plan(offsets: LogBounds, target: int, read: SampleSet) -> replay.PartitionPlan:
    return replay.plan_partition(offsets, target, False, read, now_s=NOW, dedupe_window_s=WINDOW, max_age_s=MAX_AGE)


def test_counts_on_a_complete_read() -> None:
    """Age is judged on event_time, the dedupe window on the Kafka timestamp, undecodable values apart."""
    samples = (
        _sample(10, written_ago_s=3600, event_age_s=8 * DAY),  # buffered offline: new message, stale event
        _sample(11, written_ago_s=3 * DAY, event_age_s=3 * DAY),  # outside the window, not too old
        _sample(12, written_ago_s=60, event_age_s=60),  # fresh: inside the window
        _sample(13, written_ago_s=8 * DAY, event_age_s=8 * DAY),  # old on both clocks
        _sample(14, written_ago_s=60, event_age_s=None),  # does not decode
    )
    plan = _plan(LogBounds(0, 0, 20, 15), 10, SampleSet(samples, complete=True))
    assert (plan.current, plan.target, plan.re_read, plan.backlog) == (15, 10, 5, 10)
    assert plan.older_than_max_age == 2
    assert plan.in_dedupe_window == 3
    assert plan.undecodable == 1
    assert plan.exact
    assert plan.moves


def test_offset_gaps_do_not_make_a_complete_read_an_estimate() -> None:
    """A complete read with gaps in offsets (compaction, transaction markers) counts what it found."""
    samples = (_sample(10, written_ago_s=60, event_age_s=8 * DAY), _sample(19, written_ago_s=60, event_age_s=60))
    plan = _plan(LogBounds(0, 0, 20, 20), 10, SampleSet(samples, complete=True))
    assert plan.re_read == 10
    assert (plan.older_than_max_age, plan.in_dedupe_window, plan.exact) == (1, 2, True)


def test_a_partial_read_is_scaled_to_the_range() -> None:
    """A sample of 4 out of 1,000 re-read messages scales its shares to 1,000 and is marked estimated."""
    samples = (
        _sample(0, written_ago_s=9 * DAY, event_age_s=9 * DAY),
        _sample(250, written_ago_s=5 * DAY, event_age_s=5 * DAY),
        _sample(500, written_ago_s=60, event_age_s=60),
        _sample(750, written_ago_s=60, event_age_s=60),
    )
    plan = _plan(LogBounds(0, 0, 1000, 1000), 0, SampleSet(samples, complete=False))
    assert (plan.re_read, plan.sampled, plan.exact) == (1000, 4, False)
    assert plan.older_than_max_age == 250
    assert plan.in_dedupe_window == 500
    assert plan.undecodable == 0


def test_samples_outside_the_range_are_ignored() -> None:
    """Only messages in [target, committed) count, whatever else the reader returned."""
    samples = (_sample(4, written_ago_s=60, event_age_s=60), _sample(5, written_ago_s=60, event_age_s=60),
               _sample(6, written_ago_s=60, event_age_s=60))
    plan = _plan(LogBounds(0, 0, 10, 6), 5, SampleSet(samples, complete=True))
    assert (plan.re_read, plan.sampled, plan.in_dedupe_window) == (1, 1, 1)


def test_a_group_without_commits_re_reads_nothing() -> None:
    """With no committed offset the group starts at the log start, so a reset only skips ahead."""
    plan = _plan(LogBounds(0, 5, 50, None), 20, SampleSet())
    assert (plan.current, plan.re_read, plan.skipped, plan.backlog, plan.exact) == (None, 0, 15, 30, True)


def test_a_forward_reset_skips() -> None:
    """Moving past the committed offset re-reads nothing and reports what is skipped."""
    plan = _plan(LogBounds(0, 0, 50, 10), 30, SampleSet())
    assert (plan.re_read, plan.skipped, plan.older_than_max_age) == (0, 20, 0)


def test_a_partition_at_its_target_does_not_move() -> None:
    """A partition already at the target is planned but not changed."""
    assert not _plan(LogBounds(0, 0, 50, 30), 30, SampleSet()).moves


def test_build_plan_leaves_unnamed_partitions_out() -> None:
    """Only the partitions the target names appear, in partition order, with totals over them."""
    parts = [LogBounds(2, 0, 10, 10), LogBounds(0, 0, 10, 10), LogBounds(1, 0, 10, 10)]
    reads = {p: SampleSet(tuple(_sample(o, written_ago_s=60, event_age_s=60) for o in range(10)), True)
             for p in (0, 2)}
    plan = replay.build_plan(group="g", topic="t", target=Target(TargetKind.OFFSETS, offsets={2: 0, 0: 4}),
                             partitions=parts, found={}, samples=reads, now_s=NOW)
    assert [p.partition for p in plan.partitions] == [0, 2]
    assert plan.total("re_read") == 16
    assert plan.total("in_dedupe_window") == 16
    assert plan.exact


def test_build_plan_time_target_uses_the_broker_answer() -> None:
    """A time target takes each partition's offset from the broker's timestamp look-up."""
    parts = [LogBounds(0, 0, 10, 10), LogBounds(1, 0, 10, 10)]
    plan = replay.build_plan(group="g", topic="t", target=Target(TargetKind.DATETIME, timestamp_ms=1),
                             partitions=parts, found={0: 7, 1: -1}, samples={}, now_s=NOW)
    assert [(p.partition, p.target, p.re_read) for p in plan.partitions] == [(0, 7, 3), (1, 10, 0)]


# ---- output -----------------------------------------------------------------------------------------------


def _estimated_plan() -> replay.Plan:
    parts = [LogBounds(0, 0, 1000, 1000), LogBounds(1, 0, 10, 3)]
    reads = {0: SampleSet((_sample(0, written_ago_s=9 * DAY, event_age_s=9 * DAY),), complete=False)}
    return replay.build_plan(group="g1", topic="t1", target=Target(TargetKind.OFFSETS, offsets={0: 0, 1: 9000}),
                             partitions=parts, found={}, samples=reads, now_s=NOW)


def test_format_plan_marks_estimates_and_clamps() -> None:
    """The table marks scaled counts with `~`, a clamped target, the dry run and a forward skip."""
    text = "\n".join(replay.format_plan(_estimated_plan()))
    assert "dry run" in text
    assert "~1000" in text  # the one sampled message was old: scaled to the whole range
    assert "10 (clamped)" in text
    assert "7 message(s) will be skipped" in text
    assert "older 7 d" in text
    assert "in dedupe 2 d" in text


def test_plan_dict_totals() -> None:
    """The JSON form carries every partition and the totals."""
    doc = replay.plan_dict(_estimated_plan())
    assert doc["exact"] is False
    assert doc["totals"] == {"re_read": 1000, "skipped": 7, "backlog": 1000, "older_than_max_age": 1000,
                             "in_dedupe_window": 0, "undecodable": 0, "sampled": 1}


def test_a_range_nothing_could_be_read_from_shows_unknown_ages() -> None:
    """When no message of a re-read range was read, the age columns say `?`, not a guessed 0."""
    plan = replay.build_plan(group="g", topic="t", target=Target(TargetKind.EARLIEST),
                             partitions=[LogBounds(0, 0, 10, 10)], found={}, samples={}, now_s=NOW)
    assert not plan.partitions[0].counted
    row = replay.format_plan(plan)[2].split()
    assert row[:4] == ["0", "10", "0", "10"]
    assert row[4:7] == ["?", "?", "?"]
    assert any(line.startswith("? no message") for line in replay.format_plan(plan))


@pytest.mark.parametrize(
    ("changelog", "forget", "executed", "says"),
    [
        ("g.t.dedupe-changelog", False, False, "deduped against the changelog g.t.dedupe-changelog"),
        ("g.t.dedupe-changelog", True, False, "--execute clears their window in the changelog"),
        ("g.t.dedupe-changelog", True, True, "cleared their window in the changelog"),
        ("", False, False, "dedupe store is empty (dedupe.changelog = false)"),
    ],
)
def test_dry_run_says_what_the_dedupe_does_with_the_window(changelog: str, forget: bool, executed: bool,
                                                           says: str) -> None:
    """The last line says whether re-read events are deduped against the changelog or sent again."""
    plan = replay.build_plan(group="g", topic="t", target=Target(TargetKind.EARLIEST),
                             partitions=[LogBounds(0, 0, 10, 10)], found={}, samples={}, now_s=NOW,
                             changelog_topic=changelog, forget_dedupe=forget)
    last = replay.format_plan(plan, executed=executed)[-1]
    assert last.startswith("in dedupe:")
    assert says in last
    assert ("--forget-dedupe" in last) == bool(changelog)
    doc = replay.plan_dict(plan)
    assert (doc["changelog_topic"], doc["forget_dedupe"]) == (changelog or None, forget)
