"""The dedupe changelog: its records, its topic name, the restore of a partition, and the store's parts."""

from __future__ import annotations

import pytest

from stream import config
from stream.errors import ConfigError
from stream.pipeline import dedupelog
from stream.pipeline.dedupe import DedupeStore, Verdict
from stream.pipeline.dedupelog import Entry, Kind, Restore

WINDOW_S = 48 * 3600.0
HOUR = 3600.0
T0 = 1_800_000_000.0  # a bucket boundary


def _sent(store: DedupeStore, key: int, now: float, part: int = 0) -> None:
    assert store.check(key, now) is Verdict.NEW
    assert store.confirm(key, now, part)


class TestRecords:
    """Record keys and values, and reading them back."""

    def test_key_record_reads_back(self) -> None:
        """A key entry parses to the key and its window start, to the millisecond."""
        key, value = dedupelog.key_record(2**59 + 12345, T0 + 0.25)
        assert dedupelog.parse(key, value) == Entry(Kind.KEY, 2**59 + 12345, T0 + 0.25)

    def test_dead_record_reads_back(self) -> None:
        """A dead-letter entry parses to the source offset, its time and the fingerprint of the message."""
        key, value = dedupelog.dead_record(987654, T0, b"not avro")
        assert dedupelog.parse(key, value) == Entry(Kind.DEAD, 987654, T0, dedupelog.fingerprint(b"not avro"))

    def test_a_dead_entry_without_fingerprint_reads_back_without_one(self) -> None:
        """A dead entry of the time alone parses, with no fingerprint (so it never lets a message be skipped)."""
        _key, value = dedupelog.key_record(5, T0)
        assert dedupelog.parse(dedupelog.dead_tombstone(5), value) == Entry(Kind.DEAD, 5, T0, None)

    def test_tombstones_use_the_entry_keys(self) -> None:
        """A tombstone has the record key of the entry it removes and parses with no time."""
        assert dedupelog.key_tombstone(7) == dedupelog.key_record(7, T0)[0]
        assert dedupelog.dead_tombstone(7) == dedupelog.dead_record(7, T0, b"x")[0]
        assert dedupelog.key_tombstone(7) != dedupelog.dead_tombstone(7)
        assert dedupelog.parse(dedupelog.key_tombstone(7), None) == Entry(Kind.KEY, 7, None)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            (None, b"\x01" + bytes(8)),
            (b"k" + bytes(7), b"\x01" + bytes(8)),
            (b"x" + bytes(8), b"\x01" + bytes(8)),
            (b"k" + bytes(8), b"\x02" + bytes(8)),  # a later format version
            (b"k" + bytes(8), b"\x01" + bytes(4)),
            (b"k" + bytes(8), b"\x01" + bytes(16)),  # a fingerprint is for dead letters only
        ],
    )
    def test_records_of_another_format_are_not_understood(self, key: bytes | None, value: bytes) -> None:
        """Garbled records and unknown versions parse to None (counted and skipped by a restore)."""
        assert dedupelog.parse(key, value) is None


class TestTopicName:
    """The changelog topic's name from the group and the source topic."""

    def test_default_name_holds_group_and_topic(self) -> None:
        """By default the name is derived from the group and the topic."""
        settings = config._build({"kafka": {"group_id": "capi", "topics": ["conversions"]}}, "test")
        assert config.changelog_topic(settings, "conversions") == "capi.conversions.dedupe-changelog"

    def test_illegal_characters_of_the_group_are_replaced(self) -> None:
        """A group id may hold characters a topic name may not: they become underscores."""
        assert config.changelog_topic_name("{group}.{topic}.x", "my group/1", "t") == "my_group_1.t.x"

    @pytest.mark.parametrize("template", ["{group}.{topic}.{other}", "bad name {topic}", "x" * 250, "{0}"])
    def test_a_bad_template_is_refused(self, template: str) -> None:
        """Unknown placeholders, illegal characters and over-long names raise ValueError."""
        with pytest.raises(ValueError, match="topic"):
            config.changelog_topic_name(template, "g", "t")

    def test_config_refuses_a_bad_name_naming_the_key(self) -> None:
        """check-config names dedupe.changelog_topic when the name is illegal."""
        with pytest.raises(ConfigError, match=r"dedupe\.changelog_topic"):
            config._build({"dedupe": {"changelog_topic": "has space {topic}"}}, "test")

    def test_config_needs_the_topic_placeholder_for_several_topics(self) -> None:
        """Two source topics cannot share one changelog topic."""
        raw = {"kafka": {"topics": ["a", "b"]}, "dedupe": {"changelog_topic": "fixed-changelog"}}
        with pytest.raises(ConfigError, match=r"\{topic\}"):
            config._build(raw, "test")

    def test_config_refuses_a_changelog_named_like_a_source_topic(self) -> None:
        """The changelog topic must not be a source or the dead-letter topic."""
        raw = {"kafka": {"topics": ["a"], "dlq_topic": "dlq"}, "dedupe": {"changelog_topic": "dlq"}}
        with pytest.raises(ConfigError, match="dead-letter"):
            config._build(raw, "test")

    def test_no_name_is_checked_without_a_changelog(self) -> None:
        """With dedupe.changelog = false the name is not used, so it is not checked."""
        settings = config._build({"dedupe": {"changelog": False, "changelog_topic": "bad name"}}, "test")
        assert settings.dedupe.changelog is False

    def test_retention_is_one_bucket_longer_than_the_window(self) -> None:
        """The topic keeps what a key can be held for: the window plus one bucket."""
        assert dedupelog.retention_ms(DedupeStore(WINDOW_S)) == 49 * 3600 * 1000


class TestRestore:
    """Reading a changelog partition back into the store."""

    def test_live_keys_are_restored_under_the_part(self) -> None:
        """Keys inside the window are SENT after the restore; the counts say what was read."""
        store = DedupeStore(WINDOW_S)
        restore = Restore(store, part=3, now=T0)
        restore.apply([dedupelog.key_record(1, T0 - 47 * HOUR), dedupelog.key_record(2, T0 - HOUR)])
        assert store.check(1, T0) is Verdict.SENT
        assert store.check(2, T0) is Verdict.SENT
        assert (restore.records, restore.keys, restore.nbytes) == (2, 2, 36)
        assert store.drop_part(3) == 2

    def test_expired_keys_are_not_restored_and_are_tombstoned(self) -> None:
        """A key whose window is over is left out and its entry is tombstoned."""
        store = DedupeStore(WINDOW_S)
        restore = Restore(store, part=0, now=T0)
        restore.apply([dedupelog.key_record(1, T0 - 50 * HOUR)])
        assert store.check(1, T0) is Verdict.NEW
        assert restore.tombstones() == [dedupelog.key_tombstone(1)]

    def test_a_key_sent_again_after_it_expired_is_not_tombstoned(self) -> None:
        """An expired entry superseded later in the log by a live one is restored, not tombstoned."""
        store = DedupeStore(WINDOW_S)
        restore = Restore(store, part=0, now=T0)
        restore.apply([dedupelog.key_record(1, T0 - 60 * HOUR), (dedupelog.key_tombstone(1), None),
                       dedupelog.key_record(1, T0 - HOUR), dedupelog.key_record(2, T0 - 60 * HOUR)])
        assert store.check(1, T0) is Verdict.SENT
        assert restore.tombstones() == [dedupelog.key_tombstone(2)]

    def test_dead_letters_inside_the_window_are_restored(self) -> None:
        """Dead-lettered offsets inside the window come back; expired or tombstoned ones do not."""
        restore = Restore(DedupeStore(WINDOW_S), part=0, now=T0)
        restore.apply([dedupelog.dead_record(10, T0 - HOUR, b"a"), dedupelog.dead_record(11, T0 - 50 * HOUR, b"b"),
                       dedupelog.dead_record(12, T0 - HOUR, b"c"), (dedupelog.dead_tombstone(12), None)])
        assert restore.dead == {10: (T0 - HOUR, dedupelog.fingerprint(b"a"))}
        assert restore.tombstones() == [dedupelog.dead_tombstone(11)]

    def test_a_bundle_restores_each_live_key_with_its_own_time(self) -> None:
        """One bundle record carries several keys, each with its accepted time; the live ones come back
        under the part, the expired one does not, and a bundle with a live key is not tombstoned."""
        key, value = dedupelog.bundle_record([(1, T0 - 47 * HOUR), (-2, T0 - HOUR), (3, T0 - 50 * HOUR)])
        assert (key[:1], len(key), len(value)) == (dedupelog.KIND_BUNDLE, 9, 1 + 3 * 16)
        store = DedupeStore(WINDOW_S)
        restore = Restore(store, part=4, now=T0)
        restore.apply([(key, value)])
        assert [store.check(k, T0) for k in (1, -2, 3)] == [Verdict.SENT, Verdict.SENT, Verdict.NEW]
        assert (restore.records, restore.keys, restore.tombstones()) == (1, 2, [])
        assert store.check(1, T0 + 2 * HOUR) is Verdict.NEW, "its window ran from its own time"
        assert store.drop_part(4) == 1

    def test_bundle_values_round_trip(self) -> None:
        """Keys (any int64) and millisecond times come back as written."""
        entries = [(-(2**63), 1.5), (2**63 - 1, T0), (0, T0 - 0.001)]
        assert dedupelog.parse_bundle(dedupelog.bundle_record(entries)[1]) == entries

    def test_bundle_ids_differ(self) -> None:
        """Compaction keeps the latest record of a key: two bundles never share one, or one would replace
        the other's keys."""
        assert len({dedupelog.bundle_record([(1, T0)])[0] for _ in range(1000)}) == 1000

    def test_a_bundle_of_expired_keys_is_tombstoned_unless_it_already_was(self) -> None:
        """A bundle whose every key is over is tombstoned by the restore; one already tombstoned is not."""
        old1, old2 = dedupelog.bundle_record([(1, T0 - 50 * HOUR)]), dedupelog.bundle_record([(2, T0 - 60 * HOUR)])
        restore = Restore(DedupeStore(WINDOW_S), part=0, now=T0)
        restore.apply([old1, old2, (old2[0], None)])
        assert restore.tombstones() == [old1[0]]
        assert restore.keys == 0

    def test_a_bundle_of_another_version_is_counted_and_skipped(self) -> None:
        """A bundle value with another version byte or a length that is not whole pairs changes nothing."""
        key, value = dedupelog.bundle_record([(1, T0)])
        restore = Restore(DedupeStore(WINDOW_S), part=0, now=T0)
        restore.apply([(key, b"\x02" + value[1:]), (key, value[:-1])])
        assert (restore.unknown, restore.keys, restore.tombstones()) == (2, 0, [])

    def test_unknown_records_are_counted_and_skipped(self) -> None:
        """A record of another format changes nothing and is counted."""
        store = DedupeStore(WINDOW_S)
        restore = Restore(store, part=0, now=T0)
        restore.apply([(b"zzz", b"1")])
        assert (restore.unknown, len(store)) == (1, 0)


class TestStoreParts:
    """The store's parts: restore, drop on revoke, each key expiring with its own time."""

    def test_restore_does_not_shadow_a_held_or_pending_key(self) -> None:
        """A key already SENT or PENDING is left as it is by a restore."""
        store = DedupeStore(WINDOW_S)
        _sent(store, 1, T0, part=0)
        store.check(2, T0)
        assert not store.restore(1, T0, T0, part=1)
        assert not store.restore(2, T0, T0, part=1)
        assert store.drop_part(1) == 0
        assert store.check(1, T0) is Verdict.SENT

    def test_drop_part_forgets_only_that_part(self) -> None:
        """Dropping a revoked partition's part makes its keys NEW again and keeps the others."""
        store = DedupeStore(WINDOW_S)
        _sent(store, 1, T0, part=0)
        _sent(store, 2, T0 + 2 * HOUR, part=1)
        _sent(store, 3, T0 + 3 * HOUR, part=1)
        assert store.drop_part(1) == 2
        assert len(store) == 1
        assert store.check(2, T0 + 3 * HOUR) is Verdict.NEW
        assert store.check(1, T0 + 3 * HOUR) is Verdict.SENT

    def test_restored_key_expires_with_its_own_time(self) -> None:
        """A key restored with an old window start expires when that window ends, not the restore's."""
        store = DedupeStore(WINDOW_S)
        assert store.restore(1, T0 - 47 * HOUR, T0, part=2)
        assert store.check(1, T0 + HOUR) is Verdict.SENT
        assert store.check(1, T0 + 2 * HOUR) is Verdict.NEW
        assert store.expired == 1

    def test_confirm_says_whether_the_key_is_held(self) -> None:
        """confirm returns False for a key whose window was already over (nothing to record)."""
        store = DedupeStore(WINDOW_S)
        store.check(1, T0)
        assert not store.confirm(1, T0 + 50 * HOUR)
        store.check(2, T0 + 50 * HOUR)
        assert store.confirm(2, T0 + 50 * HOUR)

    def test_live_follows_the_bucket_rule(self) -> None:
        """A key accepted in bucket b is live while now's bucket is at most b + buckets."""
        store = DedupeStore(WINDOW_S)
        assert store.live(T0, T0 + 48 * HOUR + HOUR - 1)
        assert not store.live(T0, T0 + 49 * HOUR)




class TestDeadLetterSeen:
    """Whether a message read again is the one the changelog says was dead-lettered."""

    def test_the_same_message_at_the_offset_is_seen(self) -> None:
        """The recorded offset with the same value: not dead-lettered a second time."""
        restore = Restore(DedupeStore(WINDOW_S), part=0, now=T0)
        restore.apply([dedupelog.dead_record(10, T0, b"\x02\xff bad bytes")])
        assert dedupelog.dead_letter_seen(restore.dead, 10, b"\x02\xff bad bytes")

    @pytest.mark.parametrize(("offset", "value"), [(10, b"another message"), (11, b"\x02\xff bad bytes"),
                                                   (10, None)])
    def test_another_message_or_offset_is_not_seen(self, offset: int, value: bytes | None) -> None:
        """Another value at the offset (a topic created again) or another offset is processed, not skipped."""
        restore = Restore(DedupeStore(WINDOW_S), part=0, now=T0)
        restore.apply([dedupelog.dead_record(10, T0, b"\x02\xff bad bytes")])
        assert not dedupelog.dead_letter_seen(restore.dead, offset, value)

    def test_an_entry_without_fingerprint_is_never_seen(self) -> None:
        """Without a fingerprint the message cannot be recognised, so it is dead-lettered again rather than dropped."""
        assert not dedupelog.dead_letter_seen({10: (T0, None)}, 10, b"")
