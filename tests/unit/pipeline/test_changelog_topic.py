"""Topics the pipeline creates (the dedupe changelog, the parking topics) are ready to read when created."""

from __future__ import annotations

import pytest

from stream.pipeline import changelog, source
from tests.support.fakes import FreshBrokerAdmin


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "LEADER_POLL_S", 0.0)


def test_a_created_changelog_topic_is_returned_once_every_partition_has_a_leader() -> None:
    """A restore that reads the topic right after its creation must not meet 'Unknown partition' or 'Not leader'
    (on a fresh broker it did: dedupe_restore_failed warnings at every first start)."""
    admin = FreshBrokerAdmin(elected_after=3)
    assert changelog.ensure_topic(admin, "c", 4, {}) == "created"  # type: ignore[arg-type]
    assert admin.leaders()


def test_a_changelog_topic_whose_leaders_never_come_is_a_changelog_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting for the leaders is bounded: past it, the caller gets the retriable ChangelogError it handles."""
    monkeypatch.setattr(changelog, "ADMIN_TIMEOUT_S", 0.05)
    admin = FreshBrokerAdmin(elected_after=10**9)
    with pytest.raises(changelog.ChangelogError, match="no leader"):
        changelog.ensure_topic(admin, "c", 2, {})  # type: ignore[arg-type]


def test_created_parking_topics_are_returned_once_every_partition_has_a_leader() -> None:
    """The parking topics likewise: the parking watch looks at their watermarks right after the start (a
    fresh demo logged parking_look_failed 'Not leader for partition')."""
    admin = FreshBrokerAdmin({"src": 3}, elected_after=3)
    errors = source.ensure_topics({}, ["g.a.parking", "g.b.parking"], "src", admin_factory=lambda _conf: admin)
    assert errors == {}
    assert admin.created == ["g.a.parking", "g.b.parking"]
    assert admin.leaders()


def test_parking_topics_whose_leaders_never_come_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded too: a topic still without leaders is an error the caller logs (parking writes retry)."""
    monkeypatch.setattr(source, "TOPIC_TIMEOUT_S", 0.05)
    admin = FreshBrokerAdmin({"src": 1}, elected_after=10**9)
    errors = source.ensure_topics({}, ["g.a.parking"], "src", admin_factory=lambda _conf: admin)
    assert list(errors) == ["g.a.parking"]
    assert "no leader" in errors["g.a.parking"]
