"""The one error envelope, health, traces and the app factory's contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.errors import status_for
from api.services import Services
from sirocco import errors
from sirocco.db import Base, make_engine, make_session_factory
from sirocco.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # API keys are tested in test_api_auth.py; these routes run as the anonymous admin.
    return Settings(env="test", data_dir=tmp_path, auth={"enabled": False})


class RaisingAssistant:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def answer(self, request: Any, principal: Any) -> Any:
        raise self.exc

    async def stream_answer(self, request: Any, principal: Any) -> Any:
        raise self.exc
        yield  # an async generator, like Assistant.stream_answer


def make_app(settings: Settings, assistant: Any = None) -> Any:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    services = Services(session_factory=make_session_factory(engine), assistant=assistant,
                        celery_app=None, register_files=lambda *a, **k: [],
                        enqueue_documents=lambda *a: None)
    return create_app(settings, services=services)


def client_for(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize(("exc", "status"), [
    (errors.NotFoundError("x"), 404),
    (errors.InvalidInputError("x"), 400),
    (errors.DocumentTooLargeError("x"), 413),
    (errors.UnsupportedFormatError("x"), 415),
    (errors.ParseError("x"), 422),
    (errors.UnavailableError("x"), 503),
    (errors.StoreBusyError("x"), 503),
    (errors.EngineError("x"), 502),
    (errors.ConfigError("x"), 500),
    (errors.SiroccoError("x"), 500),
])
def test_status_for_each_domain_error(exc: errors.SiroccoError, status: int) -> None:
    assert status_for(exc) == status


async def test_domain_error_from_a_service_gets_its_status(settings) -> None:
    app = make_app(settings, RaisingAssistant(errors.StoreBusyError("the vector store is busy")))
    async with client_for(app) as client:
        response = await client.post("/api/chat", json={"question": "q", "stream": False})
    assert response.status_code == 503
    assert response.json() == {"error": {"message": "the vector store is busy",
                                         "type": "StoreBusyError", "code": "store_busy"}}


async def test_unexpected_error_is_500_without_details(settings) -> None:
    app = make_app(settings, RaisingAssistant(RuntimeError("password=hunter2")))
    async with client_for(app) as client:
        response = await client.post("/api/chat", json={"question": "q", "stream": False})
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "internal server error",
                                         "type": "InternalError", "code": "internal_error"}}


async def test_unknown_trace_and_route_are_404_envelopes(settings) -> None:
    async with client_for(make_app(settings)) as client:
        trace = await client.get("/api/traces/missing")
        route = await client.get("/api/nothing-here")
    assert trace.status_code == 404
    assert trace.json()["error"] == {"message": "trace 'missing' not found",
                                     "type": "NotFoundError", "code": "not_found"}
    assert route.status_code == 404
    assert route.json()["error"]["code"] == "http_404"


async def test_healthz(settings) -> None:
    async with client_for(make_app(settings)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_routes_answer_503_until_services_exist(settings) -> None:
    app = create_app(settings)  # lifespan not run: nothing built yet
    async with client_for(app) as client:
        response = await client.get("/api/documents/x")
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "the server is still starting; try again shortly"


def test_create_app_keeps_settings_per_app(tmp_path: Path) -> None:
    a = create_app(Settings(env="test", data_dir=tmp_path / "a"))
    b = create_app(Settings(env="test", data_dir=tmp_path / "b"))
    assert a.state.settings.data_dir != b.state.settings.data_dir


def test_lifespan_with_injected_services_builds_nothing(settings) -> None:
    from fastapi.testclient import TestClient

    app = make_app(settings)
    injected = app.state.services
    with TestClient(app) as client:  # runs the lifespan
        assert client.get("/healthz").status_code == 200
        assert app.state.services is injected
    assert app.state.services is injected  # the caller owns and closes them
