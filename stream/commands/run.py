"""`capi-stream run --config FILE`: the pipeline, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `run` command to the CLI."""
    parser = sub.add_parser("run", help="consume, normalize, dedupe, batch, send to Meta, commit after ack")
    parser.add_argument("--config", type=Path, required=True, help="TOML config file (see config/example.toml)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: kafka.bootstrap_servers of --config)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load and validate the config, then run the pipeline until a stop signal; exit 1 if a stage failed."""
    from stream import config
    from stream.logs import configure
    from stream.pipeline.runner import Pipeline

    settings = config.load(args.config)
    if args.bootstrap:
        import dataclasses

        settings = dataclasses.replace(settings, kafka=dataclasses.replace(settings.kafka,
                                                                           bootstrap_servers=args.bootstrap))
    configure(getattr(args, "log_level", None) or settings.logging.level,
              getattr(args, "log_format", None) or settings.logging.format)
    import structlog

    from stream.logs import register_secret
    from stream.pipeline.metrics import check_port_free
    from stream.pipeline.runner import check_kafka_clients

    for dest in settings.destinations:
        register_secret(dest.read_token())
    # what would otherwise crash the start with a traceback: a setting librdkafka refuses, a taken port
    for warning in check_kafka_clients(settings):
        structlog.get_logger("capi_stream.run").warning("kafka_setting_ignored", detail=warning)
    check_port_free(settings.metrics.host, settings.metrics.port)
    return asyncio.run(Pipeline(settings).run_until_stopped())
