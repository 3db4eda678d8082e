"""config/kubernetes/: every manifest validates offline (Kubernetes' schemas from kubernetes-validate, the
KEDA and Prometheus-operator resources against the fields their CRDs define), and the manifests agree with
the code; a test breaks each agreement in turn and sees its check fail."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.support.crd_schemas import SCHEMAS
from tests.support.manifests import (
    K8S,
    SECRET_EXAMPLE,
    Manifests,
    check_command,
    check_config,
    check_grace_period,
    check_paths,
    check_ports,
    check_rules,
    check_scaling,
    check_selectors,
    config_text,
    container,
    kustomization,
    load,
    problems,
)

# The oldest Kubernetes minor the manifests are written for (policy/v1 unhealthyPodEvictionPolicy is GA
# in 1.31, beta and on by default from 1.27), and the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.30.0", latest_version()]
CORE_KINDS = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]


def test_the_kustomization_lists_every_manifest_but_the_secret() -> None:
    k = kustomization()
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", SECRET_EXAMPLE}
    assert set(k["resources"]) == on_disk
    assert len(k["resources"]) == len(on_disk)
    assert k["namespace"]
    (image,) = k["images"]
    assert container(load())["image"].split(":")[0] == image["name"]
    assert set(load()) == {*CORE_KINDS, "ScaledObject", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", CORE_KINDS)
def test_kubernetes_schemas_accept_the_manifest(kind: str, version: str) -> None:
    kubernetes_validate.validate(load()[kind], version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_scaled_objects_hpa_behavior_is_a_valid_autoscaling_v2_behavior(version: str) -> None:
    """KEDA hands `advanced.horizontalPodAutoscalerConfig.behavior` to the HPA it creates, unchanged."""
    behavior = load()["ScaledObject"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "keda-hpa"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "capi-stream"},
                    "maxReplicas": 4, "behavior": behavior}}
    kubernetes_validate.validate(hpa, version, strict=True)


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_custom_resources_use_only_fields_their_crds_define(kind: str) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[kind]).validate(load()[kind])


def _typo(m: Manifests, kind: str, path: list[str | int], old: str, new: str) -> dict[str, Any]:
    doc = copy.deepcopy(m[kind])
    node: Any = doc
    for part in path:
        node = node[part]
    node[new] = node.pop(old)
    return doc


def test_the_schema_checks_fail_on_a_misspelled_or_mistyped_field() -> None:
    m = load()
    bad = _typo(m, "Deployment", ["spec", "template", "spec"], "terminationGracePeriodSeconds",
                "terminationGracePeriodSecond")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)
    bad = copy.deepcopy(m["Deployment"])
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "60"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)
    cases = [
        ("ScaledObject", _typo(m, "ScaledObject", ["spec"], "maxReplicaCount", "maxReplicas")),
        ("ScaledObject", _typo(m, "ScaledObject", ["spec", "triggers", 0, "metadata"],
                               "consumerGroup", "group")),
        ("ServiceMonitor", _typo(m, "ServiceMonitor", ["spec", "endpoints", 0], "path",
                                 "metricsPath")),
        ("PrometheusRule", _typo(m, "PrometheusRule", ["spec", "groups", 0, "rules", 0], "for",
                                 "duration")),
    ]
    so = copy.deepcopy(m["ScaledObject"])
    so["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10000  # KEDA's metadata values are strings
    cases.append(("ScaledObject", so))
    rule = copy.deepcopy(m["PrometheusRule"])
    rule["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    cases.append(("PrometheusRule", rule))
    for kind, doc in cases:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(SCHEMAS[kind]).validate(doc)


def test_the_manifests_agree_with_the_code(tmp_path: Path) -> None:
    assert problems(load(), tmp_path) == []


def test_the_prometheus_rule_is_the_alert_rule_file() -> None:
    rules = yaml.safe_load((K8S.parent / "prometheus" / "alerts.yml").read_text())
    assert load()["PrometheusRule"]["spec"]["groups"] == rules["groups"]


# -- each inconsistency, broken on purpose -------------------------------------------------------------

def _set(path: list[Any], value: Any) -> Callable[[Manifests], None]:
    def mutate(m: Manifests) -> None:
        node: Any = m
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


def _toml(old: str, new: str) -> Callable[[Manifests], None]:
    def mutate(m: Manifests) -> None:
        key, text = config_text(m)
        assert text.count(old) == 1, old
        m["ConfigMap"]["data"][key] = text.replace(old, new)
    return mutate


def _container(key: str, value: Any) -> Callable[[Manifests], None]:
    def mutate(m: Manifests) -> None:
        container(m)[key] = value
    return mutate


def _probe(probe: str, field: str, value: Any) -> Callable[[Manifests], None]:
    def mutate(m: Manifests) -> None:
        container(m)[probe]["httpGet"][field] = value
    return mutate


def _token_mount(key: str, value: Any) -> Callable[[Manifests], None]:
    def mutate(m: Manifests) -> None:
        mount = next(v for v in container(m)["volumeMounts"] if v["name"] == "meta-token")
        mount[key] = value
    return mutate


def _rename_secret_key(m: Manifests) -> None:
    data = m["Secret"]["stringData"]
    data["token"] = data.pop("meta-token")


def _trigger(key: str, value: str) -> Callable[[Manifests], None]:
    def mutate(m: Manifests) -> None:
        m["ScaledObject"]["spec"]["triggers"][0]["metadata"][key] = value
    return mutate


def _rule_threshold(m: Manifests) -> None:
    rule = m["PrometheusRule"]["spec"]["groups"][0]["rules"][0]
    rule["expr"] = rule["expr"].replace("5 * 86400", "4 * 86400")


DEPLOY = ["Deployment", "spec", "template"]
Check = Callable[..., list[str]]
BREAKS: dict[str, tuple[Callable[[Manifests], None], Check, str]] = {
    "grace period at the default deadline": (
        _set([*DEPLOY, "spec", "terminationGracePeriodSeconds"], 30), check_grace_period,
        "not above the default shutdown deadline"),
    "grace period without room after the deadline": (
        _set([*DEPLOY, "spec", "terminationGracePeriodSeconds"], 35), check_grace_period,
        "below shutdown_deadline_s 30.0 + 10.0 s"),
    "a longer deadline in the ConfigMap": (
        _toml("shutdown_deadline_s = 30.0", "shutdown_deadline_s = 60.0"), check_grace_period,
        "below shutdown_deadline_s 60.0"),
    "liveness on a path run does not serve": (_probe("livenessProbe", "path", "/health"), check_paths,
                                              "livenessProbe /health is not served by capi-stream run (HTTP 404)"),
    "readiness on a path run does not serve": (_probe("readinessProbe", "path", "/ready"), check_paths,
                                               "readinessProbe /ready is not served"),
    "readiness on the liveness path": (_probe("readinessProbe", "path", "/healthz"), check_paths,
                                       "the readiness probe is not /readyz"),
    "liveness on the readiness path": (_probe("livenessProbe", "path", "/readyz"), check_paths,
                                       "the liveness probe is not /healthz"),
    "scraping a path run does not serve": (_set(["ServiceMonitor", "spec", "endpoints", 0, "path"], "/prometheus"),
                                           check_paths, "ServiceMonitor /prometheus is not served"),
    "annotation path run does not serve": (
        _set([*DEPLOY, "metadata", "annotations", "prometheus.io/path"], "/stats"), check_paths,
        "prometheus.io/path /stats is not served"),
    "container port differs": (_container("ports", [{"name": "metrics", "containerPort": 9000}]), check_ports,
                                "containerPort 'metrics' 9000 differs from metrics.port 9464"),
    "ConfigMap port differs": (_toml("port = 9464", "port = 9465"), check_ports,
                               "containerPort 'metrics' 9464 differs from metrics.port 9465"),
    "metrics on loopback only": (_toml('host = "0.0.0.0"', 'host = "127.0.0.1"'), check_ports,
                                 "metrics.host 127.0.0.1 is not reachable"),
    "probe on a numbered wrong port": (_probe("readinessProbe", "port", 8080), check_ports,
                                       "readinessProbe port 8080 is not metrics.port 9464"),
    "Service targets another port": (_set(["Service", "spec", "ports", 0, "targetPort"], 8080), check_ports,
                                     "Service targetPort 8080"),
    "scrape annotation on another port": (
        _set([*DEPLOY, "metadata", "annotations", "prometheus.io/port"], "9090"), check_ports,
        "prometheus.io/port 9090 is not 9464"),
    "a key check-config refuses": (_toml('format = "json"', 'format = "json"\nfromat = "json"'), check_config,
                                   "capi-stream check-config exit 2"),
    "a value check-config refuses": (_toml('dataset_id = "123456789012345"', 'dataset_id = "my-pixel"'),
                                     check_config, "capi-stream check-config exit 2"),
    "token mounted with subPath": (_token_mount("subPath", "meta-token"), check_config, "subPath"),
    "token file outside the Secret mount": (
        _toml('token_file = "/var/run/secrets/capi-stream/meta-token"', 'token_file = "/etc/capi-stream/token"'),
        check_config, "is not in the mounted Secret"),
    "Secret without the token's key": (_rename_secret_key, check_config, "the Secret has no key meta-token"),
    "token from the environment": (
        _toml('token_file = "/var/run/secrets/capi-stream/meta-token"', 'token_env = "META_CAPI_TOKEN"'),
        check_config, "reads its token from the environment"),
    "runs another command": (_container("args", ["emulator"]), check_command, "not `run`"),
    "--config elsewhere": (_container("args", ["run", "--config", "/etc/capi-stream/other.toml"]), check_command,
                           "--config /etc/capi-stream/other.toml is not the ConfigMap's capi-stream.toml"),
    "KEDA on another group": (_trigger("consumerGroup", "capi"), check_scaling, "KEDA watches group capi"),
    "KEDA on another broker": (_trigger("bootstrapServers", "kafka:9092"), check_scaling, "KEDA asks kafka:9092"),
    "KEDA on another topic": (_trigger("topic", "orders"), check_scaling, "KEDA measures topic orders"),
    "KEDA counting from latest": (_trigger("offsetResetPolicy", "latest"), check_scaling, "offsetResetPolicy latest"),
    "KEDA allowed idle consumers": (_trigger("allowIdleConsumers", "true"), check_scaling, "allowIdleConsumers"),
    "more replicas than partitions": (_set(["ScaledObject", "spec", "maxReplicaCount"], 8), check_scaling,
                                      "max 8 <= the topic's 4 partitions"),
    "scale-down without a wait": (
        _set(["ScaledObject", "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown",
              "stabilizationWindowSeconds"], 0), check_scaling, "scale-down waits 0 s"),
    "replicas in the Deployment": (_set(["Deployment", "spec", "replicas"], 3), check_scaling, "KEDA owns"),
    "Service selects other pods": (_set(["Service", "spec", "selector"], {"app": "capi"}), check_selectors,
                                   "the Service selects"),
    "PDB selects other pods": (_set(["PodDisruptionBudget", "spec", "selector", "matchLabels"], {"app": "capi"}),
                               check_selectors, "the PodDisruptionBudget selects"),
    "not-ready pods unscraped": (_set(["Service", "spec", "publishNotReadyAddresses"], False), check_selectors,
                                 "hides not-ready pods"),
    "rules edited in one place only": (_rule_threshold, check_rules, "differ from config/prometheus/alerts.yml"),
}


# each check's verdict on the unbroken manifests, found once: check_config runs `capi-stream check-config` in
# a fresh interpreter, a second or two each time, and six breaks share it
_UNBROKEN: dict[Any, list[str]] = {}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_inconsistency_fails_its_check(name: str, tmp_path: Path,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    mutate, check, expected = BREAKS[name]
    m = copy.deepcopy(load())
    takes_tmp = check not in (check_command, check_selectors, check_rules)
    if check not in _UNBROKEN:
        unbroken = copy.deepcopy(load())
        _UNBROKEN[check] = check(unbroken, tmp_path_factory.mktemp("unbroken")) if takes_tmp else check(unbroken)
    assert _UNBROKEN[check] == [], "the check fails before the break"
    mutate(m)
    found = check(m, tmp_path) if takes_tmp else check(m)
    assert any(expected in p for p in found), found


def test_the_grace_period_is_explained_where_it_is_set() -> None:
    text = (K8S / "deployment.yaml").read_text()
    before = text[:text.index("terminationGracePeriodSeconds:")]
    assert "shutdown_deadline_s" in before[-1500:]
    assert "SIGKILL" in before[-1500:]
