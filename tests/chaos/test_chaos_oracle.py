"""The chaos oracles fail on each violation they exist for and stay quiet on a run that keeps the contract."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.support.chaos_oracle import (
    Key,
    Position,
    Snapshot,
    commit_problems,
    delivery_problems,
    letter_problems,
    offset_problems,
    repeat_problems,
    repeat_reasons,
    repeat_report,
)

A: Key = ("111", "Purchase", "a")
B: Key = ("111", "Purchase", "b")
# event id -> where it occurs in the source topic; "b" occurs twice (a deliberate duplicate)
POSITIONS: dict[str, list[Position]] = {"a": [(0, 0)], "b": [(0, 1), (1, 0)]}
BAD: dict[Position, str] = {(0, 2): "bad_avro"}


def snap(committed: Mapping[int, int], accepted: Mapping[Key, int], letters: Mapping[Position, int] | None = None,
         kill: bool = True, loss: bool = False) -> Snapshot:
    return Snapshot("kill 1", kill, dict(committed), dict(accepted), dict(letters or {}), loss)


def test_a_clean_run_has_no_problem() -> None:
    """Everything accepted once, the bad record dead-lettered once, offsets at the end: no problem at all."""
    kill = snap({0: 2, 1: 0}, {A: 1, B: 1})
    counts = {A: 1, B: 1}
    assert delivery_problems({A, B}, counts, POSITIONS) == []
    assert commit_problems([kill], {A, B}, POSITIONS, BAD) == []
    assert repeat_problems([kill], counts, POSITIONS) == []
    assert letter_problems([kill], BAD, [((0, 2), "bad_avro")]) == []
    assert offset_problems({0: 3, 1: 1}, {0: 3, 1: 1}) == []


def test_a_lost_event_is_named_with_its_positions() -> None:
    """A valid event never accepted is reported with its id and every partition/offset it occupies."""
    [problem] = delivery_problems({A, B}, {A: 1}, POSITIONS)
    assert "lost" in problem
    assert "Purchase/b" in problem
    assert "p0@1" in problem
    assert "p1@0" in problem


def test_an_event_that_should_not_be_sent_is_reported() -> None:
    """An accepted key outside the expected set (e.g. a bad record that reached Meta) is a problem."""
    [problem] = delivery_problems({A}, {A: 1, B: 1}, POSITIONS)
    assert "not valid" in problem
    assert "Purchase/b" in problem


def test_committing_before_the_ack_is_caught_at_the_snapshot() -> None:
    """An event whose offset was committed while Meta had not accepted it is reported with the offsets."""
    [problem] = commit_problems([snap({0: 1}, {})], {A}, POSITIONS, {})
    assert "committed past p0@0" in problem
    assert "never accepted" in problem


def test_committing_a_bad_record_before_its_dead_letter_is_caught() -> None:
    """A bad record committed while the dead-letter topic does not hold it is reported."""
    [problem] = commit_problems([snap({0: 3}, {A: 1, B: 1}, {})], {A, B}, POSITIONS, BAD)
    assert "p0@2" in problem
    assert "not in the dead-letter topic" in problem


def test_a_repeat_of_a_committed_event_after_a_kill_is_caught() -> None:
    """An event committed before a kill and accepted again afterwards is reported, naming the kill."""
    problems = repeat_problems([snap({0: 1}, {A: 1})], {A: 2}, POSITIONS)
    assert any("accepted again after their offsets were committed" in p and "Purchase/a" in p for p in problems)


def test_a_repeat_of_an_event_in_flight_at_a_kill_is_allowed() -> None:
    """An event accepted but not committed at a kill may be accepted once more, not twice more."""
    kill = snap({0: 0}, {A: 1})
    assert repeat_problems([kill], {A: 2}, POSITIONS) == []
    [problem] = repeat_problems([kill], {A: 3}, POSITIONS)
    assert "at most 2x" in problem


def test_a_duplicate_whose_twin_was_uncommitted_at_the_kill_may_repeat() -> None:
    """A duplicate id with one occurrence past the committed offset is in flight, so one repeat is allowed."""
    kill = snap({0: 2, 1: 0}, {B: 1})
    assert repeat_problems([kill], {B: 2}, POSITIONS) == []


@pytest.mark.parametrize("kill", [False, True])
def test_a_repeat_without_a_kill_is_unexplained(kill: bool) -> None:
    """A repeat with no kill between (e.g. across a broker restart, or a live snapshot) is reported."""
    snapshots = [snap({0: 0}, {}, kill=kill)]  # accepted nothing yet at the snapshot
    [problem] = repeat_problems(snapshots, {A: 2}, POSITIONS)
    assert "not explained" in problem


@pytest.mark.parametrize(
    ("letters", "fragment"),
    [
        ([], "never dead-lettered"),
        ([((0, 2), "event_too_old")], "expected bad_avro"),
        ([((0, 2), "bad_avro"), ((0, 2), "bad_avro")], "at most 1x"),
        ([((0, 2), "bad_avro"), ((0, 0), "meta_rejected")], "not one of the bad records"),
    ],
)
def test_dead_letter_problems_are_named(letters: list[tuple[Position, str]], fragment: str) -> None:
    """A missing, mislabelled, repeated or stray dead letter is reported with its position."""
    [problem] = letter_problems([], BAD, letters)
    assert fragment in problem


def test_a_dead_letter_repeated_after_a_kill_it_was_in_flight_at_is_allowed() -> None:
    """A bad record dead-lettered but not committed at a kill may be dead-lettered once more."""
    kill = snap({0: 2}, {}, {(0, 2): 1})
    assert letter_problems([kill], BAD, [((0, 2), "bad_avro")] * 2) == []
    committed = snap({0: 3}, {}, {(0, 2): 1})
    [problem] = letter_problems([committed], BAD, [((0, 2), "bad_avro")] * 2)
    assert "with its offset committed" in problem


def test_a_partition_loss_allows_one_more_dead_letter_but_no_resend() -> None:
    """Across a partition loss the live process may dead-letter an uncommitted bad record again, never resend."""
    loss = snap({0: 0}, {A: 1}, {}, kill=False, loss=True)
    assert letter_problems([loss], BAD, [((0, 2), "bad_avro")] * 2) == []
    [problem] = letter_problems([loss], BAD, [((0, 2), "bad_avro")] * 3)
    assert "at most 2x" in problem
    [problem] = repeat_problems([loss], {A: 2}, POSITIONS)
    assert "not explained" in problem


def test_offsets_short_of_the_end_are_reported_per_partition() -> None:
    """A partition whose committed offset is not its end offset is named with the gap."""
    [problem] = offset_problems({0: 3, 1: -1001}, {0: 3, 1: 5})
    assert "partition 1: committed -1001 != end 5 (5 unfinished)" in problem
    assert offset_problems({0: -1001}, {0: 0}) == []  # an empty partition needs no commit


def test_repeat_report_counts_events_and_letters_seen_more_than_once() -> None:
    """The report counts valid events accepted twice or more and bad records dead-lettered twice or more."""
    expected = {("1", "Purchase", "a"), ("1", "Purchase", "b"), ("2", "Lead", "a"), ("2", "Lead", "c")}
    counts = {("1", "Purchase", "a"): 2, ("1", "Purchase", "b"): 1, ("2", "Lead", "a"): 3, ("2", "Lead", "c"): 1}
    bad = {(0, 5): "bad_avro", (1, 7): "event_too_old"}
    letters = [((0, 5), "bad_avro"), ((0, 5), "bad_avro"), ((1, 7), "event_too_old")]
    report = repeat_report(expected, counts, bad, letters)
    assert "2 of 4 valid events (50.00%)" in report
    assert "1 of 2 bad records (50.00%)" in report


def test_a_twin_read_by_a_new_owner_after_a_handoff_may_repeat_once() -> None:
    """A second occurrence uncommitted at a graceful handoff meets an empty dedupe store: one repeat is explained."""
    handoff = Snapshot("member 1 joined", False, {0: 2, 1: 0}, {B: 1}, {}, handoff=True)
    assert repeat_problems([handoff], {B: 2}, POSITIONS) == []
    assert repeat_reasons([handoff], {B: 2}, POSITIONS) == {"twin read by a new owner after member 1 joined": 1}
    [problem] = repeat_problems([handoff], {B: 3}, POSITIONS)
    assert "at most 2x" in problem


def test_a_single_event_repeated_across_a_handoff_is_unexplained() -> None:
    """A graceful handoff sends nothing twice by itself: an event with one occurrence may not repeat."""
    handoff = Snapshot("member 1 left", False, {0: 0}, {A: 1}, {}, handoff=True)
    [problem] = repeat_problems([handoff], {A: 2}, POSITIONS)
    assert "not explained" in problem
    assert repeat_reasons([handoff], {A: 2}, POSITIONS) == {"unexplained": 1}


def test_repeat_reasons_name_the_kill_an_event_was_in_flight_at() -> None:
    """Each extra acceptance is attributed to the kill that explains it."""
    kill = snap({0: 0}, {A: 1})
    assert repeat_reasons([kill], {A: 2, B: 1}, POSITIONS) == {"in flight at kill 1": 1}
