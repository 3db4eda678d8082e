"""What `capi-stream kafka` and `capi-stream registry` share: the up|down|status actions of a local service.

Not a command itself (cli.py lists the commands): both service commands build their parser and run their
action through here, so the two print the same lines for the same outcome.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from stream.commands import Subparsers


class ServiceStatus(Protocol):
    """What `status` shows: the pid of the running service (None when none runs) and where it answers."""

    @property
    def pid(self) -> int | None: ...

    @property
    def address(self) -> str | None: ...


class LocalService(Protocol):
    """A local service as the commands see it: its home, start (address, started now), stop and status."""

    @property
    def home(self) -> Path: ...

    def start(self, port: int | None = None) -> tuple[str, bool]: ...

    def stop(self) -> bool: ...

    def status(self) -> ServiceStatus: ...


def add_service_parser(sub: Subparsers, name: str, label: str, make: Callable[[Path | None, Path | None], LocalService],
                       *, summary: str, up_help: str, port_help: str, home_help: str, cache_help: str) -> None:
    """Add `name up|down|status` with --port, --data-dir and --cache-dir.

    `make(data_dir, cache_dir)` builds the service (importing it only when the command runs); `label` names
    its address in the lines printed.
    """
    parser = sub.add_parser(name, help=summary)
    parser.add_argument("action", choices=["up", "down", "status"], help=up_help)
    parser.add_argument("--port", type=int, default=None, help=port_help)
    parser.add_argument("--data-dir", type=Path, default=None, help=home_help)
    parser.add_argument("--cache-dir", type=Path, default=None, help=cache_help)

    def handler(args: argparse.Namespace) -> int:
        return run_service(args.action, name, label, make(args.data_dir, args.cache_dir), args.port)

    parser.set_defaults(handler=handler)


def run_service(action: str, name: str, label: str, service: LocalService, port: int | None) -> int:
    """Carry out up, down or status; one line on stderr says what happened.

    up prints the service's address on stdout; status prints its pid and address (`label`) on stdout and
    exits 1 when none runs.
    """
    if action == "up":
        t0 = time.monotonic()
        address, started = service.start(port=port)
        what = f"started in {time.monotonic() - t0:.1f}s" if started else "already running"
        print(f"{name} {what} ({service.home}): {label} {address}", file=sys.stderr)
        print(address)
        return 0
    if action == "down":
        stopped = service.stop()
        print(f"{name} {'stopped' if stopped else 'was not running'} ({service.home})", file=sys.stderr)
        return 0
    status = service.status()
    if status.pid is not None:
        print(f"{name} running: pid {status.pid}, {label} {status.address} ({service.home})")
        return 0
    print(f"{name} not running ({service.home})")
    return 1
