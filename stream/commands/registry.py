"""`capi-stream registry up|down|status`: a local Apicurio Registry for the Confluent wire format."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers
from stream.commands.services import LocalService, add_service_parser


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `registry` command: up prints the schema_registry_url on stdout, status exits 1 when none runs."""
    add_service_parser(
        sub, "registry", "schema_registry_url", _registry,
        summary="run a local Apicurio Registry (Confluent-compatible API, 127.0.0.1)",
        up_help="up: start (fetching it once with Maven) and print the URL; down: stop; status",
        port_help="HTTP port on 127.0.0.1 (default: the last one used, else 8081)",
        home_help="registry home: pid, ports and its log (default ~/.local/state/capi-stream/registry)",
        cache_help="application cache (default $CAPI_STREAM_CACHE_DIR or ~/.cache/capi-stream)",
    )  # fmt: skip


def _registry(data_dir: Path | None, cache_dir: Path | None) -> LocalService:
    from stream.tools.registry import LocalRegistry

    return LocalRegistry(data_dir=data_dir, cache_dir=cache_dir)
