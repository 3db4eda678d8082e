"""`capi-stream status --config FILE`: our consumer group's live view (members, lag, destinations, the cliff),
and the parking group's (its lag per parking partition, the destinations with events waiting)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `status` command to the CLI."""
    parser = sub.add_parser("status", help="the group's members, partitions, lag, destination states and the "
                                           "oldest unacknowledged event (works while the group runs)")
    parser.add_argument("--config", type=Path, required=True,
                        help="capi-stream TOML config: bootstrap, topics and group come from it")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: from --config)")
    parser.add_argument("--metrics", action="append", default=[], metavar="URL",
                        help="a member's /metrics URL to read too (repeatable); members that advertise their "
                             "metrics port are found without it")
    parser.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the group's status; exit 0 (1 when the broker cannot be asked)."""
    import orjson

    from stream import config
    from stream.tools import admin, status

    settings = config.load(args.config)
    bootstrap = args.bootstrap or settings.kafka.bootstrap_servers
    client = admin.Admin(admin.client_config(bootstrap, settings.kafka.consumer))
    report = status.gather(client, settings.kafka.group_id, settings.kafka.topics, args.metrics,
                           parking=config.parking_topics(settings), parking_group=config.parking_group(settings))
    if args.format == "json":
        print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(status.render(report))
    return 0
