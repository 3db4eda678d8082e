"""Signal quality per destination and event name (pure).

Meta gives app advertisers no Event Match Quality score, so capi-stream counts what matters for
matching itself: the share of events carrying each match key, the share with at least one identifier,
value and currency on revenue events, the validation rate, the dedupe rate, user consistency (does an
external_id always come with the same em and ph, consistency.py) and the share of events Meta
acknowledged within the latency threshold (5 s) of their Kafka append time. Only counts: never a value.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from stream.config import QualitySettings
from stream.contract import meta
from stream.pipeline.consistency import ConsistencyTracker, Identity, Outcome

# The match keys the report shows, in Meta's order of importance for app events
MATCH_KEYS = ("em", "ph", "external_id", "madid", "anon_id", "client_ip_address", "client_user_agent", "fbc", "fbp")
# Events that carry money: value and currency are expected on every one
REVENUE_EVENTS = frozenset({"Purchase", "Subscribe"})
# Meta's dedupe horizon, the window consistency is judged over unless the runner says otherwise
DEFAULT_WINDOW_S = float(meta.DEDUPE_WINDOW_S)

Key = tuple[str, str]  # destination, event_name


def match_keys(user_data: Mapping[str, Any]) -> tuple[str, ...]:
    """The MATCH_KEYS `user_data` carries, in MATCH_KEYS order."""
    return _keys_of(tuple(user_data))


@functools.lru_cache(maxsize=1024)
def _keys_of(fields: tuple[str, ...]) -> tuple[str, ...]:
    # per set of user_data fields (a stream has a few dozen): one tuple() and a cache hit per event
    # instead of nine membership tests
    return tuple(k for k in MATCH_KEYS if k in fields)



class Signed(Protocol):
    """A valid event's signature as `count_many` reads it (stream.pipeline.prepare.Prepared has it)."""

    @property
    def destination(self) -> str: ...
    @property
    def event_name(self) -> str: ...
    @property
    def keys(self) -> tuple[str, ...]: ...
    @property
    def revenue(self) -> bool: ...
    @property
    def has_value(self) -> bool: ...

# (destination, event_name, keys, revenue, has_value) of a Signed: what `count` needs of it
_signature = operator.attrgetter("destination", "event_name", "keys", "revenue", "has_value")

# The figures the report holds the shares to: the config's [quality] table, its one source of truth (the
# defaults there are the report's, the demo's and the alert rules' defaults).
Targets = QualitySettings


@dataclasses.dataclass
class Quality:
    """Counters behind the signal-quality report."""

    events: Counter[Key] = dataclasses.field(default_factory=Counter)
    with_key: Counter[tuple[str, str, str]] = dataclasses.field(default_factory=Counter)
    with_identifier: Counter[Key] = dataclasses.field(default_factory=Counter)
    revenue: Counter[Key] = dataclasses.field(default_factory=Counter)
    revenue_with_value: Counter[Key] = dataclasses.field(default_factory=Counter)
    rejected: Counter[Key] = dataclasses.field(default_factory=Counter)
    duplicates: Counter[Key] = dataclasses.field(default_factory=Counter)
    # valid events Meta refused on their own (dead-lettered as meta_rejected)
    meta_rejected: Counter[Key] = dataclasses.field(default_factory=Counter)
    # user consistency: events whose external_id was already remembered, and those with another em/ph
    identity_checked: Counter[Key] = dataclasses.field(default_factory=Counter)
    identity_inconsistent: Counter[Key] = dataclasses.field(default_factory=Counter)
    # per destination: external_ids first seen (within the window), and those seen inconsistent
    ids: Counter[str] = dataclasses.field(default_factory=Counter)
    ids_inconsistent: Counter[str] = dataclasses.field(default_factory=Counter)
    # latency: events acknowledged, and those acknowledged within the threshold of their append time
    acked: Counter[Key] = dataclasses.field(default_factory=Counter)
    acked_on_time: Counter[Key] = dataclasses.field(default_factory=Counter)
    # per destination: consistency trackers; their evictions (counts read from metrics by the command)
    trackers: dict[str, ConsistencyTracker] = dataclasses.field(default_factory=dict)
    evictions: Counter[str] = dataclasses.field(default_factory=Counter)
    window_s: float = DEFAULT_WINDOW_S
    max_ids: int = QualitySettings.consistency_max_ids
    targets: Targets = dataclasses.field(default_factory=Targets)

    def valid(self, destination: str, event: Mapping[str, Any]) -> None:
        """Count a valid event (before dedupe, so duplicates count too) and the match keys it carries."""
        user_data = event.get("user_data") or {}
        custom = event.get("custom_data") or {}
        revenue = event["event_name"] in REVENUE_EVENTS
        self.count(destination, event["event_name"], match_keys(user_data), revenue,
                   revenue and custom.get("value") is not None and bool(custom.get("currency")))

    def count(self, destination: str, event_name: str, keys: tuple[str, ...], revenue: bool, has_value: bool,
              n: int = 1) -> None:
        """Count `n` valid events of one signature: the match keys present and its value on revenue events."""
        key = (destination, event_name)
        self.events[key] += n
        for name in keys:
            self.with_key[(destination, event_name, name)] += n
        if keys:
            self.with_identifier[key] += n
        if revenue:
            self.revenue[key] += n
            if has_value:
                self.revenue_with_value[key] += n

    def count_many(self, sent: Iterable[Signed]) -> None:
        """`count` for every valid event of a consumed batch.

        One signature tuple per event, counted in C; each distinct signature (a batch has a few dozen)
        then adds its count to the counters, instead of a tuple per event and counter.
        """
        count = self.count
        for (destination, event_name, keys, revenue, has_value), n in Counter(map(_signature, sent)).items():
            count(destination, event_name, keys, revenue, has_value, n)

    def invalid(self, destination: str, event_name: str) -> None:
        """Count an event rejected by validation (not for missing consent: that is the person's choice)."""
        self.rejected[(destination, event_name)] += 1

    def duplicate(self, destination: str, event_name: str) -> None:
        """Count a duplicate that was not sent again."""
        self.duplicates[(destination, event_name)] += 1

    def refused_by_meta(self, destination: str, event_name: str) -> None:
        """Count a valid event that Meta refused on its own (it lowers the acceptance rate)."""
        self.meta_rejected[(destination, event_name)] += 1

    def identity(self, destination: str, event_name: str, ident: Identity, now: float) -> Outcome:
        """Check a valid event's external_id against the em and ph remembered for it; count the outcome."""
        tracker = self.trackers.get(destination)
        if tracker is None:
            tracker = self.trackers[destination] = ConsistencyTracker(self.window_s, self.max_ids)
        outcome = tracker.observe(ident, now)
        if outcome is Outcome.NEW:
            self.ids[destination] += 1
        elif outcome is not Outcome.UNCHECKED:
            key = (destination, event_name)
            self.identity_checked[key] += 1
            if outcome >= Outcome.INCONSISTENT:
                self.identity_inconsistent[key] += 1
                if outcome is Outcome.FIRST_INCONSISTENT:
                    self.ids_inconsistent[destination] += 1
        return outcome

    def identities(self, events: Iterable[tuple[str, str, Identity]], now: float) -> None:
        """`identity` for each (destination, event_name, identity) of a consumed batch, in order."""
        identity = self.identity
        for destination, event_name, ident in events:
            identity(destination, event_name, ident, now)

    def acknowledged(self, destination: str, event_name: str, seconds_since_append: float) -> None:
        """Count an event Meta acknowledged, and whether it was within the latency threshold."""
        key = (destination, event_name)
        self.acked[key] += 1
        if seconds_since_append <= self.targets.latency_threshold_s:
            self.acked_on_time[key] += 1

    def acknowledged_batch(self, destination: str, event_names: list[str], seconds_since_append: list[float]) -> None:
        """`acknowledged` for every event of one acknowledged batch (one destination): the names counted in
        C, then each distinct name's count added (a batch has a few names)."""
        if len(event_names) != len(seconds_since_append):
            raise ValueError("one latency per event name")
        acked, on_time = self.acked, self.acked_on_time
        for name, n in Counter(event_names).items():
            acked[(destination, name)] += n
        threshold = self.targets.latency_threshold_s
        for name, n in Counter(itertools.compress(event_names, [s <= threshold for s in seconds_since_append])).items():
            on_time[(destination, name)] += n

    def tracker_evictions(self, destination: str) -> int:
        """external_ids the destination's tracker forgot because it was full."""
        tracker = self.trackers.get(destination)
        return tracker.evictions if tracker is not None else self.evictions[destination]


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the report."""

    destination: str
    event_name: str
    events: int
    key_share: dict[str, float]
    identifier_share: float
    revenue_share: float | None
    validation_rate: float
    dedupe_rate: float
    # events of already-seen external_ids that came with the same em and ph (None: none checked)
    consistency: float | None = None
    # events acknowledged within the latency threshold of their append time (None: none acked)
    on_time_share: float | None = None


@dataclasses.dataclass(frozen=True)
class DestinationRow:
    """One destination's user consistency and latency, over all its events."""

    destination: str
    ids: int
    ids_inconsistent: int
    consistency: float | None  # share of external_ids never seen with a second em or ph
    on_time_share: float | None
    evictions: int


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def rows(q: Quality) -> list[Row]:
    """The report's rows, sorted by destination and event name."""
    keys = sorted(set(q.events) | set(q.rejected) | set(q.duplicates) | set(q.acked) | set(q.meta_rejected))
    out = []
    for dest, name in keys:
        n = q.events[(dest, name)]  # valid events, duplicates included
        seen = n + q.rejected[(dest, name)]
        revenue = q.revenue[(dest, name)]
        out.append(Row(
            destination=dest, event_name=name, events=n,
            key_share={k: (q.with_key[(dest, name, k)] / n if n else 0.0) for k in MATCH_KEYS},
            identifier_share=q.with_identifier[(dest, name)] / n if n else 0.0,
            revenue_share=(q.revenue_with_value[(dest, name)] / revenue) if revenue else None,
            validation_rate=(n - q.meta_rejected[(dest, name)]) / seen if seen else 0.0,
            dedupe_rate=q.duplicates[(dest, name)] / n if n else 0.0,
            consistency=_share(q.identity_checked[(dest, name)] - q.identity_inconsistent[(dest, name)],
                               q.identity_checked[(dest, name)]),
            on_time_share=_share(q.acked_on_time[(dest, name)], q.acked[(dest, name)]),
        ))  # fmt: skip
    return out


def destination_rows(q: Quality) -> list[DestinationRow]:
    """Per destination: the share of external_ids seen with one em and ph, and the on-time share."""
    names = sorted({d for d, _ in (*q.events, *q.acked)} | set(q.ids))
    out = []
    for dest in names:
        acked = sum(v for (d, _), v in q.acked.items() if d == dest)
        on_time = sum(v for (d, _), v in q.acked_on_time.items() if d == dest)
        ids, bad = q.ids[dest], q.ids_inconsistent[dest]
        out.append(DestinationRow(dest, ids, bad, _share(ids - bad, ids), _share(on_time, acked),
                                  q.tracker_evictions(dest)))
    return out


def worst(report: Iterable[Row], dests: Iterable[DestinationRow], limit: int = 5) -> list[str]:
    """Lines naming the destinations and events where user consistency is lowest (below 100% only)."""
    lines = [f"destination {d.destination}: {d.consistency:.1%} of {d.ids} external_ids consistent "
             f"({d.ids_inconsistent} seen with a second em or ph)"
             for d in sorted(dests, key=lambda d: (d.consistency or 0.0, d.destination))
             if d.consistency is not None and d.consistency < 1.0][:limit]
    lines += [f"event {r.destination}/{r.event_name}: {r.consistency:.1%} of repeat-id events consistent"
              for r in sorted(report, key=lambda r: (r.consistency or 0.0, r.destination, r.event_name))
              if r.consistency is not None and r.consistency < 1.0][:limit]
    return lines


def _pct(share: float | None, fmt: str = ".0%") -> str:
    return "-" if share is None else format(share, fmt)


def _columns(lines: list[list[str]], left: int) -> list[str]:
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    return ["  ".join(cell.rjust(w) if i >= left else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in lines]


def table(report: Iterable[Row], targets: Targets | None = None,
          dests: Iterable[DestinationRow] = ()) -> str:
    """A fixed-width table of the report, the per-destination consistency and latency, and the targets."""
    t = targets or Targets()
    on_time = f"<={t.latency_threshold_s:g}s"
    head = ["destination", "event", "events", *MATCH_KEYS, ">=1 id", "value+cur", "valid", "dedupe",
            "consistent", on_time]
    lines = [head]
    lines.extend(
        [
            r.destination, r.event_name, str(r.events),
            *[f"{r.key_share[k]:.0%}" for k in MATCH_KEYS],
            f"{r.identifier_share:.0%}", _pct(r.revenue_share),
            f"{r.validation_rate:.1%}", f"{r.dedupe_rate:.1%}", _pct(r.consistency, ".1%"),
            _pct(r.on_time_share, ".1%"),
        ]
        for r in report
    )  # fmt: skip
    text = _columns(lines, 2)
    per_dest = [["destination", "external_ids", "inconsistent", "consistent ids", on_time, "evicted ids"]]
    per_dest.extend([d.destination, str(d.ids), str(d.ids_inconsistent), _pct(d.consistency, ".1%"),
                     _pct(d.on_time_share, ".1%"), str(d.evictions)] for d in dests)
    if len(per_dest) > 1:
        text += ["", *_columns(per_dest, 1)]
    targets_line = (f"targets: >=1 identifier {t.identifier_share:.0%}, value+currency on revenue events "
                    f"{t.revenue_value_share:.0%}, valid {t.acceptance_rate:.0%}, consistent ids "
                    f"{t.user_consistency:.0%}, acked within {t.latency_threshold_s:g} s of the Kafka append")
    return "\n".join([*text, targets_line])
