"""`capi-stream replay`: move a stopped group's offsets back (or forward), dry run first.

    capi-stream replay --group G --topic T (--to-datetime ISO | --by-duration 6h | --to-earliest |
                       --to-offset P:O[,P:O...]) [--bootstrap B] [--config F] [--execute] [--forget-dedupe]

Prints per partition the current and target offsets, how many events will be re-read, how many of
those are older than Meta's 7 days (decoded event_time) and how many fall inside the dedupe window
(Kafka timestamp); see stream/replay.py for why each is counted that way. Refuses (exit 2) while the
group has active members, in the dry run too, because offsets of a live group move under the plan.
Events inside the window are deduped against the group's changelog topic after the reset; with
--forget-dedupe, --execute first deletes the changelog records of the partitions that move, so they
are sent again (exit 2 when dedupe.changelog is false: there is nothing to forget).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.commands import Subparsers


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `replay` command to the CLI."""
    from stream.tools.replay import DEFAULT_SAMPLE_LIMIT

    parser = sub.add_parser("replay", help="reset a stopped consumer group's offsets to replay events (dry run first)")
    parser.add_argument("--group", default=None, help="consumer group (default: kafka.group_id of --config)")
    parser.add_argument("--topic", default=None, help="topic (default: the only one in kafka.topics of --config)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-datetime", metavar="ISO", help="first message at or after this time (UTC if no zone)")
    target.add_argument("--by-duration", metavar="DURATION", help="go back this far from now: 6h, 90m, 2d, 1h30m")
    target.add_argument("--to-earliest", action="store_true", help="the first offset still in the log")
    target.add_argument("--to-offset", metavar="P:O[,P:O...]",
                        help="explicit offsets; other partitions stay where they are")
    parser.add_argument("--config", type=Path, default=None,
                        help="capi-stream TOML config: bootstrap, group, topic and client settings from it")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: from --config)")
    parser.add_argument("--execute", action="store_true", help="apply the reset (default: dry run, change nothing)")
    parser.add_argument("--forget-dedupe", action="store_true",
                        help="with --execute, also clear the dedupe changelog of the partitions that move, so "
                             "events inside the dedupe window are sent to Meta again (on purpose)")
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE_LIMIT, metavar="N",
                        help=f"read at most N messages per partition to count ages (default {DEFAULT_SAMPLE_LIMIT}; "
                             "larger ranges are estimated)")
    parser.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    parser.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> Any:
    from stream import config

    return config.load(args.config)


def _names(args: argparse.Namespace, settings: Any) -> tuple[str, str]:
    from stream.errors import UsageError

    group = args.group or (settings.kafka.group_id if args.config else None)
    if not group:
        raise UsageError("name the consumer group with --group (or give --config)")
    topic = args.topic
    if not topic and args.config:
        if len(settings.kafka.topics) != 1:
            raise UsageError(f"{args.config} lists topics {list(settings.kafka.topics)}: choose one with --topic")
        topic = settings.kafka.topics[0]
    if not topic:
        raise UsageError("name the topic with --topic (or give --config)")
    return group, topic


def _changelog(settings: Any, group: str, topic: str) -> str:
    """The dedupe changelog topic of `topic` for `group` ("" without one); exit 2 for a bad name."""
    from stream.config import changelog_topic_name
    from stream.errors import UsageError

    if not settings.dedupe.changelog:
        return ""
    try:
        return changelog_topic_name(settings.dedupe.changelog_topic, group, topic)
    except ValueError as exc:
        raise UsageError(f"dedupe.changelog_topic: {exc}") from exc


def _decoder(settings: Any) -> Any:
    """The event_time reader for sampled values, framed as the pipeline reads them."""
    from stream.avro.decode import Decoder
    from stream.avro.schema import load_schema
    from stream.avro.wire import WireFormat
    from stream.tools.admin import event_time_reader

    wire = WireFormat(settings.decode.wire_format)
    decoder = Decoder(load_schema(settings.decode.schema_path or None), wire)
    lookup = None
    if wire is WireFormat.CONFLUENT:
        from stream.avro.registry import RegistryLookup

        lookup = RegistryLookup(settings.decode.schema_registry_url).writer_schema
    return event_time_reader(decoder, lookup)


def run(args: argparse.Namespace) -> int:
    """Plan the reset, print it, and apply it with --execute; exit 2 on bad input or an active group."""
    import orjson

    from stream.errors import UsageError
    from stream.tools import admin, replay

    if args.sample < 1:
        # with nothing read the age columns would be guesses printed as counts
        raise UsageError(f"--sample {args.sample} must be at least 1")
    settings = _settings(args)
    group, topic = _names(args, settings)
    now = time.time()
    target = replay.target_from_flags(to_datetime=args.to_datetime, by_duration=args.by_duration,
                                      to_earliest=args.to_earliest, to_offset=args.to_offset, now_s=now)
    bootstrap = args.bootstrap or settings.kafka.bootstrap_servers
    client = admin.Admin(admin.client_config(bootstrap, settings.kafka.consumer))
    offsets = client.partition_offsets(group, topic)
    replay.check_partitions(target, (p.partition for p in offsets), topic)
    client.ensure_inactive(group)
    parts = [p.partition for p in offsets]
    found = client.offsets_for_time(topic, parts, target.timestamp_ms) if target.timestamp_ms is not None else {}
    ranges = replay.ranges_to_read(target, offsets, found, args.sample)
    samples = admin.read_samples(client.conf, topic, ranges, _decoder(settings))
    changelog = _changelog(settings, group, topic)
    if args.forget_dedupe and not changelog:
        raise UsageError("--forget-dedupe: dedupe.changelog is false, there is no changelog to clear")
    plan = replay.build_plan(group=group, topic=topic, target=target, partitions=offsets, found=found,
                             samples=samples, now_s=now, dedupe_window_s=settings.dedupe.window_s,
                             changelog_topic=changelog, forget_dedupe=args.forget_dedupe)
    applied: dict[int, int] = {}
    cleared: dict[int, int] = {}
    if args.execute:
        moves = {p.partition: p.target for p in plan.partitions if p.moves}
        if moves:
            client.ensure_inactive(group)  # again: a consumer may have started while we sampled
            if args.forget_dedupe:
                # first: a crash between the two leaves the offsets where they were, and a second run
                # finds nothing to clear
                cleared = client.truncate(changelog, list(moves))
            applied = client.alter(group, topic, moves)
    if args.format == "json":
        doc = {**replay.plan_dict(plan), "executed": args.execute, "applied": {str(p): o for p, o in applied.items()},
               "changelog_cleared": {str(p): o for p, o in cleared.items()}}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return 0
    for line in replay.format_plan(plan, executed=args.execute):
        print(line)
    if args.execute:
        if applied:
            print(f"done: group {group} now reads {topic} from " +
                  ", ".join(f"{p}:{o}" for p, o in sorted(applied.items())))
        else:
            print(f"done: nothing to change, group {group} already at the target")
    return 0
