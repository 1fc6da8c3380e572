"""Rate limiting: token buckets by key (an API key, or a client address for
invalid keys), behind one port with two adapters.

A bucket holds at most ``burst`` requests and refills at ``per_minute / 60``
per second; a request takes one token or is refused (``RateLimitedError``)
with the seconds until one is back.

* ``TokenBucketLimiter``: buckets in this process. The embedded default (no
  ``redis.url``) uses it, so there each API process has its own buckets: N
  processes let a key send up to N times its limit.
* ``RedisTokenBucketLimiter``: buckets in Redis, updated atomically by one Lua
  script per request and expiring once full again, so every process sharing
  the Redis shares one bucket per key. Chosen when ``redis.url`` is set. When
  Redis fails it falls back to its in-process buckets with a logged warning
  (never a 500; see ``sirocco.redis_fallback``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from sirocco.errors import RateLimitedError
from sirocco.redis_fallback import SOCKET_TIMEOUT_S, RedisFallback
from sirocco.settings import Settings


class RateLimiter(Protocol):
    """The port: buckets by key."""

    @property
    def enabled(self) -> bool: ...

    def acquire(self, key: str) -> None:
        """Take one token of ``key``'s bucket; ``RateLimitedError`` when it is empty."""

    def check(self, key: str) -> None:
        """``RateLimitedError`` when ``key``'s bucket is empty; takes nothing."""

    def close(self) -> None:
        """Release connections (the in-process adapter has none)."""


_MIN_PRUNE_AT = 1024


def _refused(subject: str, wait: float) -> RateLimitedError:
    return RateLimitedError(f"rate limit exceeded for {subject}; retry in {wait:.1f} s",
                            retry_after_s=wait)


class TokenBucketLimiter:
    """Token buckets by key in this process; thread-safe (sync dependencies run
    in a pool). ``subject`` names the key in the refusal message."""

    def __init__(self, *, per_minute: float, burst: int, subject: str = "this API key",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._subject = subject
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()
        # Keys include client addresses, which a caller can vary at will: full
        # buckets (as good as absent) are dropped whenever the map doubles.
        self._prune_at = _MIN_PRUNE_AT

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, key: str) -> None:
        """Take one token of ``key``'s bucket; ``RateLimitedError`` (with
        ``retry_after_s``) when it is empty."""
        self._raise_if_waiting(key, cost=1.0)

    def check(self, key: str) -> None:
        """``RateLimitedError`` when ``key``'s bucket is empty; takes nothing."""
        self._raise_if_waiting(key, cost=0.0)

    def close(self) -> None:
        """Nothing to release."""

    def _raise_if_waiting(self, key: str, *, cost: float) -> None:
        wait = self.take(key, cost=cost)
        if wait > 0:
            raise _refused(self._subject, wait)

    def take(self, key: str, *, cost: float) -> float:
        """Take ``cost`` tokens when one is there: 0.0; else the seconds to wait."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens < 1.0:
                return (1.0 - tokens) / self._rate
            # Stored only when taken: refill is linear up to the cap, so an old
            # (tokens, last) pair gives the same count later as a refreshed one.
            if cost:
                self._buckets[key] = (tokens - cost, now)
                if len(self._buckets) > self._prune_at:
                    self._prune(now)
            return 0.0

    def _prune(self, now: float) -> None:
        self._buckets = {key: (tokens, last) for key, (tokens, last) in self._buckets.items()
                         if tokens + (now - last) * self._rate < self._burst}
        self._prune_at = max(_MIN_PRUNE_AT, 2 * len(self._buckets))


# KEYS[1]: the bucket (a hash: tokens, ts). ARGV: rate per second, burst, cost.
# Redis's clock, not the callers': processes on several hosts agree on it.
# Returns the seconds to wait as a string ("0" when a token was there), since
# Lua numbers come back truncated to integers.
_TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
if tokens < 1 then return string.format('%.6f', (1 - tokens) / rate) end
-- Written only when taken: refill is linear up to the cap, so the old state
-- gives the same count later as a refreshed one.
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens - cost),
             'ts', string.format('%.6f', now))
  -- Full again after burst / rate seconds: then the key is as good as absent.
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
end
return '0'
"""


class RedisTokenBucketLimiter:
    """Token buckets by key in Redis, shared by every process using it; falls
    back to in-process buckets while Redis fails."""

    def __init__(self, client: redis.Redis, *, per_minute: float, burst: int, prefix: str,
                 subject: str = "this API key") -> None:
        self._client = client
        self._rate = per_minute / 60.0
        self._burst = burst
        self._prefix = prefix
        self._subject = subject
        self._script = client.register_script(_TAKE)
        self.fallback = TokenBucketLimiter(per_minute=per_minute, burst=burst, subject=subject)
        self._redis = RedisFallback(f"rate limit {prefix}")

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, key: str) -> None:
        """Take one token of ``key``'s shared bucket; ``RateLimitedError`` when empty."""
        self._raise_if_waiting(key, cost=1)

    def check(self, key: str) -> None:
        """``RateLimitedError`` when ``key``'s shared bucket is empty; takes nothing."""
        self._raise_if_waiting(key, cost=0)

    def close(self) -> None:
        """Close the Redis connections."""
        self._client.close()

    def _raise_if_waiting(self, key: str, *, cost: int) -> None:
        if not self.enabled:
            return
        wait = self._take(key, cost)
        if wait > 0:
            raise _refused(self._subject, wait)

    def _take(self, key: str, cost: int) -> float:
        if self._redis.use_redis():
            try:
                wait = self._script(keys=[self._prefix + key],
                                    args=[self._rate, self._burst, cost])
            except redis.RedisError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                return float(wait)
        return self.fallback.take(key, cost=float(cost))


def make_rate_limiter(settings: Settings, *, per_minute: float, burst: int, scope: str,
                      subject: str) -> RateLimiter:
    """A limiter shared through Redis when ``settings.redis.url`` is set, else
    per process. ``scope`` keeps its buckets apart from other limiters' in Redis."""
    if not settings.redis.url:
        return TokenBucketLimiter(per_minute=per_minute, burst=burst, subject=subject)
    client = redis.Redis.from_url(settings.redis.url, socket_timeout=SOCKET_TIMEOUT_S,
                                  socket_connect_timeout=SOCKET_TIMEOUT_S)
    return RedisTokenBucketLimiter(client, per_minute=per_minute, burst=burst,
                                   prefix=f"sirocco:ratelimit:{scope}:", subject=subject)
