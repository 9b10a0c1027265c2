"""What FastAPI runs above the agent's routes on every request (agent/api/app.py): its own
OpenTelemetry hooks are off, so a request asks no global provider whether one is configured; the
app answers as before."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from joblet_agent.api.app import new_app


def test_a_request_asks_no_telemetry_provider(monkeypatch) -> None:
    asked: list[str] = []
    for module, getter in (("opentelemetry.trace", "get_tracer_provider"),
                           ("opentelemetry.metrics", "get_meter_provider"),
                           ("opentelemetry._logs", "get_logger_provider")):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue  # a FastAPI without OpenTelemetry asks nobody
        real = getattr(mod, getter)

        def counted(*args: Any, _real: Any = real, _name: str = getter) -> Any:
            asked.append(_name)
            return _real(*args)

        monkeypatch.setattr(mod, getter, counted)
    app = new_app(title="t")

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with TestClient(app) as client:
        asked.clear()  # the app's start may look once
        for _ in range(3):
            r = client.get("/v1/ping")
            assert r.status_code == 200 and r.json() == {"pong": "yes"}
    assert asked == []


def test_an_unknown_route_is_still_a_404() -> None:
    with TestClient(new_app(title="t")) as client:
        assert client.get("/v1/nothing").status_code == 404
