"""The remote executor's master: consumes a pool's queue and runs each task confined."""

__version__ = "0.1.0"
