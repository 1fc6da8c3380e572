"""POST /api/documents and GET /api/documents/{id} with doubles for ingest and Celery."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.services import Services
from assistant.service import Assistant
from ingest.intake import Intake, sanitize_filename, tenant_uploads
from ingest.models import Document
from sirocco.db import Base, make_engine, make_session_factory
from sirocco.errors import DocumentTooLargeError, InvalidInputError, UnsupportedFormatError
from sirocco.settings import Settings
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore
from traces.recorder import TraceRecorder

MB = 1024 * 1024


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # API keys are tested in test_api_auth.py; these routes run as the anonymous admin.
    return Settings(env="test", data_dir=tmp_path / "var", api={"max_upload_mb": 1},
                    auth={"enabled": False})


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


class FakeIngest:
    """register_files + enqueue_documents doubles; enqueue checks the rows are committed."""

    def __init__(self, factory: sessionmaker[Session], *, register_error: Exception | None = None,
                 enqueue_error: Exception | None = None) -> None:
        self.factory = factory
        self.register_error = register_error
        self.enqueue_error = enqueue_error
        self.registered: list[Path] = []
        self.enqueued: list[tuple[Any, list[str]]] = []
        self.committed_at_enqueue: list[bool] = []

    def register_files(self, paths: Sequence[Path], *, session: Session,
                       tenant: str = "default", access: Any = None) -> list[Document]:
        if self.register_error is not None:
            raise self.register_error
        self.registered.extend(paths)
        self.access = access
        docs = [Document(tenant=tenant, source_path=str(p), title=p.stem) for p in paths]
        session.add_all(docs)
        return docs

    def enqueue_documents(self, celery_app: Any, doc_ids: Sequence[str],
                          job_id: str | None = None) -> None:
        with self.factory() as other:  # a separate session sees only committed rows
            self.committed_at_enqueue.append(
                all(other.get(Document, i) is not None for i in doc_ids))
        if self.enqueue_error is not None:
            raise self.enqueue_error
        self.enqueued.append((celery_app, list(doc_ids)))


CELERY = object()


def make_app(settings: Settings, factory: sessionmaker[Session], ingest: FakeIngest) -> Any:
    assistant = Assistant(ScriptedEngine(), StaticStore(), ConstantEmbedder(),
                          TraceRecorder(factory), settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=CELERY,
                        register_files=ingest.register_files,
                        enqueue_documents=ingest.enqueue_documents)
    return create_app(settings, services=services)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def saved_files(settings: Settings) -> list[Path]:
    root = settings.uploads_path
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_path_traversal_name_is_stored_inside_uploads(settings, factory, tmp_path) -> None:
    ingest = FakeIngest(factory)
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post(
            "/api/documents", files={"files": ("../../etc/passwd", b"root:x:0:0", "text/plain")})
        assert response.status_code == 202, response.text
        [doc] = response.json()["documents"]
        assert (doc["status"], doc["filename"]) == ("queued", "passwd")

        [path] = saved_files(settings)
        assert path.name == "passwd"
        # The tenant's own folder, then a uuid folder per file.
        assert path.parent.parent == tenant_uploads(settings.uploads_path, "default")
        assert path.parent.parent.parent == settings.uploads_path
        assert len(path.parent.name) == 32
        assert path.read_bytes() == b"root:x:0:0"
        assert not (tmp_path / "etc").exists() and not (settings.data_dir / "etc").exists()
        assert ingest.registered == [path]
        assert ingest.enqueued == [(CELERY, [doc["id"]])]
        assert ingest.committed_at_enqueue == [True]

        status = await client.get(f"/api/documents/{doc['id']}")
    assert status.status_code == 200
    body = status.json()
    assert (body["id"], body["status"], body["error"], body["chunk_count"]) == (
        doc["id"], "queued", None, 0)


async def test_several_files_in_one_upload(settings, factory) -> None:
    ingest = FakeIngest(factory)
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post("/api/documents", files=[
            ("files", ("a.txt", b"alpha", "text/plain")),
            ("files", ("b.md", b"# beta", "text/markdown"))])
    assert response.status_code == 202
    assert [d["filename"] for d in response.json()["documents"]] == ["a.txt", "b.md"]
    assert [p.name for p in ingest.registered] == ["a.txt", "b.md"]
    assert len(ingest.enqueued[0][1]) == 2


@pytest.mark.parametrize("size", [3 * MB, MB + 100], ids=["refused-unread", "refused-while-saving"])
async def test_oversize_upload_is_413_and_nothing_kept(settings, factory, size) -> None:
    ingest = FakeIngest(factory)
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post(
            "/api/documents", files={"files": ("big.pdf", b"x" * size, "application/pdf")})
    assert response.status_code == 413
    assert response.json() == {"error": {
        "message": "upload too large: the limit is 1 MB per request",
        "type": "DocumentTooLargeError", "code": "document_too_large"}}
    assert saved_files(settings) == []
    assert ingest.registered == [] and ingest.enqueued == []


def chunked_upload(size: int, sent: list[int], boundary: str = "b0undary") -> Any:
    """A multipart body of one ``size``-byte file as an async generator (so httpx
    sends it chunked, without Content-Length); ``sent`` counts the bytes taken."""

    async def body() -> Any:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                'filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n').encode()
        chunk = b"x" * (64 * 1024)
        parts = [head, *[chunk] * (size // len(chunk)), f"\r\n--{boundary}--\r\n".encode()]
        for part in parts:
            sent[0] += len(part)
            yield part

    return body()


@pytest.mark.parametrize(("size", "status"), [(20 * MB, 413), (MB // 2, 202)])
async def test_chunked_upload_is_counted_and_cut_at_the_limit(settings, factory, size,
                                                               status) -> None:
    from api.routes.documents import MULTIPART_SLACK

    ingest = FakeIngest(factory)
    sent = [0]
    async with client_for(make_app(settings, factory, ingest)) as client:
        request = client.build_request(
            "POST", "/api/documents", content=chunked_upload(size, sent),
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = await client.send(request)
    assert response.status_code == status, response.text
    if status == 202:
        assert [p.stat().st_size for p in saved_files(settings)] == [size]
        return
    assert response.json()["error"]["message"] == "upload too large: the limit is 1 MB per request"
    # Cut once past the limit (plus multipart framing), not after reading 20 MB.
    assert sent[0] <= MB + MULTIPART_SLACK + 64 * 1024
    assert saved_files(settings) == [] and ingest.registered == []


async def test_files_together_over_the_limit_are_refused(settings, factory) -> None:
    ingest = FakeIngest(factory)
    half = b"x" * (MB // 2 + 10)
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post("/api/documents", files=[
            ("files", ("a.txt", half, "text/plain")), ("files", ("b.txt", half, "text/plain"))])
    assert response.status_code == 413
    assert saved_files(settings) == [] and ingest.registered == []


@pytest.mark.parametrize("name", ["..", "../", "  .  "])
async def test_upload_with_no_usable_name_is_400(settings, factory, name) -> None:
    ingest = FakeIngest(factory)
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post("/api/documents", files={"files": (name, b"x", "text/plain")})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["message"].startswith("invalid file name")
    assert saved_files(settings) == []


async def test_upload_without_files_is_400(settings, factory) -> None:
    async with client_for(make_app(settings, factory, FakeIngest(factory))) as client:
        response = await client.post("/api/documents", data={"other": "field"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "no files in the upload; send them in the multipart field 'files'")


async def test_refused_format_is_415_and_the_file_removed(settings, factory) -> None:
    ingest = FakeIngest(factory, register_error=UnsupportedFormatError(
        "no parser for .exe files; supported: .pdf, .txt"))
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post("/api/documents", files={"files": ("a.txt", b"MZ", "x/y")})
    assert response.status_code == 415
    assert response.json()["error"]["message"] == "no parser for .exe files; supported: .pdf, .txt"
    assert saved_files(settings) == []


async def test_queue_down_is_503_and_documents_stay_registered(settings, factory) -> None:
    ingest = FakeIngest(factory, enqueue_error=ConnectionError("redis refused"))
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post("/api/documents", files={"files": ("a.txt", b"a", "t/p")})
    assert response.status_code == 503
    assert response.json()["error"]["message"] == (
        "the documents were saved but the ingestion queue is unavailable; try again later")
    with factory() as session:
        assert [d.status for d in session.query(Document)] == ["queued"]


async def test_unknown_document_is_404_envelope(settings, factory) -> None:
    async with client_for(make_app(settings, factory, FakeIngest(factory))) as client:
        response = await client.get("/api/documents/nope")
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "document 'nope' not found",
                                         "type": "NotFoundError", "code": "not_found"}}


@pytest.mark.parametrize(("raw", "clean"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\notes.txt", "notes.txt"),
    ("/abs/path/.hidden", "hidden"),
    ("bad\x00name\n.txt", "badname.txt"),
    ("é" * 200 + ".pdf", "é" * 125 + ".pdf"),
])
def test_sanitize_filename(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


@pytest.mark.parametrize("raw", ["", "..", "dir/", "\x00", " . "])
def test_sanitize_filename_refuses_empty_names(raw: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid file name"):
        sanitize_filename(raw)


async def test_upload_with_the_real_register_files(settings, factory) -> None:
    """Contract with ``ingest.service.register_files`` (no broker: enqueue is a double)."""
    from ingest.service import register_files

    ingest = FakeIngest(factory)
    app = make_app(settings, factory, ingest)
    app.state.services.register_files = register_files
    async with client_for(app) as client:
        response = await client.post(
            "/api/documents", files={"files": ("../notes.txt", b"hello", "text/plain")})
        assert response.status_code == 202, response.text
        [doc] = response.json()["documents"]
        status = (await client.get(f"/api/documents/{doc['id']}")).json()
    [path] = saved_files(settings)
    assert (doc["filename"], doc["title"], doc["status"]) == ("notes.txt", "notes", "queued")
    assert ingest.enqueued == [(CELERY, [doc["id"]])]
    assert status["status"] == "queued"
    with factory() as session:
        assert session.get(Document, doc["id"]).source_path == str(path)


async def test_unsupported_type_is_415_before_saving(settings, factory) -> None:
    ingest = FakeIngest(factory)
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post("/api/documents", files=[
            ("files", ("ok.txt", b"fine", "text/plain")),
            ("files", ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png"))])
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_format"
    assert error["message"].startswith("photo.png: unsupported file type .png; supported formats:")
    assert saved_files(settings) == [] and ingest.registered == []


async def test_legacy_doc_is_415_with_a_hint(settings, factory) -> None:
    from tests.unit.test_ingest_formats import _ole2

    ingest = FakeIngest(factory)
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post("/api/documents", files={
            "files": ("old.doc", _ole2("WordDocument"), "application/msword")})
    assert response.status_code == 415
    assert response.json()["error"]["message"] == (
        "old.doc: legacy binary Word 97-2003 .doc is not supported; save as .docx")
    assert saved_files(settings) == []


async def test_single_file_over_the_per_file_limit_is_413(settings, factory) -> None:
    from ingest.intake import IntakePorts, accept_uploads

    ingest = FakeIngest(factory)
    ports = IntakePorts(session_factory=factory, register=ingest.register_files,
                        enqueue=lambda ids, job_id: ingest.enqueue_documents(CELERY, ids))

    class _Upload:
        filename = "big.txt"
        file = io.BytesIO(b"x" * (3 * MB // 2))

    with pytest.raises(DocumentTooLargeError) as err:
        await accept_uploads([_Upload()], ports=ports, intake=Intake(
            tenant="default", root=settings.uploads_path, max_bytes=3 * MB, max_file_bytes=MB))
    assert err.value.message == "big.txt: file too large (1.5 MB); the limit is 1 MB per file"
    assert saved_files(settings) == [] and ingest.registered == []


async def test_mislabelled_docx_is_accepted(settings, factory) -> None:
    ingest = FakeIngest(factory)
    docx = (Path(__file__).resolve().parents[1] / "fixtures" / "really-docx.doc").read_bytes()
    async with client_for(make_app(settings, factory, ingest)) as client:
        response = await client.post(
            "/api/documents", files={"files": ("really-docx.doc", docx, "application/msword")})
    assert response.status_code == 202, response.text
    assert [p.name for p in ingest.registered] == ["really-docx.doc"]
