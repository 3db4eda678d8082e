"""The `capi-stream` command line: argument parsing, logging set-up and exit codes.

Each subcommand lives in `stream/commands/<name>.py` and exposes `register(subparsers, argv)`; heavy imports
happen inside the handlers so `capi-stream --help` stays fast. Exit codes: 0 success, 1 the command ran
but found a problem or failed at run time (skipped lines, a broker that is down, a dead-letter topic that
refuses writes), 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stream import __version__
from stream.errors import CapiStreamError, UsageError

# Order is the order of `capi-stream --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "stream.commands.kafka",
    "stream.commands.registry",
    "stream.commands.demo",
    "stream.commands.run",
    "stream.commands.status",
    "stream.commands.check_config",
    "stream.commands.quality",
    "stream.commands.produce",
    "stream.commands.samples",
    "stream.commands.normalize",
    "stream.commands.emulator",
    "stream.commands.bench",
    "stream.commands.replay",
    "stream.commands.dlq",
)

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console", "auto")

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser with every registered subcommand (`argv` lets heavy ones load only when used)."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="capi-stream",
        description="Kafka -> Meta Conversions API stream processor (at least once, commit after ack).",
    )
    parser.add_argument("--version", action="version", version=f"capi-stream {__version__}")
    _log_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, words)
    for command in sub.choices.values():
        # accepted after the command name too; SUPPRESS keeps a value given before it
        _log_options(command, argparse.SUPPRESS)
    return parser


def _log_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=default,
                        help="log level (default info; `run` reads [logging] from its config)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=default,
                        help="structlog output on stderr: json, console, or auto (console on a TTY; default)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code; errors become one line on stderr."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from confluent_kafka import KafkaError, KafkaException

    from stream.logs import configure

    # every command logs through structlog on stderr, librdkafka's lines included; commands with a
    # config of their own (run) configure again from it unless these flags were given
    configure(args.log_level or "info", args.log_format or "auto")
    try:
        code: int = args.handler(args)
    except UsageError as exc:  # bad usage or bad config: the person can fix the command line or the file
        print(f"capi-stream: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CapiStreamError as exc:  # the command was right but something at run time failed
        print(f"capi-stream: error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KafkaException as exc:  # a librdkafka failure no command turned into a CapiStreamError
        err = exc.args[0] if exc.args else None
        detail = err.str() if isinstance(err, KafkaError) else str(exc)
        invalid = isinstance(err, KafkaError) and err.code() == KafkaError._INVALID_ARG
        print(f"capi-stream: error: Kafka: {detail}" + (" (a librdkafka setting in the config?)" if invalid else ""),
              file=sys.stderr)
        return EXIT_USAGE if invalid else EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`... | head`): stop quietly, as Unix tools do
        sys.stderr.close()
        return 141
    return code


if __name__ == "__main__":
    raise SystemExit(main())
