"""Run one command confined (cgroup v2, cgroup v1, or best effort without cgroups) and say
exactly how it ended. Knows nothing of SQS, DataHub or the control plane."""
from .confined import ConfinedProcess
from .errors import SandboxError
from .limits import Limits
from .outcome import Outcome, Status
from .sandbox import Sandbox
from .sizes import format_size, parse_size
from .task_user import TaskUser

__all__ = ["ConfinedProcess", "Limits", "Outcome", "Sandbox", "SandboxError", "Status", "TaskUser", "format_size", "parse_size"]
