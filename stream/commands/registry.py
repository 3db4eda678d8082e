"""`capi-stream registry up|down|status`: a local Apicurio Registry for the Confluent wire format."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `registry` command and its actions to the CLI."""
    parser = sub.add_parser("registry", help="run a local Apicurio Registry (Confluent-compatible API, 127.0.0.1)")
    parser.add_argument("action", choices=["up", "down", "status"],
                        help="up: start (fetching it once with Maven) and print the URL; down: stop; status")
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP port on 127.0.0.1 (default: the last one used, else 8081)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="registry home: pid, ports and its log (default ~/.local/state/capi-stream/registry)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="application cache (default $CAPI_STREAM_CACHE_DIR or ~/.cache/capi-stream)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """up prints the schema_registry_url on stdout; status exits 1 when none runs."""
    from stream.tools.registry import LocalRegistry

    registry = LocalRegistry(data_dir=args.data_dir, cache_dir=args.cache_dir)
    if args.action == "up":
        t0 = time.monotonic()
        url, started = registry.start(port=args.port)
        what = f"started in {time.monotonic() - t0:.1f}s" if started else "already running"
        print(f"registry {what} ({registry.home}): schema_registry_url {url}", file=sys.stderr)
        print(url)
        return 0
    if args.action == "down":
        stopped = registry.stop()
        print(f"registry {'stopped' if stopped else 'was not running'} ({registry.home})", file=sys.stderr)
        return 0
    status = registry.status()
    if status.running:
        print(f"registry running: pid {status.pid}, schema_registry_url {status.url} ({status.home})")
        return 0
    print(f"registry not running ({status.home})")
    return 1
