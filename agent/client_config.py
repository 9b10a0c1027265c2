"""The client configuration the agent writes on its first start, so `%load_ext joblet_nb` works on
the same machine with no further set-up: `client.json` (URL and a user token) and `admin-token`,
each 0600, in `$XDG_CONFIG_HOME/joblet` (default `~/.config/joblet`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .auth import TokenStore


def client_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "joblet"


def write_if_absent(tokens: TokenStore, url: str, cert: Path | None = None) -> Path | None:
    directory = client_dir()
    config = directory / "client.json"
    if config.exists():
        return None
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = {"url": url, "token": tokens.create("user", "local-user")}
    if cert is not None:  # a copy the local user can read; the client pins exactly this certificate
        _write_private(directory / "agent-cert.pem", cert.read_text())
        settings["cert"] = str(directory / "agent-cert.pem")
    _write_private(config, json.dumps(settings, indent=1) + "\n")
    _write_private(directory / "admin-token", tokens.create("admin", "local-admin") + "\n")
    return config


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
