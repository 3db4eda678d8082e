"""Signal quality per destination and event name (pure).

Meta gives app advertisers no Event Match Quality score, so capi-stream counts what matters for
matching itself: the share of events carrying each match key, the share with at least one identifier,
value and currency on revenue events, the validation rate and the dedupe rate. Only counts: never a
value.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# The match keys the report shows, in Meta's order of importance for app events
MATCH_KEYS = ("em", "ph", "external_id", "madid", "anon_id", "client_ip_address", "client_user_agent", "fbc", "fbp")
# Events that carry money: value and currency are expected on every one
REVENUE_EVENTS = frozenset({"Purchase", "Subscribe"})
# Targets from Meta's best practices, shown next to the figures
TARGET_IDENTIFIER = 0.95
TARGET_REVENUE_VALUE = 1.0
TARGET_VALIDATION = 0.99

Key = tuple[str, str]  # destination, event_name


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

    def valid(self, destination: str, event: Mapping[str, Any]) -> None:
        """Count a valid event (before dedupe, so duplicates count too) and the match keys it carries."""
        user_data = event.get("user_data") or {}
        custom = event.get("custom_data") or {}
        revenue = event["event_name"] in REVENUE_EVENTS
        self.count(destination, event["event_name"], tuple(k for k in MATCH_KEYS if k in user_data), revenue,
                   revenue and custom.get("value") is not None and bool(custom.get("currency")))

    def count(self, destination: str, event_name: str, keys: tuple[str, ...], revenue: bool, has_value: bool) -> None:
        """Count a valid event from its signature: the match keys present and its value on revenue events."""
        key = (destination, event_name)
        self.events[key] += 1
        for name in keys:
            self.with_key[(destination, event_name, name)] += 1
        if keys:
            self.with_identifier[key] += 1
        if revenue:
            self.revenue[key] += 1
            if has_value:
                self.revenue_with_value[key] += 1

    def invalid(self, destination: str, event_name: str) -> None:
        """Count an event rejected by validation (not for missing consent: that is the person's choice)."""
        self.rejected[(destination, event_name)] += 1

    def duplicate(self, destination: str, event_name: str) -> None:
        """Count a duplicate that was not sent again."""
        self.duplicates[(destination, event_name)] += 1


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


def rows(q: Quality) -> list[Row]:
    """The report's rows, sorted by destination and event name."""
    keys = sorted(set(q.events) | set(q.rejected) | set(q.duplicates))
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
            validation_rate=n / seen if seen else 0.0,
            dedupe_rate=q.duplicates[(dest, name)] / n if n else 0.0,
        ))  # fmt: skip
    return out


def table(report: Iterable[Row]) -> str:
    """A fixed-width table of the report, with the targets in the header."""
    head = ["destination", "event", "events", *MATCH_KEYS, ">=1 id", "value+cur", "valid", "dedupe"]
    lines = [head]
    lines.extend(
        [
            r.destination, r.event_name, str(r.events),
            *[f"{r.key_share[k]:.0%}" for k in MATCH_KEYS],
            f"{r.identifier_share:.0%}",
            "-" if r.revenue_share is None else f"{r.revenue_share:.0%}",
            f"{r.validation_rate:.1%}", f"{r.dedupe_rate:.1%}",
        ]
        for r in report
    )  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                      strict=True)))
            for row in lines]
    targets = (f"targets: >=1 identifier {TARGET_IDENTIFIER:.0%}, value+currency on revenue events "
               f"{TARGET_REVENUE_VALUE:.0%}, validation {TARGET_VALIDATION:.0%}")
    return "\n".join([*text, targets])
