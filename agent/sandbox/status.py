"""The status channel: JSON lines from the sandbox's stages to the agent, over a pipe.

Each message is one write of less than PIPE_BUF bytes, so lines from the stage that waits, the
init and the job's pre-exec code never interleave.
"""

from __future__ import annotations

import json
import os
from typing import Any

STATUS_FD = 3
GO_FD = 4
MAX_MESSAGE = 3500


def send(event: str, fd: int = STATUS_FD, **fields: Any) -> None:
    fields["event"] = event
    line = json.dumps(fields)
    if len(line) > MAX_MESSAGE:
        fields["message"] = str(fields.get("message", ""))[: MAX_MESSAGE // 2] + " [cut]"
        line = json.dumps(fields)
    try:
        os.write(fd, line.encode() + b"\n")
    except OSError:
        pass  # the agent went away; the job's result is lost with it, the job still ends


def parse(line: bytes) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError:
        return {"event": "garbage", "message": line[:200].decode(errors="replace")}
    return data if isinstance(data, dict) else {"event": "garbage"}
