"""Admission control: a bounded count of generations in flight.

Past the bound a request is refused at once with ``OverloadedError`` (the API
answers 429 + ``Retry-After``) instead of waiting in vLLM's queue until the
client times out. A slot is held from admission until the answer stream is
closed, however it ends (done, error, client gone).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TypeVar

from sirocco.errors import OverloadedError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Slot:
    """One admitted generation; ``release()`` is idempotent. A context manager."""

    def __init__(self, limiter: GenerationLimiter) -> None:
        self._limiter = limiter
        self._released = False

    def release(self) -> None:
        """Give the slot back (a second call does nothing)."""
        if not self._released:
            self._released = True
            self._limiter._in_flight -= 1

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class GenerationLimiter:
    """At most ``max_inflight`` slots out at once; never blocks.

    Single event loop only (no lock: acquire and release run on the loop thread).
    """

    def __init__(self, max_inflight: int, *, retry_after_s: float = 1.0) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.max_inflight = max_inflight
        self.retry_after_s = retry_after_s
        self._in_flight = 0
        #: Requests refused since start (exported as a Prometheus counter).
        self.rejected = 0

    @property
    def in_flight(self) -> int:
        """Slots currently held."""
        return self._in_flight

    def acquire(self) -> Slot:
        """A slot, or ``OverloadedError`` at once when all are taken."""
        if self._in_flight >= self.max_inflight:
            self.rejected += 1
            logger.info("generation refused: at capacity",
                        extra={"in_flight": self._in_flight, "max": self.max_inflight})
            raise OverloadedError(
                f"the server is busy ({self.max_inflight} answers in progress); "
                f"retry in {self.retry_after_s:g} s",
                retry_after_s=self.retry_after_s,
            )
        self._in_flight += 1
        return Slot(self)


async def hold_while_streaming(events: AsyncIterator[T], slot: Slot) -> AsyncIterator[T]:
    """``events`` unchanged; ``slot`` is released when this stream ends or is closed."""
    try:
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                yield event
    finally:
        slot.release()
