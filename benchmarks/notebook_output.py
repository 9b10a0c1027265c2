"""A chatty job in a notebook: how many output messages the kernel sends, and how long the cell takes
in a real browser, for a loop printing N lines run plainly in the kernel and through joblet.

- kernel: a real ipykernel through jupyter_client; the iopub `stream` messages of the cell are
  counted, and the cell is timed from execute_request to its reply;
- browser: JupyterLab 4 and Notebook 7 in headless Chromium (the browser suite's harness); the cell
  is timed from "run" to the end of its execution as the page sees it, and while it runs the page is
  pinged every 0.25 s (the longest answer is the tab's worst unresponsiveness).

Run as root: `.venv/bin/python benchmarks/notebook_output.py [--lines 20000 200000] [--apps lab notebook]
[--cap 300] [--json PATH]`. It starts its own agent and servers and removes them at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from agentproc import running_agent  # noqa: E402

LOOP = "for i in range({n}):\n    print('line', i)"


def cells(n: int) -> dict[str, str]:
    return {"plain": LOOP.format(n=n), "joblet": "%%joblet run --timeout 900\n" + LOOP.format(n=n)}


def kernel_counts(env: dict[str, str], n: int, cap: float) -> dict[str, Any]:
    """Stream messages and seconds per cell kind, through a real kernel."""
    from jupyter_client.manager import start_new_kernel

    saved = dict(os.environ)
    os.environ.update(env)
    km, kc = start_new_kernel(kernel_name="python3")
    os.environ.clear()
    os.environ.update(saved)
    out: dict[str, Any] = {}
    try:
        kc.execute_interactive("%load_ext joblet_nb", timeout=60)
        for kind, code in cells(n).items():
            messages = 0
            lines = 0

            def count(msg: dict[str, Any]) -> None:
                nonlocal messages, lines
                if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                    messages += 1
                    lines += msg["content"]["text"].count("\n")

            t0 = time.perf_counter()
            try:
                kc.execute_interactive(code, timeout=cap, output_hook=count)
                seconds: float | None = time.perf_counter() - t0
            except TimeoutError:
                km.interrupt_kernel()
                seconds = None
            out[kind] = {"messages": messages, "lines": lines, "seconds": seconds}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return out


def browser_times(env: dict[str, str], n: int, apps: list[str], cap: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from browser.jupyter import JupyterServer

    out: dict[str, Any] = {}
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/lib/chromium/chromium", headless=True)
        try:
            for app in apps:
                server = JupyterServer(app, env).start()
                try:
                    out[app] = {kind: _time_cell(server, chromium, code, n, cap)
                                for kind, code in cells(n).items()}
                finally:
                    server.stop()
        finally:
            chromium.close()
    return out


def _time_cell(server: Any, chromium: Any, code: str, n: int, cap: float) -> dict[str, Any]:
    from browser.page import NotebookPage, new_notebook_json

    (server.root / "bench.ipynb").write_text(new_notebook_json(["%load_ext joblet_nb", code]))
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = NotebookPage(context.new_page(), server.app).open(server.notebook_url("bench.ipynb"))
        page.run_cell(0)
        run = page.start_cell(1)
        t0 = time.perf_counter()
        worst = 0.0
        done = False
        while time.perf_counter() - t0 < cap:
            p0 = time.perf_counter()
            done = page.page.evaluate("(run) => window.__jnbRuns[run] !== 'running'", run)
            worst = max(worst, time.perf_counter() - p0)
            if done:
                break
            time.sleep(0.25)
        seconds = time.perf_counter() - t0 if done else None
        shown = page.text(1).count("line ") if done else None
        server.shutdown_kernels()
        return {"seconds": seconds, "worst_ping_s": round(worst, 3), "lines_shown": shown,
                "expected_lines": n}
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--apps", nargs="+", default=["lab", "notebook"])
    parser.add_argument("--cap", type=float, default=300, help="seconds before a cell counts as not finished")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with running_agent() as agent:
        env = {"JOBLET_URL": agent.url, "JOBLET_TOKEN": agent.user_token}
        for n in args.lines:
            results[str(n)] = {"kernel": kernel_counts(env, n, args.cap)}
            if not args.no_browser:
                results[str(n)]["browser"] = browser_times(env, n, args.apps, args.cap)
            print(json.dumps({n: results[str(n)]}, indent=1), flush=True)
    _table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _fmt(seconds: float | None) -> str:
    return "not done" if seconds is None else f"{seconds:.1f} s"


def _table(results: dict[str, Any]) -> None:
    print("\n| lines | where | plain | joblet | stream messages plain / joblet |")
    print("|---|---|---|---|---|")
    for n, r in results.items():
        k = r["kernel"]
        msgs = f"{k['plain']['messages']} / {k['joblet']['messages']}"
        print(f"| {int(n):,} | kernel (jupyter_client) | {_fmt(k['plain']['seconds'])} | "
              f"{_fmt(k['joblet']['seconds'])} | {msgs} |")
        for app, b in r.get("browser", {}).items():
            print(f"| {int(n):,} | {app} | {_fmt(b['plain']['seconds'])} (ping {b['plain']['worst_ping_s']} s) | "
                  f"{_fmt(b['joblet']['seconds'])} (ping {b['joblet']['worst_ping_s']} s) | |")


if __name__ == "__main__":
    sys.exit(main())
