"""joblet-nb host agent: runs notebook cells in isolated Linux sandboxes."""

__version__ = "0.1.0"
