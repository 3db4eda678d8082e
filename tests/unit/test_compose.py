"""docker-compose.yml stays valid and in step with the code (no Docker engine needed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream import config
from stream.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_whole_thing() -> None:
    """Kafka, the emulator, capi-stream, the sample producer, Prometheus and Grafana are all services."""
    assert set(COMPOSE["services"]) == {"kafka", "emulator", "capi-stream", "samples", "prometheus", "grafana"}
    assert COMPOSE["services"]["kafka"]["image"].startswith("apache/kafka:4.")


@pytest.mark.parametrize("service", ["emulator", "capi-stream"])
def test_service_commands_parse_with_our_cli(service: str) -> None:
    """Each capi-stream service's command line is accepted by the real argument parser."""
    args = build_parser().parse_args(COMPOSE["services"][service]["command"])
    assert args.command == COMPOSE["services"][service]["command"][0]


def test_the_docker_config_loads_and_matches_prometheus() -> None:
    """config/docker.toml is valid, binds metrics inside the network, and Prometheus scrapes that port."""
    command = COMPOSE["services"]["capi-stream"]["command"]
    path = ROOT / command[command.index("--config") + 1].removeprefix("/app/")
    settings = config.load(path, env={})
    env_token = COMPOSE["services"]["capi-stream"]["environment"]["META_CAPI_TOKEN"]
    assert env_token
    assert {d.token_env for d in settings.destinations} == {"META_CAPI_TOKEN"}
    prom = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"capi-stream:{settings.metrics.port}"]
    assert settings.kafka.bootstrap_servers == "kafka:29092"


def test_docker_compose_config_accepts_the_file() -> None:
    """`docker compose config` (or docker-compose) validates the file where the tool is installed."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        cmd = ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"]
    elif shutil.which("docker-compose"):
        cmd = ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"]
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_sample_producer_feeds_what_the_pipeline_reads() -> None:
    """The samples service's records are routed by the capi-stream service's config (every destination gets
    events) and go to its topic at its broker: the pipeline reads the same file, so they cannot drift apart.
    (It named no config: inside the image `samples` fell back to built-in app ids, and produce to its own
    topic and bootstrap flags.)"""
    command = COMPOSE["services"]["capi-stream"]["command"]
    run_config = command[command.index("--config") + 1]
    (line,) = COMPOSE["services"]["samples"]["command"]
    samples, produce = (build_parser().parse_args(shlex.split(part)[1:]) for part in line.split("|"))
    assert (samples.command, produce.command) == ("samples", "produce")
    assert str(samples.config) == str(produce.config) == run_config
    assert (samples.app_ids, produce.topic, produce.bootstrap) == (None, None, None)  # all from the config
