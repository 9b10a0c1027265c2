"""A client of the agent's HTTP API (API.md), usable from a plain script without IPython.

The magics are a thin layer over this (ipyparallel's lesson). Answers are typed records
(`records.py`, `events.py`). Two things here are subtle:
- `events()` resumes a dropped stream with `after=<last seq>`, so no event is lost or repeated
  (upstream Joblet loses or repeats lines at its history/live handoff);
- every agent error becomes a `JobletError` subclass carrying the agent's own message.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit

import orjson
import requests

from .config import Settings, resolve
from .errors import (AgentTimeout, AgentUnavailable, AuthError, BadRequestError, CertificateError,
                     JobletError, NotFoundError, RuntimeMissing)
from .events import AGENT_AWAY, Event, parse_event
from .lines import response_lines
from .records import (Created, FileListing, Health, Identity, JobRecord, RuntimeInfo, RuntimeTest,
                      from_json)
from .request import JobRequest
from .pool import SessionPool

_STATUS_ERRORS: dict[int, type[JobletError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: BadRequestError,
    413: BadRequestError,
    422: BadRequestError,
}


def refuse_plain_http(url: str) -> None:
    """A bearer token goes over plain http only to this machine: anywhere else anyone on the path
    reads it. (The agent serves HTTPS, with a certificate the client pins, beyond loopback.)"""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return
    host = (parts.hostname or "").strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise AuthError(f"refusing to send a token to {url} over plain http: use https://{parts.netloc} "
                        f"(the agent serves HTTPS beyond loopback; JOBLET_CERT pins its certificate)")


class JobletClient:
    """One agent, one user token (and optionally an admin token for runtime builds)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        admin_token: str | None = None,
        timeout: float = 30.0,
        stream_timeout: float = 60.0,
        reconnect_attempts: int = 5,
        cert: str | None = None,
        pool: SessionPool | None = None,
        token_source: str = "given to the client",
        admin_source: str = "given to the client",
        away_timeout: float = 600.0,
    ):
        self.url = url.rstrip("/")
        self.cert = cert
        self.token = token
        self.admin_token = admin_token
        self.token_source = token_source    # where each token came from: auth errors name it
        self.admin_source = admin_source
        self.timeout = timeout
        # A stream that is silent this long is reopened (after=SEQ), which also survives
        # half-open connections that would otherwise block forever.
        self.stream_timeout = stream_timeout
        self.reconnect_attempts = reconnect_attempts
        # How long a followed stream waits for an agent that does not answer (a restart: jobs and
        # sessions keep running meanwhile, and the stream resumes where it broke).
        self.away_timeout = away_timeout
        # `unix:/path` (an agent started with --unix) goes over a unix socket, all else over TCP.
        self._pool = pool if pool is not None and pool.url == self.url else SessionPool(self.url)
        self.session, self._base = self._pool.take()
        self._released = False

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> "JobletClient":
        """A client from the environment / client config (see `config.resolve`)."""
        s = settings or resolve()
        kwargs.setdefault("cert", s.cert)
        kwargs.setdefault("token_source", s.source)
        kwargs.setdefault("admin_source", s.admin_source)
        return cls(s.url, s.token, s.admin_token, **kwargs)

    def clone(self) -> "JobletClient":
        """A client with its own HTTP session, for another thread (Sessions are not thread-safe);
        `release()` gives its session back for the next clone."""
        return self.with_token(self.token, self.token_source)

    def with_token(self, token: str | None, source: str = "given to the client") -> "JobletClient":
        """The same agent under another token (e.g. the admin token for a build job's events)."""
        return JobletClient(self.url, token, self.admin_token, self.timeout, self.stream_timeout,
                            self.reconnect_attempts, self.cert, self._pool, source, self.admin_source,
                            self.away_timeout)

    def release(self) -> None:
        """Done with this client: its session (and its kept-alive connection) goes back to be
        reused. Once only; the client is not used afterwards."""
        if not self._released:
            self._released = True
            self._pool.give(self.session)

    # ---- plumbing -------------------------------------------------------------------------

    def _headers(self, admin: bool) -> dict[str, str]:
        token = self.admin_token if admin else self.token
        if admin and not token:
            raise AuthError(
                f"this call needs the admin token for {self.url}: set JOBLET_ADMIN_TOKEN or "
                f"put it in ~/.config/joblet/admin-token (admin token: {self.admin_source})"
            )
        if not token:
            raise AuthError(
                f"no token for {self.url}: set JOBLET_TOKEN, or start the agent once on this machine "
                f"so it writes ~/.config/joblet/client.json (token: {self.token_source})"
            )
        refuse_plain_http(self.url)
        return {"Authorization": f"Bearer {token}"}

    def _request(
        self,
        method: str,
        path: str,
        *,
        admin: bool = False,
        auth: bool = True,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
    ) -> requests.Response:
        headers = self._headers(admin) if auth else {}
        used = (self.admin_source if admin else self.token_source) if auth else None
        try:
            resp = self.session.request(
                method,
                self._base + path,
                headers=headers,
                json=json_body,
                params=params,
                stream=stream,
                timeout=timeout if timeout is not None else self.timeout,
                # Pin the agent's own certificate (it is its own CA). Given per request, since a
                # session-level `verify` loses to REQUESTS_CA_BUNDLE in the environment.
                verify=self.cert or True,
            )
        except requests.exceptions.SSLError:
            raise CertificateError(
                f"the agent at {self.url} did not present the certificate this client pins; "
                "set JOBLET_CERT (or `cert` in ~/.config/joblet/client.json) to the agent's "
                "tls-cert.pem from its config folder"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise self._unavailable(exc) from None
        except requests.exceptions.Timeout:
            raise AgentTimeout(
                f"the agent at {self.url} did not answer within {self.timeout:g} s; check that it "
                "is running (joblet-agent serve) or give the client a longer `timeout`"
            ) from None
        if resp.status_code >= 400:
            raise self._error(resp, used)
        return resp

    def _unavailable(self, exc: Exception) -> AgentUnavailable:
        return AgentUnavailable(
            f"no agent at {self.url}: start one with `joblet-agent serve` "
            "or point JOBLET_URL at a running agent"
        )

    def _error(self, resp: requests.Response, source: str | None = None) -> JobletError:
        code, message = f"http_{resp.status_code}", resp.reason or "error"
        try:
            err = resp.json().get("error", {})
            code = err.get("code", code)
            message = err.get("message", message)
        except (ValueError, AttributeError):
            text = resp.text.strip()
            if text:
                message = text[:300]
        cls = _STATUS_ERRORS.get(resp.status_code, JobletError)
        if resp.status_code == 401 and "JupyterHub" not in message:
            message += f" (the token sent came from {source}; check JOBLET_TOKEN or ~/.config/joblet/client.json)"
        elif resp.status_code == 401:
            message += f" (the token sent came from {source})"
        elif resp.status_code == 403 and "admin" not in message.lower():
            message += f" (this call may need the admin token: JOBLET_ADMIN_TOKEN; the token sent came from {source})"
        if resp.status_code >= 500 and cls is JobletError:
            message = f"the agent failed ({resp.status_code}): {message}"
        return cls(message, code=code, status=resp.status_code)

    # ---- health -------------------------------------------------------------------------

    def health(self) -> Health:
        """Agent version and platform; needs no token."""
        return from_json(Health, self._request("GET", "/v1/health", auth=False).json())

    def whoami(self) -> Identity:
        """Who the agent takes this token for (`GET /v1/whoami`, beyond API.md)."""
        return from_json(Identity, self._request("GET", "/v1/whoami").json())

    def limits(self) -> dict[str, Any]:
        """`GET /v1/limits`: `{"defaults": {...}, "maximum": {...}}`, what a job really gets for
        each limit it leaves out (None: no limit) and the most it may ask for."""
        return dict(self._request("GET", "/v1/limits").json())

    # ---- jobs ---------------------------------------------------------------------------

    def run_job(self, request: JobRequest) -> Created:
        """Start a job (`POST /v1/jobs`); follow it with `events()`."""
        return Created.from_json(self._request("POST", "/v1/jobs", json_body=request.to_json()).json())

    def list_jobs(self) -> list[JobRecord]:
        """The caller's jobs (an admin's: everyone's), oldest first."""
        return [JobRecord.from_json(j) for j in self._request("GET", "/v1/jobs").json()]

    def get_job(self, job_id: str) -> JobRecord:
        return JobRecord.from_json(self._request("GET", _job(job_id)).json())

    def stop(self, job_id: str) -> JobRecord:
        """SIGTERM to the job, SIGKILL after the agent's grace period; the record as it is now."""
        return JobRecord.from_json(self._request("POST", _job(job_id, "/stop")).json())

    def delete_job(self, job_id: str) -> None:
        """Remove a finished job with its logs and files."""
        self._request("DELETE", _job(job_id))

    def files(self, job_id: str) -> FileListing:
        """What a finished job left in /work: each regular file's path, size and mode
        (`GET /v1/jobs/{id}/files`, beyond API.md)."""
        return FileListing.from_json(self._request("GET", _job(job_id, "/files")).json())

    def download(self, job_id: str, path: str) -> bytes:
        """A file the job left in /work (relative path)."""
        rel = quote(path.lstrip("/").removeprefix("work/"), safe="/")
        return self._request("GET", _job(job_id, f"/files/{rel}")).content

    def events(self, job_id: str, after: int = 0, follow: bool = True) -> Iterator[Event]:
        """The job's events from `after`, each exactly once, across dropped connections.

        With `follow`, ends after the `exit` event; without, ends with the history so far.
        """
        for data in self.follow_events(_job(job_id, "/events"), after, follow,
                                       finished=lambda: self.get_job(job_id).finished):
            yield parse_event(data)

    def follow_events(self, path: str, after: int = 0, follow: bool = True,
                      finished: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
        """The NDJSON events at `path` (a job's or a session's) from `after`, each exactly once:
        a dropped stream is reopened with `after=<last seq>`. `finished` says whether the job or
        session has ended when the stream keeps ending without an exit event. While the agent does
        not answer (it restarts: its jobs and sessions keep running), it is asked again for up to
        `away_timeout` seconds; once it answers, an `agent-away` note (events.AgentAway, seq 0,
        never from an agent) comes first."""
        last = after
        failures = 0
        away: float | None = None  # since when the agent has not answered
        while True:
            params = {"after": last, "follow": "true" if follow else "false"}
            try:
                resp = self._request("GET", path, params=params, stream=True,
                                     timeout=(self.timeout, self.stream_timeout))
            except CertificateError:
                raise  # retrying will not change the certificate
            except AgentUnavailable as exc:
                away = away or time.monotonic()
                self._wait_for_agent(exc, away, failures, follow)
                failures += 1
                continue
            if away is not None:
                yield {"seq": 0, "type": AGENT_AWAY, "seconds": round(time.monotonic() - away, 1)}
                away = None
            ended = False
            try:
                for line in response_lines(resp):
                    data = orjson.loads(line)  # a large output's events: 5x json's pace
                    seq = int(data.get("seq") or 0)
                    if seq and seq <= last:
                        continue  # a server that repeats itself: never show a line twice
                    last = seq or last
                    failures = 0
                    yield data
                    if data.get("type") == "exit":
                        ended = True
                        break
            except (requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.Timeout):
                pass  # dropped (the agent may have gone away) or silent: reopen after the last seq
            finally:
                resp.close()
            if ended or not follow:
                return
            # The stream ended without an exit event: it may have ended between reconnects, or
            # the connection dropped. Reopen; an ended one replays the rest.
            failures += 1
            if failures > self.reconnect_attempts:
                if finished():
                    return
                failures = 0
            time.sleep(min(0.05 * 2 ** failures, 2.0))

    def _wait_for_agent(self, exc: AgentUnavailable, since: float, failures: int, follow: bool) -> None:
        """A moment before asking again an agent that has not answered since `since` (it restarts);
        `exc` once it has been away longer than `away_timeout`."""
        if not follow or time.monotonic() - since > self.away_timeout:
            raise exc
        time.sleep(min(0.1 * 2 ** min(failures, 4), 1.0))

    def session_record(self, session_id: str) -> dict[str, Any]:
        """GET /v1/sessions/{id} (the session calls themselves live in core/session.py)."""
        return self._request("GET", f"/v1/sessions/{quote(session_id, safe='')}").json()

    # ---- runtimes -----------------------------------------------------------------------

    def runtimes(self) -> list[RuntimeInfo]:
        return [from_json(RuntimeInfo, r) for r in self._request("GET", "/v1/runtimes").json()]

    def runtime(self, name: str) -> RuntimeInfo:
        """One runtime, with its spec and manifest status in `extra`."""
        return from_json(RuntimeInfo, self._request("GET", _runtime(name)).json())

    def require_runtime(self, name: str) -> RuntimeInfo:
        """The runtime, or `RuntimeMissing` where this agent does not have it."""
        try:
            return self.runtime(name)
        except NotFoundError:
            raise RuntimeMissing(name, self.url) from None

    def test_runtime(self, name: str) -> RuntimeTest:
        """Runs the runtime's own test in a production sandbox and answers when it has ended."""
        resp = self._request("POST", _runtime(name, "/test"), timeout=(self.timeout, 600))
        return RuntimeTest.from_json(resp.json())

    def build_runtime(self, name: str, force: bool = False, spec: str | None = None,
                      files: dict[str, str] | None = None) -> Created:
        """Start a runtime build (admin token); follow its `events()` for progress."""
        body: dict[str, Any] = {"spec": spec, "files": files or {}} if spec is not None else {"force": force}
        resp = self._request("POST", _runtime(name, "/build"), admin=True, json_body=body)
        return Created.from_json(resp.json())

    def remove_runtime(self, name: str) -> None:
        self._request("DELETE", _runtime(name), admin=True)


def _job(job_id: str, tail: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{tail}"


def _runtime(name: str, tail: str = "") -> str:
    return f"/v1/runtimes/{quote(name, safe='')}{tail}"

