"""`capi-stream check-config --config F`: validate and print the effective config, secrets redacted."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.commands import Subparsers

# librdkafka passthrough keys that hold secrets (sasl.password, ssl.key.password, ...)
_SECRET_MARKERS = ("password", "secret", "token", "sasl.oauthbearer.config", "ssl.key.pem")
REDACTED = "[REDACTED]"


def register(sub: Subparsers, argv: Sequence[str]) -> None:
    """Add the `check-config` command to the CLI."""
    parser = sub.add_parser("check-config", help="validate a config file and print the effective settings")
    parser.add_argument("--config", type=Path, required=True, help="capi-stream TOML config to check")
    parser.set_defaults(handler=run)


def redacted(value: Any, key: str = "") -> Any:
    """A JSON-friendly copy of settings with secret-looking passthrough values replaced."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: redacted(getattr(value, f.name), f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: REDACTED if any(m in k.lower() for m in _SECRET_MARKERS) else redacted(v, k)
                for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [redacted(v, key) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    """Exit 0 and print the settings when valid (warnings about ignored librdkafka settings on stderr),
    exit 2 with one line naming the key and the file (or the variable) when not."""
    import orjson
    import structlog

    from stream import config
    from stream.pipeline.metrics import check_port_free
    from stream.pipeline.runner import check_kafka_clients

    settings = config.load(args.config)  # keys, types, ranges, ISO codes, environment overrides
    for dest in settings.destinations:
        dest.read_token()  # ConfigError (exit 2) when the env variable or file holds no token
    # what `run` would otherwise crash on at start: librdkafka keys and values, a metrics port in use
    warnings = check_kafka_clients(settings)
    check_port_free(settings.metrics.host, settings.metrics.port)
    print(orjson.dumps(redacted(settings), option=orjson.OPT_INDENT_2).decode())
    for warning in warnings:
        structlog.get_logger("capi_stream.check_config").warning("kafka_setting_ignored", detail=warning)
    return 0
