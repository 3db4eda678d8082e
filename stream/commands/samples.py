"""`capi-stream samples`: realistic sample events as JSON lines, ready for `capi-stream produce`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from stream.commands import Subparsers
from stream.errors import UsageError


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `samples` command to the CLI."""
    parser = sub.add_parser("samples", help="print realistic sample app events as JSON lines")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--app-id", action="append", dest="app_ids", default=None,
                        help="app ids to spread the events over (repeatable; default: the sample apps)")
    parser.add_argument("--duplicate-rate", type=float, default=0.02)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write `--events` records to stdout, one JSON object per line."""
    import orjson

    from stream.tools.samples import DEFAULT_APP_IDS, generate

    if args.events < 0:
        raise UsageError("--events must be >= 0")
    if not 0 <= args.duplicate_rate < 1:
        raise UsageError("--duplicate-rate must be in [0, 1)")
    out = sys.stdout.buffer
    for record in generate(args.events, seed=args.seed, now=int(time.time()),
                           app_ids=tuple(args.app_ids or DEFAULT_APP_IDS), duplicate_rate=args.duplicate_rate):
        out.write(orjson.dumps(record) + b"\n")
    out.flush()
    return 0
