"""The audit log: one JSON line per action, saying who ran what, with which runtime and limits,
and how it ended. Appended with O_APPEND, so concurrent writers never interleave lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, action: str, **fields: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "action": action, **fields}, default=str)
        os.write(self._fd, line.encode() + b"\n")

    def close(self) -> None:
        os.close(self._fd)
