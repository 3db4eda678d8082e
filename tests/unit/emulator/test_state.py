"""The ledger: Meta-style dedupe over 48 hours, exact acceptance counts, recent events (pure)."""

from __future__ import annotations

import pytest

from stream.contract.meta import DEDUPE_WINDOW_S
from stream.emulator import state
from stream.emulator.samples import sample_events
from stream.emulator.state import Ledger

NOW = 1_790_000_000


def test_same_name_and_id_within_48h_is_a_duplicate() -> None:
    """The second acceptance of (event_name, event_id) within the window counts as a duplicate."""
    ledger = Ledger()
    events = sample_events(3, NOW)
    assert ledger.accept("ds", events, NOW) == 0
    assert ledger.accept("ds", events[:2], NOW + DEDUPE_WINDOW_S - 1) == 2
    assert ledger.stats()["duplicates"] == 2
    assert ledger.stats()["events_received"] == 5


def test_after_48h_the_window_starts_again() -> None:
    """An event seen again after the window is new again, and opens a fresh window."""
    ledger = Ledger()
    events = sample_events(1, NOW)
    ledger.accept("ds", events, NOW)
    assert ledger.accept("ds", events, NOW + DEDUPE_WINDOW_S) == 0
    assert ledger.accept("ds", events, NOW + DEDUPE_WINDOW_S + 10) == 1


@pytest.mark.parametrize(
    ("dataset", "name", "event_id"), [("other", None, None), ("ds", "Lead", None), ("ds", None, "e-other")]
)
def test_key_is_dataset_name_and_id(dataset: str, name: str | None, event_id: str | None) -> None:
    """Another dataset, event name or event id is not a duplicate."""
    ledger = Ledger()
    event = sample_events(1, NOW)[0]
    ledger.accept("ds", [event], NOW)
    other = dict(event, event_name=name or event["event_name"], event_id=event_id or event["event_id"])
    assert ledger.accept(dataset, [other], NOW + 1) == 0


def test_events_without_id_are_never_duplicates() -> None:
    """Without an event_id Meta cannot deduplicate, so repeated events all count as new."""
    ledger = Ledger()
    event = sample_events(1, NOW)[0]
    del event["event_id"]
    assert ledger.accept("ds", [event, event], NOW) == 0
    assert ledger.received() == [{"dataset_id": "ds", "event_name": "Purchase", "event_id": None, "count": 2}]


def test_an_id_repeated_within_one_request_is_a_duplicate() -> None:
    """The second of two events with the same name and id in one request is a duplicate."""
    ledger = Ledger()
    events = sample_events(2, NOW)
    assert ledger.accept("ds", [events[0], events[1], events[0]], NOW) == 1
    assert ledger.stats()["distinct_keys"] == 2
    assert ledger.accept("ds", events, NOW + 1) == 2


def test_accept_keys_records_like_accept() -> None:
    """Accepting by names and ids leaves the same counts, keys and recent events as by event bodies."""
    events = sample_events(4, NOW) + sample_events(1, NOW)
    by_events, by_keys = Ledger(decode=lambda raw: events), Ledger(decode=lambda raw: events)
    for now in (NOW, NOW + 1):
        by_events.accept("ds", events, now, "T", raw="raw")
        by_keys.accept_keys("ds", [e["event_name"] for e in events], [e["event_id"] for e in events], now, "T", "raw")
    assert by_keys.stats() == by_events.stats()
    assert by_keys.received() == by_events.received()
    assert by_keys.recent(100) == by_events.recent(100)


def test_accept_keys_needs_a_decode() -> None:
    """Without a decode function the raw form could never be read back, so accept_keys refuses."""
    with pytest.raises(ValueError, match="decode"):
        Ledger().accept_keys("ds", ["Purchase"], ["e0"], NOW, None, b"{}")


def test_received_counts_every_acceptance() -> None:
    """`received` lists each key once with the exact number of times it was accepted."""
    ledger = Ledger()
    events = sample_events(3, NOW)
    ledger.accept("ds", events, NOW)
    ledger.accept("ds", events[1:2], NOW + 5)
    ledger.accept("ds2", events[:1], NOW + 5)
    counts = {(r["dataset_id"], r["event_id"]): r["count"] for r in ledger.received()}
    assert counts == {("ds", "e0"): 1, ("ds", "e1"): 2, ("ds", "e2"): 1, ("ds2", "e0"): 1}
    assert [r["event_id"] for r in ledger.received("ds2")] == ["e0"]


def test_numeric_event_ids_are_keyed_as_strings() -> None:
    """An event_id sent as a number is the same key as its string form."""
    ledger = Ledger()
    event = sample_events(1, NOW)[0]
    ledger.accept("ds", [dict(event, event_id=7)], NOW)
    assert ledger.accept("ds", [dict(event, event_id="7")], NOW) == 1


def test_recent_is_newest_first_and_bounded() -> None:
    """`recent` gives at most keep_events bodies, newest first, with dataset and test code."""
    ledger = Ledger(keep_events=5)
    ledger.accept("ds", sample_events(4, NOW, prefix="a"), NOW)
    ledger.accept("ds", sample_events(4, NOW, prefix="b"), NOW + 1, test_event_code="TEST1")
    recent = ledger.recent(100)
    assert [r.event["event_id"] for r in recent] == ["b3", "b2", "b1", "b0", "a3"]
    assert recent[0].test_event_code == "TEST1"
    assert recent[-1].test_event_code is None
    assert [r.event["event_id"] for r in ledger.recent(2)] == ["b3", "b2"]
    assert ledger.recent(0) == []


def test_keep_zero_keeps_no_bodies() -> None:
    """With keep_events 0 nothing is kept but counts still are."""
    ledger = Ledger(keep_events=0)
    ledger.accept("ds", sample_events(3, NOW), NOW)
    assert ledger.recent(10) == []
    assert ledger.stats()["events_received"] == 3


def test_reset_forgets_everything() -> None:
    """After reset the counts, the dedupe memory and the recent events are empty."""
    ledger = Ledger()
    events = sample_events(2, NOW)
    ledger.count_request()
    ledger.count_read()
    ledger.count_error("100/2804003")
    ledger.count_fault("reset")
    ledger.accept("ds", events, NOW)
    ledger.accept("ds", events, NOW, test_event_code="TEST1")
    ledger.reset()
    assert ledger.stats() == {"requests": 0, "accepted_requests": 0, "reads": 0, "events_received": 0,
                              "distinct_keys": 0, "duplicates": 0, "errors": {}, "faults": {}, "events_by_dataset": {},
                              "test_events_received": 0, "test_events_by_dataset": {}}  # fmt: skip
    assert ledger.received(test=True) == []
    assert ledger.accept("ds", events, NOW) == 0
    assert ledger.recent(10)[0].event["event_id"] == "e1"


def test_negative_keep_is_refused() -> None:
    """A negative number of kept events is a programming error."""
    with pytest.raises(ValueError, match="keep_events"):
        Ledger(keep_events=-1)


def test_raw_requests_are_decoded_when_read() -> None:
    """Requests kept in raw form come back as their events, newest first, through `decode`."""
    decoded: list[str] = []

    def decode(raw: object) -> list[dict[str, object]]:
        decoded.append(str(raw))
        return sample_events(2, NOW, prefix=str(raw))

    ledger = Ledger(keep_events=3, decode=decode)
    ledger.accept("ds", sample_events(2, NOW, prefix="a"), NOW, raw="a")
    ledger.accept("ds", sample_events(2, NOW, prefix="b"), NOW, raw="b")
    assert decoded == []
    assert [r.event["event_id"] for r in ledger.recent(3)] == ["b1", "b0", "a1"]
    assert decoded == ["b", "a"]


@pytest.mark.parametrize(
    ("ids", "copied"),
    [(["e-1", "e-2", "e-1"], True), (["e-1", None], False), (["e-1", "e\x002"], False), ([], False)],
    ids=["strings", "a missing id", "an id with NUL", "none"],
)
def test_kept_ids_are_equal_copies(ids: list[str | None], copied: bool) -> None:
    """The ledger keeps equal copies of the ids (not the parsed body's objects) when it can."""
    kept = state._fresh_copies(ids)
    assert list(kept) == ids
    assert all((k is not i) == copied for k, i in zip(kept, ids, strict=True))


def test_test_events_are_counted_apart_like_metas_test_events_tab() -> None:
    """Events sent with a test_event_code are listed and counted as test events, never as real ones."""
    ledger = Ledger()
    ledger.accept("ds", sample_events(2, NOW, prefix="real"), NOW)
    ledger.accept("ds", sample_events(3, NOW, prefix="t"), NOW, test_event_code="TEST1")
    ledger.accept("ds", sample_events(1, NOW, prefix="t"), NOW + 1, test_event_code="TEST1")
    stats = ledger.stats()
    assert (stats["events_received"], stats["events_by_dataset"]) == (2, {"ds": 2})
    assert (stats["test_events_received"], stats["test_events_by_dataset"]) == (4, {"ds": 4})
    assert sorted(r["event_id"] for r in ledger.received()) == ["real0", "real1"]
    test = {r["event_id"]: r["count"] for r in ledger.received("ds", test=True)}
    assert test == {"t0": 2, "t1": 1, "t2": 1}
    assert ledger.received("other", test=True) == []
    assert stats["duplicates"] == 0
