"""One root error for capi-stream; subclasses say whether a retry can help.

Retry logic reads `retriable` and `retry_after`, never the message text.
"""

from __future__ import annotations


class CapiStreamError(Exception):
    """Root of every error capi-stream raises on purpose."""

    retriable: bool = False
    retry_after: float | None = None


class UsageError(CapiStreamError):
    """Bad input from the person at the CLI: a missing tool, a bad flag, a bad file (exit code 2)."""


class ConfigError(UsageError):
    """The configuration is invalid; the message names the key and the file."""


class BrokerError(CapiStreamError):
    """The local Kafka broker could not be assembled, started or reached."""


class SchemaError(CapiStreamError):
    """An Avro schema could not be loaded or parsed."""


class EncodeError(CapiStreamError):
    """A record does not fit the Avro schema."""
