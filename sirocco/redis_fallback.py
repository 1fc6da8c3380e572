"""What a limit shared through Redis does when Redis fails: it falls back to
this process's own counterpart.

Rate limits and per-tenant generation caps are shared across processes through
Redis when ``redis.url`` is set. Failing closed would turn a Redis outage into
an API outage (every request refused), and failing wide open would drop the
limits altogether, so each limit falls back to its in-process adapter: the
limits then hold per process until Redis answers again, and a warning is
logged once per outage. After a failure Redis is left alone for
``cooldown_s``, so a dead server costs one timeout per cooldown, not one per
request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Seconds Redis is not asked again after it failed.
COOLDOWN_S = 5.0
#: Socket timeouts of the limit clients: a stalled Redis costs a request this
#: much at most, once per cooldown (the limits sit on every request's path).
SOCKET_TIMEOUT_S = 0.5


class RedisFallback:
    """Whether to ask Redis now; records failures and recoveries. Thread-safe."""

    def __init__(self, what: str, *, cooldown_s: float = COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._what = what
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._down_until: float | None = None
        self._lock = threading.Lock()

    def use_redis(self) -> bool:
        """False during the cooldown after a failure (use the in-process adapter)."""
        down_until = self._down_until
        return down_until is None or self._clock() >= down_until

    def failed(self, exc: Exception) -> None:
        """Redis failed: fall back for ``cooldown_s``; warn at the start of an outage."""
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + self._cooldown_s
        if first:
            logger.warning("Redis unavailable: limits fall back to this process's own",
                           extra={"limit": self._what, "error": repr(exc)})

    def succeeded(self) -> None:
        """Redis answered: shared limits again."""
        if self._down_until is None:
            return
        with self._lock:
            was_down, self._down_until = self._down_until is not None, None
        if was_down:
            logger.info("Redis is back: limits shared across processes again",
                        extra={"limit": self._what})
