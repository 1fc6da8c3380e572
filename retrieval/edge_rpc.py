"""The embedded store's owner serving other processes over a Unix socket.

A frame is two 4-byte big-endian lengths, a JSON object and a binary
attachment: a request ``{"op": <EdgeEngine method>, "kw": {...}}`` (with
``"bin": <name>`` when the keyword ``name`` is bytes: the attachment, so dense
vectors cross as float32, not as JSON numbers), an answer ``{"ok": <result>}``
or ``{"err": [<error class>, <message>]}``. The owner runs a thread per
connection, so queries from several processes (or threads: a client keeps a
connection per thread) run side by side in the engine; the engine itself
serialises writes. The socket file is made for its user only (0600).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from sirocco import errors

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (errors.ConfigError, errors.InvalidInputError,
                                  errors.StoreBusyError, errors.UnavailableError,
                                  ValueError)}
OPS = frozenset({"query", "count", "index_status", "ensure", "write", "set_access",
                 "begin_rebuild", "finish_rebuild", "abandon_rebuild", "optimize"})


class OwnerGone(ConnectionError):
    """The owner's socket is missing, refused or closed mid-call."""


def send(sock: socket.socket, obj: Any, blob: bytes = b"") -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(_HEADER.pack(len(data), len(blob)) + data)
    if blob:
        sock.sendall(blob)


def receive(sock: socket.socket) -> tuple[Any, bytes]:
    """The next frame's object and attachment; ``OwnerGone`` when the peer closed."""
    size, blob_size = _HEADER.unpack(_exactly(sock, _HEADER.size))
    obj = json.loads(_exactly(sock, size))
    return obj, _exactly(sock, blob_size) if blob_size else b""


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(min(n - len(buf), 1 << 20))
        if not part:
            raise OwnerGone("the embedded store's owner closed the connection")
        buf += part
    return bytes(buf)


class Server:
    """Serves ``engine`` on ``path`` until ``close()``."""

    def __init__(self, engine: Any, path: Path) -> None:
        self.engine, self.path = engine, path
        path.unlink(missing_ok=True)  # a dead owner's; we hold the owner lock
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        self._sock.listen(64)
        self._conns: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="edge-owner").start()

    def close(self) -> None:
        """Stop accepting and hang up on every client (they take over)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self.path.unlink(missing_ok=True)
        with self._guard:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._conns.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._guard:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="edge-owner-conn").start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                request, blob = receive(conn)
                if isinstance(request.get("bin"), str) and isinstance(request.get("kw"), dict):
                    request["kw"][request["bin"]] = blob
                send(conn, self._answer(request))
        except (OwnerGone, OSError):
            pass
        finally:
            with self._guard:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op not in OPS:
            return {"err": ["ValueError", f"unknown operation {op!r}"]}
        try:
            return {"ok": getattr(self.engine, op)(**request.get("kw", {}))}
        except Exception as exc:  # noqa: BLE001 - the caller gets it, re-raised
            name = type(exc).__name__ if type(exc).__name__ in _ERRORS else "UnavailableError"
            if name == "UnavailableError" and not isinstance(exc, errors.UnavailableError):
                logger.exception("embedded store operation failed", extra={"op": op})
            return {"err": [name, str(exc)]}


class Client:
    """Calls the owner; one connection per thread, opened on first use. A call
    waits at most ``timeout_s`` for its answer (then counts as the owner gone)."""

    def __init__(self, path: Path, timeout_s: float | None = None) -> None:
        self.path, self.timeout_s = path, timeout_s
        self._local = threading.local()
        self._all: list[socket.socket] = []
        self._guard = threading.Lock()

    def call(self, op: str, **kw: Any) -> Any:
        """``op`` in the owner; at most one keyword may be bytes (the attachment)."""
        binary = [k for k, v in kw.items() if isinstance(v, bytes)]
        if len(binary) > 1:
            raise ValueError(f"one bytes argument a call, got {binary}")
        request: dict[str, Any] = {"op": op, "kw": kw}
        blob = b""
        if binary:
            blob = kw[binary[0]]
            request = {"op": op, "kw": {k: v for k, v in kw.items() if k != binary[0]},
                       "bin": binary[0]}
        sock = self._connection()
        try:
            send(sock, request, blob)
            answer, _ = receive(sock)
        except OSError as exc:
            self._forget()
            raise OwnerGone(str(exc)) from exc
        if "err" in answer:
            name, message = answer["err"]
            raise _ERRORS.get(name, errors.UnavailableError)(message)
        return answer["ok"]

    def close(self) -> None:
        with self._guard:
            for sock in self._all:
                sock.close()
            self._all.clear()
        self._local = threading.local()

    def _connection(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                raise OwnerGone(f"no owner at {self.path}: {exc}") from exc
            self._local.sock = sock
            with self._guard:
                self._all.append(sock)
        return sock

    def _forget(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close()
            self._local.sock = None
