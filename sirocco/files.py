"""File helpers shared by every layer: an exclusive lock between processes,
atomic writes, content hashes.

One copy of each, so a fix (say, fsync before rename) lands everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Two processes preparing the same cache (a CLI run and a test session) then
    take turns: the second waits and finds what the first wrote.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_atomic(path: Path, build: Callable[[Path], None]) -> None:
    """Have ``build(tmp)`` write a temporary file beside ``path``, then rename
    it into place: a reader never sees half a file, a crash (or an exception
    from ``build``) leaves the old one and no temporary behind."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        build(tmp)
        tmp.chmod(0o644)  # mkstemp makes it private; what we write is not secret
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (``build_atomic``)."""
    def write(tmp: Path) -> None:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")

    build_atomic(path, write)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented, key-sorted JSON, written atomically (``write_atomic``)."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or
    not an object (a cache marker that is not there is a cache miss)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
