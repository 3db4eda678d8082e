"""`capi-stream kafka up|down|status`: the local single-node KRaft broker."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stream.commands import Subparsers


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `kafka` command and its actions to the CLI."""
    parser = sub.add_parser("kafka", help="run a local single-node Apache Kafka broker (KRaft, 127.0.0.1)")
    parser.add_argument("action", choices=["up", "down", "status"],
                        help="up: start (fetching the jars once with Maven) and print the bootstrap; down: stop; "
                             "status")
    parser.add_argument("--port", type=int, default=None,
                        help="broker port on 127.0.0.1 (default: the last one used, else 9092)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="broker home: config, logs and data (default ~/.local/state/capi-stream/kafka)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="broker jar cache (default $CAPI_STREAM_CACHE_DIR or ~/.cache/capi-stream)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Carry out up, down or status; print one line that says what happened."""
    from stream.tools.kafka import LocalKafka

    broker = LocalKafka(data_dir=args.data_dir, cache_dir=args.cache_dir)
    if args.action == "up":
        t0 = time.monotonic()
        bootstrap, started = broker.start(port=args.port)
        if started:
            print(f"kafka started in {time.monotonic() - t0:.1f}s: bootstrap {bootstrap}", file=sys.stderr)
        else:
            print(f"kafka already running: bootstrap {bootstrap}", file=sys.stderr)
        print(bootstrap)
        return 0
    if args.action == "down":
        stopped = broker.stop()
        print(f"kafka {'stopped' if stopped else 'was not running'} ({broker.home})", file=sys.stderr)
        return 0
    status = broker.status()
    if status.running:
        print(f"kafka running: pid {status.pid}, bootstrap {status.bootstrap} ({broker.home})")
        return 0
    print(f"kafka not running ({broker.home})")
    return 1
