"""What the emulator has seen: accepted events, Meta-style dedupe and the statistics (pure).

The current time is passed in. An accepted event is keyed by (dataset, event_name, event_id); each key
keeps how many times it was accepted and when its 48-hour dedupe window started [1.4]. An event whose
key was accepted within that window counts as a duplicate (Meta keeps only the first); it is still
"received", as Meta's `events_received` counts it. Events without an event_id cannot be deduplicated.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any, Final

from stream.emulator.facts import DEDUPE_WINDOW_S

# How many accepted event bodies `GET /_emulator/events` can show; enough for a page and a test.
DEFAULT_KEEP_EVENTS: Final = 1000


@dataclass(frozen=True, slots=True)
class Accepted:
    """One accepted event body, with its dataset and when it arrived (Unix seconds)."""

    dataset_id: str
    received_at: float
    event: dict[str, Any]
    test_event_code: str | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `GET /_emulator/events` answers."""
        return {"dataset_id": self.dataset_id, "received_at": self.received_at,
                "test_event_code": self.test_event_code, "event": self.event}  # fmt: skip


class Ledger:
    """Counts requests, errors, faults and accepted events; dedupes (event_name, event_id) per dataset."""

    def __init__(
        self,
        keep_events: int = DEFAULT_KEEP_EVENTS,
        dedupe_window_s: float = DEDUPE_WINDOW_S,
        decode: Callable[[Any], Sequence[dict[str, Any]]] | None = None,
    ) -> None:
        """`decode` turns the `raw` form of an accepted request back into its events (see `accept`)."""
        if keep_events < 0:
            raise ValueError("keep_events must be >= 0")
        self._keep = keep_events
        self._window = dedupe_window_s
        self._decode = decode
        self.reset()

    def reset(self) -> None:
        """Forget every event and count (faults and tokens live elsewhere and stay)."""
        # (dataset, event_name) -> {event_id: start of its dedupe window} for every accepted key, and
        # {event_id: times accepted} for the keys accepted more than once (a new key costs one insert).
        # The inner dicts hold only strings and numbers, so the garbage collector never tracks them:
        # with millions of keys, a tracked ledger would be rescanned by every full collection.
        self._starts: dict[tuple[str, str], dict[str | None, float]] = {}
        self._repeats: dict[tuple[str, str], dict[str | None, int]] = {}
        # (dataset, received_at, events or their raw form, is it raw, how many events, test_event_code)
        self._recent: deque[tuple[str, float, Any, bool, int, str | None]] = deque()
        self._recent_events = 0
        self.requests = 0
        # reads of a dataset (GET /{version}/{dataset_id}: capi-stream's probe), apart from event requests
        self.reads = 0
        self.accepted_requests = 0
        self.events_received = 0
        self.duplicates = 0
        self.errors: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.events_by_dataset: Counter[str] = Counter()
        # Events sent with a test_event_code, counted apart as Meta's Test Events tab shows them: they
        # are never real events (no dedupe window, not in events_received or `received()`).
        self._test_events: Counter[tuple[str, str, str | None]] = Counter()
        self.test_events_received = 0
        self.test_events_by_dataset: Counter[str] = Counter()

    def count_request(self) -> None:
        """One request arrived at the events endpoint."""
        self.requests += 1

    def count_read(self) -> None:
        """One read of a dataset arrived (it carries no event)."""
        self.reads += 1

    def count_error(self, key: str) -> None:
        """The request was answered with the Meta error `key` ("code/subcode")."""
        self.errors[key] += 1

    def count_fault(self, kind: str) -> None:
        """A fault of `kind` was injected into a request."""
        self.faults[kind] += 1

    def accept(
        self,
        dataset_id: str,
        events: Sequence[dict[str, Any]],
        now: float,
        test_event_code: str | None = None,
        raw: object = None,
    ) -> int:
        """Record a request whose events Meta would accept; return how many of them are duplicates.

        With `raw` (the request's body as bytes or str) and a `decode`, the recent events are kept in
        that form and decoded when asked for: one object the garbage collector never scans instead
        of a tree of ~35 containers per event that it would scan again and again.
        """
        names = [event["event_name"] for event in events]
        ids = [i if i is None or type(i) is str else str(i) for i in (event.get("event_id") for event in events)]
        is_raw = raw is not None and self._decode is not None
        return self._record(dataset_id, names, ids, now, test_event_code, raw if is_raw else events, is_raw)

    def accept_keys(
        self,
        dataset_id: str,
        names: Sequence[str],
        ids: Sequence[str | None],
        now: float,
        test_event_code: str | None,
        raw: bytes | str,
    ) -> int:
        """`accept` for a request known by its events' names and ids (str or None) and its `raw` form.

        Raises ValueError when the ledger has no `decode` to read `raw` back.
        """
        if self._decode is None:
            raise ValueError("accept_keys needs a Ledger with a decode function")
        return self._record(dataset_id, names, ids, now, test_event_code, raw, True)

    def _record(
        self,
        dataset_id: str,
        names: Sequence[str],
        ids: Sequence[str | None],
        now: float,
        test_event_code: str | None,
        kept: Any,
        is_raw: bool,
    ) -> int:
        if len(names) != len(ids):
            raise ValueError("names and ids differ in length")
        if test_event_code:
            return self._record_test(dataset_id, names, ids, now, test_event_code, kept, is_raw)
        ids = _fresh_copies(ids)
        distinct = dict.fromkeys(names)  # in order of first appearance, as `received` lists them
        duplicates = 0
        for name in distinct:
            # the ids of one event name, in order (a pass in C per name; requests hold few names)
            group_ids = ids if len(distinct) == 1 else list(compress(ids, map(name.__eq__, names)))
            key = (dataset_id, name)
            starts = self._starts.setdefault(key, {})
            first = dict.fromkeys(group_ids, now)
            if len(first) == len(group_ids) and starts.keys().isdisjoint(first):
                starts.update(first)  # the usual case, distinct ids never seen before: one update in C
            else:
                duplicates += self._count_each(starts, self._repeats.setdefault(key, {}), group_ids, now)
        count = len(names)
        self.accepted_requests += 1
        self.events_received += count
        self.duplicates += duplicates
        self.events_by_dataset[dataset_id] += count
        if self._keep:
            # Whole requests are kept and trimmed to about `keep` events; bodies are built on read.
            self._recent.append((dataset_id, now, kept, is_raw, count, test_event_code))
            self._recent_events += count
            while self._recent_events - self._recent[0][4] >= self._keep:
                self._recent_events -= self._recent.popleft()[4]
        return duplicates

    def _record_test(
        self,
        dataset_id: str,
        names: Sequence[str],
        ids: Sequence[str | None],
        now: float,
        test_event_code: str,
        kept: Any,
        is_raw: bool,
    ) -> int:
        """Count a test request apart from the real events; it is kept among the recent ones, marked."""
        count = len(names)
        self.accepted_requests += 1
        self.test_events_received += count
        self.test_events_by_dataset[dataset_id] += count
        self._test_events.update((dataset_id, name, event_id) for name, event_id in zip(names, ids, strict=True))
        if self._keep:
            self._recent.append((dataset_id, now, kept, is_raw, count, test_event_code))
            self._recent_events += count
            while self._recent_events - self._recent[0][4] >= self._keep:
                self._recent_events -= self._recent.popleft()[4]
        return 0

    def _count_each(
        self,
        starts: dict[str | None, float],
        repeats: dict[str | None, int],
        ids: Sequence[str | None],
        now: float,
    ) -> int:
        """Count `ids` one by one (some were seen before, or repeat); return how many are duplicates."""
        duplicates = 0
        window = self._window
        for event_id in ids:
            start = starts.get(event_id)
            if start is None:
                starts[event_id] = now
                continue
            repeats[event_id] = repeats.get(event_id, 1) + 1
            if event_id is not None and now - start < window:
                duplicates += 1
            else:
                starts[event_id] = now
        return duplicates

    def received(self, dataset_id: str | None = None, test: bool = False) -> list[dict[str, Any]]:
        """Every accepted (dataset, event_name, event_id) with how many times it was accepted.

        Real events only; `test=True` lists the events sent with a test_event_code instead.
        """
        if test:
            return [{"dataset_id": d, "event_name": name, "event_id": event_id, "count": n}
                    for (d, name, event_id), n in self._test_events.items() if dataset_id in (None, d)]
        out = []
        for key, starts in self._starts.items():
            if dataset_id is not None and key[0] != dataset_id:
                continue
            repeats = self._repeats.get(key, {})
            out += [{"dataset_id": key[0], "event_name": key[1], "event_id": event_id,
                     "count": repeats.get(event_id, 1)} for event_id in starts]  # fmt: skip
        return out

    def recent(self, limit: int) -> list[Accepted]:
        """The `limit` (at most keep_events) most recently accepted events, newest first."""
        limit = min(limit, self._keep)
        out: list[Accepted] = []
        for dataset_id, received_at, kept, is_raw, _, test_event_code in reversed(self._recent):
            events = self._decode(kept) if is_raw and self._decode is not None else kept
            for event in reversed(events):
                if len(out) >= limit:
                    return out
                out.append(Accepted(dataset_id, received_at, event, test_event_code))
        return out

    def stats(self) -> dict[str, Any]:
        """The counts `GET /_emulator/stats` answers."""
        return {
            "requests": self.requests,
            "accepted_requests": self.accepted_requests,
            "reads": self.reads,
            "events_received": self.events_received,
            "distinct_keys": sum(map(len, self._starts.values())),
            "duplicates": self.duplicates,
            "errors": dict(sorted(self.errors.items())),
            "faults": dict(sorted(self.faults.items())),
            "events_by_dataset": dict(sorted(self.events_by_dataset.items())),
            "test_events_received": self.test_events_received,
            "test_events_by_dataset": dict(sorted(self.test_events_by_dataset.items())),
        }


def _fresh_copies(ids: Sequence[str | None]) -> Sequence[str | None]:
    """New str objects equal to `ids` (two C calls), or `ids` when one is None or holds a NUL.

    The ids come from the request's parsed body, scattered among thousands of short-lived objects;
    kept as dedupe keys, they pin the allocator's pools that the next request's parse would otherwise
    reuse whole, and requests get slower as the ledger grows. Copies made here, after the parse, sit
    together instead: 25-40% more events per CPU second once 100,000 keys are kept (`bench emulator`
    rounds with and without the copies, alternated in one process).
    """
    try:
        joined = "\x00".join(ids)  # type: ignore[arg-type]  # a None raises TypeError: keep the ids
    except TypeError:
        return ids
    copies = joined.split("\x00")
    return copies if len(copies) == len(ids) else ids
