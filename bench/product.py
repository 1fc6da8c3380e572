"""The served product as a user meets it, for benchmarks: ``sirocco up`` on
embedded defaults in a throw-away data folder, driven over HTTP.

    with ServedProduct(env={"SIROCCO_LLM__DTYPE": "bfloat16"}) as product:
        product.ingest(folder)             # the CLI, as an admin would
        result = product.chat("What ...")  # POST /api/chat, stream false

The bundled models come from the repository's ``var/models`` (prepared once by
``make models``), so only the data folder is new. Nothing here is imported by
the product.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SIROCCO = [sys.executable, "-m", "sirocco"]
START_TIMEOUT_S = 900
_KEY = re.compile(r"sk-sirocco-[A-Za-z0-9_-]+")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedProduct:
    """``sirocco up`` in a subprocess (API, engine, one worker per stage), with
    an admin key made by the CLI; ``env`` overrides settings (``SIROCCO_*``)."""

    def __init__(self, env: Mapping[str, str] | None = None, *,
                 data_dir: Path | None = None, log: Path | None = None) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="sirocco-served-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SIROCCO_DATA_DIR": str(self.data_dir),
                    "SIROCCO_MODELS_DIR": str(REPO / "var" / "models"),
                    "SIROCCO_API__HOST": "127.0.0.1", "SIROCCO_API__PORT": str(self.port),
                    **(env or {})}
        self.log = log or self.data_dir / "served.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.key = ""

    def cli(self, *args: str, timeout: float = 3600, ok: tuple[int, ...] = (0,)) -> str:
        """Run ``sirocco ARGS`` against this product's settings; its stdout
        (an exit code outside ``ok`` raises)."""
        proc = subprocess.run([*SIROCCO, *args], env=self.env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if proc.returncode not in ok:
            raise RuntimeError(f"sirocco {' '.join(args)} exited {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout)[-2000:]}")
        return proc.stdout

    def __enter__(self) -> ServedProduct:
        self.cli("db", "upgrade")
        found = _KEY.search(self.cli("keys", "create", "--user", "bench", "--admin"))
        if found is None:
            raise RuntimeError("`sirocco keys create` printed no key")
        self.key = found.group(0)
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen([*SIROCCO, "up"], env=self.env, cwd=REPO,
                                          stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sirocco up exited {self._proc.returncode}: "
                                   + self.log.read_text(errors="replace")[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"sirocco up not serving after {START_TIMEOUT_S} s")
            time.sleep(1)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._own_dir and not os.environ.get("SIROCCO_BENCH_KEEP"):
            import shutil

            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def ingest(self, path: Path, timeout: float = 3600) -> float:
        """``sirocco ingest PATH`` (waits for the job); its wall seconds. Exit
        code 2 (the job finished, some files failed with their own error) is a
        finished ingestion: the shared documents include unreadable files."""
        started = time.perf_counter()
        self.cli("ingest", str(path), "--timeout", str(timeout), timeout=timeout + 60,
                 ok=(0, 2))
        return time.perf_counter() - started

    def chat(self, question: str, **body: Any) -> dict[str, Any]:
        """One non-streamed ``POST /api/chat``, with ``_seconds`` (wall) added."""
        started = time.perf_counter()
        resp = httpx.post(f"{self.base}/api/chat", headers=self.headers, timeout=900,
                          json={"question": question, "stream": False, **body})
        resp.raise_for_status()
        return {**resp.json(), "_seconds": time.perf_counter() - started}
