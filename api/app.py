"""The FastAPI app factory.

``create_app(settings)`` builds an app whose lifespan opens the services
(database migrated to head, embedder, vector store, LLM engine, Celery app)
and closes them on shutdown. Pass ``services=`` to use prebuilt ones instead
(tests inject doubles; the caller then owns and closes them). Nothing here
reads settings at import time; for uvicorn use the factory:
``uvicorn --factory api.app:app_from_env``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.auth import get_principal, make_invalid_key_limiter, make_limiter, require_admin
from api.errors import install_error_handlers
from api.metrics import MetricsMiddleware, SiroccoMetrics
from api.openai import router as openai_routes
from api.openapi import install_openapi
from api.openapi import router as docs_routes
from api.routes import (
    chat,
    documents,
    exports,
    health,
    jobs,
    keys,
    me,
    metrics,
    passages,
    search,
    sources,
    tool_calls,
    traces,
)
from api.services import Services, build_services
from api.web import mount_web
from sirocco import __version__
from sirocco.secrets import with_secret_key
from sirocco.settings import Settings, get_settings


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    """A new app for ``settings``; ``services`` (optional) replaces the built ones.
    The server secret is resolved first (``sirocco.secrets``): never the placeholder
    unless ``env`` dev or test was chosen explicitly."""
    settings = with_secret_key(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if services is not None:
                yield
                return
            built = await build_services(settings)
            app.state.services = built
            try:
                yield
            finally:
                app.state.services = None
                await built.aclose()
        finally:
            app.state.rate_limiter.close()
            app.state.invalid_key_limiter.close()

    # Docs are mounted below like every other route (behind a key by default).
    app = FastAPI(title="Sirocco", version=__version__, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    install_openapi(app)
    app.state.settings = settings
    # Set now (not in the lifespan) so injected services work without a lifespan run.
    app.state.services = services
    install_error_handlers(app)
    app_metrics = SiroccoMetrics()
    app_metrics.watch_limiter(lambda: getattr(app.state.services, "limiter", None))
    app.state.metrics = app_metrics
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)
    # Shared across processes through Redis when settings.redis.url is set.
    app.state.rate_limiter = make_limiter(settings)
    app.state.invalid_key_limiter = make_invalid_key_limiter(settings)
    # Health is open; every other route needs an API key, and management routes
    # an admin key. auth.open_endpoints may open the docs and /metrics.
    app.include_router(health.router)
    keyed = [Depends(get_principal)]
    app.include_router(docs_routes, dependencies=[] if "docs" in settings.auth.open_endpoints
                       else keyed)
    app.include_router(metrics.router, dependencies=[] if "metrics" in settings.auth.open_endpoints
                       else keyed)
    for module in (me, chat, search, documents, passages, traces, exports, tool_calls,
                   openai_routes):
        app.include_router(module.router, dependencies=keyed)
    # Jobs: each route takes an admin, except reading the job of one's own upload.
    app.include_router(jobs.router, dependencies=keyed)
    for module in (sources, keys):
        app.include_router(module.router, dependencies=[Depends(require_admin)])
    # The web UI and its files are open: the page asks for a key and sends it itself.
    mount_web(app, settings)
    return app


def app_from_env() -> FastAPI:
    """The app for the process settings (``get_settings()``), for ``uvicorn --factory``."""
    return create_app(get_settings())
