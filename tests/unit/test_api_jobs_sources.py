"""/api/sources and /api/jobs routes on a real SQLite database and the real
sync planner, with doubles for the broker (enqueue recorder) and the store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.services import Services
from assistant.service import Assistant
from ingest.jobs import finish_item, start_item
from ingest.service import register_files
from sirocco.settings import Settings
from tests.doubles import ConstantEmbedder, ScriptedEngine, StaticStore
from traces.recorder import TraceRecorder


class Store(StaticStore):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []
        self.access: list[tuple[list[str], list[str], list[str]]] = []

    def delete_document(self, doc_id: str) -> None:
        self.deleted.append(doc_id)

    def set_access(self, doc_ids, *, acl, tags) -> None:  # type: ignore[no-untyped-def]
        self.access.append((sorted(doc_ids), list(acl), list(tags)))


class Enqueued:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, celery_app: Any, doc_ids: Sequence[str], job_id: str | None = None):
        self.calls.append((list(doc_ids), job_id))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "handbook"
    root.mkdir()
    (root / "a.md").write_text("# A\n\nalpha")
    (root / "b.txt").write_text("beta")
    return root


def make_api(settings: Settings, factory):
    store, enqueued = Store(), Enqueued()
    assistant = Assistant(ScriptedEngine(), store, ConstantEmbedder(), TraceRecorder(factory),
                          settings)
    services = Services(session_factory=factory, assistant=assistant, celery_app=object(),
                        register_files=register_files, enqueue_documents=enqueued, store=store)
    app = create_app(settings, services=services)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, enqueued, store


@pytest.fixture
def api(tmp_path: Path, factory):
    # API keys are tested in test_api_auth.py; these routes run as the anonymous admin.
    # Sources may come from tmp_path (ingest.allowed_roots), the data dir excepted.
    settings = Settings(env="test", data_dir=tmp_path / "var", auth={"enabled": False},
                        ingest={"allowed_roots": [tmp_path]})
    return make_api(settings, factory)


async def test_source_add_sync_list_and_job_progress(api, folder, factory):
    client, enqueued, _ = api
    async with client:
        r = await client.post("/api/sources", json={"path": str(folder)})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "handbook"
        r = await client.post("/api/sources", json={"path": str(folder)})
        assert r.status_code == 400 and "exists already" in r.json()["error"]["message"]

        r = await client.post("/api/sources/handbook/sync")
        assert r.status_code == 202, r.text
        job = r.json()
        assert (job["kind"], job["state"], job["total"], job["progress"]) == ("sync", "queued",
                                                                              2, 0.0)
        assert sorted(i["filename"] for i in job["items"]) == ["a.md", "b.txt"]
        [(doc_ids, job_id)] = enqueued.calls
        assert job_id == job["id"] and len(doc_ids) == 2

        # A worker finishes one item well and one badly.
        for doc_id, state, error in ((doc_ids[0], "done", None),
                                     (doc_ids[1], "failed", "b.txt: corrupt")):
            assert start_item(job_id, doc_id, session_factory=factory)
            finish_item(job_id, doc_id, session_factory=factory, state=state, error=error)
        r = await client.get(f"/api/jobs/{job_id}")
        body = r.json()
        assert (body["state"], body["done"], body["failed"], body["progress"]) == ("done", 1,
                                                                                   1, 1.0)
        assert {i["filename"]: i["error"] for i in body["items"]}["b.txt"] == "b.txt: corrupt"
        # Pollers of large jobs: only the failed items, or none (same counts).
        failed = (await client.get(f"/api/jobs/{job_id}", params={"items": "failed"})).json()
        assert [(i["filename"], i["state"]) for i in failed["items"]] == [("b.txt", "failed")]
        bare = (await client.get(f"/api/jobs/{job_id}", params={"items": "none"})).json()
        assert bare["items"] == [] and {k: v for k, v in bare.items() if k != "items"} == {
            k: v for k, v in body.items() if k != "items"}
        r = await client.get(f"/api/jobs/{job_id}", params={"items": "some"})
        assert r.status_code == 422, r.text

        r = await client.get("/api/sources")
        assert [(s["name"], s["documents"]) for s in r.json()] == [("handbook", 2)]

        # Retry puts the failed item back in the queue, under the same job.
        r = await client.post(f"/api/jobs/{job_id}/retry")
        assert r.status_code == 202 and r.json()["state"] == "running"
        assert enqueued.calls[-1] == ([doc_ids[1]], job_id)

        # The list: newest first, filtered by state, no items.
        (folder / "c.md").write_text("gamma")
        second = (await client.post("/api/sources/handbook/sync")).json()
        r = await client.get("/api/jobs")
        assert [j["id"] for j in r.json()] == [second["id"], job_id]
        assert all(j["items"] == [] for j in r.json())
        r = await client.get("/api/jobs", params={"state": "queued"})
        assert [j["id"] for j in r.json()] == [second["id"]]
        r = await client.get("/api/jobs", params={"state": "stuck"})
        assert r.status_code == 400 and "unknown job state 'stuck'" in r.json()["error"]["message"]

        # Cancel: queued items are cancelled, the job says so.
        r = await client.post(f"/api/jobs/{second['id']}/cancel")
        assert (r.json()["state"], r.json()["cancelled"]) == ("cancelled", 1)


async def test_unknown_job_and_source_are_404(api, tmp_path):
    client, _, _ = api
    async with client:
        r = await client.get("/api/jobs/nope")
        assert r.status_code == 404 and "job 'nope' not found" in r.json()["error"]["message"]
        r = await client.post("/api/sources/nope/sync")
        assert r.status_code == 404
        r = await client.post("/api/sources", json={"path": str(tmp_path / "no-such-folder")})
        assert r.status_code == 404 and "no such folder" in r.json()["error"]["message"]


async def test_removing_a_source_deletes_its_documents_chunks(api, folder):
    client, _, store = api
    async with client:
        await client.post("/api/sources", json={"path": str(folder), "name": "hb"})
        job = (await client.post("/api/sources/hb/sync")).json()
        r = await client.delete("/api/sources/hb")
        assert r.status_code == 204
        assert sorted(store.deleted) == sorted(i["document_id"] for i in job["items"])
        assert (await client.get("/api/sources")).json() == []


async def test_source_folders_come_only_from_the_allowed_roots(api, tmp_path, folder):
    """An admin could register /etc, ~ or the data dir (every tenant's uploads)."""
    client, _, _ = api
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (folder / "escape").symlink_to(outside)
    (tmp_path / "var").mkdir(exist_ok=True)
    async with client:
        codes = {}
        for path in ("/etc", str(outside), "/no/such/place", str(folder / "escape"),
                     str(tmp_path / "var"), str(tmp_path / "var" / "uploads")):
            r = await client.post("/api/sources", json={"path": path})
            codes[path] = (r.status_code, r.json()["error"]["message"])
        assert {c for c, _ in codes.values()} == {403}
        # The same answer whether the folder exists or not: nothing is revealed.
        assert codes["/etc"][1].replace("/etc", "X") == codes["/no/such/place"][1].replace(
            "/no/such/place", "X")
        assert "ingest.allowed_roots" in codes["/etc"][1]
        r = await client.post("/api/sources", json={"path": "handbook"})
        assert r.status_code == 400 and "absolute path" in r.json()["error"]["message"]
        assert (await client.get("/api/sources")).json() == []


async def test_without_allowed_roots_the_api_adds_no_folder(tmp_path, factory, folder):
    settings = Settings(env="test", data_dir=tmp_path / "var", auth={"enabled": False})
    client, _, _ = make_api(settings, factory)
    async with client:
        r = await client.post("/api/sources", json={"path": str(folder)})
    assert r.status_code == 403
    message = r.json()["error"]["message"]
    assert "ingest.allowed_roots" in message and "sirocco sources add" in message


async def test_narrowing_a_source_rewrites_its_chunks_access_at_once(api, folder):
    client, _, store = api
    async with client:
        await client.post("/api/sources", json={"path": str(folder), "name": "hb"})
        job = (await client.post("/api/sources/hb/sync")).json()
        doc_ids = sorted(i["document_id"] for i in job["items"])
        r = await client.put("/api/sources/hb/access", json={"groups": ["hr"],
                                                             "tags": ["policy"]})
        assert r.status_code == 200, r.text
        assert (r.json()["acl"], r.json()["tags"], r.json()["documents"]) == (
            ["group:hr"], ["policy"], 2)
        assert store.access == [(doc_ids, ["group:hr"], ["policy"])]
        # Nothing to re-ingest: the next sync finds every file unchanged.
        again = (await client.post("/api/sources/hb/sync")).json()
        assert (again["total"], again["skipped"]) == (2, 2)
        r = await client.put("/api/sources/nope/access", json={})
        assert r.status_code == 404
