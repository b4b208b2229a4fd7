"""DataHub Cloud's remote-executor entities, for a control plane without acryl-datahub-cloud.

Open-source acryl-datahub has no classes for `dataHubRemoteExecutorPool`,
`dataHubRemoteExecutor` and `dataHubRemoteExecutorGlobalConfig`: they exist only in DataHub
Cloud's model (the PyPI package acryl-datahub-cloud). The control plane needs them at run time,
and the Cloud package is large and pins an exact acryl-datahub, so their Avro schemas are
written out here: the same names, namespaces, fields, types and defaults (documentation
omitted). tests/controlplane/test_metadata_registry.py checks them against
acryl_datahub_cloud.metadata.schema_classes field by field. Where the installed model has these
entities (acryl-datahub-cloud installed), the registry uses that model instead.
"""
from __future__ import annotations

from typing import Any

KEY_NAMESPACE = "com.linkedin.pegasus2avro.metadata.key"


def _key(name: str, aspect: str, entity: str, aspects: list[str]) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": KEY_NAMESPACE,
            "Aspect": {"name": aspect, "keyForEntity": entity, "entityCategory": "internal", "entityAspects": aspects},
            "fields": [{"type": "string", "name": "id"}]}


def _optional(kind: Any, name: str) -> dict[str, Any]:
    return {"type": ["null", kind], "name": name, "default": None}


POOL = "com.linkedin.pegasus2avro.executorpool"
POOL_CHANNEL = {"type": "enum", "name": "RemoteExecutorPoolChannel", "namespace": POOL, "symbols": ["SQS", "KAFKA"]}
POOL_STATE = {
    "type": "record", "name": "RemoteExecutorPoolState", "namespace": POOL,
    "fields": [
        {"type": {"type": "enum", "name": "RemoteExecutorPoolStatus", "namespace": POOL,
                  "symbols": ["PROVISIONING_PENDING", "PROVISIONING_IN_PROGRESS", "PROVISIONING_FAILED", "READY",
                              "OLD_CHANNEL_DRAINING"]},
         "name": "status"},
        _optional("string", "message"),
    ],
}

SCHEMAS: list[dict[str, Any]] = [
    _key("RemoteExecutorPoolKey", "dataHubRemoteExecutorPoolKey", "dataHubRemoteExecutorPool",
         ["dataHubRemoteExecutorPoolInfo"]),
    _key("RemoteExecutorKey", "dataHubRemoteExecutorKey", "dataHubRemoteExecutor", ["dataHubRemoteExecutorStatus"]),
    _key("RemoteExecutorGlobalConfigKey", "dataHubRemoteExecutorGlobalConfigKey", "dataHubRemoteExecutorGlobalConfig",
         ["dataHubRemoteExecutorPoolGlobalConfig"]),
    {
        "type": "record", "name": "RemoteExecutorPoolInfo", "namespace": POOL,
        "Aspect": {"name": "dataHubRemoteExecutorPoolInfo"},
        "fields": [
            {"type": "long", "name": "createdAt"},
            _optional("string", "creator"),
            _optional("string", "description"),
            _optional("string", "queueUrl"),
            _optional("string", "queueRegion"),
            _optional("boolean", "isEmbedded"),
            _optional(POOL_STATE, "state"),
            _optional(POOL_CHANNEL, "channel"),
            _optional("long", "channelSwitchedAt"),
            _optional(f"{POOL}.RemoteExecutorPoolChannel", "previousChannel"),
        ],
    },
    {
        "type": "record", "name": "RemoteExecutorStatus", "namespace": "com.linkedin.pegasus2avro.executor",
        "Aspect": {"name": "dataHubRemoteExecutorStatus"},
        "fields": [
            {"type": "string", "name": "executorPoolId"},
            {"type": "string", "name": "executorReleaseVersion"},
            {"type": "string", "name": "executorAddress"},
            {"type": "string", "name": "executorHostname"},
            {"type": "float", "name": "executorUptime"},
            {"type": "boolean", "name": "executorExpired", "default": False},
            {"type": "boolean", "name": "executorStopped", "default": False},
            {"type": "boolean", "name": "executorEmbedded", "default": False},
            {"type": "boolean", "name": "executorInternal", "default": False},
            {"type": "boolean", "name": "logDeliveryEnabled", "default": False},
            {"type": "long", "name": "reportedAt"},
            _optional({"type": "enum", "name": "RemoteExecutorChannel", "namespace": "com.linkedin.pegasus2avro.executor",
                       "symbols": ["SQS", "KAFKA"]}, "channel"),
        ],
    },
    {
        "type": "record", "name": "RemoteExecutorPoolGlobalConfig",
        "namespace": "com.linkedin.pegasus2avro.executorglobalconfig",
        "Aspect": {"name": "dataHubRemoteExecutorPoolGlobalConfig"},
        "fields": [{"type": "string", "name": "defaultExecutorPoolId"}],
    },
]
