"""Why a task could not be started, in the words the result reports."""


class TaskRejected(Exception):
    """The task cannot run as given. `reason` is a stable code (INVALID_RECIPE, UNKNOWN_TASK,
    SECRET_NOT_FOUND, INVALID_WEIGHT, ...); the message says what was wrong and the fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
