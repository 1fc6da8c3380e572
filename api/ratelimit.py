"""Per-key rate limiting: one token bucket per API key, in this process.

A bucket holds at most ``burst`` requests and refills at ``per_minute / 60``
per second; a request takes one token or is refused with the seconds until
one is back. Several API processes each keep their own buckets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sirocco.errors import RateLimitedError


class TokenBucketLimiter:
    """Token buckets by key; thread-safe (sync dependencies run in a pool)."""

    def __init__(self, *, per_minute: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, key: str) -> None:
        """Take one token of ``key``'s bucket; ``RateLimitedError`` (with
        ``retry_after_s``) when it is empty."""
        if not self.enabled:
            return
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
                raise RateLimitedError(
                    f"rate limit exceeded for this API key; retry in {wait:.1f} s",
                    retry_after_s=wait)
            self._buckets[key] = (tokens - 1.0, now)
