"""Admission control: past settings.llm.max_inflight, /api/chat answers 429 at once;
GET /metrics shows Sirocco's own counters (vLLM's are tested with the real engine)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from api.app import create_app
from api.services import Services
from assistant.service import Assistant
from llm.admission import GenerationLimiter, hold_while_streaming, make_generation_limiter
from llm.tenant_slots import LocalTenantSlots, RedisTenantSlots
from sirocco.auth.keys import create_key
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.errors import OverloadedError
from sirocco.settings import Settings
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.recorder import TraceRecorder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # API keys are tested in test_api_auth.py; these routes run as the anonymous admin.
    return Settings(env="test", data_dir=tmp_path, auth={"enabled": False})


def make_app(settings: Settings, engine: ScriptedEngine, limiter: GenerationLimiter):  # type: ignore[no-untyped-def]
    db = make_engine(settings)
    Base.metadata.create_all(db)
    factory = make_session_factory(db)
    assistant = Assistant(engine, StaticStore([make_hit(1)]), ConstantEmbedder(),
                          TraceRecorder(factory), settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=lambda paths, *, session, tenant="default": [],
                        enqueue_documents=lambda app, ids: None, limiter=limiter,
                        engine=engine)
    return create_app(settings, services=services)


def client(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def dead_redis_url() -> str:
    """A Redis URL on a port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_limiter_refuses_past_the_bound_and_frees_on_release() -> None:
    limiter = GenerationLimiter(2, retry_after_s=3)
    a, b = await limiter.acquire("acme"), await limiter.acquire("globex")
    with pytest.raises(OverloadedError, match="busy") as info:
        await limiter.acquire("initech")  # the global bound binds every tenant
    assert info.value.retry_after_s == 3
    assert (limiter.in_flight, limiter.rejected) == (2, 1)
    a.release()
    a.release()  # idempotent: does not free b's slot
    assert limiter.in_flight == 1
    with await limiter.acquire("acme"):
        assert limiter.in_flight == 2
    b.release()
    assert limiter.in_flight == 0


async def test_tenant_cap_refuses_that_tenant_only() -> None:
    slots = LocalTenantSlots()
    limiter = GenerationLimiter(10, retry_after_s=2, max_per_tenant=2, tenant_slots=slots)
    held = [await limiter.acquire("acme"), await limiter.acquire("acme")]
    with pytest.raises(OverloadedError, match="max_inflight_per_tenant") as info:
        await limiter.acquire("acme")
    assert "tenant 'acme'" in info.value.message and info.value.retry_after_s == 2
    # The refused request holds nothing; another tenant still gets in.
    assert (limiter.in_flight, limiter.rejected, slots.in_flight("acme")) == (2, 1, 2)
    other = await limiter.acquire("globex")
    assert (limiter.in_flight, slots.in_flight("globex")) == (3, 1)
    held.pop().release()
    held.append(await limiter.acquire("acme"))  # a released slot is the tenant's again
    for slot in [*held, other]:
        slot.release()
    assert (limiter.in_flight, slots.in_flight("acme"), slots.in_flight("globex")) == (0, 0, 0)


def test_the_tenant_cap_comes_from_settings_and_is_shared_when_redis_is_set() -> None:
    default = make_generation_limiter(Settings(env="test"))
    assert default.max_per_tenant == 16 and isinstance(default.tenant_slots, LocalTenantSlots)
    for off in (0, None):
        limiter = make_generation_limiter(Settings(env="test",
                                                   llm={"max_inflight_per_tenant": off}))
        assert limiter.max_per_tenant is None
    # Building a Redis client connects nothing: no server needed here.
    shared = make_generation_limiter(Settings(env="test", redis={"url": "redis://127.0.0.1:1/0"},
                                              llm={"max_inflight_per_tenant": 3}))
    assert shared.max_per_tenant == 3 and isinstance(shared.tenant_slots, RedisTenantSlots)


async def test_tenant_cap_falls_back_to_this_process_while_redis_is_down(caplog) -> None:
    limiter = GenerationLimiter(10, max_per_tenant=1, tenant_slots=RedisTenantSlots(
        redis.asyncio.Redis.from_url(dead_redis_url(), socket_connect_timeout=0.5)))
    with caplog.at_level(logging.WARNING, logger="sirocco.redis_fallback"):
        slot = await limiter.acquire("acme")
        with pytest.raises(OverloadedError, match="max_inflight_per_tenant"):
            await limiter.acquire("acme")
        other = await limiter.acquire("globex")
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1, "one warning per outage, not one per request"
    slot.release()
    other.release()
    with await limiter.acquire("acme"):
        pass
    await limiter.aclose()


async def test_streaming_holds_its_slot_until_closed() -> None:
    limiter = GenerationLimiter(1)

    async def events():
        for i in range(10):
            yield i

    stream = hold_while_streaming(events(), await limiter.acquire("acme"))
    assert await anext(stream) == 0
    assert limiter.in_flight == 1
    await stream.aclose()
    assert limiter.in_flight == 0


class GatedEngine(ScriptedEngine):
    """Holds every generation before its first chunk until ``gate`` is set."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def generate(self, messages, **kwargs):  # type: ignore[no-untyped-def]
        self.waiting.set()
        await self.gate.wait()
        async for event in super().generate(messages, **kwargs):
            yield event


async def test_chat_past_capacity_is_429_with_retry_after(settings) -> None:
    engine = GatedEngine(["Blue [1]."])
    limiter = GenerationLimiter(1, retry_after_s=2.5)
    app = make_app(settings, engine, limiter)
    async with client(app) as http:
        first = asyncio.create_task(http.post("/api/chat", json={"question": "q"}))
        await asyncio.wait_for(engine.waiting.wait(), timeout=5)
        assert limiter.in_flight == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        refused = await http.post("/api/chat", json={"question": "again"})
        refused_sync = await http.post("/api/chat", json={"question": "x", "stream": False})
        assert loop.time() - started < 2.0, "refused at once, not queued"
        engine.gate.set()
        assert (await first).status_code == 200
        # The first stream is closed: its slot is free again.
        assert limiter.in_flight == 0
        ok = await http.post("/api/chat", json={"question": "later", "stream": False})
        metrics = (await http.get("/metrics")).text

    for response in (refused, refused_sync):
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        error = response.json()["error"]
        assert error["code"] == "overloaded"
        assert "busy" in error["message"]
    assert ok.status_code == 200 and ok.json()["answer"] == "Blue [1]."
    assert len(engine.calls) == 2, "refused requests never reached the engine"
    assert "sirocco_generations_rejected_total 2.0" in metrics
    assert "sirocco_generations_in_flight 0.0" in metrics
    assert "sirocco_generations_max_inflight 1.0" in metrics
    assert 'sirocco_http_requests_total{method="POST",route="/api/chat",status="429"} 2.0' \
        in metrics
    assert 'sirocco_http_requests_total{method="POST",route="/api/chat",status="200"} 2.0' \
        in metrics
    assert 'sirocco_http_request_duration_seconds_count{method="POST",route="/api/chat"} 4.0' \
        in metrics


async def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_chat_past_the_tenant_cap_is_429_and_other_tenants_go_on(tmp_path) -> None:
    # API keys on: the tenant is the key's.
    engine = GatedEngine(["Blue [1]."])
    limiter = GenerationLimiter(8, retry_after_s=2, max_per_tenant=1)
    app = make_app(Settings(env="test", data_dir=tmp_path), engine, limiter)
    with session_scope(app.state.services.session_factory) as session:
        acme, globex = ({"Authorization": "Bearer " + create_key(
            session=session, user=user, tenant=tenant)[1]}
            for user, tenant in (("ana", "acme"), ("gus", "globex")))
    chat = {"question": "q", "stream": False}
    completion = {"model": "scripted-model", "messages": [{"role": "user", "content": "q"}]}
    async with client(app) as http:
        first = asyncio.create_task(http.post("/api/chat", headers=acme, json={"question": "q"}))
        await asyncio.wait_for(engine.waiting.wait(), timeout=5)
        refused = await http.post("/api/chat", headers=acme, json=chat)
        refused_openai = await http.post("/v1/chat/completions", headers=acme, json=completion)
        other = asyncio.create_task(http.post("/api/chat", headers=globex, json=chat))
        await wait_until(lambda: limiter.in_flight == 2)
        engine.gate.set()
        assert (await first).status_code == 200
        assert (await other).status_code == 200, "another tenant is not held back"
        again = await http.post("/v1/chat/completions", headers=acme, json=completion)
    assert again.status_code == 200, "the tenant's slot is free once its answer is done"
    for response in (refused, refused_openai):
        assert response.status_code == 429, response.text
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "overloaded"
        assert "max_inflight_per_tenant" in response.json()["error"]["message"]
    assert len(engine.calls) == 3, "refused requests never reached the engine"
    assert (limiter.in_flight, limiter.rejected) == (0, 2)


async def test_engine_failure_before_first_event_frees_the_slot(settings) -> None:
    limiter = GenerationLimiter(1)
    app = make_app(settings, ScriptedEngine(["x"], fail_at=0), limiter)
    async with client(app) as http:
        failed = await http.post("/api/chat", json={"question": "q"})
        failed_sync = await http.post("/api/chat", json={"question": "q", "stream": False})
    assert failed.status_code == 502 and failed_sync.status_code == 502
    assert limiter.in_flight == 0


async def test_client_gone_mid_stream_frees_the_slot(settings) -> None:
    limiter = GenerationLimiter(1)
    engine = ScriptedEngine([f"t{i} " for i in range(200)], delay=0.01)
    app = make_app(settings, engine, limiter)
    first_body = asyncio.Event()
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b'{"question": "q"}', "more_body": False}
        await first_body.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            first_body.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/api/chat",
             "raw_path": b"/api/chat", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    assert engine.streams_closed == 1
    assert engine.emitted < 200
    assert limiter.in_flight == 0


async def test_unmatched_paths_share_one_label(settings) -> None:
    app = make_app(settings, ScriptedEngine(), GenerationLimiter(1))
    async with client(app) as http:
        await http.get("/no/such/path/123")
        await http.get("/no/such/path/456")
        body = (await http.get("/metrics")).text
    assert 'sirocco_http_requests_total{method="GET",route="<unmatched>",status="404"} 2.0' \
        in body
