"""A session on the agent (API.md "Sessions") from a plain script or a kernel: no IPython here.

One thread follows the session's event stream for the session's whole life (resuming with
`after=SEQ` when it drops, so nothing is lost or repeated) and hands each event to the cell it
belongs to. A cell then costs one POST: its events are already on their way on an open stream.
The caller reads its cell's events from the thread it runs on, so a kernel writes them into the
right cell. Display data is filtered again here (joblet_nb.core.untrusted), whatever the agent did.
"""

from __future__ import annotations

import queue
import threading
from typing import Any
from urllib.parse import quote

from .client import JobletClient
from .errors import AgentUnavailable, JobletError, NotFoundError, RED, RESET
from .events import AGENT_AWAY, AgentAway, parse_event
from .untrusted import filter_bundle

ENDED_HINTS = {
    "idle": "it was idle longer than its idle timeout",
    "oom": "it ran out of memory (raise the memory limit of the next one)",
    "timeout": "it reached its time limit",
    "deleted": "it was stopped",
    "exit": "its interpreter exited (os._exit, a crash, or a killed process)",
    "lost": "the agent restarted or was lost",
}
WAKE_S = 0.25   # how often a waiting cell looks up from its queue (Ctrl-C is served at once anyway)


class SessionEnded(JobletError):
    """The session is over; cells need a new one."""

    def __init__(self, session_id: str, reason: str | None, message: str | None = None):
        self.session_id, self.reason = session_id, reason or "lost"
        why = message or ENDED_HINTS.get(self.reason, "")
        super().__init__(f"joblet session {session_id} has ended (reason {self.reason}"
                         + (f": {why}" if why else "") + "); start a new one with `%joblet session start`",
                         code="session_ended")


class RemoteError(Exception):
    """An exception raised by a cell in the session; shows the session's own traceback."""

    def __init__(self, ename: str, evalue: str, traceback: list[str]):
        super().__init__(f"{ename}: {evalue}" if evalue else ename)
        self.ename, self.evalue, self.remote_traceback = ename, evalue, traceback

    def _render_traceback_(self) -> list[str]:
        lines = "".join(self.remote_traceback).rstrip("\n").splitlines()
        return lines or [f"{RED}{self.ename}{RESET}: {self.evalue}"]


def remote_error(event: dict[str, Any]) -> RemoteError:
    """An exception whose type is named as the remote one (nbclient reports that name)."""
    ename = str(event.get("ename") or "Error")
    name = ename if ename.isidentifier() else "RemoteError"
    bases: tuple[type, ...] = (RemoteError, KeyboardInterrupt) if ename == "KeyboardInterrupt" else (RemoteError,)
    cls = type(name, bases, {"__module__": "joblet_session"})
    return cls(ename, str(event.get("evalue", "")), [str(t) for t in event.get("traceback") or []])


class Session:
    """The client's handle of one session: cells in, their events out, in order."""

    def __init__(self, client: JobletClient, session_id: str, after: int = 0) -> None:
        self.client = client
        self.id = session_id
        self.path = f"/v1/sessions/{quote(session_id, safe='')}"
        self.ended: dict[str, Any] | None = None
        self._queues: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._orphans: list[dict[str, Any]] = []   # events of no cell (the runner's start)
        self._lock = threading.Lock()
        self._last_seq = after
        self._follower = threading.Thread(target=self._follow, name=f"joblet-session-{session_id}", daemon=True)
        self._follower.start()

    @classmethod
    def start(cls, client: JobletClient, **body: Any) -> "Session":
        """POST /v1/sessions with the body of API.md (runtime, limits, network, env, uploads, idle_timeout_s)."""
        created = client._request("POST", "/v1/sessions", json_body={k: v for k, v in body.items() if v is not None})
        return cls(client, str(created.json()["id"]))

    # ---- calls ----------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        return self.client.session_record(self.id)

    def history(self) -> list[dict[str, Any]]:
        """Every event so far, from the agent's log (what a reconnecting notebook replays)."""
        return list(self.client.follow_events(self.path + "/events", after=0, follow=False))

    def interrupt(self) -> None:
        self.client._request("POST", self.path + "/interrupt")

    def complete(self, code: str, cursor_pos: int) -> dict[str, Any]:
        return self.client._request("POST", self.path + "/complete",
                                    json_body={"code": code, "cursor_pos": cursor_pos}).json()

    def stop(self) -> None:
        try:
            self.client._request("DELETE", self.path)
        except NotFoundError:
            pass

    def submit(self, code: str, inputs: dict[str, Any] | None = None, outputs: list[str] | None = None) -> int:
        """Queue a cell; its number. An ended session says so, with how it ended."""
        if self.ended is not None:
            raise SessionEnded(self.id, self.ended.get("reason"), self.ended.get("message"))
        try:
            reply = self.client._request("POST", self.path + "/cells",
                                         json_body={"code": code, "inputs": inputs or {}, "outputs": outputs or []})
        except JobletError as exc:
            if exc.code == "session_ended" or exc.status == 404:
                raise self._ended_error() from None
            raise
        cell = int(reply.json()["cell"])
        self._queue(cell)
        return cell

    def next_event(self, cell: int) -> dict[str, Any]:
        """The cell's next event; after its cell_end (or the session's exit) forget the cell.
        Blocks in short waits, so Ctrl-C in a kernel is served at once."""
        q = self._queue(cell)
        while True:
            try:
                event = q.get(timeout=WAKE_S)
            except queue.Empty:
                if self.ended is not None and q.empty():
                    event = self.ended   # ended before this cell's queue existed
                else:
                    continue
            if event.get("type") in ("cell_end", "exit"):
                with self._lock:
                    self._queues.pop(cell, None)
            return event

    def take_orphans(self) -> list[dict[str, Any]]:
        with self._lock:
            orphans, self._orphans = self._orphans, []
        return orphans

    def _queue(self, cell: int) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._queues.setdefault(cell, queue.Queue())

    def _ended_error(self) -> SessionEnded:
        try:
            record = self.record()
        except JobletError:
            record = {"reason": "lost"}
        self.ended = self.ended or {"reason": record.get("reason"), "message": record.get("message")}
        return SessionEnded(self.id, self.ended.get("reason"), self.ended.get("message"))

    # ---- the follower ---------------------------------------------------------------------

    def _follow(self) -> None:
        client = self.client.clone()
        try:
            for event in client.follow_events(self.path + "/events", after=self._last_seq,
                                              finished=lambda: client.session_record(self.id).get("status") == "ENDED"):
                self._dispatch(event)
        except (AgentUnavailable, JobletError) as exc:
            self._dispatch({"type": "exit", "status": "ENDED", "reason": "lost", "message": str(exc)})

    def _dispatch(self, event: dict[str, Any]) -> None:
        if event.get("type") == AGENT_AWAY:  # the agent restarted: the session's variables are still there
            away = parse_event(event)
            note = {"type": "stderr", "data": away.text() if isinstance(away, AgentAway) else ""}
            with self._lock:
                targets = list(self._queues.values())
                if not targets:
                    self._orphans.append(note)
            for q in targets:
                q.put(note)
            return
        self._last_seq = int(event.get("seq") or self._last_seq)
        if event.get("type") in ("display", "result"):
            event = {**event, "data": filter_bundle(event.get("data"))}
        if event.get("type") == "exit":
            self.ended = event
            with self._lock:
                targets = list(self._queues.values())
            for q in targets:
                q.put(event)
            return
        cell = event.get("cell")
        if not isinstance(cell, int) or cell < 1:
            with self._lock:
                self._orphans.append(event)
            return
        self._queue(cell).put(event)  # made here if the POST of this cell has not returned yet
