"""A lock across processes (``flock``) and threads, with a timeout: the
embedded Qdrant store is opened by one operation at a time (see
``retrieval.qdrant_store``)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from sirocco.errors import StoreBusyError

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(str(path), threading.Lock())


def _forget_thread_locks_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _thread_locks_guard
    _thread_locks_guard = threading.Lock()
    _thread_locks.clear()


os.register_at_fork(after_in_child=_forget_thread_locks_after_fork)


class FileLock:
    """An exclusive lock across processes (``flock`` on ``path``) and threads,
    waiting at most ``timeout_s``, then raising ``StoreBusyError``.

    flock already conflicts between two descriptors of one process; the thread
    lock in front only spares threads from polling each other."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._held = threading.local()

    def __enter__(self) -> FileLock:
        deadline = time.monotonic() + self.timeout_s
        tlock = _thread_lock(self.path)
        if not tlock.acquire(timeout=max(0.0, self.timeout_s)):
            raise self._busy()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise self._busy() from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        except BaseException:
            tlock.release()
            raise
        self._held.state = (fd, tlock)
        return self

    def __exit__(self, *exc: object) -> None:
        fd, tlock = self._held.state
        self._held.state = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            tlock.release()

    def _busy(self) -> StoreBusyError:
        return StoreBusyError(
            f"the embedded vector store stayed locked by another process for "
            f"{self.timeout_s:g}s (lock file {self.path}); retry later, raise "
            "SIROCCO_QDRANT__LOCK_TIMEOUT_S, or use a Qdrant server (SIROCCO_QDRANT_URL)"
        )
