"""The windowed dedupe store: states, window, eviction, the key function, and a reference model."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream.pipeline.dedupe
from stream.benchmarks.dedupe import parse_sizes
from stream.cli import main
from stream.contract import meta
from stream.pipeline.dedupe import DedupeStore, NotPendingError, Verdict, dedupe_key

WINDOW_S = float(meta.DEDUPE_WINDOW_S)
BUCKET_S = WINDOW_S / stream.pipeline.dedupe.DEFAULT_BUCKETS  # one hour
T0 = 1_800_000_000.0  # a bucket boundary: 1.8e9 is a multiple of 3600


@pytest.fixture
def store_factory() -> Callable[..., DedupeStore]:
    """Stores with the defaults unless told otherwise."""

    def make(**kwargs: Any) -> DedupeStore:
        return DedupeStore(**kwargs)

    return make


def sent(store: DedupeStore, key: int, now: float) -> None:
    """Accept `key` at `now` and confirm it at once."""
    assert store.check(key, now) is Verdict.NEW
    store.confirm(key, now)


class TestStates:
    """unknown -> PENDING -> SENT, and PENDING -> unknown on release."""

    def test_first_check_is_new_and_reserves_the_key(self, store_factory: Callable[..., DedupeStore]) -> None:
        """The first check of a key says NEW and leaves it PENDING, not yet SENT."""
        store = store_factory()
        assert store.check(1, T0) is Verdict.NEW
        assert store.pending == 1
        assert len(store) == 0

    def test_duplicate_while_pending_is_pending_not_new(self, store_factory: Callable[..., DedupeStore]) -> None:
        """Copies arriving while the first is in flight are PENDING every time, never a second NEW."""
        store = store_factory()
        store.check(1, T0)
        assert store.check(1, T0 + 1) is Verdict.PENDING
        assert store.check(1, T0 + 2) is Verdict.PENDING
        assert store.pending == 1

    def test_confirm_makes_the_key_sent(self, store_factory: Callable[..., DedupeStore]) -> None:
        """After confirm the key is SENT, counted in len() and no longer pending."""
        store = store_factory()
        sent(store, 1, T0)
        assert store.check(1, T0 + 5) is Verdict.SENT
        assert (len(store), store.pending) == (1, 0)

    def test_release_makes_a_later_copy_new_again(self, store_factory: Callable[..., DedupeStore]) -> None:
        """A released key (send abandoned or dead-lettered) is forgotten, so the next copy is sent."""
        store = store_factory()
        store.check(1, T0)
        store.release(1)
        assert (len(store), store.pending) == (0, 0)
        assert store.check(1, T0 + 1) is Verdict.NEW

    def test_keys_are_independent(self, store_factory: Callable[..., DedupeStore]) -> None:
        """Confirming or releasing one key leaves every other key's state as it was."""
        store = store_factory()
        store.check(1, T0)
        store.check(2, T0)
        store.check(3, T0)
        store.confirm(1, T0)
        store.release(2)
        assert [store.check(k, T0) for k in (1, 2, 3)] == [Verdict.SENT, Verdict.NEW, Verdict.PENDING]

    @pytest.mark.parametrize("operation", ["confirm", "release"])
    @pytest.mark.parametrize("state", ["unknown", "sent", "released"])
    def test_confirm_or_release_of_a_key_not_pending_raises(
        self, store_factory: Callable[..., DedupeStore], operation: str, state: str
    ) -> None:
        """confirm/release of an unknown, SENT or already released key raise NotPendingError and change nothing."""
        store = store_factory()
        if state == "sent":
            sent(store, 1, T0)
        elif state == "released":
            store.check(1, T0)
            store.release(1)
        before = (len(store), store.pending)
        call = (lambda: store.confirm(1, T0)) if operation == "confirm" else (lambda: store.release(1))
        with pytest.raises(NotPendingError) as caught:
            call()
        assert caught.value.reason == "not_pending"
        assert (len(store), store.pending) == before


class TestWindow:
    """A SENT key is remembered for at least window_s and forgotten within window_s + one bucket."""

    @pytest.mark.parametrize("offset", [0.0, BUCKET_S / 2, BUCKET_S - 0.001], ids=["start", "middle", "end"])
    def test_copy_just_inside_the_window_is_sent(
        self, store_factory: Callable[..., DedupeStore], offset: float
    ) -> None:
        """Wherever in its bucket the first copy fell, a copy window_s minus a millisecond later is SENT."""
        store = store_factory()
        sent(store, 1, T0 + offset)
        assert store.check(1, T0 + offset + WINDOW_S - 0.001) is Verdict.SENT
        assert store.expired == 0

    @pytest.mark.parametrize("offset", [0.0, BUCKET_S / 2, BUCKET_S - 0.001], ids=["start", "middle", "end"])
    def test_copy_a_bucket_past_the_window_is_new(
        self, store_factory: Callable[..., DedupeStore], offset: float
    ) -> None:
        """Wherever in its bucket the first copy fell, a copy window_s + one bucket later is NEW and counted expired."""
        store = store_factory()
        sent(store, 1, T0 + offset)
        assert store.check(1, T0 + offset + WINDOW_S + BUCKET_S) is Verdict.NEW
        assert (store.expired, len(store)) == (1, 0)

    @pytest.mark.parametrize(
        ("later", "verdict"),
        [(BUCKET_S + WINDOW_S - 0.001, Verdict.SENT), (BUCKET_S + WINDOW_S, Verdict.NEW)],
        ids=["before-bucket-end", "at-bucket-end"],
    )
    def test_key_expires_exactly_when_its_bucket_leaves_the_window(
        self, store_factory: Callable[..., DedupeStore], later: float, verdict: Verdict
    ) -> None:
        """The documented bound: a key from bucket b is forgotten at (b + 1) * bucket_s + window_s, not before."""
        store = store_factory()
        sent(store, 1, T0 + 10)
        assert store.check(1, T0 + later) is verdict

    def test_window_runs_from_the_first_accept_not_from_confirm_or_copies(
        self, store_factory: Callable[..., DedupeStore]
    ) -> None:
        """A slow confirm and copies seen in between do not extend the window past the first accept."""
        store = store_factory()
        store.check(1, T0)
        store.confirm(1, T0 + WINDOW_S / 2)
        assert store.check(1, T0 + WINDOW_S - 1) is Verdict.SENT
        assert store.check(1, T0 + WINDOW_S + BUCKET_S) is Verdict.NEW

    def test_confirm_after_the_window_forgets_the_key_at_once(self, store_factory: Callable[..., DedupeStore]) -> None:
        """A key confirmed after its whole window has passed is counted expired and not held."""
        store = store_factory()
        store.check(1, T0)
        store.confirm(1, T0 + WINDOW_S + BUCKET_S)
        assert (len(store), store.pending, store.expired) == (0, 0, 1)
        assert store.check(1, T0 + WINDOW_S + BUCKET_S) is Verdict.NEW

    def test_pending_keys_do_not_expire(self, store_factory: Callable[..., DedupeStore]) -> None:
        """A key in flight stays PENDING however long its send takes; only SENT keys expire."""
        store = store_factory()
        store.check(1, T0)
        assert store.check(1, T0 + 10 * WINDOW_S) is Verdict.PENDING

    def test_a_jump_of_days_expires_every_key(self, store_factory: Callable[..., DedupeStore]) -> None:
        """After a clock jump far past the window every SENT key is forgotten and counted expired."""
        store = store_factory()
        for key in range(100):
            sent(store, key, T0 + key * 1000)
        store.check(10**6, T0 + 30 * WINDOW_S)
        assert (len(store), store.expired) == (0, 100)
        assert store.check(5, T0 + 30 * WINDOW_S) is Verdict.NEW

    def test_a_clock_going_back_expires_nothing(self, store_factory: Callable[..., DedupeStore]) -> None:
        """A `now` older than one already seen neither expires keys nor forgets the newer time."""
        store = store_factory()
        sent(store, 1, T0)
        sent(store, 2, T0 + WINDOW_S)
        assert store.check(1, T0 + 1) is Verdict.SENT
        assert store.check(2, T0 + 1) is Verdict.SENT
        assert store.check(1, T0 + WINDOW_S + BUCKET_S) is Verdict.NEW

    @pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
    def test_a_now_that_is_not_finite_raises(self, store_factory: Callable[..., DedupeStore], now: float) -> None:
        """check() refuses NaN and infinite times with ValueError instead of corrupting the window."""
        store = store_factory()
        store.check(1, T0)
        with pytest.raises(ValueError, match="finite"):
            store.check(2, now)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"window_s": 0}, "window_s"),
            ({"window_s": math.nan}, "window_s"),
            ({"max_keys": 0}, "max_keys"),
            ({"buckets": 0}, "buckets"),
            ({"buckets": stream.pipeline.dedupe.MAX_BUCKETS + 1}, "buckets"),
        ],
    )
    def test_bad_settings_raise_value_error_naming_them(
        self, store_factory: Callable[..., DedupeStore], kwargs: dict[str, float], message: str
    ) -> None:
        """A non-positive window, an empty capacity or a bucket count outside 1..MAX_BUCKETS is refused."""
        with pytest.raises(ValueError, match=message):
            store_factory(**kwargs)


class TestEviction:
    """At most max_keys SENT keys; the oldest go first and are counted."""

    def test_full_store_evicts_the_oldest_key_and_counts_it(self, store_factory: Callable[..., DedupeStore]) -> None:
        """Confirming a fourth key into a store of three evicts the first one, and only it."""
        store = store_factory(max_keys=3)
        for i, key in enumerate((1, 2, 3, 4)):
            sent(store, key, T0 + i * BUCKET_S)
        assert (len(store), store.evictions, store.expired) == (3, 1, 0)
        assert [store.check(k, T0 + 4 * BUCKET_S) for k in (2, 3, 4, 1)] == [Verdict.SENT] * 3 + [Verdict.NEW]

    def test_oldest_means_first_accepted_not_first_confirmed(self, store_factory: Callable[..., DedupeStore]) -> None:
        """A key accepted earlier but confirmed last is still the oldest, so it is evicted first."""
        store = store_factory(max_keys=2)
        store.check(1, T0)
        sent(store, 2, T0 + 2 * BUCKET_S)
        store.confirm(1, T0 + 2 * BUCKET_S)
        sent(store, 3, T0 + 3 * BUCKET_S)
        now = T0 + 3 * BUCKET_S
        assert [store.check(k, now) for k in (1, 2, 3)] == [Verdict.NEW, Verdict.SENT, Verdict.SENT]

    def test_within_a_bucket_keys_leave_in_confirm_order(self, store_factory: Callable[..., DedupeStore]) -> None:
        """Under sustained pressure in one bucket the store keeps exactly the last max_keys keys confirmed."""
        store = store_factory(max_keys=100)
        for key in range(5000):
            sent(store, key, T0 + key * 0.01)
        now = T0 + 60
        assert (len(store), store.evictions) == (100, 4900)
        assert all(store.check(key, now) is Verdict.SENT for key in range(4900, 5000))
        assert all(store.check(key, now) is Verdict.NEW for key in range(4800, 4900))

    def test_evicted_keys_are_not_counted_again_when_their_bucket_expires(
        self, store_factory: Callable[..., DedupeStore]
    ) -> None:
        """Each key leaves once: as an eviction or as an expiry, never as both."""
        store = store_factory(max_keys=100)
        for key in range(150):
            sent(store, key, T0)
        store.check(10**6, T0 + WINDOW_S + BUCKET_S)
        assert (store.evictions, store.expired, len(store)) == (50, 100, 0)

    def test_pending_keys_are_not_counted_against_max_keys(self, store_factory: Callable[..., DedupeStore]) -> None:
        """Reservations never evict SENT keys; only confirms do."""
        store = store_factory(max_keys=1)
        sent(store, 1, T0)
        for key in range(2, 10):
            store.check(key, T0)
        assert (len(store), store.pending, store.evictions) == (1, 8, 0)


class TestMemory:
    """Memory stays proportional to the keys held, also while they churn."""

    def test_churn_stays_within_the_memory_target(self) -> None:
        """After three windows of keys expiring as new ones arrive, a held key still costs <= 100 traced bytes."""
        held = 10_000  # keys arriving per window
        store = DedupeStore(MODEL_WINDOW_S, max_keys=10 * held, buckets=MODEL_BUCKETS)
        step = MODEL_WINDOW_S / held
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(3 * held):
                sent(store, 2**40 + n * 7919, T0 + n * step)  # 2**40 and up: two-digit ints like real keys
            bytes_per_key = (tracemalloc.get_traced_memory()[0] - before) / len(store)
        finally:
            tracemalloc.stop()
        assert store.expired > held  # the keys did churn
        assert bytes_per_key <= 100


class TestKey:
    """dedupe_key: a deterministic, compact 60-bit key of (dataset, event_name, event_id)."""

    def test_key_is_the_documented_hash(self) -> None:
        """The key is the top 60 bits of BLAKE2b-64 over the length-prefixed dataset and name, then the id."""
        data = b"\x00\x00\x00\x03111" + b"\x00\x00\x00\x08Purchase" + b"order-1"
        digest = hashlib.blake2b(data, digest_size=8).digest()
        assert dedupe_key("111", "Purchase", "order-1") == int.from_bytes(digest, "big") >> 4

    def test_key_is_deterministic(self) -> None:
        """The same triple gives the same key in processes with other hash seeds (no hash randomisation)."""
        here = dedupe_key("111", "Purchase", "order-1")
        code = "from stream.pipeline.dedupe import dedupe_key; print(dedupe_key('111', 'Purchase', 'order-1'))"
        for seed in ("1", "2"):
            env = {**os.environ, "PYTHONHASHSEED": seed}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            assert int(out.stdout) == here, f"PYTHONHASHSEED={seed}"

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            (("1", "ab", "c"), ("1", "a", "bc")),
            (("1", "a\x00", "b"), ("1", "a", "\x00b")),
            (("1", "Purchase", "1"), ("1", "Purchase", "2")),
            (("1", "Purchase", "1"), ("1", "AddToCart", "1")),
            (("1", "", "x"), ("1", "x", "")),
            (("111", "Purchase", "1"), ("222", "Purchase", "1")),
            (("11", "1Purchase", "1"), ("111", "Purchase", "1")),
            (("", "1", "x"), ("1", "", "x")),
        ],
    )
    def test_different_triples_get_different_keys(self, first: tuple[str, str, str],
                                                  second: tuple[str, str, str]) -> None:
        """Triples whose concatenations look alike, or that differ only in the dataset, get different keys."""
        assert dedupe_key(*first) != dedupe_key(*second)

    @given(st.lists(st.tuples(st.sampled_from(["111", "222", "", "\ud800"]), st.text(max_size=12),
                              st.text(max_size=40)), max_size=30))
    def test_key_is_the_documented_hash_for_any_triple(self, triples: list[tuple[str, str, str]]) -> None:
        """Over any triples (datasets and names repeating, as in a stream; lone surrogates too), the key is the
        hash of the length-prefixed dataset and name, then the id, computed afresh for each."""
        for dataset_id, event_name, event_id in [*triples, *triples]:
            parts = [v.encode("utf-8", "surrogatepass") for v in (dataset_id, event_name, event_id)]
            data = len(parts[0]).to_bytes(4, "big") + parts[0] + len(parts[1]).to_bytes(4, "big") + parts[1] + parts[2]
            digest = hashlib.blake2b(data, digest_size=8).digest()
            assert dedupe_key(dataset_id, event_name, event_id) == int.from_bytes(digest, "big") >> 4

    @given(st.text(), st.text(), st.text())
    def test_key_fits_60_bits(self, dataset_id: str, event_name: str, event_id: str) -> None:
        """Every key is a non-negative int below 2**60, including for lone surrogates."""
        assert 0 <= dedupe_key(dataset_id, event_name, event_id) < 2**stream.pipeline.dedupe.KEY_BITS




class ReferenceModel:
    """The contract in plain dicts: per-key accept times, forgotten by the documented bucket rule."""

    def __init__(self, window_s: float, buckets: int) -> None:
        self.buckets = buckets
        self.bucket_s = window_s / buckets
        self.sent: dict[int, float] = {}
        self.pending: dict[int, float] = {}
        self.newest: int | None = None
        self.expired = 0

    def _bucket(self, t: float) -> int:
        return int(t // self.bucket_s)

    def _over(self, accepted: float) -> bool:
        assert self.newest is not None
        return self._bucket(accepted) + self.buckets + 1 <= self.newest

    def _tick(self, now: float) -> None:
        bucket = self._bucket(now)
        self.newest = bucket if self.newest is None else max(self.newest, bucket)
        for key in [k for k, t in self.sent.items() if self._over(t)]:
            del self.sent[key]
            self.expired += 1

    def check(self, key: int, now: float) -> Verdict:
        self._tick(now)
        if key in self.sent:
            return Verdict.SENT
        if key in self.pending:
            return Verdict.PENDING
        self.pending[key] = now
        return Verdict.NEW

    def confirm(self, key: int, now: float) -> None:
        if key not in self.pending:
            raise NotPendingError("model")
        self._tick(now)
        accepted = self.pending.pop(key)
        if self._over(accepted):
            self.expired += 1
        else:
            self.sent[key] = accepted

    def release(self, key: int) -> None:
        if self.pending.pop(key, None) is None:
            raise NotPendingError("model")


MODEL_WINDOW_S = 100.0
MODEL_BUCKETS = 4  # 25 s buckets: sequences cross bucket and window edges often
STEPS = st.one_of(
    st.sampled_from([0.0, 1.0, 24.999, 25.0, 75.0, 100.0, 124.999, 125.0, 400.0, -30.0]),
    st.floats(min_value=-30.0, max_value=150.0, allow_nan=False),
)
OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["check", "check", "confirm", "release"]), st.integers(0, 7), STEPS),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(start=st.floats(min_value=-1e6, max_value=2e9, allow_nan=False), operations=OPERATIONS)
def test_store_agrees_with_reference_model(start: float, operations: list[tuple[str, int, float]]) -> None:
    """Over random check/confirm/release sequences with a wandering clock, verdicts, errors and counters match."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream.pipeline.dedupe, "REBUILD_MIN_DELETED", 1)  # rebuild the dict often, as at scale
        _run_against_model(start, operations)


def _run_against_model(start: float, operations: list[tuple[str, int, float]]) -> None:
    store = DedupeStore(MODEL_WINDOW_S, max_keys=1000, buckets=MODEL_BUCKETS)
    model = ReferenceModel(MODEL_WINDOW_S, MODEL_BUCKETS)
    now = start
    for name, key, step in operations:
        now += step
        if name == "check":
            assert store.check(key, now) is model.check(key, now)
        else:
            args = (key, now) if name == "confirm" else (key,)
            try:
                getattr(model, name)(*args)
            except NotPendingError:
                with pytest.raises(NotPendingError):
                    getattr(store, name)(*args)
            else:
                getattr(store, name)(*args)
        assert (len(store), store.pending, store.expired, store.evictions) == (
            len(model.sent), len(model.pending), model.expired, 0,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "sizes"),
    [("1000000", [1_000_000]), ("1000000,10_000_000", [1_000_000, 10_000_000]), (" 20000 , 30000 ", [20_000, 30_000])],
)
def test_bench_takes_a_list_of_sizes(text: str, sizes: list[int]) -> None:
    """`bench dedupe --keys` takes comma-separated integers, underscores allowed."""
    assert parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "1M", "1000000,", "-5", "100"])
def test_bench_refuses_bad_sizes_with_exit_2(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A size that is not an integer of at least one chunk is a usage error: exit 2 and a message naming --keys."""
    assert main(["bench", "dedupe", "--keys", text]) == 2
    assert "--keys" in capsys.readouterr().err
