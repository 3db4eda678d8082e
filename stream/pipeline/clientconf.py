"""Check librdkafka settings before anything runs: build the client without a broker and read its verdict.

librdkafka refuses an unknown key or a bad value when a client is created (`_INVALID_ARG`), and warns
(CONFWARN) about a setting the client kind ignores. Without `bootstrap.servers` the client connects to
nothing, so `check-config` and `run`'s start-up learn this in milliseconds, offline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stream.errors import ConfigError

# settings that name or reach a broker: left out, so the probe never connects
_NO_CONNECT = ("bootstrap.servers", "metadata.broker.list")


class _Collector:
    """confluent-kafka's logger for the probe: keeps the CONFWARN lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, _level: int, fmt: str, *args: Any) -> None:
        try:
            facility, _client, message = (str(a) for a in args)
        except ValueError:
            return
        line = message.split("]: ", 1)[-1]
        # the probe leaves the broker out on purpose: librdkafka's warning about that is the probe's own
        if facility == "CONFWARN" and not line.startswith("No `bootstrap.servers` configured"):
            self.lines.append(line)


def probe_client(factory: Callable[[dict[str, Any]], Any], refused: type[Exception], conf: Mapping[str, Any],
                 where: str) -> list[str]:
    """Create and close a client of `factory` from `conf` without a broker (`refused`: the client
    library's exception for a configuration it does not accept, KafkaException).

    Returns librdkafka's warnings about ignored settings; raises ConfigError naming `where` and the key
    librdkafka refused.
    """
    collector = _Collector()
    probe = {k: v for k, v in conf.items() if k not in _NO_CONNECT and k != "logger"}
    try:
        client = factory({**probe, "logger": collector})
    except refused as exc:
        err = exc.args[0] if exc.args else None
        detail = err.str() if err is not None and hasattr(err, "str") else str(exc)
        raise ConfigError(f"{where}: librdkafka refuses it: {detail}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: librdkafka refuses it: {exc}") from exc
    try:
        poll = getattr(client, "poll", None)
        if poll is not None:
            poll(0)  # serves the log queue, so the warnings arrive
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()
    return [f"{where}: {line}" for line in collector.lines]
