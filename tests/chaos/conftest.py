"""Fixtures for the chaos suite: a Kafka broker this suite owns, so it may restart it, and the integration
suite's topic, group and scenario factories bound to that broker.

The shared session broker ($CAPI_STREAM_BOOTSTRAP or the integration suite's) is never touched: other
tests may be using it. The factories are the integration suite's own fixture functions, loaded from its
conftest under another module name; only `kafka_bootstrap` is redefined here, so they build topics,
groups and scenarios on the broker below.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from stream.errors import CapiStreamError
from stream.localkafka import LocalKafka, free_port, probe

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))  # pipeline_harness, as the integration suite imports it


def _integration_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capi_stream_integration_conftest", INTEGRATION / "conftest.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_integration = _integration_conftest()
topic_factory = _integration.topic_factory
group_factory = _integration.group_factory
scenario_factory = _integration.scenario_factory


@pytest.fixture(scope="session")
def chaos_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of the chaos suite's own, in a temporary home on a free port; restartable on the same data."""
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("chaos-kafka"))
    try:
        broker.start(port=free_port())
    except CapiStreamError as exc:
        _integration._unavailable(str(exc))  # fails in CI, skips elsewhere
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(chaos_broker: LocalKafka) -> str:
    """The chaos broker's bootstrap address (overrides the integration suite's shared broker)."""
    bootstrap = chaos_broker.status().bootstrap
    assert bootstrap is not None, f"the chaos broker is not running; see {chaos_broker.log_file}"
    ok, reason = probe(bootstrap, timeout=10)
    if not ok:
        _integration._unavailable(f"{bootstrap} does not answer ({reason})")
    return bootstrap
