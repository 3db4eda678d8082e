"""Admin calls that fail say so in one line an operator can act on."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.tools import admin


def test_a_local_timeout_names_the_broker() -> None:
    """librdkafka's 'Local: Timed out' becomes 'no answer from the broker', as a Python timeout does."""
    future: Future[object] = Future()
    future.set_exception(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    with pytest.raises(admin.AdminError, match="describe group g: no answer from the broker"):
        admin._wait(future, "describe group g")
