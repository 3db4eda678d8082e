"""The Kubernetes Deployment's container, run here: its args and the ConfigMap's config as shipped (only the
cluster addresses overridden from the environment, as `CAPI_STREAM_*` variables would be in a pod), against
the real broker and the emulator. The probes' paths answer as the kubelet needs, the ServiceMonitor's path
serves our metrics, the events reach Meta and are committed, and SIGTERM ends the pod well inside its
termination grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.emulator.server import EmulatorThread
from stream.tools.kafka import free_port
from stream.tools.samples import generate
from tests.support.harness import committed, end_offsets, http_get, produce_records, wait_until
from tests.support.manifests import config_text, container, load, pod_spec, settings

pytestmark = pytest.mark.kafka


def test_the_deployments_container_serves_its_probes_and_stops_within_its_grace_period(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str], tmp_path: Path
) -> None:
    m = load()
    c = container(m)
    shipped = settings(m, tmp_path)
    (dest,) = shipped.destinations
    topic, dlq, group = topic_factory(partitions=2), topic_factory(partitions=1, prefix="dlq"), group_factory()
    token = "k8s-token"  # noqa: S105 - the emulator's test token
    (tmp_path / "meta-token").write_text(token + "\n")
    port = free_port()
    key, text = config_text(m)
    config = tmp_path / key
    config.write_text(text)
    args = list(c["args"])
    args[args.index("--config") + 1] = str(config)
    log = tmp_path / "pod.log"
    with EmulatorThread(tokens={dest.dataset_id: token}) as emulator:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CAPI_STREAM_")},
            "CAPI_STREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "CAPI_STREAM_KAFKA__TOPICS": topic,
            "CAPI_STREAM_KAFKA__GROUP_ID": group, "CAPI_STREAM_KAFKA__DLQ_TOPIC": dlq,
            "CAPI_STREAM_METRICS__PORT": str(port),
            f"CAPI_STREAM_DESTINATIONS__{dest.name.upper()}__BASE_URL": emulator.url,
            f"CAPI_STREAM_DESTINATIONS__{dest.name.upper()}__TOKEN_FILE": str(tmp_path / "meta-token"),
        }
        records = list(generate(200, seed=11, now=int(time.time()), app_ids=dest.app_ids, duplicate_rate=0))
        produce_records(kafka_bootstrap, topic, records)
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream", *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            ready = c["readinessProbe"]["httpGet"]["path"]
            assert wait_until(lambda: http_get(base + ready)[0] == 200, 60), log.read_text()[-2000:]
            for probe in ("livenessProbe", "startupProbe"):
                assert http_get(base + c[probe]["httpGet"]["path"])[0] == 200, probe
            scrape_path = m["ServiceMonitor"]["spec"]["endpoints"][0]["path"]
            status, body = http_get(base + scrape_path)
            assert status == 200
            assert b"capi_stream_consumed_total" in body
            end = end_offsets(kafka_bootstrap, topic, 2)
            assert wait_until(lambda: committed(kafka_bootstrap, group, topic, 2) == end, 60), \
                "the pod never committed what it consumed"
            assert emulator.received(), "nothing reached the emulator"
            grace = pod_spec(m)["terminationGracePeriodSeconds"]
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(grace)
            assert code == 0, log.read_text()[-2000:]
            assert time.monotonic() - started < grace
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
