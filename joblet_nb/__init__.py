"""joblet-nb: Jupyter magics and widgets that run notebook cells in isolated sandboxes.

`%load_ext joblet_nb` registers `%joblet` / `%%joblet`. The client (`joblet_nb.core.client`) works
without IPython; importing this package does not import IPython.
"""

from __future__ import annotations

from typing import Any

from .core.client import JobletClient
from .core.errors import AgentUnavailable, AuthError, BadRequestError, CertificateError, JobFailed, JobInterrupted, JobletError, NotFoundError, OutputsMissing, RuntimeMissing

__version__ = "0.1.0"
__all__ = [
    "JobletClient", "JobletError", "AuthError", "NotFoundError", "BadRequestError",
    "AgentUnavailable", "CertificateError", "RuntimeMissing", "OutputsMissing", "JobFailed", "JobInterrupted",
    "load_ipython_extension", "unload_ipython_extension",
]

_magics: Any = None


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics once, and make them reachable by `%config JobletMagics...`."""
    global _magics
    from .ipython.magics import JobletMagics

    if _magics is not None and _magics.shell is ipython:
        return
    _magics = JobletMagics(shell=ipython, parent=ipython)
    ipython.register_magics(_magics)
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
    if _magics in ipython.configurables:
        ipython.configurables.remove(_magics)
    ipython.magics_manager.registry.pop(type(_magics).__name__, None)
    _magics = None
