"""ingest.sources and ingest.jobs on in-memory SQLite with a store double."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ingest.jobs import (
    cancel_job,
    finish_item,
    get_job,
    get_report,
    retry_failed,
    start_item,
)
from ingest.models import Document
from ingest.sources import add_source, get_source, remove_source, sync_source
from sirocco.db import session_scope
from sirocco.errors import InvalidInputError, NotFoundError


class DeletingStore:
    """Records the documents whose chunks were deleted."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_document(self, doc_id: str) -> None:
        self.deleted.append(doc_id)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in {"a.md": "alpha", "b.md": "beta", "c.txt": "gamma"}.items():
        (root / name).write_text(text)
    return root


def _sync(factory, store, name="docs"):
    with session_scope(factory) as s:
        plan = sync_source(get_source(name, session=s), session=s, store=store)
        return plan.job.id, plan.to_enqueue


def _names(factory, doc_ids):
    with factory() as s:
        return sorted(Path(s.get(Document, i).source_path).name for i in doc_ids)


def _run_all(factory, job_id, doc_ids, state="done", error=None):
    for d in doc_ids:
        assert start_item(job_id, d, session_factory=factory)
        finish_item(job_id, d, session_factory=factory, state=state, error=error)


def test_sync_queues_changes_skips_unchanged_and_removes_missing(factory, folder) -> None:
    store = DeletingStore()
    with session_scope(factory) as s:
        add_source(folder, session=s)
    job_id, ids = _sync(factory, store)
    assert _names(factory, ids) == ["a.md", "b.md", "c.txt"]
    _run_all(factory, job_id, ids)
    with factory() as s:
        job = get_report(session=s, job_id=job_id).job
        assert (job.state, job.total, job.done) == ("done", 3, 3)
        # What progress polls: the same counters, no items read.
        light = get_job(session=s, job_id=job_id)
        assert (light.items, light.finished, light.progress) == ([], 3, 1.0)
        with pytest.raises(NotFoundError):
            get_job(session=s, job_id="nope")
        by_name = {Path(d.source_path).name: d.id for d in s.scalars(select(Document))}

    (folder / "a.md").write_text("alpha, changed")
    (folder / "b.md").unlink()
    (folder / "d.md").write_text("delta")
    job_id, ids = _sync(factory, store)
    assert _names(factory, ids) == ["a.md", "d.md"]
    assert store.deleted == [by_name["b.md"]]
    with factory() as s:
        job = get_report(session=s, job_id=job_id).job
        assert (job.total, job.skipped, job.removed, job.state) == (3, 1, 1, "queued")
        assert s.get(Document, by_name["b.md"]) is None


def test_exact_duplicate_is_recorded_without_chunks(factory, folder) -> None:
    (folder / "copy.md").write_text("alpha")
    with session_scope(factory) as s:
        add_source(folder, session=s)
    job_id, ids = _sync(factory, DeletingStore())
    assert _names(factory, ids) == ["a.md", "b.md", "c.txt"]
    with factory() as s:
        dup = s.scalar(select(Document).where(Document.source_path.endswith("copy.md")))
        original = s.scalar(select(Document).where(Document.source_path.endswith("a.md")))
        assert (dup.status, dup.duplicate_of) == ("duplicate", original.id)
        report = get_report(session=s, job_id=job_id)
        assert report.job.skipped == 1
        assert [(Path(i.path).name, i.error) for i in report.items if i.state == "skipped"] == [
            ("copy.md", "duplicate content")]
    # The original goes away: the duplicate becomes the original and is ingested.
    (folder / "a.md").unlink()
    _, ids = _sync(factory, DeletingStore())
    assert _names(factory, ids) == ["copy.md"]


def test_failed_items_keep_their_error_and_the_job_is_done(factory, folder) -> None:
    with session_scope(factory) as s:
        add_source(folder, session=s)
    job_id, ids = _sync(factory, DeletingStore())
    _run_all(factory, job_id, ids[:2])
    _run_all(factory, job_id, ids[2:], state="failed", error="c.txt is empty")
    with factory() as s:
        r = get_report(session=s, job_id=job_id)
        assert (r.job.state, r.job.done, r.job.failed, r.progress) == ("done", 2, 1, 1.0)
        assert [i.error for i in r.items if i.state == "failed"] == ["c.txt is empty"]
    with session_scope(factory) as s:
        assert retry_failed(session=s, job_id=job_id) == ids[2:]
    with factory() as s:
        r = get_report(session=s, job_id=job_id)
        assert (r.job.state, r.job.failed, r.job.finished_at) == ("running", 0, None)
    _run_all(factory, job_id, ids[2:])
    with factory() as s:
        assert get_report(session=s, job_id=job_id).job.done == 3


def test_all_failed_makes_the_job_failed(factory, folder) -> None:
    with session_scope(factory) as s:
        add_source(folder, session=s)
    job_id, ids = _sync(factory, DeletingStore())
    _run_all(factory, job_id, ids, state="failed", error="boom")
    with factory() as s:
        assert get_report(session=s, job_id=job_id).job.state == "failed"


def test_cancel_skips_queued_items_and_running_ones_finish(factory, folder) -> None:
    with session_scope(factory) as s:
        add_source(folder, session=s)
    job_id, ids = _sync(factory, DeletingStore())
    assert start_item(job_id, ids[0], session_factory=factory)
    with session_scope(factory) as s:
        assert cancel_job(session=s, job_id=job_id) == 2
    assert not start_item(job_id, ids[1], session_factory=factory)
    with factory() as s:
        r = get_report(session=s, job_id=job_id)
        assert (r.job.state, r.job.cancelled, r.job.finished_at) == ("cancelled", 2, None)
        assert s.get(Document, ids[1]).status == "cancelled"
    finish_item(job_id, ids[0], session_factory=factory, state="done")
    with factory() as s:
        r = get_report(session=s, job_id=job_id)
        assert (r.job.state, r.job.done, r.progress) == ("cancelled", 1, 1.0)
        assert r.job.finished_at is not None


def test_duplicate_source_name_is_refused(factory, folder) -> None:
    with session_scope(factory) as s:
        add_source(folder, session=s)
        with pytest.raises(InvalidInputError, match="a source named 'docs' exists already"):
            add_source(folder, session=s)


def test_remove_source_deletes_documents_and_chunks(factory, folder) -> None:
    store = DeletingStore()
    with session_scope(factory) as s:
        add_source(folder, session=s)
    _, ids = _sync(factory, store)
    with session_scope(factory) as s:
        n, promoted = remove_source(get_source("docs", session=s), session=s, store=store)
    assert (n, promoted, sorted(store.deleted)) == (3, [], sorted(ids))
    with factory() as s:
        assert s.scalars(select(Document)).all() == []


def test_removing_a_document_mid_ingestion_still_ends_its_job(factory, folder) -> None:
    from ingest.models import StagedChunks

    store = DeletingStore()
    with session_scope(factory) as s:
        add_source(folder, session=s)
    job_id, ids = _sync(factory, store)
    # One item parsed (running, chunks staged, waiting for its embed task).
    assert start_item(job_id, ids[0], session_factory=factory)
    with session_scope(factory) as s:
        s.add(StagedChunks(document_id=ids[0], job_id=job_id, chunk_count=1, chunks="[]",
                           title="a", content_hash="0" * 64))
    with session_scope(factory) as s:
        remove_source(get_source("docs", session=s), session=s, store=store)
    with factory() as s:
        r = get_report(session=s, job_id=job_id)
        # Nothing is left waiting for a worker that will never count it.
        assert (r.job.cancelled, r.job.finished_at is not None) == (3, True)
        assert {i.error for i in r.items} == {"the document was deleted"}
        assert s.scalars(select(StagedChunks)).all() == []
    # The embed task that comes later finds nothing to finish twice.
    finish_item(job_id, ids[0], session_factory=factory, state="done")
    with factory() as s:
        assert get_report(session=s, job_id=job_id).job.done == 0


def test_a_symlink_out_of_the_folder_is_skipped_with_a_per_file_error(
        factory, folder, tmp_path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("the payroll of everyone")
    (folder / "payroll.md").symlink_to(secret)
    # A symlink that stays inside is taken (here: a duplicate of a.md's content).
    (folder / "alias.md").symlink_to(folder / "a.md")
    with session_scope(factory) as s:
        add_source(folder, session=s)
    job_id, ids = _sync(factory, DeletingStore())
    assert _names(factory, ids) == ["a.md", "b.md", "c.txt"]
    with factory() as s:
        report = get_report(session=s, job_id=job_id)
        skipped = sorted((Path(i.path).name, i.error) for i in report.items
                         if i.state == "skipped")
        assert skipped == [("alias.md", "duplicate content"),
                           ("payroll.md", "skipped: a symlink that leads out of the source "
                                          "folder")]
        assert (report.job.total, report.job.skipped) == (5, 2)
        assert not any(d.source_path.endswith("payroll.md") for d in s.scalars(select(Document)))


def test_display_paths_are_relative_to_the_source(factory, folder) -> None:
    from ingest.sources import display_path, uploads_source

    with session_scope(factory) as s:
        source = add_source(folder, session=s, name="handbook")
        nested = folder / "travel" / "policy.pdf"
        assert display_path(str(nested), source) == "handbook/travel/policy.pdf"
        uploads = uploads_source(session=s, tenant="default", path="/srv/var/uploads")
        assert display_path("/srv/var/uploads/default/ab12/notes.md", uploads) == "notes.md"
        assert display_path("/srv/private/x.md", None) == "x.md"
        # A path outside the source's folder falls back to the file name.
        assert display_path("/elsewhere/y.md", source) == "y.md"


def test_duplicates_pair_only_equal_access_and_a_narrowing_splits_them(
        factory, folder, tmp_path) -> None:
    from ingest.service import Access
    from ingest.sources import set_source_access

    other = tmp_path / "copy"
    other.mkdir()
    (other / "a.md").write_text("alpha")  # the same content as docs/a.md
    hr_only = tmp_path / "hr"
    hr_only.mkdir()
    (hr_only / "a.md").write_text("alpha")
    with session_scope(factory) as s:
        add_source(folder, session=s)
        add_source(other, session=s, name="copy")
        add_source(hr_only, session=s, name="hr", access=Access.of(groups=["hr"]))
    store = DeletingStore()
    store.set_access = lambda ids, *, acl, tags: None  # type: ignore[attr-defined]
    _sync(factory, store)
    _sync(factory, store, "copy")
    _, hr_ids = _sync(factory, store, "hr")
    with factory() as s:
        docs = {(Path(d.source_path).parent.name, Path(d.source_path).name): d
                for d in s.scalars(select(Document))}
        original = docs[("docs", "a.md")]
        assert docs[("copy", "a.md")].duplicate_of == original.id
        # Another access: not a duplicate, ingested on its own.
        hr_doc = docs[("hr", "a.md")]
        assert (hr_doc.status, hr_doc.duplicate_of, hr_ids) == ("queued", None, [hr_doc.id])
    with session_scope(factory) as s:
        n, queued = set_source_access(get_source("docs", session=s), Access.of(groups=["hr"]),
                                      session=s, store=store)
        copy_doc = s.get(Document, docs[("copy", "a.md")].id)
        assert n == 3 and queued == [copy_doc.id]
        assert (copy_doc.status, copy_doc.duplicate_of) == ("queued", None)
