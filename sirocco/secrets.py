"""The server secret (``auth.secret_key``): it salts the user pseudonyms of
traces and feedback, so it must not be the placeholder anyone can read in
the source.

``with_secret_key`` returns settings whose secret is, in order: the one
configured (``SIROCCO_AUTH__SECRET_KEY``); the one stored in
``<data_dir>/secret_key`` by an earlier start; the placeholder, only where
``env`` was chosen explicitly as ``dev`` or ``test``; or a new random secret,
written to ``<data_dir>/secret_key`` (mode 0600) on the first start, which is
what ``make run`` gets. ``env=prod`` with the placeholder is refused by the
settings themselves.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sirocco.errors import ConfigError
from sirocco.settings import PLACEHOLDER_SECRET, Settings

logger = logging.getLogger(__name__)

SECRET_FILE = "secret_key"


def with_secret_key(settings: Settings) -> Settings:
    """``settings`` with a usable ``auth.secret_key`` (see the module docstring)."""
    if settings.auth.secret_key != PLACEHOLDER_SECRET:
        return settings
    path = settings.data_dir / SECRET_FILE
    key = _read(path)
    if key is None:
        if "env" in settings.model_fields_set and settings.env in ("dev", "test"):
            return settings
        key = _create(path)
    auth = settings.auth.model_copy(update={"secret_key": key})
    return settings.model_copy(update={"auth": auth})


def _read(path: Path) -> str | None:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the server secret {path}: {exc}") from exc
    if len(key) < 32:
        raise ConfigError(f"the server secret in {path} is too short; delete it to make a new one")
    return key


def _create(path: Path) -> str:
    key = secrets.token_urlsafe(48)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
        # link() fails if the name exists: the first process to start wins and
        # a worker starting beside the API reads the same secret.
        os.link(tmp, path)
    except FileExistsError:
        found = _read(path)
        if found is None:
            raise ConfigError(f"the server secret {path} vanished while it was read") from None
        return found
    except OSError as exc:
        raise ConfigError(f"cannot write a server secret to {path} ({exc}); set "
                          "SIROCCO_AUTH__SECRET_KEY") from exc
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("generated the server secret", extra={"path": str(path)})
    return key
