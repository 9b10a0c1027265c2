"""`POST /v1/jobs` and `GET /v1/jobs/{id}/events` answered past FastAPI's router (api/hot.py): which
requests it takes, and that what it answers is what the routes answer, byte for byte, refusals
included (each request it leaves is answered by FastAPI: the same call in another plain form)."""

from __future__ import annotations

import pytest
import requests

from agentproc import Api, create_token
from joblet_agent.api.hot import MAX_AFTER, events_query, job_request

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("query, read", [
    (b"", (0, False)), (b"follow=true", (0, True)), (b"follow=false&after=7", (7, False)),
    (b"after=0&follow=true", (0, True)), (b"after=%d" % MAX_AFTER, (MAX_AFTER, False)),
])
def test_the_plain_event_queries_are_read_here(query: bytes, read: tuple[int, bool]) -> None:
    assert events_query(query) == read


@pytest.mark.parametrize("query", [
    b"follow=1", b"follow=True", b"follow=", b"follow", b"after=-1", b"after=+1", b"after=1.0",
    b"after=%d" % (MAX_AFTER + 1), b"after=" + b"9" * 40, b"follow=true&follow=false", b"after=1&after=2", b"x=1",
    b"follow=true&", b"&", b"follow=%74rue",
])
def test_every_other_event_query_is_left_to_fastapi(query: bytes) -> None:
    assert events_query(query) is None


def test_a_job_body_is_taken_only_as_json_that_validates() -> None:
    assert job_request(JSON, b'{"command": ["true"]}').command == ["true"]
    for headers, body in [({}, b'{"command": ["true"]}'), ({"content-type": "text/plain"}, b'{"command": ["true"]}'),
                          ({"content-type": "application/json; charset=utf-8"}, b'{"command": ["true"]}'),
                          (JSON, None), (JSON, b""), (JSON, b"{"), (JSON, b"[]"), (JSON, b'{"command": []}'),
                          (JSON, b'{"command": ["true"], "job_type": "runtime-build"}'), (JSON, b"\xff")]:
        assert job_request(headers, body) is None, (headers, body)


def _same(hot: requests.Response, routed: requests.Response) -> None:
    assert hot.status_code == routed.status_code
    drop = {"date"}
    assert [(k, v) for k, v in hot.raw.headers.items() if k not in drop] == \
           [(k, v) for k, v in routed.raw.headers.items() if k not in drop]


@pytest.mark.root
def test_the_answers_are_the_routes_own(agent, api) -> None:
    hot = api.call("POST", "/v1/jobs", data=b'{"command": ["echo", "hi"]}', headers=JSON)
    routed = api.call("POST", "/v1/jobs", data=b'{"command": ["echo", "hi"]}',
                      headers={"content-type": "application/json; charset=utf-8"})
    _same(hot, routed)
    assert hot.status_code == 201 and hot.content == b'{"id":"%s","status":"PENDING"}' % hot.json()["id"].encode()
    assert routed.content == b'{"id":"%s","status":"PENDING"}' % routed.json()["id"].encode()
    job_id = hot.json()["id"]
    for other in (job_id, routed.json()["id"]):
        api.events(other)
    for plain, other in [("follow=true", "follow=1"), ("after=1", "after=1&after=1"), ("", "follow=0")]:
        a = api.call("GET", f"/v1/jobs/{job_id}/events?{plain}")
        b = api.call("GET", f"/v1/jobs/{job_id}/events?{other}")
        _same(a, b)
        assert a.status_code == 200 and a.content == b.content and b'"type":"exit"' in a.content
    unknown = f"/v1/jobs/{'0' * 16}/events"
    a, b = api.call("GET", unknown), api.call("GET", unknown + "?follow=0")
    _same(a, b)
    assert a.status_code == 404 and a.content == b.content
    stranger = Api(agent.url, create_token(agent.root, "user", "stranger"))
    a, b = (stranger.call("GET", f"/v1/jobs/{job_id}/events{q}") for q in ("?follow=true", "?follow=1"))
    _same(a, b)
    assert a.status_code == 404 and a.content == b.content
    a = stranger.call("POST", "/v1/jobs", data=b"{", headers=JSON)
    b = stranger.call("POST", "/v1/jobs", data=b"{", headers={"content-type": "application/json; charset=utf-8"})
    _same(a, b)
    assert a.status_code == 400 and a.content == b.content
    refusals = [(b'{"command": ["true"], "limits": {"pids": -1}}', 400),
                (b'{"command": ["true"], "network": "x"}', 400),
                (b'{"command": ["true"], "runtime": "nosuch"}', 400)]
    for body, status in refusals:
        a = api.call("POST", "/v1/jobs", data=body, headers=JSON)
        b = api.call("POST", "/v1/jobs", data=body, headers={"content-type": "application/json; charset=utf-8"})
        _same(a, b)
        assert a.status_code == status and a.content == b.content, a.content
