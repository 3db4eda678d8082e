"""JSON Schemas for the custom resources in config/kubernetes/: KEDA's ScaledObject (keda.sh/v1alpha1) and
the Prometheus operator's ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1).

kubernetes-validate bundles only Kubernetes' own schemas. These are written from the CRDs' published
OpenAPI schemas and the KEDA Kafka scaler's documented metadata, for the parts our manifests use: each
object we fill lists its allowed fields (a misspelled or invented field fails), with the CRD's types,
enums and patterns. The HPA `behavior` inside a ScaledObject is checked against Kubernetes' own
autoscaling/v2 schema by the test.
"""

from __future__ import annotations

from typing import Any

INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
# the operator's Duration pattern (monitoring.coreos.com CRDs)
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"},
                   "labels": STRING_MAP, "annotations": STRING_MAP},
}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA,
                       "spec": spec},
    }


# The Kafka scaler's trigger metadata (KEDA docs, "Apache Kafka" scaler): every value is a string.
KAFKA_TRIGGER_METADATA = {
    "type": "object", "additionalProperties": False,
    "required": ["bootstrapServers", "consumerGroup"],
    "properties": {
        "bootstrapServers": {"type": "string", "minLength": 1},
        "consumerGroup": {"type": "string", "minLength": 1},
        "topic": {"type": "string"},
        "lagThreshold": {"type": "string", "pattern": r"^[1-9][0-9]*$"},
        "activationLagThreshold": {"type": "string", "pattern": r"^[0-9]+$"},
        "offsetResetPolicy": {"enum": ["latest", "earliest"]},
        "allowIdleConsumers": {"enum": ["true", "false"]},
        "excludePersistentLag": {"enum": ["true", "false"]},
        "scaleToZeroOnInvalidOffset": {"enum": ["true", "false"]},
        "limitToPartitionsWithLag": {"enum": ["true", "false"]},
        "ensureEvenDistributionOfPartitions": {"enum": ["true", "false"]},
        "partitionLimitation": {"type": "string"},
        "version": {"type": "string"},
        "sasl": {"type": "string"},
        "tls": {"type": "string"},
        "unsafeSsl": {"enum": ["true", "false"]},
    },
}

SCALED_OBJECT = _resource("keda.sh/v1alpha1", "ScaledObject", {
    "type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
    "properties": {
        "scaleTargetRef": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "name": {"type": "string", "minLength": 1}, "envSourceContainerName": {"type": "string"}},
        },
        "pollingInterval": INT32, "cooldownPeriod": INT32, "initialCooldownPeriod": INT32,
        "idleReplicaCount": INT32, "minReplicaCount": INT32, "maxReplicaCount": INT32,
        "fallback": {"type": "object", "additionalProperties": False, "required": ["failureThreshold", "replicas"],
                     "properties": {"failureThreshold": INT32, "replicas": INT32}},
        "advanced": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "restoreToOriginalReplicaCount": {"type": "boolean"},
                "horizontalPodAutoscalerConfig": {
                    "type": "object", "additionalProperties": False,
                    # behavior: checked against Kubernetes' HorizontalPodAutoscalerBehavior by the test
                    "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                },
            },
        },
        "triggers": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
                "properties": {
                    "type": {"const": "kafka"},
                    "name": {"type": "string"},
                    "metadata": KAFKA_TRIGGER_METADATA,
                    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                    "useCachedMetrics": {"type": "boolean"},
                    "authenticationRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                          "properties": {"name": {"type": "string"}, "kind": {"type": "string"}}},
                },
            },
        },
    },
})

SERVICE_MONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object", "additionalProperties": False, "required": ["selector"],
    "properties": {
        "selector": LABEL_SELECTOR,
        "namespaceSelector": {"type": "object", "additionalProperties": False,
                              "properties": {"any": {"type": "boolean"},
                                             "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "jobLabel": {"type": "string"},
        "endpoints": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "port": {"type": "string"},
                    "targetPort": {"type": ["string", "integer"]},
                    "path": {"type": "string", "pattern": "^/"},
                    "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                    "interval": DURATION,
                    "scrapeTimeout": DURATION,
                    "honorLabels": {"type": "boolean"},
                },
            },
        },
    },
})

PROMETHEUS_RULE = _resource("monitoring.coreos.com/v1", "PrometheusRule", {
    "type": "object", "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object", "additionalProperties": False, "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": DURATION,
                    "query_offset": DURATION,
                    "limit": {"type": "integer"},
                    "labels": STRING_MAP,
                    "partial_response_strategy": {"type": "string"},
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object", "additionalProperties": False, "required": ["expr"],
                            "properties": {
                                "alert": {"type": "string"}, "record": {"type": "string"},
                                "expr": {"type": ["string", "integer"]},
                                "for": DURATION, "keep_firing_for": {**DURATION, "minLength": 1},
                                "labels": STRING_MAP, "annotations": STRING_MAP,
                            },
                            "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                        },
                    },
                },
            },
        },
    },
})

SCHEMAS = {"ScaledObject": SCALED_OBJECT, "ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
