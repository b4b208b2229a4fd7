"""The control plane's refusals, each mapped to one HTTP status by the API layers."""
from __future__ import annotations


class Invalid(ValueError):
    """400: the request is wrong; the message says what."""


class Unauthorized(Exception):
    """401."""


class Forbidden(Exception):
    """403."""


class NotFound(LookupError):
    """404."""


class Conflict(Exception):
    """409: the request is fine but the state forbids it (a stale lease, a final status).
    RETRY_AFTER_S, where set, says when asking again may succeed."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PreconditionFailed(Exception):
    """422: a write's own precondition does not hold (If-Version-Match names a version the aspect
    no longer has). GMS's Rest.li answers its conditional writes' refusals 422, and DataHub's
    clients know the status."""


class Unavailable(Exception):
    """503: a dependency (the queue service, an upstream DataHub) is down or busy; retry later.
    RETRY_AFTER_S, where set, says when."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
