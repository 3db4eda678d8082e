"""`capi-stream quality --metrics-url URL`: the signal-quality table from a running pipeline's metrics."""

from __future__ import annotations

import argparse
import urllib.request
from collections.abc import Sequence
from typing import Any

from stream.commands import Subparsers
from stream.errors import UsageError


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `quality` command to the CLI."""
    parser = sub.add_parser("quality",
                            help="print match keys, validation, user consistency and latency from /metrics")
    parser.add_argument("--metrics-url", required=True, help="e.g. http://127.0.0.1:9464/metrics")
    parser.set_defaults(handler=run)


def parse(text: str) -> Any:
    """Rebuild the quality counters from Prometheus text exposition."""
    import dataclasses

    from prometheus_client.parser import text_string_to_metric_families

    from stream.pipeline.quality import Quality, Targets

    q = Quality()
    counters = {
        "capi_stream_quality_events": q.events, "capi_stream_quality_with_identifier": q.with_identifier,
        "capi_stream_quality_revenue_events": q.revenue,
        "capi_stream_quality_revenue_with_value": q.revenue_with_value,
        "capi_stream_quality_rejected": q.rejected, "capi_stream_quality_duplicates": q.duplicates,
        "capi_stream_quality_identity_checked": q.identity_checked,
        "capi_stream_quality_identity_inconsistent": q.identity_inconsistent,
        "capi_stream_quality_acked": q.acked, "capi_stream_quality_acked_on_time": q.acked_on_time,
        "capi_stream_quality_meta_rejected": q.meta_rejected,
    }  # fmt: skip
    per_destination = {
        "capi_stream_quality_identity_ids": q.ids, "capi_stream_quality_identity_inconsistent_ids": q.ids_inconsistent,
        "capi_stream_quality_identity_evictions": q.evictions,
    }  # fmt: skip
    targets: dict[str, Any] = {}  # [quality] fields read from the exported gauges
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "capi_stream_quality_target" and labels.get("target") in _TARGETS:
                targets[labels["target"]] = float(sample.value)
            elif sample.name == "capi_stream_quality_latency_threshold_seconds":
                targets["latency_threshold_s"] = float(sample.value)
            if not sample.name.endswith("_total"):
                continue
            name = sample.name.removesuffix("_total")
            if name in counters:
                counters[name][(labels["destination"], labels["event_name"])] += int(sample.value)
            elif name in per_destination:
                per_destination[name][labels["destination"]] += int(sample.value)
            elif name == "capi_stream_quality_match_key":
                q.with_key[(labels["destination"], labels["event_name"], labels["key"])] += int(sample.value)
    q.targets = dataclasses.replace(Targets(), **targets)
    return q


_TARGETS = frozenset({"identifier_share", "revenue_value_share", "acceptance_rate", "user_consistency"})


def run(args: argparse.Namespace) -> int:
    """Fetch the metrics and print the table; exit 2 when the URL cannot be read."""
    from stream.pipeline.quality import destination_rows, rows, table, worst

    if not args.metrics_url.startswith(("http://", "https://")):
        raise UsageError(f"--metrics-url must be an http(s) URL, got {args.metrics_url!r}")
    try:
        with urllib.request.urlopen(args.metrics_url, timeout=10) as resp:  # noqa: S310 - scheme checked above
            text = resp.read().decode()
    except OSError as exc:
        raise UsageError(f"cannot read {args.metrics_url}: {exc}") from exc
    if "capi_stream_" not in text:
        first = text.strip().splitlines()[0][:80] if text.strip() else "(empty)"
        raise UsageError(f"{args.metrics_url} has no capi_stream_ metrics (is it the /metrics path of a "
                         f"capi-stream member?); it starts with {first!r}")
    try:
        q = parse(text)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        first = text.strip().splitlines()[0][:80] if text.strip() else "(empty)"
        raise UsageError(f"{args.metrics_url} is not Prometheus text exposition (is it the /metrics path of a "
                         f"capi-stream member?); it starts with {first!r}") from exc
    report = rows(q)
    if not report:
        print("no events counted yet")
        return 0
    dests = destination_rows(q)
    print(table(report, q.targets, dests))
    lowest = worst(report, dests)
    if lowest:
        print(f"\nuser consistency, worst first (target {q.targets.user_consistency:.0%} of external_ids):")
        print("\n".join(f"  {line}" for line in lowest))
    return 0
