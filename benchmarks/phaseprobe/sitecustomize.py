"""Phase marks for benchmarks/session_phases.py: loaded (as sitecustomize, through PYTHONPATH) by
the agent and its launcher, whose forks become the holders. It wraps a few methods to append
`<mark> <CLOCK_MONOTONIC ns>` lines to JNB_PHASES (each process opening it once). Nothing is changed when
JNB_PHASES is not set."""

import os
import time

_PATH = os.environ.get("JNB_PHASES")
_FD = -1
_PID = -1


def _mark(name: str) -> None:
    """One line; a forked process (a holder, which closes what it inherited) opens its own."""
    global _FD, _PID
    stamp = time.monotonic_ns()
    try:
        if _PID != os.getpid():
            _FD, _PID = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC), os.getpid()
        os.write(_FD, f"{name} {stamp}\n".encode())
    except OSError:
        _PID = -1


def _wrap(cls: type, attr: str, name: str, when=None) -> None:
    inner = getattr(cls, attr)

    def wrapped(*args, **kwargs):
        if when is None or when(*args, **kwargs):
            _mark(name + ":in")
        try:
            return inner(*args, **kwargs)
        finally:
            if when is None or when(*args, **kwargs):
                _mark(name + ":out")
    setattr(cls, attr, wrapped)


def _install() -> None:
    os.close(os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    try:
        from joblet_agent.sandbox import holder
        from joblet_agent.sessions import service, frames
        from joblet_agent.cluster import holder_link
        from joblet_agent.jobs import store
        from joblet_agent.api import guard
    except ImportError:
        return
    _wrap(holder.Holder, "_on_message", "holder.request", lambda s, c, m, f: m.get("op") == "input")
    _wrap(holder.Holder, "_read_output", "holder.output", lambda s, fd, kind: kind == "stdout")
    _wrap(holder.Holder, "_flush", "holder.flush")
    _wrap(frames.SessionOutput, "input", "holder.translate_input")
    _wrap(service.SessionService, "submit", "agent.submit")
    _wrap(store.RecordStore, "save", "agent.save")
    _wrap(holder_link.HolderLink, "_on_message", "agent.holder_msg")
    _wrap(store.EventLog, "advanced", "agent.advanced")
    original_guard = guard.RequestGuard.__call__

    async def guarded(self, scope, receive, send):
        cell = scope.get("type") == "http" and scope.get("path", "").endswith("/cells")
        if cell:
            _mark("agent.guard:in")

        async def sending(message):
            if cell and message.get("type") == "http.response.start":
                _mark("agent.response")
            await send(message)
        await original_guard(self, scope, receive, sending if cell else send)
    guard.RequestGuard.__call__ = guarded
    _wrap(store.EventLog, "_wake", "agent.follower_wake")


if _PATH:
    try:
        _install()
    except Exception:  # noqa: BLE001 - a probe never breaks the process it watches
        pass
