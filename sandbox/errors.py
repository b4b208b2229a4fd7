"""The one exception the sandbox raises for bad input or an environment it cannot work in."""


class SandboxError(Exception):
    """Bad input or an unusable environment. The message says what happened and the fix."""
