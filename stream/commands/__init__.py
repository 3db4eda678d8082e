"""One module per `capi-stream` subcommand.

Each exposes `register(sub, argv)`: it adds its parser to `sub` and sets `handler` to a function of the
parsed arguments that returns the exit code. `argv` is the command line being parsed, so a command with
costly options (bench) loads them only when it is the one asked for.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

__all__ = ["Subparsers"]
