"""`capi-stream dlq show|redrive`: look into the dead-letter topic and send letters back.

    capi-stream dlq show [--dlq-topic T] [--limit N] [--reason R] [--bootstrap B] [--config F] [--format json]
    capi-stream dlq redrive [--dlq-topic T] --to T2 [--reason R] [--bootstrap B] [--config F] [--execute]

`show` prints reason, Meta's code/subcode, source position, time, event name and id of each letter,
never its key or value (the app's original bytes, personal data). `redrive` copies letters unchanged
(key, value, headers) to another topic, usually the pipeline's source topic once the cause is fixed;
dry run by default. With --config, the dead-letter topic and the bootstrap come from the config. A
dead-letter topic that does not exist yet holds no letters (one line, exit 0); a missing --to is an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.commands import Subparsers

DEFAULT_LIMIT = 100


def _where(parser: Any) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="capi-stream TOML config: bootstrap, dead-letter topic and client settings from it")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: from --config)")
    parser.add_argument("--reason", action="append", metavar="R",
                        help="only letters with this reason code (repeat or comma-separate for several; "
                             "unknown codes are refused)")


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `dlq` command and its actions to the CLI."""
    parser = sub.add_parser("dlq", help="show dead letters or copy them back for another try")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="list dead letters: reason, code, source, time, event name and id")
    show.add_argument("--dlq-topic", dest="topic", default=None,
                      help="dead-letter topic (default: kafka.dlq_topic of --config)")
    show.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                      help=f"show at most N letters, per partition oldest first (default {DEFAULT_LIMIT}; 0: all)")
    show.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    _where(show)
    show.set_defaults(handler=run_show)
    redrive = actions.add_parser("redrive", help="copy dead letters unchanged to a topic (dry run first)")
    redrive.add_argument("--dlq-topic", dest="source", default=None,
                         help="dead-letter topic to copy from (default: kafka.dlq_topic of --config)")
    redrive.add_argument("--to", dest="dest", required=True, help="topic to copy the letters to")
    redrive.add_argument("--execute", action="store_true", help="copy (default: dry run, only count)")
    _where(redrive)
    redrive.set_defaults(handler=run_redrive)


def _client(args: argparse.Namespace, topic_flag: str, topic: str | None) -> tuple[Any, str, str]:
    """The admin client, the dead-letter topic, and what named it (the flag, or the config's key)."""
    from stream import config
    from stream.errors import UsageError
    from stream.tools import admin

    settings = config.load(args.config)
    named_by = topic_flag if topic else f"kafka.dlq_topic in {args.config}"
    topic = topic or (settings.kafka.dlq_topic if args.config else None)
    if not topic:
        raise UsageError(f"name the dead-letter topic with {topic_flag} (or give --config)")
    bootstrap = args.bootstrap or settings.kafka.bootstrap_servers
    return admin.Admin(admin.client_config(bootstrap, settings.kafka.consumer)), topic, named_by


def run_show(args: argparse.Namespace) -> int:
    """Print the first --limit letters that pass the --reason filter."""
    import orjson

    from stream.tools import admin
    from stream.tools import dlq as dlqtools

    reasons = dlqtools.reasons_flag(args.reason)
    if args.limit < 0:
        from stream.errors import UsageError

        raise UsageError(f"--limit {args.limit} must be 0 (all) or more")
    client, topic, named_by = _client(args, "--dlq-topic", args.topic)
    try:
        parts = client.partitions(topic)
    except admin.UnknownTopicError:
        # the pipeline creates it with its first letter: no topic yet means no letters (an empty listing)
        print(dlqtools.missing_topic_line(topic, named_by), file=sys.stderr if args.format == "json" else sys.stdout)
        return 0
    messages = admin.iter_topic(client.conf, topic, parts, client.watermarks(topic, parts))
    try:
        result = dlqtools.show(messages, reasons, args.limit)
    finally:
        messages.close()  # stop the read early when the limit was reached
    if args.format == "json":
        for row in result.rows:
            sys.stdout.write(orjson.dumps(dlqtools.row_dict(row)).decode() + "\n")
    else:
        for line in dlqtools.format_rows(result.rows):
            print(line)
    print(dlqtools.show_summary(result, topic, reasons), file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


def run_redrive(args: argparse.Namespace) -> int:
    """Count (dry run) or copy the letters that pass the --reason filter to --to."""
    from stream.errors import UsageError
    from stream.tools import admin
    from stream.tools import dlq as dlqtools

    reasons = dlqtools.reasons_flag(args.reason)
    client, source, named_by = _client(args, "--dlq-topic", args.source)
    if args.dest == source:
        raise UsageError(f"--to {args.dest} is the dead-letter topic itself; copy to another topic")
    client.partitions(args.dest)  # the destination must exist: never create a topic by a typo
    try:
        parts = client.partitions(source)
    except admin.UnknownTopicError:  # no dead-letter topic yet: no letters, nothing to copy
        print(dlqtools.missing_topic_line(source, named_by))
        return 0
    messages = admin.iter_topic(client.conf, source, parts, client.watermarks(source, parts))
    copier = admin.Copier(client.conf, args.dest) if args.execute else None
    counts = dlqtools.redrive(messages, reasons, copier.send if copier else None)
    if copier is not None:
        copier.close()
    print(dlqtools.redrive_summary(counts, source, args.dest, executed=args.execute))
    return 0
