"""Limits shared through a real Redis: two limiter objects, each with its own
client (as two API processes would have), share one bucket per key and one
generation cap per tenant; two apps built from the same settings share the
per-key and failed-key buckets over HTTP; a crashed holder's slots come back.

Every key and tenant name is unique to the run, so neither earlier runs nor
other tests using database 15 meet these buckets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from sqlalchemy.orm import Session, sessionmaker

from api.ratelimit import RedisTokenBucketLimiter
from llm.admission import GenerationLimiter, make_generation_limiter
from llm.tenant_slots import RedisTenantSlots
from sirocco.db import Base, make_engine, make_session_factory
from sirocco.errors import OverloadedError, RateLimitedError
from sirocco.settings import Settings
from tests.unit.test_api_auth import bearer, key

pytestmark = pytest.mark.integration


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


def bucket(redis_url: str, prefix: str, *, per_minute: float = 60,
           burst: int = 3) -> RedisTokenBucketLimiter:
    return RedisTokenBucketLimiter(redis.Redis.from_url(redis_url), per_minute=per_minute,
                                   burst=burst, prefix=prefix)


def test_two_limiters_share_one_bucket_per_key(redis_url: str) -> None:
    prefix = unique("sirocco:test:ratelimit") + ":"
    one, two = bucket(redis_url, prefix), bucket(redis_url, prefix)  # 1 a second, burst 3
    try:
        one.acquire("k")
        two.acquire("k")
        one.acquire("k")
        for limiter in (two, one):
            with pytest.raises(RateLimitedError) as info:
                limiter.acquire("k")
            assert 0.5 < info.value.retry_after_s <= 1.0
        two.check("other")
        with redis.Redis.from_url(redis_url) as plain:
            assert not plain.exists(prefix + "other"), "a check writes nothing"
            two.acquire("other")  # buckets are per key
            ttl = plain.ttl(prefix + "k")
        assert 0 < ttl <= 3 + 1, "a bucket lives until it is full again, not forever"
        time.sleep(1.1)  # one token back, on Redis's clock
        two.check("k")
        one.acquire("k")
        with pytest.raises(RateLimitedError):
            two.acquire("k")
    finally:
        one.close()
        two.close()


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(Settings(env="test", data_dir=tmp_path))
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def limits_app(settings: Settings, factory: sessionmaker[Session]) -> Any:
    """The API with real services around what this test asks (keys, limits,
    /v1/models); no engine or store: nothing here generates or retrieves."""
    from api.app import create_app
    from api.services import Services
    from ingest.service import register_files
    from workers.tasks import enqueue_documents

    services = Services(session_factory=factory, assistant=None,  # type: ignore[arg-type]
                        celery_app=None, register_files=register_files,
                        enqueue_documents=enqueue_documents)
    return create_app(settings, services=services)


async def test_two_apps_share_key_and_failed_key_buckets(redis_url: str, tmp_path: Path,
                                                         factory) -> None:
    settings = Settings(env="test", data_dir=tmp_path, redis={"url": redis_url},
                        auth={"rate_limit_per_minute": 6, "rate_limit_burst": 3,
                              "invalid_key_per_minute": 6, "invalid_key_burst": 2})
    apps = [limits_app(settings, factory) for _ in range(2)]
    ana, bo = key(factory, "ana"), key(factory, "bo")
    # An address of this run only: the failed-key bucket is keyed by it.
    address = "10." + ".".join(str(b) for b in uuid.uuid4().bytes[:3])

    def client(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 1)),
                                 base_url="http://test")

    async with client(apps[0]) as first, client(apps[1]) as second:
        codes = [(await c.get("/v1/models", headers=bearer(ana))).status_code
                 for c in (first, second, first, second)]
        other = await second.get("/v1/models", headers=bearer(bo))
        bad = [(await c.get("/v1/models", headers=bearer("nope"))).status_code
               for c in (first, second, first)]
    for app in apps:
        app.state.rate_limiter.close()
        app.state.invalid_key_limiter.close()
    assert codes == [200, 200, 200, 429], "3 of one key's requests in all, not 3 per app"
    assert other.status_code == 200  # another key has its own bucket
    assert bad == [401, 401, 429], "2 failed keys per address in all, not 2 per app"


async def test_two_limiters_share_one_cap_per_tenant(redis_url: str) -> None:
    settings = Settings(env="test", redis={"url": redis_url},
                        llm={"max_inflight_per_tenant": 2, "retry_after_s": 3})
    one, two = make_generation_limiter(settings), make_generation_limiter(settings)
    acme, globex = unique("acme"), unique("globex")
    leases = redis.asyncio.Redis.from_url(redis_url)
    try:
        held = [await one.acquire(acme), await two.acquire(acme)]
        for limiter in (one, two):
            with pytest.raises(OverloadedError, match="max_inflight_per_tenant") as info:
                await limiter.acquire(acme)
            assert info.value.retry_after_s == 3
        other = await one.acquire(globex)  # another tenant is not held back
        held.pop(0).release()  # released in one process, free in the other
        async with asyncio.timeout(5):  # the removal runs in a task of its own
            while await leases.zcard("sirocco:generations:" + acme) != 1:
                await asyncio.sleep(0.01)
        held.append(await two.acquire(acme))
        for slot in [*held, other]:
            slot.release()
        assert (one.in_flight, two.in_flight) == (0, 0)
        async with asyncio.timeout(5):  # released leases leave Redis, not only expire
            while await leases.exists("sirocco:generations:" + acme,
                                      "sirocco:generations:" + globex):
                await asyncio.sleep(0.01)
    finally:
        await one.aclose()
        await two.aclose()
        await leases.aclose()


async def test_held_slots_are_renewed_and_a_crashed_holders_expire(redis_url: str) -> None:
    def limiter() -> GenerationLimiter:
        slots = RedisTenantSlots(redis.asyncio.Redis.from_url(redis_url), lease_s=1.0)
        return GenerationLimiter(8, max_per_tenant=1, tenant_slots=slots)

    crashed, alive = limiter(), limiter()
    tenant = unique("acme")
    try:
        await crashed.acquire(tenant)
        await asyncio.sleep(2.5)  # past two lease lengths: renewals keep it
        with pytest.raises(OverloadedError):
            await alive.acquire(tenant)
        # The holder goes away without releasing (as a killed process): no more renewals.
        await crashed.aclose()
        await asyncio.sleep(1.3)
        with await alive.acquire(tenant):
            pass
    finally:
        await alive.aclose()
