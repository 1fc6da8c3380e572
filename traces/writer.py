"""A writer thread that takes trace writes off the answering path, durably.

Payloads go into an in-memory queue; one thread writes them in order. A
write that fails is retried with backoff; one that keeps failing is appended
to a spool file (JSON lines) under ``spool_dir`` and replayed when the next
writer starts. ``close`` drains the queue before returning, so a normal
shutdown loses no trace; ``flush`` waits until everything queued so far is
written.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Delays between attempts of one write before it is spooled.
RETRY_DELAYS_S = (0.05, 0.25, 1.0)
SPOOL_NAME = "traces-spool.jsonl"

Write = Callable[[str, dict[str, Any]], None]


class TraceWriter:
    """Runs ``write(kind, payload)`` for each submitted payload on one thread."""

    def __init__(self, write: Write, *, spool_dir: Path | None = None,
                 retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        self._write = write
        self._spool = spool_dir / SPOOL_NAME if spool_dir is not None else None
        self._delays = retry_delays_s
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self.written = 0
        self.spooled = 0
        self.replay_spool()
        self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self._thread.start()

    def submit(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue one write; never blocks. After ``close`` it writes at once."""
        with self._lock:
            if not self._closed:
                self._queue.put((kind, payload))
                return
        self._write_or_spool(kind, payload)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every write queued so far is done; False on timeout."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                return True
            self._queue.put(("__flush__", {"event": done}))
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop the thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error("trace writer did not drain in time; spooling the rest")
        # Whatever the thread could not reach goes to the spool.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[0] != "__flush__":
                self._spool_write(*item)

    def replay_spool(self) -> int:
        """Write the payloads a previous writer spooled; returns how many made it."""
        if self._spool is None or not self._spool.exists():
            return 0
        lines = self._spool.read_text(encoding="utf-8").splitlines()
        self._spool.unlink()
        replayed = 0
        for line in lines:
            if not line.strip():
                continue
            item = json.loads(line)
            if self._write_or_spool(item["kind"], item["payload"]):
                replayed += 1
        if replayed:
            logger.info("replayed spooled trace writes", extra={"count": replayed})
        return replayed

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, payload = item
            if kind == "__flush__":
                payload["event"].set()
                continue
            self._write_or_spool(kind, payload)

    def _write_or_spool(self, kind: str, payload: dict[str, Any]) -> bool:
        for attempt, delay in enumerate((*self._delays, None)):
            try:
                self._write(kind, payload)
                self.written += 1
                return True
            except Exception:
                if delay is None:
                    logger.exception("trace write failed; spooled",
                                     extra={"trace_id": payload.get("id"), "kind": kind,
                                            "attempts": attempt + 1})
                    break
                time.sleep(delay)
        self._spool_write(kind, payload)
        return False

    def _spool_write(self, kind: str, payload: dict[str, Any]) -> None:
        self.spooled += 1
        if self._spool is None:
            logger.error("trace lost: no spool directory", extra={"trace_id": payload.get("id")})
            return
        self._spool.parent.mkdir(parents=True, exist_ok=True)
        with self._spool.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "payload": payload}, ensure_ascii=False) + "\n")
