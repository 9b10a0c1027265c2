"""The agent's configuration file (YAML), validated; every field has a safe default."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import CannotIsolate


class DefaultLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_percent: int | None = None
    memory_mb: int = 1024
    pids: int = 512
    io_bps: int = 0
    timeout_s: float | None = None
    disk_mb: int = 256


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    listen: str = Field("127.0.0.1:7755", description="HOST:PORT; 0.0.0.0 only when set here")
    stop_grace_s: float = Field(5.0, ge=0, le=300, description="SIGTERM to SIGKILL, on stop")
    uid_base: int = Field(1_000_000, ge=10_000, description="jobs run as uid_base + slot")
    uid_slots: int = Field(60_000, ge=16)
    defaults: DefaultLimits = Field(default_factory=DefaultLimits)
    max_outputs_bytes: int = Field(16 << 20, ge=1024)


def load_config(path: Path | None) -> AgentConfig:
    try:
        if path is None or not path.exists():
            return AgentConfig()
        data = yaml.safe_load(path.read_text()) or {}
        return AgentConfig.model_validate(data)
    except OSError as exc:
        raise CannotIsolate(f"cannot read config file {path}: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise CannotIsolate(f"config file {path} is not valid: {exc}") from None
