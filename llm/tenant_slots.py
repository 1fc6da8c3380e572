"""Per-tenant caps on concurrent generations: one port, two adapters.

``GenerationLimiter`` (``llm.admission``) asks a ``TenantSlots`` for a lease on
one of the caller's tenant's ``llm.max_inflight_per_tenant`` slots, so that one
tenant cannot take every slot of ``llm.max_inflight`` from the others.

* ``LocalTenantSlots``: counts in this process. The embedded default (no
  ``redis.url``) uses it, so there the cap holds per API process.
* ``RedisTenantSlots``: one sorted set per tenant in Redis (members: leases;
  scores: when each expires, on Redis's clock), checked and added to by one
  Lua script, so every process sharing the Redis shares one cap per tenant.
  A lease lasts ``LEASE_S`` and its process renews it while the generation
  runs: a process that crashes stops renewing, and its slots come back within
  ``LEASE_S`` instead of leaking forever. While Redis fails, leases come from
  the in-process adapter, with a logged warning (``sirocco.redis_fallback``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Protocol

import redis
import redis.asyncio

from sirocco.redis_fallback import RedisFallback

logger = logging.getLogger(__name__)

#: Seconds a Redis lease lives unless renewed; renewed every third of it, so
#: two renewals may be late before a running generation loses its slot, and a
#: crashed process's slots are free again within this long.
LEASE_S = 30.0


class Lease(Protocol):
    """One held slot of a tenant; ``release()`` is idempotent and never blocks."""

    def release(self) -> None: ...


class TenantSlots(Protocol):
    """The port: up to ``cap`` leases per tenant at once."""

    async def acquire(self, tenant: str, cap: int) -> Lease | None:
        """A lease on one of ``tenant``'s ``cap`` slots, or None when all are held."""

    async def aclose(self) -> None:
        """Stop background work and release connections."""


class _LocalLease:
    def __init__(self, slots: LocalTenantSlots, tenant: str) -> None:
        self._slots, self._tenant, self._released = slots, tenant, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots._release(self._tenant)


class LocalTenantSlots:
    """Leases counted in this process (single event loop: no lock needed)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def in_flight(self, tenant: str) -> int:
        """Leases of ``tenant`` held now."""
        return self._counts.get(tenant, 0)

    async def acquire(self, tenant: str, cap: int) -> Lease | None:
        """A lease on one of ``tenant``'s ``cap`` slots, or None when all are held."""
        return self.try_acquire(tenant, cap)

    def try_acquire(self, tenant: str, cap: int) -> Lease | None:
        """``acquire`` without awaiting."""
        if self._counts.get(tenant, 0) >= cap:
            return None
        self._counts[tenant] = self._counts.get(tenant, 0) + 1
        return _LocalLease(self, tenant)

    def _release(self, tenant: str) -> None:
        left = self._counts.get(tenant, 0) - 1
        if left > 0:
            self._counts[tenant] = left
        else:
            self._counts.pop(tenant, None)

    async def aclose(self) -> None:
        """Nothing to release."""


# KEYS[1]: the tenant's leases. ARGV: cap, lease id, lease seconds. 1: admitted.
# Expired leases (their process died) are dropped before counting.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""
# KEYS[1]: the tenant's leases. ARGV: lease seconds, then the lease ids to renew.
# XX: a lease that already expired (and may have been handed to someone else's
# count) is not brought back.
_RENEW = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 1)
return 0
"""


class _RedisLease:
    def __init__(self, slots: RedisTenantSlots, tenant: str, lease_id: str) -> None:
        self._slots, self._tenant, self._id, self._released = slots, tenant, lease_id, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots._release(self._tenant, self._id)


class RedisTenantSlots:
    """Leases in Redis, shared by every process using it; renewed while held."""

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "sirocco:generations:",
                 lease_s: float = LEASE_S) -> None:
        self._client = client
        self._prefix = prefix
        self.lease_s = lease_s
        self._acquire_script = client.register_script(_ACQUIRE)
        self._renew_script = client.register_script(_RENEW)
        self.fallback = LocalTenantSlots()
        self._redis = RedisFallback("generations per tenant")
        self._held: dict[str, set[str]] = {}  # tenant -> lease ids this process renews
        self._renewer: asyncio.Task[None] | None = None
        self._removals: set[asyncio.Task[None]] = set()

    async def acquire(self, tenant: str, cap: int) -> Lease | None:
        """A lease on one of ``tenant``'s ``cap`` shared slots, or None when all
        are held; an in-process lease while Redis fails."""
        if self._redis.use_redis():
            lease_id = uuid.uuid4().hex
            try:
                admitted = await self._acquire_script(keys=[self._prefix + tenant],
                                                      args=[cap, lease_id, self.lease_s])
            except redis.RedisError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                if not admitted:
                    return None
                self._held.setdefault(tenant, set()).add(lease_id)
                self._start_renewer()
                return _RedisLease(self, tenant, lease_id)
        return self.fallback.try_acquire(tenant, cap)

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_while_held())

    async def _renew_while_held(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease_s / 3)
            for tenant, lease_ids in list(self._held.items()):
                try:
                    await self._renew_script(keys=[self._prefix + tenant],
                                             args=[self.lease_s, *lease_ids])
                except redis.RedisError as exc:
                    self._redis.failed(exc)
                except Exception:  # keep renewing the others: a dead renewer frees every slot
                    logger.exception("renewing generation leases failed",
                                     extra={"tenant": tenant})

    def _release(self, tenant: str, lease_id: str) -> None:
        held = self._held.get(tenant)
        if held is not None:
            held.discard(lease_id)
            if not held:
                del self._held[tenant]
        # Removed by a task of its own: release() runs in finally blocks of
        # cancelled requests, where an await would be cancelled in turn.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (interpreter exit): the lease expires on its own
        task = loop.create_task(self._remove(tenant, lease_id))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove(self, tenant: str, lease_id: str) -> None:
        try:
            await self._client.zrem(self._prefix + tenant, lease_id)
        except redis.RedisError as exc:
            self._redis.failed(exc)  # not renewed any more: it expires within lease_s

    async def aclose(self) -> None:
        """Stop renewing, finish pending releases, close the connections."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)
        await self._client.aclose()
