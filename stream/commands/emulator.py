"""`capi-stream emulator`: a local Meta Conversions API that validates like Meta and fails on demand."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from stream.commands import Subparsers
from stream.emulator.flags import latency_range, probability
from stream.errors import UsageError

DEFAULT_PORT = 8089
_FAULT_FLAGS = (
    ("http_500", "answer HTTP 500, Meta's code 1/99"),
    ("http_503", "answer HTTP 503, Meta's code 2"),
    ("throttle", "answer Meta's rate limits 4, 17, 613, 80004 in turn, with usage headers"),
    ("timeout", "hold the request past the client's timeout, then drop it"),
    ("reset", "reset the TCP connection"),
    ("ok_empty", "answer HTTP 200 with an empty body (acknowledges nothing)"),
    ("ok_html", "answer HTTP 200 with an HTML page, as a captive portal or proxy does"),
    ("no_content", "answer HTTP 204"),
    ("bad_version", "answer HTTP 400, code 2500 (unknown path: a retired or wrong API version)"),
    ("waf_403", "answer HTTP 403 with a web application firewall's HTML page"),
)


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `emulator` command to the CLI."""
    parser = sub.add_parser(
        "emulator", help="run a local Meta Conversions API emulator (validation, dedupe, faults on demand)",
        description="Serves POST /{version}/{dataset_id}/events like Meta, plus /_emulator/* for "
        "inspection and faults, and a status page at /.",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--token", action="append", default=[], metavar="DATASET_ID=TOKEN",
                        help="the token valid for a dataset (repeatable); without any, every non-empty "
                        "token is accepted for every dataset")  # fmt: skip
    faults = parser.add_argument_group("faults (probabilities per request; see POST /_emulator/faults)")
    for name, what in _FAULT_FLAGS:
        faults.add_argument(f"--{name.replace('_', '-')}", dest=name, type=probability, default=0.0,
                            metavar="P", help=what)  # fmt: skip
    faults.add_argument("--latency-ms", type=latency_range, default=None, metavar="LO,HI",
                        help="added delay per request, uniform between LO and HI ms")  # fmt: skip
    faults.add_argument("--token-expired", action="store_true", help="answer 190/463 to every request")
    faults.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    faults.add_argument("--timeout-hold", dest="timeout_hold_s", type=float, default=None, metavar="S",
                        help="how long a timeout fault holds a request (default 60 s)")  # fmt: skip
    faults.add_argument("--throttle-regain-minutes", type=int, default=0, metavar="M",
                        help="estimated_time_to_regain_access in throttle answers (default 0)")  # fmt: skip
    parser.add_argument("--keep-events", type=int, default=1000, metavar="N",
                        help="accepted event bodies kept for /_emulator/events (default 1000)")  # fmt: skip
    parser.set_defaults(handler=run)


def parse_tokens(pairs: list[str]) -> dict[str, str] | None:
    """DATASET_ID=TOKEN pairs as a mapping; None when there are none. Raises UsageError for a bad pair."""
    if not pairs:
        return None
    tokens: dict[str, str] = {}
    for pair in pairs:
        dataset_id, sep, token = pair.partition("=")
        if not sep or not dataset_id or not token:
            # Never echo the pair: it holds a token.
            raise UsageError("--token needs DATASET_ID=TOKEN with both parts non-empty")
        tokens[dataset_id] = token
    return tokens


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; print the URL on stdout once listening (logs go to stderr)."""
    from stream import logs
    from stream.emulator import FaultSpec

    logs.configure(getattr(args, "log_level", None) or "info", getattr(args, "log_format", None) or "auto")
    tokens = parse_tokens(args.token)
    for token in (tokens or {}).values():
        logs.register_secret(token)
    if args.keep_events < 0:
        raise UsageError("--keep-events must be >= 0")
    body: dict[str, Any] = {name: getattr(args, name) for name, _ in _FAULT_FLAGS}
    body.update(latency_ms=args.latency_ms, token_expired=args.token_expired, seed=args.seed,
                throttle_regain_minutes=args.throttle_regain_minutes)  # fmt: skip
    if args.timeout_hold_s is not None:
        body["timeout_hold_s"] = args.timeout_hold_s
    spec = FaultSpec.from_mapping(body)
    return asyncio.run(_serve(args.host, args.port, tokens, spec, args.seed, args.keep_events))


async def _serve(host: str, port: int, tokens: dict[str, str] | None, spec: Any, seed: int, keep: int) -> int:
    from stream.emulator import Emulator

    emulator = Emulator(host=host, port=port, tokens=tokens, faults=spec, seed=seed, keep_events=keep)
    try:
        await emulator.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(emulator.url, flush=True)
    print(f"emulator listening on {emulator.url} (status page {emulator.url}/; Ctrl-C stops)", file=sys.stderr)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
    return 0
