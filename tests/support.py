"""The one rule for missing prerequisites: every skip in the suite goes
through this module.

- ``unavailable(reason)``: something the project needs and CI provides (a
  service, a package of the install, the bundled models). Skipped on a
  developer's machine without it; in CI (``CI`` set, ``.ci/run`` exports it)
  the test fails, so a green CI always means the real thing ran.
- ``optional(reason)``: something CI is not given on purpose, listed in
  ``OPTIONAL``: a Qdrant server (the production path; none ships here) and
  the shared evaluation data next to the checkout (``../shared/data``, which
  the project's own tests must not need). Skipped everywhere, with the reason.
"""

from __future__ import annotations

import os
import socket
from typing import Any, NoReturn
from urllib.parse import urlparse

import pytest

IN_CI = bool(os.environ.get("CI"))


#: What ``optional`` may name: the only prerequisites CI does without.
OPTIONAL = ("a Qdrant server", "the shared data")


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it in CI."""
    if IN_CI:
        pytest.fail(f"{reason}: CI needs it")
    pytest.skip(reason, allow_module_level=True)


def optional(what: str, reason: str) -> NoReturn:
    """Skip the test, in CI too: ``what`` (one of ``OPTIONAL``) is not here."""
    if what not in OPTIONAL:
        raise ValueError(f"{what!r} is not optional; use unavailable() (CI must have it)")
    pytest.skip(f"{what}: {reason}", allow_module_level=True)


def need_module(name: str) -> Any:
    """``import name``, or ``unavailable`` (a package of the install is missing)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> str:
    """Return ``url`` if the service answers; otherwise skip (or fail in CI)."""
    if url and _reachable(url, default_port):
        return url
    unavailable(f"{name} not reachable at {url or '(SIROCCO_TEST_* url unset)'}")
