"""Custom DataHub sources for the end-to-end tests, loaded by the real `datahub ingest` CLI in
the task's virtualenv (recipe type `e2e_test_sources.<Class>`, this directory on PYTHONPATH)."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

from datahub.configuration.common import ConfigModel
from datahub.ingestion.api.source import Source, SourceReport
from datahub.ingestion.api.workunit import MetadataWorkUnit


class _ConfiguredSource(Source):
    """Shared plumbing of the test sources below: a config class, an empty report."""

    config_class: type[ConfigModel]

    def __init__(self, config: ConfigModel, ctx) -> None:
        super().__init__(ctx)
        self.config = config
        self.report = SourceReport()

    @classmethod
    def create(cls, config_dict: dict, ctx) -> "_ConfiguredSource":
        return cls(cls.config_class.parse_obj(config_dict), ctx)

    def get_report(self) -> SourceReport:
        return self.report


class SleepyConfig(ConfigModel):
    seconds: float = 10.0
    ignore_sigterm: bool = False
    # Ends at its next tick once this file exists: a test that kills a run and waits for it to
    # run again lets the second run end once it has started, not after `seconds` more.
    until_exists: str = ""


class SleepySource(_ConfiguredSource):
    """Runs for `seconds`, printing a line a second: a long task for cancel, timeout and
    visibility tests."""

    config_class = SleepyConfig

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        if self.config.ignore_sigterm:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        end = time.monotonic() + self.config.seconds
        tick = 0
        while time.monotonic() < end:
            if self.config.until_exists and os.path.exists(self.config.until_exists):
                print(f"sleepy released after {tick} ticks", flush=True)
                break
            print(f"sleepy tick {tick}", flush=True)
            sys.stdout.flush()
            tick += 1
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        return iter([])


class LeakyConfig(ConfigModel):
    step_mb: int = 20


class LeakySource(_ConfiguredSource):
    """Allocates (and touches) memory without end: a memory-leaking connector."""

    config_class = LeakyConfig

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        leak = []
        while True:
            leak.append(bytearray(self.config.step_mb << 20))
            time.sleep(0.01)


class ForkBombConfig(ConfigModel):
    pass


class ForkBombSource(_ConfiguredSource):
    """A fork bomb: every process forks without end; a refused fork is retried after a breath
    (the pids limit, not the bomb's manners, is what must hold)."""

    config_class = ForkBombConfig

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        import os

        print("fork bomb armed", flush=True)
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)


class SilentConfig(ConfigModel):
    seconds: float = 8.0
    done_file: str


class SilentSource(_ConfiguredSource):
    """Points its stdout and stderr at /dev/null (so the executor's pipe sees end-of-file), then
    keeps working for `seconds` and leaves a file to prove it ran to the end."""

    config_class = SilentConfig

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        import os

        print("going silent", flush=True)
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        time.sleep(self.config.seconds)
        with open(self.config.done_file, "w") as f:
            f.write("finished")
        return iter([])


class FloodConfig(ConfigModel):
    megabytes: int = 1024
    first_line: str = ""  # printed before the flood (a task imitating the executor's lines, say)


class FloodSource(_ConfiguredSource):
    """Writes `megabytes` of log lines to stdout as fast as it can."""

    config_class = FloodConfig

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        if self.config.first_line:
            print(self.config.first_line, flush=True)
        line = ("flood " + "x" * 121 + "\n").encode()  # 128 bytes
        block = line * 8192  # 1 MiB
        out = sys.stdout.buffer
        for _ in range(self.config.megabytes):
            out.write(block)
        out.flush()
        print("flood done", flush=True)
        return iter([])


class SecretEchoConfig(ConfigModel):
    value: str


class SecretEchoSource(_ConfiguredSource):
    """Prints a short hash of its `value` (a resolved ${SECRET}), and the value itself once: the
    test sees that the right value arrived, and that the log masks it."""

    config_class = SecretEchoConfig

    def get_workunits(self) -> Iterable[MetadataWorkUnit]:
        import hashlib

        print(f"secret sha256 {hashlib.sha256(self.config.value.encode()).hexdigest()[:16]}", flush=True)
        print(f"secret itself: {self.config.value}", flush=True)
        return iter([])
