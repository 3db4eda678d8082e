"""Creating the dedupe changelog topic: it is ready to read when ensure_topic returns."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from typing import Any

import pytest

from stream.pipeline import changelog


@dataclasses.dataclass
class _Partition:
    leader: int


@dataclasses.dataclass
class _Topic:
    partitions: dict[int, _Partition]
    error: Any = None


@dataclasses.dataclass
class _Metadata:
    topics: dict[str, _Topic]


class FreshBrokerAdmin:
    """An AdminClient whose broker knows a created topic at once but elects its leaders a few reads later."""

    def __init__(self, partitions: int, elected_after: int) -> None:
        self.partitions = partitions
        self.elected_after = elected_after
        self.reads_after_create = 0
        self.created = False

    def list_topics(self, timeout: float) -> _Metadata:
        if not self.created:
            return _Metadata({})
        self.reads_after_create += 1
        leader = 1 if self.reads_after_create > self.elected_after else -1
        return _Metadata({"c": _Topic({p: _Partition(leader) for p in range(self.partitions)})})

    def create_topics(self, topics: list[Any], **_kw: Any) -> dict[str, Future[None]]:
        self.created = True
        done: Future[None] = Future()
        done.set_result(None)
        return {"c": done}

    def leaders(self) -> bool:
        return self.reads_after_create > self.elected_after


def test_a_created_topic_is_returned_once_every_partition_has_a_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore that reads the topic right after its creation must not meet 'Unknown partition' or 'Not leader'
    (on a fresh broker it did: dedupe_restore_failed warnings at every first start)."""
    monkeypatch.setattr(changelog, "LEADER_POLL_S", 0.0)
    admin = FreshBrokerAdmin(partitions=4, elected_after=3)
    assert changelog.ensure_topic(admin, "c", 4, {}) == "created"  # type: ignore[arg-type]
    assert admin.leaders()


def test_a_topic_whose_leaders_never_come_is_a_changelog_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting for the leaders is bounded: past it, the caller gets the retriable ChangelogError it handles."""
    monkeypatch.setattr(changelog, "LEADER_POLL_S", 0.0)
    monkeypatch.setattr(changelog, "ADMIN_TIMEOUT_S", 0.05)
    admin = FreshBrokerAdmin(partitions=2, elected_after=10**9)
    with pytest.raises(changelog.ChangelogError, match="no leader"):
        changelog.ensure_topic(admin, "c", 2, {})  # type: ignore[arg-type]
