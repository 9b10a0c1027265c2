"""The node side's own vocabulary, below all its modules (main imports the job; the job, the GPU and
runtime modules import this, never main back): the signals that stop a job, and the error that
ends one with reason setup."""

from __future__ import annotations

import signal

# Slurm's stop (scancel, a node going down) and a person's; main blocks them from its first step,
# the job handles them once it can act on them
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class NodeSetupError(Exception):
    """The job cannot run on this node; it ends with reason setup and this message."""
