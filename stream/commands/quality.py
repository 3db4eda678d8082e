"""`capi-stream quality --metrics-url URL`: the signal-quality table from a running pipeline's metrics."""

from __future__ import annotations

import argparse
import urllib.request
from typing import Any

from stream.errors import UsageError


def register(sub: Any) -> None:
    """Add the `quality` command to the CLI."""
    parser = sub.add_parser("quality", help="print match-key coverage and validation rates from /metrics")
    parser.add_argument("--metrics-url", required=True, help="e.g. http://127.0.0.1:9464/metrics")
    parser.set_defaults(handler=run)


def parse(text: str) -> Any:
    """Rebuild the quality counters from Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    from stream.quality import Quality

    q = Quality()
    counters = {
        "capi_stream_quality_events": q.events, "capi_stream_quality_with_identifier": q.with_identifier,
        "capi_stream_quality_revenue_events": q.revenue,
        "capi_stream_quality_revenue_with_value": q.revenue_with_value,
        "capi_stream_quality_rejected": q.rejected, "capi_stream_quality_duplicates": q.duplicates,
    }  # fmt: skip
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            name = sample.name.removesuffix("_total")
            labels = sample.labels
            if name in counters:
                counters[name][(labels["destination"], labels["event_name"])] += int(sample.value)
            elif name == "capi_stream_quality_match_key":
                q.with_key[(labels["destination"], labels["event_name"], labels["key"])] += int(sample.value)
    return q


def run(args: argparse.Namespace) -> int:
    """Fetch the metrics and print the table; exit 2 when the URL cannot be read."""
    from stream.quality import rows, table

    if not args.metrics_url.startswith(("http://", "https://")):
        raise UsageError(f"--metrics-url must be an http(s) URL, got {args.metrics_url!r}")
    try:
        with urllib.request.urlopen(args.metrics_url, timeout=10) as resp:  # noqa: S310 - scheme checked above
            text = resp.read().decode()
    except OSError as exc:
        raise UsageError(f"cannot read {args.metrics_url}: {exc}") from exc
    report = rows(parse(text))
    if not report:
        print("no events counted yet")
        return 0
    print(table(report))
    return 0
