"""Commit points: the highest contiguous finished offset + 1, per partition."""

from __future__ import annotations

from stream.pipeline.offsets import OffsetTracker, PartitionOffsets


def test_commit_point_moves_only_over_a_contiguous_finished_run() -> None:
    """Finishing out of order holds the commit point at the first unfinished offset."""
    part = PartitionOffsets("t", 0)
    for offset in (10, 11, 12, 13):
        part.received(offset)
    assert not part.finish(12)
    assert part.commit_point is None
    assert part.finish(10)
    assert part.commit_point == 11
    assert part.finish(11)
    assert part.commit_point == 13  # 12 was already finished
    assert part.finish(13)
    assert part.commit_point == 14
    assert part.in_flight == 0


def test_gaps_in_offsets_are_skipped() -> None:
    """Offsets never received (transaction markers, compaction) do not hold the commit point."""
    part = PartitionOffsets("t", 0)
    for offset in (5, 9, 20):
        part.received(offset)
    part.finish(9)
    part.finish(5)
    assert part.commit_point == 20
    part.finish(20)
    assert part.commit_point == 21


def test_unfinished_counts_only_what_is_not_finished() -> None:
    """unfinished excludes finished offsets waiting behind an unfinished one."""
    part = PartitionOffsets("t", 0)
    for offset in range(5):
        part.received(offset)
    part.finish(3)
    part.finish(4)
    assert part.in_flight == 5
    assert part.unfinished == 3
    assert part.oldest_unfinished == 0


def test_tracker_reports_each_moved_commit_point_once() -> None:
    """changed() returns commit points that moved since the last call, and nothing twice."""
    tracker = OffsetTracker()
    a = tracker.assign("t", 0)
    b = tracker.assign("t", 1)
    a.received(0)
    b.received(0)
    a.finish(0)
    assert tracker.changed() == {("t", 0): 1}
    assert tracker.changed() == {}
    b.finish(0)
    assert tracker.changed() == {("t", 1): 1}


def test_a_revoked_generation_never_reaches_the_new_one() -> None:
    """Finishing an item of a revoked partition touches only the stale tracker, not the new assignment's."""
    tracker = OffsetTracker()
    old = tracker.assign("t", 0)
    old.received(7)
    dropped = tracker.drop("t", 0)
    assert dropped is old
    assert not old.active
    new = tracker.assign("t", 0)
    new.received(3)
    old.finish(7)
    assert new.commit_point is None
    assert tracker.changed() == {}


def test_an_offset_reset_never_moves_the_commit_point_backwards() -> None:
    """Offsets read again after a reset inside one assignment never lower a commit point already reached."""
    part = PartitionOffsets("t", 0)
    for offset in (100, 101):
        part.received(offset)
    part.finish(100)
    part.finish(101)
    assert part.commit_point == 102
    part.received(50)  # auto.offset.reset or a seek went back
    part.finish(50)
    assert part.commit_point == 102
    part.received(51)
    part.received(102)
    part.finish(102)
    assert part.commit_point == 102, "51 is still unfinished, but the point never goes below 102"
    part.finish(51)
    assert part.commit_point == 103
