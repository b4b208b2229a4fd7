"""Custom DataHub sources for the end-to-end tests, loaded by the real `datahub ingest` CLI in
the task's virtualenv (recipe type `e2e_test_sources.<Class>`, this directory on PYTHONPATH)."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from datahub.configuration.common import ConfigModel
from datahub.ingestion.api.source import Source, SourceReport
from datahub.ingestion.api.workunit import MetadataWorkUnit


class SleepyConfig(ConfigModel):
    seconds: float = 10.0
    ignore_sigterm: bool = False


class SleepySource(Source):
    """Runs for `seconds`, printing a line a second: a long task for cancel, timeout and
    visibility tests."""

    def __init__(self, config: SleepyConfig, ctx) -> None:
        super().__init__(ctx)
        self.config = config
        self.report = SourceReport()

    @classmethod
    def create(cls, config_dict: dict, ctx) -> "SleepySource":
        return cls(SleepyConfig.parse_obj(config_dict), ctx)

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        if self.config.ignore_sigterm:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        end = time.monotonic() + self.config.seconds
        tick = 0
        while time.monotonic() < end:
            print(f"sleepy tick {tick}", flush=True)
            sys.stdout.flush()
            tick += 1
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        return iter([])

    def get_report(self) -> SourceReport:
        return self.report


class LeakyConfig(ConfigModel):
    step_mb: int = 20


class LeakySource(Source):
    """Allocates (and touches) memory without end: a memory-leaking connector."""

    def __init__(self, config: LeakyConfig, ctx) -> None:
        super().__init__(ctx)
        self.config = config
        self.report = SourceReport()

    @classmethod
    def create(cls, config_dict: dict, ctx) -> "LeakySource":
        return cls(LeakyConfig.parse_obj(config_dict), ctx)

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        leak = []
        while True:
            leak.append(bytearray(self.config.step_mb << 20))
            time.sleep(0.01)

    def get_report(self) -> SourceReport:
        return self.report
