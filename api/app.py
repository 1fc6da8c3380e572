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

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import chat, documents, health, jobs, sources, traces
from api.services import Services, build_services
from sirocco import __version__
from sirocco.settings import Settings, get_settings


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    """A new app for ``settings``; ``services`` (optional) replaces the built ones."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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

    app = FastAPI(title="Sirocco", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    # Set now (not in the lifespan) so injected services work without a lifespan run.
    app.state.services = services
    install_error_handlers(app)
    for module in (health, chat, documents, traces, jobs, sources):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """The app for the process settings (``get_settings()``), for ``uvicorn --factory``."""
    return create_app(get_settings())
