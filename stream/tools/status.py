"""`capi-stream status`: the live view of our consumer group, as `kafka-consumer-groups --describe` gives it.

From the admin API: the group's state, its members and their partitions, committed vs end offsets and
lag per partition; the same for the group `{group}.parking` that reads the parking topics back, and the
destinations whose parking topic holds events (parked, or draining). From each member's `/metrics`
when it can be reached (the member's host and the metrics port it advertises in its client id, or URLs
given on the command line): destination states, in-flight events and the age of the oldest
unacknowledged event, held in memory or waiting in a parking topic, against Meta's 7-day cliff.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from stream.contract.meta import MAX_EVENT_AGE_S
from stream.tools.admin import Admin, GroupView, UnknownTopicError

# A member running with a metrics port says so in its client id (pipeline.metrics.metrics_client_id)
_CLIENT_ID_PORT = re.compile(r"^capi-stream-metrics-(\d{1,5})$")
# a member that does not answer its /metrics this fast is reported unreachable (the group view still shows)
SCRAPE_TIMEOUT_S = 3.0
# warn when the oldest unacknowledged event has used this share of Meta's 7 days
CLIFF_WARN_SHARE = 0.5


def metrics_url(host: str, client_id: str) -> str | None:
    """The /metrics URL a member advertises in its client id, or None."""
    match = _CLIENT_ID_PORT.match(client_id)
    if not match or not host:
        return None
    return f"http://{host}:{match.group(1)}/metrics"


@dataclasses.dataclass(frozen=True)
class PartitionRow:
    """One partition of one topic: where the group stands."""

    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    owner: str


@dataclasses.dataclass(frozen=True)
class MemberMetrics:
    """What a member's /metrics says (or why it could not be read)."""

    url: str
    error: str = ""
    destinations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    in_flight: float = 0.0
    oldest_unacked_age_s: float = 0.0
    assigned: float = 0.0
    # destination -> age of the oldest event waiting in its parking topic (0: none)
    parked_oldest_age_s: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StatusReport:
    """Everything `status` prints."""

    group: GroupView
    partitions: tuple[PartitionRow, ...]
    metrics: tuple[MemberMetrics, ...]
    # the parking group (None: parking is off) and its partitions; destination -> its parking topic
    parking_group: GroupView | None = None
    parking_partitions: tuple[PartitionRow, ...] = ()
    parking_topics: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def waiting(self) -> dict[str, int]:
        """destination -> events waiting in its parking topic (only those with some)."""
        lag: dict[str, int] = {}
        for r in self.parking_partitions:
            lag[r.topic] = lag.get(r.topic, 0) + r.lag
        return {d: lag[t] for d, t in self.parking_topics.items() if lag.get(t)}

    def destination_states(self) -> dict[str, str]:
        """destination -> the states its reachable members report, joined when they differ."""
        seen: dict[str, set[str]] = {}
        for m in self.metrics:
            for d, state in m.destinations.items():
                seen.setdefault(d, set()).add(state)
        return {d: "/".join(sorted(states)) for d, states in seen.items()}

    def parked_oldest_age_s(self) -> dict[str, float]:
        """destination -> the oldest parked event's age its reachable members report (the largest)."""
        ages: dict[str, float] = {}
        for m in self.metrics:
            if not m.error:
                for d, age in m.parked_oldest_age_s.items():
                    ages[d] = max(ages.get(d, 0.0), age)
        return ages

    @property
    def oldest_in_memory_age_s(self) -> float:
        return max((m.oldest_unacked_age_s for m in self.metrics if not m.error), default=0.0)

    @property
    def oldest_unacked_age_s(self) -> float:
        """The oldest event not acknowledged yet, held in memory or waiting in a parking topic."""
        return max([self.oldest_in_memory_age_s, *self.parked_oldest_age_s().values()])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (`--format json`)."""
        return {
            "group": self.group.group, "state": self.group.state,
            "members": [dataclasses.asdict(m) for m in self.group.members],
            "partitions": [dataclasses.asdict(p) for p in self.partitions],
            "total_lag": self.total_lag,
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
            "oldest_unacked_age_s": self.oldest_unacked_age_s, "cliff_s": MAX_EVENT_AGE_S,
            "parking": None if self.parking_group is None else {
                "group": self.parking_group.group, "state": self.parking_group.state,
                "members": [dataclasses.asdict(m) for m in self.parking_group.members],
                "partitions": [dataclasses.asdict(p) for p in self.parking_partitions],
                "total_lag": sum(p.lag for p in self.parking_partitions),
                "topics": dict(self.parking_topics), "waiting": self.waiting,
            },
        }  # fmt: skip


def parse_metrics(url: str, text: str) -> MemberMetrics:
    """The few gauges `status` shows, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    states: dict[str, str] = {}
    values: dict[str, float] = {}
    parked: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "capi_stream_destination_state" and sample.value == 1.0:
                states[sample.labels["destination"]] = sample.labels["state"]
            elif sample.name == "capi_stream_parked_oldest_event_age_seconds":
                parked[sample.labels["destination"]] = float(sample.value)
            elif sample.name in ("capi_stream_in_flight_events", "capi_stream_oldest_unacked_event_age_seconds",
                                 "capi_stream_assigned_partitions"):
                values[sample.name] = float(sample.value)
    return MemberMetrics(url, destinations=states, in_flight=values.get("capi_stream_in_flight_events", 0.0),
                         oldest_unacked_age_s=values.get("capi_stream_oldest_unacked_event_age_seconds", 0.0),
                         assigned=values.get("capi_stream_assigned_partitions", 0.0), parked_oldest_age_s=parked)


def fetch_metrics(url: str) -> MemberMetrics:
    """Scrape one member; an unreachable one is reported with the reason, never raised."""
    if not url.startswith(("http://", "https://")):
        return MemberMetrics(url, error="not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as resp:  # noqa: S310 - scheme checked
            text = resp.read().decode()
    except (OSError, ValueError) as exc:
        return MemberMetrics(url, error=f"unreachable: {exc}")
    try:
        return parse_metrics(url, text)
    except (ValueError, KeyError, TypeError) as exc:
        return MemberMetrics(url, error=f"not Prometheus text: {exc}")


def _rows(admin: Admin, group: GroupView, topics: Iterable[str], *, missing_ok: bool = False) -> list[PartitionRow]:
    """Committed vs end offsets of the group on each partition of `topics` (a missing topic: an error,
    or no rows with `missing_ok`)."""
    owners = {tp: m.client_id or m.member_id for m in group.members for tp in m.partitions}
    rows: list[PartitionRow] = []
    for topic in topics:
        try:
            parts = admin.partitions(topic)
        except UnknownTopicError:
            if missing_ok:
                continue  # a parking topic not created yet: nothing was ever parked there
            raise
        marks = admin.watermarks(topic, parts)
        committed = admin.committed(group.group, topic, parts)
        for p in parts:
            low, end = marks[p]
            done = committed.get(p)
            lag = end - max(low, done if done is not None else low)
            rows.append(PartitionRow(topic, p, done, end, max(0, lag), owners.get((topic, p), "")))
    return rows


def gather(admin: Admin, group: str, topics: Sequence[str], extra_urls: Iterable[str] = (),
           fetch: Callable[[str], MemberMetrics] = fetch_metrics, *, parking: Mapping[str, str] | None = None,
           parking_group: str | None = None) -> StatusReport:
    """Read the group and its partitions from the broker, the parking group and its parking topics
    (`parking`: destination -> parking topic) when given, then each member's metrics."""
    view = admin.describe_group(group)
    rows = _rows(admin, view, topics)
    parking_view = None
    parking_rows: list[PartitionRow] = []
    if parking_group is not None and parking:
        parking_view = admin.describe_group(parking_group)
        parking_rows = _rows(admin, parking_view, sorted(set(parking.values())), missing_ok=True)
    urls = [u for m in view.members if (u := metrics_url(m.host, m.client_id))]
    urls += [u for u in extra_urls if u not in urls]
    return StatusReport(view, tuple(rows), tuple(fetch(u) for u in urls), parking_view, tuple(parking_rows),
                        dict(parking or {}))


def _table(rows: Iterable[PartitionRow]) -> list[str]:
    out = [f"  {'TOPIC':<28} {'PART':>4} {'COMMITTED':>10} {'END':>10} {'LAG':>8}  OWNER"]
    for r in rows:
        committed = "-" if r.committed is None else str(r.committed)
        out.append(f"  {r.topic:<28} {r.partition:>4} {committed:>10} {r.end:>10} {r.lag:>8}  {r.owner or '-'}")
    return out


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "none"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m {rest % 60}s"


def render(report: StatusReport) -> str:
    """The text view: group, members, partitions, destinations and the 7-day cliff."""
    g = report.group
    out = [f"group {g.group}: {g.state}, {len(g.members)} member(s), total lag {report.total_lag}"]
    for m in g.members:
        parts = ", ".join(f"{t}[{p}]" for t, p in m.partitions) or "-"
        out.append(f"  member {m.client_id or '-'} {m.host} ({m.member_id[-12:]}): {parts}")
    out.append("")
    out.extend(_table(report.partitions))
    out.append("")
    if (pg := report.parking_group) is not None:
        lag = sum(r.lag for r in report.parking_partitions)
        out.append(f"parking group {pg.group}: {pg.state}, {len(pg.members)} member(s), total lag {lag}")
        if report.parking_partitions:
            out.extend(_table(report.parking_partitions))
        said = report.destination_states()
        parked_ages = report.parked_oldest_age_s()
        for name, waiting in sorted(report.waiting.items()):
            age = f"; oldest {_age(parked_ages[name])} old" if parked_ages.get(name) else ""
            out.append(f"parked destination {name}: {waiting} event(s) waiting in {report.parking_topics[name]} "
                       f"(state: {said.get(name, 'unknown: no member metrics')}){age}")
        if not report.waiting:
            out.append("no destination has events waiting in its parking topic")
        out.append("")
    if not report.metrics:
        out.append("metrics: no member advertises a metrics port (set [metrics] port, or pass --metrics URL)")
    for mm in report.metrics:
        if mm.error:
            out.append(f"metrics {mm.url}: {mm.error}")
            continue
        states = ", ".join(f"{d}={s}" for d, s in sorted(mm.destinations.items())) or "-"
        out.append(f"metrics {mm.url}: destinations {states}; in flight {mm.in_flight:.0f}; "
                   f"oldest unacked {_age(mm.oldest_unacked_age_s)}")
    oldest = report.oldest_unacked_age_s
    if oldest:
        left = MAX_EVENT_AGE_S - oldest
        flag = "WARNING: " if oldest >= MAX_EVENT_AGE_S * CLIFF_WARN_SHARE else ""
        parked = sorted(d for d, age in report.parked_oldest_age_s().items() if age == oldest)
        where = f" (parked, {', '.join(parked)})" if parked and oldest > report.oldest_in_memory_age_s else ""
        out.append(f"{flag}oldest unacknowledged event is {_age(oldest)} old{where}; Meta refuses it in "
                   f"{_age(max(0.0, left)) if left > 0 else 'no time: it is past 7 days'}")
    return "\n".join(out)
