"""A kernel on a user's real single-user server, driven as JupyterLab drives it: the server's REST
API starts it, and cells go over its websocket (Jupyter messaging protocol, JSON frames)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


@dataclass
class Cell:
    """What one cell printed and showed, and its error if it raised."""

    stdout: str = ""
    stderr: str = ""
    data: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def text(self) -> str:
        plain = "".join(d.get("text/plain", "") + d.get("text/html", "") for d in self.data)
        return self.stdout + self.stderr + plain + (json.dumps(self.error) if self.error else "")


class RemoteKernel:
    def __init__(self, server_url: str, token: str) -> None:
        self.server = server_url.rstrip("/") + "/"
        self.headers = {"Authorization": f"token {token}"}
        resp = requests.post(self.server + "api/kernels", json={"name": "python3"}, headers=self.headers, timeout=120)
        assert resp.status_code == 201, resp.text
        self.id = resp.json()["id"]
        self.session = uuid.uuid4().hex
        self.loop = asyncio.new_event_loop()
        ws_url = self.server.replace("http", "ws", 1) + f"api/kernels/{self.id}/channels?session_id={self.session}"
        request = HTTPRequest(ws_url, headers=self.headers)
        self.ws = self.loop.run_until_complete(self._connect(request))

    async def _close_ws(self) -> None:
        self.ws.close()

    @staticmethod
    async def _connect(request: HTTPRequest) -> Any:
        return await websocket_connect(request)  # in a coroutine: on this kernel's own loop

    def run(self, code: str, timeout: float = 300) -> Cell:
        return self.loop.run_until_complete(asyncio.wait_for(self._run(code), timeout))

    async def _run(self, code: str) -> Cell:
        msg_id = uuid.uuid4().hex
        await self.ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                       "username": "jnb-test", "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        cell, idle, replied = Cell(), False, False
        while not (idle and replied):
            raw = await self.ws.read_message()
            if raw is None:
                raise ConnectionError("the kernel's websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "stream":
                setattr(cell, content["name"], getattr(cell, content["name"]) + content["text"])
            elif kind in ("display_data", "execute_result", "update_display_data"):
                cell.data.append(content["data"])
            elif kind == "error":
                cell.error = {"ename": content["ename"], "evalue": content["evalue"]}
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                replied = True
        return cell

    def run_notebook(self, cells: list[dict[str, Any]]) -> list[Cell]:
        """Each code cell of a notebook in turn, stopping at the first that raises unless its tags
        say `raises-exception` (as nbclient does)."""
        done = []
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            done.append(self.run("".join(cell["source"])))
            if done[-1].error and "raises-exception" not in cell.get("metadata", {}).get("tags", []):
                break
        return done

    def close(self) -> None:
        try:
            # on this kernel's own loop: closing asks tornado for the current loop, and the main
            # thread may have none (another test ran asyncio.run, which leaves it unset)
            self.loop.run_until_complete(self._close_ws())
            requests.delete(self.server + f"api/kernels/{self.id}", headers=self.headers, timeout=60)
        except requests.RequestException:
            pass  # the server is already gone (a logged-out user's)
        finally:
            self.loop.close()
