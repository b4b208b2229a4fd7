"""Identifier formats, checked the same way by the control plane, the executor, the Helm chart
and the CloudFormation template (their patterns are tested against these).

An id that reaches a URL path, a file name or a log line has been checked here first: the
execution id of a queue message is untrusted input until it matches EXECUTION_ID.
"""
from __future__ import annotations

import re

# Pools name SQS queues: "dhx-<8-hex installation>-<pool>-monitors-dlq" must fit SQS's 80
# characters. The endings of a pool's other queues are reserved: pool "x-monitors" would have the
# queue of pool x's monitors, and "x-dlq" that of pool x's dead-letter queue.
RESERVED_POOL_SUFFIXES = ("-dlq", "-monitors")
# Without the lookahead, for regular-expression engines that have none (Helm's RE2): the chart
# checks the reserved endings separately.
POOL_ID_CHARS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$"
POOL_ID_PATTERN = r"^(?!.*-(dlq|monitors)$)[A-Za-z0-9][A-Za-z0-9_-]{0,47}$"
POOL_ID = re.compile(POOL_ID_PATTERN)
POOL_ID_RULE = ("a pool id is 1-48 letters, digits, '_' or '-', starting with a letter or digit, and not ending in "
                "-dlq or -monitors (the names of a pool's other queues)")

# Execution request ids: ours (exe_<hex>) and DataHub's (UUIDs). One path component: no '/', no '.'.
EXECUTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
EXECUTION_ID = re.compile(EXECUTION_ID_PATTERN)
EXECUTION_ID_RULE = "an execution id is 1-128 letters, digits, '_' or '-', starting with a letter or digit"

# Executors and ingestion sources: also DataHub urn keys, so no ',' '(' ')' or spaces.
EXECUTOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
EXECUTOR_ID = re.compile(EXECUTOR_ID_PATTERN)
EXECUTOR_ID_RULE = "an executor id is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"

# DataHub secrets (the control plane's secret store): the name is the urn key and what a recipe's
# ${NAME} says, so the rule is the executor's reference rule (\w+, executor/runtime/secrets.py),
# capped in length; every name that can be stored can be referenced.
SECRET_NAME_PATTERN = r"^\w{1,128}$"
SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
SECRET_NAME_RULE = "a secret name is 1-128 letters, digits or '_', what a recipe can reference as ${NAME}"


class InvalidId(ValueError):
    """An id that does not have its format; the message says which rule it breaks."""


def _check(value: object, pattern: re.Pattern[str], rule: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):  # match() would take a trailing newline
        shown = repr(value)[:80]
        raise InvalidId(f"{what} {shown} is refused: {rule}")
    return value


def pool_id(value: object) -> str:
    return _check(value, POOL_ID, POOL_ID_RULE, "pool id")


def execution_id(value: object) -> str:
    return _check(value, EXECUTION_ID, EXECUTION_ID_RULE, "execution id")


def executor_id(value: object) -> str:
    return _check(value, EXECUTOR_ID, EXECUTOR_ID_RULE, "executor id")


def secret_name(value: object) -> str:
    return _check(value, SECRET_NAME, SECRET_NAME_RULE, "secret name")
