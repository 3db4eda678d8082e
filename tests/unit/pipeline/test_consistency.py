"""User consistency: external_id -> the em and ph fingerprints seen with it, bounded and windowed."""

from __future__ import annotations

import hashlib

import pytest

from stream.pipeline.consistency import ConsistencyTracker, Outcome, fingerprint, identity

NOW = 1_800_000_000.0
WINDOW = 48 * 3600.0


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _ident(uid: str, em: str | None = None, ph: str | None = None) -> tuple[int, int, int]:
    ud: dict[str, object] = {"external_id": [_h(uid)]}
    if em:
        ud["em"] = [_h(em)]
    if ph:
        ud["ph"] = [_h(ph)]
    found = identity(ud)
    assert found is not None
    return found


def test_same_email_and_phone_stay_consistent() -> None:
    """An external_id that always comes with the same em and ph is new once, then consistent."""
    t = ConsistencyTracker(WINDOW, 10)
    assert t.observe(_ident("u1", "a@x.com", "1"), NOW) is Outcome.NEW
    assert t.observe(_ident("u1", "a@x.com", "1"), NOW + 1) is Outcome.CONSISTENT
    assert t.observe(_ident("u1", "a@x.com"), NOW + 2) is Outcome.CONSISTENT


def test_another_email_is_inconsistent_and_the_id_is_counted_once() -> None:
    """A second email for the id makes each such event inconsistent, but flags the id only the first time."""
    t = ConsistencyTracker(WINDOW, 10)
    t.observe(_ident("u1", "a@x.com", "1"), NOW)
    assert t.observe(_ident("u1", "b@x.com", "1"), NOW + 1) is Outcome.FIRST_INCONSISTENT
    assert t.observe(_ident("u1", "b@x.com", "1"), NOW + 2) is Outcome.INCONSISTENT
    assert t.observe(_ident("u1", "a@x.com", "1"), NOW + 3) is Outcome.CONSISTENT


def test_another_phone_is_inconsistent() -> None:
    """A different phone with the same email is an inconsistency too."""
    t = ConsistencyTracker(WINDOW, 10)
    t.observe(_ident("u1", "a@x.com", "1"), NOW)
    assert t.observe(_ident("u1", "a@x.com", "2"), NOW + 1) is Outcome.FIRST_INCONSISTENT


def test_a_field_seen_for_the_first_time_is_added_not_a_conflict() -> None:
    """An id first seen with an email only, then with email and phone, stays consistent; the phone is kept."""
    t = ConsistencyTracker(WINDOW, 10)
    t.observe(_ident("u1", "a@x.com"), NOW)
    assert t.observe(_ident("u1", "a@x.com", "1"), NOW + 1) is Outcome.CONSISTENT
    assert t.observe(_ident("u1", None, "2"), NOW + 2) is Outcome.FIRST_INCONSISTENT


def test_events_without_email_or_phone_are_not_checked() -> None:
    """Nothing to compare: the event is unchecked and nothing is remembered."""
    t = ConsistencyTracker(WINDOW, 10)
    assert t.observe(_ident("u1"), NOW) is Outcome.UNCHECKED
    assert len(t) == 0


def test_the_bound_evicts_the_least_recently_seen_and_counts_it() -> None:
    """With room for two ids, a third evicts the one seen longest ago (LRU), and the eviction is counted."""
    t = ConsistencyTracker(WINDOW, 2)
    t.observe(_ident("u1", "a"), NOW)
    t.observe(_ident("u2", "b"), NOW + 1)
    t.observe(_ident("u1", "a"), NOW + 2)  # u1 is now the most recent
    t.observe(_ident("u3", "c"), NOW + 3)
    assert (len(t), t.evictions) == (2, 1)
    assert t.observe(_ident("u1", "other"), NOW + 4) is Outcome.FIRST_INCONSISTENT  # u1 was kept
    assert t.observe(_ident("u2", "other"), NOW + 5) is Outcome.NEW  # u2 was forgotten


def test_ids_not_seen_within_the_window_are_forgotten() -> None:
    """An id silent for longer than the window starts afresh: its old email is no longer held against it."""
    t = ConsistencyTracker(WINDOW, 10)
    t.observe(_ident("u1", "a"), NOW)
    assert t.observe(_ident("u1", "b"), NOW + WINDOW + 1) is Outcome.NEW
    assert (t.expired, t.evictions) == (1, 0)


def test_fingerprints_ignore_order_and_differ_for_different_sets() -> None:
    """A list's fingerprint is that of its set; absent values give 0; raw (unhashed) ids work too."""
    a, b = _h("a"), _h("b")
    assert fingerprint([a, b]) == fingerprint([b, a]) != fingerprint([a])
    assert fingerprint(None) == fingerprint([]) == 0
    assert fingerprint("user-1") != fingerprint("user-2")
    assert fingerprint(a) == int(a[:8], 16)
    assert identity({"em": [a]}) is None


@pytest.mark.parametrize("max_ids", [0, -1])
def test_the_bound_must_hold_one_id(max_ids: int) -> None:
    """A tracker that could hold nothing is a configuration error."""
    with pytest.raises(ValueError, match="max_ids"):
        ConsistencyTracker(WINDOW, max_ids)
