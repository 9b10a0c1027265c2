"""HTTP over a unix socket for `requests`, for agents started with `joblet-agent serve --unix PATH`.

The agent writes `"url": "unix:/path/to/socket"` into the client config in that case. requests
has no unix-socket transport, so a session gets an adapter whose connections open the socket
instead of a TCP address; everything above the socket (HTTP, streaming, errors) is unchanged.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import NewConnectionError
from urllib3.util.timeout import Timeout

# The host part of the URLs a unix-socket session uses; it never reaches DNS.
UNIX_BASE = "http://joblet.unix"


class _UnixConnection(HTTPConnection):
    def __init__(self, path: str, *args: Any, **kwargs: Any):
        super().__init__("joblet.unix", *args, **kwargs)
        self.unix_path = path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        sock.settimeout(timeout)
        try:
            sock.connect(self.unix_path)
        except OSError as exc:
            sock.close()
            raise NewConnectionError(self, f"cannot connect to {self.unix_path}: {exc}") from exc
        return sock


class _UnixPool(HTTPConnectionPool):
    def __init__(self, path: str, **kwargs: Any):
        super().__init__("joblet.unix", **kwargs)
        self.unix_path = path

    def _new_conn(self) -> HTTPConnection:  # type: ignore[override]
        timeout = self.timeout.connect_timeout if isinstance(self.timeout, Timeout) else self.timeout
        return _UnixConnection(self.unix_path, timeout=timeout)


class UnixAdapter(HTTPAdapter):
    """Sends every request of the session to one unix socket."""

    def __init__(self, path: str):
        super().__init__()
        self.unix_path = path
        self._pool = _UnixPool(path, maxsize=4)

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                        cert: Any = None) -> HTTPConnectionPool:
        return self._pool

    def get_connection(self, url: Any, proxies: Any = None) -> HTTPConnectionPool:
        return self._pool

    def close(self) -> None:
        self._pool.close()
        super().close()


def session_for(url: str) -> tuple[requests.Session, str]:
    """A session and the base URL to use with it: a unix socket for `unix:PATH`, else TCP.

    An agent on this machine (a unix socket, a loopback address) is reached without looking at
    proxy variables and ~/.netrc on every call: requests does that per request, and it costs more
    than the call itself does (a warm session cell is one such call)."""
    session = requests.Session()
    if url.startswith("unix:"):
        session.mount(UNIX_BASE + "/", UnixAdapter(url[len("unix:"):]))
        session.trust_env = False
        return session, UNIX_BASE
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost" or _is_loopback(host):
        session.trust_env = False
    return session, url


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
