"""Fixtures for tests against the real local Kafka broker (a pytest plugin, loaded by tests/conftest.py).

The broker comes from $CAPI_STREAM_BOOTSTRAP (set by .ci/run after `capi-stream kafka up`) or, when that
is unset, is started here with the same launcher in a temporary home. When no broker can be had, the
tests fail with a clear message in CI (CI=true) and skip with the reason elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.emulator import EmulatorThread
from stream.errors import CapiStreamError
from stream.tools.kafka import LocalKafka, free_port, probe
from stream.tools.produce import ensure_topic
from tests.support.harness import APPS_A, APPS_B, Dest, Scenario, write_config
from tests.support.missing import unavailable

BOOTSTRAP_ENV = "CAPI_STREAM_BOOTSTRAP"
BROKER = "Kafka broker"  # the part unavailable() names


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    """The LocalKafka this session started, or None when the broker came from $CAPI_STREAM_BOOTSTRAP."""
    if os.environ.get(BOOTSTRAP_ENV):
        yield None
        return
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        broker.start(port=free_port())
    except CapiStreamError as exc:
        unavailable(BROKER, str(exc))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafka | None) -> str:
    """Bootstrap address of a broker that answers metadata and group-coordinator requests."""
    if kafka_broker is None:
        bootstrap = os.environ[BOOTSTRAP_ENV]
    else:
        status = kafka_broker.status()
        assert status.bootstrap is not None
        bootstrap = status.bootstrap
    ok, reason = probe(bootstrap, timeout=10)
    if not ok:
        unavailable(BROKER, f"{bootstrap} does not answer ({reason})")
    return bootstrap


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Callable[..., str]:
    """Create a fresh uniquely named topic per call: `topic_factory(partitions=4)`."""

    def make(partitions: int = 4, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        ensure_topic(kafka_bootstrap, name, partitions)
        return name

    return make


@pytest.fixture
def group_factory() -> Callable[[], str]:
    """A fresh consumer group id per call, so tests never share committed offsets."""
    return lambda: f"g-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top directory."""
    return Path(__file__).resolve().parents[2]


@pytest.fixture
def scenario_factory(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str], tmp_path: Path
) -> Iterator[Callable[..., Scenario]]:
    """Build a scenario: fresh topics and group, two destinations with token files, a running emulator."""
    made: list[Scenario] = []

    def make(partitions: int = 4, extra: str = "", faults: dict[str, Any] | None = None) -> Scenario:
        topic = topic_factory(partitions=partitions)
        dlq = topic_factory(partitions=1, prefix="dlq")
        dests = []
        tokens = {}
        for name, dataset, apps in (("shop", "111", APPS_A), ("fitness", "222", APPS_B)):
            token = f"tok-{name}-{uuid.uuid4().hex}"
            token_file = tmp_path / f"{name}.token"
            token_file.write_text(token + "\n")
            tokens[dataset] = token
            dests.append(Dest(name, dataset, apps, token_file))
        emulator = EmulatorThread(tokens=tokens).start()
        if faults:
            emulator.set_faults(faults)
        group = group_factory()
        config = write_config(tmp_path / "capi.toml", bootstrap=kafka_bootstrap, topic=topic, group=group,
                              dlq_topic=dlq, emulator_url=emulator.url, dests=dests, extra=extra)
        scenario = Scenario(kafka_bootstrap, topic, dlq, group, partitions, dests, emulator, config, tmp_path)
        made.append(scenario)
        return scenario

    yield make
    for scenario in made:
        for proc in scenario.processes:
            if proc.alive():
                proc.kill()
        scenario.emulator.stop()
