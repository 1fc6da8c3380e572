"""The e2e tier: the Sirocco server as a subprocess (``uvicorn --factory
api.app:app_from_env``) with the real vLLM CPU engine serving the bundled model,
configured only through SIROCCO_* variables pointing at a temporary folder, and
driven by real clients over HTTP.

One server per test module (the engine takes ~40 s to start on CPU). Before it
starts, documents are registered and ingested in this process (the real
parser, chunker, MiniLM embedder and Qdrant local store); API keys are made
with the ``sirocco keys`` CLI, as an operator would.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import unavailable

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "var" / "models"
START_TIMEOUT_S = 600

ZEPHYR = """# Project Zephyr

Project Zephyr moves order processing from the mainframe to the new platform.

## Identification

The Zephyr project code is ZX-4471. Use this code on every timesheet entry.
"""
TRAVEL = ("# Travel policy\n\nHotels are reimbursed up to 180 EUR per night. "
          "Expense reports are due within 30 days.\n")
#: Visible to the "board" group only: user ana (group eng) must never see it.
BOARD = ("# Board minutes\n\nThe Zephyr project budget for the board is 9.2 million EUR; "
         "the Zephyr project code on board papers is BRD-9911.\n")


@dataclass(frozen=True)
class ExtraDoc:
    """One more document for ``running_stack``, in ``tenant``: seen by the
    whole tenant, or by ``groups`` only; with ``tags``."""

    name: str
    text: str
    tenant: str = "default"
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    base_url: str
    env: dict[str, str]
    docs: dict[str, str]  # file name -> document id
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``sirocco <args>`` against this server's database."""
        return subprocess.run([sys.executable, "-m", "sirocco", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def new_key(self, *args: str) -> str:
        """A new API key from ``sirocco keys create <args>``."""
        done = self.cli("keys", "create", *args)
        assert done.returncode == 0, done.stderr
        key = done.stdout.strip()
        assert key.startswith("sk-sirocco-"), done.stdout
        return key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ingest(env: dict[str, str], folder: Path, extra: Sequence[ExtraDoc] = ()
            ) -> dict[str, str]:
    from ingest.embed_stage import ingest_document
    from ingest.embedding.base import create_embedder
    from ingest.service import Access, register_files
    from retrieval.factory import create_store
    from sirocco.db import make_engine, make_session_factory, session_scope, upgrade_database
    from sirocco.settings import Settings

    settings = Settings(env="test", data_dir=Path(env["SIROCCO_DATA_DIR"]),
                        models_dir=MODELS, qdrant={"path": env["SIROCCO_QDRANT__PATH"]})
    upgrade_database(settings)
    db = make_engine(settings)
    factory = make_session_factory(db)
    ids: dict[str, str] = {}
    with session_scope(factory) as s:
        for name, access in [("zephyr.md", None), ("travel.md", None),
                             ("board.md", Access.of(groups=["board"]))]:
            (doc,) = register_files([folder / name], session=s, access=access)
            ids[name] = doc.id
        for more in extra:
            (doc,) = register_files([folder / more.name], session=s, tenant=more.tenant,
                                    access=Access.of(groups=more.groups, tags=more.tags))
            ids[more.name] = doc.id
    embedder = create_embedder(settings)
    store = create_store(settings)
    try:
        store.ensure_collection(embedder.dim)
        for doc_id in ids.values():
            assert ingest_document(doc_id, session_factory=factory, embedder=embedder,
                                   store=store, settings=settings) > 0
    finally:
        store.close()
        db.dispose()
    return ids


@contextmanager
def running_stack(root: Path, *, worker: bool = False,
                  extra_env: dict[str, str] | None = None,
                  extra_docs: Sequence[ExtraDoc] = ()) -> Iterator[Server]:
    """The server (and with ``worker`` a Celery worker on both stages, on the
    embedded broker, as ``sirocco up`` runs them) over a data folder in
    ``root`` holding the three ingested documents (and ``extra_docs``);
    stopped on exit."""
    if importlib.util.find_spec("vllm") is None:
        unavailable("vllm is not installed (the `cpu` extra)")
    if not (MODELS / "prepared.json").exists():
        unavailable("bundled models not prepared: run `sirocco models prepare` (make test does)")
    folder = root / "docs"
    folder.mkdir()
    for name, text in {"zephyr.md": ZEPHYR, "travel.md": TRAVEL, "board.md": BOARD,
                       **{more.name: more.text for more in extra_docs}}.items():
        (folder / name).write_text(text)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update({
        "SIROCCO_ENV": "test",
        "SIROCCO_DATA_DIR": str(root / "var"),
        "SIROCCO_MODELS_DIR": str(MODELS),
        "SIROCCO_QDRANT__PATH": str(root / "qdrant"),
        "SIROCCO_LLM__MAX_MODEL_LEN": "2048",
        "SIROCCO_LLM__KV_CACHE_SPACE_GIB": "1",
        "SIROCCO_LLM__MAX_NUM_SEQS": "8",
        # Room for a forced tool call's JSON; the client tests pass their own max_tokens.
        "SIROCCO_LLM__MAX_TOKENS": "256",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **(extra_env or {}),
    })
    docs = _ingest(env, folder, extra_docs)
    log = root / "server.log"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)]
    if worker:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sirocco", "worker"], cwd=REPO, env=env,
            stdout=(root / "worker.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for proc in procs:
                assert proc.poll() is None, f"{proc.args} exited:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"server not up:\n{log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        yield Server(base_url=base, env=env, docs=docs, log=log)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running server with three ingested documents (per module: its engine
    is stopped before the integration tier starts its own)."""
    with running_stack(tmp_path_factory.mktemp("e2e")) as running:
        yield running
