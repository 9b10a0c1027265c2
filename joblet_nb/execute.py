"""`python -m joblet_nb.execute NOTEBOOK...`: run example notebooks end to end against an agent.

The kernel inherits this process's environment, so `JOBLET_URL` / `JOBLET_TOKEN` /
`JOBLET_ADMIN_TOKEN` (or the client config the agent wrote) reach the notebook. A failing cell
stops the run with its error, as in CI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def execute(path: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None,
            timeout: int = 600, save_to: str | os.PathLike[str] | None = None) -> Any:
    """Execute one notebook; returns the executed `nbformat` notebook (raises on a failed cell)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(cwd or Path(path).parent)}},
    )
    try:
        client.execute()
    finally:
        if save_to is not None:
            nbformat.write(nb, str(save_to))
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m joblet_nb.execute", description=__doc__)
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--output-dir", help="save the executed notebooks here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    from nbclient.exceptions import CellExecutionError

    for path in args.notebooks:
        save_to = None
        if args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            save_to = os.path.join(args.output_dir, os.path.basename(path))
        try:
            execute(path, cwd=args.output_dir, timeout=args.timeout, save_to=save_to)
        except CellExecutionError as exc:
            print(f"{path}: FAILED\n{exc}", file=sys.stderr)
            return 1
        print(f"{path}: ok" + (f" (saved to {save_to})" if save_to else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
