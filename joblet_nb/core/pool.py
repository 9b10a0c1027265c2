"""Idle HTTP sessions of one agent, shared by a client and its clones.

A cell follows its job on threads of its own (the event pump, the status line), each with a client
of its own, since a `requests.Session` is not thread-safe. Made fresh for every cell, each of them
opened a new connection (a TCP handshake, an accept in the agent) and built a new session; taken
from here, they reuse a kept-alive connection from the cell before.
"""

from __future__ import annotations

import threading

import requests

from .unixsocket import session_for

KEEP_IDLE = 4


class SessionPool:
    def __init__(self, url: str) -> None:
        self.url = url
        self._idle: list[requests.Session] = []
        self._base = url
        self._lock = threading.Lock()

    def take(self) -> tuple[requests.Session, str]:
        """An idle session (or a new one) and the base URL to use with it."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), self._base
        session, self._base = session_for(self.url)
        return session, self._base

    def give(self, session: requests.Session) -> None:
        """A session its user is done with; beyond KEEP_IDLE, it is closed."""
        with self._lock:
            if len(self._idle) < KEEP_IDLE:
                self._idle.append(session)
                return
        session.close()
