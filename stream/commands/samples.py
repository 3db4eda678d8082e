"""`capi-stream samples`: realistic sample events as JSON lines, ready for `capi-stream produce`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers
from stream.errors import UsageError

# the repository's example config: its destinations route the sample apps by default
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "example.toml"


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `samples` command to the CLI."""
    parser = sub.add_parser("samples", help="print realistic sample app events as JSON lines")
    parser.add_argument("--events", type=int, default=1000, help="how many records (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same records")
    parser.add_argument("--app-id", action="append", dest="app_ids", default=None,
                        help="app ids to spread the events over (repeatable; default: the app ids routed in "
                             "--config)")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"capi-stream TOML config whose destinations' app ids to use (default {EXAMPLE_CONFIG})")
    parser.add_argument("--duplicate-rate", type=float, default=0.02,
                        help="share of records that repeat an earlier event_id (default 0.02)")
    parser.set_defaults(handler=run)


def routed_app_ids(path: Path | None) -> tuple[str, ...]:
    """The app ids the config's destinations route (config/example.toml when no path is given and it
    exists), so `samples | produce | run` sends events the pipeline routes; empty when there is none."""
    from stream import config

    if path is None:
        if not EXAMPLE_CONFIG.is_file():
            return ()
        path = EXAMPLE_CONFIG
    return tuple(config.load(path, env={}).route())


def run(args: argparse.Namespace) -> int:
    """Write `--events` records to stdout, one JSON object per line."""
    import orjson

    from stream.tools.samples import DEFAULT_APP_IDS, generate

    if args.events < 0:
        raise UsageError("--events must be >= 0")
    if not 0 <= args.duplicate_rate < 1:
        raise UsageError("--duplicate-rate must be in [0, 1)")
    app_ids = tuple(args.app_ids or routed_app_ids(args.config) or DEFAULT_APP_IDS)
    out = sys.stdout.buffer
    for record in generate(args.events, seed=args.seed, now=int(time.time()),
                           app_ids=app_ids, duplicate_rate=args.duplicate_rate):
        out.write(orjson.dumps(record) + b"\n")
    out.flush()
    return 0
