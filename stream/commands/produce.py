"""`capi-stream produce`: publish JSON lines as Avro records to a Kafka topic."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers
from stream.errors import SchemaError, UsageError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `produce` command to the CLI."""
    parser = sub.add_parser("produce", help="encode JSON lines as Avro and publish them to a topic")
    parser.add_argument("file", nargs="?", type=Path, help="JSON lines file (default: stdin)")
    parser.add_argument("--topic", default=None,
                        help="topic to publish to (default: the one topic in kafka.topics of --config)")
    parser.add_argument("--config", type=Path, default=None,
                        help="capi-stream TOML config: bootstrap, topic, wire format, producer settings")
    parser.add_argument("--bootstrap", default=None,
                        help="bootstrap servers (default: from --config, else $CAPI_STREAM_BOOTSTRAP, else "
                             f"{DEFAULT_BOOTSTRAP})")
    parser.add_argument("--partitions", type=int, default=None,
                        help="create the topic with this many partitions if it does not exist")
    parser.add_argument("--key-field", default="event_id",
                        help="record field used as the message key (default event_id; '' for no key)")
    parser.add_argument("--wire-format", choices=["schemaless", "confluent"], default=None,
                        help="schemaless Avro, or the Confluent framing (magic byte + schema id); default: "
                             "decode.wire_format of --config, else schemaless")
    parser.add_argument("--schema-id", type=int, default=None, help="schema id for --wire-format confluent")
    parser.add_argument("--schema", type=Path, default=None, help="Avro schema file (default: the bundled one)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the broker to acknowledge every record (default 30)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Publish every line that fits the schema; report each skipped line with its number (exit 1)."""
    from stream.avro.schema import load_schema
    from stream.avro.wire import WireFormat
    from stream.tools.produce import produce_lines

    settings = None
    if args.config is not None:
        from stream import config

        settings = config.load(args.config)
    topic = args.topic
    if topic is None:
        if settings is None or len(settings.kafka.topics) != 1:
            raise UsageError("name the topic with --topic (or give a --config with exactly one kafka.topics entry)")
        topic = settings.kafka.topics[0]
    wire_format = WireFormat(args.wire_format or (settings.decode.wire_format if settings else "schemaless"))
    if wire_format is WireFormat.CONFLUENT and args.schema_id is None:
        raise UsageError("--wire-format confluent needs --schema-id N")
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    if args.partitions is not None and args.partitions < 1:
        raise UsageError("--partitions must be at least 1")
    bootstrap = (args.bootstrap or (settings.kafka.bootstrap_servers if settings else None)
                 or os.environ.get("CAPI_STREAM_BOOTSTRAP") or DEFAULT_BOOTSTRAP)
    try:
        schema = load_schema(str(args.schema) if args.schema else None)
    except SchemaError as exc:
        if args.schema is None:
            raise  # the bundled schema missing: an installation problem, not the command line
        raise UsageError(f"--schema: {exc}") from exc
    if args.file is not None:
        try:
            # surrogateescape: a line that is not UTF-8 fails as that line ("not JSON"), not as the run
            stream = args.file.open(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
    else:
        import io

        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    with stream:
        report = produce_lines(
            stream, topic=topic, bootstrap=bootstrap, schema=schema,
            key_field=args.key_field or None, wire_format=wire_format,
            producer_config=settings.kafka.producer if settings else None,
            schema_id=args.schema_id, partitions=args.partitions, timeout_s=args.timeout,
        )  # fmt: skip
    import structlog

    log = structlog.get_logger("capi_stream.produce")
    for lineno, reason in report.skipped:
        log.warning("line_skipped", line=lineno, reason=reason)
    for err in report.delivery_errors[:5]:
        log.error("delivery_failed", error=err)
    # the command's result on stdout; stderr carries only log events
    print(f"produced {report.produced} records to {topic}"
          f" ({len(report.skipped)} skipped, {len(report.delivery_errors)} failed)")
    return 1 if report.skipped or report.delivery_errors else 0
