"""`capi-stream bench NAME`: measured figures for the README's performance section."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from stream.commands import Subparsers

# name -> (module, one-line help); each module exposes add_arguments(parser) and run(args) -> int.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "e2e": ("stream.benchmarks.e2e", "the pipeline end to end against the local broker and emulator (+ SDK baseline)"),
    "normalize": ("stream.benchmarks.normalize", "events/s of the normalize stage and of Meta's SDK, same events"),
    "emulator": ("stream.benchmarks.emulator", "events/s the Meta emulator validates (server core and end to end)"),
    "stages": ("stream.benchmarks.stages", "CPU µs per event of each preparation stage, A/B in one process"),
    "dedupe": ("stream.benchmarks.dedupe", "bytes per key and ops/s of the dedupe store (1M, 10M keys)"),
    "consistency": ("stream.benchmarks.consistency", "bytes per external_id and ops/s of the user-consistency tracker"),
}


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add `bench` and one sub-command per registered benchmark."""
    parser = sub.add_parser("bench", help="run a benchmark and print its figures")
    benches = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    # benchmark modules import heavy libraries (the SDK, the emulator): only when `bench` is being parsed
    wanted = "bench" in argv
    for name, (module_name, help_text) in BENCHMARKS.items():
        bench = benches.add_parser(name, help=help_text)
        if wanted:
            importlib.import_module(module_name).add_arguments(bench)
        bench.set_defaults(handler=_runner(module_name))


def _runner(module_name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        code: int = importlib.import_module(module_name).run(args)
        return code

    return run
