"""Real components for integration tests whose subject is elsewhere: a
store filled through the real pipeline, never an in-memory stand-in."""

from __future__ import annotations

from pathlib import Path

from sirocco.settings import Settings


def ingest_texts(settings: Settings, embedder, texts: dict[str, str], *,
                 tenant: str = "default", factory=None):
    """Markdown ``texts`` (file name -> text) written under ``settings.data_dir``
    and ingested through the real pipeline into a real Qdrant store (local mode
    there); returns ``(store, session_factory, {file name: doc id})``. For tests
    whose subject is not retrieval but that must still run on real components.
    ``factory``: a session factory on a database that has the tables already
    (else ``settings``' database is migrated)."""
    from ingest.embed_stage import ingest_document
    from ingest.service import register_files
    from retrieval.factory import create_store
    from sirocco.db import make_engine, make_session_factory, session_scope, upgrade_database

    folder = settings.data_dir / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    if factory is None:
        upgrade_database(settings)
        factory = make_session_factory(make_engine(settings))
    store = create_store(settings)
    store.ensure_collection(embedder.dim)
    with session_scope(factory) as session:
        ids = {Path(d.source_path).name: d.id
               for d in register_files([folder], session=session, tenant=tenant)}
    for doc_id in ids.values():
        assert ingest_document(doc_id, session_factory=factory, embedder=embedder, store=store,
                               settings=settings) > 0
    return store, factory, ids
