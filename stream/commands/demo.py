"""`capi-stream demo`: local Kafka, the emulator, sample events, the pipeline, a summary."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from stream.commands import Subparsers


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `demo` command to the CLI."""
    parser = sub.add_parser("demo", help="run the whole job locally: Kafka, the CAPI emulator, sample events")
    parser.add_argument("--events", type=int, default=5000, help="sample events to produce (default 5000)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its summary."""
    from stream.errors import UsageError
    from stream.tools.demo import main

    if args.events < 10:
        raise UsageError("--events must be at least 10")
    return main(args.events)
