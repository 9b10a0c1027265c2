"""`joblet-agent`, the console script: checks for the agent's own dependencies, then runs `cli`.

`pip install joblet-nb` (a notebook user's laptop) leaves out the `agent` extra, so that its
Linux-only parts never need to build there; this turns what would be an ImportError deep in the
agent into one line that says what to install.
"""

from __future__ import annotations

import importlib.util
import sys

# The import names of the `agent` extra's distributions (pyproject.toml).
AGENT_MODULES = ("fastapi", "uvicorn", "pydantic", "pyroute2", "pyseccomp", "yaml", "jsonschema",
                 "cryptography")


def missing_modules() -> list[str]:
    return [name for name in AGENT_MODULES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    missing = missing_modules()
    if missing:
        print(f"joblet-agent: this install lacks the agent's dependencies ({', '.join(missing)}); "
              "on the Linux host that runs jobs, install them with: pip install 'joblet-nb[agent]'",
              file=sys.stderr)
        return 2
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
