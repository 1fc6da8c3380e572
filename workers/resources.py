"""One worker process's heavy objects (SQL engine, embedder, tokenizer,
store), built on first use and shared by every task module of the process:
a parse-only worker never loads the embedding model, a prefork parent never
imports torch. ``warm_resources`` builds a stage's objects in the background
as a task process starts, so the first job does not wait for them."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from ingest.embedding.base import Embedder, create_embedder
from ingest.embedding.tokenizer import ChunkTokenizer, load_chunk_tokenizer
from retrieval.factory import create_store
from retrieval.store import Store
from sirocco.db import make_engine, make_session_factory
from sirocco.settings import Settings

logger = logging.getLogger(__name__)


class Resources:
    """One worker process's heavy objects, each built on first use: a parse-only
    worker never loads the embedding model, an embed worker never the tokenizer
    alone."""

    def __init__(self, settings: Settings) -> None:
        self.pid = os.getpid()
        self.settings = settings
        self.session_factory: sessionmaker[Session] = make_session_factory(make_engine(settings))
        self._embedder: Embedder | None = None
        self._store: Store | None = None
        self._tokenizer: ChunkTokenizer | Embedder | None = None
        # One builder at a time: a task waits for the warm-up thread's model
        # instead of loading a second one.
        self._building = threading.RLock()

    @property
    def embedder(self) -> Embedder:
        with self._building:
            if self._embedder is None:
                self._embedder = create_embedder(self.settings)
            return self._embedder

    @property
    def store(self) -> Store:
        with self._building:
            if self._store is None:
                self._store = create_store(self.settings)
            return self._store

    @property
    def tokenizer(self) -> ChunkTokenizer | Embedder:
        """The embedder when loaded already (same tokenizer), else the tokenizer alone."""
        with self._building:
            if self._tokenizer is None:
                self._tokenizer = self._embedder or load_chunk_tokenizer(self.settings)
            return self._tokenizer

    def warm(self, stages: Iterable[str]) -> None:
        """Build what ``stages`` ("parse", "embed", "exports") need: the
        tokenizer for parsing; the embedder (whose tokenizer parsing then
        shares) and the store for embedding; nothing more for exports."""
        wanted = set(stages)
        if "embed" in wanted:
            _ = self.embedder, self.store
        if wanted & {"parse", "embed"}:
            _ = self.tokenizer


_resources: dict[str, Resources] = {}
_resources_lock = threading.Lock()


def worker_resources(settings: Settings) -> Resources:
    """This process's resources for ``settings``, built on first use. Never
    shared across a fork: a child builds its own."""
    key = settings.model_dump_json()
    with _resources_lock:
        res = _resources.get(key)
        if res is None or res.pid != os.getpid():
            res = _resources[key] = Resources(settings)
        return res


def warm_resources(settings: Settings, stages: Iterable[str]) -> threading.Thread:
    """``Resources.warm`` for this process in a daemon thread (a prefork child
    must answer its parent within seconds, and loading torch takes longer);
    a task that needs an object meanwhile waits for it. A failure is logged
    and left to the first task, which builds again and reports the error."""
    stages = tuple(stages)

    def build() -> None:
        try:
            worker_resources(settings).warm(stages)
        except Exception:
            logger.exception("warming the worker's resources failed", extra={"stages": stages})

    thread = threading.Thread(target=build, name="sirocco-warm", daemon=True)
    thread.start()
    return thread
