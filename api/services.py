"""The services the API routes call, built once per app in the lifespan.

Tests build a ``Services`` from doubles and pass it to ``create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from assistant.service import Assistant
from ingest.intake import RegisterFiles
from llm.admission import GenerationLimiter, make_generation_limiter
from llm.engine import Engine
from retrieval.store import Store
from sirocco.settings import Settings
from traces.recorder import TraceRecorder

logger = logging.getLogger(__name__)


class EnqueueDocuments(Protocol):
    """``workers.tasks.enqueue_documents``: queue ingestion of committed documents."""

    def __call__(self, celery_app: Any, doc_ids: Sequence[str]) -> Any: ...


@dataclass
class Services:
    session_factory: sessionmaker[Session]
    assistant: Assistant
    celery_app: Any
    register_files: RegisterFiles
    enqueue_documents: EnqueueDocuments
    recorder: TraceRecorder | None = None
    #: The ports behind the assistant, for routes that need them directly
    #: (health, OpenAI-compatible serving); None when a test does not provide them.
    engine: Engine | None = None
    store: Store | None = None
    embedder: Any | None = None
    #: Admission of generations (429 past ``settings.llm.max_inflight``, or past
    #: ``max_inflight_per_tenant`` for one tenant).
    limiter: GenerationLimiter = field(default_factory=lambda: GenerationLimiter(64))
    #: What ``build_services`` opened, closed newest first by ``aclose``.
    resources: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def aclose(self) -> None:
        """Release what ``build_services`` opened, newest first (every one is
        closed even when another fails); a failure is logged, not raised."""
        try:
            await self.resources.aclose()
        except Exception:
            logger.exception("closing a service failed")


async def build_services(settings: Settings) -> Services:
    """Open the database (migrated to head), embedder, store, LLM engine and
    Celery app described by ``settings``. Slow: starts the LLM engine."""
    from ingest.embedding.base import create_query_embedder
    from llm.engine import create_llm_engine
    from retrieval.factory import create_store
    from sirocco.db import make_engine, make_session_factory, upgrade_database

    stack = AsyncExitStack()
    try:
        db_engine = make_engine(settings)
        stack.callback(db_engine.dispose)
        await asyncio.to_thread(upgrade_database, settings, engine=db_engine)
        session_factory = make_session_factory(db_engine)

        # Queries only: documents are embedded by the workers.
        embedder = await asyncio.to_thread(create_query_embedder, settings)
        store = create_store(settings)
        stack.callback(store.close)
        await asyncio.to_thread(store.ensure_collection, embedder.dim)

        # In the event loop thread: the in-process engine binds to this loop.
        engine = create_llm_engine(settings)
        stack.push_async_callback(engine.close)

        recorder = TraceRecorder(
            session_factory, background=settings.traces.background,
            spool_dir=settings.data_dir / "traces", user_salt=settings.auth.secret_key,
            default_consent=settings.traces.default_consent)
        # Closed before the database: queued trace writes are drained first.
        stack.callback(recorder.close)
        from retrieval.rerank import create_reranker

        reranker = await asyncio.to_thread(create_reranker, settings)
        from api.catalog import source_catalog

        assistant = Assistant(engine, store, embedder, recorder, settings, reranker=reranker,
                              catalog=source_catalog(session_factory))

        # Written by the workers side; imported late so the API starts without it in tests.
        from ingest.service import register_files
        from workers.app import create_celery
        from workers.tasks import enqueue_documents

        celery_app = create_celery(settings)
        if hasattr(celery_app, "close"):
            stack.callback(celery_app.close)
        limiter = make_generation_limiter(settings)
        stack.push_async_callback(limiter.aclose)
    except BaseException:
        await stack.aclose()
        raise
    return Services(
        session_factory=session_factory,
        assistant=assistant,
        celery_app=celery_app,
        register_files=register_files,
        enqueue_documents=enqueue_documents,
        recorder=recorder,
        engine=engine,
        store=store,
        embedder=embedder,
        limiter=limiter,
        resources=stack,
    )

