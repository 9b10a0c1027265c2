"""The agent's fixed vocabulary: the job types, statuses and name rules API.md states, once.

Plain constants on the standard library alone, so that every layer of the agent (the sandbox
included) and the notebook client, which installs without the agent's dependencies, share one
definition instead of each keeping a copy.
"""

from __future__ import annotations

import enum
import re
from typing import Any


class JobType(enum.StrEnum):
    """Which isolation profile a job gets. Set by the service, never taken from a request."""

    STANDARD = "standard"
    RUNTIME_BUILD = "runtime-build"

    @classmethod
    def parse(cls, value: Any) -> "JobType":
        """Fail safe: only the exact builder value selects the builder; anything else is production."""
        return cls.RUNTIME_BUILD if value == cls.RUNTIME_BUILD.value else cls.STANDARD


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED})
"""The statuses a job never leaves (members equal their strings: "FAILED" in FINISHED holds)."""

JOB_ID = re.compile(r"^[0-9a-f]{16}$")
RUNTIME_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""An environment variable's name, and the (ASCII) name of a cell's input or output variable."""

RESERVED_ENV = ("JOB_ID", "JOB_TYPE")
RESERVED_ENV_PREFIX = "JOBLET_"


def is_reserved_env(name: str) -> bool:
    """Names only the agent sets in a job's environment (case-insensitive, as shells differ)."""
    upper = name.upper()
    return upper in RESERVED_ENV or upper.startswith(RESERVED_ENV_PREFIX)


def check_env(env: dict[str, str], field: str) -> dict[str, str]:
    """Environment a user gives (a request's `env`, a runtime's `environment`): no reserved name,
    only variable names, no NUL byte. A ValueError names the entry, with `field` first."""
    for name, value in env.items():
        if is_reserved_env(name):
            raise ValueError(f"{field} name {name!r} is reserved for the agent")
        if not IDENTIFIER.match(name):
            raise ValueError(f"{field} name {name!r} is not a valid variable name")
        if "\x00" in str(value):
            raise ValueError(f"{field} value of {name!r} contains a NUL byte")
    return env


def check_runtime_name(name: str) -> str:
    """A runtime name is one path component: lowercase letters, digits, '.', '_', '-', no '..'."""
    if not isinstance(name, str) or not RUNTIME_NAME.match(name) or ".." in name:
        raise ValueError(f"runtime name {name!r} is not valid: use lowercase letters, digits, "
                         "'.', '_' and '-' (at most 63, no '/' and no '..')")
    return name
