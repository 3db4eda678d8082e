"""`capi-stream kafka up|down|status`: the local single-node KRaft broker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers
from stream.commands.services import LocalService, add_service_parser


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `kafka` command and its actions to the CLI: up prints the bootstrap, status exits 1 when none runs."""
    add_service_parser(
        sub, "kafka", "bootstrap", _broker,
        summary="run a local single-node Apache Kafka broker (KRaft, 127.0.0.1)",
        up_help="up: start (fetching the jars once with Maven) and print the bootstrap; down: stop; status",
        port_help="broker port on 127.0.0.1 (default: the last one used, else 9092)",
        home_help="broker home: config, logs and data (default ~/.local/state/capi-stream/kafka)",
        cache_help="broker jar cache (default $CAPI_STREAM_CACHE_DIR or ~/.cache/capi-stream)",
    )  # fmt: skip


def _broker(data_dir: Path | None, cache_dir: Path | None) -> LocalService:
    from stream.tools.kafka import LocalKafka

    return LocalKafka(data_dir=data_dir, cache_dir=cache_dir)
