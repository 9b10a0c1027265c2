"""joblet-nb: Jupyter magics and widgets that run notebook cells in isolated sandboxes.

`%load_ext joblet_nb` registers `%joblet` / `%%joblet`. The client (`joblet_nb.core.client`) works
without IPython; importing this package does not import IPython. The names below are loaded on
first use, so that the agent, which shares `joblet_nb.core.records`, does not load `requests`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "JobletClient": "client", "JobRequest": "request",
    **{name: "errors" for name in (
        "JobletError", "AuthError", "NotFoundError", "BadRequestError", "AgentUnavailable",
        "AgentTimeout", "CertificateError", "RuntimeMissing", "OutputsMissing", "JobFailed",
        "JobInterrupted")},
}
__all__ = [*_EXPORTS, "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".core.{_EXPORTS[name]}", __name__), name)

_magics: Any = None


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics once, and make them reachable by `%config JobletMagics...`."""
    global _magics
    from .ipython.magics import JobletMagics

    if _magics is not None and _magics.shell is ipython:
        return
    _magics = JobletMagics(shell=ipython, parent=ipython)
    ipython.register_magics(_magics)
    from .ipython import completion

    _magics.completer = completion.register(ipython, _magics)
    if _magics not in ipython.configurables:
        ipython.configurables.append(_magics)


def unload_ipython_extension(ipython: Any) -> None:
    global _magics
    if _magics is None:
        return
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        if magics[kind].get("joblet") is not None:
            magics[kind].pop("joblet", None)
    from .ipython import completion

    completion.unregister(ipython)
    if _magics in ipython.configurables:
        ipython.configurables.remove(_magics)
    ipython.magics_manager.registry.pop(type(_magics).__name__, None)
    _magics = None
