"""capi-stream: Kafka -> Meta Conversions API, at least once, commit after Meta's ack."""

__version__ = "0.1.0"
