"""Consistency of config/kubernetes/ with the code: each check returns the problems it finds, so a test can
break one thing in a copy of the manifests and see exactly that check complain."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import yaml

from stream import config
from stream.cli import build_parser
from stream.tools.kafka import free_port
from tests.support.deploy import CONFIG

K8S = CONFIG / "kubernetes"
SECRET_EXAMPLE = "secret.example.yaml"  # noqa: S105 - a file name
# The shutdown deadline bounds the drain and the consumer's close; stopping the senders, the dead-letter
# producer and the interpreter comes after it, so the grace period keeps at least this much on top.
CLOSE_MARGIN_S = 10.0

Manifests = dict[str, dict[str, Any]]


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return doc


def load() -> Manifests:
    """Every manifest of the kustomization plus the Secret example, by kind (one of each)."""
    found: Manifests = {}
    for name in [*kustomization()["resources"], SECRET_EXAMPLE]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} manifests"
            found[doc["kind"]] = doc
    return found


def copied() -> Manifests:
    return copy.deepcopy(load())


def pod_spec(m: Manifests) -> dict[str, Any]:
    spec: dict[str, Any] = m["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(m: Manifests) -> dict[str, Any]:
    (c,) = pod_spec(m)["containers"]
    return c


def config_text(m: Manifests) -> tuple[str, str]:
    """(key, TOML text) of the ConfigMap's one config file."""
    ((key, text),) = m["ConfigMap"]["data"].items()
    return key, text


def settings(m: Manifests, tmp: Path) -> config.Settings:
    key, text = config_text(m)
    path = tmp / key
    path.write_text(text)
    return config.load(path, env={})


def _resolve_port(m: Manifests, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in container(m).get("ports", [])}
    return by_name.get(port)


def check_grace_period(m: Manifests, tmp: Path) -> list[str]:
    s = settings(m, tmp)
    grace = pod_spec(m).get("terminationGracePeriodSeconds", 30)
    default = config.PipelineSettings().shutdown_deadline_s
    need = s.pipeline.shutdown_deadline_s + CLOSE_MARGIN_S
    problems = []
    if not grace > default:
        problems.append(f"terminationGracePeriodSeconds {grace} is not above the default shutdown deadline {default}")
    if not grace >= need:
        problems.append(f"terminationGracePeriodSeconds {grace} is below shutdown_deadline_s "
                        f"{s.pipeline.shutdown_deadline_s} + {CLOSE_MARGIN_S} s to stop after it")
    return problems


def check_ports(m: Manifests, tmp: Path) -> list[str]:
    s = settings(m, tmp)
    c = container(m)
    problems = []
    if s.metrics.port == 0:
        return ["the ConfigMap's config disables the metrics server (metrics.port = 0): no probes, no metrics"]
    if s.metrics.host not in ("0.0.0.0", "::"):
        problems.append(f"metrics.host {s.metrics.host} is not reachable from the kubelet and Prometheus")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("metrics") != s.metrics.port:
        problems.append(f"containerPort 'metrics' {ports.get('metrics')} differs from metrics.port {s.metrics.port}")
    problems.extend(f"{probe} port {c[probe]['httpGet']['port']} is not metrics.port {s.metrics.port}"
                    for probe in ("livenessProbe", "readinessProbe", "startupProbe")
                    if probe in c and _resolve_port(m, c[probe]["httpGet"]["port"]) != s.metrics.port)
    (svc_port,) = m["Service"]["spec"]["ports"]
    if _resolve_port(m, svc_port["targetPort"]) != s.metrics.port:
        problems.append(f"Service targetPort {svc_port['targetPort']} is not metrics.port {s.metrics.port}")
    problems.extend(f"ServiceMonitor port {e['port']} names no Service port"
                    for e in m["ServiceMonitor"]["spec"]["endpoints"] if e["port"] != svc_port["name"])
    annotations = m["Deployment"]["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(s.metrics.port):
        problems.append(f"prometheus.io/port {annotations.get('prometheus.io/port')} is not {s.metrics.port}")
    return problems


async def _statuses(m: Manifests, tmp: Path, paths: list[str]) -> dict[str, int]:
    """GET each path from the metrics server `capi-stream run` starts (the real MetricsServer over a
    Pipeline built from the ConfigMap's config, nothing else started), on a free loopback port."""
    from stream.pipeline.metrics import MetricsServer
    from stream.pipeline.runner import Pipeline

    server = MetricsServer(Pipeline(settings(m, tmp)), "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            found = {}
            for path in paths:
                async with session.get(f"http://127.0.0.1:{server.port}{path}") as answer:
                    found[path] = answer.status
            return found
    finally:
        await server.stop()


def check_paths(m: Manifests, tmp: Path) -> list[str]:
    c = container(m)
    wanted = {f"{probe} {c[probe]['httpGet']['path']}": c[probe]["httpGet"]["path"]
              for probe in ("livenessProbe", "readinessProbe", "startupProbe") if probe in c}
    wanted.update({f"ServiceMonitor {e.get('path', '/metrics')}": e.get("path", "/metrics")
                   for e in m["ServiceMonitor"]["spec"]["endpoints"]})
    annotations = m["Deployment"]["spec"]["template"]["metadata"].get("annotations", {})
    wanted[f"prometheus.io/path {annotations.get('prometheus.io/path')}"] = annotations.get("prometheus.io/path", "")
    statuses = asyncio.run(_statuses(m, tmp, sorted(set(wanted.values()))))
    problems = [f"{what} is not served by capi-stream run (HTTP {statuses[path]})"
                for what, path in wanted.items() if statuses[path] == 404]
    # the roles: liveness must not depend on Kafka or Meta (a restart fixes neither), readiness must
    if "livenessProbe" not in c or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
        problems.append("the liveness probe is not /healthz (the event loop's heartbeat)")
    if "readinessProbe" not in c or c["readinessProbe"]["httpGet"]["path"] != "/readyz":
        problems.append("the readiness probe is not /readyz (partitions, broker, destinations)")
    return problems


def check_command(m: Manifests) -> list[str]:
    c = container(m)
    args = build_parser().parse_args(c["args"])
    if args.command != "run":
        return [f"the container runs `{args.command}`, not `run`"]
    mounts = {v["name"]: v for v in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(m)["volumes"]}
    config_path = PurePosixPath(str(args.config))
    key, _ = config_text(m)
    for name, volume in volumes.items():
        if (volume.get("configMap", {}).get("name") == m["ConfigMap"]["metadata"]["name"] and name in mounts
                and config_path == PurePosixPath(mounts[name]["mountPath"]) / key):
            return []
    return [f"--config {config_path} is not the ConfigMap's {key} where it is mounted"]


def check_config(m: Manifests, tmp: Path) -> list[str]:
    """`capi-stream check-config` accepts the ConfigMap's config; each token file comes from the Secret."""
    key, text = config_text(m)
    path = tmp / key
    path.write_text(text)
    raw = tomllib.loads(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_STREAM_")}
    # Whether the pod's port is free is the pod's business, not this machine's (where another process may
    # hold 9464): check-config sees a free port here, and check_ports holds the real one to the manifests.
    env["CAPI_STREAM_METRICS__PORT"] = str(free_port())
    problems = []
    c = container(m)
    mounts = {v["name"]: v for v in c["volumeMounts"]}
    secret = m["Secret"]
    for name, dest in raw.get("destinations", {}).items():
        if dest.get("token_env"):
            problems.append(f"destination {name} reads its token from the environment, not a mounted Secret file")
            env[dest["token_env"]] = "check-config-token"
            continue
        token_file = PurePosixPath(dest.get("token_file", ""))
        # where the pod would find it: check-config reads the same token from a local copy
        local = tmp / f"token-{name}"
        local.write_text("check-config-token\n")
        env[f"CAPI_STREAM_DESTINATIONS__{name.upper()}__TOKEN_FILE"] = str(local)
        volume = next((v for v in pod_spec(m)["volumes"] if v["name"] in mounts
                       and token_file.parent == PurePosixPath(mounts[v["name"]]["mountPath"])), None)
        if volume is None or volume.get("secret", {}).get("secretName") != secret["metadata"]["name"]:
            problems.append(f"destination {name}: token_file {token_file} is not in the mounted Secret "
                            f"{secret['metadata']['name']}")
            continue
        if "subPath" in mounts[volume["name"]]:
            problems.append(f"destination {name}: the token is mounted with subPath "
                            "(a rotated Secret never reaches it)")
        keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
        if token_file.name not in keys:
            problems.append(f"destination {name}: the Secret has no key {token_file.name}")
    proc = subprocess.run([sys.executable, "-m", "stream", "check-config", "--config", str(path)],
                          capture_output=True, text=True, env=env, check=False, timeout=120)
    if proc.returncode != 0:
        problems.append(f"capi-stream check-config exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return problems


def check_scaling(m: Manifests, tmp: Path) -> list[str]:
    from stream.pipeline import source

    s = settings(m, tmp)
    so = m["ScaledObject"]
    spec = so["spec"]
    problems = []
    if spec["scaleTargetRef"]["name"] != m["Deployment"]["metadata"]["name"]:
        problems.append("the ScaledObject scales another Deployment")
    partitions = int(so["metadata"]["annotations"]["capi-stream/topic-partitions"])
    if not 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"] <= partitions:
        problems.append(f"replicas must be 1 <= min {spec.get('minReplicaCount')} <= max {spec['maxReplicaCount']} "
                        f"<= the topic's {partitions} partitions")
    if "replicas" in m["Deployment"]["spec"]:
        problems.append("the Deployment sets replicas, which KEDA owns (every apply would reset the scale)")
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    if meta["consumerGroup"] != s.kafka.group_id:
        problems.append(f"KEDA watches group {meta['consumerGroup']}, the pods join {s.kafka.group_id}")
    if meta["bootstrapServers"] != s.kafka.bootstrap_servers:
        problems.append(f"KEDA asks {meta['bootstrapServers']}, the pods use {s.kafka.bootstrap_servers}")
    if "topic" in meta and (len(s.kafka.topics) != 1 or meta["topic"] != s.kafka.topics[0]):
        problems.append(f"KEDA measures topic {meta['topic']}, the pods consume {list(s.kafka.topics)}")
    reset = s.kafka.consumer.get("auto.offset.reset", source._DEFAULTS["auto.offset.reset"])
    if meta.get("offsetResetPolicy", "latest") != reset:
        problems.append(f"KEDA counts lag as offsetResetPolicy {meta.get('offsetResetPolicy', 'latest')}, "
                        f"the pods start at {reset}")
    if meta.get("allowIdleConsumers", "false") != "false":
        problems.append("allowIdleConsumers lets KEDA add replicas that get no partition")
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
    down = behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 300)
    if spec.get("cooldownPeriod", 300) < 60 or down < 300:
        problems.append(f"scale-down waits {down} s (cooldown {spec.get('cooldownPeriod', 300)} s): every step "
                        "is a rebalance; keep it at 5 minutes or more")
    return problems


def check_selectors(m: Manifests) -> list[str]:
    labels = m["Deployment"]["spec"]["template"]["metadata"]["labels"]
    problems = []

    def covers(selector: dict[str, str], target: dict[str, str], what: str) -> None:
        if not selector or any(target.get(k) != v for k, v in selector.items()):
            problems.append(f"{what} selects {selector}, which does not match {target}")

    covers(m["Deployment"]["spec"]["selector"]["matchLabels"], labels, "the Deployment")
    covers(m["Service"]["spec"]["selector"], labels, "the Service")
    covers(m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels, "the PodDisruptionBudget")
    covers(m["ServiceMonitor"]["spec"]["selector"]["matchLabels"], m["Service"]["metadata"]["labels"],
           "the ServiceMonitor")
    if not m["Service"]["spec"].get("publishNotReadyAddresses"):
        problems.append("the Service hides not-ready pods: a halted destination's metrics would go unscraped")
    return problems


def check_rules(m: Manifests) -> list[str]:
    rules = yaml.safe_load((CONFIG / "prometheus" / "alerts.yml").read_text())
    if m["PrometheusRule"]["spec"]["groups"] != rules["groups"]:
        return ["the PrometheusRule's groups differ from config/prometheus/alerts.yml"]
    return []


def problems(m: Manifests, tmp: Path) -> list[str]:
    """Everything that is inconsistent between the manifests and the code."""
    return [*check_grace_period(m, tmp), *check_ports(m, tmp), *check_paths(m, tmp), *check_command(m),
            *check_config(m, tmp), *check_scaling(m, tmp), *check_selectors(m), *check_rules(m)]
