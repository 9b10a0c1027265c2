"""Runs the example notebook against the local agent and prints what each cell showed.

Credentials come the way a notebook user gets them: JOBLET_URL/JOBLET_TOKEN from the environment,
else the client config the agent wrote on its first start.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "data-scientist.ipynb"


def client_settings() -> tuple[str, str]:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "joblet"
    config = json.loads((base / "client.json").read_text()) if (base / "client.json").exists() else {}
    url = os.environ.get("JOBLET_URL") or config.get("url") or "http://127.0.0.1:7755"
    token = os.environ.get("JOBLET_TOKEN") or config.get("token")
    if not token:
        sys.exit(f"no token: set JOBLET_TOKEN or start the agent once to write {base / 'client.json'}")
    return url, token


def run_notebook(path: Path) -> int:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    print(f"executing {path.relative_to(REPO)} against the local agent ...", flush=True)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        print(f"\n--- cell {i}: {cell.source.splitlines()[0] if cell.source else ''}")
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                print(out.text, end="")
            elif "text/plain" in out.get("data", {}):
                print(out["data"]["text/plain"])
            if any(k.startswith("image/") for k in out.get("data", {})):
                print("[image]")
    out_path = REPO / "notebooks" / "executed" / path.name
    out_path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, out_path)
    print(f"\nexecuted notebook saved to {out_path.relative_to(REPO)}")
    return 0


def ensure_runtime(name: str) -> None:
    """Build `name` on the agent if it lacks it (with the admin token the agent wrote), so the
    notebook's session shows a real pandas table and plot. A build that fails is reported; the
    notebook then skips the cells that need it."""
    from joblet_nb.core.client import JobletClient
    from joblet_nb.core.errors import JobletError, RuntimeMissing

    client = JobletClient.from_settings()
    try:
        client.require_runtime(name)
        return
    except RuntimeMissing:
        pass
    if not client.admin_token:
        print(f"runtime {name} is missing and there is no admin token to build it; its cells are skipped")
        return
    print(f"building runtime {name} on the agent (once; it downloads numpy, pandas, matplotlib) ...", flush=True)
    try:
        build = client.build_runtime(name)
        for event in client.with_token(client.admin_token).events(build.id):
            if event.type == "progress":
                print("  " + event.text(), flush=True)
            elif event.type == "exit":
                print(f"  build {event.status}" + (f": {event.message}" if event.message else ""), flush=True)
    except JobletError as exc:
        print(f"could not build {name}: {exc}; its cells are skipped")


def run_first_job() -> int:
    import requests

    url, token = client_settings()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"script": "import os, socket\nprint(f'hello from job {os.environ[\"JOB_ID\"]} on "
                      "{socket.gethostname()} as uid {os.getuid()}')"}
    job = requests.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=30).json()
    with requests.get(f"{url}/v1/jobs/{job['id']}/events", params={"follow": "true"}, headers=headers,
                      stream=True, timeout=120) as r:
        for line in r.iter_lines():
            event = json.loads(line)
            if event["type"] in ("stdout", "stderr"):
                print(event["data"], end="")
            elif event["type"] == "exit":
                print(f"[job {job['id']}: {event['status']}, reason {event['reason']}]")
                return 0 if event["status"] == "COMPLETED" else 1
    return 1


if __name__ == "__main__":
    try:
        import joblet_nb  # noqa: F401
        have_extension = NOTEBOOK.exists()
    except ImportError:
        have_extension = False
    if have_extension:
        ensure_runtime("python-3.11-ml")
    sys.exit(run_notebook(NOTEBOOK) if have_extension else run_first_job())
