"""The control plane's log set-up, for the processes that serve it (`datahub-executor-admin
serve`, the quickstart); a library user of ControlPlaneServer keeps its own.

diagnose=False: loguru's default prints, under a logged traceback, the values of the variables
on each line, and the control plane's frames hold tokens (executor and ingest tokens, an
upstream DataHub's token) and secret values."""
from __future__ import annotations

import sys

from loguru import logger


def configure_logging(level: str = "INFO") -> None:
    logger.remove()
    logger.add(sys.stderr, level=level, diagnose=False)
