"""Admission control: a bounded count of generations in flight, in all and
per tenant.

Past a bound a request is refused at once with ``OverloadedError`` (the API
answers 429 + ``Retry-After``) instead of waiting in vLLM's queue until the
client times out. A slot is held from admission until the answer stream is
closed, however it ends (done, error, client gone).

Two bounds apply: ``llm.max_inflight`` for the whole process (it bounds this
process's engine queue, so it is counted per process even with Redis), and
``llm.max_inflight_per_tenant`` for each tenant, so one tenant cannot take
every slot from the others. The tenant cap is shared by every API process
through Redis when ``redis.url`` is set, and per process on the embedded
default (``llm.tenant_slots``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

import redis.asyncio

from llm.tenant_slots import Lease, LocalTenantSlots, RedisTenantSlots, TenantSlots
from sirocco.errors import ConfigError, OverloadedError
from sirocco.redis_fallback import SOCKET_TIMEOUT_S
from sirocco.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Slot:
    """One admitted generation; ``release()`` is idempotent. A context manager."""

    def __init__(self, limiter: GenerationLimiter, lease: Lease | None = None) -> None:
        self._limiter = limiter
        self._lease = lease
        self._released = False

    def release(self) -> None:
        """Give the slot (and its tenant lease) back; a second call does nothing."""
        if not self._released:
            self._released = True
            self._limiter._in_flight -= 1
            if self._lease is not None:
                self._lease.release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class GenerationLimiter:
    """At most ``max_inflight`` slots out at once, and at most ``max_per_tenant``
    of them per tenant (None: no tenant cap); never blocks.

    Single event loop only (no lock: acquire and release run on the loop thread).
    """

    def __init__(self, max_inflight: int, *, retry_after_s: float = 1.0,
                 max_per_tenant: int | None = None,
                 tenant_slots: TenantSlots | None = None) -> None:
        if max_inflight < 1:
            raise ConfigError(f"llm.max_inflight must be >= 1, got {max_inflight}")
        self.max_inflight = max_inflight
        self.retry_after_s = retry_after_s
        self.max_per_tenant = max_per_tenant or None
        self.tenant_slots: TenantSlots = tenant_slots or LocalTenantSlots()
        self._in_flight = 0
        #: Requests refused since start, either bound (exported as a Prometheus counter).
        self.rejected = 0

    @property
    def in_flight(self) -> int:
        """Slots currently held in this process."""
        return self._in_flight

    async def acquire(self, tenant: str) -> Slot:
        """A slot for a generation of ``tenant``, or ``OverloadedError`` at once
        when all slots, or all of the tenant's, are taken."""
        if self._in_flight >= self.max_inflight:
            raise self._refused(f"the server is busy ({self.max_inflight} answers in progress)",
                                tenant)
        # Counted before the await below, so requests admitted meanwhile see it.
        self._in_flight += 1
        try:
            lease = await self._tenant_lease(tenant)
        except BaseException:
            self._in_flight -= 1
            raise
        return Slot(self, lease)

    async def _tenant_lease(self, tenant: str) -> Lease | None:
        if self.max_per_tenant is None:
            return None
        lease = await self.tenant_slots.acquire(tenant, self.max_per_tenant)
        if lease is None:
            raise self._refused(f"tenant {tenant!r} is at its cap of {self.max_per_tenant} "
                                "answers in progress (llm.max_inflight_per_tenant)", tenant)
        return lease

    def _refused(self, why: str, tenant: str) -> OverloadedError:
        self.rejected += 1
        logger.info("generation refused", extra={"why": why, "tenant": tenant,
                                                 "in_flight": self._in_flight})
        return OverloadedError(f"{why}; retry in {self.retry_after_s:g} s",
                               retry_after_s=self.retry_after_s)

    async def aclose(self) -> None:
        """Stop the tenant slots' background work and close their connections."""
        await self.tenant_slots.aclose()


def make_generation_limiter(settings: Settings) -> GenerationLimiter:
    """The limiter ``settings.llm`` describes: the tenant cap shared through
    Redis when ``settings.redis.url`` is set, else per process."""
    cap = settings.llm.max_inflight_per_tenant or None
    slots: TenantSlots | None = None
    if cap is not None and settings.redis.url:
        slots = RedisTenantSlots(redis.asyncio.Redis.from_url(
            settings.redis.url, socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S))
    return GenerationLimiter(settings.llm.max_inflight, retry_after_s=settings.llm.retry_after_s,
                             max_per_tenant=cap, tenant_slots=slots)


async def hold_while_streaming(events: AsyncGenerator[T, None], slot: Slot
                               ) -> AsyncGenerator[T, None]:
    """``events`` unchanged; ``slot`` is released when this stream ends or is closed."""
    try:
        async with aclosing(events):
            async for event in events:
                yield event
    finally:
        slot.release()
