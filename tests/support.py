"""The one rule for missing prerequisites of the integration tier.

On a machine without a service or package the test skips with the reason; in
CI (``CI`` set) it fails instead, so a green CI always means the real thing ran.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn
from urllib.parse import urlparse

import pytest

IN_CI = bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it in CI."""
    if IN_CI:
        pytest.fail(f"{reason}: CI needs it")
    pytest.skip(reason)


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
