"""Prometheus metrics: ``GET /metrics`` shows vLLM's own and Sirocco's.

vLLM's (``vllm:*``: KV-cache usage, running/waiting requests, prefix-cache
queries and hits, time to first token, inter-token latency ...) are registered
in prometheus_client's default registry by the in-process engine when
``settings.llm.log_stats`` is on. With the remote provider they live on the
vLLM server's own ``/metrics``.

Sirocco's (``sirocco_*``) live in one registry per app, so several apps in a
process (tests) never collide:

- ``sirocco_http_requests_total{method, route, status}``
- ``sirocco_http_request_duration_seconds{method, route}`` (until the last byte)
- ``sirocco_generations_in_flight`` and ``sirocco_generations_max_inflight``
- ``sirocco_generations_rejected_total`` (429s of admission control)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm.admission import GenerationLimiter

#: Requests that matched no route share one label (bounded cardinality).
UNMATCHED = "<unmatched>"


class SiroccoMetrics:
    """Sirocco's own metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sirocco_http_requests", "HTTP requests answered",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "sirocco_http_request_duration_seconds",
            "Time from request to the last byte of the response (whole stream for SSE)",
            ["method", "route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self._limiter_source: Callable[[], GenerationLimiter | None] = lambda: None
        self.registry.register(_LimiterCollector(lambda: self._limiter_source()))

    def watch_limiter(self, source: Callable[[], GenerationLimiter | None]) -> None:
        """Report the admission limiter that ``source()`` returns (read at scrape time)."""
        self._limiter_source = source

    def exposition(self) -> bytes:
        """The text format for a scrape: the default registry (vLLM, process) then ours."""
        return generate_latest(REGISTRY) + generate_latest(self.registry)


class _LimiterCollector(Collector):
    def __init__(self, source: Callable[[], GenerationLimiter | None]) -> None:
        self._source = source

    def collect(self):
        limiter = self._source()
        if limiter is None:
            return
        yield GaugeMetricFamily("sirocco_generations_in_flight",
                                "Answers being generated now", value=limiter.in_flight)
        yield GaugeMetricFamily("sirocco_generations_max_inflight",
                                "Admission bound (settings.llm.max_inflight)",
                                value=limiter.max_inflight)
        yield CounterMetricFamily("sirocco_generations_rejected",
                                  "Requests refused with 429 at capacity",
                                  value=limiter.rejected)


class MetricsMiddleware:
    """Pure ASGI middleware (streams pass through untouched) counting requests."""

    def __init__(self, app: ASGIApp, metrics: SiroccoMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # FastAPI stores the matched route in the (shared) scope dict.
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
