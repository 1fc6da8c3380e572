"""ingest.service with a real SQLite file and in-memory doubles for the
embedder and the store (no model, no Qdrant)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

import ingest.models  # noqa: F401  (registers the table on Base)
from ingest.models import Document
from ingest.service import chunk_sizes, ingest_document, register_files
from sirocco.db import Base, make_engine, make_session_factory, session_scope
from sirocco.errors import NotFoundError, UnavailableError
from sirocco.settings import Settings
from sirocco.types import Chunk, SearchHit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class FakeEmbedder:
    dim = 3
    model_id = "fake"
    max_seq_length = 64

    def __init__(self) -> None:
        self.batches: list[int] = []

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(len(texts))
        return [[1.0, float(len(t)), 0.0] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0, 0.0]


class FakeStore:
    def __init__(self, fail: Exception | None = None) -> None:
        self.points: dict[str, Chunk] = {}
        self.fail = fail

    def ensure_collection(self, dim: int) -> None: ...

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        if self.fail:
            raise self.fail
        assert len(chunks) == len(vectors)
        self.points.update({c.id: c for c in chunks})

    def delete_document(self, doc_id: str) -> None:
        self.points = {k: c for k, c in self.points.items() if c.doc_id != doc_id}

    def search(self, vector, *, top_k, tenant=None, doc_ids=None) -> list[SearchHit]:
        return []

    def count(self, *, doc_id: str | None = None) -> int:
        return sum(1 for c in self.points.values() if doc_id in (None, c.doc_id))

    def close(self) -> None: ...


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        env="test",
        chunking={"chunk_tokens": 30, "overlap_tokens": 5},
        embedding={"batch_size": 2},
    )


@pytest.fixture()
def factory(settings: Settings):
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    shutil.copy(FIXTURES / "guide.md", root / "guide.md")
    shutil.copy(FIXTURES / "manual.pdf", root / "sub" / "manual.pdf")
    (root / ".secret.md").write_text("# hidden")
    (root / ".hidden" / "inside.md").write_text("# hidden too")
    (root / "notes.xyz").write_text("not a supported extension")
    return root


def _register(factory, paths, **kw) -> list[tuple[str, str]]:
    with session_scope(factory) as s:
        return [(Path(d.source_path).name, d.id) for d in register_files(paths, session=s, **kw)]


def test_register_walks_folders_and_skips_hidden_and_unsupported(factory, files):
    got = _register(factory, [files])
    assert sorted(name for name, _ in got) == ["guide.md", "manual.pdf"]
    with session_scope(factory) as s:
        docs = s.scalars(select(Document)).all()
        assert {d.status for d in docs} == {"queued"}
        guide = next(d for d in docs if d.source_path.endswith("guide.md"))
        expected = hashlib.sha256((files / "guide.md").read_bytes()).hexdigest()
        assert guide.content_hash == expected
        assert Path(guide.source_path).is_absolute()


def test_register_explicit_file_is_taken_even_if_unsupported(factory, files):
    assert [n for n, _ in _register(factory, [files / "notes.xyz"])] == ["notes.xyz"]


def test_register_skips_unchanged_and_requeues_changed_or_failed(factory, files, settings):
    first = dict(_register(factory, [files]))
    assert _register(factory, [files]) == []
    # Same path, new content: same row, queued again.
    (files / "guide.md").write_text("# Changed\nnew body\n")
    again = _register(factory, [files])
    assert again == [("guide.md", first["guide.md"])]
    # A failed document is retried when registered again.
    with session_scope(factory) as s:
        s.get(Document, first["manual.pdf"]).status = "failed"
    assert _register(factory, [files]) == [("manual.pdf", first["manual.pdf"])]
    assert len(_register(factory, [files], force=True)) == 2
    # Another tenant gets its own rows.
    assert len(_register(factory, [files], tenant="acme")) == 2


def test_register_missing_path(factory, tmp_path):
    with (
        pytest.raises(NotFoundError, match="nowhere: no such file or folder"),
        session_scope(factory) as s,
    ):
        register_files([tmp_path / "nowhere"], session=s)


def test_ingest_document_marks_done_and_is_idempotent(factory, files, settings):
    doc_id = dict(_register(factory, [files]))["manual.pdf"]
    embedder, store = FakeEmbedder(), FakeStore()
    n = ingest_document(
        doc_id, session_factory=factory, embedder=embedder, store=store, settings=settings
    )
    assert n == 2 and store.count(doc_id=doc_id) == 2
    assert embedder.batches == [2]
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert (doc.status, doc.chunk_count, doc.title) == ("done", 2, "Zephyr Turbine Manual")
        assert doc.mime_type == "application/pdf" and doc.error is None
    # Running again replaces, never duplicates.
    assert (
        ingest_document(
            doc_id, session_factory=factory, embedder=embedder, store=store, settings=settings
        )
        == 2
    )
    assert store.count() == 2
    chunk = next(iter(store.points.values()))
    assert chunk.source.endswith("manual.pdf") and chunk.page in (1, 2)


def test_ingest_document_records_parse_failures(factory, tmp_path, settings):
    bad = tmp_path / "broken.pdf"
    shutil.copy(FIXTURES / "corrupt.pdf", bad)
    (doc_id,) = [i for _, i in _register(factory, [bad])]
    store = FakeStore()
    n = ingest_document(
        doc_id, session_factory=factory, embedder=FakeEmbedder(), store=store, settings=settings
    )
    assert n == 0 and store.count() == 0
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert doc.status == "failed"
        assert doc.error.startswith(f"{bad}: corrupt PDF")


def test_ingest_document_lets_transient_errors_through(factory, files, settings):
    doc_id = dict(_register(factory, [files]))["guide.md"]
    store = FakeStore(fail=UnavailableError("qdrant down"))
    with pytest.raises(UnavailableError):
        ingest_document(
            doc_id, session_factory=factory, embedder=FakeEmbedder(), store=store, settings=settings
        )
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert (doc.status, doc.attempts) == ("running", 1)


def test_ingest_document_gives_up_after_unfinished_attempts(factory, files, settings):
    doc_id = dict(_register(factory, [files]))["guide.md"]
    with session_scope(factory) as s:
        s.get(Document, doc_id).attempts = settings.celery.max_retries + 1
    store = FakeStore()
    assert (
        ingest_document(
            doc_id, session_factory=factory, embedder=FakeEmbedder(), store=store, settings=settings
        )
        == 0
    )
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert doc.status == "failed" and doc.error.startswith("gave up after 4 attempts")
    assert store.count() == 0


def test_ingest_unknown_document(factory, settings):
    with pytest.raises(NotFoundError, match="document missing does not exist"):
        ingest_document(
            "missing",
            session_factory=factory,
            embedder=FakeEmbedder(),
            store=FakeStore(),
            settings=settings,
        )


def test_chunk_sizes_fit_the_model(settings):
    big = settings.model_copy(
        update={
            "chunking": settings.chunking.model_copy(
                update={"chunk_tokens": 500, "overlap_tokens": 100}
            )
        }
    )
    assert chunk_sizes(big, FakeEmbedder()) == (62, 31)
    assert chunk_sizes(settings, FakeEmbedder()) == (30, 5)
    assert chunk_sizes(big, object()) == (500, 100)
