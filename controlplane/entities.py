"""Our objects in DataHub's model: entity and aspect names, and urns.

A pool is a `dataHubRemoteExecutorPool`, a source a `dataHubIngestionSource`, a run a
`dataHubExecutionRequest`, an executor process a `dataHubRemoteExecutor`; the default pool is
the `dataHubRemoteExecutorPoolGlobalConfig` aspect of the singleton
`urn:li:dataHubRemoteExecutorGlobalConfig:primary`; a secret is a `dataHubSecret` keyed by its name.
"""
from __future__ import annotations

POOL = "dataHubRemoteExecutorPool"
POOL_INFO = "dataHubRemoteExecutorPoolInfo"
EXECUTOR = "dataHubRemoteExecutor"
EXECUTOR_STATUS = "dataHubRemoteExecutorStatus"
GLOBAL_CONFIG = "dataHubRemoteExecutorGlobalConfig"
GLOBAL_CONFIG_ASPECT = "dataHubRemoteExecutorPoolGlobalConfig"
GLOBAL_CONFIG_URN = "urn:li:dataHubRemoteExecutorGlobalConfig:primary"
SOURCE = "dataHubIngestionSource"
SOURCE_INFO = "dataHubIngestionSourceInfo"
EXECUTION = "dataHubExecutionRequest"
EXECUTION_INPUT = "dataHubExecutionRequestInput"
EXECUTION_RESULT = "dataHubExecutionRequestResult"
EXECUTION_SIGNAL = "dataHubExecutionRequestSignal"
SECRET = "dataHubSecret"
SECRET_VALUE = "dataHubSecretValue"

# Entities whose aspects only the control plane's own rules may write (an ingest token may not).
CONTROL_PLANE_ENTITIES = frozenset({POOL, EXECUTOR, GLOBAL_CONFIG, SOURCE, EXECUTION, SECRET, "dataHubAccessToken"})
# DataHub's routing key for "no particular pool": resolved to the default pool.
DEFAULT_EXECUTOR_ID = "default"


def urn(entity: str, key: str) -> str:
    return f"urn:li:{entity}:{key}"


def pool_urn(pool_id: str) -> str:
    return urn(POOL, pool_id)


def source_urn(source_id: str) -> str:
    return urn(SOURCE, source_id)


def execution_urn(execution_id: str) -> str:
    return urn(EXECUTION, execution_id)


def executor_urn(executor_id: str) -> str:
    return urn(EXECUTOR, executor_id)


def secret_urn(name: str) -> str:
    """DataHub's createSecret keys a secret by its name."""
    return urn(SECRET, name)


def key_of(text: str, entity: str) -> str:
    """The id in a urn of ENTITY ("urn:li:dataHubIngestionSource:abc" -> "abc"); a bare id passes through."""
    prefix = f"urn:li:{entity}:"
    return text[len(prefix):] if text.startswith(prefix) else text
