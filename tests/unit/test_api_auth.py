"""API keys: every route but health needs one; revoked or unknown keys get 401;
admin-only management; the key's tenant/user/groups drive retrieval's ACL and
what documents, jobs and traces a caller can see; per-key rate limit; failed
keys limited per client address; Redis-backed limiters fall back when Redis is
down (sharing through a real Redis: tests/integration/test_api_ratelimit_redis.py)."""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.auth import make_invalid_key_limiter, make_limiter
from api.ratelimit import RedisTokenBucketLimiter, TokenBucketLimiter
from api.services import Services
from assistant.service import Assistant
from ingest.models import Document, Job
from sirocco.auth.keys import create_key, ensure_bootstrap_admin, list_keys
from sirocco.auth.models import ApiKey
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.errors import RateLimitedError
from sirocco.principal import Principal
from sirocco.redis_fallback import RedisFallback
from sirocco.settings import Settings
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore, make_hit
from traces.recorder import TraceRecorder


@pytest.fixture
def settings(tmp_path: Path, web_build: Path) -> Settings:
    return Settings(env="test", data_dir=tmp_path, api={"web_dir": web_build})


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store() -> StaticStore:
    return StaticStore([make_hit(1)])


def make_app(settings: Settings, factory: sessionmaker[Session], store: StaticStore) -> Any:
    engine = ScriptedEngine(["Fact [1]."])
    # The production recorder's salt (build_services): owners find their traces.
    recorder = TraceRecorder(factory, user_salt=settings.auth.secret_key)
    assistant = Assistant(engine, store, ConstantEmbedder(), recorder, settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=lambda paths, *, session, tenant="default": [],
                        enqueue_documents=lambda app, ids: None, engine=engine, store=store)
    return create_app(settings, services=services)


@pytest.fixture
def app(settings: Settings, factory: sessionmaker[Session], store: StaticStore) -> Any:
    return make_app(settings, factory, store)


def key(factory: sessionmaker[Session], user: str = "ana", **kw: Any) -> str:
    with session_scope(factory) as s:
        return create_key(session=s, user=user, **kw)[1]


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def client(app: Any, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of ``app`` calling from ``address`` (``request.client.host``)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 123)),
                             base_url="http://test")


async def test_health_is_open_and_everything_else_needs_a_key(app) -> None:
    async with client(app) as c:
        assert (await c.get("/healthz")).status_code == 200
        for method, path in [("POST", "/api/chat"), ("GET", "/api/documents"),
                             ("GET", "/api/documents/x"), ("GET", "/api/traces/x"),
                             ("GET", "/api/jobs"), ("GET", "/api/sources"),
                             ("GET", "/api/keys"), ("GET", "/v1/models"),
                             ("POST", "/v1/chat/completions"), ("GET", "/openapi.json"),
                             ("GET", "/docs"), ("GET", "/metrics")]:
            r = await c.request(method, path, json={"question": "q"})
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "missing API key" in r.json()["error"]["message"]
        r = await c.get("/v1/models")
    assert r.json()["error"] == {"message": r.json()["error"]["message"],
                                 "type": "authentication_error", "param": None,
                                 "code": "invalid_api_key"}


async def test_docs_and_metrics_with_a_key_or_opened_by_settings(app, factory, tmp_path,
                                                                 store, web_build) -> None:
    raw = key(factory)
    async with client(app) as c:
        schema = await c.get("/openapi.json", headers=bearer(raw))
        assert schema.status_code == 200 and "/api/chat" in schema.json()["paths"]
        docs = await c.get("/docs", headers=bearer(raw))
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert (await c.get("/metrics", headers=bearer(raw))).status_code == 200
    opened = Settings(env="test", data_dir=tmp_path, auth={"open_endpoints": ["docs", "metrics"]},
                      api={"web_dir": web_build})
    async with client(make_app(opened, factory, store)) as c:
        for path in ("/openapi.json", "/docs", "/metrics"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.get("/api/documents")).status_code == 401
    with pytest.raises(ValidationError):
        Settings(env="test", auth={"open_endpoints": ["keys"]})


async def test_bearer_and_x_api_key_both_work_unknown_keys_do_not(app, factory) -> None:
    raw = key(factory)
    async with client(app) as c:
        assert (await c.get("/v1/models", headers=bearer(raw))).status_code == 200
        assert (await c.get("/v1/models", headers={"X-API-Key": raw})).status_code == 200
        for bad in (raw[:-1] + ("A" if raw[-1] != "A" else "B"), "sk-sirocco-nope", "x"):
            r = await c.get("/v1/models", headers=bearer(bad))
            assert r.status_code == 401
            assert r.json()["error"]["message"] == "invalid API key"


async def test_revoked_key_is_401(app, factory) -> None:
    admin, user = key(factory, "root", admin=True), key(factory, "ana")
    async with client(app) as c:
        assert (await c.get("/api/documents", headers=bearer(user))).status_code == 200
        listed = (await c.get("/api/keys", headers=bearer(admin))).json()
        ana = next(k for k in listed if k["user"] == "ana")
        r = await c.delete(f"/api/keys/{ana['prefix']}", headers=bearer(admin))
        assert r.status_code == 200 and r.json()["revoked_at"]
        r = await c.get("/api/documents", headers=bearer(user))
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "invalid API key"


async def test_keys_are_stored_hashed_and_shown_once(app, factory) -> None:
    admin = key(factory, "root", admin=True)
    async with client(app) as c:
        r = await c.post("/api/keys", headers=bearer(admin),
                         json={"user": "bo", "groups": ["hr", "eng"]})
        assert r.status_code == 201
        created = r.json()
        listed = (await c.get("/api/keys", headers=bearer(admin))).text
    raw = created["key"]
    assert raw.startswith("sk-sirocco-") and len(raw) > 40
    assert raw.startswith(created["prefix"]) and raw not in listed
    assert created["groups"] == ["eng", "hr"] and created["is_admin"] is False
    with session_scope(factory) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
        assert row is not None
        assert row.key_hash == hashlib.sha256(raw.encode()).hexdigest()
        assert raw not in {row.prefix, row.key_hash, row.name}


async def test_management_needs_an_admin_key(app, factory) -> None:
    user, admin = key(factory, "ana"), key(factory, "root", admin=True)
    async with client(app) as c:
        for path in ("/api/jobs", "/api/sources", "/api/keys"):
            r = await c.get(path, headers=bearer(user))
            assert r.status_code == 403, path
            assert r.json()["error"]["message"] == "this needs an admin API key"
            assert (await c.get(path, headers=bearer(admin))).status_code == 200, path
        r = await c.post("/api/keys", headers=bearer(user), json={"user": "eve", "admin": True})
        assert r.status_code == 403


async def test_the_keys_user_groups_and_tenant_filter_retrieval(app, factory, store) -> None:
    raw = key(factory, "ana", groups=["hr", "eng"], tenant="acme")
    async with client(app) as c:
        r = await c.post("/api/chat", headers=bearer(raw), json={"question": "q", "stream": False})
        assert r.status_code == 200, r.text
        r = await c.post("/v1/chat/completions", headers=bearer(raw), json={
            "model": "scripted-model", "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 200, r.text
    # Each answer searches as the key's principal (the retrieval, and the
    # refusal check's relevance search): never as anybody else.
    callers = [s["filter"].caller for s in store.searches]
    assert len(callers) >= 2
    assert all(c == Principal(tenant="acme", user="ana", groups=("eng", "hr")) for c in callers)


async def test_other_tenants_documents_jobs_and_traces_do_not_leak(app, factory) -> None:
    acme_admin = key(factory, "root", admin=True, tenant="acme")
    acme_user = key(factory, "ana", groups=["hr"], tenant="acme")
    globex = key(factory, "gus", tenant="globex")
    with session_scope(factory) as s:
        docs = [Document(tenant="acme", source_path="/a/open.md", title="open"),
                Document(tenant="acme", source_path="/a/hr.md", title="hr", acl=["group:hr"]),
                Document(tenant="acme", source_path="/a/board.md", title="board",
                         acl=["group:board"]),
                Document(tenant="globex", source_path="/g/open.md", title="globex")]
        job = Job(tenant="globex", kind="ingest")
        s.add_all([*docs, job])
        s.flush()
        ids = {d.title: d.id for d in docs}
        job_id = job.id
    async with client(app) as c:
        async def titles(raw: str) -> set[str]:
            r = await c.get("/api/documents", headers=bearer(raw))
            return {d["title"] for d in r.json()}

        assert await titles(acme_user) == {"open", "hr"}
        assert await titles(acme_admin) == {"open", "hr", "board"}
        assert await titles(globex) == {"globex"}
        for raw, title in [(acme_user, "globex"), (acme_user, "board"), (globex, "open")]:
            r = await c.get(f"/api/documents/{ids[title]}", headers=bearer(raw))
            assert r.status_code == 404, title
        assert (await c.get(f"/api/jobs/{job_id}", headers=bearer(acme_admin))).status_code == 404
        r = await c.post("/api/chat", headers=bearer(globex), json={"question": "q",
                                                                     "stream": False})
        trace_id = r.json()["trace_id"]
        assert (await c.get(f"/api/traces/{trace_id}", headers=bearer(globex))).status_code == 200
        assert (await c.get(f"/api/traces/{trace_id}",
                            headers=bearer(acme_user))).status_code == 404


async def test_rate_limit_per_key_is_429_with_retry_after(tmp_path, factory, store) -> None:
    settings = Settings(env="test", data_dir=tmp_path,
                        auth={"rate_limit_per_minute": 6, "rate_limit_burst": 2})
    app = make_app(settings, factory, store)
    a, b = key(factory, "ana"), key(factory, "bo")
    async with client(app) as c:
        codes = [(await c.get("/v1/models", headers=bearer(a))).status_code for _ in range(3)]
        other = await c.get("/v1/models", headers=bearer(b))
        r = await c.get("/v1/models", headers=bearer(a))
    assert codes == [200, 200, 429]
    assert other.status_code == 200  # buckets are per key
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_token_bucket_refills_over_time() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    limiter.acquire("k")
    limiter.acquire("k")
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("k")
    assert info.value.retry_after_s == pytest.approx(1.0)
    now[0] = 1.0
    limiter.acquire("k")
    assert not TokenBucketLimiter(per_minute=0, burst=1).enabled


def test_check_takes_nothing_and_refuses_only_an_empty_bucket() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(per_minute=60, burst=1, subject="these keys",
                                 clock=lambda: now[0])
    for _ in range(3):
        limiter.check("k")
    limiter.acquire("k")
    with pytest.raises(RateLimitedError, match="for these keys") as info:
        limiter.check("k")
    assert info.value.retry_after_s == pytest.approx(1.0)
    limiter.check("other")
    now[0] = 1.0
    limiter.check("k")


def test_idle_buckets_do_not_pile_up() -> None:
    # Client addresses are keys a caller can vary at will: memory must not follow.
    now = [0.0]
    limiter = TokenBucketLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    for i in range(1000):
        limiter.check(f"10.0.{i // 250}.{i % 250}")  # checks store nothing
    assert len(limiter._buckets) == 0
    for i in range(1000):
        limiter.acquire(f"a{i}")
    now[0] = 5.0  # every bucket full again: as good as absent
    for i in range(100):
        limiter.acquire(f"b{i}")
    assert 0 < len(limiter._buckets) <= 100
    limiter.acquire("b0")
    with pytest.raises(RateLimitedError):
        limiter.acquire("b0")  # pruning kept the buckets in use


async def test_invalid_keys_are_rate_limited_per_client_address(tmp_path, factory,
                                                                store) -> None:
    settings = Settings(env="test", data_dir=tmp_path,
                        auth={"invalid_key_per_minute": 60, "invalid_key_burst": 3})
    app = make_app(settings, factory, store)
    now = [0.0]
    # The settings' limiter with a clock the test moves, to show the refill.
    app.state.invalid_key_limiter = TokenBucketLimiter(
        per_minute=60, burst=3, subject="invalid API keys from this address",
        clock=lambda: now[0])
    valid, guess = key(factory, "ana"), bearer("sk-sirocco-" + "x" * 40)
    async with client(app, "10.0.0.1") as guesser, client(app, "10.0.0.2") as neighbour:
        for _ in range(5):  # valid keys take nothing from an address's bucket
            assert (await neighbour.get("/v1/models", headers=bearer(valid))).status_code == 200
        codes = [(await guesser.get("/v1/models", headers=guess)).status_code for _ in range(4)]
        refused = await guesser.get("/v1/models", headers=guess)
        # Refused before the lookup: a right guess from this address is no use now.
        blocked_valid = await guesser.get("/v1/models", headers=bearer(valid))
        assert (await neighbour.get("/v1/models", headers=bearer(valid))).status_code == 200
        assert (await neighbour.get("/v1/models", headers=guess)).status_code == 401
        now[0] = 1.0  # one token back
        assert (await guesser.get("/v1/models", headers=bearer(valid))).status_code == 200
    assert codes == [401, 401, 401, 429]
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "invalid API keys from this address" in refused.json()["error"]["message"]
    assert blocked_valid.status_code == 429


async def test_invalid_key_limit_comes_from_settings_and_is_off_at_zero(tmp_path, factory,
                                                                        store) -> None:
    limited = make_app(Settings(env="test", data_dir=tmp_path, auth={"invalid_key_burst": 2}),
                       factory, store)
    off = make_app(Settings(env="test", data_dir=tmp_path,
                            auth={"invalid_key_per_minute": 0, "invalid_key_burst": 2}),
                   factory, store)
    codes: dict[str, list[int]] = {}
    for name, app in (("limited", limited), ("off", off)):
        async with client(app) as c:
            codes[name] = [(await c.get("/v1/models", headers=bearer("nope"))).status_code
                           for _ in range(3)]
    assert codes == {"limited": [401, 401, 429], "off": [401, 401, 401]}


def test_limiters_are_shared_through_redis_only_when_it_is_set(tmp_path) -> None:
    local = Settings(env="test", data_dir=tmp_path)
    assert isinstance(make_limiter(local), TokenBucketLimiter)
    assert isinstance(make_invalid_key_limiter(local), TokenBucketLimiter)
    # Building a Redis client connects nothing: no server needed here.
    shared = Settings(env="test", data_dir=tmp_path, redis={"url": "redis://127.0.0.1:1/0"})
    assert isinstance(make_limiter(shared), RedisTokenBucketLimiter)
    assert isinstance(make_invalid_key_limiter(shared), RedisTokenBucketLimiter)


async def test_redis_down_falls_back_to_this_process_never_a_500(tmp_path, factory, store,
                                                                 caplog) -> None:
    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    settings = Settings(env="test", data_dir=tmp_path, redis={"url": dead},
                        auth={"rate_limit_per_minute": 6, "rate_limit_burst": 2,
                              "invalid_key_burst": 1})
    app = make_app(settings, factory, store)
    a, b = key(factory, "ana"), key(factory, "bo")
    with caplog.at_level(logging.WARNING, logger="sirocco.redis_fallback"):
        async with client(app) as c:
            codes = [(await c.get("/v1/models", headers=bearer(a))).status_code
                     for _ in range(3)]
            other = await c.get("/v1/models", headers=bearer(b))
            async with client(app, "10.0.0.9") as guesser:
                bad = [(await guesser.get("/v1/models", headers=bearer("nope"))).status_code
                       for _ in range(2)]
    assert codes == [200, 200, 429] and other.status_code == 200
    assert bad == [401, 429]
    assert [r.getMessage() for r in caplog.records].count(
        "Redis unavailable: limits fall back to this process's own") == 2  # once per limiter


def test_redis_is_asked_again_after_the_cooldown(caplog) -> None:
    now = [0.0]
    fallback = RedisFallback("test", cooldown_s=5, clock=lambda: now[0])
    assert fallback.use_redis()
    with caplog.at_level(logging.INFO, logger="sirocco.redis_fallback"):
        fallback.failed(ConnectionError("refused"))
        now[0] = 4.9
        assert not fallback.use_redis()
        fallback.failed(ConnectionError("refused"))  # still the same outage
        now[0] = 10.0
        assert fallback.use_redis()
        fallback.succeeded()
        fallback.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "Redis unavailable: limits fall back to this process's own",
        "Redis is back: limits shared across processes again"]


def test_bootstrap_admin_key_is_created_once(factory) -> None:
    with session_scope(factory) as s:
        first = ensure_bootstrap_admin(session=s)
    with session_scope(factory) as s:
        assert ensure_bootstrap_admin(session=s) is None
        keys = list_keys(session=s)
    assert first is not None and first.startswith("sk-sirocco-")
    assert [(k.user, k.tenant, k.is_admin) for k in keys] == [("admin", "default", True)]


def test_auth_cannot_be_turned_off_in_prod() -> None:
    with pytest.raises(ValidationError, match="SIROCCO_AUTH__ENABLED=false is refused"):
        Settings(env="prod", auth={"enabled": False, "secret_key": "s3cret"})
    assert Settings(env="dev", auth={"enabled": False}).auth.enabled is False


async def test_chat_question_over_the_limit_is_400(tmp_path, factory, store) -> None:
    app = make_app(Settings(env="test", data_dir=tmp_path, api={"max_question_chars": 10}),
                   factory, store)
    async with client(app) as c:
        r = await c.post("/api/chat", headers=bearer(key(factory)),
                         json={"question": "x" * 11, "stream": False})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "the question has 11 characters; the limit is 10"
