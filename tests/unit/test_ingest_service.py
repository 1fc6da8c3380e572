"""ingest.service and ingest.pipeline with a real SQLite file and in-memory
doubles for the embedder and the store (no model, no Qdrant)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, update

import ingest.models  # noqa: F401  (registers the table on Base)
from ingest.embed_stage import claim_batch, embed_staged, ingest_document
from ingest.jobs import add_items, create_job, get_report, start_item
from ingest.models import Document, JobItem, StagedChunks
from ingest.pipeline import (
    DELETED_BEFORE_INGESTED,
    chunk_sizes,
    embedding_text,
    parse_document,
)
from ingest.service import register_files
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

    def replace_documents(self, doc_ids, chunks, vectors) -> None:
        if self.fail:
            raise self.fail
        self.points = {k: c for k, c in self.points.items() if c.doc_id not in doc_ids}
        self.upsert(chunks, vectors)

    def search(self, vector, *, top_k, **kw) -> list[SearchHit]:
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


def test_registering_many_files_costs_a_few_statements_not_some_per_file(factory, tmp_path):
    """Thousands of files are one transaction with a few reads and one batched
    insert; copies of one content within the batch still find their original."""
    from sqlalchemy import Engine, event

    root = tmp_path / "many"
    root.mkdir()
    for i in range(60):
        (root / f"n{i:02d}.md").write_text(f"# Note\nbody {i % 50}\n")  # 10 copies
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        got = dict(_register(factory, [root]))
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert len(got) == 60
    assert len(statements) < 10, statements
    with session_scope(factory) as s:
        docs = {Path(d.source_path).name: d for d in s.scalars(select(Document))}
    assert sum(d.status == "duplicate" for d in docs.values()) == 10
    # n50 has n00's content: the earlier file is the original.
    assert (docs["n50.md"].status, docs["n50.md"].duplicate_of) == ("duplicate", got["n00.md"])
    assert docs["n00.md"].status == "queued"
    # Registered again unchanged: nothing to do, still a few statements.
    statements.clear()
    event.listen(Engine, "before_cursor_execute", count)
    try:
        assert _register(factory, [root]) == []
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert len(statements) < 10, statements


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
        # Parsed, and the failed batch handed back: any embed task may take it again.
        assert (doc.status, doc.attempts, doc.lease_until) == ("parsed", 1, None)
        assert s.get(StagedChunks, doc_id) is not None


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


def _parse_all(factory, settings, ids, job_id=None):
    for doc_id in ids:
        if job_id is not None:
            assert start_item(job_id, doc_id, session_factory=factory)
        assert parse_document(doc_id, session_factory=factory, tokenizer=FakeEmbedder(),
                              settings=settings, job_id=job_id)


def _job_of(factory, ids) -> str:
    """An ingest job with these documents as its items."""
    with session_scope(factory) as s:
        job = create_job(session=s, tenant="default", kind="ingest")
        add_items(job, [s.get(Document, i) for i in ids], session=s)
        return job.id


def test_embed_batches_across_documents_and_finishes_their_job_items(factory, files, settings):
    ids = dict(_register(factory, [files]))
    job_id = _job_of(factory, ids.values())
    _parse_all(factory, settings, ids.values(), job_id)
    with session_scope(factory) as s:
        assert {s.get(Document, i).status for i in ids.values()} == {"parsed"}
        n_guide = s.get(StagedChunks, ids["guide.md"]).chunk_count
    embedder, store = FakeEmbedder(), FakeStore()
    wide = settings.model_copy(update={"embedding": settings.embedding.model_copy(
        update={"max_batch_chunks": 1000, "batch_size": 1000})})
    out = embed_staged(ids["guide.md"], session_factory=factory, embedder=embedder,
                       store=store, settings=wide)
    # One task stored both documents with one encode call.
    assert set(out.stored) == set(ids.values()) and out.wait_s is None
    assert embedder.batches == [n_guide + 2]
    assert store.count() == n_guide + 2
    with session_scope(factory) as s:
        docs = [s.get(Document, i) for i in ids.values()]
        assert {(d.status, d.lease_until) for d in docs} == {("done", None)}
        assert s.scalars(select(StagedChunks)).all() == []
        report = get_report(session=s, job_id=job_id)
        assert (report.job.state, report.job.done) == ("done", 2)
    # The other document's own embed task then has nothing to do.
    again = embed_staged(ids["manual.pdf"], session_factory=factory, embedder=embedder,
                         store=store, settings=wide)
    assert again.stored == {} and again.wait_s is None and len(embedder.batches) == 1


def test_chunk_budget_bounds_a_batch_but_always_takes_the_asked_document(
    factory, files, settings
):
    ids = dict(_register(factory, [files]))
    _parse_all(factory, settings, ids.values())
    one = settings.model_copy(update={"embedding": settings.embedding.model_copy(
        update={"max_batch_chunks": 1})})
    claimed, wait = claim_batch(ids["manual.pdf"], session_factory=factory, settings=one)
    assert (claimed, wait) == ([ids["manual.pdf"]], None)


def test_a_live_lease_makes_the_owner_wait_and_an_expired_one_is_taken_over(
    factory, files, settings
):
    from datetime import timedelta

    from sirocco.db import utcnow

    ids = dict(_register(factory, [files]))
    _parse_all(factory, settings, ids.values())
    claimed, _ = claim_batch(ids["guide.md"], session_factory=factory, settings=settings)
    assert set(claimed) == set(ids.values())
    # manual.pdf's own task arrives while the batch holder is alive: wait, do nothing.
    again, wait = claim_batch(ids["manual.pdf"], session_factory=factory, settings=settings)
    assert again == [] and wait is not None
    assert settings.celery.task_time_limit_s - 5 < wait <= settings.celery.task_time_limit_s + 1
    # The holder died: once its lease ran out, the next task takes both over.
    with session_scope(factory) as s:
        for i in ids.values():
            s.get(Document, i).lease_until = utcnow() - timedelta(seconds=1)
    store = FakeStore()
    out = embed_staged(ids["manual.pdf"], session_factory=factory, embedder=FakeEmbedder(),
                       store=store, settings=settings)
    assert set(out.stored) == set(ids.values())
    with session_scope(factory) as s:
        assert {s.get(Document, i).status for i in ids.values()} == {"done"}


def test_embedding_claims_are_capped(factory, files, settings):
    from datetime import timedelta

    from sirocco.db import utcnow

    doc_id = dict(_register(factory, [files]))["guide.md"]
    _parse_all(factory, settings, [doc_id])
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        doc.status, doc.attempts = "embedding", settings.celery.max_retries + 1
        doc.lease_until = utcnow() - timedelta(seconds=1)
    claimed, _ = claim_batch(doc_id, session_factory=factory, settings=settings)
    assert claimed == []
    with session_scope(factory) as s:
        doc = s.get(Document, doc_id)
        assert doc.status == "failed"
        assert doc.error.startswith("gave up after 4 embedding attempts")
        assert s.get(StagedChunks, doc_id) is None


def test_a_document_requeued_during_embedding_is_not_marked_done(factory, files, settings):
    doc_id = dict(_register(factory, [files]))["guide.md"]
    _parse_all(factory, settings, [doc_id])

    class Requeuing(FakeStore):
        def replace_documents(self, doc_ids, chunks, vectors) -> None:
            super().replace_documents(doc_ids, chunks, vectors)
            with session_scope(factory) as s:  # the file changed: a re-sync queued it
                s.get(Document, doc_id).status = "queued"

    out = embed_staged(doc_id, session_factory=factory, embedder=FakeEmbedder(),
                       store=Requeuing(), settings=settings)
    assert out.stored == {}
    with session_scope(factory) as s:
        assert s.get(Document, doc_id).status == "queued"


def test_access_narrowed_after_parsing_reaches_the_stored_chunks(factory, files, settings):
    """The ACL is copied into the chunks at parse time; a source narrowed
    before or during embedding must not be stored (or stay) with the old one."""
    ids = dict(_register(factory, [files]))
    _parse_all(factory, settings, ids.values())
    with session_scope(factory) as s:  # narrowed between the two stages
        s.get(Document, ids["guide.md"]).acl = ["group:hr"]

    class Narrowing(FakeStore):
        """Narrows manual.pdf while the batch is being written."""

        def __init__(self) -> None:
            super().__init__()
            self.access: list[tuple[list[str], tuple[str, ...]]] = []

        def replace_documents(self, doc_ids, chunks, vectors) -> None:
            super().replace_documents(doc_ids, chunks, vectors)
            with session_scope(factory) as s:
                s.get(Document, ids["manual.pdf"]).acl = ["user:ana"]

        def set_access(self, doc_ids, *, acl, tags) -> None:
            self.access.append((list(doc_ids), tuple(acl)))
            self.points = {k: replace(c, acl=tuple(acl)) if c.doc_id in doc_ids else c
                           for k, c in self.points.items()}

    store = Narrowing()
    wide = settings.model_copy(update={"embedding": settings.embedding.model_copy(
        update={"max_batch_chunks": 1000})})
    embed_staged(ids["guide.md"], session_factory=factory, embedder=FakeEmbedder(),
                 store=store, settings=wide)
    acl_of = {c.doc_id: c.acl for c in store.points.values()}
    assert acl_of == {ids["guide.md"]: ("group:hr",), ids["manual.pdf"]: ("user:ana",)}
    assert store.access == [([ids["manual.pdf"]], ("user:ana",))]


def test_parse_claims_the_job_item_in_its_first_transaction(factory, files, settings):
    ids = dict(_register(factory, [files]))
    job_id = _job_of(factory, ids.values())
    with session_scope(factory) as s:
        s.delete(s.get(Document, ids["manual.pdf"]))  # deleted before its parse
    kw = {"session_factory": factory, "tokenizer": FakeEmbedder(), "settings": settings,
          "job_id": job_id, "claim_item": True}
    assert parse_document(ids["guide.md"], **kw)
    with pytest.raises(NotFoundError):
        parse_document(ids["manual.pdf"], **kw)
    with session_scope(factory) as s:
        report = get_report(session=s, job_id=job_id)
        items = {i.document_id: (i.state, i.error) for i in report.items}
        assert items[ids["guide.md"]] == ("running", None)  # parsed, not yet embedded
        assert items[ids["manual.pdf"]] == ("failed", DELETED_BEFORE_INGESTED)
        assert (report.job.state, report.job.failed) == ("running", 1)
        s.execute(update(JobItem).where(JobItem.job_id == job_id,
                                        JobItem.document_id == ids["guide.md"])
                  .values(state="cancelled"))
    # An item no longer to be done: the document is left alone.
    assert parse_document(ids["guide.md"], **kw) is None
    with session_scope(factory) as s:
        assert s.get(Document, ids["guide.md"]).status == "parsed"


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
    # 64 tokens of model input: 2 special tokens, 32 for the heading path.
    assert chunk_sizes(big, FakeEmbedder()) == (30, 15)
    assert chunk_sizes(settings, FakeEmbedder()) == (30, 5)
    assert chunk_sizes(big, object()) == (500, 100)


def test_embedding_text_puts_the_heading_path_before_the_chunk():
    chunk = Chunk(doc_id="d", chunk_index=3, text="Use only shielded cables.",
                  title="Flux Capacitor Guide", source="/g.md", start_char=0, end_char=25,
                  headings=("Flux Capacitor Guide", "Installation", "Cabling"))
    assert embedding_text(chunk) == (
        "Flux Capacitor Guide > Installation > Cabling\n\nUse only shielded cables."
    )
    bare = Chunk(doc_id="d", chunk_index=0, text="plain", title="", source="/p.txt",
                 start_char=0, end_char=5)
    assert embedding_text(bare) == "plain"


def test_embedding_text_does_not_repeat_the_heading_the_chunk_opens_with():
    first = Chunk(doc_id="d", chunk_index=0, text="# Flux Capacitor Guide\n\n## Installation\n\n"
                  "Unpack it.", title="Flux Capacitor Guide", source="/g.md", start_char=0,
                  end_char=50, headings=("Flux Capacitor Guide", "Installation"))
    assert embedding_text(first) == first.text
    section = Chunk(doc_id="d", chunk_index=1, text="## Cabling\n\nUse only shielded cables.",
                    title="Flux Capacitor Guide", source="/g.md", start_char=50, end_char=86,
                    headings=("Flux Capacitor Guide", "Installation", "Cabling"))
    assert embedding_text(section) == (
        "Flux Capacitor Guide > Installation\n\n## Cabling\n\nUse only shielded cables.")
    closed = replace(section, text="## Cabling ##\n\nUse only shielded cables.")
    assert embedding_text(closed).startswith("Flux Capacitor Guide > Installation\n\n##")
    # A title that only appears inside a sentence is still said.
    prose = Chunk(doc_id="d", chunk_index=2, text="The Flux Capacitor Guide says so.",
                  title="Flux Capacitor Guide", source="/g.md", start_char=86, end_char=119)
    assert embedding_text(prose).startswith("Flux Capacitor Guide\n\n")
