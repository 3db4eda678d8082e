"""`capi-stream status`: the live view of our consumer group, as `kafka-consumer-groups --describe` gives it.

From the admin API: the group's state, its members and their partitions, committed vs end offsets and
lag per partition. From each member's `/metrics` when it can be reached (the member's host and the
metrics port it advertises in its client id, or URLs given on the command line): destination states,
in-flight events and the age of the oldest unacknowledged event against Meta's 7-day cliff.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from stream.contract.meta import MAX_EVENT_AGE_S
from stream.tools.admin import Admin, GroupView

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


@dataclasses.dataclass(frozen=True)
class StatusReport:
    """Everything `status` prints."""

    group: GroupView
    partitions: tuple[PartitionRow, ...]
    metrics: tuple[MemberMetrics, ...]

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def oldest_unacked_age_s(self) -> float:
        return max((m.oldest_unacked_age_s for m in self.metrics if not m.error), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (`--format json`)."""
        return {
            "group": self.group.group, "state": self.group.state,
            "members": [dataclasses.asdict(m) for m in self.group.members],
            "partitions": [dataclasses.asdict(p) for p in self.partitions],
            "total_lag": self.total_lag,
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
            "oldest_unacked_age_s": self.oldest_unacked_age_s, "cliff_s": MAX_EVENT_AGE_S,
        }  # fmt: skip


def parse_metrics(url: str, text: str) -> MemberMetrics:
    """The few gauges `status` shows, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    states: dict[str, str] = {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "capi_stream_destination_state" and sample.value == 1.0:
                states[sample.labels["destination"]] = sample.labels["state"]
            elif sample.name in ("capi_stream_in_flight_events", "capi_stream_oldest_unacked_event_age_seconds",
                                 "capi_stream_assigned_partitions"):
                values[sample.name] = float(sample.value)
    return MemberMetrics(url, destinations=states, in_flight=values.get("capi_stream_in_flight_events", 0.0),
                         oldest_unacked_age_s=values.get("capi_stream_oldest_unacked_event_age_seconds", 0.0),
                         assigned=values.get("capi_stream_assigned_partitions", 0.0))


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


def gather(admin: Admin, group: str, topics: Sequence[str], extra_urls: Iterable[str] = (),
           fetch: Callable[[str], MemberMetrics] = fetch_metrics) -> StatusReport:
    """Read the group and its partitions from the broker, then each member's metrics."""
    view = admin.describe_group(group)
    owners = {tp: m.client_id or m.member_id for m in view.members for tp in m.partitions}
    rows: list[PartitionRow] = []
    for topic in topics:
        parts = admin.partitions(topic)
        marks = admin.watermarks(topic, parts)
        committed = admin.committed(group, topic, parts)
        for p in parts:
            low, end = marks[p]
            done = committed.get(p)
            lag = end - (done if done is not None else low)
            rows.append(PartitionRow(topic, p, done, end, max(0, lag), owners.get((topic, p), "")))
    urls = [u for m in view.members if (u := metrics_url(m.host, m.client_id))]
    urls += [u for u in extra_urls if u not in urls]
    return StatusReport(view, tuple(rows), tuple(fetch(u) for u in urls))


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
    out.append(f"  {'TOPIC':<28} {'PART':>4} {'COMMITTED':>10} {'END':>10} {'LAG':>8}  OWNER")
    for r in report.partitions:
        committed = "-" if r.committed is None else str(r.committed)
        out.append(f"  {r.topic:<28} {r.partition:>4} {committed:>10} {r.end:>10} {r.lag:>8}  {r.owner or '-'}")
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
        out.append(f"{flag}oldest unacknowledged event is {_age(oldest)} old; Meta refuses it in "
                   f"{_age(max(0.0, left)) if left > 0 else 'no time: it is past 7 days'}")
    return "\n".join(out)
