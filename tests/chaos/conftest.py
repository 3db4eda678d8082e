"""Fixtures for the chaos suite: a Kafka broker this suite owns, so it may restart it.

The shared session broker ($CAPI_STREAM_BOOTSTRAP or the one `tests.support.kafka` starts) is never
touched: other tests may be using it. Only `kafka_bootstrap` is redefined here, so the topic, group and
scenario factories of `tests.support.kafka` build on the broker below.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream.errors import CapiStreamError
from stream.tools.kafka import LocalKafka, free_port, probe
from tests.support.kafka import BROKER
from tests.support.missing import unavailable


@pytest.fixture(scope="session")
def chaos_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of the chaos suite's own, in a temporary home on a free port; restartable on the same data."""
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("chaos-kafka"))
    try:
        broker.start(port=free_port())
    except CapiStreamError as exc:
        unavailable(BROKER, str(exc))  # fails in CI, skips elsewhere
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(chaos_broker: LocalKafka) -> str:
    """The chaos broker's bootstrap address (overrides the suite's shared broker)."""
    bootstrap = chaos_broker.status().bootstrap
    assert bootstrap is not None, f"the chaos broker is not running; see {chaos_broker.log_file}"
    ok, reason = probe(bootstrap, timeout=10)
    if not ok:
        unavailable(BROKER, f"{bootstrap} does not answer ({reason})")
    return bootstrap
